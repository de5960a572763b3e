"""train_many: many models of one architecture in one loop; on the CPU each is exactly train's run."""
import warnings

import numpy as np
import pytest

import gaugelit as gl
from gaugelit.training import train_many
from gaugelit.training._stack import Stack

SIZES = [6, 9, 7, 3]


def data(n=44, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0])).astype(dtype)
    return X, rng.integers(0, SIZES[-1], n), X[:20].copy(), rng.integers(0, SIZES[-1], 20)


def nets(seeds, dtype="float64"):
    return [gl.he_init(SIZES, seed=s, dtype=dtype, xp=np) for s in seeds]


def relative(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def assert_same_run(got, want, rtol):
    (net, hist), (ref, ref_hist) = got, want
    for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
        assert relative(a, b) <= rtol
    assert set(hist) == set(ref_hist)
    for key in ref_hist:
        if key != "seconds":          # wall time of the batched epoch, not of one model's
            assert len(hist[key]) == len(ref_hist[key])
            assert relative(hist[key], ref_hist[key]) <= rtol, key


KW = dict(epochs=2, batch_size=8, progress=False, min_norm_loss=True)


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("egd", 0.2)])
@pytest.mark.parametrize("hidden", [False, True])
def test_train_many_equals_train_model_by_model(optimizer, lr, hidden):
    # One grid cell: three seeds, gauge fixing off and on, mixed in the stack: on the CPU each model
    # runs the same BLAS calls as alone, so its run is exactly train's.
    X, y, Xt, yt = data()
    seeds, gauge = [0, 1, 2, 0, 1, 2], [False, True, False, True, True, False]
    kw = dict(KW, optimizer=optimizer, lr=lr, train_hidden_biases=hidden, X_test=Xt, y_test=yt)
    got = train_many(nets(seeds), X, y, gauge_fix=gauge, seeds=seeds, **kw)
    for net, g, s, result in zip(nets(seeds), gauge, seeds, got):
        want = gl.train(net, X, y, gauge_fix=g, seed=s, **kw)
        assert_same_run(result, want, 0.0)          # on the CPU: exactly train's
        if g:
            assert result[1]["gauge_iterations"][1] >= 8       # one solve per step, at least
    # the as-printed EGD bias update, and folding the factors into the weights every step
    if optimizer == "egd" and not hidden:
        got = train_many(nets([3]), X, y, gauge_fix=True, seeds=7, egd_biases="as-printed", **kw)
        assert_same_run(got[0], gl.train(nets([3])[0], X, y, gauge_fix=True, seed=7,
                                         egd_biases="as-printed", **kw), 0.0)


@pytest.mark.parametrize("optimizer", ["sgd", "egd"])
@pytest.mark.parametrize("fold, row_blocks", [(True, False), (False, True)])
def test_folding_every_step_and_row_blocks_give_train_s_result(optimizer, fold, row_blocks, monkeypatch):
    # factors folded into the weights after every step; weights written one row at a time
    if fold:
        monkeypatch.setattr(Stack, "U_MAX", 0.0)
        monkeypatch.setattr(Stack, "S_MIN", 1.0 + 1e-12)
    if row_blocks:
        monkeypatch.setattr(Stack, "BLOCK_BYTES", 1)
    X, y, _, _ = data()
    kw = dict(KW, optimizer=optimizer, weight_decay=1e-2, min_norm_loss=False)
    got = train_many(nets([0, 1]), X, y, gauge_fix=[True, False], seeds=[4, 5], **kw)
    for net, g, s, result in zip(nets([0, 1]), [True, False], [4, 5], got):
        assert_same_run(result, gl.train(net, X, y, gauge_fix=g, seed=s, **kw), 0.0)


def test_mse_loss_and_a_dead_unit():
    # A hidden unit without incoming weights takes train's own Algorithm 1 (dead-unit masks).
    X, _, _, _ = data()
    Y = np.random.default_rng(1).standard_normal((X.shape[0], SIZES[-1]))
    models = nets([0, 1])
    models[1].weights[0][4] = 0
    kw = dict(KW, loss="mse", lr=0.01, min_norm_loss=False)
    got = train_many(nets([0, 1])[:1] + [models[1]], X, Y, gauge_fix=True, seeds=[0, 1], **kw)
    for net, s, result in zip(nets([0])[:1] + [models[1]], [0, 1], got):
        assert_same_run(result, gl.train(net, X, Y, gauge_fix=True, seed=s, **kw), 0.0)
    assert not got[1][0].weights[0][4].any()


