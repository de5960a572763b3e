"""gaugelit.torch on real architectures and on the cases that once changed the function silently.

Every accepted model is checked here independently of minnorm_'s own check: on a fresh input, of
another size and batch than the one minnorm_ propagated, with ``check=False`` so that only the
trace's proofs stand between the model and a wrong answer. Every refused one must name its node.
"""
import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional

from gaugelit.torch import GaugeError, GaugeFix, UnsupportedOp, gauge_graph, minnorm_  # noqa: E402
from torch_models import torchvision_models  # noqa: E402


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def _exact(model, x, **kw):
    """minnorm_ without its own check, then the function compared on ``x`` (not the traced input)."""
    with torch.no_grad():
        y0 = model(x)
    before = _state(model)
    r = minnorm_(model, 2.0, gamma_tol=1e-9, check=False, **kw)
    with torch.no_grad():
        y1 = model(x)
    err = float((y1 - y0).abs().max() / y0.abs().max())
    assert err < 1e-10, err
    assert r.objective[-1] < r.objective[0]
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    return r


def _refused(model, match, exc=GaugeError, **kw):
    before = _state(model)
    with pytest.raises(exc, match=match):
        minnorm_(model, 2.0, check=False, **kw)
    _unchanged(model, before)


def _x(*shape, seed=11):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class Two(nn.Module):
    def __init__(self, a, b, mid=None):
        super().__init__()
        self.a, self.b, self.mid = a, b, mid or nn.ReLU()

    def forward(self, x):
        return self.b(self.mid(self.a(x)))


# -- shared parameters --------------------------------------------------------------------------
def test_shared_parameter_is_refused_by_name_also_by_gaugefix():
    torch.manual_seed(0)
    m = Two(nn.Linear(4, 4), nn.Linear(4, 4)).double()
    m.b.weight = m.a.weight
    _refused(m, r"parameter 'a.weight' is shared with 'b.weight'")
    with pytest.raises(GaugeError, match="is shared with"):
        GaugeFix(m)
    m = Two(nn.Linear(4, 4), nn.Linear(4, 4)).double()
    m.b.weight = nn.Parameter(m.a.weight.data)           # two parameters, one storage
    _refused(m, r"parameter 'a.weight' shares its memory with 'b.weight'")


# -- parametrisations ---------------------------------------------------------------------------
def test_weight_norm_is_rescaled_through_g_and_v():
    from torch.nn.utils.parametrizations import weight_norm
    torch.manual_seed(1)
    m = nn.Sequential(weight_norm(nn.Linear(5, 7)), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(),
                      weight_norm(nn.Linear(6, 3))).double()
    g0 = m[0].parametrizations.weight.original0.detach().clone()
    _exact(m, _x(9, 5))
    assert not torch.allclose(m[0].parametrizations.weight.original0, g0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = nn.Sequential(nn.utils.weight_norm(nn.Linear(5, 7)), nn.ReLU(), nn.Linear(7, 3)).double()
    _exact(old, _x(9, 5))


def test_spectral_norm_and_other_parametrisations_are_refused():
    from torch.nn.utils.parametrizations import spectral_norm
    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), spectral_norm(nn.Linear(7, 3))).double()
    _refused(m, r"module '2': parameter 'weight' is parametrised \(_SpectralNorm\)")
    old = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.utils.spectral_norm(nn.Linear(7, 3))).double()
    _refused(old, r"module '2': has a forward pre-hook .*spectral norm")


# -- pooling over the feature axis, Conv1d outputs, flattened concatenation ------------------------
def test_pooling_over_features_is_refused_naming_the_node():
    torch.manual_seed(3)
    _refused(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.MaxPool1d(2), nn.Linear(4, 3)).double(),
             r"module '2' \(MaxPool1d\): pools the last 1 axes of a 2-d tensor whose channels are on axis 1",
             UnsupportedOp)
    _refused(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.AvgPool1d(2), nn.Linear(4, 3)).double(), "AvgPool1d",
             UnsupportedOp, example_input=_x(2, 5, 6))
    _refused(nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(14, 3)).double(),
             r"module '2' \(MaxPool2d\): pools the last 2 axes of a 3-d tensor", UnsupportedOp,
             example_input=_x(2, 2, 16))
    # pooling the length axis of a Conv1d output is exact
    _exact(nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(28, 3)).double(),
           _x(5, 2, 16), example_input=_x(2, 2, 16, seed=3))


