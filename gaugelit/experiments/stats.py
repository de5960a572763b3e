"""Paired comparisons over seeds: the effect, its interval, and a verdict that follows from them.

Two arms run from the same seeds (same initial network, same data) give one difference per seed.
Of these differences: the Student-t confidence interval of the mean (:func:`t_interval`), the
exact two-sided sign-test p-value (:func:`sign_test`, which assumes nothing about the shape of
the differences), and where the interval lies by one stated rule (:func:`read_interval`). Both
vocabularies of verdicts are read from that rule: :func:`paired_comparison`'s here (``"lower"``
or ``"higher"`` when the interval excludes 0, ``"inconclusive"`` when it does not, ``"too few
pairs"`` below ``min_pairs``) and the claims' of :mod:`gaugelit.experiments.claims`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["t_cdf", "t_quantile", "t_interval", "sign_test", "read_interval", "one_sided_t", "holm",
           "PairedComparison", "paired_comparison"]


def _degrees_of_freedom(df, name: str) -> int:
    if int(df) != df or df < 1:
        raise ValueError(f"{name}: df must be an integer >= 1, got {df}")
    return int(df)


def t_cdf(t: float, df: int) -> float:
    """Student's t distribution function with ``df`` degrees of freedom (an integer >= 1)."""
    return float(stats.t.cdf(t, _degrees_of_freedom(df, "t_cdf")))


def t_quantile(q: float, df: int) -> float:
    """The ``q``-quantile of Student's t distribution with ``df`` degrees of freedom (an integer >= 1)."""
    df = _degrees_of_freedom(df, "t_quantile")
    if not (0 < q < 1):
        raise ValueError(f"t_quantile: q must lie in (0, 1), got {q}")
    return float(stats.t.ppf(q, df))


def t_interval(d, level: float = 0.95) -> tuple[float, float]:
    """The two-sided ``level`` Student-t confidence interval for the mean of ``d`` (at least two
    values); ``(mean, mean)`` when every value is the same."""
    d = np.asarray(d, dtype=float)
    if d.size < 2:
        raise ValueError(f"an interval needs at least two values, got {d.size}")
    if not np.isfinite(d).all():
        raise ValueError("the paired differences have non-finite values")
    half = t_quantile(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def sign_test(differences) -> float:
    """Exact two-sided sign-test p-value of ``differences`` (zeros dropped, as ties carry no sign);
    1.0 when every difference is zero."""
    d = np.asarray(differences, dtype=float)
    if not np.all(np.isfinite(d)):
        raise ValueError("sign_test: differences must be finite")
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    if pos + neg == 0:
        return 1.0
    return float(stats.binomtest(pos, pos + neg).pvalue)


def one_sided_t(d, bound: float, side: str) -> float:
    """p-value of the one-sided t test on the mean ``theta`` of ``d`` (at least two values) whose
    alternative is ``theta < bound`` (``side="below"``) or ``theta > bound`` (``"above"``); the null
    is the complement. With no spread, 0 or 1 by where the mean lies (the test is then exact)."""
    d = np.asarray(d, dtype=float)
    if d.size < 2 or not np.isfinite(d).all():
        raise ValueError(f"one_sided_t: needs at least two finite values, got {d}")
    if side not in ("below", "above"):
        raise ValueError(f"one_sided_t: side must be 'below' or 'above', got {side!r}")
    gap = d.mean() - bound if side == "below" else bound - d.mean()     # < 0 supports the alternative
    se = d.std(ddof=1) / math.sqrt(d.size)
    if se == 0:
        return 0.0 if gap < 0 else 1.0
    return float(stats.t.cdf(gap / se, d.size - 1))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (in their order): the k-th smallest is
    multiplied by ``m - k + 1``, made monotone, and capped at 1. Rejecting where the adjusted value
    is below alpha controls the family-wise error rate at alpha."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"holm: p-values must be a 1-d array in [0, 1], got {p}")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (p.size - np.arange(p.size))))
    out = np.empty_like(p)
    out[order] = scaled
    return out


def read_interval(low: float, high: float, n: int, *, min_n: int, margin: float | None = None) -> str:
    """Where the interval ``(low, high)`` of ``n`` pairs lies, by the one rule every verdict is
    read from: ``"too few"`` below ``min_n`` pairs; ``"within"`` the margin, when the whole interval
    lies inside ``(-margin, margin)``; ``"below"`` or ``"above"`` zero when it excludes zero;
    otherwise ``"inconclusive"``. Without a margin nothing is ``"within"``."""
    if n < min_n:
        return "too few"
    if margin is not None and -margin < low and high < margin:
        return "within"
    return "below" if high < 0 else "above" if low > 0 else "inconclusive"


#: :func:`paired_comparison`'s verdict for each :func:`read_interval` (no margin: never ``"within"``).
_COMPARISON = {"too few": "too few pairs", "below": "lower", "above": "higher", "inconclusive": "inconclusive"}


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
    low, high = t_interval(d, confidence) if n > 1 else (float("nan"), float("nan"))
    verdict = _COMPARISON[read_interval(low, high, n, min_n=min_pairs)]
    return PairedComparison(d, mean, std, low, high, float(confidence), sign_test(d) if n else 1.0, verdict)
