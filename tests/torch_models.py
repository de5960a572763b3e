"""The small torch models that both halves of gaugelit.torch's tests use (tests/test_torch.py on the
CPU, tests/test_torch_cuda.py on a GPU): an MLP, a CNN (conv, pooling, flatten) and a residual
network with a sigmoid gate."""
import torch

nn = torch.nn


def mlp(dtype=torch.float64, seed=0):
    """6-10-8-3 ReLU network; ``seed=None`` leaves torch's generator as it is."""
    if seed is not None:
        torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3), nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        return self.fc(torch.flatten(torch.relu(self.c2(x)), 1))


class Res(nn.Module):
    """A residual stream (stem, a2, b2 tied) and a sigmoid gate reading it."""
    def __init__(self):
        super().__init__()
        self.stem, self.a1, self.a2 = nn.Linear(5, 8), nn.Linear(8, 12), nn.Linear(12, 8)
        self.b1, self.b2, self.head, self.gate = nn.Linear(8, 6), nn.Linear(6, 8), nn.Linear(8, 3), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = h + self.a2(torch.relu(self.a1(h)))
        h = h + self.b2(torch.relu(self.b1(h)))
        return self.head(torch.relu(h)), torch.sigmoid(self.gate(h))


def torchvision_models():
    """``torchvision.models``, importable beside the CPU torch.

    The torchvision 0.28.0 wheel that the registry serves for torch 2.13.0 is a CUDA build: its C
    extension does not load beside the CPU torch, and ``import torchvision`` stops in
    ``torchvision/_meta_registrations.py`` (``operator torchvision::nms does not exist``) while it
    registers fake (meta) kernels and autograd formulas for its detection ops (nms, roi_align, ...).
    The architectures in ``torchvision.models`` are plain Python and never call those ops, so where
    the plain import fails this way, the two registration modules are replaced by empty ones
    before importing; nothing else of torchvision is touched, and calling a detection op would fail
    loudly (its operator does not exist). Skips the calling test where torchvision is not installed
    (``make venv`` installs it with ``--no-deps``, pinned in constraints.txt)."""
    import importlib.util
    import sys
    import types

    import pytest
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (make venv installs it)")
    try:
        import torchvision.models as models
        return models
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in list(sys.modules):
        if name == "torchvision" or name.startswith("torchvision."):
            del sys.modules[name]
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules[name] = types.ModuleType(name)
    import torchvision.models as models
    return models
