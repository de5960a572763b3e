"""The learning experiments of section 4 (Figs. 3-4): a grid of training runs, one small JSON
file per finished run, resumable; and the tables and figures drawn from those files.

A run is one cell of the grid datasets x architectures x {SGD/l2, EGD/l1} x gauge fixing on/off x
seeds, at a scale: ``ci`` (a subset and few epochs, sized so the whole grid runs in minutes on two
CPU cores) or ``paper`` (section 4.1's settings, meant for a GPU). Both scales run exactly the same
code. Each finished run is written atomically to ``<out>/<scale>/<run-id>.json`` with its curves,
settings, device and wall time; rerunning skips the runs whose file holds the same settings, so an
interrupted sweep resumes where it stopped and loses nothing finished.

Runs execute one after another, or with ``jobs > 1`` in that many worker processes (each with one
BLAS thread, so on a CPU ``jobs`` = the number of cores keeps every core busy). A run's curves do
not depend on the process that ran it beyond rounding (BLAS may add in another order with another
thread count). ``batch_models`` trains the runs of a grid cell (one data set, architecture and
optimizer: seeds x gauge fixing) at once with :func:`gaugelit.train_many`, the GPU's way (on by
default there); any ``concurrent.futures.Executor`` (dask, submitit for SLURM) can run the runs or
cells, and ``shard`` splits the grid among the jobs of an array.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import multiprocessing
import os
import platform
import signal
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..core.backend import asarray, default_backend
from ..core.checks import float_dtype, integer, real, switch
from .data import DATASETS, fetch_dataset, load_dataset
from ..core.network import ARCHITECTURES, he_init
from ..training import OPTIMIZERS, TrainingDiverged, train

__all__ = ["Settings", "SETTINGS", "Run", "settings_for", "run_settings", "run_one", "reproduce",
           "is_finished", "write_json_atomic", "run_cell", "cells", "shard_of", "shard_runs",
           "load_results", "grid_records", "code_fingerprint",
           "device_name", "available_cores", "ResultsNotWritable", "check_writable", "curves", "final_table", "paired_differences", "balancing_share", "plot_learning_curves",
           "METRICS", "FORMAT"]

#: Version of the run-file layout (2: ``reg_loss_min_norm`` added; files of another version rerun).
FORMAT = 2
#: The per-epoch curves a run file holds (entry 0 is the untrained network).
METRICS = ("reg_loss", "reg_loss_min_norm", "log_loss", "train_error", "test_error")
_HISTORY_KEYS = ("epoch", "lr", "reg_loss", "reg_loss_min_norm", "log_loss", "train_error", "test_error",
                 "seconds", "gauge_iterations")


@dataclass(frozen=True)
class Run:
    """One training run of the grid. ``run_id`` names its file (the scale names its folder)."""
    dataset: str
    architecture: str
    optimizer: str
    gauge_fix: bool
    seed: int
    scale: str

    @property
    def run_id(self) -> str:
        gauge = "gauge" if self.gauge_fix else "nogauge"
        return f"{self.dataset}_{self.architecture}_{self.optimizer}_{gauge}_seed{self.seed}"

    def label(self) -> str:
        return (f"{self.dataset} {self.architecture} {self.optimizer.upper()}"
                f"{' + gauge fixing' if self.gauge_fix else ''}, seed {self.seed}")


@dataclass(frozen=True)
class Settings:
    """A grid and the settings every run in it shares. ``n_train``/``n_test`` None: whole sets."""
    scale: str
    datasets: tuple[str, ...]
    architectures: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    n_train: int | None = None
    n_test: int | None = None
    optimizers: tuple[str, ...] = ("sgd", "egd")
    gauge_fix: tuple[bool, ...] = (False, True)
    batch_size: int = 32
    lr_decay: float = 0.95
    delta: float = 1e-3
    k: int = 200
    dtype: str = "float32"

    def __post_init__(self):
        for name, values, known in (("datasets", self.datasets, DATASETS),
                                    ("architectures", self.architectures, ARCHITECTURES),
                                    ("optimizers", self.optimizers, OPTIMIZERS)):
            bad = [v for v in values if v not in known]
            if bad or not values:
                raise ValueError(f"{name}: unknown or empty {bad or list(values)}; "
                                 f"choose from {', '.join(known)}")
        if not self.seeds:
            raise ValueError(f"seeds must be non-negative integers, got {self.seeds}")
        for seed in self.seeds:
            integer(seed, "seeds", low=0)
        if not self.gauge_fix or any(g not in (False, True) for g in self.gauge_fix):
            raise ValueError(f"gauge_fix must list True and/or False, got {self.gauge_fix}")
        integer(self.epochs, "epochs", low=1)
        integer(self.batch_size, "batch_size", low=1)
        integer(self.k, "k", low=1)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                integer(getattr(self, name), name, low=1)
        real(self.delta, "delta", low=0, low_open=True)
        real(self.lr_decay, "lr_decay", low=0, low_open=True, high=1)
        float_dtype(self.dtype)


    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def runs(self) -> list[Run]:
        """The grid in a fixed order; the two gauge settings of a seed run next to each other."""
        return [Run(d, a, o, bool(g), int(s), self.scale)
                for d in self.datasets for a in self.architectures for o in self.optimizers
                for s in self.seeds for g in self.gauge_fix]


#: ``paper``: section 4.1 (240 runs of 30 epochs on the full data sets). ``ci``: the two data sets
#: that CI has, all three architectures, three seeds (the fewest that give a verdict by the rule of
#: :mod:`gaugelit.claims`), the first 2000 training and 1000 test examples, and 3 epochs (189
#: steps; the learning rate still decays after each epoch): 72 runs, about 3.4 s of CPU time each
#: (212 s of user time for 64 of them on the 2-core AMD EPYC), so about two minutes on two cores.
SETTINGS: dict[str, Settings] = {
    "paper": Settings("paper", tuple(DATASETS), tuple(ARCHITECTURES), seeds=(0, 1, 2, 3, 4), epochs=30),
    "ci": Settings("ci", ("mnist", "fashion-mnist"), tuple(ARCHITECTURES), seeds=(0, 1, 2), epochs=3,
                   n_train=2000, n_test=1000),
}


def settings_for(scale: str) -> Settings:
    if scale not in SETTINGS:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SETTINGS)}")
    return SETTINGS[scale]


def run_settings(run: Run, settings: Settings) -> dict:
    """Everything that determines a run's result, as stored in its file (JSON types only)."""
    sizes = list(ARCHITECTURES[run.architecture])
    sizes[0], sizes[-1] = settings.k, DATASETS[run.dataset].n_classes
    return {
        "scale": run.scale, "dataset": run.dataset, "architecture": run.architecture,
        "sizes": sizes, "optimizer": run.optimizer, **{k: float(v) for k, v in OPTIMIZERS[run.optimizer].items()},
        "gauge_fix": run.gauge_fix, "delta": settings.delta, "seed": run.seed,
        "epochs": int(settings.epochs), "batch_size": int(settings.batch_size),
        "lr_decay": settings.lr_decay, "n_train": settings.n_train, "n_test": settings.n_test,
        "k": settings.k, "dtype": settings.dtype, "loss": "log", "init": "he_init(sizes, seed)",
        "hidden_biases": "frozen at zero", "preprocessing": "pixels/255, uncentred top-k SVD of the training inputs",
        **({"egd_biases": "plus-minus"} if run.optimizer == "egd" else {}),
    }


