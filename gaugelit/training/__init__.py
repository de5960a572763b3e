"""Learning (section 4 and eqs. 21-42): the log-loss and its gradients, the SGD and EGD steps,
``train`` and ``train_many`` (one loop, one step for one model or many) with optional gauge fixing,
the gradient flows and soft gauge fixing."""
from .flows import (
    FlowResult,
    balance_rate,
    flow_velocity,
    integrate_flow,
    lpq_balance_gaps,
    lpq_imbalance,
    relu_pattern,
)
from .loop import GAUGE_MODES, gauge_mode, matched_lr_scale, train, train_many
from .soft_gauge import (
    GaugeCoordinates,
    gauge_coordinates,
    generator_gram,
    rescaling_generators,
    soft_gauge_flow,
    soft_gauge_penalty,
)
from .steps import (
    EGD_BIASES,
    OPTIMIZERS,
    TrainingDiverged,
    egd_bias_scale,
    egd_step,
    evaluate,
    loss_and_grads,
    regularizer,
    sgd_step,
)

__all__ = ["train", "train_many", "GAUGE_MODES", "gauge_mode", "matched_lr_scale",
           "TrainingDiverged", "loss_and_grads", "regularizer", "sgd_step", "egd_step",
           "evaluate", "OPTIMIZERS", "EGD_BIASES", "egd_bias_scale",
           "flow_velocity", "balance_rate", "integrate_flow", "FlowResult", "relu_pattern",
           "lpq_balance_gaps", "lpq_imbalance",
           "soft_gauge_penalty", "soft_gauge_flow", "gauge_coordinates", "GaugeCoordinates",
           "rescaling_generators", "generator_gram"]