def test_concatenation_of_flattened_tensors_of_different_sizes_is_exact():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 3, 3), nn.Conv2d(1, 2, 5)
            self.fc = nn.Linear(3 * 36 + 2 * 16, 4)

        def forward(self, x):
            return self.fc(torch.cat([torch.flatten(torch.relu(self.a(x)), 1),
                                      torch.flatten(torch.relu(self.b(x)), 1)], dim=1))
    torch.manual_seed(4)
    m = Cat().double()
    r = _exact(m, _x(3, 1, 8, 8), example_input=_x(2, 1, 8, 8, seed=4))
    assert {g.name: g.free for g in r.graph.groups} == {"a": True, "b": True, "input x": False, "fc": False}


# -- freedoms -----------------------------------------------------------------------------------
def test_grouped_depthwise_prelu_pad_mean_transpose_are_free_and_exact():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.act = nn.Conv2d(2, 8, 3), nn.PReLU(8)
            self.g = nn.Conv2d(8, 8, 3, groups=4)
            self.dw = nn.Conv2d(8, 8, 3, groups=8, padding=1)
            self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            h = self.act(self.c1(x))
            h = F.relu(self.g(F.pad(h, (1, 1, 1, 1))))
            h = F.relu(self.dw(h))
            h = F.relu(self.up(h))
            return self.fc(h.mean((2, 3))) + 0 * h.sum(dim=(2, 3), keepdim=True).mean((2, 3))[:, :3]
    torch.manual_seed(5)
    m = Net().double()
    with torch.no_grad():
        m.act.weight.uniform_(-0.5, 0.5)                # per-channel learnable slopes: still degree one
    # the slice [:, :3] selects channels (followed); 0 * h is refused (a factor 0 is no rescaling)
    with pytest.raises(UnsupportedOp, match=r"node 'mul'.*function 'mul'"):
        gauge_graph(m)

    class Net2(Net):
        def forward(self, x):
            h = self.act(self.c1(x))
            h = F.relu(self.g(F.pad(h, (1, 1, 1, 1))))
            h = F.relu(self.dw(h))
            h = F.relu(self.up(h))
            return self.fc(h.mean((2, 3)) + h.sum(dim=(2, 3)))
    m = Net2().double()
    r = _exact(m, _x(3, 2, 11, 11))
    free = {g.name for g in r.graph.groups if g.free}
    assert free == {"c1", "g", "dw", "up"}, free


def _shuffle(x, g):
    n, c, h, w = x.size()
    return x.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class Shuffle(nn.Module):
    """Two convolutions concatenated, a channel shuffle of ``g`` groups, a chunk, and a slice: each
    later layer reads a permutation or a selection of the earlier layers' channels."""
    def __init__(self, g=3, shuffle=_shuffle):
        super().__init__()
        self.g, self.shuffle = g, shuffle
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 5, 3, padding=1)
        self.c, self.d = nn.Conv2d(6, 4, 1), nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(4 + 3 + 3, 2)

    def forward(self, x):
        h = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)        # 9 channels
        h = self.shuffle(h, self.g)
        u, v = h.chunk(2, dim=1)                                              # 5 + 4 channels
        u = torch.relu(self.c(torch.cat([u, v[:, 3:]], 1)))
        w = torch.relu(self.d(v[:, ::2]))
        return self.fc(torch.cat([u.mean((2, 3)), w.mean((2, 3)), h[:, 6:].sum((2, 3))], 1))


