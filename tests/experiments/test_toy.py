"""The toy regression of the soft-gauge chapter: data, network, runners and diagnostics."""
import numpy as np
import pytest

import gaugelit as gl
from gaugelit.experiments.toy import (
    TARGET,
    fit,
    invariance_errors,
    loss_hessian,
    lr_stress_test,
    scale_drift,
    strength_sweep,
    target,
    toy_net,
    toy_regression,
    validation_mse,
)


@pytest.fixture(scope="module")
def data():
    return toy_regression(32, 0.1, 61, seed=0, xp=np)


def test_target_is_the_stated_function():
    x = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(target(x), np.sin(2 * x) + 0.3 * x)
    assert TARGET == "sin(2x) + 0.3x"


def test_dataset_has_the_captions_shape(data):
    assert data.X_train.shape == data.y_train.shape == (32, 1)
    assert data.X_val.shape == data.y_val.shape == (61, 1)
    assert data.X_train.min() >= -2 and data.X_train.max() <= 2
    np.testing.assert_allclose(data.X_val[[0, -1], 0], [-3, 3])
    np.testing.assert_allclose(data.y_val, target(data.X_val))        # noiseless validation target
    big = toy_regression(20_000, 0.1, 2, seed=1, xp=np)
    residual = big.y_train - target(big.X_train)
    np.testing.assert_allclose(residual.std(), 0.1, rtol=0.03)        # additive Gaussian noise of std 0.1
    assert abs(residual.mean()) < 0.005


def test_dataset_and_network_are_reproducible_by_seed():
    a, b = toy_regression(10, seed=3, xp=np), toy_regression(10, seed=3, xp=np)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_train, toy_regression(10, seed=4, xp=np).y_train)
    n, m = toy_net(8, seed=2, xp=np), toy_net(8, seed=2, xp=np)
    np.testing.assert_array_equal(n.biases[0], m.biases[0])


def test_network_is_he_initialised_with_kinks_in_the_training_interval():
    net = toy_net(50, seed=5, xp=np)
    assert net.sizes == (1, 50, 1) and net.dtype == np.float64
    ref = gl.he_init((1, 50, 1), seed=5, dtype="float64", xp=np)
    for W, V in zip(net.weights, ref.weights):
        np.testing.assert_array_equal(W, V)
    kinks = -net.biases[0] / net.weights[0][:, 0]
    assert kinks.min() >= -2 and kinks.max() <= 2
    assert not np.any(net.biases[1])


@pytest.mark.parametrize("bad", [dict(n_train=0), dict(n_val=1), dict(noise=-1.0), dict(noise=float("nan"))])
def test_bad_dataset_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        toy_regression(**{"n_train": 8, **bad})


def test_validation_mse_on_the_grid_and_on_an_interval(data):
    net = toy_net(8, seed=0, xp=np)
    err = (net.forward(data.X_val) - data.y_val) ** 2
    np.testing.assert_allclose(validation_mse(net, data), err.mean())
    inside = np.abs(data.X_val[:, 0]) <= 2
    np.testing.assert_allclose(validation_mse(net, data, (-2, 2)), err[inside].mean())
    with pytest.raises(ValueError, match="no grid point"):
        validation_mse(net, data, (5, 6))


def test_fit_lowers_the_loss_and_records_a_divergence_without_raising(data):
    run = fit(data, width=8, seed=0, lr=0.02, steps=200)
    assert run.stable and not run.diverged and run.loss[-1] < 0.2 * run.loss[0]
    assert len(run.loss) == 201 and np.isfinite(run.val_mse)
    blown = fit(data, width=8, seed=0, lr=50.0, steps=200)
    assert blown.diverged and not blown.stable and blown.net is None and np.isnan(blown.val_mse)


