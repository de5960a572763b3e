"""Gradient flows with magnitude-modulated learning rates (eqs. 22-23 and 34-35), a fixed-step
RK4 integrator for them, and the time derivative of the balance gaps Delta_i (eqs. 24-37).

The flow on a fixed dataset ``(X, y)`` with loss ``L`` (eq. 21) and l_p weight decay (eq. 33) is

    dW/dt = -|W|^{2-p} dL_lambda/dW = -|W|^{2-p} dL/dW - lambda W,
    db/dt = -|b|^{2-p} dL/db                       (biases are not regularised),

where the second form uses ``|W|^{2-p} d/dW (|W|^p / p) = |W|^{2-p} |W|^{p-1} sign W = W``: the
decay term is the same ``-lambda W`` for every ``p``. Output biases always flow; hidden biases flow
(eq. 23) or stay frozen (the setting of Corollary 3.2 and Theorem 3.4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.backend import to_numpy
from ..core.checks import integer, real, switch
from ..core.gauge import balance_gaps, imbalance, pnorm
from ..core.network import LayeredNet, check_p
from .steps import loss_and_grads

__all__ = ["flow_velocity", "balance_rate", "integrate_flow", "FlowResult", "relu_pattern"]


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
                  train_hidden_biases: bool = True):
    """The right-hand side of eqs. (22)-(23) (``weight_decay = 0``) or (34)-(35) at ``net``.

    ``L`` is the mean cost over ``(X, y)`` (eq. 21) computed by
    :func:`gaugelit.training.loss_and_grads` (``loss="log"``, integer labels, or ``"mse"``). Returns
    ``(dW/dt per layer, db/dt per layer)``; frozen hidden biases get a zero velocity.
    """
    p = check_p(p)
    weight_decay = _check_rate("weight_decay", weight_decay)
    train_hidden_biases = switch(train_hidden_biases, "train_hidden_biases")
    xp = net.xp
    _, gw, gb = loss_and_grads(net, X, y, loss)
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


def _dabs_p(theta, p, xp):
    """``d|theta|^p / d theta = p |theta|^{p-1} sign(theta)``, taken as 0 at ``theta = 0`` (where the
    modulated flows above do not move a parameter for ``p < 2``)."""
    mag = xp.abs(theta)
    safe = xp.where(mag > 0, mag, 1)
    return xp.where(mag > 0, p * xp.sign(theta) * safe ** (p - 1), 0)


def balance_rate(net: LayeredNet, velocity, p: float, include_bias: bool = True):
    """``dDelta_i/dt`` along ``velocity = (dW/dt, db/dt)``, per hidden layer (eqs. 25-27, 36).

    By the chain rule, ``dDelta_i/dt = p |b_i|^{p-1} sign(b_i) db_i/dt
    + sum_j p |W_ij|^{p-1} sign(W_ij) dW_ij/dt - sum_j p |W_ji|^{p-1} sign(W_ji) dW_ji/dt``.
    With ``include_bias=False`` the bias term is left out (eq. 32).
    """
    p = check_p(p)
    vW, vb = velocity
    if len(vW) != len(net.weights) or len(vb) != len(net.biases):
        raise ValueError("balance_rate: velocity must hold one array per weight matrix and bias vector")
    xp = net.xp
    rates = [_dabs_p(W, p, xp) * v for W, v in zip(net.weights, vW)]
    out = []
    for k in range(1, len(net.weights)):
        rate = rates[k - 1].sum(axis=1) - rates[k].sum(axis=0)
        if include_bias:
            rate = rate + _dabs_p(net.biases[k - 1], p, xp) * vb[k - 1]
        out.append(rate)
    return out


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
                   record_every: int = 1) -> FlowResult:
    """Integrate the flow of :func:`flow_velocity` from ``t = 0`` to ``t_end`` by classical RK4
    with fixed step ``dt`` (the last step is shortened to land on ``t_end``).

    A fixed step keeps the error analysis simple: RK4's local error is ``O(dt^5)`` where the loss
    is smooth; ReLU kinks crossed during a step cost ``O(dt^2)`` each. The input is not modified.
    """
    p = check_p(p)
    weight_decay = _check_rate("weight_decay", weight_decay)
    t_end = real(t_end, "t_end", low=0)
    dt = real(dt, "dt", low=0, low_open=True)
    record_every = integer(record_every, "record_every", low=1)
    train_hidden_biases = switch(train_hidden_biases, "train_hidden_biases")
    n_steps = max(1, math.ceil(t_end / dt - 1e-9)) if t_end > 0 else 0

    def velocity(n):
        return flow_velocity(n, X, y, p, weight_decay=weight_decay, loss=loss,
                             train_hidden_biases=train_hidden_biases)

    records = {"times": [], "gaps": [], "loss": [], "norm": [], "gamma": []}

    def record(n, t):
        value = float(loss_and_grads(n, X, y, loss)[0])
        norm = pnorm(n, p)
        records["times"].append(t)
        records["gaps"].append(np.concatenate([to_numpy(g) for g in balance_gaps(n, p)]))
        records["loss"].append(value + weight_decay * norm / p)
        records["norm"].append(norm)
        records["gamma"].append(imbalance(n, p))
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
