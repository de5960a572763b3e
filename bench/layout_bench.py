"""The layout change's speed check (issue 19): gaugelit before it (commit 907eba5, flat modules)
against after it (the working tree, or ``--after COMMIT``), both in one run of one machine.

    python bench/layout_bench.py [--before 907eba5] [--after COMMIT] [--rounds 3] [--size full|tiny]
                                 [--repeat N] [--json bench/results/layout-before-after.json]
                                 [--markdown PATH]

Row 5 needs MNIST: set ``GAUGELIT_DATA_DIR`` (e.g. ``GAUGELIT_DATA_DIR=../shared/data``); without
it that row says skipped in both versions.

Each version runs its own copy of the benchmarks, in its own tree: ``bench/suite.py`` rows 1, 2, 3
and 5 (one subprocess per row), ``bench/graph_bench.py``, and a small driver (below), each in a
subprocess with ``PYTHONPATH`` and the working directory set to that version's tree, one BLAS
thread and ``GAUGELIT_BACKEND=numpy``. The "before" tree (and an ``--after`` commit) is read with
``git archive`` into a temporary folder, removed at the end; the work tree is not touched. For
``--rounds R`` rounds, every benchmark runs once per version, before and after back to back, the
order flipping each round (before-after, after-before, ...). Each measured time keeps its best over
the rounds (the scripts' own best block inside a round); medians over the rounds are kept too. The
clock is each script's: process CPU time (suite rows 1-3, the graph bench, the driver), wall-clock
time for row 5 (its worker processes run side by side: it is noisier, and on a shared machine its
parallel mode shows mostly what the other jobs leave free).

The issue's criteria, as this script reports them:
  - no solve or training step more than 5% slower: each time (rows 1-3, the graph bench's times and
    GaugeFix steps) is flagged where after/before > 1.05, each rate (row 5) where before/after > 1.05;
    passes are flagged where after needs more;
  - the graph solver on chains no slower than the chain solver it replaces: the driver times, in
    each version, ``gaugelit.minnorm(net)`` on the LayeredNet (the chain solver before the change)
    and ``gaugelit.minnorm(gaugelit.GaugeGraph.from_layered(net))`` (the graph solver on the same
    chain, building the graph included), block method, ``gamma_tol=1e-6``, the paper's three
    networks, float32 and float64, p = 1 and 2, the two alternating; the table sets before's chain
    solver against after's graph solver (flagged at > 5%: the timing noise here is a few percent).

Writes the table and every raw JSON to ``--json``; prints the table. Nothing is asserted
(tests/test_layout_bench.py runs ``--size tiny --rounds 1`` as a smoke test).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "907eba5"
SUITE_ROWS = (1, 2, 3, 5)
SLOWER = 1.05                     # the "no more than 5% slower"
TIMEOUT = 3600                    # seconds per subprocess

#: run in each version's tree: the chain solver against the graph solver on the same chain
DRIVER = '''"""minnorm on a LayeredNet against minnorm on GaugeGraph.from_layered(net) (layout_bench.py)."""
import argparse, json, os, statistics, sys, time, warnings
import numpy as np
import gaugelit as gl

ap = argparse.ArgumentParser()
ap.add_argument("--size", default="full")
ap.add_argument("--repeat", type=int, default=7)
ap.add_argument("--json", required=True)
args = ap.parse_args()
archs = ({name: gl.ARCHITECTURES[name] for name in ("3-layer", "5-layer", "7-layer")} if args.size == "full"
         else {"tiny-3": (20, 40, 30, 5), "tiny-5": (20, 30, 30, 20, 10, 5)})
rows = []
with warnings.catch_warnings():
    warnings.simplefilter("error", gl.ConvergenceWarning)
    for arch, sizes in archs.items():
        for dtype in ("float32", "float64"):
            net = gl.he_init(sizes, seed=0, dtype=dtype, xp=np)
            for p in (1.0, 2.0):
                fns = {"chain": lambda: gl.minnorm(net, p, method="block", gamma_tol=1e-6),
                       "graph": lambda: gl.minnorm(gl.GaugeGraph.from_layered(net), p, method="block",
                                                   gamma_tol=1e-6)}
                res = {k: f() for k, f in fns.items()}          # warm up, and the answers
                times = {k: [] for k in fns}
                for _ in range(args.repeat):
                    for k, f in fns.items():                    # alternate
                        t = time.process_time()
                        f()
                        times[k].append(time.process_time() - t)
                row = dict(arch=arch, dtype=dtype, p=p)
                for k, r in res.items():
                    row[k] = dict(ms=1e3 * min(times[k]), median_ms=1e3 * statistics.median(times[k]),
                                  sweeps=int(r.iterations), passes=float(r.passes),
                                  objective=float(r.objective[-1]), gamma=float(r.gamma[-1]))
                rows.append(row)
with open(args.json, "w") as fh:
    json.dump(dict(gaugelit=gl.__file__, threads=os.environ.get("OPENBLAS_NUM_THREADS"), clock="cpu",
                   repeat=args.repeat, rows=rows), fh, indent=1)
'''


# -- the two trees ---------------------------------------------------------------------------------

def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def materialise(commit: str, where: Path) -> Path:
    """The tracked files of ``commit`` (``git archive``) in ``where``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit], check=True,
                          capture_output=True).stdout
    where.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(where, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(where)
    return where


def environment(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), GAUGELIT_BACKEND="numpy")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def run(tree: Path, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, *args], cwd=tree, env=environment(tree), capture_output=True,
                          text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {tree} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def check_import(tree: Path) -> str:
    """The subprocesses import this tree's gaugelit (not an installed copy)."""
    proc = subprocess.run([sys.executable, "-c", "import gaugelit; print(gaugelit.__file__)"], cwd=tree,
                          env=environment(tree), capture_output=True, text=True, check=True)
    found = Path(proc.stdout.strip()).resolve()
    if not found.is_relative_to(tree.resolve()):
        raise SystemExit(f"PYTHONPATH={tree} imports gaugelit from {found}, not from the tree")
    return str(found)


