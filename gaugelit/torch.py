"""PyTorch models gauge-fixed in place: ``gaugelit.torch.minnorm_(model)`` and :class:`GaugeFix`.

The model is traced with ``torch.fx`` and its shapes propagated (``torch.fx.passes.shape_prop``, on
``example_input`` or on an input made from the first layer's sizes); its gauge graph
(:class:`~gaugelit.graph.GaugeGraph`) has one group per set of channels that a linear or
convolutional layer writes, with

- **free** channels: every consumer is positively homogeneous of degree one in them (linear,
  convolutional -- also grouped, depthwise and transposed -- layers, ReLU, leaky ReLU, PReLU,
  max/average pooling over axes that are not the channel axis, zero padding, means and sums over
  spatial axes, flatten (also as ``x.view(x.size(0), -1)``), dropout, identity, concatenation along
  the channel axis, multiplication by a constant, a channel shuffle -- a view splitting the channel
  axis, a transpose of its parts, a view merging them back: a permutation of channels computed from
  the propagated shapes -- and ``chunk``, ``split`` and slices of the channel axis: selections of
  channels, each layer then reading the pieces of a group that it reads), so ``a`` out of one layer
  and ``1/a`` into the next leave the function unchanged; an eval-mode batch norm right after a
  layer that only it reads is folded-equivalent (the block is ``s W``; the factor goes into its
  gamma and beta), anywhere else (after a ReLU, a pool, a concatenation) it passes its input's
  factors through (its running mean and beta carry them); a weight-normalised layer is rescaled
  through ``g`` and ``v``;
- **tied** channels: an addition (a residual stream) joins its operands into one group (one factor);
- **fixed** channels (``a = 1``, reported with the reason): the inputs, whatever reaches an output,
  and whatever feeds an op that is not positively homogeneous (sigmoid, tanh, softmax, GELU, ReLU6,
  batch norm in training mode or without running statistics, layer normalisation, an added
  constant, ...).

A convolution's channel-level ``M`` sums ``|W|^p`` over its kernel; flatten maps a channel to its
block of columns in the next linear layer (per part of a concatenation). An op, a layout, a shared
parameter, a parametrisation or a hook that the trace cannot prove exact is an error naming the node
or parameter, never a guess, and leaves the model as it was. By default the outputs are also
compared on the traced input. This module is a leaf: nothing in the gaugelit core imports it.

Memory: no copy of the weights. Every in-place change (a batch-normed layer's weights folded to
``s W`` while the solver reads them, then the factors) is journaled and, on any failure, undone
bit for bit (:class:`_Journal`); a block with a kernel reaches the solver as its p-norms over the
kernel, formed a few rows at a time. What remains is the solver's ``M`` ((out, in) per block).

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
import io
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
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# elementwise and positively homogeneous of degree one: f(a z) = a f(z) for a > 0, entry by entry
# (PReLU too, whatever its slopes: max(0, az) + w min(0, az) = a (max(0, z) + w min(0, z)))
_ELEMENTWISE_MODULES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                        nn.Identity)
# pooling over the last k axes of its input: homogeneous per channel while the channel axis is not pooled
_POOL_MODULES = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2,
                 nn.AvgPool3d: 3, nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
                 nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3}
_FIXING_MODULES = (nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax, nn.GELU, nn.SiLU, nn.ELU, nn.SELU,
                   nn.Softplus, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.LayerNorm,
                   nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, F.leaky_relu, F.prelu, torch.prelu, F.dropout, F.dropout1d,
                          F.dropout2d, F.dropout3d}
_POOL_FUNCTIONS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2,
                   F.avg_pool3d: 3, F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
                   F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}
_FIXING_FUNCTIONS = {torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.softmax, F.log_softmax,
                     torch.softmax, torch.log_softmax, F.gelu, F.silu, F.elu, F.softplus, F.relu6,
                     F.hardtanh, F.hardswish, F.hardsigmoid, F.batch_norm, F.layer_norm, F.group_norm,
                     torch.exp, torch.log}
_ELEMENTWISE_METHODS = {"relu", "relu_", "contiguous"}
_FIXING_METHODS = {"sigmoid", "tanh", "softmax", "log_softmax", "exp", "log"}
_COMPARISONS = {operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, torch.eq,
                torch.ne, torch.lt, torch.le, torch.gt, torch.ge}


@dataclass
class _Val:
    """A traced tensor: its channels as segments ``(group id, channels, positions, start)`` -- the
    channels ``start, ..., start + channels - 1`` of the group, in order -- and its layout.

    ``kind``: "spatial" (N, C, ...) with channels on axis 1, "vector" (N, ..., C) with channels on
    the last axis (a linear layer's output), "flat" (N, C*S) channel-major after a flatten (each
    segment's channel has ``positions`` columns), "split" (N, c1, ..., cd, ...) a spatial tensor
    whose channel axis a view split into axes 1..d, ``cmap`` (shape (c1, ..., cd)) holding which
    channel of ``segs`` sits at each place, "any" (a network input, fixed). ``ndim`` comes from
    shape propagation."""
    segs: list
    kind: str
    ndim: int | None = None
    cmap: np.ndarray | None = None

    def chan_axis(self):
        if self.kind in ("any", "split") or self.ndim is None:
            return None
        return self.ndim - 1 if self.kind == "vector" else 1

    def roles(self):
        """What each axis is: "batch", "chan" (a channel axis), ("space", j) (the j-th spatial axis
        of the (N, C, S...) layout), or None (unknown)."""
        if self.ndim is None:
            return None
        if self.kind == "spatial":
            return ("batch", "chan") + tuple(("space", j) for j in range(self.ndim - 2))
        if self.kind == "split":
            d = self.cmap.ndim
            return ("batch",) + ("chan",) * d + tuple(("space", j) for j in range(self.ndim - 1 - d))
        if self.kind == "vector":
            return ("batch",) + (None,) * (self.ndim - 2) + ("chan",)
        return ("batch",) + (None,) * (self.ndim - 1)


@dataclass
class _Shape:
    """A value computed from shapes only (``x.size(0)``, ``x.shape[-1]``, ``h == 224``, ...); no
    tensor, so nothing to rescale. ``role``: what it is the size of -- "batch" (dim 0 of a tensor),
    "chan" (a channel axis, or an expression of channel sizes and constants), ("space", j), or None
    (unknown, or mixed). ``roles``: for a whole shape (``x.shape``, ``x.size()``), each axis's role."""
    role: object = None
    roles: tuple | None = None

    @property
    def batch(self):
        return self.role == "batch"


@dataclass
class _Parts:
    """The tuple of tensors ``chunk`` or ``split`` returns: one :class:`_Val` per part."""
    vals: list


@dataclass
class _Layer:
    name: str
    module: nn.Module
    src: _Val
    dst: int                      # group id (before union)
    flat: bool = False
    bn: nn.Module | None = None   # an eval-mode batch norm that reads only this layer: folded-equivalent
    bn_name: str = ""
    transposed: bool = False      # ConvTranspose: weight (in, out / groups, ...)


@dataclass
class _Plan:
    """The traced model: its layers, the groups with their ties, fixed reasons and names."""
    layers: list
    parent: list
    size: list
    reason: list
    names: list = field(default_factory=list)
    shifts: list = field(default_factory=list)   # (name, batch norm, input): eval BN not after a layer

    def root(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g


def _training_flags(model):
    return [(m, m.training) for m in model.modules()]


@contextlib.contextmanager
def _eval_fixed_rng(model, device):
    """Eval mode (no batch-norm statistics updated) and one fixed random state (MC dropout with
    ``training=True`` draws the same masks in both passes), the user's RNG untouched; the training
    flags of every module are restored as they were."""
    flags = _training_flags(model)
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), _full_float32():
            yield
    finally:
        for m, t in flags:
            m.training = t


_SIZES = (32, 28, 64, 16, 10, 8, 12, 24, 96, 128, 224, 299)


def _synthetic_input(gm, modules):
    """Inputs to try for shape propagation, from the first layer reading the (single) input:
    ``(2, in_features)`` for a linear layer, ``(2, C, S, ...)`` for a convolution, with S from
    ``_SIZES`` (the first size that runs is used)."""
    places = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(places) != 1:
        raise GaugeError(f"the model takes {len(places)} inputs; pass example_input= (a tuple) so that "
                         "shapes can be propagated")
    for node in gm.graph.nodes:
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, _LAYERS + (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            W = mod.weight
            kw = dict(dtype=W.dtype, device=W.device)
            gen = torch.Generator(device=W.device).manual_seed(0)
            if isinstance(mod, nn.Linear):
                return [torch.randn(2, mod.in_features, generator=gen, **kw)]
            k = W.dim() - 2
            return [torch.randn((2, mod.in_channels) + (s,) * k, generator=gen, **kw) for s in _SIZES]
    raise GaugeError("no nn.Linear or nn.Conv layer found to derive an input from; pass example_input=")


def _propagate(tracer, example_input):
    """torch.fx shape propagation: every node's output shape in ``node.meta['tensor_meta']``. Runs the
    model once (eval mode, fixed random state, no statistics updated); returns the input used."""
    from torch.fx.passes.shape_prop import ShapeProp
    gm = tracer.gm
    tries = [example_input] if example_input is not None else _synthetic_input(gm, tracer.modules)
    device = next((p.device for p in tracer.model.parameters()), torch.device("cpu"))
    err = None
    for x in tries:
        args = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        try:
            # ShapeProp prints each failure's traceback before raising: a size that does not fit
            # is expected here, so that print is swallowed (the last failure is reported below)
            with _eval_fixed_rng(tracer.model, device), contextlib.redirect_stderr(io.StringIO()):
                torch.manual_seed(0)
                ShapeProp(gm).propagate(*args)
            return x
        except Exception as e:       # any failure of the model itself on this input: try the next size
            err = e
    shapes = ", ".join(str(tuple(x.shape)) for x in tries if torch.is_tensor(x))
    cause = err.__cause__ or err
    msg = (str(cause).splitlines() or [""])[0]
    raise GaugeError(f"shape propagation failed on inputs of shape {shapes}: {type(cause).__name__}: {msg}; pass "
                     "example_input= (an input the model accepts)") from err


def _ndim(node):
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return len(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _shape(node):
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Tracer:
    def __init__(self, model: nn.Module, example_input=None, propagate=True):
        self.model = model
        try:
            self.gm = torch.fx.symbolic_trace(model)
        except Exception as e:  # fx raises several types (TraceError, TypeError, NotImplementedError, ...)
            raise GaugeError(f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: {e}. "
                             "gaugelit.torch needs a model without data-dependent control flow") from e
        self.modules = dict(self.gm.named_modules())
        self.parent, self.size, self.reason, self.names = [], [], [], []
        self.layers, self.used, self.layer_at, self.shifts = [], set(), {}, []
        self.input = _propagate(self, example_input) if propagate else None

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
        for g, *_ in val.segs:
            r = self.root(g)
            if self.reason[r] is None:
                self.reason[r] = reason

    def tie(self, a: _Val, b: _Val, where):
        if len(a.segs) != len(b.segs) or any(sa[1:] != sb[1:] for sa, sb in zip(a.segs, b.segs)):
            raise UnsupportedOp(f"{where}: adds tensors whose channels come from different concatenations")
        if a.kind != b.kind and "any" not in (a.kind, b.kind):
            raise UnsupportedOp(f"{where}: adds tensors of different layouts ({a.kind}, {b.kind})")
        for (ga, *_), (gb, *_) in zip(a.segs, b.segs):
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
        return a if a.kind != "any" else b

    def fixed_output(self, node, what, like: _Val | None = None):
        """A new fixed group for the output of ``node``, its size read from the propagated shape."""
        shape, kind = _shape(node), like.kind if like is not None else "any"
        ax = _Val([], kind, len(shape)).chan_axis() if shape is not None and kind != "any" else None
        size = shape[ax] if ax is not None else None
        return _Val([(self.new_group(size, f"output of {what}", reason=f"output of {what}"), size, 1, 0)],
                    kind, _ndim(node))

    def run(self) -> _Plan:
        env = {}
        for node in self.gm.graph.nodes:
            where = f"node {node.name!r} ({node.op} {node.target!r})"
            args = [_lookup(a, env) for a in node.args]
            self._guard(node, args, [_lookup(a, env) for a in node.kwargs.values()], where)
            if node.op == "placeholder":
                env[node.name] = _Val([(self.new_group(None, f"input {node.name}", reason="network input"),
                                        None, 1, 0)], "any", _ndim(node))
            elif node.op == "output":
                for v in _flatten_vals(node.args):
                    for val in env[v.name].vals if isinstance(env[v.name], _Parts) else [env[v.name]]:
                        if isinstance(val, _Val):
                            self.fix(val, "network output")
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
            v = env.get(node.name)
            if isinstance(v, _Val) and v.ndim is None:
                v.ndim = _ndim(node)
        return _Plan(self.layers, self.parent, self.size, self.reason, self.names, self.shifts)

    def _guard(self, node, args, kwargs, where):
        """A split channel axis is followed only through what keeps each channel's entries apart
        (swapping its channel axes, .contiguous(), a view merging them back, elementwise ReLU-like
        ops); the parts of a chunk or split only through indexing."""
        vals = [a for a in _walk(list(args) + list(kwargs)) if isinstance(a, (_Val, _Parts))]
        if node.op == "output" or not vals:
            return
        if any(isinstance(v, _Parts) for v in vals) and not (node.op == "call_function" and node.target is
                                                             operator.getitem):
            raise UnsupportedOp(f"{where}: uses the parts of a chunk or split other than by indexing them "
                                "(parts[i])")
        if not any(isinstance(v, _Val) and v.kind == "split" for v in vals):
            return
        mod = self.modules.get(node.target) if node.op == "call_module" else None
        ok = (node.op == "call_method" and node.target in ("transpose", "contiguous", "view", "reshape", "relu",
                                                           "relu_")) or \
            (node.op == "call_function" and (node.target is torch.transpose or node.target in
                                             _ELEMENTWISE_FUNCTIONS - {F.prelu, torch.prelu})) or \
            (mod is not None and isinstance(mod, _ELEMENTWISE_MODULES) and
             not (isinstance(mod, nn.PReLU) and mod.num_parameters > 1))
        if not ok:
            raise UnsupportedOp(f"{where}: reads a tensor whose channel axis a view split (a channel shuffle's "
                                "x.view(N, g, C // g, ...)); only swapping its channel axes, .contiguous(), a view "
                                "merging them back and elementwise ReLU-like ops are followed")

    def take(self, x: _Val, idx, kind, ndim, where):
        """The channels ``idx`` of ``x`` (a permutation or a selection), as segments."""
        if any(n is None for _, n, _, _ in x.segs):
            raise UnsupportedOp(f"{where}: permutes or selects channels of a network input")
        chans = [(g, st + i, per) for g, n, per, st in x.segs for i in range(n)]
        segs = []
        for c in np.asarray(idx, dtype=np.int64).reshape(-1):
            g, ch, per = chans[int(c)]
            if segs and segs[-1][0] == g and segs[-1][2] == per and segs[-1][3] + segs[-1][1] == ch:
                segs[-1] = (g, segs[-1][1] + 1, per, segs[-1][3])
            else:
                segs.append((g, 1, per, ch))
        return _Val(segs, kind, ndim)

    def reshape(self, node, x, shape, where):
        """``view`` / ``reshape``: a flatten from dim 1, a split of the channel axis into axes (channel
        shuffle: (N, C, S...) -> (N, g, C // g, S...)), or the merge of a split channel axis back into
        one; each proved from the propagated shapes (view is row-major, so batch and spatial axes that
        keep their sizes on both sides leave the channel index ``c = i * (C // g) + j``), and the batch and
        spatial sizes must be read from a tensor (``x.size(k)``), so that the same holds for every
        input; anything else is refused."""
        if len(shape) == 1 and isinstance(shape[0], _Shape) and shape[0].roles is not None:
            shape = [_Shape(role=r) for r in shape[0].roles]      # x.view(y.shape): y's sizes, axis by axis
        what = f"{where}: .{node.target}{tuple('?' if isinstance(a, _Shape) else a for a in shape)}"
        if len(shape) == 2 and isinstance(shape[0], _Shape) and shape[0].batch and shape[1] == -1 and \
                x.kind != "split":
            return self.flat(x, node, where)    # x.view(x.size(0), -1): flatten from dim 1
        src, out = _shape(node.args[0]), _shape(node)
        if src is None or out is None or x.kind not in ("spatial", "split"):
            raise UnsupportedOp(f"{what}; only x.view(x.size(0), -1) (a flatten from dim 1), a split of the "
                                "channel axis of an (N, C, ...) tensor and its merge back keep channels whole")
        if x.kind == "spatial":
            d = len(out) - len(src) + 1
            ok = d >= 1 and out[0] == src[0] and out[1 + d:] == src[2:] and int(np.prod(out[1:1 + d])) == src[1]
            need = ["batch"] + ["chan"] * d + [("space", j) for j in range(len(src) - 2)]
        else:
            d = x.cmap.ndim
            ok = len(out) == len(src) - d + 1 and out[0] == src[0] and out[2:] == src[1 + d:] and \
                out[1] == int(np.prod(src[1:1 + d]))
            need = ["batch", "chan"] + [("space", j) for j in range(len(out) - 2)]
        ok = ok and len(shape) == len(need) and sum(1 for a in shape if a == -1 and isinstance(a, int)) <= 1 and \
            all((isinstance(a, int) and (a == -1 or r == "chan")) or (isinstance(a, _Shape) and a.role == r)
                for a, r in zip(shape, need))
        if not ok:
            raise UnsupportedOp(f"{what} on a tensor of shape {tuple(src)} giving {tuple(out)}: it mixes channels "
                                "with the batch or spatial axes, or reads their sizes as constants; only a split of "
                                "the channel axis (x.view(N, g, C // g, H, W) with N, H, W read by x.size()) and its "
                                "merge back keep channels whole")
        if x.kind == "spatial":
            if d == 1:
                return x
            return _Val(x.segs, "split", len(out), np.arange(src[1]).reshape(out[1:1 + d]))
        return self.take(x, x.cmap.reshape(-1), "spatial", len(out), where)

    def transpose(self, x, a, b, where):
        nd = x.ndim
        if not (isinstance(a, int) and isinstance(b, int)) or nd is None:
            raise UnsupportedOp(f"{where}: transpose of unknown axes")
        a, b = a % nd, b % nd
        if a == b:
            return x
        if x.kind == "split":
            d = x.cmap.ndim
            if 1 <= a <= d and 1 <= b <= d:
                return _Val(x.segs, "split", nd, np.swapaxes(x.cmap, a - 1, b - 1))
        elif x.kind in ("spatial", "vector") and 0 not in (a, b) and x.chan_axis() not in (a, b):
            return x                              # two spatial axes swapped: each channel stays whole
        raise UnsupportedOp(f"{where}: transposes axes {a} and {b} of a {x.kind} tensor: it would move the "
                            "batch or the channel axis (only the channel axes of a split channel axis, or two "
                            "spatial axes, may be swapped)")

    def parts(self, node, x, how, sizes_arg, dim, where):
        """``chunk`` / ``split`` along the channel axis: each part a selection of channels, the parts'
        sizes read from the propagated shapes (they depend on the channel count only)."""
        metas = node.meta.get("tensor_meta")
        src = _shape(node.args[0])
        ax = x.chan_axis() if x.kind in ("spatial", "vector") else None   # a flattened axis holds columns
        if not isinstance(dim, int) or ax is None or src is None or not isinstance(metas, (tuple, list)) or \
                dim % len(src) != ax:
            raise UnsupportedOp(f"{where}: {how} along dim {dim} of a {x.kind} tensor; only the channel axis "
                                f"({ax}) of an (N, C, ...) or (N, ..., C) tensor is followed")
        if not (isinstance(sizes_arg, int) or (isinstance(sizes_arg, (list, tuple)) and
                                               all(isinstance(s, int) for s in sizes_arg))):
            raise UnsupportedOp(f"{where}: {how} into sizes read from shapes; only constant sizes are followed")
        vals, off = [], 0
        for m in metas:
            shp = tuple(m.shape)
            if shp[:ax] + shp[ax + 1:] != src[:ax] + src[ax + 1:]:
                raise UnsupportedOp(f"{where}: a part of {how} of shape {shp} from {tuple(src)}")
            vals.append(self.take(x, range(off, off + shp[ax]), x.kind, x.ndim, where))
            off += shp[ax]
        if off != src[ax]:
            raise UnsupportedOp(f"{where}: the parts of {how} hold {off} of {src[ax]} channels")
        return _Parts(vals)

    def index(self, node, x, idx, where):
        """``x[..., a:b:s]``: a slice of the channel axis (every other axis whole) selects channels."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        ax = x.chan_axis() if x.kind in ("spatial", "vector") else None   # a flattened axis holds columns
        nd, src = x.ndim, _shape(node.args[0])
        if ax is not None and src is not None and sum(1 for i in idx if i is Ellipsis) <= 1 and \
                all(isinstance(i, slice) or i is Ellipsis for i in idx):
            if Ellipsis in idx:
                k = idx.index(Ellipsis)
                idx = idx[:k] + (slice(None),) * (nd - len(idx) + 1) + idx[k + 1:]
            idx = idx + (slice(None),) * (nd - len(idx))
            if len(idx) == nd and all(i == slice(None) for k, i in enumerate(idx) if k != ax):
                sel = range(src[ax])[idx[ax]]
                return self.take(x, sel, x.kind, nd, where)
        raise UnsupportedOp(f"{where}: indexes a {x.kind} tensor with {idx!r}; only a slice of its channel axis "
                            f"({ax}), every other axis whole, selects channels")

    def _input_of(self, name, x: _Val, n_in, conv):
        """The layer's input segments with their sizes; a network input gets its size here."""
        if len(x.segs) == 1 and x.segs[0][1] is None:
            g = self.root(x.segs[0][0])
            if self.size[g] is None:                             # an input: its size comes from here
                self.size[g] = n_in
            elif self.size[g] != n_in:
                g = self.new_group(n_in, f"input of {name}", reason="network input")   # read differently
            return _Val([(g, n_in, 1, 0)], x.kind, x.ndim)
        segs = [(g, self.size[self.root(g)] if n is None else n, per, st) for g, n, per, st in x.segs]
        if any(n is None for _, n, _, _ in segs):
            raise GaugeError(f"module {name!r}: cannot tell how many channels each part of its "
                             "concatenated input has")
        return _Val(segs, x.kind, x.ndim)

    def layer(self, node, mod, args, where):
        name = node.target
        transposed = isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        if id(mod) in self.used:
            raise GaugeError(f"module {name!r} ({type(mod).__name__}) is called twice: shared weights "
                             "cannot be rescaled per call")
        self.used.add(id(mod))
        if len(args) != 1 or node.kwargs:
            raise UnsupportedOp(f"{where}: a layer called with {len(args)} arguments")
        (x,) = args
        conv = not isinstance(mod, nn.Linear)
        if conv:
            k = mod.weight.dim() - 2
            if x.kind in ("vector", "flat"):
                raise UnsupportedOp(f"module {name!r}: convolution of a flattened tensor or of a linear "
                                    "layer's output")
            if x.ndim is not None and x.ndim != k + 2:
                raise UnsupportedOp(f"module {name!r}: {type(mod).__name__} of a {x.ndim}-d tensor (unbatched or "
                                    f"other layout); gaugelit.torch reads channels on axis 1 of (N, C, ...)")
        elif x.kind == "spatial":
            raise UnsupportedOp(f"module {name!r}: nn.Linear applied to a feature map acts on its last "
                                "axis, not on channels; flatten first")
        n_in = mod.in_channels if conv else mod.in_features
        flat = x.kind == "flat"
        if flat:
            # a flattened input: each segment's channels keep their positions; the input group
            # of a network input has the features as units
            if len(x.segs) == 1 and x.segs[0][1] is None:
                x = _Val([(x.segs[0][0], None, 1, 0)], "vector", x.ndim)
                flat = False
        x = self._input_of(name, x, n_in, conv)
        if flat and sum(n * per for _, n, per, _ in x.segs) != n_in:
            raise GaugeError(f"module {name!r}: {n_in} input features, but its flattened input has "
                             f"{sum(n * per for _, n, per, _ in x.segs)}")
        if not flat and sum(n for _, n, _, _ in x.segs) != n_in:
            raise GaugeError(f"module {name!r}: expects {n_in} input channels, gets "
                             f"{sum(n for _, n, _, _ in x.segs)}")
        out = self.new_group(mod.out_channels if conv else mod.out_features, name)
        layer = _Layer(name, mod, x, out, flat=flat, transposed=transposed)
        self.layers.append(layer)
        self.layer_at[node.name] = layer
        return _Val([(out, self.size[out], 1, 0)], "spatial" if conv else "vector", _ndim(node))

    def module(self, node, mod, args, where):
        name = node.target
        _check_hooks(name, mod)
        if not args or not isinstance(args[0], _Val) or any(_has_val(a) for a in args[1:]) or _has_val(node.kwargs):
            raise UnsupportedOp(f"{where}: module {type(mod).__name__} called on other than one tensor")
        if isinstance(mod, _LAYERS + (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            return self.layer(node, mod, args, where)
        x = args[0] if args else None
        if isinstance(mod, _ELEMENTWISE_MODULES):
            if isinstance(mod, nn.PReLU) and mod.num_parameters > 1 and x.chan_axis() not in (None, 1):
                raise UnsupportedOp(f"module {name!r}: per-channel PReLU on axis 1 of a tensor whose channels "
                                    "are on another axis")
            return x
        if type(mod) in _POOL_MODULES:
            return self.pool(x, _POOL_MODULES[type(mod)], f"module {name!r} ({type(mod).__name__})")
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise UnsupportedOp(f"module {name!r}: Flatten(start_dim={mod.start_dim}, end_dim="
                                    f"{mod.end_dim}); only start_dim=1, end_dim=-1 keeps channels whole")
            return self.flat(x, node, f"module {name!r}")
        if isinstance(mod, _BATCHNORMS):
            return self.batchnorm(node, mod, x)
        if isinstance(mod, _FIXING_MODULES):
            what = f"{type(mod).__name__} {name!r}"
            self.fix(x, f"feeds {what}")
            return self.fixed_output(node, what, like=x)
        raise UnsupportedOp(f"module {name!r}: {type(mod).__name__} -- gaugelit does not know whether it is "
                            "positively homogeneous of degree one")

    def batchnorm(self, node, bn, x):
        """Eval-mode BN right after a layer that only it reads: the layer and BN act as one layer with
        weights ``s W`` (``s = gamma / sqrt(var + eps)``); its output rescaled by ``a`` is gamma, beta
        times ``a``. Elsewhere (after a ReLU, a pool, a concatenation, a layer that others read too)
        an eval-mode BN is ``s z + beta - s mu`` per channel: with its input rescaled by ``a``, the
        running mean and beta times ``a`` give ``a BN(z)``, so it passes its input's factors through
        (the running variance, gamma and eps unchanged). In training mode (batch statistics) or
        without running statistics its input is fixed."""
        name, what = node.target, f"{type(bn).__name__} {node.target!r}"
        if id(bn) in self.used:
            raise GaugeError(f"module {name!r} ({type(bn).__name__}) is called twice: its gamma and beta cannot "
                             "carry a factor per call")
        self.used.add(id(bn))
        prev = node.args[0]
        layer = self.layer_at.get(prev.name) if isinstance(prev, torch.fx.Node) else None
        if bn.training:
            reason = f"feeds {what} in training mode (batch statistics are not homogeneous; call model.eval())"
        elif not (bn.track_running_stats and bn.running_var is not None and bn.running_mean is not None):
            reason = f"feeds {what} (no running statistics: it normalises by the batch's)"
        elif bn.affine and layer is not None and len(prev.users) == 1 and layer.bn is None:
            layer.bn, layer.bn_name = bn, name
            return x
        elif x.kind == "any" or any(n is None for _, n, _, _ in x.segs):
            reason = f"feeds {what} (a network input)"
        elif x.chan_axis() != 1:
            reason = f"feeds {what} (it normalises axis 1 of a tensor whose channels are on axis {x.chan_axis()})"
        else:
            n = sum(n * (per if x.kind == "flat" else 1) for _, n, per, _ in x.segs)
            if n != bn.num_features:
                raise GaugeError(f"module {name!r}: {bn.num_features} features, its input has {n} channels")
            self.shifts.append((name, bn, x))
            return x
        self.fix(x, reason)
        return self.fixed_output(node, what, like=x)

    def pool(self, x, k, what):
        ax = x.chan_axis()
        if ax is not None and ax >= x.ndim - k:
            raise UnsupportedOp(f"{what}: pools the last {k} axes of a {x.ndim}-d tensor whose channels are on "
                                f"axis {ax}: it would mix channels")
        return x

    def flat(self, x, node, where):
        shape_in = _shape(node.args[0]) if isinstance(node.args[0], torch.fx.Node) else None
        if x.kind == "any":
            return _Val(x.segs, "flat", 2)
        if x.kind == "vector":
            if x.ndim == 2:
                return x
            raise UnsupportedOp(f"{where}: flattens a {x.ndim}-d tensor whose channels are on its last axis "
                                "(channels interleave)")
        if x.kind == "flat":
            return x
        if shape_in is None:
            raise UnsupportedOp(f"{where}: flatten of a tensor of unknown shape")
        per = int(np.prod(shape_in[2:]))
        return _Val([(g, n, p * per, st) for g, n, p, st in x.segs], "flat", 2)

    def function(self, node, args, where):
        fn = node.target
        vals = [a for a in list(args) + list(node.kwargs.values()) if isinstance(a, _Val)]
        has_tensor = _has_val(list(args) + list(node.kwargs.values()))
        if fn is getattr and isinstance(args[0], _Val):
            if args[1] == "shape":
                return _Shape(roles=_roles(args[0]))
            if args[1] in ("ndim", "dtype", "device"):
                return _Shape(role="chan")
            raise UnsupportedOp(f"{where}: reads attribute {args[1]!r} of a tensor")
        if fn is operator.getitem and isinstance(args[0], _Shape):
            r, i = args[0].roles, args[1]
            return _Shape(role=r[i] if r is not None and isinstance(i, int) and -len(r) <= i < len(r) else None)
        if fn is operator.getitem and isinstance(args[0], _Parts):
            return args[0].vals[args[1]]
        if fn is operator.getitem and isinstance(args[0], _Val):
            return self.index(node, args[0], args[1], where)
        if fn in _COMPARISONS and has_tensor:
            raise UnsupportedOp(f"{where}: compares a tensor ({getattr(fn, '__name__', fn)}): a comparison's "
                                "result is boolean, so no rescaling of its inputs passes through it")
        if not has_tensor:
            # arithmetic on shapes, torch._assert, ...: no tensor involved; an expression of channel
            # sizes and constants is a channel size
            shapes = [a for a in _walk(list(args) + list(node.kwargs.values())) if isinstance(a, _Shape)]
            consts = all(isinstance(a, (_Shape, int, float, str)) or a is None
                         for a in _walk(list(args) + list(node.kwargs.values())))
            return _Shape(role="chan" if consts and all(a.role == "chan" for a in shapes) else None)
        if fn is torch.transpose:
            return self.transpose(args[0], args[1] if len(args) > 1 else node.kwargs.get("dim0"),
                                  args[2] if len(args) > 2 else node.kwargs.get("dim1"), where)
        if fn in (torch.chunk, torch.split):
            dim = args[2] if len(args) > 2 else node.kwargs.get("dim", 0)
            how = "torch.chunk" if fn is torch.chunk else "torch.split"
            return self.parts(node, args[0], how, args[1] if len(args) > 1 else None, dim, where)
        if fn in _ELEMENTWISE_FUNCTIONS:
            if fn in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d) and len(vals) > 1:
                raise UnsupportedOp(f"{where}: dropout with tensor arguments")
            return args[0]
        if fn in _POOL_FUNCTIONS:
            return self.pool(args[0], _POOL_FUNCTIONS[fn], where)
        if fn is torch.flatten:
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                raise UnsupportedOp(f"{where}: flatten(start_dim={start}, end_dim={end}); only "
                                    "start_dim=1 keeps channels whole")
            return self.flat(args[0], node, where)
        if fn is F.pad:
            return self.pad(node, args, where)
        if fn in (torch.mean, torch.sum):
            return self.reduce(node, args[0], args[1:], node.kwargs, where)
        if fn in (operator.add, torch.add, operator.iadd):
            if len(vals) == 2 and not node.kwargs.get("alpha"):
                return self.tie(vals[0], vals[1], where)
            if len(vals) == 1:
                self.fix(vals[0], f"added to a constant at {node.name!r}")
                return self.fixed_output(node, f"constant addition {node.name!r}", like=vals[0])
        if fn in (operator.mul, torch.mul, operator.truediv, torch.div) and len(args) == 2:
            a, b = args                                   # times a constant: linear, degree one
            if isinstance(a, _Val) and isinstance(b, (int, float)) and b != 0:
                return a
            if fn in (operator.mul, torch.mul) and isinstance(b, _Val) and isinstance(a, (int, float)) and a != 0:
                return b
            if len(vals) == 2:
                raise UnsupportedOp(f"{where}: function {getattr(fn, '__name__', fn)!r} of two tensors (a gate, "
                                    "squeeze-excitation or attention): its output is not of degree one in their "
                                    "units' factors, so no rescaling passes through it")
        if fn is torch.cat:
            return self.cat(node, args, where)
        if fn in _FIXING_FUNCTIONS:
            what = f"{getattr(fn, '__name__', fn)} at {node.name!r}"
            for v in vals:
                self.fix(v, f"feeds {what}")
            return self.fixed_output(node, what, like=vals[0] if vals else None)
        raise UnsupportedOp(f"{where}: function {getattr(fn, '__name__', fn)!r} -- gaugelit does not know "
                            "whether it is positively homogeneous of degree one")

    def cat(self, node, args, where):
        tensors = args[0]
        dim = args[1] if len(args) > 1 else node.kwargs.get("dim", 0)
        vs = list(tensors)
        if not all(isinstance(v, _Val) for v in vs):
            raise UnsupportedOp(f"{where}: torch.cat of a constant")
        kinds = {v.kind for v in vs} - {"any"}
        if len(kinds) > 1:
            raise UnsupportedOp(f"{where}: torch.cat of tensors of different layouts {kinds}")
        if not kinds:
            return _Val([s for v in vs for s in v.segs], "any", _ndim(node))
        out = _Val([s for v in vs for s in v.segs], kinds.pop(), _ndim(node))
        ax = out.chan_axis()
        if not isinstance(dim, int) or ax is None or dim % out.ndim != ax:
            raise UnsupportedOp(f"{where}: torch.cat along dim {dim}; only the channel axis ({ax}) is supported")
        return out

    def pad(self, node, args, where):
        x = args[0]
        pad = args[1] if len(args) > 1 else node.kwargs.get("pad")
        mode = args[2] if len(args) > 2 else node.kwargs.get("mode", "constant")
        value = args[3] if len(args) > 3 else node.kwargs.get("value", None)
        if mode != "constant" or value not in (None, 0, 0.0):
            raise UnsupportedOp(f"{where}: F.pad(mode={mode!r}, value={value!r}); only zero padding is "
                                "homogeneous")
        ax = x.chan_axis()
        if ax is not None and ax >= x.ndim - len(pad) // 2:
            raise UnsupportedOp(f"{where}: F.pad pads the channel axis (axis {ax})")
        return x

    def reduce(self, node, x, rest, kwargs, where):
        dims = rest[0] if rest else kwargs.get("dim")
        keep = rest[1] if len(rest) > 1 else kwargs.get("keepdim", False)
        if dims is None or x.ndim is None or x.kind in ("any",):
            if x.kind == "any":
                return self.fixed_output(node, f"reduction at {node.name!r}", like=None)
            raise UnsupportedOp(f"{where}: a reduction over all axes mixes channels")
        dims = {d % x.ndim for d in ((dims,) if isinstance(dims, int) else dims)}
        ax = x.chan_axis()
        if 0 in dims or ax in dims or x.kind == "flat":
            raise UnsupportedOp(f"{where}: a mean or sum over axes {sorted(dims)} of a tensor whose channels "
                                f"are on axis {ax} (and batch on 0): only spatial axes may be reduced")
        if keep:
            return x
        ndim = x.ndim - len(dims)
        kind = "vector" if (x.kind == "vector" or ndim == 2) else "spatial"
        if x.kind == "spatial" and kind == "vector" and ndim != 2:
            raise UnsupportedOp(f"{where}: reduction leaves channels on axis 1 of a {ndim}-d tensor")
        return _Val(x.segs, kind, ndim)

    def method(self, node, args, where):
        name, x = node.target, args[0]
        if not isinstance(x, _Val):
            return _Shape()                                 # a method of a shape value
        if name in _ELEMENTWISE_METHODS:
            return x
        if name == "size":
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
            roles = _roles(x)
            if dim is None:
                return _Shape(roles=roles)
            return _Shape(role=roles[dim] if roles is not None and -len(roles) <= dim < len(roles) else
                          ("batch" if dim == 0 else None))
        if name == "dim":
            return _Shape(role="chan")
        if name in ("view", "reshape"):
            shape = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
            return self.reshape(node, x, list(shape), where)
        if name == "transpose":
            return self.transpose(x, args[1] if len(args) > 1 else node.kwargs.get("dim0"),
                                  args[2] if len(args) > 2 else node.kwargs.get("dim1"), where)
        if name in ("chunk", "split"):
            dim = args[2] if len(args) > 2 else node.kwargs.get("dim", 0)
            sizes = args[1] if len(args) > 1 else node.kwargs.get("chunks", node.kwargs.get("split_size"))
            return self.parts(node, x, f".{name}()", sizes, dim, where)
        if name == "flatten":
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                raise UnsupportedOp(f"{where}: x.flatten({start}, {end}); only start_dim=1 keeps channels whole")
            return self.flat(x, node, where)
        if name in ("mean", "sum"):
            return self.reduce(node, x, args[1:], node.kwargs, where)
        if name in _FIXING_METHODS:
            self.fix(x, f"feeds .{name}() at {node.name!r}")
            return self.fixed_output(node, f".{name}() at {node.name!r}", like=x)
        raise UnsupportedOp(f"{where}: method .{name}() -- gaugelit does not know whether it is positively "
                            "homogeneous of degree one")


def _roles(x: _Val):
    """Each axis's role for shape reads; a network input's dim 0 is its batch."""
    roles = x.roles()
    if roles is None or x.kind == "any":
        return None if roles is None else ("batch",) + (None,) * (len(roles) - 1)
    return roles


def _walk(a):
    if isinstance(a, (list, tuple)):
        for x in a:
            yield from _walk(x)
    elif isinstance(a, dict):
        for x in a.values():
            yield from _walk(x)
    else:
        yield a


def _has_val(a):
    if isinstance(a, (_Val, _Parts)):
        return True
    if isinstance(a, (list, tuple)):
        return any(_has_val(x) for x in a)
    if isinstance(a, dict):
        return any(_has_val(x) for x in a.values())
    return False


def _weight_norm_of(mod):
    """``(g, v, dim)`` of a weight-normalised layer (``W = g v / ||v||``), new or old style, or None."""
    pz = getattr(mod, "parametrizations", None)
    if pz is not None and "weight" in pz:
        plist = pz["weight"]
        if len(plist) == 1 and type(plist[0]).__name__ == "_WeightNorm":
            return plist.original0, plist.original1, plist[0].dim
        return None
    for hook in mod._forward_pre_hooks.values():
        if type(hook).__name__ == "WeightNorm" and hook.name == "weight":
            return mod.weight_g, mod.weight_v, hook.dim
    return None


def _check_hooks(name, mod):
    """Refuse what would change a module's computation behind the trace's back: parametrisations and
    hooks other than weight norm (handled by rescaling g and v)."""
    wn = _weight_norm_of(mod)
    pz = getattr(mod, "parametrizations", None)
    if pz is not None:
        for pname, plist in pz.items():
            kinds = ", ".join(type(p).__name__ for p in plist)
            if not (pname == "weight" and wn is not None):
                raise GaugeError(f"module {name!r}: parameter {pname!r} is parametrised ({kinds}); only weight "
                                 "norm (W = g v / ||v||, rescaled through g and v) is supported -- e.g. spectral norm "
                                 "W / sigma(W) is not homogeneous in W")
    for hooks, what in ((mod._forward_pre_hooks, "forward pre-hook"), (mod._forward_hooks, "forward hook")):
        for hook in hooks.values():
            if wn is not None and type(hook).__name__ == "WeightNorm":
                continue
            kind = type(hook).__name__
            raise GaugeError(f"module {name!r}: has a {what} ({getattr(hook, '__name__', kind)}: "
                             f"{'spectral norm' if kind == 'SpectralNorm' else 'unknown'}); it may change the "
                             "weights or outputs outside the trace, so gaugelit.torch cannot prove a rescaling exact")
    if wn is not None and wn[2] != 0:
        raise GaugeError(f"module {name!r}: weight norm over dim={wn[2]}; only dim=0 (one g per output unit) "
                         "is supported")


def _lookup(a, env):
    if isinstance(a, torch.fx.Node):
        return env[a.name]
    if isinstance(a, (tuple, list)):
        return type(a)(_lookup(x, env) for x in a)
    if isinstance(a, slice):
        return a
    return a


def _flatten_vals(args):
    for a in args:
        if isinstance(a, torch.fx.Node):
            yield a
        elif isinstance(a, (tuple, list)):
            yield from _flatten_vals(a)
        elif isinstance(a, dict):
            yield from _flatten_vals(list(a.values()))


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

    def __init__(self, model: nn.Module, example_input=None):
        self.model = model
        _check_params(model)
        tracer = _Tracer(model, example_input)
        plan = tracer.run()
        self.input = tracer.input
        self.plan = plan
        used = []
        for layer in plan.layers:
            used.append(plan.root(layer.dst))
            used += [plan.root(g) for g, *_ in layer.src.segs]
        self.group_of = {}                                  # plan root -> graph group id
        self.order = list(dict.fromkeys(used))
        if not plan.layers:
            raise GaugeError(f"{type(model).__name__} has no nn.Linear or nn.Conv layer to rescale")
        self._check_shared()

    def rescaled(self):
        """``[(name, tensor)]``: every tensor that a rescaling writes, named as in ``model.state_dict()``."""
        out = []
        for layer in self.plan.layers:
            wn = _weight_norm_of(layer.module)
            if wn is not None:
                out += [(f"{layer.name}.weight_g", wn[0]), (f"{layer.name}.weight_v", wn[1])]
            else:
                out.append((f"{layer.name}.weight", layer.module.weight))
            if layer.module.bias is not None and layer.bn is None:
                out.append((f"{layer.name}.bias", layer.module.bias))
            if layer.bn is not None:
                out += [(f"{layer.bn_name}.weight", layer.bn.weight), (f"{layer.bn_name}.bias", layer.bn.bias)]
        for name, bn, _ in self.plan.shifts:
            out.append((f"{name}.running_mean", bn.running_mean))
            if bn.affine:
                out.append((f"{name}.bias", bn.bias))
        return out

    def _check_shared(self):
        """A tensor that two modules share (``b.weight = a.weight``, or one storage under two
        parameters) would be rescaled twice, or for one use only: refused by name."""
        names = {}
        for name, t in list(self.model.named_parameters(remove_duplicate=False)) + \
                list(self.model.named_buffers(remove_duplicate=False)):
            names.setdefault(id(t), []).append(name)
        storages = {}
        for name, t in list(self.model.named_parameters()) + list(self.model.named_buffers()):
            if t.device.type != "meta" and t.numel():
                storages.setdefault((t.device, t.untyped_storage().data_ptr()), []).append(name)
        for name, t in self.rescaled():
            if len(names.get(id(t), [])) > 1:
                others = [n for n in names[id(t)] if n != name]
                raise GaugeError(f"parameter {name!r} is shared with {', '.join(map(repr, others))} (one tensor "
                                 "in two places): rescaling it for one use changes the other; give each module "
                                 "its own copy")
            if t.device.type != "meta" and t.numel():
                same = storages.get((t.device, t.untyped_storage().data_ptr()), [])
                if len(same) > 1:
                    raise GaugeError(f"parameter {name!r} shares its memory with "
                                     f"{', '.join(repr(n) for n in same if n != name)}: rescaling one changes "
                                     "the other; give each its own storage (.clone())")

    def params(self):
        return self.rescaled()

    def device(self) -> torch.device:
        """The one device and dtype of all rescaled parameters, checked; returns the device."""
        return _one_dtype_and_device(self.params() or [(f"{self.plan.layers[0].name}.weight",
                                                         self.plan.layers[0].module.weight)])

    def check_finite(self, where=""):
        for name, t in self.rescaled():
            if _finite(t):
                continue
            bad = ~torch.isfinite(t.detach())
            if bool(bad.any()):
                raise GaugeError(f"{where}parameter {name!r} has {int(bad.sum())} non-finite entries "
                                 f"(of {t.numel()}); nothing was rescaled")

    @staticmethod
    def _weight(layer):
        """The layer's effective weight in (out, in / groups, ...) layout (a view where it can be)."""
        mod, wn = layer.module, _weight_norm_of(layer.module)
        W = mod.weight if wn is None else torch._weight_norm(wn[1], wn[0], 0)
        return W.detach().transpose(0, 1) if layer.transposed else W.detach()

    @torch.no_grad()
    def fold_in_place(self, journal):
        """``W *= s`` (``s = gamma / sqrt(var + eps)``) for each layer whose eval batch norm is
        folded-equivalent, in place and recorded in ``journal``: the solver then reads s W as a view.
        Grouped and weight-normalised layers are not folded here (their blocks are formed anyway)."""
        folded = set()
        for layer in self.plan.layers:
            if layer.bn is None or getattr(layer.module, "groups", 1) > 1 or _weight_norm_of(layer.module) is not None:
                continue
            W = layer.module.weight
            s = _bn_scale(layer.bn)
            journal.scale_(W.data, [s.view((1, -1) + (1,) * (W.dim() - 2)) if layer.transposed else
                                    s.view((-1,) + (1,) * (W.dim() - 1))])
            folded.add(layer.name)
        return folded

    def graph(self, p: float = 2.0, folded=()) -> GaugeGraph:
        """The gauge graph, its blocks zero-copy views of the weights (copies where a batch norm is
        folded in -- except for the layers in ``folded``, whose weights already hold s W -- a weight
        norm computed, or a grouped convolution spread over its groups); call it under
        ``_on_device(self.device())``."""
        plan, g = self.plan, GaugeGraph()
        self.group_of = {}
        pieces = self.pieces()
        for r in self.order:
            names = ", ".join(dict.fromkeys(plan.names[r]))
            label = f"tied [{names}]" if len(plan.names[r]) > 1 else names
            if plan.size[r] is None:
                raise GaugeError(f"group {label!r}: its size is unknown (a bug in gaugelit.torch: please report it)")
            for a, b in pieces[r]:
                name = label if len(pieces[r]) == 1 else f"{label} [{a}:{b}]"
                self.group_of[r, a] = g.add_group(name, b - a, free=plan.reason[r] is None, reason=plan.reason[r])
        for layer in plan.layers:
            where = f"parameter '{layer.name}.weight'"
            W = self._weight(layer)
            if layer.bn is not None and layer.name not in folded and \
                    not (layer.transposed and getattr(layer.module, "groups", 1) > 1):
                W = W * _bn_scale(layer.bn).view((-1,) + (1,) * (W.dim() - 1))
            groups = getattr(layer.module, "groups", 1)
            n_out = W.shape[0]
            if groups > 1 and layer.transposed:
                # weight (in, out / groups, ...): input i of group i // ipg feeds outputs
                # (i // ipg) * opg + j; the same dense (out, in) block, kernel summed at p
                Wt = W.transpose(0, 1)
                n_in, opg = Wt.shape[0], Wt.shape[1]
                n_out, ipg = opg * groups, n_in // groups
                eff = Wt.reshape(n_in, opg, -1).abs().pow(p).sum(-1).pow(1.0 / p)
                idx = (torch.arange(n_in, device=W.device) // ipg)[:, None] * opg + torch.arange(opg, device=W.device)
                if layer.bn is not None:
                    eff = eff * _bn_scale(layer.bn).abs()[idx]
                W = torch.zeros(n_in, n_out, dtype=W.dtype, device=W.device).scatter_(1, idx, eff).t().contiguous()
            elif groups > 1:
                # each output channel reads its group's inputs: a dense (out, in) block with zeros
                # elsewhere, the kernel summed at p ((sum_k |w|^p)^(1/p) gives the same M and zeros)
                ipg, opg = W.shape[1], n_out // groups
                eff = W.reshape(n_out, ipg, -1).abs().pow(p).sum(-1).pow(1.0 / p)
                dense = torch.zeros(n_out, ipg * groups, dtype=W.dtype, device=W.device)
                idx = (torch.arange(n_out, device=W.device) // opg)[:, None] * ipg + torch.arange(ipg, device=W.device)
                dense.scatter_(1, idx, eff)
                W = dense
            # (n_out, channels, 1): a kernel's or a flattened channel's positions reduced to their
            # p-norm, (sum_k |w|^p)^(1/p), which gives the solver the same M (and the same zeros)
            # without the full-size temporary it would form per block (784 MiB for VGG-11's first
            # classifier layer in float64); a 1 x 1 kernel or a linear layer: a view, no copy
            if layer.flat and any(per > 1 for _, _, per, _ in layer.src.segs):
                W2, col, ch = W.reshape(n_out, -1), 0, 0
                R = torch.empty(n_out, sum(n for _, n, _, _ in layer.src.segs), dtype=W.dtype, device=W.device)
                for _, n, per, _ in layer.src.segs:
                    R[:, ch:ch + n] = _pnorms(W2[:, col:col + n * per].unflatten(1, (n, per)), p)
                    col, ch = col + n * per, ch + n
                A = _as_array(R, where)[:, :, None]
            elif W.dim() > 2 and W[0, 0].numel() > 1:
                A = _as_array(_pnorms(W.reshape(n_out, W.shape[1], -1), p), where)[:, :, None]
            else:
                A = _as_array(W, where).reshape(n_out, W.shape[1], 1)
            rd = plan.root(layer.dst)
            for r, st, k, col, step, _ in self.runs(layer):
                for a, b in pieces[r]:
                    lo, hi = max(a, st), min(b, st + k)
                    if lo >= hi:
                        continue
                    # (n_out, channels, 1): channel st + i at col + i*step
                    blk = A[:, col + (lo - st) * step:col + (hi - st - 1) * step + 1:step]
                    for c, d in pieces[rd]:
                        g.add_block(self.group_of[r, a], self.group_of[rd, c], blk[c:d], name=layer.name)
        return g

    def runs(self, layer):
        """The layer's input channels as runs ``(root, start, k, column, step, 1)``: channels
        ``start .. start + k - 1`` of a group at input channels ``column + i * step`` (a flattened
        input counted in channels, not columns). One-channel segments of one group at evenly spaced
        places (a channel shuffle's output) join into one strided run."""
        plan, runs, col = self.plan, [], 0
        for g, n, _, st in layer.src.segs:
            r = plan.root(g)
            found = None
            if n == 1:        # join a run of this group whose next channel is this one, evenly spaced
                for run in reversed(runs):
                    if run[0] == r and run[1] + run[2] == st and (run[2] == 1 or col - run[3] == run[2] * run[4]) \
                            and col > run[3] + (run[2] - 1) * run[4]:
                        found = run
                        break
            if found is not None:
                if found[2] == 1:
                    found[4] = col - found[3]
                found[2] += 1
            else:
                runs.append([r, st, n, col, 1, 1])
            col += n
        return [tuple(run) for run in runs]

    def pieces(self):
        """Per group root, its channels cut into pieces ``(a, b)`` that every layer reads whole (a
        selection or permutation of channels reads part of a group); each piece is a group of the
        gauge graph."""
        plan = self.plan
        cuts = {r: {0, plan.size[r]} for r in self.order}
        for layer in plan.layers:
            for r, st, k, *_ in self.runs(layer):
                cuts[r] |= {st, st + k}
        return {r: list(zip(sorted(c)[:-1], sorted(c)[1:])) for r, c in cuts.items()}

    def layer_factors(self, factors):
        """Per layer: (row factors per output unit, column factors per input column), as 1-d tensors."""
        plan, out, full = self.plan, [], {}
        pieces = self.pieces()

        def of(g, like, where):           # the factors of all channels of g's root, in order
            r = plan.root(g)
            if r not in full:             # (a group that no layer reads or writes is not in the graph: 1)
                full[r] = torch.ones(plan.size[r], dtype=like.dtype, device=like.device) if r not in pieces else \
                    torch.cat([_as_tensor(factors[self.group_of[r, a]], like, where) for a, _ in pieces[r]])
            return full[r]

        def cols(val, flat, like, where):  # per column of a value: its channel's factor
            return torch.cat([of(g, like, where)[st:st + n].repeat_interleave(per) if flat else
                              of(g, like, where)[st:st + n] for g, n, per, st in val.segs])
        for layer in self.plan.layers:
            W, where = self._weight(layer), f"parameter '{layer.name}.weight'"
            out.append((of(layer.dst, W, where), cols(layer.src, layer.flat, W, where)))
        shifts = [cols(x, x.kind == "flat", bn.running_mean, f"buffer '{name}.running_mean'")
                  for name, bn, x in plan.shifts]
        return out, shifts


def _pnorms(W3, p):
    """``(sum_k |W3[:, :, k]|^p)^(1/p)``, shape (n_out, n), in W3's dtype, formed in float64 a few
    rows at a time (no overflow of |w|^p, and no full-size temporary)."""
    out = torch.empty(W3.shape[:2], dtype=W3.dtype, device=W3.device)
    rows = max(1, _Journal.CHUNK // max(1, W3[0].numel()))
    for i in range(0, W3.shape[0], rows):
        out[i:i + rows] = torch.linalg.vector_norm(W3[i:i + rows], ord=p, dim=-1, dtype=torch.float64)
    return out


def _finite(t):
    """All entries finite, without a full-size temporary: NaN and inf reach the min or the max."""
    if not t.numel():
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def _one_dtype_and_device(named):
    """``(name, tensor)`` pairs of one dtype (float32 or float64) on one device whose array
    namespace imports: that device (None for no tensors), else a GaugeError naming them."""
    first = t0 = None
    for name, t in named:
        if t.dtype not in (torch.float32, torch.float64):
            raise GaugeError(f"parameter {name!r}: dtype {t.dtype} is not supported; the gauge is "
                             "solved in float32 or float64 (NumPy has no bfloat16, and float16's range "
                             "is too narrow for the factors): convert the model with .float() or .double()")
        if t0 is None:
            first, t0 = name, t
            _array_namespace(t.device, f"parameter {name!r}")
        elif t.dtype != t0.dtype:
            raise GaugeError(f"parameters {first!r} ({t0.dtype}) and {name!r} ({t.dtype}) differ in "
                             "dtype; convert the model to one with .float() or .double()")
        elif t.device != t0.device:
            raise GaugeError(f"parameters {first!r} (on {t0.device}) and {name!r} (on {t.device}) lie on "
                             "different devices; move the model to one with .to(device)")
    return None if t0 is None else t0.device


def _check_params(model):
    """One dtype (float32 or float64) and one device for all parameters, before anything runs."""
    _one_dtype_and_device(model.named_parameters())


def _bn_scale(bn):
    return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()


_GRAD_LIKE = {"momentum_buffer", "exp_avg"}          # scale like the gradient: 1 / (a_i / a_j)
_SQUARED = {"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg"}   # like the gradient squared


_INT = {torch.float64: torch.int64, torch.float32: torch.int32}


class _Journal:
    """In-place rescalings ``t *= m / d`` that :meth:`undo` reverses bit for bit, without a copy:
    each chunk of ``t`` is rescaled, the inverse rescaling of the result is computed, and the
    difference of its bit pattern from the original's (as integers: almost always 0, else a unit
    or two in the last place) is kept -- sparse (the positions and int8 values of the few nonzero
    differences), or as int8 per entry where many differ, or the chunk itself where a difference
    does not fit int8 (an overflow, an underflow, a factor 0). Undo applies the same inverse (the
    same correctly rounded operations, so the same bits) and adds the differences back. The
    temporaries are a chunk's, in three buffers allocated once (fresh temporaries per chunk
    fragment the C heap: +100 MiB of freed but resident memory on ResNet-50)."""
    CHUNK = 1 << 18                   # entries per chunk: 2 MiB of float64

    def __init__(self):
        self.entries = []
        self._ws = {}

    def _buffers(self, t, n):
        """Three flat work buffers of at least ``n`` entries: two of ``t``'s dtype, one integer."""
        key = (t.dtype, t.device)
        if key not in self._ws or self._ws[key][0].numel() < n:
            n = max(n, self.CHUNK)
            self._ws[key] = (torch.empty(n, dtype=t.dtype, device=t.device),
                             torch.empty(n, dtype=t.dtype, device=t.device),
                             torch.empty(n, dtype=_INT[t.dtype], device=t.device))
        return self._ws[key]

    @staticmethod
    def _rows(fs, t, i, k):
        return [f[i:i + k] if f.dim() == t.dim() and f.dim() and f.shape[0] == t.shape[0] > 1 else f for f in fs]

    @staticmethod
    def _inverse_(c, muls, divs):
        for d in reversed(divs):
            c.mul_(d)
        for m in reversed(muls):
            c.div_(m)

    def scale_(self, t, muls=(), divs=()):
        muls, divs = list(muls), list(divs)
        if not muls and not divs:
            return
        n0 = t.shape[0] if t.dim() else 1
        k = max(1, self.CHUNK // max(1, t.numel() // n0 if n0 else 1))
        itype, rec = _INT[t.dtype], []
        for i in range(0, n0, k):
            c = t[i:i + k] if t.dim() else t
            ms, ds = self._rows(muls, t, i, k), self._rows(divs, t, i, k)
            wa, wb, wi = self._buffers(t, c.numel())
            orig, back, diff = (w[:c.numel()].view(c.shape) for w in (wa, wb, wi))
            orig.copy_(c)
            for m in ms:
                c.mul_(m)
            for d in ds:
                c.div_(d)
            back.copy_(c)
            self._inverse_(back, ms, ds)
            torch.sub(orig.view(itype), back.view(itype), out=diff)
            lo, hi = (int(v) for v in torch.aminmax(diff)) if diff.numel() else (0, 0)
            if not (-128 <= lo and hi <= 127):
                rec.append(orig.clone())                         # the chunk itself
                continue
            nz = torch.nonzero(diff.reshape(-1)).view(-1)
            if not nz.numel():
                rec.append(None)                                 # the inverse gives the same bits
            elif nz.numel() * 16 < diff.numel():
                rec.append((nz, diff.reshape(-1)[nz].to(torch.int8)))
            else:
                rec.append(diff.to(torch.int8))
        self.entries.append((t, muls, divs, k, rec))

    @torch.no_grad()
    def undo(self):
        for t, muls, divs, k, rec in reversed(self.entries):
            itype = _INT[t.dtype]
            for j, i in enumerate(range(0, t.shape[0] if t.dim() else 1, k)):
                c, r = (t[i:i + k] if t.dim() else t), rec[j]
                if torch.is_tensor(r) and r.dtype != torch.int8:
                    c.copy_(r)
                    continue
                self._inverse_(c, self._rows(muls, t, i, k), self._rows(divs, t, i, k))
                if isinstance(r, tuple):
                    c.view(itype).index_put_(torch.unravel_index(r[0], c.shape), r[1].to(itype), accumulate=True)
                elif r is not None:
                    c.view(itype).add_(r.to(itype))
        self.entries = []


_GRAD_LIKE = {"momentum_buffer", "exp_avg"}          # scale like the gradient: 1 / (a_i / a_j)
_SQUARED = {"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg"}   # like the gradient squared


def _scale_(param, muls, optimizer, name, divs=(), journal=None):
    """``param *= m`` for each ``m`` in ``muls`` and ``/= d`` for each in ``divs``, in place (each
    broadcasts, so no full-size factor is formed), and its optimizer state like the gradient
    (the inverse) or its square (the inverse squared); recorded in ``journal`` (undoable exactly)."""
    journal = journal if journal is not None else _Journal()
    journal.scale_(param.data, muls, divs)
    if optimizer is None:
        return
    for key, st in optimizer.state.get(param, {}).items():
        if not torch.is_tensor(st) or st.shape != param.shape:
            continue                                  # e.g. Adam's step counter
        if key in _GRAD_LIKE:
            power = 1
        elif key in _SQUARED:
            power = 2
        else:
            raise GaugeError(f"optimizer state {key!r} of parameter {name!r}: gaugelit does not know how it "
                             "transforms under a rescaling")
        journal.scale_(st, [d if power == 1 else d * d for d in divs], [m if power == 1 else m * m for m in muls])


@torch.no_grad()
def _apply(tm: _Model, factors, optimizer=None, journal=None):
    per_layer, shifts = tm.layer_factors(factors)
    for (name, bn, _), a in zip(tm.plan.shifts, shifts):
        # an eval batch norm between rescaled channels: mean and beta carry its input's factors
        _scale_(bn.running_mean, [a], None, f"{name}.running_mean", journal=journal)
        if bn.affine:
            _scale_(bn.bias, [a], optimizer, f"{name}.bias", journal=journal)
    for layer, (row, col) in zip(tm.plan.layers, per_layer):
        mod = layer.module
        W = mod.weight if _weight_norm_of(mod) is None else _weight_norm_of(mod)[1]
        d = W.dim()
        # the weight's factor: rows (output units) times, columns (input units) divided; a folded
        # batch norm takes the rows; a grouped convolution's column j of output o is input o//opg*ipg+j
        r = None if layer.bn is not None else row
        groups = getattr(mod, "groups", 1)
        if layer.transposed and groups > 1:
            # weight (in, out / groups, ...): entry (i, j) feeds output (i // ipg) * opg + j
            n_in, opg = W.shape[0], W.shape[1]
            idx = (torch.arange(n_in, device=W.device) // (n_in // groups))[:, None] * opg + \
                torch.arange(opg, device=W.device)
            muls = [] if r is None else [r[idx].view(n_in, opg, *(1,) * (d - 2))]
            divs = [col.view((-1,) + (1,) * (d - 1))]
        elif layer.transposed:
            muls = [] if r is None else [r.view((1, -1) + (1,) * (d - 2))]
            divs = [col.view((-1,) + (1,) * (d - 1))]
        elif groups > 1:
            n_out, ipg = W.shape[0], W.shape[1]
            idx = (torch.arange(n_out, device=W.device) // (n_out // groups))[:, None] * ipg + \
                torch.arange(ipg, device=W.device)
            muls = [] if r is None else [r.view((-1,) + (1,) * (d - 1))]
            divs = [col[idx].view(n_out, ipg, *(1,) * (d - 2))]
        else:
            muls = [] if r is None else [r.view((-1,) + (1,) * (d - 1))]
            divs = [col.view((1, -1) + (1,) * (d - 2))]
        wn = _weight_norm_of(mod)
        if wn is None:
            _scale_(W, muls, optimizer, f"{layer.name}.weight", divs, journal)
        else:
            # W = g v / ||v|| (norms over each output unit's row): v takes the column factors only,
            # v' = v / c, and g the row factor times ||v'|| / ||v||, so g' v' / ||v'|| = r g v / (c ||v||)
            g, v, _ = wn
            dims = tuple(range(1, v.dim()))
            n0 = v.norm(dim=dims, keepdim=True)
            _scale_(v, [], optimizer, f"{layer.name}.weight_v", divs, journal)
            gfac = v.norm(dim=dims, keepdim=True) / n0 * (1 if r is None else r.view(n0.shape))
            _scale_(g, [gfac.view(g.shape)], optimizer, f"{layer.name}.weight_g", journal=journal)
        if layer.bn is not None:
            _scale_(layer.bn.weight, [row], optimizer, f"{layer.bn_name}.weight", journal=journal)
            _scale_(layer.bn.bias, [row], optimizer, f"{layer.bn_name}.bias", journal=journal)
        elif mod.bias is not None:
            _scale_(mod.bias, [row], optimizer, f"{layer.name}.bias", journal=journal)


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
def _fold(model: nn.Module):
    """Fold as :func:`fold_batchnorm_` does; returns (names, undo) where ``undo()`` puts every module,
    weight and bias back as it was."""
    gm = _Tracer(model, propagate=False).gm
    modules = dict(model.named_modules())
    folded, undo = [], []

    def restore():
        with torch.no_grad():
            for fn in reversed(undo):
                fn()
    try:
        for node in gm.graph.nodes:
            if node.op != "call_module" or not isinstance(modules.get(node.target), _BATCHNORMS):
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
            W0, b0 = layer.weight.detach().clone(), layer.bias
            b0c = None if b0 is None else b0.detach().clone()

            def back(layer=layer, W0=W0, b0=b0, b0c=b0c):
                layer.weight.copy_(W0)
                if b0 is None:
                    layer.bias = None
                else:
                    layer.bias = b0
                    b0.copy_(b0c)
            undo.append(back)
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
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, nn.Identity())
            undo.append(lambda parent=parent, child=child, bn=bn: setattr(parent, child, bn))
            folded.append(node.target)
    except BaseException:
        restore()
        raise
    return folded, restore


def fold_batchnorm_(model: nn.Module) -> list:
    """Fold every eval-mode batch normalisation that directly follows a linear or convolutional layer
    (and is that layer's only reader) into it, in place, and replace it by ``nn.Identity``.

    In eval mode ``BN(z) = g (z - mu) / sqrt(var + eps) + beta`` is affine per channel, so
    ``W' = s W``, ``b' = s (b - mu) + beta`` with ``s = g / sqrt(var + eps)`` computes the same
    function, and the layer's channels become free. A layer without a bias gets one (create the
    optimizer after folding). Returns the names of the folded normalisations. Not needed for the
    gauge: :func:`minnorm_` rescales through an unfolded eval-mode batch norm (its gamma and beta).
    """
    return _fold(model)[0]


def gauge_graph(model: nn.Module, p: float = 2.0, *, example_input=None) -> GaugeGraph:
    """The gauge graph of ``model`` (groups named by their layers; fixed groups with the reason).
    ``p`` matters only for grouped convolutions, whose blocks hold the kernel's p-norm per entry."""
    tm = _Model(model, example_input)
    with _on_device(tm.device()):
        return tm.graph(p)


def _forward(model, x, device):
    with _eval_fixed_rng(model, device):
        torch.manual_seed(0)
        return model(*x) if isinstance(x, tuple) else model(x)


def minnorm_(model: nn.Module, p: float = 2.0, *, q: float | None = None, method: str | None = None,
             delta: float = 1e-3,
             gamma_tol: float | None = None, max_iter: int = 10_000, example_input=None,
             fold_batchnorm: bool = False, check: bool = True, _traced: _Model | None = None,
             _optimizer=None, _where: str = "") -> GraphMinNormResult:
    """Rescale ``model``'s weights and biases in place to the minimum of ``sum |W|^p`` over its gauge.

    Arguments as :func:`gaugelit.minnorm` (``q``: the l_{p,q} norm's outer exponent).
    Returns its result with ``.net = model``, ``.factors`` and
    ``.dead_units`` per group of ``.graph``, and ``.fixed_units``: ``(group, channels, reason)``.
    The model's parameters must share one device and dtype (float32 or float64); the solver runs
    there, so ``.factors`` are NumPy arrays for a CPU model and CuPy arrays for a CUDA model.

    Every op is accepted only where the trace proves the rescaling exact (torch.fx shape propagation
    on ``example_input``, or on an input made from the first layer's sizes; module attributes;
    parameter identities); anything else is an error naming the node. ``check`` (default) also
    compares the outputs before and after on that input (relative 1e-10 in float64, 1e-4 in
    float32; eval mode, one fixed random state). On any error the model is left exactly as it was.
    An eval-mode batch norm right after a layer is rescaled through its gamma and beta (the gauge of
    the folded-equivalent weights); ``fold_batchnorm=True`` folds such batch norms into the layers
    first (:func:`fold_batchnorm_`), undone if the call fails.
    """
    undo = None
    if fold_batchnorm:
        _, undo = _fold(model)
    try:
        return _minnorm(model, p, q, method, delta, gamma_tol, max_iter, example_input, check, _traced,
                        _optimizer, _where)
    except BaseException:
        if undo is not None:
            undo()
        raise


def _minnorm(model, p, q, method, delta, gamma_tol, max_iter, example_input, check, traced, optimizer, where):
    tm = traced or _Model(model, example_input)
    device = tm.device()
    tm.check_finite(where)
    x = example_input if example_input is not None else tm.input
    before = _forward(model, x, device) if check else None
    # Every in-place change goes through one journal, undone bit for bit on any failure: no copy of
    # the weights is kept. A batch-normed layer's weights hold s W (folded in place) while the
    # solver reads them, so its block is a view as every other one; they are unfolded before the
    # factors are applied.
    journal = _Journal()
    try:
        folded = tm.fold_in_place(journal)
        with _on_device(device):                  # the solver's arrays on the parameters' device
            graph = tm.graph(p, folded)
            res = minnorm_graph(graph, p, q, method=method, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter)
        journal.undo()
        _apply(tm, res.factors, optimizer, journal)
        for name, t in tm.rescaled():
            if not _finite(t):
                raise GaugeError(f"{where}parameter {name!r} is not finite after rescaling (the factors overflow "
                                 f"{t.dtype}); its weights were restored")
        if check:
            after = _forward(model, x, device)
            err, tol = _max_rel_change(before, after), _tolerance(tm.rescaled()[0][1].dtype)
            if not err <= tol:
                raise GaugeError(f"{where}the rescaled model's output differs by {err:.3g} (relative) > {tol:g}; "
                                 "its weights were restored")
            res.output_change = err
    except BaseException:
        journal.undo()
        raise
    res.net = model
    return res


class GaugeFix:
    """Keep a model in its minimum-norm gauge during training: call it after ``optimizer.step()``.

    The model is traced once; each call solves from the current weights (close to balanced after the
    previous call, so few sweeps), rescales weights and biases in place and, with ``optimizer``,
    transforms its state like the gradients: momentum buffers and Adam's first moments by
    ``a_j / a_i``, second moments by its square, so the next step sees a consistent state.
    The first call checks the function on the traced input (``check``); every call first checks
    that the parameters are finite and names the call at which they stopped being so.
    ``solver_kw`` go to :func:`minnorm_`: ``method="enorm-style", delta=None, max_iter=1`` is ENorm as
    it is used, one balancing sweep per step (a fixed budget, no stopping rule, no warning).
    """

    def __init__(self, model: nn.Module, p: float = 2.0, optimizer=None, *, example_input=None,
                 check: str | bool = "first", **solver_kw):
        self.model, self.p, self.optimizer, self.kw = model, p, optimizer, solver_kw
        self._traced = _Model(model, example_input)
        self.example_input, self.check = example_input, check
        self.last, self.calls = None, 0

    def __call__(self) -> GraphMinNormResult:
        self.calls += 1
        check = self.check is True or (self.check == "first" and self.calls == 1)
        self.last = minnorm_(self.model, self.p, _traced=self._traced, _optimizer=self.optimizer,
                             example_input=self.example_input, check=check,
                             _where=f"GaugeFix call {self.calls} (after optimizer step {self.calls}): ", **self.kw)
        return self.last
