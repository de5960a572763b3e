"""Rescalings leave the function unchanged; norms, imbalance and gaps match their definitions."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gaugelit as gl
from conftest import random_net

architectures = st.lists(st.integers(1, 7), min_size=3, max_size=6)


def random_factors(net, seed, spread=3.0):
    rng = np.random.default_rng(seed)
    return [net.xp.asarray(np.exp(rng.uniform(-spread, spread, n)), dtype=net.dtype)
            for n in net.sizes[1:-1]]


def relative_error(a, b):
    a, b = gl.to_numpy(a), gl.to_numpy(b)
    return np.abs(a - b).max() / np.abs(b).max()


@settings(max_examples=60, deadline=None)
@given(sizes=architectures, seed=st.integers(0, 2**32 - 1))
def test_random_rescalings_leave_the_function_unchanged_float64(sizes, seed):
    net = random_net(sizes, seed=seed)
    X = np.random.default_rng(seed).standard_normal((16, sizes[0]))
    out = net.forward(X)
    if np.abs(out).max() == 0:
        return
    assert relative_error(gl.rescale(net, random_factors(net, seed)).forward(X), out) <= 1e-12


@settings(max_examples=60, deadline=None)
@given(sizes=architectures, seed=st.integers(0, 2**32 - 1))
def test_random_rescalings_leave_the_function_unchanged_float32(sizes, seed):
    # Each rescaled weight carries at most two roundings (x a_i, / a_j), i.e. a relative error
    # of 2u, u = 2^-24 ~ 6e-8; both forward passes also round their dot products of n <= 7 terms.
    # Through at most 5 layers the output error stays below ~ (2 + 7) * 5 * u ~ 3e-6 of the
    # output scale; 1e-5 leaves room for a product of many small factors.
    net = random_net(sizes, seed=seed, dtype="float32")
    X = np.random.default_rng(seed).standard_normal((16, sizes[0])).astype("float32")
    out = net.forward(X)
    if np.abs(out).max() == 0:
        return
    assert relative_error(gl.rescale(net, random_factors(net, seed, 1.0)).forward(X), out) <= 1e-5


def test_rescale_is_eqs_5_and_6_entry_by_entry():
    net = random_net([2, 3, 2, 2], seed=3)
    a = random_factors(net, 4)
    full = [np.ones(2), *a, np.ones(2)]      # a = 1 on input and output units (eq. 4)
    out = gl.rescale(net, a)
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        for i in range(W.shape[0]):
            assert np.isclose(out.biases[l][i], b[i] * full[l + 1][i])
            for j in range(W.shape[1]):
                assert np.isclose(out.weights[l][i, j], W[i, j] * full[l + 1][i] / full[l][j])


def test_rescale_refuses_bad_factors():
    net = random_net([2, 3, 2])
    with pytest.raises(ValueError, match="one factor vector per hidden layer"):
        gl.rescale(net, [])
    with pytest.raises(ValueError, match=r"hidden layer 1 must have shape \(3,\)"):
        gl.rescale(net, [np.ones(2)])
    with pytest.raises(ValueError, match="hidden layer 1 must be finite and > 0"):
        gl.rescale(net, [np.array([1.0, 0.0, 1.0])])
    with pytest.raises(ValueError, match="hidden layer 1 must be finite and > 0"):
        gl.rescale(net, [np.array([1.0, np.nan, 1.0])])


def test_norms_imbalance_and_gaps_by_their_definitions(xp):
    net = random_net([3, 4, 5, 2], seed=5, xp=xp)
    p = 1.5
    W, b = gl.to_numpy(net.weights), gl.to_numpy(net.biases)
    assert np.isclose(gl.pnorm(net, p), sum((np.abs(w) ** p).sum() for w in W))
    gamma, gaps, gaps_nb = 0.0, [], []
    for k in (1, 2):
        fan_in = np.array([sum(abs(W[k - 1][i, j]) ** p for j in range(W[k - 1].shape[1]))
                           for i in range(W[k - 1].shape[0])])
        fan_out = np.array([sum(abs(W[k][j, i]) ** p for j in range(W[k].shape[0]))
                            for i in range(W[k].shape[1])])
        gamma = max(gamma, np.max(np.abs(fan_in - fan_out) / (fan_in + fan_out)))   # eq. 20
        gaps.append(np.abs(b[k - 1]) ** p + fan_in - fan_out)                        # eq. 24
        gaps_nb.append(fan_in - fan_out)                                             # eq. 32
    assert np.isclose(gl.imbalance(net, p), gamma) and 0 <= gamma <= 1
    for got, want in zip(gl.balance_gaps(net, p), gaps):
        np.testing.assert_allclose(gl.to_numpy(got), want)
    for got, want in zip(gl.balance_gaps(net, p, include_bias=False), gaps_nb):
        np.testing.assert_allclose(gl.to_numpy(got), want)


def test_pnorm_scales_as_the_gauge_says():
    # Rescaling one hidden unit by a multiplies its incoming |W|^p by a^p, outgoing by a^-p (eq. 10).
    net = random_net([3, 4, 2], seed=2)
    a = np.ones(4)
    a[1] = 2.0
    fan_in, fan_out = (x[1] for x in gl.unit_norms(net, 1.0)[0])
    change = gl.pnorm(gl.rescale(net, [a]), 1.0) - gl.pnorm(net, 1.0)
    assert np.isclose(change, fan_in * (2 - 1) + fan_out * (0.5 - 1))


def test_sublevel_log_bounds_are_the_shortest_paths_of_eq_17_edges(xp):
    import itertools
    net = random_net([3, 4, 3, 2], seed=7, xp=xp)
    for p in (0.5, 1.0, 2.0):
        edge, up, down = gl.sublevel_log_bounds(net, p)
        Ws = [gl.to_numpy(W) for W in net.weights]
        total = sum((np.abs(W) ** p).sum() for W in Ws)
        length = [np.log(total / np.abs(W) ** p) / p for W in Ws]          # eq. (17), edge by edge
        for l, e in enumerate(edge):
            np.testing.assert_allclose(gl.to_numpy(e), length[l], rtol=1e-12)
        sizes = net.sizes
        for k in range(1, len(sizes) - 1):                                 # brute force over all paths
            for i in range(sizes[k]):
                best_up = min(sum(length[l][path[l + 1], path[l]] for l in range(k))
                              for path in (c + (i,) for c in itertools.product(*map(range, sizes[:k]))))
                best_down = min(sum(length[l][path[l - k + 1], path[l - k]] for l in range(k, len(Ws)))
                                for path in ((i,) + c for c in itertools.product(*map(range, sizes[k + 1:]))))
                np.testing.assert_allclose(float(gl.to_numpy(up[k - 1])[i]), best_up, rtol=1e-12)
                np.testing.assert_allclose(float(gl.to_numpy(down[k - 1])[i]), best_down, rtol=1e-12)
    with pytest.raises(ValueError):
        gl.sublevel_log_bounds(net, 0.0)
