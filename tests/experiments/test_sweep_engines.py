"""Sweeps on other engines: grid cells trained at once (train_many), any concurrent.futures
executor (a process pool, a dask.distributed LocalCluster), and shards of a job array. Each keeps
one atomic file per run and resumes."""
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import gaugelit as gl
from gaugelit import experiments as ex
from gaugelit.__main__ import main
from gaugelit.experiments import grid, sweep


def names(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_same_records(folder_a, folder_b, runs, rtol):
    for run in runs:
        a = json.loads((folder_a / f"{run.run_id}.json").read_text())
        b = json.loads((folder_b / f"{run.run_id}.json").read_text())
        assert a["settings"] == b["settings"] and a["status"] == b["status"] == "finished"
        for key in ex.METRICS + ("gauge_iterations",):
            np.testing.assert_allclose(a["history"][key], b["history"][key], rtol=rtol, atol=1e-12)


def test_batched_cells_write_the_files_of_single_runs_and_resume(tiny, tmp_path):
    runs = tiny.replace(optimizers=("sgd", "egd")).runs()
    settings = tiny.replace(optimizers=("sgd", "egd"))
    ex.reproduce(settings, tmp_path / "one", batch_models=False, log=None)
    done = ex.reproduce(settings, tmp_path / "cell", batch_models=True, log=None)
    assert done["ran"] == runs and ex.cells(runs) == [runs[:4], runs[4:]]
    assert names(tmp_path / "cell" / "ci") == names(tmp_path / "one" / "ci")   # no temporary files
    assert_same_records(tmp_path / "one" / "ci", tmp_path / "cell" / "ci", runs, 1e-5)
    record = json.loads((tmp_path / "cell" / "ci" / f"{runs[0].run_id}.json").read_text())
    assert record["batch"]["models"] == 4 and ex.is_finished(
        tmp_path / "cell" / "ci" / f"{runs[0].run_id}.json", ex.run_settings(runs[0], settings))
    # resume: only the missing run trains, alone in its cell; files of either kind count as done
    (tmp_path / "cell" / "ci" / f"{runs[5].run_id}.json").unlink()
    (tmp_path / "one" / "ci" / f"{runs[1].run_id}.json").replace(tmp_path / "cell" / "ci" / f"{runs[1].run_id}.json")
    again = ex.reproduce(settings, tmp_path / "cell", batch_models=True, log=None)
    assert again["ran"] == [runs[5]] and len(again["skipped"]) == 7
    assert ex.reproduce(settings, tmp_path / "cell", batch_models=True, log=None)["ran"] == []


def test_an_interrupted_cell_writes_nothing(tiny, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "train_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.reproduce(tiny, tmp_path, batch_models=True, log=None)
    assert names(tmp_path / "ci") == []


def test_a_diverged_model_of_a_cell_is_recorded_and_the_others_finish(tiny, tmp_path, monkeypatch):
    real = gl.he_init

    def one_bad(sizes, seed=0, **kw):      # seed 1's network overflows at once
        net = real(sizes, seed=seed, **kw)
        return gl.LayeredNet([W * 1e30 for W in net.weights], net.biases) if seed == 1 else net
    monkeypatch.setattr(sweep, "he_init", one_bad)
    done = ex.reproduce(tiny.replace(gauge_fix=(False,), optimizers=("sgd",)), tmp_path, batch_models=True,
                      log=None)
    assert [r.seed for r in done["ran"]] == [0] and [r.seed for r in done["diverged"]] == [1]
    record = json.loads((tmp_path / "ci" / f"{done['diverged'][0].run_id}.json").read_text())
    alone = ex.run_one(done["diverged"][0], tiny, tmp_path / "alone")      # train's own message
    assert record["status"] == alone["status"] == "diverged" and record["message"] == alone["message"]


def test_shards_partition_the_grid_and_land_in_one_folder(tiny, tmp_path, capsys):
    settings = tiny.replace(optimizers=("sgd", "egd"), seeds=(0, 1, 2))
    runs = settings.runs()
    for batch in (False, True):
        shares = [ex.shard_runs(runs, f"{k}/3", batch) for k in (1, 2, 3)]
        assert sorted(r.run_id for s in shares for r in s) == sorted(r.run_id for r in runs)
        if batch:       # whole cells: a cell is trained at once
            assert [len(s) for s in shares] == [6, 6, 0]
    for k in (1, 2, 3):
        ex.reproduce(settings, tmp_path, shard=f"{k}/3", batch_models=False, log=None)
    assert len(ex.grid_records(settings, tmp_path)) == len(runs)
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(ValueError, match="K/N"):
            ex.shard_of(runs, bad)


def test_cli_shard_and_batch_models(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(grid, "SETTINGS", {**grid.SETTINGS, "ci": tiny})
    args = ["reproduce", "--scale", "ci", "--out", str(tmp_path)]
    assert main(args + ["--shard", "2/2", "--dry-run"]) == 0        # runs 2, 4, ... of the grid
    listed = capsys.readouterr().out
    assert sum(line.startswith("to run") for line in listed.splitlines()) == 4 and "4 runs at scale 'ci'" in listed
    assert "egd_gauge_seed1" in listed and "sgd_nogauge_seed0" not in listed
    # every task of an array must shard alike: here by cells, the unit of --batch-models
    assert main(args + ["--shard", "1/2", "--batch-models"]) == 0
    assert main(args + ["--shard", "2/2", "--batch-models"]) == 0
    assert len(names(tmp_path / "ci")) == 8
    assert main(["summary", "--scale", "ci", "--out", str(tmp_path)]) == 0
    assert main(args + ["--shard", "3/2"]) == 2
    assert "shard must be 'K/N'" in capsys.readouterr().err


def test_batch_models_with_jobs_asks_for_an_executor(tiny, tmp_path):
    with pytest.raises(ValueError, match="executor="):
        ex.reproduce(tiny, tmp_path, batch_models=True, jobs=2, log=None)


def forked_pool(workers):
    """A process pool whose workers are forked, so that they see the tiny fixture's patches
    (spawned workers, the sweep's own, are tested with real data in test_experiments.py)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))


@pytest.mark.parametrize("batch_models", [False, True])
def test_a_process_pool_executor_gives_the_sequential_results(tiny, tmp_path, batch_models):
    settings = tiny.replace(optimizers=("sgd", "egd"))
    runs = settings.runs()
    ex.reproduce(settings, tmp_path / "seq", log=None, batch_models=False)
    with forked_pool(2) as pool:
        done = ex.reproduce(settings, tmp_path / "pool", executor=pool, batch_models=batch_models, log=None)
        assert sorted(done["ran"], key=runs.index) == runs
        assert ex.reproduce(settings, tmp_path / "pool", executor=pool, log=None)["skipped"] == runs
    assert names(tmp_path / "pool" / "ci") == names(tmp_path / "seq" / "ci")
    assert_same_records(tmp_path / "seq" / "ci", tmp_path / "pool" / "ci", runs, 1e-5)


def test_a_failing_task_names_its_runs_and_leaves_the_executor_open(tiny, tmp_path, monkeypatch):
    def disk_full(path, obj):                # every run trains, then cannot write its file
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(sweep, "write_json_atomic", disk_full)    # forked workers inherit the patch
    with forked_pool(1) as pool:
        with pytest.raises(OSError) as info:
            ex.reproduce(tiny.replace(gauge_fix=(False,)), tmp_path, executor=pool, log=None)
        assert pool.submit(int, "7").result() == 7
    assert any("in the task that ran mnist tiny SGD" in note for note in getattr(info.value, "__notes__", []))


def test_a_dask_local_cluster_runs_the_grid(tiny, tmp_path):
    distributed = pytest.importorskip("distributed")
    try:
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                           dashboard_address=None)
    except Exception as err:        # no sockets, say: the engine is not there to test
        pytest.skip(f"dask LocalCluster did not start: {err}")
    with cluster, distributed.Client(cluster) as client:
        executor = client.get_executor()
        done = ex.reproduce(tiny, tmp_path / "dask", executor=executor, batch_models=True, log=None)
        assert sorted(done["ran"], key=tiny.runs().index) == tiny.runs()
        again = ex.reproduce(tiny, tmp_path / "dask", executor=executor, log=None)
        assert again["skipped"] == tiny.runs()
    ex.reproduce(tiny, tmp_path / "here", batch_models=False, log=None)
    assert_same_records(tmp_path / "here" / "ci", tmp_path / "dask" / "ci", tiny.runs(), 1e-5)


class JobLike:
    """A future with only done() and result(), as submitit's jobs have."""
    def __init__(self, fn, args):
        self.fn, self.args, self.calls = fn, args, 0

    def done(self):
        self.calls += 1
        return self.calls > 1           # not done at the first look

    def result(self):
        return self.fn(*self.args)


class JobExecutor:
    def submit(self, fn, *args):
        return JobLike(fn, args)


def test_an_executor_whose_futures_only_have_done_and_result(tiny, tmp_path):
    done = ex.reproduce(tiny, tmp_path, executor=JobExecutor(), batch_models=True, log=None)
    assert sorted(done["ran"], key=tiny.runs().index) == tiny.runs()
    assert len(ex.grid_records(tiny, tmp_path)) == len(tiny.runs())
