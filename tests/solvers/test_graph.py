"""The gauge graph and its solvers: chains as a special case, the paper's dense W (eq. 2),
residual-style ties, dead units, bad input, scale safety."""
import numpy as np
import pytest

import gaugelit as gl
from gaugelit.core.graph import DenseNet, GaugeGraph
from gaugelit.solvers import colour_groups, minnorm_graph


def algorithm1_dense(W, hidden, p, iters):
    """Algorithm 1 exactly as printed, on the dense W: rescale the weights every update."""
    W = W.copy()
    objective = [float((np.abs(W) ** p).sum())]
    for _ in range(iters):
        out = (np.abs(W) ** p).sum(axis=0)       # sum_{j>i} |W_ji|^p
        inn = (np.abs(W) ** p).sum(axis=1)       # sum_{j<i} |W_ij|^p
        a = np.ones(W.shape[0])
        a[hidden] = (out[hidden] / inn[hidden]) ** (1 / (4 * p))
        W = W * a[:, None] / a[None, :]
        objective.append(float((np.abs(W) ** p).sum()))
    return W, np.array(objective)


def random_dag(n=28, n_in=4, n_out=3, density=0.5, seed=0):
    rng = np.random.default_rng(seed)
    W = np.tril(rng.standard_normal((n, n)), -1) * (rng.random((n, n)) < density)
    W[n_in:n - n_out, :n_in] += 0.3     # every hidden unit sees an input and reaches an output
    W[n - n_out:, n_in:n - n_out] += 0.3
    W = np.tril(W, -1)
    W[:n_in, :] = 0
    return DenseNet(W, rng.standard_normal(n), n_in, n_out)


@pytest.mark.parametrize("p", [2.0, 1.0, 0.7])
@pytest.mark.parametrize("method", ["block", "multiplicative"])
def test_chain_as_graph_equals_layerednet(p, method):
    net = gl.he_init([12, 20, 15, 10, 4], seed=3, dtype="float64", xp=np)
    r0 = gl.minnorm(net, p, method=method, gamma_tol=1e-9)
    r1 = gl.minnorm(GaugeGraph.from_layered(net), p, method=method, gamma_tol=1e-9)
    assert isinstance(r1, gl.MinNormResult) and r1.converged
    np.testing.assert_allclose(r1.objective[-1], r0.objective[-1], rtol=1e-12)
    for a, b in zip(r0.factors, r1.factors[1:-1]):
        np.testing.assert_allclose(b, a, rtol=1e-6)
    if method == "multiplicative":   # the same updates: the same iterates
        assert r1.iterations == r0.iterations
        np.testing.assert_allclose(r1.objective, r0.objective, rtol=1e-12)
    for W0, W1 in zip(r0.net.weights, r1.net.weights):
        np.testing.assert_allclose(W1, W0, rtol=1e-6, atol=1e-12)


def test_colouring_of_a_chain_is_odd_even():
    net = gl.he_init([3, 4, 4, 4, 4, 2], seed=0, dtype="float64", xp=np)
    assert colour_groups(GaugeGraph.from_layered(net)) == [[1, 3], [2, 4]]


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_dag_with_skips_matches_algorithm1_on_dense_W(p):
    net = random_dag(seed=1)
    hidden = net.hidden_mask()
    W_ref, obj_ref = algorithm1_dense(net.W, hidden, p, 25)
    with pytest.warns(gl.ConvergenceWarning):
        r = gl.minnorm(net, p, method="multiplicative", max_iter=25, delta=1e-300)
    np.testing.assert_allclose(r.objective, obj_ref, rtol=1e-11)      # update by update
    np.testing.assert_allclose(r.net.W, W_ref, rtol=1e-9, atol=1e-14)
    # the exact block method reaches Algorithm 1's limit, and the function never changes
    full = gl.minnorm(net, p, method="multiplicative", gamma_tol=1e-10, max_iter=20000)
    blk = gl.minnorm(net, p, method="block", gamma_tol=1e-10)
    np.testing.assert_allclose(blk.objective[-1], full.objective[-1], rtol=1e-9)
    assert blk.iterations * 5 < full.iterations
    X = np.random.default_rng(0).standard_normal((16, net.n_in))
    for res in (r, full, blk):
        np.testing.assert_allclose(res.net(X), net(X), rtol=1e-10, atol=1e-12)
        assert np.all(np.diff(res.objective) <= 1e-12 * res.objective[0])


