"""gaugelit's benchmark suite: five ratios, each measured in one run with the baseline and the
candidate side by side, on the CPU (NumPy) or the GPU (CuPy), with the machine named.

    python bench/suite.py [--size full|tiny] [--backend auto|numpy|cupy] [--threads 1]
                          [--rows 1 2 3 4 5] [--repeat N] [--jobs N] [--clock auto|cpu|wall]
                          [--json PATH] [--markdown PATH]

``make bench`` runs it at full size; bench/RESULTS.md holds the measured tables.

Rows
  1  Algorithm 1's time per iteration (float32, p = 1 and 2, the three networks) against the
     memory floor: one matrix-vector product over M = |W|^p, the least an iteration must read.
  2  Solve to gamma < 1e-6 from he_init: the block method against Algorithm 1, wall time and
     passes over the weights (float64; bench/solver_figures.py prints the same table).
  3  One SGD step (3-layer, batch 32, float32) with gauge fixing (Algorithm 1, delta = 1e-3, as
     ``train(gauge_fix=True)`` runs it) against the same step without.
  4  One SGD step against a straightforward eager PyTorch step (same shapes, dtype, data and
     update: SGD with l2 weight decay, hidden biases frozen); skipped where torch is absent.
  5  Sweep throughput in model-steps per second: ``gaugelit reproduce`` with the grid cell's models
     batched (``train_many``) and with one worker process per core, each against the same runs
     one after another (MNIST: skipped where it is unavailable).

Timings alternate baseline and candidate in blocks and keep the best block (the machine may be
shared); medians are recorded too. The clock is process CPU time on NumPy with one thread (other
jobs' scheduling does not inflate it) and wall-clock time otherwise; row 5 always times
wall-clock time, since its processes run side by side. ``--threads`` (default 1: a sweep runs one process per core)
is set for OpenBLAS, MKL and OpenMP before NumPy loads, and for torch. Nothing here is asserted:
tests/bench/test_bench.py only runs ``--size tiny`` as a smoke test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_SGD = dict(lr=1e-3, weight_decay=1e-4)          # section 4.1 (gaugelit.training.OPTIMIZERS)

SIZES = {
    # archs: networks of rows 1-2; step_arch, batch: rows 3-5; block: calls per timed block;
    # repeat: timed blocks; solve_repeat: row-2 solves; row 5: a sweep of seeds x gauge on/off runs
    # of sweep_arch on sweep_examples MNIST examples for one epoch, the best of sweep_rounds
    "full": dict(archs=("3-layer", "5-layer", "7-layer"), step_arch="3-layer", batch=32, block=5,
                 repeat=40, solve_repeat=5, iter_block=5, seeds=5, sweep_arch="3-layer",
                 sweep_examples=4096, sweep_rounds=2),
    "tiny": dict(archs={"tiny-3": (20, 40, 30, 5), "tiny-5": (20, 30, 30, 20, 10, 5)},
                 step_arch="tiny-3", batch=8, block=3, repeat=2, solve_repeat=1, iter_block=3, seeds=1,
                 sweep_arch="3-layer", sweep_examples=256, sweep_rounds=1),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    parser.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                        help="array backend (default: gaugelit.default_backend(), i.e. GAUGELIT_BACKEND)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP/torch threads; 0 keeps the libraries' defaults")
    parser.add_argument("--rows", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    parser.add_argument("--repeat", type=int, default=None, help="timed blocks per measurement")
    parser.add_argument("--jobs", type=int, default=0,
                        help="row 5's worker processes (default 0: one per available core)")
    parser.add_argument("--json", type=Path, default=None,
                        help="default: bench/results/<cpu|gpu>-<model>[-<n>threads].json")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                        help="auto: CPU time on NumPy with one thread (robust on a shared machine), "
                             "wall time otherwise")
    return parser.parse_args(argv)


def set_threads(threads):
    """Thread counts must be in the environment before NumPy (and its BLAS) is loaded."""
    if threads and "numpy" in sys.modules:
        print("warning: numpy is already imported; --threads may not take effect", file=sys.stderr)
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)


# -- the machine ---------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    """1-minute load average (other processes share the cores and slow the timings)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine(xp, threads):
    import numpy as np
    info = dict(hostname=socket.gethostname(), cpu=cpu_model(), cores=os.cpu_count(),
                platform=platform.platform(), python=platform.python_version(), numpy=np.__version__,
                backend=xp.__name__, threads=threads or "library default",
                openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"),
                load_average_before=load_average())
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # the layout of show_config differs across NumPy versions
        info["blas"] = "unknown"
    if xp.__name__ == "cupy":
        props = xp.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        info["cupy"] = xp.__version__
    return info


