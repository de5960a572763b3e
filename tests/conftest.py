"""Shared fixtures: every backend test runs on NumPy, and on CuPy where it imports and sees a device."""
import numpy as np
import pytest

from gaugelit.backend import cupy_available

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
