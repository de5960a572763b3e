"""The mechanism study of section 4 (book/analysis-plan.md, committed before its runs): which part of
gauge fixing causes its effect on learning.

Balancing changes each weight's effective step size: for gauge factors ``a`` an SGD step of rate
``lr`` on the balanced weights is, in the original ones, a step of rate ``lr (a_j / a_i)^2`` on
``W_ij`` (EGD: ``lr (a_j / a_i)``). The study separates the balancing from this change of rates with
four *arms*, each on the same seeds and mini-batches:

* ``never``: no balancing; ``init``: balanced once before the first step, then trained plainly;
* ``every``: balanced before every step, as the paper;
* ``matched``: never balanced, but each layer's learning rate scaled by what the initial network's
  minimum-norm gauge implies (:func:`gaugelit.training.matched_lr_scale`).

The comparisons are the claims' measures (:mod:`gaugelit.experiments.claims`: the mean log ratio of
the regularised loss over the epochs, ``D1``, and the last epoch's log ratio of the training error,
``D2``), one arm against another, paired by seed, judged by the plan's rule with Holm's correction
over the configurations (network x optimiser) of each comparison. Each run is written to
``<out>/<run-key>.json`` as it finishes, and a rerun skips finished runs, so a study resumes::

    python -m gaugelit mechanism --jobs 2                 # the plan's study: MNIST, 10k/2k, 10 epochs
    python -m gaugelit mechanism --size ci --jobs 2       # the book's CI-size study
    python -m gaugelit mechanism --sweeps --jobs 2        # the plan's sweeps (SWEEPS), in RESULTS/mechanism-sweeps
    python -m gaugelit mechanism --size paper-init        # init at the paper's scale (PAPER_INIT)

The sweeps (:data:`SWEEPS`) vary one setting at a time on the 3-layer network, ``every`` against
``never``, seeds 0-2: weight decay x0.1 and x10, learning rate x0.5 and x2, EG+-'s beta x0.1 and x10
(EGD only). The plan reports them with intervals and no verdicts (:func:`sweep_table`); their x1 is
the plan's study itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.environment import results_dir
from ..core.network import ARCHITECTURES, he_init
from ..training import OPTIMIZERS, matched_lr_scale, train
from . import claims
from .ablation import _data, _finished, train_missing
from .runfiles import code_fingerprint, device_name, write_json_atomic

__all__ = ["ARMS", "COMPARISONS", "MEASURES", "MechanismStudy", "STUDY", "CI_STUDY", "PAPER_INIT", "SWEEPS",
           "run_config", "run_key", "configs", "run_study", "load_records", "from_grid", "compare", "compare_all",
           "reading", "table", "plot_arms", "sweep_effects", "sweep_table", "main"]

#: The arms: the gauge-fixing mode train runs, and whether the rates are matched.
ARMS = {"never": ("never", False), "init": ("init", False), "every": ("every", False), "matched": ("never", True)}
#: The comparisons of the plan, treated minus control.
COMPARISONS = (("every", "never"), ("init", "never"), ("matched", "never"), ("init", "every"),
               ("matched", "init"))
#: The measures: the claims' D1 (whole curve of the regularised loss) and D2 (last training error).
MEASURES = {
    "D1": claims.Claim("D1", "regularised loss, mean log ratio over the epochs", "curve", "reg_loss",
                       ("sgd", "egd"), "lower"),
    "D2": claims.Claim("D2", "training error, log ratio at the last epoch", "final", "train_error",
                       ("sgd", "egd"), "lower"),
}
_SAVED = ("epoch", "reg_loss", "reg_loss_min_norm", "train_error", "test_error", "gauge_iterations")


@dataclass(frozen=True)
class MechanismStudy:
    """The runs: ``architectures`` x ``optimizers`` x ``arms`` x ``seeds`` on the first ``n_train``
    training and ``n_test`` test examples of ``dataset``, with the paper's settings otherwise;
    ``lr_factor`` and ``weight_decay_factor`` multiply the paper's learning rate and decay, and
    ``beta_factor`` EG+-'s beta (the sweeps)."""
    dataset: str = "mnist"
    architectures: tuple = ("3-layer", "5-layer", "7-layer")
    optimizers: tuple = ("sgd", "egd")
    arms: tuple = tuple(ARMS)
    n_train: int | None = 10000     # None: the whole set
    n_test: int | None = 2000
    epochs: int = 10
    seeds: tuple = (0, 1, 2, 3, 4)
    batch_size: int = 32
    lr_decay: float = 0.95
    lr_factor: float = 1.0
    weight_decay_factor: float = 1.0
    beta_factor: float = 1.0

    def __post_init__(self):
        for name, values, known in (("architectures", self.architectures, ARCHITECTURES),
                                    ("optimizers", self.optimizers, OPTIMIZERS), ("arms", self.arms, ARMS)):
            bad = [v for v in values if v not in known]
            if bad or not values:
                raise ValueError(f"{name}: unknown {bad or 'none given'}; choose from {', '.join(known)}")
        if not self.seeds or int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"need at least one seed and epochs >= 1, got {self.seeds}, {self.epochs}")
        if not (self.lr_factor > 0 and self.weight_decay_factor > 0 and self.beta_factor > 0):
            raise ValueError("lr_factor, weight_decay_factor and beta_factor must be > 0")


