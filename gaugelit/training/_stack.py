"""The networks a training loop owns: ``K >= 1`` models of one architecture, stacked, and the one
training step they all take (one model is the ``K = 1`` case).

Model ``j``'s weights and biases are ``W_l = s diag(e^{u_{l+1}}) S_l diag(e^{-u_l})`` and
``b_l = e^{u_{l+1}} c_l`` (``S[l][j]``, ``c[l][j]``, ``u[k][j]``), with log gauge factors ``u`` per
hidden layer (``u = 0`` on input and output units) and one weight-decay scale ``s > 0`` common to
all (every model decays alike). A gauge transformation only moves ``u`` and SGD's decay
``W <- (1 - lr lambda) W`` only moves ``s``: no pass over the weights. Since ReLU is positively
homogeneous, the forward pass runs on ``(S, c)`` with ``s`` applied to each layer's product
(``t_l = e^{-u_l} h_l``), and back-propagation carries ``d_l = e^{u_l} dloss/dz_l``. The true
gradient is ``diag(e^{-u_{l+1}}) d^T t diag(e^{u_l})``, so an optimizer step is one
rank-``batch`` update of ``S`` with its small factors scaled. :meth:`Stack.materialize` writes the
true networks into ``S`` and ``c`` (once per epoch, or when the factors drift far).

The update is written in row blocks that fit the CPU core's cache, model by model; with gauge
fixing on, each block's ``|S|^p`` is taken right after it is written, giving the products the next
solve of Algorithm 1 starts from. On a balanced network that solve stops after one update, so
gauge fixing costs no extra pass over the weights. The GPU takes each layer of all models as one
block. Every product is NumPy's (or CuPy's) ``matmul`` over the model axis, which runs per model
the same BLAS call as one network's product: on the CPU a model's numbers do not depend on the
other models of its stack.

The first ``g`` models are the gauge-fixed ones, so that their products and Algorithm 1 work on a
view of the stack, not a copy.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..core.gauge import _abs_pow, _dead_units, _quiet
from ..core.network import LayeredNet
from ..solvers import ConvergenceWarning, algorithm1_in_log_domain, minnorm
from .steps import _eg_plus_minus, _loss_and_output_grad

__all__ = ["Stack"]


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


class Stack:
    """``K`` networks of one architecture, stored as the module docstring says.

    ``nets``: the initial networks (copied); ``g``: the first ``g`` of them are gauge-fixed;
    ``beta``: EG+- of the biases, layer -> ``(K, 1)`` float64 array of ``beta``
    (:func:`gaugelit.training.egd_bias_scale`). It is kept in stored coordinates, like ``c``: a gauge
    move rescales ``b+`` and ``b-`` with their unit, so the fold rescales ``beta`` as it does ``c``.
    ``rates``: ``None``, or two ``(K, L)`` host arrays scaling each model's learning rate per layer,
    for the weights and for the biases (``train``'s ``lr_scale``)."""

    #: fold u and s into the arrays when factors drift this far (keeps S well inside float range)
    U_MAX, S_MIN = 8.0, 1e-2
    #: on the CPU, weights are updated in row blocks of about this many bytes per model, so that each
    #: block's gradient, update and |S|^p stay in the core's cache (the GPU takes each matrix whole)
    BLOCK_BYTES = 1 << 19
    #: the most updates one solve of Algorithm 1 makes before a step
    MAX_ITER = 10_000

    def __init__(self, nets, g: int = 0, beta=None, rates=None):
        xp = self.xp = nets[0].xp
        L = len(nets[0].weights)
        self.dtype = nets[0].dtype
        self.S = [xp.stack([net.weights[l] for net in nets]) for l in range(L)]
        self.c = [xp.stack([net.biases[l] for net in nets]) for l in range(L)]
        self.u = [xp.zeros((len(nets), n), dtype=self.dtype) for n in nets[0].sizes[1:-1]]
        self.s, self.u_zero, self.g = 1.0, True, int(g)
        self.beta = {l: xp.asarray(b, dtype=np.float64) for l, b in (beta or {}).items()}
        self._update_four_beta_sq()
        self.rates = None if rates is None else [xp.asarray(r, dtype=self.dtype) for r in rates]
        item = np.dtype(self.dtype).itemsize
        self.rows = [S.shape[1] if xp is not np else max(1, min(S.shape[1], self.BLOCK_BYTES // (item * S.shape[2])))
                     for S in self.S]
        self.block = None               # per layer: the row-block buffer, made at the first step
        self._M = None                  # |S[:g]|^p, formed when a solve needs a second update
        self.gauge_p = None             # the exponent of the gauge fixing, once it is on
        self.products = None            # Algorithm 1's first products at (S, u) for the first g

    @property
    def k(self) -> int:
        return self.S[0].shape[0]

    def net(self, j) -> LayeredNet:
        """Model ``j`` as a network (its true weights only right after :meth:`materialize`)."""
        return LayeredNet._trusted([S[j] for S in self.S], [c[j] for c in self.c], self.xp)

    def _update_four_beta_sq(self):
        """``4 beta^2`` in the weights' dtype, formed in float64 (as a float's arithmetic would)."""
        self.four_beta_sq = {l: (4 * b * b).astype(self.dtype) for l, b in self.beta.items()}

    def keep(self, mask):
        """Drop the models where ``mask`` (host booleans) is False."""
        idx = self.xp.asarray(np.flatnonzero(mask))
        self.g = int(np.count_nonzero(mask[:self.g]))
        self.S = [S[idx] for S in self.S]
        self.c = [c[idx] for c in self.c]
        self.u = [u[idx] for u in self.u]
        self.beta = {l: b[idx] for l, b in self.beta.items()}
        self._update_four_beta_sq()
        if self.rates is not None:
            self.rates = [r[idx] for r in self.rates]
        self._M, self.products, self.block = None, None, None

    # -- folding the factors into the weights ---------------------------------------------------------
    def materialize(self):
        """Fold ``u`` and ``s`` into ``S`` and ``c`` (and EG+-'s ``beta``) in place: then ``u = 0``,
        ``s = 1`` and :meth:`net` is the true network."""
        if self.u_zero and self.s == 1.0:
            return
        xp = self.xp
        e = [None] + [None if self.u_zero else xp.exp(u) for u in self.u] + [None]
        for l, S in enumerate(self.S):
            if e[l + 1] is not None:
                xp.multiply(S, (self.s * e[l + 1])[..., :, None], out=S)
                self.c[l] *= e[l + 1]
                if l in self.beta:       # b+ and b- rescale with b, so beta does too
                    self.beta[l] = self.beta[l] * e[l + 1]
            elif self.s != 1.0:
                S *= self.s
            if e[l] is not None:
                xp.divide(S, e[l][..., None, :], out=S)
        self._update_four_beta_sq()
        self.u = [xp.zeros_like(u) for u in self.u]
        self.s, self.u_zero = 1.0, True
        self._M, self.products = None, None

    def maybe_fold(self):
        """Materialize when ``s`` or the gauge-fixed models' ``u`` have drifted far (the u test is
        one boolean read from the device: call it now and then)."""
        xp = self.xp
        if self.s < self.S_MIN:
            self.materialize()
        elif not self.u_zero and self.g and bool(xp.stack(
                [xp.abs(u[:self.g]).max() for u in self.u]).max() > self.U_MAX):
            self.materialize()

    # -- Algorithm 1 --------------------------------------------------------------------------------
    def gauge_fix(self, p, delta, max_iter=None):
        """Algorithm 1 (tolerance ``delta``, exponent ``p``) on the true weights of the first ``g``
        models, each from its own ``u`` and stopping by its own delta rule. Returns host arrays
        ``(iterations, failed_at, converged)``: the updates of each model, the update at which it
        turned non-finite (0: it did not), and whether all stopped by their rule.

        The first products come from the last step, which computed them as it wrote the weights, or
        else from one blocked pass over ``S``; ``|S|^p`` is formed only if a second update (or a dead
        unit) needs it."""
        g, max_iter = self.g, self.MAX_ITER if max_iter is None else max_iter
        if self.products is None or self.gauge_p != p:
            self.gauge_p = p
            self.products = self._blocked_pass(None)
        start = [v[:g] for v in self.u]
        u, iterations, failed_at, converged = algorithm1_in_log_domain(
            self._power, p, start, delta, max_iter, self._dead_units, products=self.products)
        self.products = None
        self.gauge_errors = {}
        if failed_at.any():              # sums the dtype does not hold: re-solve as minnorm does
            u = [x.copy() for x in u]
            for j in np.flatnonzero(failed_at):
                try:
                    a, its, ok = self._resolve(j, [v[j] for v in start], p, delta, max_iter)
                except FloatingPointError as err:
                    self.gauge_errors[int(j)] = str(err)
                    continue
                for x, v0, aj in zip(u, start, a):
                    x[j] = v0[j] + aj
                iterations[j], failed_at[j] = its, 0
                converged = converged and ok
        if g == self.k:
            self.u = list(u)
        else:
            for v, new in zip(self.u, u):
                v[:g] = new
        self.u_zero = False
        return iterations, failed_at, converged

    def _resolve(self, j, u, p, delta, max_iter):
        """Algorithm 1 for model ``j`` (log factors ``u``) by :func:`~gaugelit.solvers.minnorm` on its
        true network formed in float64 logs (the common scale ``s`` does not move the factors):
        minnorm's scale-safe state and prebalanced copy, the same rule (``delta``). Returns the
        log-factors to add to ``u``, the updates and whether the rule held; FloatingPointError when
        the balanced network is not representable in float64."""
        xp = self.xp
        uu = [None] + [v.astype(np.float64) for v in u] + [None]
        weights = []
        for l, S in enumerate(self.S):
            left = 0.0 if uu[l + 1] is None else uu[l + 1][:, None]
            right = 0.0 if uu[l] is None else uu[l][None, :]
            with _quiet(xp):
                weights.append(S[j].astype(np.float64) * xp.exp(left - right))
        for l, W in enumerate(weights):
            if not bool(xp.isfinite(W).all()):
                raise FloatingPointError(f"the network's weights[{l}] overflow float64 in this gauge")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)   # reported by the caller
            res = minnorm(LayeredNet._trusted(weights, [xp.zeros(W.shape[0]) for W in weights], xp), p,
                          method="multiplicative", delta=delta, max_iter=max_iter)
        with _quiet(xp):
            a = [xp.log(f.astype(np.float64)).astype(self.dtype) for f in res.factors]
        return a, res.iterations, res.converged

    def _power(self):
        """``|S[:g]|^p``, formed once per move of the weights."""
        if self._M is None:
            self._M = [_abs_pow(S[:self.g], self.gauge_p, self.xp) for S in self.S]
        return self._M

    def _dead_units(self):
        """The dead-unit masks of the first ``g`` models, ``(g, n)`` per hidden layer."""
        per_model = [_dead_units([S[j] for S in self.S]) for j in range(self.g)]
        return [self.xp.stack([m[k] for m in per_model]) for k in range(len(self.u))]

    # -- one optimizer step -------------------------------------------------------------------------
    def _forward(self, X):
        """Outputs and the stored activations ``t_l`` that feed ``S_l`` (``t_0 = X``)."""
        xp, L, acts, t = self.xp, len(self.S), [X], X
        for l, (S, c) in enumerate(zip(self.S, self.c)):
            t = xp.matmul(t, S.transpose(0, 2, 1))
            if self.s != 1.0:
                t *= self.s
            t += c[:, None, :]
            if l < L - 1:
                xp.maximum(t, 0, out=t)
                acts.append(t)
        return t, acts

    def step(self, X, y, loss, optimizer, lr, weight_decay, trained_biases, extra_weights=None,
             extra_biases=None):
        """One optimizer step of every model on its batch ``X[j]``, ``y[j]`` (``(K, B, n_0)``,
        ``(K, B)``); returns the K batch losses (a device array). ``trained_biases``: the layers whose
        biases move. ``extra_weights``/``extra_biases`` are gradients added to the data gradient
        (the soft gauge penalty), stacked like ``S`` and ``c``; they are in true coordinates, so
        they need :meth:`materialize` first."""
        xp, L = self.xp, len(self.S)
        if extra_weights is not None and not (self.u_zero and self.s == 1.0):
            raise RuntimeError("Stack.step: extra gradients need materialized networks")
        decay = 1.0 - lr * weight_decay if optimizer == "sgd" else math.exp(-lr * weight_decay)
        if decay <= 0:                   # not a positive scale: apply it to the arrays directly
            self.materialize()
        out, acts = self._forward(X)
        value, d = _loss_and_output_grad(xp, out, y, loss)      # d_L: output units have u = 0
        e = [None] + ([None] * (L - 1) if self.u_zero else [xp.exp(u)[:, None, :] for u in self.u]) + [None]
        factors = [None] * L             # per layer: the update's small left and right factors
        if self.rates is not None:       # per model and layer: (K, 1, 1) for the weights, (K, 1) for biases
            rate_w = [self.rates[0][:, l, None, None] for l in range(L)]
            rate_b = [self.rates[1][:, l, None] for l in range(L)]
        for l in range(L - 1, -1, -1):
            S, t = self.S[l], acts[l]
            d_below = None
            if l:                                                # back-propagate before S_l moves
                d_below = xp.matmul(d, S)
                if self.s != 1.0:
                    d_below *= self.s
                d_below *= t > 0
            if optimizer == "sgd":       # W_new = decay W - lr G  <=>  s *= decay, S += alpha (...)
                alpha = -lr / (decay * self.s) if decay > 0 else -lr
                if self.rates is not None:
                    alpha = alpha * rate_w[l]
                left = d * (alpha if e[l + 1] is None else alpha / (e[l + 1] * e[l + 1]))
                right = t if e[l] is None else t * (e[l] * e[l])
            else:                        # EGD: S *= exp(-lr sign(S) G), decay goes into s
                alpha = -lr if self.rates is None else -lr * rate_w[l]
                left = d * (alpha if e[l + 1] is None else alpha / e[l + 1])
                right = t if e[l] is None else t * e[l]
            factors[l] = (left.transpose(0, 2, 1), right, alpha)
            if l in trained_biases:
                gb = d.sum(axis=1)                               # e^{u} times the true gradient
                if e[l + 1] is not None:
                    gb /= e[l + 1][:, 0, :]
                if extra_biases is not None:
                    gb += extra_biases[l]
                c = self.c[l]
                lr_b = lr if self.rates is None else lr * rate_b[l]
                if optimizer == "sgd":   # c = e^{-u} b moves by e^{-u} times b's step
                    c -= lr_b * (gb if e[l + 1] is None else gb / e[l + 1][:, 0, :])
                elif l in self.beta:     # EG+-: c+- = e^{-u} b+- move by b+-'s factors
                    c[...] = _eg_plus_minus(xp, c, gb, lr_b, self.four_beta_sq[l])
                else:
                    c *= xp.exp(-lr_b * xp.sign(c) * gb)
            d = d_below

        def update(l, j, r0, r1, G):     # rows r0:r1 of S_l of models j (a slice); G: the block buffer
            left, right, alpha = factors[l]
            xp.matmul(left[j, r0:r1], right[j], out=G)           # alpha times the gradient rows
            if extra_weights is not None:
                G += alpha * extra_weights[l][j, r0:r1]
            _apply_update(xp, self.S[l][j, r0:r1], G, optimizer, decay)

        self.products = self._blocked_pass(update, self.gauge_p if self.g else None)
        self._M = None
        if decay > 0:
            self.s *= decay
        return value

    def _blocked_pass(self, update, p=-1.0):
        """One pass over the weights, layer by layer from the top, row block by row block:
        ``update(l, j, r0, r1, block)`` (if any) writes rows ``r0:r1`` of ``S_l`` of models ``j``;
        then, with the gauge fixing on (``p``; default the stack's), ``|S|^p`` of the block (in the
        block buffer, still in cache) adds to the products Algorithm 1 starts from:
        ``fwd_l = |S_l|^p exp(-p u_l)`` and ``bwd_l = exp(p u_{l+1}) |S_l|^p`` of the first ``g``
        models. Returns those products, or None without gauge fixing.

        On the CPU each block is one model's rows (``j`` an index), so every product is that model's
        own BLAS call; on the GPU a block is a whole layer of every model (``j`` a slice)."""
        xp, g, K = self.xp, self.g, self.k
        p = self.gauge_p if p == -1.0 else p
        if self.block is None:
            per = 1 if xp is np else K
            self.block = [xp.empty((per, r, S.shape[2]), dtype=S.dtype) for r, S in zip(self.rows, self.S)]
        if p is not None:
            dt, u = self.dtype, [a[:g] for a in self.u]
            w = [xp.ones((g, self.S[0].shape[2]), dtype=dt)] + [xp.exp(-p * a) for a in u]
            v = [xp.exp(p * a) for a in u] + [xp.ones((g, self.S[-1].shape[1]), dtype=dt)]
            fwd, bwd = [None] * len(self.S), [None] * len(self.S)
        models = [j for j in range(K)] if xp is np else [slice(None)]
        for l in range(len(self.S) - 1, -1, -1):
            S, n = self.S[l], self.S[l].shape[1]
            if p is not None:
                fwd[l] = xp.empty((g, n), dtype=S.dtype)
                bwd[l] = xp.zeros((g, S.shape[2]), dtype=S.dtype)
            for j in models:
                for r0 in range(0, n, self.rows[l]):
                    r1 = min(r0 + self.rows[l], n)
                    block = self.block[l][0 if xp is np else slice(None), :r1 - r0]
                    if update is not None:
                        update(l, j, r0, r1, block)
                    if p is None:
                        continue
                    if xp is np:
                        if j >= g:
                            continue
                        M = _abs_pow(S[j, r0:r1], p, xp, out=block)
                        xp.matmul(M, w[l][j], out=fwd[l][j, r0:r1])
                        bwd[l][j] += v[l][j, r0:r1] @ M
                    else:
                        M = _abs_pow(S[:g, r0:r1], p, xp, out=block[:g])
                        fwd[l][:, r0:r1] = xp.matmul(M, w[l][:, :, None])[:, :, 0]
                        bwd[l] += xp.matmul(v[l][:, None, r0:r1], M)[:, 0, :]
        return (fwd, bwd) if p is not None else None
