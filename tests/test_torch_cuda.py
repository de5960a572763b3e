"""gaugelit.torch on CUDA: the device half of its one code path (the CPU half: tests/test_torch.py).

A CUDA model's weights reach the solver as CuPy views (``cupy.from_dlpack``), the solver runs on the
GPU, and its factors come back through ``torch.from_dlpack``; nothing may go through the host. These
tests check that against the CPU: the same factors, objective and rescaled weights (float64: 1e-10
relative; float32: 1e-5, see ``TOL``), the function unchanged, the parameters still on the device with
the same data pointers, strided weights, and GaugeFix with SGD momentum and Adam for a few steps.

They run only where torch sees a GPU and CuPy imports -- the device run's step ``torch_cuda``
(bench/device_run.sh) -- and are skipped, saying why, everywhere else.
``GAUGELIT_TORCH_TEST_DEVICE=cpu`` runs the same checks with the CPU in the GPU's place (NumPy
against NumPy), which tests this file's own logic where no GPU is.
"""
import copy
import os
import warnings

import numpy as np
import pytest

try:
    import torch
except (ImportError, OSError) as e:   # not installed, or a build whose libraries do not load
    pytest.skip(f"needs torch with CUDA and CuPy: torch does not import ({e})", allow_module_level=True)
nn = torch.nn

import gaugelit.torch as gt  # noqa: E402
from gaugelit.core.backend import to_numpy  # noqa: E402
from gaugelit.solvers import ConvergenceWarning  # noqa: E402
from gaugelit.torch import GaugeError, GaugeFix, gauge_graph, minnorm_  # noqa: E402
from torch_models import CNN, Res, mlp  # noqa: E402  (tests/test_torch.py's models)

DEVICE = os.environ.get("GAUGELIT_TORCH_TEST_DEVICE", "cuda")


def _why_not():
    if DEVICE == "cpu":
        return None
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    try:
        import cupy
    except ImportError as e:
        return f"CuPy does not import ({e})"
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # a CUDA runtime error where CuPy's CUDA does not match the driver
        return f"CuPy sees no CUDA device ({type(e).__name__}: {e})"
    return None


WHY = _why_not()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"needs torch with CUDA and CuPy: {WHY}")

# float64: the 1e-10 relative (roundoff alone gives ~1e-14). float32: CPU float32 agrees with
# CPU float64 to 1.4e-7 relative on these models (factors, objective and weights after 10 and 40
# sweeps, measured when this was written), so a correct GPU float32 result, which only sums in
# another order, lies within ~3e-7 of the CPU's; 1e-5 (~170 ulp) leaves room, and a wrong result (a
# unit rescaled without compensation, a group missed) is off by O(1).
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
FIXED = dict(method="block", delta=1e-300, max_iter=40)     # 40 sweeps on both devices (or until a step is 0)


@pytest.fixture
def xp():
    if DEVICE == "cpu":
        return np
    import cupy
    return cupy


@pytest.fixture
def exact_float32():
    """Plain float32 arithmetic in the forward passes (torch lets cuDNN convolutions use TF32 by
    default, which would blur a float32 comparison by ~1e-3)."""
    with gt._full_float32():
        yield


MODELS = {"mlp": (lambda: mlp(seed=None), (6,)), "cnn": (CNN, (1, 10, 10)), "res": (Res, (5,))}


def pair(name, dtype, seed=11):
    """The model on the CPU and an exact copy on the device, and an input for each."""
    make, shape = MODELS[name]
    torch.manual_seed(seed)
    cpu = make().to(dtype)
    x = torch.randn((4,) + shape, dtype=dtype)
    return cpu, copy.deepcopy(cpu).to(DEVICE), x, x.to(DEVICE)


def ptrs(model):
    return {k: (p.data_ptr(), p.stride(), str(p.device)) for k, p in model.named_parameters()}


def on_device(model):
    return all(p.device.type == DEVICE for p in model.parameters())


def host(y):
    return tuple(t.cpu() for t in y) if isinstance(y, tuple) else y.cpu()


