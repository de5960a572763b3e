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
