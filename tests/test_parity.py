"""Parity with the published formulas: each method's loss on small fixed tensors against a value
worked out by hand from the paper's formula (the derivation is in the comments; no other codebase's
code was run to get them). A change to a formula fails here."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mgkd.distill.loss import LossWeights, compose_loss
from mgkd.methods import MethodContext, MethodInputs, build_method
from mgkd.methods.common import soft_kl


def context(student_shapes, teacher_shapes) -> MethodContext:
    return MethodContext(student_shapes=list(student_shapes), teacher_shapes=list(teacher_shapes),
                         num_classes=2, num_train_samples=8, epochs=10, temperature=4.0)


def inputs(student_features, teacher_features) -> MethodInputs:
    def tensors(features):
        return [f if torch.is_tensor(f) else torch.tensor(f, dtype=torch.float64) for f in features]

    student_features, teacher_features = tensors(student_features), tensors(teacher_features)
    batch = student_features[0].shape[0]
    return MethodInputs(
        student_features=student_features, teacher_features=teacher_features,
        student_logits=torch.zeros(batch, 2, dtype=torch.float64),
        teacher_logits=torch.zeros(batch, 2, dtype=torch.float64),
        targets=torch.zeros(batch, dtype=torch.int64), indices=torch.arange(batch), epoch=0)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_kd_hinton():
    # T = 2. Sample 1: teacher logits [2 ln 3, 0] -> softmax(t/T) = [3/4, 1/4]; student [0, 0] ->
    # [1/2, 1/2]. KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120; sample 2 agrees (KL 0).
    # batchmean and T² = 4: 4 · 0.1308120 / 2 = 0.2616241.
    student = t([[0.0, 0.0], [0.0, 0.0]])
    teacher = t([[2 * math.log(3), 0.0], [0.0, 0.0]])
    assert soft_kl(student, teacher, 2.0).item() == pytest.approx(0.26162407, abs=1e-7)
    # With the paper's kd weights: 0.2 · CE + 0.8 · KD. CE of [0, 0] is ln 2 for either label:
    # 0.2 · 0.6931472 + 0.8 · 0.2616241 = 0.3479287.
    weights = LossWeights(stable_target=False, ce=0.2, logit=0.8, feature=0.0, temperature=2.0,
                          level_temperatures=(), level_weights=())
    base = {"ce": F.cross_entropy(student, torch.tensor([0, 1]))}
    terms = compose_loss(weights, student_logits=student, teacher_logits=teacher, base=base,
                         method_loss=torch.zeros(()),
                         student_codes=[], teacher_codes=[], decoder_logits=[])
    assert terms["loss"].item() == pytest.approx(0.34792869, abs=1e-7)


def test_at_zagoruyko():
    # Attention map Q = vec(mean_c |A_c|^2), normalised: L = mean over positions of (Q_s/|Q_s| -
    # Q_t/|Q_t|)^2. Student channels [[1,1],[1,1]] and [[1,-1],[1,-1]]: mean of squares 1 everywhere
    # -> [1/2, 1/2, 1/2, 1/2]. Teacher [[2,0],[0,0]] and zeros: [2, 0, 0, 0] -> [1, 0, 0, 0].
    # Differences [-1/2, 1/2, 1/2, 1/2]: mean of squares 1/4.
    shapes = [(2, 2, 2), (2, 2, 2), (2,)]
    method = build_method("at", context(shapes, shapes), None).double()
    student = [[[[1.0, 1.0], [1.0, 1.0]], [[1.0, -1.0], [1.0, -1.0]]]]
    teacher = [[[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]]
    loss = method(inputs([student, student, [[1.0, 1.0]]], [teacher, teacher, [[1.0, 1.0]]]))
    assert loss.item() == pytest.approx(0.25, abs=1e-12)  # the stem pair is left out


def test_sp_tung_mori():
    # G = row-normalised F Fᵀ, L = ||G_t - G_s||_F² / B². Student rows [1,0], [0,1]: G_s = I.
    # Teacher rows [1,0,0], [1,0,0]: F Fᵀ = all ones, G_t = all 1/√2.
    # ||·||² = 2 (1 - 1/√2)² + 2 · 1/2 = 4 - 2√2; / 4 = 1 - 1/√2 = 0.2928932.
    method = build_method("sp", context([(2, 1, 1), (2,)], [(3, 1, 1), (3,)]), None).double()
    student_map = t([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)
    teacher_map = t([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).view(2, 3, 1, 1)
    loss = method(inputs([student_map, t([[1.0, 0.0], [0.0, 1.0]])],
                         [teacher_map, t([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])]))
    assert loss.item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-12)


RKD_TEACHER = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]  # a right isosceles triangle
RKD_STUDENT = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]  # three points on a line


@pytest.mark.parametrize("distance_weight, angle_weight, expected", [
    # Distance: d / mean off-diagonal d, Huber (δ 1) averaged over the B² entries.
    # Teacher: ab = ac = 1, bc = √2, mean (2 + √2)/3 -> 0.8786797, 0.8786797, 1.2426407.
    # Student: ab = bc = 1, ac = 2, mean 4/3 -> 0.75, 1.5, 0.75 (ab, ac, bc).
    # Differences -0.1286797, 0.6213203, -0.4926407, each twice, all |d| < 1 (½d²):
    # Σ d² / 9 = (0.0165585 + 0.3860390 + 0.2426948) / 9 = 0.0716991.
    (1.0, 0.0, 0.0716991411),
    # Angle: cos ∠(x_j - x_i, x_k - x_i) at every anchor i, Huber averaged over B³ entries.
    # Anchor a: student 1 vs teacher 0 for (b,c) and (c,b): Huber(1) = 0.5 each.
    # Anchor b: teacher cos((-1,0), (-1,1)/√2) = 1/√2, student -1: |d| = 1.7071 -> 1.2071068 each.
    # Anchor c: teacher cos((0,-1), (1,-1)/√2) = 1/√2, student 1: d = 0.2928932 -> 0.0428932 each.
    # The other entries agree (cos 1 with itself, 0 with the anchor). Σ = 1 + 2.4142136 +
    # 0.0857864 = 3.5; / 27 = 0.1296296.
    (0.0, 1.0, 3.5 / 27),
    # The defaults: 25 · distance + 50 · angle.
    (25.0, 50.0, 25 * 0.0716991411 + 50 * 3.5 / 27),
])
def test_rkd_park(distance_weight, angle_weight, expected):
    method = build_method("rkd", context([(2,)], [(2,)]),
                          {"distance_weight": distance_weight, "angle_weight": angle_weight})
    loss = method.double()(inputs([RKD_STUDENT], [RKD_TEACHER]))
    assert loss.item() == pytest.approx(expected, abs=1e-8)


def test_pkt_passalis():
    # P[i,j] = (cos(e_i, e_j) + 1)/2, rows normalised; L = mean_ij p_t log(p_t / p_s).
    # Student e = [1,0], [0,1]: kernel [[1, .5], [.5, 1]] -> P_s = [[2/3, 1/3], [1/3, 2/3]].
    # Teacher e = [1,0], [-1,0]: kernel [[1, 0], [0, 1]] -> P_t = I.
    # L = (ln(3/2) + ln(3/2)) / 4 = 0.2027326.
    method = build_method("pkt", context([(2,)], [(2,)]), {"eps": 1e-12}).double()
    loss = method(inputs([[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 0.0], [-1.0, 0.0]]]))
    assert loss.item() == pytest.approx(math.log(1.5) / 2, abs=1e-9)


def test_nst_huang_wang():
    # Each channel's map (H·W = 2) L2-normalised; MMD² with k(x, y) = (xᵀy)²:
    # mean_ij k(t_i, t_j) + mean_ij k(s_i, s_j) - 2 mean_ij k(s_i, t_j).
    # Student channels [1, 0], [0, 1]; teacher one channel [3, 3] -> [1, 1]/√2.
    # k(t, t) = 1; k(s, s) = [[1, 0], [0, 1]] -> mean 1/2; k(s_i, t) = (1/√2)² = 1/2 each -> 1/2.
    # MMD² = 1 + 1/2 - 2 · 1/2 = 1/2.
    s_shapes, t_shapes = [(2, 2, 1), (2, 2, 1), (2,)], [(1, 2, 1), (1, 2, 1), (1,)]
    method = build_method("nst", context(s_shapes, t_shapes), None).double()
    student = t([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 2, 1)
    teacher = t([[3.0, 3.0]]).view(1, 1, 2, 1)
    loss = method(inputs([student, student, [[1.0, 1.0]]], [teacher, teacher, [[1.0]]]))
    assert loss.item() == pytest.approx(0.5, abs=1e-6)  # NST computes in float32


def test_vid_ahn():
    # -log q(t | s) per element (constant dropped): log σ + (t - μ(s))² / (2σ²) = ½(log σ² +
    # (t - μ)²/σ²), averaged. μ = w3·relu(w2·relu(w1·s)) with w1 = 2, w2 = 1, w3 = 0.5: μ(1) = 1,
    # μ(-1) = 0. σ² = 2 (init_variance). Teacher [3, 1]: (t - μ)² = [4, 1].
    # ½(4/2 + ln 2) = 1.3465736, ½(1/2 + ln 2) = 0.5965736; mean 0.9715736.
    shapes = [(1, 1, 2), (1, 1, 2), (1,)]
    method = build_method("vid", context(shapes, shapes), {"init_variance": 2.0, "eps": 1e-5})
    method = method.double()
    (head,) = method.heads
    with torch.no_grad():
        for conv, weight in zip((head.regressor[0], head.regressor[2], head.regressor[4]),
                                (2.0, 1.0, 0.5)):
            conv.weight.fill_(weight)
    student = t([1.0, -1.0]).view(1, 1, 1, 2)
    teacher = t([3.0, 1.0]).view(1, 1, 1, 2)
    loss = method(inputs([student, student, [[1.0]]], [teacher, teacher, [[1.0]]]))
    assert loss.item() == pytest.approx(0.5 * (2 + math.log(2)) / 2 + 0.5 * (0.5 + math.log(2)) / 2,
                                        abs=1e-8)  # σ² = softplus(raw) + eps, raw from fp32


def test_fitnet_romero():
    # Regressor r(s) = ReLU(BN(conv1x1(s))), L = mean (r(s) - t)². conv weight 1, bias 0; BN in
    # training mode (batch statistics, eps 1e-5, γ 1, β 0). Student values over the batch 1, 3, 5, 7:
    # mean 4, variance 5 -> (-3, -1, 1, 3)/√5.00001 -> ReLU: 0, 0, 0.4472131, 1.3416394.
    # Teacher 0, 0, 1, 1: squares 0, 0, 0.3055734, 0.1167178; mean 0.1055727.
    shapes = [(1, 1, 2), (1,)]
    method = build_method("fitnet", context(shapes, shapes), {"hint_layer": 0}).double()
    with torch.no_grad():
        method.regressor.conv.weight.fill_(1.0)
        method.regressor.conv.bias.zero_()
    student = t([[1.0, 3.0], [5.0, 7.0]]).view(2, 1, 1, 2)
    teacher = t([[0.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    loss = method(inputs([student, t([[1.0], [1.0]])], [teacher, t([[1.0], [1.0]])]))
    root = math.sqrt(5 + 1e-5)
    expected = ((1 / root - 1) ** 2 + (3 / root - 1) ** 2) / 4
    assert expected == pytest.approx(0.1055727, abs=1e-6)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


# ---- RepDistiller forms (method_options.form: repdistiller; ft: factor: channel_mean) -------------
def test_cc_repdistiller_form():
    # Linear embeddings (identity here), Δ = |e_s − e_t|, L = mean_i Σ_d Δ_i,d Δ_i+1,d.
    # Student rows [1,2], [3,0], [2,5]; teacher [1,0], [1,1], [0,2] -> Δ = [0,2], [2,1], [2,3].
    # Neighbours: 0·2 + 2·1 = 2 and 2·2 + 1·3 = 7; mean 4.5.
    from mgkd.config import default_config

    method = build_method("cc", context([(2,)], [(2,)]), {"form": "repdistiller", "embed_dim": 2})
    method = method.double()
    with torch.no_grad():
        for embed in (method.embed_student, method.embed_teacher):
            embed.weight.copy_(torch.eye(2))
            embed.bias.zero_()
    loss = method(inputs([[[1.0, 2.0], [3.0, 0.0], [2.0, 5.0]]],
                         [[[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]]))
    assert loss.item() == pytest.approx(4.5, abs=1e-12)
    # RepDistiller's β for its CC is 0.02; the paper form keeps 2000.
    assert default_config("resnet20", "resnet8", "digits", method="cc",
                          method_options={"form": "repdistiller"}).feature_weight == 0.02
    assert default_config("resnet20", "resnet8", "digits", method="cc").feature_weight == 2000.0


def _kdsvd_expected(same_sign: bool) -> float:
    # Teacher stage vectors (over channels) a·e0 and b·e0; the student's, aligned to them, a·q1 and
    # b·q2 with q1 = [0.8, 0.6], q2 = [0.96, 0.28]. With ab = ±1:
    # L = Σ_mn (exp(−(b q2_m − a q1_n)²/8) − exp(−(b e0_m − a e0_n)²/8))² (batch 1).
    ab = 1.0 if same_sign else -1.0
    q1, q2, e0 = (0.8, 0.6), (0.96, 0.28), (1.0, 0.0)
    return sum((math.exp(-(q2[m] - ab * q1[n]) ** 2 / 8) - math.exp(-(e0[m] - ab * e0[n]) ** 2 / 8))
               ** 2 for m in range(2) for n in range(2))


def test_kdsvd_repdistiller_form():
    # Each stage map read as an (H·W, C) matrix; its top right singular vector lives over channels.
    # Teacher stages: channels over positions [2,0] / [0,1] and [3,0] / [0,1]: top vector ±e0.
    # Student stages are rank one, p·qᵀ with p = [1, 0]: top vectors ±q1, ±q2 (the other singular
    # vector, orthogonal, has a smaller |cos| with e0, so alignment picks q and the teacher's sign).
    shapes = [(2, 1, 2), (2, 1, 2), (2, 1, 2), (2,)]
    method = build_method("kdsvd", context(shapes, shapes), {"form": "repdistiller"}).double()
    t1 = t([[2.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    t2 = t([[3.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    s1 = t([[0.8, 0.0], [0.6, 0.0]]).view(1, 2, 1, 2)
    s2 = t([[0.96, 0.0], [0.28, 0.0]]).view(1, 2, 1, 2)
    loss = method(inputs([s1, s1, s2, [[1.0, 1.0]]], [t1, t1, t2, [[1.0, 1.0]]]))
    # The sign of a singular vector is the SVD routine's choice: read it off the teacher's matrices.
    signs = [torch.linalg.svd(m.flatten(2).transpose(1, 2))[2][0, 0, 0].sign().item() for m in (t1, t2)]
    expected = _kdsvd_expected(signs[0] == signs[1])
    assert expected > 1e-4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Vectors over channels need equal channel counts at every paired stage.
    with pytest.raises(Exception, match="form: paper"):
        build_method("kdsvd", context(shapes, [(4, 1, 2), (4, 1, 2), (4, 1, 2), (4,)]),
                     {"form": "repdistiller"})


@pytest.mark.parametrize("name", ["ab", "fsp"])
def test_ab_and_fsp_repdistiller_form_drops_the_term_after_init(name):
    shapes = [(1, 1, 2), (1, 1, 2), (1,)]
    features = [t([1.0, 2.0]).view(1, 1, 1, 2), t([3.0, 4.0]).view(1, 1, 1, 2), [[1.0]]]
    teacher = [t([1.0, 1.0]).view(1, 1, 1, 2), t([2.0, 2.0]).view(1, 1, 1, 2), [[1.0]]]
    torch.manual_seed(0)
    paper = build_method(name, context(shapes, shapes), None).double()
    torch.manual_seed(0)
    repdistiller = build_method(name, context(shapes, shapes), {"form": "repdistiller"}).double()
    batch = inputs(features, teacher)
    assert repdistiller(batch).item() == 0.0  # the main stage: no transfer term
    assert repdistiller.init_loss(batch).item() == pytest.approx(paper(batch).item(), abs=1e-12)
    assert paper.init_loss(batch).item() == pytest.approx(paper(batch).item(), abs=1e-12)
    if name == "fsp":
        # G = mean over positions of top·bottom: student (1·3 + 2·4)/2 = 5.5, teacher (2 + 2)/2 = 2;
        # L = (5.5 − 2)² = 12.25.
        assert paper(batch).item() == pytest.approx(12.25, abs=1e-12)


@pytest.mark.parametrize("factor, expected", [
    # RepDistiller's factor: normalise(mean_c f²) per sample, L = mean |F_s − F_t|.
    # Student channels [1,0], [1,0] -> [1, 0]; teacher [1,1], [1,1] -> [1,1]/√2.
    # |diff| = [1 − 1/√2, 1/√2]: mean 1/2.
    ("channel_mean", 0.5),
    # Kim et al.'s: normalise the whole flattened factor. Student [1,0,1,0]/√2, teacher [1,1,1,1]/2:
    # |diff| = [0.2071, 0.5, 0.2071, 0.5]: mean √2/4.
    ("flat", math.sqrt(2) / 4),
])
def test_ft_factor_forms(factor, expected):
    from mgkd.methods.ft import factor_loss

    student = t([[1.0, 0.0], [1.0, 0.0]]).view(1, 2, 1, 2)
    teacher = t([[1.0, 1.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    assert factor_loss(student, teacher, factor).item() == pytest.approx(expected, abs=1e-7)
