"""gaugelit.experiments.claims: the statistics and verdicts of section 4's claims, on synthetic run records of
every outcome."""
import math

import numpy as np
import pytest

from gaugelit.experiments import claims as cl


def record(optimizer, gauge, seed, *, dataset="mnist", arch="3-layer", **final):
    """A run record whose metrics end at the given values (two epochs, entry 0 the untrained net)."""
    history = {m: [2.0, 1.0, float(final.get(m, 0.5))] for m in
               ("reg_loss", "reg_loss_min_norm", "log_loss", "train_error", "test_error")}
    history["epoch"] = [0, 1, 2]
    return {"settings": {"dataset": dataset, "architecture": arch, "optimizer": optimizer,
                         "gauge_fix": gauge, "seed": seed}, "history": history}


def grid(optimizer, metric, differences, base=0.5, **kw):
    """Pairs whose ``metric`` with minus without gauge fixing is ``differences`` (one per seed)."""
    out = []
    for seed, d in enumerate(differences):
        out += [record(optimizer, False, seed, **{metric: base}, **kw),
                record(optimizer, True, seed, **{metric: base + d}, **kw)]
    return out


def test_t_distribution_matches_tables():
    # two-sided 95% and 99% critical values from standard tables
    for df, want in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423)):
        assert cl.t_quantile(0.975, df) == pytest.approx(want, abs=1e-4)
    assert cl.t_quantile(0.995, 5) == pytest.approx(4.0321, abs=1e-4)
    assert cl.t_cdf(0.0, 7) == 0.5 and cl.t_cdf(-1.3, 6) == pytest.approx(1 - cl.t_cdf(1.3, 6))
    assert cl.t_cdf(1.0, 1) == pytest.approx(0.75)                  # Cauchy: 1/2 + atan(1)/pi
    assert cl.t_quantile(0.975, 400) == pytest.approx(1.9659, abs=1e-3)   # near the normal's 1.96
    with pytest.raises(ValueError, match="df"):
        cl.t_cdf(1.0, 0)


