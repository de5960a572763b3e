"""Gradient flows with magnitude-modulated learning rates (eqs. 22-23 and 34-35), a fixed-step
RK4 integrator for them, and the time derivative of the balance gaps Delta_i (eqs. 24-37); and the
weight-balancing flows of the l_{p,q} norm (``q`` given and ``!= p``).

The flow on a fixed dataset ``(X, y)`` with loss ``L`` (eq. 21) and l_p weight decay (eq. 33) is

    dW/dt = -|W|^{2-p} dL_lambda/dW = -|W|^{2-p} dL/dW - lambda W,
    db/dt = -|b|^{2-p} dL/db                       (biases are not regularised),

where the second form uses ``|W|^{2-p} d/dW (|W|^p / p) = |W|^{2-p} |W|^{p-1} sign W = W``: the
decay term is the same ``-lambda W`` for every ``p``. Output biases always flow; hidden biases flow
(eq. 23) or stay frozen (the setting of Corollary 3.2 and Theorem 3.4).

**The l_{p,q} flows** (derived in ``book/lpq.md``). Group the parameters of each unit ``i``: its
incoming weights and, for a hidden unit whose bias flows, its bias (the bias is the weight from a
constant input, and rescales with the unit); ``s_i = sum |theta_i|^p`` over the group. In
log-magnitudes ``u = log|theta|`` the flow is gradient flow in the metric of the Hessian of
``R~ = sum_i s_i^(q/p)``: ``du/dt = -p q (d^2 R~/du^2)^{-1} dL_lambda/du``. That Hessian is one block
per group, ``p q s^(q/p-1) [diag(m) + (q/p-1)/s m m^T]`` with ``m = |theta|^p``, and Sherman-Morrison
gives, per group,

    dtheta/dt = -s^(1-q/p) [ |theta|^{2-p} g - (1 - p/q) theta <theta, g> / s ],  g = dL_lambda/dtheta.

At ``q = p`` it is eqs. (22)-(23) and (34)-(35) exactly. The regulariser is ``(lambda/q) ||W||_{p,q}^q``
(biases not counted, as in eq. 33). Output biases do not rescale and flow as in eq. (23). Along the
flow the gaps ``Delta_k = s_k^(q/p) - sum_i s_i^(q/p-1) |W_ik|^p`` (:func:`lpq_balance_gaps`; eq. 24 at
``q = p``) obey ``dDelta_k/dt = -p <dL_lambda/du, T_k 1>``. This is zero for the loss by its gauge
invariance, and ``-lambda p Delta_k`` for the decay when frozen hidden biases are zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.backend import to_numpy
from ..core.checks import integer, real, switch
from ..core.gauge import _abs_pow, balance_gaps, imbalance, pnorm
from ..core.graph import GaugeGraph
from ..core.network import LayeredNet, check_p
from ..solvers import lpq_norm
from ..solvers._lpq import LpqState, check_q
from .steps import loss_and_grads

__all__ = ["flow_velocity", "balance_rate", "integrate_flow", "FlowResult", "relu_pattern", "lpq_balance_gaps",
           "lpq_imbalance"]


def relu_pattern(net: LayeredNet, X):
    """Which hidden unit is active (ReLU input > 0) on which example: a flat boolean array, layer by
    layer, example-major. The flows are smooth between two points with the same pattern; where it
    changes, ``Delta_i(t)`` has a kink and a difference quotient across it is not a derivative."""
    xp = net.xp
    act, pattern = X, []
    for W, b in zip(net.weights[:-1], net.biases[:-1]):
        act = xp.maximum(act @ W.T + b, 0)
        pattern.append((act > 0).ravel())
    return xp.concatenate(pattern)


def _check_rate(name, value):
    return real(value, name, low=0)


def _modulation(theta, p, xp, name):
    """``|theta|^{2-p}``; for ``p > 2`` it is infinite at 0, which we refuse rather than return inf."""
    if p > 2 and bool((theta == 0).any()):
        raise ValueError(f"flow_velocity: {name} has zero entries, where |.|^(2-p) is infinite for "
                         f"p={p:g} > 2; perturb them or use p <= 2")
    return xp.abs(theta) ** (2 - p)


def flow_velocity(net: LayeredNet, X, y, p: float, *, weight_decay: float = 0.0, loss: str = "log",
                  train_hidden_biases: bool = True, q: float | None = None):
    """The right-hand side of eqs. (22)-(23) (``weight_decay = 0``) or (34)-(35) at ``net``; with
    ``q != p``, of the l_{p,q} weight-balancing flow (module docstring), whose decay term is the
    gradient of ``(lambda / q) ||W||_{p,q}^q``.

    ``L`` is the mean cost over ``(X, y)`` (eq. 21) computed by
    :func:`gaugelit.training.loss_and_grads` (``loss="log"``, integer labels, or ``"mse"``). Returns
    ``(dW/dt per layer, db/dt per layer)``; frozen hidden biases get a zero velocity.
    """
    p = check_p(p)
    q = check_q(q, p)
    weight_decay = _check_rate("weight_decay", weight_decay)
    train_hidden_biases = switch(train_hidden_biases, "train_hidden_biases")
    xp = net.xp
    _, gw, gb = loss_and_grads(net, X, y, loss)
    if q != p:
        return _lpq_velocity(net, gw, gb, p, q, weight_decay, train_hidden_biases)
    vW = []
    for l, (W, g) in enumerate(zip(net.weights, gw)):
        v = -_modulation(W, p, xp, f"weights[{l}]") * g
        if weight_decay:
            v = v - weight_decay * W
        vW.append(v)
    last = len(net.biases) - 1
    vb = []
    for l, (b, g) in enumerate(zip(net.biases, gb)):
        if l == last or train_hidden_biases:
            vb.append(-_modulation(b, p, xp, f"biases[{l}]") * g)
        else:
            vb.append(xp.zeros_like(b))
    return vW, vb


def _lpq_velocity(net, gw, gb, p, q, weight_decay, train_hidden_biases):
    """The l_{p,q} flow, group by group (module docstring): ``-s^(1-q/p) [|theta|^{2-p} g - (1 - p/q)
    theta <theta, g> / s]``, with the decay's ``g`` written out so that no ``|W|^{p-1}`` is formed."""
    xp, last = net.xp, len(net.weights) - 1
    vW, vb = [], []
    for l, (W, b, g, h) in enumerate(zip(net.weights, net.biases, gw, gb)):
        grouped = l < last and train_hidden_biases
        theta = xp.concatenate([W, b[:, None]], axis=1) if grouped else W
        grad = xp.concatenate([g, h[:, None]], axis=1) if grouped else g
        name = f"weights[{l}]" + (f" and biases[{l}]" if grouped else "")
        m = _abs_pow(theta, p, xp)
        s = m.sum(axis=1)
        zero = s == 0
        if bool(zero.any()) and q >= 2:
            unit = int(xp.argmax(zero))
            raise ValueError(f"flow_velocity: unit {unit} of layer {l + 1} has no nonzero parameter in "
                             f"{name}; the l_{{p,q}} flow's speed grows like |theta|^(2-q) there, "
                             f"unbounded for q={q:g} >= 2")
        safe = xp.where(zero, 1, s)
        first = _modulation(theta, p, xp, name) * grad
        dot = (theta * grad).sum(axis=1)
        v = first - (1 - p / q) * theta * (dot / safe)[:, None]
        if weight_decay:
            sw = _abs_pow(W, p, xp).sum(axis=1)
            sw_safe = xp.where(sw == 0, 1, sw)
            plain = xp.concatenate([W, xp.zeros_like(b)[:, None]], axis=1) if grouped else W
            v = v + weight_decay * (sw_safe ** (q / p - 1))[:, None] * (
                plain - (1 - p / q) * theta * (sw / safe)[:, None])
        v = -(xp.where(zero, 0, safe ** (1 - q / p)))[:, None] * v
        if grouped:
            vW.append(v[:, :-1])
            vb.append(v[:, -1])
        else:
            vW.append(v)
            vb.append(-_modulation(b, p, xp, f"biases[{l}]") * h if l == last else xp.zeros_like(b))
    return vW, vb


