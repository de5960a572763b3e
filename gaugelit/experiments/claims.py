"""The verdicts of section 4's claims, from run records, by the analysis plan of ``book/analysis-plan.md``
(committed before the runs it judges; the module follows it, nothing is chosen here).

Section 4.1 of the paper reads its Figs. 3-4 as: gauge fixing (1) gives faster descent of the
regularised loss, (2) lowers SGD's training error, (3) has no similar effect on EGD's training error.
Both runs of a pair start from the same network and see the same mini-batches, so the evidence is one
paired effect per seed, per configuration (data set, architecture, optimizer). Every effect is
relative, a difference of natural logarithms (with minus without gauge fixing):

* claim 1 (and 1*, both networks in their minimum-norm gauge): ``D1``, the mean over epochs 1..E of
  the log ratio of the regularised losses: the area between the log-loss curves over the run's
  length, a measure of the whole descent (the last epoch's log ratio is reported beside it);
* claim 2: ``D2``, the log ratio of SGD's training errors at the last epoch;
* claim 3: ``D3``, EGD's log ratio minus SGD's on the same data set, network and seed: "no similar
  effect" predicts ``D3 > 0`` (EGD's own log ratio is reported beside it).

Errors are floored at half an example, ``max(err, 0.5 / n_train)``, before the logarithm.

The margin is ``m = log 1.1`` (a 10% change either way). Verdicts are symmetric, from three
one-sided t tests on the mean ``theta`` of the paired effects: **holds** (``theta`` beyond ``-m``, for
claim 3 beyond ``+m``), **reversed** (beyond the margin the other way), **negligible**
(``|theta| < m``, by two one-sided tests, the larger p-value counting), otherwise **inconclusive**;
**too few seeds** below three pairs. Within each claim the configurations judged form one family, and
each statement's p-values are adjusted by Holm's method; a verdict needs an adjusted p-value below
``ALPHA``. Intervals are the unadjusted 95% Student-t intervals. The pooled sign test over a claim's
pairs is printed as a second opinion and decides nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .data import DATASETS
from .grid import Settings
from .runfiles import grid_records
from .stats import holm, one_sided_t, read_interval, sign_test, t_cdf, t_interval, t_quantile
from .summaries import paired_differences

__all__ = ["Claim", "CLAIMS", "Effect", "VERDICTS", "STATEMENTS", "LEVEL", "ALPHA", "MIN_SEEDS", "MARGIN",
           "t_cdf", "t_quantile", "t_interval", "sign_test", "holm", "one_sided_t", "read_interval",
           "log_error", "effect", "adjust", "check_claims", "pooled", "claim_table", "plot_effects",
           "Present", "present_grid"]

#: The verdicts, in the order tables list them.
VERDICTS = ("holds", "reversed", "negligible", "inconclusive", "too few seeds")
#: The three statements tested for every configuration (each a one-sided or a TOST test).
STATEMENTS = ("holds", "reversed", "negligible")
#: Confidence level of the printed intervals, and the family-wise error rate of the verdicts.
LEVEL = 0.95
ALPHA = 0.05
#: The fewest pairs a verdict needs: with two, the t interval has one degree of freedom.
MIN_SEEDS = 3
#: The margin for "no effect": a 10% change of the quantity (book/analysis-plan.md gives the reason).
MARGIN = math.log(1.1)


@dataclass(frozen=True)
class Claim:
    """A claim of section 4.1: its ``measure`` (``"curve"``: D1; ``"final"``: D2; ``"did"``: D3) of
    ``metric`` for ``optimizers``, predicted below ``-m`` (``direction="lower"``) or above ``+m``
    (``"higher"``)."""
    name: str
    text: str
    measure: str
    metric: str
    optimizers: tuple
    direction: str


CLAIMS = {
    "1": Claim("1", "gauge fixing gives faster descent of the regularised loss", "curve", "reg_loss",
               ("sgd", "egd"), "lower"),
    "1*": Claim("1*", "... also with both networks in their minimum-norm gauge", "curve", "reg_loss_min_norm",
                ("sgd", "egd"), "lower"),
    "2": Claim("2", "gauge fixing lowers SGD's training error", "final", "train_error", ("sgd",), "lower"),
    "3": Claim("3", "gauge fixing has no similar effect on EGD's training error (its relative effect is "
                    "smaller than SGD's)", "did", "train_error", ("egd",), "higher"),
}


def log_error(value: float, n_train: int) -> float:
    """``log max(value, 0.5 / n_train)``: an error of 0 (every example fitted) has no logarithm."""
    return math.log(max(float(value), 0.5 / n_train))


def _n_train(record) -> int:
    s = record["settings"]
    return int(s["n_train"]) if s.get("n_train") else DATASETS[s["dataset"]].n_train


def _log_final(history, metric, n_train):
    v = history[metric][-1]
    return log_error(v, n_train) if metric.endswith("_error") else math.log(v)


def _per_seed(records, claim: Claim) -> dict[tuple, dict[int, float]]:
    """Per configuration, the effect of ``claim``'s measure per seed (both arms run)."""
    seeds_of = {}
    for r in records:
        d, a, o = (r["settings"][k] for k in ("dataset", "architecture", "optimizer"))
        seeds_of.setdefault((d, a, o), []).append(r)
    out = {}
    for key, group in sorted(seeds_of.items()):
        n_train = _n_train(group[0])
        by_seed = {}
        for seed_records in _by_seed(group).values():
            if set(seed_records) != {False, True}:
                continue
            g, b = seed_records[True]["history"], seed_records[False]["history"]
            seed = seed_records[True]["settings"]["seed"]
            if claim.measure == "curve":
                lg, lb = np.log(g[claim.metric][1:]), np.log(b[claim.metric][1:])
                if lg.size != lb.size or lg.size == 0:
                    raise ValueError(f"{key} seed {seed}: the two runs have different epochs")
                by_seed[seed] = float(np.mean(lg - lb))
            else:
                by_seed[seed] = _log_final(g, claim.metric, n_train) - _log_final(b, claim.metric, n_train)
        out[key] = by_seed
    return out


