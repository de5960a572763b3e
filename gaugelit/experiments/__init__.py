"""Section 4's experiments, the paper's own wing; nothing below it imports it.

- :mod:`.data`: the data sets, pinned by hash, and their top-k projection;
- :mod:`.grid`: the grid of Figs. 3-4 (runs, settings, the ``ci`` and ``paper`` scales, cells, shards);
- :mod:`.runfiles`: one JSON file per finished run, written atomically and read back;
- :mod:`.pool`: the worker processes of every sweep;
- :mod:`.sweep`: trains the runs that have no finished file (:func:`reproduce`);
- :mod:`.summaries`: curves, tables, paired differences and figures from the run files;
- :mod:`.stats`, :mod:`.claims`: the paired statistics, and section 4.1's claims judged by them;
- :mod:`.provenance`, :mod:`.ablation`: which code made a run, and the claim-3 study;
- :mod:`.soft_claims`: the soft-gauge chapter's statements judged by the plan's amendment;
- :mod:`.toy`: the toy problem of the soft-gauge chapter.

A module imports only modules listed before it, so the wing has no import cycle. This face
re-exports the names a sweep needs.
"""
from . import ablation, claims, data, grid, pool, provenance, runfiles, soft_claims, stats, summaries, sweep, toy
from .data import DATASETS, load_dataset
from .grid import SETTINGS, Run, Settings, cells, run_settings, settings_for, shard_of, shard_runs
from .runfiles import (
    FORMAT,
    METRICS,
    ResultsNotWritable,
    available_cores,
    check_writable,
    code_fingerprint,
    device_name,
    grid_records,
    is_finished,
    load_results,
    write_json_atomic,
)
from .summaries import balancing_share, curves, final_table, paired_differences, plot_learning_curves
from .sweep import reproduce, run_cell, run_one

__all__ = ["Settings", "SETTINGS", "Run", "settings_for", "run_settings", "run_one", "reproduce",
           "is_finished", "write_json_atomic", "run_cell", "cells", "shard_of", "shard_runs",
           "load_results", "grid_records", "code_fingerprint", "device_name", "available_cores",
           "ResultsNotWritable", "check_writable", "curves", "final_table", "paired_differences",
           "balancing_share", "plot_learning_curves", "METRICS", "FORMAT",
           "DATASETS", "load_dataset",
           "ablation", "claims", "data", "grid", "pool", "provenance", "runfiles", "soft_claims", "stats", "summaries",
           "sweep", "toy"]
