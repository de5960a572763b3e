"""The front door of the minimum-norm solvers: :func:`minnorm` takes any network gaugelit knows.

Every network is a :class:`~gaugelit.core.graph.GaugeGraph` (a chain is the graph of its layers) and
every solve runs the same steps (:mod:`._steps`) in the same loop (:func:`._loop._iterate`). Which
*state* they drive is the only choice: a chain whose ``|W|^p`` its dtype holds takes the chain's
state (:mod:`._chain`, the fast path), every other graph, and a chain whose sums leave the range,
the graph's scale-safe state (:mod:`._graph`), repeated on a prebalanced float64 copy when weights
negligible at the start weigh at the answer.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.gauge import _abs_pow, _dead_units, _quiet, _rescale_trusted
from ..core.graph import DenseNet, GaugeGraph
from ..core.network import LayeredNet, check_p
from ._chain import (
    ChainState,
    chain_healthy,
    factors_in_dtype,
    fast_rescale_safe,
    lost_entries_matter,
    rescale_in_logs,
    unhealthy_layer,
)
from ._graph import GraphState, prebalanced
from ._loop import GraphMinNormResult, MinNormResult, _iterate, _solver_args, _warn_unconverged, step_tolerance
from ._lpq import check_q, solve_lpq
from ._steps import block_step, enorm_sweep, multiplicative_step

__all__ = ["minnorm", "minnorm_graph", "enorm_style"]

#: The step each method takes; ``"enorm-style"`` is the baseline of :func:`enorm_style`.
_STEPS = {"block": block_step, "multiplicative": multiplicative_step, "enorm-style": enorm_sweep}


def minnorm(net, p: float = 2.0, q: float | None = None, *, method: str | None = None, delta: float | None = 1e-3,
            gamma_tol: float | None = None, max_iter: int = 10_000) -> MinNormResult:
    """Rescale ``net`` to the minimum of ``sum_ij |W_ij|^p`` over its gauge orbit, or with ``q`` of the
    l_{p,q} norm ``sum_i (sum_j |W_ij|^p)^(q/p)`` (rows: the incoming weights of every hidden and output
    unit, biases not counted; Saul, TMLR 2023).

    Parameters
    ----------
    p : the norm exponent, any finite ``p > 0``.
    q : the outer exponent, any finite ``q > 0``; None (default) or ``q == p``: the l_p objective,
        solved as without it. For ``q != p`` the records are ``||W||_{p,q}^q`` and the l_{p,q}
        imbalance, and the solve runs in float64 (:mod:`._lpq`).
    method : ``"block"`` (default, the fastest exact method) or ``"multiplicative"`` (Algorithm 1).
    delta : stop once an update changes every factor by less than ``delta``: ``max_i |a_i - 1| < delta``
        (Algorithm 1's rule; the last update is applied and counted). Above p = 2 the bound is
        ``delta * 2 / p`` (:func:`~._loop.step_tolerance`): Algorithm 1's step shrinks as ``1/p``,
        and so scaled the rule stops at the same imbalance (gamma below about ``tanh(4 delta)``)
        and as near the minimum at every p; at ``p <= 2`` it is the paper's rule unchanged.
        ``delta=None`` (and no ``gamma_tol``): no stopping rule, exactly ``max_iter`` updates and no
        warning -- a fixed budget, e.g. ENorm as it is used in training (``method="enorm-style",
        delta=None, max_iter=1``: one sweep); ``converged`` is then False (no rule was tested).
    gamma_tol : if given, replaces the delta rule: iterate until the imbalance (eq. 20) ``< gamma_tol``.
    max_iter : at most this many updates; a :class:`ConvergenceWarning` says when it was reached
        before the rule held.

    Dead hidden units (all incoming or all outgoing weights zero) keep ``a = 1``; they are listed
    in ``.dead_units`` (one index array per hidden layer) and left out of gamma.

    ``net`` may be a :class:`~gaugelit.core.network.LayeredNet` (a chain), a
    :class:`~gaugelit.core.graph.GaugeGraph` (any feedforward network) or a
    :class:`~gaugelit.core.graph.DenseNet` (the paper's general ``W``, eq. 2); a graph's result is a
    :class:`GraphMinNormResult` (factors and dead units per group).
    """
    kw = dict(method=method, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter, q=q)
    if isinstance(net, LayeredNet):
        res = _solve(GaugeGraph.from_layered(net), p, net=net, **kw)
        return MinNormResult(net=res.net, factors=res.factors[1:-1], iterations=res.iterations,
                             objective=res.objective, gamma=res.gamma, dead_units=res.dead_units[1:-1],
                             method=res.method, converged=res.converged, passes=res.passes)
    if isinstance(net, DenseNet):
        net = GaugeGraph.from_dense(net)
    if not isinstance(net, GaugeGraph):
        raise TypeError(f"minnorm: net must be a LayeredNet, GaugeGraph or DenseNet, got {type(net).__name__}")
    return _solve(net, p, **kw)


def minnorm_graph(graph: GaugeGraph, p: float = 2.0, q: float | None = None, *, method: str | None = None,
                  delta: float | None = 1e-3, gamma_tol: float | None = None,
                  max_iter: int = 10_000) -> GraphMinNormResult:
    """:func:`minnorm` on a graph; same arguments, rules and result.

    ``.factors[g]`` holds group g's factors (ones for fixed groups), ``.dead_units[g]`` its dead units,
    ``.net`` the rescaled network when the graph knows how to build it (``graph.rescaled``), else None.
    """
    return _solve(graph, p, method=method, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter, q=q)


def enorm_style(graph: GaugeGraph, p: float = 2.0, *, gamma_tol: float = 1e-6,
                max_iter: int = 100_000) -> GraphMinNormResult:
    """The ENorm-style baseline, written from its paper (Stock et al., "Equi-normalization of neural
    networks", ICLR 2019): one balancing sweep per call -- each hidden group in turn set to its
    exact minimiser -- iterated here until gamma < ``gamma_tol``. Unlike the released ENorm it
    rescales every hidden group (also the last), any p, and the biases with their units (the graph's
    ``rescaled``), so it is the fair sweep-for-sweep baseline of the block method.
    ``iterations`` counts sweeps."""
    return _solve(graph, p, method="enorm-style", delta=1e-3, gamma_tol=gamma_tol, max_iter=max_iter)


def _solve(graph: GaugeGraph, p, *, method, delta, gamma_tol, max_iter, net: LayeredNet | None = None, q=None):
    """The solve of every front door; ``net``: the chain the graph was built from, whose rescaled
    copy the result carries; ``q`` (None: ``p``) the l_{p,q} norm's outer exponent."""
    p = check_p(p)
    q = check_q(q, p)
    method, delta, gamma_tol, max_iter = _solver_args(method, delta, gamma_tol, max_iter, ("enorm-style",))
    graph.check()
    if q != p:      # the l_{p,q} solvers have their own stopping rule (book/lpq.md)
        return solve_lpq(graph, p, q, method=method, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter, net=net)
    delta = step_tolerance(delta, p)       # the delta rule means near the minimum at every p
    step, passes = _STEPS[method], 0.0
    weights = _chain_weights(graph)
    if weights is not None:
        res, passes = _solve_chain(graph, weights, p, step, method, delta, gamma_tol, max_iter, net)
        if res is not None:
            return res
    return _solve_graph(graph, p, step, method, delta, gamma_tol, max_iter, net, passes)


def _chain_weights(graph: GaugeGraph):
    """The weight matrices of a chain: input group, free hidden groups in order, output group, one
    dense block between consecutive groups; None for any other graph."""
    groups, blocks = graph.groups, graph.blocks
    if len(groups) < 3 or len(blocks) != len(groups) - 1:
        return None
    if groups[0].free or groups[-1].free or not all(g.free for g in groups[1:-1]):
        return None
    if any(b.src != l or b.dst != l + 1 or b.weight.shape[2] != 1 for l, b in enumerate(blocks)):
        return None
    return [b.weight[:, :, 0] for b in blocks]


def _solve_chain(graph, weights, p, step, method, delta, gamma_tol, max_iter, net):
    """The chain's state: ``(result, passes)``, the result None when the sums leave the dtype's
    range at the start or at the answer (the graph's state then solves it)."""
    xp, dtype = graph.xp, graph.dtype
    with _quiet(xp):                       # overflow and underflow are detected, not warned about
        M = [_abs_pow(W, p, xp)[None] for W in weights]
        st = ChainState(M, p, xp, lambda: [d[None] for d in _dead_units(weights)])
        healthy = chain_healthy(st)
    if not healthy:
        return None, st.passes
    with _quiet(xp):
        mass0 = st.layer_objectives()
        start = sum(float(v) for v in mass0[:, 0]), float(st.gamma()[0])
    objective, gamma, it, converged = _iterate(
        lambda: float(step(st)[0]), lambda: (float(st.objective()[0]), float(st.gamma()[0])), start,
        xp=xp, delta=delta, gamma_tol=gamma_tol, max_iter=max_iter)
    # The products must be right at the answer, not only at the start: entries of M that
    # underflowed there, or sums that underflow here, would make the objective and gamma those
    # of another F -- small gamma, wrong answer, no warning.
    if converged is None or unhealthy_layer(st) is not None or lost_entries_matter(st, M, weights):
        return None, st.passes
    if not converged:
        _warn_unconverged(method, delta, gamma_tol, max_iter, gamma[-1])
    u = [v[0] for v in st.u[1:-1]]
    factors = factors_in_dtype(u, dtype, xp, p)
    out = None
    if net is None:
        out = graph.rescaled([xp.ones(graph.groups[0].size, dtype=dtype)] + factors +
                             [xp.ones(graph.groups[-1].size, dtype=dtype)]) if graph.rescaled else None
    elif fast_rescale_safe(st, mass0, dtype, p):
        out = _rescale_trusted(net, factors)
        if not all(bool(xp.isfinite(b).all()) for b in out.biases):   # biases are not in the bound
            out = None
    if out is None and net is not None:
        out = rescale_in_logs(net, u, p)
    dead = [xp.zeros(n, dtype=bool) for n in (f.shape[0] for f in factors)] if st.dead is None else \
        [d[0] for d in st.dead]
    none = xp.zeros(0, dtype=np.int64)
    ones = [xp.ones(graph.groups[g].size, dtype=dtype) for g in (0, -1)]
    return GraphMinNormResult(net=out, factors=[ones[0]] + factors + [ones[1]], iterations=it,
                              objective=np.array(objective), gamma=np.array(gamma),
                              dead_units=[none] + [xp.nonzero(d)[0] for d in dead] + [none], method=method,
                              converged=converged, passes=st.passes, graph=graph,
                              fixed_units=graph.fixed_units()), st.passes


def _solve_graph(graph, p, step, method, delta, gamma_tol, max_iter, net, passes):
    """The graph's state, and on its prebalanced float64 copy when weights whose ``|W|^p`` underflows
    next to their block's largest may weigh at the minimum of an extreme gauge (units many decades
    apart): ``iterations`` and the records are then the repeat's, ``passes`` the sum; if they still
    may, FloatingPointError."""
    xp = graph.xp
    st, objective, gamma, it, converged = _iterate_graph(graph, p, step, delta, gamma_tol, max_iter,
                                                         watch_lost=True)
    passes, u = passes + st.passes, None
    if converged is None or (any(st.lost) and st.lost_entries_matter()):
        # values out of range, or weights negligible at the start that weigh at the answer
        copy, u, offsets = prebalanced(graph)
        st, objective, gamma, it, converged = _iterate_graph(copy, p, step, delta, gamma_tol, max_iter, offsets)
        passes += st.passes
        if converged is None:
            raise FloatingPointError(f"minnorm: non-finite objective after update {it} on the graph "
                                     f"({graph.dtype}, p={p:g}), also from a prebalanced float64 copy")
        still = st.lost_entries_matter() if any(st.lost) else []
        if still:    # not seen in tests: the prebalanced copy keeps what weighs at the minimum
            raise FloatingPointError(f"minnorm: near the minimum, weights too small for |W|^p to hold in "
                                     f"float64 at p={p:g} weigh in the objective (blocks {still}); use a p "
                                     "closer to 1")
        u = [a + b for a, b in zip(u, st.log_factors())]
    if not converged:
        _warn_unconverged(f"{method}, graph", delta, gamma_tol, max_iter, gamma[-1])
    if net is not None:              # a chain: its layers' factors and network, formed in logs
        u = st.log_factors() if u is None else u
        hidden = factors_in_dtype(u[1:-1], graph.dtype, xp, p)
        factors = [xp.ones(graph.groups[0].size, dtype=graph.dtype)] + hidden + \
            [xp.ones(graph.groups[-1].size, dtype=graph.dtype)]
        out = rescale_in_logs(net, u[1:-1], p)
    else:
        with _quiet(xp):                              # factors beyond the dtype: the error below
            factors = st.factors() if u is None else [xp.exp(a).astype(graph.dtype) for a in u]
        for g, a in enumerate(factors):
            if not bool(xp.all(xp.isfinite(a) & (a > 0))):
                raise FloatingPointError(f"minnorm: factors of group {graph.groups[g].name!r} overflow "
                                         f"{graph.dtype}; the network's scales are too far apart for it")
        out = graph.rescaled(factors) if graph.rescaled is not None else None
    dead = [xp.zeros(0, dtype=np.int64) if l is None else xp.nonzero(~l)[0] for l in st.live]
    return GraphMinNormResult(net=out, factors=factors, iterations=it, objective=np.array(objective),
                              gamma=np.array(gamma), dead_units=dead, method=method,
                              converged=converged, passes=passes,
                              graph=graph, fixed_units=graph.fixed_units())


#: With ``watch_lost``, how often (in updates) the loop asks whether lost entries weigh.
LOST_CHECK_EVERY = 50


def _iterate_graph(graph: GaugeGraph, p, step, delta, gamma_tol, max_iter, offsets=None, watch_lost=False):
    """The graph's state and its loop: ``(state, objective record, gamma record, updates, converged)``,
    with ``converged = None`` when a value turned non-finite or a live unit's sums underflowed at the
    start; ``offsets``: log-scales the blocks were divided by (:func:`._graph.prebalanced`).

    ``watch_lost``: also ``converged = None`` as soon as entries lost at the start weigh in a live
    unit's sums (at the start, then every :data:`LOST_CHECK_EVERY` updates): the products then
    belong to another F, on which the block method may cycle (gamma stuck near 3e-6 for all of
    ``max_iter``, issue 22), and the prebalanced copy is what solves it."""
    st = GraphState(graph, p, offsets)
    if st.sums_lost:
        return st, [math.nan], [math.nan], 0, None
    if watch_lost and any(st.lost):
        with _quiet(st.xp):
            if st.lost_entries_matter():
                return st, [math.nan], [math.nan], 0, None
        inner, count = step, [0]

        def step(s):
            count[0] += 1
            if count[0] % LOST_CHECK_EVERY == 0 and s.lost_entries_matter():
                return math.nan              # non-finite: the loop stops, the caller prebalances
            return inner(s)
    with _quiet(st.xp):
        start = st.objective(), st.gamma()
    return (st,) + _iterate(lambda: step(st), lambda: (st.objective(), st.gamma()), start, xp=st.xp,
                            delta=delta, gamma_tol=gamma_tol, max_iter=max_iter)
