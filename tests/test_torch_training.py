"""Training with gauge fixing (gaugelit.torch_training, issue 23 section 4): ENorm's one sweep per
step, the comparison on synthetic data, the learning-rate multipliers a balancing implies, the
resumable run files, and GaugeFix's report at the step where training diverges."""
import copy
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gaugelit.torch as gt  # noqa: E402
from gaugelit import torch_training as tt  # noqa: E402
from gaugelit.torch import GaugeError, GaugeFix, minnorm_  # noqa: E402


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_enorm_arm_takes_exactly_one_sweep_keeps_the_function_and_does_not_warn(name):
    torch.manual_seed(0)
    model = tt.MODELS[name]().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fix = GaugeFix(model, 2.0, opt, **tt.ARM_SOLVER["enorm"])
    data = tt.synthetic_images(32, 8)
    X, fresh = data["X"].double(), torch.randn(3, 1, 28, 28, dtype=torch.float64)   # not the traced input
    gammas = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # no ConvergenceWarning: one sweep was asked for
        for _ in range(4):
            opt.zero_grad()
            F.cross_entropy(model(X), data["y"]).backward()
            opt.step()
            with torch.no_grad():
                before = model(fresh)
            res = fix()
            with torch.no_grad():
                after = model(fresh)
            assert res.iterations == 1 and len(res.gamma) == 2 and not res.converged
            assert res.gamma[1] < res.gamma[0]
            torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-12)
            gammas.append(res.gamma[1])
    # one sweep does not balance as the solve does: the exact arm reaches its tolerance
    exact = GaugeFix(copy.deepcopy(model), 2.0)()
    assert exact.gamma[-1] < 1e-3 < gammas[0]


def test_comparison_runs_on_synthetic_data_with_paired_seeds():
    data = tt.synthetic_images(96, 32)
    settings = tt.Comparison(n_train=96, n_test=32, batch_size=32, seeds=(0, 1), lr=0.02)
    records = tt.compare(settings, gt, data)
    assert len(records) == 2 * 2 * 3 and all(r["status"] == "finished" for r in records)
    for seed in (0, 1):
        for model in ("cnn", "resnet"):
            runs = {r["config"]["arm"]: r for r in records
                    if r["config"]["seed"] == seed and r["config"]["model"] == model}
            # same initial weights and first mini-batch in every arm: the first loss is the same
            assert len({runs[a]["loss"][0] for a in tt.ARMS}) == 1
            assert runs["enorm"]["sweeps"] == 1 and runs["plain"]["sweeps"] is None
            assert runs["gaugefix"]["gamma_after"] < runs["enorm"]["gamma_after"]
            assert runs["plain"]["gamma_after"] == runs["plain"]["final_gamma"]
    table, comparisons = tt.paired_table(records)
    assert "enorm" in table and ("cnn", "gaugefix", "test_accuracy") in comparisons
    assert comparisons[("cnn", "enorm", "train_accuracy")].n == 2


def test_rate_multipliers_are_what_the_factors_imply():
    m = _mlp(3)
    balanced = copy.deepcopy(m)
    res = minnorm_(balanced, 2.0, gamma_tol=1e-12)
    by_layer = {g.name: torch.as_tensor(np.asarray(f)) for g, f in zip(res.graph.groups, res.factors)}
    a1, a2 = by_layer["0"], by_layer["2"]              # the channels layers 0 and 2 write
    assert a1.numel() == 6 and a2.numel() == 5
    got = tt.rate_multipliers(m, balanced)
    one = torch.ones(1, dtype=torch.float64)
    # W' = D W with D_ij = a_i / a_j: the multiplier of entry (i, j) is (a_j / a_i)^2
    expect = {"0.weight": (one / a1)[:, None] ** 2 * torch.ones(6, 4), "0.bias": 1 / a1 ** 2,
              "2.weight": (a1[None, :] / a2[:, None]) ** 2, "2.bias": 1 / a2 ** 2,
              "4.weight": a2[None, :].expand(3, 5) ** 2, "4.bias": torch.ones(3, dtype=torch.float64)}
    for name, e in expect.items():
        gm = float(torch.exp(torch.log(e).mean()))
        np.testing.assert_allclose(got[name], (gm, float(e.min()), float(e.max())), rtol=1e-9)


