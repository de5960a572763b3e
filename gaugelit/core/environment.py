"""Run-time settings read from the environment: the scale of experiments and where data lives."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["scale", "data_dir", "results_dir"]

_SCALES = ("ci", "paper")


def scale() -> str:
    """``GAUGELIT_SCALE`` (``ci`` or ``paper``); ``ci`` when unset, and always ``ci`` under CI.

    One code path serves both: ``ci`` shrinks data and epochs so the whole book runs on two CPU
    cores, ``paper`` uses the paper's settings (meant for a GPU).
    """
    if os.environ.get("CI"):
        return "ci"
    name = os.environ.get("GAUGELIT_SCALE", "ci").strip().lower()
    if name not in _SCALES:
        raise ValueError(f"GAUGELIT_SCALE={name!r}: expected one of {', '.join(_SCALES)}")
    return name


def data_dir() -> Path:
    """Where datasets are read from and downloaded to: ``GAUGELIT_DATA_DIR``, else
    ``~/.cache/gaugelit`` (pooch's cache for this project)."""
    env = os.environ.get("GAUGELIT_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gaugelit"


def results_dir(default="results") -> Path:
    """Where run files are read and written: ``GAUGELIT_RESULTS_DIR``, else ``default`` (relative
    to the working directory). The package assumes no repository around it: the book passes its own
    folder (``results_dir("../results")`` from ``book/``), the command line ``./results``."""
    env = os.environ.get("GAUGELIT_RESULTS_DIR")
    return Path(env).expanduser() if env else Path(default)
