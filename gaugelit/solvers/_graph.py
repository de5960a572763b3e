"""Minimum-norm gauge fixing on a :class:`~gaugelit.graph.GaugeGraph` (any feedforward network).

Minimise ``F = (1/p) sum_b sum_ij |W^b_ij|^p exp(p (u_i - u_j))`` over the log-factors ``u`` of the
free groups (eq. 10 with ``W`` cut into blocks ``b``). Two methods, as on chains:

``"multiplicative"``
    Algorithm 1 exactly as published: every free unit at once, ``log a_i = (1/4p) log(out_i/in_i)``.
    Its proof (the auxiliary function G, eqs. 13-16) never uses layers, so it holds on any graph,
    also for blocks that start and end in the same group.
``"block"``
    Exact block-coordinate descent. Two groups *interact* when a block joins them; groups of one
    colour of a greedy colouring (in graph order; odd/even layers on a chain) do not interact, so a
    whole colour takes its exact minimiser ``exp(2p u_i) = s_i / r_i`` at once. A group with a block
    into itself is not separable; it takes Algorithm 1's (monotone) step instead. Before each sweep
    the slow mode -- one common shift per group -- is minimised exactly: F restricted to the shifts
    is a small convex problem (Newton's method with backtracking on the group-level Hessian).

Scale safety: each block is normalised by its largest ``|W|`` and its log-scale ``c_b = p log max|W|``
carried in float64; each free group's log-factors are ``u = t_g + v`` with the common part ``t_g`` in
float64 and ``v`` in the weights' dtype. Every sum that mixes blocks is combined by log-sum-exp, so
neither ``|W|^p`` nor ``exp(p u)`` is formed where it could overflow; the shift step only moves the
``t_g`` and touches no array.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.gauge import _quiet
from ..core.graph import GaugeGraph
from ..core.network import check_p
from ._loop import MinNormResult, _iterate, _solver_args, _warn_unconverged

__all__ = ["minnorm_graph", "enorm_style", "GraphMinNormResult", "colour_groups"]


class GraphMinNormResult(MinNormResult):
    """:class:`~gaugelit.solvers.MinNormResult` for a graph: ``factors[g]`` per group (ones for fixed
    groups), ``dead_units[g]`` per group, plus ``graph`` and ``fixed_units`` (name, size, reason)."""

    def __init__(self, *args, graph=None, fixed_units=None, **kw):
        super().__init__(*args, **kw)
        self.graph, self.fixed_units = graph, fixed_units


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
    """log sum_k exp(c_k) y_k for scalars c_k and arrays y_k >= 0 (same shape): (scalar, array)."""
    if not terms:
        return 0.0, None
    cmax = max(c for c, _ in terms)
    total = None
    for c, y in terms:
        y = y * math.exp(c - cmax)
        total = y if total is None else total + y
    return cmax, total


def _block_M(w, p: float, xp):
    """``(M, c)`` of a block: ``M = sum_k (|w| / s)^p`` over the kernel axis and ``c = p log s``,
    with ``s = max |w|`` (``c = 0`` for an all-zero block), so no entry of ``M`` overflows.
    One temporary of ``w``'s size, operated on in place: the plain expression made four, and NumPy's
    sum over a length-1 kernel axis alone cost ~10x a pass over the weights."""
    s = max(float(w.max()), -float(w.min()))
    if s == 0.0:
        return xp.zeros(w.shape[:2], dtype=w.dtype), 0.0
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


class _GraphState:
    def __init__(self, graph: GaugeGraph, p: float, offsets=None):
        xp, self.p, self.graph = graph.xp, p, graph
        self.xp = xp
        G = len(graph.groups)
        dt = graph.dtype
        self.free = [grp.free for grp in graph.groups]
        self.M, self.c = [], []
        for k, b in enumerate(graph.blocks):
            m, c = _block_M(b.weight, p, xp)
            self.M.append(m)
            self.c.append(c + (0.0 if offsets is None else p * offsets[k]))
        # blocks where |W/max|^p of a nonzero weight fell below the smallest normal float (flushed
        # to 0 or kept with a subnormal's few digits): negligible at the start, not always at the end
        tiny = float(np.finfo(dt).tiny)
        self.lost = [bool(float(m.min()) < tiny) and bool(((m < tiny) & (b.weight != 0).any(axis=2)).any())
                     for m, b in zip(self.M, graph.blocks)]
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
        self.refresh(range(len(self.M)), range(len(self.M)))
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
                    self.fwd_dead[k] = self.M[k] @ (~self.live[b.src]).astype(self.M[k].dtype)
                if self.live[b.dst] is not None:
                    self.bwd_dead[k] = (~self.live[b.dst]).astype(self.M[k].dtype) @ self.M[k]
            self.refresh(range(len(self.M)), range(len(self.M)))

    def _e(self, g, sign):
        e = self.xp.exp(sign * self.p * self.v[g])
        return e if self.live[g] is None else e * self.live[g]

    def refresh(self, fwd_blocks, bwd_blocks):
        blocks = self.graph.blocks
        for k in fwd_blocks:
            self.fwd[k] = self.M[k] @ self._e(blocks[k].src, -1)
            self.passes += self.size[k] / self.total
        for k in bwd_blocks:
            self.bwd[k] = self._e(blocks[k].dst, +1) @ self.M[k]
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
        return (cs - cr) / (2 * self.p), (xp.log(s) - xp.log(r)) / (2 * self.p)

    def set_u(self, g, T, d):
        """Move group g's live units to ``u = T + d`` (stored as ``t = T + mean d``, ``v = d - mean d``)."""
        xp = self.xp
        live = self.live[g]
        mean = float(d.mean()) if live is None else float(xp.where(live, d, 0).sum() / max(int(live.sum()), 1))
        v = d - d.dtype.type(mean)
        self.v[g] = v if live is None else xp.where(live, v, 0)
        self.t[g] = T + mean

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

    def objective(self) -> float:
        logs = [x for k in range(len(self.M)) for x in self._block_terms(k)]
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
    def shift(self, tol=1e-13, max_iter=50):
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
        cmax = max(t[0] for t in terms)
        A = np.array([math.exp(t[0] - cmax) for t in terms])
        D = np.array([-1 if t[1] is None else t[1] for t in terms])
        S = np.array([-1 if t[2] is None else t[2] for t in terms])

        def evaluate(z):
            zz = np.concatenate([z, [0.0]])                  # index -1: a fixed group
            e = A * np.exp(zz[D] - zz[S])
            return e, float(e.sum())

        z = np.zeros(nf)
        e, f = evaluate(z)
        for _ in range(max_iter):
            grad = np.zeros(nf + 1)
            np.add.at(grad, D, e)
            np.add.at(grad, S, -e)
            H = np.zeros((nf + 1, nf + 1))
            np.add.at(H, (D, D), e)
            np.add.at(H, (S, S), e)
            np.add.at(H, (D, S), -e)
            np.add.at(H, (S, D), -e)
            g, H = grad[:nf], H[:nf, :nf]
            try:
                step = np.linalg.solve(H + 1e-14 * np.trace(H) * np.eye(nf), -g)
            except np.linalg.LinAlgError:
                return
            dec = -g @ step
            if not dec > tol * f:
                break
            tstep = 1.0
            while True:                                    # backtracking keeps F decreasing
                trial = z + tstep * step
                et, ft = evaluate(trial)
                if ft <= f - 0.25 * tstep * dec or tstep < 1e-10:
                    break
                tstep *= 0.5
            if not ft < f:
                break
            z, e, f = trial, et, ft
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