def _residual_graph(seed=0, dtype=np.float64):
    """input -> stem -> S; S -> h1 -> S; S -> h2 -> S (one tied residual stream); S -> out."""
    rng = np.random.default_rng(seed)
    g = GaugeGraph()
    i = g.add_group("input", 6, free=False, reason="network input")
    S = g.add_group("stream", 5)
    h1, h2 = g.add_group("h1", 7), g.add_group("h2", 4)
    o = g.add_group("out", 3, free=False, reason="network output")
    for src, dst, scale in [(i, S, 3.0), (S, h1, 0.2), (h1, S, 5.0), (S, h2, 1.0), (h2, S, 0.1), (S, o, 2.0)]:
        shape = (g.groups[dst].size, g.groups[src].size, 3)
        g.add_block(src, dst, (scale * rng.standard_normal(shape)).astype(dtype))
    return g


def _independent_minimum(graph, p):
    """Newton's method on F(u) over all free units, written here from eq. (10) alone."""
    free = [k for k, grp in enumerate(graph.groups) if grp.free]
    off = {}
    n = 0
    for k in free:
        off[k] = n
        n += graph.groups[k].size
    terms = []                      # (coefficient, i or -1, j or -1)
    for b in graph.blocks:
        M = (np.abs(b.weight) ** p).sum(axis=2)
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                ii = off[b.dst] + i if b.dst in off else -1
                jj = off[b.src] + j if b.src in off else -1
                terms.append((M[i, j], ii, jj))
    c = np.array([t[0] for t in terms])
    I = np.array([t[1] for t in terms])
    J = np.array([t[2] for t in terms])
    u = np.zeros(n + 1)
    for _ in range(100):
        u[-1] = 0
        e = c * np.exp(p * (u[I] - u[J]))
        g = np.zeros(n + 1)
        np.add.at(g, I, p * e)
        np.add.at(g, J, -p * e)
        H = np.zeros((n + 1, n + 1))
        for A, B, s in ((I, I, 1), (J, J, 1), (I, J, -1), (J, I, -1)):
            np.add.at(H, (A, B), s * p * p * e)
        step = np.linalg.solve(H[:n, :n], -g[:n])
        u[:n] += step
        if np.abs(step).max() < 1e-13:
            break
    return float((c * np.exp(p * (u[I] - u[J]))).sum())


@pytest.mark.parametrize("p", [2.0, 1.5])
def test_tied_stream_reaches_independent_minimum(p):
    g = _residual_graph()
    best = _independent_minimum(g, p)
    for method in ("block", "multiplicative"):
        r = minnorm_graph(g, p, method=method, gamma_tol=1e-10, max_iter=50000)
        np.testing.assert_allclose(r.objective[-1], best, rtol=1e-9)
        assert r.gamma[-1] < 1e-10


def test_group_with_block_into_itself():
    g = _residual_graph(seed=2)
    rng = np.random.default_rng(5)
    g.add_block(1, 1, np.tril(rng.standard_normal((5, 5)), -1))   # x + Linear(x) inside the stream
    best = _independent_minimum(g, 2.0)
    r = minnorm_graph(g, 2.0, gamma_tol=1e-10, max_iter=5000)
    np.testing.assert_allclose(r.objective[-1], best, rtol=1e-9)


def test_fixed_groups_keep_factor_one_and_are_reported():
    g = _residual_graph()
    g.fix(3, "feeds a sigmoid")
    r = minnorm_graph(g, 2.0, gamma_tol=1e-9)
    np.testing.assert_array_equal(r.factors[3], 1.0)
    assert ("h2", 4, "feeds a sigmoid") in r.fixed_units
    assert ("input", 6, "network input") in r.fixed_units


