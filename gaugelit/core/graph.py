"""The gauge of a feedforward graph: unit groups, the weight blocks between them, free and fixed groups.

The paper states its gauge for one strictly lower-triangular ``W`` over all units (eq. 2): any unit
may feed any later one. A :class:`GaugeGraph` is that ``W`` cut into *groups* of units and the
*blocks* of weights between two groups. A group is

- **free**: its units may be rescaled, ``W_ij <- W_ij a_i / a_j`` on every block in and out of it;
- **fixed**: its units keep ``a = 1``; ``reason`` says why (an input, an output, a unit feeding a
  sigmoid, ...).

Units that an addition joins (a residual stream) are *one* group: a weight-free identity edge
``x -> x + f(x)`` allows only ``a_x = a_{x + f(x)}``. A block may therefore start and end in the same
group (a residual stream read by one layer and written by a later one is a cycle of groups, not of
units); F stays ``(1/p) sum |W_ij|^p (a_i/a_j)^p`` and stays convex in ``log a``.

A block's weights have shape ``(n_dst, n_src, k)``: the ``k`` entries that one pair of units shares
(a convolution's kernel, the spatial positions of one channel after flatten), so the unit-level
``M = sum_k |W|^p`` of a convolution is per channel. A chain (:class:`~gaugelit.network.LayeredNet`)
is the special case of one block per layer (:meth:`GaugeGraph.from_layered`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backend import array_module
from .gauge import _rescale_trusted
from .network import LayeredNet

__all__ = ["GaugeGraph", "Group", "Block", "DenseNet"]


@dataclass
class Group:
    """``size`` units that share one kind of factor; ``free`` or fixed (with ``reason``)."""
    name: str
    size: int
    free: bool = True
    reason: str | None = None


@dataclass
class Block:
    """Weights from group ``src`` to group ``dst``, shape ``(n_dst, n_src, k)``."""
    src: int
    dst: int
    weight: object = field(repr=False)
    name: str = ""


class GaugeGraph:
    """Unit groups and the weight blocks between them; see the module docstring.

    ``rescaled`` (optional) maps the solver's factors (one array per group, ones for fixed groups)
    to the rescaled network the result carries as ``.net``; graphs built by :meth:`from_layered`
    and :meth:`from_dense` set it.
    """

    def __init__(self):
        self.groups: list[Group] = []
        self.blocks: list[Block] = []
        self.rescaled = None
        self.xp = None

    # -- building --------------------------------------------------------------------------------
    def add_group(self, name: str, size: int, free: bool = True, reason: str | None = None) -> int:
        size = int(size)
        if size < 1:
            raise ValueError(f"group {name!r}: size must be >= 1, got {size}")
        if not free and not reason:
            raise ValueError(f"group {name!r}: a fixed group needs a reason")
        self.groups.append(Group(name, size, bool(free), reason))
        return len(self.groups) - 1

    def fix(self, g: int, reason: str):
        """Make group ``g`` fixed (``a = 1``); the first reason given is kept."""
        grp = self.groups[g]
        if grp.free:
            grp.free, grp.reason = False, reason

    def add_block(self, src: int, dst: int, weight, name: str = "") -> int:
        """Add weights from group ``src`` to group ``dst``: ``weight`` of shape ``(n_dst, n_src)``
        or ``(n_dst, n_src, k)``, float32 or float64, NumPy or CuPy (one backend per graph)."""
        name = name or f"block {len(self.blocks)}"
        for g, role in ((src, "src"), (dst, "dst")):
            if not (isinstance(g, (int, np.integer)) and 0 <= g < len(self.groups)):
                raise ValueError(f"{name}: {role} {g!r} is not a group of this graph")
        xp = array_module(weight, where=name)
        if self.xp is None:
            self.xp = xp
        elif xp is not self.xp:
            raise TypeError(f"{name}: NumPy and CuPy blocks are mixed in one graph")
        if not hasattr(weight, "ndim") or weight.ndim not in (2, 3):
            raise ValueError(f"{name}: weight must be a 2-D or 3-D array, got {type(weight).__name__} "
                             f"with shape {getattr(weight, 'shape', None)}")
        if weight.dtype.name not in ("float32", "float64"):
            raise TypeError(f"{name}: dtype {weight.dtype} is not supported; use float32 or float64")
        if weight.ndim == 2:
            weight = weight[:, :, None]
        want = (self.groups[dst].size, self.groups[src].size)
        if tuple(weight.shape[:2]) != want:
            raise ValueError(f"{name}: weight shape {tuple(weight.shape[:2])} (+ kernel) does not match "
                             f"(n_dst, n_src) = {want} of groups {self.groups[dst].name!r} <- "
                             f"{self.groups[src].name!r}")
        if self.blocks and weight.dtype != self.blocks[0].weight.dtype:
            raise TypeError(f"{name}: dtype {weight.dtype} differs from the first block's "
                            f"{self.blocks[0].weight.dtype}")
        if not bool(xp.isfinite(weight).all()):
            raise ValueError(f"{name}: weights must be finite")
        self.blocks.append(Block(int(src), int(dst), weight, name))
        return len(self.blocks) - 1

    @property
    def dtype(self):
        return self.blocks[0].weight.dtype

    def fixed_units(self):
        """``[(group name, size, reason), ...]`` for every fixed group."""
        return [(g.name, g.size, g.reason) for g in self.groups if not g.free]

    def check(self):
        if not self.blocks:
            raise ValueError("the graph has no weight blocks")
        if not any(g.free for g in self.groups):
            raise ValueError("the graph has no free group: nothing to rescale")

    # -- the two ways the paper's networks come -------------------------------------------------
    @classmethod
    def from_layered(cls, net: LayeredNet, *, hidden_biases: bool = False) -> "GaugeGraph":
        """A chain: input group (fixed), one free group per hidden layer, output group (fixed).

        ``hidden_biases``: count the hidden biases in the norm, as eq. (24) does: they are the
        weights from one more fixed group, a constant unit (``b_i`` rescales as ``a_i``, like a
        weight from a unit with ``a = 1``). The graph is then no longer a chain."""
        g = cls()
        sizes = net.sizes
        ids = [g.add_group("input", sizes[0], free=False, reason="network input")]
        ids += [g.add_group(f"hidden {k}", n) for k, n in enumerate(sizes[1:-1], start=1)]
        ids.append(g.add_group("output", sizes[-1], free=False, reason="network output"))
        # a LayeredNet's weights were checked when it was made: no pass over them again here
        g.blocks = [Block(ids[l], ids[l + 1], W[:, :, None], name=f"weights[{l}]") for l, W in enumerate(net.weights)]
        g.xp = net.xp
        if hidden_biases:
            one = g.add_group("bias", 1, free=False, reason="the constant input of the biases")
            g.blocks += [Block(one, ids[k], b[:, None, None], name=f"biases[{k - 1}]")
                         for k, b in enumerate(net.biases[:-1], start=1)]
        g.rescaled = lambda factors: _rescale_trusted(net, [factors[k] for k in ids[1:-1]])
        return g

    @classmethod
    def from_dense(cls, net: "DenseNet") -> "GaugeGraph":
        """The paper's form (eq. 2): one strictly lower-triangular ``W`` over all units.

        Hidden units are grouped by depth (the longest path from a non-hidden unit): no weight joins
        two units of the same depth, so each group is minimised exactly in one step. All non-hidden
        units form one fixed group. Every nonzero ``W_ij`` lies in exactly one block.
        """
        xp, W = net.xp, net.W
        n = W.shape[0]
        hidden = net.hidden_mask()
        Wh = xp.asarray(W != 0)
        depth = np.zeros(n, dtype=np.int64)
        nz = np.asarray(Wh.get() if hasattr(Wh, "get") else Wh)
        for i in range(n):                           # units are in feedforward order (eq. 2)
            if hidden[i]:
                preds = np.nonzero(nz[i, :i] & hidden[:i])[0]
                depth[i] = 1 + (depth[preds].max() if preds.size else 0)
        g = cls()
        fixed_idx = np.nonzero(~hidden)[0]
        members = [fixed_idx]
        g.add_group("inputs and outputs", len(fixed_idx), free=False, reason="network input or output")
        for d in range(1, int(depth.max()) + 1 if hidden.any() else 1):
            idx = np.nonzero(hidden & (depth == d))[0]
            if idx.size:
                members.append(idx)
                g.add_group(f"depth {d}", len(idx))
        for a, rows in enumerate(members):
            for b, cols in enumerate(members):
                sub = nz[np.ix_(rows, cols)]
                if sub.any():
                    g.add_block(b, a, W[xp.asarray(rows)][:, xp.asarray(cols)], name=f"W[depth {a}, depth {b}]")

        def rescaled(factors):
            a = xp.ones(n, dtype=W.dtype)
            for idx, f in zip(members, factors):
                a[xp.asarray(idx)] = f
            return DenseNet(W * a[:, None] / a[None, :], net.b * a, net.n_in, net.n_out)
        g.rescaled = rescaled
        g.members = members
        return g


@dataclass
class DenseNet:
    """The paper's network (eq. 2): units ``0..n-1`` in feedforward order, ``W`` strictly lower
    triangular, the first ``n_in`` units inputs, the last ``n_out`` outputs (linear), the rest
    hidden ReLU units: ``h_i = relu(sum_{j<i} W_ij h_j + b_i)``."""
    W: object
    b: object
    n_in: int
    n_out: int

    def __post_init__(self):
        xp = self.xp
        n = self.W.shape[0] if getattr(self.W, "ndim", 0) == 2 else -1
        if n < 0 or self.W.shape != (n, n):
            raise ValueError(f"DenseNet: W must be square, got shape {getattr(self.W, 'shape', None)}")
        if bool(xp.any(xp.triu(self.W) != 0)):
            raise ValueError("DenseNet: W must be strictly lower triangular (feedforward, eq. 2)")
        if self.b.shape != (n,):
            raise ValueError(f"DenseNet: b must have shape ({n},), got {tuple(self.b.shape)}")
        if not (1 <= self.n_in and 1 <= self.n_out and self.n_in + self.n_out < n):
            raise ValueError(f"DenseNet: need n_in, n_out >= 1 and some hidden units; got n={n}, "
                             f"n_in={self.n_in}, n_out={self.n_out}")

    @property
    def xp(self):
        return array_module(self.W)

    def hidden_mask(self):
        n = self.W.shape[0]
        mask = np.zeros(n, dtype=bool)
        mask[self.n_in:n - self.n_out] = True
        return mask

    def forward(self, X):
        xp, W, n = self.xp, self.W, self.W.shape[0]
        h = xp.zeros((X.shape[0], n), dtype=W.dtype)
        h[:, :self.n_in] = X
        for i in range(self.n_in, n):
            z = h[:, :i] @ W[i, :i] + self.b[i]
            h[:, i] = z if i >= n - self.n_out else xp.maximum(z, 0)
        return h[:, n - self.n_out:]

    __call__ = forward
