"""What the speed work bought: gaugelit at an earlier commit against the working tree, side by side
in one process, on the CPU (NumPy, one BLAS thread, process CPU time).

    python bench/before_after.py [--before 4c774c5] [--repeat 30]

The earlier package is read from git (``git show``, nothing in the work tree changes) into a
temporary folder and imported under another name. Measured, before and now:
  - one SGD step of the 3-layer network at batch 32, plain and with gauge fixing, as ``train`` runs
    it (before: ``minnorm`` + ``loss_and_grads`` + ``sgd_step`` each step; now: the training loop's
    stored stack, ``gaugelit.training._stack.Stack``);
  - ``minnorm`` to gamma < 1e-6 on the 7-layer network (float64, p = 2), both methods.
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def package_at(commit: str, where: Path):
    """Import gaugelit as it was at ``commit`` (as the package ``gaugelit_before``)."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", commit, "gaugelit/"],
                           check=True, capture_output=True, text=True).stdout.split()
    pkg = where / "gaugelit_before"
    pkg.mkdir()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{name}"], check=True,
                                  capture_output=True, text=True).stdout
            (pkg / Path(name).name).write_text(text)
    sys.path.insert(0, str(where))
    return importlib.import_module("gaugelit_before")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="4c774c5", help="the earlier commit (default: before the work)")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    import numpy as np

    import gaugelit as gl
    import suite
    from gaugelit.training._stack import Stack
    suite.CLOCK = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        old = package_at(args.before, Path(tmp))
        sizes = gl.ARCHITECTURES["3-layer"]
        data = suite.batches(np, sizes, 32)
        sgd = suite.PAPER_SGD

        def old_step(gauge):
            state = {"net": old.he_init(sizes, seed=0, xp=np)}
            if gauge:
                state["net"] = old.minnorm(state["net"], 2.0, method="multiplicative", delta=1e-3).net
            batch = suite.Cycle(data)

            def step():
                X, y = batch()
                if gauge:
                    state["net"] = old.minnorm(state["net"], 2.0, method="multiplicative", delta=1e-3).net
                _, gw, gb = old.loss_and_grads(state["net"], X, y)
                old.sgd_step(state["net"], gw, gb, **sgd)
            return step

        def new_step(gauge):
            state = Stack([gl.he_init(sizes, seed=0, xp=np)], g=int(gauge))
            last = {len(sizes) - 2}                     # only the output biases move
            if gauge:
                state.gauge_fix(2.0, 1e-3)
            batch = suite.Cycle(data)

            def step():
                X, y = batch()
                if gauge:
                    state.gauge_fix(2.0, 1e-3)
                state.step(X[None], y[None], "log", "sgd", trained_biases=last, **sgd)
                state.maybe_fold()
            return step

        t = suite.side_by_side({"before plain": old_step(False), "now plain": new_step(False),
                                "before gauge-fixed": old_step(True), "now gauge-fixed": new_step(True)},
                               block=5, repeat=args.repeat, sync=lambda: None)
        print(f"commit {args.before} against the working tree; process CPU time, best block of "
              f"{args.repeat}; 3-layer SGD step, batch 32, float32")
        print("| step | before (ms) | now (ms) | speed-up |\n|---|---|---|---|")
        for kind in ("plain", "gauge-fixed"):
            b, n = t[f"before {kind}"][0], t[f"now {kind}"][0]
            print(f"| {kind} | {1e3 * b:.3f} | {1e3 * n:.3f} | {b / n:.2f}x |")
        print(f"| gauge fixing adds | {100 * (t['before gauge-fixed'][0] / t['before plain'][0] - 1):+.1f}% "
              f"| {100 * (t['now gauge-fixed'][0] / t['now plain'][0] - 1):+.1f}% | |")

        print("\nminnorm to gamma < 1e-6, 7-layer, float64, p = 2 (best of 5)")
        print("| method | before (ms) | now (ms) | speed-up |\n|---|---|---|---|")
        sizes = gl.ARCHITECTURES["7-layer"]
        old_net = old.he_init(sizes, seed=0, dtype="float64", xp=np)
        new_net = gl.he_init(sizes, seed=0, dtype="float64", xp=np)
        for method in ("block", "multiplicative"):
            t = suite.side_by_side(
                {"before": lambda: old.minnorm(old_net, 2.0, method=method, gamma_tol=1e-6),
                 "now": lambda: gl.minnorm(new_net, 2.0, method=method, gamma_tol=1e-6)},
                block=1, repeat=5, sync=lambda: None)
            print(f"| {method} | {1e3 * t['before'][0]:.1f} | {1e3 * t['now'][0]:.1f} | "
                  f"{t['before'][0] / t['now'][0]:.2f}x |")


if __name__ == "__main__":
    main()
