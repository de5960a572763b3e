"""Soft gauge fixing: gauge-adapted coordinates and a penalty that acts only on the scale coordinates.

Everything here is for ``p = 2`` and counts the hidden biases, as in eq. (24).

Generators
    The rescaling of hidden unit ``i`` by ``a_i = exp(eps)`` (eqs. 5-6) moves the parameters, to first
    order in ``eps``, along ``T_i = (w_in, b_i, -w_out)``: its incoming weights and bias grow, its
    outgoing weights shrink, nothing else moves. The network function is constant along ``T_i``.
Gauge-adapted coordinates
    The orbit of a network is ``{rescale(balanced, exp(u))}`` over log-scales ``u``; ``balanced`` is its
    minimum of ``F = sum W^2 + sum_hidden b^2`` (all ``Delta_i = 0``, eq. 24 at p = 2) and ``u`` are the
    network's *log-scale coordinates* relative to it. At a point, the tangent space splits into the
    gauge span ``span{T_i}`` and its orthogonal complement, the *invariant directions*, which leave
    every ``Delta_i`` unchanged to first order (``grad Delta_i = 2 T_i``).
Penalty
    ``S = (mu / 4) sum_i Delta_i^2`` with ``Delta_i = ||w_in||^2 + b_i^2 - ||w_out||^2``. Its gradient is
    ``mu sum_i Delta_i T_i``: it lies in the gauge span, so it leaves the function unchanged to first
    order, and its flow is gradient descent of F along the orbit, ``du_i/dt = -mu Delta_i``.

The Gram matrix ``G_ij = <T_i, T_j>`` couples units of adjacent hidden layers through the weight they
share, ``G_ij = -W_ji^2``; its diagonal is the unit's mass ``||w_in||^2 + b_i^2 + ||w_out||^2``.
Under the penalty's flow ``dDelta/dt = -2 mu G Delta``.

Dense matrices (``rescaling_generators``, ``generator_gram``, ``GaugeCoordinates.projector``, and the
least-squares solve behind ``GaugeCoordinates.gauge_part``) are meant for small networks (theory,
tests, the toy problem); the penalty itself costs a few elementwise passes over the weights.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext as _nullcontext
from dataclasses import dataclass

import numpy as np

from ..core.backend import array_module
from ..core.checks import integer, real
from ..core.gauge import balance_gaps, rescale
from ..core.graph import GaugeGraph
from ..core.network import LayeredNet
from ..solvers import ConvergenceWarning, minnorm_graph

__all__ = ["soft_gauge_penalty", "rescaling_generators", "generator_combination", "generator_inner",
           "generator_gram", "gauge_coordinates", "GaugeCoordinates", "soft_gauge_flow",
           "parameter_vector", "from_parameter_vector"]


def _check_strength(strength) -> float:
    # the shared number check: a 0-d array is a real number too (the README's policy)
    return real(strength, "soft_gauge_penalty: strength", low=0)


def _hidden_vectors(net: LayeredNet, coefficients, where: str):
    """Validate one vector per hidden layer, on the network's backend, cast to its dtype."""
    coefficients = list(coefficients)
    H = len(net.weights) - 1
    if len(coefficients) != H:
        raise ValueError(f"{where}: need one vector per hidden layer ({H}), got {len(coefficients)}")
    out = []
    for k, c in enumerate(coefficients, start=1):
        array_module(c, net.weights[0], where=f"{where}: hidden layer {k} and the network")
        c = net.xp.asarray(c, dtype=net.dtype)
        if c.shape != (net.sizes[k],):
            raise ValueError(f"{where}: hidden layer {k} needs shape ({net.sizes[k]},), got {tuple(c.shape)}")
        out.append(c)
    return out


def generator_combination(net: LayeredNet, coefficients):
    """``sum_i c_i T_i`` as ``(weights, biases)`` shaped like ``net.weights`` and ``net.biases``.

    ``coefficients[k-1]`` holds ``c`` for the units of hidden layer ``k``. This is the first-order
    change of the parameters under ``rescale(net, exp(eps * c))``.
    """
    c = [None] + _hidden_vectors(net, coefficients, "generator_combination") + [None]
    xp = net.xp
    gw, gb = [], []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        g = xp.zeros_like(W)
        if c[l + 1] is not None:              # layer l+1 hidden: W[l] holds its incoming weights
            g += c[l + 1][:, None] * W
        if c[l] is not None:                  # layer l hidden: W[l] holds its outgoing weights
            g -= W * c[l][None, :]
        gw.append(g)
        gb.append(c[l + 1] * b if c[l + 1] is not None else xp.zeros_like(b))
    return gw, gb


