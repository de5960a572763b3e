"""The README's example runs as printed."""
import re
from pathlib import Path

import numpy as np
import pytest

import gaugelit as gl

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    if not (gl.data_dir() / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not in {gl.data_dir()} (set GAUGELIT_DATA_DIR; CI points it at ../shared/data)")
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["res"].converged and len(namespace["history"]["epoch"]) == 2


def test_readme_example_comment_matches_what_it_prints():
    # the comment "# N sweeps; A -> B" beside the example's print of the 7-layer solve
    m = re.search(r"# (\d+) sweeps; (\d+) -> (\d+)", README.read_text())
    net = gl.he_init(gl.ARCHITECTURES["7-layer"], seed=0, dtype="float64")
    res = gl.minnorm(net, p=2.0)
    assert (res.iterations, round(res.objective[0]), round(res.objective[-1])) == tuple(map(int, m.groups()))


def test_readme_sweeps_against_updates_are_what_minnorm_gives():
    # "in S sweeps (P passes over the weights) instead of A–B updates (C–D passes)"
    text = " ".join(README.read_text().split())
    m = re.search(r"in (\d+) sweeps \((\d+) passes over the weights\) instead of (\d+)–(\d+) updates "
                  r"\((\d+)–(\d+) passes\)", text)
    assert m, "the README's sentence on sweeps against updates is gone"
    sweeps, passes, lo, hi, plo, phi = map(int, m.groups())
    block, mult = [], []
    for arch in ("3-layer", "5-layer", "7-layer"):
        net = gl.he_init(gl.ARCHITECTURES[arch], seed=0, dtype="float64")
        for p in (1.0, 2.0):
            block.append(gl.minnorm(net, p, method="block", gamma_tol=1e-6))
            mult.append(gl.minnorm(net, p, method="multiplicative", gamma_tol=1e-6))
    assert {r.iterations for r in block} == {sweeps} and {round(r.passes) for r in block} == {passes}
    assert (min(r.iterations for r in mult), max(r.iterations for r in mult)) == (lo, hi)
    assert (round(min(r.passes for r in mult)), round(max(r.passes for r in mult))) == (plo, phi)


def test_readme_paper_scale_counts_and_claim_3_follow_from_the_committed_run_files():
    from gaugelit import experiments as ex
    from gaugelit.experiments import claims as cl

    text = " ".join(README.read_text().split())
    root = README.parent / "results"
    present = cl.present_grid(ex.settings_for("paper"), root)
    m = re.search(r"(\d+) of the grid's (\d+) run files", text)
    assert m and (int(m.group(1)), int(m.group(2))) == (len(list((root / "paper").glob("*.json"))), present.total)
    m = re.search(r"Claim 3 \(.*?\) is (\w+) on MNIST's 3-layer network, with all five seeds: gauge fixing "
                  r"multiplies EGD's training error after 30 epochs by ([\d.]+) and SGD's by ([\d.]+).*?"
                  r"Holm-adjusted p = ([\de.-]+);", text)
    assert m, "the README's sentence on claim 3 is gone"
    found = {e.key: e for e in cl.check_claims(present.records, {"3": cl.CLAIMS["3"]})}
    e = found[("mnist", "3-layer", "egd")]
    assert e.n == 5 and m.group(1) == e.verdict
    assert float(m.group(2)) == round(np.exp(e.beside["EGD log ratio"]), 2)
    assert float(m.group(3)) == round(np.exp(e.beside["SGD log ratio"]), 2)
    assert m.group(4) == f"{e.p_adjusted[e.verdict]:.0e}"
    m = re.search(r"On the 5-layer network, also with five seeds, it is (\w+): EGD's relative effect is again the "
                  r"larger \(×([\d.]+) against ×([\d.]+)\), but its interval reaches inside the 10% margin", text)
    assert m, "the README's sentence on claim 3 for the 5-layer network is gone"
    e = found[("mnist", "5-layer", "egd")]
    assert e.n == 5 and m.group(1) == e.verdict == "inconclusive" and e.low < -cl.MARGIN < e.high < 0
    assert float(m.group(2)) == round(np.exp(e.beside["EGD log ratio"]), 2)
    assert float(m.group(3)) == round(np.exp(e.beside["SGD log ratio"]), 2)
    assert "On the 7-layer network it holds, but only at the floor: EGD fits all but one or two of the 60,000" in text
    e = found[("mnist", "7-layer", "egd")]
    assert e.n == 5 and e.verdict == "holds"
    last = [r["history"]["train_error"][-1] * 60000 for r in present.records
            if (r["settings"]["dataset"], r["settings"]["architecture"], r["settings"]["optimizer"])
            == ("mnist", "7-layer", "egd")]
    assert len(last) == 10 and all(round(x) in (1, 2) for x in last)


def test_readme_egd_step_row_is_the_recorded_benchmark():
    """The README's EGD/SGD row is bench/results/step-bench.json (bench/step_bench.py's record)."""
    import json

    recorded = json.loads((README.parent / "bench" / "results" / "step-bench.json").read_text())
    text = " ".join(README.read_text().split())
    m = re.search(r"EGD's training step against SGD's .*? \| ([\d.]+)–([\d.]+)x the time \(its update alone, "
                  r"an exponential per weight, ([\d.]+)–([\d.]+)x SGD's\)", text)
    assert m, "the README's EGD step row is gone"
    steps = [r["egd_over_sgd"] for r in recorded["steps"]]
    updates = [r["egd_over_sgd"] for r in recorded["updates"]]
    assert (float(m.group(1)), float(m.group(2))) == (round(min(steps), 2), round(max(steps), 2))
    assert (float(m.group(3)), float(m.group(4))) == (round(min(updates), 1), round(max(updates), 1))
    assert all(r["bitwise_same"] for r in recorded["updates"])


def test_readme_says_whether_the_paper_scale_init_runs_exist():
    text = " ".join(README.read_text().split())
    found = list((README.parent / "results" / "mechanism-paper").glob("*.json"))
    if "which the chapter judges as they are committed; none is yet" in text:
        assert not found, "the README says no paper-scale init run is committed, but some are"
    else:
        m = re.search(r"which the chapter judges as they are committed; (\d+) of its 10 are", text)
        assert m and int(m.group(1)) == len(found)
