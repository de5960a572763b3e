"""gaugelit.torch: PyTorch models gauge-fixed in place (CPU torch; skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import gaugelit as gl  # noqa: E402
from gaugelit.torch import GaugeError, GaugeFix, UnsupportedOp, gauge_graph, minnorm_  # noqa: E402
from torch_models import CNN, Res, mlp  # noqa: E402


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["block", "multiplicative"])
def test_mlp_equals_layerednet(method):
    m = mlp()
    lin = [l for l in m if isinstance(l, nn.Linear)]
    net = gl.LayeredNet([l.weight.detach().numpy().copy() for l in lin], [l.bias.detach().numpy().copy() for l in lin])
    r0 = gl.minnorm(net, 2.0, method=method, gamma_tol=1e-10)
    x = torch.randn(5, 6, dtype=torch.float64)
    r = minnorm_(m, 2.0, method=method, gamma_tol=1e-10, example_input=x)
    np.testing.assert_allclose(r.objective[-1], r0.objective[-1], rtol=1e-12)
    for l, W, b in zip(lin, r0.net.weights, r0.net.biases):
        np.testing.assert_allclose(l.weight.detach().numpy(), W, rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(l.bias.detach().numpy(), b, rtol=1e-7, atol=1e-12)
    assert r.output_change < 1e-10 and r.net is m


def test_cnn_channels_balance_and_function_unchanged():
    torch.manual_seed(1)
    m = CNN().double()
    x = torch.randn(3, 1, 10, 10, dtype=torch.float64)
    y0 = m(x)
    r = minnorm_(m, 2.0, gamma_tol=1e-12, example_input=x)
    torch.testing.assert_close(m(x), y0, rtol=1e-10, atol=1e-12)
    # per channel, from the weights alone: in-sum over kernels == out-sum over kernels / fc columns
    sq = lambda t: t.detach() ** 2                               # noqa: E731
    in1, out1 = sq(m.c1.weight).sum(dim=(1, 2, 3)), sq(m.c2.weight).sum(dim=(0, 2, 3))
    in2, out2 = sq(m.c2.weight).sum(dim=(1, 2, 3)), sq(m.fc.weight).reshape(5, 6, 4).sum(dim=(0, 2))
    torch.testing.assert_close(in1, out1, rtol=1e-10, atol=0)
    torch.testing.assert_close(in2, out2, rtol=1e-10, atol=0)
    assert r.objective[-1] < r.objective[0]


def test_residual_reaches_independent_minimum():
    """Minimise F over the model's valid rescalings (stream tied; a1, b1 free) with L-BFGS in
    log-factors, written from the weights alone, and compare."""
    torch.manual_seed(2)
    m = Res().double()
    W = {k: v.detach() ** 2 for k, v in m.named_parameters() if k.endswith("weight")}
    uS = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    ua = torch.zeros(12, dtype=torch.float64, requires_grad=True)
    ub = torch.zeros(6, dtype=torch.float64, requires_grad=True)

    def F():
        e = lambda rows, cols: torch.exp(2 * (rows[:, None] - cols[None, :]))   # noqa: E731
        z5, z3, z2 = (torch.zeros(n, dtype=torch.float64) for n in (5, 3, 2))
        return ((W["stem.weight"] * e(uS, z5)).sum() + (W["a1.weight"] * e(ua, uS)).sum()
                + (W["a2.weight"] * e(uS, ua)).sum() + (W["b1.weight"] * e(ub, uS)).sum()
                + (W["b2.weight"] * e(uS, ub)).sum() + (W["head.weight"] * e(z3, uS)).sum()
                + (W["gate.weight"] * e(z2, uS)).sum())

    opt = torch.optim.LBFGS([uS, ua, ub], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        f = F()
        f.backward()
        return f
    for _ in range(2):
        opt.step(closure)
    best = float(F().detach())
    x = torch.randn(4, 5, dtype=torch.float64)
    r = minnorm_(m, 2.0, gamma_tol=1e-11, example_input=x)
    np.testing.assert_allclose(r.objective[-1], best, rtol=1e-9)
    assert ("gate", 2, "feeds sigmoid at 'sigmoid'") in r.fixed_units
    names = [g.name for g in r.graph.groups]
    assert "tied [stem, a2, b2]" in names


def test_units_before_a_sigmoid_keep_factor_one():
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 7), nn.ReLU(),
                      nn.Linear(7, 2)).double()
    before = _weights(m)
    x = torch.randn(3, 4, dtype=torch.float64)
    r = minnorm_(m, 2.0, gamma_tol=1e-10, example_input=x)
    reasons = {name: reason for name, _, reason in r.fixed_units}
    assert reasons["2"] == "feeds Sigmoid '3'"
    # layer 2's outputs keep a = 1: its rows are only divided by layer 0's factors (columns)
    g = r.graph
    fixed = [k for k, grp in enumerate(g.groups) if grp.name == "2"][0]
    np.testing.assert_array_equal(r.factors[fixed], 1.0)
    # layer 2 writes fixed units: its bias is untouched, its rows only see layer 0's column factors
    torch.testing.assert_close(m[2].bias, before["2.bias"], rtol=0, atol=0)
    ratio = m[2].weight.detach() / before["2.weight"]
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-12, atol=0)
    assert not torch.equal(m[0].weight, before["0.weight"])


def test_concatenation_and_float32():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 5), nn.Linear(4, 3), nn.Linear(8, 2)

        def forward(self, x):
            return self.c(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1))
    torch.manual_seed(4)
    m = Cat()
    x = torch.randn(6, 4)
    r = minnorm_(m, 2.0, gamma_tol=1e-5, example_input=x)
    assert r.factors[0].dtype == np.float32 and r.output_change < 1e-5
    assert r.gamma[-1] < 1e-5


def test_dead_units_keep_factor_one():
    m = mlp(seed=5)
    with torch.no_grad():
        m[0].weight[3] = 0
        m[0].bias[3] = 0
    x = torch.randn(4, 6, dtype=torch.float64)
    r = minnorm_(m, 2.0, gamma_tol=1e-10, example_input=x)
    g = [k for k, grp in enumerate(r.graph.groups) if grp.name == "0"][0]
    assert list(r.dead_units[g]) == [3] and r.factors[g][3] == 1.0


def test_bad_input_is_a_clear_error():
    class Pow(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x) ** 2)
    with pytest.raises(UnsupportedOp, match=r"node 'pow_1'.*function 'pow'"):
        gauge_graph(Pow())

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x
    with pytest.raises(GaugeError, match="torch.fx cannot trace Branchy"):
        gauge_graph(Branchy())
    class View(nn.Module):
        def __init__(self, how):
            super().__init__()
            self.c, self.f, self.how = nn.Conv2d(1, 3, 3), nn.Linear(3 * 4 * 4, 2), how

        def forward(self, x):
            h = torch.relu(self.c(x))
            if self.how == "size":
                h = h.view(h.size(0), -1)
            elif self.how == "shape":
                h = h.reshape(h.shape[0], -1)
            else:
                h = h.view(-1, 48)         # a flatten only while the input is 6 x 6: refused
            return self.f(h)
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    for how in ("size", "shape"):
        assert minnorm_(View(how).double(), example_input=x).output_change < 1e-10
    with pytest.raises(UnsupportedOp, match=r"node 'view'.*\.view\(-1, 48\)"):
        gauge_graph(View("other").double(), example_input=x)
    with pytest.raises(UnsupportedOp, match=r"module '1': GRU"):
        gauge_graph(nn.Sequential(nn.Linear(3, 4), nn.GRU(4, 4)))
    m = mlp()
    with torch.no_grad():
        m[2].weight[0, 0] = float("inf")
    with pytest.raises(GaugeError, match=r"parameter .2\.weight. has 1 non-finite entries"):
        minnorm_(m)
    shared = nn.Linear(4, 4)
    with pytest.raises(GaugeError, match="called twice"):
        gauge_graph(nn.Sequential(shared, nn.ReLU(), shared))
    with pytest.raises(GaugeError, match="float16"):
        minnorm_(mlp(torch.float16))


def test_changed_function_restores_weights(monkeypatch):
    import gaugelit.torch as gt
    m = mlp()
    before = _weights(m)
    real = gt._apply

    def corrupt(tm, factors, optimizer=None, journal=None):    # a wrong rescaling (through the journal)
        real(tm, factors, optimizer, journal)
        with torch.no_grad():
            gt._scale_(m[2].weight, [torch.tensor(2.0, dtype=torch.float64)], None, "2.weight", journal=journal)
    monkeypatch.setattr(gt, "_apply", corrupt)
    with pytest.raises(GaugeError, match="weights were restored"):
        minnorm_(m, example_input=torch.randn(2, 6, dtype=torch.float64))
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_gaugefix_transforms_optimizer_state(opt_name):
    """Momentum and first moments scale like gradients (1/R), second moments like 1/R^2: the
    products param * m and param^2 * v are gauge-invariant."""
    m = mlp(seed=6)
    opt = (torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9) if opt_name == "sgd"
           else torch.optim.Adam(m.parameters(), lr=1e-3))
    fix = GaugeFix(m, 2.0, opt, gamma_tol=1e-9)
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(m(x), y).backward()
        opt.step()
        keys = ("momentum_buffer",) if opt_name == "sgd" else ("exp_avg", "exp_avg_sq")
        inv = {(id(p), k): (p.detach().clone(), opt.state[p][k].clone()) for p in m.parameters() for k in keys}
        out0 = m(x).detach()
        res = fix()
        assert res.gamma[-1] < 1e-9
        torch.testing.assert_close(m(x), out0, rtol=1e-10, atol=1e-12)
        for p in m.parameters():
            for k in keys:
                p0, s0 = inv[(id(p), k)]
                power = 2 if k == "exp_avg_sq" else 1
                torch.testing.assert_close(p.detach() ** power * opt.state[p][k], p0 ** power * s0,
                                           rtol=1e-9, atol=1e-15)


def test_readme_torch_example_runs():
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "gaugelit.torch" in c)
    ns = {}
    exec(compile(code, "README.md", "exec"), ns)
    res = ns["res"]
    assert res.converged and res.output_change < 1e-10 and res.objective[-1] < res.objective[0]
    assert {reason for _, _, reason in res.fixed_units} == {"network input", "network output"}


def test_batchnorm_fixed_or_folded():
    from gaugelit.torch import fold_batchnorm_

    class BN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.bn, self.c2 = nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 3)
            self.fc = nn.Linear(3 * 2 * 2, 2)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.c2(torch.relu(self.bn(self.c1(x))))), 1))
    torch.manual_seed(7)
    m = BN().double()
    x = torch.randn(8, 2, 6, 6, dtype=torch.float64)
    m(x)                                                      # running statistics move away from 0/1
    m.eval()
    y0 = m(x)
    gamma0, W0 = m.bn.weight.detach().clone(), m.c1.weight.detach().clone()
    r = minnorm_(m, 2.0, gamma_tol=1e-10, example_input=x)
    # eval mode, unfolded: c1's channels are free, their factors carried by the batch norm's gamma and
    # beta (c1's rows are untouched: c1 has no input factors here, as its input is the network's)
    assert [u[0] for u in r.fixed_units] == ["input x", "fc"] and r.output_change < 1e-10
    assert isinstance(m.bn, nn.BatchNorm2d) and m.c1.bias is None
    torch.testing.assert_close(m.c1.weight, W0, rtol=0, atol=0)
    assert not torch.allclose(m.bn.weight, gamma0)
    torch.testing.assert_close(m(x), y0, rtol=1e-10, atol=1e-12)
    m.train()
    with pytest.raises(GaugeError, match="training mode"):
        fold_batchnorm_(m)
    m.eval()
    r = minnorm_(m, 2.0, gamma_tol=1e-10, example_input=x, fold_batchnorm=True)
    assert isinstance(m.bn, nn.Identity) and m.c1.bias is not None
    assert all(reason != "feeds BatchNorm2d 'bn'" for _, _, reason in r.fixed_units)
    torch.testing.assert_close(m(x), y0, rtol=1e-10, atol=1e-12)


# -- arrays: parameters reach the solver as zero-copy DLPack views and are rescaled in place ------------
def _ptrs(model):
    return {k: (p.data_ptr(), p.stride()) for k, p in model.named_parameters()}


def test_solver_reads_views_and_rescales_in_place():
    """The CPU half of the one code path (the CUDA half: tests/test_torch_cuda.py): np.from_dlpack
    views share the parameters' memory, the graph's blocks are those views (a kernel's: their
    p-norms over it), and minnorm_ writes into the parameters' own storage."""
    import gaugelit.torch as gt
    m = CNN().double()
    W = m.c2.weight
    A = gt._as_array(W, "c2.weight")
    assert type(A) is np.ndarray and A.dtype == np.float64 and A.shape == tuple(W.shape)
    assert A.__array_interface__["data"][0] == W.data_ptr() and np.shares_memory(A, W.detach().numpy())
    before, ptrs = _weights(m), _ptrs(m)
    x = torch.randn(2, 1, 10, 10, dtype=torch.float64)
    r = minnorm_(m, 2.0, gamma_tol=1e-10, example_input=x)
    assert _ptrs(m) == ptrs                                       # no parameter was replaced
    params = dict(m.named_parameters())
    for b in r.graph.blocks:
        W = params[f"{b.name}.weight"]
        if W.dim() == 2 and b.weight.shape[1] == W.shape[1]:      # a linear layer: the live weights
            assert np.shares_memory(b.weight, W.detach().numpy())
        else:   # a kernel (or a flattened channel's positions): its p-norms, no full-size temporary
            W0 = before[f"{b.name}.weight"]
            W0 = W0.reshape(W0.shape[0], b.weight.shape[1], -1)
            np.testing.assert_allclose(b.weight[:, :, 0], torch.linalg.vector_norm(W0, dim=-1).numpy(), rtol=1e-15)
    assert all(type(a) is np.ndarray and a.dtype == np.float64 for a in r.factors)
    # and the parameters hold exactly W a_out / a_in with the factors the solver returned
    g = {grp.name: a for grp, a in zip(r.graph.groups, r.factors)}
    a1, a2 = torch.from_numpy(g["c1"]), torch.from_numpy(g["c2"])
    torch.testing.assert_close(m.c2.weight, before["c2.weight"] * a2[:, None, None, None] / a1[None, :, None, None],
                               rtol=1e-15, atol=0)
    torch.testing.assert_close(m.c2.bias, before["c2.bias"] * a2, rtol=1e-15, atol=0)
    torch.testing.assert_close(m.fc.weight, before["fc.weight"] / a2.repeat_interleave(4)[None, :],
                               rtol=1e-15, atol=0)


