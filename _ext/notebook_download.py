"""Sphinx extension: each executed chapter gets the theme's ".ipynb" download button, with outputs.

MyST-NB writes every executed notebook to ``_build/jupyter_execute/<page>.ipynb``, and
sphinx-book-theme offers a ".ipynb" entry in its download menu when the page context has
``ipynb_source``, but in MyST-NB 1.x nothing sets it. This hook copies the executed notebook
next to the page's source (``_build/html/_sources/<page>.ipynb``) and sets the key, before the
theme builds its buttons (priority 501). Pages that are not notebooks (no executed copy) keep
only the ".md" and ".pdf" entries.
"""
from __future__ import annotations

import shutil
from pathlib import Path


def _executed_notebook(app, pagename: str) -> Path | None:
    config = getattr(app.env, "mystnb_config", None)
    folder = Path(config.output_folder) if config is not None and config.output_folder else (
        Path(app.outdir).parent / "jupyter_execute")
    path = folder.joinpath(*pagename.split("/")).with_suffix(".ipynb")
    if not path.is_file():
        return None
    if config is not None and config.execution_mode == "cache" and config.execution_cache_path:
        _merge_cached_outputs(path, config.execution_cache_path)
    return path


def _merge_cached_outputs(path: Path, cache_path: str) -> None:
    """MyST-NB 1.4 writes ``jupyter_execute/<page>.ipynb`` before it merges the outputs that the
    execution cache holds (the merged copy stays inside its client), so a chapter served from the
    cache is written without outputs. Merge them here, so that the download and `make nbcheck`
    see the executed notebook. A chapter not in the cache (it failed) keeps what was executed."""
    import nbformat
    from jupyter_cache import get_cache

    notebook = nbformat.read(path, as_version=4)
    try:
        _, merged = get_cache(cache_path).merge_match_into_notebook(notebook)
    except KeyError:
        return
    nbformat.write(merged, path)


def add_notebook_download(app, pagename, templatename, context, doctree):
    if doctree is None:  # generated pages (search, genindex)
        return
    notebook = _executed_notebook(app, pagename)
    if notebook is None:
        return
    target = Path(app.outdir, "_sources", *pagename.split("/")).with_suffix(".ipynb")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.connect("html-page-context", add_notebook_download, priority=500)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
