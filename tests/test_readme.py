"""The README's example runs as printed."""
import re
from pathlib import Path

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
