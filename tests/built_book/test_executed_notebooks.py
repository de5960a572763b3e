"""Every code cell of every chapter ran without error in the book build.

This is nbval's lax check (each cell executes; outputs are not compared, the cells' own asserts
are the checks), made on the notebooks that `jupyter-book build` executed
(``_build/jupyter_execute/book/*.ipynb``) instead of executing every chapter a second time.
A cell that raised, a chapter that timed out or was never executed, fails here; so does an output
that shows an absolute path of the machine that built the book.
"""
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("GAUGELIT_BOOK_BUILD", ROOT / "_build")).resolve()
EXECUTED = BUILD / "jupyter_execute"

# The chapters that are notebooks: MyST markdown with a jupytext header.
CHAPTERS = sorted(p.relative_to(ROOT).with_suffix("").as_posix()
                  for p in (ROOT / "book").glob("*.md")
                  if re.search(r"^jupytext:", p.read_text(encoding="utf-8"), re.MULTILINE))


def _machine_paths() -> list[str]:
    """Absolute paths that belong to the building machine and must not reach a reader."""
    paths = {str(ROOT), str(BUILD)}
    if os.environ.get("GAUGELIT_DATA_DIR"):
        paths.add(str(Path(os.environ["GAUGELIT_DATA_DIR"]).resolve()))
    home = str(Path.home())
    if home not in ("/", ""):
        paths.add(home + "/")
    return sorted(paths)


def _load(chapter: str) -> dict:
    path = EXECUTED / f"{chapter}.ipynb"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the book build did not execute {chapter}.md")
    return json.loads(path.read_text(encoding="utf-8"))


def _output_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    elif output.get("output_type") == "error":
        text = "\n".join(output.get("traceback", []))
    else:
        data = output.get("data", {})
        text = "\n".join(v if isinstance(v, str) else "".join(v) for k, v in data.items()
                         if k.startswith("text/") or k.endswith("json"))
    return text if isinstance(text, str) else "".join(text)


def test_every_chapter_is_found():
    assert CHAPTERS, "no book/*.md with a jupytext header"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_code_cell_ran_without_error(chapter):
    nb = _load(chapter)
    code = [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    assert code, f"{chapter}: no code cells in the executed notebook"
    problems = []
    for i, cell in code:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & {"skip-execution", "nbval-skip"}:
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i} was not executed (the build stopped before it or timed out)")
        if "raises-exception" not in tags:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    problems.append(f"cell {i} raised {out.get('ename')}: {out.get('evalue')}")
    assert not problems, f"{chapter}.md:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_output_shows_a_path_of_the_building_machine(chapter):
    nb = _load(chapter)
    found = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            text = _output_text(out)
            for path in _machine_paths():
                if path in text:
                    line = next(l for l in text.splitlines() if path in l)
                    found.append(f"cell {i} shows {path!r}: {line.strip()[:160]}")
    assert not found, f"{chapter}.md prints a path of this machine:\n  " + "\n  ".join(found)