def test_interval_and_sign_test():
    d = np.array([-0.03, -0.01, -0.02, -0.04])
    low, high = cl.t_interval(d)
    half = cl.t_quantile(0.975, 3) * d.std(ddof=1) / 2
    assert (low, high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert cl.sign_test(d) == pytest.approx(2 / 16)                # all four negative: 2 * 2^-4
    assert cl.sign_test([-1, -1, -1, -1, -1, 1]) == pytest.approx(2 * 7 / 64)
    assert cl.sign_test([0.0, 0.0]) == 1.0 and cl.sign_test([1.0, -1.0]) == 1.0
    with pytest.raises(ValueError, match="non-finite"):
        cl.t_interval([1.0, math.nan])


@pytest.mark.parametrize("differences, want", [
    ([-0.05, -0.04, -0.06, -0.05, -0.045], "holds"),
    ([0.05, 0.04, 0.06, 0.05, 0.045], "reversed"),
    ([-0.05, 0.04, -0.01, 0.03, -0.02], "inconclusive"),
    ([-0.05, -0.04], "too few seeds"),
])
def test_lower_claims_give_every_verdict(differences, want):
    records = grid("sgd", "train_error", differences)
    (claim2,) = cl.check_claims(records, {"2": cl.CLAIMS["2"]})
    assert claim2.verdict == want and claim2.key == ("mnist", "3-layer", "sgd") and claim2.n == len(differences)
    assert claim2.mean == pytest.approx(np.mean(differences))


@pytest.mark.parametrize("differences, want", [
    ([0.001, -0.002, 0.0015, -0.001, 0.0005], "holds"),          # inside +-1 percentage point
    ([-0.03, -0.025, -0.035, -0.03, -0.028], "reversed"),        # an effect, as the committed runs found
    ([-0.03, 0.02, -0.01, 0.025, -0.02], "inconclusive"),        # too noisy to tell either way
    ([0.0, 0.0], "too few seeds"),
])
def test_no_effect_claim_needs_its_margin(differences, want):
    records = grid("egd", "train_error", differences)
    (claim3,) = cl.check_claims(records, {"3": cl.CLAIMS["3"]})
    assert claim3.verdict == want and claim3.margin == cl.MARGIN


def test_the_margin_decides_no_effect():
    # The same small, consistent effect is "no effect" with a wide margin and an effect with a narrow one.
    d = [-0.004, -0.005, -0.0045, -0.0042, -0.0048]
    records = grid("egd", "train_error", d)
    assert cl.check_claims(records, {"3": cl.CLAIMS["3"]}, margin=0.01)[0].verdict == "holds"
    assert cl.check_claims(records, {"3": cl.CLAIMS["3"]}, margin=0.001)[0].verdict == "reversed"
    with pytest.raises(ValueError, match="margin"):
        cl.verdict(-1.0, 1.0, 5, "none")


def test_claims_pick_their_optimizer_and_metric_and_pool():
    records = (grid("sgd", "reg_loss", [-0.1, -0.2, -0.15]) + grid("egd", "reg_loss", [-0.1, -0.12, -0.11])
               + grid("egd", "reg_loss", [0.1, 0.2, 0.15], dataset="fashion-mnist"))
    effects = cl.check_claims(records, {"1": cl.CLAIMS["1"], "2": cl.CLAIMS["2"]})
    by = {(e.claim, e.key): e.verdict for e in effects}
    assert by == {("1", ("fashion-mnist", "3-layer", "egd")): "reversed",
                  ("1", ("mnist", "3-layer", "egd")): "holds", ("1", ("mnist", "3-layer", "sgd")): "holds",
                  ("2", ("mnist", "3-layer", "sgd")): "inconclusive"}   # train_error: 0.5 both ways
    pool = cl.pooled(effects)["1"]
    assert pool["verdicts"]["holds"] == 2 and pool["verdicts"]["reversed"] == 1
    assert (pool["pairs"], pool["below_zero"]) == (9, 6)
    assert pool["sign_p"] == pytest.approx(cl.sign_test([-1] * 6 + [1] * 3))
    assert "claim 1: holds: 2, reversed: 1" in cl.claim_table(effects)


def test_unpaired_runs_are_not_counted():
    # a seed run only with gauge fixing has no partner: it is left out, not paired with another seed
    records = grid("sgd", "train_error", [-0.05, -0.04, -0.06]) + [record("sgd", True, 7, train_error=0.0)]
    (e,) = cl.check_claims(records, {"2": cl.CLAIMS["2"]})
    assert e.n == 3 and e.verdict == "holds"


def test_a_single_pair_has_no_interval():
    (e,) = cl.check_claims(grid("sgd", "train_error", [-0.05]), {"2": cl.CLAIMS["2"]})
    assert e.verdict == "too few seeds" and e.low == -math.inf and "no interval" in e.describe()
    assert "nan" not in e.describe()


# -- the paper-scale page's logic on a partial set of run files -------------------------------------

def write_run(folder, run, settings, *, reg_loss, train_error, code="521292068b58017c"):
    from gaugelit import experiments as ex
    history = {k: [1.0] * (settings.epochs + 1) for k in ex.runfiles.HISTORY_KEYS}
    history["epoch"] = list(range(settings.epochs + 1))
    history["reg_loss"][-1], history["train_error"][-1] = reg_loss, train_error
    record = {"format": ex.FORMAT, "run_id": run.run_id, "settings": ex.run_settings(run, settings),
              "status": "finished", "history": history, "wall_seconds": 1.0, "device": "CPU: test",
              "code": code}
    ex.write_json_atomic(folder / settings.scale / f"{run.run_id}.json", record)


def test_present_grid_and_claims_from_a_partial_paper_grid(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from gaugelit import experiments as ex

    paper = ex.settings_for("paper")
    rng = np.random.default_rng(0)
    # MNIST 3-layer EGD, seeds 0-3 both ways; SGD seed 0 with gauge fixing only (no pair)
    for run in paper.runs():
        if (run.dataset, run.architecture, run.optimizer) == ("mnist", "3-layer", "egd") and run.seed < 4:
            write_run(tmp_path, run, paper, reg_loss=1.0 - 0.3 * run.gauge_fix + 0.01 * rng.random(),
                      train_error=0.1 - 0.03 * run.gauge_fix + 0.002 * rng.random())
        elif (run.dataset, run.architecture, run.optimizer, run.seed, run.gauge_fix) == \
                ("mnist", "3-layer", "sgd", 0, True):
            write_run(tmp_path, run, paper, reg_loss=1.0, train_error=0.1)
    (tmp_path / "paper" / "stray.json").write_text("{}")                 # not a run of the grid: named
    # an EGD file from before EG+- (its settings lack egd_biases): not used, and named
    old = ex.Run("fashion-mnist", "3-layer", "egd", True, 0, "paper")
    write_run(tmp_path, old, paper, reg_loss=1.0, train_error=0.1)
    path = tmp_path / "paper" / f"{old.run_id}.json"
    record = __import__("json").loads(path.read_text())
    del record["settings"]["egd_biases"]
    path.write_text(__import__("json").dumps(record))

    present = cl.present_grid(paper, tmp_path)
    assert len(present.records) == 9 and present.total == 240
    assert present.cells == [("mnist", "3-layer", "egd")]
    assert ("mnist", "3-layer", "sgd") in present.missing_cells and len(present.missing_cells) == 23
    assert present.other == [f"{old.run_id}.json", "stray.json"]
    text = present.describe()
    assert "9 of the 240 runs present" in text and "mnist 3-layer sgd" in text and str(tmp_path) not in text

    effects = cl.check_claims(present.records)
    verdicts = {e.claim: e.verdict for e in effects}
    assert verdicts == {"1": "holds", "1*": "inconclusive", "3": "reversed"}   # 1*: reg_loss_min_norm equal
    axes = ex.plot_learning_curves(present.records, "egd")
    assert len(axes) == 1
    ax = cl.plot_effects(effects, "3")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mnist 3-layer egd"]
    with pytest.raises(ValueError, match="no effects of claim '2'"):
        cl.plot_effects(effects, "2")


def test_present_grid_of_an_empty_folder(tmp_path):
    from gaugelit import experiments as ex

    present = cl.present_grid(ex.settings_for("paper"), tmp_path)
    assert present.records == [] and present.cells == [] and len(present.missing) == 240
    assert cl.check_claims(present.records) == []
