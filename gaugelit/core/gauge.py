"""The gauge: rescalings (eqs. 5-6), the entry-wise p-norm (eq. 7), balance (eqs. 9, 20, 24, 32),
and the bounds of Lemma 2.4 on the rescalings that do not raise the norm (eqs. 17-19)."""
from __future__ import annotations

import math
from contextlib import nullcontext as _nullcontext
from typing import Sequence

import numpy as np

from .backend import array_module
from .network import LayeredNet, check_p

__all__ = ["rescale", "pnorm", "unit_norms", "dead_units", "imbalance", "balance_gaps", "sublevel_log_bounds"]


def rescale(net: LayeredNet, factors: Sequence) -> LayeredNet:
    """The gauge transformation of eqs. (5)-(6): ``W_ij <- W_ij a_i / a_j``, ``b_i <- b_i a_i``.

    ``factors[k-1]`` holds the positive factors ``a`` of hidden layer ``k``; input and output
    units keep ``a = 1``. Returns a new network computing the same function.
    """
    xp, L = net.xp, len(net.weights)
    factors = list(factors)
    if len(factors) != L - 1:
        raise ValueError(f"rescale: need one factor vector per hidden layer ({L - 1}), got {len(factors)}")
    a = []
    for k, f in enumerate(factors, start=1):
        array_module(f, net.weights[0], where=f"rescale: factors for hidden layer {k}")
        f = xp.asarray(f)
        if f.dtype.kind not in "fiu":       # complex: the cast would drop the imaginary part
            raise TypeError(f"rescale: factors for hidden layer {k} must be real, got dtype {f.dtype}")
        with _quiet(xp):                                 # beyond the dtype: the check below
            f = f.astype(net.dtype, copy=False)
        if f.shape != (net.sizes[k],):
            raise ValueError(f"rescale: factors for hidden layer {k} must have shape ({net.sizes[k]},), "
                             f"got {tuple(f.shape)}")
        if not bool(xp.all(xp.isfinite(f) & (f > 0))):
            raise ValueError(f"rescale: factors for hidden layer {k} must be finite and > 0 in the "
                             f"network's {net.dtype}")
        a.append(f)
    with _quiet(xp):                                     # overflow is detected below, not warned
        out = _rescale_trusted(net, a)
    finite = xp.stack([xp.isfinite(W).all() for W in out.weights] + [xp.isfinite(b).all() for b in out.biases])
    if not bool(finite.all()):                           # one host sync
        ok, L = [bool(v) for v in finite], len(out.weights)
        where = f"weights[{ok.index(False)}]" if False in ok[:L] else f"biases[{ok[L:].index(False)}]"
        raise FloatingPointError(f"rescale: the rescaled {where} overflow {net.dtype} (factors "
                                 f"of hidden layer{'s' if L > 2 else ''} next to it too large or too small)")
    return out


def _rescale_trusted(net: LayeredNet, factors) -> LayeredNet:
    """:func:`rescale` without validation, for factors gaugelit computed itself (the solvers).

    Each new matrix is allocated once and written in two in-place passes, ``a_i W_ij`` then
    ``/ a_j``: the same arithmetic, in the same order, as the textbook ``a[:, None] * W / a[None, :]``
    (so the result is bitwise the same) without its temporaries.
    """
    xp = net.xp
    a = [None] + list(factors) + [None]
    weights, biases = [], []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        if a[l + 1] is not None:
            W, b = xp.multiply(a[l + 1][:, None], W), a[l + 1] * b
            if a[l] is not None:
                xp.divide(W, a[l][None, :], out=W)
        elif a[l] is not None:
            W = W / a[l][None, :]
        weights.append(W)
        biases.append(b)
    return LayeredNet._trusted(weights, biases, xp)


def _abs_pow(W, p: float, xp, out=None):
    """``|W|^p`` with the cheap forms of the paper's two exponents: one pass for p = 2 (``W * W``,
    which is bitwise ``|W| ** 2``) and p = 1 (``|W|``); ``out`` may be a preallocated buffer."""
    if p == 2.0:
        return xp.multiply(W, W, out=out)
    if p == 1.0:
        return xp.abs(W, out=out)
    # pow: ~1.4x slower than exp(p log|W|) on the CPU, but accurate to an ulp and warning-free
    # at W = 0; no hot path of the paper's experiments uses another p.
    return xp.power(xp.abs(W, out=out), p, out=out)