def test_sweep_and_stress_test_have_the_documented_shapes(data):
    sweep = strength_sweep(data, [0.0, 0.2], [0, 1], width=6, lr=0.02, steps=20)
    assert sweep["val_mse"].shape == sweep["final_loss"].shape == (2, 2) and np.all(np.isfinite(sweep["val_mse"]))
    assert sweep["stable"].all() and set(sweep["nets"]) == {(0.0, 0), (0.0, 1), (0.2, 0), (0.2, 1)}
    net = sweep["nets"][0.2, 1]
    np.testing.assert_allclose(sweep["val_mse"][1, 1], validation_mse(net, data))
    np.testing.assert_allclose(sweep["val_mse_inside"][1, 1], validation_mse(net, data, (-2, 2)))
    again = fit(data, width=6, seed=1, lr=0.02, steps=20, soft_gauge=0.2)
    np.testing.assert_allclose(sweep["final_loss"][1, 1], again.loss[-1])
    res = lr_stress_test(data, [0.01, 50.0], strengths=(0.0, 0.2), seeds=(0,), width=6, steps=20)
    assert res["stable"].shape == res["final_loss"].shape == (2, 2, 1)
    assert res["stable"][:, 0].all() and not res["stable"][:, 1].any()
    assert np.isinf(res["final_loss"][:, 1]).all()