def address(a):
    """Where an array's first element lies (CuPy: device memory; NumPy: host memory)."""
    return a.data.ptr if hasattr(a.data, "ptr") else a.__array_interface__["data"][0]


@pytest.mark.filterwarnings("ignore::gaugelit.solvers.ConvergenceWarning")    # FIXED stops by count
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(MODELS))
def test_minnorm_on_device_equals_cpu(name, dtype, xp, exact_float32):
    cpu, dev, x, xd = pair(name, dtype)
    before = ptrs(dev)
    r0 = minnorm_(cpu, 2.0, example_input=x, **FIXED)
    r = minnorm_(dev, 2.0, example_input=xd, **FIXED)
    tol = TOL[dtype]
    # the solver ran on the device: a CuPy graph and CuPy factors, nothing through the host
    assert r.graph.xp is xp and r.net is dev
    assert all(type(a) is xp.ndarray and a.dtype == a0.dtype for a, a0 in zip(r.factors, r0.factors))
    for grp, a, a0 in zip(r.graph.groups, r.factors, r0.factors):
        np.testing.assert_allclose(to_numpy(a), a0, rtol=tol, atol=0, err_msg=grp.name)
    np.testing.assert_allclose(r.objective[-1], r0.objective[-1], rtol=tol)
    assert r.objective[-1] < r.objective[0]
    # rescaled in place: the same tensors, on the device, equal to the CPU's rescaled weights
    assert ptrs(dev) == before and on_device(dev)
    for (k, p), (_, p0) in zip(dev.named_parameters(), cpu.named_parameters()):
        p0 = p0.detach()
        torch.testing.assert_close(p.detach().cpu(), p0, rtol=tol, atol=tol * float(p0.abs().max()), msg=k)
    # the function is unchanged (minnorm_ checked it on the device) and equals the CPU's
    assert r.output_change <= gt._tolerance(dtype)
    with torch.no_grad():
        assert gt._max_rel_change(host(dev(xd)), cpu(x)) <= tol


@pytest.mark.parametrize("name", list(MODELS))
def test_converges_on_device(name, exact_float32):
    for dtype, gamma_tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        _, dev, _, xd = pair(name, dtype, seed=12)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            r = minnorm_(dev, 2.0, gamma_tol=gamma_tol, example_input=xd)
        assert r.converged and r.gamma[-1] < gamma_tol and r.output_change <= gt._tolerance(dtype)


@pytest.mark.parametrize("name", list(MODELS))
def test_graph_blocks_are_views_of_the_weights(name, xp):
    _, dev, _, _ = pair(name, torch.float64)
    g = gauge_graph(dev)
    params = dict(dev.named_parameters())
    assert g.xp is xp and g.blocks
    for b in g.blocks:
        W = params[f"{b.name}.weight"]
        assert type(b.weight) is xp.ndarray
        if W.dim() == 2 and b.weight.shape[1] == W.shape[1]:   # a linear layer's block: a view (a
            assert address(b.weight) == W.data_ptr()           # kernel's: its p-norms, on the device)
        if xp is not np:
            assert b.weight.device.id == W.device.index


@pytest.mark.parametrize("how", ["transposed", "channels_last"])
def test_strided_weights_on_device(how):
    """DLPack hands CuPy the strides; the rescaled values must land on the right entries."""
    name = "mlp" if how == "transposed" else "cnn"
    _, dev, _, xd = pair(name, torch.float64, seed=13)
    strided = copy.deepcopy(dev)
    if how == "transposed":
        for mod in strided.modules():
            if isinstance(mod, nn.Linear):
                mod.weight = nn.Parameter(mod.weight.detach().t().contiguous().t())
    else:
        strided = strided.to(memory_format=torch.channels_last)
    assert any(not p.is_contiguous() for p in strided.parameters())
    before = ptrs(strided)
    r0 = minnorm_(dev, 2.0, gamma_tol=1e-10, example_input=xd)
    r = minnorm_(strided, 2.0, gamma_tol=1e-10, example_input=xd)
    assert ptrs(strided) == before and r.iterations == r0.iterations
    for (k, p0), (_, p) in zip(dev.named_parameters(), strided.named_parameters()):
        torch.testing.assert_close(p, p0, rtol=1e-12, atol=0, msg=k)


