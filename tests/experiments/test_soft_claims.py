"""The soft-gauge chapter's judgments (gaugelit.experiments.soft_claims): synthetic data with a known
effect, a known null, a reversed effect and too little data, and the definitions on made-up curves."""
import math

import numpy as np
import pytest

import gaugelit as gl
from gaugelit.experiments import soft_claims as sc
from gaugelit.experiments.claims import MARGIN
from gaugelit.experiments.toy import toy_net

RNG = np.random.default_rng(0)
BASE = np.exp(RNG.normal(-1.0, 0.3, 8))          # a positive control quantity for eight seeds


def _arm(log_effect, noise=0.01, seed=1):
    return BASE * np.exp(log_effect + noise * np.random.default_rng(seed).standard_normal(BASE.size))


def test_paired_log_ratio_verdicts_known_effect_null_reversed_and_too_few():
    judged = sc.judge([
        sc.paired("f", "halved", _arm(math.log(0.5)), BASE),                  # a 50% cut: holds
        sc.paired("f", "null", _arm(0.0), BASE),                              # no change: negligible
        sc.paired("f", "doubled", _arm(math.log(2.0)), BASE),                 # reversed
        sc.paired("f", "noisy", _arm(0.0, noise=1.0), BASE),                  # too noisy: inconclusive
        sc.paired("g", "two", _arm(math.log(0.5))[:2], BASE[:2]),             # too few seeds
    ])
    assert judged["halved"].verdict == "holds" and judged["halved"].high < -MARGIN
    assert judged["null"].verdict == "negligible" and -MARGIN < judged["null"].low < judged["null"].high < MARGIN
    assert judged["doubled"].verdict == "reversed"
    assert judged["noisy"].verdict == "inconclusive"
    assert judged["two"].verdict == "too few seeds"
    np.testing.assert_allclose(judged["halved"].mean, math.log(0.5), atol=0.02)
    assert "Holm p" in sc.describe(judged["halved"]) and "factor 0.5" in sc.describe(judged["halved"])
    assert "no interval" in sc.describe(judged["two"])


def test_holm_within_a_family_can_turn_a_verdict_inconclusive():
    weak = _arm(math.log(0.8), noise=0.16, seed=3)          # significant alone, not among many
    alone = sc.judge([sc.paired("one", "weak", weak, BASE)])["weak"]
    many = sc.judge([sc.paired("six", "weak", weak, BASE)]
                    + [sc.paired("six", f"null{k}", _arm(0.0, noise=1.0, seed=10 + k), BASE) for k in range(5)])
    assert alone.verdict == "holds" and many["weak"].verdict == "inconclusive"
    np.testing.assert_allclose(many["weak"].p["holds"], alone.p["holds"])            # unadjusted: the same
    np.testing.assert_allclose(many["weak"].p_adjusted["holds"], 6 * alone.p["holds"])  # the smallest of six
    with pytest.raises(ValueError, match="unique"):
        sc.judge([sc.paired("a", "x", BASE, BASE), sc.paired("b", "x", BASE, BASE)])


def test_counts_use_one_grid_rate_as_margin():
    base = np.array([4, 2, 3, 3, 1, 5])
    more = sc.judge([sc.paired("c", "plus3", base + 3, base, direction="higher", counts=True),
                     sc.paired("c", "same", base, base, direction="higher", counts=True),
                     sc.paired("c", "half", base + np.array([1, 0, 1, 0, 1, 0]), base, direction="higher",
                               counts=True)])
    assert more["plus3"].verdict == "holds" and more["plus3"].margin == sc.RATE_MARGIN
    assert more["same"].verdict == "negligible"                 # every seed identical: exact
    assert more["half"].verdict in ("negligible", "inconclusive") and more["half"].verdict != "holds"


