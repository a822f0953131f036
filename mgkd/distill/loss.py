"""The distillation loss (the README's "The loss"), composed from its terms.

    L = ce · CE(s, y) + logit · T² · KL(softmax(target/T) ‖ softmax(s/T)) + feature · L_method
        + Σ_k w_k · T_k² · KL(softmax(t_enc_k/T_k) ‖ softmax(s_enc_k/T_k))

``target`` is the teacher's logits, or in mode ``mas`` the mean of the teacher's logits and its
heads' decoder logits (the stable excitation). Every term is returned (already weighted) so each
can be logged under the same name in every trial.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mgkd.catalog.methods import MODES, method_defaults
from mgkd.config import ExperimentConfig
from mgkd.methods.common import soft_kl

# Every term a distillation step reports (also when its weight is 0), besides the task's extra ones.
COMPONENTS = ("loss_ce", "loss_logit", "loss_feature", "loss_granularity")


@dataclass(frozen=True)
class LossWeights:
    """The loss's weights. ``stable_target``: the logit term's target is the mean of the
    teacher's and its heads' decoder logits (mode mas); the level terms are those of the
    config's granularity levels (none in plain)."""

    stable_target: bool
    ce: float
    logit: float
    feature: float
    temperature: float
    level_temperatures: tuple[float, ...]
    level_weights: tuple[float, ...]

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> "LossWeights":
        """From a resolved config (``mgkd.config.resolve``: no ``None`` weight left)."""
        if config.ce_weight is None or config.logit_weight is None or config.feature_weight is None:
            raise ValueError("LossWeights.from_config needs a resolved config "
                             "(mgkd.config.resolve)")
        uses_feature = method_defaults(config.method).uses_feature_weight
        return cls(stable_target=MODES[config.mode].stable_target, ce=float(config.ce_weight),
                   logit=float(config.logit_weight),
                   feature=float(config.feature_weight) if uses_feature else 0.0,
                   temperature=config.temperature,
                   level_temperatures=tuple(g.temperature for g in config.granularities),
                   level_weights=tuple(g.weight for g in config.granularities))


def logit_target(stable_target: bool, teacher_logits: torch.Tensor,
                 decoder_logits: list[torch.Tensor]) -> torch.Tensor:
    """The logit-KD target: teacher logits, or with the stable target (mas) their mean with the
    heads' decoder logits."""
    if stable_target and decoder_logits:
        return torch.stack([teacher_logits, *decoder_logits]).mean(dim=0)
    return teacher_logits


def compose_loss(weights: LossWeights, *, student_logits: torch.Tensor,
                 teacher_logits: torch.Tensor, base: dict[str, torch.Tensor],
                 method_loss: torch.Tensor, student_codes: list[torch.Tensor],
                 teacher_codes: list[torch.Tensor],
                 decoder_logits: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """All weighted terms and their sum under ``"loss"``. ``base`` holds the task's supervised
    terms: ``ce`` (weighted by ``ce_weight``) and, for re-ID, ``triplet`` (weight 1, the usual
    re-ID base), each logged as ``loss_<name>``."""
    zero = student_logits.new_zeros(())
    terms = {name: zero for name in COMPONENTS}
    if weights.ce:
        terms["loss_ce"] = weights.ce * base["ce"]
    for name, value in base.items():
        if name != "ce":
            terms[f"loss_{name}"] = value
    if weights.logit:
        target = logit_target(weights.stable_target, teacher_logits, decoder_logits)
        terms["loss_logit"] = weights.logit * soft_kl(student_logits, target, weights.temperature)
    if weights.feature:
        terms["loss_feature"] = weights.feature * method_loss
    if weights.level_weights:
        granularity = zero
        for s_code, t_code, temp, weight in zip(student_codes, teacher_codes,
                                                weights.level_temperatures, weights.level_weights):
            granularity = granularity + weight * soft_kl(s_code, t_code, temp)
        terms["loss_granularity"] = granularity
    terms["loss"] = sum(terms.values())
    return terms