#: The plan's study (10 epochs on the first 10,000 MNIST examples: 3,130 steps a run).
STUDY = MechanismStudy()
#: The book's study at CI size: the CI grid's data and epochs, three seeds.
CI_STUDY = MechanismStudy(n_train=2000, n_test=1000, epochs=3, seeds=(0, 1, 2))
_SWEEP_BASE = dataclasses.replace(STUDY, architectures=("3-layer",), arms=("every", "never"), seeds=(0, 1, 2))
#: The plan's amendment for issue 24: the init arm at the paper's scale (whole sets, 30 epochs) on the
#: 3-layer network, paired by seed with the grid's paper-scale runs (:func:`from_grid`).
PAPER_INIT = MechanismStudy(architectures=("3-layer",), arms=("init",), n_train=None, n_test=None, epochs=30)
#: The plan's sweeps, each one setting varied alone; their x1 is :data:`STUDY`'s runs of the same cells.
SWEEPS = {
    "weight decay x0.1": dataclasses.replace(_SWEEP_BASE, weight_decay_factor=0.1),
    "weight decay x10": dataclasses.replace(_SWEEP_BASE, weight_decay_factor=10.0),
    "learning rate x0.5": dataclasses.replace(_SWEEP_BASE, lr_factor=0.5),
    "learning rate x2": dataclasses.replace(_SWEEP_BASE, lr_factor=2.0),
    "beta x0.1": dataclasses.replace(_SWEEP_BASE, optimizers=("egd",), beta_factor=0.1),
    "beta x10": dataclasses.replace(_SWEEP_BASE, optimizers=("egd",), beta_factor=10.0),
}


def run_config(study: MechanismStudy, architecture: str, optimizer: str, arm: str, seed: int) -> dict:
    """Everything that determines one run (JSON types)."""
    paper = OPTIMIZERS[optimizer]
    return {"dataset": study.dataset, "architecture": architecture, "optimizer": optimizer, "arm": arm,
            "n_train": study.n_train, "n_test": study.n_test, "epochs": int(study.epochs),
            "batch_size": study.batch_size, "lr_decay": study.lr_decay, "seed": int(seed),
            "lr": paper["lr"] * study.lr_factor, "weight_decay": paper["weight_decay"] * study.weight_decay_factor,
            "delta": 1e-3, "dtype": "float32", "egd_biases": "plus-minus",
            # only where it differs, so that the study's own runs keep their keys
            **({"egd_beta_factor": float(study.beta_factor)} if study.beta_factor != 1 else {})}