def generator_inner(net: LayeredNet, weights, biases):
    """``<T_i, v>`` for every hidden unit, one vector per hidden layer, for a tangent vector
    ``v = (weights, biases)`` shaped like the network's parameters."""
    weights, biases = list(weights), list(biases)
    if len(weights) != len(net.weights) or len(biases) != len(net.biases):
        raise ValueError("generator_inner: weights and biases must have one entry per layer of the network")
    for l, (V, W, v, b) in enumerate(zip(weights, net.weights, biases, net.biases)):
        if tuple(V.shape) != tuple(W.shape) or tuple(v.shape) != tuple(b.shape):
            raise ValueError(f"generator_inner: layer {l} has shapes {tuple(V.shape)}, {tuple(v.shape)}; "
                             f"the network's are {tuple(W.shape)}, {tuple(b.shape)}")
    return [(net.weights[k - 1] * weights[k - 1]).sum(axis=1) + net.biases[k - 1] * biases[k - 1]
            - (net.weights[k] * weights[k]).sum(axis=0) for k in range(1, len(net.weights))]


def soft_gauge_penalty(net: LayeredNet, strength):
    """The soft gauge-fixing penalty ``S = (strength / 4) sum_i Delta_i^2`` and its gradient.

    ``Delta_i = ||w_in,i||^2 + b_i^2 - ||w_out,i||^2`` is the balance gap of eq. (24) at ``p = 2``
    (``gaugelit.balance_gaps(net, 2)``), one per hidden unit. The gradient is
    ``strength * sum_i Delta_i T_i`` with ``T_i = (w_in, b_i, -w_out)`` the rescaling generator of
    unit i, so it never changes the network function to first order. ``S`` is added to the data loss
    as it stands (no division by the number of units or examples).

    Returns ``(value, grad_weights, grad_biases)``: ``value`` is a scalar on the network's backend
    (a NumPy scalar, or a 0-d CuPy array: no host sync, as for ``loss_and_grads``), the gradients
    are lists of arrays shaped like ``net.weights`` and ``net.biases``, on its backend and dtype.
    """
    if not isinstance(net, LayeredNet):
        raise TypeError(f"soft_gauge_penalty: expected a LayeredNet, got {type(net).__name__}")
    mu = _check_strength(strength)
    xp = net.xp
    with np.errstate(over="ignore", invalid="ignore") if xp is np else _nullcontext():
        value, gw, gb = _soft_gauge_penalty(net, mu)
    # One check of everything returned (a host sync; the training loop calls the unchecked form).
    checks = xp.stack([xp.isfinite(value).all()] + [xp.isfinite(g).all() for g in gw]
                      + [xp.isfinite(g).all() for g in gb])
    if not bool(checks.all()):
        ok = [bool(c) for c in checks]
        where = ("the value" if not ok[0] else
                 f"the gradient of weights[{ok[1:1 + len(gw)].index(False)}]" if False in ok[1:1 + len(gw)]
                 else f"the gradient of biases[{ok[1 + len(gw):].index(False)}]")
        raise FloatingPointError(f"soft_gauge_penalty: {where} overflows {net.dtype} (the balance gaps "
                                 f"Delta_i are squared); the weights are too large for this strength")
    return value, gw, gb


def _soft_gauge_penalty(net: LayeredNet, mu: float):
    """:func:`soft_gauge_penalty` without the checks, for the training loop (no host sync)."""
    gaps = balance_gaps(net, 2.0, include_bias=True)
    value = 0.25 * mu * sum((g * g).sum() for g in gaps)
    gw, gb = generator_combination(net, [mu * g for g in gaps])
    return value, gw, gb


