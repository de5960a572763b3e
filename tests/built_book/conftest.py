"""Tests of the built book: `make nbcheck` and `make browser` run them after `make book`.

They read the build folder named by GAUGELIT_BOOK_BUILD (normally ``_build``), so a plain
``pytest tests`` (the unit tests) leaves this folder out instead of testing a stale or absent build.
"""
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path, config):
    if Path(collection_path).resolve().parent == HERE and not os.environ.get("GAUGELIT_BOOK_BUILD"):
        return True  # not asked to test a build
    return None


@pytest.fixture(scope="session")
def build_dir() -> Path:
    build = Path(os.environ["GAUGELIT_BOOK_BUILD"]).resolve()
    if not (build / "html" / "index.html").is_file():
        pytest.fail(f"GAUGELIT_BOOK_BUILD={build}: no html/index.html there; run `make book` first")
    return build
