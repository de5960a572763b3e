"""gaugelit.experiments.mechanism: the four arms, their run files, and the plan's comparisons."""
import numpy as np
import pytest

from gaugelit import he_init, matched_lr_scale
from gaugelit.core.network import ARCHITECTURES
from gaugelit.experiments import claims
from gaugelit.experiments import mechanism as mech


@pytest.fixture
def synthetic(monkeypatch):
    def fake(dataset, n_train, n_test, dtype, centre):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n_train + n_test, 200))
        y = X[:, :10].argmax(axis=1).astype(np.int64)
        return X[:n_train].astype(dtype), y[:n_train], X[n_train:].astype(dtype), y[n_train:]
    monkeypatch.setattr(mech, "_data", fake)


def small(**kw):
    return mech.MechanismStudy(**{"architectures": ("3-layer",), "n_train": 64, "n_test": 16, "epochs": 2,
                                  "seeds": (0,), **kw})


def test_the_study_checks_its_fields_and_names_every_run_once():
    with pytest.raises(ValueError, match="arms: unknown"):
        mech.MechanismStudy(arms=("never", "sometimes"))
    with pytest.raises(ValueError, match="architectures"):
        mech.MechanismStudy(architectures=("9-layer",))
    keys = {mech.run_key(c) for c in mech.configs(mech.STUDY).values()}
    assert len(keys) == 3 * 2 * 4 * 5 == len(mech.configs(mech.STUDY))
    assert (mech.STUDY.n_train, mech.STUDY.n_test, mech.STUDY.epochs) == (10000, 2000, 10)   # the plan's size
    paper = mech.PAPER_INIT                                                # the amendment's runs, 10 of them
    assert (paper.n_train, paper.n_test, paper.epochs, paper.architectures, paper.arms, paper.seeds) == (
        None, None, 30, ("3-layer",), ("init",), (0, 1, 2, 3, 4)) and len(mech.configs(paper)) == 10
    c = mech.run_config(small(lr_factor=2.0), "3-layer", "egd", "matched", 0)
    assert c["lr"] == 2 * 0.1 and c["arm"] == "matched"


def test_the_arms_run_resume_and_do_what_they_say(tmp_path, synthetic):
    study = small()
    assert len(mech.run_study(study, tmp_path, log=None)) == 8
    assert mech.run_study(study, tmp_path, log=None) == []                # resumes: nothing left
    records = {(r["config"]["optimizer"], r["config"]["arm"]): r for r in mech.load_records(study, tmp_path)}
    assert len(records) == 8
    for opt in ("sgd", "egd"):
        its = {arm: records[(opt, arm)]["history"]["gauge_iterations"] for arm in mech.ARMS}
        assert its["never"] == its["matched"] == [0, 0, 0]
        assert its["init"][1] > 0 and its["init"][2] == 0                  # balanced once, before step 1
        assert all(n >= 2 for n in its["every"][1:])                        # before every step (2 steps an epoch)
        sizes = list(ARCHITECTURES["3-layer"])
        want = matched_lr_scale(he_init(sizes, seed=0, dtype="float32"), opt)
        np.testing.assert_allclose(records[(opt, "matched")]["lr_scale"], want)
        assert records[(opt, "never")]["lr_scale"] is None
        # entry 0 is the untrained function, which balancing does not change
        h = {arm: records[(opt, arm)]["history"]["train_error"] for arm in mech.ARMS}
        assert h["init"][0] == h["never"][0] == h["every"][0]


def fake_records(effects: dict, seeds=(0, 1, 2, 3, 4)):
    """Runs whose train_error ends at exp(effect) times 0.1 per arm (reg_loss the same), 5 seeds."""
    rng = np.random.default_rng(1)
    out = []
    for (arch, opt), by_arm in effects.items():
        for arm, effect in by_arm.items():
            for s in seeds:
                final = 0.1 * np.exp(effect + 0.005 * rng.standard_normal())
                out.append({"config": {"dataset": "mnist", "architecture": arch, "optimizer": opt, "arm": arm,
                                       "seed": s, "n_train": 10000},
                            "history": {"epoch": [0, 1, 2], "reg_loss": [2.0, 1.0, 0.5],
                                        "train_error": [0.5, 0.2, final]}})
    return out


def test_the_plans_rule_reads_the_comparisons():
    records = fake_records({
        ("3-layer", "sgd"): {"never": 0.0, "init": -0.5, "every": -0.5, "matched": -0.5},   # rates, once
        ("5-layer", "sgd"): {"never": 0.0, "init": -0.1, "every": -0.6, "matched": 0.0},    # every step matters
        ("3-layer", "egd"): {"never": 0.0, "init": -0.5, "every": -0.5, "matched": 0.0},    # once, not rates
    })
    effects = mech.compare_all(records)
    e = {(t, c): {x.key[1:]: x.verdict for x in v} for (t, c, m), v in effects.items() if m == "D2"}
    assert e[("every", "never")] == {("3-layer", "egd"): "holds", ("3-layer", "sgd"): "holds",
                                     ("5-layer", "sgd"): "holds"}
    assert mech.reading(effects, "D2", "3-layer", "sgd") == "init suffices; the change of rates"
    assert mech.reading(effects, "D2", "3-layer", "egd") == "init suffices"
    assert mech.reading(effects, "D2", "5-layer", "sgd") == "no mechanism claimed"
    assert mech.reading(effects, "D2", "7-layer", "sgd") == "no mechanism claimed"   # no runs
    # the regularised loss is the same in every arm: negligible everywhere for D1
    assert all(x.verdict == "negligible" for (t, c, m), v in effects.items() if m == "D1" for x in v)
    assert all(isinstance(x, claims.Effect) for v in effects.values() for x in v)


