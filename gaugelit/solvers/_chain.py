"""The chain specialisation of the solvers: a graph whose groups are layers, one block between
consecutive layers (a :class:`~gaugelit.core.network.LayeredNet`, an MLP from torch).

Its state works in the log domain on ``M = |W|^p`` as the network's dtype holds it: with
``u = log a`` the rescaled entry is ``M_ij exp(p (u_i - u_j))``, so every quantity is a
matrix-vector product of ``M`` with ``exp(+-p u)``. Where the graph's state carries a log-scale per
block and per group so that no magnitude a float holds can overflow, this one needs none, and
takes the common shift of the layers in closed form: the fast path on the paper's networks. A
network whose ``|W|^p`` leaves the range of its dtype is solved by the graph's state instead
(:func:`chain_healthy` decides, at the start and at the answer).

The state holds ``K >= 1`` networks of one architecture at once (arrays with a leading model
axis): :func:`~gaugelit.solvers.minnorm` solves one, the training loop's Algorithm 1
(:func:`algorithm1_in_log_domain`) the ``K`` models of a stack, each stopping by its own rule.
The batched products are NumPy's stacked ``matmul``, which runs per model the same BLAS call as a
single network's product, so a model's numbers do not depend on how many are stacked.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.backend import array_module
from ..core.gauge import _quiet
from ..core.network import LayeredNet
from ._loop import step_tolerance
from ._steps import exact_log_factor, halfway, multiplicative_update, newton_shift

__all__ = ["layer_shift", "algorithm1_in_log_domain"]


def _mv(M, w):
    """``M @ w`` per model: ``(K, n, m) @ (K, m) -> (K, n)``, one gemv each."""
    return M @ w if w.ndim == 1 else (M @ w[..., None])[..., 0]


def _vm(v, M):
    """``v @ M`` per model: ``(K, n) @ (K, n, m) -> (K, m)``."""
    return (v[..., None, :] @ M)[..., 0, :]


def _dot(a, b):
    """``a @ b`` per model: ``(K, n), (K, n) -> (K,)``."""
    return (a[..., None, :] @ b[..., :, None])[..., 0, 0]


def _host64(xp, values):
    """Arrays ``(K,)`` of module ``xp`` as one float64 host array ``(len(values), K)``: one sync
    on a device; on the host one conversion (no stack, no dispatch on the arrays' kind)."""
    if xp is np:
        return np.array(values, dtype=np.float64)
    return np.asarray(xp.stack(values).get(), dtype=np.float64)


class ChainState:
    """Log-factors ``u`` of the hidden units of ``K`` stacked chains and the products F needs.

    ``M[l]`` has shape ``(K, n_{l+1}, n_l)``; ``u[k]`` (hidden layer ``k``) ``(K, n_k)``.
    ``fwd[l] = M[l] @ (live * exp(-p u_l))`` and ``bwd[l] = (live * exp(p u_{l+1})) @ M[l]``;
    dead units keep their ``u`` (0 unless ``u`` is given) and add the constant vectors
    ``fwd_dead`` / ``bwd_dead``. ``active`` (``(K,)`` booleans, default all) says which models
    still move: the training loop stops each by its own delta rule.

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
            shapes = [f.shape[:1] + (f.shape[1], b.shape[1]) for f, b in zip(*products)]
        self.K, L = shapes[0][0], len(shapes)
        self.L = L
        dt = (M[0] if products is None else products[0][0]).dtype
        hidden = [xp.zeros((self.K, n), dtype=dt) for _, n, _ in shapes[:-1]] if u is None else list(u)
        self.u = [None] + hidden + [None]
        self.active = None                                     # None: every model moves
        self.live = [None] * (L + 1)                           # None: all live
        self.any_dead = [False] * (L + 1)
        self.fwd_dead, self.bwd_dead = [None] * L, [None] * L
        self.fwd, self.bwd = [None] * L, [None] * L
        self._ones_in = xp.ones(shapes[0][2], dtype=dt)        # the input units' exp(-p u) = 1
        self._ones_out = xp.ones((self.K, shapes[-1][1]), dtype=dt)   # the output units' exp(p u) = 1
        self._size = [n * m for _, n, m in shapes]
        self._total = float(sum(self._size))
        self.passes = 0.0
        self.groups = list(range(1, L))                        # the hidden layers
        self.colours = [c for c in (self.groups[0::2], self.groups[1::2]) if c]   # odd, then even layers
        self.self_loops = frozenset()
        if products is None:
            self.refresh_products(range(L), range(L))
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
        """Take the dead-unit masks (``(K, n_k)`` per hidden layer) into account: the products are
        recomputed over live units."""
        xp, L = self.xp, self.L
        self.dead = dead
        self.live = [None] + [~d for d in dead] + [None]
        self.any_dead = [False] + [bool(d.any()) for d in dead] + [False]
        for l in range(L):
            if self.any_dead[l]:
                self.fwd_dead[l] = _mv(self.M[l], dead[l - 1] * xp.exp(-self.p * self.u[l]))
            if self.any_dead[l + 1]:
                self.bwd_dead[l] = _vm(dead[l] * xp.exp(self.p * self.u[l + 1]), self.M[l])
        self.refresh_products(range(L), range(L))

    # -- matrix-vector products -----------------------------------------------------------------
    def _exp(self, k, sign):
        if self.u[k] is None:
            return None
        e = self.xp.exp(sign * self.p * self.u[k])
        return e * self.live[k] if self.any_dead[k] else e

    # Row and column sums are matrix-vector products with ones: BLAS gemv reads M once at full
    # speed, where NumPy's M.sum(axis=1) is several times slower.
    def refresh_products(self, layers_fwd, layers_bwd):
        for l in layers_fwd:
            w = self._exp(l, -1)
            self.fwd[l] = _mv(self.M[l], self._ones_in if w is None else w)
            self.passes += self._size[l] / self._total
        for l in layers_bwd:
            v = self._exp(l + 1, +1)
            self.bwd[l] = _vm(self._ones_out if v is None else v, self.M[l])
            self.passes += self._size[l] / self._total

    def refresh(self, groups):
        """The products that read the factors of the hidden layers ``groups``: ``fwd[k]`` reads
        ``u_k``, ``bwd[k - 1]`` reads it too."""
        self.refresh_products(groups, [k - 1 for k in groups])

    # -- quantities at the current u (all products up to date) ----------------------------------
    def r(self, k):  # sum_j M_ij exp(-p u_j) over the units j feeding hidden unit i of layer k
        f = self.fwd[k - 1]
        return f if self.fwd_dead[k - 1] is None else f + self.fwd_dead[k - 1]

    def s(self, k):  # sum_j M_ji exp(p u_j) over the units j that hidden unit i feeds
        b = self.bwd[k]
        return b if self.bwd_dead[k] is None else b + self.bwd_dead[k]

    def layer_objectives(self) -> np.ndarray:
        """``sum_ij M_ij exp(p (u_i - u_j))`` of each matrix at the current ``u``: a float64 host
        array ``(L, K)``."""
        out = []
        for l in range(self.L):
            row = self.u[l + 1]
            rl = self.fwd[l] if self.fwd_dead[l] is None else self.fwd[l] + self.fwd_dead[l]
            out.append(rl.sum(axis=-1) if row is None else _dot(self.xp.exp(self.p * row), rl))
        return _host64(self.xp, out)

    def objective(self) -> np.ndarray:
        """F times p, per model (float64, on the host)."""
        total = 0
        for layer in self.layer_objectives():      # added layer by layer, in float64
            total = total + layer
        return total

    def gamma(self) -> np.ndarray:
        """The imbalance (eq. 20) per model, on the host."""
        xp, g = self.xp, []
        for k in range(1, self.L):
            e = xp.exp(self.p * self.u[k])
            fan_in, fan_out = e * self.r(k), self.s(k) / e
            if self.any_dead[k]:  # dead units: leave out, and keep 0/0 out of the arithmetic
                fan_in = xp.where(self.live[k], fan_in, 1)
                fan_out = xp.where(self.live[k], fan_out, 1)
            ratio = xp.abs(fan_in - fan_out) / (fan_in + fan_out)
            g.append(ratio.max(axis=-1))
        return _host64(xp, g).max(axis=0)                       # one host sync, not one per layer

    # -- moves ------------------------------------------------------------------------------------
    def set_u(self, k, new):
        """Move the live units of layer k of the active models to ``new``; the others keep their ``u``."""
        xp = self.xp
        if self.any_dead[k]:
            new = xp.where(self.live[k], new, self.u[k])
        if self.active is not None:
            new = xp.where(self.active[:, None], new, self.u[k])
        self.u[k] = new

    def target(self, k):
        """Block minimiser of F over layer k (others fixed): ``exp(2p u_i) = s_i / r_i``."""
        r, s = self.r(k), self.s(k)
        if self.any_dead[k]:
            r, s = self.xp.where(self.live[k], r, 1), self.xp.where(self.live[k], s, 1)
        return exact_log_factor(self.xp.log(r), self.xp.log(s), self.p)

    def move(self, k, target, half=False):
        self.set_u(k, halfway(self.u[k], target) if half else target)

    def snapshot(self):
        # No copies: every move (set_u) binds a new array, so the old ones stay as they were.
        return list(self.u[1:-1])

    def max_step(self, before):
        """``max_i |a_i - 1|`` of the move from ``before`` to the current factors, per model
        (a device array ``(K,)``)."""
        xp = self.xp
        return xp.stack([xp.abs(xp.expm1(u - b)).max(axis=-1) for u, b in zip(self.u[1:-1], before)]).max(axis=0)

    def shift(self):
        """Apply the exact per-layer shift (:func:`layer_shift`) of every model; the products are
        updated analytically (no pass over M)."""
        xp, p, L, K = self.xp, self.p, self.L, self.K
        A, BC, BC_at = [], [], []      # B and C only where dead units make them nonzero
        for l in range(L):
            row = self.u[l + 1]
            e = None if row is None else xp.exp(p * row)
            if e is not None and self.any_dead[l + 1]:
                live = self.live[l + 1]
                A.append(xp.where(live, e * self.fwd[l], 0).sum(axis=-1))
                BC.append(xp.where(live, 0, self.fwd[l]).sum(axis=-1))
                BC_at.append((1, l))
                if self.fwd_dead[l] is not None:
                    BC.append(xp.where(live, e * self.fwd_dead[l], 0).sum(axis=-1))
                    BC_at.append((0, l))
            else:
                A.append(self.fwd[l].sum(axis=-1) if e is None else _dot(e, self.fwd[l]))
                if self.fwd_dead[l] is not None:
                    BC.append(self.fwd_dead[l].sum(axis=-1) if e is None else _dot(e, self.fwd_dead[l]))
                    BC_at.append((0, l))
        A = _host64(xp, A)                                    # (L, K): one sync
        B, C = np.zeros((L, K)), np.zeros((L, K))
        if BC:
            for (which, l), values in zip(BC_at, _host64(xp, BC)):
                (C if which else B)[l] = values
        shifts = np.zeros((L + 1, K))
        for j in range(K):
            if np.all(A[:, j] > 0):  # else a layer without live-to-live weights: no well-posed shift
                shifts[1:-1, j] = layer_shift(A[:, j], B[:, j], C[:, j]) / p
        dt = self.fwd[0].dtype
        for k in range(1, L):
            self.set_u(k, self.u[k] + xp.asarray(shifts[k], dtype=dt)[:, None])
        # math.exp, then the dtype: the same factor a single network's floats give; one transfer.
        # A shift beyond float64 gives inf (not OverflowError): the records turn non-finite and the
        # solve goes on in the graph's scale-safe state
        down = xp.asarray([[_exp(-p * c) for c in row] for row in shifts], dtype=dt)[..., None]
        up = xp.asarray([[_exp(p * c) for c in row] for row in shifts], dtype=dt)[..., None]
        for l in range(L):
            self.fwd[l] = self.fwd[l] * down[l]
            self.bwd[l] = self.bwd[l] * up[l + 1]


def _exp(x: float) -> float:
    """``math.exp``, inf where it would raise OverflowError."""
    return math.exp(x) if x < 709.0 else math.inf


def layer_shift(A, B=None, C=None, tol=1e-13, max_iter=100):
    """Minimise ``sum_l A_l e^{z_{l+1}-z_l} + B_l e^{z_{l+1}} + C_l e^{-z_l}`` over ``z_1..z_{L-1}``
    (``z_0 = z_L = 0``): F restricted to one common log-scale shift ``z_k = p c_k`` per layer.

    ``A_l`` sums the rescaled ``|W|^p`` of matrix ``l`` between live units, ``B_l`` from dead units of
    layer ``l`` into live units, ``C_l`` from live units into dead units of layer ``l+1``. Without dead
    units the minimiser is closed-form: every ``A_l e^{z_{l+1}-z_l}`` equals the geometric mean of A.
    With them, :func:`~gaugelit.solvers._steps.newton_shift` from that point, where every A-term is
    equal, so the Hessian is well conditioned even when the A_l span many decades.
    """
    A = np.asarray(A, dtype=np.float64)
    if not np.all(A > 0):
        raise ValueError("layer_shift: every A_l must be > 0 (live-to-live weights in every matrix)")
    L = len(A)
    B = np.zeros(L) if B is None else np.asarray(B, dtype=np.float64)
    C = np.zeros(L) if C is None else np.asarray(C, dtype=np.float64)
    t = np.log(A).mean() - np.log(A)                           # z_{l+1} - z_l
    closed = np.cumsum(t)[:-1]
    if not (B.any() or C.any()):
        return closed
    # terms exp(log coeff + z[dst] - z[src]); z[k - 1] is layer k's shift, -1 a fixed layer
    hidden = lambda k: k - 1 if 1 <= k <= L - 1 else -1        # noqa: E731
    terms = [(math.log(A[l]), hidden(l + 1), hidden(l)) for l in range(L)]
    terms += [(math.log(B[l]), hidden(l + 1), -1) for l in range(L) if B[l] > 0]
    terms += [(math.log(C[l]), -1, hidden(l)) for l in range(L) if C[l] > 0]
    c, dst, src = zip(*terms)
    # polish: a shift ~sqrt(tol) off at the minimum is repeated by every sweep of the block method,
    # which then stalls (gamma stuck near 1e-9 at p = 1 with dead units; issue 22)
    return newton_shift(c, dst, src, L - 1, z0=closed, tol=tol, max_iter=max_iter, polish=True)


# -- is the chain's own state fit for this network? ------------------------------------------------

def _unit_sums(st: ChainState, k: int):
    r, s = st.r(k), st.s(k)
    if st.any_dead[k]:
        r, s = st.xp.where(st.live[k], r, 1), st.xp.where(st.live[k], s, 1)
    return r, s


def unhealthy_layer(st: ChainState):
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


def unhealthy_models(st: ChainState):
    """Per model (a device boolean array ``(K,)``): some hidden unit's sums are non-finite or so
    small that they have lost digits to underflow (:func:`unhealthy_layer`, model by model)."""
    info = np.finfo(st.fwd[0].dtype)
    floor = float(info.tiny) / float(info.eps)
    xp, bad = st.xp, None
    with _quiet(xp):
        for k in range(1, st.L):
            r, s = _unit_sums(st, k)
            low = xp.minimum(r.min(axis=-1), s.min(axis=-1))
            high = xp.maximum(r.max(axis=-1), s.max(axis=-1))
            b = ~(xp.isfinite(high) & (low >= floor))
            bad = b if bad is None else bad | b
    return bad


def lost_entries_matter(st: ChainState, M, weights) -> bool:
    """Whether entries of ``M`` below the smallest normal float (``|W|^p`` of a nonzero weight flushed
    to 0, or kept with a subnormal's few digits) may weigh in a live unit's sums at the current ``u``.

    At ``u = 0`` such an entry is negligible next to sums ``>= tiny/eps`` (:func:`chain_healthy`); at
    the minimum of an extreme gauge the factors are up to ~1e300 apart and it need not be. Each lost
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
            margins.append(xp.minimum(xp.log(r.min()) + p * lo - math.log(M[k - 1].shape[-1]),
                                      xp.log(s.min()) - p * hi - math.log(M[k].shape[-2])))
        if bool((xp.stack(margins) >= log_floor).all()):          # one host sync for all layers
            return False
        return any(bool(m.min() < tiny) and bool(((m < tiny) & (W != 0)).any()) for m, W in zip(M, weights))


def chain_healthy(st: ChainState) -> bool:
    """Whether the chain's state can solve from these products: every hidden unit's sums finite and
    clear of underflow, and the objective finite (the input and output layers' sums enter it too)."""
    return unhealthy_layer(st) is None and bool(np.isfinite(st.objective()).all())


# -- the answer as a network -----------------------------------------------------------------------

def factors_in_dtype(u, dtype, xp, p):
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


def fast_rescale_safe(st: ChainState, mass0, dtype, p: float) -> bool:
    """Whether ``a_i W_ij / a_j`` computed in the network's dtype can overflow neither in the
    product ``a_i W_ij`` nor in the result: every entry of a matrix is at most ``(sum |W|^p)^(1/p)``
    of it, before (``mass0``) and after the rescaling (sums at hand, no pass over the weights)."""
    log_max = math.log(float(np.finfo(dtype).max)) - 1.0
    for l, (before, after) in enumerate(zip(mass0[:, 0], st.layer_objectives()[:, 0])):
        if not (before > 0 and after > 0 and math.isfinite(after)):
            return False
        row = st.u[l + 1]
        up = 0.0 if row is None else max(float(row.max()), 0.0)
        if math.log(before) / p + up > log_max or math.log(after) / p > log_max:
            return False
    return True


def rescale_in_logs(net: LayeredNet, u, p: float) -> LayeredNet:
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


# -- Algorithm 1 in a training loop ------------------------------------------------------------------

def algorithm1_in_log_domain(M, p, u, delta, max_iter, dead_units_of, products=None):
    """Algorithm 1 for a training loop that keeps the gauge factors of ``K`` stacked models in the
    log domain, each model stopping by its own delta rule (its last update applied and counted).

    ``M[l] = |S_l|^p`` (``(K, n_{l+1}, n_l)``) of stored weights ``S`` whose networks are
    ``W_l = s diag(exp u_{l+1}) S_l diag(exp -u_l)`` (``u`` per hidden layer, ``(K, n)``; ``s > 0``
    common to all layers). Algorithm 1's factors are unchanged by the common ``s`` (it scales every
    in- and out-sum by ``s^p``), so its updates of ``W`` are exactly updates of ``u`` from the given
    ``u``: the same arithmetic as :func:`~gaugelit.solvers.minnorm` with ``method="multiplicative"``
    and its delta rule, without the objective and gamma records, and without the products the
    stopping update does not need.

    ``products``: the first products ``(fwd, bwd)`` at ``u`` when the caller has them (the training
    step computes them while it writes the weights); ``M`` is then a callable that forms the list,
    called only if a second update or a dead unit needs it. ``dead_units_of()`` gives the dead-unit
    masks ``(K, n)`` per hidden layer, called only when some sum is zero.

    Returns ``(u, iterations, failed_at, converged)``: per model (host int arrays ``(K,)``) the
    updates applied and the update at which a factor turned non-finite (0: none); ``converged`` is
    False when some model still moved after ``max_iter`` updates. A model whose sums at ``u`` its
    dtype does not hold (non-finite, or lost to underflow: :func:`unhealthy_models`, as
    :func:`~gaugelit.solvers.minnorm` decides for the chain's state) is stopped and reported as
    failed at update 1, also where its factors stayed finite: its updates would be another F's.
    The caller re-solves the failed models from their true weights (the training loop by
    :func:`~gaugelit.solvers.minnorm`, which takes a scale-safe state).
    """
    xp = array_module(*(M if products is None else products[0]))
    delta = step_tolerance(delta, p)      # minnorm's delta rule: delta * min(1, 2/p)
    with _quiet(xp):                      # out-of-range values are detected, not warned about
        st = ChainState(M, p, xp, dead_units_of, u=u, products=products)
    K = st.K
    active = xp.ones(K, dtype=bool)
    iterations = np.zeros(K, dtype=np.int64)
    failed_at = np.zeros(K, dtype=np.int64)
    sick = unhealthy_models(st)           # read with the first update's flags: no extra sync
    for it in range(1, max_iter + 1):
        st.active = active
        with _quiet(xp):
            step = multiplicative_update(st)
        finite = xp.isfinite(step)
        if sick is not None:
            finite, sick = finite & ~sick, None
        done = ~finite | (step < delta)
        flags = xp.stack([active, active & ~finite, active & ~done])       # one read per update
        flags = np.asarray(flags.get() if hasattr(flags, "get") else flags)
        iterations += flags[0]
        failed_at[flags[1]] = it
        if not flags[2].any():
            return st.u[1:-1], iterations, failed_at, True
        active = xp.asarray(flags[2])
        # all products, the input's and output's too: the given ones were summed by the training
        # step's row blocks, and these are the whole-matrix sums the next updates start from
        with _quiet(xp):
            st.refresh_products(range(st.L), range(st.L))
    return st.u[1:-1], iterations, failed_at, False
