"""The experiment grid: atomic run files, resuming, interruptions, the summaries and the CLI.

Runs here use a tiny architecture and synthetic data so that they take milliseconds; the code path
is the one the book and ``gaugelit reproduce`` use.
"""
import functools
import json

import matplotlib
import numpy as np
import pytest

import gaugelit as gl
from gaugelit import experiments as ex
from gaugelit.__main__ import main
from gaugelit.experiments import pool, runfiles, sweep

matplotlib.use("Agg")


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = sweep.train

    def counting(*args, **kwargs):
        calls.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "train", counting)
    return calls


def files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_write_json_atomic_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "run.json"
    ex.write_json_atomic(path, {"a": [1.0, 2.0]})
    assert json.loads(path.read_text()) == {"a": [1.0, 2.0]}
    with pytest.raises(ValueError):          # NaN is not JSON: the write fails part-way
        ex.write_json_atomic(path, {"a": [1.0, float("nan")], "b": 1})
    assert json.loads(path.read_text()) == {"a": [1.0, 2.0]}   # the old file is untouched
    assert files(path.parent) == ["run.json"]                   # and no temporary file is left


def test_run_one_writes_curves_settings_device_and_time(tiny, tmp_path):
    run = tiny.runs()[1]
    assert run.gauge_fix and run.run_id == "mnist_tiny_sgd_gauge_seed0"
    record = ex.run_one(run, tiny, tmp_path)
    path = tmp_path / "ci" / "mnist_tiny_sgd_gauge_seed0.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(record))
    assert record["status"] == "finished" and record["format"] == ex.FORMAT
    s = record["settings"]
    assert (s["sizes"], s["optimizer"], s["p"], s["lr"], s["weight_decay"], s["gauge_fix"], s["delta"]) == \
        ([200, 12, 8, 10], "sgd", 2.0, 1e-3, 1e-4, True, 1e-3)
    assert (s["batch_size"], s["lr_decay"], s["epochs"], s["n_train"]) == (32, 0.95, 2, 40)
    h = record["history"]
    assert h["epoch"] == [0, 1, 2]
    for metric in ex.METRICS:
        assert len(h[metric]) == 3 and all(np.isfinite(h[metric]))
    assert h["gauge_iterations"][1] > 0
    assert all(m <= r for m, r in zip(h["reg_loss_min_norm"], h["reg_loss"]))
    assert record["device"].startswith("CPU: ") and record["wall_seconds"] > 0
    assert record["gaugelit_version"] == gl.__version__ and record["code"] == ex.code_fingerprint()


def test_a_result_depends_only_on_its_settings(tiny, tmp_path):
    """Same run, alone or in a sweep: the same curves (the grid's order does not matter)."""
    run = tiny.runs()[2]
    alone = ex.run_one(run, tiny, tmp_path / "a")
    ex.reproduce(tiny, tmp_path / "b", log=None)
    in_sweep = json.loads((tmp_path / "b" / "ci" / f"{run.run_id}.json").read_text())
    assert alone["history"]["reg_loss"] == in_sweep["history"]["reg_loss"]
    assert alone["history"]["train_error"] == in_sweep["history"]["train_error"]


def test_reproduce_skips_finished_runs(tiny, tmp_path, count_training):
    runs = tiny.runs()
    assert len(runs) == 1 * 1 * 2 * 2 * 2
    done = ex.reproduce(tiny, tmp_path, log=None)
    assert len(done["ran"]) == 8 and len(count_training) == 8
    assert files(tmp_path / "ci") == sorted(f"{r.run_id}.json" for r in runs)
    done = ex.reproduce(tiny, tmp_path, log=None)
    assert len(done["skipped"]) == 8 and len(count_training) == 8      # nothing retrained
    (tmp_path / "ci" / f"{runs[3].run_id}.json").unlink()
    done = ex.reproduce(tiny, tmp_path, log=None)
    assert done["ran"] == [runs[3]] and len(count_training) == 9
    # Changed settings make the stored runs stale: they are trained again.
    shorter = tiny.replace(epochs=3, seeds=(0,))
    done = ex.reproduce(shorter, tmp_path, log=None)
    assert len(done["ran"]) == 4
    assert len(ex.load_results(tmp_path / "ci")) == 8                 # the folder mixes settings,
    assert len(ex.grid_records(shorter, tmp_path)) == 4               # a grid picks its own runs
    assert len(ex.grid_records(tiny, tmp_path)) == 4


def test_partial_or_foreign_files_are_not_finished(tiny, tmp_path):
    run = tiny.runs()[0]
    path = tmp_path / "ci" / f"{run.run_id}.json"
    config = ex.run_settings(run, tiny)
    assert not ex.is_finished(path, config)                        # absent
    record = ex.run_one(run, tiny, tmp_path)
    assert ex.is_finished(path, config) and ex.is_finished(path, config, same_code=True)
    path.write_text(path.read_text()[:100])                         # truncated
    assert not ex.is_finished(path, config)
    record["code"] = "0" * 16                                       # written by other code
    ex.write_json_atomic(path, record)
    assert ex.is_finished(path, config) and not ex.is_finished(path, config, same_code=True)
    ex.write_json_atomic(path, dict(record, format=ex.FORMAT - 1))   # an older file layout
    assert not ex.is_finished(path, config)