@pytest.mark.parametrize("mode, options", [("none", {}), ("soft", {"soft_gauge": 0.2}), ("hard", {"gauge_fix": True})])
def test_scale_drift_runs_are_the_runs_train_makes(data, mode, options):
    # the step-by-step loop of scale_drift composes the same pieces in the same order as train
    runs = scale_drift(data, width=8, seed=1, lr=0.02, steps=15, strength=0.2, modes=(mode,))
    trained, history = gl.train(toy_net(8, seed=1, xp=np), data.X_train, data.y_train, lr=0.02, weight_decay=0.0,
                                epochs=15, batch_size=32, lr_decay=1.0, loss="mse", train_hidden_biases=True,
                                progress=False, **options)
    for W, V in zip(runs[mode].net.weights + runs[mode].net.biases, trained.weights + trained.biases):
        np.testing.assert_allclose(W, V, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(runs[mode].loss, history["data_loss"], rtol=1e-9)
    assert runs[mode].seconds.shape == (15,) and np.all(runs[mode].seconds > 0)


def test_scale_drift_gaps_follow_their_definitions(data):
    runs = scale_drift(data, width=8, seed=0, lr=0.02, steps=300, strength=0.5)
    net = runs["soft"].net
    gap24 = np.sqrt(sum((g ** 2).sum() for g in gl.balance_gaps(net, 2.0, include_bias=True)))
    np.testing.assert_allclose(runs["soft"].gap24[-1], gap24)
    assert runs["soft"].gap24[-1] < 0.05 * runs["soft"].gap24[0]        # the penalty balances (eq. 24)
    assert runs["hard"].gap32[-1] < 0.05 * runs["hard"].gap32[0]        # Algorithm 1 balances (eq. 32)
    assert runs["none"].gap24[-1] > 0.9 * runs["none"].gap24[0]         # nearly conserved without either
    assert len(runs["hard"].gauge_iterations) == 300
    with pytest.raises(ValueError, match="unknown modes"):
        scale_drift(data, modes=("sideways",))


def test_invariance_errors_are_at_rounding_level_in_float64():
    net = toy_net(16, seed=0, xp=np)
    X = np.linspace(-3, 3, 50)[:, None]
    err = invariance_errors(net, X, 20, seed=1)
    assert err["mean_abs"].shape == (20,) and np.all(err["mean_abs"] <= err["max_abs"])
    scale = np.abs(net.forward(X)).max()
    assert err["max_abs"].max() <= 1e-14 * scale
    # a wrong "rescaling" (inputs only) is caught: the measure is not blind
    wrong = gl.LayeredNet([net.weights[0] * 2, net.weights[1]], net.biases)
    assert np.abs(wrong.forward(X) - net.forward(X)).mean() > 1e-3
    with pytest.raises(ValueError):
        invariance_errors(net, X, 0)


def test_loss_hessian_matches_the_exact_one_hidden_layer_formula():
    # f = sum_i v_i relu(w_i x + b_i) + c; L = mean (f - y)^2; H = (2/T) sum_t (J^T J + r_t d2f)
    rng = np.random.default_rng(0)
    net = gl.LayeredNet([rng.standard_normal((3, 1)), rng.standard_normal((1, 3))],
                        [rng.standard_normal(3), rng.standard_normal(1)])
    X, y = rng.uniform(-2, 2, (7, 1)), rng.standard_normal((7, 1))
    w, b, v = net.weights[0][:, 0], net.biases[0], net.weights[1][0]
    # parameter order: w (3), v (3), b (3), c (1)
    H = np.zeros((10, 10))
    for x, t in zip(X[:, 0], y[:, 0]):
        z = w * x + b
        on = (z > 0).astype(float)
        r = float(v @ (z * on) + net.biases[1][0] - t)
        J = np.concatenate([v * on * x, z * on, v * on, [1.0]])
        D = np.zeros((10, 10))
        for i in range(3):
            D[i, 3 + i] = D[3 + i, i] = on[i] * x        # d2f / dw_i dv_i
            D[6 + i, 3 + i] = D[3 + i, 6 + i] = on[i]    # d2f / db_i dv_i
        H += 2 * (np.outer(J, J) + r * D) / len(X)
    np.testing.assert_allclose(loss_hessian(net, X, y), H, rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="float64"):
        loss_hessian(toy_net(4, dtype="float32", xp=np), X.astype("float32"), y.astype("float32"))


def test_initialisations():
    kinks, he, bal = (toy_net(8, seed=3, xp=np, init=i) for i in ("kinks", "he", "balanced"))
    np.testing.assert_array_equal(kinks.weights[1], he.weights[1])         # the same He draw underneath
    assert np.abs(he.biases[0]).max() == 0                                  # plain he_init: zero biases
    X = np.linspace(-3, 3, 41)[:, None]
    np.testing.assert_allclose(bal.forward(X), kinks.forward(X), rtol=1e-12, atol=1e-14)   # same function
    assert np.abs(gl.balance_gaps(bal, 2.0)[0]).max() < 1e-12               # ... at its balanced point
    for net in (kinks, he):                                                 # the other two start unbalanced
        assert np.median(gl.gauge_coordinates(net).log_scales[0]) > 0.5
    with pytest.raises(ValueError, match="init must be one of"):
        toy_net(8, init="orthogonal")
    run = fit(toy_regression(16, seed=0, xp=np), width=8, seed=3, lr=0.01, steps=3, init="balanced")
    assert run.loss.shape == (4,)


def test_scale_drift_minibatches_are_sgd_steps_on_the_batches(data):
    # batch_size turns each step into a step on one mini-batch; the same batches in every mode
    runs = scale_drift(data, width=6, seed=2, lr=0.05, steps=5, strength=0.2, modes=("none", "soft"),
                       batch_size=8, init="he")
    net = toy_net(6, seed=2, xp=np, init="he")
    rng = np.random.default_rng([2, 2])
    first, second = rng.permutation(32), rng.permutation(32)    # the fifth step starts a new pass
    for batch in [first[0:8], first[8:16], first[16:24], first[24:32], second[0:8]]:
        _, gw, gb = gl.loss_and_grads(net, data.X_train[batch], data.y_train[batch], loss="mse")
        gl.sgd_step(net, gw, gb, 0.05, 0.0, train_hidden_biases=True)
    for W, V in zip(runs["none"].net.weights + runs["none"].net.biases, net.weights + net.biases):
        np.testing.assert_allclose(W, V, rtol=1e-12)
    assert runs["none"].loss.shape == (6,)
    assert not np.allclose(runs["soft"].net.weights[0], runs["none"].net.weights[0])
    with pytest.raises(ValueError, match="batch_size"):
        scale_drift(data, steps=2, batch_size=0)
