"""Shared fixtures: every backend test runs on NumPy, and on CuPy where it imports and sees a device."""
import os

import numpy as np
import pytest
from hypothesis import settings

from gaugelit.core.backend import cupy_available

# Property tests draw the same examples on every run: a failure is a defect to reproduce, not a
# draw that CI may or may not make (HYPOTHESIS_PROFILE=explore draws new examples each run).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKENDS = ["numpy"] + (["cupy"] if cupy_available() else [])


@pytest.fixture(params=BACKENDS)
def xp(request):
    if request.param == "cupy":
        import cupy
        return cupy
    return np


def random_net(sizes, seed=0, dtype="float64", xp=np, bias_scale=0.5):
    """A network with Gaussian weights of unequal scale per layer and nonzero biases."""
    import gaugelit as gl
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((m, n)) * rng.uniform(0.2, 3.0) for n, m in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal(m) * bias_scale for m in sizes[1:]]
    return gl.LayeredNet([xp.asarray(w, dtype=dtype) for w in weights],
                         [xp.asarray(b, dtype=dtype) for b in biases])


@pytest.fixture
def tiny(monkeypatch):
    """A sweep's Settings for a 200-12-8-10 architecture on 40 synthetic examples (no data set)."""
    import gaugelit as gl
    from gaugelit.experiments import grid, sweep
    from gaugelit.experiments.data import Dataset
    monkeypatch.setitem(gl.ARCHITECTURES, "tiny", (200, 12, 8, 10))

    def fake_dataset(name, n_train, n_test, k, dtype):
        X = np.random.default_rng(0).standard_normal((40, k)).astype(dtype)
        return Dataset(X, np.arange(40) % 10, X[:20].copy(), np.arange(20) % 10)

    monkeypatch.setattr(sweep, "_dataset", fake_dataset)
    return grid.Settings("ci", ("mnist",), ("tiny",), seeds=(0, 1), epochs=2, n_train=40, n_test=20)