def _power_of_sums(s, e, xp):
    """``s ** e`` per group, 0 for an empty (all-zero) group: there every term it multiplies is a
    ``|.|^p`` of that group, and ``s^e |theta|^p <= s^(e+1) -> 0``."""
    return xp.where(s > 0, xp.where(s > 0, s, 1) ** e, 0)


def lpq_balance_gaps(net: LayeredNet, p: float, q: float, include_bias: bool = True):
    """Per hidden layer, ``Delta_k = s_k^(q/p) - sum_i s_i^(q/p-1) |W_ik|^p``: unit k's incoming
    group norm to the q against its share of the norms of the units it feeds (``s`` sums ``|.|^p``
    over a group: incoming weights, and a hidden unit's bias if ``include_bias``). It is
    ``(1/q) dR~/dlog a_k``, conserved by the l_{p,q} flow; ``q = p`` gives eq. (24) (eq. 32 without
    biases) exactly as :func:`gaugelit.balance_gaps`."""
    p = check_p(p)
    q = check_q(q, p)
    include_bias = switch(include_bias, "include_bias")
    if q == p:
        return balance_gaps(net, p, include_bias=include_bias)
    xp, r, last = net.xp, q / p, len(net.weights) - 1
    sums = []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        s = _abs_pow(W, p, xp).sum(axis=1)
        sums.append(s + _abs_pow(b, p, xp) if include_bias and l < last else s)
    return [sums[k - 1] ** r - _power_of_sums(sums[k], r - 1, xp) @ _abs_pow(net.weights[k], p, xp)
            for k in range(1, len(net.weights))]


