"""The minimum-norm solvers: Algorithm 1 exactly as published, the fast method, dead units."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gaugelit as gl
from conftest import random_net
from gaugelit.solvers import layer_shift, minnorm_graph


def algorithm1_as_printed(net, p, delta, max_iter=100_000):
    """Algorithm 1 on the explicit weights, rewriting W and b after every update (the paper's
    pseudo-code), with the exponent 1/(4p) solved from eq. (15). Independent of gaugelit's solver."""
    W = [w.copy() for w in gl.to_numpy(net.weights)]
    b = [x.copy() for x in gl.to_numpy(net.biases)]
    objective = [sum((np.abs(w) ** p).sum() for w in W)]
    for it in range(1, max_iter + 1):
        a = [((np.abs(W[k]) ** p).sum(0) / (np.abs(W[k - 1]) ** p).sum(1)) ** (1 / (4 * p))
             for k in range(1, len(W))]
        full = [np.ones(W[0].shape[1]), *a, np.ones(W[-1].shape[0])]
        W = [full[l + 1][:, None] * W[l] / full[l][None, :] for l in range(len(W))]
        b = [full[l + 1] * b[l] for l in range(len(b))]
        objective.append(sum((np.abs(w) ** p).sum() for w in W))
        if max(np.abs(x - 1).max() for x in a) < delta:
            return W, b, it, np.array(objective)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
def test_multiplicative_is_algorithm_1(p):
    net = random_net([5, 8, 6, 7, 3], seed=11)
    res = gl.minnorm(net, p, method="multiplicative", delta=1e-4)
    # above p = 2 the delta rule's bound is delta * 2 / p (issue 22: near the minimum at every p)
    W, b, iterations, objective = algorithm1_as_printed(net, p, 1e-4 * min(1.0, 2.0 / p))
    assert res.iterations == iterations and res.converged
    np.testing.assert_allclose(res.objective, objective, rtol=1e-10)
    for got, want in zip(res.net.weights + res.net.biases, W + b):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=3, max_size=6), seed=st.integers(0, 2**31),
       p=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_algorithm_1_decreases_the_objective_monotonically(sizes, seed, p):
    # Lemma 2.3: F(a~) <= F(1) at every update, equality only at the minimum.
    res = gl.minnorm(random_net(sizes, seed=seed), p, method="multiplicative", delta=1e-9)
    steps = np.diff(res.objective)
    assert np.all(steps <= 1e-12 * res.objective[:-1])


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=3, max_size=6), seed=st.integers(0, 2**31),
       p=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_all_methods_reach_the_same_balanced_minimum(sizes, seed, p):
    net = random_net(sizes, seed=seed)
    results = [gl.minnorm(net, p, method=m, gamma_tol=1e-10, max_iter=100_000) for m in gl.METHODS]
    for res in results:
        assert res.converged and res.gamma[-1] < 1e-10
        assert gl.imbalance(res.net, p) < 1e-9          # Lemma 2.2: balanced at the minimum
        for gap in gl.balance_gaps(res.net, p, include_bias=False):
            fan = gl.unit_norms(res.net, p)
            assert np.abs(gap).max() <= 1e-8 * max(float(f.max()) for pair in fan for f in pair)
        assert res.objective[-1] <= res.objective[0]
    ref = results[0]
    for res in results[1:]:
        assert np.isclose(res.objective[-1], ref.objective[-1], rtol=1e-9)
        for a, b in zip(res.factors, ref.factors):          # F is strictly convex in log a
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_minimum_is_a_minimum():
    # No random rescaling of the balanced network has a smaller p-norm (Lemma 2.2).
    net = random_net([4, 6, 5, 3], seed=4)
    res = gl.minnorm(net, 1.5, gamma_tol=1e-12)
    best = gl.pnorm(res.net, 1.5)
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = [np.exp(rng.normal(0, 0.05, n)) for n in net.sizes[1:-1]]
        assert gl.pnorm(gl.rescale(res.net, a), 1.5) >= best * (1 - 1e-12)


