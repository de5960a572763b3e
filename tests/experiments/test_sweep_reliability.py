"""Reliability of sweeps (issue 12): a sweep cannot lose a run. Bad folders and settings are refused
before any run trains, run files are whole or absent and readable by others, stray and half-written
files are skipped or cleaned, and the worker processes stop with their sweep (SIGKILL, one Ctrl-C).
Each test names the defect it covers."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gaugelit import experiments as ex
from gaugelit.__main__ import main
from gaugelit.experiments import grid, sweep


@pytest.fixture
def tiny(tiny):
    """conftest's tiny sweep, narrowed to one SGD run of one epoch."""
    return tiny.replace(seeds=(0,), epochs=1, optimizers=("sgd",), gauge_fix=(False,))


def _no_training(*args, **kwargs):
    raise AssertionError("a run trained before the sweep's checks")


def test_an_unwritable_folder_is_refused_before_any_run(tiny, tmp_path, monkeypatch, capsys):
    """Defect: the folder was found unwritable only when the first run, minutes later, wrote."""
    monkeypatch.setattr(sweep, "train", _no_training)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ex.ResultsNotWritable, match=r"file.*--out"):
        ex.reproduce(tiny, blocker, log=None)
    if os.geteuid() != 0:                    # root writes anywhere
        locked = tmp_path / "locked"
        (locked / "ci").mkdir(parents=True)
        (locked / "ci").chmod(0o500)
        try:
            with pytest.raises(ex.ResultsNotWritable, match="permission denied"):
                ex.reproduce(tiny, locked, log=None)
        finally:
            (locked / "ci").chmod(0o700)
    # the CLI: one line naming the path and the fix, exit status 2
    monkeypatch.setattr(grid, "settings_for", lambda scale: tiny)
    assert main(["reproduce", "--scale", "ci", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker) in err and "--out" in err


def test_a_record_that_cannot_be_serialised_is_refused_before_training(tiny, tmp_path, monkeypatch):
    """Defect: settings a run file cannot hold (a NumPy scalar) failed only after training."""
    monkeypatch.setattr(sweep, "train", _no_training)
    with pytest.raises(ValueError, match="delta"):
        ex.reproduce(tiny.replace(delta=np.float32(1e-3)), tmp_path, log=None)


def test_run_files_respect_the_umask(tmp_path):
    """Defect: run files were 0600 (mkstemp's mode)."""
    old = os.umask(0o022)
    try:
        path = ex.write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_incomplete_and_stray_files(tiny, tmp_path):
    """Defects: a run file without `history` counted as finished (and broke summary); a stray
    JSON file made load_results refuse the whole folder; a killed write's temp file stayed."""
    ex.reproduce(tiny, tmp_path, log=None)
    folder = tmp_path / "ci"
    run = tiny.runs()[0]
    path = folder / f"{run.run_id}.json"
    assert ex.is_finished(path, ex.run_settings(run, tiny))
    record = json.loads(path.read_text())
    del record["history"]
    path.write_text(json.dumps(record))
    assert not ex.is_finished(path, ex.run_settings(run, tiny))
    (folder / "notes.json").write_text('["not a run"]')
    with pytest.warns(RuntimeWarning, match="notes.json"):
        assert ex.load_results(folder) == []
    tmp = folder / f".{run.run_id}.json.abc123.tmp"
    tmp.write_text('{"format": 2, "sett')
    fresh = folder / f".{run.run_id}.json.inflight.tmp"     # another shard's write in progress
    fresh.write_text("{")
    os.utime(tmp, (time.time() - 3600, time.time() - 3600))
    done = ex.reproduce(tiny, tmp_path, log=None)
    assert done["ran"] == [run] and not tmp.exists() and fresh.exists()
    with pytest.warns(RuntimeWarning, match="notes.json"):
        assert [r["run_id"] for r in ex.load_results(folder)] == [run.run_id]


_SWEEP = """
import os, signal, sys, time
# A shell without job control starts background commands with SIGINT ignored, and Python keeps
# that; a user's Ctrl-C reaches a sweep with Python's own handler, so install it here.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {here!r})
import gaugelit as gl
import functools
from gaugelit import experiments as ex
import reliability_tasks
runs = ex.settings_for("ci").runs()[:2]
ex.pool.run_in_processes(functools.partial(reliability_tasks.sleep_and_tell, out={out!r}), runs, 2,
                         lambda run, record: None)
"""


def _start_sweep(tmp_path):
    (tmp_path / "reliability_tasks.py").write_text(textwrap.dedent("""
        import os, time
        from pathlib import Path
        def sleep_and_tell(run, out):
            Path(out, f"worker-{os.getpid()}").write_text("")
            time.sleep(60)
    """))
    script = _SWEEP.format(here=str(tmp_path), out=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.time() + 60
    while len(list(tmp_path.glob("worker-*"))) < 2:
        assert time.time() < deadline and parent.poll() is None, parent.stderr.read().decode()
        time.sleep(0.1)
    return parent, [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]


def _gone(pids, within):
    deadline = time.time() + within
    while time.time() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as f:          # a zombie has exited
                    if f.read().split()[2] != "Z":
                        alive.append(pid)
            except (ProcessLookupError, FileNotFoundError):
                pass
        if not alive:
            return True
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """Defect: a sweep killed by SIGKILL (the OOM killer) left its workers running."""
    parent, workers = _start_sweep(tmp_path)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(workers, within=10)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_one_ctrl_c_stops_a_parallel_sweep(tmp_path):
    """Defect: after Ctrl-C the sweep waited for the runs in progress (a second Ctrl-C needed)."""
    parent, workers = _start_sweep(tmp_path)
    parent.send_signal(signal.SIGINT)
    parent.wait(timeout=60)          # seconds when idle; generous for a loaded CI machine
    assert _gone(workers, within=10)


def test_cli_interrupt_is_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "reproduce", interrupted)
    assert main(["reproduce", "--scale", "ci", "--out", "/nonexistent-never-written"]) == 130
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
