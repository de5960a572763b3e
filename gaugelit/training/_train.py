"""Learning: the softmax log-loss (eq. 42), back-propagation, the SGD and EGD steps (eqs. 38-41),
the regularised loss (eq. 33), and the training loop with optional gauge fixing before each step."""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from ..core.backend import array_module
from ..core.checks import integer, plain_array, real, switch
from ..core.gauge import _abs_pow, _exp_total, _log_pnorm_terms, dead_units
from ..core.network import LayeredNet, check_inputs, check_p
from ..solvers import ConvergenceWarning, minnorm
from ..solvers._chain import algorithm1_in_log_domain

__all__ = ["TrainingDiverged", "loss_and_grads", "regularizer", "sgd_step", "egd_step", "evaluate",
           "train", "OPTIMIZERS", "EGD_BIASES", "egd_bias_scale"]

#: The paper's settings (section 4.1): SGD pairs with l2 weight decay, EGD with l1.
OPTIMIZERS = {
    "sgd": dict(p=2.0, lr=1e-3, weight_decay=1e-4),
    "egd": dict(p=1.0, lr=0.1, weight_decay=5e-6),
}
LOSSES = ("log", "mse")


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite; the message says at which epoch and step."""


def _check_targets(net, X, y, loss, where, x_name="X", y_name="y"):
    if not isinstance(net, LayeredNet):
        raise TypeError(f"{where}: expected a LayeredNet, got {type(net).__name__}")
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{where}: {y_name} must be an array, got {type(y).__name__}")
    plain_array(y, f"{where}: {y_name}")
    xp = array_module(X, y, net.weights[0], where=f"{where}: {x_name}, {y_name} and the network")
    if loss not in LOSSES:
        raise ValueError(f"{where}: unknown loss {loss!r}; choose one of {LOSSES}")
    check_inputs(net, X, f"{where}: {x_name}")
    n_out = net.sizes[-1]
    if loss == "log":
        if y.ndim != 1 or y.shape[0] != X.shape[0] or y.dtype.kind not in "iu":
            raise ValueError(f"{where}: the log-loss needs integer labels of shape ({X.shape[0]},), "
                             f"got {y.dtype} {tuple(y.shape)}")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= n_out):
            raise ValueError(f"{where}: labels must lie in [0, {n_out}), got [{int(y.min())}, {int(y.max())}]")
    elif y.shape != (X.shape[0], n_out):
        raise ValueError(f"{where}: the mse loss needs targets of shape ({X.shape[0]}, {n_out}), "
                         f"got {tuple(y.shape)}")
    elif y.dtype.kind != "f" or not bool(xp.isfinite(y).all()):
        raise ValueError(f"{where}: {y_name} must be finite real targets for the mse loss")
    return xp


def _forward(net, X):
    """Outputs and the inputs of every layer (``acts[l]`` feeds ``weights[l]``)."""
    acts, h, L = [X], X, len(net.weights)
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        h = h @ W.T + b
        if l < L - 1:
            h = net.xp.maximum(h, 0)
            acts.append(h)
    return h, acts


def _loss_and_output_grad(xp, out, y, loss):
    """Mean loss over the batch and its gradient with respect to the outputs."""
    n = out.shape[0]
    if loss == "log":
        shifted = out - out.max(axis=1, keepdims=True)          # stable softmax (eq. 42)
        e = xp.exp(shifted)
        z = e.sum(axis=1, keepdims=True)
        rows = xp.arange(n)
        value = (xp.log(z[:, 0]) - shifted[rows, y]).mean()
        d = e / z
        d[rows, y] -= 1
    else:
        r = out - y
        value = (r * r).sum(axis=1).mean()
        d = 2 * r
    return value, d / n


def loss_and_grads(net: LayeredNet, X, y, loss: str = "log"):
    """The mean cost over ``(X, y)`` and its gradients by back-propagation.

    ``loss="log"``: the softmax log-loss of eq. (42) with integer labels ``y``;
    ``loss="mse"``: the mean over examples of ``sum_alpha (f_alpha(x) - y_alpha)^2``.
    Returns ``(loss, grad_weights, grad_biases)``; ``loss`` is a 0-d array on the network's backend.
    """
    xp = _check_targets(net, X, y, loss, "loss_and_grads")
    return _loss_and_grads(net, X.astype(net.dtype, copy=False), y, loss, xp)


def _loss_and_grads(net, X, y, loss, xp):
    out, acts = _forward(net, X)
    value, d = _loss_and_output_grad(xp, out, y, loss)
    L = len(net.weights)
    gw, gb = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        gw[l] = d.T @ acts[l]
        gb[l] = d.sum(axis=0)
        if l:
            d = (d @ net.weights[l]) * (acts[l] > 0)            # ReLU'(z) = [z > 0]
    return value, gw, gb


def regularizer(net: LayeredNet, p: float):
    """``R = (1/p) sum_ij |W_ij|^p`` (eq. 33 without lambda), as a 0-d float64 array.

    Right at any scale where ``R`` is a finite float64; outside that range it raises
    ``FloatingPointError`` naming the layer (see :func:`gaugelit.pnorm`)."""
    p = check_p(p)
    total = _exp_total(_log_pnorm_terms(net.weights, p, net.xp), f"sum |W|^p at p={p:g}")
    return net.xp.asarray(total / p, dtype=np.float64)


def _trained_biases(net, train_hidden_biases):
    L = len(net.biases)
    return range(L) if train_hidden_biases else (L - 1,)


def sgd_step(net: LayeredNet, grad_weights, grad_biases, lr: float, weight_decay: float, *,
             train_hidden_biases: bool = False) -> None:
    """One SGD step with l2 weight decay, in place (eqs. 38-39):
    ``W <- W - lr (g + lambda W)``; only the output biases move unless ``train_hidden_biases``."""
    for W, g in zip(net.weights, grad_weights):
        if weight_decay:
            W *= 1 - lr * weight_decay
        W -= lr * g
    for l in _trained_biases(net, train_hidden_biases):
        net.biases[l] -= lr * grad_biases[l]


#: How EGD updates the biases it trains: ``"plus-minus"`` (the default) is Kivinen & Warmuth's EG+-,
#: ``b = b+ - b-`` with ``b+, b- > 0`` each updated by eq. (41); ``"as-printed"`` is eq. (41) applied
#: to ``b`` itself, under which a bias that starts at zero (as :func:`he_init` gives) never moves.
EGD_BIASES = ("plus-minus", "as-printed")


def _eg_plus_minus(xp, b, g, lr, beta):
    """EG+- on ``b = b+ - b-``: ``b+ <- b+ exp(-lr g)``, ``b- <- b- exp(lr g)``. The product
    ``b+ b- = beta^2`` is conserved, so ``b`` alone is the state:
    ``b <- b cosh(lr g) - sqrt(b^2 + 4 beta^2) sinh(lr g)``. Returns the new ``b``."""
    t = lr * g
    return b * xp.cosh(t) - xp.sqrt(b * b + 4 * beta * beta) * xp.sinh(t)


def egd_bias_scale(net: LayeredNet, layer: int) -> float:
    """``beta`` of EG+- for the biases of ``weights[layer]``'s units: half the mean magnitude of that
    layer's weights, so that a bias starting at zero moves at first as fast as a typical weight
    of the layer (EGD moves a weight ``w`` by about ``lr |w| g``, and ``b`` by ``lr (b+ + b-) g``)."""
    return 0.5 * float(net.xp.abs(net.weights[layer]).mean())


def egd_step(net: LayeredNet, grad_weights, grad_biases, lr: float, weight_decay: float, *,
             train_hidden_biases: bool = False, bias_scale=None) -> None:
    """One exponentiated-gradient step with l1 weight decay, in place (eqs. 40-41):
    ``W <- W exp(-lr sign(W) g - lr lambda)``; signs never change, and a zero stays zero.

    ``bias_scale=None`` updates the trained biases by eq. (41) as printed (a zero bias stays zero);
    a number, or one per layer, is ``beta`` of EG+- (:data:`EGD_BIASES`), which moves any bias."""
    xp = net.xp
    for W, g in zip(net.weights, grad_weights):
        W *= xp.exp(-lr * (xp.sign(W) * g + weight_decay))
    for l in _trained_biases(net, train_hidden_biases):
        b = net.biases[l]
        if bias_scale is None:
            b *= xp.exp(-lr * xp.sign(b) * grad_biases[l])
        else:
            beta = bias_scale[l] if isinstance(bias_scale, (list, tuple)) else bias_scale
            b[...] = _eg_plus_minus(xp, b, grad_biases[l], lr, beta)


def _apply_update(xp, S, G, optimizer, decay):
    """Write one optimizer step into the stored weights ``S`` in place, given ``G`` (overwritten):
    SGD adds ``G`` (``alpha`` times the gradient; a non-positive ``decay`` is applied here, not in
    the scale), EGD multiplies by ``exp(sign(S) G)`` with ``G = -lr`` times the gradient."""
    if optimizer == "sgd":
        if decay <= 0:
            S *= decay
        S += G
    else:
        G *= xp.sign(S)
        xp.exp(G, out=G)
        S *= G


def _fold(stored):
    """Fold the log-factors ``u`` and the scale ``s`` of a stored network into its weights ``S``,
    biases ``c`` and EG+- scales ``beta``, in place: then ``u = 0``, ``s = 1``. The unit axis is the
    last, so one function serves one network (``_StoredNet``) and a stack of them (``batched``)."""
    xp = stored.xp
    e = [None] + [None if stored.u_zero else xp.exp(u) for u in stored.u] + [None]
    for l, S in enumerate(stored.S):
        if e[l + 1] is not None:
            xp.multiply(S, (stored.s * e[l + 1])[..., :, None], out=S)
            stored.c[l] *= e[l + 1]
            if l in stored.beta:       # b+ and b- rescale with b, so beta does too
                stored.beta[l] = stored.beta[l] * e[l + 1]
        elif stored.s != 1.0:
            S *= stored.s
        if e[l] is not None:
            xp.divide(S, e[l][..., None, :], out=S)
    stored.u = [xp.zeros_like(u) for u in stored.u]
    stored.s, stored.u_zero = 1.0, True


class _StoredNet:
    """The network a training loop owns, kept so that gauge fixing and weight decay never rewrite it.

    The weights and biases are ``W_l = s diag(e^{u_{l+1}}) S_l diag(e^{-u_l})`` and
    ``b_l = e^{u_{l+1}} c_l``, with log gauge factors ``u`` per hidden layer (``u = 0`` on input
    and output units) and one weight-decay scale ``s > 0``. A gauge transformation only moves
    ``u`` and SGD's decay ``W <- (1 - lr lambda) W`` only moves ``s``: no pass over the weights.
    Since ReLU is positively homogeneous, the forward pass runs on ``(S, c)`` with ``s`` applied
    to each layer's product (``t_l = e^{-u_l} h_l``), and back-propagation carries
    ``d_l = e^{u_l} dloss/dz_l``. The true gradient is ``diag(e^{-u_{l+1}}) d^T t diag(e^{u_l})``,
    so an optimizer step is one rank-``batch`` update of ``S`` with its small factors scaled.
    :meth:`materialize` writes the true network into ``S`` and ``c`` (once per epoch).

    The update is written in row blocks that fit the CPU core's cache; with gauge fixing on, each
    block's ``|S|^p`` is taken right after it is written, giving the products the next solve of
    Algorithm 1 starts from. On a balanced network that solve stops after one update, so gauge
    fixing costs no extra pass over the weights (the GPU takes each matrix as one block).
    """

    #: fold u and s into the arrays when factors drift this far (keeps S well inside float range)
    U_MAX, S_MIN = 8.0, 1e-2
    #: on the CPU, weights are updated in row blocks of about this many bytes, so that each block's
    #: gradient, update and |S|^p stay in the core's cache (the GPU takes each matrix whole)
    BLOCK_BYTES = 1 << 19

    def __init__(self, net: LayeredNet):
        xp = self.xp = net.xp
        self.S = [W.copy() for W in net.weights]
        self.c = [b.copy() for b in net.biases]
        self.u = [xp.zeros(n, dtype=net.dtype) for n in net.sizes[1:-1]]
        self.s = 1.0
        self.u_zero = True             # u == 0: skip the factor arithmetic
        item = np.dtype(net.dtype).itemsize
        self.rows = [W.shape[0] if xp is not np else
                     max(1, min(W.shape[0], self.BLOCK_BYTES // (item * W.shape[1]))) for W in self.S]
        self.block = [xp.empty((r, W.shape[1]), dtype=W.dtype) for r, W in zip(self.rows, self.S)]
        self._M = None                 # |S|^p, allocated when a solve needs a second update
        self.gauge_p = None            # the exponent of the gauge fixing, once it is on
        self._products = None          # Algorithm 1's first products at (S, u), from the last step
        self.beta = {}                 # EG+- of the biases: layer -> beta in stored coordinates

    @property
    def net(self) -> LayeredNet:
        """The stored arrays as a network (the true one only right after :meth:`materialize`)."""
        return LayeredNet._trusted(self.S, self.c, self.xp)

    def materialize(self) -> LayeredNet:
        """Fold ``u`` and ``s`` into ``S`` and ``c`` in place; return the true network."""
        if self.u_zero and self.s == 1.0:
            return self.net
        _fold(self)
        self._products = None
        return self.net

    def maybe_fold(self):
        """Materialize when ``u`` or ``s`` have drifted far (a host sync: call it now and then)."""
        if self.s < self.S_MIN or (not self.u_zero and
                                   max(float(self.xp.abs(u).max()) for u in self.u) > self.U_MAX):
            self.materialize()

    def gauge_fix(self, p, delta, max_iter=10_000) -> int:
        """Algorithm 1 (tolerance ``delta``) on the true weights; returns its number of updates.

        Its first products come from the last step, which computed them as it wrote the weights,
        or else from one blocked pass over ``S``; ``|S|^p`` is formed only if a second update (or a
        dead unit) needs it."""
        if self._products is None or self.gauge_p != p:
            self.gauge_p = p
            self._products = self._blocked_pass(None)
        fwd, bwd = self._products
        u, its, failed_at, converged = algorithm1_in_log_domain(
            lambda: [m[None] for m in self._power_matrices()], p, [v[None] for v in self.u], delta, max_iter,
            lambda: [d[None] for d in dead_units(self.net)], products=([f[None] for f in fwd], [b[None] for b in bwd]))
        if failed_at[0]:
            raise FloatingPointError(f"Algorithm 1: non-finite update {failed_at[0]}; the weights' |W|^p "
                                     f"may overflow or underflow {self.S[0].dtype} at p={p}")
        iterations = int(its[0])
        self.u, self.u_zero, self._products = [v[0] for v in u], False, None
        if not converged:
            warnings.warn(f"gauge fixing: max|a-1| < {delta} not reached in {max_iter} updates",
                          ConvergenceWarning, stacklevel=3)
        return iterations

    def _power_matrices(self):
        xp, p = self.xp, self.gauge_p
        if self._M is None:
            self._M = [xp.empty_like(S) for S in self.S]
        return [_abs_pow(S, p, xp, out=M) for S, M in zip(self.S, self._M)]

    def _product_weights(self):
        """``exp(-p u)`` at each matrix's input units and ``exp(p u)`` at its output units."""
        xp, p, dt = self.xp, self.gauge_p, self.S[0].dtype
        w = [xp.ones(self.S[0].shape[1], dtype=dt)] + [xp.exp(-p * u) for u in self.u]
        v = [xp.exp(p * u) for u in self.u] + [xp.ones(self.S[-1].shape[0], dtype=dt)]
        return w, v

    def _blocked_pass(self, update):
        """One pass over the weights, row block by row block: ``update(l, r0, r1, block)`` (if any)
        writes rows ``r0:r1`` of ``S_l``, then, with the gauge fixing on, ``|S|^p`` of the block
        (in the block buffer, still in cache) adds to the products Algorithm 1 starts from:
        ``fwd_l = |S_l|^p exp(-p u_l)`` and ``bwd_l = exp(p u_{l+1}) |S_l|^p``."""
        xp, p = self.xp, self.gauge_p
        if p is None:
            for l in range(len(self.S) - 1, -1, -1):
                for r0 in range(0, self.S[l].shape[0], self.rows[l]):
                    r1 = min(r0 + self.rows[l], self.S[l].shape[0])
                    update(l, r0, r1, self.block[l][:r1 - r0])
            return None
        w, v = self._product_weights()
        fwd, bwd = [None] * len(self.S), [None] * len(self.S)
        for l in range(len(self.S) - 1, -1, -1):
            S, n = self.S[l], self.S[l].shape[0]
            fwd[l] = xp.empty(n, dtype=S.dtype)
            bwd[l] = xp.zeros(S.shape[1], dtype=S.dtype)
            for r0 in range(0, n, self.rows[l]):
                r1 = min(r0 + self.rows[l], n)
                block = self.block[l][:r1 - r0]
                if update is not None:
                    update(l, r0, r1, block)
                M = _abs_pow(S[r0:r1], p, xp, out=block)
                xp.matmul(M, w[l], out=fwd[l][r0:r1])
                bwd[l] += v[l][r0:r1] @ M
        return fwd, bwd

    def _forward(self, X):
        """Outputs and the stored activations ``t_l`` that feed ``S_l`` (``t_0 = X``)."""
        xp, L, acts, t = self.xp, len(self.S), [X], X
        for l, (S, c) in enumerate(zip(self.S, self.c)):
            t = t @ S.T
            if self.s != 1.0:
                t *= self.s
            t += c
            if l < L - 1:
                xp.maximum(t, 0, out=t)
                acts.append(t)
        return t, acts

    def step(self, X, y, loss, optimizer, lr, weight_decay, train_hidden_biases=False,
             extra_weights=None, extra_biases=None):
        """One optimizer step on the batch ``(X, y)``; returns the batch loss (0-d array).

        ``extra_weights``/``extra_biases`` are gradients added to the data gradient (the soft gauge
        penalty); they are in true coordinates, so they need ``materialize()`` first.
        """
        xp, L = self.xp, len(self.S)
        if extra_weights is not None and not (self.u_zero and self.s == 1.0):
            raise RuntimeError("_StoredNet.step: extra gradients need a materialized network")
        decay = 1.0 - lr * weight_decay if optimizer == "sgd" else math.exp(-lr * weight_decay)
        if decay <= 0:                   # not a positive scale: apply it to the arrays directly
            self.materialize()
        out, acts = self._forward(X)
        value, d = _loss_and_output_grad(xp, out, y, loss)        # d_L: output units have u = 0
        e = [None] + ([None] * (L - 1) if self.u_zero else [xp.exp(u) for u in self.u]) + [None]
        trained = set(_trained_biases(self.net, train_hidden_biases))
        factors = [None] * L           # per layer: the update's small left and right factors
        for l in range(L - 1, -1, -1):
            S, t = self.S[l], acts[l]
            d_below = None
            if l:                                                # back-propagate before S_l moves
                d_below = d @ S
                if self.s != 1.0:
                    d_below *= self.s
                d_below *= t > 0
            if optimizer == "sgd":       # W_new = decay W - lr G  <=>  s *= decay, S += alpha (...)
                alpha = -lr / (decay * self.s) if decay > 0 else -lr
                left = d * (alpha if e[l + 1] is None else alpha / (e[l + 1] * e[l + 1]))
                right = t if e[l] is None else t * (e[l] * e[l])
            else:                        # EGD: S *= exp(-lr sign(S) G), decay goes into s
                alpha = -lr
                left = d * (-lr if e[l + 1] is None else -lr / e[l + 1])
                right = t if e[l] is None else t * e[l]
            factors[l] = (left, right, alpha)
            if l in trained:
                gb = d.sum(axis=0)                               # e^{u} times the true gradient
                if e[l + 1] is not None:
                    gb /= e[l + 1]
                if extra_biases is not None:
                    gb += extra_biases[l]
                c = self.c[l]
                if optimizer == "sgd":   # c = e^{-u} b moves by e^{-u} times b's step
                    c -= lr * (gb if e[l + 1] is None else gb / e[l + 1])
                elif l in self.beta:     # EG+-: c+- = e^{-u} b+- move by b+-'s factors
                    c[...] = _eg_plus_minus(xp, c, gb, lr, self.beta[l])
                else:
                    c *= xp.exp(-lr * xp.sign(c) * gb)
            d = d_below

        def update(l, r0, r1, G):        # rows r0:r1 of S_l; G is a cache-sized buffer
            left, right, alpha = factors[l]
            S = self.S[l][r0:r1]
            xp.matmul(left[:, r0:r1].T, right, out=G)            # alpha times the gradient rows
            if extra_weights is not None:
                G += alpha * extra_weights[l][r0:r1]
            _apply_update(xp, S, G, optimizer, decay)

        self._products = self._blocked_pass(update)
        if decay > 0:
            self.s *= decay
        return value