def soft_gauge_flow(net: LayeredNet, strength, duration: float, steps: int = 100) -> LayeredNet:
    """Integrate the penalty's gradient flow ``dtheta/dt = -grad S`` alone (no data loss) for
    ``duration`` with ``steps`` classical Runge-Kutta steps; returns a new network.

    The exact flow stays on the gauge orbit (its velocity is a combination of generators), so the
    function is unchanged up to the integrator's error; the gaps obey ``dDelta/dt = -2 mu G Delta``.
    """
    mu = _check_strength(strength)
    duration = real(duration, "soft_gauge_flow: duration", low=0)
    steps = integer(steps, "soft_gauge_flow: steps", low=1)
    h = duration / steps

    def velocity(state):
        _, gw, gb = soft_gauge_penalty(state, mu)
        return [-g for g in gw], [-g for g in gb]

    def moved(state, vel, t):
        return LayeredNet._trusted([W + t * V for W, V in zip(state.weights, vel[0])],
                                   [b + t * v for b, v in zip(state.biases, vel[1])], state.xp)

    state = net.copy()
    for _ in range(steps):
        k1 = velocity(state)
        k2 = velocity(moved(state, k1, h / 2))
        k3 = velocity(moved(state, k2, h / 2))
        k4 = velocity(moved(state, k3, h))
        state = LayeredNet._trusted(
            [W + h / 6 * (a + 2 * b + 2 * c + d) for W, a, b, c, d in zip(state.weights, k1[0], k2[0], k3[0], k4[0])],
            [w + h / 6 * (a + 2 * b + 2 * c + d) for w, a, b, c, d in zip(state.biases, k1[1], k2[1], k3[1], k4[1])],
            state.xp)
    return state


# -- flat parameter vectors (for dense, small-network linear algebra) ------------------------------

def parameter_vector(net: LayeredNet):
    """All parameters in one vector: every weight matrix (row-major), then every bias vector."""
    return net.xp.concatenate([W.ravel() for W in net.weights] + [b.ravel() for b in net.biases])


def from_parameter_vector(net: LayeredNet, vector):
    """Split a vector ordered as :func:`parameter_vector` into ``(weights, biases)`` lists."""
    array_module(vector, net.weights[0], where="from_parameter_vector: vector and the network")
    sizes = [W.size for W in net.weights] + [b.size for b in net.biases]
    if vector.ndim != 1 or vector.shape[0] != sum(sizes):
        raise ValueError(f"from_parameter_vector: expected a vector of length {sum(sizes)}, "
                         f"got shape {tuple(vector.shape)}")
    parts, start = [], 0
    for n in sizes:
        parts.append(vector[start:start + n])
        start += n
    L = len(net.weights)
    weights = [p.reshape(W.shape) for p, W in zip(parts[:L], net.weights)]
    return weights, list(parts[L:])


def _unit_slices(net: LayeredNet):
    """``(layer k, unit i)`` for every hidden unit, in the order of the rows of the dense matrices."""
    return [(k, i) for k in range(1, len(net.weights)) for i in range(net.sizes[k])]


def rescaling_generators(net: LayeredNet):
    """The generators ``T_i`` as rows of a dense ``(n_hidden, n_parameters)`` matrix.

    Rows run over hidden layers, then units; columns follow :func:`parameter_vector`. For small
    networks: the matrix has one row per hidden unit and one column per parameter.
    """
    xp, rows = net.xp, []
    hidden = [net.sizes[k] for k in range(1, len(net.weights))]
    for k, n in enumerate(hidden, start=1):
        for i in range(n):
            c = [xp.zeros(m, dtype=net.dtype) for m in hidden]
            c[k - 1][i] = 1
            gw, gb = generator_combination(net, c)
            rows.append(xp.concatenate([g.ravel() for g in gw] + [g.ravel() for g in gb]))
    return xp.stack(rows)


def generator_gram(net: LayeredNet):
    """``G_ij = <T_i, T_j>`` over hidden units (rows/columns as in :func:`rescaling_generators`).

    Block tridiagonal: the diagonal is the unit's mass ``||w_in||^2 + b_i^2 + ||w_out||^2``; units
    of adjacent hidden layers share one weight and get ``-W_ji^2``; all other pairs are 0.
    """
    xp, L = net.xp, len(net.weights)
    hidden = [net.sizes[k] for k in range(1, L)]
    offsets = np.concatenate([[0], np.cumsum(hidden)]).astype(int)
    G = xp.zeros((offsets[-1], offsets[-1]), dtype=net.dtype)
    for k in range(1, L):
        a, b = offsets[k - 1], offsets[k]
        mass = (net.weights[k - 1] ** 2).sum(axis=1) + net.biases[k - 1] ** 2 + (net.weights[k] ** 2).sum(axis=0)
        G[a:b, a:b] = xp.diag(mass)
        if k + 1 < L:                          # hidden layers k and k+1 share the matrix weights[k]
            c, d = offsets[k], offsets[k + 1]
            G[a:b, c:d] = -(net.weights[k] ** 2).T
            G[c:d, a:b] = -(net.weights[k] ** 2)
    return G


# -- gauge-adapted coordinates -------------------------------------------------------------------