def _quiet(xp):
    """Silence NumPy's overflow/underflow warnings (and the 0 and inf they lead to: x/0, log 0) where
    the caller checks the result itself."""
    return np.errstate(all="ignore") if xp is np else _nullcontext()


def _suspect(total: float, dtype) -> bool:
    """Whether a sum of ``|W|^p`` in ``dtype`` may have overflowed or lost digits to underflow."""
    info = np.finfo(dtype)
    return not (math.isfinite(total) and (total == 0 or total >= float(info.tiny) / float(info.eps)))


def _log_pnorm_terms(weights, p: float, xp) -> list[float]:
    """Per matrix, ``log sum_ij |W_ij|^p`` (``-inf`` for a zero matrix), right at any scale.

    The direct sum is kept where it is safely inside the dtype's range (the common case: one
    pass); otherwise the matrix is divided by its largest magnitude first, so the sum lies in
    ``[1, size]`` and the scale is carried as ``p log max|W|`` (log-sum-exp style)."""
    logs = []
    for W in weights:
        with _quiet(xp):                                   # overflow is detected below, not warned
            total = float(_abs_pow(W, p, xp).sum())
        if not _suspect(total, W.dtype) and (total > 0 or not bool(W.any())):
            logs.append(math.log(total) if total > 0 else -math.inf)
            continue
        top = float(xp.abs(W).max())
        if top == 0:
            logs.append(-math.inf)
            continue
        scaled = float(_abs_pow(W.astype(np.float64) / top, p, xp).sum())
        logs.append(p * math.log(top) + math.log(scaled))
    return logs


def _exp_total(logs: list[float], what: str) -> float:
    """``sum_l exp(logs[l])`` as a float, or an error naming the layer that makes it unrepresentable."""
    if any(math.isnan(v) for v in logs):
        raise FloatingPointError(f"{what}: weights[{[math.isnan(v) for v in logs].index(True)}] "
                                 f"has non-finite entries")
    top = max(logs)
    if top == -math.inf:
        return 0.0
    log_total = top + math.log(sum(math.exp(v - top) for v in logs))
    worst = logs.index(top)
    if log_total > math.log(np.finfo(np.float64).max):
        raise FloatingPointError(f"{what} = exp({log_total:.6g}) overflows float64 (weights[{worst}] "
                                 f"alone gives exp({top:.6g})); use a smaller p or smaller weights")
    if log_total < math.log(np.finfo(np.float64).tiny):
        raise FloatingPointError(f"{what} = exp({log_total:.6g}) underflows float64 (the largest term, "
                                 f"weights[{worst}], gives exp({top:.6g})); use a smaller p or larger weights")
    return math.exp(log_total)


def pnorm(net: LayeredNet, p: float) -> float:
    """``sum_ij |W_ij|^p`` over all weights, biases excluded (the p-th power of eq. 7).

    Right wherever the sum is a finite float64 (large or small weights, large ``p``); a sum
    outside float64's range raises ``FloatingPointError`` naming the layer, never inf or 0."""
    p = check_p(p)
    return _exp_total(_log_pnorm_terms(net.weights, p, net.xp), f"sum |W|^p at p={p:g}")


def unit_norms(net: LayeredNet, p: float):
    """Per hidden layer ``k``, the pair ``(incoming, outgoing)`` of p-norm sums at each unit:
    ``sum_j |W_ij|^p`` over its incoming and ``sum_j |W_ji|^p`` over its outgoing weights."""
    p = check_p(p)
    M = [_abs_pow(W, p, net.xp) for W in net.weights]
    return [(M[k - 1].sum(axis=1), M[k].sum(axis=0)) for k in range(1, len(M))]


def dead_units(net: LayeredNet):
    """Per hidden layer, a boolean mask of units whose incoming or outgoing weights are all zero.

    Such units cannot be balanced (eq. 9 has no solution) and do not change the function under
    any rescaling; the solvers keep their factor at 1 and leave them out of ``imbalance``.
    """
    return _dead_units(net.weights)


def _dead_units(W):
    """:func:`dead_units` of a chain given by its weight matrices."""
    # ``any`` tests ``!= 0`` itself: no boolean temporary the size of W.
    return [~(W[k - 1].any(axis=1) & W[k].any(axis=0)) for k in range(1, len(W))]


