"""Losses and gradients, the SGD/EGD steps of eqs. (38)-(41), and the training loop."""
import numpy as np
import pytest

import gaugelit as gl
from conftest import random_net


def numeric_grad(f, arrays, h=1e-6):
    grads = []
    for A in arrays:
        G = np.zeros_like(A)
        for idx in np.ndindex(A.shape):
            old = A[idx]
            A[idx] = old + h
            up = f()
            A[idx] = old - h
            down = f()
            A[idx] = old
            G[idx] = (up - down) / (2 * h)
        grads.append(G)
    return grads


@pytest.mark.parametrize("loss", ["log", "mse"])
def test_gradients_match_finite_differences(loss):
    net = random_net([4, 5, 3, 3], seed=2, bias_scale=1.0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4))
    y = rng.integers(0, 3, 6) if loss == "log" else rng.standard_normal((6, 3))
    _, gw, gb = gl.loss_and_grads(net, X, y, loss)
    f = lambda: float(gl.loss_and_grads(net, X, y, loss)[0])  # noqa: E731
    for got, want in zip(gw + gb, numeric_grad(f, net.weights + net.biases)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


def test_log_loss_is_eq_42():
    net = random_net([3, 4, 5], seed=1)
    X = np.random.default_rng(1).standard_normal((7, 3))
    y = np.arange(7) % 5
    f = net.forward(X)
    rho = np.exp(f) / np.exp(f).sum(axis=1, keepdims=True)
    assert np.isclose(float(gl.loss_and_grads(net, X, y)[0]), -np.log(rho[np.arange(7), y]).mean())


def test_sgd_step_is_eq_38_and_39():
    net = random_net([3, 4, 2], seed=3)
    gw = [np.ones_like(W) for W in net.weights]
    gb = [np.ones_like(b) for b in net.biases]
    new = net.copy()
    gl.sgd_step(new, gw, gb, lr=0.1, weight_decay=0.01)
    for W, W1 in zip(net.weights, new.weights):
        np.testing.assert_allclose(W1, W - 0.1 * 1 - 0.1 * 0.01 * W)
    np.testing.assert_array_equal(new.biases[0], net.biases[0])          # hidden bias frozen
    np.testing.assert_allclose(new.biases[1], net.biases[1] - 0.1)


def test_egd_step_is_eq_40_and_41():
    net = random_net([3, 4, 2], seed=3)
    rng = np.random.default_rng(0)
    gw = [rng.standard_normal(W.shape) for W in net.weights]
    gb = [rng.standard_normal(b.shape) for b in net.biases]
    new = net.copy()
    gl.egd_step(new, gw, gb, lr=0.1, weight_decay=0.01)
    for W, W1, g in zip(net.weights, new.weights, gw):
        np.testing.assert_allclose(W1, W * np.exp(-0.1 * np.sign(W) * g - 0.1 * 0.01))
        assert np.all(np.sign(W1) == np.sign(W))
    np.testing.assert_allclose(new.biases[1], net.biases[1] * np.exp(-0.1 * np.sign(net.biases[1]) * gb[1]))
    np.testing.assert_array_equal(new.biases[0], net.biases[0])


def test_egd_plus_minus_is_eq_41_on_both_parts():
    # EG+-: b = b+ - b-, each part updated by eq. (41) (b+ by exp(-lr g), b- by exp(+lr g)),
    # computed here on the two parts explicitly; a zero bias moves against its gradient.
    net = random_net([3, 4, 2], seed=3)
    net.biases[1][:] = [0.0, -0.7]
    gb = [np.zeros(4), np.array([0.4, -1.3])]
    gw = [np.zeros_like(W) for W in net.weights]
    beta, lr = 0.05, 0.1
    b = net.biases[1].copy()
    plus = (np.sqrt(b ** 2 + 4 * beta ** 2) + b) / 2
    minus = plus - b
    np.testing.assert_allclose(plus * minus, beta ** 2)
    want = plus * np.exp(-lr * gb[1]) - minus * np.exp(lr * gb[1])
    gl.egd_step(net, gw, gb, lr=lr, weight_decay=0.0, bias_scale=beta)
    np.testing.assert_allclose(net.biases[1], want, rtol=1e-14)
    assert net.biases[1][0] < 0 < net.biases[1][1] + 0.7      # moved against the gradient


@pytest.mark.parametrize("gauge_fix", [False, True])
def test_egd_learns_output_biases_from_zero(gauge_fix):
    # he_init's biases are zero; eq. (41) as printed keeps them there, EG+- (the default) does not.
    X, y = blobs()
    net = gl.he_init([6, 8, 3], seed=0, dtype="float64", xp=np)
    printed, _ = gl.train(net, X, y, optimizer="egd", epochs=2, gauge_fix=gauge_fix, progress=False,
                          egd_biases="as-printed")
    learned, _ = gl.train(net, X, y, optimizer="egd", epochs=2, gauge_fix=gauge_fix, progress=False)
    np.testing.assert_array_equal(printed.biases[-1], 0.0)
    assert np.all(learned.biases[-1] != 0.0) and np.abs(learned.biases[-1]).max() > 1e-3
    np.testing.assert_array_equal(learned.biases[0], 0.0)                # hidden biases frozen
    with pytest.raises(ValueError, match="egd_biases"):
        gl.train(net, X, y, optimizer="egd", epochs=1, progress=False, egd_biases="plus")


def blobs(n=300, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)) * 3
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.standard_normal((n, d))).astype("float32"), y