def _strided_copy(m, how):
    """The same model with every weight stored non-contiguously: a transposed or channels-last view."""
    import copy
    s = copy.deepcopy(m)
    for mod in s.modules():
        if isinstance(mod, nn.Linear) and how == "transposed":
            W = mod.weight.detach()
            mod.weight = nn.Parameter(W.t().contiguous().t())       # (out, in) with strides (1, out)
            assert not mod.weight.is_contiguous() and torch.equal(mod.weight, W)
    if how == "channels_last":
        s = s.to(memory_format=torch.channels_last)
    return s


@pytest.mark.parametrize("how", ["transposed", "channels_last"])
def test_strided_weights_are_rescaled_where_they_lie(how):
    """DLPack hands the solver the strides; the rescaled values must land on the right entries."""
    torch.manual_seed(8)
    m = mlp(seed=8) if how == "transposed" else CNN().double()
    s = _strided_copy(m, how)
    strided = [k for k, p in s.named_parameters() if not p.is_contiguous()]
    assert strided, "the copy must hold non-contiguous weights"
    ptrs = _ptrs(s)
    x = torch.randn((3, 6) if how == "transposed" else (3, 1, 10, 10), dtype=torch.float64)
    r0 = minnorm_(m, 2.0, gamma_tol=1e-10, example_input=x)
    r = minnorm_(s, 2.0, gamma_tol=1e-10, example_input=x)
    assert _ptrs(s) == ptrs and r.iterations == r0.iterations
    for (k, p0), (_, p) in zip(m.named_parameters(), s.named_parameters()):
        torch.testing.assert_close(p, p0, rtol=1e-13, atol=0, msg=k)
    assert r.output_change < 1e-10


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_by_name(dtype):
    m = mlp().to(dtype)
    before = _weights(m)
    with pytest.raises(GaugeError, match=rf"parameter '0.weight': dtype {dtype} is not supported.*\.float\(\)"):
        minnorm_(m)
    with pytest.raises(GaugeError, match="is not supported"):
        GaugeFix(m)()
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_mixed_dtypes_and_devices_are_refused():
    m = mlp()
    m[2].float()
    with pytest.raises(GaugeError, match=r"'0.weight' \(torch.float64\) and '2.weight' \(torch.float32\) "
                                         r"differ in dtype"):
        minnorm_(m)
    m = mlp()
    m[4].to("meta")
    with pytest.raises(GaugeError, match=r"'0.weight' \(on cpu\) and '4.weight' \(on meta\) "
                                         r"lie on different devices"):
        minnorm_(m)
    with pytest.raises(GaugeError, match=r"parameter '0.weight': tensors on meta are not supported"):
        minnorm_(mlp().to("meta"))


