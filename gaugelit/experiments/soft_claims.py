"""The soft-gauge chapter's statements judged by the amendment of ``book/analysis-plan.md``.

The amendment (written after the chapter's runs had been seen, so its thresholds are set by stated
reasons, not by the data) reuses the plan's machinery: the margin :data:`~.claims.MARGIN`
(``log 1.1``), the symmetric verdicts of :func:`.claims.effect` and Holm's adjustment per family of
:func:`.claims.adjust`. This module adds only what the chapter's quantities need:

* definitions: :func:`stable_loss` (every loss finite, the final one within the margin of the run's
  minimum), :func:`fits` (final training MSE within the margin of the noise variance),
  :func:`log_imbalance` and :func:`off_balance`, :func:`mostly_extrapolation`;
* rule A, comparisons paired over seeds: :func:`paired` (per seed the log ratio of a positive
  quantity, or the difference of counts with :data:`RATE_MARGIN`), :func:`judge` (Holm per family);
* rule B, one run: :func:`read_ratio` (``"lower"``, ``"higher"`` or ``"unchanged"`` by the margin),
  :func:`curve_log_ratio` (the plan's ``D1`` for loss curves), :func:`e_fold_step`,
  :func:`settle_step`;
* the chapter's sentences: :func:`sentence` picks the sentence of a verdict (and refuses a verdict
  it has no sentence for), :func:`say` writes a statement's sentence from its verdict and interval,
  :func:`describe` prints an effect in full.
"""
from __future__ import annotations

import math

import numpy as np

from .claims import ALPHA, MARGIN, MIN_SEEDS, STATEMENTS, Effect, adjust, effect

__all__ = ["MARGIN", "RATE_MARGIN", "stable_loss", "fits", "log_imbalance", "off_balance", "mostly_extrapolation",
           "log_ratio", "paired", "judge", "describe", "read_ratio", "curve_log_ratio", "e_fold_step",
           "settle_step", "sentence", "interval_text", "say", "DEFAULT_PHRASES"]

#: The margin for a difference of counts of stable learning rates: one rate of the grid.
RATE_MARGIN = 1.0


def stable_loss(loss, margin: float = MARGIN) -> bool:
    """A run is stable when every recorded loss is finite and the final one lies within ``margin``
    (in log) of the smallest: ``log L_T - min_t log L_t <= margin``. A run that diverges, oscillates
    or climbs away from its best point is not."""
    loss = np.asarray(loss, dtype=float)
    if loss.ndim != 1 or loss.size == 0:
        raise ValueError(f"stable_loss: a 1-d, non-empty loss curve, got shape {loss.shape}")
    if not np.all(np.isfinite(loss)):
        return False
    if np.any(loss < 0):
        raise ValueError("stable_loss: a loss curve must be >= 0")
    low = loss.min()
    if low == 0:
        return bool(loss[-1] == 0)
    return bool(math.log(loss[-1]) - math.log(low) <= margin)


def fits(final_loss, noise_variance: float, margin: float = MARGIN):
    """Whether a final training MSE (a number or an array; NaN or inf is False) is at most the noise
    variance times ``exp(margin)``: as good as the noiseless target, within the margin."""
    final = np.asarray(final_loss, dtype=float)
    if not noise_variance > 0:
        raise ValueError(f"fits: the noise variance must be > 0, got {noise_variance}")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.isfinite(final) & (np.log(np.where(final > 0, final, np.nan)) - math.log(noise_variance) <= margin)
        out |= final == 0
    return bool(out) if out.ndim == 0 else out


