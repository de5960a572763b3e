"""SymPy builders of gaugelit.symbolic against the numeric library."""
import numpy as np
import pytest
import sympy as sp

import gaugelit as gl
from conftest import random_net
from gaugelit import symbolic as gs


def test_network_layout_follows_the_paper():
    s = gs.symbolic_net((2, 3, 1))
    assert s.n == 6 and s.inputs == [0, 1] and s.hidden == [2, 3, 4] and s.outputs == [5]
    assert s.W[2, 0].name == "W_{3,1}" and s.W[0, 2] == 0 and s.b[0] == 0 and s.b[5].name == "b_6"
    assert all(i > j for i, j in s.edges)                        # strictly lower triangular
    assert len(s.weight_symbols()) == 9 and len(s.bias_symbols()) == 4
    a = gs.gauge_vector(s)
    assert [a[i] for i in s.inputs + s.outputs] == [1, 1, 1] and all(a[i].is_positive for i in s.hidden)


def test_forward_matches_layered_net():
    s = gs.symbolic_net((2, 3, 2, 2))
    net = random_net((2, 3, 2, 2), seed=1)
    x = sp.symbols("x1 x2", real=True)
    f = sp.lambdify(list(x), gs.forward(s, x).subs(s.values(net)), "numpy")
    X = np.random.default_rng(0).standard_normal((5, 2))
    got = np.array([np.ravel(f(*row)) for row in X], dtype=float)
    np.testing.assert_allclose(got, net.forward(X), rtol=1e-12)


def test_forward_with_gates_is_the_relu_on_its_activation_pattern():
    s = gs.symbolic_net((2, 2, 1))
    net = random_net((2, 2, 1), seed=2)
    x = np.array([0.3, -0.7])
    z = net.weights[0] @ x + net.biases[0]
    gates = gs.gates(s)
    pattern = {gates[i]: float(zi > 0) for i, zi in zip(s.hidden, z)}
    f = gs.forward(s, list(x), gate=gates).subs(s.values(net)).subs(pattern)
    np.testing.assert_allclose(float(f[0]), net.forward(x[None])[0, 0], rtol=1e-12)


def test_rescaling_keeps_the_function_symbolically():
    s = gs.symbolic_net((2, 2, 1))
    a = gs.gauge_vector(s)
    W, b = gs.rescaled(s, a)
    x = sp.symbols("x1 x2", real=True)
    assert sp.simplify(gs.forward(s, x, W, b) - gs.forward(s, x)) == sp.zeros(1, 1)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_F_G_and_gradient_match_numeric_counterparts(p):
    sizes = (2, 3, 2, 1)
    s = gs.symbolic_net(sizes)
    a = gs.gauge_vector(s)
    net = random_net(sizes, seed=3)
    factors = [np.exp(np.random.default_rng(1).normal(0, 0.5, n)) for n in sizes[1:-1]]
    subs = {**s.values(net), **gs.factor_values(s, a, factors)}
    F, G = gs.objective_F(s, a, p), gs.auxiliary_G(s, a, p)
    np.testing.assert_allclose(float(F.subs(subs)), gs.objective_F_value(net, factors, p), rtol=1e-12)
    np.testing.assert_allclose(float(G.subs(subs)), gs.auxiliary_G_value(net, factors, p), rtol=1e-12)
    grad = [float(sp.diff(F, a[i]).subs(subs)) for i in s.hidden]
    np.testing.assert_allclose(grad, np.concatenate(gs.gradient_F_value(net, factors, p)), rtol=1e-10)
    assert gs.objective_F_value(net, factors, p) <= gs.auxiliary_G_value(net, factors, p)   # eq. (14)


def test_balance_gap_matches_gaugelit():
    s = gs.symbolic_net((2, 3, 2, 1))
    net = random_net((2, 3, 2, 1), seed=4)
    for p in (1.0, 2.0):
        for include_bias in (True, False):
            got = [float(gs.balance_gap(s.W, s.b, i, p, include_bias).subs(s.values(net))) for i in s.hidden]
            np.testing.assert_allclose(got, np.concatenate(gl.balance_gaps(net, p, include_bias)), rtol=1e-12)


def test_fan_sums_and_sign_cases():
    s = gs.symbolic_net((1, 2, 1))
    p = sp.Symbol("p", positive=True)
    assert gs.fan_in(s.W, 1, p) == sp.Abs(s.W[1, 0]) ** p
    assert gs.fan_out(s.W, 1, p) == sp.Abs(s.W[3, 1]) ** p
    w = sp.Symbol("w", real=True)
    cases = gs.sign_cases(sp.Abs(w) / w, [w])
    assert [sp.simplify(c) for c in cases] == [1, -1]


def test_bad_input():
    with pytest.raises(ValueError, match="at least three"):
        gs.symbolic_net((2, 1))
    with pytest.raises(ValueError, match="too many"):
        gs.symbolic_net((20, 20, 20))
    s = gs.symbolic_net((2, 2, 1))
    with pytest.raises(ValueError, match="sizes"):
        s.values(random_net((2, 3, 1)))
    with pytest.raises(ValueError, match="need 2 inputs"):
        gs.forward(s, [sp.Symbol("x")])
    with pytest.raises(ValueError, match="factor vectors"):
        gs.factor_values(s, gs.gauge_vector(s), [])
    with pytest.raises(ValueError, match="positive factors"):
        gs.objective_F_value(random_net((2, 2, 1)), [np.array([1.0, -1.0])], 2.0)
