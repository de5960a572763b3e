"""Training PyTorch models with and without gauge fixing (issue 23, section 4): ENorm as it is used
against :class:`gaugelit.torch.GaugeFix`, and the effective learning rates a balancing implies.

Two studies, both run by ``book/your-network.md``:

- :func:`compare` trains a small CNN and a small residual network (no batch norm) on MNIST (or
  Fashion-MNIST) three ways from the same seeds, initial weights and mini-batches: plainly
  (``"plain"``), with one ENorm-style balancing sweep after each SGD step (``"enorm"``: Stock et
  al., ICLR 2019, run as ENorm runs in training -- one sweep, not a solve to a tolerance), and with
  ``GaugeFix`` solving to its default tolerance (``"gaugefix"``). Each run reports the median time
  per step, the imbalance gamma after the SGD step and after the balancing, and the final training
  and test accuracy; :func:`paired_table` compares each arm with ``"plain"`` seed by seed
  (:func:`gaugelit.experiments.stats.paired_comparison`). :func:`run_missing` writes one JSON file
  per run, atomically, and skips the runs already finished (a resumable larger version).
- :func:`divergence` follows one model at a large learning rate with momentum: plain, ``GaugeFix``
  after every step, balanced once at the start and then trained plainly, and a control that never
  balances but scales each parameter's learning rate by the multiplier the first balancing implies
  (:func:`rate_multipliers`). A balancing ``W' = D W`` (``D_ij = a_i / a_j``, output unit i, input
  unit j) turns an SGD step on ``W'`` into a step of rate ``lr / D_ij^2 = lr (a_j / a_i)^2`` on
  ``W``, and momentum keeps that (the buffer transforms with the gradient), so balancing once and
  then training plainly *is* SGD with those per-entry rates; the control keeps only their geometric
  mean per parameter tensor.

This module is a leaf, like :mod:`gaugelit.torch`, and no leaf imports another: the functions that
gauge-fix take that module as their argument ``gt`` (pass ``gaugelit.torch``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .experiments.ablation import _finished, train_missing
from .experiments.runfiles import code_fingerprint, write_json_atomic
from .experiments.stats import paired_comparison

__all__ = ["ARMS", "ARM_SOLVER", "SmallCNN", "SmallResNet", "MODELS", "Comparison", "load_images",
           "synthetic_images", "train_run", "run_missing", "compare", "paired_table", "imbalance",
           "rate_multipliers", "divergence"]

#: The arms of :func:`compare`, in order; ``"plain"`` is the control.
ARMS = ("plain", "enorm", "gaugefix")
#: The solver arguments of each gauge-fixing arm: ENorm as used (one sweep, no stopping rule, no
#: warning) and GaugeFix with its default tolerance (the delta rule, 1e-3).
ARM_SOLVER = {"enorm": dict(method="enorm-style", delta=None, max_iter=1), "gaugefix": {}}


class SmallCNN(nn.Module):
    """conv(8) - ReLU - max-pool, conv(16) - ReLU - max-pool, linear: 28 x 28 images, 10 classes."""

    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 7 * 7, classes)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


class SmallResNet(nn.Module):
    """A strided stem, ``blocks`` pre-activation residual blocks (ReLU - conv - ReLU - conv, no batch
    norm), ReLU, max-pool, linear. The additions tie the stream's channels into one group."""

    def __init__(self, width: int = 8, blocks: int = 2, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, stride=2)
        self.blocks = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                                  nn.Conv2d(width, width, 3, padding=1)) for _ in range(blocks))
        self.fc = nn.Linear(width * 7 * 7, classes)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.fc(torch.flatten(F.max_pool2d(torch.relu(h), 2), 1))


MODELS = {"cnn": SmallCNN, "resnet": SmallResNet}


