"""Paired comparisons over seeds: the effect, its interval, and a verdict that follows from them.

Two arms run from the same seeds (same initial network, same data) give one difference per seed.
:func:`paired_comparison` reports the mean difference with a Student-t confidence interval (NumPy and the standard library only), the
exact two-sided sign-test p-value (which assumes nothing about the shape of the differences), and a
verdict read off the interval: ``"lower"`` or ``"higher"`` when the interval excludes 0,
``"inconclusive"`` when it does not, ``"too few pairs"`` below ``min_pairs``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["t_cdf", "PairedComparison", "paired_comparison", "sign_test", "t_quantile"]


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz);
    standard library only, so that the statistics need nothing beyond NumPy."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):                      # the fraction converges fast on this side
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def t_cdf(t: float, df: int) -> float:
    """Student's t distribution function with ``df`` degrees of freedom (an integer >= 1)."""
    if int(df) != df or df < 1:
        raise ValueError(f"t_cdf: df must be an integer >= 1, got {df}")
    return _t_cdf(t, int(df))


def _t_cdf(t: float, df: int) -> float:
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: int) -> float:
    """The ``q``-quantile of Student's t distribution with ``df`` degrees of freedom (bisection on
    the CDF, written with the regularised incomplete beta function, to about 1e-12)."""
    if int(df) != df or df < 1:
        raise ValueError(f"t_quantile: df must be an integer >= 1, got {df}")
    if not (0 < q < 1):
        raise ValueError(f"t_quantile: q must lie in (0, 1), got {q}")
    if q < 0.5:
        return -t_quantile(1 - q, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, int(df)) < q:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, int(df)) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def sign_test(differences) -> float:
    """Exact two-sided sign-test p-value of ``differences`` (zeros dropped, as ties carry no sign);
    1.0 when every difference is zero."""
    d = np.asarray(differences, dtype=float)
    if not np.all(np.isfinite(d)):
        raise ValueError("sign_test: differences must be finite")
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    n = pos + neg
    if n == 0:
        return 1.0
    k = min(pos, neg)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """``differences`` = treated - control per pair; ``mean`` and ``std`` (ddof 1) of them; the
    ``confidence`` interval ``(low, high)`` of the mean (Student t; NaN below two pairs); the exact
    sign-test ``sign_p``; and ``verdict``: ``"lower"``/``"higher"`` (the treated arm, when the
    interval excludes 0), ``"inconclusive"``, or ``"too few pairs"``."""
    differences: np.ndarray
    mean: float
    std: float
    low: float
    high: float
    confidence: float
    sign_p: float
    verdict: str

    @property
    def n(self) -> int:
        return int(self.differences.size)

    def __str__(self) -> str:
        return (f"mean difference {self.mean:+.3g} ({100 * self.confidence:g}% interval "
                f"[{self.low:+.3g}, {self.high:+.3g}], {self.n} pairs, sign test p = {self.sign_p:.3g}): "
                f"{self.verdict}")


def paired_comparison(treated, control, *, confidence: float = 0.95, min_pairs: int = 3) -> PairedComparison:
    """Compare two arms run on the same seeds: ``treated[k]`` and ``control[k]`` come from seed k.

    Both must be finite 1-d arrays of one length (filter diverged runs out first, pairwise).
    """
    a, b = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired_comparison: treated and control must be 1-d of one length, "
                         f"got shapes {a.shape} and {b.shape}")
    for name, arr in (("treated", a), ("control", b)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"paired_comparison: {name} has non-finite entries; drop those pairs first")
    if not (0 < confidence < 1):
        raise ValueError(f"paired_comparison: confidence must lie in (0, 1), got {confidence}")
    if int(min_pairs) != min_pairs or min_pairs < 2:
        raise ValueError(f"paired_comparison: min_pairs must be an integer >= 2, got {min_pairs}")
    d = a - b
    n = d.size
    mean = float(d.mean()) if n else float("nan")
    std = float(d.std(ddof=1)) if n > 1 else float("nan")
    if n > 1:
        half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = float("nan")
    if n < min_pairs:
        verdict = "too few pairs"
    elif high < 0:
        verdict = "lower"
    elif low > 0:
        verdict = "higher"
    else:
        verdict = "inconclusive"
    return PairedComparison(d, mean, std, low, high, float(confidence), sign_test(d) if n else 1.0, verdict)
