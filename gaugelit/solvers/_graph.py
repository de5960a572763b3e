"""The general state of the solvers: any :class:`~gaugelit.core.graph.GaugeGraph`.

F is ``(1/p) sum_b sum_ij |W^b_ij|^p exp(p (u_i - u_j))`` over the log-factors ``u`` of the free
groups (eq. 10 with ``W`` cut into blocks ``b``). Two groups *interact* when a block joins them;
groups of one colour of a greedy colouring (:func:`colour_groups`, in graph order; odd/even layers
on a chain) do not interact, so a whole colour may take its exact minimiser at once. A group with
a block into itself is not separable. Algorithm 1's proof (the auxiliary function G, eqs. 13-16)
never uses layers, so its update holds on any graph, also for such blocks.

Scale safety: each block is normalised by its largest ``|W|`` and its log-scale ``c_b = p log max|W|``
carried in float64; each free group's log-factors are ``u = t_g + v`` with the common part ``t_g`` in
float64 and ``v`` in the weights' dtype. Every sum that mixes blocks is combined by log-sum-exp, each
part scaled by its own largest entry (:func:`_lse`), so neither ``|W|^p`` nor ``exp(p u)`` is formed
where it could overflow or underflow; the shift step only moves the ``t_g`` and touches no array.
Entries of ``|W/max|^p`` below the smallest normal float are *lost* for the products (checked at the
answer: :meth:`GraphState.lost_entries_matter`), never for the objective, which sums such a block from
its entries' float64 logs. :func:`prebalanced` makes a float64 copy for the extreme gauges in
which entries negligible at the start weigh at the answer.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.gauge import _quiet
from ..core.graph import GaugeGraph
from ._steps import exact_log_factor, halfway, newton_shift

__all__ = ["GraphState", "colour_groups", "prebalanced"]


def colour_groups(graph: GaugeGraph):
    """Greedy colouring of the free groups (in graph order) so that no block joins two groups of one
    colour; returns a list of colour classes (lists of group indices)."""
    free = [g for g, grp in enumerate(graph.groups) if grp.free]
    nbrs = {g: set() for g in free}
    for b in graph.blocks:
        if b.src != b.dst and b.src in nbrs and b.dst in nbrs:
            nbrs[b.src].add(b.dst)
            nbrs[b.dst].add(b.src)
    colour = {}
    for g in free:
        used = {colour[h] for h in nbrs[g] if h in colour}
        colour[g] = next(c for c in range(len(free) + 1) if c not in used)
    classes = [[] for _ in range(max(colour.values()) + 1)]
    for g in free:
        classes[colour[g]].append(g)
    return classes


def _nan_max(a: float, b: float) -> float:
    """``max`` that keeps a NaN (Python's ``max(0.0, nan)`` is 0.0)."""
    return b if (b != b or b > a) else a


def _lse(terms):
    """log sum_k exp(c_k) y_k for scalars c_k and arrays y_k >= 0 (same shape): ``(C, y)``.

    Each term is first scaled by its own largest entry, so ``C`` is the log of the largest part
    that is there: scaled by the largest ``c_k`` alone, a part with a large ``c_k`` and small or zero
    entries (a dead unit's constant products, ``exp(c_k) * 0``) pushed the others' entries below
    the smallest float (issue 22: layers 1e79 apart, p = 3, the block method stalled at gamma 1e-3
    with the objective 2e-5 above the minimum). An entry is then lost only where its sum is beyond
    what a float holds relative to the group's largest, which no ``(C, y)`` form can hold."""
    if not terms:
        return 0.0, None
    parts = []
    for c, y in terms:
        top = float(y.max()) if y.size else 0.0
        if top > 0.0 and math.isfinite(top):
            parts.append((c + math.log(top), y / y.dtype.type(top)))
        elif not top == 0.0:                             # NaN or inf: let the caller see it
            parts.append((c, y))
    if not parts:                                        # every part zero
        return max(c for c, _ in terms), terms[0][1] * 0
    cmax = max(c for c, _ in parts)
    total = None
    for c, y in parts:
        y = y * math.exp(c - cmax)
        total = y if total is None else total + y
    return cmax, total


#: Blocks of at least this many entries, without a kernel axis to sum, keep no ``M`` of their own:
#: :class:`_LazyM` forms ``(|w|/s)^p`` a few rows at a time in every product (issue 23: the
#: solver's ``M`` arrays of a float64 ResNet-50 alone were larger than a float32 copy of its weights).
LAZY_ENTRIES = 1 << 14
_LAZY_CHUNK_BYTES = 1 << 22


class _Scratch:
    """One flat work buffer per dtype, shared by the lazy blocks of a state (a buffer per block
    would hold as much as the stored ``M`` it replaces)."""

    def __init__(self, xp):
        self.xp, self.flat = xp, {}

    def rows(self, n_rows: int, n_cols: int, dtype):
        need = n_rows * n_cols
        flat = self.flat.get(dtype)
        if flat is None or flat.size < need:
            flat = self.flat[dtype] = self.xp.empty(need, dtype=dtype)
        return flat[:need].reshape(n_rows, n_cols)


class _LazyM:
    """``M = (|w| / s)^p`` of a block without a kernel axis, never stored: each product forms it a
    few rows at a time (``_LAZY_CHUNK_BYTES``) in the state's shared buffer. The rows' arithmetic is
    :func:`_block_M`'s; a product sums its row chunks in order."""

    def __init__(self, w, s: float, p: float, xp, scratch: _Scratch):
        self.w, self.p, self.xp, self.scratch = w[:, :, 0], p, xp, scratch
        self.s = w.dtype.type(s)
        self.shape, self.size, self.dtype = self.w.shape, self.w.size, w.dtype
        self.rows = max(1, _LAZY_CHUNK_BYTES // max(1, self.w.shape[1] * w.dtype.itemsize))

    def _chunks(self):
        xp, n = self.xp, self.shape[0]
        for r0 in range(0, n, self.rows):
            r1 = min(n, r0 + self.rows)
            m = self.scratch.rows(r1 - r0, self.shape[1], self.dtype)
            xp.divide(self.w[r0:r1], self.s, out=m)
            if self.p == 2.0:
                xp.multiply(m, m, out=m)
            else:
                xp.abs(m, out=m)
                if self.p != 1.0:
                    xp.power(m, self.p, out=m)
            yield r0, r1, m

    def mv(self, v):
        out = self.xp.empty(self.shape[0], dtype=self.dtype)
        for r0, r1, m in self._chunks():
            out[r0:r1] = m @ v
        return out

    def vm(self, v):
        out = self.xp.zeros(self.shape[1], dtype=self.dtype)
        for r0, r1, m in self._chunks():
            out += v[r0:r1] @ m
        return out

    def min(self):
        return min(float(m.min()) for _, _, m in self._chunks())

    def lost(self, tiny: float) -> bool:
        """Whether a nonzero weight's entry fell below ``tiny`` (see GraphState.lost)."""
        return any(bool(((m < tiny) & (self.w[r0:r1] != 0)).any()) for r0, r1, m in self._chunks())


def _mv(M, v):
    """``M @ v`` for a stored or a lazy block."""
    return M.mv(v) if isinstance(M, _LazyM) else M @ v


def _vm(v, M):
    """``v @ M`` for a stored or a lazy block."""
    return M.vm(v) if isinstance(M, _LazyM) else v @ M


def _block_M(w, p: float, xp, scratch=None):
    """``(M, c)`` of a block: ``M = sum_k (|w| / s)^p`` over the kernel axis and ``c = p log s``,
    with ``s = max |w|`` (``c = 0`` for an all-zero block), so no entry of ``M`` overflows.
    One temporary of ``w``'s size, operated on in place: the plain expression made four, and NumPy's
    sum over a length-1 kernel axis alone cost ~10x a pass over the weights."""
    s = max(float(w.max()), -float(w.min()))
    if s == 0.0:
        return xp.zeros(w.shape[:2], dtype=w.dtype), 0.0
    if scratch is not None and w.shape[2] == 1 and w.size >= LAZY_ENTRIES:
        return _LazyM(w, s, p, xp, scratch), p * math.log(s)
    m = w / w.dtype.type(s)                  # s is an entry's magnitude: representable, no overflow
    if p == 2.0:
        xp.multiply(m, m, out=m)
    else:
        xp.abs(m, out=m)
        if p != 1.0:
            xp.power(m, p, out=m)
    n_dst, n_src, k = w.shape
    if k == 1:
        return m.reshape(n_dst, n_src), p * math.log(s)
    return (m.reshape(n_dst * n_src, k) @ xp.ones(k, dtype=w.dtype)).reshape(n_dst, n_src), p * math.log(s)


class GraphState:
    """The log-factors of a graph's free groups and the products F needs, scale-safe (see the
    module docstring); the state the steps of :mod:`._steps` drive."""

    def __init__(self, graph: GaugeGraph, p: float, offsets=None):
        xp, self.p, self.graph = graph.xp, p, graph
        self.xp = xp
        G = len(graph.groups)
        dt = graph.dtype
        self.free = [grp.free for grp in graph.groups]
        self.groups = [g for g, free in enumerate(self.free) if free]
        self.colours = colour_groups(graph)
        self.self_loops = frozenset(b.src for b in graph.blocks if b.src == b.dst)
        self.M, self.c = [], []
        scratch = _Scratch(xp)
        for k, b in enumerate(graph.blocks):
            m, c = _block_M(b.weight, p, xp, scratch)
            self.M.append(m)
            self.c.append(c + (0.0 if offsets is None else p * offsets[k]))
        # blocks where |W/max|^p of a nonzero weight fell below the smallest normal float (flushed
        # to 0 or kept with a subnormal's few digits): negligible at the start, not always at the end
        tiny = float(np.finfo(dt).tiny)
        self.lost = [bool(m.min() < tiny) and (m.lost(tiny) if isinstance(m, _LazyM) else
                                              bool(((m < tiny) & (b.weight != 0).any(axis=2)).any()))
                     for m, b in zip(self.M, graph.blocks)]
        # their entries in float64 logs, for the objective: the products may neglect what is below
        # eps of a live unit's sums (lost_entries_matter checks it), the objective may not -- a dead
        # unit's row keeps a = 1 while its neighbours move, and its |W|^p, lost beside the block's
        # largest at the start, is a constant part of F at the minimum (issue 22: 10.5% of it)
        self.exact_logs = [None] * len(self.M)
        with _quiet(xp):
            for k, b in enumerate(graph.blocks):
                if self.lost[k]:
                    self.exact_logs[k] = p * (xp.log(xp.abs(b.weight.astype(np.float64))) +
                                              (0.0 if offsets is None else offsets[k]))
        self.size = [float(m.size) for m in self.M]
        self.total = max(sum(self.size), 1.0)
        self.ins = [[] for _ in range(G)]
        self.outs = [[] for _ in range(G)]
        for k, b in enumerate(graph.blocks):
            self.ins[b.dst].append(k)
            self.outs[b.src].append(k)
        self.t = [0.0] * G
        self.v = [xp.zeros(grp.size, dtype=dt) for grp in graph.groups]
        self.live = [None] * G                          # None: all live
        self.passes = 0.0
        self.fwd = [None] * len(self.M)
        self.bwd = [None] * len(self.M)
        self.fwd_dead = [None] * len(self.M)
        self.bwd_dead = [None] * len(self.M)
        self.refresh_blocks(range(len(self.M)), range(len(self.M)))
        self.sums_lost = False
        self._find_dead()

    # -- dead units: a free unit whose every incoming or every outgoing weight is 0 --------------
    def _find_dead(self):
        xp = self.xp
        for g, free in enumerate(self.free):
            if not free:
                continue
            if not (self.ins[g] and self.outs[g]):              # nothing in or nothing out: all dead
                self.live[g] = xp.zeros(self.graph.groups[g].size, dtype=bool)
                continue
            r = sum((self.fwd[k] for k in self.ins[g]), xp.zeros(self.graph.groups[g].size, dtype=self.v[g].dtype))
            s = sum((self.bwd[k] for k in self.outs[g]), xp.zeros_like(r))
            if not bool(((r == 0) | (s == 0)).any()):
                continue
            # exact test on W != 0 (|W|^p may underflow where W does not vanish)
            rin = xp.zeros(r.shape, dtype=bool)
            rout = xp.zeros(r.shape, dtype=bool)
            for k in self.ins[g]:
                rin |= (self.graph.blocks[k].weight != 0).any(axis=(1, 2))
            for k in self.outs[g]:
                rout |= (self.graph.blocks[k].weight != 0).any(axis=(0, 2))
            dead = ~(rin & rout)
            if bool(dead.any()):
                self.live[g] = ~dead
            if bool((((r == 0) | (s == 0)) & ~dead).any()):   # a live unit whose sums underflowed
                self.sums_lost = True
        if any(l is not None for l in self.live):
            for k, b in enumerate(self.graph.blocks):   # dead units never move: constant products
                if self.live[b.src] is not None:
                    self.fwd_dead[k] = _mv(self.M[k], (~self.live[b.src]).astype(self.M[k].dtype))
                if self.live[b.dst] is not None:
                    self.bwd_dead[k] = _vm((~self.live[b.dst]).astype(self.M[k].dtype), self.M[k])
            self.refresh_blocks(range(len(self.M)), range(len(self.M)))

    def _e(self, g, sign):
        e = self.xp.exp(sign * self.p * self.v[g])
        return e if self.live[g] is None else e * self.live[g]

    def refresh(self, groups):
        """The products that read the factors of ``groups``: ``fwd`` of the blocks out of them,
        ``bwd`` of the blocks into them."""
        moved, blocks = set(groups), self.graph.blocks
        self.refresh_blocks([k for k, b in enumerate(blocks) if b.src in moved],
                            [k for k, b in enumerate(blocks) if b.dst in moved])

    def refresh_blocks(self, fwd_blocks, bwd_blocks):
        blocks = self.graph.blocks
        for k in fwd_blocks:
            self.fwd[k] = _mv(self.M[k], self._e(blocks[k].src, -1))
            self.passes += self.size[k] / self.total
        for k in bwd_blocks:
            self.bwd[k] = _vm(self._e(blocks[k].dst, +1), self.M[k])
            self.passes += self.size[k] / self.total

    # -- log in- and out-sums of a group, without its own factors ---------------------------------
    def log_r(self, g):
        """``(C, y)`` with ``r_i = exp(C) y_i = sum_j |W_ij|^p exp(-p u_j)`` over units j feeding i."""
        p, blocks, terms = self.p, self.graph.blocks, []
        for k in self.ins[g]:
            terms.append((self.c[k] - p * self.t[blocks[k].src], self.fwd[k]))
            if self.fwd_dead[k] is not None:
                terms.append((self.c[k], self.fwd_dead[k]))
        return _lse(terms)

    def log_s(self, g):
        """``(C, y)`` with ``s_i = exp(C) y_i = sum_j |W_ji|^p exp(p u_j)`` over units j that i feeds."""
        p, blocks, terms = self.p, self.graph.blocks, []
        for k in self.outs[g]:
            terms.append((self.c[k] + p * self.t[blocks[k].dst], self.bwd[k]))
            if self.bwd_dead[k] is not None:
                terms.append((self.c[k], self.bwd_dead[k]))
        return _lse(terms)

    def target(self, g):
        """``(T, d)``: the exact minimiser of F over group g alone is ``u_i = T + d_i`` (live units)."""
        xp = self.xp
        (cr, r), (cs, s) = self.log_r(g), self.log_s(g)
        if r is None or s is None:                          # a group without in- or out-blocks: all dead
            zero = xp.zeros(self.graph.groups[g].size, dtype=self.v[g].dtype)
            return 0.0, zero
        if self.live[g] is not None:
            r, s = xp.where(self.live[g], r, 1), xp.where(self.live[g], s, 1)
        return exact_log_factor(cr, cs, self.p), exact_log_factor(xp.log(r), xp.log(s), self.p)

    def set_u(self, g, T, d):
        """Move group g's live units to ``u = T + d`` (stored as ``t = T + mean d``, ``v = d - mean d``)."""
        xp = self.xp
        live = self.live[g]
        mean = float(d.mean()) if live is None else float(xp.where(live, d, 0).sum() / max(int(live.sum()), 1))
        v = d - d.dtype.type(mean)
        self.v[g] = v if live is None else xp.where(live, v, 0)
        self.t[g] = T + mean

    def move(self, g, target, half=False):
        T, d = target
        if half:
            T, d = halfway(self.t[g], T), halfway(self.v[g], d)
        self.set_u(g, T, d)

    def snapshot(self):
        return list(self.t), list(self.v)

    def max_step(self, before):
        """``max |a_i - 1|`` over live free units of the move from ``before``."""
        xp, t0, v0 = self.xp, before[0], before[1]
        worst = 0.0
        for g, free in enumerate(self.free):
            if not free:
                continue
            du = (self.v[g] - v0[g]).astype(np.float64) + (self.t[g] - t0[g])
            if self.live[g] is not None:
                du = xp.where(self.live[g], du, 0)
            worst = _nan_max(worst, float(xp.abs(xp.expm1(du)).max()))
        return worst

    # -- records ----------------------------------------------------------------------------------
    def _block_terms(self, k):
        """log of the four parts of block k's sum of rescaled ``|W|^p``: live/dead rows x columns."""
        xp, p, b = self.xp, self.p, self.graph.blocks[k]
        out = []
        ld, e_dst = self.live[b.dst], xp.exp(p * self.v[b.dst])
        rows_live = e_dst if ld is None else e_dst * ld
        parts = [(self.c[k] + p * (self.t[b.dst] - self.t[b.src]), rows_live, self.fwd[k])]
        if self.fwd_dead[k] is not None:
            parts.append((self.c[k] + p * self.t[b.dst], rows_live, self.fwd_dead[k]))
        if ld is not None:
            dead_rows = (~ld).astype(self.M[k].dtype)
            parts.append((self.c[k] - p * self.t[b.src], dead_rows, self.fwd[k]))
            if self.fwd_dead[k] is not None:
                parts.append((self.c[k], dead_rows, self.fwd_dead[k]))
        for c, rows, y in parts:
            val = float(rows.astype(np.float64) @ y.astype(np.float64))
            if val > 0:
                out.append(c + math.log(val))
            elif not val == 0.0:                        # NaN: let the objective say so
                out.append(math.nan)
        return out

    def _exact_block_term(self, k, u):
        """log of block k's sum of rescaled ``|W|^p`` from its entries' float64 logs (a lost block)."""
        xp, p, b = self.xp, self.p, self.graph.blocks[k]
        x = self.exact_logs[k] + p * (u[b.dst][:, None, None] - u[b.src][None, :, None])
        top = float(x.max())
        if not math.isfinite(top):            # -inf: an all-zero block; NaN or inf: the objective says so
            return [] if top == -math.inf else [top]
        return [top + math.log(float(xp.exp(x - top).sum()))]

    def objective(self) -> float:
        u = self.log_factors() if any(self.lost) else None
        logs = [x for k in range(len(self.M))
                for x in (self._block_terms(k) if self.exact_logs[k] is None else self._exact_block_term(k, u))]
        if not logs:
            return 0.0
        if any(math.isnan(x) for x in logs):
            return math.nan
        m = max(logs)
        log_total = m + math.log(sum(math.exp(x - m) for x in logs))
        # the starting point may lie beyond float64 (|W|^p of a layer overflows); minnorm_graph
        # refuses a non-finite objective after an update
        return math.exp(log_total) if log_total < 709.0 else math.inf

    def gamma(self) -> float:
        """Max over live free units of ``|in - out| / (in + out)`` (eq. 20 with |.|)."""
        xp, worst = self.xp, 0.0
        for g, free in enumerate(self.free):
            if not free:
                continue
            T, d = self.target(g)
            # log in - log out = 2p (u - target): ratio = |tanh(p (u - target))|
            x = (self.v[g] - d).astype(np.float64) + (self.t[g] - T)
            ratio = xp.abs(xp.tanh(self.p * x))
            if self.live[g] is not None:
                ratio = xp.where(self.live[g], ratio, 0)
            worst = _nan_max(worst, float(ratio.max()))
        return worst

    # -- the exact shift: one common log-scale per free group --------------------------------------
    def shift(self, tol=1e-13, max_iter=100):
        """The exact common shift of every free group (:func:`~._steps.newton_shift`): moves only ``t``."""
        p, blocks = self.p, self.graph.blocks
        idx = {g: n for n, g in enumerate(g for g, f in enumerate(self.free) if f)}
        nf = len(idx)
        if nf == 0:
            return
        terms = []                                          # (log coeff, dst index or None, src index or None)
        for k, b in enumerate(blocks):
            d = idx.get(b.dst)
            s = idx.get(b.src)
            if d is None and s is None:
                continue
            xp = self.xp
            ld = self.live[b.dst]
            e_dst = xp.exp(p * self.v[b.dst])
            rows_live = e_dst if ld is None else e_dst * ld
            parts = [(self.c[k] + p * (self.t[b.dst] - self.t[b.src]), rows_live, self.fwd[k], d, s)]
            if self.fwd_dead[k] is not None:
                parts.append((self.c[k] + p * self.t[b.dst], rows_live, self.fwd_dead[k], d, None))
            if ld is not None:
                parts.append((self.c[k] - p * self.t[b.src], (~ld).astype(self.M[k].dtype), self.fwd[k], None, s))
            for c, rows, y, dd, ss in parts:
                if dd is not None and dd == ss:
                    continue                               # a block into its own group: shift-invariant
                val = float(rows.astype(np.float64) @ y.astype(np.float64))
                if val > 0 and (dd is not None or ss is not None):
                    terms.append((c + math.log(val), dd, ss))
        if not terms:
            return
        z = newton_shift([t[0] for t in terms], [-1 if t[1] is None else t[1] for t in terms],
                         [-1 if t[2] is None else t[2] for t in terms], nf, tol=tol, max_iter=max_iter)
        for g, n in idx.items():
            self.t[g] += z[n] / p

    def log_u_range(self, g):
        """``(min u, max u)`` over group g's units (fixed and dead units have ``u = 0``)."""
        xp = self.xp
        if not self.free[g]:
            return 0.0, 0.0
        v = self.v[g] if self.live[g] is None else xp.where(self.live[g], self.v[g], -self.t[g])
        return float(v.min()) + self.t[g], float(v.max()) + self.t[g]

    def lost_entries_matter(self) -> list:
        """Names of blocks whose lost entries (``self.lost``) may change a live unit's sums by more
        than a factor of eps at the current factors. A lost entry of block k is below
        ``exp(c_k) tiny``; it adds at most ``exp(c_k) tiny exp(-p u_j)`` to ``r_i`` and
        ``exp(c_k) tiny exp(p u_i)`` to ``s_j``, which is compared with the smallest such sum."""
        xp = self.xp
        info = np.finfo(self.M[0].dtype)
        log_tiny, log_eps = math.log(float(info.tiny)), math.log(float(info.eps))
        out = []
        with _quiet(xp):                          # a vanished sum is log 0 = -inf: it matters
            for k, b in enumerate(self.graph.blocks):
                if self.lost[k] and self._lost_block_matters(k, log_tiny, log_eps):
                    out.append(b.name)
        return out

    def _lost_block_matters(self, k, log_tiny, log_eps) -> bool:
        xp, p, b = self.xp, self.p, self.graph.blocks[k]
        n_dst, n_src = self.M[k].shape
        worst = -math.inf            # log of the largest relative change of a live unit's sum
        for g, side in ((b.dst, "r"), (b.src, "s")):
            if not self.free[g]:
                continue
            C, y = self.log_r(g) if side == "r" else self.log_s(g)
            y = y if self.live[g] is None else xp.where(self.live[g], y, xp.inf)
            # the lost entry's largest factor: exp(-p u_src) on r, exp(p u_dst) on s
            log_n, log_e = ((math.log(n_src), -p * self.log_u_range(b.src)[0]) if side == "r" else
                            (math.log(n_dst), p * self.log_u_range(b.dst)[1]))
            worst = _nan_max(worst, self.c[k] + log_tiny + log_n + log_e - (C + float(xp.log(y.min()))))
        return not worst < log_eps

    def log_factors(self):
        """Per group, ``u = log a`` in float64 (0 for fixed and dead units)."""
        xp, out = self.xp, []
        for g, grp in enumerate(self.graph.groups):
            if not grp.free:
                out.append(xp.zeros(grp.size, dtype=np.float64))
                continue
            u = self.v[g].astype(np.float64) + self.t[g]
            out.append(u if self.live[g] is None else xp.where(self.live[g], u, 0.0))
        return out

    def factors(self):
        xp, out = self.xp, []
        for g, grp in enumerate(self.graph.groups):
            if not grp.free:
                out.append(xp.ones(grp.size, dtype=self.v[g].dtype))
                continue
            a = xp.exp(self.v[g].astype(np.float64) + self.t[g])
            if self.live[g] is not None:
                a = xp.where(self.live[g], a, 1.0)
            out.append(a.astype(self.v[g].dtype))
        return out


def prebalanced(graph: GaugeGraph):
    """A float64 copy of ``graph`` in which every live free unit's largest incoming and outgoing
    magnitudes are equal (one step in logs, as the chain's prebalancing), each block divided by its
    largest entry: ``(copy, u0, offsets)`` with ``u0`` the copy's log-factors per group and
    ``offsets`` the blocks' log-maxima. Formed in logs, so any weights a float holds fit."""
    xp, groups, blocks = graph.xp, graph.groups, graph.blocks
    with _quiet(xp):
        logs = [xp.log(xp.abs(b.weight.astype(np.float64))) for b in blocks]   # -inf at zeros
    u0 = []
    for g, grp in enumerate(groups):
        lin = [logs[k].max(axis=(1, 2)) for k, b in enumerate(blocks) if b.dst == g]
        lout = [logs[k].max(axis=(0, 2)) for k, b in enumerate(blocks) if b.src == g]
        if not (grp.free and lin and lout):
            u0.append(xp.zeros(grp.size, dtype=np.float64))
            continue
        lin, lout = xp.stack(lin).max(axis=0), xp.stack(lout).max(axis=0)
        ok = xp.isfinite(lin) & xp.isfinite(lout)                    # dead units keep u = 0
        u0.append(xp.where(ok, (xp.where(ok, lout, 0) - xp.where(ok, lin, 0)) / 2, 0.0))
    copy, offsets = GaugeGraph(), []
    for grp in groups:
        copy.add_group(grp.name, grp.size, grp.free, grp.reason)
    for b, lg in zip(blocks, logs):
        lg = lg + u0[b.dst][:, None, None] - u0[b.src][None, :, None]
        top = float(lg.max())
        top = top if math.isfinite(top) else 0.0                   # an all-zero block
        with _quiet(xp):
            w = xp.sign(b.weight) * xp.exp(lg - top)                  # float64: lg is
        copy.add_block(b.src, b.dst, w, name=b.name)
        offsets.append(top)
    return copy, u0, offsets