def _balancing_log_factors(net: LayeredNet, tol: float, max_iter: int):
    """Log-factors ``v`` with ``rescale(net, exp(v))`` at the minimum of ``F = sum W^2 + sum_hidden b^2``,
    and the masks of the live units: the minimum-norm gauge at p = 2 of the graph whose hidden
    biases are weights from a constant unit, by the solvers' block method until no factor moves by
    more than ``tol``. Units with no incoming (weight or bias) or no outgoing mass cannot be balanced
    and keep ``v = 0``."""
    graph = GaugeGraph.from_layered(net, hidden_biases=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = minnorm_graph(graph, 2.0, delta=tol, max_iter=max(1, max_iter))
    if not res.converged:
        warnings.warn(f"gauge_coordinates: the balancing sweep did not reach tol={tol:g} in {max_iter} "
                      "sweeps", ConvergenceWarning, stacklevel=3)
    xp, hidden = net.xp, range(1, len(net.weights))
    live = []
    for k in hidden:
        mask = xp.ones(net.sizes[k], dtype=bool)
        mask[res.dead_units[k]] = False
        live.append(mask)
    return [xp.log(res.factors[k]) for k in hidden], live


@dataclass
class GaugeCoordinates:
    """Gauge-adapted coordinates of ``net`` (p = 2, hidden biases counted as in eq. 24).

    ``net == rescale(balanced, [exp(u) for u in log_scales])``: ``balanced`` is the minimum-norm
    point of the orbit (every live unit has ``Delta_i = 0``), ``log_scales`` (one vector per hidden
    layer) are the redundant scale coordinates, and ``gaps`` are the balance gaps ``Delta_i`` at
    ``net``. ``live`` masks the units with incoming and outgoing mass (the others cannot balance
    and keep ``u = 0``). The tangent-space split at ``net`` is :meth:`gauge_part` (in the span of the
    generators) plus :meth:`invariant_part` (orthogonal to every generator).
    """
    net: LayeredNet
    balanced: LayeredNet
    log_scales: list
    gaps: list
    live: list

    def _gauge_coefficients(self, weights, biases):
        r = self.net.xp.concatenate(generator_inner(self.net, weights, biases))
        G = generator_gram(self.net)
        xp = self.net.xp
        c = xp.linalg.lstsq(G, r, rcond=None)[0]     # least squares: G is singular only for dead units
        out, start = [], 0
        for k in range(1, len(self.net.weights)):
            n = self.net.sizes[k]
            out.append(c[start:start + n])
            start += n
        return out

    def gauge_part(self, weights, biases):
        """Orthogonal projection of a tangent vector ``(weights, biases)`` onto ``span{T_i}``."""
        return generator_combination(self.net, self._gauge_coefficients(weights, biases))

    def invariant_part(self, weights, biases):
        """The component of ``(weights, biases)`` orthogonal to every generator ``T_i``."""
        gw, gb = self.gauge_part(weights, biases)
        return [w - g for w, g in zip(weights, gw)], [b - g for b, g in zip(biases, gb)]

    def projector(self):
        """Dense ``(n_parameters, n_parameters)`` projector onto the invariant directions (small nets)."""
        T = rescaling_generators(self.net)
        xp = self.net.xp
        return xp.eye(T.shape[1], dtype=T.dtype) - T.T @ xp.linalg.pinv(T @ T.T) @ T


def gauge_coordinates(net: LayeredNet, *, tol: float | None = None, max_iter: int = 10_000) -> GaugeCoordinates:
    """Split ``net`` into its orbit's balanced point and its log-scale coordinates (see
    :class:`GaugeCoordinates`). For one hidden layer ``u_i = log(I_i / O_i) / 4`` exactly, with
    ``I_i = ||w_in||^2 + b_i^2`` and ``O_i = ||w_out||^2``; deeper networks are balanced by exact
    layer-wise sweeps until the largest log-step is below ``tol`` (default: 100 ulps of the dtype).
    """
    if not isinstance(net, LayeredNet):
        raise TypeError(f"gauge_coordinates: expected a LayeredNet, got {type(net).__name__}")
    tol = 100 * float(np.finfo(np.dtype(str(net.dtype))).eps) if tol is None else \
        real(tol, "gauge_coordinates: tol", low=0, low_open=True)
    v, live = _balancing_log_factors(net, tol, integer(max_iter, "gauge_coordinates: max_iter", low=1))
    balanced = rescale(net, [net.xp.exp(x) for x in v])
    return GaugeCoordinates(net=net, balanced=balanced, log_scales=[-x for x in v],
                            gaps=balance_gaps(net, 2.0, include_bias=True), live=live)
