"""The layering as an executable rule (issue 19): arrows point down, no import cycles.

tests/layering.py reads gaugelit's sources with ``ast`` (nothing is imported) and reports each
upward import, each import of a leaf (torch, symbolic) from a layer, of the face or of the command
line, each module in no layer, and each import cycle, with file, line and rule. Its docstring
states the layers. The checker is itself tested below on small synthetic packages.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layering  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_gaugelit_keeps_its_layers_and_has_no_import_cycle():
    sources = layering.read_tree(ROOT)
    assert "gaugelit/core/__init__.py" in sources and "gaugelit/__main__.py" in sources
    violations = layering.check(sources)
    assert not violations, "the layering is broken:\n" + "\n".join(map(str, violations))


# -- the checker on synthetic packages -------------------------------------------------------------

def package(files):
    """A synthetic gaugelit from {path under gaugelit/: source}; every folder gets an empty
    ``__init__.py`` unless given one."""
    out = {"gaugelit/__init__.py": ""}
    for rel, text in files.items():
        parts = ("gaugelit/" + rel).split("/")
        for i in range(2, len(parts)):
            out.setdefault("/".join(parts[:i]) + "/__init__.py", "")
        out["gaugelit/" + rel] = text
    return out


CLEAN = package({
    "__init__.py": "from .core import rescale\nfrom .solvers import solve\nfrom .training import train\n",
    "__main__.py": "import gaugelit\nfrom . import torch\nfrom .experiments import claims\n",
    "_version.py": "__version__ = '1'\n",
    "core/__init__.py": "from .gauge import rescale\nfrom .network import Net\n",
    "core/network.py": "import numpy as np\nfrom .checks import real\n",
    "core/checks.py": "import math\n",
    "core/gauge.py": "from .network import Net\nfrom ..core.checks import real\n",
    "solvers/__init__.py": "from ._loop import Result\nfrom ._chain import solve\n",
    "solvers/_loop.py": "from ..core.checks import real\n",
    "solvers/_chain.py": "from ._loop import Result\nfrom ..core import gauge\nfrom .. import _version\n",
    "training/__init__.py": "from .loop import train\n",
    "training/loop.py": "from ..solvers import solve\n\ndef f():\n    from ..core.gauge import rescale\n",
    "experiments/__init__.py": "from . import claims\nfrom ._sweep import run\n",
    "experiments/claims.py": "from ._sweep import run\n",
    "experiments/_sweep.py": "from ..training import train\nfrom .._version import __version__\n",
    "torch.py": "import torch\nfrom .solvers import solve\nfrom .core.gauge import rescale\n",
    "symbolic.py": "import sympy\nfrom .core import network\n",
})


def rules(sources, *kinds):
    return sorted((v.rule, v.path, v.line) for v in layering.check(sources) if not kinds or v.rule in kinds)


def test_checker_passes_a_clean_package():
    assert layering.check(CLEAN) == []


def test_checker_reports_an_upward_import_with_file_line_and_rule():
    bad = dict(CLEAN, **{"gaugelit/solvers/_chain.py": "import math\n\nfrom ..training.loop import train\n"})
    [v] = [v for v in layering.check(bad) if v.rule == "upward"]
    assert (v.path, v.line) == ("gaugelit/solvers/_chain.py", 3)
    assert str(v).startswith("gaugelit/solvers/_chain.py:3: [upward] gaugelit.solvers._chain (layer 1, solvers)")
    assert "imports gaugelit.training.loop (layer 2, training)" in str(v)
    # training.loop imports solvers, whose __init__ imports _chain: the upward arrow closes a cycle
    [cycle] = [v for v in layering.check(bad) if v.rule == "cycle"]
    assert "gaugelit.solvers._chain imports gaugelit.training.loop (gaugelit/solvers/_chain.py:3)" in cycle.message


def test_checker_counts_function_level_and_absolute_imports():
    bad = dict(CLEAN, **{"gaugelit/core/gauge.py":
                         "def f():\n    if True:\n        import gaugelit.experiments._sweep as s\n"
                         "class C:\n    def g(self):\n        from gaugelit.solvers import solve\n"})
    assert rules(bad, "upward") == [("upward", "gaugelit/core/gauge.py", 3), ("upward", "gaugelit/core/gauge.py", 6)]


def test_checker_reports_an_upward_import_that_closes_no_cycle():
    bad = dict(CLEAN, **{"gaugelit/core/checks.py": "try:\n    from ..solvers._loop import Result\n"
                                                    "except ImportError:\n    pass\n",
                         "gaugelit/solvers/_loop.py": "import math\n"})
    assert rules(bad) == [("upward", "gaugelit/core/checks.py", 2)]


def test_checker_reports_a_cycle_inside_a_subpackage():
    bad = dict(CLEAN, **{"gaugelit/solvers/_graph.py": "from ._chain import solve\n",
                         "gaugelit/solvers/_chain.py": "def later():\n    from ._graph import x\n"})
    [v] = layering.check(bad)
    assert v.rule == "cycle" and v.path == "gaugelit/solvers/_chain.py" and v.line == 2
    assert "gaugelit.solvers._chain imports gaugelit.solvers._graph (gaugelit/solvers/_chain.py:2)" in v.message
    assert "gaugelit.solvers._graph imports gaugelit.solvers._chain (gaugelit/solvers/_graph.py:1)" in v.message


def test_checker_reports_a_module_importing_its_own_packages_init():
    # `from . import solve` takes a name defined in solvers/__init__, which imports _loop: a cycle.
    bad = dict(CLEAN, **{"gaugelit/solvers/_loop.py": "from . import solve\n"})
    [v] = layering.check(bad)
    assert v.rule == "cycle" and "gaugelit.solvers._loop imports gaugelit.solvers (" in v.message


def test_checker_reports_leaf_face_and_main_imports():
    bad = dict(CLEAN, **{
        "gaugelit/core/network.py": "from .. import torch\n",                   # a layer imports a leaf
        "gaugelit/training/loop.py": "from .. import __version__\n",             # ... the face
        "gaugelit/experiments/_sweep.py": "from gaugelit import train\n",        # ... the face again
        "gaugelit/symbolic.py": "from .torch import x\n",                        # a leaf imports a leaf
        "gaugelit/experiments/claims.py": "from ..__main__ import main\n",       # the command line
        "gaugelit/extra.py": "",                                                 # a module in no layer
    })
    assert rules(bad, "imports-face", "imports-leaf", "imports-main", "leaf-imports-leaf", "unplaced") == [
        ("imports-face", "gaugelit/experiments/_sweep.py", 1),
        ("imports-face", "gaugelit/training/loop.py", 1),
        ("imports-leaf", "gaugelit/core/network.py", 1),
        ("imports-main", "gaugelit/experiments/claims.py", 1),
        ("leaf-imports-leaf", "gaugelit/symbolic.py", 1),
        ("unplaced", "gaugelit/extra.py", 1),
    ]
    # the face imports training, which imports it back; the leaf import from core closes cycles too
    assert {v.rule for v in layering.check(bad)} == {"imports-face", "imports-leaf", "imports-main",
                                                     "leaf-imports-leaf", "unplaced", "cycle"}


def test_checker_resolves_relative_imports():
    assert layering.resolve("gaugelit.solvers._chain", False, 2, "core.gauge") == "gaugelit.core.gauge"
    assert layering.resolve("gaugelit.solvers._chain", False, 1, None) == "gaugelit.solvers"
    assert layering.resolve("gaugelit.solvers", True, 1, "_chain") == "gaugelit.solvers._chain"
    assert layering.resolve("gaugelit.solvers", True, 2, None) == "gaugelit"
    with pytest.raises(ValueError):
        layering.resolve("gaugelit.core.gauge", False, 3, "x")
    modules = {"gaugelit.experiments", "gaugelit.experiments.claims"}
    edges = layering.edges_of("gaugelit/experiments/toy.py", "from . import claims, Settings\n", modules)
    assert [e.target for e in edges] == ["gaugelit.experiments.claims", "gaugelit.experiments"]


def test_checker_finds_the_cycle_issue_19_removed():
    # Before the layout change (907eba5): solvers imported graph_solvers lazily, inside a function,
    # and graph_solvers imported solvers back. The flat modules are in no layer; only the cycle matters.
    import subprocess
    commit = "907eba5"
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", commit, "gaugelit/"],
                             capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip(f"git history lacks {commit} (a shallow clone?)")
    sources = {name: subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{name}"], check=True,
                                    capture_output=True, text=True).stdout
               for name in listing.stdout.split() if name.endswith(".py")}
    [cycle] = [v for v in layering.check(sources) if v.rule == "cycle"]
    assert "gaugelit.graph_solvers imports gaugelit.solvers (gaugelit/graph_solvers.py:36)" in cycle.message
    assert "gaugelit.solvers imports gaugelit.graph_solvers (gaugelit/solvers.py:330)" in cycle.message