#: The code a run's numbers depend on, relative to the package: every module of these layers, and
#: the data loading (the experiments' other modules only organise and read the runs).
FINGERPRINTED = ("core", "solvers", "training", "experiments/data.py")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A short hash of the modules a run's numbers depend on (:data:`FINGERPRINTED`, by path and
    content); stored in every run file."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for entry in FINGERPRINTED:
        paths = [package / entry] if entry.endswith(".py") else sorted((package / entry).glob("*.py"))
        for path in paths:
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def device_name(xp) -> str:
    """What ran the arithmetic: the GPU's name under CuPy, the CPU's model and cores under NumPy."""
    if xp is not np:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"GPU: {name} (CuPy {cupy.__version__})"
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"CPU: {model}, {available_cores()} cores (NumPy {np.__version__})"


_TMP_SUFFIX = ".tmp"


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """This process's umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class ResultsNotWritable(OSError):
    """The results folder cannot be created or written; the message names the path and the fix."""


def check_writable(folder) -> Path:
    """Create ``folder`` if needed and prove it writable by writing and removing a probe file, so
    that a sweep fails before its first run rather than after it; returns the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=_TMP_SUFFIX)
        try:
            os.write(fd, b"{}")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except FileExistsError:
        raise ResultsNotWritable(f"{folder}: a file (not a folder) is in the way; move it or pass "
                                 f"another --out") from None
    except NotADirectoryError:
        raise ResultsNotWritable(f"{folder}: part of this path is a file, not a folder; pass another "
                                 f"--out") from None
    except PermissionError:
        raise ResultsNotWritable(f"{folder}: permission denied; make it writable (chmod u+w) or pass "
                                 f"another --out") from None
    except OSError as err:
        raise ResultsNotWritable(f"{folder}: cannot write there ({err.strerror or err}); free disk "
                                 f"space or pass another --out") from None
    return folder


