"""A strict NumPy-backed stand-in for CuPy, for tests on machines without a GPU (issue 22).

Importable as ``cupy`` with ``tests/cupy_standin`` on ``sys.path`` (``make standin``). Its arrays
behave as device arrays where gaugelit could go wrong unseen without a GPU:

- ``np.asarray(device_array)`` raises TypeError, as CuPy's implicit conversion does (use ``.get()``);
- a NumPy array mixed into a device operation (operator, ufunc or NumPy function) raises TypeError;
- NumPy functions called on device arrays dispatch through ``__array_function__`` (and ufuncs
  through ``__array_ufunc__``) and return device arrays;
- reductions return 0-d device arrays, never NumPy scalars (``float(x)``/``bool(x)`` are the syncs);
- floating-point errors are never signalled (no RuntimeWarning, ``np.errstate`` has no effect);
- ``cupy.random`` streams differ from NumPy's (Philox, not PCG64/MT19937);
- only names this module lists exist, each one CuPy 14 has: ``tests/cupy_standin/cupy14_names.txt``
  holds the public names of ``cupy``, ``cupy.linalg``, ``cupy.random``, ``cupy.cuda`` and of the
  classes it mimics, derived from CuPy v14.0.0's own source by ``derive_names.py``, and
  ``tests/test_cupy_standin.py`` checks every name here against it. A name CuPy lacks (e.g.
  ``errstate``) is an AttributeError saying so; a name CuPy has and the stand-in does not
  implement is an AttributeError saying that instead.

It checks none of what only a GPU shows: speed, memory, cuBLAS rounding, TF32 (see README).
Written for these tests from CuPy's documented behaviour; no CuPy code is copied.
"""
from __future__ import annotations

import numpy as _np
from numpy.lib.mixins import NDArrayOperatorsMixin as _Ops

__version__ = "14.0.0-standin"

_QUIET = dict(all="ignore")


def _cupy14_names():
    """The sections of ``cupy14_names.txt``: namespace -> frozenset of CuPy 14's public names."""
    import os
    sections, current = {}, None
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cupy14_names.txt")
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                current = sections.setdefault(line[1:-1], set())
            else:
                current.add(line)
    return {k: frozenset(v) for k, v in sections.items()}


_CUPY14 = _cupy14_names()


def _missing(namespace, name):
    """The AttributeError for a name the stand-in does not offer, saying whether CuPy 14 has it."""
    if name in _CUPY14.get(namespace, ()):
        return AttributeError(f"{namespace}.{name} exists in CuPy 14 but the stand-in does not implement it; "
                              "add it to tests/cupy_standin/cupy/__init__.py if gaugelit needs it")
    return AttributeError(f"module {namespace!r} (stand-in for CuPy 14) has no attribute {name!r}: CuPy 14 "
                          "has no such name")


def _unwrap(x, where):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        raise TypeError(f"cupy stand-in: a NumPy array was mixed into a device operation ({where}); "
                        "move it with cupy.asarray first")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, where) for v in x)
    return x


def _wrap(x):
    if isinstance(x, _np.ndarray):
        return ndarray(x)
    if isinstance(x, _np.generic):               # reductions: 0-d device arrays, not host scalars
        return ndarray(_np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class ndarray(_Ops):
    """A device array: a NumPy array that refuses to leave the device implicitly."""
    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, a):
        self._a = a

    # -- leaving the device only on purpose ---------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None):
        return self._a.copy()

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __bool__(self):
        return bool(self._a)

    def __complex__(self):
        return complex(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a) if self._a.ndim > 1 else (ndarray(_np.asarray(v)) for v in self._a)

    def __repr__(self):
        return "array(" + repr(self._a)[6:] if repr(self._a).startswith("array(") else f"array({self._a!r})"

    # -- dispatch ------------------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = [_unwrap(x, ufunc.__name__) for x in inputs]
        given = kwargs.get("out")
        if given is not None:
            kwargs["out"] = tuple(_unwrap(o, ufunc.__name__) for o in given)
        with _np.errstate(**_QUIET):
            out = getattr(ufunc, method)(*args, **kwargs)
        if given is not None:              # written in place: the device arrays given
            return given[0] if len(given) == 1 else given
        return _wrap(out)

    def __array_function__(self, func, types, args, kwargs):
        name = getattr(func, "__name__", str(func))
        a, k = _unwrap(list(args), name), {key: _unwrap(v, name) for key, v in kwargs.items()}
        with _np.errstate(**_QUIET):
            return _wrap(func(*a, **k))

    # -- the attributes gaugelit uses ----------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    T = property(lambda self: ndarray(self._a.T))
    device = property(lambda self: cuda.Device(0))

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, "indexing")])

    def __setitem__(self, key, value):
        with _np.errstate(**_QUIET):
            self._a[_unwrap(key, "indexing")] = _unwrap(value, "assignment")

    def _call(self, name, *args, **kwargs):
        a = _unwrap(list(args), name)
        k = {key: _unwrap(v, name) for key, v in kwargs.items()}
        with _np.errstate(**_QUIET):
            return _wrap(getattr(self._a, name)(*a, **k))