# -- the benchmarks --------------------------------------------------------------------------------

def jobs(size: str, repeat: int | None, driver: Path):
    """name -> (arguments given the output path), in the order they run within a round."""
    rep = ["--repeat", str(repeat)] if repeat else []
    out = {f"suite row {row}": (lambda j, row=row: ["bench/suite.py", "--rows", str(row), "--size", size,
                                                     "--threads", "1", *rep, "--json", j])
           for row in SUITE_ROWS}
    out["graph bench"] = lambda j: ["bench/graph_bench.py", "--size", size, *rep, "--json", j]
    out["chain vs graph"] = lambda j: [str(driver), "--size", size,
                                       "--repeat", str(repeat or (7 if size == "full" else 1)), "--json", j]
    return out


def measure(trees: dict[str, Path], rounds: int, size: str, repeat: int | None, tmp: Path, log) -> dict:
    driver = tmp / "chain_driver.py"
    driver.write_text(DRIVER)
    raw = {version: {name: [] for name in jobs(size, repeat, driver)} for version in trees}
    for r in range(rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for name, make in jobs(size, repeat, driver).items():
            for version in order:
                path = tmp / f"{version}-{name.replace(' ', '-')}-{r}.json"
                start = time.perf_counter()
                run(trees[version], make(str(path)))
                log(f"round {r + 1}/{rounds}: {name}, {version}: {time.perf_counter() - start:.0f} s")
                raw[version][name].append(json.loads(path.read_text()))
    return raw


# -- the quantities --------------------------------------------------------------------------------

def quantities(result: dict) -> list[dict]:
    """One dict per (group, name): kind (time | rate | passes | control), unit, and per version the
    per-round best values and medians."""
    table: dict[tuple, dict] = {}

    def put(version, group, name, kind, unit, value, median=None):
        q = table.setdefault((group, name), dict(group=group, name=name, kind=kind, unit=unit, values={}, medians={}))
        q["values"].setdefault(version, []).append(value)
        q["medians"].setdefault(version, []).append(value if median is None else median)

    def skip(version, group, name, why):
        q = table.setdefault((group, name), dict(group=group, name=name, kind="skipped", unit="", values={},
                                                 medians={}, skipped={}))
        q.setdefault("skipped", {})[version] = why

    for version, runs in result.items():
        for res in runs["suite row 1"]:
            for row in res["rows"]["1"]:
                case = f"{row['arch']}, p = {row['p']:g}"
                put(version, "row 1: Algorithm 1 iteration (float32)", f"{case}: iteration", "time", "ms",
                    row["iteration_ms"], row.get("iteration_median_ms"))
                put(version, "row 1: Algorithm 1 iteration (float32)", f"{case}: with minnorm's records", "time",
                    "ms", row["minnorm_iteration_ms"])
                put(version, "row 1: Algorithm 1 iteration (float32)", f"{case}: floor, one M·v pass (control)",
                    "control", "ms", row["floor_ms"], row.get("floor_median_ms"))
        for res in runs["suite row 2"]:
            for row in res["rows"]["2"]:
                case = f"{row['arch']}, p = {row['p']:g}"
                g = "row 2: solve to γ < 1e-6 (float64)"
                put(version, g, f"{case}: block", "time", "ms", 1e3 * row["block_seconds"])
                put(version, g, f"{case}: Algorithm 1", "time", "ms", 1e3 * row["alg1_seconds"])
                put(version, g, f"{case}: block passes", "passes", "", row["block_passes"])
                put(version, g, f"{case}: Algorithm 1 passes", "passes", "", row["alg1_passes"])
        for res in runs["suite row 3"]:
            for row in res["rows"]["3"]:
                g = f"row 3: SGD step ({row['arch']}, batch {row['batch']}, float32)"
                put(version, g, "plain", "time", "ms", row["plain_ms"], row.get("plain_median_ms"))
                put(version, g, "gauge-fixed", "time", "ms", row["gauge_fixed_ms"], row.get("gauge_fixed_median_ms"))
                put(version, g, "public-API composition", "time", "ms", row["public_api_ms"])
        for res in runs["suite row 5"]:
            for row in res["rows"]["5"]:
                g = "row 5: sweep throughput (wall clock)"
                if "skipped" in row:
                    skip(version, g, "model-steps/s", row["skipped"])
                    continue
                for mode in ("sequential", "batched", "parallel"):
                    if f"{mode}_model_steps_per_s" in row:
                        label = {"sequential": "one after another", "batched": "batched (train_many)",
                                 "parallel": f"{row['jobs']} worker processes"}[mode]
                        put(version, g, f"{row['arch']}: {label}", "rate", "model-steps/s",
                            row[f"{mode}_model_steps_per_s"])
        for res in runs["graph bench"]:
            for row in res["rows"]:
                g = "graph bench: to γ < 1e-6 (float64)"
                if "skipped" in row:
                    skip(version, g, row["network"], row["skipped"])
                    continue
                case = f"{row['network']}, p = {row['p']:g}"
                for method in ("enorm-style", "block (graph)", "block (chain)"):
                    if method in row:
                        put(version, g, f"{case}: {method}", "time", "ms", 1e3 * row[method]["cpu_s"])
                        put(version, g, f"{case}: {method} passes", "passes", "", row[method]["passes"])
            for row in res.get("gaugefix", []):
                g = "graph bench: torch training step (float32, batch 64)"
                case = f"{row['network']}, {row['optimizer']}"
                put(version, g, f"{case}: step", "time", "ms", row["step_ms"])
                put(version, g, f"{case}: step + GaugeFix", "time", "ms", row["step_with_gaugefix_ms"])
        for res in runs["chain vs graph"]:
            for row in res["rows"]:
                case = f"{row['arch']}, {row['dtype']}, p = {row['p']:g}"
                for k, label in (("chain", "minnorm(LayeredNet)"), ("graph", "minnorm(GaugeGraph.from_layered)")):
                    put(version, "block method on the chains (driver)", f"{case}: {label}", "time", "ms",
                        row[k]["ms"], row[k]["median_ms"])
    return list(table.values())


def summarise(q: dict) -> dict:
    """Best over rounds (least time, most rate), median over rounds, ratio and flag."""
    if q["kind"] == "skipped":
        return dict(q, flag="skipped")
    pick = max if q["kind"] == "rate" else min
    q = dict(q, best={v: pick(x) for v, x in q["values"].items()},
             median={v: statistics.median(x) for v, x in q["medians"].items()})
    b, a = q["best"].get("before"), q["best"].get("after")
    q["ratio"] = a / b if a is not None and b else None
    flag = ""
    if q["ratio"] is not None:
        if q["kind"] == "time" and q["ratio"] > SLOWER:
            flag = f"slower (+{100 * (q['ratio'] - 1):.0f}%)"
        elif q["kind"] == "rate" and q["ratio"] < 1 / SLOWER:
            flag = f"slower ({100 * (q['ratio'] - 1):.0f}%)"
        elif q["kind"] == "passes" and a > b + 1e-9:
            flag = "more passes"
    q["flag"] = flag
    return q


def chain_criterion(result: dict) -> list[dict]:
    """Before's chain solver against after's graph solver on the same chain (and after's chain)."""
    rows = {}
    for version, runs in result.items():
        for res in runs["chain vs graph"]:
            for row in res["rows"]:
                key = (row["arch"], row["dtype"], row["p"])
                entry = rows.setdefault(key, dict(arch=row["arch"], dtype=row["dtype"], p=row["p"]))
                for k in ("chain", "graph"):
                    e = entry.setdefault(f"{version} {k}", dict(ms=[], median_ms=[]))
                    e["ms"].append(row[k]["ms"])
                    e["median_ms"].append(row[k]["median_ms"])
                    e.update(sweeps=row[k]["sweeps"], passes=row[k]["passes"], objective=row[k]["objective"])
    out = []
    for entry in rows.values():
        for k in [k for k in entry if " " in k]:
            entry[k]["best_ms"] = min(entry[k]["ms"])
            entry[k]["median_of_rounds_ms"] = statistics.median(entry[k]["median_ms"])
        if "before chain" in entry and "after graph" in entry:
            entry["ratio"] = entry["after graph"]["best_ms"] / entry["before chain"]["best_ms"]
            entry["slower"] = bool(entry["ratio"] > SLOWER)
            entry["same objective"] = bool(abs(entry["after graph"]["objective"] - entry["before chain"]["objective"])
                                           <= 1e-12 * abs(entry["before chain"]["objective"]))
        out.append(entry)
    return out


def fmt(x, unit):
    if x is None:
        return "—"
    if unit == "":                                  # passes
        return f"{x:.2f}"
    if unit == "model-steps/s":
        return f"{x:.1f}"
    return f"{x:.4g}" if x < 1 else (f"{x:.3f}" if x < 100 else f"{x:.1f}")


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"**Layout change, before/after** (`{report['command']}`): before = {report['before']}, "
           f"after = {report['after']}; {report['rounds']} round(s), size {report['size']}, the versions "
           "alternating per benchmark, the order flipping each round; best over rounds (medians of the "
           "rounds in brackets). Process CPU time with one BLAS thread, except row 5 (wall clock).", "",
           f"Machine: {m.get('cpu')} ({m.get('cores')} cores, host {m.get('hostname')}), {m.get('platform')}, "
           f"Python {m.get('python')}, NumPy {m.get('numpy')} ({m.get('blas')}), threads 1; load average "
           f"{report['load_average_before']} before, {report['load_average_after']} after; "
           f"{report['date']}; the whole run took {report['wall_s'] / 60:.1f} min.", "",
           f"Flags: a time more than {100 * (SLOWER - 1):.0f}% longer after, a rate more than "
           f"{100 * (SLOWER - 1):.0f}% lower, more passes. Controls (the M·v floor) measure the machine, "
           "not the code.", ""]
    group = None
    for q in report["quantities"]:
        if q["group"] != group:
            group = q["group"]
            out += ["", f"*{group}*", "", "| quantity | unit | before | after | after/before | flag |",
                    "|---|---|---|---|---|---|"]
        if q["kind"] == "skipped":
            why = "; ".join(f"{v}: {w}" for v, w in q["skipped"].items())
            out.append(f"| {q['name']} | | skipped | skipped | | {why} |")
            continue
        cells = []
        for v in ("before", "after"):
            best, med = q["best"].get(v), q["median"].get(v)
            several = len(q["values"].get(v, [])) > 1 or med != best
            cells.append(fmt(best, q["unit"]) + (f" ({fmt(med, q['unit'])})" if several and q["kind"] != "passes"
                                                 else ""))
        ratio = "—" if q["ratio"] is None else f"{q['ratio']:.3f}"
        out.append(f"| {q['name']} | {q['unit']} | {cells[0]} | {cells[1]} | {ratio} | {q['flag']} |")
    out += ["", "*The graph solver on chains against the chain solver it replaces* (block method, γ < 1e-6, "
            "ms, process CPU time; before: `minnorm(net)`, 907eba5's chain solver; after: "
            "`minnorm(GaugeGraph.from_layered(net))`, building the graph included)", "",
            "| network | dtype | p | before: chain solver | after: graph solver on the chain | after/before "
            "| after: minnorm(net) | before: graph solver | sweeps / passes (before chain, after graph) | flag |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for e in report["chain_vs_graph"]:
        def cell(k, e=e):
            return f"{e[k]['best_ms']:.2f} ({e[k]['median_of_rounds_ms']:.2f})" if k in e else "—"
        sp = (f"{e['before chain']['sweeps']} / {e['before chain']['passes']:.2f}, "
              f"{e['after graph']['sweeps']} / {e['after graph']['passes']:.2f}") if "ratio" in e else "—"
        flag = ("slower" if e.get("slower") else "") + ("" if e.get("same objective", True) else " objective differs")
        out.append(f"| {e['arch']} | {e['dtype']} | {e['p']:g} | {cell('before chain')} | {cell('after graph')} "
                   f"| {e.get('ratio', float('nan')):.3f} | {cell('after chain')} | {cell('before graph')} | {sp} "
                   f"| {flag.strip()} |")
    flagged = [q for q in report["quantities"] if q.get("flag") and q["flag"] != "skipped" and q["kind"] != "control"]
    slower_chain = [e for e in report["chain_vs_graph"] if e.get("slower")]
    counted = sum(q["kind"] in ("time", "rate", "passes") for q in report["quantities"])
    out += ["", f"Flagged: {len(flagged)} of {counted} "
            f"quantities; the graph solver on chains slower than the chain solver before in {len(slower_chain)} "
            f"of {len(report['chain_vs_graph'])} cases."]
    out += [f"- {q['group']} / {q['name']}: {q['flag']}" for q in flagged]
    return "\n".join(out)


def describe_after(commit: str | None) -> str:
    if commit:
        return f"{git('rev-parse', '--short', commit)} ({git('log', '-1', '--format=%s', commit)[:60]})"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return f"the working tree at {git('rev-parse', '--short', 'HEAD')}" + (" with changes" if dirty else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help=f"the commit before the change (default {BEFORE})")
    ap.add_argument("--after", default=None, help="a commit (default: the working tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", choices=("full", "tiny"), default="full")
    ap.add_argument("--repeat", type=int, default=None,
                    help="passed to every script (default: each script's own; the driver 7, tiny 1)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "layout-before-after.json")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    start, load_before = time.perf_counter(), round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="gaugelit-layout-bench-") as tmp_name:
        tmp = Path(tmp_name)
        before_sha = git("rev-parse", "--verify", f"{args.before}^{{commit}}")
        trees = {"before": materialise(before_sha, tmp / "before"),
                 "after": materialise(git("rev-parse", "--verify", f"{args.after}^{{commit}}"), tmp / "after")
                 if args.after else ROOT}
        imported = {v: check_import(t) for v, t in trees.items()}
        raw = measure(trees, args.rounds, args.size, args.repeat, tmp, log)
    quantities_ = [summarise(q) for q in quantities(raw)]
    machine = raw["after"]["suite row 1"][-1]["machine"]
    options = (("--before", args.before, BEFORE), ("--after", args.after, None), ("--rounds", args.rounds, 3),
               ("--size", args.size, "full"), ("--repeat", args.repeat, None))
    command = "python bench/layout_bench.py" + "".join(f" {flag} {value}" for flag, value, default in options
                                                       if value != default)
    report = dict(suite="gaugelit bench/layout_bench.py", command=command,
                  before=f"{before_sha[:7]} ({git('log', '-1', '--format=%s', before_sha)[:60]})",
                  before_commit=before_sha, after=describe_after(args.after), after_commit=args.after,
                  imported=imported, rounds=args.rounds, size=args.size, repeat=args.repeat, machine=machine,
                  data_dir=os.environ.get("GAUGELIT_DATA_DIR"), load_average_before=load_before,
                  load_average_after=round(os.getloadavg()[0], 2),
                  date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  wall_s=time.perf_counter() - start, quantities=quantities_, chain_vs_graph=chain_criterion(raw))
    report["table"] = markdown(report)
    report["raw"] = raw
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report["table"] + "\n")
    print(report["table"])
    log(f"wrote {args.json} ({report['wall_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
