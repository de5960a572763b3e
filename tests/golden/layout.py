"""The public results that the package layout must not change (issue "One house").

:func:`record` computes them through the public API only (``gaugelit`` and ``gaugelit.torch``), so
the same function ran on the code before the layout change, which wrote ``layout.npz``
(``python tests/golden/layout.py --write``), and runs on the code of today in
``tests/test_golden.py``, which compares every value to the rounding of the dtype it was computed in
(:data:`RTOL`; integers exactly).

Recorded: ``minnorm`` on the paper's three networks (both methods, p = 1 and 2, float32 and float64,
the delta rule and gamma < 1e-6: iterations, objective, gamma, passes, factors); ``train`` (SGD and
EGD, with and without gauge fixing, float32 and float64: every history value and checksums of the
weights); ``train_many`` on one grid cell; the soft-gauge penalty, its coordinates and flow; the
graph solver on the paper's dense W (eq. 2); ``gaugelit.torch.minnorm_`` on a small CNN; a flow.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "layout.npz"
#: the commit whose code wrote layout.npz (the last before the layout change)
RECORDED_AT = "907eba5"


def _data(n, k, n_classes, seed, dtype):
    """Inputs of the scale of the SVD-projected pixels and labels a linear map can learn."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, k)) * 2.0).astype(dtype)
    y = (X @ rng.standard_normal((k, n_classes))).argmax(axis=1)
    return X, y


def _weights(prefix, net, out):
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        W64, b64 = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
        out[f"{prefix}/W{l}/sum_abs"] = np.abs(W64).sum()
        out[f"{prefix}/W{l}/sum_sq"] = (W64 * W64).sum()
        out[f"{prefix}/W{l}/row0"] = W64[0, :32].copy()
        out[f"{prefix}/b{l}"] = b64[:32].copy()
        out[f"{prefix}/b{l}/sum_sq"] = (b64 * b64).sum()


def _vector(key, a, out):
    """Every 16th entry of a long vector, and its sum and sum of squares in float64."""
    out[key] = a[::16].copy()
    a64 = a.astype(np.float64)
    out[f"{key}/sum"], out[f"{key}/sum_sq"] = a64.sum(), (a64 * a64).sum()


def _history(prefix, history, out):
    for key, values in sorted(history.items()):
        if key != "seconds":                               # wall time: not a result
            out[f"{prefix}/history/{key}"] = np.asarray(values, dtype=np.float64)