def _on_device_of(net: LayeredNet, a):
    """``a`` on the network's backend: NumPy data go to a CuPy network's device (one copy)."""
    return a if net.xp is np else net.xp.asarray(a)


def evaluate(net: LayeredNet, X, y, p: float, weight_decay: float, *, loss: str = "log",
             chunk: int = 8192) -> dict:
    """On the whole set: the regularised loss (eq. 33), the data loss, and (log-loss) the error
    rate. NumPy data are copied to the device of a network on the GPU."""
    chunk = integer(chunk, "chunk", low=1)
    X, y = _on_device_of(net, X), _on_device_of(net, y)
    xp = _check_targets(net, X, y, loss, "evaluate")
    p = check_p(p)
    weight_decay = real(weight_decay, "weight_decay", low=0)
    total, wrong = 0.0, 0
    for start in range(0, X.shape[0], chunk):
        Xc, yc = X[start:start + chunk].astype(net.dtype, copy=False), y[start:start + chunk]
        out = net.forward(Xc)
        value, _ = _loss_and_output_grad(xp, out, yc, loss)
        total += float(value) * Xc.shape[0]
        if loss == "log":
            wrong += int((out.argmax(axis=1) != yc).sum())
    data_loss = total / X.shape[0]
    result = {"reg_loss": data_loss + weight_decay * float(regularizer(net, p)), "data_loss": data_loss}
    if loss == "log":
        result["log_loss"] = data_loss
        result["error"] = wrong / X.shape[0]
    return result


