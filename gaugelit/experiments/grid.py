"""The grid of section 4's learning experiments (Figs. 3-4): what a run is, the settings a grid
shares, the two scales, and the cells and shares the grid splits into.

A run is one cell of the grid datasets x architectures x {SGD/l2, EGD/l1} x gauge fixing on/off x
seeds, at a scale: ``ci`` (a subset and few epochs, sized so the whole grid runs in minutes on two
CPU cores) or ``paper`` (section 4.1's settings, meant for a GPU). Both scales run exactly the same
code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

from ..core.checks import float_dtype, integer, real
from ..core.network import ARCHITECTURES
from ..training import OPTIMIZERS
from .data import DATASETS

__all__ = ["Run", "Settings", "SETTINGS", "settings_for", "run_settings", "cells", "shard_of", "shard_runs"]


@dataclass(frozen=True)
class Run:
    """One training run of the grid. ``run_id`` names its file (the scale names its folder)."""
    dataset: str
    architecture: str
    optimizer: str
    gauge_fix: bool
    seed: int
    scale: str

    @property
    def run_id(self) -> str:
        gauge = "gauge" if self.gauge_fix else "nogauge"
        return f"{self.dataset}_{self.architecture}_{self.optimizer}_{gauge}_seed{self.seed}"

    def label(self) -> str:
        return (f"{self.dataset} {self.architecture} {self.optimizer.upper()}"
                f"{' + gauge fixing' if self.gauge_fix else ''}, seed {self.seed}")


@dataclass(frozen=True)
class Settings:
    """A grid and the settings every run in it shares. ``n_train``/``n_test`` None: whole sets."""
    scale: str
    datasets: tuple[str, ...]
    architectures: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    n_train: int | None = None
    n_test: int | None = None
    optimizers: tuple[str, ...] = ("sgd", "egd")
    gauge_fix: tuple[bool, ...] = (False, True)
    batch_size: int = 32
    lr_decay: float = 0.95
    delta: float = 1e-3
    k: int = 200
    dtype: str = "float32"

    def __post_init__(self):
        for name, values, known in (("datasets", self.datasets, DATASETS),
                                    ("architectures", self.architectures, ARCHITECTURES),
                                    ("optimizers", self.optimizers, OPTIMIZERS)):
            bad = [v for v in values if v not in known]
            if bad or not values:
                raise ValueError(f"{name}: unknown or empty {bad or list(values)}; "
                                 f"choose from {', '.join(known)}")
        if not self.seeds:
            raise ValueError(f"seeds must be non-negative integers, got {self.seeds}")
        for seed in self.seeds:
            integer(seed, "seeds", low=0)
        if not self.gauge_fix or any(g not in (False, True) for g in self.gauge_fix):
            raise ValueError(f"gauge_fix must list True and/or False, got {self.gauge_fix}")
        integer(self.epochs, "epochs", low=1)
        integer(self.batch_size, "batch_size", low=1)
        integer(self.k, "k", low=1)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                integer(getattr(self, name), name, low=1)
        real(self.delta, "delta", low=0, low_open=True)
        real(self.lr_decay, "lr_decay", low=0, low_open=True, high=1)
        float_dtype(self.dtype)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def runs(self) -> list[Run]:
        """The grid in a fixed order; the two gauge settings of a seed run next to each other."""
        return [Run(d, a, o, bool(g), int(s), self.scale)
                for d in self.datasets for a in self.architectures for o in self.optimizers
                for s in self.seeds for g in self.gauge_fix]


#: ``paper``: section 4.1 (240 runs of 30 epochs on the full data sets). ``ci``: the two data sets
#: that CI has, all three architectures, three seeds (the fewest that give a verdict by the rule of
#: :mod:`gaugelit.experiments.claims`), the first 2000 training and 1000 test examples, and 3 epochs
#: (189 steps; the learning rate still decays after each epoch): 72 runs, about 3.4 s of CPU time
#: each (212 s of user time for 64 of them on the 2-core AMD EPYC), so about two minutes on two cores.
SETTINGS: dict[str, Settings] = {
    "paper": Settings("paper", tuple(DATASETS), tuple(ARCHITECTURES), seeds=(0, 1, 2, 3, 4), epochs=30),
    "ci": Settings("ci", ("mnist", "fashion-mnist"), tuple(ARCHITECTURES), seeds=(0, 1, 2), epochs=3,
                   n_train=2000, n_test=1000),
}


def settings_for(scale: str) -> Settings:
    if scale not in SETTINGS:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SETTINGS)}")
    return SETTINGS[scale]


def run_settings(run: Run, settings: Settings) -> dict:
    """Everything that determines a run's result, as stored in its file (JSON types only)."""
    sizes = list(ARCHITECTURES[run.architecture])
    sizes[0], sizes[-1] = settings.k, DATASETS[run.dataset].n_classes
    return {
        "scale": run.scale, "dataset": run.dataset, "architecture": run.architecture,
        "sizes": sizes, "optimizer": run.optimizer, **{k: float(v) for k, v in OPTIMIZERS[run.optimizer].items()},
        "gauge_fix": run.gauge_fix, "delta": settings.delta, "seed": run.seed,
        "epochs": int(settings.epochs), "batch_size": int(settings.batch_size),
        "lr_decay": settings.lr_decay, "n_train": settings.n_train, "n_test": settings.n_test,
        "k": settings.k, "dtype": settings.dtype, "loss": "log", "init": "he_init(sizes, seed)",
        "hidden_biases": "frozen at zero", "preprocessing": "pixels/255, uncentred top-k SVD of the training inputs",
        **({"egd_biases": "plus-minus"} if run.optimizer == "egd" else {}),
    }


def cells(runs: Iterable[Run]) -> list[list[Run]]:
    """The runs grouped into grid cells: runs of one data set, architecture and optimizer (they
    differ only in seed and gauge fixing), which :func:`gaugelit.train_many` trains together; grid order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.architecture, run.optimizer, run.scale), []).append(run)
    return list(groups.values())


def shard_of(items: list, spec) -> list:
    """The ``K``-th of ``N`` interleaved shares of ``items`` (``spec`` ``"K/N"`` or ``(K, N)``,
    ``1 <= K <= N``): items ``K-1, K-1+N, ...``, so that every share gets every architecture."""
    try:
        k, n = (int(v) for v in (spec.split("/") if isinstance(spec, str) else spec))
    except (TypeError, ValueError):
        raise ValueError(f"shard must be 'K/N' with integers 1 <= K <= N, got {spec!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"shard must be 'K/N' with integers 1 <= K <= N, got {spec!r}")
    return list(items)[k - 1::n]


def shard_runs(runs: list[Run], spec, batch_models: bool) -> list[Run]:
    """The runs of share ``spec`` (``"K/N"``): shares of whole cells with ``batch_models`` (a cell
    trains at once), else of single runs."""
    if batch_models:
        return [run for cell in shard_of(cells(runs), spec) for run in cell]
    return shard_of(runs, spec)