@pytest.mark.filterwarnings("ignore::gaugelit.solvers.ConvergenceWarning")
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_gaugefix_trains_on_device_like_on_cpu(opt_name):
    """Three steps of SGD with momentum or Adam, each followed by GaugeFix: the function unchanged by
    each fix, the optimizer state transformed (param * m and param^2 * v invariant), everything on
    the device in the same tensors, and the weights equal to the same steps on the CPU."""
    cpu, dev, x, xd = pair("mlp", torch.float64, seed=14)
    y = torch.randn(4, 3, dtype=torch.float64)
    yd = y.to(DEVICE)

    def make(m):
        opt = (torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9) if opt_name == "sgd"
               else torch.optim.Adam(m.parameters(), lr=1e-3))
        return opt, GaugeFix(m, 2.0, opt, **FIXED)
    (opt0, fix0), (opt, fix) = make(cpu), make(dev)
    keys = ("momentum_buffer",) if opt_name == "sgd" else ("exp_avg", "exp_avg_sq")
    before = ptrs(dev)
    for _ in range(3):
        for m, o, f, xx, yy in ((cpu, opt0, fix0, x, y), (dev, opt, fix, xd, yd)):
            o.zero_grad()
            nn.functional.mse_loss(m(xx), yy).backward()
            o.step()
            inv = {(id(p), k): (p.detach().clone(), o.state[p][k].clone()) for p in m.parameters() for k in keys}
            with torch.no_grad():
                out0 = m(xx)
                f()
                assert gt._max_rel_change(out0, m(xx)) <= 1e-10
            for p in m.parameters():
                for k in keys:
                    p0, s0 = inv[(id(p), k)]
                    power = 2 if k == "exp_avg_sq" else 1
                    assert o.state[p][k].device == p.device
                    torch.testing.assert_close(p.detach() ** power * o.state[p][k], p0 ** power * s0,
                                               rtol=1e-9, atol=1e-15)
        assert type(fix.last.factors[0]) is type(fix.last.graph.blocks[0].weight)
    assert ptrs(dev) == before and on_device(dev)
    for (k, p), (_, p0) in zip(dev.named_parameters(), cpu.named_parameters()):
        torch.testing.assert_close(p.detach().cpu(), p0.detach(), rtol=1e-8, atol=1e-12, msg=k)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_refused_on_device(dtype):
    _, dev, _, _ = pair("mlp", torch.float64)
    dev = dev.to(dtype)
    before = {k: v.clone() for k, v in dev.state_dict().items()}
    with pytest.raises(GaugeError, match=rf"parameter '0.weight': dtype {dtype} is not supported"):
        minnorm_(dev)
    assert all(torch.equal(v, before[k]) for k, v in dev.state_dict().items())


@pytest.mark.skipif(DEVICE == "cpu", reason="TF32 is a GPU matter")
def test_float32_check_runs_without_tf32_and_restores_the_flags():
    """torch lets cuDNN convolutions use TF32 by default (10-bit mantissa), so a float32 CNN's output
    moves by ~1e-3 when its weights are rescaled, more than minnorm_'s float32 tolerance (1e-4).
    minnorm_ runs its function check in plain float32 (gaugelit.torch._full_float32), so the check
    passes, and the user's TF32 settings are as they were afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        _, dev, _, xd = pair("cnn", torch.float32, seed=15)
        r = minnorm_(dev, 2.0, gamma_tol=1e-5, example_input=xd)
        assert r.output_change <= gt._tolerance(torch.float32)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.skipif(DEVICE == "cpu" or WHY is not None or torch.cuda.device_count() < 2,
                    reason="needs a second GPU")
def test_model_on_second_gpu_is_solved_there():
    _, dev, _, xd = pair("mlp", torch.float64)
    dev, xd = dev.to("cuda:1"), xd.to("cuda:1")
    r = minnorm_(dev, 2.0, gamma_tol=1e-10, example_input=xd)
    assert all(a.device.id == 1 for a in r.factors)
    assert all(p.device == torch.device("cuda", 1) for p in dev.parameters())
