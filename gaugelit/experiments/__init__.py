"""Section 4's experiments: the grid of Figs. 3-4 and its run files, the sweep that runs it, the
figures and the claims drawn from it (statistics, provenance, the claim-3 ablation), the toy
problem of the soft-gauge chapter, and the data sets. Nothing below this wing imports it."""
from . import ablation, claims, data, provenance, stats, toy
from ._sweep import *  # noqa: F403 -- the grid, the run files, the sweep and the figures
from ._sweep import __all__ as _sweep_all
from .data import DATASETS, load_dataset

__all__ = list(_sweep_all) + ["DATASETS", "load_dataset", "ablation", "claims", "data", "provenance",
                              "stats", "toy"]
