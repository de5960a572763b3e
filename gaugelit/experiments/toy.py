"""The toy regression of the soft-gauge paper (Terin, 2026, Figs. 2-5) and its experiments.

The paper's captions fix only the shape of the problem: training inputs drawn from ``[-2, 2]`` with
additive Gaussian noise, a noiseless target on a validation grid over ``[-3, 3]``, a one-hidden-layer
ReLU network. Everything else is gaugelit's choice and is stated here (and in the book):

* target ``f*(x) = sin(2x) + 0.3 x``; noise standard deviation ``0.1``; inputs uniform on ``[-2, 2]``;
  the validation grid is ``n_val`` evenly spaced points on ``[-3, 3]`` (so it also measures
  extrapolation, as the caption implies);
* network 1-``width``-1, weights by He initialisation (``he_init``), hidden biases that put the
  kink ``-b_i / w_i`` of unit i uniformly in ``[-2, 2]``; output bias 0. At this initialisation a
  hidden unit's incoming mass (~ 2 (1 + c_i^2)) is far above its outgoing mass (~ 2 / width): the
  network starts far from balance, which is what the soft penalty acts on;
* training: full-batch gradient descent on the MSE loss ``mean_t (f(x_t) - y_t)^2`` with trainable
  hidden biases, no weight decay, constant learning rate, plus ``S`` of
  :func:`gaugelit.soft_gauge_penalty` at strength ``lambda`` (added as it stands).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..core.backend import array_module, asarray, default_backend, to_numpy
from ..core.gauge import balance_gaps, rescale
from ..core.network import LayeredNet, he_init
from ..solvers import minnorm
from ..training import TrainingDiverged, loss_and_grads, sgd_step, train
from ..training.soft_gauge import from_parameter_vector, parameter_vector, soft_gauge_penalty
from .soft_claims import stable_loss

__all__ = ["target", "TARGET", "ToyData", "toy_regression", "INITS", "toy_net", "validation_mse", "ToyFit", "fit",
           "strength_sweep", "lr_stress_test", "DriftRun", "scale_drift", "invariance_errors", "loss_hessian"]

#: The noiseless target, as text (for captions).
TARGET = "sin(2x) + 0.3x"


def target(x):
    """``f*(x) = sin(2x) + 0.3 x`` on any backend."""
    xp = array_module(x)
    return xp.sin(2 * x) + 0.3 * x


@dataclass(frozen=True)
class ToyData:
    """Training set (noisy) and validation grid (noiseless), as ``(n, 1)`` column arrays."""
    X_train: object
    y_train: object
    X_val: object
    y_val: object
    noise: float
    seed: int


def toy_regression(n_train: int = 64, noise: float = 0.1, n_val: int = 241, *, seed: int = 0,
                   dtype="float64", xp=None) -> ToyData:
    """Inputs uniform on ``[-2, 2]``, ``y = f*(x) + noise * N(0, 1)``; validation grid on ``[-3, 3]``.

    Drawn on the host with NumPy's PCG64 from ``seed`` and moved to ``xp`` (default backend).
    """
    if int(n_train) != n_train or n_train < 1 or int(n_val) != n_val or n_val < 2:
        raise ValueError(f"toy_regression: need n_train >= 1 and n_val >= 2, got {n_train}, {n_val}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"toy_regression: noise must be finite and >= 0, got {noise}")
    xp = xp or default_backend()
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-2.0, 2.0, int(n_train)))
    y = target(x) + noise * rng.standard_normal(x.shape)
    grid = np.linspace(-3.0, 3.0, int(n_val))
    def col(a):
        return asarray(a[:, None], xp, dtype)

    return ToyData(col(x), col(y), col(grid), col(target(grid)), float(noise), int(seed))


#: Initialisations of the toy network (see :func:`toy_net`).
INITS = ("kinks", "he", "balanced")


def toy_net(width: int = 32, seed: int = 0, dtype="float64", xp=None, *, init: str = "kinks") -> LayeredNet:
    """A 1-``width``-1 ReLU network.

    ``init="kinks"`` (the chapter's choice): He-initialised weights and hidden biases that put the
    kinks ``-b_i / w_i`` uniformly in ``[-2, 2]``, far from balance. ``"he"``: plain :func:`he_init`
    (zero biases, every kink at 0), still unbalanced (fan-in 1 against fan-out ``width``).
    ``"balanced"``: the ``"kinks"`` network moved to its orbit's balanced point (same function,
    every ``Delta_i = 0``).
    """
    if int(width) != width or width < 1:
        raise ValueError(f"toy_net: width must be a positive integer, got {width}")
    if init not in INITS:
        raise ValueError(f"toy_net: init must be one of {INITS}, got {init!r}")
    net = he_init((1, int(width), 1), seed=seed, dtype=dtype, xp=xp)
    if init == "he":
        return net
    kinks = np.random.default_rng([seed, 1]).uniform(-2.0, 2.0, int(width))
    w = to_numpy(net.weights[0])[:, 0]
    net.biases[0] = asarray(-w * kinks, net.xp, net.dtype)
    if init == "balanced":
        from ..training.soft_gauge import gauge_coordinates
        net = gauge_coordinates(net).balanced
    return net


def validation_mse(net: LayeredNet, data: ToyData, interval=None) -> float:
    """Mean squared error of ``net`` against the noiseless target on the validation grid, or on the
    grid points inside ``interval = (lo, hi)`` (e.g. ``(-2, 2)``: interpolation only)."""
    X, y = data.X_val, data.y_val
    if interval is not None:
        lo, hi = interval
        inside = (X[:, 0] >= lo) & (X[:, 0] <= hi)
        if not bool(inside.any()):
            raise ValueError(f"validation_mse: no grid point lies in {interval}")
        X, y = X[inside], y[inside]
    return float(((net.forward(X) - y) ** 2).mean())


@dataclass
class ToyFit:
    """One training run. ``loss`` is the training MSE per step (entry 0 before training; only that
    entry when the run diverged); ``stable`` is :func:`.soft_claims.stable_loss` (every loss finite, the
    final one within the margin ``log 1.1`` of the run's minimum; book/analysis-plan.md's amendment).
    ``net`` is the trained network, None when the run diverged."""
    net: LayeredNet | None
    loss: np.ndarray
    val_mse: float
    diverged: bool
    stable: bool
    seconds: float


def fit(data: ToyData, *, width: int = 32, seed: int = 0, lr: float = 0.05, steps: int = 2000,
        soft_gauge: float = 0.0, gauge_fix: bool = False, init: str = "kinks") -> ToyFit:
    """Full-batch gradient descent with :func:`gaugelit.train` (MSE, trainable hidden biases, no
    weight decay, constant learning rate) from ``toy_net(width, seed, init=init)``; a divergence is
    recorded, not raised."""
    net = toy_net(width, seed, dtype=data.X_train.dtype.name, xp=array_module(data.X_train), init=init)
    n = data.X_train.shape[0]
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):   # a diverging run overflows by design
        try:
            trained, history = train(net, data.X_train, data.y_train, optimizer="sgd", lr=lr, weight_decay=0.0,
                                     epochs=steps, batch_size=n, lr_decay=1.0, gauge_fix=gauge_fix,
                                     loss="mse", train_hidden_biases=True, soft_gauge=soft_gauge,
                                     progress=False)
        except TrainingDiverged:
            seconds = time.perf_counter() - start
            return ToyFit(None, np.array([float(((net.forward(data.X_train) - data.y_train) ** 2).mean())]),
                          float("nan"), True, False, seconds)
    seconds = time.perf_counter() - start
    loss = np.asarray(history["data_loss"], dtype=float)
    stable = stable_loss(loss)
    return ToyFit(trained, loss, validation_mse(trained, data), False, stable, seconds)


def strength_sweep(data: ToyData, strengths, seeds, *, interval=(-2.0, 2.0), **fit_args) -> dict:
    """Train once per penalty strength and seed (other settings: ``fit_args`` of :func:`fit`).

    Returns arrays of shape ``(strengths, seeds)``: ``"val_mse"`` on the whole validation grid,
    ``"val_mse_inside"`` on its points inside ``interval``, ``"final_loss"`` (training MSE) and
    ``"stable"``, NaN/False where a run diverged; and ``"nets"``, the trained networks by
    ``(strength, seed)``.
    """
    strengths, seeds = list(strengths), list(seeds)
    shape = (len(strengths), len(seeds))
    out = {"val_mse": np.full(shape, np.nan), "val_mse_inside": np.full(shape, np.nan),
           "final_loss": np.full(shape, np.nan), "stable": np.zeros(shape, bool), "nets": {}}
    for a, lam in enumerate(strengths):
        for b, seed in enumerate(seeds):
            run = fit(data, seed=seed, soft_gauge=lam, **fit_args)
            out["stable"][a, b] = run.stable
            if not run.diverged:
                out["val_mse"][a, b] = run.val_mse
                out["val_mse_inside"][a, b] = validation_mse(run.net, data, interval)
                out["final_loss"][a, b] = run.loss[-1]
                out["nets"][lam, seed] = run.net
    return out


def lr_stress_test(data: ToyData, lrs, strengths=(0.0, 0.2), seeds=(0,), **fit_args) -> dict:
    """Train at every learning rate with every strength and seed (``fit_args`` go to :func:`fit`,
    e.g. ``gauge_fix=True`` for Algorithm 1 before every step).

    Returns ``{"final_loss", "stable", "val_mse"}``, arrays of shape ``(strengths, lrs, seeds)``;
    ``final_loss`` is the last training MSE (inf where the loss overflowed).
    """
    shape = (len(strengths), len(lrs), len(seeds))
    final, stable, val = np.full(shape, np.inf), np.zeros(shape, bool), np.full(shape, np.nan)
    for a, lam in enumerate(strengths):
        for b, lr in enumerate(lrs):
            for c, seed in enumerate(seeds):
                run = fit(data, seed=seed, lr=lr, soft_gauge=lam, **fit_args)
                if not run.diverged:
                    final[a, b, c], val[a, b, c] = run.loss[-1], run.val_mse
                stable[a, b, c] = run.stable
    return {"final_loss": final, "stable": stable, "val_mse": val}


@dataclass
class DriftRun:
    """Per step (entry 0 before training): ``gap24`` = ``||Delta||`` with the hidden biases (eq. 24,
    p = 2), ``gap32`` = without them (eq. 32, what Algorithm 1 zeroes), the training MSE; and the
    wall time of each step (gauge fixing and penalty included, bookkeeping excluded)."""
    mode: str
    gap24: np.ndarray
    gap32: np.ndarray
    loss: np.ndarray
    seconds: np.ndarray
    gauge_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0))
    net: LayeredNet | None = None


def _gap_norm(net, include_bias):
    return float(np.sqrt(sum(float((g * g).sum()) for g in balance_gaps(net, 2.0, include_bias=include_bias))))


def scale_drift(data: ToyData, *, width: int = 32, seed: int = 0, lr: float = 0.05, steps: int = 2000,
                strength: float = 0.2, delta: float = 1e-3, modes=("none", "soft", "hard"),
                init: str = "kinks", batch_size: int | None = None) -> dict:
    """The same full-batch runs as :func:`fit`, written out step by step to record the gaps and time
    every step: ``"none"`` (plain gradient descent), ``"soft"`` (penalty of the given strength) and
    ``"hard"`` (Algorithm 1, ``minnorm(p=2, method="multiplicative", delta)``, before every step, as
    ``train(gauge_fix=True)`` does). Returns ``{mode: DriftRun}``.

    ``batch_size`` (default: the whole training set) turns the loop into mini-batch SGD: one step
    per mini-batch, drawn without replacement from a permutation per pass (seeded by ``seed``, the
    same batches in every mode); ``loss`` and the gaps are still recorded after every step.
    """
    unknown = set(modes) - {"none", "soft", "hard"}
    if unknown:
        raise ValueError(f"scale_drift: unknown modes {sorted(unknown)}; use 'none', 'soft', 'hard'")
    X, y = data.X_train, data.y_train
    runs = {}
    for mode in modes:
        net = toy_net(width, seed, dtype=X.dtype.name, xp=array_module(X), init=init)
        batches = _batches(X.shape[0], batch_size, int(steps), seed)
        g24, g32 = [_gap_norm(net, True)], [_gap_norm(net, False)]
        loss, seconds, iters = [float(((net.forward(X) - y) ** 2).mean())], [], []
        for batch in batches:
            start = time.perf_counter()
            if mode == "hard":
                fixed = minnorm(net, 2.0, method="multiplicative", delta=delta)
                net = fixed.net
                iters.append(fixed.iterations)
            _, gw, gb = loss_and_grads(net, X if batch is None else X[batch], y if batch is None else y[batch],
                                       loss="mse")
            if mode == "soft":
                _, sw, sb = soft_gauge_penalty(net, strength)
                gw = [g + h for g, h in zip(gw, sw)]
                gb = [g + h for g, h in zip(gb, sb)]
            sgd_step(net, gw, gb, lr, 0.0, train_hidden_biases=True)
            seconds.append(time.perf_counter() - start)
            g24.append(_gap_norm(net, True))
            g32.append(_gap_norm(net, False))
            loss.append(float(((net.forward(X) - y) ** 2).mean()))
        runs[mode] = DriftRun(mode, np.array(g24), np.array(g32), np.array(loss), np.array(seconds),
                              np.array(iters, dtype=int), net)
    return runs


def _batches(n: int, batch_size, steps: int, seed: int) -> list:
    """``steps`` index arrays of mini-batches (None for full batches), a fresh permutation per pass."""
    if batch_size is None or batch_size >= n:
        return [None] * steps
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"scale_drift: batch_size must be a positive integer, got {batch_size}")
    rng, out = np.random.default_rng([seed, 2]), []
    while len(out) < steps:
        order = rng.permutation(n)
        out.extend(order[k:k + batch_size] for k in range(0, n - batch_size + 1, batch_size))
    return out[:steps]


def invariance_errors(net: LayeredNet, X, n_transforms: int = 200, *, log_spread: float = 2.0,
                      seed: int = 0) -> dict:
    """Apply ``n_transforms`` random neuron-wise rescalings ``s_i = exp(U(-log_spread, log_spread))``
    and measure ``Delta_inv = mean_x |f_s(x) - f(x)|`` over the rows of ``X`` (and the max over x).

    Returns ``{"mean_abs": ..., "max_abs": ...}``, arrays of length ``n_transforms``.
    """
    if int(n_transforms) != n_transforms or n_transforms < 1:
        raise ValueError(f"invariance_errors: n_transforms must be a positive integer, got {n_transforms}")
    rng = np.random.default_rng(seed)
    out = net.forward(X)
    mean_abs, max_abs = np.empty(int(n_transforms)), np.empty(int(n_transforms))
    for t in range(int(n_transforms)):
        s = [asarray(np.exp(rng.uniform(-log_spread, log_spread, n)), net.xp, net.dtype) for n in net.sizes[1:-1]]
        diff = net.xp.abs(rescale(net, s).forward(X) - out)
        mean_abs[t], max_abs[t] = float(diff.mean()), float(diff.max())
    return {"mean_abs": mean_abs, "max_abs": max_abs}


def loss_hessian(net: LayeredNet, X, y, *, h: float = 1e-5):
    """The dense Hessian of the MSE loss over all parameters (ordered as
    :func:`gaugelit.training.soft_gauge.parameter_vector`), by central differences of the back-propagated
    gradient, symmetrised. For small networks in float64; ``h`` must not carry a data point across a
    ReLU kink (the loss is piecewise smooth), which at ``h = 1e-5`` is a measure-zero event.
    """
    if net.dtype != np.float64:
        raise TypeError(f"loss_hessian: finite differences need float64, got {net.dtype}")
    theta = parameter_vector(net)
    P = theta.shape[0]
    H = net.xp.empty((P, P), dtype=net.dtype)
    for n in range(P):
        grads = []
        for sign in (1.0, -1.0):
            moved = theta.copy()
            moved[n] += sign * h
            weights, biases = from_parameter_vector(net, moved)
            _, gw, gb = loss_and_grads(LayeredNet._trusted(weights, biases, net.xp), X, y, loss="mse")
            grads.append(net.xp.concatenate([g.ravel() for g in gw + gb]))
        H[:, n] = (grads[0] - grads[1]) / (2 * h)
    return (H + H.T) / 2
