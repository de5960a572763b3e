"""Many models of one architecture trained together: :func:`train_many`.

One cell of the paper's grid is ten runs of one architecture (five seeds, gauge fixing off and on)
that share everything but their initial network, their mini-batch order and the gauge fixing. Here
their weights are stacked, ``S[l]`` of shape ``(k, n_{l+1}, n_l)``, and every product of the
training step is one batched matrix product over the ``k`` models, so the Python work per step does
not grow with the number of models. The arithmetic is :func:`gaugelit.train`'s (``_StoredNet``:
log-domain gauge factors ``u`` per model, one weight-decay scale ``s``, Algorithm 1 started from the
products the previous step computed), model by model, so each model's result equals ``train``'s to
rounding (tests/test_batched.py: float64, 1e-10 relative after two epochs).

Host and device: the data live on the networks' device; each epoch sends the ``k`` mini-batch
orders to it once, and reads the losses, the Algorithm 1 counts and the evaluation back once. Inside
an epoch the host reads only one-boolean decisions: with gauge fixing, whether any model needs
another update of Algorithm 1 (each model stops by its own delta rule: a data-dependent loop
needs its answer), and every ``fold_every`` steps (1 on the CPU, 100 on the GPU, as ``train``'s
check) whether the log factors have drifted far enough to fold them into the weights. A model whose
loss or gauge fixing turns non-finite is reported at the end of its epoch (with ``train``'s message:
epoch and step) and dropped; the others go on. Its arrays are its own slice of the stack, so its
NaNs reach no other model in the meantime.

No fused kernels and no CUDA graphs: each would be kept only with a GPU measurement showing its gain
and a device test comparing it with this path, and no GPU was available when this was written.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from ..core.gauge import _abs_pow, dead_units
from ..core.network import LayeredNet
from ..solvers import ConvergenceWarning, minnorm
from ..solvers._chain import algorithm1_in_log_domain
from ._train import (TrainingDiverged, _check_settings, _check_targets, _apply_update, _eg_plus_minus,
                       _fold, _on_device_of, _StoredNet, _trained_biases, egd_bias_scale)

__all__ = ["train_many"]

#: host checks of the fold rule on the GPU, in steps (``train`` checks its loss as often)
FOLD_EVERY_GPU = 100


def _per_model(value, k, name, cast):
    """``value`` for each of ``k`` models: a sequence of ``k`` values, or one value for all."""
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != k:
            raise ValueError(f"train_many: {name} lists {len(value)} values for {k} networks")
        return [cast(v) for v in value]
    return [cast(value)] * k


def _as_bool(v):
    if v not in (True, False):
        raise ValueError(f"train_many: gauge_fix must be True or False, got {v!r}")
    return bool(v)


def _as_seed(v):
    if int(v) != v or v < 0:
        raise ValueError(f"train_many: seeds must be non-negative integers, got {v!r}")
    return int(v)


def _loss_and_output_grad(xp, out, y, loss):
    """``training._loss_and_output_grad`` for a stack: ``out`` is ``(k, n, C)``; returns the ``k``
    mean losses and the gradient with respect to ``out``, with the same arithmetic per model."""
    n = out.shape[1]
    if loss == "log":
        shifted = out - out.max(axis=2, keepdims=True)           # stable softmax (eq. 42)
        e = xp.exp(shifted)
        z = e.sum(axis=2, keepdims=True)
        picked = xp.take_along_axis(shifted, y[:, :, None], axis=2)[:, :, 0]
        value = (xp.log(z[:, :, 0]) - picked).mean(axis=1)
        d = e / z
        d -= (y[:, :, None] == xp.arange(out.shape[2])).astype(d.dtype)   # d[rows, y] -= 1
    else:
        r = out - y
        value = (r * r).sum(axis=2).mean(axis=1)
        d = 2 * r
    return value, d / n


class _Stack:
    """``_StoredNet`` for ``k`` models at once. ``S[l]``, ``c[l]``: ``(k, n_{l+1}, n_l)``,
    ``(k, n_{l+1})``; ``u[j]``: ``(k, n_{j+1})`` per hidden layer (zero for models without gauge
    fixing, whose factors ``exp(0) = 1`` leave their arithmetic exactly ``train``'s); one scale
    ``s`` for all (every model decays alike). The first ``g`` models are the gauge-fixed ones, so
    that their products are computed on a view of the stack, not a copy."""

    def __init__(self, nets, g, beta):
        xp = self.xp = nets[0].xp
        L = len(nets[0].weights)
        self.S = [xp.stack([net.weights[l] for net in nets]) for l in range(L)]
        self.c = [xp.stack([net.biases[l] for net in nets]) for l in range(L)]
        self.u = [xp.zeros((len(nets), n), dtype=nets[0].dtype) for n in nets[0].sizes[1:-1]]
        self.s, self.u_zero, self.g = 1.0, True, g
        self.beta = beta                # layer -> (k, 1) or (k, n) array: EG+-'s beta per model
        self.block = None               # per layer: the (k, rows, n_l) buffer of a row block
        self._M = None                  # |S[:g]|^p buffers, valid while S does not move
        self.M_valid = False
        self.products = None            # Algorithm 1's first products at (S, u) for the first g

    @property
    def k(self):
        return self.S[0].shape[0]

    def net(self, j) -> LayeredNet:
        """Model ``j`` as a network (its true weights only right after :meth:`materialize`)."""
        return LayeredNet._trusted([S[j] for S in self.S], [c[j] for c in self.c], self.xp)

    def keep(self, mask):
        """Drop the models where ``mask`` (host booleans) is False."""
        idx = self.xp.asarray(np.flatnonzero(mask))
        self.g = int(np.count_nonzero(mask[:self.g]))
        self.S = [S[idx] for S in self.S]
        self.c = [c[idx] for c in self.c]
        self.u = [u[idx] for u in self.u]
        self.beta = {l: b[idx] for l, b in self.beta.items()}
        self._M, self.M_valid, self.products, self.block = None, False, None, None

    def materialize(self):
        """Fold ``u`` and ``s`` into ``S`` and ``c`` for every model (``_StoredNet.materialize``)."""
        if self.u_zero and self.s == 1.0:
            return
        _fold(self)
        self.M_valid, self.products = False, None

    def maybe_fold(self):
        """``_StoredNet.maybe_fold`` for all models at once (folding is exact up to rounding);
        the u test is one boolean read from the device."""
        xp = self.xp
        if self.s < _StoredNet.S_MIN:
            self.materialize()
        elif not self.u_zero and self.g and bool(xp.stack(
                [xp.abs(u[:self.g]).max() for u in self.u]).max() > _StoredNet.U_MAX):
            self.materialize()

    # -- Algorithm 1 ------------------------------------------------------------------------------
    def _power(self, p):
        """``|S[:g]|^p``, formed once per move of the weights."""
        if self._M is None or self._M[0].shape[0] < self.g:
            self._M = [self.xp.empty_like(S[:self.g]) for S in self.S]
        M = [m[:self.g] for m in self._M]
        if not self.M_valid:
            for S, m in zip(self.S, M):
                _abs_pow(S[:self.g], p, self.xp, out=m)
            self.M_valid = True
        return M

    def _products(self, p, u):
        """``fwd[l] = |S_l|^p exp(-p u_l)``, ``bwd[l] = exp(p u_{l+1}) |S_l|^p`` for the first g."""
        xp, M = self.xp, self._power(p)
        dt = M[0].dtype       # sums as products with ones, as train's (BLAS reads M once)
        w = [xp.ones((1, M[0].shape[2], 1), dtype=dt)] + [xp.exp(-p * a)[:, :, None] for a in u]
        v = [xp.exp(p * a)[:, None, :] for a in u] + [xp.ones((1, 1, M[-1].shape[1]), dtype=dt)]
        fwd = [xp.matmul(m, w[l])[:, :, 0] for l, m in enumerate(M)]
        bwd = [xp.matmul(v[l], m)[:, 0, :] for l, m in enumerate(M)]
        return fwd, bwd

    def gauge_fix(self, p, delta, max_iter=10_000):
        """Algorithm 1 on the first ``g`` models, each from its own ``u`` and stopping by its own
        delta rule (its last update applied and counted). Returns device arrays: the updates of each
        model and, per model, the update at which it turned non-finite (0: it did not)."""
        xp, g = self.xp, self.g
        u = [v[:g] for v in self.u]
        fwd, bwd = self.products if self.products is not None else self._products(p, u)
        self.products = None
        iterations = xp.zeros(g, dtype=np.int64)
        failed_at = xp.zeros(g, dtype=np.int64)
        active = xp.ones(g, dtype=bool)
        # a zero in- or out-sum is a dead unit: such models take train's own solver (below)
        zero = xp.zeros(g, dtype=bool)
        for l in range(1, len(fwd)):
            zero |= (fwd[l - 1] == 0).any(axis=1) | (bwd[l] == 0).any(axis=1)
        start = u
        converged = True
        for it in range(1, max_iter + 1):
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                new = [v + ((xp.log(bwd[j + 1]) - xp.log(fwd[j])) / (2 * p) - v) / 2 for j, v in enumerate(u)]
                step = xp.stack([xp.abs(xp.expm1(a - b)).max(axis=1) for a, b in zip(new, u)]).max(axis=0)
                finite = xp.isfinite(step) & ~zero
                u = [xp.where(active[:, None], a, b) for a, b in zip(new, u)]
                iterations += active
                failed_at = xp.where(active & ~finite & ~zero, it, failed_at)
                active &= finite & ~(step < delta)
            if it == 1:
                flags = xp.stack([active.any(), zero.any()])      # one read for both decisions
                more, dead = (bool(f) for f in (flags.get() if xp is not np else flags))
                if dead:
                    u, iterations = self._dead_unit_models(p, delta, max_iter, zero, start, u,
                                                           iterations, failed_at, fwd, bwd)
            else:
                more = bool(active.any())
            if not more:
                break
            fwd, bwd = self._products(p, u)
        else:
            converged = False
        if not converged:
            warnings.warn(f"gauge fixing: max|a-1| < {delta} not reached in {max_iter} updates",
                          ConvergenceWarning, stacklevel=3)
        for v, new in zip(self.u, u):
            v[:g] = new
        self.u_zero = False
        return iterations, failed_at

    def _dead_unit_models(self, p, delta, max_iter, zero, start, u, iterations, failed_at, fwd, bwd):
        """Models with a dead unit: Algorithm 1 by ``train``'s own solver, one model at a time."""
        xp = self.xp
        u = [v.copy() for v in u]
        for j in np.flatnonzero(zero.get() if xp is not np else zero):
            net = self.net(j)
            uj, itj, failj, ok = algorithm1_in_log_domain(
                lambda: [_abs_pow(S, p, xp)[None] for S in net.weights], p, [v[j][None] for v in start], delta,
                max_iter, lambda: [d[None] for d in dead_units(net)],
                products=([f[j][None] for f in fwd], [b[j][None] for b in bwd]))
            if failj[0]:
                failed_at[j] = int(failj[0])
                iterations[j] = failed_at[j]
                continue
            uj, its = [v[0] for v in uj], int(itj[0])
            if not ok:
                warnings.warn(f"gauge fixing: max|a-1| < {delta} not reached in {max_iter} updates",
                              ConvergenceWarning, stacklevel=4)
            for v, new in zip(u, uj):
                v[j] = new
            iterations[j] = its
        return u, iterations

    # -- one optimizer step -----------------------------------------------------------------------
    def step(self, X, y, loss, optimizer, lr, weight_decay, train_hidden_biases, gauge_p):
        """``_StoredNet.step`` on the batches ``X`` ``(k, B, n_0)``, ``y``; returns the k losses."""
        xp, L = self.xp, len(self.S)
        decay = 1.0 - lr * weight_decay if optimizer == "sgd" else math.exp(-lr * weight_decay)
        if decay <= 0:                   # not a positive scale: apply it to the arrays directly
            self.materialize()
        acts, t = [X], X
        for l, (S, c) in enumerate(zip(self.S, self.c)):
            t = xp.matmul(t, S.transpose(0, 2, 1))
            if self.s != 1.0:
                t *= self.s
            t += c[:, None, :]
            if l < L - 1:
                xp.maximum(t, 0, out=t)
                acts.append(t)
        value, d = _loss_and_output_grad(xp, t, y, loss)
        e = [None] + ([None] * (L - 1) if self.u_zero else [xp.exp(u)[:, None, :] for u in self.u]) + [None]
        trained = set(_trained_biases(self.net(0), train_hidden_biases))
        factors = [None] * L
        for l in range(L - 1, -1, -1):
            S, t = self.S[l], acts[l]
            d_below = None
            if l:
                d_below = xp.matmul(d, S)
                if self.s != 1.0:
                    d_below *= self.s
                d_below *= t > 0
            if optimizer == "sgd":
                alpha = -lr / (decay * self.s) if decay > 0 else -lr
                left = d * (alpha if e[l + 1] is None else alpha / (e[l + 1] * e[l + 1]))
                right = t if e[l] is None else t * (e[l] * e[l])
            else:
                left = d * (-lr if e[l + 1] is None else -lr / e[l + 1])
                right = t if e[l] is None else t * e[l]
            factors[l] = (left, right)
            if l in trained:
                gb = d.sum(axis=1)
                if e[l + 1] is not None:
                    gb /= e[l + 1][:, 0, :]
                c = self.c[l]
                if optimizer == "sgd":
                    c -= lr * (gb if e[l + 1] is None else gb / e[l + 1][:, 0, :])
                elif l in self.beta:
                    c[...] = _eg_plus_minus(xp, c, gb, lr, self.beta[l])
                else:
                    c *= xp.exp(-lr * xp.sign(c) * gb)
            d = d_below
        self._update(factors, optimizer, decay, gauge_p if self.g else None)
        if decay > 0:
            self.s *= decay
        return value

    def _update(self, factors, optimizer, decay, p):
        """Write every ``S_l`` (``_StoredNet._blocked_pass``): rows ``r0:r1`` of all models at once,
        in blocks that fit the CPU core's cache (the GPU takes each matrix whole); with gauge
        fixing (``p``), each block's ``|S|^p`` adds to the products Algorithm 1 starts from."""
        xp, g = self.xp, self.g
        if self.block is None:
            item = np.dtype(self.S[0].dtype).itemsize
            self.rows = [S.shape[1] if xp is not np else
                         max(1, min(S.shape[1], _StoredNet.BLOCK_BYTES // (item * S.shape[0] * S.shape[2])))
                         for S in self.S]
            self.block = [xp.empty((S.shape[0], r, S.shape[2]), dtype=S.dtype) for r, S in zip(self.rows, self.S)]
        if p is not None:
            dt, u = self.S[0].dtype, [a[:g] for a in self.u]
            w = [xp.ones((1, self.S[0].shape[2], 1), dtype=dt)] + [xp.exp(-p * a)[:, :, None] for a in u]
            v = [xp.exp(p * a)[:, None, :] for a in u] + [xp.ones((1, 1, self.S[-1].shape[1]), dtype=dt)]
            fwd, bwd = [None] * len(self.S), [None] * len(self.S)
        for l in range(len(self.S) - 1, -1, -1):
            left, right = factors[l]
            S, n = self.S[l], self.S[l].shape[1]
            if p is not None:
                fwd[l] = xp.empty((g, n), dtype=S.dtype)
                bwd[l] = xp.zeros((g, S.shape[2]), dtype=S.dtype)
            for r0 in range(0, n, self.rows[l]):
                r1 = min(r0 + self.rows[l], n)
                G, Sb = self.block[l][:, :r1 - r0], S[:, r0:r1]
                xp.matmul(left[:, :, r0:r1].transpose(0, 2, 1), right, out=G)
                _apply_update(xp, Sb, G, optimizer, decay)
                if p is not None:
                    M = _abs_pow(Sb[:g], p, xp, out=G[:g])
                    fwd[l][:, r0:r1] = xp.matmul(M, w[l])[:, :, 0]
                    bwd[l] += xp.matmul(v[l][:, :, r0:r1], M)[:, 0, :]
        self.M_valid = False
        self.products = (fwd, bwd) if p is not None else None


def _evaluate_many(stack, X, y, p, weight_decay, loss, chunk=8192):
    """``training.evaluate`` for every model of a materialized stack; one device array
    ``(3, k)``: the data loss, the regularised loss and the error rate (NaN for the mse loss)."""
    xp, k, n = stack.xp, stack.k, X.shape[0]
    total = xp.zeros(k, dtype=np.float64)
    wrong = xp.zeros(k, dtype=np.int64)
    L = len(stack.S)
    for start in range(0, n, chunk):
        Xc, yc = X[start:start + chunk], y[start:start + chunk]
        h = Xc
        for l, (S, c) in enumerate(zip(stack.S, stack.c)):
            h = xp.matmul(h, S.transpose(0, 2, 1)) + c[:, None, :]
            if l < L - 1:
                h = xp.maximum(h, 0)
        yk = xp.broadcast_to(yc, (k,) + yc.shape)
        value, _ = _loss_and_output_grad(xp, h, yk, loss)
        total = total + value.astype(np.float64) * Xc.shape[0]
        if loss == "log":
            wrong += (h.argmax(axis=2) != yc).sum(axis=1)
    data_loss = total / max(n, 1)
    reg = 0
    for S in stack.S:
        reg = reg + (xp.abs(S) ** p).sum(axis=(1, 2))
    reg = (reg / p).astype(np.float64)
    error = wrong / max(n, 1) if loss == "log" else xp.full(k, np.nan)
    return xp.stack([data_loss, data_loss + weight_decay * reg, error])


def train_many(nets, X, y, *, gauge_fix=False, seeds=None, optimizer: str = "sgd", p=None, lr=None,
               weight_decay=None, epochs: int = 30, batch_size: int = 32, lr_decay: float = 0.95,
               delta: float = 1e-3, progress: bool = True, loss: str = "log",
               train_hidden_biases: bool = False, soft_gauge: float = 0.0, X_test=None, y_test=None,
               min_norm_loss: bool = False, egd_biases: str = "plus-minus"):
    """Train networks of one architecture together; return one ``(net, history)`` per network, in
    order, each equal to ``train(nets[i], X, y, gauge_fix=gauge_fix[i], seed=seeds[i], ...)``.

    ``gauge_fix`` and ``seeds`` (default 0) are one value for all or one per network; every other
    argument is :func:`gaugelit.train`'s and shared, as in one cell of the paper's grid. The
    networks must share sizes, dtype and backend; they are not modified. ``history["seconds"]`` is
    the wall time of the batched epoch (all models together).

    A model whose loss or gauge fixing becomes non-finite is dropped at the end of that epoch and
    the others go on: its entry is the :class:`TrainingDiverged` that ``train`` would raise (same
    message), with ``.history`` holding the epochs it finished. ``soft_gauge`` is not batched (use
    ``train``).
    """
    nets = list(nets)
    if not nets or not all(isinstance(net, LayeredNet) for net in nets):
        raise TypeError("train_many: nets must be a non-empty sequence of LayeredNet")
    first = nets[0]
    for i, net in enumerate(nets[1:], start=1):
        if net.sizes != first.sizes or net.dtype != first.dtype or net.xp is not first.xp:
            raise ValueError(f"train_many: nets[{i}] is {net!r}, but nets[0] is {first!r}; "
                             "the models trained together must share sizes, dtype and backend")
    if soft_gauge:
        raise ValueError("train_many: soft_gauge is not batched; train such models with train()")
    k = len(nets)
    gauge = _per_model(gauge_fix, k, "gauge_fix", _as_bool)
    seeds = _per_model(0 if seeds is None else seeds, k, "seeds", _as_seed)
    p, lr, weight_decay = _check_settings(optimizer, p, lr, weight_decay, epochs, batch_size, lr_decay,
                                          egd_biases, any(gauge), delta)
    X, y = _on_device_of(first, X), _on_device_of(first, y)
    xp = _check_targets(first, X, y, loss, "train_many")
    if X_test is not None:
        X_test, y_test = _on_device_of(first, X_test), _on_device_of(first, y_test)
        _check_targets(first, X_test, y_test, loss, "train_many (test set)")
        X_test = X_test.astype(first.dtype, copy=False)
    if not bool(xp.isfinite(X).all()):
        raise ValueError("train_many: X has non-finite entries")
    if progress:    # tqdm.auto picks the notebook widget; imported only when a bar is wanted
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    # gauge-fixed models first, so that their products are computed on a view of the stack
    order = sorted(range(k), key=lambda i: not gauge[i])
    dtype = first.dtype
    beta = {}
    if optimizer == "egd" and egd_biases == "plus-minus":
        beta = {l: xp.asarray([[egd_bias_scale(nets[i], l)] for i in order], dtype=dtype)
                for l in _trained_biases(first, train_hidden_biases)}
    stack = _Stack([nets[i] for i in order], sum(gauge), beta)
    alive = list(order)                    # alive[j]: the caller's index of stack model j
    rngs = [np.random.default_rng(seeds[i]) for i in order]
    X = X.astype(dtype, copy=False)
    n = X.shape[0]
    steps_per_epoch = -(-n // batch_size)
    fold_every = 1 if xp is np else FOLD_EVERY_GPU
    histories = [{key: [] for key in ("epoch", "lr", "reg_loss", "data_loss", "seconds", "gauge_iterations")}
                 for _ in range(k)]
    results: list = [None] * k

    def drop(which, messages):
        """Drop stack models ``which`` (host indices) with their messages."""
        keep = np.ones(stack.k, dtype=bool)
        for j, message in zip(which, messages):
            err = TrainingDiverged(message)
            err.history = histories[alive[j]]
            results[alive[j]] = err
            keep[j] = False
        stack.keep(keep)
        alive[:] = [v for v, kept in zip(alive, keep) if kept]
        rngs[:] = [v for v, kept in zip(rngs, keep) if kept]

    def record(epoch, seconds, gauge_iterations):
        stats = _evaluate_many(stack, X, y, p, weight_decay, loss)
        if X_test is not None:
            stats = xp.concatenate([stats, _evaluate_many(stack, X_test, y_test, p, weight_decay, loss)])
        stats = stats.get() if xp is not np else stats                     # one read per epoch
        failed, messages = [], []
        for j, i in enumerate(alive):
            h = histories[i]
            data_loss, reg_loss, error = (float(v) for v in stats[:3, j])
            if min_norm_loss:   # the same function in its minimum-norm gauge (one solve per epoch)
                try:
                    least_norm = float(minnorm(stack.net(j), p, delta=1e-4).objective[-1])
                except FloatingPointError as err:   # dropped; its history ends at the last epoch
                    failed.append(j)
                    messages.append(f"train: the minimum-norm gauge after epoch {epoch} failed: {err}")
                    continue
                h.setdefault("reg_loss_min_norm", []).append(data_loss + weight_decay * least_norm / p)
            for key, value in (("epoch", epoch), ("lr", lr), ("reg_loss", reg_loss), ("data_loss", data_loss),
                               ("seconds", seconds), ("gauge_iterations", int(gauge_iterations[j]))):
                h[key].append(value)
            if loss == "log":
                h.setdefault("log_loss", []).append(data_loss)
                h.setdefault("train_error", []).append(error)
            if X_test is not None:
                h.setdefault("test_error" if loss == "log" else "test_loss", []).append(
                    float(stats[5, j]) if loss == "log" else float(stats[3, j]))
            bad = [key for key, values in h.items() if not math.isfinite(values[-1])]
            if bad:     # as train: a value that is not finite ends the model's run
                failed.append(j)
                messages.append(f"train: non-finite {', '.join(bad)} after epoch {epoch} (lr={lr:g}); "
                                f"lower the learning rate")
        if failed:
            drop(failed, messages)

    record(0, 0.0, np.zeros(k, dtype=np.int64))
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc=f"train_many {optimizer} x{k}",
               leave=False)
    for epoch in range(1, epochs + 1):
        if not alive:
            break
        start = time.perf_counter()
        orders = xp.asarray(np.stack([rng.permutation(n) for rng in rngs]))
        losses = xp.empty((steps_per_epoch, stack.k), dtype=dtype)
        iterations = xp.zeros(stack.k, dtype=np.int64)
        gauge_failed = xp.zeros(stack.k, dtype=np.int64)           # step (1-based) of the first failure
        gauge_failed_update = xp.zeros(stack.k, dtype=np.int64)
        for s in range(steps_per_epoch):
            batch = orders[:, s * batch_size:(s + 1) * batch_size]
            if stack.g:
                its, failed_at = stack.gauge_fix(p, delta)
                g = stack.g
                iterations[:g] += its
                new = (failed_at > 0) & (gauge_failed[:g] == 0)
                gauge_failed[:g] = xp.where(new, s + 1, gauge_failed[:g])
                gauge_failed_update[:g] = xp.where(new, failed_at, gauge_failed_update[:g])
            losses[s] = stack.step(X[batch], y[batch], loss, optimizer, lr, weight_decay,
                                   train_hidden_biases, p if stack.g else None)
            if (s + 1) % fold_every == 0:
                stack.maybe_fold()
            bar.update(1)
        stack.materialize()
        seconds = time.perf_counter() - start
        # one read of the epoch's losses and counts, then the models that diverged are dropped
        losses, iterations, gauge_failed, gauge_failed_update = (
            a.get() if xp is not np else a for a in (losses, iterations, gauge_failed, gauge_failed_update))
        bad, messages = [], []
        for j in range(stack.k):
            finite = np.isfinite(losses[:, j])
            loss_step = int(np.argmin(finite)) + 1 if not finite.all() else 0
            gauge_step = int(gauge_failed[j])
            if gauge_step and (not loss_step or gauge_step <= loss_step):
                bad.append(j)
                messages.append(f"train: weights non-finite before epoch {epoch}, step {gauge_step} "
                                f"(gauge fixing failed: Algorithm 1: non-finite update "
                                f"{int(gauge_failed_update[j])}; the weights' |W|^p may overflow or "
                                f"underflow {np.dtype(dtype)} at p={p})")
            elif loss_step:
                bad.append(j)
                messages.append(f"train: non-finite loss at epoch {epoch}, step {loss_step} "
                                f"of {steps_per_epoch} (lr={lr:g}); lower the learning rate")
        keep = np.ones(stack.k, dtype=bool)
        keep[bad] = False
        if bad:
            drop(bad, messages)
            iterations = iterations[keep]
        if alive:
            bar.set_postfix(epoch=epoch, refresh=False)
            record(epoch, seconds, iterations)
        lr *= lr_decay
    bar.close()
    for j, i in enumerate(alive):
        results[i] = (LayeredNet._trusted([S[j].copy() for S in stack.S], [c[j].copy() for c in stack.c], xp),
                      histories[i])
    return results