def test_solution_preserves_the_function_and_matches_its_factors(xp):
    net = random_net([6, 9, 7, 4], seed=8, xp=xp)
    X = xp.asarray(np.random.default_rng(1).standard_normal((20, 6)))
    for method in gl.METHODS:
        res = gl.minnorm(net, 2.0, method=method)
        np.testing.assert_allclose(gl.to_numpy(res.net.forward(X)), gl.to_numpy(net.forward(X)),
                                   rtol=1e-10, atol=1e-12)
        again = gl.rescale(net, res.factors)
        for w1, w2 in zip(again.weights, res.net.weights):
            np.testing.assert_allclose(gl.to_numpy(w1), gl.to_numpy(w2), rtol=1e-14)
        assert len(res.objective) == len(res.gamma) == res.iterations + 1
        assert np.isclose(res.objective[-1], gl.pnorm(res.net, 2.0), rtol=1e-10)
        assert np.isclose(res.gamma[-1], gl.imbalance(res.net, 2.0), rtol=1e-6, atol=1e-14)


def test_delta_rule_applies_and_counts_the_last_update():
    net = random_net([5, 8, 6, 3], seed=2)
    res = gl.minnorm(net, 2.0, method="multiplicative", delta=1e-3)
    with pytest.warns(gl.ConvergenceWarning):
        shorter = gl.minnorm(net, 2.0, method="multiplicative", delta=1e-3, max_iter=res.iterations - 1)
    assert not shorter.converged
    # the final update changed some factor by < delta: one more update moves everything by < delta
    more = gl.minnorm(res.net, 2.0, method="multiplicative", delta=1e-3, max_iter=1)
    assert max(float(np.abs(a - 1).max()) for a in more.factors) < 1e-3


def test_fast_method_is_fast_on_the_paper_networks():
    # Not a timing: passes over the weights, the cost that decides time on any hardware.
    net = gl.he_init(gl.ARCHITECTURES["7-layer"], seed=0, dtype="float64", xp=np)
    slow = gl.minnorm(net, 2.0, method="multiplicative", gamma_tol=1e-6)
    fast = gl.minnorm(net, 2.0, method="block", gamma_tol=1e-6)
    assert fast.passes * 20 <= slow.passes
    assert np.isclose(fast.objective[-1], slow.objective[-1], rtol=1e-8)


def test_float32_networks_are_solved_in_float32(xp):
    net = gl.he_init([20, 30, 25, 5], seed=0, dtype="float32", xp=xp)
    res = gl.minnorm(net, 1.0, gamma_tol=1e-4)
    assert res.net.dtype == np.float32 and res.converged
    assert gl.imbalance(res.net, 1.0) < 1e-4


def net_with_dead_units(xp=np):
    net = random_net([4, 6, 5, 3], seed=6)
    W, b = gl.to_numpy(net.weights), gl.to_numpy(net.biases)
    W[0][1, :] = 0      # hidden unit (1, 1): no incoming weights (it outputs relu(b) always)
    W[1][:, 4] = 0      # hidden unit (1, 4): no outgoing weights
    W[1][2, :] = 0      # hidden unit (2, 2): no incoming weights
    W[2][:, 2] = 0      #   ... and none outgoing: isolated
    return gl.LayeredNet([xp.asarray(w) for w in W], [xp.asarray(x) for x in b])


