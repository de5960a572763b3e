"""gaugelit: the minimum-norm gauge for deep learning, executed.

Layered ReLU networks, their rescaling (gauge) symmetry, the minimum-norm solvers of
Algorithm 1 and faster exact ones, on NumPy or CuPy from one code path.
"""
from .batched import train_many
from .backend import array_module, asarray, cupy_available, default_backend, to_numpy
from .data import load_dataset
from .flows import FlowResult, balance_rate, flow_velocity, integrate_flow
from .graph import DenseNet, GaugeGraph
from .gauge import balance_gaps, dead_units, imbalance, pnorm, rescale, sublevel_log_bounds, unit_norms
from .network import ARCHITECTURES, LayeredNet, he_init
from .settings import data_dir, scale
from .soft_gauge import (GaugeCoordinates, gauge_coordinates, generator_gram, rescaling_generators,
                         soft_gauge_flow, soft_gauge_penalty)
from .solvers import METHODS, ConvergenceWarning, MinNormResult, minnorm
from .training import (EGD_BIASES, TrainingDiverged, egd_bias_scale, egd_step, evaluate, loss_and_grads,
                       regularizer, sgd_step, train)

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "LayeredNet", "he_init",
    "rescale", "pnorm", "unit_norms", "dead_units", "imbalance", "balance_gaps", "sublevel_log_bounds",
    "minnorm", "MinNormResult", "METHODS", "ConvergenceWarning", "GaugeGraph", "DenseNet",
    "train", "train_many", "TrainingDiverged", "loss_and_grads", "regularizer", "sgd_step", "egd_step", "evaluate",
    "EGD_BIASES", "egd_bias_scale",
    "flow_velocity", "balance_rate", "integrate_flow", "FlowResult",
    "soft_gauge_penalty", "soft_gauge_flow", "gauge_coordinates", "GaugeCoordinates",
    "rescaling_generators", "generator_gram",
    "array_module", "asarray", "cupy_available", "default_backend", "to_numpy",
    "scale", "data_dir", "load_dataset",
]
