"""The layered network: weights, biases, the forward pass, and the paper's initialisation.

``weights[l]`` has shape ``(n_{l+1}, n_l)`` and maps layer ``l`` to layer ``l+1``;
hidden layers (ReLU) are ``1 .. L-1``, the output layer ``L`` is linear (eq. 2).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .backend import array_module, asarray, default_backend
from .checks import float_dtype, integer, plain_array, real

__all__ = ["LayeredNet", "he_init", "ARCHITECTURES", "check_p", "check_inputs"]

#: The paper's three networks (sections 2.4 and 4.1), 200 inputs and 10 outputs, 3750 hidden units
#: each; "n-layer" counts weight matrices. The 7-layer widths are the published ones (Saul, TMLR
#: 2023): the preprint's text drops one 500, leaving six matrices and 3250 units (a slip; see the ledger).
ARCHITECTURES: dict[str, tuple[int, ...]] = {
    "3-layer": (200, 2500, 1250, 10),
    "5-layer": (200, 2000, 1000, 500, 250, 10),
    "7-layer": (200, 1000, 750, 750, 500, 500, 250, 10),
}

_FLOAT_KINDS = ("float32", "float64")


def check_p(p) -> float:
    """Validate the norm exponent: a finite real number ``p > 0``."""
    p = real(p, "p", finite=False)
    if not math.isfinite(p) or p <= 0:
        raise ValueError(f"p must be finite and > 0, got {p}")
    return p


def _check_array(a, name: str, xp, ndim: int):
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(a).__name__}")
    plain_array(a, name)
    if a.dtype.name not in _FLOAT_KINDS:
        raise TypeError(f"{name}: dtype {a.dtype.name} is not supported; use float32 or float64")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(a.shape)}")
    if not bool(xp.isfinite(a).all()):
        bad = int((~xp.isfinite(a)).sum())
        raise ValueError(f"{name}: {bad} non-finite entries (NaN or inf)")


def check_inputs(net, X, where: str, *, allow_empty: bool = False):
    """Inputs ``X`` for ``net``: a plain 2-D array on its backend, ``(n >= 1, n_0)`` (``n = 0`` too
    with ``allow_empty``: the forward pass of no examples; a loss of nothing stays an error), every
    entry finite (NaN or inf would flow through the ReLUs into every output) and inside the range of
    the network's dtype (a float64 ``1e300`` cast to float32 is inf)."""
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        raise TypeError(f"{where}: expected an array, got {type(X).__name__}")
    plain_array(X, where)
    array_module(X, net.weights[0], where=f"{where} and the network")
    if X.ndim != 2 or X.shape[1] != net.sizes[0]:
        raise ValueError(f"{where} must have shape (batch, {net.sizes[0]}), got {tuple(X.shape)}")
    if X.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{where} is empty (0 examples)")
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{where}: dtype {X.dtype} is not a real dtype")
    if X.dtype.kind == "f" and not bool(net.xp.isfinite(X).all()):
        bad = int((~net.xp.isfinite(X)).sum())
        raise ValueError(f"{where} has {bad} non-finite entries (NaN or inf)")
    if X.size and X.dtype.kind in "fiu" and X.dtype.itemsize > net.dtype.itemsize:
        top = float(net.xp.abs(X).max())
        limit = float(np.finfo(net.dtype).max)
        if top > limit:
            bad = int((net.xp.abs(X) > limit).sum())
            raise ValueError(f"{where} has {bad} entries beyond what the network's {net.dtype} holds "
                             f"(|x| up to {top:.3g} > {limit:.3g}); they would be inf in {net.dtype}")