def record() -> dict:
    import gaugelit as gl

    out = {}
    # -- minnorm on the paper's networks ------------------------------------------------------------
    for arch in ("3-layer", "5-layer", "7-layer"):
        for dtype in ("float32", "float64"):
            net = gl.he_init(gl.ARCHITECTURES[arch], seed=0, dtype=dtype, xp=np)
            for method in ("block", "multiplicative"):
                for p in (1.0, 2.0):
                    rules = {"delta": {}}
                    if dtype == "float64":
                        rules["gamma"] = {"gamma_tol": 1e-6}
                    for rule, kw in rules.items():
                        r = gl.minnorm(net, p, method=method, **kw)
                        key = f"minnorm/{arch}/{dtype}/{method}/p{p:g}/{rule}"
                        out[f"{key}/iterations"] = np.int64(r.iterations)
                        out[f"{key}/converged"] = np.int64(bool(r.converged))
                        out[f"{key}/objective"] = np.asarray(r.objective, dtype=np.float64)
                        out[f"{key}/gamma"] = np.asarray(r.gamma, dtype=np.float64)
                        out[f"{key}/passes"] = np.float64(r.passes)
                        _vector(f"{key}/factors", np.concatenate([np.asarray(a) for a in r.factors]), out)
    # -- train, section 4's loop ----------------------------------------------------------------------
    sizes = gl.ARCHITECTURES["3-layer"]
    for dtype in ("float32", "float64"):
        X, y = _data(320, sizes[0], sizes[-1], 0, dtype)
        Xt, yt = _data(160, sizes[0], sizes[-1], 1, dtype)
        for optimizer in ("sgd", "egd"):
            for gauge in (False, True):
                net = gl.he_init(sizes, seed=1, dtype=dtype, xp=np)
                trained, history = gl.train(net, X, y, optimizer=optimizer, gauge_fix=gauge, epochs=2,
                                            seed=2, progress=False, X_test=Xt, y_test=yt,
                                            min_norm_loss=True)
                key = f"train/3-layer/{dtype}/{optimizer}/{'gauge' if gauge else 'plain'}"
                _history(key, history, out)
                _weights(key, trained, out)
    small = (30, 24, 16, 5)
    X, y = _data(96, small[0], small[-1], 3, "float64")
    for soft in (0.0, 0.05):
        net = gl.he_init(small, seed=4, dtype="float64", xp=np)
        net.biases[0][:] = 0.1
        trained, history = gl.train(net, X, y, optimizer="sgd", epochs=2, batch_size=16, seed=5,
                                    progress=False, train_hidden_biases=True, soft_gauge=soft, lr=0.02)
        key = f"train/small/soft{soft:g}"
        _history(key, history, out)
        _weights(key, trained, out)
    net = gl.he_init(small, seed=6, dtype="float64", xp=np)
    trained, history = gl.train(net, X, y, optimizer="egd", epochs=2, batch_size=16, seed=7, progress=False,
                                egd_biases="as-printed")
    _history("train/small/egd-as-printed", history, out)
    # -- train_many: one grid cell ---------------------------------------------------------------------
    cell = (40, 32, 20, 6)
    for dtype in ("float32", "float64"):
        X, y = _data(128, cell[0], cell[-1], 8, dtype)
        Xt, yt = _data(64, cell[0], cell[-1], 9, dtype)
        for optimizer in ("sgd", "egd"):
            nets = [gl.he_init(cell, seed=s, dtype=dtype, xp=np) for s in (0, 0, 1, 1)]
            results = gl.train_many(nets, X, y, gauge_fix=[False, True, False, True], seeds=[0, 0, 1, 1],
                                    optimizer=optimizer, epochs=2, progress=False, X_test=Xt, y_test=yt,
                                    min_norm_loss=True)
            for i, (trained, history) in enumerate(results):
                key = f"train_many/{dtype}/{optimizer}/{i}"
                _history(key, history, out)
                _weights(key, trained, out)
    # -- soft gauge ------------------------------------------------------------------------------------
    rng = np.random.default_rng(10)
    sizes = (7, 9, 8, 4)
    net = gl.LayeredNet([rng.standard_normal((m, n)) * rng.uniform(0.3, 2.0) for n, m in zip(sizes[:-1], sizes[1:])],
                        [rng.standard_normal(m) * 0.5 for m in sizes[1:]])
    value, gw, gb = gl.soft_gauge_penalty(net, 0.3)
    out["soft/penalty/value"] = np.float64(value)
    for l, (a, b) in enumerate(zip(gw, gb)):
        out[f"soft/penalty/gw{l}"], out[f"soft/penalty/gb{l}"] = np.asarray(a), np.asarray(b)
    coords = gl.gauge_coordinates(net)
    out["soft/coords/log_scales"] = np.concatenate([np.asarray(u) for u in coords.log_scales])
    _weights("soft/coords/balanced", coords.balanced, out)
    _weights("soft/flow", gl.soft_gauge_flow(net, 0.3, 0.5, steps=20), out)
    # -- the graph solver on the paper's dense W (eq. 2) ----------------------------------------------
    rng = np.random.default_rng(11)
    n, n_in, n_out = 28, 4, 3
    W = np.tril(rng.standard_normal((n, n)), -1) * (rng.random((n, n)) < 0.5)
    W[n_in:n - n_out, :n_in] += 0.3
    W[n - n_out:, n_in:n - n_out] += 0.3
    W = np.tril(W, -1)
    W[:n_in, :] = 0
    dense = gl.DenseNet(W, rng.standard_normal(n), n_in, n_out)
    for method in ("block", "multiplicative"):
        for p in (1.0, 2.0):
            r = gl.minnorm(dense, p, method=method, gamma_tol=1e-9)
            key = f"dense/{method}/p{p:g}"
            out[f"{key}/iterations"] = np.int64(r.iterations)
            out[f"{key}/objective"] = np.asarray(r.objective, dtype=np.float64)
            out[f"{key}/gamma"] = np.asarray(r.gamma, dtype=np.float64)
            out[f"{key}/factors"] = np.concatenate([np.asarray(a) for a in r.factors])
            out[f"{key}/W"] = np.asarray(r.net.W)
    # -- a flow (eqs. 22-23) ---------------------------------------------------------------------------
    X, y = _data(24, 6, 3, 12, "float64")
    net = gl.he_init((6, 8, 5, 3), seed=13, dtype="float64", xp=np)
    flow = gl.integrate_flow(net, X, y, 1.0, 0.2, dt=0.05, weight_decay=0.01)
    _weights("flow/net", flow.net, out)
    # -- gaugelit.torch on a small CNN -----------------------------------------------------------------
    try:
        import torch
    except ImportError:          # the torch extra: make test installs it
        return out
    sys.path.insert(0, str(HERE.parent))
    import gaugelit.torch as gt
    from torch_models import CNN
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        torch.manual_seed(0)
        model = CNN().to(dtype)
        for p in (1.0, 2.0):
            res = gt.minnorm_(model, p=p)
            key = f"torch/cnn/{name}/p{p:g}"
            out[f"{key}/iterations"] = np.int64(res.iterations)
            out[f"{key}/objective"] = np.asarray(res.objective, dtype=np.float64)
            for pname, param in model.named_parameters():
                out[f"{key}/{pname}"] = param.detach().double().numpy().copy()
    return out