def lpq_imbalance(net: LayeredNet, p: float, q: float) -> float:
    """The l_{p,q} imbalance ``max_k |T_k - S_k| / (T_k + S_k)`` over hidden units that are not dead
    (``T_k = s_k^(q/p)``, ``S_k`` its share of the norms it feeds; biases not counted): the solver's
    gamma (:class:`~gaugelit.solvers.LpqState`), from the weights alone; eq. (20) with its absolute
    value at ``q = p``."""
    p, q = check_p(p), check_q(q, p)
    gamma = LpqState(GaugeGraph.from_layered(net), p, q).gamma()
    if not math.isfinite(gamma):
        raise FloatingPointError(f"lpq_imbalance: the sums of |W|^p leave float64 at p={p:g}, q={q:g}")
    return gamma


def _dabs_p(theta, p, xp):
    """``d|theta|^p / d theta = p |theta|^{p-1} sign(theta)``, taken as 0 at ``theta = 0`` (where the
    modulated flows above do not move a parameter for ``p < 2``)."""
    mag = xp.abs(theta)
    safe = xp.where(mag > 0, mag, 1)
    return xp.where(mag > 0, p * xp.sign(theta) * safe ** (p - 1), 0)


def balance_rate(net: LayeredNet, velocity, p: float, include_bias: bool = True, q: float | None = None):
    """``dDelta_i/dt`` along ``velocity = (dW/dt, db/dt)``, per hidden layer (eqs. 25-27, 36); with
    ``q != p``, of the gaps of :func:`lpq_balance_gaps`.

    By the chain rule, ``dDelta_i/dt = p |b_i|^{p-1} sign(b_i) db_i/dt
    + sum_j p |W_ij|^{p-1} sign(W_ij) dW_ij/dt - sum_j p |W_ji|^{p-1} sign(W_ji) dW_ji/dt``.
    With ``include_bias=False`` the bias term is left out (eq. 32). For ``q != p``, with ``r = q/p``
    and ``dm = d|theta|^p/dt``: ``r s_i^(r-1) (dm of i's group) - sum_k [s_k^(r-1) dm_ki
    + (r-1) s_k^(r-2) |W_ki|^p (dm of k's group)]``.
    """
    p = check_p(p)
    q = check_q(q, p)
    vW, vb = velocity
    if len(vW) != len(net.weights) or len(vb) != len(net.biases):
        raise ValueError("balance_rate: velocity must hold one array per weight matrix and bias vector")
    xp = net.xp
    rates = [_dabs_p(W, p, xp) * v for W, v in zip(net.weights, vW)]
    if q != p:
        return _lpq_balance_rate(net, rates, vb, p, q, include_bias)
    out = []
    for k in range(1, len(net.weights)):
        rate = rates[k - 1].sum(axis=1) - rates[k].sum(axis=0)
        if include_bias:
            rate = rate + _dabs_p(net.biases[k - 1], p, xp) * vb[k - 1]
        out.append(rate)
    return out


def _lpq_balance_rate(net, rates, vb, p, q, include_bias):
    xp, r, last = net.xp, q / p, len(net.weights) - 1
    sums, dsums = [], []
    for l, (W, b, dm) in enumerate(zip(net.weights, net.biases, rates)):
        s, ds = _abs_pow(W, p, xp).sum(axis=1), dm.sum(axis=1)
        if include_bias and l < last:
            s, ds = s + _abs_pow(b, p, xp), ds + _dabs_p(b, p, xp) * vb[l]
        sums.append(s)
        dsums.append(ds)
    pw = _power_of_sums
    return [r * pw(sums[k - 1], r - 1, xp) * dsums[k - 1] - pw(sums[k], r - 1, xp) @ rates[k]
            - ((r - 1) * pw(sums[k], r - 2, xp) * dsums[k]) @ _abs_pow(net.weights[k], p, xp)
            for k in range(1, len(net.weights))]


