"""The verdicts of section 4's claims, from run records.

Section 4.1 of the paper draws three conclusions from its Figs. 3-4: gauge fixing (1) lowers the
regularised loss, (2) lowers SGD's training error, and (3) has no similar effect on EGD's
training error. Each is tested here the same way. Both runs of a pair start from the same network
and see the same mini-batches, so the evidence is the paired difference *with minus without*
gauge fixing, one per seed (:func:`gaugelit.experiments.paired_differences`), per data set,
architecture and optimizer. Of these differences the module reports the mean, the standard
deviation, a Student-t confidence interval for the mean and the exact two-sided sign-test p-value,
and gives a verdict by a stated rule:

``"lower"`` claims (1, 2): ``"too few seeds"`` with fewer than ``min_seeds`` pairs; ``"holds"``
when the whole interval lies below zero; ``"reversed"`` when it lies above zero; otherwise
``"inconclusive"``.

``"none"`` claims (3, "no similar effect"): absence of an effect cannot be shown by failing to
find one, so the claim needs an equivalence margin ``m``: ``"holds"`` when the whole interval lies
inside ``(-m, m)``; ``"reversed"`` (an effect, against the claim) when it lies outside the margin's
reach of zero, i.e. excludes zero and is not inside the margin; otherwise ``"inconclusive"``.

The interval assumes that the paired differences of one configuration are independent draws from
a normal distribution (seeds are independent; normality is not checked, and with few seeds cannot
be). The sign test assumes only independence and is printed beside it; with n pairs it cannot go
below ``2**(1 - n)``, so fewer than six pairs never reach p < 0.05 by it alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .grid import Settings
from .runfiles import grid_records
from .stats import read_interval, sign_test, t_cdf, t_interval, t_quantile  # once, in stats; named here for the book
from .summaries import paired_differences

__all__ = ["Claim", "CLAIMS", "Effect", "VERDICTS", "LEVEL", "MIN_SEEDS", "MARGIN", "t_cdf",
           "t_quantile", "t_interval", "sign_test", "verdict", "effect", "check_claims", "pooled",
           "claim_table", "plot_effects", "Present", "present_grid"]

#: The verdicts, in the order tables list them.
VERDICTS = ("holds", "reversed", "inconclusive", "too few seeds")
#: Confidence level of the intervals.
LEVEL = 0.95
#: The fewest pairs a verdict other than "too few seeds" needs: with two, the t interval has one
#: degree of freedom (a multiplier of 12.7 at 95%), and a spread cannot be estimated from it.
MIN_SEEDS = 3
#: Claim 3's equivalence margin on the training error (a fraction of examples): one percentage
#: point. An effect smaller than this counts as "no similar effect"; see the module docstring.
MARGIN = 0.01


@dataclass(frozen=True)
class Claim:
    """A claim of section 4.1: ``metric`` with minus without gauge fixing is ``expect``
    (``"lower"``: below zero; ``"none"``: within the margin of zero) for ``optimizers``."""
    name: str
    text: str
    metric: str
    optimizers: tuple
    expect: str


#: Section 4.1's claims. ``1*`` is claim 1 with the gauge factored out: both runs compared in their
#: minimum-norm gauges (``reg_loss_min_norm``), so that what remains compares the learned functions.
CLAIMS = {
    "1": Claim("1", "gauge fixing lowers the regularised loss", "reg_loss", ("sgd", "egd"), "lower"),
    "1*": Claim("1*", "... also with both networks in their minimum-norm gauge", "reg_loss_min_norm",
                ("sgd", "egd"), "lower"),
    "2": Claim("2", "gauge fixing lowers SGD's training error", "train_error", ("sgd",), "lower"),
    "3": Claim("3", "gauge fixing has no similar effect on EGD's training error", "train_error", ("egd",),
               "none"),
}


#: The verdict for each reading of an interval (:func:`~gaugelit.experiments.stats.read_interval`),
#: per kind of claim: a "lower" claim reads the interval against zero, a "none" claim against its margin.
_VERDICT = {
    "lower": {"too few": "too few seeds", "below": "holds", "above": "reversed", "inconclusive": "inconclusive"},
    "none": {"too few": "too few seeds", "within": "holds", "below": "reversed", "above": "reversed",
             "inconclusive": "inconclusive"},
}


def verdict(low: float, high: float, n: int, expect: str = "lower", *, margin: float | None = None,
            min_seeds: int = MIN_SEEDS) -> str:
    """The verdict of the rule in the module docstring, from the interval ``(low, high)`` of ``n`` pairs."""
    if expect not in _VERDICT:
        raise ValueError(f"expect must be 'lower' or 'none', got {expect!r}")
    if expect == "none" and not (margin is not None and margin > 0):
        raise ValueError(f"a 'none' claim needs an equivalence margin > 0, got {margin}")
    return _VERDICT[expect][read_interval(low, high, n, min_n=min_seeds, margin=margin if expect == "none" else None)]


@dataclass(frozen=True)
class Effect:
    """One claim in one configuration ``key`` = (dataset, architecture, optimizer): the paired
    differences (with minus without gauge fixing) at ``epoch``, their statistics and the verdict."""
    claim: str
    key: tuple
    metric: str
    epoch: int
    differences: tuple
    mean: float
    sd: float
    low: float
    high: float
    sign_p: float
    verdict: str
    expect: str
    margin: float | None
    level: float

    @property
    def n(self) -> int:
        return len(self.differences)

    def describe(self) -> str:
        interval = (f"[{self.low:+.4f}, {self.high:+.4f}]" if self.n >= 2 else "(no interval)")
        sd = f"{self.sd:.4f}" if self.n >= 2 else "  —   "
        return (f"{' '.join(self.key):28} claim {self.claim:2}  {self.metric:17} mean {self.mean:+.4f} "
                f"sd {sd}  {self.level:.0%} CI {interval}  n={self.n}  sign p={self.sign_p:.3f}  "
                f"{self.verdict}")


def effect(differences, *, claim: str = "", key: tuple = (), metric: str = "", epoch: int = -1,
           expect: str = "lower", margin: float | None = None, level: float = LEVEL,
           min_seeds: int = MIN_SEEDS) -> Effect:
    """The statistics and verdict of one set of paired differences."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError(f"{key}: no paired differences")
    if not np.isfinite(d).all():
        raise ValueError(f"{key}: non-finite paired differences {d}")
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    low, high = t_interval(d, level) if d.size > 1 else (float("-inf"), float("inf"))
    return Effect(claim, tuple(key), metric, epoch, tuple(float(x) for x in d), mean, sd, low, high,
                  sign_test(d), verdict(low, high, d.size, expect, margin=margin, min_seeds=min_seeds),
                  expect, margin, level)


