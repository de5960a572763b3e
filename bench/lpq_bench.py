"""The l_{p,q} row: the exact block method (Newton per layer) against generalised Algorithm 1, to
gamma < 1e-6, on the paper's three networks (he_init, seed 0, float64), q != p; beside them today's
block method at q = p. One run each; process CPU time.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/lpq_bench.py [--pq 2,1 1,2]
"""
import argparse
import platform
import time

import numpy as np

import gaugelit as gl


def run(net, p, q, method):
    t = time.process_time()
    r = gl.minnorm(net, p, q, method=method, gamma_tol=1e-6, max_iter=100_000)
    return r, 1e3 * (time.process_time() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pq", nargs="+", default=["2,1", "1,2"])
    ap.add_argument("--nets", nargs="+", default=list(gl.ARCHITECTURES))
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, NumPy {np.__version__}")
    print("| network | p | q | method | updates | passes | ms | gamma |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.nets:
        net = gl.he_init(gl.ARCHITECTURES[name], seed=0, dtype="float64", xp=np)
        for pq in args.pq:
            p, q = (float(v) for v in pq.split(","))
            rows = [(p, p, "block"), (p, q, "block"), (p, q, "multiplicative")]
            for pp, qq, method in rows:
                r, ms = run(net, pp, qq, method)
                label = method if qq != pp else "block (q = p, today's)"
                print(f"| {name} | {pp:g} | {qq:g} | {label} | {r.iterations} | {r.passes:.1f} | {ms:.0f} | "
                      f"{r.gamma[-1]:.2g} |", flush=True)


if __name__ == "__main__":
    main()