def test_cuda_without_cupy_is_a_clear_error():
    import gaugelit.torch as gt
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy imports here")
    except ImportError:
        pass
    with pytest.raises(GaugeError, match=r"parameter 'fc.weight': tensors on cuda:0 are solved with CuPy, "
                                         r"which does not import"):
        gt._array_namespace(torch.device("cuda", 0), "parameter 'fc.weight'")


def test_function_check_runs_without_tf32_and_restores_the_flags():
    """minnorm_(example_input=...) runs both forward passes with TF32 off (on a GPU TF32 rounds
    float32 to ~1e-3, more than the check's tolerance), and leaves the user's flags as they were."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    seen = []
    m = CNN()
    m.register_forward_hook(lambda *_: seen.append((cudnn.allow_tf32, matmul.allow_tf32)))
    try:
        cudnn.allow_tf32 = matmul.allow_tf32 = True
        minnorm_(m, example_input=torch.randn(2, 1, 10, 10))
        assert seen == [(False, False), (False, False)]             # before and after
        assert cudnn.allow_tf32 and matmul.allow_tf32
        with pytest.raises(GaugeError, match="conv2d"):        # restored when the forward fails too
            minnorm_(m, example_input=torch.randn(2, 3))
        assert cudnn.allow_tf32 and matmul.allow_tf32
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_journal_undoes_in_place_rescalings_bit_for_bit():
    """No copy of the weights is kept: the journal's undo gives back every bit, also where the
    inverse rescaling does not (a factor 0, an overflow, many last-place differences), for strided
    tensors and both dtypes."""
    import gaugelit.torch as gt
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float64, torch.float32):
        W = torch.randn(300, 7, 3, 3, generator=g, dtype=dtype) * 10 ** torch.randint(-30, 30, (300, 1, 1, 1),
                                                                                    generator=g).to(dtype)
        T = torch.randn(40, 900, generator=g, dtype=dtype).t()           # not contiguous
        b = torch.randn(300, generator=g, dtype=dtype)
        W0, T0, b0 = W.clone(), T.clone(), b.clone()
        r = torch.rand(300, generator=g, dtype=dtype) * 3
        r[5] = 0.0                                                       # rows zeroed: not invertible
        c = torch.rand(7, generator=g, dtype=dtype) + 0.5
        j = gt._Journal()
        j.CHUNK = 1000                                                   # many chunks
        j.scale_(W, [r.view(-1, 1, 1, 1)], [c.view(1, -1, 1, 1)])
        j.scale_(T, [torch.full((900, 1), 1e300 if dtype == torch.float64 else 1e30, dtype=dtype)])  # overflow
        j.scale_(b, [r], [torch.tensor(3.0, dtype=dtype)])
        j.scale_(W, [c.view(1, -1, 1, 1)])                               # twice: undone in reverse order
        assert not torch.equal(W, W0)
        j.undo()
        for x, x0 in ((W, W0), (T, T0), (b, b0)):
            assert torch.equal(x.view(gt._INT[dtype]), x0.view(gt._INT[dtype]))
    for t in (torch.zeros(0, 3, dtype=torch.float64), torch.tensor(2.5, dtype=torch.float64)):   # empty, 0-d
        t0 = t.clone()
        j = gt._Journal()
        j.scale_(t, [torch.tensor(3.0, dtype=torch.float64)])
        j.undo()
        assert torch.equal(t, t0)


def test_batchnormed_model_is_restored_bit_for_bit_when_the_solve_or_the_check_fails(monkeypatch):
    import gaugelit.torch as gt

    class BN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.bn1, self.c2, self.bn2 = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 3), \
                nn.BatchNorm2d(5)
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            h = self.bn2(torch.relu(self.c2(torch.relu(self.bn1(self.c1(x))))))    # bn2 after a ReLU
            return self.fc(h.mean((2, 3)))
    torch.manual_seed(4)
    m = BN().double()
    m(torch.randn(8, 2, 8, 8, dtype=torch.float64))
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}

    def same():
        for k, v in m.state_dict().items():
            assert torch.equal(v, before[k]), k

    def boom(*a, **k):
        raise RuntimeError("solver failed")
    with monkeypatch.context() as mp:                 # fails while c1's weights hold s W (folded in place)
        mp.setattr(gt, "minnorm_graph", boom)
        with pytest.raises(RuntimeError, match="solver failed"):
            minnorm_(m)
    same()
    real = gt._apply

    def corrupt(tm, factors, optimizer=None, journal=None):
        real(tm, factors, optimizer, journal)
        gt._scale_(m.bn2.running_mean, [torch.tensor(2.0, dtype=torch.float64)], None, "bn2", journal=journal)
    monkeypatch.setattr(gt, "_apply", corrupt)
    with pytest.raises(GaugeError, match="weights were restored"):
        minnorm_(m)
    same()
