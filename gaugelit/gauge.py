"""The gauge: rescalings (eqs. 5-6), the entry-wise p-norm (eq. 7), balance (eqs. 9, 20, 24, 32),
and the bounds of Lemma 2.4 on the rescalings that do not raise the norm (eqs. 17-19)."""
from __future__ import annotations

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
        f = xp.asarray(f, dtype=net.dtype)
        if f.shape != (net.sizes[k],):
            raise ValueError(f"rescale: factors for hidden layer {k} must have shape ({net.sizes[k]},), "
                             f"got {tuple(f.shape)}")
        if not bool(xp.all(xp.isfinite(f) & (f > 0))):
            raise ValueError(f"rescale: factors for hidden layer {k} must be finite and > 0")
        a.append(f)
    return _rescale_trusted(net, a)


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


def pnorm(net: LayeredNet, p: float) -> float:
    """``sum_ij |W_ij|^p`` over all weights, biases excluded (the p-th power of eq. 7)."""
    p = check_p(p)
    return float(sum(float(_abs_pow(W, p, net.xp).sum()) for W in net.weights))


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
    xp, W = net.xp, net.weights
    # ``any`` tests ``!= 0`` itself: no boolean temporary the size of W.
    return [~(W[k - 1].any(axis=1) & W[k].any(axis=0)) for k in range(1, len(W))]


def imbalance(net: LayeredNet, p: float) -> float:
    """The maximal imbalance gamma of eq. (20), in [0, 1], over hidden units that are not dead.

    Eq. (20) as printed has no absolute value; with it, gamma = 0 exactly at balance (eq. 9)
    and gamma measures the worst unit whichever side is heavier.
    """
    gamma = 0.0
    for (fan_in, fan_out), dead in zip(unit_norms(net, p), dead_units(net)):
        ratio = net.xp.abs(fan_in - fan_out) / net.xp.where(dead, 1, fan_in + fan_out)
        gamma = max(gamma, float(net.xp.where(dead, 0, ratio).max()))
    return gamma


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