def clean_temporary_files(folder, older_than: float = 60.0) -> list[Path]:
    """Remove the temporary files that writes killed half-way left in ``folder`` (names
    ``.<run>.json.<random>.tmp``) and that are older than ``older_than`` seconds; returns the
    paths removed. A write lasts milliseconds, so the age test spares the files that other
    shards writing into the same folder have in flight."""
    removed, now = [], time.time()
    for tmp in Path(folder).glob(f".*.json.*{_TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed.append(tmp)
    return removed


def write_json_atomic(path, obj) -> Path:
    """Write ``obj`` as JSON to ``path`` so that the file is either absent, the old one, or whole:
    write a temporary file in the same folder, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes 0600; a run file is read like any output
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _read_record(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_finished(path, settings: dict, *, same_code: bool = False) -> bool:
    """Whether ``path`` holds a finished run with exactly these settings (and, with ``same_code``,
    made by the same code); an unreadable or partial file, or one in another :data:`FORMAT`,
    counts as not finished."""
    record = _read_record(Path(path))
    if not _complete(record):
        return False
    if record.get("format") != FORMAT:
        return False
    if record.get("settings") != json.loads(json.dumps(settings)):
        return False
    return not same_code or record.get("code") == code_fingerprint()


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _complete(record) -> bool:
    """Whether a parsed run file holds everything the summaries read: settings, wall time, and
    either (finished) every curve, one finite value per epoch, or (diverged) the message."""
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        return False
    if not _is_number(record.get("wall_seconds")):
        return False
    if record.get("status") == "diverged":
        return isinstance(record.get("message"), str)
    if record.get("status") != "finished":
        return False
    history, epochs = record.get("history"), record["settings"].get("epochs")
    if not isinstance(history, dict) or not isinstance(epochs, int):
        return False
    return all(isinstance(history.get(k), list) and len(history[k]) == epochs + 1
               and all(_is_number(v) for v in history[k]) for k in _HISTORY_KEYS)


@functools.lru_cache(maxsize=2)
def _dataset(name, n_train, n_test, k, dtype):
    data = load_dataset(name, n_train=n_train, n_test=n_test, k=k, dtype=dtype)
    for a in data:
        a.flags.writeable = False   # shared by the runs of a sweep
    return data


def run_one(run: Run, settings: Settings, out, *, xp=None, progress: bool = False) -> dict:
    """Train one run, write its file atomically to ``<out>/<scale>/<run-id>.json``, return the record.

    Nothing is written until the run has finished, so an interrupted run leaves no file. A run
    whose loss becomes non-finite is recorded with ``status: "diverged"`` and its message.
    """
    config = run_settings(run, settings)
    _check_serialisable(run, config)
    xp = xp or default_backend()
    started = time.perf_counter()
    X, y, X_test, y_test = (asarray(a, xp) for a in _dataset(run.dataset, settings.n_train,
                                                              settings.n_test, settings.k, settings.dtype))
    net = he_init(config["sizes"], seed=run.seed, dtype=settings.dtype, xp=xp)
    record = {"format": FORMAT, "run_id": run.run_id, "settings": config}
    try:
        _, history = train(net, X, y, optimizer=run.optimizer, epochs=settings.epochs,
                           batch_size=settings.batch_size, lr_decay=settings.lr_decay,
                           gauge_fix=run.gauge_fix, delta=settings.delta, seed=run.seed,
                           progress=progress, X_test=X_test, y_test=y_test, min_norm_loss=True,
                           **({"egd_biases": config["egd_biases"]} if run.optimizer == "egd" else {}))
        record["status"] = "finished"
        record["history"] = _history_record(history)
    except TrainingDiverged as err:
        record["status"] = "diverged"
        record["message"] = str(err)
    _stamp(record, time.perf_counter() - started, xp)
    write_json_atomic(Path(out) / run.scale / f"{run.run_id}.json", record)
    return record


def _stamp(record, wall_seconds, xp):
    """What every run file holds beside its curves: wall time, device, version, code, date."""
    from .._version import __version__
    record.update({
        "wall_seconds": wall_seconds, "device": device_name(xp),
        "gaugelit_version": __version__, "code": code_fingerprint(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    return record


def _history_record(history):
    return {k: [float(v) for v in history[k]] for k in _HISTORY_KEYS}


def cells(runs: Iterable[Run]) -> list[list[Run]]:
    """The runs grouped into grid cells: runs of one data set, architecture and optimizer (they
    differ only in seed and gauge fixing), which :func:`train_many` trains together; grid order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.architecture, run.optimizer, run.scale), []).append(run)
    return list(groups.values())


