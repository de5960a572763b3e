"""Paired comparisons over seeds: quantiles, sign test, intervals and verdicts."""
import math

import numpy as np
import pytest

from gaugelit.experiments.stats import paired_comparison, sign_test, t_quantile


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


def test_t_cdf_against_closed_forms():
    from gaugelit.experiments.stats import _t_cdf
    for t in (-3.0, -0.5, 0.0, 0.7, 2.5, 40.0):
        assert _t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)           # Cauchy
        assert _t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)  # df = 2