@pytest.mark.parametrize("method", gl.METHODS)
def test_dead_units_are_reported_and_harmless(method, xp):
    net = net_with_dead_units(xp)
    X = xp.asarray(np.random.default_rng(0).standard_normal((30, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no RuntimeWarning from 0/0 or log(0)
        res = gl.minnorm(net, 2.0, method=method, gamma_tol=1e-10)
    assert res.converged
    assert [gl.to_numpy(d).tolist() for d in res.dead_units] == [[1, 4], [2]]
    for a, dead in zip(res.factors, res.dead_units):
        assert np.all(np.isfinite(gl.to_numpy(a))) and np.all(gl.to_numpy(a[dead]) == 1)
    for W in res.net.weights:
        assert bool(xp.isfinite(W).all())
    np.testing.assert_allclose(gl.to_numpy(res.net.forward(X)), gl.to_numpy(net.forward(X)),
                               rtol=1e-10, atol=1e-12)
    assert gl.imbalance(res.net, 2.0) < 1e-9
    assert res.objective[-1] < res.objective[0]


def test_methods_agree_with_dead_units():
    net = net_with_dead_units()
    a, b = (gl.minnorm(net, 1.0, method=m, gamma_tol=1e-12) for m in gl.METHODS)
    assert np.isclose(a.objective[-1], b.objective[-1], rtol=1e-10)


def test_layer_shift_is_the_exact_minimiser():
    rng = np.random.default_rng(0)
    for L, dead in [(5, False), (6, True), (2, True)]:
        A = rng.uniform(0.1, 10, L)
        B = rng.uniform(0, 2, L) * dead
        C = rng.uniform(0, 2, L) * dead
        B[0] = C[-1] = 0             # the input and output layers have no dead units

        def F(z):
            z = np.concatenate([[0], z, [0]])
            return np.sum(A * np.exp(z[1:] - z[:-1]) + B * np.exp(z[1:]) + C * np.exp(-z[:-1]))

        z = layer_shift(A, B, C)
        h = 1e-6
        grad = [(F(z + h * e) - F(z - h * e)) / (2 * h) for e in np.eye(L - 1)]
        np.testing.assert_allclose(grad, 0, atol=1e-6 * F(z))
        if not dead:                 # closed form: every layer carries the geometric mean of A
            zz = np.concatenate([[0], z, [0]])
            np.testing.assert_allclose(A * np.exp(np.diff(zz)), np.exp(np.log(A).mean()))


def test_bad_solver_arguments():
    net = random_net([2, 3, 2])
    with pytest.raises(ValueError, match="unknown method"):
        gl.minnorm(net, method="newton")
    with pytest.raises(ValueError, match="delta"):
        gl.minnorm(net, delta=0)
    with pytest.raises(ValueError, match="gamma_tol"):
        gl.minnorm(net, gamma_tol=-1)


def test_max_iter_warns_and_reports():
    net = random_net([5, 8, 6, 7, 3], seed=1)
    with pytest.warns(gl.ConvergenceWarning, match="not reached in 2 updates"):
        res = gl.minnorm(net, 2.0, method="multiplicative", gamma_tol=1e-12, max_iter=2)
    assert not res.converged and res.iterations == 2


def test_fixed_budget_runs_exactly_max_iter_updates_without_a_warning():
    """``delta=None`` and no ``gamma_tol``: no stopping rule, exactly ``max_iter`` updates (ENorm as
    used in training: one sweep per step), and no ConvergenceWarning, as no rule was asked to hold;
    each is the same update the solve with a rule takes."""
    net = random_net([5, 8, 6, 7, 3], seed=1)
    g = gl.GaugeGraph.from_layered(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("block", "multiplicative", "enorm-style"):
            for k in (1, 3):
                res = minnorm_graph(g, 2.0, method=method, delta=None, max_iter=k)
                assert res.iterations == k and len(res.gamma) == k + 1 and not res.converged
                assert res.gamma[-1] < res.gamma[0]
        one = minnorm_graph(g, 2.0, method="enorm-style", delta=None, max_iter=1)
    with pytest.warns(gl.ConvergenceWarning):
        ruled = minnorm_graph(g, 2.0, method="enorm-style", gamma_tol=1e-12, max_iter=1)
    np.testing.assert_allclose(np.asarray(one.gamma), np.asarray(ruled.gamma), rtol=1e-12)
    # a tolerance still governs when given beside delta=None
    res = minnorm_graph(g, 2.0, delta=None, gamma_tol=1e-8)
    assert res.converged and res.gamma[-1] < 1e-8
