"""ENorm-style sweeps against the block method on chains, a CNN and a residual network.

For each network, in one run, side by side: the ENorm-style baseline (Stock et al., 2019: one
balancing sweep per call, iterated to convergence; :func:`gaugelit.solvers.enorm_style`), the
graph block method (:func:`gaugelit.solvers.minnorm_graph`) and, on chains, the chain block
method (:func:`gaugelit.minnorm` on a LayeredNet). Each runs until the imbalance gamma < 1e-6 and
reports sweeps, passes over the weights (matrix-vector products, in units of all the weights) and
process CPU time (best of ``--repeat``, one BLAS thread). All three reach the same objective
(checked: relative 1e-6). Passes are given in total and after the first products: every method
starts by forming the same products at the starting point (they are the dead-unit test and the
starting imbalance gamma[0]); what follows is the iteration proper, where the methods differ.

    .venv/bin/python bench/graph_bench.py               # full size -> bench/results/<machine>-graph.json
    .venv/bin/python bench/graph_bench.py --size tiny   # the smoke test's size (tests/bench/test_graph_bench.py)

Then, for the CNN and the residual network, what :class:`gaugelit.torch.GaugeFix` adds to a training
step (SGD with momentum, Adam), the step with and without it side by side in one run.

The CNN and residual rows need torch (``pip install -e '.[torch]'``); without it they say skipped.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import gaugelit as gl  # noqa: E402
from gaugelit.core.graph import GaugeGraph  # noqa: E402
from gaugelit.solvers import enorm_style, minnorm_graph  # noqa: E402
from suite import machine, machine_slug  # noqa: E402

GAMMA = 1e-6
CHAINS = {
    "full": {"3-layer": [200, 2500, 1250, 10], "5-layer": [200, 2000, 1000, 500, 250, 10],
             "7-layer": [200, 1000, 750, 750, 500, 500, 250, 10], "50-80-60-40-10": [50, 80, 60, 40, 10]},
    "tiny": {"tiny-3": [8, 12, 6, 3], "tiny-5": [8, 10, 9, 7, 5, 3]},
}


def torch_models(size):
    """A CNN (conv-pool-conv-pool-fc-fc) and a residual network (stem, residual blocks of two
    convolutions on one stream, pooling, fc), He-initialised with seed 0."""
    import torch
    import torch.nn as nn
    torch.manual_seed(0)
    w = 4 if size == "tiny" else 32
    n_blocks = 1 if size == "tiny" else 4

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, w, 3, padding=1), nn.Conv2d(w, 2 * w, 3, padding=1)
            self.fc1, self.fc2 = nn.Linear(2 * w * 7 * 7, 4 * w), nn.Linear(4 * w, 10)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
            x = nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, w, 3, padding=1)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
                                                      nn.Conv2d(w, w, 3, padding=1)) for _ in range(n_blocks))
            self.fc = nn.Linear(w, 10)

        def forward(self, x):
            h = self.stem(x)
            for b in self.blocks:
                h = h + b(torch.relu(h))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(h), 1), 1))

    models = {}
    for name, m in (("CNN", CNN()), ("residual", ResNet())):
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(mod.weight)
                nn.init.zeros_(mod.bias)
        models[name] = m
    return models


def timed(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return out, best


def first_passes(solve):
    """The passes a solve spends before its first update: a zero-update solve of the same kind."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gl.ConvergenceWarning)
        return float(solve(max_iter=0).passes)


def row(name, graph, p, repeat, net=None):
    runs = {"enorm-style": lambda **kw: enorm_style(graph, p, gamma_tol=GAMMA, **kw),
            "block (graph)": lambda **kw: minnorm_graph(graph, p, gamma_tol=GAMMA, **kw)}
    if net is not None:
        runs["block (chain)"] = lambda **kw: gl.minnorm(net, p, gamma_tol=GAMMA, **kw)
    out = {"network": name, "p": p, "weights": int(sum(b.weight.size for b in graph.blocks)),
           "groups": sum(g.free for g in graph.groups)}
    ref = None
    for method, fn in runs.items():
        res, t = timed(fn, repeat)
        assert res.converged and res.gamma[-1] < GAMMA, (name, method)
        ref = ref or res.objective[-1]
        assert abs(res.objective[-1] - ref) <= 1e-6 * ref, (name, method, res.objective[-1], ref)
        first = first_passes(fn)
        out[method] = {"sweeps": res.iterations, "passes": round(float(res.passes), 2),
                       "first passes": round(first, 2), "passes after first": round(float(res.passes) - first, 2),
                       "cpu_s": round(t, 5), "objective": float(res.objective[-1])}
        if method != "enorm-style":
            out[method]["gamma per sweep"] = [float(f"{g:.3g}") for g in res.gamma]
    e, b = out["enorm-style"], out["block (graph)"]
    out["passes ratio"] = round(e["passes"] / b["passes"], 2)
    out["passes ratio after first"] = round(e["passes after first"] / b["passes after first"], 2)
    out["time ratio"] = round(e["cpu_s"] / b["cpu_s"], 2)
    return out