def test_float32_stays_within_float32_rounding():
    # The batched products add in another order than train's 2-D ones, so float32 results differ
    # by rounding. Bound: no more than float32 rounding itself moves train's run (float32 against
    # float64, the same run), times 4 (two independent roundings differ by about sqrt(2) of one;
    # 4 leaves room for the spread), and 1e-4 relative at most.
    X, y, Xt, yt = data(dtype="float32")
    seeds, gauge = [0, 1], [False, True]
    kw = dict(KW, optimizer="sgd", lr=0.05, X_test=Xt, y_test=yt)
    got = train_many(nets(seeds, "float32"), X, y, gauge_fix=gauge, seeds=seeds, **kw)
    for s, g, (net, hist) in zip(seeds, gauge, got):
        ref32, h32 = gl.train(nets([s], "float32")[0], X, y, gauge_fix=g, seed=s, **kw)
        ref64, h64 = gl.train(nets([s])[0], X.astype("float64"), y, gauge_fix=g, seed=s,
                              **dict(kw, X_test=Xt.astype("float64")))
        for a, b, c in zip(net.weights, ref32.weights, ref64.weights):
            noise = relative(b, c)
            assert relative(a, b) <= min(4 * noise + 1e-6, 1e-4)
        for key in ("reg_loss", "data_loss"):
            assert relative(hist[key], h32[key]) <= min(4 * relative(h32[key], h64[key]) + 1e-6, 1e-4)
        assert hist["gauge_iterations"] == h32["gauge_iterations"]


def test_a_diverged_model_is_reported_and_dropped_while_the_others_go_on():
    X, y, _, _ = data()
    models = nets([0, 1, 2])
    models[1] = gl.LayeredNet([W * 1e100 for W in models[1].weights], models[1].biases)
    kw = dict(KW, optimizer="sgd", lr=0.05)
    for gauge in (False, True):
        got = train_many([m.copy() for m in models], X, y, gauge_fix=gauge, seeds=[0, 1, 2], **kw)
        with pytest.raises(gl.TrainingDiverged) as info:
            gl.train(models[1], X, y, gauge_fix=gauge, seed=1, **kw)
        assert isinstance(got[1], gl.TrainingDiverged)
        assert str(got[1]) == str(info.value)
        assert got[1].history["epoch"] == [0]
        for i in (0, 2):
            assert_same_run(got[i], gl.train(models[i], X, y, gauge_fix=gauge, seed=i, **kw), 0.0)


def test_train_many_with_soft_gauge_is_train_s_run():
    # one loop for one model or many: the soft-gauge penalty is batched like the rest
    X, y, _, _ = data()
    kw = dict(KW, optimizer="sgd", lr=0.05, soft_gauge=0.2, train_hidden_biases=True, min_norm_loss=False)
    got = train_many(nets([0, 1]), X, y, seeds=[3, 4], **kw)
    for net, s, result in zip(nets([0, 1]), [3, 4], got):
        assert_same_run(result, gl.train(net, X, y, seed=s, **kw), 0.0)


def test_bad_input_names_the_argument():
    X, y, _, _ = data()
    with pytest.raises(ValueError, match="seeds lists 3 values for 2 networks"):
        train_many(nets([0, 1]), X, y, seeds=[0, 1, 2])
    with pytest.raises(ValueError, match="nets\\[1\\]"):
        train_many([nets([0])[0], gl.he_init([6, 5, 3], xp=np, dtype="float64")], X, y)
    with pytest.raises(ValueError, match="soft_gauge: the penalty needs optimizer='sgd'"):
        train_many(nets([0]), X, y, soft_gauge=0.1, optimizer="egd")
    with pytest.raises(TypeError, match="gauge_fix\\[0\\] must be True or False"):
        train_many(nets([0]), X, y, gauge_fix=[2])
    with pytest.raises(TypeError, match="seeds\\[1\\] must be an integer"):
        train_many(nets([0, 1]), X, y, seeds=[0, "1"])
    with pytest.raises(TypeError, match="LayeredNet"):
        train_many([], X, y)
    with pytest.raises(ValueError, match="lr must be finite"):
        train_many(nets([0]), X, y, lr=-1)


def test_the_inputs_are_not_modified(xp):
    X, y, _, _ = data()
    models = [m.to(xp) for m in nets([0, 1])]
    before = [[np.array(gl.to_numpy(W)) for W in m.weights] for m in models]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = train_many(models, X, y, gauge_fix=True, seeds=[0, 1], epochs=1, batch_size=8, progress=False)
    for m, b in zip(models, before):
        for W, W0 in zip(m.weights, b):
            np.testing.assert_array_equal(gl.to_numpy(W), W0)
    assert all(net.xp is xp for net, _ in out)