def run_key(config: dict) -> str:
    """The file name of a run: readable (a sweep's setting named), with a hash of its whole configuration."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    paper = OPTIMIZERS[config["optimizer"]]
    tags = [f"{name}{value:g}" for name, value in (("lr", config["lr"] / paper["lr"]),
                                                    ("wd", config["weight_decay"] / paper["weight_decay"]),
                                                    ("beta", config.get("egd_beta_factor", 1.0)))
            if abs(value - 1) > 1e-12]
    tag = "".join(f"_{t}" for t in tags)
    return f"{config['architecture']}_{config['optimizer']}_{config['arm']}_seed{config['seed']}{tag}_{digest}"


def _train_one(config: dict, out: str) -> dict:
    """Train the run of ``config`` and write its file; one BLAS thread (one process per core)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        started = time.perf_counter()
        X, y, X_test, y_test = _data(config["dataset"], config["n_train"], config["n_test"], config["dtype"], False)
        sizes = list(ARCHITECTURES[config["architecture"]])
        sizes[-1] = int(y.max()) + 1
        net = he_init(sizes, seed=config["seed"], dtype=config["dtype"], xp=np)
        mode, matched = ARMS[config["arm"]]
        scale = matched_lr_scale(net, config["optimizer"]) if matched else None
        trained, history = train(net, X, y, optimizer=config["optimizer"], lr=config["lr"],
                                 weight_decay=config["weight_decay"], epochs=config["epochs"],
                                 batch_size=config["batch_size"], lr_decay=config["lr_decay"], gauge_fix=mode,
                                 delta=config["delta"], seed=config["seed"], progress=False, X_test=X_test,
                                 y_test=y_test, min_norm_loss=True, egd_biases=config["egd_biases"],
                                 lr_scale=scale, egd_beta_scale=config.get("egd_beta_factor", 1.0))
    record = {"config": config, "code": code_fingerprint(), "device": device_name(np),
              "wall_seconds": time.perf_counter() - started,
              "lr_scale": None if scale is None else [list(map(float, part)) for part in scale],
              "output_bias_mean_abs": float(np.abs(trained.biases[-1]).mean()),
              "history": {k: [float(v) for v in history[k]] for k in _SAVED}}
    write_json_atomic(Path(out) / f"{run_key(config)}.json", record)
    return record


def configs(study: MechanismStudy) -> dict[str, dict]:
    # seed by seed and network by network, so that a study stopped early is complete for what it has
    return {run_key(c): c for s in study.seeds for a in study.architectures for o in study.optimizers
            for arm in study.arms for c in [run_config(study, a, o, arm, s)]}


def run_study(study: MechanismStudy = STUDY, out=None, *, jobs: int = 1, log=print) -> list[dict]:
    """Train every run of ``study`` that has no finished file in ``out`` (default
    ``results_dir()/mechanism``); return the configs trained."""
    out = Path(out) if out is not None else results_dir() / "mechanism"
    return train_missing(configs(study), out, _train_one, run_key, jobs=jobs, log=log)


def load_records(study: MechanismStudy, out) -> list[dict]:
    """The finished runs of ``study`` in ``out`` (any subset, even none)."""
    out = Path(out)
    found = []
    for key, config in configs(study).items():
        path = out / f"{key}.json"
        if _finished(path, config):
            found.append(json.loads(path.read_text()))
    return found


def from_grid(records) -> list[dict]:
    """The grid's run records (:mod:`gaugelit.experiments.runfiles`) as this study's: ``every`` for
    the runs with gauge fixing, ``never`` for those without, so that :func:`compare` pairs them by
    seed with a study's arms of the same cell (valid because both start from the same weights and
    mini-batches: ``tests/experiments/test_mechanism.py``)."""
    out = []
    for r in records:
        s = r["settings"]
        out.append({"config": {"dataset": s["dataset"], "architecture": s["architecture"],
                               "optimizer": s["optimizer"], "arm": "every" if s["gauge_fix"] else "never",
                               "seed": s["seed"], "n_train": s["n_train"]},
                    "history": r["history"]})
    return out