def _check_settings(optimizer, p, lr, weight_decay, epochs, batch_size, lr_decay, egd_biases,
                    gauge_fix, delta):
    """Validate :func:`train`'s settings (shared with :func:`gaugelit.batched.train_many`);
    return ``(p, lr, weight_decay)`` with the optimizer's defaults filled in."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {tuple(OPTIMIZERS)}")
    defaults = OPTIMIZERS[optimizer]
    p = defaults["p"] if p is None else check_p(p)
    if p != defaults["p"]:
        raise ValueError(f"optimizer={optimizer!r} implements l{defaults['p']:g} weight decay "
                         f"(eq. {38 if optimizer == 'sgd' else 40}); p must be {defaults['p']:g}, got {p:g}")
    lr = defaults["lr"] if lr is None else real(lr, "lr", low=0, low_open=True)
    weight_decay = (defaults["weight_decay"] if weight_decay is None
                    else real(weight_decay, "weight_decay", low=0))
    integer(epochs, "epochs", low=0)
    integer(batch_size, "batch_size", low=1)
    real(lr_decay, "lr_decay", low=0, low_open=True, high=1)
    gauge_fix = switch(gauge_fix, "gauge_fix") if not isinstance(gauge_fix, (list, tuple)) else [
        switch(g, "gauge_fix") for g in gauge_fix]
    if egd_biases not in EGD_BIASES:
        raise ValueError(f"egd_biases must be one of {EGD_BIASES}, got {egd_biases!r}")
    real(delta, "delta (Algorithm 1's tolerance)", low=0, low_open=True)
    return p, lr, weight_decay


def train(net: LayeredNet, X, y, *, optimizer: str = "sgd", p: float | None = None,
          lr: float | None = None, weight_decay: float | None = None, epochs: int = 30,
          batch_size: int = 32, lr_decay: float = 0.95, gauge_fix: bool = False, delta: float = 1e-3,
          seed: int = 0, progress: bool = True, loss: str = "log", train_hidden_biases: bool = False,
          soft_gauge: float = 0.0, X_test=None, y_test=None, min_norm_loss: bool = False,
          egd_biases: str = "plus-minus"):
    """Train ``net`` with SGD (l2) or EGD (l1) as in section 4 of the paper; return ``(net, history)``.

    ``p``, ``lr`` and ``weight_decay`` default to the paper's values for the optimizer
    (:data:`OPTIMIZERS`). With ``gauge_fix``, Algorithm 1 (tolerance ``delta``, exponent ``p``)
    rebalances the weights before every step; the balanced weights carry over to the next step, so
    once balanced each solve needs few updates. The loop keeps the gauge factors in the log domain
    and the weight decay in one scale (``_StoredNet``), so neither rewrites the weights: a
    gauge-fixed step costs little more than a plain one. ``soft_gauge`` adds the soft gauge-fixing penalty
    of :func:`gaugelit.soft_gauge.soft_gauge_penalty` with that strength to the loss.

    The data may be NumPy arrays for a network on the GPU: they are copied to its device once.
    ``history`` holds per-epoch lists (entry 0 is the untrained network): ``epoch``, ``lr`` (the
    rate used in that epoch; entry 0 the initial one), ``reg_loss``, ``reg_loss_min_norm`` with
    ``min_norm_loss`` (the regularised loss of the same function in its minimum-norm gauge, one
    :func:`minnorm` solve per epoch: what ``reg_loss`` would be after balancing, so never above it), ``data_loss`` (and ``log_loss``, ``train_error`` for the log-loss), ``test_error``
    or ``test_loss`` when test data are given, ``seconds`` (training time of the epoch) and
    ``gauge_iterations`` (Algorithm 1 updates in the epoch). A non-finite loss raises
    :class:`TrainingDiverged` naming the epoch and step. The input network is not modified.

    ``egd_biases`` (EGD only; :data:`EGD_BIASES`): ``"plus-minus"`` trains the biases by EG+- with
    ``beta`` from :func:`egd_bias_scale` at the start, so biases that start at zero are learned;
    ``"as-printed"`` applies eq. (41) to them, which leaves zero biases at zero for ever.
    """
    p, lr, weight_decay = _check_settings(optimizer, p, lr, weight_decay, epochs, batch_size, lr_decay,
                                          egd_biases, gauge_fix, delta)
    epochs, batch_size = int(epochs), int(batch_size)
    seed = integer(seed, "seed", low=0)
    lr_decay = real(lr_decay, "lr_decay", low=0, low_open=True, high=1)
    progress = switch(progress, "progress")
    train_hidden_biases = switch(train_hidden_biases, "train_hidden_biases")
    min_norm_loss = switch(min_norm_loss, "min_norm_loss")
    soft_gauge = real(soft_gauge, "soft_gauge", low=0)
    if egd_biases not in EGD_BIASES:
        raise ValueError(f"egd_biases must be one of {EGD_BIASES}, got {egd_biases!r}")
    delta = real(delta, "delta (Algorithm 1's tolerance)", low=0, low_open=True)
    if (X_test is None) != (y_test is None):
        raise ValueError("train: give both X_test and y_test, or neither")
    X, y = _on_device_of(net, X), _on_device_of(net, y)      # data sets load as NumPy arrays
    xp = _check_targets(net, X, y, loss, "train")
    if X_test is not None:
        X_test, y_test = _on_device_of(net, X_test), _on_device_of(net, y_test)
        _check_targets(net, X_test, y_test, loss, "train", "X_test", "y_test")
    if soft_gauge:
        from .soft_gauge import _soft_gauge_penalty   # unchecked: no host sync per step
        # The penalty's gradient is a pure rescaling only as a plain gradient step on every
        # parameter it touches: EGD's multiplicative step, or frozen non-zero hidden biases (the
        # bias part of each generator dropped), would change the function at first order.
        if optimizer != "sgd":
            raise ValueError(f"soft_gauge: the penalty needs optimizer='sgd'; with optimizer={optimizer!r} "
                             "its step is not a rescaling of the hidden units")
        if not train_hidden_biases and any(bool((b != 0).any()) for b in net.biases[:-1]):
            raise ValueError("soft_gauge: the network has non-zero hidden biases but train_hidden_biases="
                             "False; the penalty's step rescales them with their unit, so train them "
                             "(train_hidden_biases=True) or zero them")
    if progress:    # tqdm.auto picks the notebook widget; imported only when a bar is wanted
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    state = _StoredNet(net)
    if optimizer == "egd" and egd_biases == "plus-minus":
        state.beta = {l: egd_bias_scale(net, l) for l in _trained_biases(net, train_hidden_biases)}
    net = state.net
    X = X.astype(net.dtype, copy=False)
    n = X.shape[0]
    steps_per_epoch = -(-n // batch_size)
    rng = np.random.default_rng(seed)
    # A host sync per step is free on the CPU; on a GPU, check the loss buffer every so often.
    check_every = 1 if xp is np else 100
    history = {k: [] for k in ("epoch", "lr", "reg_loss", "data_loss", "seconds", "gauge_iterations")}

    def record(epoch, seconds, gauge_iterations):
        try:
            _record(epoch, seconds, gauge_iterations)
        except FloatingPointError as err:       # a norm of the network that overflows, etc.
            bar.close()
            if isinstance(err, TrainingDiverged):
                raise
            raise TrainingDiverged(f"train: after epoch {epoch} (lr={lr:g}): {err}") from None

    def _record(epoch, seconds, gauge_iterations):
        stats = evaluate(net, X, y, p, weight_decay, loss=loss)
        for key, value in (("epoch", epoch), ("lr", lr), ("reg_loss", stats["reg_loss"]),
                           ("data_loss", stats["data_loss"]), ("seconds", seconds),
                           ("gauge_iterations", gauge_iterations)):
            history[key].append(value)
        if min_norm_loss:   # the same function in its minimum-norm gauge (one solve per epoch)
            try:
                least_norm = float(minnorm(net, p, delta=1e-4).objective[-1])
            except FloatingPointError as err:
                raise TrainingDiverged(f"train: the minimum-norm gauge after epoch {epoch} failed: {err}") from None
            history.setdefault("reg_loss_min_norm", []).append(
                stats["data_loss"] + weight_decay * least_norm / p)
        if loss == "log":
            history.setdefault("log_loss", []).append(stats["log_loss"])
            history.setdefault("train_error", []).append(stats["error"])
        if X_test is not None:
            test = evaluate(net, X_test, y_test, p, weight_decay, loss=loss)
            history.setdefault("test_error" if loss == "log" else "test_loss", []).append(
                test["error"] if loss == "log" else test["data_loss"])
        bad = [key for key, values in history.items() if not math.isfinite(values[-1])]
        if bad:     # e.g. a last step that diverged: its loss was finite, the network is not
            raise TrainingDiverged(f"train: non-finite {', '.join(bad)} after epoch {epoch} (lr={lr:g}); "
                                   f"lower the learning rate")

    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc=f"train {optimizer}",
               leave=False)
    record(0, 0.0, 0)
    for epoch in range(1, epochs + 1):
        start, gauge_iterations = time.perf_counter(), 0
        order = xp.asarray(rng.permutation(n))
        losses = xp.empty(steps_per_epoch, dtype=net.dtype)
        for s in range(steps_per_epoch):
            batch = order[s * batch_size:(s + 1) * batch_size]
            if gauge_fix:
                try:
                    iterations = state.gauge_fix(p, delta)
                except FloatingPointError as err:
                    raise TrainingDiverged(f"train: weights non-finite before epoch {epoch}, step {s + 1}"
                                           f" (gauge fixing failed: {err})") from None
                gauge_iterations += iterations
            extra_w = extra_b = None
            if soft_gauge:
                _, extra_w, extra_b = _soft_gauge_penalty(state.materialize(), soft_gauge)
            value = state.step(X[batch], y[batch], loss, optimizer, lr, weight_decay,
                               train_hidden_biases, extra_w, extra_b)
            losses[s] = value
            if (s + 1) % check_every == 0 or s + 1 == steps_per_epoch:
                window = losses[s + 1 - ((s % check_every) + 1):s + 1]
                finite = xp.isfinite(window)
                if not bool(finite.all()):
                    first = s + 1 - len(window) + int(xp.argmin(finite))
                    bar.close()
                    raise TrainingDiverged(f"train: non-finite loss at epoch {epoch}, step {first + 1} "
                                           f"of {steps_per_epoch} (lr={lr:g}); lower the learning rate")
                state.maybe_fold()
                bar.update(len(window))
                bar.set_postfix(epoch=epoch, loss=f"{float(window[-1]):.4g}", refresh=False)
        net = state.materialize()
        seconds = time.perf_counter() - start
        record(epoch, seconds, gauge_iterations)
        lr *= lr_decay
    bar.close()
    return net, history
