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


def along_a_random_direction(net, seed, h=1e-6):
    """A random velocity ``(vW, vb)`` and the networks ``net +- h v``, for central differences."""
    rng = np.random.default_rng(seed)
    vW = [rng.standard_normal(W.shape) for W in net.weights]
    vb = [rng.standard_normal(b.shape) for b in net.biases]
    ahead = gl.LayeredNet([W + h * v for W, v in zip(net.weights, vW)], [b + h * v for b, v in zip(net.biases, vb)])
    behind = gl.LayeredNet([W - h * v for W, v in zip(net.weights, vW)], [b - h * v for b, v in zip(net.biases, vb)])
    return vW, vb, ahead, behind, h


def test_balance_rate_matches_finite_difference_of_delta():
    net = random_net([3, 5, 4, 2], seed=6)
    vW, vb, ahead, behind, h = along_a_random_direction(net, 0)
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


# -- the l_{p,q} weight-balancing flow --------------------------------------------------------------

LPQ = [(2.0, 1.0), (1.0, 2.0), (1.5, 0.5), (2.0, 3.0), (1.0, 1.5)]


def _direct_lpq_velocity(net, X, y, p, q, lam, train_hidden_biases):
    """``dtheta/dt = theta * du/dt`` with ``du/dt = -p q H^{-1} (theta * g)`` solved densely per
    group, H the Hessian of ``s^(q/p)`` in ``u = log|theta|`` (an independent route to the flow)."""
    _, gw, gb = gl.loss_and_grads(net, X, y)
    last = len(net.weights) - 1
    out_w, out_b = [], []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        grouped = l < last and train_hidden_biases
        vw, vb = np.zeros_like(W), np.zeros_like(b)
        for i in range(W.shape[0]):
            theta = np.r_[W[i], b[i]] if grouped else W[i].copy()
            decay = lam * (np.abs(W[i]) ** p).sum() ** (q / p - 1) * np.abs(W[i]) ** (p - 1) * np.sign(W[i])
            g = (np.r_[gw[l][i], gb[l][i]] if grouped else gw[l][i]) + (np.r_[decay, 0] if grouped else decay)
            m = np.abs(theta) ** p
            s = m.sum()
            H = p * q * s ** (q / p - 1) * np.diag(m) + q * (q - p) * s ** (q / p - 2) * np.outer(m, m)
            v = theta * -p * q * np.linalg.solve(H, theta * g)
            if grouped:
                vw[i], vb[i] = v[:-1], v[-1]
            else:
                vw[i] = v
        if l == last:
            vb = -np.abs(b) ** (2 - p) * gb[l]
        out_w.append(vw)
        out_b.append(vb)
    return out_w, out_b


@pytest.mark.parametrize("p, q", LPQ)
@pytest.mark.parametrize("train_hidden_biases", [True, False])
def test_lpq_velocity_is_the_hessian_metric_flow(p, q, train_hidden_biases):
    net = random_net([4, 6, 5, 3], seed=11)
    X, y = data()
    vW, vb = flows.flow_velocity(net, X, y, p, q=q, weight_decay=0.3, train_hidden_biases=train_hidden_biases)
    wW, wb = _direct_lpq_velocity(net, X, y, p, q, 0.3, train_hidden_biases)
    for got, want in zip(vW + vb, wW + wb):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_lpq_flow_at_q_equal_p_is_todays_flow():
    net = random_net([4, 6, 5, 3], seed=12)
    X, y = data()
    for p in (1.0, 1.5):
        a = flows.flow_velocity(net, X, y, p, weight_decay=0.2)
        b = flows.flow_velocity(net, X, y, p, q=p, weight_decay=0.2)
        for x, z in zip(a[0] + a[1], b[0] + b[1]):
            np.testing.assert_array_equal(x, z)
        for x, z in zip(gl.balance_gaps(net, p), flows.lpq_balance_gaps(net, p, p)):
            np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize("p, q", LPQ)
def test_lpq_balance_rate_vanishes_along_its_flow_and_not_along_todays(p, q):
    net = random_net([5, 7, 6, 3], seed=13)
    X, y = data(d=5)
    for r in flows.balance_rate(net, flows.flow_velocity(net, X, y, p, q=q), p, q=q):
        np.testing.assert_allclose(r, 0, atol=1e-12)
    naive = flows.balance_rate(net, flows.flow_velocity(net, X, y, p), p, q=q)   # the l_p modulation
    assert max(np.abs(r).max() for r in naive) > 1e-3


