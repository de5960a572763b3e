"""bench/layout_bench.py as a smoke test: before (907eba5) and after at the tiny size, one round
(no timing is asserted; the full run's table goes to bench/RESULTS.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "907eba5"


def have_commit(commit):
    return subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not have_commit(BEFORE), reason=f"git history lacks {BEFORE}, the commit before the "
                    "layout change (a shallow clone? `git fetch --unshallow`)")
def test_layout_bench_runs_both_versions_tiny(tmp_path):
    out, md = tmp_path / "layout.json", tmp_path / "layout.md"
    proc = subprocess.run([sys.executable, "bench/layout_bench.py", "--size", "tiny", "--rounds", "1",
                           "--repeat", "1", "--quiet", "--json", str(out), "--markdown", str(md)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, GAUGELIT_BACKEND="numpy"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["before_commit"].startswith(BEFORE) and report["rounds"] == 1 and report["size"] == "tiny"
    before_tree = Path(report["imported"]["before"]).parents[1]      # a temporary tree, removed
    assert Path(report["imported"]["after"]) == ROOT / "gaugelit" / "__init__.py" and not before_tree.exists()
    jobs = {"suite row 1", "suite row 2", "suite row 3", "suite row 5", "graph bench", "chain vs graph"}
    for version in ("before", "after"):
        runs = report["raw"][version]
        assert set(runs) == jobs and all(len(v) == 1 for v in runs.values())
        for row in ("1", "2", "3", "5"):
            assert runs[f"suite row {row}"][0]["rows"][row]
        assert {r["network"] for r in runs["graph bench"][0]["rows"]} >= {"tiny-3", "tiny-5", "CNN", "residual"}
        assert len(runs["chain vs graph"][0]["rows"]) == 2 * 2 * 2      # networks x dtypes x p
    groups = {q["group"].split(":")[0] for q in report["quantities"]}
    assert groups >= {"row 1", "row 2", "row 3", "row 5", "graph bench", "block method on the chains (driver)"}
    for q in report["quantities"]:          # every quantity measured in both versions (or skipped in both)
        if q["kind"] == "skipped":
            assert set(q["skipped"]) == {"before", "after"}
        else:
            assert set(q["best"]) == {"before", "after"} and q["ratio"] > 0, q
    assert len(report["chain_vs_graph"]) == 8
    for e in report["chain_vs_graph"]:      # the graph solver on a chain reaches the chain solver's minimum
        assert e["ratio"] > 0 and e["same objective"], e
    assert report["table"].strip() == md.read_text().strip() and report["table"] in proc.stdout