def log_imbalance(net) -> float:
    """Root mean square over the hidden units of ``log(I_i / O_i)``, ``I_i = ||w_in||^2 + b_i^2`` and
    ``O_i = ||w_out||^2``: 0 exactly at balance (``Delta_i = 0`` iff ``I_i = O_i``)."""
    from ..core.backend import to_numpy
    from ..core.gauge import unit_norms

    logs = []
    for (fan_in, fan_out), b in zip(unit_norms(net, 2.0), net.biases[:-1]):
        inc, out = to_numpy(fan_in) + to_numpy(b) ** 2, to_numpy(fan_out)
        if np.any(inc <= 0) or np.any(out <= 0):
            raise ValueError("log_imbalance: a hidden unit without incoming or outgoing mass")
        logs.append(np.log(inc / out))
    r = np.concatenate(logs)
    return float(np.sqrt(np.mean(r * r)))


def off_balance(net, margin: float = MARGIN) -> bool:
    """``log_imbalance(net) > margin``: a typical unit's incoming and outgoing masses differ by more
    than the margin."""
    return log_imbalance(net) > margin


def mostly_extrapolation(sq_errors, inside, margin: float = MARGIN) -> bool:
    """Whether dropping the points ``inside`` (a boolean mask) changes the total squared error
    ``sq_errors`` by less than ``margin`` in log: ``log(SSE_all / SSE_outside) < margin``."""
    e, inside = np.asarray(sq_errors, dtype=float).ravel(), np.asarray(inside, dtype=bool).ravel()
    if e.shape != inside.shape:
        raise ValueError("mostly_extrapolation: one mask entry per squared error")
    outside = e[~inside].sum()
    if outside <= 0:
        return False
    return bool(math.log(e.sum() / outside) < margin)


def log_ratio(treated, control) -> np.ndarray:
    """Per pair, ``log(treated / control)`` of positive finite values."""
    a, b = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"log_ratio: two 1-d arrays of one length, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a > 0) and np.all(b > 0)):
        raise ValueError("log_ratio: the values must be positive and finite (drop diverged pairs first)")
    return np.log(a) - np.log(b)


def paired(family: str, label: str, treated, control, *, direction: str = "lower", counts: bool = False,
           seeds=None) -> Effect:
    """Rule A for one comparison, unadjusted (:func:`judge` adjusts its family): per seed the log
    ratio ``treated / control`` with margin ``MARGIN``, or with ``counts=True`` the difference
    ``treated - control`` with margin :data:`RATE_MARGIN`; the verdict by :func:`.claims.effect` in
    ``direction`` (``"lower"`` or ``"higher"``, the direction the chapter's sentence states)."""
    if counts:
        a, b = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"paired: two 1-d arrays of one length, got {a.shape} and {b.shape}")
        d, margin, metric = a - b, RATE_MARGIN, "difference of counts"
    else:
        d, margin, metric = log_ratio(treated, control), MARGIN, "log ratio"
    return effect(d, direction=direction, margin=margin, claim=family, key=(label,), metric=metric, seeds=seeds)


def judge(effects) -> dict[str, Effect]:
    """Holm's adjustment within each family (an effect's ``claim``) of :func:`paired` effects; the
    adjusted effects by label (labels must differ)."""
    effects = list(effects)
    labels = [e.key[0] for e in effects]
    if len(set(labels)) != len(labels):
        raise ValueError(f"judge: labels must be unique, got {labels}")
    return {e.key[0]: e for e in adjust(effects, alpha=ALPHA, min_seeds=MIN_SEEDS)}


def describe(e: Effect) -> str:
    """``label: mean [95% interval] (n seeds, Holm p of the verdict's statement, family of k) -> verdict``,
    the log ratio also as a factor."""
    if e.n < MIN_SEEDS:
        return f"{e.key[0]}: mean {e.mean:+.3g}, {e.n} seeds (no interval, no test): {e.verdict}"
    p = e.p_adjusted[e.verdict] if e.verdict in STATEMENTS else min(e.p_adjusted.values())
    factor = (f" (factor {math.exp(e.mean):.3g} [{math.exp(e.low):.3g}, {math.exp(e.high):.3g}])"
              if e.metric == "log ratio" else "")
    return (f"{e.key[0]}: {e.metric} {e.mean:+.3g} [{e.low:+.3g}, {e.high:+.3g}]{factor}, {e.n} seeds, "
            f"Holm p {p:.3g} (family {e.claim!r}), margin {e.margin:.3g}: {e.verdict}")