def test_the_table_prints_every_comparison_and_the_reading():
    records = fake_records({("3-layer", "sgd"): {"never": 0.0, "init": -0.5, "every": -0.5, "matched": -0.5}})
    text, effects = mech.table(records)
    lines = text.splitlines()
    assert len(lines) == len(mech.COMPARISONS) * len(mech.MEASURES) + len(mech.MEASURES)
    assert "init - every   D2  mnist 3-layer sgd" in text and "negligible" in text
    assert lines[-1] == "D2 SGD 3-layer: init suffices; the change of rates"
    assert effects == mech.compare_all(records)


def test_the_sweeps_are_the_plans_and_keep_the_studys_keys():
    keys = [k for s in mech.SWEEPS.values() for k in mech.configs(s)]
    # weight decay and learning rate: 2 settings x 2 optimisers x 2 arms x 3 seeds each; beta: EGD only
    assert len(keys) == len(set(keys)) == 2 * 24 + 12
    assert sum("_wd0.1_" in k for k in keys) == sum("_lr2_" in k for k in keys) == 12
    assert sum("_beta10_" in k for k in keys) == 6 and all("egd" in k for k in keys if "_beta" in k)
    assert all(s.architectures == ("3-layer",) and s.seeds == (0, 1, 2) for s in mech.SWEEPS.values())
    # the study's own runs have no tag and no beta entry: their committed files keep their names
    for key, config in mech.configs(mech.STUDY).items():
        assert "egd_beta_factor" not in config and key.count("_") == 4
    c = mech.run_config(mech.SWEEPS["beta x0.1"], "3-layer", "egd", "every", 1)
    assert c["egd_beta_factor"] == 0.1 and mech.run_key(c).startswith("3-layer_egd_every_seed1_beta0.1_")
    with pytest.raises(ValueError, match="beta_factor"):
        mech.MechanismStudy(beta_factor=0.0)


def test_a_beta_sweep_runs_with_its_beta(tmp_path, synthetic):
    big = small(optimizers=("egd",), arms=("never",), beta_factor=10.0)
    (record,) = [mech._train_one(c, str(tmp_path)) for c in mech.configs(big).values()]
    (plain,) = [mech._train_one(c, str(tmp_path)) for c in mech.configs(small(optimizers=("egd",),
                                                                              arms=("never",))).values()]
    assert record["config"]["egd_beta_factor"] == 10.0
    assert record["output_bias_mean_abs"] > plain["output_bias_mean_abs"]        # a larger beta moves them more


def test_the_sweep_table_reports_intervals_per_setting():
    reference = fake_records({("3-layer", "sgd"): {"never": 0.0, "every": -0.5}}, seeds=(0, 1, 2))
    sweeps = {"weight decay x10": fake_records({("3-layer", "sgd"): {"never": 0.0, "every": -1.0}}, seeds=(0, 1, 2))}
    for r in reference + sweeps["weight decay x10"]:
        r["output_bias_mean_abs"] = 0.25
    rows = mech.sweep_effects(reference, sweeps)
    d2 = {r["setting"]: r["effect"] for r in rows if r["measure"] == "D2"}
    assert set(d2) == {"x1", "weight decay x10"}
    assert d2["x1"].low < -0.5 < d2["x1"].high and d2["weight decay x10"].high < -0.9    # the larger effect
    text = mech.sweep_table(rows)
    assert "weight decay x10  SGD  D2  n=3  every/never x0.37" in text and "|b_out| never 0.25" in text


def test_the_studys_every_and_never_arms_are_the_grids_runs_so_that_they_pair(tmp_path):
    """The paper-scale init arm is paired with the grid's runs (book/analysis-plan.md's amendment):
    valid only if the study's code starts from the grid's weights and sees its mini-batches. Here,
    on the first 256 MNIST examples, the study's every and never arms give the grid's curves (to float32's rounding),
    and from_grid labels them so that compare pairs them by seed."""
    from gaugelit.experiments import grid, sweep

    settings = grid.Settings("ci", ("mnist",), ("3-layer",), seeds=(0, 1), epochs=2, n_train=256, n_test=64)
    study = mech.MechanismStudy(architectures=("3-layer",), arms=("every", "never"), n_train=256, n_test=64,
                                epochs=2, seeds=(0, 1))
    grid_records = [sweep.run_one(grid.Run("mnist", "3-layer", opt, gauge, seed, "ci"), settings, tmp_path / "grid")
                    for opt in ("sgd", "egd") for gauge in (False, True) for seed in (0, 1)]
    mech.run_study(study, tmp_path / "mech", log=None)
    ours = {(r["config"]["optimizer"], r["config"]["arm"], r["config"]["seed"]): r
            for r in mech.load_records(study, tmp_path / "mech")}
    theirs = mech.from_grid(grid_records)
    assert len(theirs) == len(ours) == 8
    for r in theirs:
        c = r["config"]
        mine = ours[(c["optimizer"], c["arm"], c["seed"])]["history"]
        # the same arithmetic, up to float32 rounding: BLAS may sum in another order where the
        # arrays lie at other alignments (seen on a fresh clone: 1e-7 relative after two epochs)
        for k in ("reg_loss", "train_error", "test_error"):
            np.testing.assert_allclose(mine[k], r["history"][k], rtol=1e-5, atol=1.5 / 256, err_msg=f"{c} {k}")
        assert mine["gauge_iterations"] == r["history"]["gauge_iterations"], c
    # from_grid's records pair with the study's: every - never is the same comparison either way
    ref = {e.key: e.mean for e in mech.compare(list(ours.values()), "every", "never", "D1")}
    got = {e.key: e.mean for e in mech.compare(theirs, "every", "never", "D1")}
    assert got.keys() == ref.keys() and all(abs(got[k] - ref[k]) < 1e-5 for k in ref)
