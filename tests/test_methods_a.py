"""KD methods kd, fitnet, at, sp, cc, vid, rkd, pkt: values against independent computations,
gradients, mismatched teacher/student pairs, tiny inputs and option validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError
from mgkd.methods import MethodContext, MethodInputs, build_method, get_method

METHODS_A = ("kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt")
FEATURE_METHODS = METHODS_A[1:]

# A resnet-like student (stem + 3 stages) against a deeper, wider teacher (stem + 4 stages) whose
# deepest map is 1x1, as on 32x32 inputs.
STUDENT = [(16, 16, 16), (16, 16, 16), (32, 8, 8), (64, 4, 4), (64,)]
TEACHER = [(32, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (256, 1, 1), (256,)]
# Same stage count, maps as small as 16x16 inputs give (deepest 2x2 and 1x1).
TINY_STUDENT = [(8, 8, 8), (8, 8, 8), (16, 4, 4), (32, 2, 2), (32,)]
TINY_TEACHER = [(16, 8, 8), (32, 4, 4), (64, 2, 2), (64, 1, 1), (64,)]
PAIRS = {"mismatched": (STUDENT, TEACHER), "tiny": (TINY_STUDENT, TINY_TEACHER)}

BATCH = 6
CLASSES = 10


def make_context(student=STUDENT, teacher=TEACHER) -> MethodContext:
    return MethodContext(student_shapes=list(student), teacher_shapes=list(teacher),
                         num_classes=CLASSES, num_train_samples=100, epochs=10, temperature=4.0)


def make_inputs(student=STUDENT, teacher=TEACHER, batch: int = BATCH, seed: int = 0,
                dtype: torch.dtype = torch.float64) -> MethodInputs:
    """Post-ReLU-like random features; student ones are leaves that require grad."""
    g = torch.Generator().manual_seed(seed)

    def feats(shapes, grad):
        out = []
        for shape in shapes:
            f = torch.randn((batch, *shape), generator=g, dtype=dtype)
            f = f.relu() + 0.1 * f  # mostly positive, a few negatives (tests |f|^p)
            out.append(f.requires_grad_(grad))
        return out

    return MethodInputs(
        student_features=feats(student, True),
        teacher_features=feats(teacher, False),
        student_logits=torch.randn(batch, CLASSES, generator=g, dtype=dtype, requires_grad=True),
        teacher_logits=torch.randn(batch, CLASSES, generator=g, dtype=dtype),
        targets=torch.randint(0, CLASSES, (batch,), generator=g),
        indices=torch.arange(batch),
        epoch=0)


def build(name: str, options=None, student=STUDENT, teacher=TEACHER, seed: int = 1):
    torch.manual_seed(seed)
    return build_method(name, make_context(student, teacher), options).double()


def huber(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a - b).abs()
    return torch.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()


def batch_norm_train(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     eps: float) -> torch.Tensor:
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = ((y - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (y - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def pool_to(f: torch.Tensor, size: int) -> torch.Tensor:
    """Average non-overlapping k x k blocks (square maps whose side is a multiple of size)."""
    b, c, h, w = f.shape
    k = h // size
    return f.reshape(b, c, size, k, size, k).mean(dim=(3, 5))


# --------------------------------------------------------------------------- class attributes


def test_class_attributes_match_design_table():
    betas = {"fitnet": 100, "at": 1000, "sp": 3000, "cc": 2000.0, "vid": 1, "rkd": 1, "pkt": 30000}
    for name, beta in betas.items():
        cls = get_method(name)
        assert cls.name == name
        assert cls.defaults.feature_weight == beta
        assert cls.defaults.uses_feature_weight
        assert (cls.defaults.ce_weight, cls.defaults.logit_weight) == (1.0, 0.0)
        assert not cls.has_init_stage
    kd = get_method("kd")
    assert not kd.defaults.uses_feature_weight
    assert (kd.defaults.ce_weight, kd.defaults.logit_weight) == (0.2, 0.8)


def test_option_defaults():
    assert get_method("fitnet").defaults.options == {"hint_layer": 2}
    assert get_method("at").defaults.options == {"p": 2}
    assert get_method("rkd").defaults.options == {"distance_weight": 25.0, "angle_weight": 50.0}
    assert get_method("cc").defaults.options == {"embed_dim": 128, "kernel": "gaussian",
                                                "gamma": 0.4, "order": 2, "form": "paper"}
    assert get_method("vid").defaults.options == {"init_variance": 5.0, "eps": 1e-5}
    assert get_method("pkt").defaults.options == {"eps": 1e-7}
    assert get_method("sp").defaults.options == {}
    assert get_method("kd").defaults.options == {}


# --------------------------------------------------------------------------- kd


def test_kd_is_zero_and_parameter_free():
    method = build_method("kd", make_context(), {})
    assert list(method.parameters()) == []
    inputs = make_inputs(dtype=torch.float32)
    loss = method(inputs)
    assert loss.shape == () and loss.item() == 0.0
    assert loss.device == inputs.student_logits.device and loss.dtype == torch.float32


# --------------------------------------------------------------------------- values


def test_at_matches_reference():
    inputs = make_inputs()
    loss = build("at")(inputs)
    s, t = inputs.student_features, inputs.teacher_features
    # Stem left out, deepest-aligned: student stages 1, 2, 3 with teacher maps 2, 3, 4.
    expected = 0.0
    for si, ti in ((1, 2), (2, 3), (3, 4)):
        fs, ft = s[si], t[ti]
        size = min(fs.shape[-1], ft.shape[-1])
        fs, ft = pool_to(fs, size), pool_to(ft, size)
        a_s = (fs.abs() ** 2).mean(1).reshape(BATCH, -1)
        a_t = (ft.abs() ** 2).mean(1).reshape(BATCH, -1)
        a_s = a_s / a_s.norm(dim=1, keepdim=True)
        a_t = a_t / a_t.norm(dim=1, keepdim=True)
        expected = expected + ((a_s - a_t) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_at_p_option():
    inputs = make_inputs(TINY_STUDENT, TINY_TEACHER)
    loss = build("at", {"p": 3}, TINY_STUDENT, TINY_TEACHER)(inputs)
    s, t = inputs.student_features, inputs.teacher_features
    expected = 0.0
    for i in (1, 2, 3):  # same stage count: pairs (1, 1), (2, 2), (3, 3)
        size = min(s[i].shape[-1], t[i].shape[-1])
        a = [(pool_to(f, size).abs() ** 3).mean(1).flatten(1) for f in (s[i], t[i])]
        a = [x / x.norm(dim=1, keepdim=True) for x in a]
        expected = expected + ((a[0] - a[1]) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_sp_matches_reference():
    inputs = make_inputs()
    loss = build("sp")(inputs)
    fs = inputs.student_features[3].reshape(BATCH, -1)  # (64, 4, 4): the deepest student map
    ft = inputs.teacher_features[4].reshape(BATCH, -1)  # (256, 1, 1)
    g_s, g_t = fs @ fs.T, ft @ ft.T
    g_s = g_s / g_s.norm(dim=1, keepdim=True)
    g_t = g_t / g_t.norm(dim=1, keepdim=True)
    expected = ((g_t - g_s) ** 2).sum() / BATCH ** 2
    torch.testing.assert_close(loss, expected)


def test_rkd_matches_reference():
    inputs = make_inputs()
    loss = build("rkd")(inputs)
    es, et = inputs.student_features[-1], inputs.teacher_features[-1]

    def distances(e):
        d = torch.stack([torch.stack([(e[i] - e[j]).norm() if i != j else e.new_zeros(())
                                      for j in range(BATCH)]) for i in range(BATCH)])
        return d / (d.sum() / (BATCH * (BATCH - 1)))

    def angles(e):
        out = []
        for i in range(BATCH):
            for j in range(BATCH):
                for k in range(BATCH):
                    u, v = e[j] - e[i], e[k] - e[i]
                    nu = u / u.norm() if j != i else u
                    nv = v / v.norm() if k != i else v
                    out.append((nu * nv).sum())
        return torch.stack(out)

    expected = 25 * huber(distances(es), distances(et)) + 50 * huber(angles(es), angles(et))
    torch.testing.assert_close(loss, expected)

    only_angle = build("rkd", {"distance_weight": 0, "angle_weight": 2})(inputs)
    torch.testing.assert_close(only_angle, 2 * huber(angles(es), angles(et)))


def test_pkt_matches_reference():
    inputs = make_inputs()
    loss = build("pkt")(inputs)
    eps = 1e-7

    def probabilities(e):
        cos = torch.empty(BATCH, BATCH, dtype=e.dtype)
        for i in range(BATCH):
            for j in range(BATCH):
                cos[i, j] = (e[i] * e[j]).sum() / ((e[i].norm() + eps) * (e[j].norm() + eps))
        p = (cos + 1) / 2
        return p / p.sum(dim=1, keepdim=True)

    p_s = probabilities(inputs.student_features[-1])
    p_t = probabilities(inputs.teacher_features[-1])
    expected = (p_t * torch.log((p_t + eps) / (p_s + eps))).sum() / BATCH ** 2
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("pair, hint, teacher_index", [
    ("mismatched", 2, 3),  # (32, 8, 8) -> (256, 4, 4): student twice the size (the default layer)
    ("mismatched", 0, 1),  # stem (16, 16, 16) -> (64, 16, 16): same size
    ("tiny", 2, 2),        # (16, 4, 4) -> (64, 2, 2): student twice the size
])
def test_fitnet_matches_reference(pair, hint, teacher_index):
    student, teacher = PAIRS[pair]
    method = build("fitnet", {"hint_layer": hint}, student, teacher)
    conv, bn = method.regressor.conv, method.regressor.bn
    with torch.no_grad():  # non-trivial affine parameters
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    inputs = make_inputs(student, teacher)
    loss = method(inputs)
    fs, ft = inputs.student_features[hint], inputs.teacher_features[teacher_index]
    if fs.shape[-1] == ft.shape[-1]:  # 1x1 conv with bias, written out
        y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], fs) + conv.bias.view(1, -1, 1, 1)
    else:  # 3x3, stride 2, padding 1: every output position sums its 3x3 window of the padded map
        padded = F.pad(fs, (1, 1, 1, 1))
        side = ft.shape[-1]
        y = torch.zeros(fs.shape[0], ft.shape[1], side, side, dtype=fs.dtype)
        for i in range(side):
            for j in range(side):
                window = padded[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                y[:, :, i, j] = torch.einsum("ocuv,bcuv->bo", conv.weight, window) + conv.bias
    y = batch_norm_train(y, bn.weight, bn.bias, bn.eps).relu()
    torch.testing.assert_close(loss, ((y - ft) ** 2).mean())


@pytest.mark.parametrize("student_map, teacher_map, conv_type, kernel, stride, padding", [
    ((16, 8, 8), (32, 8, 8), torch.nn.Conv2d, (1, 1), (1, 1), (0, 0)),                # same size
    ((16, 8, 8), (32, 4, 4), torch.nn.Conv2d, (3, 3), (2, 2), (1, 1)),                # larger: 2x
    ((16, 6, 6), (32, 4, 4), torch.nn.Conv2d, (3, 3), (1, 1), (0, 0)),                # larger: +2
    ((16, 4, 4), (32, 8, 8), torch.nn.ConvTranspose2d, (4, 4), (2, 2), (1, 1)),       # smaller: 1/2
    ((16, 2, 2), (32, 8, 8), torch.nn.ConvTranspose2d, (8, 8), (4, 4), (2, 2)),       # smaller: 1/4
    ((16, 8, 8), (16, 8, 8), torch.nn.Conv2d, (1, 1), (1, 1), (0, 0)),  # same shape: still a regressor
])
def test_fitnet_regressor_is_conv_bn_relu_with_the_spatial_change_inside(
        student_map, teacher_map, conv_type, kernel, stride, padding):
    student = [student_map, (student_map[0],)]
    teacher = [teacher_map, (teacher_map[0],)]
    method = build("fitnet", {"hint_layer": 0}, student, teacher)
    regressor = method.regressor
    assert [type(m) for m in regressor.children()] == [conv_type, torch.nn.BatchNorm2d,
                                                       torch.nn.ReLU]
    conv = regressor.conv
    assert (conv.in_channels, conv.out_channels) == (student_map[0], teacher_map[0])
    assert (conv.kernel_size, conv.stride, conv.padding) == (kernel, stride, padding)
    inputs = make_inputs(student, teacher)
    out = regressor(inputs.student_features[0])
    assert out.shape == (BATCH, *teacher_map)
    assert (out >= 0).all()  # the ReLU ends the regressor
    loss = method(inputs)
    torch.testing.assert_close(loss, ((out - inputs.teacher_features[0]) ** 2).mean())


def test_fitnet_rejects_a_student_map_smaller_by_no_whole_factor():
    student = [(16, 3, 3), (16,)]
    teacher = [(32, 8, 8), (32,)]
    with pytest.raises(ConfigError, match="hint_layer"):
        build("fitnet", {"hint_layer": 0}, student, teacher)


def test_vid_matches_reference():
    method = build("vid")
    inputs = make_inputs()
    loss = method(inputs)
    s, t = inputs.student_features, inputs.teacher_features
    heads = list(method.heads)
    assert len(heads) == 3
    expected = 0.0
    for head, (si, ti) in zip(heads, ((1, 2), (2, 3), (3, 4))):
        fs, ft = s[si], t[ti]
        size = min(fs.shape[-1], ft.shape[-1])
        fs, ft = pool_to(fs, size), pool_to(ft, size)
        convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 3 and all(c.bias is None for c in convs)
        x = fs
        for n, c in enumerate(convs):
            x = torch.einsum("oc,bchw->bohw", c.weight[:, :, 0, 0], x)
            if n < 2:
                x = x.clamp(min=0)
        raw = [p for n, p in head.named_parameters() if p.dim() == 1]
        assert len(raw) == 1
        var = torch.log1p(torch.exp(raw[0])) + 1e-5
        torch.testing.assert_close(var, torch.full_like(var, 5.0))  # init_variance
        var = var.view(1, -1, 1, 1)
        expected = expected + (0.5 * ((x - ft) ** 2 / var + torch.log(var))).mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("kernel", ["gaussian", "bilinear"])
def test_cc_matches_reference(kernel):
    method = build("cc", {"kernel": kernel, "embed_dim": 16})
    linears = [m for m in method.modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(m.in_features for m in linears) == [64, 256]
    assert all(m.out_features == 16 for m in linears)
    inputs = make_inputs()
    loss = method(inputs)

    def correlation(e, linear):
        z = e @ linear.weight.T + linear.bias
        z = z / z.norm(dim=1, keepdim=True)
        sim = z @ z.T
        if kernel == "bilinear":
            return sim
        g = 0.4
        return math.exp(-2 * g) * (1 + 2 * g * sim + (2 * g * sim) ** 2 / 2)

    lin_s = next(m for m in linears if m.in_features == 64)
    lin_t = next(m for m in linears if m.in_features == 256)
    c_s = correlation(inputs.student_features[-1], lin_s)
    c_t = correlation(inputs.teacher_features[-1], lin_t)
    torch.testing.assert_close(loss, ((c_s - c_t) ** 2).sum() / BATCH ** 2)


def test_cc_high_order_approaches_gaussian_kernel():
    """With many Taylor terms the correlation is the exact RBF kernel of the unit embeddings."""
    method = build("cc", {"order": 12, "gamma": 0.4})
    z = F.normalize(torch.randn(5, 7, dtype=torch.float64), dim=1)
    exact = torch.exp(-0.4 * torch.cdist(z, z) ** 2)
    torch.testing.assert_close(method._correlation(z), exact, atol=1e-9, rtol=0)


# --------------------------------------------------------------------------- gradients, shapes


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_loss_finite_and_gradients_reach_student_and_parameters(name, pair):
    student, teacher = PAIRS[pair]
    method = build(name, None, student, teacher)
    inputs = make_inputs(student, teacher)
    loss = method(inputs)
    assert loss.shape == ()
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [f.grad for f in inputs.student_features if f.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
    for pname, param in method.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname
    assert all(f.grad is None for f in inputs.teacher_features)


def test_parameters_built_for_mismatched_pair():
    fitnet = build("fitnet")
    assert fitnet.regressor.conv.weight.shape == (256, 32, 3, 3)
    vid = build("vid")
    assert [h.regressor[0].weight.shape[:2] for h in vid.heads] == [(128, 16), (256, 32), (256, 64)]
    for name in ("at", "sp", "rkd", "pkt"):
        assert list(build(name).parameters()) == []


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_small_batch_and_float32(name):
    method = build_method(name, make_context(TINY_STUDENT, TINY_TEACHER), None)
    inputs = make_inputs(TINY_STUDENT, TINY_TEACHER, batch=2, dtype=torch.float32)
    loss = method(inputs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_deterministic_given_seed(name):
    inputs = make_inputs()
    a, b = build(name, seed=3), build(name, seed=3)
    torch.testing.assert_close(a(inputs), b(inputs), rtol=0, atol=0)


def test_identical_features_give_zero_relational_losses():
    student, teacher = [(8, 4, 4), (16,)], [(8, 4, 4), (16,)]
    inputs = make_inputs(student, teacher)
    inputs.teacher_features = [f.detach().clone() for f in inputs.student_features]
    for name in ("at", "sp", "rkd", "pkt"):
        assert abs(build(name, None, student, teacher)(inputs).item()) < 1e-12, name


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("name", METHODS_A)
def test_unknown_option_rejected(name):
    with pytest.raises(ConfigError, match="no_such_option"):
        build_method(name, make_context(), {"no_such_option": 1})


@pytest.mark.parametrize("name, options", [
    ("fitnet", {"hint_layer": 4}),    # the embedding is not a map
    ("fitnet", {"hint_layer": -1}),
    ("fitnet", {"hint_layer": "2"}),
    ("at", {"p": 0}),
    ("cc", {"kernel": "polynomial"}),
    ("cc", {"embed_dim": 0}),
    ("cc", {"order": -1}),
    ("cc", {"form": "RepDistiller"}),
    ("vid", {"init_variance": 0.0}),
    ("vid", {"eps": -1.0}),
    ("rkd", {"angle_weight": -1}),
    ("pkt", {"eps": 0}),
])
def test_bad_option_values_rejected(name, options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        build_method(name, make_context(), options)


@pytest.mark.parametrize("name", ("sp", "cc", "rkd", "pkt"))
def test_relational_losses_stay_float32_under_autocast(name):
    method = build_method(name, make_context(), None)
    inputs = make_inputs(dtype=torch.float32)
    plain = method(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method(inputs)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=1e-3, atol=0)