for _name in ("astype", "copy", "reshape", "transpose", "sum", "max", "min", "mean", "any", "all", "argmax",
              "argmin", "ravel", "flatten", "nonzero", "fill", "dot", "cumsum", "prod", "std", "var",
              "squeeze", "swapaxes", "clip", "view", "round", "conj", "take", "repeat", "argsort", "sort"):
    setattr(ndarray, _name, (lambda n: lambda self, *a, **k: self._call(n, *a, **k))(_name))


# -- the namespace: only these names exist ----------------------------------------------------------
_FUNCTIONS = """abs absolute add all allclose amax amin any arange argmax argmin argsort array_equal
around atleast_1d atleast_2d broadcast_to ceil clip concatenate copy cos cosh count_nonzero cumsum diag
diagonal diff divide dot einsum empty empty_like equal exp expm1 eye flatnonzero floor full full_like
greater greater_equal hstack identity isclose isfinite isinf isnan less less_equal linspace log log10
log1p log2 logaddexp logical_and logical_not logical_or matmul max maximum mean min minimum multiply
negative nonzero not_equal ones ones_like outer power prod ravel reciprocal repeat reshape round sign
sin sinh sort sqrt square squeeze stack std subtract sum take take_along_axis tanh tile trace transpose
triu tril true_divide unique var vstack where zeros zeros_like""".split()
_TYPES = """float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool_ complex64
complex128 dtype finfo iinfo generic floating integer number newaxis pi e inf nan""".split()

for _name in _FUNCTIONS:
    _f = getattr(_np, _name)

    def _device(*args, __f=_f, __n=_name, **kwargs):
        a, k = _unwrap(list(args), __n), {key: _unwrap(v, __n) for key, v in kwargs.items()}
        with _np.errstate(**_QUIET):
            return _wrap(__f(*a, **k))
    _device.__name__ = _name
    globals()[_name] = _device
for _name in _TYPES:
    globals()[_name] = getattr(_np, _name)


def asarray(a, dtype=None, order=None):
    """Host data to the device (a copy), or a device array as it is (cast if ``dtype``)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == _np.dtype(dtype) else a.astype(dtype)
    return ndarray(_np.array(a, dtype=dtype, order=order or "K"))


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    base = a._a if isinstance(a, ndarray) else a
    return ndarray(_np.array(base, dtype=dtype, copy=copy, order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    return asarray(a, dtype=dtype).copy()


def asnumpy(a, stream=None, order="C", out=None):
    return a.get() if isinstance(a, ndarray) else _np.asarray(a)


def get_array_module(*args):
    return __import__(__name__) if any(isinstance(a, ndarray) for a in args) else _np


def isscalar(x):
    return _np.isscalar(x)


_LINALG = ("norm", "solve", "pinv", "lstsq", "inv", "eigh", "svd", "qr", "det", "cholesky")
_RANDOM = ("standard_normal", "normal", "uniform", "random", "rand", "randn", "randint", "permutation", "choice",
           "shuffle", "seed", "default_rng")
# CuPy 14's Generator has no normal, permutation or choice (cupy/random/_generator_api.pyx)
_GENERATOR = ("standard_normal", "uniform", "random", "integers")


class _Linalg:
    def __dir__(self):
        return list(_LINALG)

    def __getattr__(self, name):
        if name not in _LINALG:
            raise _missing("cupy.linalg", name)
        f = getattr(_np.linalg, name)

        def device(*args, **kwargs):
            a, k = _unwrap(list(args), name), {key: _unwrap(v, name) for key, v in kwargs.items()}
            with _np.errstate(**_QUIET):
                return _wrap(f(*a, **k))
        return device


linalg = _Linalg()


class _Random:
    """cupy.random: streams that differ from NumPy's for the same seed (Philox, offset seed)."""

    def __init__(self):
        self._g = _np.random.Generator(_np.random.Philox(0))

    def default_rng(self, seed=None):
        return _Generator(seed)

    def seed(self, seed=None):
        self._g = _np.random.Generator(_np.random.Philox(None if seed is None else seed + 0x5EED))

    def __dir__(self):
        return list(_RANDOM)

    def __getattr__(self, name):
        if name not in _RANDOM:
            raise _missing("cupy.random", name)
        g = self._g
        legacy = {"rand": lambda *s: g.random(s), "randn": lambda *s: g.standard_normal(s),
                  "randint": g.integers}
        f = legacy.get(name) or getattr(g, name)
        return lambda *a, **k: _wrap(f(*_unwrap(list(a), name), **k))


class _Generator:
    def __init__(self, seed):
        self._g = _np.random.Generator(_np.random.Philox(None if seed is None else int(seed) + 0x5EED))

    def __dir__(self):
        return list(_GENERATOR)

    def __getattr__(self, name):
        if name not in _GENERATOR:
            raise _missing("cupy.random.Generator", name)
        f = getattr(self._g, name)
        return lambda *a, **k: _wrap(f(*_unwrap(list(a), name), **k))


random = _Random()


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1


class _Stream:
    def synchronize(self):
        pass


class _Device:
    def __init__(self, id=0):
        self.id = id

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Cuda:
    runtime = _Runtime()
    Device = _Device

    class Stream:
        null = _Stream()

        def synchronize(self):
            pass


cuda = _Cuda()


def __getattr__(name):
    raise _missing("cupy", name)