def _as_pair_records(records, treated: str, control: str) -> list[dict]:
    """The runs of two arms as the claims module reads them: ``gauge_fix`` True for ``treated``."""
    out = []
    for r in records:
        c = r["config"]
        if c["arm"] in (treated, control):
            out.append({"settings": {"dataset": c["dataset"], "architecture": c["architecture"],
                                     "optimizer": c["optimizer"], "seed": c["seed"], "n_train": c["n_train"],
                                     "gauge_fix": c["arm"] == treated}, "history": r["history"]})
    return out


def compare(records, treated: str, control: str, measure: str) -> list[claims.Effect]:
    """``measure`` of ``treated`` minus ``control``, per network and optimiser, paired by seed, by the
    plan's rule (Holm over the configurations of this comparison)."""
    return claims.check_claims(_as_pair_records(records, treated, control), {measure: MEASURES[measure]})


def compare_all(records) -> dict[tuple, list[claims.Effect]]:
    """Every comparison of :data:`COMPARISONS` in every measure: ``{(treated, control, measure): effects}``."""
    return {(t, c, m): compare(records, t, c, m) for t, c in COMPARISONS for m in MEASURES}


def reading(effects: dict[tuple, list[claims.Effect]], measure: str, architecture: str, optimizer: str) -> str:
    """The plan's rule for one configuration: ``"init suffices"`` where init - every is negligible;
    ``"the change of rates"`` where matched - init is negligible and init - never holds; both may
    apply; otherwise ``"no mechanism claimed"``."""
    def verdict(t, c):
        found = [e for e in effects[(t, c, measure)] if e.key[1:] == (architecture, optimizer)]
        return found[0].verdict if found else "too few seeds"
    said = []
    if verdict("init", "every") == "negligible":
        said.append("init suffices")
    if verdict("matched", "init") == "negligible" and verdict("init", "never") == "holds":
        said.append("the change of rates")
    return "; ".join(said) or "no mechanism claimed"


def table(records) -> tuple[str, dict]:
    """Every comparison of :func:`compare_all` as text, one line per configuration, then the plan's
    reading per measure and configuration; returns ``(text, effects)``."""
    effects = compare_all(records)
    lines = [f"{t:>7} - {c:<7} {m}  {' '.join(e.key):28} n={e.n}  {e.describe().split(f'n={e.n}', 1)[1].strip()}"
             for (t, c, m), found in effects.items() for e in found]
    found = sorted({(r["config"]["architecture"], r["config"]["optimizer"]) for r in records})
    lines += [f"{m} {opt.upper()} {arch}: {reading(effects, m, arch, opt)}" for m in MEASURES for arch, opt in found]
    return "\n".join(lines), effects


def plot_arms(records, metric: str = "train_error", axes=None):
    """Per network (columns) and optimiser (rows): ``metric`` against epoch for each arm, mean over
    seeds with the range shaded."""
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["config"]["architecture"] for r in records))
    opts = list(dict.fromkeys(r["config"]["optimizer"] for r in records))
    if axes is None:
        _, axes = plt.subplots(len(opts), len(archs), figsize=(3.6 * len(archs), 2.9 * len(opts)),
                               squeeze=False, constrained_layout=True)
    colours = {"never": "0.4", "init": "tab:blue", "every": "tab:red", "matched": "tab:green"}
    for i, opt in enumerate(opts):
        for j, arch in enumerate(archs):
            ax = axes[i][j]
            for arm, colour in colours.items():
                runs = [r for r in records if (r["config"]["architecture"], r["config"]["optimizer"],
                                               r["config"]["arm"]) == (arch, opt, arm)]
                if not runs:
                    continue
                curves = np.array([r["history"][metric][1:] for r in runs])
                epochs = np.array(runs[0]["history"]["epoch"][1:])
                ax.plot(epochs, curves.mean(axis=0), color=colour, label=f"{arm} ({len(runs)})")
                ax.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), color=colour, alpha=0.15)
            ax.set_yscale("log")
            ax.set_title(f"{opt.upper()}, {arch}", fontsize="medium")
            ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel(metric.replace("_", " "))
            ax.legend(fontsize="x-small")
    return axes


