"""Throughput of the paper-scale grid, read off its committed run files (no run is made).

Each run file records its settings and ``wall_seconds``; a run of E epochs on n examples at batch
size B makes ``E * ceil(n / B)`` training steps of one model. Per data set, network, optimiser and
gauge setting this prints the runs' model-steps per second (median, range) and minutes per run, as
the table of bench/RESULTS.md, and writes it with the run ids it used to
``bench/results/grid-throughput.json`` (tests/bench/test_grid_throughput.py recomputes the table
from those files)::

    .venv/bin/python bench/grid_throughput.py            # results/paper -> the table and the JSON

The runs were made one process per core on a shared 2-core CPU, with other jobs running beside
them: the figures are what the sweep achieved, not what the code can do on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_TRAIN = {"mnist": 60000, "fashion-mnist": 60000, "emnist-balanced": 112800, "cifar10": 50000}


def steps(settings: dict) -> int:
    n = settings["n_train"] or FULL_TRAIN[settings["dataset"]]
    return settings["epochs"] * math.ceil(n / settings["batch_size"])


def table(records: list[dict]) -> list[dict]:
    """One row per (dataset, architecture, optimizer, gauge_fix), in that order."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        s = r["settings"]
        groups.setdefault((s["dataset"], s["architecture"], s["optimizer"], bool(s["gauge_fix"])), []).append(r)
    rows = []
    for (dataset, arch, opt, gauge), runs in sorted(groups.items()):
        rates = [steps(r["settings"]) / r["wall_seconds"] for r in runs]
        minutes = [r["wall_seconds"] / 60 for r in runs]
        rows.append({"dataset": dataset, "architecture": arch, "optimizer": opt, "gauge_fix": gauge,
                     "runs": len(runs), "seeds": sorted(r["settings"]["seed"] for r in runs),
                     "steps_per_s_median": round(statistics.median(rates), 1),
                     "steps_per_s_min": round(min(rates), 1), "steps_per_s_max": round(max(rates), 1),
                     "minutes_min": round(min(minutes), 1), "minutes_max": round(max(minutes), 1)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| data set | network | optimiser | gauge fixing | runs (seeds) | model-steps/s: median (range) "
             "| minutes per run |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        seeds = ",".join(map(str, r["seeds"]))
        lines.append(f"| {r['dataset']} | {r['architecture']} | {r['optimizer'].upper()} | "
                     f"{'every step' if r['gauge_fix'] else 'none'} | {r['runs']} ({seeds}) | "
                     f"{r['steps_per_s_median']} ({r['steps_per_s_min']}-{r['steps_per_s_max']}) | "
                     f"{r['minutes_min']}-{r['minutes_max']} |")
    return "\n".join(lines)


def read_runs(folder: Path, run_ids=None) -> list[dict]:
    paths = sorted(folder.glob("*.json")) if run_ids is None else [folder / f"{i}.json" for i in run_ids]
    records = [json.loads(p.read_text()) for p in paths]
    return [r for r in records if r.get("status") == "finished"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "paper")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "grid-throughput.json")
    args = parser.parse_args(argv)
    records = read_runs(args.runs)
    rows = table(records)
    args.json.write_text(json.dumps({"command": "python bench/grid_throughput.py",
                                     "run_ids": sorted(r["run_id"] for r in records),
                                     "devices": sorted({r["device"] for r in records}), "rows": rows},
                                    indent=1) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