def gaugefix_rows(size, repeat):
    """A training step of the CNN and the residual network (float32, batch 64 of 28x28 inputs, SGD
    with momentum and Adam) with ``GaugeFix`` after it against without, in one run: process time per
    step, best block of 10 steps of ``repeat``. Both arms train the same model in turn, so they
    see the same weights' scale."""
    import torch
    import torch.nn as nn

    from gaugelit.torch import GaugeFix
    torch.set_num_threads(1)
    x, y = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10
    out = []
    for name, model in torch_models(size).items():
        for opt_name, make in (("sgd+momentum", lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9)),
                               ("adam", lambda ps: torch.optim.Adam(ps, lr=1e-3))):
            m = copy.deepcopy(model)
            opt = make(m.parameters())
            fix = GaugeFix(m, 2.0, opt)

            def step():
                opt.zero_grad()
                nn.functional.cross_entropy(m(x), y).backward()
                opt.step()
            arms = {"plain": step, "GaugeFix": lambda: (step(), fix())}
            for f in arms.values():              # warm up both (the first solve starts from He init)
                f()
                f()
            best = {k: float("inf") for k in arms}
            for _ in range(repeat):
                for k, f in arms.items():
                    t = time.process_time()
                    for _ in range(10):
                        f()
                    best[k] = min(best[k], (time.process_time() - t) / 10)
            out.append({"network": name, "optimizer": opt_name, "step_ms": round(1e3 * best["plain"], 2),
                        "step_with_gaugefix_ms": round(1e3 * best["GaugeFix"], 2),
                        "overhead": round(best["GaugeFix"] / best["plain"] - 1, 3),
                        "sweeps_last_call": fix.last.iterations, "passes_last_call": round(float(fix.last.passes), 2)})
    return out


def markdown(result):
    lines = ["| network | p | weights | free groups | ENorm-style sweeps | passes (after first) | CPU s | block sweeps "
             "| passes (after first) | CPU s | passes ratio (after first) | time ratio "
             "| chain block: sweeps / passes / CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['network']} | | | | skipped: {r['skipped']} |||||||||")
            continue
        e, b, c = r["enorm-style"], r["block (graph)"], r.get("block (chain)")
        chain = f"{c['sweeps']} / {c['passes']} / {c['cpu_s']:.4f}" if c else "-"
        lines.append(f"| {r['network']} | {r['p']:g} | {r['weights']} | {r['groups']} | {e['sweeps']} "
                     f"| {e['passes']} ({e['passes after first']}) | {e['cpu_s']:.4f} | {b['sweeps']} "
                     f"| {b['passes']} ({b['passes after first']}) | {b['cpu_s']:.4f} "
                     f"| {r['passes ratio']}x ({r['passes ratio after first']}x) | {r['time ratio']}x | {chain} |")
    if result.get("gaugefix"):
        lines += ["", "| network | optimizer | step (ms) | step + GaugeFix (ms) | GaugeFix adds "
                  "| last call: sweeps / passes |",
                  "|---|---|---|---|---|---|"]
        for r in result["gaugefix"]:
            lines.append(f"| {r['network']} | {r['optimizer']} | {r['step_ms']} | {r['step_with_gaugefix_ms']} "
                         f"| {100 * r['overhead']:+.0f}% | {r['sweeps_last_call']} / {r['passes_last_call']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("full", "tiny"), default="full")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    info = machine(np, 1)
    rows, gaugefix = [], []
    with threadpool_limits(1):
        for p in (2.0, 1.0):
            for name, sizes in CHAINS[args.size].items():
                net = gl.he_init(sizes, seed=0, dtype="float64", xp=np)
                rows.append(row(name, GaugeGraph.from_layered(net), p, args.repeat, net=net))
        try:
            from gaugelit.torch import gauge_graph
            models = torch_models(args.size)
        except ImportError as e:
            rows += [{"network": n, "skipped": f"torch not importable ({e})"} for n in ("CNN", "residual")]
        else:
            for name, m in models.items():
                rows.append(row(name, gauge_graph(m.double()), 2.0, args.repeat))
            gaugefix = gaugefix_rows(args.size, args.repeat)
    info["load_average_after"] = __import__("os").getloadavg()[0]
    result = {"suite": "gaugelit bench/graph_bench.py", "size": args.size, "gamma_tol": GAMMA, "machine": info,
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "command": ".venv/bin/python bench/graph_bench.py" + (" --size tiny" if args.size == "tiny" else ""),
              "rows": rows, "gaugefix": gaugefix}
    path = args.json or ROOT / "bench" / "results" / f"{machine_slug(info)}-graph.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