def read_ratio(ratio: float, margin: float = MARGIN) -> str:
    """Rule B for one run: ``"lower"`` when ``log ratio < -margin``, ``"higher"`` when it is above
    ``margin``, otherwise ``"unchanged"`` (within the margin)."""
    r = float(ratio)
    if not (np.isfinite(r) and r > 0):
        raise ValueError(f"read_ratio: a positive finite ratio, got {ratio}")
    lr = math.log(r)
    return "lower" if lr < -margin else "higher" if lr > margin else "unchanged"


def curve_log_ratio(loss, reference) -> float:
    """The plan's ``D1`` for two loss curves of one length: the mean over steps 1..T of
    ``log loss_t - log reference_t`` (entry 0, before training, is left out)."""
    a, b = np.asarray(loss, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"curve_log_ratio: two curves of one length >= 2, got {a.shape} and {b.shape}")
    return float(np.mean(log_ratio(a[1:], b[1:])))


def e_fold_step(values) -> int | None:
    """The first step at which ``values`` falls below ``1/e`` of its start (None if it never does)."""
    v = np.asarray(values, dtype=float)
    below = np.flatnonzero(v < v[0] / math.e)
    return int(below[0]) if below.size else None


def settle_step(loss, margin: float = MARGIN) -> int:
    """The first step from which every later loss lies within ``margin`` (in log) of the final one."""
    v = np.log(np.asarray(loss, dtype=float))
    if not np.all(np.isfinite(v)):
        raise ValueError("settle_step: a positive finite loss curve")
    outside = np.flatnonzero(np.abs(v - v[-1]) > margin)
    return int(outside[-1] + 1) if outside.size else 0


def sentence(verdict: str, sentences: dict[str, str], **values) -> str:
    """The sentence for ``verdict`` from ``sentences`` (a verdict or rule-B reading -> text), filled
    with ``values``; a verdict without a sentence raises (the chapter must say something for each)."""
    if verdict not in sentences:
        raise KeyError(f"no sentence for verdict {verdict!r} (have {sorted(sentences)})")
    return sentences[verdict].format(**values)


#: The phrases of the verdicts that say nothing about the effect, the same for every statement.
DEFAULT_PHRASES = {"inconclusive": "is inconclusive: the interval neither lies beyond the margin nor within it, "
                                   "so neither an effect nor its absence is shown",
                   "too few seeds": "has too few seeds for a verdict"}


def interval_text(e: Effect) -> str:
    """The estimate and unadjusted 95% interval of ``e`` (as a factor for a log ratio) and its Holm p."""
    if e.n < MIN_SEEDS:
        return f"mean {e.mean:+.3g}, {e.n} seeds, no interval"
    p = e.p_adjusted[e.verdict] if e.verdict in STATEMENTS else min(e.p_adjusted.values())
    if e.metric == "log ratio":
        est = f"factor {math.exp(e.mean):.3g}, 95% interval [{math.exp(e.low):.3g}, {math.exp(e.high):.3g}]"
    else:
        est = f"mean {e.mean:+.3g}, 95% interval [{e.low:+.3g}, {e.high:+.3g}]"
    return f"{est}, {e.n} seeds, Holm p {p:.2g}"


def say(e: Effect, subject: str, phrases: dict[str, str]) -> str:
    """The sentence of one statement: ``subject``, the phrase of ``e``'s verdict (from ``phrases``, for
    ``"holds"``, ``"reversed"`` and ``"negligible"``; :data:`DEFAULT_PHRASES` for the others), and the
    interval: ``"<subject> <phrase> (<interval>; verdict <verdict>)."``."""
    phrase = sentence(e.verdict, {**DEFAULT_PHRASES, **phrases})
    return f"{subject} {phrase} ({interval_text(e)}; verdict {e.verdict})."
