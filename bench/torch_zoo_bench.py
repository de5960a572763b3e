"""gaugelit.torch.minnorm_ against one forward pass of the same model (issue 23, bench/RESULTS.md).

For each torchvision architecture (random weights, CPU, eval mode, float64 unless ``--float32``), in
a fresh process: the wall time of one ``minnorm_(model, 2.0)`` (the default call: shape propagation
on a 2 x 3 x 32 x 32 input, the solve, the rescaling, and its function check on that input) and of
one forward pass at batch 8 x 3 x 224 x 224 under ``torch.no_grad()``, and the peak extra memory of
``minnorm_``: the process's peak resident set (VmHWM, reset to the current resident set just before
the call by writing 5 to /proc/self/clear_refs) minus its resident set then (VmRSS), the model built
and one forward pass on the 2 x 3 x 32 x 32 input already made; against the float32 size of the
weights (the issue's target: at most one float32 copy).

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python bench/torch_zoo_bench.py [--float32] [resnet50 vgg11 densenet121]
"""
import gc
import json
import subprocess
import sys
import time
from pathlib import Path


def _status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                key, val = line.split(":")
                out[key] = int(val.split()[0]) * 1024          # bytes
    return out


def one(name, dtype_name):
    import torch
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "tests")]          # this checkout's gaugelit, not an installed one
    from gaugelit.torch import minnorm_
    from torch_models import torchvision_models
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    m = getattr(torchvision_models(), name)(weights=None).to(dtype).eval()
    n_weights = sum(p.numel() for p in m.parameters())
    with torch.no_grad():
        m(torch.randn(2, 3, 32, 32, dtype=dtype))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                           # VmHWM := VmRSS
    rss0 = _status()["VmRSS"]
    t = time.perf_counter()
    r = minnorm_(m, 2.0, gamma_tol=1e-6)
    t_gauge = time.perf_counter() - t
    peak = _status()["VmHWM"]
    x = torch.randn(8, 3, 224, 224, dtype=dtype)
    with torch.no_grad():
        t = time.perf_counter()
        m(x)
        t_fwd = time.perf_counter() - t
    return dict(model=name, dtype=dtype_name, weights=n_weights, minnorm_s=round(t_gauge, 2),
                forward_b8_s=round(t_fwd, 2), sweeps=r.iterations, extra_peak_MiB=round((peak - rss0) / 2**20),
                float32_weights_MiB=round(n_weights * 4 / 2**20), output_change=r.output_change)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], sys.argv[3])))
        sys.exit()
    args = sys.argv[1:]
    dtype_name = "float32" if "--float32" in args else "float64"
    names = [a for a in args if not a.startswith("--")] or ["resnet50", "vgg11", "densenet121"]
    rows = []
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--one", name, dtype_name], capture_output=True, text=True,
                             check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print("| model | dtype | weights | minnorm_ (s) | forward, batch 8 (s) | ratio | sweeps | extra peak (MiB) | "
          "float32 weights (MiB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['dtype']} | {r['weights'] / 1e6:.1f} M | {r['minnorm_s']:.2f} | "
              f"{r['forward_b8_s']:.2f} | {r['minnorm_s'] / r['forward_b8_s']:.2f} | {r['sweeps']} | "
              f"{r['extra_peak_MiB']} | {r['float32_weights_MiB']} |")
