"""The minimum-norm solvers: :func:`minnorm` is the one front door, for chains, graphs and the
paper's dense ``W``; Algorithm 1 (``method="multiplicative"``) and the exact block method, with one
loop, one stopping rule and one result for every network."""
from ._chain import layer_shift
from ._graph import GraphMinNormResult, colour_groups, enorm_style, minnorm_graph
from ._loop import METHODS, ConvergenceWarning, MinNormResult
from ._minnorm import minnorm

__all__ = ["minnorm", "MinNormResult", "GraphMinNormResult", "ConvergenceWarning", "METHODS",
           "minnorm_graph", "enorm_style", "colour_groups", "layer_shift"]
