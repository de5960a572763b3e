"""The worker processes of every sweep of the package (the grid of Figs. 3-4, the claim-3 ablation).

:func:`run_in_processes` runs tasks in spawned worker processes that exit with their parent, even
when it dies by SIGKILL; :func:`collect` gathers the results of any executor's futures as they end.
Each task writes its own file the moment it finishes, so what either loop stops or loses is only
the work in progress: rerunning the sweep resumes it.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Callable, Iterable

__all__ = ["run_in_processes", "collect"]


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


def _worker_pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of ``jobs`` spawned worker processes that exit with their parent."""
    # spawn, not fork: a forked child inherits BLAS thread pools and CUDA state it cannot use.
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_watch_parent, initargs=(os.getpid(),))


def _stop_workers(pool) -> None:
    """Terminate the pool's workers now (the tasks in progress are lost; no file is half-written)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _poll_completed(futures, every: float = 1.0):
    """``as_completed`` for futures that only have ``done()`` and ``result()`` (submitit's jobs)."""
    pending = list(futures)
    while pending:
        done = [f for f in pending if f.done()]
        if not done:
            time.sleep(every)
        pending = [f for f in pending if f not in done]
        yield from done


def collect(futures: dict, finished: Callable, *, log: Callable[[str], None] | None = None,
            label: Callable = str) -> None:
    """Call ``finished(task, result)`` as each future of ``futures`` (``{future: task}``) ends.

    The first error is logged and raised with a note naming its task (``label(task)``); what
    becomes of the other futures is the caller's to decide (cancel, wait, or leave them). Futures
    that are not ``concurrent.futures.Future`` (submitit's jobs: ``done()``, ``result()``) are polled."""
    standard = all(isinstance(f, Future) for f in futures)
    for future in (as_completed(futures) if standard else _poll_completed(futures)):
        task = futures[future]
        try:
            result = future.result()
        except BaseException as err:
            if log:
                log(f"{label(task)} failed ({type(err).__name__}: {err}); cancelling the runs not "
                    f"started, waiting for those in progress to finish and be saved")
            err.add_note(f"in the task that ran {label(task)}")
            raise
        finished(task, result)


def run_in_processes(work: Callable, tasks: Iterable, jobs: int, finished: Callable, *,
                     log: Callable[[str], None] | None = None, label: Callable = str) -> None:
    """Call ``work(task)`` for each of ``tasks`` in ``jobs`` spawned worker processes and
    ``finished(task, result)`` here as each ends (:func:`collect`). ``work`` must be picklable: a
    module-level function, or a ``functools.partial`` of one.

    On an error the tasks not yet started are cancelled and those in progress are waited for (they
    write their files), then the error is raised, naming its task. On Ctrl-C (KeyboardInterrupt)
    the workers are terminated at once, so one Ctrl-C is enough."""
    pool = _worker_pool(jobs)
    interrupted = False
    try:
        collect({pool.submit(work, task): task for task in tasks}, finished, log=log, label=label)
    except KeyboardInterrupt:
        interrupted = True
        if log:
            log("interrupted: stopping the workers; finished runs are saved, rerun to resume")
        _stop_workers(pool)
        raise
    finally:     # after Ctrl-C the workers are terminated: waiting on the pool could only hang
        pool.shutdown(wait=not interrupted, cancel_futures=True)
