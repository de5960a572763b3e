"""train's gauge-fixing modes ("never", "init", "every") and its per-layer learning-rate scale, the
arms of the mechanism study (book/analysis-plan.md)."""
import numpy as np
import pytest

import gaugelit as gl

SIZES = (12, 16, 10, 4)


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0])) * 2.0
    return X, (X @ rng.standard_normal((SIZES[0], SIZES[-1]))).argmax(axis=1)


def curves(history):
    return {k: v for k, v in history.items() if k not in ("seconds", "gauge_iterations")}


def same(a, b):
    for (W, c), (V, d) in zip(zip(a.weights, a.biases), zip(b.weights, b.biases)):
        np.testing.assert_array_equal(W, V)
        np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize("optimizer", ["sgd", "egd"])
def test_the_booleans_are_the_modes_never_and_every(optimizer):
    X, y = data()
    net = gl.he_init(SIZES, seed=1, dtype="float64")
    for flag, mode in ((True, "every"), (False, "never")):
        a, ha = gl.train(net, X, y, optimizer=optimizer, gauge_fix=flag, epochs=2, progress=False)
        b, hb = gl.train(net, X, y, optimizer=optimizer, gauge_fix=mode, epochs=2, progress=False)
        same(a, b)
        assert curves(ha) == curves(hb) and ha["gauge_iterations"] == hb["gauge_iterations"]
    with pytest.raises(ValueError, match="gauge_fix must be one of"):
        gl.train(net, X, y, gauge_fix="once", progress=False)


@pytest.mark.parametrize("optimizer", ["sgd", "egd"])
def test_init_balances_once_by_algorithm_1_then_trains_plainly(optimizer):
    X, y = data()
    net = gl.he_init(SIZES, seed=2, dtype="float64")
    p = gl.training.OPTIMIZERS[optimizer]["p"]
    balanced = gl.minnorm(net, p, method="multiplicative", delta=1e-3)
    # eq. (41)'s bias step: EG+-'s beta comes from the network as given (the next test)
    extra = {"egd_biases": "as-printed"} if optimizer == "egd" else {}
    a, ha = gl.train(net, X, y, optimizer=optimizer, gauge_fix="init", epochs=2, progress=False, **extra)
    b, hb = gl.train(balanced.net, X, y, optimizer=optimizer, gauge_fix=False, epochs=2, progress=False, **extra)
    same(a, b)
    assert curves(ha) == curves(hb)
    assert ha["gauge_iterations"] == [0, balanced.iterations, 0] and balanced.iterations > 0
    every, _ = gl.train(net, X, y, optimizer=optimizer, gauge_fix=True, epochs=2, progress=False)
    never, _ = gl.train(net, X, y, optimizer=optimizer, gauge_fix=False, epochs=2, progress=False)
    assert not np.allclose(a.weights[0], every.weights[0]) and not np.allclose(a.weights[0], never.weights[0])


def test_train_many_runs_every_mode_as_train_does():
    X, y = data()
    nets = [gl.he_init(SIZES, seed=s, dtype="float64") for s in (3, 3, 3)]
    modes = ["never", "init", "every"]
    many = gl.train_many(nets, X, y, gauge_fix=modes, seeds=[0, 0, 0], epochs=2, progress=False)
    for (net, h), mode in zip(many, modes):
        one, h1 = gl.train(nets[0], X, y, gauge_fix=mode, seed=0, epochs=2, progress=False)
        same(net, one)
        assert curves(h) == curves(h1) and h["gauge_iterations"] == h1["gauge_iterations"]


@pytest.mark.parametrize("optimizer", ["sgd", "egd"])
def test_unit_scales_change_nothing_and_a_common_scale_is_a_learning_rate(optimizer):
    X, y = data()
    net = gl.he_init(SIZES, seed=4, dtype="float64")
    L = len(net.weights)
    plain, hp = gl.train(net, X, y, optimizer=optimizer, epochs=2, progress=False)
    ones, ho = gl.train(net, X, y, optimizer=optimizer, epochs=2, progress=False, lr_scale=(np.ones(L), np.ones(L)))
    same(plain, ones)
    assert curves(hp) == curves(ho)
    lr, wd = gl.training.OPTIMIZERS[optimizer]["lr"], gl.training.OPTIMIZERS[optimizer]["weight_decay"]
    c = 3.0   # the decay keeps the unscaled rate: lr_scale c at (lr, wd) is the rate c lr at decay wd / c
    scaled, _ = gl.train(net, X, y, optimizer=optimizer, epochs=2, progress=False, lr=lr, weight_decay=wd,
                         lr_scale=(np.full(L, c), np.full(L, c)))
    faster, _ = gl.train(net, X, y, optimizer=optimizer, epochs=2, progress=False, lr=c * lr, weight_decay=wd / c)
    for W, V in zip(scaled.weights + scaled.biases, faster.weights + faster.biases):
        np.testing.assert_allclose(W, V, rtol=1e-12, atol=1e-15)


