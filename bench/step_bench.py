"""The training step of section 4 per network: SGD against EGD, plain and gauge-fixed, as
``gaugelit.train`` runs it (``Stack.step``, one model, batch 32, float32, MNIST's 200 inputs and 10
classes), and where EGD's extra time goes.

EGD's weight update is ``S *= exp(-lr sign(S) grad)``: an exponential (and a sign) over every
weight per step, where SGD adds. The second table times that update alone on one layer's weights,
SGD's against EGD's, and a candidate EGD update that writes ``sign(S)`` into a kept buffer instead of
a new array; the candidate is used only if it gives the same numbers, bit for bit (checked here)
and is faster. Side by side, the variants in turn, process CPU time (one thread)::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/step_bench.py [--repeat 7] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  (timing, machine description)

PAPER = {"sgd": dict(lr=0.1, weight_decay=1e-4, p=2.0), "egd": dict(lr=0.1, weight_decay=1e-4, p=1.0)}


def step_functions(sizes, data):
    """Per (optimizer, gauge): one training step of one model, as ``train`` runs it."""
    import gaugelit as gl
    from gaugelit.training._stack import Stack

    net = gl.he_init(sizes, seed=0, dtype="float32")
    last = {len(net.weights) - 1}                 # only the output biases move (section 4.1)
    beta = {len(net.weights) - 1: np.full((1, 1), 0.01)}
    fns = {}
    for opt in ("sgd", "egd"):
        kw = PAPER[opt]
        for gauge in (False, True):
            st = Stack([net], g=int(gauge), beta=beta if opt == "egd" else None)
            if gauge:
                st.gauge_fix(kw["p"], 1e-3)
            batches = suite.Cycle(data)

            def step(st=st, opt=opt, gauge=gauge, batches=batches, kw=kw):
                X, y = batches()
                if gauge:
                    st.gauge_fix(kw["p"], 1e-3)
                st.step(X[None], y[None], "log", opt, kw["lr"], kw["weight_decay"], trained_biases=last)
                st.maybe_fold()
            fns[(opt, gauge)] = step
    return fns


def row_steps(archs, repeat, block):
    rows = []
    for arch in archs:
        import gaugelit as gl
        sizes = list(gl.ARCHITECTURES[arch])
        sizes[0], sizes[-1] = 200, 10
        data = suite.batches(np, sizes, 32)
        fns = step_functions(sizes, data)
        t = suite.side_by_side({f"{o}{'+g' if g else ''}": f for (o, g), f in fns.items()},
                               block=block, repeat=repeat, sync=lambda: None)
        for gauge in (False, True):
            sgd, egd = (t[f"{o}{'+g' if gauge else ''}"][0] for o in ("sgd", "egd"))
            rows.append(dict(arch=arch, weights=sum(a * b for a, b in zip(sizes[:-1], sizes[1:])),
                             gauge=gauge, sgd_ms=1e3 * sgd, egd_ms=1e3 * egd,
                             sgd_steps_per_s=1 / sgd, egd_steps_per_s=1 / egd, egd_over_sgd=egd / sgd))
    return rows


def _egd_kept_sign(S, G, T):
    """The candidate: EGD's update with sign(S) written into the kept buffer ``T``."""
    np.sign(S, out=T)
    G *= T
    np.exp(G, out=G)
    S *= G