def machine_slug(info) -> str:
    name = info.get("gpu") or info["cpu"]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or info["hostname"]
    kind = "gpu" if "gpu" in info else "cpu"
    threads = info["threads"]
    if threads == 1 or kind == "gpu":
        suffix = ""
    else:
        suffix = f"-{threads}threads" if isinstance(threads, int) else "-default-threads"
    return f"{kind}-{slug}{suffix}"


# -- timing --------------------------------------------------------------------------------------

def synchronizer(xp):
    if xp.__name__ == "cupy":
        return lambda: xp.cuda.get_current_stream().synchronize()
    return lambda: None


#: the clock of every timing in this run: "cpu" (process CPU time: the right cost on a shared
#: machine when one thread does the work) or "wall" (with several threads, and on a GPU)
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = "wall"


def side_by_side(fns, *, block, repeat, sync):
    """Seconds per call of each function in ``fns`` (name -> callable): blocks of ``block`` calls,
    the functions in turn, ``repeat`` rounds; returns name -> (best block, median block)."""
    clock = CLOCKS[CLOCK]
    for fn in fns.values():                       # warm up: caches, allocator, first-call costs
        fn()
    sync()
    per_call = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = clock()
            for _ in range(block):
                fn()
            sync()
            per_call[name].append((clock() - start) / block)
    return {name: (min(t), sorted(t)[len(t) // 2]) for name, t in per_call.items()}


# -- rows ----------------------------------------------------------------------------------------

def networks(cfg, key="archs"):
    import gaugelit as gl
    archs = cfg[key]
    if isinstance(archs, dict):
        return archs
    return {name: gl.ARCHITECTURES[name] for name in archs}


def step_network(cfg):
    """Layer sizes of the network rows 3-5 train."""
    import gaugelit as gl
    return cfg["archs"][cfg["step_arch"]] if isinstance(cfg["archs"], dict) else \
        gl.ARCHITECTURES[cfg["step_arch"]]


def row_solver_iteration(cfg, xp, sync, repeat):
    """Row 1: one iteration of Algorithm 1 against one matrix-vector product over M."""
    import gaugelit as gl
    from gaugelit.core.gauge import _abs_pow, dead_units
    from gaugelit.solvers._chain import ChainState
    from gaugelit.solvers._steps import multiplicative_step
    rows = []
    for arch, sizes in networks(cfg).items():
        net = gl.he_init(sizes, seed=0, dtype="float32", xp=xp)
        for p in (1.0, 2.0):
            M = [_abs_pow(W, p, xp) for W in net.weights]
            v = [xp.ones(m.shape[1], dtype=m.dtype) for m in M]
            stacked = [m[None] for m in M]                # the solver's state holds a model axis
            st = ChainState(stacked, p, xp, lambda: [d[None] for d in dead_units(net)])
            recorded = ChainState(stacked, p, xp, lambda: [d[None] for d in dead_units(net)])

            def minnorm_iteration():              # what gl.minnorm does per update
                float(multiplicative_step(recorded)[0])
                recorded.objective()
                recorded.gamma()

            t = side_by_side({"floor": lambda: [m @ x for m, x in zip(M, v)],
                              "iteration": lambda: float(multiplicative_step(st)[0]),
                              "minnorm_iteration": minnorm_iteration},
                             block=cfg["iter_block"], repeat=repeat, sync=sync)
            rows.append(dict(arch=arch, p=p, dtype="float32", weights=sum(int(m.size) for m in M),
                             floor_ms=1e3 * t["floor"][0], iteration_ms=1e3 * t["iteration"][0],
                             minnorm_iteration_ms=1e3 * t["minnorm_iteration"][0],
                             floor_median_ms=1e3 * t["floor"][1],
                             iteration_median_ms=1e3 * t["iteration"][1],
                             ratio=t["iteration"][0] / t["floor"][0],
                             minnorm_ratio=t["minnorm_iteration"][0] / t["floor"][0]))
    return rows


def row_solve(cfg, xp, sync, repeat):
    """Row 2: the block method against Algorithm 1, to gamma < 1e-6 (bench/solver_figures.py)."""
    from solver_figures import solve_to_gamma
    rows = solve_to_gamma(networks(cfg), repeat=repeat, dtype="float64", xp=xp, sync=sync,
                          clock=CLOCKS[CLOCK])
    for r in rows:
        if r["arch"] == "7-layer":
            r["meets_target"] = bool(r["passes_ratio"] >= 20 and r["time_ratio"] >= 10)
    return rows


def batches(xp, sizes, batch, count=16, seed=0):
    """A fixed pool of synthetic batches (inputs N(0, 1), labels uniform), float32."""
    import numpy as np
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((count, batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], (count, batch))
    return [(xp.asarray(X[i]), xp.asarray(y[i])) for i in range(count)]


class Cycle:
    def __init__(self, items):
        self.items, self.i = items, 0

    def __call__(self):
        self.i = (self.i + 1) % len(self.items)
        return self.items[self.i]


def gaugelit_steps(xp, sizes, data):
    """The plain and the gauge-fixed SGD step exactly as ``gaugelit.train`` runs them, and the
    same step composed from the public API (minnorm, loss_and_grads, sgd_step) for reference."""
    import gaugelit as gl
    from gaugelit.training._stack import Stack
    net = gl.he_init(sizes, seed=0, dtype="float32", xp=xp)
    plain, gauged = Stack([net]), Stack([net], g=1)
    last = {len(net.weights) - 1}                 # only the output biases move (section 4.1)
    gauged.gauge_fix(2.0, 1e-3)                   # balanced once; training keeps it so
    counts = {"updates": 0, "solves": 0}
    next_plain, next_gauged, next_public = Cycle(data), Cycle(data), Cycle(data)

    def plain_step():
        X, y = next_plain()
        plain.step(X[None], y[None], "log", "sgd", trained_biases=last, **PAPER_SGD)
        plain.maybe_fold()

    def gauged_step():
        X, y = next_gauged()
        counts["updates"] += int(gauged.gauge_fix(2.0, 1e-3)[0][0])
        counts["solves"] += 1
        gauged.step(X[None], y[None], "log", "sgd", trained_biases=last, **PAPER_SGD)
        gauged.maybe_fold()

    public = {"net": gl.minnorm(net, 2.0, method="multiplicative", delta=1e-3).net}

    def public_step():
        X, y = next_public()
        public["net"] = gl.minnorm(public["net"], 2.0, method="multiplicative", delta=1e-3).net
        _, gw, gb = gl.loss_and_grads(public["net"], X, y)
        gl.sgd_step(public["net"], gw, gb, **PAPER_SGD)

    return plain_step, gauged_step, public_step, counts


def row_gauge_overhead(cfg, xp, sync, repeat):
    """Row 3: the SGD step with gauge fixing against the same step without."""
    sizes = step_network(cfg)
    data = batches(xp, sizes, cfg["batch"])
    plain_step, gauged_step, public_step, counts = gaugelit_steps(xp, sizes, data)
    t = side_by_side({"plain": plain_step, "gauge_fixed": gauged_step, "public_api": public_step},
                     block=cfg["block"], repeat=repeat, sync=sync)
    return [dict(arch=cfg["step_arch"], batch=cfg["batch"], dtype="float32", p=2.0, delta=1e-3,
                 plain_ms=1e3 * t["plain"][0], gauge_fixed_ms=1e3 * t["gauge_fixed"][0],
                 public_api_ms=1e3 * t["public_api"][0],
                 plain_median_ms=1e3 * t["plain"][1], gauge_fixed_median_ms=1e3 * t["gauge_fixed"][1],
                 overhead=t["gauge_fixed"][0] / t["plain"][0] - 1,
                 public_api_overhead=t["public_api"][0] / t["plain"][0] - 1,
                 updates_per_solve=counts["updates"] / max(counts["solves"], 1),
                 meets_target=bool(t["gauge_fixed"][0] <= 1.2 * t["plain"][0]))]


def torch_step(torch, device, sizes, data):
    """A straightforward eager PyTorch SGD step: nn.Linear + ReLU, cross-entropy, SGD with weight
    decay on the weights only (gaugelit decays no bias), hidden biases frozen as in the paper."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for lin in linears[:-1]:
        lin.bias.requires_grad_(False)
    opt = torch.optim.SGD([{"params": [lin.weight for lin in linears],
                            "weight_decay": PAPER_SGD["weight_decay"]},
                           {"params": [linears[-1].bias], "weight_decay": 0.0}], lr=PAPER_SGD["lr"])
    import numpy as np

    import gaugelit as gl
    pool = [(torch.as_tensor(np.asarray(gl.to_numpy(X))).to(device),
             torch.as_tensor(np.asarray(gl.to_numpy(y))).to(device)) for X, y in data]
    next_batch = Cycle(pool)

    def step():
        X, y = next_batch()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()

    return step


def row_torch(cfg, xp, sync, repeat, threads):
    """Row 4: gaugelit's SGD step against the eager PyTorch step."""
    try:
        import torch
    except ImportError:
        return [dict(skipped="torch not installed (pip install 'gaugelit[bench]' or torch)")]
    if xp.__name__ == "cupy":
        if not torch.cuda.is_available():
            return [dict(skipped="torch sees no CUDA device")]
        device, torch_sync = "cuda", torch.cuda.synchronize
    else:
        device, torch_sync = "cpu", (lambda: None)
        if threads:
            torch.set_num_threads(threads)
    sizes = step_network(cfg)
    data = batches(xp, sizes, cfg["batch"])
    plain_step, gauged_step, _, _ = gaugelit_steps(xp, sizes, data)
    tstep = torch_step(torch, device, sizes, data)

    def both_sync():
        sync()
        torch_sync()

    t = side_by_side({"torch": tstep, "gaugelit": plain_step, "gaugelit_gauge_fixed": gauged_step},
                     block=cfg["block"], repeat=repeat, sync=both_sync)
    return [dict(arch=cfg["step_arch"], batch=cfg["batch"], dtype="float32", device=device,
                 torch=torch.__version__, torch_threads=torch.get_num_threads(),
                 torch_ms=1e3 * t["torch"][0], gaugelit_ms=1e3 * t["gaugelit"][0],
                 gaugelit_gauge_fixed_ms=1e3 * t["gaugelit_gauge_fixed"][0],
                 torch_median_ms=1e3 * t["torch"][1], gaugelit_median_ms=1e3 * t["gaugelit"][1],
                 speedup=t["torch"][0] / t["gaugelit"][0],
                 speedup_gauge_fixed=t["torch"][0] / t["gaugelit_gauge_fixed"][0],
                 meets_target=bool(t["gaugelit"][0] <= t["torch"][0]))]


def row_sweep(cfg, xp, rounds, jobs):
    """Row 5: sweep throughput in model-steps per second of ``gaugelit.experiments.reproduce``:
    the runs one after another in this process (the baseline), in ``jobs`` worker processes (one
    per core on the CPU; not measured with ``--jobs 1``), and batched (``batch_models``: the grid
    cell's models stacked and stepped together by :func:`gaugelit.train_many`, in this process).
    The runs are the paper's grid for one network, data set and norm (seeds x gauge on/off, SGD,
    MNIST) on a subset for one epoch; data loading and the per-epoch evaluation count, as in a
    real sweep. Wall-clock time (processes run side by side); the best of ``rounds``."""
    import shutil
    import tempfile

    from gaugelit import experiments as ex
    from gaugelit.experiments.data import DataFileMissing, fetch_dataset
    try:
        fetch_dataset("mnist", download=False)              # a benchmark does not download
    except DataFileMissing as err:
        return [dict(skipped=f"{str(err).split(' (')[0]}; set GAUGELIT_DATA_DIR, or let "
                             "`gaugelit.load_dataset('mnist')` download it")]
    os.environ["GAUGELIT_BACKEND"] = xp.__name__          # the worker processes' backend
    settings = ex.Settings("bench", ("mnist",), (cfg["sweep_arch"],), seeds=tuple(range(cfg["seeds"])),
                           epochs=1, n_train=cfg["sweep_examples"], n_test=1000, optimizers=("sgd",))
    jobs = jobs or ex.available_cores()
    steps = len(settings.runs()) * settings.epochs * -(-settings.n_train // settings.batch_size)
    modes = {"sequential": dict(jobs=1, batch_models=False), "batched": dict(jobs=1, batch_models=True)}
    if jobs > 1:
        modes["parallel"] = dict(jobs=jobs, batch_models=False)
    best = dict.fromkeys(modes, float("inf"))
    for _ in range(rounds):
        for mode, kwargs in modes.items():                  # alternate the modes in each round
            folder = Path(tempfile.mkdtemp(prefix="gaugelit-bench-sweep-"))
            try:
                start = time.perf_counter()
                ex.reproduce(settings, folder, log=None, **kwargs)
                best[mode] = min(best[mode], time.perf_counter() - start)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    rate = {mode: steps / t for mode, t in best.items()}
    grid_steps = 10 * 30 * 60_000 // 32                     # 5 seeds x gauge on/off, 30 epochs of MNIST
    row = dict(arch=cfg["sweep_arch"], runs=len(settings.runs()), examples=settings.n_train,
               steps_per_run=steps // len(settings.runs()), backend=xp.__name__, jobs=jobs)
    for mode in modes:
        row.update({f"{mode}_s": best[mode], f"{mode}_model_steps_per_s": rate[mode],
                    f"paper_grid_hours_{mode}": grid_steps / rate[mode] / 3600})
    row["batched_speedup"] = rate["batched"] / rate["sequential"]
    if "parallel" in modes:
        row["speedup"] = rate["parallel"] / rate["sequential"]
    return [row]


# -- report --------------------------------------------------------------------------------------

def command(args, row):
    parts = ["python bench/suite.py", f"--rows {row}"]
    if args.size != "full":
        parts.append(f"--size {args.size}")
    if args.backend != "auto":
        parts.append(f"--backend {args.backend}")
    if args.threads != 1:
        parts.append(f"--threads {args.threads}")
    if args.clock != "auto" and row != 5:
        parts.append(f"--clock {args.clock}")
    if args.jobs and row == 5:
        parts.append(f"--jobs {args.jobs}")
    return " ".join(parts)


def markdown(result, args):
    m = result["machine"]
    out = [f"Machine: {m.get('gpu', m['cpu'])} ({m['cores']} cores, host {m['hostname']}), "
           f"{m['platform']}, Python {m['python']}, NumPy {m['numpy']} ({m['blas']}), backend "
           f"{m['backend']}, threads {m['threads']}, OPENBLAS_CORETYPE={m['openblas_coretype']}; "
           f"size {result['size']}; load average {m['load_average_before']} before, "
           f"{m['load_average_after']} after; {result['date']}.", "",
           f"Times are the best block of repeated blocks, the baseline and the candidate alternating, "
           f"in {'process CPU time' if result['clock'] == 'cpu' else 'wall-clock time'}.", ""]
    rows = result["rows"]

    def skipped(key, title):
        r = rows[key][0]
        if "skipped" in r:
            out.extend([f"**{title}** — skipped: {r['skipped']}", ""])
            return True
        return False

    if "1" in rows:
        out += ["**Row 1 — Algorithm 1 per iteration against the memory floor** "
                f"(`{command(args, 1)}`)", "",
                "| network | p | weights | floor: one M·v pass (ms) | iteration (ms) | ratio "
                "| with minnorm's records (ms) | ratio |", "|---|---|---|---|---|---|---|---|"]
        for r in rows["1"]:
            out.append(f"| {r['arch']} | {r['p']:g} | {r['weights']:,} | {r['floor_ms']:.3f} | "
                       f"{r['iteration_ms']:.3f} | {r['ratio']:.2f}x | {r['minnorm_iteration_ms']:.3f} | "
                       f"{r['minnorm_ratio']:.2f}x |")
        out.append("")
    if "2" in rows:
        from solver_figures import table
        out += [f"**Row 2 — solve to γ < 1e-6 from he_init, float64: block against Algorithm 1** "
                f"(`{command(args, 2)}`; target on the 7-layer network: ≥ 20x fewer passes, "
                "≥ 10x less time)", "", table(rows["2"]), ""]
    if "3" in rows:
        r = rows["3"][0]
        out += [f"**Row 3 — SGD step with gauge fixing against without** (`{command(args, 3)}`; "
                "target: ≤ 20% added)", "",
                "| network | batch | plain step (ms) | gauge-fixed step (ms) | added "
                "| Alg. 1 updates per solve | public-API composition (ms) | added |",
                "|---|---|---|---|---|---|---|---|",
                f"| {r['arch']} | {r['batch']} | {r['plain_ms']:.3f} | {r['gauge_fixed_ms']:.3f} | "
                f"{100 * r['overhead']:+.1f}% | {r['updates_per_solve']:.2f} | {r['public_api_ms']:.3f} | "
                f"{100 * r['public_api_overhead']:+.1f}% |", ""]
    if "4" in rows and not skipped("4", f"Row 4 — against eager PyTorch (`{command(args, 4)}`)"):
        r = rows["4"][0]
        out += [f"**Row 4 — SGD step against eager PyTorch** (`{command(args, 4)}`; target: ≥ 1x)", "",
                "| network | batch | device | torch (ms) | gaugelit (ms) | speed-up "
                "| gaugelit + gauge fixing (ms) | speed-up |", "|---|---|---|---|---|---|---|---|",
                f"| {r['arch']} | {r['batch']} | {r['device']} (torch {r['torch']}, "
                f"{r['torch_threads']} threads) | {r['torch_ms']:.3f} | {r['gaugelit_ms']:.3f} | {r['speedup']:.2f}x | "
                f"{r['gaugelit_gauge_fixed_ms']:.3f} | {r['speedup_gauge_fixed']:.2f}x |", ""]
    if "5" in rows and not skipped("5", f"Row 5 — sweep throughput (`{command(args, 5)}`)"):
        r = rows["5"][0]
        parallel = "parallel_s" in r
        processes = f" and {r['jobs']} worker processes" if parallel else ""
        out += [f"**Row 5 — sweep throughput: batched models{processes} "
                f"against one after another** (`{command(args, 5)}`; {r['runs']} runs of {r['steps_per_run']} "
                "steps, wall-clock time)", "",
                "| network | backend | one after another (model-steps/s) | batched, train_many (model-steps/s) "
                "| speed-up | in parallel (model-steps/s) | speed-up "
                "| 10 runs x 56,250 steps (h): one after another / batched / in parallel |",
                "|---|---|---|---|---|---|---|---|",
                f"| {r['arch']} | {r['backend']} | {r['sequential_model_steps_per_s']:.1f} | "
                f"{r['batched_model_steps_per_s']:.1f} | {r['batched_speedup']:.2f}x | "
                + (f"{r['parallel_model_steps_per_s']:.1f} ({r['jobs']} processes) | {r['speedup']:.2f}x | "
                   if parallel else "not measured (--jobs 1) | — | ")
                + f"{r['paper_grid_hours_sequential']:.2f} / {r['paper_grid_hours_batched']:.2f} / "
                + (f"{r['paper_grid_hours_parallel']:.2f} |" if parallel else "— |"), ""]
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))   # solver_figures, when imported
    import numpy as np

    import gaugelit as gl
    if args.backend == "auto":
        xp = gl.default_backend()
    elif args.backend == "cupy":
        if not gl.cupy_available():
            raise SystemExit("--backend cupy: CuPy does not import or sees no CUDA device")
        import cupy as xp
    else:
        xp = np
    cfg = SIZES[args.size]
    global CLOCK
    CLOCK = args.clock if args.clock != "auto" else ("cpu" if xp is np and args.threads == 1 else "wall")
    sync = synchronizer(xp)
    repeat = args.repeat or cfg["repeat"]
    info = machine(xp, args.threads)
    result = dict(suite="gaugelit bench/suite.py", size=args.size, machine=info, clock=CLOCK,
                  date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), rows={}, commands={})
    runners = {1: lambda: row_solver_iteration(cfg, xp, sync, repeat),
               2: lambda: row_solve(cfg, xp, sync, args.repeat or cfg["solve_repeat"]),
               3: lambda: row_gauge_overhead(cfg, xp, sync, repeat),
               4: lambda: row_torch(cfg, xp, sync, repeat, args.threads),
               5: lambda: row_sweep(cfg, xp, args.repeat or cfg["sweep_rounds"], args.jobs)}
    for row in sorted(set(args.rows)):
        if row not in runners:
            raise SystemExit(f"--rows: no row {row}; rows are 1 to 5")
        start = time.perf_counter()
        result["rows"][str(row)] = runners[row]()
        result["commands"][str(row)] = command(args, row)
        print(f"row {row}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    info["load_average_after"] = load_average()
    text = markdown(result, args)
    print(text)
    path = args.json or ROOT / "bench" / "results" / f"{machine_slug(info)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