def _by_seed(group) -> dict[int, dict[bool, dict]]:
    out = {}
    for r in group:
        out.setdefault(r["settings"]["seed"], {})[bool(r["settings"]["gauge_fix"])] = r
    return out


@dataclass(frozen=True)
class Effect:
    """One claim in one configuration ``key``: the paired effects (one per seed, of ``seeds``), their
    mean, sd and unadjusted t interval, the p-values of the three statements (``p``) and after Holm's
    adjustment within the claim (``p_adjusted``), the verdict, and values reported ``beside`` it."""
    claim: str
    key: tuple
    metric: str
    differences: tuple
    seeds: tuple
    mean: float
    sd: float
    low: float
    high: float
    p: dict
    p_adjusted: dict
    sign_p: float
    verdict: str
    direction: str
    margin: float
    level: float
    beside: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.differences)

    def describe(self) -> str:
        if self.n < MIN_SEEDS:
            stats_ = f"mean {self.mean:+.3f}  (no interval, no test)"
        else:
            p = self.p_adjusted[self.verdict] if self.verdict in STATEMENTS else min(self.p_adjusted.values())
            stats_ = (f"mean {self.mean:+.3f}  {self.level:.0%} CI [{self.low:+.3f}, {self.high:+.3f}]  "
                      f"Holm p {p:.3g}")
        extra = "".join(f"  {k} {v:+.3f}" for k, v in self.beside.items())
        return f"claim {self.claim:2}  {' '.join(self.key):30} n={self.n}  {stats_}  {self.verdict}{extra}"


def _verdict(p: dict, n: int, min_seeds: int, alpha: float) -> str:
    if n < min_seeds:
        return "too few seeds"
    significant = [s for s in STATEMENTS if p[s] < alpha]
    return significant[0] if significant else "inconclusive"


