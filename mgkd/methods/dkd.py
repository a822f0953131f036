"""Decoupled Knowledge Distillation (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022).

Logit-based: the classical KD loss is split into a target-class part (TCKD, the binary
target/non-target distribution) and a non-target part (NCKD, the distribution over the
non-target classes only), which are then weighted independently:

    L = min((epoch + 1) / warmup_epochs, 1) · (α · TCKD + β · NCKD)

Both parts are temperature-softened KL divergences scaled by T² and averaged over the batch,
as in the authors' code (megvii-research/mdistiller). Everything is computed in log space, so
a teacher that is certain of the target class (p_target → 1) cannot produce log(0).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from mgkd.errors import ConfigError
from mgkd.methods.base import TEACHER_LOGITS, DistillMethod, MethodContext, MethodInputs, register

def _binary_and_rest_log_probs(logits: torch.Tensor, target_mask: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the binary (target, non-target) split, (B, 2), and the log-softmax
    over the non-target classes, (B, K) (entries at the target class are meaningless)."""
    lse_all = torch.logsumexp(logits, dim=1, keepdim=True)
    lse_rest = torch.logsumexp(logits.masked_fill(target_mask, float("-inf")), dim=1, keepdim=True)
    log_p_target = logits.masked_fill(~target_mask, 0.0).sum(dim=1, keepdim=True) - lse_all
    log_p_rest = lse_rest - lse_all  # log(1 - p_target), computed without cancellation
    return torch.cat([log_p_target, log_p_rest], dim=1), logits - lse_rest


def dkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each T² · KL(teacher ‖ student) averaged over the batch."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float32, or float64
    s = student_logits.to(dtype) / temperature
    t = teacher_logits.to(dtype) / temperature
    target_mask = torch.zeros_like(s, dtype=torch.bool).scatter_(1, targets.view(-1, 1), True)
    s_binary, s_rest = _binary_and_rest_log_probs(s, target_mask)
    t_binary, t_rest = _binary_and_rest_log_probs(t, target_mask)
    batch = s.shape[0]
    tckd = (t_binary.exp() * (t_binary - s_binary)).sum() / batch
    # The target column of the non-target distributions is masked out before exp / subtraction:
    # there t_rest can be huge (exp overflows) and a masked inf would turn the gradient into NaN.
    t_rest_prob = t_rest.masked_fill(target_mask, float("-inf")).exp()
    nckd = (t_rest_prob * (t_rest - s_rest).masked_fill(target_mask, 0.0)).sum() / batch
    scale = temperature ** 2
    return tckd * scale, nckd * scale


@register
class DKD(DistillMethod):
    """Decoupled KD: α·TCKD + β·NCKD on the logits, linearly warmed up.

    Options: ``alpha`` (TCKD weight, 1.0), ``beta`` (NCKD weight, 8.0; pair defaults in
    ``mgkd.catalog.methods``),
    ``warmup_fraction`` (share of the epoch budget the loss ramps up over, 20/240 as in
    mdistiller's 20 of 240 epochs), ``temperature`` (None → the config's T).

    The default ``feature_weight`` (its catalog entry) is 1.0: mdistiller has no separate
    weight, the strength lives in α and β (its CE weight is 1.0 and there is no extra logit-KD
    term).
    """

    name: ClassVar[str] = "dkd"
    # reads the teacher's logits only
    teacher_outputs: ClassVar[frozenset[str]] = frozenset({TEACHER_LOGITS})

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        self.alpha = float(self.options["alpha"])
        self.beta = float(self.options["beta"])
        temperature = self.options["temperature"]
        self.temperature = float(context.temperature if temperature is None else temperature)
        fraction = float(self.options["warmup_fraction"])
        if self.temperature <= 0:
            raise ConfigError(f"method_options.temperature: must be > 0, got {self.temperature}.")
        if fraction < 0:
            raise ConfigError(f"method_options.warmup_fraction: must be >= 0, got {fraction}.")
        self.warmup_epochs = fraction * context.epochs

    def warmup_factor(self, epoch: int) -> float:
        """min((epoch + 1) / warmup_epochs, 1) for the 0-based main-stage epoch (a Python float)."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min((epoch + 1) / self.warmup_epochs, 1.0)

    def step_constants(self, epoch: int) -> tuple:
        return (self.warmup_factor(epoch),)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        tckd, nckd = dkd_parts(inputs.student_logits, inputs.teacher_logits, inputs.targets,
                               self.temperature)
        return self.warmup_factor(inputs.epoch) * (self.alpha * tckd + self.beta * nckd)
