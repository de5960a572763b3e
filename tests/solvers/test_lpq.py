"""The minimum l_{p,q}-norm gauge: minnorm(net, p, q) against an independent minimiser
(scipy.optimize over log-factors, the norm written from its definition), q = p as today,
Algorithm 1's monotone decrease, the stopping rules, dtypes, dead units and bad input."""
import numpy as np
import pytest
import scipy.optimize as so

import gaugelit as gl
from gaugelit.core.graph import DenseNet, GaugeGraph
from gaugelit.solvers import ConvergenceWarning, minnorm_graph
from gaugelit.solvers._lpq import lpq_kappa

PQ = [(2.0, 1.0), (1.0, 2.0), (2.0, 3.0), (1.5, 0.5), (3.0, 2.0)]


def lpq_chain(weights, p, q):
    """||W||_{p,q}^q of a chain, from the definition: rows are incoming weights."""
    return sum(float(((np.abs(W) ** p).sum(axis=1) ** (q / p)).sum()) for W in weights)


def scipy_chain_min(weights, p, q, fixed=()):
    """min over log-factors of the hidden units (those in ``fixed``: (layer, unit) stay at 0)."""
    sizes = [W.shape[1] for W in weights] + [weights[-1].shape[0]]
    cuts = np.cumsum([0] + sizes[1:-1])

    def F(x):
        u = [np.zeros(sizes[0])] + [x[cuts[k]:cuts[k + 1]].copy() for k in range(len(sizes) - 2)] + \
            [np.zeros(sizes[-1])]
        for k, i in fixed:
            u[k][i] = 0.0
        return lpq_chain([W * np.exp(u[l + 1])[:, None] * np.exp(-u[l])[None, :] for l, W in enumerate(weights)],
                         p, q)
    res = so.minimize(F, np.zeros(cuts[-1]), method="BFGS", options=dict(gtol=1e-11, maxiter=20000))
    return res.fun


def random_chain(sizes=(5, 7, 6, 4, 3), seed=0):
    rng = np.random.default_rng(seed)
    # rows on scales decades apart: far from balanced at the start
    return gl.LayeredNet([rng.standard_normal((m, n)) * np.exp(2 * rng.standard_normal((m, 1)))
                          for n, m in zip(sizes[:-1], sizes[1:])],
                         [rng.standard_normal(m) for m in sizes[1:]])


@pytest.mark.parametrize("p,q", PQ)
@pytest.mark.parametrize("method", ["block", "multiplicative"])
def test_chain_matches_independent_minimiser(p, q, method):
    net = random_chain()
    ref = scipy_chain_min(net.weights, p, q)
    r = gl.minnorm(net, p, q, method=method, gamma_tol=1e-10, max_iter=20000)
    assert r.converged and r.gamma[-1] < 1e-10
    np.testing.assert_allclose(r.objective[-1], ref, rtol=1e-9)
    # the record is the norm of the network returned, and the function is unchanged
    np.testing.assert_allclose(lpq_chain(r.net.weights, p, q), r.objective[-1], rtol=1e-12)
    np.testing.assert_allclose(lpq_chain(net.weights, p, q), r.objective[0], rtol=1e-12)
    X = np.random.default_rng(1).standard_normal((9, 5))
    np.testing.assert_allclose(r.net.forward(X), net.forward(X), rtol=1e-10, atol=1e-10)
    assert isinstance(r, gl.MinNormResult) and len(r.factors) == 3


@pytest.mark.parametrize("method", ["block", "multiplicative"])
@pytest.mark.parametrize("p", [2.0, 1.0, 0.7])
def test_q_equal_p_is_todays_answer_exactly(p, method):
    net = random_chain(seed=3)
    r0 = gl.minnorm(net, p, method=method, gamma_tol=1e-9)
    for q in (None, p):
        r = gl.minnorm(net, p, q, method=method, gamma_tol=1e-9)
        assert r.iterations == r0.iterations
        np.testing.assert_array_equal(r.objective, r0.objective)
        np.testing.assert_array_equal(r.gamma, r0.gamma)
        for a, b in zip(r.factors, r0.factors):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("p,q", PQ)
def test_algorithm1_decreases_monotonically(p, q):
    net = random_chain(seed=5)
    r = gl.minnorm(net, p, q, method="multiplicative", gamma_tol=1e-12, max_iter=20000)
    o = r.objective
    assert r.iterations > 10
    assert np.all(np.diff(o) <= 1e-13 * o[0]), np.diff(o).max()
    assert o[-1] < 0.9 * o[0]


def test_kappa_is_the_lp_step_at_q_equal_p():
    for p in (0.5, 1.0, 2.0, 3.0):
        assert lpq_kappa(p, p) == 2 * p             # a_i <- a_i (out/in)^(1/(4p)), eq. (12)


def test_stopping_rules():
    net = random_chain(seed=2)
    r = gl.minnorm(net, 2.0, 1.0, method="multiplicative", delta=1e-4)
    assert r.converged
    # the last update moved every factor by less than delta, the one before did not (else it stopped there)
    with pytest.warns(ConvergenceWarning):
        r1 = gl.minnorm(net, 2.0, 1.0, method="multiplicative", delta=1e-4, max_iter=r.iterations - 1)
    before = r1.factors
    step = max(float(np.abs(a / b - 1).max()) for a, b in zip(r.factors, before))
    assert step < 1e-4
    with pytest.warns(ConvergenceWarning):
        r2 = gl.minnorm(net, 2.0, 1.0, method="multiplicative", delta=1e-4, max_iter=r.iterations - 2)
    step2 = max(float(np.abs(a / b - 1).max()) for a, b in zip(r1.factors, r2.factors))
    assert step2 >= 1e-4
    g = gl.minnorm(net, 2.0, 1.0, method="block", gamma_tol=1e-8)
    assert g.gamma[-1] < 1e-8 and g.gamma[-2] >= 1e-8
    with pytest.warns(ConvergenceWarning):
        gl.minnorm(net, 2.0, 1.0, method="multiplicative", gamma_tol=1e-12, max_iter=3)


