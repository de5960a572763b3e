"""The training loop of section 4: :func:`train` one network, :func:`train_many` a grid cell's networks
at once. Both run one loop over one :class:`~gaugelit.training._stack.Stack`; one model is the
``K = 1`` case, and on the CPU each model's numbers are those it gets trained alone."""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from ..core.backend import to_numpy
from ..core.checks import integer, real, switch
from ..core.network import LayeredNet
from ..solvers import ConvergenceWarning, minnorm
from ._stack import Stack
from .steps import (
    EGD_BIASES,
    OPTIMIZERS,
    TrainingDiverged,
    _check_settings,
    _check_targets,
    _on_device_of,
    _trained_biases,
    egd_bias_scale,
    evaluate,
)

__all__ = ["train", "train_many", "GAUGE_MODES", "gauge_mode", "matched_lr_scale"]

#: How often the host looks at the losses (and the fold rule), in steps: every step on the CPU,
#: where a host sync is free; every 100 on a GPU.
CHECK_EVERY_GPU = 100


def train(net: LayeredNet, X, y, *, optimizer: str = "sgd", p: float | None = None,
          lr: float | None = None, weight_decay: float | None = None, epochs: int = 30,
          batch_size: int = 32, lr_decay: float = 0.95, gauge_fix: bool | str = False, delta: float = 1e-3,
          seed: int = 0, progress: bool = True, loss: str = "log", train_hidden_biases: bool = False,
          soft_gauge: float = 0.0, X_test=None, y_test=None, min_norm_loss: bool = False,
          egd_biases: str = "plus-minus", lr_scale=None, egd_beta_scale: float = 1.0):
    """Train ``net`` with SGD (l2) or EGD (l1) as in section 4 of the paper; return ``(net, history)``.

    ``p``, ``lr`` and ``weight_decay`` default to the paper's values for the optimizer
    (:data:`~gaugelit.training.OPTIMIZERS`). With ``gauge_fix``, Algorithm 1 (tolerance ``delta``,
    exponent ``p``) rebalances the weights before every step; the balanced weights carry over to the
    next step, so once balanced each solve needs few updates. The loop keeps the gauge factors in the
    log domain and the weight decay in one scale (:mod:`gaugelit.training._stack`), so neither
    rewrites the weights: a gauge-fixed step costs little more than a plain one. ``soft_gauge`` adds
    the soft gauge-fixing penalty of :func:`gaugelit.soft_gauge_penalty` with that strength to the loss.

    ``gauge_fix`` is one of :data:`GAUGE_MODES`: ``"every"`` (or ``True``) balances before every step
    as the paper does; ``"init"`` balances once, by the same Algorithm 1 and ``delta``, before the first
    step and then trains plainly (its updates count in epoch 1's ``gauge_iterations``); ``"never"``
    (or ``False``) does not balance. ``lr_scale`` (``None``, or a pair ``(weights, biases)`` of ``L``
    positive numbers each) multiplies the learning rate of each layer's weights and biases; the
    weight decay keeps the unscaled rate (it multiplies every weight by one number).
    :func:`matched_lr_scale` gives the scales that match the first balancing's change of rates.

    The data may be NumPy arrays for a network on the GPU: they are copied to its device once.
    ``history`` holds per-epoch lists (entry 0 is the untrained network): ``epoch``, ``lr`` (the
    rate used in that epoch; entry 0 the initial one), ``reg_loss``, ``reg_loss_min_norm`` with
    ``min_norm_loss`` (the regularised loss of the same function in its minimum-norm gauge, one
    :func:`~gaugelit.minnorm` solve per epoch: what ``reg_loss`` would be after balancing, so never
    above it), ``data_loss`` (and ``log_loss``, ``train_error`` for the log-loss), ``test_error``
    or ``test_loss`` when test data are given, ``seconds`` (training time of the epoch) and
    ``gauge_iterations`` (Algorithm 1 updates in the epoch). A non-finite loss raises
    :class:`~gaugelit.TrainingDiverged` naming the epoch and step. The input network is not modified.

    ``egd_biases`` (EGD only; :data:`~gaugelit.EGD_BIASES`): ``"plus-minus"`` trains the biases by
    EG+- with ``beta`` from :func:`~gaugelit.egd_bias_scale` at the start, so biases that start at
    zero are learned; ``"as-printed"`` applies eq. (41) to them, which leaves zero biases at zero.
    ``egd_beta_scale`` multiplies that ``beta`` (the sweeps of the mechanism study; EG+-'s bias flow
    is ``db/dt = -sqrt(b^2 + 4 beta^2) dL/db``, so ``beta`` sets how fast a small bias moves).
    """
    if not isinstance(net, LayeredNet):
        raise TypeError(f"train: expected a LayeredNet, got {type(net).__name__}")
    seed = integer(seed, "seed", low=0)
    gauge_fix = gauge_mode(gauge_fix, "gauge_fix")
    scales = [_lr_scale(lr_scale, net, "lr_scale")]
    (result,) = _train([net], X, y, gauge=[gauge_fix], seeds=[seed], where="train", optimizer=optimizer, p=p,
                       lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
                       lr_decay=lr_decay, delta=delta, progress=progress, loss=loss,
                       train_hidden_biases=train_hidden_biases, soft_gauge=soft_gauge, X_test=X_test,
                       y_test=y_test, min_norm_loss=min_norm_loss, egd_biases=egd_biases, lr_scales=scales,
                       egd_beta_scale=egd_beta_scale)
    if isinstance(result, TrainingDiverged):
        raise result
    return result


