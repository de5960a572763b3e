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


def test_one_sided_t_and_holm_match_independent_computations():
    from scipy import stats
    d = np.array([-0.21, -0.15, -0.3, -0.12, -0.25])
    for bound in (-0.3, -0.0953, 0.0, 0.1):
        assert cl.one_sided_t(d, bound, "below") == pytest.approx(
            stats.ttest_1samp(d, bound, alternative="less").pvalue, rel=1e-12)
        assert cl.one_sided_t(d, bound, "above") == pytest.approx(
            stats.ttest_1samp(d, bound, alternative="greater").pvalue, rel=1e-12)
    assert cl.one_sided_t([0.5, 0.5, 0.5], 0.25, "above") == 0.0 and cl.one_sided_t([0.5] * 3, 0.25, "below") == 1.0
    # Holm by hand: sorted 0.01, 0.02, 0.04, 0.30 times 4, 3, 2, 1 -> 0.04, 0.06, 0.08, 0.30 (monotone)
    np.testing.assert_allclose(cl.holm([0.04, 0.01, 0.30, 0.02]), [0.08, 0.04, 0.30, 0.06])
    np.testing.assert_allclose(cl.holm([0.01, 0.011]), [0.02, 0.02])           # made monotone
    np.testing.assert_allclose(cl.holm([0.6, 0.7]), [1.0, 1.0])                # capped at 1
    with pytest.raises(ValueError, match="holm"):
        cl.holm([0.5, 1.5])


def curve_grid(optimizer, ratios, *, dataset="mnist", arch="3-layer", metric="reg_loss"):
    """Pairs whose ``metric`` curve with gauge fixing is ``ratio`` times the curve without (epochs 1-2)."""
    out = []
    for seed, ratio in enumerate(ratios):
        for gauge, r in ((False, 1.0), (True, ratio)):
            rec = record(optimizer, gauge, seed, dataset=dataset, arch=arch)
            rec["history"][metric] = [2.0, 1.0 * r, 0.5 * r]
            out.append(rec)
    return out


@pytest.mark.parametrize("ratios, want", [
    ([0.70, 0.72, 0.69, 0.71, 0.70], "holds"),              # 30% lower throughout: beyond the 10% margin
    ([1.30, 1.28, 1.31, 1.29, 1.30], "reversed"),
    ([0.99, 1.01, 1.00, 0.995, 1.005], "negligible"),      # within 10% either way, tightly
    ([0.80, 0.95, 0.75, 0.92, 0.85], "inconclusive"),      # excludes 0, reaches into the margin
    ([0.7, 0.7], "too few seeds"),
])
def test_claim_1_gives_every_verdict_by_the_mean_log_ratio_over_the_curve(ratios, want):
    (e,) = cl.check_claims(curve_grid("sgd", ratios), {"1": cl.CLAIMS["1"]})
    assert e.verdict == want and e.key == ("mnist", "3-layer", "sgd") and e.n == len(ratios)
    assert e.mean == pytest.approx(np.mean(np.log(ratios)))
    assert e.beside["last-epoch log ratio"] == pytest.approx(np.mean(np.log(ratios)))


def test_claim_1_measures_the_whole_curve_not_the_last_epoch():
    # the same last epoch, a faster descent before it: D1 < 0 while the last-epoch ratio is 1
    out = []
    for seed in range(4):
        for gauge in (False, True):
            rec = record("sgd", gauge, seed)
            rec["history"]["reg_loss"] = [2.0, 0.5 if gauge else 1.0, 0.5, 0.5]
            out.append(rec)
    (e,) = cl.check_claims(out, {"1": cl.CLAIMS["1"]})
    assert e.mean == pytest.approx(np.log(0.5) / 3) and e.beside["last-epoch log ratio"] == 0.0


def test_verdicts_are_symmetric_and_read_against_the_margin_not_zero():
    # an interval that excludes 0 but reaches into the margin: the old rule called it "reversed"
    d = np.log([0.80, 0.95, 0.75, 0.92, 0.85])
    e = cl.effect(d, direction="lower")
    assert e.high < 0 and e.low < -cl.MARGIN < e.high and e.verdict == "inconclusive"
    assert cl.effect(-d, direction="lower").verdict == "inconclusive"           # the mirror image
    assert cl.effect(-d, direction="higher").verdict == "inconclusive"
    # an interval inside the margin that excludes 0 is a negligible effect, whichever its sign
    small = [-0.06, -0.01, -0.03, -0.05, -0.02]
    assert cl.effect(small).verdict == cl.effect(np.negative(small)).verdict == "negligible"


def test_errors_are_compared_relatively_with_a_floor_of_half_an_example():
    recs = grid("sgd", "train_error", [-0.006] * 3 + [-0.0062, -0.0058], base=0.010)   # 0.010 -> 0.004: a 60% cut
    (e,) = cl.check_claims(recs, {"2": cl.CLAIMS["2"]})
    assert e.verdict == "holds" and e.mean == pytest.approx(np.log(0.4), abs=0.02)
    assert cl.log_error(0.0, 2000) == math.log(0.5 / 2000) == cl.log_error(1e-9, 2000)


