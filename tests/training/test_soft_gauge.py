"""The soft gauge penalty: value and gradient, and its geometry against the rescaling generators."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gaugelit as gl
from conftest import random_net
from gaugelit.training.soft_gauge import (
    from_parameter_vector,
    gauge_coordinates,
    generator_combination,
    generator_gram,
    generator_inner,
    parameter_vector,
    rescaling_generators,
    soft_gauge_flow,
    soft_gauge_penalty,
)

SHAPES = [[1, 6, 1], [3, 4, 2], [2, 3, 4, 2], [3, 4, 5, 2, 2]]
architectures = st.lists(st.integers(1, 5), min_size=3, max_size=5)


def flat(net, weights, biases):
    return np.concatenate([gl.to_numpy(w).ravel() for w in weights] + [gl.to_numpy(b).ravel() for b in biases])


def penalty_of(net, theta, strength):
    weights, biases = from_parameter_vector(net, theta)
    return soft_gauge_penalty(gl.LayeredNet(weights, biases), strength)[0]


def mse_loss(net, X, y):
    return float(((net.forward(X) - y) ** 2).sum(axis=1).mean())


@pytest.mark.parametrize("sizes", SHAPES)
def test_value_is_a_quarter_strength_times_the_squared_gaps(sizes):
    net = random_net(sizes, seed=1)
    gaps = np.concatenate(gl.balance_gaps(net, 2.0, include_bias=True))
    value, _, _ = soft_gauge_penalty(net, 0.7)
    np.testing.assert_allclose(value, 0.7 / 4 * (gaps ** 2).sum(), rtol=1e-14)


@pytest.mark.parametrize("sizes", SHAPES)
def test_gradient_matches_central_finite_differences(sizes):
    net = random_net(sizes, seed=2)
    theta = parameter_vector(net)
    _, gw, gb = soft_gauge_penalty(net, 0.3)
    grad = flat(net, gw, gb)
    h = 1e-6
    numeric = np.empty_like(theta)
    for n in range(theta.size):
        e = np.zeros_like(theta)
        e[n] = h
        numeric[n] = (penalty_of(net, theta + e, 0.3) - penalty_of(net, theta - e, 0.3)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6 * np.abs(grad).max())


def test_gradient_is_strength_times_gaps_times_generators():
    # grad S = (mu/2) sum_i Delta_i grad Delta_i and grad Delta_i = 2 T_i: so grad S = mu sum_i Delta_i T_i.
    net = random_net([2, 3, 4, 2], seed=3)
    T = rescaling_generators(net)
    gaps = np.concatenate(gl.balance_gaps(net, 2.0))
    _, gw, gb = soft_gauge_penalty(net, 0.4)
    np.testing.assert_allclose(flat(net, gw, gb), 0.4 * gaps @ T, rtol=1e-13, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(sizes=architectures, seed=st.integers(0, 2**32 - 1))
def test_gradient_is_orthogonal_to_the_invariant_directions(sizes, seed):
    net = random_net(sizes, seed=seed)
    P = gauge_coordinates(net).projector()
    _, gw, gb = soft_gauge_penalty(net, 1.0)
    grad = flat(net, gw, gb)
    assert np.abs(P @ grad).max() <= 1e-10 * max(np.abs(grad).max(), 1.0)


@settings(max_examples=40, deadline=None)
@given(sizes=architectures, seed=st.integers(0, 2**32 - 1))
def test_loss_gradient_is_orthogonal_to_every_generator(sizes, seed):
    # Gauge invariance of the loss: <grad L, T_i> = dL/du_i = 0. So the loss lives in the invariant
    # directions and the penalty in the gauge span: the two gradients are orthogonal.
    net = random_net(sizes, seed=seed)
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((9, sizes[0])), rng.standard_normal((9, sizes[-1]))
    _, gw, gb = gl.loss_and_grads(net, X, y, loss="mse")
    inner = np.concatenate(generator_inner(net, gw, gb))
    scale = np.abs(flat(net, gw, gb)).max() * np.abs(parameter_vector(net)).max() + 1e-300
    assert np.abs(inner).max() <= 1e-11 * scale
    _, sw, sb = soft_gauge_penalty(net, 1.0)
    assert abs(flat(net, gw, gb) @ flat(net, sw, sb)) <= 1e-10 * scale * np.abs(flat(net, sw, sb)).max()


@pytest.mark.parametrize("sizes", SHAPES)
def test_generator_is_the_derivative_of_the_rescaling_and_the_function_is_flat_along_it(sizes):
    net = random_net(sizes, seed=4)
    X = np.random.default_rng(4).standard_normal((20, sizes[0]))
    T = rescaling_generators(net)
    theta = parameter_vector(net)
    eps = 1e-6
    hidden = net.sizes[1:-1]
    row = 0
    for k, n in enumerate(hidden):
        for i in range(n):
            u = [np.zeros(m) for m in hidden]
            u[k][i] = eps
            plus = parameter_vector(gl.rescale(net, [np.exp(x) for x in u]))
            u[k][i] = -eps
            minus = parameter_vector(gl.rescale(net, [np.exp(x) for x in u]))
            np.testing.assert_allclose((plus - minus) / (2 * eps), T[row], atol=1e-8 * np.abs(theta).max())
            # (w_in, b_i, -w_out): only unit i's incoming row, bias and outgoing column are nonzero
            gw, gb = from_parameter_vector(net, T[row])
            np.testing.assert_array_equal(gw[k][i], net.weights[k][i])
            np.testing.assert_array_equal(gb[k][i], net.biases[k][i])
            np.testing.assert_array_equal(gw[k + 1][:, i], -net.weights[k + 1][:, i])
            assert np.count_nonzero(T[row]) <= np.count_nonzero(net.weights[k][i]) + 1 + \
                np.count_nonzero(net.weights[k + 1][:, i])
            # directional derivative of f along T_i
            step = [gl.LayeredNet(*from_parameter_vector(net, theta + s * 1e-5 * T[row])) for s in (1, -1)]
            df = (step[0].forward(X) - step[1].forward(X)) / 2e-5
            assert np.abs(df).max() <= 1e-6 * (np.abs(net.forward(X)).max() + 1)
            row += 1


@pytest.mark.parametrize("sizes", SHAPES)
def test_gram_matrix_is_block_tridiagonal_mass_minus_shared_squares(sizes):
    net = random_net(sizes, seed=5)
    T = rescaling_generators(net)
    G = generator_gram(net)
    np.testing.assert_allclose(G, T @ T.T, rtol=1e-13, atol=1e-13)
    fan = gl.unit_norms(net, 2.0)
    mass = np.concatenate([i + b ** 2 + o for (i, o), b in zip(fan, net.biases[:-1])])
    np.testing.assert_allclose(np.diag(G), mass, rtol=1e-14)
    assert np.linalg.eigvalsh(G).min() > 0          # positive definite: no dead units here


def test_gaps_relax_as_minus_two_mu_gram_times_gaps():
    # dDelta_j/dt = grad Delta_j . (-grad S) = -2 mu sum_i <T_j, T_i> Delta_i
    net = random_net([2, 3, 4, 2], seed=6)
    mu, h = 0.5, 1e-6
    _, gw, gb = soft_gauge_penalty(net, mu)
    theta, v = parameter_vector(net), -flat(net, gw, gb)
    def gaps(th):
        return np.concatenate(gl.balance_gaps(gl.LayeredNet(*from_parameter_vector(net, th)), 2.0))

    rate = (gaps(theta + h * v) - gaps(theta - h * v)) / (2 * h)
    np.testing.assert_allclose(rate, -2 * mu * generator_gram(net) @ gaps(theta), rtol=1e-6)


def test_a_finite_step_changes_the_function_only_at_second_order():
    net = random_net([1, 8, 1], seed=7)
    X = np.linspace(-3, 3, 101)[:, None]
    out = net.forward(X)
    _, gw, gb = soft_gauge_penalty(net, 1.0)
    errors = []
    steps = [1e-2, 5e-3, 2.5e-3, 1.25e-3]
    for eta in steps:
        moved = gl.LayeredNet([W - eta * g for W, g in zip(net.weights, gw)],
                              [b - eta * g for b, g in zip(net.biases, gb)])
        errors.append(np.abs(moved.forward(X) - out).max())
    slopes = np.diff(np.log(errors)) / np.diff(np.log(steps))
    np.testing.assert_allclose(slopes, 2.0, atol=0.05)


def test_flow_balances_one_hidden_layer_as_the_closed_form_says():
    # One hidden layer: Delta_i = c_i sinh(2 w_i), c_i = 2 sqrt(I_i O_i), and tanh w_i(t) = tanh w_i(0) exp(-2 mu c_i t)
    net = random_net([2, 5, 1], seed=8)
    mu, t = 0.3, 2.0
    fan_in, fan_out = gl.unit_norms(net, 2.0)[0]
    I, O = fan_in + net.biases[0] ** 2, fan_out
    c = 2 * np.sqrt(I * O)
    w0 = np.arcsinh(gl.balance_gaps(net, 2.0)[0] / c) / 2
    expected = c * np.sinh(2 * np.arctanh(np.tanh(w0) * np.exp(-2 * mu * c * t)))
    flowed = soft_gauge_flow(net, mu, t, steps=400)
    np.testing.assert_allclose(gl.balance_gaps(flowed, 2.0)[0], expected, rtol=1e-7, atol=1e-9)
    X = np.random.default_rng(8).standard_normal((30, 2))
    np.testing.assert_allclose(flowed.forward(X), net.forward(X), rtol=1e-8, atol=1e-10)
    # and the log-scale coordinate is w_i = log(I_i / O_i) / 4
    np.testing.assert_allclose(gauge_coordinates(net).log_scales[0], np.log(I / O) / 4, rtol=1e-12)


@pytest.mark.parametrize("sizes", SHAPES)
def test_gauge_coordinates_reconstruct_the_network_from_its_balanced_point(sizes):
    net = random_net(sizes, seed=9)
    gc = gauge_coordinates(net)
    for gap in gl.balance_gaps(gc.balanced, 2.0):
        assert np.abs(gap).max() <= 1e-10
    back = gl.rescale(gc.balanced, [np.exp(u) for u in gc.log_scales])
    for W, V in zip(back.weights, net.weights):
        np.testing.assert_allclose(W, V, rtol=1e-10)
    X = np.random.default_rng(9).standard_normal((10, sizes[0]))
    np.testing.assert_allclose(gc.balanced.forward(X), net.forward(X), rtol=1e-10, atol=1e-12)
    # the balanced point minimises the squared norm of weights and hidden biases over the orbit
    def norm(n):
        return gl.pnorm(n, 2.0) + sum(float((b ** 2).sum()) for b in n.biases[:-1])

    assert norm(gc.balanced) <= norm(net) + 1e-12


def test_without_hidden_biases_the_balanced_point_is_minnorm():
    net = random_net([3, 4, 5, 2], seed=10, bias_scale=0.0)
    gc = gauge_coordinates(net)
    hard = gl.minnorm(net, 2.0, method="block", delta=1e-12).net
    for W, V in zip(gc.balanced.weights, hard.weights):
        np.testing.assert_allclose(W, V, rtol=1e-8, atol=1e-12)


def test_gauge_and_invariant_parts_split_a_tangent_vector():
    net = random_net([2, 3, 4, 2], seed=11)
    gc = gauge_coordinates(net)
    rng = np.random.default_rng(11)
    vw = [rng.standard_normal(W.shape) for W in net.weights]
    vb = [rng.standard_normal(b.shape) for b in net.biases]
    gw, gb = gc.gauge_part(vw, vb)
    iw, ib = gc.invariant_part(vw, vb)
    np.testing.assert_allclose(flat(net, gw, gb) + flat(net, iw, ib), flat(net, vw, vb), rtol=1e-13)
    assert np.abs(np.concatenate(generator_inner(net, iw, ib))).max() <= 1e-12
    np.testing.assert_allclose(gc.projector() @ flat(net, vw, vb), flat(net, iw, ib), atol=1e-12)


def test_zero_strength_gives_zero_and_the_gradient_is_linear_in_strength():
    net = random_net([2, 3, 2], seed=12)
    value, gw, gb = soft_gauge_penalty(net, 0)
    assert float(value) == 0.0 and all(not np.any(g) for g in gw + gb)
    v1, w1, _ = soft_gauge_penalty(net, 1.0)
    v2, w2, _ = soft_gauge_penalty(net, 2.0)
    np.testing.assert_allclose(v2, 2 * v1)
    np.testing.assert_allclose(w2[0], 2 * w1[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_live_on_the_network_backend_and_dtype(xp, dtype):
    net = random_net([3, 4, 5, 2], seed=13, dtype=dtype, xp=xp)
    value, gw, gb = soft_gauge_penalty(net, 0.2)
    assert getattr(value, "shape", ()) == () and gl.array_module(value) is xp   # no host sync
    for g, W in zip(gw + gb, net.weights + net.biases):
        assert gl.array_module(g) is xp and g.dtype == W.dtype and g.shape == W.shape
    # the output biases are no generator's business
    assert not np.any(gl.to_numpy(gb[-1]))
    ref = random_net([3, 4, 5, 2], seed=13, dtype=dtype)
    _, rw, _ = soft_gauge_penalty(ref, 0.2)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(gl.to_numpy(gw[1]), rw[1], rtol=tol, atol=tol)
    gc = gauge_coordinates(net)
    assert gl.array_module(gc.log_scales[0]) is xp


@pytest.mark.parametrize("bad, error", [(-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                                        ("0.2", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_strength_is_refused(bad, error):
    with pytest.raises(error, match="strength"):
        soft_gauge_penalty(random_net([2, 3, 2]), bad)


def test_bad_coefficients_and_tangents_are_refused():
    net = random_net([2, 3, 4, 2])
    with pytest.raises(ValueError, match="one vector per hidden layer"):
        generator_combination(net, [np.ones(3)])
    with pytest.raises(ValueError, match="hidden layer 2 needs shape"):
        generator_combination(net, [np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match="layer 0"):
        generator_inner(net, [np.ones((2, 2))] + net.weights[1:], net.biases)
    with pytest.raises(ValueError, match="length"):
        from_parameter_vector(net, np.ones(5))
    with pytest.raises(ValueError, match="duration"):
        soft_gauge_flow(net, 0.1, -1.0)
    with pytest.raises(TypeError, match="LayeredNet"):
        gauge_coordinates(net.weights)
    with pytest.raises(TypeError, match="LayeredNet"):
        soft_gauge_penalty(net.weights, 0.1)


def test_train_with_soft_gauge_adds_exactly_the_penalty_gradient():
    # one full-batch step of train(..., soft_gauge=mu) == loss step + penalty step composed by hand
    net = random_net([1, 6, 1], seed=14)
    rng = np.random.default_rng(14)
    X, y = rng.uniform(-2, 2, (16, 1)), rng.standard_normal((16, 1))
    trained, _ = gl.train(net, X, y, loss="mse", lr=0.01, weight_decay=0.0, epochs=1, batch_size=16,
                          train_hidden_biases=True, soft_gauge=0.2, progress=False)
    _, gw, gb = gl.loss_and_grads(net, X, y, loss="mse")
    _, sw, sb = soft_gauge_penalty(net, 0.2)
    for W, V, g, s in zip(trained.weights, net.weights, gw, sw):
        np.testing.assert_allclose(W, V - 0.01 * (g + s), rtol=1e-12, atol=1e-14)
    for b, c, g, s in zip(trained.biases, net.biases, gb, sb):
        np.testing.assert_allclose(b, c - 0.01 * (g + s), rtol=1e-12, atol=1e-14)


def test_train_with_soft_gauge_refuses_egd():
    # EGD's multiplicative step of the penalty gradient is not a rescaling: refused, not run
    net = random_net([2, 4, 3], seed=15)
    rng = np.random.default_rng(15)
    X, y = rng.standard_normal((8, 2)), rng.integers(0, 3, 8)
    with pytest.raises(ValueError, match="soft_gauge.*optimizer='sgd'.*'egd'"):
        gl.train(net, X, y, optimizer="egd", soft_gauge=0.2, epochs=1, progress=False)


def test_train_with_soft_gauge_refuses_frozen_nonzero_hidden_biases():
    net = random_net([1, 6, 1], seed=16)
    assert np.abs(net.biases[0]).max() > 0
    rng = np.random.default_rng(16)
    X, y = rng.uniform(-2, 2, (16, 1)), rng.standard_normal((16, 1))
    with pytest.raises(ValueError, match="soft_gauge.*non-zero hidden biases.*train_hidden_biases"):
        gl.train(net, X, y, loss="mse", lr=0.01, weight_decay=0.0, epochs=1, batch_size=16,
                 train_hidden_biases=False, soft_gauge=0.2, progress=False)
    # zero hidden biases may stay frozen: the generators have no bias part, and the step is still
    # exactly the loss gradient plus the penalty gradient
    zeroed = gl.LayeredNet(net.weights, [np.zeros(6), net.biases[1]])
    trained, _ = gl.train(zeroed, X, y, loss="mse", lr=0.01, weight_decay=0.0, epochs=1, batch_size=16,
                          train_hidden_biases=False, soft_gauge=0.2, progress=False)
    _, gw, _ = gl.loss_and_grads(zeroed, X, y, loss="mse")
    _, sw, sb = soft_gauge_penalty(zeroed, 0.2)
    assert np.abs(sb[0]).max() == 0 and np.abs(trained.biases[0]).max() == 0
    for W, V, g, s in zip(trained.weights, zeroed.weights, gw, sw):
        np.testing.assert_allclose(W, V - 0.01 * (g + s), rtol=1e-12, atol=1e-14)