def test_channel_shuffle_chunk_and_slices_are_permutations_and_selections():
    torch.manual_seed(12)
    m = Shuffle(g=3).double()
    r = _exact(m, _x(3, 2, 9, 7), example_input=_x(2, 2, 8, 8, seed=12))
    # the shuffle's permutation is computed from the shapes: channel 3i + j <- 3j + i of a 9-channel cat
    # (a: 0..3, b: 4..8), so the pieces of a and b that the later layers read are cut where they differ
    names = {g.name for g in r.graph.groups}
    assert {"a", "b", "c", "input x", "fc"} <= {n.split(" [")[0] for n in names}
    assert any(n.startswith("b [") for n in names)
    assert {g.name.split(" [")[0] for g in r.graph.groups if g.free} == {"a", "b", "c", "d"}
    _exact(Shuffle(g=2 + 1).double(), _x(2, 2, 6, 6))      # the default call's own input
    # a "shuffle" that is not one: its permutation would mix channels with the spatial axes
    for bad, match in [
            (lambda x, g: x.view(x.size(0), g, x.size(1) // g * x.size(2), x.size(3)).view(x.shape),
             r"node 'view'.*mixes channels with the batch or spatial axes"),
            (lambda x, g: x.view(x.size(0), g, x.size(1) // g, x.size(2), x.size(3)).transpose(1, 3)
             .reshape(x.shape), r"node 'transpose'.*transposes axes 1 and 3 of a split tensor"),
            (lambda x, g: x.view(x.size(0), g, x.size(1) // g, x.size(2), x.size(3)).transpose(1, 2)
             .reshape(x.size(0), x.size(1) // g, g * x.size(2), x.size(3)).reshape(x.shape),
             r"node 'reshape'.*mixes channels"),
            (lambda x, g: x.view(2, g, 9 // g, 8, 8).transpose(1, 2).reshape(2, 9, 8, 8),
             r"node 'view'.*reads their sizes as constants"),
            (lambda x, g: torch.sigmoid(x.view(x.size(0), g, x.size(1) // g, x.size(2), x.size(3))).view(x.shape),
             r"node 'sigmoid'.*a tensor whose channel axis a view split")]:
        _refused(Shuffle(3, bad).double(), match, UnsupportedOp, example_input=_x(2, 2, 8, 8))


def test_chunks_along_other_axes_and_index_tensors_are_refused():
    class C(nn.Module):
        def __init__(self, how):
            super().__init__()
            self.how, self.a, self.b = how, nn.Conv2d(1, 4, 3), nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.b(self.how(torch.relu(self.a(x))))
    torch.manual_seed(13)
    for how, match in [(lambda h: h.chunk(2, dim=2)[0][:, :2], r"node 'chunk'.*along dim 2"),
                       (lambda h: h[:, [0, 2]], r"node 'getitem'.*indexes a spatial tensor"),
                       (lambda h: h[:, 1], r"node 'getitem'.*indexes"),
                       (lambda h: torch.cat(h.chunk(2, 1), 1)[:, :2], r"node 'cat'.*parts of a chunk")]:
        _refused(C(how).double(), match, UnsupportedOp, example_input=_x(2, 1, 8, 8))
    _exact(C(lambda h: torch.split(h, [1, 2, 1], dim=1)[1]).double(), _x(3, 1, 9, 9), example_input=_x(2, 1, 8, 8))


def test_grouped_conv_transpose_is_exact():
    class Up(nn.Module):
        def __init__(self, bn):
            super().__init__()
            self.c = nn.Conv2d(2, 6, 3)
            self.up = nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2)
            self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
            self.up2 = nn.ConvTranspose2d(4, 6, 3, groups=2, bias=False)
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            h = F.relu(self.bn(self.up(F.relu(self.c(x)))))
            return self.fc(F.relu(self.up2(h)).mean((2, 3)))
    for bn in (False, True):
        torch.manual_seed(14)
        m = Up(bn).double()
        if bn:
            m(_x(16, 2, 8, 8))
            m.eval()
        r = _exact(m, _x(3, 2, 9, 9), example_input=_x(2, 2, 8, 8))
        assert {g.name for g in r.graph.groups if g.free} == {"c", "up", "up2"}


def test_batchnorm_after_relu_pool_cat_and_flatten_passes_factors_through():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 3, 3), nn.Conv2d(2, 4, 3)
            self.bn_relu, self.bn_pool, self.bn_cat = nn.BatchNorm2d(3), nn.BatchNorm2d(4), nn.BatchNorm2d(7)
            self.c = nn.Conv2d(7, 5, 1)
            self.bn_shared = nn.BatchNorm2d(5, affine=False)
            self.bn_flat = nn.BatchNorm1d(5 * 9)
            self.fc = nn.Linear(5 * 9, 2)

        def forward(self, x):
            u = self.bn_relu(F.relu(self.a(x)))
            v = self.bn_pool(F.max_pool2d(F.relu(self.b(x)), 1))
            h = self.c(F.relu(self.bn_cat(torch.cat([u, v], 1))))
            h = F.max_pool2d(F.relu(self.bn_shared(h)) + 0.5 * F.relu(h), 2)  # c is read by two ops
            return self.fc(self.bn_flat(torch.flatten(h, 1)))
    torch.manual_seed(15)
    m = Net().double()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                if mod.affine:
                    mod.weight.uniform_(0.5, 2.0)
                    mod.bias.uniform_(-0.5, 0.5)
    m.eval()
    mean0 = m.bn_cat.running_mean.clone()
    r = _exact(m, _x(3, 2, 8, 8), example_input=_x(2, 2, 8, 8, seed=15))
    assert {g.name for g in r.graph.groups if g.free} == {"a", "b", "c"}
    assert not torch.equal(m.bn_cat.running_mean, mean0)          # the mean carries the factors
    m.train()                                                     # batch statistics: inputs fixed
    reasons = {n: why for n, _, why in gauge_graph(m, example_input=_x(2, 2, 8, 8)).fixed_units()}
    assert reasons["a"].startswith("feeds BatchNorm2d 'bn_relu' in training mode")


def test_refusals_say_why_in_words():
    class Eq(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            torch._assert(x.shape[1] == 3, "three features")   # shape reads and a shape check: fine
            return self.b(h * (h > 0))
    with pytest.raises(UnsupportedOp, match=r"node 'gt'.*compares a tensor \(gt\): a comparison's result is "
                                            r"boolean"):
        gauge_graph(Eq())

    class View(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.f = nn.Conv2d(1, 3, 3), nn.Linear(48, 2)

        def forward(self, x):
            return self.f(torch.relu(self.c(x)).view(-1, 48))
    with pytest.raises(UnsupportedOp, match=r"node 'view'.*\.view\(-1, 48\)"):
        gauge_graph(View(), example_input=torch.randn(2, 1, 6, 6))


def test_batchnorm_eval_unfolded_train_fixed_and_channels_counted():
    class BN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.bn1 = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)
            self.c2, self.bn2 = nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5)
            self.fc = nn.Linear(5 * 4 * 4, 3)

        def forward(self, x):
            h = torch.relu(self.bn1(self.c1(x)))
            return self.fc(torch.flatten(torch.relu(self.bn2(self.c2(h))), 1))
    torch.manual_seed(6)
    m = BN().double()
    m(_x(16, 2, 8, 8))                                    # running statistics away from 0 / 1
    m.eval()
    r = _exact(m, _x(5, 2, 8, 8))
    assert {g.name for g in r.graph.groups if g.free} == {"c1", "c2"}
    assert isinstance(m.bn1, nn.BatchNorm2d)
    m.train()
    g = gauge_graph(m)
    reasons = dict((n, (s, why)) for n, s, why in g.fixed_units())
    assert reasons["c2"][1].startswith("feeds BatchNorm2d 'bn2' in training mode")
    # the batch norm's output feeds flatten -> fc: 5 channels, not 5 * 16 flattened features
    assert reasons["output of BatchNorm2d 'bn2'"][0] == 5
    # fold_batchnorm=True, then a refusal: the model is exactly as it was, batch norms included
    m.eval()
    m.extra = nn.Linear(5, 3).double()
    m.extra.bias = m.fc.bias                               # one tensor in two modules
    before = _state(m)
    with pytest.raises(GaugeError, match="parameter 'fc.bias' is shared with 'extra.bias'"):
        minnorm_(m, fold_batchnorm=True)
    assert isinstance(m.bn1, nn.BatchNorm2d) and isinstance(m.bn2, nn.BatchNorm2d) and m.c1.bias is not None
    _unchanged(m, before)


def test_mc_dropout_is_checked_under_one_random_state():
    class MC(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(5, 16), nn.Linear(16, 16), nn.Linear(16, 2)

        def forward(self, x):
            h = F.dropout(torch.relu(self.a(x)), 0.5, training=True)
            return self.c(F.dropout(torch.relu(self.b(h)), 0.5, training=True))
    torch.manual_seed(7)
    m = MC().double()
    state = torch.random.get_rng_state()
    r = minnorm_(m, 2.0, gamma_tol=1e-9)                  # the default check: same masks before and after
    assert r.output_change < 1e-10
    assert torch.equal(torch.random.get_rng_state(), state)   # the user's random state is untouched


def test_gaugefix_names_the_call_where_weights_stop_being_finite():
    torch.manual_seed(8)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    fix = GaugeFix(m, 2.0, opt)
    x, y = _x(8, 4), _x(8, 2)
    for step in range(1, 4):
        opt.zero_grad()
        F.mse_loss(m(x), y).backward()
        opt.step()
        if step == 3:
            with torch.no_grad():
                m[2].weight[0, 0] = float("nan")
            with pytest.raises(GaugeError, match=r"GaugeFix call 3 \(after optimizer step 3\): parameter "
                                                 r"'2.weight' has 1 non-finite entries"):
                fix()
        else:
            fix()


# -- the model zoo ------------------------------------------------------------------------------
ZOO = [  # name, constructor arguments, input size of the independent check (not the traced 32 x 32)
    ("resnet18", {}, 40),
    ("densenet121", {}, 40),
    ("googlenet", {"aux_logits": False, "init_weights": True}, 40),
    ("mobilenet_v2", {}, 40),
    ("squeezenet1_0", {}, 72),
    ("vgg11_bn", {}, 40),
    ("shufflenet_v2_x0_5", {}, 40),
]
REFUSED = {}   # none: ShuffleNetV2's channel shuffle is a permutation of channels, its chunks selections


@pytest.mark.parametrize("name,kw,size", ZOO, ids=[z[0] for z in ZOO])
def test_torchvision_model_is_exact_or_refused_by_node(name, kw, size):
    models = torchvision_models()
    torch.manual_seed(9)
    m = getattr(models, name)(weights=None, **kw).double().eval()
    with torch.no_grad():
        for mod in m.modules():                           # batch norms that do something
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.5, 0.5)
    # (how long minnorm_ takes at model-zoo scale is measured in bench/torch_zoo_bench.py, not here)
    if name in REFUSED:
        _refused(m, REFUSED[name], UnsupportedOp)
    else:
        r = _exact(m, _x(3, 3, size, size))
        assert any(g.free for g in r.graph.groups)
        if name == "mobilenet_v2":
            assert any("ReLU6" in (g.reason or "") for g in r.graph.groups if not g.free)


def test_gaugefix_transforms_state_through_batchnorm_weightnorm_and_groups():
    """p * m is gauge-invariant for every rescaled tensor (weights, biases, gamma/beta of a batch
    norm carrying its layer's factor, weight norm's g and v, a grouped convolution), and the function
    is unchanged by each GaugeFix call."""
    from torch.nn.utils.parametrizations import weight_norm

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.bn = nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6)
            self.g = nn.Conv2d(6, 6, 3, groups=3)
            self.fc = weight_norm(nn.Linear(6 * 3 * 3, 4))

        def forward(self, x):
            h = F.relu(self.g(F.relu(self.bn(self.c1(x)))))
            return self.fc(torch.flatten(h, 1))
    torch.manual_seed(10)
    m = Net().double()
    m(_x(16, 2, 7, 7))
    m.eval()
    opt = torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9)
    x, y = _x(8, 2, 7, 7), _x(8, 4)
    fix = GaugeFix(m, 2.0, opt, gamma_tol=1e-9, example_input=x[:2])   # 7 x 7 is no size it would try
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(m(x), y).backward()
        opt.step()
        inv = {k: (p * opt.state[p]["momentum_buffer"]).detach().clone() for k, p in m.named_parameters()}
        with torch.no_grad():
            y0 = m(x)
        res = fix()
        assert res.gamma[-1] < 1e-9
        with torch.no_grad():
            torch.testing.assert_close(m(x), y0, rtol=1e-10, atol=1e-12)
        for k, p in m.named_parameters():
            torch.testing.assert_close(p * opt.state[p]["momentum_buffer"], inv[k], rtol=1e-9, atol=1e-15, msg=k)
    assert {g.name for g in res.graph.groups if g.free} == {"c1", "g"}


def test_selections_of_flattened_columns_are_refused_and_odd_batch_norms_are_safe():
    class Flat(nn.Module):
        def __init__(self, how):
            super().__init__()
            self.how, self.a, self.fc = how, nn.Conv2d(1, 4, 3), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.how(torch.flatten(torch.relu(self.a(x)), 1)))
    torch.manual_seed(16)
    # the flattened axis holds columns (channel-major), not channels: no selection of channels
    _refused(Flat(lambda h: h[:, :8]).double(), r"node 'getitem'.*indexes a flat tensor", UnsupportedOp,
             example_input=_x(2, 1, 6, 6))
    _refused(Flat(lambda h: h.chunk(8, 1)[0]).double(), r"node 'chunk'.*of a flat tensor", UnsupportedOp,
             example_input=_x(2, 1, 6, 6))

    class Odd(nn.Module):
        """a batch norm on a sigmoid's output (a group no layer writes) and on a cat with the input"""
        def __init__(self):
            super().__init__()
            self.a, self.d = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 1)
            self.bn1, self.bn2, self.b = nn.BatchNorm2d(3), nn.BatchNorm2d(5), nn.Conv2d(3, 2, 1)

        def forward(self, x):
            k = torch.relu(self.d(torch.relu(self.a(x))))
            return self.b(k), self.bn1(torch.sigmoid(k)), self.bn2(torch.cat([k, x], 1))
    m = Odd().double()
    m(_x(8, 2, 6, 6))
    m.eval()
    r = minnorm_(m, 2.0, example_input=_x(2, 2, 6, 6))             # the default check on
    assert r.output_change < 1e-10 and {g.name for g in r.graph.groups if g.free} == {"a"}


def test_a_shuffle_written_with_view_of_shape_is_followed():
    def shuffle(x, g):
        n, c, h, w = x.size()
        return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(x.shape)
    torch.manual_seed(17)
    _exact(Shuffle(3, shuffle).double(), _x(3, 2, 7, 9), example_input=_x(2, 2, 8, 8))
