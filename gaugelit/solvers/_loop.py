"""What every minimum-norm solver shares: the result, the argument check, Algorithm 1's loop and
its stopping rule, and the warning when the loop ran out of updates."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..core.checks import integer, real
from ..core.gauge import _quiet
from ..core.network import LayeredNet

__all__ = ["MinNormResult", "GraphMinNormResult", "ConvergenceWarning", "METHODS", "step_tolerance"]

METHODS = ("block", "multiplicative")


class ConvergenceWarning(UserWarning):
    """The solver stopped at ``max_iter`` before its stopping rule held."""


@dataclass
class MinNormResult:
    """The outcome of :func:`minnorm`.

    ``objective[t]`` and ``gamma[t]`` are ``sum |W|^p`` and the imbalance (eq. 20) before the first
    update (``t = 0``) and after update ``t``; ``iterations`` updates were applied. ``passes``
    counts the reads of ``M`` by matrix-vector products, in units of the whole network.
    """
    net: LayeredNet
    factors: list
    iterations: int
    objective: np.ndarray
    gamma: np.ndarray
    dead_units: list
    method: str
    converged: bool
    passes: float = field(default=0.0)


class GraphMinNormResult(MinNormResult):
    """:class:`MinNormResult` for a graph: ``factors[g]`` per group (ones for fixed groups),
    ``dead_units[g]`` per group, plus ``graph`` and ``fixed_units`` (name, size, reason)."""

    def __init__(self, *args, graph=None, fixed_units=None, **kw):
        super().__init__(*args, **kw)
        self.graph, self.fixed_units = graph, fixed_units


def _solver_args(method, delta, gamma_tol, max_iter, extra=()):
    """The solvers' common arguments, checked: ``(method, delta, gamma_tol, max_iter)``.

    ``delta=None`` with ``gamma_tol=None`` asks for no stopping rule: exactly ``max_iter`` updates
    (a fixed budget, as ENorm's one sweep after each training step), without a
    :class:`ConvergenceWarning` -- no rule was asked to hold, so none failed."""
    method = METHODS[0] if method is None else method
    if method not in METHODS + extra:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if delta is not None:
        delta = real(delta, "delta", low=0, low_open=True)
    if gamma_tol is not None:
        gamma_tol = real(gamma_tol, "gamma_tol", low=0, low_open=True)
    return method, delta, gamma_tol, integer(max_iter, "max_iter", low=0)


def step_tolerance(delta: float, p: float) -> float:
    """The delta rule's bound on ``max_i |a_i - 1|`` at exponent ``p``: ``delta * min(1, 2 / p)``.

    Algorithm 1 moves ``log a_i`` by ``log(out_i / in_i) / (4p)``, so a step below ``delta`` bounds
    the imbalance by about ``tanh(2 p delta)``: at large p a small step no longer means near the
    minimum (p = 50, delta = 1e-3: gamma 0.07, the objective 0.6% above it). Scaled by ``2 / p``
    above p = 2, the rule bounds gamma by about ``tanh(4 delta)`` at every p, as at p = 2; at
    ``p <= 2`` it is ``delta`` itself (the paper's rule, and its numbers, unchanged); None (no delta
    rule) stays None."""
    return None if delta is None else delta * min(1.0, 2.0 / p)


def _iterate(step, record, start, *, xp, delta, gamma_tol, max_iter):
    """Algorithm 1's loop, for every solver: ``step()`` applies one update and returns
    ``max_i |a_i - 1|``, ``record()`` gives ``(objective, gamma)`` after it, ``start`` the two before
    the first. Stops when gamma < ``gamma_tol`` if that is given, else when an update moves every
    factor by less than ``delta`` (that update applied and counted), or at ``max_iter`` updates
    (with neither rule, ``delta`` and ``gamma_tol`` None, after exactly ``max_iter``).
    Returns ``(objective record, gamma record, updates, converged)``; ``converged`` is None when a
    value turned non-finite (factors out of range: the caller decides what follows)."""
    objective, gamma = [start[0]], [start[1]]
    it = 0
    while True:
        if gamma_tol is not None and gamma[-1] < gamma_tol:
            return objective, gamma, it, True
        if it >= max_iter:
            return objective, gamma, it, False
        with _quiet(xp):                   # out-of-range values show as non-finite records below
            step_size = step()
            it += 1
            o, g = record()
        objective.append(o)
        gamma.append(g)
        if not (math.isfinite(o) and math.isfinite(step_size) and math.isfinite(g)):
            return objective, gamma, it, None
        if gamma_tol is None and delta is not None and step_size < delta:
            return objective, gamma, it, True


def _warn_unconverged(where, delta, gamma_tol, max_iter, gamma):
    if delta is None and gamma_tol is None:      # a fixed budget: max_iter updates were asked for
        return
    rule = f"gamma < {gamma_tol}" if gamma_tol is not None else f"max|a-1| < {delta:g}"
    warnings.warn(f"minnorm ({where}): {rule} not reached in {max_iter} updates (gamma = {gamma:.3g})",
                  ConvergenceWarning, stacklevel=4)