@pytest.mark.parametrize("optimizer", ["sgd", "egd"])
@pytest.mark.parametrize("gauge_fix", [False, True])
def test_training_learns_and_records_history(optimizer, gauge_fix, xp):
    X, y = blobs()
    net = gl.he_init([6, 16, 12, 3], seed=0, xp=xp)
    lr = 0.05 if optimizer == "sgd" else 0.1
    trained, hist = gl.train(net, xp.asarray(X), xp.asarray(y), optimizer=optimizer, lr=lr, epochs=4,
                             gauge_fix=gauge_fix, progress=False, X_test=xp.asarray(X[:50]),
                             y_test=xp.asarray(y[:50]))
    assert hist["epoch"] == [0, 1, 2, 3, 4]
    assert hist["train_error"][-1] < 0.5 * hist["train_error"][0]
    assert hist["reg_loss"][-1] < hist["reg_loss"][0]
    assert len(hist["test_error"]) == 5 and np.isclose(hist["lr"][-1], lr * 0.95 ** 3) and hist["lr"][:2] == [lr, lr]
    assert np.all(gl.to_numpy(net.weights[0]) == gl.to_numpy(gl.he_init([6, 16, 12, 3], seed=0).weights[0]))
    assert (sum(hist["gauge_iterations"]) > 0) == gauge_fix
    if gauge_fix:   # the last step moved the weights only O(lr^2) off balance
        p = 2.0 if optimizer == "sgd" else 1.0
        assert gl.imbalance(trained, p) < 0.05


def test_gauge_fixing_keeps_the_function_of_each_step():
    # Gauge fixing before a step must not change the function that step starts from.
    X, y = blobs(n=64)
    net = gl.he_init([6, 16, 12, 3], seed=0, xp=np)
    fixed = gl.minnorm(net, 2.0, method="multiplicative").net
    np.testing.assert_allclose(fixed.forward(X), net.forward(X), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_names_the_step():
    X, y = blobs()
    net = gl.he_init([6, 16, 12, 3], seed=0)      # on the default backend: train moves the data
    with pytest.raises(gl.TrainingDiverged, match=r"non-finite loss at epoch 1, step \d+"):
        gl.train(net, X * 1e3, y, lr=1e3, epochs=2, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="adam"), "unknown optimizer"),
    (dict(optimizer="egd", p=2), "p must be 1"),
    (dict(lr=-1.0), "lr must be"),
    (dict(weight_decay=np.nan), "weight_decay"),
    (dict(batch_size=0), "batch_size"),
    (dict(loss="hinge"), "unknown loss"),
    (dict(gauge_fix=True, delta=0.0), "delta"),
    (dict(gauge_fix=True, delta=np.nan), "delta"),
])
def test_bad_training_arguments(kwargs, message):
    X, y = blobs(n=20)
    with pytest.raises(ValueError, match=message):
        gl.train(gl.he_init([6, 5, 3]), X, y, epochs=1, progress=False, **kwargs)


def test_bad_targets():
    X, y = blobs(n=20)
    net = gl.he_init([6, 5, 3], xp=np)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        gl.loss_and_grads(net, X, y + 5)
    with pytest.raises(ValueError, match="integer labels"):
        gl.loss_and_grads(net, X, y.astype(float))
    with pytest.raises(ValueError, match="targets of shape"):
        gl.loss_and_grads(net, X, np.zeros((20, 2)), loss="mse")
    with pytest.raises(ValueError, match="non-finite"):
        gl.train(net, np.full_like(X, np.nan), y, epochs=1, progress=False)


def test_history_records_the_regularised_loss_in_the_minimum_norm_gauge():
    X, y = blobs()
    net = gl.he_init([6, 16, 12, 3], seed=0, xp=np, dtype="float64")
    lam = 0.05
    _, plain = gl.train(net, X, y, lr=0.05, weight_decay=lam, epochs=2, progress=False)
    assert "reg_loss_min_norm" not in plain                      # opt-in: a solve per epoch
    _, hist = gl.train(net, X, y, lr=0.05, weight_decay=lam, epochs=2, progress=False, min_norm_loss=True)
    assert hist["reg_loss"] == plain["reg_loss"]
    balanced = gl.minnorm(net, 2.0, gamma_tol=1e-10).net        # epoch 0: the untrained network
    expected = gl.evaluate(balanced, X, y, 2.0, lam)["reg_loss"]
    np.testing.assert_allclose(hist["reg_loss_min_norm"][0], expected, rtol=1e-7)
    assert all(m <= r + 1e-12 for m, r in zip(hist["reg_loss_min_norm"], hist["reg_loss"]))
    assert hist["reg_loss_min_norm"][0] < hist["reg_loss"][0] - 1e-3   # he_init is far from balanced
