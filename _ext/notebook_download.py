"""Sphinx extension: each executed chapter gets the theme's ".ipynb" download button.

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
    return path if path.is_file() else None


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