def train_many(nets, X, y, *, gauge_fix=False, seeds=None, optimizer: str = "sgd", p=None, lr=None,
               weight_decay=None, epochs: int = 30, batch_size: int = 32, lr_decay: float = 0.95,
               delta: float = 1e-3, progress: bool = True, loss: str = "log",
               train_hidden_biases: bool = False, soft_gauge: float = 0.0, X_test=None, y_test=None,
               min_norm_loss: bool = False, egd_biases: str = "plus-minus", lr_scale=None,
               egd_beta_scale: float = 1.0):
    """Train networks of one architecture together; return one ``(net, history)`` per network, in
    order, each equal to ``train(nets[i], X, y, gauge_fix=gauge_fix[i], seed=seeds[i], ...)`` (on
    the CPU exactly: the stack runs per model the same arithmetic).

    ``gauge_fix`` and ``seeds`` (default 0) are one value for all or one per network, ``lr_scale`` None
    or a list with one entry (None or :func:`train`'s pair) per network; every other
    argument is :func:`train`'s and shared, as in one cell of the paper's grid. The networks must
    share sizes, dtype and backend; they are not modified. ``history["seconds"]`` is the wall time
    of the batched epoch (all models together).

    A model whose loss, gauge fixing or evaluation becomes non-finite is dropped at once and the
    others go on: its entry is the :class:`~gaugelit.TrainingDiverged` that ``train`` would raise
    (same message), with ``.history`` holding the epochs it finished.
    """
    nets = list(nets)
    if not nets or not all(isinstance(net, LayeredNet) for net in nets):
        raise TypeError("train_many: nets must be a non-empty sequence of LayeredNet")
    first = nets[0]
    for i, net in enumerate(nets[1:], start=1):
        if net.sizes != first.sizes or net.dtype != first.dtype or net.xp is not first.xp:
            raise ValueError(f"train_many: nets[{i}] is {net!r}, but nets[0] is {first!r}; "
                             "the models trained together must share sizes, dtype and backend")
    k = len(nets)
    gauge = _per_model(gauge_fix, k, "gauge_fix", gauge_mode)
    if lr_scale is None:
        scales = [None] * k
    elif isinstance(lr_scale, list) and len(lr_scale) == k:     # a list: a tuple is one pair
        scales = [_lr_scale(v, nets[i], f"lr_scale[{i}]") for i, v in enumerate(lr_scale)]
    else:
        raise ValueError(f"train_many: lr_scale must be None or a list of {k} entries, one per network "
                         "(each None or a pair (weights, biases))")
    seeds = _per_model(0 if seeds is None else seeds, k, "seeds", lambda v, name: integer(v, name, low=0))
    return _train(nets, X, y, gauge=gauge, seeds=seeds, where="train_many", optimizer=optimizer, p=p, lr=lr,
                  weight_decay=weight_decay, epochs=epochs, batch_size=batch_size, lr_decay=lr_decay,
                  delta=delta, progress=progress, loss=loss, train_hidden_biases=train_hidden_biases,
                  soft_gauge=soft_gauge, X_test=X_test, y_test=y_test, min_norm_loss=min_norm_loss,
                  egd_biases=egd_biases, lr_scales=scales, egd_beta_scale=egd_beta_scale)