def imbalance(net: LayeredNet, p: float) -> float:
    """The maximal imbalance gamma of eq. (20), in [0, 1], over hidden units that are not dead.

    Eq. (20) as printed has no absolute value; with it, gamma = 0 exactly at balance (eq. 9)
    and gamma measures the worst unit whichever side is heavier.
    """
    p = check_p(p)
    xp, gamma = net.xp, 0.0
    with _quiet(xp):                                       # overflow is detected below, not warned
        norms = unit_norms(net, p)
    for k, ((fan_in, fan_out), dead) in enumerate(zip(norms, dead_units(net)), start=1):
        both = xp.where(dead, 1, fan_in + fan_out)
        low = float(both.min())          # a live unit's sums are > 0: 0 means they underflowed
        if low == 0 or _suspect(low, both.dtype) or _suspect(float(both.max()), both.dtype):
            ratio = _unit_imbalance_scaled(net, p, k)      # overflow or underflow: per unit, in logs
        else:
            with _quiet(xp):
                ratio = xp.abs(fan_in - fan_out) / both
        with _quiet(xp):
            ratio = xp.where(dead, 0, ratio)
        if not bool(xp.isfinite(ratio).all()):
            raise FloatingPointError(f"imbalance: hidden layer {k} has units whose p-norm sums are "
                                     f"not representable at p={p:g}")
        gamma = max(gamma, float(ratio.max()))
    return gamma


def _row_log_sums(W, p, xp):
    """``log sum_j |W_ij|^p`` per row, each row scaled by its own largest magnitude first
    (``-inf`` for a zero row)."""
    A = xp.abs(W.astype(np.float64))
    top = A.max(axis=1)
    safe = xp.where(top > 0, top, 1)
    with np.errstate(divide="ignore") if xp is np else _nullcontext():
        return xp.where(top > 0, p * xp.log(safe) + xp.log(_abs_pow(A / safe[:, None], p, xp).sum(axis=1)),
                        -xp.inf)


def _unit_imbalance_scaled(net, p, k):
    """``|in - out| / (in + out) = |tanh((log in - log out) / 2)|`` for the units of hidden layer k,
    with each unit's sums taken in logs, so no magnitude a float can hold overflows or underflows."""
    xp = net.xp
    log_in = _row_log_sums(net.weights[k - 1], p, xp)
    log_out = _row_log_sums(net.weights[k].T, p, xp)
    with np.errstate(invalid="ignore") if xp is np else _nullcontext():
        return xp.abs(xp.tanh((log_in - log_out) / 2))


def balance_gaps(net: LayeredNet, p: float, include_bias: bool = True):
    """Per hidden layer, the gaps ``Delta_i = |b_i|^p + sum_j |W_ij|^p - sum_j |W_ji|^p`` of eq. (24);
    with ``include_bias=False`` the bias term is dropped, as in eq. (32)."""
    gaps = []
    for k, (fan_in, fan_out) in enumerate(unit_norms(net, p), start=1):
        gap = fan_in - fan_out
        if include_bias:
            gap = gap + _abs_pow(net.biases[k - 1], p, net.xp)
        gaps.append(gap)
    return gaps


def sublevel_log_bounds(net: LayeredNet, p: float):
    """Logs of the bounds of Lemma 2.4 (eqs. 17-19) on the factors ``a`` with ``F(a) <= F(1)``.

    Returns ``(edge, up, down)``: ``edge[l]`` bounds ``log a_i - log a_j`` for every weight
    ``W_ij`` of layer ``l`` by ``(1/p) log(||W||^p / |W_ij|^p)`` (eq. 17, with the power 1/p the
    printed form lacks); ``up[k]`` and ``down[k]`` bound ``log a`` and ``-log a`` of hidden layer
    ``k`` by the shortest path of such edges from the inputs (eq. 18) and to the outputs (eq. 19),
    found layer by layer by min-plus products. Zero weights give infinite edges (no bound).
    """
    p = check_p(p)
    xp = net.xp
    M = [_abs_pow(W, p, xp) for W in net.weights]
    total = sum(m.sum() for m in M)                                  # ||W||_{p,p}^p
    with np.errstate(divide="ignore") if xp is np else _nullcontext():
        edge = [xp.log(total / m) / p for m in M]
    up, down = [xp.zeros(net.sizes[0], dtype=M[0].dtype)], [xp.zeros(net.sizes[-1], dtype=M[0].dtype)]
    for c in edge[:-1]:
        up.append((up[-1][None, :] + c).min(axis=1))
    for c in edge[:0:-1]:
        down.insert(0, (down[0][:, None] + c).min(axis=0))
    return edge, up[1:], down[:-1]
