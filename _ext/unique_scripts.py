"""Sphinx extension: each page lists each script once.

Sphinx 7.4 registers a script added after the builder starts (sphinx-thebe adds its inline
configuration, ``const THEBE_JS_URL = ...``, that way) twice: once with the builder and once more
from the registry when writing begins, where an inline script's missing file name becomes ``''``
instead of ``None`` and so escapes the de-duplication. The page then declares the constant twice
and the browser reports a SyntaxError on every page. This hook drops the repeats.
"""
from __future__ import annotations


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    name = getattr(script, "filename", script) or ""  # None and "" are the same inline script
    return (str(name), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)  # after every other hook
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