def test_a_layer_scale_is_that_layer_s_sgd_rate():
    # one full-batch SGD step by hand: W_l <- (1 - lr wd) W_l - lr s_l dL/dW_l, b_l likewise with its scale
    X, y = data(n=32)
    net = gl.he_init(SIZES, seed=5, dtype="float64")
    net.biases[-1][:] = 0.3
    w, b = np.array([0.5, 2.0, 7.0]), np.array([1.0, 1.0, 0.25])
    lr, wd = 0.01, 1e-3
    stepped, _ = gl.train(net, X, y, lr=lr, weight_decay=wd, epochs=1, batch_size=32, progress=False,
                          lr_scale=(w, b))
    _, gw, gb = gl.loss_and_grads(net, X, y)
    for l in range(3):
        np.testing.assert_allclose(stepped.weights[l], (1 - lr * wd) * net.weights[l] - lr * w[l] * gw[l], rtol=1e-12)
    np.testing.assert_allclose(stepped.biases[-1], net.biases[-1] - lr * b[-1] * gb[-1], rtol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "egd"])
def test_matched_scales_reproduce_training_in_a_per_layer_gauge_exactly(optimizer):
    """When the minimum-norm gauge is one scale per layer, training the original network at the
    matched rates is training the balanced one, mapped back (the derivation of matched_lr_scale)."""
    X, y = data()
    p = gl.training.OPTIMIZERS[optimizer]["p"]
    balanced = gl.minnorm(gl.he_init(SIZES, seed=6, dtype="float64"), p, method="block", gamma_tol=1e-13).net
    balanced.biases[-1][:] = 0.2
    c = [4.0, 0.05]                                            # per-layer scales of the two hidden layers
    net = gl.rescale(balanced, [np.full(n, v) for n, v in zip(SIZES[1:-1], c)])
    w, b = gl.matched_lr_scale(net, optimizer)
    q = 2 if optimizer == "sgd" else 1
    np.testing.assert_allclose(w, [c[0] ** q, (c[1] / c[0]) ** q, c[1] ** -q], rtol=1e-8)
    np.testing.assert_allclose(b, [c[0] ** q, c[1] ** q, 1.0], rtol=1e-8)
    # EG+-'s beta is taken once from the network's own weights (half their mean magnitude), so it
    # differs between gauges; eq. (41)'s multiplicative bias step has no such constant
    extra = {"egd_biases": "as-printed"} if optimizer == "egd" else {}
    kw = dict(optimizer=optimizer, epochs=2, batch_size=16, progress=False, **extra)
    direct, _ = gl.train(balanced, X, y, **kw)
    matched, _ = gl.train(net, X, y, lr_scale=(w, b), **kw)
    back = gl.rescale(direct, [np.full(n, v) for n, v in zip(SIZES[1:-1], c)])
    for W, V in zip(matched.weights + [matched.biases[-1]], back.weights + [back.biases[-1]]):
        np.testing.assert_allclose(W, V, rtol=1e-7, atol=1e-12)
    try:                                                         # and the unmatched run differs
        plain, _ = gl.train(net, X, y, **kw)
        assert not np.allclose(plain.weights[1], back.weights[1], rtol=1e-3)
    except gl.TrainingDiverged:       # EGD at this gauge diverges without the matched rates
        assert optimizer == "egd"
    if optimizer == "egd":                                         # EG+-: beta from each network's weights
        assert gl.egd_bias_scale(net, 2) != pytest.approx(gl.egd_bias_scale(balanced, 2), rel=1e-3)