def _multiplicative_step(st: _GraphState) -> float:
    """Algorithm 1: every free unit moves halfway to its group's exact minimiser (eq. 12)."""
    before = st.snapshot()
    moves = [(g, st.target(g)) for g, f in enumerate(st.free) if f]
    for g, (T, d) in moves:
        st.set_u(g, (T + st.t[g]) / 2, (d + st.v[g]) / 2)
    n = len(st.M)
    st.refresh(range(n), range(n))
    return st.max_step(before)


def _block_step(st: _GraphState, classes, selfloop) -> float:
    before = st.snapshot()
    st.shift()
    blocks = st.graph.blocks
    for cls in classes:
        moves = [(g, st.target(g)) for g in cls]
        for g, (T, d) in moves:
            if g in selfloop:                              # not separable: Algorithm 1's half step
                st.set_u(g, (T + st.t[g]) / 2, (d + st.v[g]) / 2)
            else:
                st.set_u(g, T, d)
        moved = set(cls)
        st.refresh([k for k, b in enumerate(blocks) if b.src in moved],
                   [k for k, b in enumerate(blocks) if b.dst in moved])
    return st.max_step(before)


def _enorm_sweep(st: _GraphState, selfloop) -> float:
    """One ENorm-style sweep (Stock et al., 2019, Sec. 3): the free groups one after another in
    graph order, each to its exact minimiser given the others (Gauss-Seidel), no shift step."""
    before = st.snapshot()
    for g, free in enumerate(st.free):
        if not free:
            continue
        T, d = st.target(g)
        if g in selfloop:
            st.set_u(g, (T + st.t[g]) / 2, (d + st.v[g]) / 2)
        else:
            st.set_u(g, T, d)
        st.refresh([k for k in st.outs[g]], [k for k in st.ins[g]])
    return st.max_step(before)


