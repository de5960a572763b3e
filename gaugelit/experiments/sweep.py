"""The sweep of section 4's learning experiments (Figs. 3-4): train the runs of a grid
(:mod:`~gaugelit.experiments.grid`) that have no finished run file yet
(:mod:`~gaugelit.experiments.runfiles`), so that an interrupted sweep resumes where it stopped
and loses nothing finished.

Runs execute one after another, or with ``jobs > 1`` in that many worker processes
(:mod:`~gaugelit.experiments.pool`; each with one BLAS thread, so on a CPU ``jobs`` = the number
of cores keeps every core busy). A run's curves do not depend on the process that ran it beyond
rounding (BLAS may add in another order with another thread count). ``batch_models`` trains the
runs of a grid cell (one data set, architecture and optimizer: seeds x gauge fixing) at once with
:func:`gaugelit.train_many`, the GPU's way (on by default there); any
``concurrent.futures.Executor`` (dask, submitit for SLURM) can run the runs or cells, and
``shard`` splits the grid among the jobs of an array.
"""
from __future__ import annotations

import functools
import time
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..core.backend import asarray, default_backend
from ..core.checks import integer, switch
from ..core.network import he_init
from ..training import TrainingDiverged, train, train_many
from .data import fetch_dataset, load_dataset
from .grid import Run, Settings, cells, run_settings, shard_runs
from .pool import collect, run_in_processes
from .runfiles import (
    available_cores,
    check_serialisable,
    check_writable,
    clean_temporary_files,
    is_finished,
    run_record,
    write_json_atomic,
)

__all__ = ["run_one", "run_cell", "reproduce"]


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
    check_serialisable(run, config)
    xp = xp or default_backend()
    started = time.perf_counter()
    X, y, X_test, y_test = (asarray(a, xp) for a in _dataset(run.dataset, settings.n_train,
                                                              settings.n_test, settings.k, settings.dtype))
    net = he_init(config["sizes"], seed=run.seed, dtype=settings.dtype, xp=xp)
    try:
        result = train(net, X, y, optimizer=run.optimizer, epochs=settings.epochs,
                       batch_size=settings.batch_size, lr_decay=settings.lr_decay,
                       gauge_fix=run.gauge_fix, delta=settings.delta, seed=run.seed,
                       progress=progress, X_test=X_test, y_test=y_test, min_norm_loss=True,
                       **({"egd_biases": config["egd_biases"]} if run.optimizer == "egd" else {}))
    except TrainingDiverged as err:
        result = err
    record = run_record(run, config, result, time.perf_counter() - started, xp)
    write_json_atomic(Path(out) / run.scale / f"{run.run_id}.json", record)
    return record


def run_cell(runs: list[Run], settings: Settings, out, *, xp=None, progress: bool = False) -> list[dict]:
    """Train the runs of one grid cell together (:func:`gaugelit.train_many`) and write each run's
    file atomically, as :func:`run_one` would; return the records in the order of ``runs``.

    The files are those of :func:`run_one` (same settings, curves equal to rounding), so a sweep
    may mix the two and resumes either way; ``wall_seconds`` is the cell's time divided by its
    runs, and ``batch`` records the cell's size and time. Nothing is written until all have finished."""
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
    records = [{**run_record(r, config, result, wall / len(runs), xp),
                "batch": {"models": len(runs), "cell_wall_seconds": wall}}
               for r, config, result in zip(runs, configs, results)]
    for r, record in zip(runs, records):
        write_json_atomic(Path(out) / r.scale / f"{r.run_id}.json", record)
    return records


def _run_in_worker(run: Run, settings: Settings, out: str) -> dict:
    """:func:`run_one` in a worker process of a parallel sweep, with one BLAS thread: the sweep
    already runs one process per core, and more threads would only contend for them."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return run_one(run, settings, out)


def _cell_in_worker(runs, settings: Settings, out: str) -> list[dict]:
    """:func:`run_cell` in a worker of an executor (one BLAS thread, as :func:`_run_in_worker`)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return run_cell(runs, settings, out)


