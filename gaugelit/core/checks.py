"""Argument checks, one helper per kind, used where an argument enters a public function.

The policy (also in the README's bad-input paragraph):

- real numbers: Python ``int``/``float`` and NumPy real scalars are taken and converted to ``float``;
  ``bool``, strings, complex numbers, arrays and NaN are refused, and so is a value out of range.
- integers (counts, sizes, seeds): Python ``int`` and NumPy integers, and floats whose value is a
  whole number (``3.0``); ``2.7``, NaN, inf, ``bool`` and strings are refused, never truncated.
- switches: ``True``/``False`` (or NumPy booleans) only; ``"no"``, ``0`` and ``1`` are refused.
- dtypes: float32 or float64, given as a name, a NumPy type or a ``numpy.dtype``.
- arrays: ``numpy.matrix`` (whose ``*`` and shapes differ) and masked arrays (whose mask the
  arithmetic ignores) are refused with what to pass instead.

Every error is a ``TypeError`` (wrong kind) or ``ValueError`` (wrong value) whose message names the
argument and the value it got.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["real", "integer", "switch", "float_dtype", "plain_array", "FLOAT_DTYPES"]

FLOAT_DTYPES = ("float32", "float64")


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def real(value, name: str, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """``value`` as a float, refused unless it is a real number in the range given.

    ``low``/``high`` bound it (inclusive unless ``low_open``/``high_open``); NaN and infinities
    are refused unless ``finite=False`` (the caller then checks them itself)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {_show(value)} ({type(value).__name__})")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value}")
    kind = "finite and " if finite else ""
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {kind}{'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {kind}{'<' if high_open else '<='} {high:g}, got {value:g}")
    return value


def integer(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int, refused unless it is a whole number in ``[low, high]``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {_show(value)}")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (numbers.Integral, np.integer)):
        value = int(value)
    elif isinstance(value, (numbers.Real, np.floating)):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    else:
        raise TypeError(f"{name} must be an integer, got {_show(value)} ({type(value).__name__})")
    if low is not None and value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be an integer <= {high}, got {value}")
    return value


def switch(value, name: str) -> bool:
    """``True`` or ``False`` (or a NumPy boolean); anything else is refused, not taken as truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_show(value)} ({type(value).__name__})")


def float_dtype(value, name: str = "dtype") -> str:
    """The name (``"float32"``/``"float64"``) of a floating dtype given as a name or a type."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {_show(value)}") from None
    if value is None or dt.name not in FLOAT_DTYPES:
        raise TypeError(f"{name}: dtype {_show(value)} is not supported; use float32 or float64")
    return dt.name


def plain_array(a, name: str):
    """Refuse the array-likes that look like arrays but compute differently; return ``a``."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name}: masked arrays are not supported (the arithmetic would ignore the "
                        f"mask); pass a.filled(value) or drop the masked rows")
    if isinstance(a, np.matrix):
        raise TypeError(f"{name}: numpy.matrix is not supported (its products and shapes differ "
                        f"from arrays'); pass np.asarray({name.split('[')[0]})")
    return a
