"""Paired ablations of section 4.1's silent choices, for claim 3 (EGD's training error).

The paper finds that gauge fixing has no similar effect on EGD's training error as on SGD's; the
runs of this book find that it lowers it. The paper leaves several choices unsaid that could
decide this, and gaugelit had to pick one of each. A :class:`Study` trains one network with EGD
on a subset of one data set, with and without gauge fixing, for several seeds, once per
*variant*: the book's choices (``"as run"``) and each choice changed alone (:data:`VARIANTS`):

* ``float64`` instead of float32 arithmetic;
* a ``centred`` SVD projection (principal components) instead of the uncentred one;
* Algorithm 1's tolerance δ: ``1e-2`` (looser than the paper's 1e-3) and ``1e-6`` (Algorithm 1
  solved tightly before every step, many updates each, where the paper's δ stops after one);
* the output biases updated by eq. (41) ``as printed`` (so they stay at zero) instead of EG±.

Algorithm 1 started from the identity before every step and Algorithm 1 warm-started from the
last step's gauge are the same arithmetic (the training loop's log-domain factors are tested
against ``minnorm`` from the identity at every step in ``tests/bench/test_bench.py``), so that choice
needs no variant: how far each call solves is δ's axis.

Each run is written to ``<out>/<run-key>.json`` as it finishes, and a rerun skips the runs whose
file holds the same configuration, so the study resumes. A variant that changes only δ shares
its runs without gauge fixing with ``"as run"`` (δ acts only when the gauge is fixed).
:func:`summarise` turns the files into a small JSON: per variant, the paired differences (with
minus without gauge fixing) of the final training error, test error and regularised losses, and
EGD's effect under each, judged by the rule of :mod:`gaugelit.experiments.claims`.

    python -m gaugelit ablation --jobs 2            # trains what is missing, writes the summary
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.environment import results_dir
from ..core.network import ARCHITECTURES, he_init
from ..training import train
from . import claims
from .data import load_dataset
from .pool import run_in_processes
from .runfiles import code_fingerprint, device_name, write_json_atomic

__all__ = ["VARIANTS", "Study", "STUDY", "SUMMARY_NAME", "run_config", "run_key", "run_study", "train_missing",
           "summarise", "variant_effects", "plot_summary", "between_variants", "main"]

#: The name of the committed summary of :data:`STUDY` that the book reads (written by ``main`` into
#: the results folder, :func:`gaugelit.core.environment.results_dir`).
SUMMARY_NAME = "claim3-ablation.json"

#: Each variant changes one choice of the runs ("as run": the choices the book's runs made).
VARIANTS = {
    "as run": {},
    "float64": {"dtype": "float64"},
    "centred": {"centre": True},
    "delta 1e-2": {"delta": 1e-2},
    "delta 1e-6": {"delta": 1e-6},
    "as-printed biases": {"egd_biases": "as-printed"},
}
#: The book's choices, which the variants change one at a time.
BASE = {"dtype": "float32", "centre": False, "delta": 1e-3, "egd_biases": "plus-minus"}
#: The metrics a summary compares at the last epoch.
COMPARED = ("train_error", "test_error", "reg_loss", "reg_loss_min_norm")


@dataclass(frozen=True)
class Study:
    """The runs of an ablation: ``variants`` x ``seeds`` x gauge fixing off/on, on the first
    ``n_train`` training and ``n_test`` test examples of ``dataset``, with the paper's EGD
    settings otherwise (learning rate, weight decay, batch 32, decay 0.95 per epoch)."""
    dataset: str = "mnist"
    architecture: str = "3-layer"
    optimizer: str = "egd"
    n_train: int = 2000
    n_test: int = 1000
    epochs: int = 3
    seeds: tuple = (0, 1, 2)
    variants: tuple = tuple(VARIANTS)
    batch_size: int = 32
    lr_decay: float = 0.95

    def __post_init__(self):
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"variants: unknown {bad}; choose from {', '.join(VARIANTS)}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: unknown {self.architecture!r}; choose from {', '.join(ARCHITECTURES)}")
        if not self.seeds or int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"need at least one seed and epochs >= 1, got {self.seeds}, {self.epochs}")


#: The study whose summary the book shows: the CI grid's size (the CPU that made it was shared by
#: many jobs; its summary records the runs' wall times, summed, in run_minutes).
STUDY = Study()


def run_config(study: Study, variant: str, gauge_fix: bool, seed: int) -> dict:
    """Everything that determines one run (JSON types). Without gauge fixing δ plays no part,
    so it is left out, and the δ variants share those runs with ``"as run"``."""
    choices = {**BASE, **VARIANTS[variant]}
    if not gauge_fix:
        choices.pop("delta")
    return {"dataset": study.dataset, "architecture": study.architecture, "optimizer": study.optimizer,
            "n_train": study.n_train, "n_test": study.n_test, "epochs": int(study.epochs),
            "batch_size": study.batch_size, "lr_decay": study.lr_decay, "seed": int(seed),
            "gauge_fix": bool(gauge_fix), **choices}


def run_key(config: dict) -> str:
    """The file name of a run: readable, with a hash of its whole configuration."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"{'gauge' if config['gauge_fix'] else 'nogauge'}_seed{config['seed']}_{digest}"


