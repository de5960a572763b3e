"""The modulated gradient flows (eqs. 22-23, 34-35), dDelta/dt, and the RK4 integrator."""
import numpy as np
import pytest

import gaugelit as gl
from conftest import random_net
from gaugelit.training import flows


def data(n=16, d=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, classes, n)


@pytest.mark.parametrize("p", [0.5, 1.0, 1.5, 2.0])
def test_velocity_is_minus_modulated_gradient(p, xp):
    net = random_net([4, 6, 5, 3], seed=1, xp=xp)
    X, y = data()
    X, y = xp.asarray(X), xp.asarray(y)
    vW, vb = flows.flow_velocity(net, X, y, p, weight_decay=0.2, loss="log")
    _, gw, gb = gl.loss_and_grads(net, X, y, "log")
    for W, v, g in zip(net.weights, vW, gw):   # eq. (34): -|W|^{2-p} (g + lambda |W|^{p-1} sign W)
        want = -xp.abs(W) ** (2 - p) * (g + 0.2 * xp.abs(W) ** (p - 1) * xp.sign(W))
        np.testing.assert_allclose(gl.to_numpy(v), gl.to_numpy(want), rtol=1e-10, atol=1e-13)
    for b, v, g in zip(net.biases, vb, gb):     # eq. (23): biases are not regularised
        np.testing.assert_allclose(gl.to_numpy(v), gl.to_numpy(-xp.abs(b) ** (2 - p) * g), rtol=1e-12)


def test_frozen_hidden_biases_do_not_move():
    net = random_net([4, 6, 5, 3], seed=2)
    X, y = data()
    _, vb = flows.flow_velocity(net, X, y, 2.0, train_hidden_biases=False)  # log-loss by default
    assert not vb[0].any() and not vb[1].any() and vb[2].any()


def test_velocity_is_minus_gradient_for_p_2_by_finite_differences():
    net = random_net([3, 4, 2], seed=3)
    X, y = data(d=3, classes=2)
    vW, _ = flows.flow_velocity(net, X, y, 2.0, loss="log")
    h = 1e-6
    for idx in [(0, 1), (2, 2), (3, 0)]:
        plus, minus = net.copy(), net.copy()
        plus.weights[0][idx] += h
        minus.weights[0][idx] -= h
        fd = (float(gl.loss_and_grads(plus, X, y)[0]) - float(gl.loss_and_grads(minus, X, y)[0])) / (2 * h)
        np.testing.assert_allclose(vW[0][idx], -fd, rtol=1e-6)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
def test_balance_rate_vanishes_without_decay(p):
    """Lemma 3.1: dDelta_i/dt = 0 along eqs. (22)-(23), biases included (eq. 24)."""
    net = random_net([5, 7, 6, 3], seed=4)
    X, y = data(d=5)
    rate = flows.balance_rate(net, flows.flow_velocity(net, X, y, p, loss="log"), p)
    for r in rate:
        np.testing.assert_allclose(r, 0, atol=1e-12)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_balance_rate_with_decay_is_minus_lambda_p_delta(p):
    """Theorem 3.4, eq. (37): dDelta_i/dt = -lambda p Delta_i with frozen zero hidden biases."""
    net = random_net([5, 7, 6, 3], seed=5)
    net = gl.LayeredNet(net.weights, [np.zeros(7), np.zeros(6), net.biases[-1]])
    X, y = data(d=5)
    v = flows.flow_velocity(net, X, y, p, weight_decay=0.3, loss="log", train_hidden_biases=False)
    for r, gap in zip(flows.balance_rate(net, v, p, include_bias=False), gl.balance_gaps(net, p, include_bias=False)):
        np.testing.assert_allclose(r, -0.3 * p * gap, rtol=1e-10, atol=1e-12)


def test_balance_rate_matches_finite_difference_of_delta():
    net = random_net([3, 5, 4, 2], seed=6)
    rng = np.random.default_rng(0)
    vW = [rng.standard_normal(W.shape) for W in net.weights]
    vb = [rng.standard_normal(b.shape) for b in net.biases]
    h = 1e-6
    ahead = gl.LayeredNet([W + h * v for W, v in zip(net.weights, vW)], [b + h * v for b, v in zip(net.biases, vb)])
    behind = gl.LayeredNet([W - h * v for W, v in zip(net.weights, vW)], [b - h * v for b, v in zip(net.biases, vb)])
    for p in (1.0, 1.5, 2.0):
        rate = flows.balance_rate(net, (vW, vb), p)
        for r, g1, g0 in zip(rate, gl.balance_gaps(ahead, p), gl.balance_gaps(behind, p)):
            np.testing.assert_allclose(r, (g1 - g0) / (2 * h), rtol=1e-5, atol=1e-7)


