"""SymPy builders for the paper's derivations: a small network with symbolic weights, the gauge
vector (eq. 4), rescalings (eqs. 5-6), the objective F (eq. 10), the auxiliary function G (eq. 13),
the balance gaps (eqs. 24, 32) and a ReLU forward pass (eq. 2).

The network is written in the paper's notation: units ``1..n`` numbered inputs first, one ``n x n``
strictly lower-triangular weight matrix ``W`` (``W[i, j]`` carries unit ``j`` into unit ``i``) and a
bias vector ``b``. Only the edges of a layered architecture carry symbols; every other entry is 0.
Matrix indices are 0-based (SymPy's), symbol names are 1-based (the paper's): ``W[2, 0]`` is
``W_{3,1}``. SymPy is imported here, so ``import gaugelit`` does not need it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import sympy as sp

from .core.backend import to_numpy
from .core.gauge import pnorm, rescale, unit_norms
from .core.network import LayeredNet, check_p

__all__ = ["SymbolicNet", "symbolic_net", "gauge_vector", "rescaled", "relu", "gates", "forward",
           "objective_F", "auxiliary_G", "fan_in", "fan_out", "balance_gap", "sign_cases", "factor_values",
           "objective_F_value", "gradient_F_value", "auxiliary_G_value"]


@dataclass(frozen=True)
class SymbolicNet:
    """A layered network in the paper's notation (section 2.1).

    ``W`` is ``n x n`` and strictly lower triangular, ``b`` has length ``n`` (zero at the inputs);
    ``layers[l]`` lists the 0-based unit indices of layer ``l``.
    """
    sizes: tuple
    W: sp.Matrix
    b: sp.Matrix
    layers: tuple

    @property
    def n(self) -> int:
        return self.W.shape[0]

    @property
    def inputs(self) -> list:
        return list(self.layers[0])

    @property
    def hidden(self) -> list:
        return [i for layer in self.layers[1:-1] for i in layer]

    @property
    def outputs(self) -> list:
        return list(self.layers[-1])

    @property
    def edges(self) -> list:
        """``(i, j)`` for every weight ``W_ij`` that carries a symbol."""
        return [(i, j) for i in range(self.n) for j in range(self.n) if self.W[i, j] != 0]

    def weight_symbols(self) -> list:
        return [self.W[i, j] for i, j in self.edges]

    def bias_symbols(self) -> list:
        return [self.b[i] for i in range(self.n) if self.b[i] != 0]

    def values(self, net: LayeredNet) -> dict:
        """The substitution ``{symbol: value}`` that turns this network into the numeric ``net``."""
        if tuple(net.sizes) != tuple(self.sizes):
            raise ValueError(f"values: the network has sizes {net.sizes}, the symbolic one {self.sizes}")
        subs = {}
        for l, (Wl, bl) in enumerate(zip(net.weights, net.biases)):
            Wl, bl = to_numpy(Wl), to_numpy(bl)
            for r, i in enumerate(self.layers[l + 1]):
                subs[self.b[i]] = float(bl[r])
                for c, j in enumerate(self.layers[l]):
                    subs[self.W[i, j]] = float(Wl[r, c])
        return subs


def symbolic_net(sizes: Sequence[int], weight: str = "W", bias: str = "b") -> SymbolicNet:
    """A layered network with real symbols ``W_{i,j}`` on its edges and ``b_i`` at non-input units."""
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 3 or min(sizes) < 1:
        raise ValueError(f"symbolic_net: need at least three positive layer widths, got {sizes}")
    n = sum(sizes)
    if n > 40:
        raise ValueError(f"symbolic_net: {n} units is too many for symbolic work (at most 40)")
    starts = np.cumsum((0,) + sizes)
    layers = tuple(tuple(range(starts[l], starts[l + 1])) for l in range(len(sizes)))
    W = sp.zeros(n, n)
    b = sp.zeros(n, 1)
    for l in range(1, len(sizes)):
        for i in layers[l]:
            b[i] = sp.Symbol(f"{bias}_{i + 1}", real=True)
            for j in layers[l - 1]:
                W[i, j] = sp.Symbol(f"{weight}_{{{i + 1},{j + 1}}}", real=True)
    return SymbolicNet(sizes=sizes, W=W, b=b, layers=layers)


def gauge_vector(snet: SymbolicNet, name: str = "a") -> sp.Matrix:
    """The gauge transformation of eq. (4): a positive symbol ``a_i`` at each hidden unit, 1 elsewhere."""
    a = sp.ones(snet.n, 1)
    for i in snet.hidden:
        a[i] = sp.Symbol(f"{name}_{i + 1}", positive=True)
    return a


def rescaled(snet: SymbolicNet, a) -> tuple:
    """Eqs. (5)-(6): ``W_ij a_i / a_j`` and ``b_i a_i``. Returns ``(W', b')``."""
    W = sp.Matrix(snet.n, snet.n, lambda i, j: snet.W[i, j] * a[i] / a[j])
    b = sp.Matrix(snet.n, 1, lambda i, _: snet.b[i] * a[i])
    return W, b


def relu(z):
    """``max(0, z)`` written as ``(z + |z|) / 2``: SymPy pulls positive factors out of ``Abs``, so
    the homogeneity of eq. (3), ``relu(a z) = a relu(z)`` for ``a > 0``, holds on sight."""
    return (z + sp.Abs(z)) / 2


def gates(snet: SymbolicNet, name: str = "s") -> dict:
    """A symbol ``s_i`` per hidden unit for the ReLU's slope ``[z_i > 0]`` at a fixed input.

    Away from the kinks (a null set of weights) each ReLU acts as ``z -> s_i z`` with ``s_i`` in
    ``{0, 1}`` locally constant, and ``s_i`` is unchanged by positive rescalings
    (``sign(a z) = sign(z)``): on such a region ``f`` is a polynomial in the weights, which SymPy
    differentiates and simplifies at once, where nested ``Abs`` would take minutes.
    """
    return {i: sp.Symbol(f"{name}_{i + 1}", nonnegative=True) for i in snet.hidden}


def forward(snet: SymbolicNet, x, W=None, b=None, gate=None) -> sp.Matrix:
    """Eq. (2): ``h_i = g_i(sum_j W_ij h_j + b_i)`` in unit order, ReLU hidden and linear output units.

    ``x`` is a sequence of input expressions; ``W``, ``b`` default to the network's own symbols.
    Hidden units apply :func:`relu`, or ``h_i = s_i z_i`` with ``s = gate`` (see :func:`gates`).
    Returns the outputs ``f(x)`` as a column matrix.
    """
    W = snet.W if W is None else W
    b = snet.b if b is None else b
    x = list(x)
    if len(x) != len(snet.inputs):
        raise ValueError(f"forward: need {len(snet.inputs)} inputs, got {len(x)}")
    h = [None] * snet.n
    for k, i in enumerate(snet.inputs):
        h[i] = x[k]
    hidden = set(snet.hidden)
    for layer in snet.layers[1:]:
        for i in layer:
            z = sum((W[i, j] * h[j] for j in range(i) if W[i, j] != 0), sp.Integer(0)) + b[i]
            h[i] = z if i not in hidden else (relu(z) if gate is None else gate[i] * z)
    return sp.Matrix([h[i] for i in snet.outputs])


def _terms(snet: SymbolicNet, p):
    return [(i, j, sp.Abs(snet.W[i, j]) ** p) for i, j in snet.edges]


def objective_F(snet: SymbolicNet, a, p) -> sp.Expr:
    """Eq. (10): ``F(a) = (1/p) sum_ij |W_ij|^p (a_i / a_j)^p``."""
    return sum((m * (a[i] / a[j]) ** p for i, j, m in _terms(snet, p)), sp.Integer(0)) / p


def auxiliary_G(snet: SymbolicNet, a, p) -> sp.Expr:
    """Eq. (13): ``G(a) = (1/2p) sum_ij |W_ij|^p (a_i^{2p} + a_j^{-2p})``."""
    return sum((m * (a[i] ** (2 * p) + a[j] ** (-2 * p)) for i, j, m in _terms(snet, p)),
               sp.Integer(0)) / (2 * p)


def fan_in(W, i: int, p) -> sp.Expr:
    """``sum_j |W_ij|^p`` over the incoming weights of unit ``i``."""
    return sum((sp.Abs(W[i, j]) ** p for j in range(W.shape[1]) if W[i, j] != 0), sp.Integer(0))


def fan_out(W, i: int, p) -> sp.Expr:
    """``sum_j |W_ji|^p`` over the outgoing weights of unit ``i``."""
    return sum((sp.Abs(W[j, i]) ** p for j in range(W.shape[0]) if W[j, i] != 0), sp.Integer(0))


def balance_gap(W, b, i: int, p, include_bias: bool = True) -> sp.Expr:
    """Eq. (24): ``Delta_i = |b_i|^p + sum_j |W_ij|^p - sum_j |W_ji|^p``; eq. (32) without the bias."""
    gap = fan_in(W, i, p) - fan_out(W, i, p)
    return gap + sp.Abs(b[i]) ** p if include_bias else gap


def sign_cases(expr, symbols) -> list:
    """``expr`` with each real symbol replaced by ``+v`` and by ``-v`` (``v > 0``): ``2^k`` cases.

    SymPy cannot always see through ``sign(w)`` or ``|w|^p`` for a symbolic exponent; an identity
    that holds in every sign case holds for all nonzero ``w``.
    """
    cases = [expr]
    for s in symbols:
        v = sp.Symbol(f"{s.name}_abs", positive=True)
        cases = [c.subs(s, sign * v) for c in cases for sign in (1, -1)]
    return cases


def factor_values(snet: SymbolicNet, a, factors) -> dict:
    """The substitution ``{a_i: value}`` for gaugelit's per-hidden-layer ``factors``."""
    factors = [to_numpy(f) for f in factors]
    if len(factors) != len(snet.layers) - 2:
        raise ValueError(f"factor_values: need {len(snet.layers) - 2} factor vectors, got {len(factors)}")
    subs = {}
    for layer, f in zip(snet.layers[1:-1], factors):
        if len(f) != len(layer):
            raise ValueError(f"factor_values: a layer of {len(layer)} units got {len(f)} factors")
        for i, v in zip(layer, f):
            subs[a[i]] = float(v)
    return subs