def dense_lpq(W, b_rows, p, q, u):
    """||W||_{p,q}^q of a dense feedforward W under log-factors u (all units)."""
    Wr = W * np.exp(u[:, None] - u[None, :])
    rows = (np.abs(Wr) ** p).sum(axis=1)
    return float((rows[b_rows] ** (q / p)).sum())


def random_dag(n=22, n_in=4, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    W = np.tril(rng.standard_normal((n, n)), -1) * (rng.random((n, n)) < 0.5)
    W[n_in:n - n_out, :n_in] += 0.3
    W[n - n_out:, n_in:n - n_out] += 0.3
    W = np.tril(W, -1) * np.exp(rng.standard_normal((n, 1)))
    W[:n_in, :] = 0
    return DenseNet(W, rng.standard_normal(n), n_in, n_out)


@pytest.mark.parametrize("p,q", [(2.0, 1.0), (1.0, 2.0), (1.5, 0.5)])
@pytest.mark.parametrize("method", ["block", "multiplicative"])
def test_graph_matches_independent_minimiser(p, q, method):
    net = random_dag()
    hidden = net.hidden_mask()
    n = net.W.shape[0]
    rows = np.arange(n) >= net.n_in

    def F(x):
        u = np.zeros(n)
        u[hidden] = x
        return dense_lpq(net.W, rows, p, q, u)
    ref = so.minimize(F, np.zeros(hidden.sum()), method="BFGS", options=dict(gtol=1e-11, maxiter=20000)).fun
    r = gl.minnorm(net, p, q, method=method, gamma_tol=1e-10, max_iter=50000)
    assert isinstance(r, gl.GraphMinNormResult) and r.converged
    np.testing.assert_allclose(r.objective[-1], ref, rtol=1e-9)
    np.testing.assert_allclose(dense_lpq(r.net.W, rows, p, q, np.zeros(n)), r.objective[-1], rtol=1e-12)
    X = np.random.default_rng(1).standard_normal((7, net.n_in))
    np.testing.assert_allclose(r.net.forward(X), net.forward(X), rtol=1e-10, atol=1e-10)


def test_chain_as_graph_equals_chain():
    net = random_chain(seed=4)
    r0 = gl.minnorm(net, 2.0, 1.0, gamma_tol=1e-10)
    r1 = minnorm_graph(GaugeGraph.from_layered(net), 2.0, 1.0, gamma_tol=1e-10)
    np.testing.assert_allclose(r1.objective[-1], r0.objective[-1], rtol=1e-12)


def test_float32_and_dead_units():
    net = random_chain(sizes=(5, 8, 6, 3), seed=6)
    W = [w.copy() for w in net.weights]
    W[0][2, :] = 0.0          # hidden layer 1, unit 2: no incoming weights (dead)
    W[2][:, 4] = 0.0          # hidden layer 2, unit 4: no outgoing weights (dead)
    net = gl.LayeredNet(W, net.biases)
    r = gl.minnorm(net, 2.0, 1.0, gamma_tol=1e-10)
    assert [d.tolist() for d in r.dead_units] == [[2], [4]]
    assert r.factors[0][2] == 1.0 and r.factors[1][4] == 1.0
    ref = scipy_chain_min(W, 2.0, 1.0, fixed=[(1, 2), (2, 4)])
    np.testing.assert_allclose(r.objective[-1], ref, rtol=1e-9)
    net32 = gl.LayeredNet([w.astype(np.float32) for w in W], [b.astype(np.float32) for b in net.biases])
    r32 = gl.minnorm(net32, 2.0, 1.0, gamma_tol=1e-8)
    assert r32.net.dtype == np.float32 and all(f.dtype == np.float32 for f in r32.factors)
    np.testing.assert_allclose(r32.objective[-1], ref, rtol=1e-5)


@pytest.mark.parametrize("q,err", [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                   (float("inf"), ValueError), ("2", TypeError), (True, TypeError)])
def test_bad_q_is_a_clear_error(q, err):
    with pytest.raises(err, match="q"):
        gl.minnorm(random_chain(), 2.0, q)


def test_unrepresentable_is_an_error_not_a_wrong_answer():
    net = random_chain(seed=1)
    W = [w.copy() for w in net.weights]
    W[1][0, 0] = 1e-200                       # |W|^p underflows float64 at p = 2
    with pytest.raises(FloatingPointError, match="underflows"):
        gl.minnorm(gl.LayeredNet(W, net.biases), 2.0, 1.0)


def test_torch_model_matches_independent_minimiser():
    torch = pytest.importorskip("torch")
    from gaugelit.torch import minnorm_
    from torch_models import mlp
    m = mlp()
    lin = [l for l in m if isinstance(l, torch.nn.Linear)]
    weights = [l.weight.detach().numpy().copy() for l in lin]
    for p, q in [(2.0, 1.0), (1.0, 3.0)]:
        ref = scipy_chain_min(weights, p, q)
        model = mlp()
        x = torch.randn(5, 6, dtype=torch.float64)
        r = minnorm_(model, p, q=q, gamma_tol=1e-10, example_input=x)
        got = lpq_chain([l.weight.detach().numpy() for l in model if isinstance(l, torch.nn.Linear)], p, q)
        np.testing.assert_allclose(got, ref, rtol=1e-9)
        np.testing.assert_allclose(r.objective[-1], ref, rtol=1e-9)
        assert r.output_change < 1e-10
