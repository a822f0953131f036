"""Tests for the kdsvd, afd and dkd distillation methods."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError
from mgkd.methods import METHODS, MethodContext, MethodInputs, build_method
from mgkd.methods.afd import AFD
from mgkd.methods.common import soft_kl
from mgkd.methods.dkd import DKD, dkd_parts
from mgkd.methods.kdsvd import KDSVD, top_right_singular_vectors

# A heterogeneous pair: different widths, spatial sizes and number of stages.
STUDENT_SHAPES = [(16, 16, 16), (16, 16, 16), (32, 8, 8), (64, 4, 4), (64,)]
TEACHER_SHAPES = [(32, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (256, 1, 1), (256,)]
# Tiny maps, as from 16x16 inputs: the deepest stages are 2x2 and 1x1.
SMALL_STUDENT = [(8, 4, 4), (8, 4, 4), (16, 2, 2), (32, 1, 1), (32,)]
SMALL_TEACHER = [(16, 4, 4), (16, 4, 4), (32, 2, 2), (64, 1, 1), (64,)]
NUM_CLASSES = 10


def make_context(student_shapes=STUDENT_SHAPES, teacher_shapes=TEACHER_SHAPES, *, epochs=240,
                 temperature=4.0, teacher="", student="") -> MethodContext:
    return MethodContext(student_shapes=list(student_shapes), teacher_shapes=list(teacher_shapes),
                         num_classes=NUM_CLASSES, num_train_samples=100, epochs=epochs,
                         temperature=temperature, teacher=teacher, student=student)


def random_features(shapes, batch: int, generator: torch.Generator, requires_grad: bool
                    ) -> list[torch.Tensor]:
    feats = [torch.randn(batch, *shape, generator=generator).relu() for shape in shapes]
    return [f.requires_grad_(requires_grad) for f in feats]


def make_inputs(student_shapes=STUDENT_SHAPES, teacher_shapes=TEACHER_SHAPES, *, batch=4, seed=0,
                epoch=0, student_features=None) -> MethodInputs:
    gen = torch.Generator().manual_seed(seed)
    s_feats = student_features or random_features(student_shapes, batch, gen, True)
    t_feats = random_features(teacher_shapes, batch, gen, False)
    return MethodInputs(
        student_features=s_feats, teacher_features=t_feats,
        student_logits=torch.randn(batch, NUM_CLASSES, generator=gen, requires_grad=True),
        teacher_logits=torch.randn(batch, NUM_CLASSES, generator=gen) * 3,
        targets=torch.randint(0, NUM_CLASSES, (batch,), generator=gen),
        indices=torch.arange(batch), epoch=epoch)


def backward_grads(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor | None]:
    loss.backward()
    return [t.grad for t in tensors]


# ---------------------------------------------------------------- all three


@pytest.mark.parametrize("name", ["kdsvd", "afd", "dkd"])
def test_contract(name: str) -> None:
    cls = METHODS[name]
    assert cls.name == name
    assert cls.defaults.ce_weight == 1.0 and cls.defaults.logit_weight == 0.0
    assert cls.defaults.feature_weight > 0
    method = build_method(name, make_context(), {})
    assert set(method.options) == set(cls.defaults.options)


@pytest.mark.parametrize("name", ["kdsvd", "afd", "dkd"])
def test_unknown_option_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        build_method(name, make_context(), {"no_such_option": 1})


@pytest.mark.parametrize("name", ["kdsvd", "afd", "dkd"])
@pytest.mark.parametrize("shapes", [(STUDENT_SHAPES, TEACHER_SHAPES), (SMALL_STUDENT, SMALL_TEACHER)],
                         ids=["hetero", "tiny"])
def test_heterogeneous_pair_finite_and_deterministic(name: str, shapes) -> None:
    torch.manual_seed(0)
    method = build_method(name, make_context(*shapes), {})
    inputs = make_inputs(*shapes, epoch=50)
    first = method(inputs)
    second = method(inputs)
    assert first.dim() == 0 and torch.isfinite(first)
    torch.testing.assert_close(first, second)
    first.backward()
    grads = [t.grad for t in inputs.student_features + [inputs.student_logits]]
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------- dkd


def reference_dkd(s_logits: torch.Tensor, t_logits: torch.Tensor, targets: torch.Tensor,
                  temperature: float) -> tuple[float, float]:
    """TCKD and NCKD with plain probabilities, sample by sample."""
    tckd = nckd = 0.0
    batch = s_logits.shape[0]
    for i in range(batch):
        p_s = torch.softmax(s_logits[i].double() / temperature, 0)
        p_t = torch.softmax(t_logits[i].double() / temperature, 0)
        y = int(targets[i])
        b_s = torch.stack([p_s[y], 1 - p_s[y]])
        b_t = torch.stack([p_t[y], 1 - p_t[y]])
        tckd += float((b_t * (b_t / b_s).log()).sum())
        keep = torch.arange(p_s.numel()) != y
        q_s = p_s[keep] / p_s[keep].sum()
        q_t = p_t[keep] / p_t[keep].sum()
        nckd += float((q_t * (q_t / q_s).log()).sum())
    scale = temperature ** 2 / batch
    return tckd * scale, nckd * scale


def fixed_logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = torch.tensor([[2.0, -1.0, 0.5, 0.0, 1.5], [0.1, 0.2, 0.3, -0.4, 3.0],
                      [-2.0, 1.0, 0.0, 4.0, -1.0]])
    t = torch.tensor([[5.0, -2.0, 1.0, 0.0, 2.0], [1.0, 0.0, -1.0, 0.5, 6.0],
                      [0.0, 2.0, 1.0, 3.0, -3.0]])
    return s, t, torch.tensor([0, 4, 1])


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_parts_match_plain_softmax(temperature: float) -> None:
    s, t, y = fixed_logits()
    tckd, nckd = dkd_parts(s, t, y, temperature)
    ref_tckd, ref_nckd = reference_dkd(s, t, y, temperature)
    assert float(tckd) == pytest.approx(ref_tckd, rel=1e-5, abs=1e-7)
    assert float(nckd) == pytest.approx(ref_nckd, rel=1e-5, abs=1e-7)


def test_dkd_parts_recombine_to_classical_kd() -> None:
    # Per sample, KD = TCKD + (1 - p_target^teacher) · NCKD (the paper's Eq. 1).
    s, t, y = fixed_logits()
    temperature = 4.0
    for i in range(s.shape[0]):
        tckd, nckd = dkd_parts(s[i:i + 1], t[i:i + 1], y[i:i + 1], temperature)
        p_target = torch.softmax(t[i] / temperature, 0)[y[i]]
        kd = soft_kl(s[i:i + 1], t[i:i + 1], temperature)
        torch.testing.assert_close(tckd + (1 - p_target) * nckd, kd, rtol=1e-5, atol=1e-6)


def test_dkd_forward_weights_alpha_beta_and_temperature_option() -> None:
    s, t, y = fixed_logits()
    method = DKD(make_context(temperature=4.0), {"alpha": 0.5, "beta": 3.0, "temperature": 2.0})
    inputs = MethodInputs([], [], s, t, y, torch.arange(3), epoch=1000)
    ref_tckd, ref_nckd = reference_dkd(s, t, y, 2.0)
    assert float(method(inputs)) == pytest.approx(0.5 * ref_tckd + 3.0 * ref_nckd, rel=1e-5)
    assert DKD(make_context(temperature=3.0), {}).temperature == 3.0


@pytest.mark.parametrize("epochs,epoch,factor", [
    (240, 0, 1 / 20), (240, 9, 10 / 20), (240, 19, 1.0), (240, 200, 1.0), (24, 0, 0.5), (24, 1, 1.0)])
def test_dkd_warmup_scaling(epochs: int, epoch: int, factor: float) -> None:
    s, t, y = fixed_logits()
    method = DKD(make_context(epochs=epochs), {})
    assert method.warmup_factor(epoch) == pytest.approx(factor)
    warm = method(MethodInputs([], [], s, t, y, torch.arange(3), epoch=epoch))
    full = method(MethodInputs([], [], s, t, y, torch.arange(3), epoch=10 * epochs))
    assert float(warm) == pytest.approx(factor * float(full), rel=1e-6)


def test_dkd_no_warmup() -> None:
    assert DKD(make_context(), {"warmup_fraction": 0.0}).warmup_factor(0) == 1.0


@pytest.mark.parametrize("teacher,student,beta", [
    ("resnet56", "resnet20", 2.0), ("wrn_40_2", "wrn_16_2", 6.0), ("vgg13", "vgg8", 6.0),
    ("resnet32x4", "resnet8x4", 8.0), ("", "", 8.0)])
def test_dkd_pair_default_beta(teacher: str, student: str, beta: float) -> None:
    method = DKD(make_context(teacher=teacher, student=student), {})
    assert method.beta == beta
    # An explicit option wins over the pair default.
    assert DKD(make_context(teacher=teacher, student=student), {"beta": 1.5}).beta == 1.5


def test_dkd_confident_teacher_is_finite() -> None:
    s = torch.tensor([[0.0, 1.0, -1.0], [30.0, -30.0, 0.0]], requires_grad=True)
    t = torch.tensor([[1e4, 0.0, -1e4], [-5e3, 5e3, 0.0]])
    tckd, nckd = dkd_parts(s, t, torch.tensor([0, 1]), 1.0)
    (tckd + nckd).backward()
    assert torch.isfinite(tckd) and torch.isfinite(nckd) and torch.isfinite(s.grad).all()


# ---------------------------------------------------------------- kdsvd


def test_kdsvd_pairs_skip_single_position_stages() -> None:
    method = KDSVD(make_context(), {})
    # Deepest-first pairing of the stages (stems left out); the 4x4 <-> 1x1 pair is skipped.
    assert [(s, t) for s, t, _ in method.pairs] == [(1, 2), (2, 3)]
    assert [hw for _, _, hw in method.pairs] == [(8, 8), (4, 4)]


@pytest.mark.parametrize("shapes", [(STUDENT_SHAPES, TEACHER_SHAPES), (SMALL_STUDENT, SMALL_TEACHER)],
                         ids=["hetero", "tiny"])
def test_kdsvd_finite_nonzero_gradients(shapes) -> None:
    method = KDSVD(make_context(*shapes), {})
    inputs = make_inputs(*shapes)
    loss = method(inputs)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for s_index, _, _ in method.pairs:
        grad = inputs.student_features[s_index].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("fill", ["constant", "zero"])
def test_kdsvd_repeated_singular_values(fill: str) -> None:
    # A constant map has rank 1 (all other singular values repeated zeros), a zero map has
    # only zeros: PyTorch's SVD backward yields NaN for both.
    shapes = (SMALL_STUDENT, SMALL_TEACHER)
    value = 0.7 if fill == "constant" else 0.0
    s_feats = [torch.full((3, *shape), value, requires_grad=True) for shape in SMALL_STUDENT]
    method = KDSVD(make_context(*shapes), {"k": 2})
    loss = method(make_inputs(*shapes, batch=3, student_features=s_feats))
    assert torch.isfinite(loss)
    loss.backward()
    grads = [s_feats[i].grad for i, _, _ in method.pairs]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if fill == "constant":
        assert sum(g.abs().sum() for g in grads) > 0


def test_kdsvd_single_and_no_usable_stage() -> None:
    one = ([(8, 4, 4), (8, 4, 4), (8, 1, 1), (8,)], [(8, 4, 4), (8, 4, 4), (8, 1, 1), (8,)])
    method = KDSVD(make_context(*one), {})
    assert len(method.pairs) == 1  # relation within the one stage
    inputs = make_inputs(*one)
    loss = method(inputs)
    loss.backward()
    assert torch.isfinite(loss) and inputs.student_features[1].grad.abs().sum() > 0

    none = ([(8, 1, 1), (8, 1, 1), (8,)], [(8, 1, 1), (8, 1, 1), (8,)])
    method = KDSVD(make_context(*none), {})
    assert method.pairs == [] and float(method(make_inputs(*none))) == 0.0


def test_kdsvd_identical_features_give_zero_loss() -> None:
    shapes = [(8, 8, 8), (16, 8, 8), (32, 4, 4), (32,)]
    method = KDSVD(make_context(shapes, shapes), {"k": 2})
    inputs = make_inputs(shapes, shapes)
    inputs.student_features = [f.clone() for f in inputs.teacher_features]
    assert float(method(inputs)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("channels,positions,k", [(5, 9, 2), (9, 5, 2), (4, 16, 1)])
def test_kdsvd_custom_backward_matches_autograd(channels: int, positions: int, k: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, channels, positions, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, positions, positions, generator=gen, dtype=torch.float64)

    def sign_free(v: torch.Tensor) -> torch.Tensor:  # depends on v only through v vᵀ
        return sum((i + 1) * ((v[..., i:i + 1] @ v[..., i:i + 1].mT) * weight).sum()
                   for i in range(k))

    ours, = torch.autograd.grad(sign_free(top_right_singular_vectors(x, k)[0]), x)
    vh = torch.linalg.svd(x, full_matrices=False)[2]
    reference, = torch.autograd.grad(sign_free(vh.mT[..., :k]), x)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-6)


def test_kdsvd_bad_option_values() -> None:
    with pytest.raises(ConfigError):
        KDSVD(make_context(), {"k": 0})
    with pytest.raises(ConfigError):
        KDSVD(make_context(), {"rbf_width": 0.0})


# ---------------------------------------------------------------- afd


def test_afd_selects_stages_and_attention_sums_to_one() -> None:
    torch.manual_seed(0)
    method = AFD(make_context(), {"qk_dim": 16})
    # Stems and the 1x1 teacher stage are left out.
    assert method.student_index == [1, 2, 3] and method.teacher_index == [1, 2, 3]
    inputs = make_inputs()
    weights = method.attention([inputs.student_features[i] for i in method.student_index],
                               [inputs.teacher_features[i] for i in method.teacher_index])
    assert weights.shape == (4, 3, 3) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(4, 3))


def test_afd_gradients_reach_students_and_every_parameter() -> None:
    torch.manual_seed(0)
    method = AFD(make_context(), {})
    inputs = make_inputs()
    loss = method(inputs)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for i in method.student_index:
        grad = inputs.student_features[i].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    for name, param in method.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_afd_distance_matches_hand_computation() -> None:
    # One stage each: the single attention weight is 1 and the loss is the plain distance.
    shapes_s = [(4, 4, 4), (6, 4, 4), (6,)]
    shapes_t = [(4, 8, 8), (10, 2, 2), (10,)]
    method = AFD(make_context(shapes_s, shapes_t), {"qk_dim": 8})
    inputs = make_inputs(shapes_s, shapes_t)
    s_map = F.adaptive_avg_pool2d(inputs.student_features[1].pow(2).mean(1, keepdim=True), (2, 2))
    t_map = inputs.teacher_features[1].pow(2).mean(1)
    expected = (F.normalize(s_map.flatten(1), dim=1)
                - F.normalize(t_map.flatten(1), dim=1)).pow(2).mean(1).mean()
    torch.testing.assert_close(method(inputs), expected)


def test_afd_batch_of_one_in_training() -> None:
    method = AFD(make_context(), {"qk_dim": 8}).train()
    loss = method(make_inputs(batch=1))
    assert torch.isfinite(loss)


def test_afd_bad_qk_dim() -> None:
    with pytest.raises(ConfigError):
        AFD(make_context(), {"qk_dim": 0})
    assert math.isclose(AFD.defaults.feature_weight, 200.0)
