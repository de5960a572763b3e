"""The pieces of a training step (section 4, eqs. 38-42): the softmax log-loss and its gradients by
back-propagation, the SGD and EGD steps (with EG+- for the biases), the regulariser of eq. (33),
the evaluation of a network on a data set, and the checks of a training run's settings."""
from __future__ import annotations

import numpy as np

from ..core.backend import array_module
from ..core.checks import integer, plain_array, real, switch
from ..core.gauge import _exp_total, _log_pnorm_terms
from ..core.network import LayeredNet, check_inputs, check_p

__all__ = ["TrainingDiverged", "loss_and_grads", "regularizer", "sgd_step", "egd_step", "evaluate",
           "OPTIMIZERS", "LOSSES", "EGD_BIASES", "egd_bias_scale"]

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
    """Mean loss over the batch and its gradient with respect to the outputs; ``out`` is
    ``(batch, C)`` or, for a stack of models, ``(K, batch, C)`` (one loss per model)."""
    n = out.shape[-2]
    if loss == "log":
        shifted = out - out.max(axis=-1, keepdims=True)         # stable softmax (eq. 42)
        e = xp.exp(shifted)
        z = e.sum(axis=-1, keepdims=True)
        picked = xp.take_along_axis(shifted, y[..., None], axis=-1)[..., 0]
        value = (xp.log(z[..., 0]) - picked).mean(axis=-1)
        d = e / z
        d -= (y[..., None] == xp.arange(out.shape[-1])).astype(d.dtype)   # d[rows, y] -= 1
    else:
        r = out - y
        value = (r * r).sum(axis=-1).mean(axis=-1)
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


def _check_step(where, lr, weight_decay):
    """A step's ``lr`` (finite, > 0) and ``weight_decay`` (finite, >= 0), as floats."""
    return real(lr, f"{where}: lr", low=0, low_open=True), real(weight_decay, f"{where}: weight_decay", low=0)


def sgd_step(net: LayeredNet, grad_weights, grad_biases, lr: float, weight_decay: float, *,
             train_hidden_biases: bool = False) -> None:
    """One SGD step with l2 weight decay, in place (eqs. 38-39):
    ``W <- W - lr (g + lambda W)``; only the output biases move unless ``train_hidden_biases``.
    ``lr > 0`` and ``weight_decay >= 0`` must be finite real numbers."""
    lr, weight_decay = _check_step("sgd_step", lr, weight_decay)
    train_hidden_biases = switch(train_hidden_biases, "sgd_step: train_hidden_biases")
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


def _eg_plus_minus(xp, b, g, lr, four_beta_sq):
    """EG+- on ``b = b+ - b-``: ``b+ <- b+ exp(-lr g)``, ``b- <- b- exp(lr g)``. The product
    ``b+ b- = beta^2`` is conserved, so ``b`` alone is the state:
    ``b <- b cosh(lr g) - sqrt(b^2 + 4 beta^2) sinh(lr g)``, given ``4 beta^2``. Returns the new ``b``."""
    t = lr * g
    return b * xp.cosh(t) - xp.sqrt(b * b + four_beta_sq) * xp.sinh(t)


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
    a number, or one per layer, is ``beta`` of EG+- (:data:`EGD_BIASES`), which moves any bias.
    ``lr > 0`` and ``weight_decay >= 0`` must be finite real numbers."""
    lr, weight_decay = _check_step("egd_step", lr, weight_decay)
    train_hidden_biases = switch(train_hidden_biases, "egd_step: train_hidden_biases")
    xp = net.xp
    for W, g in zip(net.weights, grad_weights):
        W *= xp.exp(-lr * (xp.sign(W) * g + weight_decay))
    for l in _trained_biases(net, train_hidden_biases):
        b = net.biases[l]
        if bias_scale is None:
            b *= xp.exp(-lr * xp.sign(b) * grad_biases[l])
        else:
            beta = bias_scale[l] if isinstance(bias_scale, (list, tuple)) else bias_scale
            b[...] = _eg_plus_minus(xp, b, grad_biases[l], lr, 4 * beta * beta)


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


def _check_settings(optimizer, p, lr, weight_decay, epochs, batch_size, lr_decay, egd_biases, delta):
    """Validate the settings :func:`~gaugelit.training.train` and ``train_many`` share;
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
    if egd_biases not in EGD_BIASES:
        raise ValueError(f"egd_biases must be one of {EGD_BIASES}, got {egd_biases!r}")
    real(delta, "delta (Algorithm 1's tolerance)", low=0, low_open=True)
    return p, lr, weight_decay


