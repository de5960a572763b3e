"""gaugelit: the minimum-norm gauge for deep learning, executed.

Layered ReLU networks, their rescaling (gauge) symmetry, the minimum-norm solvers of
Algorithm 1 and faster exact ones, on NumPy or CuPy from one code path.

The package is layered; each layer imports only those below it:

- :mod:`gaugelit.core`: the network, the gauge graph, the gauge, backends, checks, environment;
- :mod:`gaugelit.solvers`: :func:`minnorm` and the solvers behind it;
- :mod:`gaugelit.training`: steps, ``train``, ``train_many``, flows, soft gauge fixing;
- :mod:`gaugelit.experiments`: section 4's grid, sweep, figures, claims, data;
- :mod:`gaugelit.torch` and :mod:`gaugelit.symbolic`: leaves nothing else imports.

This face re-exports the public names of the first four.
"""
from ._version import __version__
from .core import (
    ARCHITECTURES,
    DenseNet,
    GaugeGraph,
    LayeredNet,
    array_module,
    asarray,
    balance_gaps,
    cupy_available,
    data_dir,
    dead_units,
    default_backend,
    he_init,
    imbalance,
    pnorm,
    rescale,
    results_dir,
    scale,
    sublevel_log_bounds,
    to_numpy,
    unit_norms,
)
from .experiments import load_dataset
from .experiments.stats import paired_comparison
from .solvers import METHODS, ConvergenceWarning, GraphMinNormResult, MinNormResult, minnorm
from .training import (
    EGD_BIASES,
    GAUGE_MODES,
    FlowResult,
    GaugeCoordinates,
    TrainingDiverged,
    balance_rate,
    egd_bias_scale,
    egd_step,
    evaluate,
    flow_velocity,
    gauge_coordinates,
    generator_gram,
    integrate_flow,
    loss_and_grads,
    matched_lr_scale,
    regularizer,
    rescaling_generators,
    sgd_step,
    soft_gauge_flow,
    soft_gauge_penalty,
    train,
    train_many,
)

__all__ = [
    "__version__",
    "ARCHITECTURES", "LayeredNet", "he_init",
    "rescale", "pnorm", "unit_norms", "dead_units", "imbalance", "balance_gaps", "sublevel_log_bounds",
    "minnorm", "MinNormResult", "GraphMinNormResult", "METHODS", "ConvergenceWarning", "GaugeGraph", "DenseNet",
    "train", "train_many", "GAUGE_MODES", "matched_lr_scale",
    "TrainingDiverged", "loss_and_grads", "regularizer", "sgd_step", "egd_step", "evaluate",
    "EGD_BIASES", "egd_bias_scale",
    "flow_velocity", "balance_rate", "integrate_flow", "FlowResult",
    "soft_gauge_penalty", "soft_gauge_flow", "gauge_coordinates", "GaugeCoordinates",
    "rescaling_generators", "generator_gram",
    "array_module", "asarray", "cupy_available", "default_backend", "to_numpy",
    "scale", "data_dir", "results_dir", "load_dataset", "paired_comparison",
]
