"""The solver figures of the README (issue 3): Algorithm 1 and the block method on the paper's
three networks, float64, p = 1 and 2, he_init(seed=0), on the CPU.

For each case: Algorithm 1's updates to delta = 1e-3 and the gamma it reaches there; updates,
passes over the weights and wall time to gamma < 1e-6 for Algorithm 1 and for the block method,
with the ratios. Timings are the best of ``--repeat`` runs, measured side by side in one process
(the two methods alternate). Row 2 of ``bench/suite.py`` is this measurement.

    python bench/solver_figures.py [--repeat 5] [--json bench/out/solver_figures.json]

Run as a script it uses one BLAS thread unless OPENBLAS_NUM_THREADS (or OMP_/MKL_) says otherwise,
as bench/suite.py does: on a shared 2-core machine a second OpenBLAS thread can make a
matrix-vector product a hundred times slower.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

if __name__ == "__main__":                         # before NumPy loads its BLAS
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import gaugelit as gl  # noqa: E402


def _no_sync():
    pass


def solve_to_gamma(archs, *, repeat=5, dtype="float64", xp=np, sync=_no_sync, gamma_tol=1e-6,
                   clock=time.perf_counter):
    """Per network (``archs``: name -> layer sizes) and p in (1, 2), Algorithm 1 against the block
    method to ``gamma < gamma_tol`` from ``he_init(seed=0)``: updates, passes, best-of-``repeat``
    seconds, and the objective gap between the two minima. Algorithm 1's delta = 1e-3 run too."""
    rows = []
    for arch, sizes in archs.items():
        net = gl.he_init(sizes, seed=0, dtype=dtype, xp=xp)
        for p in (1.0, 2.0):
            delta = gl.minnorm(net, p, method="multiplicative", delta=1e-3)
            times = {"multiplicative": [], "block": []}
            results = {}
            for _ in range(repeat):
                for method in times:                 # alternate: both see the same machine state
                    start = clock()
                    results[method] = gl.minnorm(net, p, method=method, gamma_tol=gamma_tol)
                    sync()
                    times[method].append(clock() - start)
            alg1, fast = results["multiplicative"], results["block"]
            rows.append(dict(arch=arch, sizes=list(sizes), p=p, dtype=dtype,
                             alg1_updates_delta=delta.iterations, alg1_gamma_delta=float(delta.gamma[-1]),
                             alg1_updates=alg1.iterations, alg1_passes=alg1.passes,
                             alg1_seconds=min(times["multiplicative"]),
                             block_updates=fast.iterations, block_passes=fast.passes,
                             block_seconds=min(times["block"]),
                             passes_ratio=alg1.passes / fast.passes,
                             time_ratio=min(times["multiplicative"]) / min(times["block"]),
                             objective_gap=abs(alg1.objective[-1] - fast.objective[-1]) / fast.objective[-1]))
    return rows


HEADER = ("| network | p | Alg. 1 updates to δ=1e-3 | γ there | Alg. 1 to γ<1e-6: updates / passes / ms "
          "| block: sweeps / passes / ms | passes ratio | time ratio |")


def table(rows):
    lines = [HEADER, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['p']:g} | {r['alg1_updates_delta']} | {r['alg1_gamma_delta']:.2e} | "
                     f"{r['alg1_updates']} / {r['alg1_passes']:.0f} / {1e3 * r['alg1_seconds']:.1f} | "
                     f"{r['block_updates']} / {r['block_passes']:.0f} / {1e3 * r['block_seconds']:.1f} | "
                     f"{r['passes_ratio']:.0f}x | {r['time_ratio']:.0f}x |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--archs", nargs="*", default=list(gl.ARCHITECTURES))
    args = parser.parse_args(argv)
    rows = solve_to_gamma({a: gl.ARCHITECTURES[a] for a in args.archs}, repeat=args.repeat)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, "
          f"numpy {np.__version__}, float64, best of {args.repeat}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(machine=platform.uname()._asdict(), rows=rows), indent=1))


if __name__ == "__main__":
    main()
