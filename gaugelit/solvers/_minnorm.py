"""The front door of the minimum-norm solvers: :func:`minnorm` takes any network gaugelit knows."""
from __future__ import annotations

from ..core.graph import DenseNet, GaugeGraph
from ..core.network import LayeredNet
from ._chain import minnorm_chain
from ._graph import minnorm_graph
from ._loop import MinNormResult

__all__ = ["minnorm"]


def minnorm(net, p: float = 2.0, *, method: str | None = None, delta: float = 1e-3,
            gamma_tol: float | None = None, max_iter: int = 10_000) -> MinNormResult:
    """Rescale ``net`` to the minimum of ``sum_ij |W_ij|^p`` over its gauge orbit.

    Parameters
    ----------
    p : the norm exponent, any finite ``p > 0``.
    method : ``"block"`` (default, the fastest exact method) or ``"multiplicative"`` (Algorithm 1).
    delta : stop once an update changes every factor by less than ``delta``: ``max_i |a_i - 1| < delta``
        (Algorithm 1's rule; the last update is applied and counted).
    gamma_tol : if given, replaces the delta rule: iterate until the imbalance (eq. 20) ``< gamma_tol``.
    max_iter : at most this many updates; a :class:`ConvergenceWarning` says when it was reached.

    Dead hidden units (all incoming or all outgoing weights zero) keep ``a = 1``; they are listed
    in ``.dead_units`` (one index array per hidden layer) and left out of gamma.

    ``net`` may be a :class:`~gaugelit.core.network.LayeredNet` (a chain), a
    :class:`~gaugelit.core.graph.GaugeGraph` (any feedforward network) or a
    :class:`~gaugelit.core.graph.DenseNet` (the paper's general ``W``, eq. 2); a graph's result is a
    :class:`GraphMinNormResult` (factors and dead units per group).
    """
    kw = dict(method=method, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter)
    if isinstance(net, LayeredNet):
        return minnorm_chain(net, p, **kw)
    if isinstance(net, DenseNet):
        net = GaugeGraph.from_dense(net)
    if not isinstance(net, GaugeGraph):
        raise TypeError(f"minnorm: net must be a LayeredNet, GaugeGraph or DenseNet, got {type(net).__name__}")
    return minnorm_graph(net, p, **kw)
