"""bench/graph_bench.py as a smoke test at a tiny size (no timing is asserted)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_graph_bench_runs_tiny(tmp_path):
    out = tmp_path / "g.json"
    proc = subprocess.run([sys.executable, "bench/graph_bench.py", "--size", "tiny", "--repeat", "1",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, GAUGELIT_BACKEND="numpy"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["machine"]["cpu"] and result["gamma_tol"] == 1e-6
    names = {r["network"] for r in result["rows"]}
    assert {"tiny-3", "tiny-5", "CNN", "residual"} <= names
    if not any("skipped" in r for r in result["rows"]):     # torch there: GaugeFix's cost per step
        assert {(r["network"], r["optimizer"]) for r in result["gaugefix"]} == {
            (n, o) for n in ("CNN", "residual") for o in ("sgd+momentum", "adam")}
        assert all(r["step_with_gaugefix_ms"] > 0 and r["step_ms"] > 0 for r in result["gaugefix"])
    for r in result["rows"]:
        if "skipped" in r:
            continue
        e, b = r["enorm-style"], r["block (graph)"]
        assert abs(e["objective"] - b["objective"]) <= 1e-6 * b["objective"]
        assert b["sweeps"] <= e["sweeps"]
        for m in (e, b):     # the first products are the same for both, and part of the total
            assert m["first passes"] == e["first passes"] > 0
            assert abs(m["passes"] - m["first passes"] - m["passes after first"]) < 0.011
        assert len(b["gamma per sweep"]) == b["sweeps"] + 1 and b["gamma per sweep"][-1] < 1e-6
