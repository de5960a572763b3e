"""The CuPy stand-in's names against CuPy 14's own (tests/cupy_standin/cupy14_names.txt, derived
from CuPy's source by tests/cupy_standin/derive_names.py): every name it offers CuPy 14 has, and
every name CuPy 14 lacks it refuses. The stand-in is loaded under a private module name, so this
test never makes ``import cupy`` succeed for the rest of the suite."""
import __future__

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent / "cupy_standin"
NAME = "gaugelit_cupy_standin_under_test"


@pytest.fixture(scope="module")
def standin():
    spec = importlib.util.spec_from_file_location(NAME, HERE / "cupy" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module          # its get_array_module imports itself by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[NAME]


def cupy14():
    sections, current = {}, None
    lines = (HERE / "cupy14_names.txt").read_text().splitlines()
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line[1:-1], set())
        else:
            current.add(line.strip())
    return lines, sections


def public(obj):
    """The public names ``obj`` offers (``from __future__ import annotations`` is no name)."""
    names = dir(obj) if not isinstance(obj, type(sys)) else vars(obj)
    return {n for n in names if not n.startswith("_") and not isinstance(getattr(obj, n, None), __future__._Feature)}


def test_the_name_list_says_where_it_comes_from():
    lines, sections = cupy14()
    assert lines[0].startswith("# Public names of CuPy v14.0.0 (commit e0faa4d1abb05132498acbcc9dd00c4d19fd958e)")
    assert "derive_names.py" in lines[1]
    assert {"cupy", "cupy.linalg", "cupy.random", "cupy.random.Generator", "cupy.cuda", "cupy.cuda.runtime",
            "cupy.ndarray", "cupy.cuda.Device", "cupy.cuda.Stream"} <= set(sections)
    # a few names any reader can check against CuPy's documentation
    assert {"asarray", "asnumpy", "get_array_module", "ndarray", "float32", "einsum"} <= sections["cupy"]
    assert "errstate" not in sections["cupy"] and "seterr" not in sections["cupy"]
    assert {"integers", "standard_normal"} <= sections["cupy.random.Generator"]
    assert "normal" not in sections["cupy.random.Generator"]
    assert "getDeviceCount" in sections["cupy.cuda.runtime"] and "null" in sections["cupy.cuda.Stream"]


def test_every_name_the_standin_offers_is_one_cupy_14_has(standin):
    _, cp14 = cupy14()
    offered = {
        "cupy": public(standin),
        "cupy.linalg": public(standin.linalg),
        "cupy.random": public(standin.random),
        "cupy.random.Generator": public(standin.random.default_rng(0)),
        "cupy.ndarray": public(standin.ndarray),
        "cupy.cuda": public(standin.cuda),
        "cupy.cuda.runtime": public(standin.cuda.runtime),
        "cupy.cuda.Device": public(standin.cuda.Device(0)),
        "cupy.cuda.Stream": public(standin.cuda.Stream),
    }
    assert offered["cupy"] and offered["cupy.random.Generator"]
    wrong = {ns: sorted(names - cp14[ns]) for ns, names in offered.items() if names - cp14[ns]}
    assert not wrong, f"the stand-in offers names CuPy 14 lacks: {wrong}"


@pytest.mark.parametrize("namespace, numpy_module", [("cupy", np), ("cupy.linalg", np.linalg),
                                                    ("cupy.random", np.random)])
def test_every_numpy_name_cupy_14_lacks_is_refused_saying_so(standin, namespace, numpy_module):
    _, cp14 = cupy14()
    target = {"cupy": standin, "cupy.linalg": standin.linalg, "cupy.random": standin.random}[namespace]
    lacking = sorted(n for n in dir(numpy_module) if not n.startswith("_") and n not in cp14[namespace])
    assert lacking
    for name in lacking:
        with pytest.raises(AttributeError, match="CuPy 14 has no such name"):
            getattr(target, name)


def test_a_cupy_name_the_standin_lacks_is_refused_saying_cupy_has_it(standin):
    _, cp14 = cupy14()
    for target, namespace in ((standin, "cupy"), (standin.linalg, "cupy.linalg"), (standin.random, "cupy.random")):
        absent = sorted(cp14[namespace] - public(target))
        assert absent
        with pytest.raises(AttributeError, match="exists in CuPy 14 but the stand-in does not implement it"):
            getattr(target, absent[0])
    generator = standin.random.default_rng(0)
    for name in ("normal", "permutation", "choice"):      # NumPy's Generator has them, CuPy 14's not
        with pytest.raises(AttributeError, match="CuPy 14 has no such name"):
            getattr(generator, name)