def test_bad_scales_are_refused_by_name():
    X, y = data()
    net = gl.he_init(SIZES, seed=7, dtype="float64")
    for bad, match in (((np.ones(2), np.ones(3)), "weights part must be 3"),
                       ((np.ones(3), [1, 1, -1]), "biases part must be 3 positive"),
                       ((np.ones(3), [1, np.nan, 1]), "biases part"), (np.ones(3), "pair")):
        with pytest.raises(ValueError, match=match):
            gl.train(net, X, y, lr_scale=bad, progress=False)
    with pytest.raises(ValueError, match="soft_gauge and lr_scale"):
        gl.train(net, X, y, lr_scale=(np.ones(3), np.ones(3)), soft_gauge=0.1, progress=False)
    with pytest.raises(ValueError, match="lr_scale must be None or a list of 2"):
        gl.train_many([net, net], X, y, lr_scale=(np.ones(3), np.ones(3)), progress=False)


def test_eg_plus_minus_takes_beta_from_the_network_as_given_in_every_mode():
    # init balances before the first step; its beta is still the one of the network as given (the
    # output units have no gauge factor), so init and every start their biases alike
    X, y = data()
    net = gl.he_init(SIZES, seed=8, dtype="float64")
    p = 1.0
    balanced = gl.minnorm(net, p, method="multiplicative", delta=1e-3)
    assert gl.egd_bias_scale(balanced.net, 2) != pytest.approx(gl.egd_bias_scale(net, 2), rel=1e-6)
    init, _ = gl.train(net, X, y, optimizer="egd", gauge_fix="init", epochs=1, progress=False)
    from_balanced, _ = gl.train(balanced.net, X, y, optimizer="egd", gauge_fix="never", epochs=1, progress=False)
    assert not np.allclose(init.biases[-1], from_balanced.biases[-1], rtol=1e-9)   # a different beta there
    # hidden biases trained by EG+-: beta rescales with each unit's factor, so init equals the
    # balanced network trained with the rescaled beta: checked through the first step by hand
    net.biases[0][:] = 0.05
    one, _ = gl.train(net, X, y, optimizer="egd", gauge_fix="init", epochs=1, batch_size=64, progress=False,
                      train_hidden_biases=True)
    b0 = gl.minnorm(net, p, method="multiplicative", delta=1e-3).net
    _, gw, gb = gl.loss_and_grads(b0, X, y)
    lr = gl.training.OPTIMIZERS["egd"]["lr"]
    beta = gl.egd_bias_scale(net, 0) * gl.minnorm(net, p, method="multiplicative", delta=1e-3).factors[0]
    t = lr * gb[0]
    want = b0.biases[0] * np.cosh(t) - np.sqrt(b0.biases[0] ** 2 + 4 * beta ** 2) * np.sinh(t)
    np.testing.assert_allclose(one.biases[0], want, rtol=1e-10)


def test_egd_beta_scale_sets_how_fast_eg_plus_minus_moves_the_zero_biases():
    X, y = data()
    net = gl.he_init(SIZES, seed=2, dtype="float64")                # zero biases: only beta moves them
    plain, _ = gl.train(net, X, y, optimizer="egd", epochs=1, progress=False)
    same(plain, gl.train(net, X, y, optimizer="egd", epochs=1, progress=False, egd_beta_scale=1.0)[0])
    small, _ = gl.train(net, X, y, optimizer="egd", epochs=1, progress=False, egd_beta_scale=0.1)
    large, _ = gl.train(net, X, y, optimizer="egd", epochs=1, progress=False, egd_beta_scale=10.0)
    size = [float(np.abs(n.biases[-1]).mean()) for n in (small, plain, large)]
    assert size[0] < size[1] < size[2], size
    # the rate of a bias at zero is 2 beta lr |g|: a tenth of beta, about a tenth of the distance
    assert size[0] < 0.3 * size[1]
    sgd_a, _ = gl.train(net, X, y, optimizer="sgd", epochs=1, progress=False, egd_beta_scale=10.0)
    same(sgd_a, gl.train(net, X, y, optimizer="sgd", epochs=1, progress=False)[0])   # SGD has no beta
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="egd_beta_scale"):
            gl.train(net, X, y, optimizer="egd", epochs=1, progress=False, egd_beta_scale=bad)