def sweep_effects(reference, sweeps: dict) -> list[dict]:
    """``every`` - ``never`` in each measure, per setting and optimiser: ``reference`` are the plan
    study's records (the x1 of every sweep; only its 3-layer runs of the sweeps' seeds are used) and
    ``sweeps`` maps a name of :data:`SWEEPS` to its records. Each row: ``setting``, ``optimizer``,
    ``measure``, the :class:`~gaugelit.experiments.claims.Effect` (its interval is what the plan
    reports; the sweeps have no verdicts), and ``bias`` (the learned output biases' mean magnitude
    per arm, mean over seeds)."""
    base = _SWEEP_BASE
    ref = [r for r in reference if r["config"]["architecture"] in base.architectures
           and r["config"]["seed"] in base.seeds and r["config"]["arm"] in base.arms]
    rows = []
    for setting, records in [("x1", ref)] + list(sweeps.items()):
        for measure in MEASURES:
            for e in compare(records, "every", "never", measure):
                opt = e.key[2]
                bias = {arm: float(np.mean([r["output_bias_mean_abs"] for r in records
                                            if (r["config"]["optimizer"], r["config"]["arm"]) == (opt, arm)]))
                        for arm in base.arms}
                rows.append({"setting": setting, "optimizer": opt, "measure": measure, "effect": e, "bias": bias})
    return rows


def sweep_table(rows) -> str:
    """:func:`sweep_effects` as text: one line per setting, optimiser and measure, the factor
    ``exp(mean)`` of every over never with its 95% interval (no verdict: the plan's sweeps describe)."""
    lines = []
    for r in rows:
        e = r["effect"]
        ci = (f"[x{np.exp(e.low):.2f}, x{np.exp(e.high):.2f}]" if e.n >= claims.MIN_SEEDS else "(no interval)")
        lines.append(f"{r['setting']:>20}  {r['optimizer'].upper()}  {r['measure']}  n={e.n}  every/never "
                     f"x{np.exp(e.mean):.2f} {ci}   |b_out| never {r['bias']['never']:.3g}, "
                     f"every {r['bias']['every']:.3g}")
    return "\n".join(lines)


#: ``--size``: the study and its folder under RESULTS.
_SIZES = {"plan": (STUDY, "mechanism"), "ci": (CI_STUDY, "mechanism-ci"),
          "paper-init": (PAPER_INIT, "mechanism-paper")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gaugelit mechanism", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(_SIZES), default="plan",
                        help="plan: MNIST 10k/2k, 10 epochs, 5 seeds (default); ci: the book's CI-size study; "
                             "paper-init: the init arm at the paper's scale (3-layer, 30 epochs, whole sets)")
    parser.add_argument("--architectures", nargs="+", default=None, help="a subset of the networks")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="run files (default RESULTS/mechanism[-ci])")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one per core)")
    parser.add_argument("--sweeps", nargs="*", default=None, metavar="SETTING",
                        help="run the plan's sweeps (all, or those named, e.g. 'beta x10') instead of the study")
    args = parser.parse_args(argv)
    if args.sweeps is not None:
        names = args.sweeps or list(SWEEPS)
        unknown = [n for n in names if n not in SWEEPS]
        if unknown:
            parser.error(f"unknown sweep {unknown}; choose from {', '.join(SWEEPS)}")
        out = args.out or results_dir() / "mechanism-sweeps"
        for seed in _SWEEP_BASE.seeds:          # seed by seed, so that a stopped sweep is complete per seed
            for name in names:
                run_study(dataclasses.replace(SWEEPS[name], seeds=(seed,)), out, jobs=args.jobs)
        return 0
    study, folder = _SIZES[args.size]
    if args.architectures:
        study = dataclasses.replace(study, architectures=tuple(args.architectures))
    if args.seeds:
        study = dataclasses.replace(study, seeds=tuple(args.seeds))
    out = args.out or results_dir() / folder
    run_study(study, out, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
