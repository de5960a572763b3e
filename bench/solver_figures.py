"""The solver figures of the README (issue 3): Algorithm 1 and the block method on the paper's
three networks, float64, p = 1 and 2, he_init(seed=0), on the CPU.

For each case: Algorithm 1's updates to delta = 1e-3 and the gamma it reaches there; updates,
passes over the weights and wall time to gamma < 1e-6 for Algorithm 1 and for the block method,
with the ratios. Timings are the best of ``--repeat`` runs, measured side by side in one process.

    python bench/solver_figures.py [--repeat 5] [--json bench/out/solver_figures.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import gaugelit as gl


def best_time(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--archs", nargs="*", default=list(gl.ARCHITECTURES))
    args = parser.parse_args(argv)
    rows = []
    for arch in args.archs:
        net = gl.he_init(gl.ARCHITECTURES[arch], seed=0, dtype="float64", xp=np)
        for p in (1.0, 2.0):
            delta = gl.minnorm(net, p, method="multiplicative", delta=1e-3)
            t_alg1, alg1 = best_time(lambda: gl.minnorm(net, p, method="multiplicative", gamma_tol=1e-6),
                                     args.repeat)
            t_fast, fast = best_time(lambda: gl.minnorm(net, p, method="block", gamma_tol=1e-6),
                                     args.repeat)
            rows.append(dict(arch=arch, p=p, alg1_updates_delta=delta.iterations,
                             alg1_gamma_delta=float(delta.gamma[-1]),
                             alg1_updates=alg1.iterations, alg1_passes=alg1.passes, alg1_seconds=t_alg1,
                             block_updates=fast.iterations, block_passes=fast.passes, block_seconds=t_fast,
                             objective_gap=abs(alg1.objective[-1] - fast.objective[-1]) / fast.objective[-1]))
    header = ("| network | p | Alg. 1 updates to δ=1e-3 | γ there | Alg. 1 to γ<1e-6: updates / passes / ms "
              "| block: sweeps / passes / ms | passes ratio | time ratio |")
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, "
          f"numpy {np.__version__}, float64, best of {args.repeat}")
    print(header)
    print("|" + "---|" * 8)
    for r in rows:
        print(f"| {r['arch']} | {r['p']:g} | {r['alg1_updates_delta']} | {r['alg1_gamma_delta']:.2e} | "
              f"{r['alg1_updates']} / {r['alg1_passes']:.0f} / {1e3 * r['alg1_seconds']:.1f} | "
              f"{r['block_updates']} / {r['block_passes']:.0f} / {1e3 * r['block_seconds']:.1f} | "
              f"{r['alg1_passes'] / r['block_passes']:.0f}x | {r['alg1_seconds'] / r['block_seconds']:.0f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(machine=platform.uname()._asdict(), rows=rows), indent=1))


if __name__ == "__main__":
    main()
