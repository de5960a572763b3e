"""pyproject.toml and environment.yml must declare the same packages.

Compared: core + gpu + test + book + torch + browser + lab extras (bench is pip-only on purpose).
environment.yml is parsed by hand so the test needs no PyYAML.
"""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("gpu", "test", "book", "torch", "browser", "lab")
# conda-forge name -> PyPI name
CONDA_TO_PYPI = {"cupy": "cupy-cuda12x", "pytorch": "torch"}
# conda-only plumbing, not project dependencies
CONDA_ONLY = {"python", "pip"}


def normalise(requirement: str) -> str:
    """PEP 503 name of a requirement string such as 'Jupyter_Book>=1,<2'."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return {normalise(r) for r in reqs}


def environment_entries(text: str) -> list[str]:
    """Items of the `dependencies:` list, including its nested `pip:` list."""
    entries, in_deps = [], False
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):  # a top-level key
            in_deps = line.startswith("dependencies:")
            continue
        item = line.strip()
        if in_deps and item.startswith("- ") and not item.endswith(":"):
            entries.append(item[2:].strip().strip("'\""))
    return entries


def environment_names() -> set[str]:
    entries = environment_entries((ROOT / "environment.yml").read_text())
    names = {normalise(e) for e in entries if not e.startswith("-")}  # skip "-e ."
    names -= CONDA_ONLY
    return {CONDA_TO_PYPI.get(n, n) for n in names}


def test_parser_reads_nested_lists():
    text = "name: x\ndependencies:\n  - a>=1  # why\n  - pip:\n      - b\nother:\n  - c\n"
    assert environment_entries(text) == ["a>=1", "b"]


def test_environment_installs_the_package_editable():
    assert "-e ." in environment_entries((ROOT / "environment.yml").read_text())


def test_pyproject_and_environment_list_the_same_packages():
    pyp, env = pyproject_names(), environment_names()
    assert "numpy" in pyp and "numpy" in env  # guards against a parser that sees nothing
    assert pyp - env == set(), "in pyproject.toml only"
    assert env - pyp == set(), "in environment.yml only"


def test_jupyter_book_pinned_below_2_in_both():
    # 2.x reads myst.yml, not _config.yml
    pyp = tomllib.loads((ROOT / "pyproject.toml").read_text())
    book = [r for r in pyp["project"]["optional-dependencies"]["book"] if normalise(r) == "jupyter-book"]
    env = [e for e in environment_entries((ROOT / "environment.yml").read_text())
           if not e.startswith("-") and normalise(e) == "jupyter-book"]
    assert book and env
    assert all("<2" in r.replace(" ", "") for r in book + env)
