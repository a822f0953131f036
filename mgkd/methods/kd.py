"""Vanilla knowledge distillation (Hinton et al., "Distilling the Knowledge in a Neural Network",
2015).

The method is the logit term itself, which ``mgkd.distill.loss`` composes
(``logit_weight · T² · KL``), so this module contributes no feature loss and owns no parameters.
"""
from __future__ import annotations

import torch

from mgkd.methods.base import TEACHER_LOGITS, DistillMethod, MethodInputs, register


@register
class KD(DistillMethod):
    """Logits only: the feature term is always zero."""

    name = "kd"
    # reads the teacher's logits only
    teacher_outputs = frozenset({TEACHER_LOGITS})

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        return inputs.student_logits.new_zeros(())