def minnorm_graph(graph: GaugeGraph, p: float = 2.0, *, method: str | None = None, delta: float = 1e-3,
                  gamma_tol: float | None = None, max_iter: int = 10_000) -> GraphMinNormResult:
    """:func:`~gaugelit.solvers.minnorm` on a graph; same arguments, rules and result.

    ``.factors[g]`` holds group g's factors (ones for fixed groups), ``.dead_units[g]`` its dead units,
    ``.net`` the rescaled network when the graph knows how to build it (``graph.rescaled``), else None.

    Weights whose ``|W|^p`` underflows next to their block's largest are negligible at the start but
    can weigh at the minimum of an extreme gauge (units many decades apart): when they may, the
    solve is repeated on a prebalanced float64 copy of the graph (``iterations`` and the records
    are then the repeat's, ``passes`` the sum), and if they still may, FloatingPointError.
    """
    p = check_p(p)
    method, delta, gamma_tol, max_iter = _solver_args(method, delta, gamma_tol, max_iter, ("enorm-style",))
    graph.check()
    st, objective, gamma, it, converged = _solve(graph, p, method, delta, gamma_tol, max_iter)
    xp, passes, u = graph.xp, st.passes, None
    if converged is None or (any(st.lost) and st.lost_entries_matter()):
        # values out of range, or weights negligible at the start that weigh at the answer
        copy, u, offsets = _prebalanced(graph)
        st, objective, gamma, it, converged = _solve(copy, p, method, delta, gamma_tol, max_iter, offsets)
        passes += st.passes
        if converged is None:
            raise FloatingPointError(f"minnorm: non-finite objective after update {it} on the graph "
                                     f"({graph.dtype}, p={p:g}), also from a prebalanced float64 copy")
        still = st.lost_entries_matter() if any(st.lost) else []
        if still:    # not seen in tests: the prebalanced copy keeps what weighs at the minimum
            raise FloatingPointError(f"minnorm: near the minimum, weights too small for |W|^p to hold in "
                                     f"float64 at p={p:g} weigh in the objective (blocks {still}); use a p "
                                     "closer to 1")
        u = [a + b for a, b in zip(u, st.log_factors())]
    if not converged:
        _warn_unconverged(f"{method}, graph", delta, gamma_tol, max_iter, gamma[-1])
    with _quiet(xp):                              # factors beyond the dtype: the error below
        factors = st.factors() if u is None else [xp.exp(a).astype(graph.dtype) for a in u]
    for g, a in enumerate(factors):
        if not bool(xp.all(xp.isfinite(a) & (a > 0))):
            raise FloatingPointError(f"minnorm: factors of group {graph.groups[g].name!r} overflow "
                                     f"{graph.dtype}; the network's scales are too far apart for it")
    dead = [xp.zeros(0, dtype=np.int64) if l is None else xp.nonzero(~l)[0] for l in st.live]
    net = graph.rescaled(factors) if graph.rescaled is not None else None
    return GraphMinNormResult(net=net, factors=factors, iterations=it, objective=np.array(objective),
                              gamma=np.array(gamma), dead_units=dead, method=method,
                              converged=converged, passes=passes,
                              graph=graph, fixed_units=graph.fixed_units())


def _solve(graph: GaugeGraph, p, method, delta, gamma_tol, max_iter, offsets=None):
    """The iteration: ``(state, objective record, gamma record, updates, converged)``, with
    ``converged = None`` when a value turned non-finite or a live unit's sums underflowed at the
    start; ``offsets``: log-scales the blocks were divided by (:func:`_prebalanced`)."""
    st = _GraphState(graph, p, offsets)
    if st.sums_lost:
        return st, [math.nan], [math.nan], 0, None
    classes = colour_groups(graph)
    selfloop = {b.src for b in graph.blocks if b.src == b.dst}
    if method == "enorm-style":
        step_fn = lambda: _enorm_sweep(st, selfloop)                       # noqa: E731
    elif method == "block":
        step_fn = lambda: _block_step(st, classes, selfloop)               # noqa: E731
    else:
        step_fn = lambda: _multiplicative_step(st)                         # noqa: E731
    with _quiet(st.xp):
        start = st.objective(), st.gamma()
    record = lambda: (st.objective(), st.gamma())                          # noqa: E731
    return (st,) + _iterate(step_fn, record, start, xp=st.xp, delta=delta, gamma_tol=gamma_tol,
                            max_iter=max_iter)


def _prebalanced(graph: GaugeGraph):
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


def enorm_style(graph: GaugeGraph, p: float = 2.0, *, gamma_tol: float = 1e-6,
                max_iter: int = 100_000) -> GraphMinNormResult:
    """The ENorm-style baseline, written from its paper (Stock et al., "Equi-normalization of neural
    networks", ICLR 2019): one balancing sweep per call -- each hidden group in turn set to its
    exact minimiser -- iterated here until gamma < ``gamma_tol``. Unlike the released ENorm it
    rescales every hidden group (also the last), any p, and the biases with their units (the graph's
    ``rescaled``), so it is the fair sweep-for-sweep baseline of the block method.
    ``iterations`` counts sweeps."""
    return minnorm_graph(graph, p, method="enorm-style", gamma_tol=gamma_tol, max_iter=max_iter)
