"""Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017).

Matches the spatial attention maps of paired stages.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, register
from mgkd.methods.common import match_spatial, stage_pairs


def _attention(feature: torch.Tensor, p: float) -> torch.Tensor:
    """Mean of |f|^p over channels, flattened and L2-normalised: (B, H·W)."""
    return F.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


@register
class AT(DistillMethod):
    """Sum over stage pairs of the mean squared difference of normalised attention maps.

    Like RepDistiller (``feat[1:-1]``) the stem is left out: the stage outputs are paired from the
    deepest backwards, and the larger map of a pair is average-pooled to the smaller one's size.
    """

    name = "at"

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        p = self.options["p"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or p <= 0:
            raise ConfigError(f"method_options.p: {p!r} must be a positive number.")
        self.p = float(p)
        pairs = stage_pairs(context.student_shapes, context.teacher_shapes)
        # Drop the pair holding a stem (index 0) unless nothing else is left.
        self.pairs = [pair for pair in pairs if 0 not in pair] or pairs

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        loss = inputs.student_logits.new_zeros(())
        for s_index, t_index in self.pairs:
            student = inputs.student_features[s_index]
            teacher = inputs.teacher_features[t_index]
            hw = (min(student.shape[-2], teacher.shape[-2]),
                  min(student.shape[-1], teacher.shape[-1]))
            student = match_spatial(student, hw)
            teacher = match_spatial(teacher, hw)
            diff = _attention(student, self.p) - _attention(teacher, self.p)
            loss = loss + diff.pow(2).mean()
        return loss