def check_claims(records: list[dict], claims=None, *, epoch: int = -1, level: float = LEVEL,
                 min_seeds: int = MIN_SEEDS, margin: float = MARGIN) -> list[Effect]:
    """Every claim of ``claims`` (default :data:`CLAIMS`) in every configuration of ``records``
    that has at least one pair run both ways, at ``epoch`` (default the last)."""
    claims = CLAIMS if claims is None else claims
    out = []
    for claim in claims.values():
        for key, d in paired_differences(records, claim.metric, epoch).items():
            if key[2] in claim.optimizers and d.size:
                out.append(effect(d, claim=claim.name, key=key, metric=claim.metric, epoch=epoch,
                                  expect=claim.expect, margin=margin if claim.expect == "none" else None,
                                  level=level, min_seeds=min_seeds))
    return out


def pooled(effects: list[Effect]) -> dict[str, dict]:
    """Per claim: how many configurations got each verdict, and the pairs of all configurations
    together: how many, how many below zero, and the exact sign-test p-value over all of them
    (pairs of different configurations are independent runs, so the sign test stays exact)."""
    out = {}
    for e in effects:
        row = out.setdefault(e.claim, {"verdicts": {v: 0 for v in VERDICTS}, "differences": []})
        row["verdicts"][e.verdict] += 1
        row["differences"] += list(e.differences)
    for row in out.values():
        d = np.array(row.pop("differences"))
        row.update(pairs=int(d.size), below_zero=int((d < 0).sum()), sign_p=sign_test(d))
    return out


def claim_table(effects: list[Effect]) -> str:
    """The effects as text, one line each, then each claim's pooled counts."""
    lines = [e.describe() for e in effects]
    for name, row in pooled(effects).items():
        counts = ", ".join(f"{v}: {n}" for v, n in row["verdicts"].items() if n)
        lines.append(f"claim {name}: {counts}; all pairs: {row['below_zero']} of {row['pairs']} below zero "
                     f"(sign p = {row['sign_p']:.3g})")
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


def plot_effects(effects: list[Effect], claim: str, *, ax=None):
    """Claim ``claim`` in every configuration: the paired differences (dots, one per seed), their
    mean (tick) and t interval (bar), coloured by verdict; claim 3's margin shaded."""
    import matplotlib.pyplot as plt

    picked = [e for e in effects if e.claim == claim]
    if not picked:
        raise ValueError(f"no effects of claim {claim!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.4 * len(picked) + 1.2), constrained_layout=True)
    colours = {"holds": "tab:green", "reversed": "tab:red", "inconclusive": "tab:orange",
               "too few seeds": "tab:gray"}
    for i, e in enumerate(picked):
        d = np.array(e.differences)
        ax.plot(d, i + np.linspace(-0.15, 0.15, d.size), "o", color="0.45", ms=3.5)
        if np.isfinite(e.low):
            ax.plot([e.low, e.high], [i, i], color=colours[e.verdict], lw=2.5)
        ax.plot([e.mean], [i], "|", color=colours[e.verdict], ms=12, mew=2)
    if picked[0].expect == "none":
        ax.axvspan(-picked[0].margin, picked[0].margin, color="tab:green", alpha=0.1)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(picked)), [" ".join(e.key) for e in picked])
    ax.invert_yaxis()
    ax.set_xlabel(f"{picked[0].metric}: with minus without gauge fixing")
    handles = [plt.Line2D([], [], color=c, lw=2.5, label=v) for v, c in colours.items()
               if any(e.verdict == v for e in picked)]
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_title(f"claim {claim}: {CLAIMS[claim].text}" if claim in CLAIMS else f"claim {claim}", fontsize="medium")
    return ax
