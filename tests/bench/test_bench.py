"""The benchmark suite as a smoke test (CI runs it at a tiny size; no timing is ever asserted), and
the fast paths it measures checked against the public API they must equal."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gaugelit as gl
from gaugelit.training._stack import Stack

ROOT = Path(__file__).resolve().parents[2]


def run_script(*args, tmp_path, **env_changes):
    env = dict(os.environ, GAUGELIT_BACKEND="numpy", PYTHONPATH=str(ROOT), **env_changes)   # this checkout
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_suite_runs_every_row_and_names_the_machine(tmp_path):
    out = tmp_path / "tiny.json"
    md = tmp_path / "tiny.md"
    stdout = run_script("bench/suite.py", "--size", "tiny", "--repeat", "1",
                        "--json", str(out), "--markdown", str(md), tmp_path=tmp_path)
    result = json.loads(out.read_text())
    machine = result["machine"]
    assert machine["cpu"] and machine["hostname"] and machine["backend"] == "numpy"
    assert machine["threads"] == 1 and machine["numpy"] == np.__version__
    assert set(result["rows"]) == {"1", "2", "3", "4", "5"}
    assert set(result["commands"]) == {"1", "2", "3", "4", "5"}
    assert all(result["rows"][k] for k in result["rows"])
    assert {(r["arch"], r["p"]) for r in result["rows"]["1"]} == \
        {(a, p) for a in ("tiny-3", "tiny-5") for p in (1.0, 2.0)}
    for r in result["rows"]["1"]:
        assert r["floor_ms"] > 0 and r["iteration_ms"] > 0 and r["ratio"] > 0
    for r in result["rows"]["2"]:              # both methods reached the same minimum
        assert r["objective_gap"] < 1e-6 and r["passes_ratio"] > 1
    assert result["rows"]["3"][0]["updates_per_solve"] >= 1
    torch_row = result["rows"]["4"][0]
    assert ("skipped" in torch_row) or torch_row["torch_ms"] > 0
    sweep = result["rows"]["5"][0]
    if "skipped" in sweep:                     # no MNIST here: the row says where it looked
        assert "set GAUGELIT_DATA_DIR" in sweep["skipped"]
    else:
        assert sweep["runs"] == 2 and sweep["jobs"] >= 1 and sweep["steps_per_run"] == 8
        assert sweep["sequential_model_steps_per_s"] > 0 and sweep["batched_model_steps_per_s"] > 0
        assert ("parallel_model_steps_per_s" in sweep) == (sweep["jobs"] > 1)
    assert "Row 1" in stdout and "Row 3" in stdout and md.read_text().strip() in stdout


def test_sweep_row_is_skipped_without_mnist_and_downloads_nothing(tmp_path):
    out = tmp_path / "row5.json"
    stdout = run_script("bench/suite.py", "--size", "tiny", "--rows", "5", "--json", str(out),
                        tmp_path=tmp_path, GAUGELIT_DATA_DIR=str(tmp_path / "empty"))
    [row] = json.loads(out.read_text())["rows"]["5"]
    assert row["skipped"].startswith(f"{tmp_path / 'empty' / 'mnist'}") and "is missing" in row["skipped"]
    assert "skipped:" in stdout and not (tmp_path / "empty").exists()


def test_solver_figures_still_prints_its_table(tmp_path):
    out = tmp_path / "figures.json"
    stdout = run_script("bench/solver_figures.py", "--repeat", "1", "--archs", "7-layer",
                        "--json", str(out), tmp_path=tmp_path)
    assert "| 7-layer | 1 |" in stdout and "| 7-layer | 2 |" in stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["p"] for r in rows] == [1.0, 2.0]


# -- the fast training path is the public API's arithmetic -----------------------------------------

def composed_step(net, X, y, optimizer, lr, weight_decay, gauge, train_hidden_biases, beta=None):
    """One step of train() composed from the public API: minnorm, loss_and_grads, sgd/egd_step."""
    p = gl.training.OPTIMIZERS[optimizer]["p"]
    if gauge:
        res = gl.minnorm(net, p, method="multiplicative", delta=1e-3)
        net = res.net
        if beta is not None:     # b+ and b- rescale with the hidden biases, so beta does too
            beta[:-1] = [b * a for b, a in zip(beta[:-1], res.factors)]
    _, gw, gb = gl.loss_and_grads(net, X, y)
    if optimizer == "sgd":
        gl.sgd_step(net, gw, gb, lr, weight_decay, train_hidden_biases=train_hidden_biases)
    else:
        gl.egd_step(net, gw, gb, lr, weight_decay, train_hidden_biases=train_hidden_biases,
                    bias_scale=beta)
    return net


@pytest.mark.parametrize("optimizer, lr, weight_decay, eg_plus_minus",
                         [("sgd", 0.02, 1e-3, False), ("egd", 0.02, 1e-3, False),
                          ("egd", 0.02, 1e-3, True), ("sgd", 0.02, 60.0, False)])
@pytest.mark.parametrize("gauge", [False, True])
@pytest.mark.parametrize("train_hidden_biases", [False, True])
@pytest.mark.parametrize("fold_every_step", [False, True])
@pytest.mark.parametrize("row_blocks", [False, True])
def test_stored_net_steps_equal_the_public_api(optimizer, lr, weight_decay, eg_plus_minus, gauge,
                                               train_hidden_biases, fold_every_step, row_blocks, monkeypatch):
    # The training loop keeps gauge factors and weight decay out of the weights (log domain, one
    # scale) and writes the weights in row blocks (one row each here, with row_blocks);
    # weight_decay=60 makes 1 - lr*lambda negative, the case it must apply to the weights.
    if row_blocks:
        monkeypatch.setattr(Stack, "BLOCK_BYTES", 1)
    if fold_every_step:
        monkeypatch.setattr(Stack, "U_MAX", 0.0)
        monkeypatch.setattr(Stack, "S_MIN", 1.0 + 1e-12)
    rng = np.random.default_rng(3)
    base = gl.he_init([6, 9, 7, 5, 3], seed=3, dtype="float64", xp=np)
    net = gl.LayeredNet([W * rng.uniform(0.5, 2.0) for W in base.weights],
                        [rng.standard_normal(b.shape) * 0.3 for b in base.biases])
    ref = net.copy()
    trained = set(range(len(net.biases)) if train_hidden_biases else (len(net.biases) - 1,))
    p = gl.training.OPTIMIZERS[optimizer]["p"]
    beta = None
    if optimizer == "egd" and eg_plus_minus:     # beta in true coordinates; a gauge move rescales it
        beta = [0.3 + 0.1 * l for l in range(len(net.biases))]
    state = Stack([net], g=1, beta={l: np.array([[beta[l]]]) for l in trained} if beta else None)
    for _ in range(6):
        X, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
        if gauge:
            state.gauge_fix(p, 1e-3)
        loss = state.step(X[None], y[None], "log", optimizer, lr, weight_decay, trained)[0]
        np.testing.assert_allclose(float(loss), float(gl.loss_and_grads(
            gl.minnorm(ref, p, method="multiplicative", delta=1e-3).net if gauge else ref, X, y)[0]),
            rtol=1e-12)
        ref = composed_step(ref, X, y, optimizer, lr, weight_decay, gauge, train_hidden_biases, beta)
        state.maybe_fold()
    state.materialize()
    got = state.net(0)
    assert state.u_zero and state.s == 1.0
    for a, b in zip(got.weights + got.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14 * float(np.abs(b).max()))


def test_stored_net_gauge_fix_reports_dead_units_like_minnorm():
    # A unit with no incoming weights: Algorithm 1 leaves it at a = 1, in both implementations.
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((5, 4)), rng.standard_normal((3, 5))]
    W[0][2] = 0
    net = gl.LayeredNet(W)
    state = Stack([net], g=1)
    assert state.rows == [5, 3]
    iterations, _, _ = state.gauge_fix(2.0, 1e-6)
    ref = gl.minnorm(net, 2.0, method="multiplicative", delta=1e-6)
    assert iterations[0] == ref.iterations and ref.dead_units[0].tolist() == [2]
    np.testing.assert_allclose(np.exp(state.u[0][0]), ref.factors[0], rtol=1e-12)
    state.materialize()
    for a, b in zip(state.net(0).weights, ref.net.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_stored_net_handles_a_unit_that_dies_after_it_was_rescaled():
    # Dead units keep their (here non-zero) log factor; the solve must still be Algorithm 1's.
    rng = np.random.default_rng(1)
    net = gl.LayeredNet([rng.standard_normal((5, 4)) * 3, rng.standard_normal((6, 5)),
                         rng.standard_normal((3, 6)) * 0.2])
    state = Stack([net], g=1)
    state.gauge_fix(2.0, 1e-2)
    assert float(np.abs(state.u[0][0, 1])) > 1e-3
    state.S[1][0][:, 1] = 0                    # unit 1 of hidden layer 1 loses its outgoing weights
    state.materialize()
    truth = gl.LayeredNet([w.copy() for w in state.net(0).weights], [c.copy() for c in state.net(0).biases])
    u = rng.uniform(-0.5, 0.5, 5)              # re-express the same network with u != 0
    state.u[0] = state.u[0] + u
    state.u_zero = False
    state.S[0][0] *= np.exp(-u)[:, None]
    state.S[1][0] *= np.exp(u)[None, :]
    state.c[0][0] = state.c[0][0] * np.exp(-u)
    iterations, _, _ = state.gauge_fix(2.0, 1e-8)
    ref = gl.minnorm(truth, 2.0, method="multiplicative", delta=1e-8)
    assert iterations[0] == ref.iterations and ref.dead_units[0].tolist() == [1]
    state.materialize()
    for a, b in zip(state.net(0).weights, ref.net.weights):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14)
