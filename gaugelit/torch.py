"""PyTorch models gauge-fixed in place: ``gaugelit.torch.minnorm_(model)`` and :class:`GaugeFix`.

The model is traced with ``torch.fx``; its gauge graph (:class:`~gaugelit.graph.GaugeGraph`) has one
group per set of channels that a linear or convolutional layer writes, with

- **free** channels: every consumer is positively homogeneous of degree one in them (linear and
  convolutional layers, ReLU, leaky ReLU, max/average pooling, flatten (also as
  ``x.view(x.size(0), -1)``), dropout, identity, concatenation, multiplication by a constant), so
  ``a`` out of one layer and ``1/a`` into the next leave the function unchanged;
- **tied** channels: an addition (a residual stream) joins its operands into one group (one factor);
- **fixed** channels (``a = 1``, reported with the reason): the inputs, whatever reaches an output,
  and whatever feeds an op that is not positively homogeneous (sigmoid, tanh, softmax, GELU, batch
  or layer normalisation, an added constant, ...).

A convolution's channel-level ``M`` sums ``|W|^p`` over its kernel; flatten maps a channel to its
block of columns in the next linear layer. An op this module does not know is an error naming the
node and the op, never a guess. This module is a leaf: nothing in the gaugelit core imports it.

Devices: one code path. Each weight reaches the solver as a zero-copy DLPack view in the array
namespace of its device (``numpy.from_dlpack`` for CPU tensors, ``cupy.from_dlpack`` for CUDA
tensors), the factors come back with ``torch.from_dlpack``, and weights, biases and optimizer state
are rescaled by in-place torch ops on their own device; only the namespace differs. float32 and
float64 are solved in their own precision; float16 and bfloat16 are refused (GaugeError naming the
parameter). Tested on the CPU by tests/test_torch.py (views share the parameters' memory, data
pointers unchanged, strided weights, dtypes); on CUDA by tests/test_torch_cuda.py, which runs only
where torch sees a GPU and CuPy imports (the device run, bench/device_run.sh) -- not yet run: no GPU
has been lent to the sessions that wrote this.
"""
from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .core.graph import GaugeGraph
from .solvers import GraphMinNormResult, minnorm_graph

__all__ = ["minnorm_", "gauge_graph", "fold_batchnorm_", "GaugeFix", "GaugeError", "UnsupportedOp"]


class GaugeError(ValueError):
    """The model cannot be gauge-fixed as it is (untraceable, shared weights, a changed function)."""


class UnsupportedOp(GaugeError):
    """An op whose homogeneity gaugelit does not know."""


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PASS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                 nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                 nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_FIXING_MODULES = (nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax, nn.GELU, nn.SiLU, nn.ELU, nn.SELU,
                   nn.Softplus, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Mish, nn.BatchNorm1d,
                   nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
                   nn.InstanceNorm2d, nn.InstanceNorm3d)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.leaky_relu, F.max_pool1d, F.max_pool2d, F.max_pool3d,
                   F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                   F.adaptive_avg_pool3d, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}
_FIXING_FUNCTIONS = {torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.softmax, F.log_softmax,
                     torch.softmax, torch.log_softmax, F.gelu, F.silu, F.elu, F.softplus, F.relu6,
                     F.hardtanh, F.batch_norm, F.layer_norm, F.group_norm, torch.exp, torch.log}
_PASS_METHODS = {"relu", "relu_"}
_FIXING_METHODS = {"sigmoid", "tanh", "softmax", "log_softmax", "exp", "log"}


@dataclass
class _Val:
    """A traced tensor: its channels as segments of groups, and its layout."""
    segs: list                    # [(group id, channels or None)]
    kind: str                     # "vector" (N, C), "spatial" (N, C, ...), "flat" (N, C*S), "any"


class _Shape:
    """``x.size()``, ``x.shape`` or an entry of them: only ever used to flatten (view/reshape)."""


@dataclass
class _Layer:
    name: str
    module: nn.Module
    src: _Val
    dst: int                      # group id (before union)
    flat: bool = False


