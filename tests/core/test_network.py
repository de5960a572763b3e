"""LayeredNet, he_init and the validation of bad input."""
import numpy as np
import pytest

import gaugelit as gl
from conftest import random_net


def test_forward_matches_explicit_relu_network(xp):
    net = random_net([4, 6, 5, 3], seed=1, xp=xp)
    X = xp.asarray(np.random.default_rng(0).standard_normal((7, 4)))
    W, b = gl.to_numpy(net.weights), gl.to_numpy(net.biases)
    h = gl.to_numpy(X)
    h = np.maximum(h @ W[0].T + b[0], 0)
    h = np.maximum(h @ W[1].T + b[1], 0)
    expected = h @ W[2].T + b[2]
    np.testing.assert_allclose(gl.to_numpy(net.forward(X)), expected, rtol=1e-12, atol=1e-12)
    assert net.sizes == (4, 6, 5, 3)


def test_he_init_matches_the_paper(xp):
    net = gl.he_init(gl.ARCHITECTURES["5-layer"], seed=0, dtype="float64", xp=xp)
    assert net.sizes == (200, 2000, 1000, 500, 250, 10)
    assert all(float(abs(b).max()) == 0 for b in net.biases)
    for W in net.weights:
        fan_in = W.shape[1]
        # variance 2/fan_in, checked to 4 standard errors of the sample variance
        var = float((W ** 2).mean())
        assert abs(var * fan_in / 2 - 1) < 4 * np.sqrt(2 / W.size)
    again = gl.he_init(gl.ARCHITECTURES["5-layer"], seed=0, dtype="float64", xp=np)
    np.testing.assert_array_equal(gl.to_numpy(net.weights[2]), again.weights[2])
    assert gl.he_init([3, 4, 2], seed=1, dtype="float32", xp=xp).dtype == np.float32


def test_architectures_as_published():
    # "n-layer" counts weight matrices, and the paper says twice that each network has 3750 hidden
    # units; the published 7-layer widths (TMLR 2023) satisfy both, the preprint's 3250 neither.
    hidden = {name: sum(sizes[1:-1]) for name, sizes in gl.ARCHITECTURES.items()}
    assert hidden == {"3-layer": 3750, "5-layer": 3750, "7-layer": 3750}
    assert {name: len(sizes) - 1 for name, sizes in gl.ARCHITECTURES.items()} == {
        "3-layer": 3, "5-layer": 5, "7-layer": 7}
    assert gl.ARCHITECTURES["7-layer"] == (200, 1000, 750, 750, 500, 500, 250, 10)
    assert all(s[0] == 200 and s[-1] == 10 for s in gl.ARCHITECTURES.values())


def _weights(*shapes, dtype="float64"):
    return [np.ones(s, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("weights, biases, error, message", [
    (_weights((3, 2)), None, ValueError, "at least two weight matrices"),
    (_weights((3, 2), (2, 4)), None, ValueError, r"weights\[1\].*does not chain"),
    (_weights((3, 2), (2, 3), dtype="int64"), None, TypeError, r"weights\[0\].*int64"),
    (_weights((3, 2), (2, 3), dtype="complex128"), None, TypeError, r"weights\[0\].*complex"),
    ([np.ones((3, 2)), np.ones((2, 3), dtype="float32")], None, TypeError, r"weights\[1\].*dtype"),
    ([np.ones((3, 2)), np.full((2, 3), np.nan)], None, ValueError, r"weights\[1\].*non-finite"),
    ([np.ones((3, 2)), np.array([[1, 1, np.inf]] * 2)], None, ValueError, r"weights\[1\].*non-finite"),
    (_weights((3, 2), (2, 3)), [np.ones(3), np.array([0.0, np.nan])], ValueError, r"biases\[1\].*non-finite"),
    (_weights((3, 2), (2, 3)), [np.ones(3), np.ones(3)], ValueError, r"biases\[1\].*length"),
    (_weights((3, 2), (2, 3)), [np.ones(3)], ValueError, "bias vectors"),
    ([np.ones(3), np.ones((2, 3))], None, ValueError, r"weights\[0\].*dimensions"),
    ([[1.0, 2.0], np.ones((2, 3))], None, TypeError, r"weights\[0\].*expected an array"),
])
def test_bad_networks_are_refused(weights, biases, error, message):
    with pytest.raises(error, match=message):
        gl.LayeredNet(weights, biases)


class FakeCupyArray(np.ndarray):
    """Stands in for a CuPy array: gaugelit tells backends apart by the type's module."""


FakeCupyArray.__module__ = "cupy._core.core"


def test_mixed_backends_are_a_type_error():
    fake = np.ones((2, 3)).view(FakeCupyArray)
    with pytest.raises(TypeError, match="NumPy and CuPy arrays are mixed"):
        gl.LayeredNet([np.ones((3, 2)), fake])
    net = random_net([2, 3, 2])
    with pytest.raises(TypeError, match="mixed"):
        net.forward(np.ones((1, 2)).view(FakeCupyArray))
    with pytest.raises(TypeError, match="mixed"):
        gl.rescale(net, [np.ones(3).view(FakeCupyArray)])


def test_forward_checks_input_shape():
    net = random_net([2, 3, 2])
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        net.forward(np.ones((4, 3)))


@pytest.mark.parametrize("p", [0, -1, np.nan, np.inf])
def test_bad_p_is_refused(p):
    net = random_net([2, 3, 2])
    for fn in (gl.pnorm, gl.imbalance, gl.balance_gaps, gl.minnorm):
        with pytest.raises(ValueError, match="p must be finite and > 0"):
            fn(net, p)


def test_backend_selection(monkeypatch):
    import gaugelit.core.backend as backend
    monkeypatch.setenv("GAUGELIT_BACKEND", "numpy")
    assert gl.default_backend() is np
    monkeypatch.setenv("GAUGELIT_BACKEND", "tpu")
    with pytest.raises(ValueError, match="GAUGELIT_BACKEND"):
        gl.default_backend()
    monkeypatch.setattr(backend, "cupy_available", lambda: False)
    monkeypatch.setenv("GAUGELIT_BACKEND", "auto")
    assert gl.default_backend() is np
    monkeypatch.setenv("GAUGELIT_BACKEND", "cupy")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        gl.default_backend()


def test_import_works_without_cupy(tmp_path):
    import subprocess
    import sys
    code = ("import sys; sys.modules['cupy'] = None\n"  # any 'import cupy' now fails
            "import gaugelit as gl, numpy as np\n"
            "assert not gl.cupy_available()\n"
            "assert gl.he_init([3, 4, 2]).xp is np\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   env={"PYTHONPATH": str(__import__("pathlib").Path(gl.__file__).parents[1]),
                        "GAUGELIT_BACKEND": "auto"})
