"""Learning: the softmax log-loss (eq. 42), back-propagation, the SGD and EGD steps (eqs. 38-41),
the regularised loss (eq. 33), and the training loop with optional gauge fixing before each step."""
from __future__ import annotations

import time

import numpy as np

from .backend import array_module
from .network import LayeredNet, check_p
from .solvers import minnorm

__all__ = ["TrainingDiverged", "loss_and_grads", "regularizer", "sgd_step", "egd_step", "evaluate",
           "train", "OPTIMIZERS"]

#: The paper's settings (section 4.1): SGD pairs with l2 weight decay, EGD with l1.
OPTIMIZERS = {
    "sgd": dict(p=2.0, lr=1e-3, weight_decay=1e-4),
    "egd": dict(p=1.0, lr=0.1, weight_decay=5e-6),
}
LOSSES = ("log", "mse")


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite; the message says at which epoch and step."""


def _check_targets(net, X, y, loss, where):
    xp = array_module(X, y, net.weights[0], where=f"{where}: X, y and the network")
    if loss not in LOSSES:
        raise ValueError(f"{where}: unknown loss {loss!r}; choose one of {LOSSES}")
    if X.ndim != 2 or X.shape[1] != net.sizes[0]:
        raise ValueError(f"{where}: X must have shape (n, {net.sizes[0]}), got {tuple(X.shape)}")
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
    """``R = (1/p) sum_ij |W_ij|^p`` (eq. 33 without lambda), as a 0-d array."""
    p = check_p(p)
    return sum((net.xp.abs(W) ** p).sum() for W in net.weights) / p


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


def egd_step(net: LayeredNet, grad_weights, grad_biases, lr: float, weight_decay: float, *,
             train_hidden_biases: bool = False) -> None:
    """One exponentiated-gradient step with l1 weight decay, in place (eqs. 40-41):
    ``W <- W exp(-lr sign(W) g - lr lambda)``. Signs never change, and a zero stays zero."""
    xp = net.xp
    for W, g in zip(net.weights, grad_weights):
        W *= xp.exp(-lr * (xp.sign(W) * g + weight_decay))
    for l in _trained_biases(net, train_hidden_biases):
        b = net.biases[l]
        b *= xp.exp(-lr * xp.sign(b) * grad_biases[l])


_STEPS = {"sgd": sgd_step, "egd": egd_step}


def evaluate(net: LayeredNet, X, y, p: float, weight_decay: float, *, loss: str = "log",
             chunk: int = 8192) -> dict:
    """On the whole set: the regularised loss (eq. 33), the data loss, and (log-loss) the error rate."""
    xp = _check_targets(net, X, y, loss, "evaluate")
    total, wrong = 0.0, 0
    for start in range(0, X.shape[0], chunk):
        Xc, yc = X[start:start + chunk].astype(net.dtype, copy=False), y[start:start + chunk]
        out = net.forward(Xc)
        value, _ = _loss_and_output_grad(xp, out, yc, loss)
        total += float(value) * Xc.shape[0]
        if loss == "log":
            wrong += int((out.argmax(axis=1) != yc).sum())
    data_loss = total / max(X.shape[0], 1)
    result = {"reg_loss": data_loss + weight_decay * float(regularizer(net, p)), "data_loss": data_loss}
    if loss == "log":
        result["log_loss"] = data_loss
        result["error"] = wrong / max(X.shape[0], 1)
    return result


def train(net: LayeredNet, X, y, *, optimizer: str = "sgd", p: float | None = None,
          lr: float | None = None, weight_decay: float | None = None, epochs: int = 30,
          batch_size: int = 32, lr_decay: float = 0.95, gauge_fix: bool = False, delta: float = 1e-3,
          seed: int = 0, progress: bool = True, loss: str = "log", train_hidden_biases: bool = False,
          soft_gauge: float = 0.0, X_test=None, y_test=None):
    """Train ``net`` with SGD (l2) or EGD (l1) as in section 4 of the paper; return ``(net, history)``.

    ``p``, ``lr`` and ``weight_decay`` default to the paper's values for the optimizer
    (:data:`OPTIMIZERS`). With ``gauge_fix``, Algorithm 1 (tolerance ``delta``, exponent ``p``)
    rebalances the weights before every step; the balanced weights carry over to the next step, so
    once balanced each solve needs few updates. ``soft_gauge`` adds the soft gauge-fixing penalty
    of :func:`gaugelit.soft_gauge.soft_gauge_penalty` with that strength to the loss.

    ``history`` holds per-epoch lists (entry 0 is the untrained network): ``epoch``, ``lr``,
    ``reg_loss``, ``data_loss`` (and ``log_loss``, ``train_error`` for the log-loss), ``test_error``
    or ``test_loss`` when test data are given, ``seconds`` (training time of the epoch) and
    ``gauge_iterations`` (Algorithm 1 updates in the epoch). A non-finite loss raises
    :class:`TrainingDiverged` naming the epoch and step. The input network is not modified.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {tuple(OPTIMIZERS)}")
    defaults = OPTIMIZERS[optimizer]
    p = defaults["p"] if p is None else check_p(p)
    if p != defaults["p"]:
        raise ValueError(f"optimizer={optimizer!r} implements l{defaults['p']:g} weight decay "
                         f"(eq. {38 if optimizer == 'sgd' else 40}); p must be {defaults['p']:g}, got {p:g}")
    lr = defaults["lr"] if lr is None else float(lr)
    weight_decay = defaults["weight_decay"] if weight_decay is None else float(weight_decay)
    if not (lr > 0 and np.isfinite(lr)):
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    if not (weight_decay >= 0 and np.isfinite(weight_decay)):
        raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay}")
    if int(epochs) != epochs or epochs < 0 or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"epochs must be an integer >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    if not (0 < lr_decay <= 1):
        raise ValueError(f"lr_decay must lie in (0, 1], got {lr_decay}")
    xp = _check_targets(net, X, y, loss, "train")
    if X_test is not None:
        _check_targets(net, X_test, y_test, loss, "train (test set)")
    if not bool(xp.isfinite(X).all()):
        raise ValueError("train: X has non-finite entries")
    if soft_gauge:
        from .soft_gauge import soft_gauge_penalty
    from tqdm.auto import tqdm

    step_fn = _STEPS[optimizer]
    net = net.copy()
    X = X.astype(net.dtype, copy=False)
    n = X.shape[0]
    steps_per_epoch = -(-n // batch_size)
    rng = np.random.default_rng(seed)
    # A host sync per step is free on the CPU; on a GPU, check the loss buffer every so often.
    check_every = 1 if xp is np else 100
    history = {k: [] for k in ("epoch", "lr", "reg_loss", "data_loss", "seconds", "gauge_iterations")}

    def record(epoch, seconds, gauge_iterations):
        stats = evaluate(net, X, y, p, weight_decay, loss=loss)
        for key, value in (("epoch", epoch), ("lr", lr), ("reg_loss", stats["reg_loss"]),
                           ("data_loss", stats["data_loss"]), ("seconds", seconds),
                           ("gauge_iterations", gauge_iterations)):
            history[key].append(value)
        if loss == "log":
            history.setdefault("log_loss", []).append(stats["log_loss"])
            history.setdefault("train_error", []).append(stats["error"])
        if X_test is not None:
            test = evaluate(net, X_test, y_test, p, weight_decay, loss=loss)
            history.setdefault("test_error" if loss == "log" else "test_loss", []).append(
                test["error"] if loss == "log" else test["data_loss"])

    record(0, 0.0, 0)
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc=f"train {optimizer}",
               leave=False)
    for epoch in range(1, epochs + 1):
        start, gauge_iterations = time.perf_counter(), 0
        order = xp.asarray(rng.permutation(n))
        losses = xp.empty(steps_per_epoch, dtype=net.dtype)
        for s in range(steps_per_epoch):
            batch = order[s * batch_size:(s + 1) * batch_size]
            if gauge_fix:
                try:
                    fixed = minnorm(net, p, method="multiplicative", delta=delta)
                except FloatingPointError as err:
                    raise TrainingDiverged(f"train: weights non-finite before epoch {epoch}, step {s + 1}"
                                           f" (gauge fixing failed: {err})") from None
                net, gauge_iterations = fixed.net, gauge_iterations + fixed.iterations
            value, gw, gb = _loss_and_grads(net, X[batch], y[batch], loss, xp)
            if soft_gauge:
                _, sw, sb = soft_gauge_penalty(net, soft_gauge)
                gw = [g + h for g, h in zip(gw, sw)]
                gb = [g + h for g, h in zip(gb, sb)]
            step_fn(net, gw, gb, lr, weight_decay, train_hidden_biases=train_hidden_biases)
            losses[s] = value
            if (s + 1) % check_every == 0 or s + 1 == steps_per_epoch:
                window = losses[s + 1 - ((s % check_every) + 1):s + 1]
                finite = xp.isfinite(window)
                if not bool(finite.all()):
                    first = s + 1 - len(window) + int(xp.argmin(finite))
                    bar.close()
                    raise TrainingDiverged(f"train: non-finite loss at epoch {epoch}, step {first + 1} "
                                           f"of {steps_per_epoch} (lr={lr:g}); lower the learning rate")
                bar.update(len(window))
                bar.set_postfix(epoch=epoch, loss=f"{float(window[-1]):.4g}", refresh=False)
        seconds = time.perf_counter() - start
        lr *= lr_decay
        record(epoch, seconds, gauge_iterations)
    bar.close()
    return net, history