@dataclass
class _Plan:
    """The traced model: its layers, the groups with their ties, fixed reasons and names."""
    layers: list
    parent: list
    size: list
    reason: list
    names: list = field(default_factory=list)

    def root(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        try:
            self.gm = torch.fx.symbolic_trace(model)
        except Exception as e:  # fx raises several types (TraceError, TypeError, NotImplementedError, ...)
            raise GaugeError(f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: {e}. "
                             "gaugelit.torch needs a model without data-dependent control flow") from e
        self.modules = dict(self.gm.named_modules())
        self.parent, self.size, self.reason, self.names = [], [], [], []
        self.layers, self.used = [], set()

    def new_group(self, size, name, reason=None):
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.reason.append(reason)
        self.names.append([name])
        return len(self.parent) - 1

    def root(self, g):
        while self.parent[g] != g:
            g = self.parent[g]
        return g

    def fix(self, val: _Val, reason):
        for g, _ in val.segs:
            r = self.root(g)
            if self.reason[r] is None:
                self.reason[r] = reason

    def tie(self, a: _Val, b: _Val, where):
        if len(a.segs) != len(b.segs):
            raise UnsupportedOp(f"{where}: adds tensors whose channels come from different concatenations")
        for (ga, _), (gb, _) in zip(a.segs, b.segs):
            ra, rb = self.root(ga), self.root(gb)
            if ra == rb:
                continue
            sa, sb = self.size[ra], self.size[rb]
            if sa is not None and sb is not None and sa != sb:
                raise GaugeError(f"{where}: adds {sa} channels to {sb} channels")
            self.parent[rb] = ra
            self.size[ra] = sa if sa is not None else sb
            self.reason[ra] = self.reason[ra] or self.reason[rb]
            self.names[ra] += self.names[rb]
        return a

    def fixed_output(self, node, what):
        return _Val([(self.new_group(None, f"output of {what}", reason=f"output of {what}"), None)], "any")

    def run(self) -> _Plan:
        env = {}
        for node in self.gm.graph.nodes:
            where = f"node {node.name!r} ({node.op} {node.target!r})"
            args = [_lookup(a, env) for a in node.args]
            if node.op == "placeholder":
                env[node.name] = _Val([(self.new_group(None, f"input {node.name}",
                                                       reason="network input"), None)], "any")
            elif node.op == "output":
                for v in _flatten_vals(node.args):
                    self.fix(env[v.name], "network output")
            elif node.op == "get_attr":
                raise UnsupportedOp(f"{where}: a tensor attribute used directly; gaugelit.torch rescales "
                                    "only nn.Linear / nn.Conv weights")
            elif node.op == "call_module":
                env[node.name] = self.module(node, self.modules[node.target], args, where)
            elif node.op == "call_function":
                env[node.name] = self.function(node, args, where)
            elif node.op == "call_method":
                env[node.name] = self.method(node, args, where)
            else:
                raise UnsupportedOp(f"{where}: unknown fx op")
        return _Plan(self.layers, self.parent, self.size, self.reason, self.names)

    def module(self, node, mod, args, where):
        name = node.target
        if isinstance(mod, _LAYERS):
            if id(mod) in self.used:
                raise GaugeError(f"module {name!r} ({type(mod).__name__}) is called twice: shared weights "
                                 "cannot be rescaled per call")
            self.used.add(id(mod))
            (x,) = args
            conv = not isinstance(mod, nn.Linear)
            if conv and mod.groups != 1:
                raise UnsupportedOp(f"module {name!r}: grouped convolution (groups={mod.groups}) is not "
                                    "supported")
            if conv and x.kind in ("vector", "flat"):
                raise UnsupportedOp(f"module {name!r}: convolution of a flattened tensor")
            if not conv and x.kind == "spatial":
                raise UnsupportedOp(f"module {name!r}: nn.Linear applied to a feature map acts on its last "
                                    "axis, not on channels; flatten first")
            n_in = mod.in_channels if conv else mod.in_features
            if len(x.segs) == 1 and x.segs[0][1] is None:
                g = self.root(x.segs[0][0])
                if self.size[g] is None:                             # an input: its size comes from here
                    self.size[g] = n_in
                elif self.size[g] != n_in and x.kind != "flat":
                    if self.reason[g] != "network input":
                        raise GaugeError(f"module {name!r}: expects {n_in} input channels, gets {self.size[g]}")
                    g = self.new_group(n_in, f"input of {name}", reason="network input")   # read differently
                x = _Val([(g, None)], x.kind)
            x = _Val([(g, self.size[self.root(g)] if n is None else n) for g, n in x.segs], x.kind)
            if any(n is None for _, n in x.segs):
                raise GaugeError(f"module {name!r}: cannot tell how many channels each part of its "
                                 "concatenated input has")
            out = self.new_group(mod.out_channels if conv else mod.out_features, name)
            self.layers.append(_Layer(name, mod, x, out, flat=(x.kind == "flat")))
            return _Val([(out, None)], "spatial" if conv else "vector")
        if isinstance(mod, _PASS_MODULES):
            return args[0]
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise UnsupportedOp(f"module {name!r}: Flatten(start_dim={mod.start_dim}, end_dim="
                                    f"{mod.end_dim}); only start_dim=1, end_dim=-1 keeps channels whole")
            return _flat(args[0])
        if isinstance(mod, _FIXING_MODULES):
            what = f"{type(mod).__name__} {name!r}"
            self.fix(args[0], f"feeds {what}")
            return self.fixed_output(node, what)
        raise UnsupportedOp(f"module {name!r}: {type(mod).__name__} -- gaugelit does not know whether it is "
                            "positively homogeneous of degree one")

    def function(self, node, args, where):
        fn = node.target
        vals = [a for a in args if isinstance(a, _Val)]
        if fn is getattr and len(args) == 2 and args[1] == "shape" and isinstance(args[0], _Val):
            return _Shape()
        if fn is operator.getitem and isinstance(args[0], _Shape):
            return _Shape()
        if fn in _PASS_FUNCTIONS:
            return args[0]
        if fn in (torch.flatten,):
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                raise UnsupportedOp(f"{where}: flatten(start_dim={start}, end_dim={end}); only "
                                    "start_dim=1 keeps channels whole")
            return _flat(args[0])
        if fn in (operator.add, torch.add, operator.iadd):
            if len(vals) == 2 and not node.kwargs.get("alpha"):
                return self.tie(vals[0], vals[1], where)
            if len(vals) == 1:
                self.fix(vals[0], f"added to a constant at {node.name!r}")
                return self.fixed_output(node, f"constant addition {node.name!r}")
        if fn in (operator.mul, torch.mul, operator.truediv, torch.div) and len(args) == 2:
            a, b = args                                   # times a constant: linear, degree one
            if isinstance(a, _Val) and isinstance(b, (int, float)) and b != 0:
                return a
            if fn in (operator.mul, torch.mul) and isinstance(b, _Val) and isinstance(a, (int, float)) and a != 0:
                return b
        if fn is torch.cat:
            tensors = args[0]
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim", 0)
            if dim != 1:
                raise UnsupportedOp(f"{where}: torch.cat along dim {dim}; only channels (dim=1) are supported")
            vs = list(tensors)
            if not all(isinstance(v, _Val) for v in vs):
                raise UnsupportedOp(f"{where}: torch.cat of a constant")
            kinds = {v.kind for v in vs} - {"any"}
            if len(kinds) > 1:
                raise UnsupportedOp(f"{where}: torch.cat of tensors of different layouts {kinds}")
            return _Val([s for v in vs for s in v.segs], kinds.pop() if kinds else "any")
        if fn in _FIXING_FUNCTIONS:
            what = f"{getattr(fn, '__name__', fn)} at {node.name!r}"
            for v in vals:
                self.fix(v, f"feeds {what}")
            return self.fixed_output(node, what)
        raise UnsupportedOp(f"{where}: function {getattr(fn, '__name__', fn)!r} -- gaugelit does not know "
                            "whether it is positively homogeneous of degree one")

    def method(self, node, args, where):
        name, x = node.target, args[0]
        if name in _PASS_METHODS:
            return x
        if name == "size" and isinstance(x, _Val):
            return _Shape()
        if name in ("view", "reshape") and isinstance(x, _Val):
            shape = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
            if len(shape) == 2 and isinstance(shape[0], (_Shape, int)) and shape[1] == -1:
                return _flat(x)                        # x.view(x.size(0), -1): flatten from dim 1
            raise UnsupportedOp(f"{where}: .{name}{tuple('?' if isinstance(a, _Shape) else a for a in shape)}; "
                                "only x.view(x.size(0), -1) (a flatten from dim 1) keeps channels whole")
        if name == "flatten":
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1:
                raise UnsupportedOp(f"{where}: x.flatten({start}); only start_dim=1 keeps channels whole")
            return _flat(x)
        if name in _FIXING_METHODS:
            self.fix(x, f"feeds .{name}() at {node.name!r}")
            return self.fixed_output(node, f".{name}() at {node.name!r}")
        raise UnsupportedOp(f"{where}: method .{name}() -- gaugelit does not know whether it is positively "
                            "homogeneous of degree one")


def _lookup(a, env):
    if isinstance(a, torch.fx.Node):
        return env[a.name]
    if isinstance(a, (tuple, list)):
        return type(a)(_lookup(x, env) for x in a)
    return a


def _flatten_vals(args):
    for a in args:
        if isinstance(a, torch.fx.Node):
            yield a
        elif isinstance(a, (tuple, list)):
            yield from _flatten_vals(a)
        elif isinstance(a, dict):
            yield from _flatten_vals(list(a.values()))


def _flat(x: _Val) -> _Val:
    return _Val(x.segs, "flat" if x.kind in ("spatial", "any") else x.kind)


# -- arrays: NumPy views of CPU tensors, CuPy views of CUDA tensors (the same code) ---------------------
def _array_namespace(device: torch.device, where: str):
    """The array module that views tensors on ``device``: NumPy for the CPU, CuPy for CUDA."""
    if device.type == "cpu":
        return np
    if device.type == "cuda":
        try:
            import cupy
        except ImportError as e:
            raise GaugeError(f"{where}: tensors on {device} are solved with CuPy, which does not import "
                             f"({e}); install the CuPy build of torch's CUDA (cupy-cuda12x or cupy-cuda13x), "
                             "or move the model to the CPU") from e
        return cupy
    raise GaugeError(f"{where}: tensors on {device} are not supported (CPU through NumPy, CUDA through CuPy)")


def _on_device(device: torch.device):
    """Make ``device``'s GPU CuPy's current device (CuPy allocates there and refuses arrays of
    another GPU); nothing on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    import cupy
    return cupy.cuda.Device(device.index if device.index is not None else torch.cuda.current_device())


@contextlib.contextmanager
def _full_float32():
    """TF32 off while the function check runs: CUDA convolutions and matmuls in TF32 round float32
    inputs to 10 mantissa bits (about 1e-3), which a rescaling changes, so the check would compare
    rounding, not functions. No effect on the CPU; the flags are restored."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def _as_array(t: torch.Tensor, where: str):
    """A zero-copy view of ``t`` in its device's array namespace (DLPack keeps the strides)."""
    return _array_namespace(t.device, where).from_dlpack(t.detach())


def _as_tensor(a, like: torch.Tensor, where: str) -> torch.Tensor:
    """Solver factors ``a`` (NumPy or CuPy) as a tensor, zero-copy; they must already be on ``like``'s
    device in its dtype -- a host-device copy here would mean the solver ran on the wrong device."""
    t = torch.from_dlpack(a)
    if t.device != like.device or t.dtype != like.dtype:
        raise GaugeError(f"{where}: the solver's factors are {t.dtype} on {t.device}, the parameter "
                         f"{like.dtype} on {like.device} (a bug in gaugelit.torch: please report it)")
    return t


class _Model:
    """A traced model's plan and the way from solver factors back to its parameters."""

    def __init__(self, model: nn.Module):
        self.model = model
        plan = _Tracer(model).run()
        roots = {}
        for g in range(len(plan.parent)):
            roots.setdefault(plan.root(g), []).append(g)
        self.plan = plan
        used = []
        for layer in plan.layers:
            used.append(plan.root(layer.dst))
            used += [plan.root(g) for g, _ in layer.src.segs]
        self.group_of = {}                                  # plan root -> graph group id
        self.order = list(dict.fromkeys(used))
        if not plan.layers:
            raise GaugeError(f"{type(model).__name__} has no nn.Linear or nn.Conv layer to rescale")

    def params(self):
        """``[(name, tensor)]``: every layer's weight and bias, named as in ``model.state_dict()``."""
        return [(f"{layer.name}.{kind}", t) for layer in self.plan.layers
                for kind, t in (("weight", layer.module.weight), ("bias", layer.module.bias)) if t is not None]

    def device(self) -> torch.device:
        """The one device and dtype of all rescaled parameters, checked; returns the device."""
        params = self.params()
        first, t0 = params[0]
        for name, t in params:
            if t.dtype not in (torch.float32, torch.float64):
                raise GaugeError(f"parameter {name!r}: dtype {t.dtype} is not supported; the gauge is "
                                 "solved in float32 or float64 (NumPy has no bfloat16, and float16's range "
                                 "is too narrow for the factors): convert the model with .float() or .double()")
            if t.dtype != t0.dtype:
                raise GaugeError(f"parameters {first!r} ({t0.dtype}) and {name!r} ({t.dtype}) differ in "
                                 "dtype; convert the model to one with .float() or .double()")
            if t.device != t0.device:
                raise GaugeError(f"parameters {first!r} (on {t0.device}) and {name!r} (on {t.device}) lie on "
                                 "different devices; move the model to one with .to(device)")
        _array_namespace(t0.device, f"parameter {first!r}")
        return t0.device

    def graph(self) -> GaugeGraph:
        """The gauge graph, its blocks zero-copy views of the weights; call it under
        ``_on_device(self.device())`` (which also checks the parameters' dtypes and devices)."""
        plan, g = self.plan, GaugeGraph()
        self.group_of = {}
        for r in self.order:
            names = ", ".join(dict.fromkeys(plan.names[r]))
            label = f"tied [{names}]" if len(plan.names[r]) > 1 else names
            self.group_of[r] = g.add_group(label, plan.size[r], free=plan.reason[r] is None,
                                           reason=plan.reason[r])
        for layer in plan.layers:
            A = _as_array(layer.module.weight, f"parameter '{layer.name}.weight'")
            n_out = A.shape[0]
            C = sum(n for _, n in layer.src.segs)
            if layer.flat:
                if A.shape[1] % C:
                    raise GaugeError(f"module {layer.name!r}: {A.shape[1]} input features are not a "
                                     f"whole number of positions for {C} flattened channels")
                A = A.reshape(n_out, C, A.shape[1] // C)
            else:
                if A.shape[1] != C:
                    raise GaugeError(f"module {layer.name!r}: {A.shape[1]} input channels, but its input "
                                     f"has {C}")
                A = A.reshape(n_out, C, -1)
            off, dst = 0, self.group_of[plan.root(layer.dst)]
            for gid, n in layer.src.segs:
                g.add_block(self.group_of[plan.root(gid)], dst, A[:, off:off + n], name=layer.name)
                off += n
        return g

    def layer_factors(self, factors):
        """Per layer: (row factors a_out, column factors a_in per input column), as tensors."""
        plan, out = self.plan, []
        for layer in self.plan.layers:
            W, where = layer.module.weight, f"parameter '{layer.name}.weight'"
            row = _as_tensor(factors[self.group_of[plan.root(layer.dst)]], W, where)
            col = torch.cat([_as_tensor(factors[self.group_of[plan.root(g)]], W, where)
                             for g, _ in layer.src.segs])
            if layer.flat:
                col = col.repeat_interleave(W.shape[1] // col.numel())
            shape = (1, -1) + (1,) * (W.dim() - 2)
            out.append((row.view((-1,) + (1,) * (W.dim() - 1)), col.view(shape)))
        return out


_GRAD_LIKE = {"momentum_buffer", "exp_avg"}          # scale like the gradient: 1 / (a_i / a_j)
_SQUARED = {"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg"}   # like the gradient squared


@torch.no_grad()
def _apply(tm: _Model, factors, optimizer=None):
    for layer, (row, col) in zip(tm.plan.layers, tm.layer_factors(factors)):
        W, b = layer.module.weight, layer.module.bias
        W.mul_(row).div_(col)
        if b is not None:
            b.mul_(row.view(-1))
        if optimizer is None:
            continue
        for param, r, c in ((W, row, col), (b, row.view(-1), None)):
            if param is None:
                continue
            for key, s in optimizer.state.get(param, {}).items():
                if not torch.is_tensor(s) or s.shape != param.shape:
                    continue                                  # e.g. Adam's step counter
                if key in _GRAD_LIKE:
                    s.div_(r)
                    if c is not None:
                        s.mul_(c)
                elif key in _SQUARED:
                    s.div_(r * r)
                    if c is not None:
                        s.mul_(c * c)
                else:
                    raise GaugeError(f"optimizer state {key!r} of module {layer.name!r}: gaugelit does "
                                     "not know how it transforms under a rescaling")


def _max_rel_change(a, b):
    if torch.is_tensor(a):
        scale = float(a.abs().max()) if a.numel() else 0.0
        return float((a - b).abs().max()) / scale if scale > 0 else float((a - b).abs().max())
    if isinstance(a, (tuple, list)):
        return max((_max_rel_change(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, dict):
        return max((_max_rel_change(a[k], b[k]) for k in a), default=0.0)
    return 0.0


def _tolerance(dtype) -> float:
    # float64: 1e-10 relative (the rescaling rounds each weight twice, ~1e-16 each). float32: each
    # weight is rounded twice (2 ulp = 1.2e-7) and the forward pass itself reassociates; 1e-4 of the
    # largest output is ~800 ulp, far above what a correct rescaling gives (~1e-6 in the tests) and
    # far below a wrong one (a unit rescaled without compensation changes outputs by O(1)).
    return 1e-10 if dtype == torch.float64 else 1e-4


@torch.no_grad()
def fold_batchnorm_(model: nn.Module) -> list:
    """Fold every eval-mode batch normalisation that directly follows a linear or convolutional layer
    (and is that layer's only reader) into it, in place, and replace it by ``nn.Identity``.

    In eval mode ``BN(z) = g (z - mu) / sqrt(var + eps) + beta`` is affine per channel, so
    ``W' = s W``, ``b' = s (b - mu) + beta`` with ``s = g / sqrt(var + eps)`` computes the same
    function, and the layer's channels become free. A layer without a bias gets one (create the
    optimizer after folding). Returns the names of the folded normalisations.
    """
    gm = _Tracer(model).gm
    modules = dict(model.named_modules())
    folded = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), (nn.BatchNorm1d, nn.BatchNorm2d,
                                                                                   nn.BatchNorm3d)):
            continue
        bn, prev = modules[node.target], node.args[0]
        if bn.training:
            raise GaugeError(f"module {node.target!r}: batch normalisation in training mode cannot be folded "
                             "(its statistics depend on the batch); call model.eval() first")
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module"
                and isinstance(modules.get(prev.target), _LAYERS) and len(prev.users) == 1):
            continue                                # not directly after a layer: its inputs stay fixed
        if bn.running_mean is None:
            raise GaugeError(f"module {node.target!r}: no running statistics to fold")
        layer = modules[prev.target]
        s = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        layer.weight.mul_(s.view((-1,) + (1,) * (layer.weight.dim() - 1)))
        b = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        new_b = s * (b - bn.running_mean) + shift
        if layer.bias is None:
            layer.bias = nn.Parameter(new_b.to(layer.weight.dtype))
        else:
            layer.bias.copy_(new_b)
        parent_name, _, child = node.target.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, nn.Identity())
        folded.append(node.target)
    return folded


def gauge_graph(model: nn.Module) -> GaugeGraph:
    """The gauge graph of ``model`` (groups named by their layers; fixed groups with the reason)."""
    tm = _Model(model)
    with _on_device(tm.device()):
        return tm.graph()


def minnorm_(model: nn.Module, p: float = 2.0, *, q: float | None = None, method: str | None = None,
             delta: float = 1e-3, gamma_tol: float | None = None, max_iter: int = 10_000, example_input=None,
             fold_batchnorm: bool = False, _traced: _Model | None = None, _optimizer=None) -> GraphMinNormResult:
    """Rescale ``model``'s weights and biases in place to the minimum of ``sum |W|^p`` over its gauge.

    Arguments as :func:`gaugelit.minnorm` (``q``: the l_{p,q} norm's outer exponent).
    Returns its result with ``.net = model``, ``.factors`` and
    ``.dead_units`` per group of ``.graph``, and ``.fixed_units``: ``(group, channels, reason)``.
    The model's parameters must share one device and dtype (float32 or float64); the solver runs
    there, so ``.factors`` are NumPy arrays for a CPU model and CuPy arrays for a CUDA model, and the
    blocks of ``.graph`` are views of the weights (they show the rescaled weights afterwards).
    With ``example_input`` the outputs before and after are compared (relative 1e-10 in float64,
    1e-4 in float32); if they differ, the weights are restored and :class:`GaugeError` is raised.
    ``fold_batchnorm=True`` first folds eval-mode batch normalisations into the layers before them
    (:func:`fold_batchnorm_`); otherwise their inputs are fixed units.
    """
    if fold_batchnorm:
        fold_batchnorm_(model)
    tm = _traced or _Model(model)
    with _on_device(tm.device()):                  # the solver's arrays on the parameters' device
        graph = tm.graph()
        res = minnorm_graph(graph, p, q, method=method, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter)
    before = saved = None
    if example_input is not None:
        was_training = model.training
        model.eval()
        with torch.no_grad(), _full_float32():
            before = model(example_input)
        saved = [(l.module.weight.detach().clone(), None if l.module.bias is None else l.module.bias.detach().clone())
                 for l in tm.plan.layers]
    _apply(tm, res.factors, _optimizer)
    if example_input is not None:
        with torch.no_grad(), _full_float32():
            after = model(example_input)
        model.train(was_training)
        err, tol = _max_rel_change(before, after), _tolerance(tm.plan.layers[0].module.weight.dtype)
        if not err <= tol:
            with torch.no_grad():
                for l, (W, b) in zip(tm.plan.layers, saved):
                    l.module.weight.copy_(W)
                    if b is not None:
                        l.module.bias.copy_(b)
            raise GaugeError(f"the rescaled model's output differs by {err:.3g} (relative) > {tol:g}; "
                             "its weights were restored")
        res.output_change = err
    res.net = model
    return res


class GaugeFix:
    """Keep a model in its minimum-norm gauge during training: call it after ``optimizer.step()``.

    The model is traced once; each call solves from the current weights (close to balanced after the
    previous call, so few sweeps), rescales weights and biases in place and, with ``optimizer``,
    transforms its state like the gradients: momentum buffers and Adam's first moments by
    ``a_j / a_i``, second moments by its square, so the next step sees a consistent state.
    """

    def __init__(self, model: nn.Module, p: float = 2.0, optimizer=None, **solver_kw):
        self.model, self.p, self.optimizer, self.kw = model, p, optimizer, solver_kw
        self._traced = _Model(model)
        self.last = None

    def __call__(self) -> GraphMinNormResult:
        self.last = minnorm_(self.model, self.p, _traced=self._traced, _optimizer=self.optimizer, **self.kw)
        return self.last
