"""gaugelit.experiments.ablation: the claim-3 study of section 4.1's silent choices (on synthetic data here)."""
import json
from pathlib import Path

import numpy as np
import pytest

from gaugelit.experiments import ablation as ab
from gaugelit.experiments import claims

SUMMARY = Path(__file__).resolve().parents[2] / "results" / ab.SUMMARY_NAME      # the repository's results/


@pytest.fixture
def synthetic(monkeypatch):
    """Separable synthetic inputs with 200 features in place of MNIST; records every load."""
    loads = []

    def fake(dataset, n_train, n_test, dtype, centre):
        loads.append((dtype, centre))
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n_train + n_test, 200))
        y = (X[:, :10].argmax(axis=1)).astype(np.int64)
        if centre:
            X = X - X[:n_train].mean(axis=0)
        return X[:n_train].astype(dtype), y[:n_train], X[n_train:].astype(dtype), y[n_train:]

    monkeypatch.setattr(ab, "_data", fake)
    return loads


def small(**kw):
    return ab.Study(**{"n_train": 48, "n_test": 16, "epochs": 1, "seeds": (0, 1), "architecture": "3-layer",
                       "variants": ("as run", "delta 1e-6", "as-printed biases", "float64"), **kw})


def test_study_validates_its_variants():
    with pytest.raises(ValueError, match="variants: unknown"):
        ab.Study(variants=("as run", "bfloat16"))


def test_delta_variants_share_the_runs_without_gauge_fixing():
    study = small()
    assert ab.run_config(study, "delta 1e-6", False, 0) == ab.run_config(study, "as run", False, 0)
    assert ab.run_config(study, "delta 1e-6", True, 0) != ab.run_config(study, "as run", True, 0)
    assert ab.run_config(study, "float64", False, 0)["dtype"] == "float64"
    keys = {ab.run_key(ab.run_config(study, v, g, s)) for v in study.variants for g in (False, True)
            for s in study.seeds}
    assert len(keys) == 2 * (4 + 3)          # 4 variants with gauge fixing, 3 distinct without


def test_study_runs_resumes_and_summarises(tmp_path, synthetic):
    study = small()
    trained = ab.run_study(study, tmp_path, log=None)
    assert len(trained) == 14 and ("float64", False) in synthetic
    assert ab.run_study(study, tmp_path, log=None) == []                  # resumes: nothing left
    summary = ab.summarise(study, tmp_path)
    assert set(summary["variants"]) == set(study.variants) and "claim3" not in summary["variants"]["as run"]
    effects = ab.variant_effects(summary)
    for name, row in summary["variants"].items():
        d = row["train_error"]["differences"]
        assert row["seeds"] == [0, 1] and len(d) == 2
        np.testing.assert_allclose(d, np.subtract(row["train_error"]["with"], row["train_error"]["without"]))
        n_train = study.n_train
        want = [claims.log_error(g, n_train) - claims.log_error(b, n_train)
                for g, b in zip(row["train_error"]["with"], row["train_error"]["without"])]
        np.testing.assert_allclose(effects[name].differences, want)
        assert effects[name].verdict == "too few seeds"                    # two seeds: no verdict
    # delta 1e-6 solves Algorithm 1 further than the paper's delta: more updates per step
    assert summary["variants"]["delta 1e-6"]["updates_per_step_last_epoch"] > \
        summary["variants"]["as run"]["updates_per_step_last_epoch"]
    json.dumps(summary, allow_nan=False)                                   # writable as the committed JSON
    gap = ab.between_variants(summary, "float64", "as run")
    np.testing.assert_allclose(gap["with"], np.subtract(summary["variants"]["float64"]["train_error"]["with"],
                                                        summary["variants"]["as run"]["train_error"]["with"]))
    import matplotlib
    matplotlib.use("Agg")
    ax = ab.plot_summary(summary)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(study.variants)


def test_a_missing_run_leaves_its_seed_out(tmp_path, synthetic):
    study = small(variants=("as run",), seeds=(0, 1, 2))
    ab.run_study(study, tmp_path, log=None)
    (tmp_path / f"{ab.run_key(ab.run_config(study, 'as run', True, 1))}.json").unlink()
    assert ab.summarise(study, tmp_path)["variants"]["as run"]["seeds"] == [0, 2]


def test_a_study_in_worker_processes_writes_the_files_of_one_process(tmp_path):
    """--jobs: the sweep's spawned workers (they see no monkeypatching, so real MNIST, a few examples)."""
    from gaugelit.experiments.data import DataFileMissing, fetch_dataset
    try:
        fetch_dataset("mnist", download=False)
    except DataFileMissing:
        pytest.skip("MNIST not in the data folder (set GAUGELIT_DATA_DIR)")
    study = small(variants=("as run",), seeds=(0,), n_train=256)     # >= 200 examples for the top-200 SVD
    lines = []
    assert len(ab.run_study(study, tmp_path / "one", log=None)) == 2
    assert len(ab.run_study(study, tmp_path / "two", jobs=2, log=lines.append)) == 2
    assert lines[0] == f"2 runs, 0 already finished in {tmp_path / 'two'}" and len(lines) == 3
    assert ab.run_study(study, tmp_path / "two", jobs=2, log=None) == []          # resumes
    for path in sorted((tmp_path / "one").glob("*.json")):
        one, two = json.loads(path.read_text()), json.loads((tmp_path / "two" / path.name).read_text())
        assert one["config"] == two["config"]
        for key in ab.COMPARED:                 # both one BLAS thread: the same arithmetic
            assert one["history"][key] == two["history"][key]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_committed_summary_is_of_the_books_study():
    if not SUMMARY.exists():
        pytest.skip("results/claim3-ablation.json not written yet (python -m gaugelit ablation)")
    summary = json.loads(SUMMARY.read_text())
    assert summary["study"]["variants"] == list(ab.STUDY.variants)
    assert {k: v for k, v in summary["study"].items() if k != "variants"} == \
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in ab.Study().__dict__.items() if k != "variants"}