def run_cell(runs: list[Run], settings: Settings, out, *, xp=None, progress: bool = False) -> list[dict]:
    """Train the runs of one grid cell together (:func:`gaugelit.batched.train_many`) and write
    each run's file atomically, as :func:`run_one` would; return the records in the order of ``runs``.

    The files are those of :func:`run_one` (same settings, curves equal to rounding), so a sweep
    may mix the two and resumes either way; ``wall_seconds`` is the cell's time divided by its
    runs, and ``batch`` records the cell's size and time. Nothing is written until all have finished."""
    from ..training import train_many

    runs = list(runs)
    if len({(r.dataset, r.architecture, r.optimizer, r.scale) for r in runs}) != 1:
        raise ValueError("run_cell: the runs must share data set, architecture, optimizer and scale")
    configs = [run_settings(run, settings) for run in runs]
    xp = xp or default_backend()
    started = time.perf_counter()
    run = runs[0]
    X, y, X_test, y_test = (asarray(a, xp) for a in _dataset(run.dataset, settings.n_train,
                                                              settings.n_test, settings.k, settings.dtype))
    nets = [he_init(c["sizes"], seed=r.seed, dtype=settings.dtype, xp=xp) for c, r in zip(configs, runs)]
    results = train_many(nets, X, y, gauge_fix=[r.gauge_fix for r in runs], seeds=[r.seed for r in runs],
                         optimizer=run.optimizer, epochs=settings.epochs, batch_size=settings.batch_size,
                         lr_decay=settings.lr_decay, delta=settings.delta, progress=progress,
                         X_test=X_test, y_test=y_test, min_norm_loss=True,
                         **({"egd_biases": configs[0]["egd_biases"]} if run.optimizer == "egd" else {}))
    wall = time.perf_counter() - started
    records = []
    for r, config, result in zip(runs, configs, results):
        record = {"format": FORMAT, "run_id": r.run_id, "settings": config}
        if isinstance(result, TrainingDiverged):
            record.update(status="diverged", message=str(result))
        else:
            record.update(status="finished", history=_history_record(result[1]))
        _stamp(record, wall / len(runs), xp)
        record["batch"] = {"models": len(runs), "cell_wall_seconds": wall}
        records.append(record)
    for r, record in zip(runs, records):
        write_json_atomic(Path(out) / r.scale / f"{r.run_id}.json", record)
    return records


