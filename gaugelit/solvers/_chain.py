"""Minimum-norm gauge fixing: minimise ``F(a) = (1/p) sum_ij |W_ij|^p (a_i/a_j)^p`` (eq. 10).

Both methods work in the log domain on ``M = |W|^p``: with ``u = log a`` the rescaled entry is
``M_ij exp(p (u_i - u_j))``, so every quantity is a matrix-vector product of ``M`` with
``exp(+-p u)``. The weights are rescaled once, at the end.

Methods
-------
``"multiplicative"``
    Algorithm 1 as published: every hidden unit updated at once with the factor of eq. (12),
    ``a_i = (out_i / in_i)^(1/(4p))`` (the stationary point of the auxiliary function G, eq. 15).
``"block"`` (the default)
    Exact block-coordinate descent. The units of one layer do not interact in F, so a whole layer
    takes its exact minimiser ``a_i = (out_i / in_i)^(1/(2p))`` at once; odd layers and even layers
    alternate (each half-sweep reads every matrix once). Before each sweep, the slow mode of deep
    networks -- one common scale per layer, which Algorithm 1 must diffuse through every layer --
    is minimised exactly: F restricted to per-layer shifts is a small convex problem solved in
    closed form (Newton's method on a tridiagonal system when there are dead units).
    Each sweep costs two passes over ``M``, as one iteration of Algorithm 1 does.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.backend import array_module
from ..core.gauge import _abs_pow, _quiet, _rescale_trusted, dead_units
from ..core.network import LayeredNet, check_p
from ._loop import MinNormResult, _iterate, _solver_args, _warn_unconverged

__all__ = ["minnorm_chain", "layer_shift"]

class _LogScales:
    """Log-factors ``u`` of the hidden units and the matrix-vector products that F needs.

    ``fwd[l] = M[l] @ (live * exp(-p u_l))`` and ``bwd[l] = (live * exp(p u_{l+1})) @ M[l]``;
    dead units keep their ``u`` (0 unless ``u`` is given) and add the constant vectors
    ``fwd_dead`` / ``bwd_dead``.

    The first products double as the dead-unit test: ``M >= 0``, so a unit is dead exactly where
    its in-sum or out-sum vanishes, and a network without dead units pays no extra pass for it.
    Only when some sum is 0 is ``dead_units_of()`` (the exact test on ``W != 0``) called.
    """

    def __init__(self, M, p, xp, dead_units_of, u=None, products=None):
        self.p, self.xp = p, xp
        if products is None:
            self._M = M
            shapes = [m.shape for m in M]
        else:   # the first products come from elsewhere; M (a callable) is formed only if needed
            self._M, self._form_M = None, M
            shapes = [(f.shape[0], b.shape[0]) for f, b in zip(*products)]
        L = self.L = len(shapes)
        dt = (M[0] if products is None else products[0][0]).dtype
        hidden = [xp.zeros(n, dtype=dt) for n, _ in shapes[:-1]] if u is None else list(u)
        self.u = [None] + hidden + [None]
        self.live = [None] * (L + 1)                           # None: all live
        self.any_dead = [False] * (L + 1)
        self.fwd_dead, self.bwd_dead = [None] * L, [None] * L
        self.fwd, self.bwd = [None] * L, [None] * L
        self._ones_in = xp.ones(shapes[0][1], dtype=dt)        # the input units' exp(-p u) = 1
        self._ones_out = xp.ones(shapes[-1][0], dtype=dt)      # the output units' exp(p u) = 1
        self._size = [n * m for n, m in shapes]
        self._total = float(sum(self._size))
        self.passes = 0.0
        if products is None:
            self.refresh(range(L), range(L))
        else:
            self.fwd, self.bwd = list(products[0]), list(products[1])
            self.passes += 2.0
        zero = xp.zeros((), dtype=bool)
        for k in range(1, L):                                  # one host sync for all layers
            zero = zero | (self.fwd[k - 1] == 0).any() | (self.bwd[k] == 0).any()
        self.dead = None
        if bool(zero):
            self._set_dead(dead_units_of())

    @property
    def M(self):
        if self._M is None:
            self._M = self._form_M()
        return self._M

    def _set_dead(self, dead):
        """Take the dead-unit masks into account: the products are recomputed over live units."""
        xp, L = self.xp, self.L
        self.dead = dead
        self.live = [None] + [~d for d in dead] + [None]
        self.any_dead = [False] + [bool(d.any()) for d in dead] + [False]
        for l in range(L):
            if self.any_dead[l]:
                self.fwd_dead[l] = self.M[l] @ (dead[l - 1] * xp.exp(-self.p * self.u[l]))
            if self.any_dead[l + 1]:
                self.bwd_dead[l] = (dead[l] * xp.exp(self.p * self.u[l + 1])) @ self.M[l]
        self.refresh(range(L), range(L))

    # -- matrix-vector products -----------------------------------------------------------------
    def _exp(self, k, sign):
        if self.u[k] is None:
            return None
        e = self.xp.exp(sign * self.p * self.u[k])
        return e * self.live[k] if self.any_dead[k] else e

    # Row and column sums are matrix-vector products with ones: BLAS gemv reads M once at full
    # speed, where NumPy's M.sum(axis=1) is several times slower.
    def refresh_fwd(self, l):
        w = self._exp(l, -1)
        self.fwd[l] = self.M[l] @ (self._ones_in if w is None else w)
        self.passes += self._size[l] / self._total

    def refresh_bwd(self, l):
        v = self._exp(l + 1, +1)
        self.bwd[l] = (self._ones_out if v is None else v) @ self.M[l]
        self.passes += self._size[l] / self._total

    def refresh(self, layers_fwd, layers_bwd):
        for l in layers_fwd:
            self.refresh_fwd(l)
        for l in layers_bwd:
            self.refresh_bwd(l)

    # -- quantities at the current u (all products up to date) ----------------------------------
    def r(self, k):  # sum_j M_ij exp(-p u_j) over the units j feeding hidden unit i of layer k
        f = self.fwd[k - 1]
        return f if self.fwd_dead[k - 1] is None else f + self.fwd_dead[k - 1]

    def s(self, k):  # sum_j M_ji exp(p u_j) over the units j that hidden unit i feeds
        b = self.bwd[k]
        return b if self.bwd_dead[k] is None else b + self.bwd_dead[k]

    def objective(self) -> float:
        return sum(self.layer_objectives())

    def layer_objectives(self) -> list[float]:
        """``sum_ij M_ij exp(p (u_i - u_j))`` of each matrix at the current ``u``."""
        out = []
        for l in range(self.L):
            row = self.u[l + 1]
            rl = self.fwd[l] if self.fwd_dead[l] is None else self.fwd[l] + self.fwd_dead[l]
            out.append(float(rl.sum()) if row is None else float(self.xp.exp(self.p * row) @ rl))
        return out

    def gamma(self) -> float:
        xp, g = self.xp, []
        for k in range(1, self.L):
            e = xp.exp(self.p * self.u[k])
            fan_in, fan_out = e * self.r(k), self.s(k) / e
            if self.any_dead[k]:  # dead units: leave out, and keep 0/0 out of the arithmetic
                fan_in = xp.where(self.live[k], fan_in, 1)
                fan_out = xp.where(self.live[k], fan_out, 1)
            ratio = xp.abs(fan_in - fan_out) / (fan_in + fan_out)
            g.append(ratio.max())
        return float(xp.stack(g).max())                   # one host sync, not one per layer

    def set_u(self, k, new):
        """Move the live units of layer k to ``new``; dead units keep their ``u``."""
        self.u[k] = self.xp.where(self.live[k], new, self.u[k]) if self.any_dead[k] else new

    def exact_layer(self, k):
        """Block minimiser of F over layer k (others fixed): ``exp(2p u_i) = s_i / r_i``."""
        r, s = self.r(k), self.s(k)
        if self.any_dead[k]:
            r, s = self.xp.where(self.live[k], r, 1), self.xp.where(self.live[k], s, 1)
        return (self.xp.log(s) - self.xp.log(r)) / (2 * self.p)

    def snapshot(self):
        # No copies: every move (set_u) binds a new array, so the old ones stay as they were.
        return list(self.u[1:-1])

    def max_step(self, before) -> float:
        """``max_i |a_i - 1|`` of the move from ``before`` to the current factors."""
        xp = self.xp                                     # one host sync, not one per layer
        return float(xp.stack([xp.abs(xp.expm1(u - b)).max() for u, b in zip(self.u[1:-1], before)]).max())


def layer_shift(A, B=None, C=None, tol=1e-13, max_iter=100):
    """Minimise ``sum_l A_l e^{z_{l+1}-z_l} + B_l e^{z_{l+1}} + C_l e^{-z_l}`` over ``z_1..z_{L-1}``
    (``z_0 = z_L = 0``): F restricted to one common log-scale shift ``z_k = p c_k`` per layer.

    ``A_l`` sums the rescaled ``|W|^p`` of matrix ``l`` between live units, ``B_l`` from dead units of
    layer ``l`` into live units, ``C_l`` from live units into dead units of layer ``l+1``. Without dead
    units the minimiser is closed-form: every ``A_l e^{z_{l+1}-z_l}`` equals the geometric mean of A.
    """
    A = np.asarray(A, dtype=np.float64)
    if not np.all(A > 0):
        raise ValueError("layer_shift: every A_l must be > 0 (live-to-live weights in every matrix)")
    L = len(A)
    B = np.zeros(L) if B is None else np.asarray(B, dtype=np.float64)
    C = np.zeros(L) if C is None else np.asarray(C, dtype=np.float64)
    t = np.log(A).mean() - np.log(A)                           # z_{l+1} - z_l
    if not (B.any() or C.any()):
        return np.cumsum(t)[:-1]
    # Newton from the minimiser without B and C: every A-term is then equal, so H is well
    # conditioned even when the A_l span many decades (from z = 0 it can be singular in floats).
    z = np.concatenate([[0.0], np.cumsum(t)[:-1], [0.0]])

    def F(z):
        return float(np.sum(A * np.exp(z[1:] - z[:-1]) + B * np.exp(z[1:]) + C * np.exp(-z[:-1])))

    f = F(z)
    for _ in range(max_iter):
        e = A * np.exp(z[1:] - z[:-1])
        grad = e[:-1] - e[1:] + B[:-1] * np.exp(z[1:-1]) - C[1:] * np.exp(-z[1:-1])
        diag = e[:-1] + e[1:] + B[:-1] * np.exp(z[1:-1]) + C[1:] * np.exp(-z[1:-1])
        H = np.diag(diag) - np.diag(e[1:-1], 1) - np.diag(e[1:-1], -1)
        step = np.linalg.solve(H, -grad)       # H is positive definite while every A_l > 0
        dec = -grad @ step
        if dec < tol * max(f, 1.0):
            break
        t = 1.0
        while True:                                            # backtracking keeps F decreasing
            trial = z.copy()
            trial[1:-1] += t * step
            ft = F(trial)
            if ft <= f - 0.25 * t * dec or t < 1e-10:
                break
            t *= 0.5
        z, f = trial, ft
    return z[1:-1]


def _shift_layers(st: _LogScales):
    """Apply the exact per-layer shift; update the products analytically (no pass over M)."""
    xp, p, L = st.xp, st.p, st.L
    A, B, C = np.zeros(L), np.zeros(L), np.zeros(L)
    for l in range(L):
        row = st.u[l + 1]
        e = None if row is None else xp.exp(p * row)
        if e is not None and st.any_dead[l + 1]:
            live = st.live[l + 1]
            A[l] = float(xp.where(live, e * st.fwd[l], 0).sum())
            C[l] = float(xp.where(live, 0, st.fwd[l]).sum())
            if st.fwd_dead[l] is not None:
                B[l] = float(xp.where(live, e * st.fwd_dead[l], 0).sum())
        else:
            A[l] = float(st.fwd[l].sum() if e is None else e @ st.fwd[l])
            if st.fwd_dead[l] is not None:
                B[l] = float(st.fwd_dead[l].sum() if e is None else e @ st.fwd_dead[l])
    if not np.all(A > 0):  # a layer without live-to-live weights: no well-posed common shift
        return
    c = np.concatenate([[0.0], layer_shift(A, B, C) / p, [0.0]])
    for k in range(1, L):
        st.set_u(k, st.u[k] + c[k])
    for l in range(L):
        st.fwd[l] = st.fwd[l] * math.exp(-p * c[l])
        st.bwd[l] = st.bwd[l] * math.exp(p * c[l + 1])


def _multiplicative_update(st: _LogScales) -> float:
    """One update of Algorithm 1 at all hidden units at once: ``log a_i = (1/4p) log(out_i/in_i)``,
    half the exact block step (eq. 12; the AM-GM bound of eq. 14 halves it). Returns
    ``max_i |a_i - 1|``; the products are left stale (the caller refreshes them if it goes on)."""
    before = st.snapshot()
    for k, u in enumerate(before, start=1):
        st.set_u(k, u + (st.exact_layer(k) - u) / 2)
    return st.max_step(before)


def _multiplicative_step(st: _LogScales) -> float:
    """:func:`_multiplicative_update`, then the products at the new factors (two passes over M)."""
    step = _multiplicative_update(st)
    st.refresh(range(st.L), range(st.L))
    return step


def _block_step(st: _LogScales) -> float:
    """One sweep: the exact layer shift, then exact minimisation over odd layers, then even ones.

    ``fwd[l]`` reads ``u_l`` and ``bwd[l]`` reads ``u_{l+1}``, so after one parity moves only the
    products reading it are refreshed: each matrix is read once per half-sweep.
    """
    L, before = st.L, st.snapshot()
    _shift_layers(st)
    for parity in (1, 0):
        for k in range(parity or 2, L, 2):
            st.set_u(k, st.exact_layer(k))
        st.refresh([l for l in range(L) if l % 2 == parity], [l for l in range(L) if (l + 1) % 2 == parity])
    return st.max_step(before)


def minnorm_chain(net: LayeredNet, p: float = 2.0, *, method: str | None = None, delta: float = 1e-3,
                  gamma_tol: float | None = None, max_iter: int = 10_000) -> MinNormResult:
    """:func:`~gaugelit.solvers.minnorm` on a chain (:class:`~gaugelit.core.network.LayeredNet`)."""
    p = check_p(p)
    method, delta, gamma_tol, max_iter = _solver_args(method, delta, gamma_tol, max_iter)
    xp = net.xp
    with _quiet(xp):                       # overflow and underflow are detected, not warned about
        M = [_abs_pow(W, p, xp) for W in net.weights]
        st = _LogScales(M, p, xp, lambda: dead_units(net))
        healthy = _healthy(st)
    # The common case works on |W|^p as it is. Weights whose |W|^p overflows, or underflows so
    # that a unit's sums lose their digits, are solved again from a prebalanced copy in float64
    # whose every layer has largest entry 1; the scale taken out is carried in logs.
    u0, log_scale = None, 0.0
    if not healthy:
        del M, st
        M, u0, log_scale, st = _robust_start(net, p)
    step_fn = _block_step if method == "block" else _multiplicative_step
    while True:
        with _quiet(xp):
            mass0 = st.layer_objectives()
            start = _scaled(sum(mass0), log_scale, p), st.gamma()
        objective, gamma, it, converged = _iterate(
            lambda: step_fn(st), lambda: (_scaled(st.objective(), log_scale, p), st.gamma()), start,
            xp=xp, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter)
        failed = converged is None
        # The products must be right at the answer, not only at the start: entries of M that
        # underflowed there, or sums that underflow here, would make the objective and gamma those
        # of another F -- small gamma, wrong answer, no warning.
        lost = not failed and (_unhealthy_layer(st) is not None or _lost_entries_matter(st, M, net.weights))
        if not (failed or lost):
            break
        if u0 is None:
            # |W|^p was fine at the start but the factors grew out of the dtype's range on the way,
            # or weights negligible at the start weigh at the answer (layers or units many decades
            # apart): solve again from the prebalanced copy.
            del M, st
            M, u0, log_scale, st = _robust_start(net, p)
            continue
        if lost:    # not seen in tests: the prebalanced copy keeps what weighs at the minimum
            raise FloatingPointError(
                f"minnorm: near the minimum, weights too small for |W|^p to hold in float64 at "
                f"p={p:g} weigh in the objective; the answer cannot be computed (use a p closer to 1)")
        # name the layer: factors out of the dtype's range raise in _factors
        _factors([a + b for a, b in zip(u0, st.u[1:-1])], net.dtype, xp, p)
        k = _unhealthy_layer(st) or 1
        raise FloatingPointError(f"minnorm: non-finite objective after update {it} (hidden layer {k}); "
                                 f"the weights' |W|^p may overflow or underflow {M[0].dtype} at p={p}")
    if not converged:
        _warn_unconverged(method, delta, gamma_tol, max_iter, gamma[-1])
    u = st.u[1:-1] if u0 is None else [a + b for a, b in zip(u0, st.u[1:-1])]
    factors = _factors(u, net.dtype, xp, p)
    out = None
    if u0 is None and _fast_rescale_safe(st, mass0, net.dtype, p):
        out = _rescale_trusted(net, factors)
        if not all(bool(xp.isfinite(b).all()) for b in out.biases):   # biases are not in the bound
            out = None
    if out is None:
        out = _rescale_in_logs(net, u, p)
    dead = st.dead if st.dead is not None else [xp.zeros(n, dtype=bool) for n in net.sizes[1:-1]]
    return MinNormResult(net=out, factors=factors, iterations=it,
                         objective=np.array(objective), gamma=np.array(gamma),
                         dead_units=[xp.nonzero(d)[0] for d in dead], method=method,
                         converged=converged, passes=st.passes)


_LOG_MAX64 = math.log(np.finfo(np.float64).max)


def _robust_start(net: LayeredNet, p: float):
    """The solver's state on the prebalanced float64 copy (:func:`_prebalanced`), or an error
    naming the hidden layer whose weights even that cannot hold."""
    M, u0, log_scale = _prebalanced(net, p)
    with _quiet(net.xp):
        st = _LogScales(M, p, net.xp, lambda: dead_units(net))
        healthy = _healthy(st)
    if not healthy:
        k = _unhealthy_layer(st)
        raise FloatingPointError(
            f"minnorm: hidden layer {k} has units whose weights are so much smaller than the "
            f"rest of their layer that |W|^p underflows float64 at p={p:g}; the problem cannot "
            f"be represented (zero those weights, or use a p closer to 1)")
    return M, u0, log_scale, st


def _scaled(value: float, log_scale: float, p: float) -> float:
    """``value * exp(log_scale)``, or an error if it leaves float64."""
    if log_scale == 0.0 or not value > 0:
        return value
    log_value = log_scale + math.log(value)
    if log_value > _LOG_MAX64:
        raise FloatingPointError(f"minnorm: the objective sum |W|^p = exp({log_value:.6g}) overflows "
                                 f"float64 at p={p:g}; use a smaller p")
    return math.exp(log_value)


def _unit_sums(st: _LogScales, k: int):
    r, s = st.r(k), st.s(k)
    if st.any_dead[k]:
        r, s = st.xp.where(st.live[k], r, 1), st.xp.where(st.live[k], s, 1)
    return r, s


def _unhealthy_layer(st: _LogScales):
    """The first hidden layer whose units' sums are non-finite or so small that they have lost
    digits to underflow (None when every layer is fine)."""
    info = np.finfo(st.fwd[0].dtype)
    floor = float(info.tiny) / float(info.eps)
    xp, lows, highs = st.xp, [], []
    for k in range(1, st.L):
        r, s = _unit_sums(st, k)
        lows.append(xp.minimum(r.min(), s.min()))
        highs.append(xp.maximum(r.max(), s.max()))
    lows, highs = xp.stack(lows), xp.stack(highs)            # one host sync for all layers
    bad = ~(xp.isfinite(highs) & (lows >= floor))
    if not bool(bad.any()):
        return None
    return int(xp.argmax(bad)) + 1


def _lost_entries_matter(st: _LogScales, M, weights) -> bool:
    """Whether entries of ``M`` below the smallest normal float (``|W|^p`` of a nonzero weight flushed
    to 0, or kept with a subnormal's few digits) may weigh in a live unit's sums at the current ``u``.

    At ``u = 0`` such an entry is negligible next to sums ``>= tiny/eps`` (:func:`_healthy`); at the
    minimum of an extreme gauge the factors are up to ~1e300 apart and it need not be. Each lost
    entry changes ``r_i`` by less than ``tiny exp(-p u_j)`` and ``s_j`` by less than
    ``tiny exp(p u_i)``: when every unit's sums exceed ``n`` times that by ``1/eps`` (the common case,
    decided on the sums at hand), nothing matters; otherwise one pass over ``M`` looks for them."""
    xp, p, u = st.xp, st.p, st.u
    info = np.finfo(M[0].dtype)
    tiny, log_floor = float(info.tiny), math.log(float(info.tiny) / float(info.eps))
    margins = []
    with _quiet(xp):
        for k in range(1, st.L):
            r, s = _unit_sums(st, k)
            lo = 0.0 if u[k - 1] is None else xp.minimum(u[k - 1].min(), 0)
            hi = 0.0 if u[k + 1] is None else xp.maximum(u[k + 1].max(), 0)
            margins.append(xp.minimum(xp.log(r.min()) + p * lo - math.log(M[k - 1].shape[1]),
                                      xp.log(s.min()) - p * hi - math.log(M[k].shape[0])))
        if bool((xp.stack(margins) >= log_floor).all()):          # one host sync for all layers
            return False
        return any(bool(m.min() < tiny) and bool(((m < tiny) & (W != 0)).any()) for m, W in zip(M, weights))


def _healthy(st: _LogScales) -> bool:
    """Whether the solve can run on these products: every hidden unit's sums finite and clear of
    underflow, and the objective finite (the input and output layers' sums enter it too)."""
    return _unhealthy_layer(st) is None and math.isfinite(st.objective())


def _prebalanced(net: LayeredNet, p: float):
    """``|W'|^p`` in float64 for a rescaled copy ``W'`` of the weights in which every live hidden
    unit's largest incoming and outgoing magnitudes are equal and every layer's largest entry
    between live units is ``exp(g)`` (``g`` the mean of the layers' log-scales); returns
    ``(M, u0, p g)`` with ``M`` of the copy divided by ``exp(g)``, and ``u0`` the log-factors of the
    copy (0 at dead units, which keep ``a = 1``). Magnitudes are taken in logs, so the live
    entries lie in ``[0, 1]`` for any weights a float can hold."""
    xp, L = net.xp, len(net.weights)
    with np.errstate(divide="ignore") if xp is np else _null():
        logs = [xp.log(xp.abs(W.astype(np.float64))) for W in net.weights]   # -inf at zeros
    live = [None] + [~d for d in dead_units(net)] + [None]
    u = []
    for k in range(1, L):
        log_in, log_out = logs[k - 1].max(axis=1), logs[k].max(axis=0)
        ok = live[k] & xp.isfinite(log_in) & xp.isfinite(log_out)
        u.append(xp.where(ok, (xp.where(ok, log_out, 0) - xp.where(ok, log_in, 0)) / 2, 0.0))
    uu = [None] + u + [None]

    def shifted(l, rows, cols):
        out = logs[l]
        if rows is not None:
            out = out + rows[:, None]
        if cols is not None:
            out = out - cols[None, :]
        return out

    tops = []
    for l in range(L):
        part = shifted(l, uu[l + 1], uu[l])
        if live[l + 1] is not None:
            part = xp.where(live[l + 1][:, None], part, -xp.inf)
        if live[l] is not None:
            part = xp.where(live[l][None, :], part, -xp.inf)
        top = float(part.max())
        tops.append(top if math.isfinite(top) else 0.0)       # no live-to-live weight: no scale
    g = sum(tops) / L
    z = [0.0]
    for l in range(L - 1):          # common shifts z_k: every layer's largest entry becomes exp(g)
        z.append(z[-1] + g - tops[l])
    z.append(0.0)                   # the output units keep a = 1 (z_L - z_{L-1} = g - tops[-1])
    u0 = [xp.where(live[k], u[k - 1] + z[k], 0.0) for k in range(1, L)]
    uu = [None] + u0 + [None]
    M = []
    for l in range(L):
        m = shifted(l, uu[l + 1], uu[l])
        m -= g
        m *= p
        with _quiet(xp):            # dead units' entries may leave the range; _healthy says so
            M.append(xp.exp(m, out=m))
    return M, u0, p * g


def _null():
    from contextlib import nullcontext
    return nullcontext()


def _factors(u, dtype, xp, p):
    """``exp(u)`` in the network's dtype, or an error naming the hidden layer whose minimum-norm
    factors that dtype cannot hold (the balanced network is then not representable in it)."""
    info = np.finfo(dtype)
    lo, hi = math.log(float(info.tiny)), math.log(float(info.max))
    ends = xp.stack([xp.stack([v.min(), v.max()]) for v in u])
    ends = np.asarray(ends.get() if hasattr(ends, "get") else ends, dtype=np.float64)
    for k, (a, b) in enumerate(ends, start=1):
        if not (math.isfinite(a) and math.isfinite(b) and a >= lo and b <= hi):
            raise FloatingPointError(
                f"minnorm: the minimum-norm factors of hidden layer {k} span exp({a:.4g}) to exp({b:.4g}), "
                f"outside what {np.dtype(dtype).name} can hold at p={p:g}; the balanced network is not "
                f"representable in {np.dtype(dtype).name} ("
                f"{'use float64, or ' if np.dtype(dtype).itemsize < 8 else 'use '}a p nearer 1)")
    return [xp.exp(v).astype(dtype, copy=False) for v in u]


def _fast_rescale_safe(st: _LogScales, mass0, dtype, p: float) -> bool:
    """Whether ``a_i W_ij / a_j`` computed in the network's dtype can overflow neither in the
    product ``a_i W_ij`` nor in the result: every entry of a matrix is at most ``(sum |W|^p)^(1/p)``
    of it, before (``mass0``) and after the rescaling (sums at hand, no pass over the weights)."""
    log_max = math.log(float(np.finfo(dtype).max)) - 1.0
    for l, (before, after) in enumerate(zip(mass0, st.layer_objectives())):
        if not (before > 0 and after > 0 and math.isfinite(after)):
            return False
        row = st.u[l + 1]
        up = 0.0 if row is None else max(float(row.max()), 0.0)
        if math.log(before) / p + up > log_max or math.log(after) / p > log_max:
            return False
    return True


def _rescale_in_logs(net: LayeredNet, u, p: float) -> LayeredNet:
    """``W_ij exp(u_i - u_j)`` and ``b_i exp(u_i)`` in float64, each factor formed as one exponential
    (no intermediate can overflow or underflow where the result does not), cast to the network's
    dtype; an entry the dtype cannot hold is an error naming its matrix."""
    xp, dt = net.xp, net.dtype
    uu = [None] + [v.astype(np.float64) for v in u] + [None]
    weights, biases = [], []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        left = uu[l + 1] if uu[l + 1] is not None else xp.zeros(W.shape[0])
        right = uu[l] if uu[l] is not None else xp.zeros(W.shape[1])
        with _quiet(xp):
            Wn = (W.astype(np.float64) * xp.exp(left[:, None] - right[None, :])).astype(dt)
            bn = (b.astype(np.float64) * xp.exp(left)).astype(dt)
        if not (bool(xp.isfinite(Wn).all()) and bool(xp.isfinite(bn).all())):
            raise FloatingPointError(f"minnorm: the balanced weights[{l}] overflow {np.dtype(dt).name} "
                                     f"at p={p:g}; the minimum-norm network is not representable in it")
        weights.append(Wn)
        biases.append(bn)
    return LayeredNet._trusted(weights, biases, xp)


def _algorithm1_in_log_domain(M, p, u, delta, max_iter, dead_units_of, products=None):
    """Algorithm 1 for a training loop that keeps its gauge factors in the log domain.

    ``M[l] = |S_l|^p`` of stored weights ``S`` whose network is ``W_l = s diag(exp u_{l+1}) S_l
    diag(exp -u_l)`` (``u`` per hidden layer, ``s > 0`` common to all layers). Algorithm 1's
    factors are unchanged by the common ``s`` (it scales every in- and out-sum by ``s^p``), so its
    updates of ``W`` are exactly updates of ``u`` from the given ``u``: the same arithmetic as
    :func:`minnorm` with ``method="multiplicative"`` and its delta rule, without the objective and
    gamma records, and without the products the stopping update does not need.

    ``products``: the first products ``(fwd, bwd)`` at ``u`` when the caller has them (the training
    step computes them while it writes the weights); ``M`` is then a callable that forms the list,
    called only if a second update or a dead unit needs it.

    Returns ``(u, iterations, converged)``; raises ``FloatingPointError`` on a non-finite update.
    """
    xp = array_module(*(M if products is None else products[0]))
    st = _LogScales(M, p, xp, dead_units_of, u=u, products=products)
    for it in range(1, max_iter + 1):
        step = _multiplicative_update(st)
        if not math.isfinite(step):
            raise FloatingPointError(f"Algorithm 1: non-finite update {it}; the weights' |W|^p "
                                     f"may overflow or underflow {st.u[1].dtype} at p={p}")
        if step < delta:
            return st.u[1:-1], it, True
        st.refresh(range(st.L), range(st.L))
    return st.u[1:-1], max_iter, False
