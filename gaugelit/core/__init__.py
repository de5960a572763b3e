"""The core: the network (eq. 2), the gauge graph of any feedforward network, the gauge itself
(rescalings, the p-norm, balance, eqs. 5-9, 17-20, 24), array backends, argument checks and the
environment. It imports nothing else of gaugelit."""
from .backend import array_module, asarray, cupy_available, default_backend, to_numpy
from .environment import data_dir, results_dir, scale
from .gauge import balance_gaps, dead_units, imbalance, pnorm, rescale, sublevel_log_bounds, unit_norms
from .graph import Block, DenseNet, GaugeGraph, Group
from .network import ARCHITECTURES, LayeredNet, check_inputs, check_p, he_init

__all__ = ["LayeredNet", "he_init", "ARCHITECTURES", "check_p", "check_inputs",
           "GaugeGraph", "Group", "Block", "DenseNet",
           "rescale", "pnorm", "unit_norms", "dead_units", "imbalance", "balance_gaps", "sublevel_log_bounds",
           "array_module", "asarray", "cupy_available", "default_backend", "to_numpy",
           "scale", "data_dir", "results_dir"]