# -- numeric counterparts on a LayeredNet, computed from gaugelit's primitives, to check the above --

def _check_factors(net: LayeredNet, factors):
    factors = [to_numpy(f).astype(np.float64) for f in factors]
    if [len(f) for f in factors] != list(net.sizes[1:-1]) or any((f <= 0).any() for f in factors):
        raise ValueError(f"need positive factors for hidden layers of sizes {net.sizes[1:-1]}")
    return factors


def objective_F_value(net: LayeredNet, factors, p: float) -> float:
    """Eq. (10) at ``a = factors``: ``sum |W'|^p / p`` of the rescaled network."""
    p = check_p(p)
    return pnorm(rescale(net, _check_factors(net, factors)), p) / p


def gradient_F_value(net: LayeredNet, factors, p: float) -> list:
    """Eq. (11) at ``a = factors``, per hidden layer: ``(fan-in - fan-out of the rescaled net) / a``."""
    p = check_p(p)
    factors = _check_factors(net, factors)
    norms = unit_norms(rescale(net, factors), p)
    return [(to_numpy(i) - to_numpy(o)) / f for (i, o), f in zip(norms, factors)]


def auxiliary_G_value(net: LayeredNet, factors, p: float) -> float:
    """Eq. (13) at ``a = factors``: ``(1/2p) sum_ij |W_ij|^p (a_i^{2p} + a_j^{-2p})``.

    Grouped by unit: ``a_i^{2p}`` multiplies unit i's fan-in and ``a_j^{-2p}`` unit j's fan-out;
    inputs and outputs have ``a = 1`` and contribute the sums of the first and last ``|W|^p``.
    """
    p = check_p(p)
    factors = _check_factors(net, factors)
    W = [to_numpy(w) for w in net.weights]
    total = float((np.abs(W[0]) ** p).sum() + (np.abs(W[-1]) ** p).sum())
    for (fin, fout), f in zip(unit_norms(net, p), factors):
        total += float((f ** (2 * p) * to_numpy(fin) + f ** (-2 * p) * to_numpy(fout)).sum())
    return total / (2 * p)
