"""The minimum-norm solvers: :func:`minnorm` is the one front door, for chains, graphs and the
paper's dense ``W``; Algorithm 1 (``method="multiplicative"``) and the exact block method, with one
set of steps, one loop, one stopping rule and one result for every network. A chain is the graph of
its layers; its own state is the fast path inside the solver (:mod:`._chain`)."""
from ._chain import algorithm1_in_log_domain, layer_shift
from ._graph import colour_groups
from ._loop import METHODS, ConvergenceWarning, GraphMinNormResult, MinNormResult
from ._lpq import lpq_kappa, lpq_norm
from ._minnorm import enorm_style, minnorm, minnorm_graph

__all__ = ["minnorm", "MinNormResult", "GraphMinNormResult", "ConvergenceWarning", "METHODS",
           "minnorm_graph", "enorm_style", "colour_groups", "layer_shift", "algorithm1_in_log_domain",
           "lpq_norm", "lpq_kappa"]
