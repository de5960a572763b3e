"""gaugelit.torch.minnorm_ against one forward pass of the same model (issue 23, bench/RESULTS.md).

For each torchvision architecture (random weights, float64, CPU, eval mode), in a fresh process:
the wall time of one ``minnorm_(model, 2.0)`` (the default call: shape propagation on a 2 x 3 x 32 x 32
input, the solve, the rescaling, and its function check on that input) and of one forward pass at
batch 8 x 3 x 224 x 224 under ``torch.no_grad()``, and the growth of the process's peak resident
memory during ``minnorm_`` (ru_maxrss) against the float32 size of the weights.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python bench/torch_zoo_bench.py [resnet50 vgg11 densenet121]
"""
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def one(name):
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from gaugelit.torch import minnorm_
    from torch_models import torchvision_models
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = getattr(torchvision_models(), name)(weights=None).double().eval()
    n_weights = sum(p.numel() for p in m.parameters())
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    r = minnorm_(m, 2.0, gamma_tol=1e-6)
    t_gauge = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x = torch.randn(8, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        t = time.perf_counter()
        m(x)
        t_fwd = time.perf_counter() - t
    return dict(model=name, weights=n_weights, minnorm_s=round(t_gauge, 2), forward_b8_s=round(t_fwd, 2),
                sweeps=r.iterations, extra_peak_MiB=round((rss1 - rss0) / 1024), float32_weights_MiB=round(
                    n_weights * 4 / 2**20), output_change=r.output_change)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
        sys.exit()
    rows = []
    for name in sys.argv[1:] or ["resnet50", "vgg11", "densenet121"]:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print("| model | weights | minnorm_ (s) | forward, batch 8 (s) | ratio | sweeps | extra peak (MiB) | "
          "float32 weights (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['weights'] / 1e6:.1f} M | {r['minnorm_s']:.2f} | {r['forward_b8_s']:.2f} | "
              f"{r['minnorm_s'] / r['forward_b8_s']:.2f} | {r['sweeps']} | {r['extra_peak_MiB']} | "
              f"{r['float32_weights_MiB']} |")
