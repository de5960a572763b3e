"""bench/device_run.sh in its CPU mode (NumPy, a tiny grid, no wheels): the script a GPU call runs,
kept from rotting. It must pack at most a few archives that the GPU machine's limits let back
(8 files of 16 MiB), print one summary line, and resume its grid from a carried results archive."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def device_run(tmp_path, out, carry, **env):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("bash and coreutils' timeout are needed")
    env = {**os.environ, "OUT": str(out), "GAUGELIT_CARRY": str(carry), "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), **env}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "device_run.sh"), "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


def test_cpu_mode_runs_every_step_packs_archives_and_resumes(tmp_path):
    from gaugelit.experiments.data import DataFileMissing, fetch_dataset

    out, carry = tmp_path / "out", tmp_path / "carry"
    carry.mkdir()
    [summary] = device_run(tmp_path, out, carry)
    assert summary.startswith("device_run cpu ") and "tests=ok(" in summary and "passed" in summary
    assert "backend=ok(numpy - CPU:" in summary and "bench=ok" in summary and "nbval=skipped" in summary
    # gaugelit.torch on CUDA: here every test skips (no GPU, or no torch) and the summary says why
    try:
        import torch
        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if gpu:
        assert re.search(r"torch_cuda=ok\(\d+ passed", summary), summary
    else:
        assert "torch_cuda=skipped(needs torch with CUDA and CuPy: " in summary
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 << 20 for f in files)
    assert {"bench.tar.gz", "logs.tar.gz", "summary.txt"} <= set(files)
    assert (out / "summary.txt").read_text().strip() == summary
    with tarfile.open(out / "bench.tar.gz") as tar:
        assert "bench/bench-cpu.json" in tar.getnames()
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert {"logs/tests.log", "logs/backend.log", "logs/bench.log", "logs/torch_cuda.log",
                "logs/torch_cuda.xml"} <= set(tar.getnames())
    try:
        fetch_dataset("mnist", download=False)
    except DataFileMissing:
        assert "grid=skipped(no MNIST" in summary
        return
    assert "grid=ok(2/2 finished, +2 in this call)" in summary
    with tarfile.open(out / "results.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["ci", "ci/mnist_3-layer_sgd_gauge_seed0.json",
                                          "ci/mnist_3-layer_sgd_nogauge_seed0.json"]
    # a second call carries the first one's results back in: nothing to train again
    shutil.copy(out / "results.tar.gz", carry / "results.tar.gz")
    [again] = device_run(tmp_path, tmp_path / "out2", carry, DEVICE_RUN_STEPS="grid")
    assert "grid=ok(2/2 finished, +0 in this call)" in again and "tests=skipped" in again
    assert "torch_cuda=skipped " in again