def test_dead_units_keep_factor_one():
    net = random_dag(seed=4)
    W = net.W.copy()
    W[10, :] = 0          # unit 10: no incoming weights
    W[:, 12] = 0          # unit 12: no outgoing weights
    net = DenseNet(W, net.b, net.n_in, net.n_out)
    r = gl.minnorm(net, 2.0, gamma_tol=1e-9)
    dead = {int(net_idx) for idx, d in zip(GaugeGraph.from_dense(net).members, r.dead_units)
            for net_idx in idx[d]}
    assert dead == {10, 12}
    np.testing.assert_array_equal(r.net.W[10], 0)
    X = np.random.default_rng(1).standard_normal((5, net.n_in))
    np.testing.assert_allclose(r.net(X), net(X), rtol=1e-10, atol=1e-12)
    members = GaugeGraph.from_dense(net).members
    for idx, a in zip(members, r.factors):
        for k, unit in enumerate(idx):
            if unit in (10, 12):
                assert a[k] == 1.0


def test_bad_input_is_a_clear_error():
    g = GaugeGraph()
    a = g.add_group("in", 3, free=False, reason="input")
    b = g.add_group("h", 2)
    W = np.ones((2, 3))
    W[0, 0] = np.nan
    with pytest.raises(ValueError, match="conv1: weights must be finite"):
        g.add_block(a, b, W, name="conv1")
    with pytest.raises(ValueError, match=r"fc: weight shape \(3, 2\)"):
        g.add_block(a, b, np.ones((3, 2)), name="fc")
    with pytest.raises(TypeError, match="float16"):
        g.add_block(a, b, np.ones((2, 3), dtype=np.float16), name="fc")
    with pytest.raises(ValueError, match="fixed group needs a reason"):
        g.add_group("x", 2, free=False)
    with pytest.raises(ValueError, match="p"):
        gl.minnorm(_residual_graph(), 0.0)
    with pytest.raises(ValueError, match="strictly lower triangular"):
        DenseNet(np.ones((6, 6)), np.zeros(6), 2, 2)
    with pytest.raises(TypeError, match="GaugeGraph"):
        gl.minnorm("not a network")


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e200), (np.float32, 1e25)])
def test_scale_safe(dtype, scale):
    """Layers scaled by 1/s, s, s, 1/s: |W|^2 of a layer overflows the dtype (and, in float64, the
    starting objective is inf), yet the graph solver carries each block's scale in float64 and
    balances the network."""
    net = gl.he_init([8, 10, 9, 7, 3], seed=2, dtype="float64", xp=np)
    net = gl.LayeredNet([W * s for W, s in zip(net.weights, [1 / scale, scale, scale, 1 / scale])])
    g = GaugeGraph.from_layered(gl.LayeredNet([W.astype(dtype) for W in net.weights]))
    p = 2.0
    r = minnorm_graph(g, p, gamma_tol=1e-4 if dtype == np.float32 else 1e-10)
    assert r.converged and np.isfinite(r.objective[1:]).all()
    X = np.random.default_rng(0).standard_normal((4, 8)).astype(dtype)
    ref = net(X.astype(np.float64))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(r.net(X), ref, rtol=tol, atol=tol * np.abs(ref).max())
    # balanced: every hidden layer's norm is now of order one relative to the others
    norms = [float((np.abs(W.astype(np.float64)) ** 2).sum()) for W in r.net.weights]
    assert max(norms) / min(norms) < 1e3


def test_float32_chain_as_graph():
    net = gl.he_init([12, 20, 15, 10, 4], seed=4, dtype="float32", xp=np)
    r0 = gl.minnorm(net, 2.0, gamma_tol=1e-5)
    r1 = gl.minnorm(GaugeGraph.from_layered(net), 2.0, gamma_tol=1e-5)
    assert r1.factors[1].dtype == np.float32 and r1.net.weights[0].dtype == np.float32
    np.testing.assert_allclose(r1.objective[-1], r0.objective[-1], rtol=1e-5)
    X = np.random.default_rng(0).standard_normal((6, 12)).astype(np.float32)
    np.testing.assert_allclose(r1.net(X), net(X), rtol=1e-4, atol=1e-4 * np.abs(net(X)).max())