def test_balanced_once_then_sgd_is_sgd_with_the_per_entry_rates():
    """The mechanism's identity: SGD with momentum on W' = D W equals, mapped back, SGD with momentum
    on W whose gradient is multiplied entry by entry by 1/D^2 = (w / w')^2."""
    m = _mlp(4)
    b = copy.deepcopy(m)
    minnorm_(b, 2.0, gamma_tol=1e-12)
    D = {n: wb.detach() / w.detach() for (n, w), (_, wb) in zip(m.named_parameters(), b.named_parameters())}
    torch.manual_seed(5)
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    opt_m = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        for model, opt in ((m, opt_m), (b, opt_b)):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            if model is m:
                for n, w in m.named_parameters():
                    w.grad.div_(D[n] ** 2)
            opt.step()
    for (n, w), (_, wb) in zip(m.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(wb.detach(), D[n] * w.detach(), rtol=1e-10, atol=1e-12)


def test_run_files_resume(tmp_path):
    data = tt.synthetic_images(64, 16)
    settings = tt.Comparison(n_train=64, n_test=16, batch_size=32, seeds=(0, 1), models=("cnn",),
                             arms=("plain", "enorm"))
    log = []
    assert len(tt.run_missing(settings, tmp_path, gt, data, log=log.append)) == 4
    assert len(list(tmp_path.glob("*.json"))) == 4 and not list(tmp_path.glob(".*"))
    assert tt.run_missing(settings, tmp_path, gt, data, log=None) == []
    key = next(iter(settings.configs()))
    (tmp_path / f"{key}.json").unlink()
    other = next(k for k in settings.configs() if k != key)
    (tmp_path / f"{other}.json").write_text('{"config": ')          # a half-written file is not finished
    again = tt.run_missing(settings, tmp_path, gt, data, log=None)
    assert sorted(tt.run_key(c) for c in again) == sorted([key, other])
    records = tt.load_runs(settings, tmp_path)
    assert len(records) == 4 and all(json.dumps(r) for r in records)


def test_gaugefix_names_the_step_where_training_diverges():
    """Not an injected NaN: SGD at a huge rate overflows float32, and the first GaugeFix call after
    the step that made the weights non-finite is the one that says so."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(m.parameters(), lr=1e6, momentum=0.9)
    fix = GaugeFix(m, 2.0, opt)
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    for step in range(1, 30):
        opt.zero_grad()
        F.mse_loss(m(x), y).backward()
        opt.step()
        if not all(bool(torch.isfinite(w).all()) for w in m.parameters()):
            with pytest.raises(GaugeError, match=rf"GaugeFix call {step} \(after optimizer step {step}\): "
                                                 r"parameter '\d\.(weight|bias)' has \d+ non-finite"):
                fix()
            return
        fix()
    pytest.fail("training did not diverge")


def test_divergence_study_runs_and_its_per_layer_control_uses_the_multipliers():
    data = tt.synthetic_images(64, 8)
    out = tt.divergence(tt.SmallCNN, data, gt, steps=3, batch_size=32, lr=0.01)
    assert set(out) == {"multipliers", *tt.DIVERGENCE_ARMS}
    for arm in tt.DIVERGENCE_ARMS:
        assert len(out[arm]["loss"]) == 3 and out[arm]["first_nonfinite"] is None
    # the first loss: plain, GaugeFix and per-layer lr start from the same weights; balanced once
    # from the balanced ones, which compute the same function
    first = [out[a]["loss"][0] for a in tt.DIVERGENCE_ARMS]
    np.testing.assert_allclose(first, first[0], rtol=1e-5)
    gm = {n: v[0] for n, v in out["multipliers"].items()}
    assert set(gm) == {n for n, _ in tt.SmallCNN().named_parameters()} and all(v > 0 for v in gm.values())
