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