def test_log_ratio_refuses_non_positive_or_diverged_values():
    with pytest.raises(ValueError, match="positive"):
        sc.log_ratio([1.0, np.inf], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        sc.log_ratio([1.0, 0.0], [1.0, 1.0])


def test_stable_loss():
    assert sc.stable_loss([1.0, 0.5, 0.2, 0.1])                       # converging
    assert sc.stable_loss([1.0, 0.5, 0.105, 0.1, 0.104])             # ends within 10% of its best
    assert not sc.stable_loss([1.0, 0.1, 0.5, 0.9])                  # ends 9x above its best: climbed away
    assert not sc.stable_loss([1.0, 0.5, 0.1, 0.2])                  # oscillating, ends 2x above its best
    assert not sc.stable_loss([1.0, 0.5, np.inf, 0.1])               # a non-finite loss
    assert not sc.stable_loss([1.0, np.nan])
    # the old rule ("ends below where it started") called the third curve stable; this one does not
    loss = np.array([1.0, 0.1, 0.5, 0.9])
    assert loss[-1] < loss[0] and not sc.stable_loss(loss)


def test_fits_and_mostly_extrapolation():
    assert sc.fits(0.0105, 0.01) and not sc.fits(0.0115, 0.01) and sc.fits(0.005, 0.01)
    np.testing.assert_array_equal(sc.fits(np.array([0.009, 0.02, np.nan, np.inf]), 0.01), [True, False, False, False])
    inside = np.array([True, True, False, False])
    assert sc.mostly_extrapolation([0.01, 0.01, 1.0, 1.0], inside)
    assert not sc.mostly_extrapolation([0.5, 0.5, 1.0, 1.0], inside)


def test_log_imbalance_is_zero_at_balance_and_read_by_the_margin():
    net = toy_net(16, seed=0, xp=np)
    bal = gl.gauge_coordinates(net).balanced
    assert sc.log_imbalance(bal) < 1e-10 and not sc.off_balance(bal)
    assert sc.off_balance(net)
    u = gl.gauge_coordinates(net).log_scales[0]                      # log(I / O) = 4 u
    np.testing.assert_allclose(sc.log_imbalance(net), np.sqrt(np.mean((4 * u) ** 2)), rtol=1e-10)
    a = np.full(16, math.exp(0.01))                                   # log(I/O) = 0.04 for every unit
    assert not sc.off_balance(gl.rescale(bal, [a]))
    a = np.full(16, math.exp(0.05))                                   # 0.2 > log 1.1
    assert sc.off_balance(gl.rescale(bal, [a]))


def test_rule_b_readings_and_steps():
    assert sc.read_ratio(0.5) == "lower" and sc.read_ratio(2.0) == "higher" and sc.read_ratio(1.05) == "unchanged"
    assert sc.read_ratio(1 / 1.05) == "unchanged"
    with pytest.raises(ValueError):
        sc.read_ratio(0.0)
    a, b = np.array([1.0, 0.5, 0.25]), np.array([1.0, 1.0, 1.0])
    np.testing.assert_allclose(sc.curve_log_ratio(a, b), (math.log(0.5) + math.log(0.25)) / 2)
    assert sc.curve_log_ratio(b, b) == 0
    assert sc.e_fold_step([1.0, 0.5, 0.3, 0.1]) == 2 and sc.e_fold_step([1.0, 0.9]) is None
    assert sc.settle_step([1.0, 0.5, 0.2, 0.105, 0.1]) == 3
    assert sc.settle_step([0.1, 0.1]) == 0
    assert sc.settle_step([0.1, 1.0, 0.1]) == 2          # leaves and comes back: counted from the last exit


def test_sentence_is_chosen_by_the_verdict_and_refuses_an_unknown_one():
    texts = {"holds": "lower by {f}", "inconclusive": "inconclusive, interval {f}"}
    assert sc.sentence("holds", texts, f="2x") == "lower by 2x"
    with pytest.raises(KeyError, match="reversed"):
        sc.sentence("reversed", texts, f="x")


def test_fit_uses_the_amended_stability():
    from gaugelit.experiments.toy import fit, toy_regression
    data = toy_regression(32, 0.1, 41, seed=0, xp=np)
    run = fit(data, width=6, seed=0, lr=0.02, steps=50)
    assert run.stable == sc.stable_loss(run.loss)


def test_say_picks_the_phrase_of_the_verdict_and_prints_the_interval():
    phrases = {"holds": "is lower", "reversed": "is higher", "negligible": "is the same within 10%"}
    judged = sc.judge([sc.paired("f", "cut", _arm(math.log(0.5)), BASE),
                       sc.paired("f", "noisy", _arm(0.0, noise=1.0), BASE)])
    cut = sc.say(judged["cut"], "The error", phrases)
    assert cut.startswith("The error is lower (factor 0.5") and cut.endswith("verdict holds).")
    noisy = sc.say(judged["noisy"], "The error", phrases)
    assert "is inconclusive" in noisy and "95% interval" in noisy and "is lower" not in noisy
    counts = sc.judge([sc.paired("c", "n", [3, 4, 5], [1, 1, 1], direction="higher", counts=True)])["n"]
    assert "mean +3" in sc.interval_text(counts)