def effect(differences, *, direction: str = "lower", margin: float = MARGIN, claim: str = "", key: tuple = (),
           metric: str = "", seeds=None, level: float = LEVEL, alpha: float = ALPHA,
           min_seeds: int = MIN_SEEDS, beside: dict | None = None) -> Effect:
    """The statistics and verdict of one set of paired effects, judged alone (a family of one);
    :func:`adjust` judges a family."""
    d = np.asarray(differences, dtype=float)
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")
    if not margin > 0:
        raise ValueError(f"the margin must be > 0, got {margin}")
    if d.size == 0:
        raise ValueError(f"{key}: no paired effects")
    if not np.isfinite(d).all():
        raise ValueError(f"{key}: non-finite paired effects {d}")
    seeds = tuple(range(d.size)) if seeds is None else tuple(seeds)
    mean = float(d.mean())
    if d.size >= 2:
        sd, (low, high) = float(d.std(ddof=1)), t_interval(d, level)
        toward, away = ("below", "above") if direction == "lower" else ("above", "below")
        sign = -1 if direction == "lower" else 1
        p = {"holds": one_sided_t(d, sign * margin, toward), "reversed": one_sided_t(d, -sign * margin, away),
             "negligible": max(one_sided_t(d, -margin, "above"), one_sided_t(d, margin, "below"))}
    else:
        sd, low, high = float("nan"), float("-inf"), float("inf")
        p = dict.fromkeys(STATEMENTS, 1.0)
    return Effect(claim, tuple(key), metric, tuple(float(x) for x in d), seeds, mean, sd, low, high, p, dict(p),
                  sign_test(d), _verdict(p, d.size, min_seeds, alpha), direction, float(margin), level,
                  dict(beside or {}))