@functools.lru_cache(maxsize=4)
def _data(dataset, n_train, n_test, dtype, centre):
    return load_dataset(dataset, n_train=n_train, n_test=n_test, dtype=dtype, centre=centre)


def _train_one(config: dict, out: str) -> dict:
    """Train the run of ``config`` and write its file; one BLAS thread (a study runs one process per core)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        started = time.perf_counter()
        X, y, X_test, y_test = _data(config["dataset"], config["n_train"], config["n_test"],
                                     config["dtype"], config["centre"])
        sizes = list(ARCHITECTURES[config["architecture"]])
        sizes[-1] = int(y.max()) + 1
        net = he_init(sizes, seed=config["seed"], dtype=config["dtype"], xp=np)
        _, history = train(net, X, y, optimizer=config["optimizer"], epochs=config["epochs"],
                           batch_size=config["batch_size"], lr_decay=config["lr_decay"],
                           gauge_fix=config["gauge_fix"], delta=config.get("delta", 1e-3),
                           seed=config["seed"], progress=False, X_test=X_test, y_test=y_test,
                           min_norm_loss=True, egd_biases=config["egd_biases"])
    record = {"config": config, "code": code_fingerprint(), "device": device_name(np),
              "wall_seconds": time.perf_counter() - started,
              "history": {k: [float(v) for v in history[k]] for k in
                          ("epoch", *COMPARED, "gauge_iterations")}}
    write_json_atomic(Path(out) / f"{run_key(config)}.json", record)
    return record


def _finished(path: Path, config: dict) -> bool:
    try:
        return json.loads(path.read_text())["config"] == json.loads(json.dumps(config))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def run_study(study: Study = STUDY, out="results/ablation", *, jobs: int = 1, log=print) -> list[dict]:
    """Train every run of ``study`` that has no finished file in ``out``; return the configs trained.
    ``jobs`` > 1 trains that many at once, in the sweep's worker processes
    (:func:`~gaugelit.experiments.pool.run_in_processes`: they exit with this process, and one
    Ctrl-C stops them)."""
    out = Path(out)
    # seed by seed, so that a study stopped early has every variant for its first seeds
    configs = {run_key(c): c for s in study.seeds for v in study.variants for g in (False, True)
               for c in [run_config(study, v, g, s)]}
    return train_missing(configs, out, _train_one, run_key, jobs=jobs, log=log)


def train_missing(configs: dict, out: Path, train_one, key, *, jobs: int = 1, log=print) -> list[dict]:
    """Train the runs of ``configs`` (file key -> config) that have no finished file in ``out``, by
    ``train_one(config, out)``, one after another or in ``jobs`` worker processes; return those trained.
    The one resumable loop of the studies (this one and :mod:`gaugelit.experiments.mechanism`)."""
    todo = [c for k, c in configs.items() if not _finished(out / f"{k}.json", c)]
    if log:
        log(f"{len(configs)} runs, {len(configs) - len(todo)} already finished in {out}")
    trained = []

    def finished(config, record):
        trained.append(config)
        if log:
            log(f"[{len(trained)}/{len(todo)}] {key(config)}: {record['wall_seconds']:.0f} s")

    if jobs <= 1 or len(todo) < 2:
        for config in todo:
            finished(config, train_one(config, str(out)))
    else:
        run_in_processes(functools.partial(train_one, out=str(out)), todo, min(jobs, len(todo)), finished,
                         log=log, label=key)
    return todo


def summarise(study: Study = STUDY, out="results/ablation") -> dict:
    """The study's final metrics with and without gauge fixing per variant and seed, from the files
    in ``out`` (a variant with a seed missing either run is summarised over the seeds it has);
    :func:`variant_effects` judges them."""
    out = Path(out)
    variants = {}
    codes, wall = set(), 0.0
    for variant in study.variants:
        finals = {g: {} for g in (False, True)}
        iterations = []
        for seed in study.seeds:
            for g in (False, True):
                config = run_config(study, variant, g, seed)
                path = out / f"{run_key(config)}.json"
                if not _finished(path, config):
                    continue
                record = json.loads(path.read_text())
                codes.add(record["code"])
                wall += record["wall_seconds"]
                finals[g][seed] = {m: record["history"][m][-1] for m in COMPARED}
                if g:
                    steps = -(-study.n_train // study.batch_size)
                    iterations.append(record["history"]["gauge_iterations"][-1] / steps)
        seeds = sorted(set(finals[False]) & set(finals[True]))
        row = {"seeds": seeds, "choices": {**BASE, **VARIANTS[variant]},
               "updates_per_step_last_epoch": float(np.mean(iterations)) if iterations else None}
        for m in COMPARED:
            row[m] = {"without": [finals[False][s][m] for s in seeds], "with": [finals[True][s][m] for s in seeds],
                      "differences": [finals[True][s][m] - finals[False][s][m] for s in seeds]}
        variants[variant] = row
    return {"study": dataclasses.asdict(study), "level": claims.LEVEL,
            "codes": sorted(codes), "run_minutes": wall / 60, "variants": variants,
            "command": "python -m gaugelit ablation --jobs 2"}


def variant_effects(summary: dict) -> dict[str, claims.Effect]:
    """Per variant, EGD's effect on its training error by the analysis plan's measure (the log ratio,
    with minus without gauge fixing, errors floored at half an example) and rule (margin log 1.1,
    symmetric verdicts, Holm over the variants): does the choice leave gauge fixing lowering EGD's
    training error by more than 10%?"""
    n_train = summary["study"]["n_train"]
    effects = []
    for name, row in summary["variants"].items():
        te = row["train_error"]
        d = [claims.log_error(g, n_train) - claims.log_error(b, n_train) for g, b in zip(te["with"], te["without"])]
        effects.append(claims.effect(d, direction="lower", claim="EGD", key=(name,), metric="train_error",
                                     seeds=row["seeds"]))
    return dict(zip(summary["variants"], claims.adjust(effects)))


def between_variants(summary: dict, a: str, b: str, metric: str = "train_error") -> dict:
    """Per gauge setting (``"without"``, ``"with"``): ``metric`` of variant ``a`` minus variant
    ``b`` for each seed both have (same seed: same initial network and mini-batches)."""
    va, vb = summary["variants"][a], summary["variants"][b]
    seeds = [s for s in va["seeds"] if s in vb["seeds"]]
    return {g: np.array([va[metric][g][va["seeds"].index(s)] - vb[metric][g][vb["seeds"].index(s)] for s in seeds])
            for g in ("without", "with")}


def plot_summary(summary: dict, ax=None):
    """Each variant's paired effects on EGD's training error (log ratios, dots, one per seed), their
    mean and t interval (bar) coloured by verdict, and the margin (shaded)."""
    import matplotlib.pyplot as plt

    effects = variant_effects(summary)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.55 * len(effects) + 1.2), constrained_layout=True)
    for i, e in enumerate(effects.values()):
        d = np.array(e.differences)
        ax.plot(d, np.full(d.size, i) + np.linspace(-0.12, 0.12, d.size), "o", color="0.5", ms=4)
        if e.n >= claims.MIN_SEEDS:
            ax.plot([e.low, e.high], [i, i], color=claims._COLOURS[e.verdict], lw=2, label=e.verdict)
        ax.plot([e.mean], [i], "|", color=claims._COLOURS[e.verdict], ms=14, mew=2)
    ax.axvspan(-claims.MARGIN, claims.MARGIN, color="tab:blue", alpha=0.08, label="margin: 10% either way")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize="small", loc="lower right")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(effects)), list(effects))
    ax.invert_yaxis()
    ax.set_xlabel("EGD's training error: log ratio, with minus without gauge fixing (last epoch)")
    return ax


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gaugelit ablation",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="run files, resumable (default: RESULTS/ablation, "
                             "RESULTS = GAUGELIT_RESULTS_DIR or ./results)")
    parser.add_argument("--summary", type=Path, default=None,
                        help=f"the small summary the book reads (default: RESULTS/{SUMMARY_NAME})")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one per core)")
    args = parser.parse_args(argv)
    args.out = args.out or results_dir() / "ablation"
    args.summary = args.summary or results_dir() / SUMMARY_NAME
    run_study(STUDY, args.out, jobs=args.jobs)
    summary = summarise(STUDY, args.out)
    write_json_atomic(args.summary, summary)
    print(f"wrote {args.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