#: How closely a value must agree, by the dtype it was computed in. Results are bitwise the same
#: only on one machine: NumPy and OpenBLAS choose their SIMD kernels by CPU at run time (AVX-512
#: where layout.npz was written, AVX2 elsewhere), and float32 sums round differently in them. A
#: float32 result, after the iterations amplify its rounding, agrees to ~1e-6 normwise across
#: kernels (checked with OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL");
#: a change to an algorithm moves it far more.
RTOL = {"float32": 1e-5, "float64": 1e-12}
#: a gamma is a difference of O(1) sums over their sum: it is known to ~100 rounding units absolute
GAMMA_ATOL = {"float32": 100 * float(np.finfo(np.float32).eps), "float64": 100 * float(np.finfo(np.float64).eps)}


def computed_in(key: str) -> str:
    """The dtype a recorded value was computed in: its key names float32 where it was."""
    return "float32" if "/float32/" in key else "float64"


def agree(new, old, rtol: float, atol: float = 0.0) -> bool:
    """Normwise: the largest difference within ``rtol`` of the largest magnitude (an entry near zero
    of a bias vector is not held to its own relative rounding), plus ``atol``."""
    if not (np.isnan(new) == np.isnan(old)).all():
        return False
    finite = ~np.isnan(old)
    diff = np.abs(new[finite] - old[finite]).max(initial=0.0)
    return bool(diff <= rtol * np.abs(old[finite]).max(initial=0.0) + atol)


#: Values that changed on purpose, by a regular expression of their key, with the reason and the
#: rule they are held to instead of equality (the rule is given the dtype's tolerance).
CHANGED = {
    r"/passes$": ("fewer: the products of the input and output layers, which no factor moves, are now "
                "formed once per solve instead of at every update (the iterates are the same)",
                lambda new, old, rtol: bool(np.all(new <= old))),
    r"^soft/coords/log_scales$": ("the soft gauge's balancing is now the solvers' block method (it was a sweep "
                               "of its own): both answers are balanced to rounding (max |Delta| 6.1e-14 "
                               "before, 6.4e-14 now), where the minimiser is fixed to ~1e-11 relative",
                               lambda new, old, rtol: agree(new, old, max(rtol, 1e-10))),
    r"^train_many/.*/history/reg_loss$": ("train_many's regularised loss is now train's evaluation "
                         "(the scale-safe sum of |W|^p, formed in float64), which train_many had written "
                         "a second time in the weights' dtype: float32 values move by ~6e-11, and a model's "
                         "history is train's",
                         lambda new, old, rtol: agree(new, old, max(rtol, 1e-9))),
}


def compare(new: dict, old: dict) -> list[str]:
    """The keys whose values differ (integers exactly, floats beyond their dtype's :data:`RTOL`;
    those of :data:`CHANGED` by their own rule), and keys only in one."""
    problems = [f"{k}: missing now" for k in old if k not in new]
    problems += [f"{k}: not recorded before" for k in new if k not in old]
    for k in sorted(set(old) & set(new)):
        a, b = np.asarray(new[k], dtype=np.float64), np.asarray(old[k])
        dtype = computed_in(k)
        changed = next((rule for pattern, (_, rule) in CHANGED.items() if re.search(pattern, k)), None)
        if changed is not None:
            if a.shape != b.shape or not changed(a, b, RTOL[dtype]):
                problems.append(f"{k}: {a} breaks its rule against {b}")
        elif a.shape != b.shape:
            problems.append(f"{k}: shape {a.shape} != {b.shape}")
        elif b.dtype.kind in "iub":
            if not np.array_equal(a, b):
                problems.append(f"{k}: {a} != {b}")
        elif not agree(a, b, RTOL[dtype], GAMMA_ATOL[dtype] if k.endswith("/gamma") else 0.0):
            worst = np.nanmax(np.abs(a - b)) / max(np.nanmax(np.abs(b)), np.finfo(float).tiny)
            problems.append(f"{k}: differs by {worst:.3g} normwise ({dtype}: {RTOL[dtype]:g} allowed)")
    return problems


def save(values: dict, path=GOLDEN) -> None:
    """One float64 array of every value and a JSON index of keys, shapes and kinds: a zip entry per
    key would cost more than the values."""
    import json
    keys = sorted(values)
    arrays = [np.asarray(values[k]) for k in keys]
    index = [[k, list(a.shape), a.dtype.kind] for k, a in zip(keys, arrays)]
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    np.savez_compressed(path, values=flat, index=np.array(json.dumps(index)))


def load(path=GOLDEN) -> dict:
    import json
    data = np.load(path)
    flat, out, start = data["values"], {}, 0
    for key, shape, kind in json.loads(str(data["index"])):
        size = int(np.prod(shape))
        a = flat[start:start + size].reshape(shape)
        out[key] = a.astype(np.int64) if kind in "iub" else a
        start += size
    return out


if __name__ == "__main__":
    values = record()
    if "--write" in sys.argv:
        save(values)
        print(f"wrote {len(values)} values to {GOLDEN}")
    else:
        found = compare(values, load())
        print("\n".join(found) or f"all {len(values)} values as recorded")
