"""Paired comparisons over seeds: quantiles, sign test, intervals and verdicts (the distributions are
scipy's; these tests hold them to tables, closed forms and exact counts)."""
import math

import numpy as np
import pytest

from gaugelit.experiments.stats import paired_comparison, read_interval, sign_test, t_cdf, t_quantile


@pytest.mark.parametrize("q, df, expected", [(0.975, 1, 12.706204736), (0.975, 4, 2.776445105),
                                             (0.975, 9, 2.262157163), (0.995, 19, 2.860934606),
                                             (0.95, 30, 1.697260887)])
def test_t_quantile_matches_tables(q, df, expected):
    assert t_quantile(q, df) == pytest.approx(expected, rel=1e-8)
    assert t_quantile(1 - q, df) == pytest.approx(-expected, rel=1e-8)


def test_t_quantile_tends_to_the_normal():
    assert t_quantile(0.975, 100000) == pytest.approx(1.959964, abs=1e-4)


def test_sign_test_exact():
    assert sign_test([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert sign_test([-1, 2, 3, 4, 5]) == pytest.approx(2 * 6 / 32)
    assert sign_test([0, 0, 1]) == pytest.approx(1.0)        # one non-zero difference: p = 1
    assert sign_test([0, 0]) == 1.0
    assert sign_test(np.r_[np.ones(10), -np.ones(10)]) == 1.0


@pytest.mark.parametrize("n", range(1, 31))
def test_sign_test_is_twice_the_smaller_binomial_tail(n):
    for pos in range(n + 1):
        tail = sum(math.comb(n, i) for i in range(min(pos, n - pos) + 1)) / 2 ** n
        d = np.r_[np.ones(pos), -np.ones(n - pos), np.zeros(3)]        # zeros carry no sign
        assert sign_test(d) == pytest.approx(min(1.0, 2 * tail), rel=1e-12)


def test_interval_and_verdicts():
    rng = np.random.default_rng(0)
    control = rng.standard_normal(8)
    lower = paired_comparison(control - 1 - 0.1 * rng.standard_normal(8), control)
    assert lower.verdict == "lower" and lower.high < 0 and lower.sign_p == pytest.approx(2 / 256)
    higher = paired_comparison(control + 1 + 0.1 * rng.standard_normal(8), control)
    assert higher.verdict == "higher" and higher.low > 0
    same = paired_comparison(control + 0.1 * np.array([1, -1, 1, -1, 1, -1, 1, -1.0]), control)
    assert same.verdict == "inconclusive" and same.low < 0 < same.high
    few = paired_comparison([1.0, 2.0], [0.0, 0.0])
    assert few.verdict == "too few pairs"
    # the interval is the textbook one: mean +- t * s / sqrt(n)
    d = np.array([0.3, -0.1, 0.5, 0.2])
    c = paired_comparison(d, np.zeros(4), confidence=0.9)
    half = t_quantile(0.95, 3) * d.std(ddof=1) / math.sqrt(4)
    assert (c.low, c.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert "pairs" in str(c)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one length"):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="treated has non-finite"):
        paired_comparison([1.0, np.inf, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], confidence=1.0)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.9, 0)


def test_t_cdf_and_quantile_against_closed_forms():
    for t in (-3.0, -0.5, 0.0, 0.7, 2.5, 40.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-15)           # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-15)  # df = 2
    for q in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9995):
        assert t_quantile(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-12)
        assert t_quantile(q, 2) == pytest.approx((2 * q - 1) / math.sqrt(2 * q * (1 - q)), rel=1e-12)
    with pytest.raises(ValueError, match="df"):
        t_cdf(1.0, 2.5)


@pytest.mark.parametrize("low, high, n, margin, want", [
    (-2.0, -1.0, 3, None, "below"), (1.0, 2.0, 3, None, "above"), (-1.0, 1.0, 3, None, "inconclusive"),
    (-2.0, -1.0, 2, None, "too few"), (-0.5, 0.5, 3, 1.0, "within"), (0.1, 0.5, 3, 1.0, "within"),
    (-2.0, -0.5, 3, 1.0, "below"), (0.5, 2.0, 3, 1.0, "above"), (-2.0, 0.5, 3, 1.0, "inconclusive"),
    (-1.0, 0.5, 3, 1.0, "inconclusive"),   # the margin is open: touching it is not inside
])
def test_read_interval_is_the_one_rule(low, high, n, margin, want):
    assert read_interval(low, high, n, min_n=3, margin=margin) == want
