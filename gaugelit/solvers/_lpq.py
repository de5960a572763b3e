"""The minimum l_{p,q}-norm gauge (Saul, TMLR 2023): ``||W||_{p,q}^q = sum_i (sum_j |W_ij|^p)^(q/p)``
over every unit ``i`` with incoming weights (hidden and output), biases not counted.

With ``u = log a``, ``rho_i = sum_j M_ij exp(-p u_j)`` (``M = sum_k |W|^p`` per block) and
``T_i = exp(q u_i) rho_i^(q/p)`` (unit i's incoming norm to the q), the objective is ``sum_i T_i``
and its gradient ``q (T_k - S_k)`` with ``S_k = sum_i T_i M_ik exp(-p u_k) / rho_i``, the share of
unit k in the norms of the units it feeds. ``q = p`` is the entry-wise objective of :mod:`._steps`
(the front door sends it there, so its answers are today's); this module solves ``q != p``.

- Algorithm 1, generalised (``method="multiplicative"``): every live free unit at once,
  ``u_k += log(S_k / T_k) / (2 kappa)`` with ``kappa = q + max(p, q)``, the minimiser of an
  auxiliary function that majorises the objective (Jensen for ``q >= p``, the tangent of the
  concave power for ``q < p``, then weighted AM-GM; derived in ``book/lpq.md``): monotone.
- The exact block method (``method="block"``): the common shift of every group where it is
  exact-form, then every free group in colour order to its exact minimiser given the others, by
  :func:`._steps.newton` in logs (Newton with backtracking), each Newton step solved by conjugate
  gradients preconditioned by the Hessian's diagonal (matrix-free: the Hessian is that diagonal plus
  ``q (q - p) P^T diag(T) P`` over the next groups' rows, and its condition after the
  preconditioner is at most ``max(p, q) / min(p, q)``). A group with a block into itself takes
  Algorithm 1's update.

The state works in float64 whatever the network's dtype (NumPy or CuPy through ``xp``); a network
whose ``|W|^p`` or norms leave float64 is refused with an error, never solved wrongly.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import real
from ..core.gauge import _quiet
from ..core.graph import GaugeGraph
from ..core.network import check_p
from ._chain import factors_in_dtype, rescale_in_logs
from ._graph import colour_groups
from ._loop import GraphMinNormResult, _iterate, _warn_unconverged
from ._steps import newton, newton_shift

__all__ = ["check_q", "lpq_kappa", "lpq_norm", "LpqState", "solve_lpq"]


def lpq_norm(net, p: float, q: float) -> float:
    """``||W||_{p,q}^q = sum_i (sum_j |W_ij|^p)^(q/p)`` of a chain (rows: every hidden and output unit's
    incoming weights, biases not counted), in float64 on the host."""
    p, q = check_p(p), check_q(q, p)
    total = 0.0
    for W in net.weights:
        w = abs(W.astype(np.float64))
        total += float(((w ** p).sum(axis=1) ** (q / p)).sum())
    if not math.isfinite(total):
        raise FloatingPointError(f"lpq_norm: ||W||_{{p,q}}^q overflows float64 at p={p:g}, q={q:g}")
    return total


def check_q(q, p: float) -> float:
    """``q`` as a float (``None``: ``p``), refused unless finite and ``> 0``."""
    if q is None:
        return p
    return real(q, "q", low=0, low_open=True)


def lpq_kappa(p: float, q: float) -> float:
    """The exponent of generalised Algorithm 1: ``a_k <- a_k (S_k / T_k)^(1 / (2 kappa))``."""
    return q + max(p, q)


#: conjugate gradients' relative residual: the floor, and the most a Newton step far from the
#: block's minimiser is solved to (its share of the gradient norm below that)
_CG_TOL, _CG_FORCING = 1e-10, 0.1


def _pcg(hv, b, dinv, *, tol=1e-10, max_iter=200):
    """Conjugate gradients for ``H x = b`` (``H`` symmetric positive definite, as ``hv``), with the
    diagonal preconditioner ``dinv``; stops at relative residual ``tol``."""
    xp_zero = b * 0
    bb = float(b @ b)
    if not bb > 0:
        return xp_zero
    x, r = xp_zero, b
    z = dinv * r
    d, rz = z, float(r @ z)
    for _ in range(max_iter):
        Hd = hv(d)
        dHd = float(d @ Hd)
        if not dHd > 0:
            break
        alpha = rz / dHd
        x = x + alpha * d
        r = r - alpha * Hd
        if float(r @ r) <= tol * tol * bb:
            break
        z = dinv * r
        rz_new = float(r @ z)
        d, rz = z + (rz_new / rz) * d, rz_new
    return x


class LpqState:
    """Log-factors ``u`` (float64) of the free groups of a graph and the sums of the l_{p,q} norm."""

    def __init__(self, graph: GaugeGraph, p: float, q: float):
        xp = self.xp = graph.xp
        self.graph, self.p, self.q, self.r = graph, p, q, q / p
        self.kappa = lpq_kappa(p, q)
        n = len(graph.groups)
        self.groups = [g for g, grp in enumerate(graph.groups) if grp.free]
        self.inb = [[b for b, blk in enumerate(graph.blocks) if blk.dst == g] for g in range(n)]
        self.outb = [[b for b, blk in enumerate(graph.blocks) if blk.src == g] for g in range(n)]
        self.self_loops = frozenset(blk.src for blk in graph.blocks
                                    if blk.src == blk.dst and graph.groups[blk.src].free)
        self.M = []
        with _quiet(xp):
            for blk in graph.blocks:
                w = xp.abs(blk.weight.astype(np.float64))
                m = (w * w if p == 2.0 else w ** p).sum(axis=2)
                if not bool(xp.isfinite(m).all()):
                    raise FloatingPointError(f"minnorm: |{blk.name}|^p overflows float64 at p={p:g}; "
                                             "the l_{p,q} solver (q != p) cannot represent it")
                if bool(((m < np.finfo(np.float64).tiny) & (w != 0).any(axis=2)).any()):
                    raise FloatingPointError(f"minnorm: |W|^p of nonzero weights in {blk.name} underflows "
                                             f"float64 at p={p:g}; the l_{{p,q}} solver (q != p) cannot "
                                             "represent them (use a p nearer 1)")
                self.M.append(m)
        self._size = [float(m.size) for m in self.M]
        self._total = sum(self._size) or 1.0
        self.passes = 0.0
        self.u = [xp.zeros(grp.size) if grp.free else None for grp in graph.groups]
        # dead units: all incoming or all outgoing weights zero (M >= 0: a zero sum says so exactly)
        self.live = [None] * n
        for g in self.groups:
            into = sum((self.M[b].sum(axis=1) for b in self.inb[g]), xp.zeros(graph.groups[g].size))
            out = sum((self.M[b].sum(axis=0) for b in self.outb[g]), xp.zeros(graph.groups[g].size))
            self.live[g] = (into > 0) & (out > 0)
        self.any_dead = any(not bool(self.live[g].all()) for g in self.groups)
        shiftable = not self.self_loops and not self.any_dead and all(len(b) <= 1 for b in self.inb)
        self.shiftable = shiftable and all(blk.src != blk.dst for blk in graph.blocks)
        self.colours = colour_groups(graph)
        self.compute()

    # -- sums ---------------------------------------------------------------------------------
    def _e(self, g, sign):
        u = self.u[g]
        return None if u is None else self.xp.exp(sign * self.p * u)

    def _mv(self, b, v):
        self.passes += self._size[b] / self._total
        return self.M[b].sum(axis=1) if v is None else self.M[b] @ v

    def _vm(self, b, v):
        self.passes += self._size[b] / self._total
        return self.M[b].sum(axis=0) if v is None else v @ self.M[b]

    def compute(self):
        """``rho``, ``T`` (groups with incoming blocks) and ``S`` (free groups) at the current ``u``."""
        xp, n = self.xp, len(self.graph.groups)
        self.rho, self.T, self.S = [None] * n, [None] * n, [None] * n
        w = [None] * n
        with _quiet(xp):
            for g in range(n):
                if not self.inb[g]:
                    continue
                rho = sum(self._mv(b, self._e(self.graph.blocks[b].src, -1)) for b in self.inb[g])
                T = rho ** self.r if self.u[g] is None else xp.exp(self.q * self.u[g]) * rho ** self.r
                self.rho[g], self.T[g] = rho, T
                w[g] = xp.where(rho > 0, T / xp.where(rho > 0, rho, 1), 0)
            for g in self.groups:
                s = sum(self._vm(b, w[self.graph.blocks[b].dst]) for b in self.outb[g])
                self.S[g] = xp.zeros(self.graph.groups[g].size) if isinstance(s, int) else s * self._e(g, -1)

    def objective(self) -> float:
        """``||W||_{p,q}^q`` at the current ``u`` (float64 on the host)."""
        return float(sum(float(T.sum()) for T in self.T if T is not None))

    def gamma(self) -> float:
        """The imbalance: ``max |T_k - S_k| / (T_k + S_k)`` over live free units (0 at the minimum)."""
        xp, out = self.xp, 0.0
        for g in self.groups:
            T = xp.zeros(self.graph.groups[g].size) if self.T[g] is None else self.T[g]
            live = self.live[g]
            if not bool(live.any()):
                continue
            num, den = xp.where(live, xp.abs(T - self.S[g]), 0), xp.where(live, T + self.S[g], 1)
            v = float((num / den).max())
            out = v if (v != v or v > out) else out
        return out

    # -- moves --------------------------------------------------------------------------------
    def snapshot(self):
        return [self.u[g] for g in self.groups]

    def max_step(self, before) -> float:
        xp = self.xp
        return max(float(xp.abs(xp.expm1(self.u[g] - b)).max()) for g, b in zip(self.groups, before))

    def _alg1_move(self, g):
        """Generalised Algorithm 1 on group g from the current sums (which must be up to date)."""
        xp, live = self.xp, self.live[g]
        T = self.T[g] if self.T[g] is not None else xp.zeros(self.graph.groups[g].size)
        with _quiet(xp):
            d = xp.log(xp.where(live, self.S[g], 1) / xp.where(live, T, 1)) / (2 * self.kappa)
        self.u[g] = self.u[g] + xp.where(live, d, 0)

    def multiplicative_step(self) -> float:
        """Algorithm 1 generalised: every free group at once; returns ``max_i |a_i - 1|``."""
        before = self.snapshot()
        for g in self.groups:
            self._alg1_move(g)
        self.compute()
        return self.max_step(before)

    def shift(self):
        """The exact common shift of every group (one log-scale ``z_g = q c_g`` per free group):
        with one block into each group and no dead units the objective along it is
        ``sum_b A_b exp(z_dst - z_src)`` (``A_b`` the dst group's ``sum T``), minimised by
        :func:`._steps.newton_shift`."""
        index = {g: i for i, g in enumerate(self.groups)}
        c, dst, src = [], [], []
        for blk in self.graph.blocks:
            A = float(self.T[blk.dst].sum())
            if not A > 0:
                return
            c.append(math.log(A))
            dst.append(index.get(blk.dst, -1))
            src.append(index.get(blk.src, -1))
        z = newton_shift(c, dst, src, len(self.groups))
        for g, i in index.items():
            self.u[g] = self.u[g] + float(z[i]) / self.q

    def block_newton(self, g, *, tol=1e-24, max_iter=30):
        """Group g to its exact minimiser given the other groups: Newton in logs (:func:`newton`)."""
        xp, p, q, r, blocks = self.xp, self.p, self.q, self.r, self.graph.blocks
        live = self.live[g]
        with _quiet(xp):
            R = sum(self._mv(b, self._e(blocks[b].src, -1)) for b in self.inb[g])
            R = xp.zeros(self.graph.groups[g].size) if isinstance(R, int) else R
            Rr = R ** r
            dsts = sorted({blocks[b].dst for b in self.outb[g]})
            outs = []
            for m in dsts:
                mine = [b for b in self.outb[g] if blocks[b].dst == m]
                rest = sum(self._mv(b, self._e(blocks[b].src, -1)) for b in self.inb[m] if b not in mine)
                cm = None if self.u[m] is None else xp.exp(q * self.u[m])
                outs.append((mine, rest, cm))

        first = []                                  # the block's first gradient norm

        def evaluate(z):
            with _quiet(xp):
                eneg = xp.exp(-p * z)
                own = xp.exp(q * z) * Rr
                f, terms = float(own.sum()), []
                for mine, rest, cm in outs:
                    rho = sum(self._mv(b, eneg) for b in mine) + rest
                    T = rho ** r if cm is None else cm * rho ** r
                    f += float(T.sum())
                    terms.append((rho, T))
            return (eneg, own, terms), f

        def direction(z, state):
            eneg, own, terms = state
            with _quiet(xp):
                S, wts = 0, []
                for (mine, _, _), (rho, T) in zip(outs, terms):
                    safe = xp.where(rho > 0, rho, 1)
                    w = xp.where(rho > 0, T / safe, 0)
                    wts.append((mine, safe, xp.where(rho > 0, T / (safe * safe), 0)))
                    for b in mine:
                        S = S + self._vm(b, w)
                S = eneg * S if not isinstance(S, int) else xp.zeros_like(z)
                grad = xp.where(live, q * (own - S), 0)
                diag = xp.where(live, q * (q * own + p * S), 1)
                c = q * (q - p)

                def hv(v):
                    v = xp.where(live, v, 0)
                    y = diag * v
                    if c != 0:
                        acc = 0
                        ev = eneg * v
                        for mine, _, w2 in wts:
                            Pv = sum(self._mv(b, ev) for b in mine)
                            for b in mine:
                                acc = acc + self._vm(b, w2 * Pv)
                        if not isinstance(acc, int):
                            y = y + c * eneg * acc
                    return xp.where(live, y, 0)

                # inexact Newton (Eisenstat-Walker): CG to a tolerance that shrinks with the gradient,
                # so the early Newton steps, far from the block's minimiser, take few CG iterations
                norm = float(xp.sqrt(grad @ grad))
                if not first:
                    first.append(norm)
                forcing = min(_CG_FORCING, norm / first[0]) if first[0] > 0 else _CG_TOL
                step = _pcg(hv, -grad, 1 / diag, tol=max(_CG_TOL, forcing))
            return step, -float(grad @ step)

        self.u[g] = newton(evaluate, direction, self.u[g], tol=tol, max_iter=max_iter, trust_below=1e-10)

    def block_step(self) -> float:
        """One sweep of the exact block method; returns ``max_i |a_i - 1|``."""
        before = self.snapshot()
        if self.shiftable:
            self.shift()
        for colour in self.colours:
            for g in colour:
                if g in self.self_loops:
                    self.compute()
                    self._alg1_move(g)
                else:
                    self.block_newton(g)
        self.compute()
        return self.max_step(before)


_STEPS = {"block": LpqState.block_step, "multiplicative": LpqState.multiplicative_step}


def solve_lpq(graph: GaugeGraph, p: float, q: float, *, method, delta, gamma_tol, max_iter, net=None):
    """The l_{p,q} solve of every front door (``q != p``): a :class:`GraphMinNormResult` whose
    ``objective`` record is ``||W||_{p,q}^q`` and whose ``gamma`` is the l_{p,q} imbalance;
    ``net``: the chain the graph was built from (then ``.net`` is its rescaled copy)."""
    xp, dtype = graph.xp, graph.dtype
    if method == "enorm-style":
        raise ValueError("enorm_style has no l_{p,q} form; use method='block' or 'multiplicative'")
    st = LpqState(graph, p, q)
    start = st.objective(), st.gamma()
    if not math.isfinite(start[0]):
        raise FloatingPointError(f"minnorm: ||W||_{{p,q}}^q overflows float64 at p={p:g}, q={q:g}")
    step = _STEPS[method]
    objective, gamma, it, converged = _iterate(lambda: step(st), lambda: (st.objective(), st.gamma()), start,
                                               xp=xp, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter)
    if converged is None:
        raise FloatingPointError(f"minnorm: non-finite objective after update {it} ({dtype}, p={p:g}, q={q:g}); "
                                 "the network's scales are too far apart for the l_{p,q} solver")
    if not converged:
        _warn_unconverged(f"{method}, l_{{p,q}}", delta, gamma_tol, max_iter, gamma[-1])
    free_u = [st.u[g] for g in st.groups]
    with _quiet(xp):
        hidden = factors_in_dtype(free_u, dtype, xp, p)
    factors, k = [], 0
    for grp in graph.groups:
        if grp.free:
            factors.append(hidden[k])
            k += 1
        else:
            factors.append(xp.ones(grp.size, dtype=dtype))
    if net is not None:
        out = rescale_in_logs(net, free_u, p)
    else:
        out = graph.rescaled(factors) if graph.rescaled is not None else None
    none = xp.zeros(0, dtype=np.int64)
    dead = [none if l is None else xp.nonzero(~l)[0] for l in st.live]
    return GraphMinNormResult(net=out, factors=factors, iterations=it, objective=np.array(objective),
                              gamma=np.array(gamma), dead_units=dead, method=method, converged=converged,
                              passes=st.passes, graph=graph, fixed_units=graph.fixed_units())