@pytest.mark.parametrize("p, q", LPQ)
def test_lpq_balance_rate_with_decay_is_minus_lambda_p_delta(p, q):
    net = random_net([5, 7, 6, 3], seed=14)
    net = gl.LayeredNet(net.weights, [np.zeros(7), np.zeros(6), net.biases[-1]])
    X, y = data(d=5)
    v = flows.flow_velocity(net, X, y, p, q=q, weight_decay=0.3, train_hidden_biases=False)
    for r, gap in zip(flows.balance_rate(net, v, p, include_bias=False, q=q),
                      flows.lpq_balance_gaps(net, p, q, include_bias=False)):
        np.testing.assert_allclose(r, -0.3 * p * gap, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p, q", LPQ)
def test_lpq_balance_rate_matches_finite_difference_of_its_gaps(p, q):
    net = random_net([3, 5, 4, 2], seed=15)
    vW, vb, ahead, behind, h = along_a_random_direction(net, 1)
    for include_bias in (True, False):
        rate = flows.balance_rate(net, (vW, vb), p, include_bias=include_bias, q=q)
        for r, g1, g0 in zip(rate, flows.lpq_balance_gaps(ahead, p, q, include_bias),
                             flows.lpq_balance_gaps(behind, p, q, include_bias)):
            np.testing.assert_allclose(r, (g1 - g0) / (2 * h), rtol=1e-5, atol=1e-7)


def test_lpq_gaps_vanish_at_the_minimum_norm_gauge():
    net = random_net([4, 6, 5, 3], seed=16)
    for p, q in LPQ:
        balanced = gl.minnorm(net, p, q, gamma_tol=1e-11).net
        for gap, (W, _) in zip(flows.lpq_balance_gaps(balanced, p, q, include_bias=False),
                               zip(balanced.weights, balanced.weights[1:])):
            scale = ((np.abs(W) ** p).sum(axis=1)) ** (q / p)
            np.testing.assert_allclose(gap / scale, 0, atol=1e-9)
        assert flows.lpq_imbalance(balanced, p, q) < 1e-10 < flows.lpq_imbalance(net, p, q)


def test_integrated_lpq_flow_conserves_and_decays():
    net = random_net([4, 6, 5, 3], seed=17)
    X, y = data()
    run = flows.integrate_flow(net, X, y, 1.0, 1.0, dt=0.01, q=2.0, record_every=10)
    assert run.loss[-1] < run.loss[0]
    np.testing.assert_allclose(run.gaps, np.broadcast_to(run.gaps[0], run.gaps.shape), rtol=0, atol=1e-7)
    np.testing.assert_allclose(run.norm[0], gl.solvers.lpq_norm(net, 1.0, 2.0))
    frozen = gl.LayeredNet(net.weights, [np.zeros(6), np.zeros(5), net.biases[-1]])
    run = flows.integrate_flow(frozen, X, y, 2.0, 1.0, dt=0.01, q=1.0, weight_decay=0.3,
                               train_hidden_biases=False, record_every=10)
    np.testing.assert_allclose(run.gaps[-1], run.gaps[0] * np.exp(-0.3 * 2.0), rtol=1e-3, atol=1e-4)


def test_lpq_flow_refuses_an_empty_group_where_its_speed_is_unbounded():
    net = random_net([4, 6, 5, 3], seed=18)
    W0 = net.weights[0].copy()
    W0[2] = 0
    dead = gl.LayeredNet([W0] + net.weights[1:], [np.r_[net.biases[0][:2], 0.0, net.biases[0][3:]]] + net.biases[1:])
    X, y = data()
    with pytest.raises(ValueError, match="unit 2 of layer 1"):
        flows.flow_velocity(dead, X, y, 1.0, q=2.5)
    vW, vb = flows.flow_velocity(dead, X, y, 1.0, q=1.5)          # speed ~ |theta|^(2-q) -> 0
    assert not vW[0][2].any() and vb[0][2] == 0 and all(np.isfinite(v).all() for v in vW + vb)