def test_an_interrupted_sweep_leaves_no_partial_file_and_resumes(tiny, tmp_path, monkeypatch):
    real, calls = sweep.train, []

    def interrupted_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt                                 # Ctrl-C in the middle of a run
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "train", interrupted_on_third)
    with pytest.raises(KeyboardInterrupt):
        ex.reproduce(tiny, tmp_path, log=None)
    runs = tiny.runs()
    assert files(tmp_path / "ci") == sorted(f"{r.run_id}.json" for r in runs[:2])  # no temp files
    done = ex.reproduce(tiny, tmp_path, log=None)
    assert done["skipped"] == runs[:2] and done["ran"] == runs[2:]


def test_an_interrupted_write_leaves_no_file(tiny, tmp_path, monkeypatch):
    def dump_then_die(obj, f, **kwargs):
        f.write('{"format": 1, "settings": {')
        raise KeyboardInterrupt

    monkeypatch.setattr(runfiles.json, "dump", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        ex.run_one(tiny.runs()[0], tiny, tmp_path)
    assert files(tmp_path / "ci") == []


def test_diverged_runs_are_recorded_and_not_retried(tiny, tmp_path, monkeypatch):
    def diverge(*args, **kwargs):
        raise gl.TrainingDiverged("train: non-finite loss at epoch 1, step 2 of 2 (lr=0.1)")

    monkeypatch.setattr(sweep, "train", diverge)
    done = ex.reproduce(tiny.replace(seeds=(0,), optimizers=("egd",)), tmp_path, log=None)
    assert len(done["diverged"]) == 2
    records = ex.load_results(tmp_path / "ci", status=None)
    assert {r["status"] for r in records} == {"diverged"} and "epoch 1, step 2" in records[0]["message"]
    assert ex.load_results(tmp_path / "ci") == []
    done = ex.reproduce(tiny.replace(seeds=(0,), optimizers=("egd",)), tmp_path, log=None)
    assert len(done["skipped"]) == 2


def test_summaries(tiny, tmp_path):
    ex.reproduce(tiny, tmp_path, log=None)
    (tmp_path / "ci" / ".half-written.json.tmp").write_text("{")    # ignored by the loader
    records = ex.load_results(tmp_path / "ci")
    assert len(records) == 8
    table = ex.curves(records, "reg_loss")
    c = table[("mnist", "tiny", "sgd", True)]
    assert c["seeds"] == [0, 1] and c["values"].shape == (2, 3)
    np.testing.assert_allclose(c["mean"], c["values"].mean(axis=0))
    assert np.all(c["min"] <= c["mean"]) and np.all(c["mean"] <= c["max"])
    diffs = ex.paired_differences(records, "reg_loss")
    by_id = {r["run_id"]: r["history"]["reg_loss"][-1] for r in records}
    np.testing.assert_allclose(diffs[("mnist", "tiny", "egd")],
                               [by_id[f"mnist_tiny_egd_gauge_seed{s}"] - by_id[f"mnist_tiny_egd_nogauge_seed{s}"]
                                for s in (0, 1)])
    rows = ex.final_table(records)
    assert len(rows) == 4 and {r["seeds"] for r in rows} == {2}
    egd = ex.curves(records, "reg_loss")[("mnist", "tiny", "egd", False)]
    assert rows[0]["reg_loss"] == pytest.approx(egd["mean"][-1])
    axes = ex.plot_learning_curves(records, "sgd")
    assert axes.shape == (1, 3)
    with pytest.raises(ValueError, match="unknown metric"):
        ex.curves(records, "accuracy")


def test_settings_validation_and_scales():
    paper = ex.settings_for("paper")
    assert len(paper.runs()) == 4 * 3 * 2 * 2 * 5 == 240                 # section 4.1's 240 experiments
    assert (paper.epochs, paper.batch_size, paper.lr_decay, paper.delta, paper.n_train) == (30, 32, 0.95, 1e-3, None)
    ci = ex.settings_for("ci")
    assert ci.batch_size == paper.batch_size and ci.lr_decay == paper.lr_decay and ci.delta == paper.delta
    with pytest.raises(ValueError, match="datasets: unknown"):
        ci.replace(datasets=("svhn",))
    with pytest.raises(ValueError, match="epochs must be"):
        ci.replace(epochs=0)
    with pytest.raises(ValueError, match="unknown scale"):
        ex.settings_for("huge")


def test_cli_dry_run(tmp_path, capsys):
    assert main(["reproduce", "--scale", "ci", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ex.settings_for("ci").runs()) + 1
    assert all(line.startswith("to run") for line in lines[:-1])
    assert "0 finished" in lines[-1]
    assert main(["reproduce", "--scale", "paper", "--dry-run", "--out", str(tmp_path),
                 "--datasets", "cifar10", "--archs", "7-layer", "--gauge", "on", "--seeds", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in out[:-1]] == [
        str(tmp_path / "paper" / f"cifar10_7-layer_{o}_gauge_seed3.json") for o in ("sgd", "egd")]
    with pytest.raises(SystemExit):
        main(["reproduce", "--datasets", "svhn"])


def test_cli_reproduce_resume_and_summary(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(ex.SETTINGS, "ci", tiny)
    args = ["reproduce", "--scale", "ci", "--out", str(tmp_path), "--seeds", "0", "--optimizers", "egd"]
    assert main(args) == 0
    assert "2 runs trained" in capsys.readouterr().out
    assert main(args + ["--dry-run"]) == 0
    assert "2 finished, 0 to run" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 runs trained, 0 diverged, 2 already finished" in capsys.readouterr().out
    assert main(["summary", "--scale", "ci", "--out", str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 2
    assert main(["reproduce", "--scale", "ci", "--out", str(tmp_path), "--epochs", "0"]) == 2
    assert "epochs must be an integer >= 1" in capsys.readouterr().err


# -- parallel sweeps: worker processes start fresh (spawn), so they see no monkeypatching; these
# -- tests train the real 3-layer network on a few real MNIST examples for one epoch.

@pytest.fixture
def real_small():
    from gaugelit.experiments.data import DataFileMissing, fetch_dataset
    try:
        fetch_dataset("mnist", download=False)
    except DataFileMissing:
        pytest.skip(f"MNIST not in {gl.data_dir()} (set GAUGELIT_DATA_DIR; CI points it at ../shared/data)")
    return ex.Settings("ci", ("mnist",), ("3-layer",), seeds=(0, 1), epochs=1, n_train=256, n_test=32,
                       optimizers=("sgd",))


def test_parallel_sweep_gives_the_sequential_results_and_resumes(real_small, tmp_path):
    runs = real_small.runs()
    sequential = ex.reproduce(real_small, tmp_path / "seq", jobs=1, log=None)
    (tmp_path / "par" / "ci").mkdir(parents=True)
    (tmp_path / "seq" / "ci" / f"{runs[0].run_id}.json").rename(tmp_path / "par" / "ci" / f"{runs[0].run_id}.json")
    lines = []
    parallel = ex.reproduce(real_small, tmp_path / "par", jobs=2, log=lines.append)
    assert sequential["ran"] == runs
    assert parallel["skipped"] == runs[:1] and sorted(parallel["ran"], key=runs.index) == runs[1:]
    assert len(lines) == 4 and lines[-1].startswith("3 runs trained, 0 diverged, 1 already finished")
    for run in runs[1:]:
        seq = json.loads((tmp_path / "seq" / "ci" / f"{run.run_id}.json").read_text())
        par = json.loads((tmp_path / "par" / "ci" / f"{run.run_id}.json").read_text())
        assert par["settings"] == seq["settings"] and par["status"] == "finished"
        for metric in ex.METRICS:     # same arithmetic; only the BLAS thread count may differ
            np.testing.assert_allclose(par["history"][metric], seq["history"][metric], rtol=1e-5)
    assert files(tmp_path / "par" / "ci") == sorted(f"{r.run_id}.json" for r in runs)


def _out_of_space(run, settings, out):
    """A worker task that fails the way a full disk does (module level: spawned workers import it)."""
    raise OSError(28, "No space left on device", out)


def test_a_failing_worker_names_its_run(tiny, tmp_path):
    # A folder that is a file is now refused before any run trains (test_reliability); a worker
    # that fails for another reason still names its run.
    with pytest.raises(OSError) as info:
        pool.run_in_processes(functools.partial(_out_of_space, settings=tiny, out=str(tmp_path)), tiny.runs()[:2],
                              2, lambda run, record: None, label=ex.Run.label)
    assert any("in the task that ran mnist tiny SGD" in note
               for note in getattr(info.value, "__notes__", []))


def test_jobs_must_be_a_count(tiny, tmp_path):
    with pytest.raises(ValueError, match="jobs must be an integer >= 0"):
        ex.reproduce(tiny, tmp_path, jobs=-1, log=None)
    assert ex.available_cores() >= 1


def test_balancing_share_is_the_part_of_the_gap_the_baseline_loses_by_balancing():
    def record(gauge, seed, reg, balanced):
        return {"settings": {"dataset": "mnist", "architecture": "3-layer", "optimizer": "sgd",
                             "gauge_fix": gauge, "seed": seed},
                "history": {"reg_loss": [9.0, reg], "reg_loss_min_norm": [9.0, balanced]}}
    records = [record(False, 0, 1.0, 0.7), record(True, 0, 0.6, 0.6),     # 0.3 of a 0.4 gap
               record(False, 1, 1.0, 0.5), record(True, 1, 0.6, 0.6),     # balanced baseline below
               record(False, 2, 1.0, 0.9)]                                # unpaired: left out
    share = ex.balancing_share(records)
    np.testing.assert_allclose(share[("mnist", "3-layer", "sgd")], [0.75, 1.25])
    np.testing.assert_allclose(ex.paired_differences(records, "reg_loss")[("mnist", "3-layer", "sgd")], [-0.4, -0.4])
