"""Similarity-preserving KD (Tung & Mori, "Similarity-Preserving Knowledge Distillation",
ICCV 2019).

Matches the batch similarity (Gram) matrices of the last intermediate stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mgkd.methods.base import DistillMethod, MethodInputs, register


def _similarity(feature: torch.Tensor) -> torch.Tensor:
    """Row-L2-normalised batch Gram matrix (B, B) of the flattened activations."""
    flat = feature.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


@register
class SP(DistillMethod):
    """||G_t − G_s||_F² / B² on the deepest feature map of each network.

    Each network's Gram is B×B whatever its channels or spatial size, so no adaptation is needed.
    """

    name = "sp"

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        # The last feature is the pooled embedding; the one before it is the deepest map.
        student = inputs.student_features[-2]
        teacher = inputs.teacher_features[-2]
        batch = student.shape[0]
        # The B×B relations are cheap but differ by tiny amounts: keep them out of bf16/fp16.
        dtype = torch.promote_types(student.dtype, torch.float32)
        with torch.autocast(student.device.type, enabled=False):
            diff = _similarity(teacher.to(dtype)) - _similarity(student.to(dtype))
            return diff.pow(2).sum() / (batch * batch)
