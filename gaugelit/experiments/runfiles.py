"""The run files: one small JSON file per finished run, ``<out>/<scale>/<run-id>.json``, with its
curves, settings, device, wall time and the fingerprint of the code that made it.

Files are written atomically (absent, the old one, or whole), so a sweep killed at any moment
leaves nothing half-written; a file counts as finished only when it holds every curve and the
settings asked for, which is what lets a rerun skip it.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import math
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .._version import __version__
from ..training import TrainingDiverged
from .grid import Run, Settings, run_settings

__all__ = ["FORMAT", "METRICS", "HISTORY_KEYS", "FINGERPRINTED", "code_fingerprint", "device_name",
           "available_cores", "ResultsNotWritable", "check_writable", "clean_temporary_files",
           "write_json_atomic", "check_serialisable", "run_record", "is_finished", "load_results",
           "grid_records"]

#: Version of the run-file layout (2: ``reg_loss_min_norm`` added; files of another version rerun).
FORMAT = 2
#: The per-epoch curves a run file holds (entry 0 is the untrained network).
METRICS = ("reg_loss", "reg_loss_min_norm", "log_loss", "train_error", "test_error")
#: Everything a finished run's ``history`` holds, one value per epoch.
HISTORY_KEYS = ("epoch", "lr", "reg_loss", "reg_loss_min_norm", "log_loss", "train_error", "test_error",
                "seconds", "gauge_iterations")

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


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------
# Writing


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


def check_serialisable(run: Run, config: dict) -> None:
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


def run_record(run: Run, config: dict, result, wall_seconds: float, xp) -> dict:
    """The file of ``run`` with settings ``config``, from what training gave (``result``: ``train``'s
    ``(net, history)``, or the :class:`~gaugelit.TrainingDiverged` it raised): the curves, or the
    divergence's message, then wall time, device, version, code and date."""
    record = {"format": FORMAT, "run_id": run.run_id, "settings": config}
    if isinstance(result, TrainingDiverged):
        record.update(status="diverged", message=str(result))
    else:
        record.update(status="finished", history={k: [float(v) for v in result[1][k]] for k in HISTORY_KEYS})
    record.update({
        "wall_seconds": wall_seconds, "device": device_name(xp),
        "gaugelit_version": __version__, "code": code_fingerprint(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    return record


# ---------------------------------------------------------------------------------------------
# Reading


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
               and all(_is_number(v) for v in history[k]) for k in HISTORY_KEYS)


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
