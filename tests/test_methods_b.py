"""KD methods ab, ft, fsp, nst, crd: losses against independent computations, gradients, init
stages, CRD's memory bank, odd teacher/student shape pairs and option validation."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError
from mgkd.methods import MethodContext, MethodInputs, build_method, get_method

NAMES = ("ab", "ft", "fsp", "nst", "crd")
B = 4

# Same stage count, different widths (CIFAR-ResNet-like at 16x16 input).
SAME = ([(8, 16, 16), (8, 16, 16), (16, 8, 8), (32, 4, 4), (32,)],
        [(16, 16, 16), (16, 16, 16), (32, 8, 8), (64, 4, 4), (64,)])
# The brief's pair: different stage counts and widths, the teacher's deepest map 1x1.
MIXED = ([(16, 16, 16), (16, 16, 16), (32, 8, 8), (64, 4, 4), (64,)],
         [(32, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (256, 1, 1), (256,)])
# 16x16 inputs through deeper nets: 2x2 and 1x1 maps on both sides, student with more stages.
TINY = ([(8, 16, 16), (8, 8, 8), (16, 4, 4), (16, 2, 2), (32, 1, 1), (32,)],
        [(16, 8, 8), (32, 4, 4), (48, 2, 2), (48, 1, 1), (48,)])
PAIRS = {"same": SAME, "mixed": MIXED, "tiny": TINY}


def make_context(shapes, n_data: int = 200, epochs: int = 240) -> MethodContext:
    s_shapes, t_shapes = shapes
    return MethodContext(student_shapes=list(s_shapes), teacher_shapes=list(t_shapes),
                         num_classes=10, num_train_samples=n_data, epochs=epochs,
                         temperature=4.0)


def make_inputs(shapes, seed: int = 0, n_data: int = 200, batch: int = B) -> MethodInputs:
    """Student features are leaves with grad; teacher features are post-ReLU, without grad."""
    s_shapes, t_shapes = shapes
    gen = torch.Generator().manual_seed(seed)
    student = [torch.randn(batch, *s, generator=gen).relu().requires_grad_() for s in s_shapes]
    teacher = [torch.randn(batch, *t, generator=gen).relu() for t in t_shapes]
    return MethodInputs(student_features=student, teacher_features=teacher,
                        student_logits=torch.randn(batch, 10, generator=gen),
                        teacher_logits=torch.randn(batch, 10, generator=gen),
                        targets=torch.randint(0, 10, (batch,), generator=gen),
                        indices=torch.randperm(n_data, generator=gen)[:batch], epoch=0)


def build(name: str, shapes=SAME, options=None, seed: int = 0, **context_kw):
    torch.manual_seed(seed)
    return build_method(name, make_context(shapes, **context_kw), options or {})


def pool_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Reference average pooling to (h, w) for sizes that divide evenly."""
    b, c, hh, ww = x.shape
    return x.reshape(b, c, h, hh // h, w, ww // w).mean(dim=(3, 5))


# ----------------------------------------------------------------------------- class attributes

@pytest.mark.parametrize("name,beta,init,trains_student", [
    ("ab", 1.0, True, True), ("ft", 200.0, True, False), ("fsp", 50.0, True, True),
    ("nst", 50.0, False, False), ("crd", 0.8, False, False)])
def test_registration_and_defaults(name, beta, init, trains_student):
    cls = get_method(name)
    assert cls.name == name
    assert cls.defaults.feature_weight == beta
    assert cls.defaults.ce_weight == 1.0 and cls.defaults.logit_weight == 0.0
    assert cls.has_init_stage is init
    assert cls.init_trains_student is trains_student
    if init:
        assert cls.defaults.options["init_fraction"] == pytest.approx(0.125)
        assert build(name, epochs=240).init_epochs() == 30
        assert build(name, epochs=8).init_epochs() == 1
        assert build(name, options={"init_fraction": 0.5}, epochs=10).init_epochs() == 5


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_rejected(name):
    with pytest.raises(ConfigError, match="no_such_option"):
        build(name, options={"no_such_option": 1})


@pytest.mark.parametrize("name,options", [
    ("ab", {"margin": 0.0}), ("ab", {"init_fraction": 2.0}), ("ft", {"rate": 0.0}),
    ("ft", {"factor": "nope"}), ("fsp", {"init_fraction": -0.1}), ("nst", {"num_stages": -1}),
    ("crd", {"nce_t": 0.0}), ("crd", {"nce_m": 1.0}), ("crd", {"feat_dim": 0}),
    ("crd", {"nce_k": 1.5})])
def test_bad_option_values_rejected(name, options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        build(name, options=options)


# ----------------------------------------------------------------------------- reference values

def test_nst_matches_reference():
    method = build("nst", SAME)
    inputs = make_inputs(SAME, seed=1)
    assert method.pairs == [(1, 1), (2, 2), (3, 3)]  # stage outputs, not the stem

    def kernel_mean(a, b):  # degree-2 polynomial kernel over channel pairs, averaged
        return (torch.einsum("bin,bjn->bij", a, b) ** 2).mean()

    expected = torch.zeros(())
    for i in (1, 2, 3):
        s = inputs.student_features[i].detach().flatten(2)
        t = inputs.teacher_features[i].flatten(2)
        s = s / s.norm(dim=2, keepdim=True).clamp_min(1e-12)
        t = t / t.norm(dim=2, keepdim=True).clamp_min(1e-12)
        expected += kernel_mean(s, s) + kernel_mean(t, t) - 2 * kernel_mean(s, t)
    assert torch.allclose(method(inputs), expected, rtol=1e-5, atol=1e-6)


def test_nst_num_stages_and_pooling():
    method = build("nst", MIXED, {"num_stages": 1})
    assert method.pairs == [(3, 4)]
    method = build("nst", MIXED, {"num_stages": 2})
    inputs = make_inputs(MIXED, seed=2)
    s = inputs.student_features[2].detach()  # (32, 8, 8) vs teacher (256, 4, 4): pool student
    t = inputs.teacher_features[3]
    s = pool_to(s, 4, 4).flatten(2)
    t = t.flatten(2)
    s, t = s / s.norm(dim=2, keepdim=True), t / t.norm(dim=2, keepdim=True)
    k = lambda a, b: (torch.einsum("bin,bjn->bij", a, b) ** 2).mean()  # noqa: E731
    # At 1x1 the normalised channels are 1 (active) or 0: the stage's value is a constant.
    s1 = (inputs.student_features[3].detach().mean(dim=(2, 3)) > 0).float()
    t1 = (inputs.teacher_features[4].flatten(1) > 0).float()
    deep = ((s1[:, :, None] * s1[:, None, :]).mean() + (t1[:, :, None] * t1[:, None, :]).mean()
            - 2 * (s1[:, :, None] * t1[:, None, :]).mean())
    expected = k(s, s) + k(t, t) - 2 * k(s, t) + deep
    assert torch.allclose(method(inputs), expected, rtol=1e-5, atol=1e-6)


def test_fsp_matches_reference_with_adapters():
    method = build("fsp", MIXED)
    inputs = make_inputs(MIXED, seed=3)
    pairs = [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert method.pairs == pairs
    # Reference: real 1x1 convs on the student maps, then the Gram of consecutive maps.
    s_maps = []
    for k, (si, ti) in enumerate(pairs):
        x = inputs.student_features[si].detach()
        if str(k) in method.adapters:
            weight = method.adapters[str(k)].weight.detach()
            x = F.conv2d(x, weight[:, :, None, None])
        s_maps.append(x)
    t_maps = [inputs.teacher_features[ti] for _, ti in pairs]

    def gram(bottom, top):
        h, w = min(bottom.shape[2], top.shape[2]), min(bottom.shape[3], top.shape[3])
        bottom, top = pool_to(bottom, h, w), pool_to(top, h, w)
        return torch.einsum("bihw,bjhw->bij", top, bottom) / (h * w)

    expected = sum(((gram(s_maps[k], s_maps[k + 1]) - gram(t_maps[k], t_maps[k + 1])) ** 2).mean()
                   for k in range(3))
    assert set(method.adapters) == {"0", "1", "2", "3"}  # every width differs in this pair
    assert torch.allclose(method(inputs), expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(method.init_loss(inputs), expected, rtol=1e-4, atol=1e-6)


def test_fsp_no_adapters_when_widths_match():
    shapes = ([(8, 8, 8), (16, 4, 4), (16,)], [(8, 8, 8), (16, 2, 2), (16,)])
    method = build("fsp", shapes)
    assert len(method.adapters) == 0
    inputs = make_inputs(shapes, seed=4)
    s0, s1 = inputs.student_features[0].detach(), inputs.student_features[1].detach()
    t0, t1 = inputs.teacher_features[0], inputs.teacher_features[1]
    gs = torch.einsum("bihw,bjhw->bij", s1, pool_to(s0, 4, 4)) / 16
    gt = torch.einsum("bihw,bjhw->bij", t1, pool_to(t0, 2, 2)) / 4
    assert torch.allclose(method(inputs), ((gs - gt) ** 2).mean(), rtol=1e-5)


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_matches_reference(margin):
    method = build("ab", MIXED, {"margin": margin})
    inputs = make_inputs(MIXED, seed=5)
    assert method.pairs == [(1, 2), (2, 3), (3, 4)]
    expected = torch.zeros(())
    for k, (si, ti) in enumerate(method.pairs):
        t = inputs.teacher_features[ti]
        s = inputs.student_features[si].detach()
        s = pool_to(s, t.shape[2], t.shape[3]) if s.shape[2] > t.shape[2] else s
        s = method.connectors[k](s).detach()
        # Teacher active: student should exceed +margin; inactive: stay below -margin.
        per_elem = torch.where(t > 0, F.relu(margin - s) ** 2, F.relu(s + margin) ** 2)
        weight = 0.5 ** (len(method.pairs) - 1 - k)
        expected += weight * per_elem.sum() / B * 3 / 1000
    assert torch.allclose(method(inputs), expected, rtol=1e-5)
    assert torch.allclose(method.init_loss(inputs), expected, rtol=1e-5)


def test_ab_connector_is_1x1_conv_bn():
    method = build("ab", SAME)
    conv, bn = method.connectors[0]
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == 16


@pytest.mark.parametrize("form", ["flat", "channel_mean"])
def test_ft_factor_loss_matches_reference(form):
    method = build("ft", SAME, {"factor": form})
    inputs = make_inputs(SAME, seed=6)
    assert (method.s_index, method.t_index) == (3, 3)
    with torch.no_grad():
        fs = method.translator(inputs.student_features[3])
        ft = method.paraphraser.encoder(inputs.teacher_features[3])
    assert fs.shape == ft.shape == (B, 32, 4, 4)  # rate 0.5 of the teacher's 64 channels
    if form == "channel_mean":
        fs, ft = (fs ** 2).mean(1), (ft ** 2).mean(1)
    fs, ft = fs.reshape(B, -1), ft.reshape(B, -1)
    fs, ft = fs / fs.norm(dim=1, keepdim=True), ft / ft.norm(dim=1, keepdim=True)
    expected = (fs - ft).abs().mean()
    assert torch.allclose(method(inputs), expected, rtol=1e-5)


def test_ft_pools_to_smaller_map_and_init_loss_reference():
    method = build("ft", MIXED)
    inputs = make_inputs(MIXED, seed=7)
    assert (method.s_index, method.t_index) == (3, 4)
    with torch.no_grad():
        fs = method.translator(inputs.student_features[3]).mean(dim=(2, 3))  # 4x4 -> 1x1
        ft = method.paraphraser.encoder(inputs.teacher_features[4]).flatten(1)
        t = inputs.teacher_features[4]
        rec = method.paraphraser.decoder(method.paraphraser.encoder(t))
    fs, ft = fs / fs.norm(dim=1, keepdim=True), ft / ft.norm(dim=1, keepdim=True)
    assert torch.allclose(method(inputs), (fs - ft).abs().mean(), rtol=1e-5)
    assert torch.allclose(method.init_loss(inputs), ((rec - t) ** 2).mean(), rtol=1e-5)


# ----------------------------------------------------------------------------- gradients

def main_stage_params(method) -> list[torch.nn.Parameter]:
    """The auxiliary parameters the main stage trains (ft's paraphraser is frozen then)."""
    if method.name == "ft":
        return list(method.translator.parameters())
    return list(method.parameters())


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_every_pair(name, pair):
    shapes = PAIRS[pair]
    method = build(name, shapes)
    method.train()
    inputs = make_inputs(shapes, seed=8)
    loss = method(inputs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [f.grad for f in inputs.student_features if f.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    assert all(torch.isfinite(g).all() for g in grads)
    params = main_stage_params(method)
    if name == "nst" or (name == "fsp" and len(method.adapters) == 0):
        assert not params
    else:
        assert params
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all()
        assert sum(p.grad.abs().sum() for p in params) > 0
    assert all(t.grad is None for t in inputs.teacher_features)


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("name", ["ab", "ft", "fsp"])
def test_init_stage(name, pair):
    shapes = PAIRS[pair]
    method = build(name, shapes)
    method.train()
    inputs = make_inputs(shapes, seed=9)
    loss = method.init_loss(inputs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    params = list(method.init_parameters())
    if name == "fsp" and len(method.adapters) == 0:
        assert not params
    else:
        assert params and all(p.grad is not None for p in params)
        assert sum(p.grad.abs().sum() for p in params) > 0
    student_grad = [f.grad for f in inputs.student_features if f.grad is not None]
    if method.init_trains_student:
        assert sum(g.abs().sum() for g in student_grad) > 0
    else:  # ft: the paraphraser learns to reconstruct the teacher map; the student is not involved
        assert not student_grad
        assert all(p.grad is None for p in method.translator.parameters())


def test_ft_paraphraser_gets_no_gradient_in_main_stage():
    method = build("ft", MIXED)
    inputs = make_inputs(MIXED, seed=10)
    method(inputs).backward()
    assert all(p.grad is None for p in method.paraphraser.parameters())
    assert set(map(id, method.init_parameters())) == set(map(id, method.paraphraser.parameters()))


def test_fsp_mixed_gradients_reach_every_adapter():
    method = build("fsp", MIXED)
    method(make_inputs(MIXED, seed=11)).backward()
    for adapter in method.adapters.values():
        assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- crd

def test_crd_loss_matches_reference():
    n_data, k = 50, 8
    method = build("crd", SAME, {"nce_k": k, "feat_dim": 16}, n_data=n_data)
    method.eval()
    inputs = make_inputs(SAME, seed=12, n_data=n_data)
    mem_s, mem_t = method.memory_s.clone(), method.memory_t.clone()
    torch.manual_seed(123)
    loss = method(inputs)
    # Reference: replay the negative draw, then a softmax over (positive, negatives) per direction.
    torch.manual_seed(123)
    pos = inputs.indices[:, None]
    neg = torch.randint(0, n_data - 1, (B, k))
    neg = neg + (neg >= pos).long()
    assert not (neg == pos).any()
    idx = torch.cat([pos, neg], 1)
    with torch.no_grad():
        e_s = method.embed_s.linear(inputs.student_features[-1])
        e_t = method.embed_t.linear(inputs.teacher_features[-1])
    e_s, e_t = e_s / e_s.norm(dim=1, keepdim=True), e_t / e_t.norm(dim=1, keepdim=True)
    expected = torch.zeros(())
    for anchor, memory in ((e_s, mem_t), (e_t, mem_s)):
        logits = (memory[idx] * anchor[:, None, :]).sum(-1) / 0.07
        expected += (torch.logsumexp(logits, 1) - logits[:, 0]).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)
    # eval mode: the memory is left alone
    assert torch.equal(method.memory_s, mem_s) and torch.equal(method.memory_t, mem_t)


def test_crd_memory_buffers_update_in_train_mode():
    n_data = 64
    method = build("crd", MIXED, {"nce_k": 16, "feat_dim": 8, "nce_m": 0.5}, n_data=n_data)
    names = {name for name, _ in method.named_buffers()}
    assert {"memory_s", "memory_t"} <= names
    assert method.memory_s.shape == method.memory_t.shape == (n_data, 8)
    assert {"memory_s", "memory_t"} <= set(method.state_dict())
    method.train()
    inputs = make_inputs(MIXED, seed=13, n_data=n_data)
    before_s, before_t = method.memory_s.clone(), method.memory_t.clone()
    loss = method(inputs)
    loss.backward()  # the update must not break the backward pass
    idx = inputs.indices
    with torch.no_grad():
        e_s = F.normalize(method.embed_s.linear(inputs.student_features[-1]), dim=1)
    expected = F.normalize(0.5 * before_s[idx] + 0.5 * e_s, dim=1)
    assert torch.allclose(method.memory_s[idx], expected, atol=1e-6)
    assert not torch.equal(method.memory_t[idx], before_t[idx])
    others = torch.ones(n_data, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(method.memory_s[others], before_s[others])
    assert torch.allclose(method.memory_s[idx].norm(dim=1), torch.ones(B))


@pytest.mark.parametrize("whole_bank", [True, False])
def test_crd_both_scoring_paths_agree_and_backprop(whole_bank, monkeypatch):
    results = []
    for path in (whole_bank, not whole_bank):
        monkeypatch.setattr(get_method("crd"), "_score_whole_bank", lambda self, b, n: path)
        method = build("crd", SAME, {"nce_k": 10, "feat_dim": 8}, seed=1, n_data=30)
        method.train()
        inputs = make_inputs(SAME, seed=14, n_data=30)
        torch.manual_seed(5)
        loss = method(inputs)
        loss.backward()
        results.append((loss.detach(), inputs.student_features[-1].grad, method.memory_t.clone()))
    (l1, g1, m1), (l2, g2, m2) = results
    assert torch.allclose(l1, l2, rtol=1e-5)
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)
    assert torch.allclose(m1, m2, atol=1e-6)


def test_crd_nce_k_capped_for_small_split(caplog):
    with caplog.at_level(logging.INFO, logger="mgkd.methods.crd"):
        method = build("crd", SAME, n_data=6)
    assert method.nce_k == 5
    assert any("capped" in r.getMessage() for r in caplog.records)
    inputs = make_inputs(SAME, seed=15, n_data=6)
    loss = method(inputs)
    assert torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ConfigError, match="2 training samples"):
        build("crd", SAME, n_data=1)


def test_crd_state_dict_round_trip_gives_same_next_loss():
    opts = {"nce_k": 12, "feat_dim": 8}
    first = build("crd", MIXED, opts, seed=0, n_data=40)
    first.train()
    first(make_inputs(MIXED, seed=16, n_data=40))  # move the memory away from its init
    state = {k: v.clone() for k, v in first.state_dict().items()}
    second = build("crd", MIXED, opts, seed=99, n_data=40)  # different init everywhere
    second.load_state_dict(state)
    second.train()
    inputs = make_inputs(MIXED, seed=17, n_data=40)
    torch.manual_seed(3)
    loss_a = first(inputs)
    torch.manual_seed(3)
    loss_b = second(inputs)
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(first.memory_s, second.memory_s)


def test_crd_construction_is_deterministic():
    a = build("crd", SAME, {"feat_dim": 8}, seed=21, n_data=20)
    b = build("crd", SAME, {"feat_dim": 8}, seed=21, n_data=20)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    bound = 1.0 / (8 / 3) ** 0.5
    assert a.memory_s.abs().max() <= bound


def test_crd_default_nce_k_with_large_split():
    method = build("crd", SAME, n_data=20000)
    assert method.nce_k == 16384 and method.memory_t.shape == (20000, 128)


@pytest.mark.parametrize("name", NAMES)
def test_losses_stay_fp32_under_bf16_autocast(name):
    method = build(name, MIXED)
    method.eval()  # no CRD memory update, fixed BN statistics: both calls see the same state
    inputs = make_inputs(MIXED, seed=18)
    torch.manual_seed(0)
    reference = method(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        loss = method(inputs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    if name in ("nst", "fsp"):  # all of their maths runs with autocast off
        assert torch.allclose(loss, reference, rtol=1e-6)