def test_core_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, gaugelit, gaugelit.core.graph, gaugelit.solvers; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("method", ["block", "multiplicative"])
def test_each_backend_gives_the_numpy_answer(xp, method):
    """The graph solvers on the test backend (CuPy where a device is there, in the device run):
    a chain, the paper's dense W with a dead unit, and a tied residual stream reach NumPy's
    factors and objectives, keep their arrays on the backend and leave the function unchanged."""
    chain = gl.he_init([12, 20, 15, 10, 4], seed=3, dtype="float64", xp=np)
    dag = random_dag(seed=4)
    W = dag.W.copy()
    W[10, :] = 0
    dag = DenseNet(W, dag.b, dag.n_in, dag.n_out)
    on_xp = {"chain": GaugeGraph.from_layered(gl.LayeredNet([xp.asarray(w) for w in chain.weights],
                                                            [xp.asarray(b) for b in chain.biases])),
             "dense W": GaugeGraph.from_dense(DenseNet(xp.asarray(dag.W), xp.asarray(dag.b), dag.n_in, dag.n_out)),
             "residual": _residual_graph()}
    on_np = {"chain": GaugeGraph.from_layered(chain), "dense W": GaugeGraph.from_dense(dag),
             "residual": _residual_graph()}
    res = on_xp["residual"]
    for blk in res.blocks:
        blk.weight = xp.asarray(blk.weight)
    res.xp = xp
    for name, g in on_xp.items():
        r = minnorm_graph(g, 2.0, method=method, gamma_tol=1e-10, max_iter=50000)
        ref = minnorm_graph(on_np[name], 2.0, method=method, gamma_tol=1e-10, max_iter=50000)
        # the device sums in another order: an update more or less at the tolerance is rounding
        assert r.converged and abs(r.iterations - ref.iterations) <= 1, name
        np.testing.assert_allclose(r.objective[[0, -1]], ref.objective[[0, -1]], rtol=1e-10, err_msg=name)
        for a, b in zip(r.factors, ref.factors):
            assert type(a) is type(xp.asarray(a)), name               # on the backend, not the host
            np.testing.assert_allclose(_host(a), b, rtol=1e-9, err_msg=name)
        for d, e in zip(r.dead_units, ref.dead_units):
            np.testing.assert_array_equal(_host(d), e)
    X = np.random.default_rng(0).standard_normal((8, dag.n_in))
    got = minnorm_graph(on_xp["dense W"], 2.0, method=method, gamma_tol=1e-10, max_iter=50000).net(xp.asarray(X))
    np.testing.assert_allclose(_host(got), dag(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [2.0, 1.0, 1.5])
@pytest.mark.parametrize("method", ["block", "multiplicative"])
def test_large_blocks_keep_no_M_and_give_the_stored_answer(monkeypatch, p, method, xp):
    """Blocks at or above LAZY_ENTRIES form (|w|/s)^p a few rows at a time in each product instead
    of storing M: the same iterates (sums in row chunks: to rounding) and answer."""
    from gaugelit.solvers import _graph

    host = gl.he_init([12, 40, 30, 25, 4], seed=5, dtype="float64", xp=np)
    W1 = host.weights[1].copy()
    W1[3] = 0                                    # a dead unit: its constant products too
    net = gl.LayeredNet([xp.asarray(W) for W in [host.weights[0], W1] + host.weights[2:]],
                        [xp.asarray(b) for b in host.biases])
    stored = gl.minnorm(GaugeGraph.from_layered(net), p, method=method, gamma_tol=1e-10)
    monkeypatch.setattr(_graph, "LAZY_ENTRIES", 100)
    monkeypatch.setattr(_graph, "_LAZY_CHUNK_BYTES", 8 * 40 * 7)   # 7 rows a chunk: several chunks
    state = _graph.GraphState(GaugeGraph.from_layered(net), p)
    assert all(isinstance(m, _graph._LazyM) for m in state.M[1:3])
    lazy = gl.minnorm(GaugeGraph.from_layered(net), p, method=method, gamma_tol=1e-10)
    assert lazy.iterations == stored.iterations
    def dead(r):
        return [list(gl.to_numpy(d)) for d in r.dead_units]
    assert dead(lazy) == dead(stored) != [[]] * 5
    np.testing.assert_allclose(lazy.objective, stored.objective, rtol=1e-13)
    for a, b in zip(lazy.factors, stored.factors):
        np.testing.assert_allclose(gl.to_numpy(a), gl.to_numpy(b), rtol=1e-10)