class LayeredNet:
    """A feedforward network with ReLU hidden layers and a linear output layer.

    Parameters
    ----------
    weights : sequence of 2-D arrays, ``weights[l].shape == (n_{l+1}, n_l)``, at least two.
    biases : sequence of 1-D arrays ``(n_{l+1},)``, or None for zeros.

    All arrays must live on one backend (NumPy or CuPy) and share one float dtype.
    Bad input raises ``ValueError``/``TypeError`` naming the layer and the problem.
    """

    __slots__ = ("weights", "biases", "xp")

    def __init__(self, weights: Sequence, biases: Sequence | None = None):
        weights = list(weights)
        if len(weights) < 2:
            raise ValueError(f"a LayeredNet needs at least two weight matrices (one hidden layer); "
                             f"got {len(weights)}")
        if biases is not None:
            biases = list(biases)
            if len(biases) != len(weights):
                raise ValueError(f"got {len(weights)} weight matrices but {len(biases)} bias vectors")
        xp = array_module(*weights, *(biases or []), where="LayeredNet")
        dtype = None
        for l, W in enumerate(weights):
            _check_array(W, f"weights[{l}]", xp, 2)
            dtype = dtype or W.dtype
            if W.dtype != dtype:
                raise TypeError(f"weights[{l}]: dtype {W.dtype} differs from weights[0]'s {dtype}")
            if 0 in W.shape:
                raise ValueError(f"weights[{l}]: shape {tuple(W.shape)} has a zero-width layer; every "
                                 f"layer needs at least one unit (drop the empty layer instead)")
            if l and W.shape[1] != weights[l - 1].shape[0]:
                raise ValueError(f"weights[{l}]: shape {tuple(W.shape)} does not chain: layer {l} has "
                                 f"{weights[l - 1].shape[0]} units (rows of weights[{l - 1}]), "
                                 f"but weights[{l}] has {W.shape[1]} columns")
        if biases is None:
            biases = [xp.zeros(W.shape[0], dtype=dtype) for W in weights]
        for l, b in enumerate(biases):
            _check_array(b, f"biases[{l}]", xp, 1)
            if b.dtype != dtype:
                raise TypeError(f"biases[{l}]: dtype {b.dtype} differs from the weights' {dtype}")
            if b.shape[0] != weights[l].shape[0]:
                raise ValueError(f"biases[{l}]: length {b.shape[0]} != {weights[l].shape[0]} units "
                                 f"in layer {l + 1}")
        self.weights, self.biases, self.xp = weights, biases, xp

    @classmethod
    def _trusted(cls, weights, biases, xp):
        """Build without validation, for arrays gaugelit made itself (hot loops)."""
        net = cls.__new__(cls)
        net.weights, net.biases, net.xp = list(weights), list(biases), xp
        return net

    @property
    def sizes(self) -> tuple[int, ...]:
        """Units per layer, input first: ``(n_0, n_1, ..., n_L)``."""
        return (int(self.weights[0].shape[1]),) + tuple(int(W.shape[0]) for W in self.weights)

    @property
    def dtype(self):
        return self.weights[0].dtype

    @property
    def n_hidden_layers(self) -> int:
        return len(self.weights) - 1

    def forward(self, X):
        """Outputs for inputs ``X`` of shape ``(batch, n_0)``: ReLU hidden layers, linear output."""
        check_inputs(self, X, "forward: X", allow_empty=True)
        h = X.astype(self.dtype, copy=False)
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ W.T + b
            if l < len(self.weights) - 1:
                h = self.xp.maximum(h, 0)
        return h

    __call__ = forward

    def copy(self) -> "LayeredNet":
        return LayeredNet._trusted([W.copy() for W in self.weights],
                                   [b.copy() for b in self.biases], self.xp)

    def to(self, xp) -> "LayeredNet":
        """This network on backend ``xp`` (``numpy`` or ``cupy``)."""
        return LayeredNet._trusted([asarray(W, xp) for W in self.weights],
                                   [asarray(b, xp) for b in self.biases], xp)

    def __repr__(self) -> str:
        return f"LayeredNet(sizes={self.sizes}, dtype={self.dtype}, backend={self.xp.__name__})"


def he_init(sizes: Sequence[int], seed: int = 0, dtype="float32", xp=None) -> LayeredNet:
    """The paper's initialisation: zero biases, weights ``N(0, 2 / fan_in)`` (He et al., 2015).

    The weights are drawn on the host with NumPy's PCG64 and then moved to the backend
    (``xp``, default :func:`~gaugelit.backend.default_backend`), so a seed gives the same
    network on the CPU and the GPU.
    """
    sizes = [integer(n, f"sizes[{i}]", low=1) for i, n in enumerate(sizes)]
    if len(sizes) < 3:
        raise ValueError(f"sizes must list at least three positive layer widths, got {sizes}")
    dtype = float_dtype(dtype)
    seed = integer(seed, "seed", low=0)
    xp = xp or default_backend()
    rng = np.random.default_rng(seed)
    weights = [asarray(rng.standard_normal((m, n)) * math.sqrt(2.0 / n), xp, dtype)
               for n, m in zip(sizes[:-1], sizes[1:])]
    biases = [xp.zeros(m, dtype=dtype) for m in sizes[1:]]
    return LayeredNet._trusted(weights, biases, xp)