def _fetch_data(runs) -> None:
    """Download and check the runs' data files once, here, not in every worker at once."""
    for name in sorted({run.dataset for run in runs}):
        fetch_dataset(name)


def reproduce(settings: Settings, out="results", *, runs: Iterable[Run] | None = None, jobs: int = 1,
              same_code: bool = False, progress: bool = False,
              log: Callable[[str], None] | None = print, executor=None,
              batch_models: bool | None = None, shard: str | tuple | None = None) -> dict[str, list[Run]]:
    """Run every run of the grid that has no finished file yet; return ``{"skipped", "ran",
    "diverged"}`` lists. ``same_code`` also reruns files written by other code (see
    :func:`~gaugelit.experiments.runfiles.code_fingerprint`); the book does this at CI scale.

    ``jobs``: how many runs train at once, each in its own worker process (``0``: one per available
    core, :func:`~gaugelit.experiments.runfiles.available_cores`). Every run writes its own file the
    moment it finishes, so an interrupted parallel sweep resumes like a sequential one. ``progress``
    bars are shown only when ``jobs`` is 1 (parallel bars would interleave); finished runs are
    logged either way.

    ``executor``: any :class:`concurrent.futures.Executor` (a ``ProcessPoolExecutor``, dask's
    ``Client.get_executor()``, a submitit executor) runs the runs, or the cells, instead of
    ``jobs``; each task writes its own files where it runs, so ``out`` must be a folder all
    workers share. ``batch_models``: train each grid cell (:func:`~gaugelit.experiments.grid.cells`)
    at once with :func:`gaugelit.train_many`, still one file per run (default: on when the backend
    is CuPy). ``shard``: ``"K/N"`` keeps the K-th of N interleaved shares of the grid's cells (with
    ``batch_models``) or runs (:func:`~gaugelit.experiments.grid.shard_of`), so that N jobs of an
    array each run one share into the same folder.

    Before any training: the folder is checked writable (``ResultsNotWritable`` otherwise),
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
        check_serialisable(run, run_settings(run, settings))
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
        _fetch_data(todo)
        run_in_processes(functools.partial(_run_in_worker, settings=settings, out=str(out)), todo,
                         min(jobs, len(todo)), finished, log=log, label=Run.label)
    if log:
        log(f"{len(done['ran'])} runs trained, {len(done['diverged'])} diverged, "
            f"{len(done['skipped'])} already finished in {folder}")
    return done


def _run_tasks(runs, settings, out, executor, batch_models, progress, finished, log):
    """Train ``runs`` one by one or cell by cell (``batch_models``), here (``executor`` None) or
    as tasks of ``executor``; call ``finished(run, record)`` as each run ends.

    On an error the tasks not started are cancelled and those running are waited for (their files
    are written), then the error is raised, naming its runs. The executor is not shut down: it is
    the caller's. Futures that are not ``concurrent.futures.Future`` (submitit's jobs) are left to
    run on an error: each is a batch job that saves its own files."""
    tasks = cells(runs) if batch_models else [[run] for run in runs]

    def task_finished(task, result):
        for run, record in zip(task, result if batch_models else [result]):
            finished(run, record)

    if executor is None:
        for task in tasks:
            task_finished(task, run_cell(task, settings, out, progress=progress))
        return
    _fetch_data(runs)
    futures = {(executor.submit(_cell_in_worker, task, settings, str(out)) if batch_models else
                executor.submit(_run_in_worker, task[0], settings, str(out))): task for task in tasks}
    try:
        collect(futures, task_finished, log=log, label=lambda task: ", ".join(run.label() for run in task))
    finally:     # the caller's pool: cancel what has not started, wait for what has
        standard = [f for f in futures if isinstance(f, Future)]
        for future in standard:
            future.cancel()
        wait([f for f in standard if not f.cancelled()])
