"""The run records read back: per-epoch curves over seeds, the last epoch's table, the paired
differences with minus without gauge fixing (the evidence of :mod:`~gaugelit.experiments.claims`),
the share of a gap that balancing removes, and Figs. 3-4 redrawn from them."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.network import ARCHITECTURES
from ..training import OPTIMIZERS
from .data import DATASETS
from .runfiles import METRICS

__all__ = ["curves", "final_table", "paired_differences", "balancing_share", "plot_learning_curves"]

def _group_key(record):
    s = record["settings"]
    return s["dataset"], s["architecture"], s["optimizer"], s["gauge_fix"]


def curves(records: list[dict], metric: str) -> dict[tuple, dict]:
    """Per ``(dataset, architecture, optimizer, gauge_fix)``: the epochs, the curves of ``metric``
    for each seed (``values``, seeds x epochs), their mean, min and max, and the seeds."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    groups: dict[tuple, list] = {}
    for record in records:
        groups.setdefault(_group_key(record), []).append(record)
    table = {}
    for key, group in sorted(groups.items()):
        group.sort(key=lambda r: r["settings"]["seed"])
        epochs = {tuple(r["history"]["epoch"]) for r in group}
        if len(epochs) != 1:
            raise ValueError(f"{key}: runs with different epochs cannot be averaged")
        values = np.array([r["history"][metric] for r in group], dtype=float)
        table[key] = {"epoch": np.array(epochs.pop()), "values": values, "mean": values.mean(axis=0),
                      "min": values.min(axis=0), "max": values.max(axis=0),
                      "seeds": [r["settings"]["seed"] for r in group]}
    return table


def _pairs(records: list[dict], value: Callable[[dict], float]) -> dict[tuple, list[dict]]:
    """Per ``(dataset, architecture, optimizer)``, one ``{False: v, True: v}`` per seed run both ways
    (in seed order), ``v = value(history)`` of the run without and with gauge fixing."""
    by_seed: dict[tuple, dict] = {}
    for record in records:
        d, a, o, g = _group_key(record)
        by_seed.setdefault((d, a, o), {}).setdefault(record["settings"]["seed"], {})[g] = value(record["history"])
    return {key: [pair for _, pair in sorted(seeds.items()) if True in pair and False in pair]
            for key, seeds in sorted(by_seed.items())}


def paired_differences(records: list[dict], metric: str, epoch: int = -1) -> dict[tuple, np.ndarray]:
    """Per ``(dataset, architecture, optimizer)``: ``metric`` at ``epoch`` with gauge fixing minus
    without, for each seed run both ways (same initial network, same mini-batches)."""
    return {key: np.array([pair[True] - pair[False] for pair in pairs])
            for key, pairs in _pairs(records, lambda h: h[metric][epoch]).items()}


def balancing_share(records: list[dict], epoch: int = -1) -> dict[tuple, np.ndarray]:
    """Per ``(dataset, architecture, optimizer)``, for each seed run both ways: the fraction of the
    gap in ``reg_loss`` at ``epoch`` (without minus with gauge fixing) that moving the baseline
    into its minimum-norm gauge removes, ``(reg_loss - reg_loss_min_norm) / gap`` of the baseline.
    Above 1 where the balanced baseline is below the gauge-fixed run."""
    both = _pairs(records, lambda h: (h["reg_loss"][epoch], h["reg_loss_min_norm"][epoch]))
    return {key: np.array([(pair[False][0] - pair[False][1]) / (pair[False][0] - pair[True][0]) for pair in pairs])
            for key, pairs in both.items()}


def final_table(records: list[dict]) -> list[dict]:
    """One row per ``(dataset, architecture, optimizer, gauge_fix)``: the last epoch's metrics
    averaged over seeds, the number of seeds and the mean wall time of a run."""
    rows = {}
    for metric in METRICS:
        for key, c in curves(records, metric).items():
            row = rows.setdefault(key, dict(zip(("dataset", "architecture", "optimizer", "gauge_fix"), key),
                                            seeds=len(c["seeds"]), epochs=int(c["epoch"][-1])))
            row[metric] = float(c["mean"][-1])
    for record in records:
        row = rows[_group_key(record)]
        row["wall_seconds"] = row.get("wall_seconds", 0.0) + record["wall_seconds"] / row["seeds"]
    return [rows[key] for key in sorted(rows)]


def plot_learning_curves(records: list[dict], optimizer: str,
                         metrics=("reg_loss", "train_error", "test_error"), *, axes=None):
    """Figs. 3 (``"sgd"``) and 4 (``"egd"``) redrawn: one row per data set and architecture, one
    column per metric; each curve the mean over seeds, the band their range (min to max)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    picked = [r for r in records if r["settings"]["optimizer"] == optimizer]
    if not picked:
        raise ValueError(f"no finished runs with optimizer {optimizer!r}")
    panels = sorted({(r["settings"]["dataset"], r["settings"]["architecture"]) for r in picked},
                    key=lambda da: (list(DATASETS).index(da[0]), list(ARCHITECTURES).index(da[1])))
    if axes is None:
        _, axes = plt.subplots(len(panels), len(metrics), figsize=(3.6 * len(metrics), 2.4 * len(panels)),
                               squeeze=False, sharex=True, constrained_layout=True)
    titles = {"reg_loss": f"regularised log-loss (l{OPTIMIZERS[optimizer]['p']:g})",
              "reg_loss_min_norm": f"same, in the minimum-norm gauge (l{OPTIMIZERS[optimizer]['p']:g})",
              "log_loss": "log-loss", "train_error": "training error", "test_error": "test error"}
    styles = {False: dict(color="tab:blue", label="no gauge fixing"),
              True: dict(color="tab:red", label="minimum-norm gauge")}
    for j, metric in enumerate(metrics):
        table = curves(picked, metric)
        for i, (dataset, arch) in enumerate(panels):
            ax = axes[i][j]
            for gauge in (False, True):
                c = table.get((dataset, arch, optimizer, gauge))
                if c is None:
                    continue
                ax.plot(c["epoch"][1:], c["mean"][1:], **styles[gauge])
                ax.fill_between(c["epoch"][1:], c["min"][1:], c["max"][1:], alpha=0.25,
                                color=styles[gauge]["color"], linewidth=0)
            if i == 0:
                ax.set_title(titles[metric])
            if j == 0:
                ax.set_ylabel(f"{DATASETS[dataset].abbrev}\n{arch}")
            if i == len(panels) - 1:
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].legend(fontsize="small")
    return axes