#: The gauge-fixing modes of :func:`train`: none, once before the first step, before every step.
GAUGE_MODES = ("never", "init", "every")


def gauge_mode(value, name: str = "gauge_fix") -> str:
    """One of :data:`GAUGE_MODES`; ``False`` and ``True`` are ``"never"`` and ``"every"``."""
    if isinstance(value, str):
        if value not in GAUGE_MODES:
            raise ValueError(f"{name} must be one of {GAUGE_MODES} (or a bool), got {value!r}")
        return value
    return "every" if switch(value, name) else "never"


def _lr_scale(value, net, name):
    """``None``, or the pair ``(weights, biases)`` as two float64 host arrays of ``L`` positive finite numbers."""
    if value is None:
        return None
    L = len(net.weights)
    try:
        w, b = value
        w, b = np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (weights, biases) of {L} numbers each, got {value!r}") from None
    for part, a in (("weights", w), ("biases", b)):
        if a.shape != (L,) or not (np.isfinite(a).all() and (a > 0).all()):
            raise ValueError(f"{name}: its {part} part must be {L} positive finite numbers (one per layer), got {a}")
    return w, b


def matched_lr_scale(net: LayeredNet, optimizer: str, *, p: float | None = None):
    """The per-layer rates that the first balancing gives, without balancing: ``(weights, biases)``
    for :func:`train`'s ``lr_scale``. With ``a`` the factors of ``net``'s minimum-norm gauge and
    ``ā_k`` their geometric mean over layer ``k``'s units (1 at the inputs and outputs), a step of
    rate ``lr`` on the balanced weights is, in the original ones, a step of rate
    ``lr (ā_{l+1}/ā_l)^(-q)`` on layer ``l``'s weights and ``lr ā_{l+1}^(-q)`` on its biases, per
    layer on average, with ``q = 2`` for SGD (additive) and ``q = 1`` for EGD (multiplicative)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {tuple(OPTIMIZERS)}")
    p = OPTIMIZERS[optimizer]["p"] if p is None else p
    q = 2.0 if optimizer == "sgd" else 1.0
    exact = LayeredNet([np.asarray(to_numpy(W), dtype=np.float64) for W in net.weights],   # float64: the
                       [np.asarray(to_numpy(b), dtype=np.float64) for b in net.biases])     # gauge to 1e-10
    factors = minnorm(exact, p, method="block", gamma_tol=1e-10).factors
    log_mean = [0.0] + [float(np.mean(np.log(np.asarray(a, dtype=np.float64)))) for a in factors] + [0.0]
    weights = np.exp([-q * (log_mean[l + 1] - log_mean[l]) for l in range(len(net.weights))])
    biases = np.exp([-q * log_mean[l + 1] for l in range(len(net.weights))])
    return weights, biases


def _per_model(value, k, name, check):
    """``value`` for each of ``k`` models: a sequence of ``k`` values, or one value for all."""
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != k:
            raise ValueError(f"train_many: {name} lists {len(value)} values for {k} networks")
        return [check(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return [check(value, name)] * k


def _train(nets, X, y, *, gauge, seeds, where, optimizer, p, lr, weight_decay, epochs, batch_size, lr_decay,
           delta, progress, loss, train_hidden_biases, soft_gauge, X_test, y_test, min_norm_loss, egd_biases,
           lr_scales, egd_beta_scale=1.0):
    """The one loop of :func:`train` and :func:`train_many`: a list of ``(net, history)`` or
    :class:`TrainingDiverged`, one per network."""
    p, lr, weight_decay = _check_settings(optimizer, p, lr, weight_decay, epochs, batch_size, lr_decay,
                                          egd_biases, delta)
    epochs, batch_size = int(epochs), int(batch_size)
    lr_decay = real(lr_decay, "lr_decay", low=0, low_open=True, high=1)
    progress = switch(progress, "progress")
    train_hidden_biases = switch(train_hidden_biases, "train_hidden_biases")
    min_norm_loss = switch(min_norm_loss, "min_norm_loss")
    soft_gauge = real(soft_gauge, "soft_gauge", low=0)
    egd_beta_scale = real(egd_beta_scale, "egd_beta_scale", low=0, low_open=True)
    if egd_biases not in EGD_BIASES:
        raise ValueError(f"egd_biases must be one of {EGD_BIASES}, got {egd_biases!r}")
    delta = real(delta, "delta (Algorithm 1's tolerance)", low=0, low_open=True)
    if (X_test is None) != (y_test is None):
        raise ValueError(f"{where}: give both X_test and y_test, or neither")
    first = nets[0]
    X, y = _on_device_of(first, X), _on_device_of(first, y)      # data sets load as NumPy arrays
    xp = _check_targets(first, X, y, loss, where)
    if X_test is not None:
        X_test, y_test = _on_device_of(first, X_test), _on_device_of(first, y_test)
        _check_targets(first, X_test, y_test, loss, where, "X_test", "y_test")
    if soft_gauge:
        from .soft_gauge import _soft_gauge_penalty  # unchecked: no host sync per step
        # The penalty's gradient is a pure rescaling only as a plain gradient step on every
        # parameter it touches: EGD's multiplicative step, or frozen non-zero hidden biases (the
        # bias part of each generator dropped), would change the function at first order.
        if optimizer != "sgd":
            raise ValueError(f"soft_gauge: the penalty needs optimizer='sgd'; with optimizer={optimizer!r} "
                             "its step is not a rescaling of the hidden units")
        if not train_hidden_biases and any(bool((b != 0).any()) for net in nets for b in net.biases[:-1]):
            raise ValueError("soft_gauge: the network has non-zero hidden biases but train_hidden_biases="
                             "False; the penalty's step rescales them with their unit, so train them "
                             "(train_hidden_biases=True) or zero them")
    if progress:    # tqdm.auto picks the notebook widget; imported only when a bar is wanted
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    if soft_gauge and any(scale is not None for scale in lr_scales):
        raise ValueError(f"{where}: soft_gauge and lr_scale cannot be combined (the penalty's step is a "
                         "rescaling only at one rate for all layers)")
    K = len(nets)
    trained = set(_trained_biases(first, train_hidden_biases))
    # EG+-'s beta is taken once, from each network as given, before any balancing; a balancing
    # rescales it with its unit, as a later gauge move does in the stack
    beta = ({l: [np.full(first.sizes[l + 1], egd_bias_scale(net, l) * egd_beta_scale) for net in nets]
             for l in trained}
            if optimizer == "egd" and egd_biases == "plus-minus" else {})
    init_iterations = np.zeros(K, dtype=np.int64)
    nets = list(nets)
    for i in range(K):           # "init": balanced once, by the loop's Algorithm 1 and delta, then plain
        if gauge[i] == "init":
            try:
                balanced = minnorm(nets[i], p, method="multiplicative", delta=delta)
            except FloatingPointError as err:
                raise TrainingDiverged(f"{where}: gauge fixing before the first step failed: {err}") from None
            nets[i], init_iterations[i] = balanced.net, balanced.iterations
            for l in beta:
                if l + 1 < len(first.weights):                      # hidden units: their factors
                    beta[l][i] = beta[l][i] * to_numpy(balanced.factors[l]).astype(np.float64)
    every = [g == "every" for g in gauge]
    order = sorted(range(K), key=lambda i: not every[i])     # gauge-fixed models first: a view of the stack
    # one beta per unit where a balancing made them differ, else one per model (the stack's layout)
    beta = {l: np.array([b[i] if any(np.ptp(v) for v in b) else b[i][:1] for i in order])
            for l, b in beta.items()}
    rates = None
    if any(scale is not None for scale in lr_scales):
        L = len(first.weights)
        ones = (np.ones(L), np.ones(L))
        rates = [np.array([(lr_scales[i] or ones)[part] for i in order]) for part in (0, 1)]   # (K, L) each
    stack = Stack([nets[i] for i in order], g=sum(every), beta=beta, rates=rates)
    alive = list(order)                      # alive[j]: the caller's index of stack model j
    rngs = [np.random.default_rng(seeds[i]) for i in order]
    X = X.astype(first.dtype, copy=False)
    n = X.shape[0]
    steps_per_epoch = -(-n // batch_size)
    check_every = 1 if xp is np else CHECK_EVERY_GPU
    histories = [{key: [] for key in ("epoch", "lr", "reg_loss", "data_loss", "seconds", "gauge_iterations")}
                 for _ in range(K)]
    results: list = [None] * K

    def drop(which, messages):
        """Drop stack models ``which`` with their messages; returns the host mask of those kept."""
        keep = np.ones(stack.k, dtype=bool)
        for j, message in zip(which, messages):
            err = TrainingDiverged(message)
            err.history = histories[alive[j]]
            results[alive[j]] = err
            keep[j] = False
        stack.keep(keep)
        alive[:] = [v for v, kept in zip(alive, keep) if kept]
        rngs[:] = [v for v, kept in zip(rngs, keep) if kept]
        return keep

    def record(epoch, seconds, gauge_iterations):
        failed, messages = [], []
        # every batch loss of the epoch was finite (else the model was dropped): a non-finite value
        # here first appeared in the epoch's last update
        when = (f"after step {steps_per_epoch} of {steps_per_epoch} (the last) of epoch {epoch}, whose "
                f"batch losses were all finite" if epoch else "at the start")
        for j, i in enumerate(alive):
            try:
                _record(histories[i], stack.net(j), epoch, seconds, int(gauge_iterations[j]), when)
            except FloatingPointError as err:       # a norm of the network that overflows, etc.
                failed.append(j)
                messages.append(str(err) if isinstance(err, TrainingDiverged) else
                                f"train: {when} (lr={lr:g}): {err}")
        if failed:
            drop(failed, messages)

    def _record(history, net, epoch, seconds, gauge_iterations, when):
        stats = evaluate(net, X, y, p, weight_decay, loss=loss)
        for key, value in (("epoch", epoch), ("lr", lr), ("reg_loss", stats["reg_loss"]),
                           ("data_loss", stats["data_loss"]), ("seconds", seconds),
                           ("gauge_iterations", gauge_iterations)):
            history[key].append(value)
        if min_norm_loss:   # the same function in its minimum-norm gauge (one solve per epoch)
            try:
                least_norm = float(minnorm(net, p, delta=1e-4).objective[-1])
            except FloatingPointError as err:
                raise TrainingDiverged(f"train: the minimum-norm gauge {when} failed: {err}") from None
            history.setdefault("reg_loss_min_norm", []).append(stats["data_loss"] + weight_decay * least_norm / p)
        if loss == "log":
            history.setdefault("log_loss", []).append(stats["log_loss"])
            history.setdefault("train_error", []).append(stats["error"])
        if X_test is not None:
            test = evaluate(net, X_test, y_test, p, weight_decay, loss=loss)
            history.setdefault("test_error" if loss == "log" else "test_loss", []).append(
                test["error"] if loss == "log" else test["data_loss"])
        bad = [key for key, values in history.items() if not math.isfinite(values[-1])]
        if bad:     # e.g. a last step that diverged: its loss was finite, the network is not
            raise TrainingDiverged(f"train: non-finite {', '.join(bad)} {when} (lr={lr:g}); "
                                   f"lower the learning rate")

    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, leave=False,
               desc=f"train {optimizer}" if K == 1 else f"train_many {optimizer} x{K}")
    record(0, 0.0, np.zeros(K, dtype=np.int64))
    for epoch in range(1, epochs + 1):
        if not alive:
            break
        start = time.perf_counter()
        orders = xp.asarray(np.stack([rng.permutation(n) for rng in rngs]))
        losses = xp.empty((steps_per_epoch, stack.k), dtype=first.dtype)
        iterations = np.zeros(stack.k, dtype=np.int64)
        if epoch == 1:
            iterations += init_iterations[alive]
        checked = 0                              # steps whose losses the host has looked at
        for s in range(steps_per_epoch):
            if stack.g:
                its, failed_at, converged = stack.gauge_fix(p, delta)
                iterations[:stack.g] += its
                if not converged:
                    warnings.warn(f"gauge fixing: max|a-1| < {delta} not reached in {Stack.MAX_ITER} updates",
                                  ConvergenceWarning, stacklevel=4)
                if failed_at.any():
                    bad = np.flatnonzero(failed_at)
                    keep = drop(bad, [f"train: gauge fixing before epoch {epoch}, step {s + 1} of "
                                      f"{steps_per_epoch} failed: Algorithm 1 left the range of "
                                      f"{np.dtype(first.dtype)} at p={p:g} (update {int(failed_at[j])}), and "
                                      f"re-solving from the true weights failed: "
                                      f"{stack.gauge_errors.get(int(j), 'no reason given')}" for j in bad])
                    orders, losses, iterations = _kept(xp, keep, orders, losses, iterations)
                    if not alive:
                        break
            extra_w = extra_b = None
            if soft_gauge:
                stack.materialize()
                penalties = [_soft_gauge_penalty(stack.net(j), soft_gauge) for j in range(stack.k)]
                extra_w = [xp.stack([pen[1][l] for pen in penalties]) for l in range(len(stack.S))]
                extra_b = [xp.stack([pen[2][l] for pen in penalties]) for l in range(len(stack.S))]
            batch = orders[:, s * batch_size:(s + 1) * batch_size]
            losses[s] = stack.step(X[batch], y[batch], loss, optimizer, lr, weight_decay, trained, extra_w, extra_b)
            if (s + 1) % check_every == 0 or s + 1 == steps_per_epoch:
                window = losses[checked:s + 1]
                window = window.get() if xp is not np else window          # one read
                finite = np.isfinite(window)
                checked = s + 1
                if not finite.all():
                    bad = np.flatnonzero(~finite.all(axis=0))
                    first_bad = [s + 1 - len(window) + int(np.argmin(finite[:, j])) + 1 for j in bad]
                    made = [f"on the weights the update of step {k - 1} made" if k > 1 else
                            "on the epoch's first weights" for k in first_bad]
                    keep = drop(bad, [f"train: non-finite loss at epoch {epoch}, step {k} of {steps_per_epoch} "
                                      f"({m}; lr={lr:g}); lower the learning rate" for k, m in zip(first_bad, made)])
                    orders, losses, iterations = _kept(xp, keep, orders, losses, iterations)
                    if not alive:
                        break
                stack.maybe_fold()
                bar.update(len(window))
                if K == 1:
                    bar.set_postfix(epoch=epoch, loss=f"{float(window[-1, 0]):.4g}", refresh=False)
                else:
                    bar.set_postfix(epoch=epoch, refresh=False)
        if not alive:
            break
        stack.materialize()
        record(epoch, time.perf_counter() - start, iterations)
        lr *= lr_decay
    bar.close()
    for j, i in enumerate(alive):
        net = stack.net(j)
        results[i] = (LayeredNet._trusted([W.copy() for W in net.weights], [b.copy() for b in net.biases],
                                          stack.xp), histories[i])
    return results


def _kept(xp, keep, orders, losses, iterations):
    """The epoch's per-model arrays of the models kept (host mask ``keep``)."""
    idx = xp.asarray(np.flatnonzero(keep))
    return orders[idx], losses[:, idx], iterations[keep]