def shard_of(items: list, spec) -> list:
    """The ``K``-th of ``N`` interleaved shares of ``items`` (``spec`` ``"K/N"`` or ``(K, N)``,
    ``1 <= K <= N``): items ``K-1, K-1+N, ...``, so that every share gets every architecture."""
    try:
        k, n = (int(v) for v in (spec.split("/") if isinstance(spec, str) else spec))
    except (TypeError, ValueError):
        raise ValueError(f"shard must be 'K/N' with integers 1 <= K <= N, got {spec!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"shard must be 'K/N' with integers 1 <= K <= N, got {spec!r}")
    return list(items)[k - 1::n]


def shard_runs(runs: list[Run], spec, batch_models: bool) -> list[Run]:
    """The runs of share ``spec`` (``"K/N"``): shares of whole cells with ``batch_models`` (a cell
    trains at once), else of single runs."""
    if batch_models:
        return [run for cell in shard_of(cells(runs), spec) for run in cell]
    return shard_of(runs, spec)


def _check_serialisable(run: Run, config: dict) -> None:
    """Refuse, before training, settings that the run file could not hold (a NumPy scalar, NaN)."""
    try:
        json.dumps({"run_id": run.run_id, "settings": config}, allow_nan=False)
    except (TypeError, ValueError) as err:
        bad = [k for k, v in config.items() if not _json_ok(v)]
        raise ValueError(f"{run.label()}: its settings cannot be written to a run file "
                         f"({', '.join(bad) or err}: {err}); pass plain numbers and strings") from None


def _json_ok(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_in_worker(run: Run, settings: Settings, out: str) -> dict:
    """:func:`run_one` in a worker process of a parallel sweep, with one BLAS thread: the sweep
    already runs one process per core, and more threads would only contend for them."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return run_one(run, settings, out)


def reproduce(settings: Settings, out="results", *, runs: Iterable[Run] | None = None, jobs: int = 1,
              same_code: bool = False, progress: bool = False,
              log: Callable[[str], None] | None = print, executor=None,
              batch_models: bool | None = None, shard: str | tuple | None = None) -> dict[str, list[Run]]:
    """Run every run of the grid that has no finished file yet; return ``{"skipped", "ran",
    "diverged"}`` lists. ``same_code`` also reruns files written by other code (see
    :func:`code_fingerprint`); the book does this at CI scale.

    ``jobs``: how many runs train at once, each in its own worker process (``0``: one per available
    core, :func:`available_cores`). Every run writes its own file the moment it finishes, so an
    interrupted parallel sweep resumes like a sequential one. ``progress`` bars are shown only
    when ``jobs`` is 1 (parallel bars would interleave); finished runs are logged either way.

    ``executor``: any :class:`concurrent.futures.Executor` (a ``ProcessPoolExecutor``, dask's
    ``Client.get_executor()``, a submitit executor) runs the runs, or the cells, instead of
    ``jobs``; each task writes its own files where it runs, so ``out`` must be a folder all
    workers share. ``batch_models``: train each grid cell (:func:`cells`) at once with
    :func:`gaugelit.train_many`, still one file per run (default: on when the backend is CuPy).
    ``shard``: ``"K/N"`` keeps the K-th of N interleaved shares of the grid's cells (with
    ``batch_models``) or runs (:func:`shard_of`), so that N jobs of an array each run one share
    into the same folder.

    Before any training: the folder is checked writable (:class:`ResultsNotWritable` otherwise),
    every run's settings are checked to fit a run file, and temporary files that a killed write
    left are removed. Worker processes of ``jobs`` exit when this process dies, even by SIGKILL;
    one Ctrl-C stops them all (the runs in progress are lost, the finished ones are on disk).
    """
    jobs = integer(jobs, "jobs", low=0) or available_cores()
    same_code, progress = switch(same_code, "same_code"), switch(progress, "progress")
    if batch_models is None:
        batch_models = default_backend() is not np
    if batch_models and jobs > 1 and executor is None:
        raise ValueError("batch_models trains a cell in one process; to run cells in parallel, pass "
                         "executor= (e.g. a ProcessPoolExecutor) instead of jobs")
    runs = settings.runs() if runs is None else list(runs)
    if shard is not None:
        runs = shard_runs(runs, shard, batch_models)
    folder = Path(out) / settings.scale
    for run in runs:
        _check_serialisable(run, run_settings(run, settings))
    check_writable(folder)
    for tmp in clean_temporary_files(folder):
        if log:
            log(f"removed {tmp.name}, left by an interrupted write")
    done = {"skipped": [], "ran": [], "diverged": []}
    todo = []
    for run in runs:
        if is_finished(folder / f"{run.run_id}.json", run_settings(run, settings), same_code=same_code):
            done["skipped"].append(run)
        else:
            todo.append(run)

    def finished(run, record):
        key = "ran" if record["status"] == "finished" else "diverged"
        done[key].append(run)
        if log:
            tail = (f"reg. loss {record['history']['reg_loss'][-1]:.4f}, training error "
                    f"{record['history']['train_error'][-1]:.4f}" if key == "ran" else record["message"])
            log(f"[{len(done['ran']) + len(done['diverged'])}/{len(todo)}] {run.label()}: "
                f"{record['wall_seconds']:.1f} s, {tail}")

    if executor is not None or batch_models:
        _run_tasks(todo, settings, out, executor, batch_models, progress, finished, log)
    elif jobs == 1 or len(todo) < 2:
        for run in todo:
            finished(run, run_one(run, settings, out, progress=progress))
    else:
        for name in sorted({run.dataset for run in todo}):   # download and check the files once,
            fetch_dataset(name)                               # here, not in every worker at once
        _run_in_processes(todo, settings, out, min(jobs, len(todo)), finished, log)
    if log:
        log(f"{len(done['ran'])} runs trained, {len(done['diverged'])} diverged, "
            f"{len(done['skipped'])} already finished in {folder}")
    return done


def _cell_in_worker(runs, settings: Settings, out: str) -> list[dict]:
    """:func:`run_cell` in a worker of an executor (one BLAS thread, as :func:`_run_in_worker`)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return run_cell(runs, settings, out)


def _run_tasks(runs, settings, out, executor, batch_models, progress, finished, log):
    """Train ``runs`` one by one or cell by cell (``batch_models``), here (``executor`` None) or
    as tasks of ``executor``; call ``finished(run, record)`` as each run ends.

    On an error the tasks not started are cancelled and those running are waited for (their files
    are written), then the error is raised, naming its runs. The executor is not shut down: it is
    the caller's. Futures that are not ``concurrent.futures.Future`` (submitit's jobs: ``done()``,
    ``result()``) are polled, and on an error the others are left to run: each is a batch job
    that saves its own files."""
    from concurrent.futures import Future, as_completed, wait

    tasks = cells(runs) if batch_models else [[run] for run in runs]
    if executor is None:
        for task in tasks:
            records = run_cell(task, settings, out, progress=progress)
            for run, record in zip(task, records):
                finished(run, record)
        return
    for name in sorted({run.dataset for run in runs}):    # download and check the files once, here
        fetch_dataset(name)
    futures = {(executor.submit(_cell_in_worker, task, settings, str(out)) if batch_models else
                executor.submit(_run_in_worker, task[0], settings, str(out))): task for task in tasks}
    standard = all(isinstance(f, Future) for f in futures)
    try:
        for future in (as_completed(futures) if standard else _poll_completed(futures)):
            task = futures[future]
            try:
                result = future.result()
            except BaseException as err:
                names = ", ".join(run.label() for run in task)
                if log:
                    log(f"{names} failed ({type(err).__name__}: {err}); cancelling the tasks not "
                        f"started, waiting for those in progress to finish and be saved")
                err.add_note(f"in the task that ran {names}")
                raise
            for run, record in zip(task, result if batch_models else [result]):
                finished(run, record)
    finally:
        if standard:     # the caller's pool: cancel what has not started, wait for what has
            for future in futures:
                future.cancel()
            wait([f for f in futures if not f.cancelled()])
        # other futures (submitit's jobs) are batch jobs of their own: left to finish and save


def _poll_completed(futures, every: float = 1.0):
    """``as_completed`` for futures that only have ``done()`` and ``result()`` (submitit's jobs)."""
    pending = list(futures)
    while pending:
        done = [f for f in pending if f.done()]
        if not done:
            time.sleep(every)
        pending = [f for f in pending if f not in done]
        yield from done


def _watch_parent(parent: int, interval: float = 0.5) -> None:
    """Worker initializer: exit as soon as ``parent`` is no longer this process's parent (it died,
    perhaps by SIGKILL from the out-of-memory killer, which no handler sees), so that no worker
    outlives its sweep holding a core or a GPU. A daemon thread polls ``os.getppid()``; Ctrl-C is
    left to the parent, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="gaugelit-parent-watch", daemon=True).start()


def _worker_pool(jobs: int):
    """A pool of ``jobs`` spawned worker processes that exit with their parent."""
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child inherits BLAS thread pools and CUDA state it cannot use.
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_watch_parent, initargs=(os.getpid(),))


def _stop_workers(pool) -> None:
    """Terminate the pool's workers now (the runs in progress are lost; no file is half-written)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _run_in_processes(runs, settings, out, jobs, finished, log, task=None):
    """Train ``runs`` in ``jobs`` worker processes; call ``finished(run, record)`` as each ends.

    On an error the runs not yet started are cancelled and those in progress are waited for (their
    files are written), then the error is raised, naming its run. On Ctrl-C (KeyboardInterrupt)
    the workers are terminated at once, so one Ctrl-C is enough. ``task`` replaces
    :func:`_run_in_worker` (tests)."""
    from concurrent.futures import as_completed

    task = task or _run_in_worker
    pool = _worker_pool(jobs)
    interrupted = False
    try:
        futures = {pool.submit(task, run, settings, str(out)): run for run in runs}
        for future in as_completed(futures):
            run = futures[future]
            try:
                record = future.result()
            except Exception as err:
                running = sum(f.running() for f in futures)
                if log:
                    log(f"{run.label()} failed ({type(err).__name__}: {err}); cancelling the runs not "
                        f"started, waiting for the {running} in progress to finish and be saved")
                err.add_note(f"in the worker process that ran {run.label()}")
                raise
            finished(run, record)
    except KeyboardInterrupt:
        interrupted = True
        if log:
            log("interrupted: stopping the workers; finished runs are saved, rerun to resume")
        _stop_workers(pool)
        raise
    finally:     # after Ctrl-C the workers are terminated: waiting on the pool could only hang
        pool.shutdown(wait=not interrupted, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Reading results back


def load_results(folder, *, status: str = "finished") -> list[dict]:
    """The run records in ``folder`` (``*.json``; temporary files are ignored), sorted by run id;
    only those with ``status`` (``None`` for all). A file that is not a complete run record (a
    stray JSON file, a run file without its curves) is skipped with a ``RuntimeWarning``."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        record = _read_record(path)
        if not _complete(record):
            warnings.warn(f"{path}: not a complete gaugelit run file; skipped (rerun the sweep to "
                          f"redo an unfinished run)", RuntimeWarning, stacklevel=2)
            continue
        if status is None or record.get("status") == status:
            records.append(record)
    return records


def grid_records(settings: Settings, out, *, same_code: bool = False) -> list[dict]:
    """The finished records of exactly the runs of ``settings`` found under ``out`` (files with
    other settings, or, with ``same_code``, from other code, are left out)."""
    folder, records = Path(out) / settings.scale, []
    for run in settings.runs():
        path = folder / f"{run.run_id}.json"
        if is_finished(path, run_settings(run, settings), same_code=same_code):
            record = _read_record(path)
            if record["status"] == "finished":
                records.append(record)
    return records


def _group_key(record):
    s = record["settings"]
    return s["dataset"], s["architecture"], s["optimizer"], s["gauge_fix"]


def curves(records: list[dict], metric: str) -> dict[tuple, dict]:
    """Per ``(dataset, architecture, optimizer, gauge_fix)``: the epochs, the curves of ``metric``
    for each seed (``values``, seeds x epochs), their mean, min and max, and the seeds."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    groups: dict[tuple, list] = {}
    for record in records:
        groups.setdefault(_group_key(record), []).append(record)
    table = {}
    for key, group in sorted(groups.items()):
        group.sort(key=lambda r: r["settings"]["seed"])
        epochs = {tuple(r["history"]["epoch"]) for r in group}
        if len(epochs) != 1:
            raise ValueError(f"{key}: runs with different epochs cannot be averaged")
        values = np.array([r["history"][metric] for r in group], dtype=float)
        table[key] = {"epoch": np.array(epochs.pop()), "values": values, "mean": values.mean(axis=0),
                      "min": values.min(axis=0), "max": values.max(axis=0),
                      "seeds": [r["settings"]["seed"] for r in group]}
    return table


def _pairs(records: list[dict], value: Callable[[dict], float]) -> dict[tuple, list[dict]]:
    """Per ``(dataset, architecture, optimizer)``, one ``{False: v, True: v}`` per seed run both ways
    (in seed order), ``v = value(history)`` of the run without and with gauge fixing."""
    by_seed: dict[tuple, dict] = {}
    for record in records:
        d, a, o, g = _group_key(record)
        by_seed.setdefault((d, a, o), {}).setdefault(record["settings"]["seed"], {})[g] = value(record["history"])
    return {key: [pair for _, pair in sorted(seeds.items()) if True in pair and False in pair]
            for key, seeds in sorted(by_seed.items())}


def paired_differences(records: list[dict], metric: str, epoch: int = -1) -> dict[tuple, np.ndarray]:
    """Per ``(dataset, architecture, optimizer)``: ``metric`` at ``epoch`` with gauge fixing minus
    without, for each seed run both ways (same initial network, same mini-batches)."""
    return {key: np.array([pair[True] - pair[False] for pair in pairs])
            for key, pairs in _pairs(records, lambda h: h[metric][epoch]).items()}


def balancing_share(records: list[dict], epoch: int = -1) -> dict[tuple, np.ndarray]:
    """Per ``(dataset, architecture, optimizer)``, for each seed run both ways: the fraction of the
    gap in ``reg_loss`` at ``epoch`` (without minus with gauge fixing) that moving the baseline
    into its minimum-norm gauge removes, ``(reg_loss - reg_loss_min_norm) / gap`` of the baseline.
    Above 1 where the balanced baseline is below the gauge-fixed run."""
    both = _pairs(records, lambda h: (h["reg_loss"][epoch], h["reg_loss_min_norm"][epoch]))
    return {key: np.array([(pair[False][0] - pair[False][1]) / (pair[False][0] - pair[True][0]) for pair in pairs])
            for key, pairs in both.items()}


def final_table(records: list[dict]) -> list[dict]:
    """One row per ``(dataset, architecture, optimizer, gauge_fix)``: the last epoch's metrics
    averaged over seeds, the number of seeds and the mean wall time of a run."""
    rows = {}
    for metric in METRICS:
        for key, c in curves(records, metric).items():
            row = rows.setdefault(key, dict(zip(("dataset", "architecture", "optimizer", "gauge_fix"), key),
                                            seeds=len(c["seeds"]), epochs=int(c["epoch"][-1])))
            row[metric] = float(c["mean"][-1])
    for record in records:
        row = rows[_group_key(record)]
        row["wall_seconds"] = row.get("wall_seconds", 0.0) + record["wall_seconds"] / row["seeds"]
    return [rows[key] for key in sorted(rows)]


def plot_learning_curves(records: list[dict], optimizer: str,
                         metrics=("reg_loss", "train_error", "test_error"), *, axes=None):
    """Figs. 3 (``"sgd"``) and 4 (``"egd"``) redrawn: one row per data set and architecture, one
    column per metric; each curve the mean over seeds, the band their range (min to max)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    picked = [r for r in records if r["settings"]["optimizer"] == optimizer]
    if not picked:
        raise ValueError(f"no finished runs with optimizer {optimizer!r}")
    panels = sorted({(r["settings"]["dataset"], r["settings"]["architecture"]) for r in picked},
                    key=lambda da: (list(DATASETS).index(da[0]), list(ARCHITECTURES).index(da[1])))
    if axes is None:
        _, axes = plt.subplots(len(panels), len(metrics), figsize=(3.6 * len(metrics), 2.4 * len(panels)),
                               squeeze=False, sharex=True, constrained_layout=True)
    titles = {"reg_loss": f"regularised log-loss (l{OPTIMIZERS[optimizer]['p']:g})",
              "reg_loss_min_norm": f"same, in the minimum-norm gauge (l{OPTIMIZERS[optimizer]['p']:g})",
              "log_loss": "log-loss", "train_error": "training error", "test_error": "test error"}
    styles = {False: dict(color="tab:blue", label="no gauge fixing"),
              True: dict(color="tab:red", label="minimum-norm gauge")}
    for j, metric in enumerate(metrics):
        table = curves(picked, metric)
        for i, (dataset, arch) in enumerate(panels):
            ax = axes[i][j]
            for gauge in (False, True):
                c = table.get((dataset, arch, optimizer, gauge))
                if c is None:
                    continue
                ax.plot(c["epoch"][1:], c["mean"][1:], **styles[gauge])
                ax.fill_between(c["epoch"][1:], c["min"][1:], c["max"][1:], alpha=0.25,
                                color=styles[gauge]["color"], linewidth=0)
            if i == 0:
                ax.set_title(titles[metric])
            if j == 0:
                ax.set_ylabel(f"{DATASETS[dataset].abbrev}\n{arch}")
            if i == len(panels) - 1:
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].legend(fontsize="small")
    return axes