@dataclass
class FlowResult:
    """A trajectory of :func:`integrate_flow`, recorded every ``record_every`` steps.

    ``gaps[r]`` concatenates ``Delta_i`` of eq. (24) over all hidden units at ``times[r]`` (with
    frozen zero hidden biases this is eq. 32); ``loss`` is the regularised loss ``L_lambda``
    (eq. 33), ``norm`` is ``sum |W|^p`` and ``gamma`` the imbalance (eq. 20).
    """
    times: np.ndarray
    gaps: np.ndarray
    loss: np.ndarray
    norm: np.ndarray
    gamma: np.ndarray
    net: LayeredNet


def _axpy(net, velocity, h):
    """The network ``net + h * velocity`` (a new one)."""
    vW, vb = velocity
    return LayeredNet._trusted([W + h * v for W, v in zip(net.weights, vW)],
                               [b + h * v for b, v in zip(net.biases, vb)], net.xp)


def integrate_flow(net: LayeredNet, X, y, p: float, t_end: float, *, dt: float = 1e-2,
                   weight_decay: float = 0.0, loss: str = "log", train_hidden_biases: bool = True,
                   record_every: int = 1, q: float | None = None) -> FlowResult:
    """Integrate the flow of :func:`flow_velocity` from ``t = 0`` to ``t_end`` by classical RK4
    with fixed step ``dt`` (the last step is shortened to land on ``t_end``).

    With ``q != p`` it is the l_{p,q} flow, and the records are its own: the gaps of
    :func:`lpq_balance_gaps` (biases counted where they flow), ``L + (lambda/q) ||W||_{p,q}^q``,
    ``||W||_{p,q}^q`` and the l_{p,q} imbalance ``max |T_k - S_k| / (T_k + S_k)``.

    A fixed step keeps the error analysis simple: RK4's local error is ``O(dt^5)`` where the loss
    is smooth. At a ReLU kink the velocity jumps, and the step that crosses it errs by ``O(dt)``
    times the jump. The input is not modified.
    """
    p = check_p(p)
    q = check_q(q, p)
    weight_decay = _check_rate("weight_decay", weight_decay)
    t_end = real(t_end, "t_end", low=0)
    dt = real(dt, "dt", low=0, low_open=True)
    record_every = integer(record_every, "record_every", low=1)
    train_hidden_biases = switch(train_hidden_biases, "train_hidden_biases")
    n_steps = max(1, math.ceil(t_end / dt - 1e-9)) if t_end > 0 else 0

    def velocity(n):
        return flow_velocity(n, X, y, p, weight_decay=weight_decay, loss=loss,
                             train_hidden_biases=train_hidden_biases, q=q)

    if q == p:
        def measures(n):
            return balance_gaps(n, p), pnorm(n, p), imbalance(n, p)
    else:
        def measures(n):
            return (lpq_balance_gaps(n, p, q, include_bias=train_hidden_biases), lpq_norm(n, p, q),
                    lpq_imbalance(n, p, q))

    records = {"times": [], "gaps": [], "loss": [], "norm": [], "gamma": []}

    def record(n, t):
        value = float(loss_and_grads(n, X, y, loss)[0])
        gaps, norm, gamma = measures(n)
        records["times"].append(t)
        records["gaps"].append(np.concatenate([to_numpy(g) for g in gaps]))
        records["loss"].append(value + weight_decay * norm / q)
        records["norm"].append(norm)
        records["gamma"].append(gamma)
        if not math.isfinite(value):
            raise FloatingPointError(f"integrate_flow: non-finite loss at t = {t:g}; reduce dt")

    current, t = net.copy(), 0.0
    record(current, t)
    for step in range(1, n_steps + 1):
        h = min(dt, t_end - t)
        k1 = velocity(current)
        k2 = velocity(_axpy(current, k1, h / 2))
        k3 = velocity(_axpy(current, k2, h / 2))
        k4 = velocity(_axpy(current, k3, h))
        weights = [W + h / 6 * (a + 2 * b + 2 * c + d)
                   for W, a, b, c, d in zip(current.weights, k1[0], k2[0], k3[0], k4[0])]
        biases = [B + h / 6 * (a + 2 * b + 2 * c + d)
                  for B, a, b, c, d in zip(current.biases, k1[1], k2[1], k3[1], k4[1])]
        current = LayeredNet._trusted(weights, biases, net.xp)
        t = step * dt if step < n_steps else t_end
        if step % record_every == 0 or step == n_steps:
            record(current, t)
    return FlowResult(times=np.array(records["times"]), gaps=np.array(records["gaps"]),
                      loss=np.array(records["loss"]), norm=np.array(records["norm"]),
                      gamma=np.array(records["gamma"]), net=current)