def test_claim_3_is_a_difference_in_differences_against_sgd():
    sgd = grid("sgd", "train_error", [-0.25] * 5, base=0.5)                 # SGD: 0.5 -> 0.25, log 0.5
    smaller = grid("egd", "train_error", [-0.05, -0.051, -0.049, -0.05, -0.05], base=0.5)   # EGD: ~ -10%
    (e,) = cl.check_claims(sgd + smaller, {"3": cl.CLAIMS["3"]})
    assert e.key == ("mnist", "3-layer", "egd") and e.verdict == "holds"     # EGD's effect is the smaller
    assert e.mean == pytest.approx(np.log(0.45 / 0.5) - np.log(0.5), abs=2e-3)
    assert e.beside["SGD log ratio"] == pytest.approx(np.log(0.5))
    same = grid("egd", "train_error", [-0.25, -0.251, -0.249, -0.25, -0.2505], base=0.5)
    (e,) = cl.check_claims(sgd + same, {"3": cl.CLAIMS["3"]})
    assert e.verdict == "negligible"                                         # a similar effect: not claim 3
    larger = grid("egd", "train_error", [-0.4, -0.41, -0.39, -0.4, -0.4], base=0.5)
    assert cl.check_claims(sgd + larger, {"3": cl.CLAIMS["3"]})[0].verdict == "reversed"
    # without SGD runs of the same data set and network there is nothing to compare with
    assert cl.check_claims(same, {"3": cl.CLAIMS["3"]}) == []


def test_holm_adjusts_within_a_claim_and_can_remove_a_verdict():
    rng = np.random.default_rng(3)
    borderline = [0.8, 0.86, 0.83, 0.9, 0.9]            # alone: holds, p = 0.031
    alone = cl.check_claims(curve_grid("sgd", borderline), {"1": cl.CLAIMS["1"]})[0]
    assert alone.verdict == "holds" and alone.p_adjusted == alone.p
    noisy = [curve_grid("sgd", list(np.exp(rng.normal(0, 0.3, 5))), arch=a) for a in ("5-layer", "7-layer")]
    family = cl.check_claims(curve_grid("sgd", borderline) + sum(noisy, []), {"1": cl.CLAIMS["1"]})
    e = next(x for x in family if x.key[1] == "3-layer")
    assert e.p["holds"] == pytest.approx(alone.p["holds"])
    others = sorted(x.p["holds"] for x in family if x is not e)
    assert others[0] > e.p["holds"]                       # the smallest of the three: multiplied by 3
    assert e.p_adjusted["holds"] == pytest.approx(3 * alone.p["holds"])
    assert alone.p["holds"] < cl.ALPHA < 3 * alone.p["holds"] and e.verdict == "inconclusive"


def test_claims_pick_their_optimizer_and_metric_and_pool():
    records = (curve_grid("sgd", [0.6, 0.62, 0.61]) + curve_grid("egd", [0.7, 0.72, 0.69])
               + curve_grid("egd", [1.5, 1.6, 1.55], dataset="fashion-mnist"))
    effects = cl.check_claims(records, {"1": cl.CLAIMS["1"], "2": cl.CLAIMS["2"]})
    by = {(e.claim, e.key): e.verdict for e in effects}
    assert by == {("1", ("fashion-mnist", "3-layer", "egd")): "reversed",
                  ("1", ("mnist", "3-layer", "egd")): "holds", ("1", ("mnist", "3-layer", "sgd")): "holds",
                  ("2", ("mnist", "3-layer", "sgd")): "negligible"}   # train_error 0.5 both ways: log ratio 0
    pool = cl.pooled(effects)["1"]
    assert pool["verdicts"]["holds"] == 2 and pool["verdicts"]["reversed"] == 1
    assert (pool["pairs"], pool["below_zero"]) == (9, 6)
    assert pool["sign_p"] == pytest.approx(cl.sign_test([-1] * 6 + [1] * 3))
    assert "claim 1: holds: 2, reversed: 1" in cl.claim_table(effects)


def test_unpaired_runs_are_not_counted():
    # a seed run only with gauge fixing has no partner: it is left out, not paired with another seed
    records = grid("sgd", "train_error", [-0.25, -0.24, -0.26]) + [record("sgd", True, 7, train_error=0.0)]
    (e,) = cl.check_claims(records, {"2": cl.CLAIMS["2"]})
    assert e.n == 3 and e.seeds == (0, 1, 2) and e.verdict == "holds"


def test_a_single_pair_has_no_interval():
    (e,) = cl.check_claims(grid("sgd", "train_error", [-0.05]), {"2": cl.CLAIMS["2"]})
    assert e.verdict == "too few seeds" and e.low == -math.inf and "no interval" in e.describe()
    assert "nan" not in e.describe()
    with pytest.raises(ValueError, match="margin"):
        cl.effect([0.1, 0.2, 0.3], margin=0)
    with pytest.raises(ValueError, match="direction"):
        cl.effect([0.1, 0.2, 0.3], direction="none")


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
    # reg_loss ends 30% lower with gauge fixing, on one epoch of thirty: 1% of the mean log ratio, so
    # claim 1 is negligible; 1*: reg_loss_min_norm equal; claim 3 has no SGD pair to compare with
    assert verdicts == {"1": "negligible", "1*": "negligible"}
    axes = ex.plot_learning_curves(present.records, "egd")
    assert len(axes) == 1
    ax = cl.plot_effects(effects, "1")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mnist 3-layer egd"]
    with pytest.raises(ValueError, match="no effects of claim '2'"):
        cl.plot_effects(effects, "2")


def test_present_grid_of_an_empty_folder(tmp_path):
    from gaugelit import experiments as ex

    present = cl.present_grid(ex.settings_for("paper"), tmp_path)
    assert present.records == [] and present.cells == [] and len(present.missing) == 240
    assert cl.check_claims(present.records) == []
