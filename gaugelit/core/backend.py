"""Array backends: NumPy always, CuPy when it imports and sees a device.

Every function in gaugelit takes its array module from its inputs, so one code
path serves the CPU and the GPU. CuPy is never imported at import time.
"""
from __future__ import annotations

import functools
import os

import numpy as np

__all__ = ["array_module", "default_backend", "cupy_available", "to_numpy", "asarray"]

_BACKENDS = ("numpy", "cupy", "auto")


def _is_cupy_array(x) -> bool:
    # Check the type's module instead of importing CuPy: cheap, and safe where CuPy is absent.
    return type(x).__module__.split(".")[0] == "cupy"


def array_module(*arrays, where: str = "arrays"):
    """Return ``numpy`` or ``cupy`` for ``arrays``; ``TypeError`` if they mix the two.

    Mixing would mean a silent host-device copy on every operation, so it is refused.
    """
    kinds = {_is_cupy_array(a) for a in arrays if a is not None and not np.isscalar(a)}
    if len(kinds) > 1:
        raise TypeError(f"{where}: NumPy and CuPy arrays are mixed; move them all to one device "
                        "(gaugelit.to_numpy, or cupy.asarray)")
    if kinds == {True}:
        import cupy
        return cupy
    return np


@functools.lru_cache(maxsize=1)
def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or a CUDA runtime error on a machine without a driver
        return False


def default_backend():
    """The array module constructors use: ``GAUGELIT_BACKEND=numpy|cupy|auto`` (default ``auto``).

    ``auto`` picks CuPy when it imports and sees a device, NumPy otherwise.
    """
    name = os.environ.get("GAUGELIT_BACKEND", "auto").strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f"GAUGELIT_BACKEND={name!r}: expected one of {', '.join(_BACKENDS)}")
    if name == "numpy" or (name == "auto" and not cupy_available()):
        return np
    if name == "cupy" and not cupy_available():
        raise RuntimeError("GAUGELIT_BACKEND=cupy, but CuPy does not import or sees no CUDA device")
    import cupy
    return cupy


def to_numpy(x):
    """A NumPy copy of ``x`` (a no-op for NumPy arrays); works on lists of arrays too."""
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(a) for a in x)
    if _is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def asarray(x, xp=None, dtype=None):
    """Move ``x`` to backend ``xp`` (default: :func:`default_backend`)."""
    xp = xp or default_backend()
    if xp is np:
        return np.asarray(to_numpy(x), dtype=dtype)
    return xp.asarray(x, dtype=dtype)