def adjust(effects: list[Effect], *, alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> list[Effect]:
    """Holm's adjustment within each claim: the configurations with at least ``min_seeds`` pairs form
    the family, each statement adjusted separately; the verdicts follow the adjusted p-values."""
    out = list(effects)
    for claim in dict.fromkeys(e.claim for e in effects):
        family = [i for i, e in enumerate(effects) if e.claim == claim and e.n >= min_seeds]
        if not family:
            continue
        adjusted = {s: holm([effects[i].p[s] for i in family]) for s in STATEMENTS}
        for j, i in enumerate(family):
            p_adj = {s: float(adjusted[s][j]) for s in STATEMENTS}
            out[i] = replace(effects[i], p_adjusted=p_adj, verdict=_verdict(p_adj, effects[i].n, min_seeds, alpha))
    return out


def check_claims(records: list[dict], claims=None, *, margin: float = MARGIN, level: float = LEVEL,
                 alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> list[Effect]:
    """Every claim of ``claims`` (default :data:`CLAIMS`) in every configuration of ``records`` with at
    least one seed run both ways (claim 3: both ways with SGD and with EGD), Holm-adjusted per claim."""
    claims = CLAIMS if claims is None else claims
    out = []
    for claim in claims.values():
        per_seed = _per_seed(records, claim)
        final = per_seed if claim.measure == "final" else _per_seed(records, replace(claim, measure="final"))
        for key, values in per_seed.items():
            if key[2] not in claim.optimizers or not values:
                continue
            beside = {}
            if claim.measure == "did":
                sgd = final.get((key[0], key[1], "sgd"), {})
                seeds = [s for s in sorted(values) if s in sgd]
                if not seeds:
                    continue
                d = [values[s] - sgd[s] for s in seeds]
                beside = {"EGD log ratio": float(np.mean([values[s] for s in seeds])),
                          "SGD log ratio": float(np.mean([sgd[s] for s in seeds]))}
            else:
                seeds = sorted(values)
                d = [values[s] for s in seeds]
                if claim.measure == "curve":     # the level at the end, not a speed: no verdict
                    beside = {"last-epoch log ratio": float(np.mean([final[key][s] for s in seeds]))}
            out.append(effect(d, direction=claim.direction, margin=margin, claim=claim.name, key=key,
                              metric=claim.metric, seeds=seeds, level=level, alpha=alpha, min_seeds=min_seeds,
                              beside=beside))
    return adjust(out, alpha=alpha, min_seeds=min_seeds)


def pooled(effects: list[Effect]) -> dict[str, dict]:
    """Per claim: how many configurations got each verdict, and the pairs of all configurations
    together: how many, how many below zero, and the exact sign-test p-value over all of them
    (a second opinion; it decides nothing)."""
    out = {}
    for e in effects:
        row = out.setdefault(e.claim, {"verdicts": dict.fromkeys(VERDICTS, 0), "differences": []})
        row["verdicts"][e.verdict] += 1
        row["differences"] += list(e.differences)
    for row in out.values():
        d = np.array(row.pop("differences"))
        row.update(pairs=int(d.size), below_zero=int((d < 0).sum()), sign_p=sign_test(d))
    return out


def claim_table(effects: list[Effect]) -> str:
    """The effects as text, one line each, then each claim's verdict counts and pooled sign test."""
    lines = [e.describe() for e in effects]
    for name, row in pooled(effects).items():
        counts = ", ".join(f"{v}: {n}" for v, n in row["verdicts"].items() if n)
        lines.append(f"claim {name}: {counts}; all pairs: {row['below_zero']} of {row['pairs']} below zero "
                     f"(sign p = {row['sign_p']:.3g}, a second opinion)")
    return "\n".join(lines)


@dataclass
class Present:
    """What a results folder holds of a grid: the finished ``records`` with the grid's settings,
    the ``missing`` run ids, the ``cells`` (dataset, architecture, optimizer) with at least one seed
    run both ways and the ``missing_cells`` with none, and the ``other`` files of the folder that
    were not used (other settings, unfinished, or not in the grid), by name."""
    records: list
    missing: list
    cells: list
    missing_cells: list
    other: list = field(default_factory=list)
    total: int = 0

    def describe(self) -> str:
        lines = [f"{len(self.records)} of the {self.total} runs present; "
                 f"{len(self.cells)} of {len(self.cells) + len(self.missing_cells)} configurations "
                 "have at least one seed run both ways"]
        if self.missing_cells:
            lines.append("configurations missing: " + "; ".join(" ".join(c) for c in self.missing_cells))
        if self.other:
            lines.append("files not used (other settings, unfinished, or not in the grid): " + ", ".join(self.other))
        return "\n".join(lines)


def present_grid(settings: Settings, out, *, same_code: bool = False) -> Present:
    """The part of the grid ``settings`` that ``out/<scale>/`` holds (any subset, even none)."""
    records = grid_records(settings, out, same_code=same_code)
    have = {r["run_id"] for r in records}
    runs = settings.runs()
    ids = {run.run_id for run in runs}
    folder = Path(out) / settings.scale
    other = sorted(p.name for p in folder.glob("*.json") if p.stem not in have) if folder.is_dir() else []
    configs = list(dict.fromkeys((r.dataset, r.architecture, r.optimizer) for r in runs))
    paired = {key for key, pairs in paired_differences(records, "reg_loss").items() if pairs.size}
    return Present(records=records, missing=[i for i in (r.run_id for r in runs) if i not in have],
                   cells=[c for c in configs if c in paired], missing_cells=[c for c in configs if c not in paired],
                   other=other, total=len(ids))


_COLOURS = {"holds": "tab:green", "reversed": "tab:red", "negligible": "tab:blue", "inconclusive": "tab:orange",
            "too few seeds": "tab:gray"}
_MEASURES = {"curve": "mean log ratio over epochs", "final": "log ratio at the last epoch",
             "did": "EGD's log ratio minus SGD's (last epoch)"}


def plot_effects(effects: list[Effect], claim: str, *, ax=None):
    """Claim ``claim`` in every configuration: the paired effects (dots, one per seed), their mean
    (tick) and t interval (bar), coloured by verdict; the margin ``(-m, m)`` shaded."""
    import matplotlib.pyplot as plt

    picked = [e for e in effects if e.claim == claim]
    if not picked:
        raise ValueError(f"no effects of claim {claim!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.4 * len(picked) + 1.2), constrained_layout=True)
    for i, e in enumerate(picked):
        d = np.array(e.differences)
        ax.plot(d, i + np.linspace(-0.15, 0.15, d.size), "o", color="0.45", ms=3.5)
        if e.n >= MIN_SEEDS:
            ax.plot([e.low, e.high], [i, i], color=_COLOURS[e.verdict], lw=2.5)
        ax.plot([e.mean], [i], "|", color=_COLOURS[e.verdict], ms=12, mew=2)
    ax.axvspan(-picked[0].margin, picked[0].margin, color="tab:blue", alpha=0.08)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(picked)), [" ".join(e.key) for e in picked])
    ax.invert_yaxis()
    measure = CLAIMS[claim].measure if claim in CLAIMS else "final"
    ax.set_xlabel(f"{picked[0].metric}: {_MEASURES[measure]}, with minus without gauge fixing")
    handles = [plt.Line2D([], [], color=c, lw=2.5, label=v) for v, c in _COLOURS.items()
               if any(e.verdict == v for e in picked)]
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_title(f"claim {claim}: {CLAIMS[claim].text}" if claim in CLAIMS else f"claim {claim}", fontsize="medium")
    return ax
