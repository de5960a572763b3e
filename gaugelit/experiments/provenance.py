"""Which code made a run file, and what has changed since.

Every run file records ``code``, the fingerprint of the modules its numbers depend on
(:func:`gaugelit.experiments.code_fingerprint`). A run made by older code is still worth showing
when nothing that changed since bears on it; :data:`CHANGES` lists, for each fingerprint of older
code that made committed run files, the changes that followed it (found by hashing those modules
at every commit of the history), and which runs each change affects. :func:`provenance` labels a
record with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .runfiles import code_fingerprint

__all__ = ["Change", "CHANGES", "provenance", "label"]


@dataclass(frozen=True)
class Change:
    """A change to the fingerprinted modules, made after code with fingerprint ``after`` (and
    giving fingerprint ``to``); ``affects(settings)`` tells whether it changes a run's numbers."""
    after: str
    to: str
    what: str
    affects: Callable[[dict], bool]


def _never(settings: dict) -> bool:
    return False


def _egd_or_7_layer(settings: dict) -> bool:
    return settings.get("optimizer") == "egd" or settings.get("architecture") == "7-layer"


#: The changes in order, oldest first; each one's ``to`` is the next one's ``after``.
CHANGES = (
    Change("521292068b58017c", "4d355ecba6f6954c",
           "data files checked by one call (data.fetch_dataset): the same files, the same inputs", _never),
    Change("4d355ecba6f6954c", "09f9174f2ebc4a36",
           "gauge.sublevel_log_bounds added (Lemma 2.4; training does not call it)", _never),
    Change("09f9174f2ebc4a36", "7f3d9e2e4a4587d0",
           "the 7-layer network as published (seven weight matrices), and EGD learns its biases by EG+-",
           _egd_or_7_layer),
    Change("7f3d9e2e4a4587d0", "1375d15ed3daba59",
           "a centre option of the SVD projection, off by default (the default inputs are unchanged)", _never),
    Change("1375d15ed3daba59", "216ffe535b7a918e",
           "minnorm also takes a GaugeGraph or DenseNet (gaugelit.graph_solvers); a LayeredNet takes the same path",
           _never),
    Change("216ffe535b7a918e", "25aa658bef98cdfe",
           "train's argument checks shared with gaugelit.batched.train_many, which the fingerprint now covers; "
           "train's arithmetic unchanged", _never),
    Change("25aa658bef98cdfe", "9c3a494c3eac290c",
           "argument checks (gaugelit.checks), norms and minnorm safe from over- and underflow (a fallback "
           "taken only when |W|^p leaves the float range), every history value checked finite: a run "
           "inside the float range does the same arithmetic", _never),
    Change("9c3a494c3eac290c", "cbdd9d374cd2d949",
           "train_many checks every history value like train; a Ctrl-C'd sweep does not wait on its pool",
           _never),
    Change("cbdd9d374cd2d949", "419fb196b9c3cf3e",
           "train and train_many share one function that writes a step into the weights (same arithmetic)",
           _never),
    Change("419fb196b9c3cf3e", "e84f17cba6bf2acb",
           "train and train_many fold the factors into the weights with one function (same arithmetic)",
           _never),
    Change("e84f17cba6bf2acb", "9a4149229e450f37",
           "minnorm re-solves from its prebalanced copy when |W|^p entries that underflowed weigh at the "
           "answer (extreme gauges; the same iterates otherwise)",
           _never),
    Change("9a4149229e450f37", "607fedf908d438c3",
           "minnorm's loop, stopping rule and argument checks shared with the graph solver (same "
           "iterates); an unused name removed from gauge.py",
           _never),
    Change("607fedf908d438c3", "752f9f7892323005",
           "_fold also resets the stored scale and the zero-u flag its two callers reset (same arithmetic)",
           _never),
    Change("752f9f7892323005", "2b852975ce410485",
           "layout only: the modules moved into the layers core, solvers, training and experiments, each "
           "idea written once (one Algorithm-1 update, one Newton solve, one training step for one model "
           "or many); every public number the same (tests/golden: float64 to 1e-12, float32 to its "
           "rounding), the fingerprint now covers "
           "the layers' modules by path; since then options that leave the paper's settings' numbers "
           "unchanged (train's gauge_fix='init' and lr_scale, minnorm's q for the l_{p,q} norm, EG+-'s beta "
           "taken before any balancing, which no balancing of the output units moves) and reliability "
           "checks (the delta rule scaled with p above p = 2 only; a re-solve where the dtype cannot "
           "hold Algorithm 1's sums; a polished Newton shift at dead units, of ~1e-8)", _never),
    Change("2b852975ce410485", "b0e8eae1d839c96d",
           "new functions and options only: the l_{p,q} weight-balancing flows (flow_velocity's and "
           "integrate_flow's q, lpq_balance_gaps, lpq_imbalance) and train's egd_beta_scale (default 1: "
           "the same beta); and the l_{p,q} block method's inner CG as inexact Newton (q != p only: the q = p "
           "solvers and every run of the paper's settings untouched); the graph solver's log-sum-exp scaled "
           "per part, lost entries' logs counted in its objective, and an early switch to the prebalanced "
           "copy (extreme gauges with dead units only; the chain solver that training uses is unchanged); "
           "minnorm's delta=None without gamma_tol as a fixed budget of max_iter updates (a new option); "
           "the graph solver's large blocks without a kernel formed a few rows at a time instead of "
           "stored (graphs and torch models; not the chain that training uses); lpq_imbalance computed by "
           "the l_{p,q} solver's own state (the same value, to rounding)", _never),
)


def provenance(record: dict, *, current: str | None = None) -> dict:
    """``code`` of the record, whether it is the ``current`` code (default: this checkout's
    fingerprint), ``known`` (its fingerprint is current or in :data:`CHANGES`), the changes since
    (``changes``) and those of them that bear on this run (``relevant``), and ``complete``: whether
    the table's changes reach the current code (when the fingerprinted modules change again, the
    table needs an entry for it)."""
    current = code_fingerprint() if current is None else current
    code = record.get("code")
    if code == current:
        return {"code": code, "current": True, "known": True, "complete": True, "changes": [], "relevant": []}
    starts = [i for i, c in enumerate(CHANGES) if c.after == code]
    if not starts:
        return {"code": code, "current": False, "known": False, "complete": False, "changes": [], "relevant": []}
    since = list(CHANGES[starts[0]:])
    settings = record.get("settings", {})
    return {"code": code, "current": False, "known": True, "complete": since[-1].to == current,
            "changes": [c.what for c in since], "relevant": [c.what for c in since if c.affects(settings)]}


def label(record: dict, *, current: str | None = None) -> str:
    """One line for the book: the code that made the run and what has changed since."""
    p = provenance(record, current=current)
    if p["current"]:
        return f"code {p['code']} (this checkout's)"
    if not p["known"]:
        return f"code {p['code']}: older code not in gaugelit.experiments.provenance.CHANGES"
    tail = "" if p["complete"] else "; and later changes not in the table"
    if p["relevant"]:
        return f"code {p['code']}: older; since changed, and bearing on this run: {'; '.join(p['relevant'])}{tail}"
    return f"code {p['code']}: older; nothing changed since bears on this run ({len(p['changes'])} changes){tail}"