@dataclass(frozen=True)
class Comparison:
    """The settings of :func:`compare` (one run per model, arm and seed)."""
    dataset: str = "mnist"
    n_train: int = 3000
    n_test: int = 2000
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    p: float = 2.0
    seeds: tuple = (0, 1, 2)
    models: tuple = ("cnn", "resnet")
    arms: tuple = ARMS

    def configs(self) -> dict:
        """File key -> the config of one run, seed by seed (a study stopped early has every arm
        of its first seeds)."""
        base = {k: v for k, v in asdict(self).items() if k not in ("seeds", "models", "arms")}
        out = {}
        for seed in self.seeds:
            for model in self.models:
                for arm in self.arms:
                    c = dict(base, model=model, arm=arm, seed=int(seed))
                    out[run_key(c)] = c
        return out


def run_key(config: dict) -> str:
    return f"{config['dataset']}-{config['model']}-{config['arm']}-seed{config['seed']}"


def load_images(dataset: str = "mnist", n_train: int = 3000, n_test: int = 2000) -> dict:
    """The first ``n_train`` training and ``n_test`` test images of an MNIST-format data set
    (:func:`gaugelit.experiments.data.load_raw`), pixels in [0, 1], as float32 tensors (N, 1, 28, 28)."""
    from .experiments.data import load_raw
    X, y, Xt, yt = load_raw(dataset)

    def images(a, n):
        return torch.tensor(a[:n] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    return {"X": images(X, n_train), "y": torch.tensor(y[:n_train]), "Xt": images(Xt, n_test),
            "yt": torch.tensor(yt[:n_test])}


def synthetic_images(n_train: int = 64, n_test: int = 32, seed: int = 0) -> dict:
    """Random 28 x 28 images with labels that a linear read-out of the pixels determines (for tests)."""
    g = torch.Generator().manual_seed(seed)
    X, Xt = torch.rand(n_train, 1, 28, 28, generator=g), torch.rand(n_test, 1, 28, 28, generator=g)
    w = torch.randn(784, 10, generator=g)
    return {"X": X, "y": (X.flatten(1) @ w).argmax(1), "Xt": Xt, "yt": (Xt.flatten(1) @ w).argmax(1)}


def _accuracy(model, X, y, batch: int = 1000) -> float:
    with torch.no_grad():
        hits = sum(int((model(X[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(X), batch))
    return hits / len(X)


def imbalance(model, gt, p: float = 2.0) -> float:
    """The imbalance gamma (eq. 20) of ``model``'s weights in its gauge graph, nothing rescaled."""
    from .solvers import minnorm_graph
    return float(minnorm_graph(gt.gauge_graph(model, p), p, max_iter=0, delta=None).gamma[0])


def _batches(n: int, batch_size: int, seed: int, epoch: int):
    """The mini-batches of one epoch: the same for every arm of a seed."""
    g = torch.Generator().manual_seed(1000 * seed + epoch)
    return torch.randperm(n, generator=g).split(batch_size)


def train_run(config: dict, data: dict, gt) -> dict:
    """Train one run of :func:`compare` (``config``: one of :meth:`Comparison.configs`) and return
    its record: medians of the step time, of the time of the balancing within it, of gamma after
    the SGD step (before balancing) and after the balancing, and of the sweeps per step (over the
    last epoch); final gamma, training and test accuracy, the loss per step; ``status``
    ``"diverged"`` (with the step and the message) when the loss or the weights turn non-finite."""
    torch.manual_seed(config["seed"])
    model = MODELS[config["model"]]()
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    arm, p = config["arm"], config["p"]
    fix = gt.GaugeFix(model, p, opt, **ARM_SOLVER[arm]) if arm != "plain" else None
    X, y = data["X"], data["y"]
    steps, fixes, before, after, sweeps, losses = [], [], [], [], [], []
    status, message, t_start = "finished", "", time.perf_counter()
    step = 0
    for epoch in range(config["epochs"]):
        last = epoch == config["epochs"] - 1
        for idx in _batches(len(X), config["batch_size"], config["seed"], epoch):
            step += 1
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            t1 = time.perf_counter()
            if not math.isfinite(loss.item()):
                status, message = "diverged", f"step {step}: loss {loss.item()}"
                break
            if fix is not None:
                try:
                    res = fix()
                except gt.GaugeError as e:
                    status, message = "diverged", f"step {step}: {e}"
                    break
            t2 = time.perf_counter()
            losses.append(loss.item())
            if last:
                steps.append(t2 - t0)
                fixes.append(t2 - t1)
                if fix is not None:
                    before.append(float(res.gamma[0]))
                    after.append(float(res.gamma[-1]))
                    sweeps.append(res.iterations)
        if status != "finished":
            break
    record = {"config": config, "status": status, "steps": step, "loss": losses}
    if status == "finished":
        final = imbalance(model, gt, p)

        def med(v):
            return float(np.median(v)) if v else None
        record.update(step_seconds=med(steps), fix_seconds=med(fixes),
                      gamma_before=med(before) if fix is not None else final,
                      gamma_after=med(after) if fix is not None else final,
                      sweeps=med(sweeps), final_gamma=final,
                      train_accuracy=_accuracy(model, X, y), test_accuracy=_accuracy(model, data["Xt"], data["yt"]))
    else:
        record["message"] = message
    record.update(wall_seconds=time.perf_counter() - t_start, code=_fingerprint(),
                  threads=torch.get_num_threads())
    return record


def _fingerprint() -> str:
    """The numbers' code: the layers' fingerprint (:func:`~gaugelit.experiments.runfiles.code_fingerprint`),
    gaugelit/torch.py and this module."""
    digest = hashlib.sha256(code_fingerprint().encode())
    for name in ("torch.py", "torch_training.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]


def run_missing(settings: Comparison, out, gt, data: dict | None = None, *, log=print) -> list[dict]:
    """Train the runs of ``settings`` that have no finished file ``<out>/<key>.json`` (written
    atomically, one per run, so a stopped study resumes where it stopped); return the configs
    trained. ``data``: :func:`load_images` of the settings when not given."""
    out = Path(out)
    if data is None:
        data = load_images(settings.dataset, settings.n_train, settings.n_test)

    def train_one(config, out):
        record = train_run(config, data, gt)
        write_json_atomic(Path(out) / f"{run_key(config)}.json", record)
        return record
    return train_missing(settings.configs(), out, train_one, run_key, log=log)


def load_runs(settings: Comparison, out) -> list[dict]:
    """The records of ``settings`` finished in ``out`` (missing runs left out)."""
    out = Path(out)
    return [json.loads((out / f"{k}.json").read_text()) for k, c in settings.configs().items()
            if _finished(out / f"{k}.json", c)]


def compare(settings: Comparison, gt, data: dict | None = None) -> list[dict]:
    """Every run of ``settings``, in memory (the chapter's CI-size study); see :func:`run_missing`."""
    if data is None:
        data = load_images(settings.dataset, settings.n_train, settings.n_test)
    return [train_run(c, data, gt) for c in settings.configs().values()]


_METRICS = ("step_seconds", "gamma_before", "gamma_after", "sweeps", "train_accuracy", "test_accuracy")


def paired_table(records: list[dict], *, confidence: float = 0.95) -> tuple[str, dict]:
    """Per model and arm the median over seeds of each metric, and for the accuracies and the step
    time each arm's paired difference with ``"plain"`` (same seed), its t interval and verdict
    ("no verdict" where the interval contains 0: not "no effect"). Returns ``(table text,
    {(model, arm, metric): PairedComparison})``; diverged runs are counted and left out pairwise."""
    by = {}
    for r in records:
        c = r["config"]
        by.setdefault(c["model"], {}).setdefault(c["arm"], {})[c["seed"]] = r
    lines = [f"{'model':7s} {'arm':9s} {'runs':>4s} {'ms/step':>8s} {'gamma after SGD step':>20s} "
             f"{'gamma after balancing':>21s} {'sweeps':>6s} {'train acc':>9s} {'test acc':>8s}"]
    comparisons = {}
    for model, arms in by.items():
        for arm, seeds in arms.items():
            ok = {s: r for s, r in seeds.items() if r["status"] == "finished"}

            def med(m, ok=ok):
                v = [r[m] for r in ok.values() if r[m] is not None]
                return float(np.median(v)) if v else float("nan")
            div = len(seeds) - len(ok)
            lines.append(f"{model:7s} {arm:9s} {len(ok):4d}{'' if not div else f' ({div} diverged)'} "
                         f"{1e3 * med('step_seconds'):8.2f} {med('gamma_before'):20.3g} {med('gamma_after'):21.3g} "
                         f"{med('sweeps'):6.0f} {med('train_accuracy'):9.3f} {med('test_accuracy'):8.3f}")
        plain = {s: r for s, r in arms.get("plain", {}).items() if r["status"] == "finished"}
        for arm, seeds in arms.items():
            if arm == "plain":
                continue
            common = sorted(s for s, r in seeds.items() if r["status"] == "finished" and s in plain)
            for m, scale, unit in (("step_seconds", 1e3, "ms"), ("train_accuracy", 100, "points"),
                                   ("test_accuracy", 100, "points")):
                if len(common) < 2:
                    continue
                pc = paired_comparison([scale * seeds[s][m] for s in common],
                                       [scale * plain[s][m] for s in common], confidence=confidence)
                comparisons[(model, arm, m)] = pc
                verdict = {"inconclusive": "no verdict"}.get(pc.verdict, pc.verdict)
                lines.append(f"  {model} {arm} - plain, {m} ({unit}): {pc.mean:+.3g}, "
                             f"{100 * confidence:g}% interval [{pc.low:+.3g}, {pc.high:+.3g}] over "
                             f"{pc.n} seeds: {verdict}")
    return "\n".join(lines), comparisons


# -- the divergence -------------------------------------------------------------------------------

def rate_multipliers(before: nn.Module, after: nn.Module) -> dict:
    """The learning-rate multiplier that balancing ``before`` into ``after`` implies for each
    parameter: entry by entry ``(w / w')^2`` (``w' = D w``: an SGD step on ``w'`` is one of rate
    ``lr / D^2`` on ``w``), over the entries that are not zero. Returns name -> ``(geometric mean,
    smallest, largest)``; a parameter balancing left alone has ``(1, 1, 1)``."""
    out = {}
    a = dict(after.named_parameters())
    for name, w in before.named_parameters():
        w0, w1 = w.detach().double(), a[name].detach().double()
        nz = (w0 != 0) & (w1 != 0)
        if not bool(nz.any()):
            out[name] = (1.0, 1.0, 1.0)
            continue
        log_m = 2 * (torch.log(w0[nz].abs()) - torch.log(w1[nz].abs()))
        out[name] = (float(torch.exp(log_m.mean())), float(torch.exp(log_m.min())), float(torch.exp(log_m.max())))
    return out


DIVERGENCE_ARMS = ("plain", "gaugefix", "enorm", "balanced once", "per-layer lr")


def divergence(model_fn, data: dict, gt, *, seed: int = 0, lr: float = 0.1, momentum: float = 0.9,
               steps: int = 100, batch_size: int = 64, p: float = 2.0, arms=DIVERGENCE_ARMS) -> dict:
    """Train ``model_fn()`` (seeded by ``seed``, same mini-batches in every arm) for ``steps`` SGD
    steps with momentum in each of :data:`DIVERGENCE_ARMS`: ``"plain"``; ``"gaugefix"``
    (``GaugeFix`` after every step); ``"enorm"`` (one ENorm-style sweep after every step);
    ``"balanced once"`` (``minnorm_`` before the first step, then
    plain: SGD with the per-entry rates ``lr (a_j / a_i)^2`` in the original coordinates); and
    ``"per-layer lr"`` (never balanced; each parameter tensor's rate times the geometric mean of its
    multipliers, :func:`rate_multipliers` of the first balancing). Returns ``{"multipliers": ..., arm: {"loss": [...],
    "first_nonfinite": step or None, "message": str, "relative_step": [...]}}``: the loss before
    each step, the first step after which the loss or the weights are not finite (GaugeFix's own
    report for its arms), each step's largest ``|dW| / |W|`` over the weight tensors and the l2 norm
    of all weight tensors after it (before that step's balancing; in float64); the
    balancing arms also have ``"multipliers_so_far"``, after each call the geometric mean per tensor
    of the rate multipliers of all its balancings until then (the product of their ``(w / w')^2``)."""
    torch.manual_seed(seed)
    model0 = model_fn()
    balanced = copy.deepcopy(model0)
    gt.minnorm_(balanced, p)
    mult = rate_multipliers(model0, balanced)
    out = {"multipliers": mult}
    X, y = data["X"], data["y"]
    for arm in arms:
        model = copy.deepcopy(balanced if arm == "balanced once" else model0)
        if arm == "per-layer lr":
            groups = [{"params": [w], "lr": lr * mult[n][0]} for n, w in model.named_parameters()]
            opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        fix = gt.GaugeFix(model, p, opt, **ARM_SOLVER[arm]) if arm in ARM_SOLVER else None
        losses, first, message, step, epoch = [], None, "", 0, 0
        rel, norms, drift = [], [], []
        cum = {n: torch.zeros_like(w, dtype=torch.float64) for n, w in model.named_parameters()}
        while step < steps and first is None:
            for idx in _batches(len(X), batch_size, seed, epoch):
                step += 1
                opt.zero_grad()
                loss = F.cross_entropy(model(X[idx]), y[idx])
                loss.backward()
                w_before = {n: w.detach().clone() for n, w in model.named_parameters()}
                opt.step()
                losses.append(loss.item())
                with torch.no_grad():       # the step's size relative to the weights, largest over tensors
                    norms.append(math.sqrt(sum(float(w.double().pow(2).sum()) for w in model.parameters()
                                               if w.dim() > 1)))
                    rel.append(max(float((w - w_before[n]).norm() / w_before[n].norm().clamp_min(1e-30))
                                   for n, w in model.named_parameters() if w.dim() > 1))
                # GaugeFix checks the weights itself (and names the call); the other arms here
                if not math.isfinite(loss.item()) or (fix is None and not all(
                        bool(torch.isfinite(w).all()) for w in model.parameters())):
                    first, message = step, f"step {step}: loss {loss.item():.3g}, or weights non-finite"
                    break
                if fix is not None:
                    stepped = {n: w.detach().clone() for n, w in model.named_parameters()}
                    try:
                        fix()
                    except gt.GaugeError as e:
                        first, message = step, str(e)
                        break
                    with torch.no_grad():   # the balancings so far as rates: (w / w')^2, per tensor
                        for n, w in model.named_parameters():
                            nz = (stepped[n] != 0) & (w != 0)
                            cum[n][nz] += torch.log(stepped[n][nz].abs().double()) - torch.log(w[nz].abs().double())
                        drift.append({n: float(torch.exp(2 * c.mean())) for n, c in cum.items()})
                if step >= steps:
                    break
            epoch += 1
        out[arm] = {"loss": losses, "first_nonfinite": first, "message": message, "relative_step": rel,
                    "weight_norm": norms}
        if fix is not None:
            out[arm]["multipliers_so_far"] = drift
    return out


#: The committed larger version of :func:`compare` (results/torch-training; bench/torch_training_study.py).
LARGER = Comparison(n_train=10000, n_test=10000, epochs=2, seeds=(0, 1, 2, 3, 4))