def test_rk4_is_fourth_order_where_smooth():
    """All preactivations positive: the network is linear on the path, the flow smooth, and RK4's
    global error falls 16-fold when dt halves."""
    rng = np.random.default_rng(7)
    net = gl.LayeredNet([np.abs(rng.standard_normal((m, n))) / n for n, m in [(3, 4), (4, 3), (3, 2)]],
                        [np.full(4, 0.5), np.full(3, 0.5), np.zeros(2)])
    X, y = np.abs(rng.standard_normal((8, 3))), rng.standard_normal((8, 2)) * 0.1
    ref = flows.integrate_flow(net, X, y, 2.0, 0.5, dt=1e-3, loss="mse").net
    def error(dt):
        coarse = flows.integrate_flow(net, X, y, 2.0, 0.5, dt=dt, loss="mse").net
        return max(np.abs(a - b).max() for a, b in zip(coarse.weights, ref.weights))
    errs = [error(dt) for dt in (0.025, 0.0125)]
    assert 12 < errs[0] / errs[1] < 22


def test_integrate_flow_records_and_conserves():
    net = random_net([4, 6, 5, 3], seed=8)
    X, y = data()
    run = flows.integrate_flow(net, X, y, 1.0, 1.0, dt=0.01, loss="log", record_every=10)
    np.testing.assert_allclose(run.times, np.linspace(0, 1, 11), atol=1e-12)
    assert run.gaps.shape == (11, 11) and run.loss.shape == (11,)
    np.testing.assert_allclose(run.gaps, np.broadcast_to(run.gaps[0], run.gaps.shape), atol=1e-12)  # p = 1: exact
    assert run.loss[-1] < run.loss[0]
    np.testing.assert_allclose(net.weights[0], random_net([4, 6, 5, 3], seed=8).weights[0])        # input untouched
    last = flows.integrate_flow(net, X, y, 1.0, 0.105, dt=0.01, loss="log")
    assert last.times[-1] == pytest.approx(0.105) and len(last.times) == 12


def test_regularised_flow_decays_delta_exponentially():
    net = gl.he_init([4, 6, 5, 3], seed=1, dtype="float64", xp=np)
    X, y = data()
    run = flows.integrate_flow(net, X, y, 2.0, 2.0, dt=0.01, weight_decay=0.25, loss="log",
                               train_hidden_biases=False)
    np.testing.assert_allclose(run.gaps[-1], run.gaps[0] * np.exp(-0.25 * 2 * 2.0), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(p=0.0), ValueError, "p must be"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay must be"),
    (dict(weight_decay="a"), TypeError, "weight_decay must be a real"),
    (dict(p=3.0, zero_bias=True), ValueError, r"biases\[0\] has zero entries"),
    (dict(loss="hinge"), ValueError, "unknown loss"),
])
def test_bad_velocity_arguments(kwargs, error, message):
    net = random_net([4, 6, 3], seed=9)
    if kwargs.pop("zero_bias", False):
        net = gl.LayeredNet(net.weights, [np.zeros(6), net.biases[1]])
    X, y = data()
    args = dict(p=2.0) | kwargs
    with pytest.raises(error, match=message):
        flows.flow_velocity(net, X, y, args.pop("p"), **args)


@pytest.mark.parametrize("kwargs, message", [
    (dict(t_end=-1.0), "t_end"), (dict(t_end=np.inf), "t_end"), (dict(dt=0.0), "dt must be"),
    (dict(record_every=0), "record_every"),
])
def test_bad_integration_arguments(kwargs, message):
    net = random_net([4, 6, 3], seed=9)
    X, y = data()
    args = dict(t_end=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        flows.integrate_flow(net, X, y, 2.0, args.pop("t_end"), **args)


def test_balance_rate_needs_matching_velocity():
    net = random_net([4, 6, 3], seed=9)
    with pytest.raises(ValueError, match="one array per weight matrix"):
        flows.balance_rate(net, ([net.weights[0]], net.biases), 2.0)


def test_relu_pattern_marks_active_units_and_changes_at_a_kink(xp):
    net = gl.LayeredNet([xp.asarray([[1.0], [-1.0]]), xp.asarray([[1.0, 1.0]])],
                        [xp.asarray([0.0, 0.5]), xp.asarray([0.0])])
    X = xp.asarray([[2.0], [-2.0], [0.25]])
    # unit 0 computes x, unit 1 computes 0.5 - x: active where positive
    assert gl.to_numpy(flows.relu_pattern(net, X)).tolist() == [True, False, False, True, True, True]
    moved = gl.LayeredNet([xp.asarray([[1.0], [-1.0]]), xp.asarray([[1.0, 1.0]])],
                          [xp.asarray([0.0, 0.1]), xp.asarray([0.0])])     # unit 1 switches off at x = 0.25
    assert (flows.relu_pattern(moved, X) != flows.relu_pattern(net, X)).sum() == 1
