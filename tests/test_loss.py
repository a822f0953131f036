"""The loss is the README's formula ("The loss"): checked term by term against hand-written maths."""
import math

import pytest
import torch
import torch.nn.functional as F

from mgkd.distill.loss import LossWeights, compose_loss


def kl_by_hand(target_logits, student_logits, t):
    """T^2 * mean_b sum_c p_c (log p_c - log q_c), with softmax written out."""
    def softmax(z):
        e = torch.exp(z / t - (z / t).max(dim=1, keepdim=True).values)
        return e / e.sum(dim=1, keepdim=True)
    p, q = softmax(target_logits.double()), softmax(student_logits.double())
    return (t * t) * (p * (p.log() - q.log())).sum(dim=1).mean()


def ce_by_hand(logits, y):
    logits = logits.double()
    log_z = torch.logsumexp(logits, dim=1)
    return (log_z - logits[torch.arange(len(y)), y]).mean()


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    return {
        "student_logits": r(5, 6), "teacher_logits": r(5, 6) * 2,
        "targets": torch.tensor([0, 3, 5, 1, 2]), "method_loss": torch.tensor(0.37, dtype=torch.float64),
        "student_codes": [r(5, 3), r(5, 7)], "teacher_codes": [r(5, 3), r(5, 7)],
        "decoder_logits": [r(5, 6), r(5, 6)],
    }


def weights(mode):
    levels = mode != "plain"  # as LossWeights.from_config makes them: plain has no levels
    return LossWeights(stable_target=mode == "mas", ce=0.3, logit=0.9, feature=2.5,
                       temperature=4.0, level_temperatures=(2.0, 8.0) if levels else (),
                       level_weights=(1.0, 0.25) if levels else ())


def expected(t, mode):
    target = t["teacher_logits"]
    if mode == "mas":
        target = (t["teacher_logits"] + t["decoder_logits"][0] + t["decoder_logits"][1]) / 3
    ce = 0.3 * ce_by_hand(t["student_logits"], t["targets"])
    logit = 0.9 * kl_by_hand(target, t["student_logits"], 4.0)
    feature = 2.5 * 0.37
    gran = 0.0
    if mode != "plain":
        gran = (1.0 * kl_by_hand(t["teacher_codes"][0], t["student_codes"][0], 2.0)
                + 0.25 * kl_by_hand(t["teacher_codes"][1], t["student_codes"][1], 8.0))
    return {"loss_ce": ce, "loss_logit": logit, "loss_feature": feature, "loss_granularity": gran,
            "loss": ce + logit + feature + gran}


def compose(w, t, **extra_base):
    """compose_loss with the classification base term (CE of the student's logits)."""
    args = {k: v for k, v in t.items() if k != "targets"}
    base = {"ce": F.cross_entropy(t["student_logits"], t["targets"]), **extra_base}
    return compose_loss(w, base=base, **args)


@pytest.mark.parametrize("mode", ["plain", "mag", "mas"])
def test_terms_match_the_formula(tensors, mode):
    terms = compose(weights(mode), tensors)
    want = expected(tensors, mode)
    for name, value in want.items():
        assert math.isclose(float(terms[name]), float(value), rel_tol=1e-9, abs_tol=1e-12), name


def test_mas_target_differs_from_mag(tensors):
    mag = compose(weights("mag"), tensors)
    mas = compose(weights("mas"), tensors)
    assert float(mag["loss_granularity"]) == pytest.approx(float(mas["loss_granularity"]))
    assert float(mag["loss_logit"]) != pytest.approx(float(mas["loss_logit"]))


def test_zero_weights_give_zero_terms_with_the_same_names(tensors):
    w = LossWeights(stable_target=False, ce=1.0, logit=0.0, feature=0.0, temperature=4.0,
                    level_temperatures=(), level_weights=())
    terms = compose(w, tensors)
    assert set(terms) == {"loss", "loss_ce", "loss_logit", "loss_feature", "loss_granularity"}
    assert float(terms["loss_logit"]) == 0.0 and float(terms["loss_granularity"]) == 0.0
    assert float(terms["loss"]) == pytest.approx(float(ce_by_hand(tensors["student_logits"],
                                                                   tensors["targets"])))


def test_a_reid_base_adds_its_triplet_term_unweighted_by_ce_weight(tensors):
    plain = compose(weights("mag"), tensors)
    triplet = torch.tensor(0.7, dtype=torch.float64)
    reid = compose(weights("mag"), tensors, triplet=triplet)
    assert float(reid["loss_triplet"]) == pytest.approx(0.7)
    assert float(reid["loss_ce"]) == pytest.approx(float(plain["loss_ce"]))
    assert float(reid["loss"]) == pytest.approx(float(plain["loss"]) + 0.7)