def row_update(archs, repeat, block):
    """The weight update alone on the largest layer of each network, in train's row blocks."""
    import gaugelit as gl
    from gaugelit.training._stack import Stack, _apply_update

    rows = []
    rng = np.random.default_rng(0)
    for arch in archs:
        sizes = list(gl.ARCHITECTURES[arch])
        sizes[0], sizes[-1] = 200, 10
        n_out, n_in = max(zip(sizes[1:], sizes[:-1]), key=lambda s: s[0] * s[1])
        W = (rng.standard_normal((n_out, n_in)) * 0.05).astype(np.float32)
        G0 = (rng.standard_normal((n_out, n_in)) * 1e-3).astype(np.float32)
        rows_per = max(1, min(n_out, Stack.BLOCK_BYTES // (4 * n_in)))
        S = {k: W.copy() for k in ("sgd", "egd", "egd_kept_sign")}
        G = np.empty((rows_per, n_in), dtype=np.float32)
        T = np.empty_like(G)

        def blocks(fn, S):
            for r0 in range(0, n_out, rows_per):
                r1 = min(n_out, r0 + rows_per)
                g = G[:r1 - r0]
                g[...] = G0[r0:r1]
                fn(S[r0:r1], g)

        fns = {"sgd": lambda: blocks(lambda s, g: _apply_update(np, s, g, "sgd", 1.0), S["sgd"]),
               "egd": lambda: blocks(lambda s, g: _apply_update(np, s, g, "egd", 1.0), S["egd"]),
               "egd_kept_sign": lambda: blocks(lambda s, g: _egd_kept_sign(s, g, T[:len(g)]), S["egd_kept_sign"])}
        t = suite.side_by_side(fns, block=block, repeat=repeat, sync=lambda: None)
        a, b = W.copy(), W.copy()             # the candidate's numbers against EGD's, from the same start
        for _ in range(3):
            blocks(lambda s, g: _apply_update(np, s, g, "egd", 1.0), a)
            blocks(lambda s, g: _egd_kept_sign(s, g, T[:len(g)]), b)
        rows.append(dict(arch=arch, layer=f"{n_out}x{n_in}", sgd_us=1e6 * t["sgd"][0], egd_us=1e6 * t["egd"][0],
                         egd_kept_sign_us=1e6 * t["egd_kept_sign"][0], egd_over_sgd=t["egd"][0] / t["sgd"][0],
                         kept_sign_over_egd=t["egd_kept_sign"][0] / t["egd"][0],
                         bitwise_same=bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))))
    return rows


def markdown(steps, updates, info, command):
    out = [f"Machine: {info}.", "", f"`{command}`", "",
           "| network | weights | gauge fixing | SGD step (ms) | EGD step (ms) | SGD model-steps/s | "
           "EGD model-steps/s | EGD / SGD |", "|---|---|---|---|---|---|---|---|"]
    for r in steps:
        out.append(f"| {r['arch']} | {r['weights']:,} | {'every step' if r['gauge'] else 'none'} | "
                   f"{r['sgd_ms']:.3f} | {r['egd_ms']:.3f} | {r['sgd_steps_per_s']:.0f} | "
                   f"{r['egd_steps_per_s']:.0f} | {r['egd_over_sgd']:.2f}x |")
    out += ["", "| network | largest layer | SGD update (us) | EGD update (us) | EGD / SGD | "
            "EGD, sign in a kept buffer (us) | / EGD | same bits |", "|---|---|---|---|---|---|---|---|"]
    for r in updates:
        out.append(f"| {r['arch']} | {r['layer']} | {r['sgd_us']:.1f} | {r['egd_us']:.1f} | "
                   f"{r['egd_over_sgd']:.2f}x | {r['egd_kept_sign_us']:.1f} | {r['kept_sign_over_egd']:.2f}x | "
                   f"{'yes' if r['bitwise_same'] else 'NO'} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["3-layer", "5-layer", "7-layer"])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--block", type=int, default=50, help="steps per timed block")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    suite.CLOCK = "cpu"
    before = suite.load_average()
    steps = row_steps(args.archs, args.repeat, args.block)
    updates = row_update(args.archs, args.repeat, args.block)
    info = suite.machine(np, int(os.environ.get("OPENBLAS_NUM_THREADS", "1")))
    info = (f"{info['cpu']}, NumPy {np.__version__}, one thread, process CPU time, best of {args.repeat} "
            f"blocks of {args.block}; load average {before} before, {suite.load_average()} after")
    command = "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python bench/step_bench.py " + " ".join(argv or sys.argv[1:])
    print(markdown(steps, updates, info, command.strip()))
    if args.json:
        args.json.write_text(json.dumps({"steps": steps, "updates": updates, "machine": info}, indent=1))


if __name__ == "__main__":
    main()
