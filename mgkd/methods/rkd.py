"""Relational knowledge distillation (Park et al., "Relational Knowledge Distillation", CVPR 2019).

Matches the distance and angle relations among the samples of a batch in embedding space.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError
from mgkd.methods.base import (TEACHER_EMBEDDING, TEACHER_LOGITS, DistillMethod,
                               MethodContext, MethodInputs, register)


def _distances(embedding: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances (B, B), zero diagonal, divided by the mean off-diagonal distance."""
    batch = embedding.shape[0]
    squared = embedding.pow(2).sum(dim=1)
    gram = embedding @ embedding.t()
    # Clamping keeps sqrt's gradient finite for coincident points; the diagonal is zeroed after.
    distance = (squared.unsqueeze(1) + squared.unsqueeze(0) - 2 * gram).clamp(min=eps).sqrt()
    distance = distance * (1 - torch.eye(batch, device=embedding.device, dtype=embedding.dtype))
    # Every off-diagonal entry is >= sqrt(eps) > 0, so this equals the mean of the positive
    # distances (RepDistiller's d[d > 0].mean()) without a data-dependent mask (a host sync).
    return distance / (distance.sum() / max(batch * (batch - 1), 1)).clamp(min=eps)


def _angles(embedding: torch.Tensor) -> torch.Tensor:
    """cos of the angle e_j − e_i − e_k at every anchor i: (B, B, B), flattened."""
    directions = F.normalize(embedding.unsqueeze(0) - embedding.unsqueeze(1), dim=2)
    return (directions @ directions.transpose(1, 2)).flatten()


@register
class RKD(DistillMethod):
    """``distance_weight`` · Huber(distance relations) + ``angle_weight`` · Huber(angle relations)
    on the pooled embeddings (no projection: each network's relations are B×B or B×B×B)."""

    name = "rkd"
    # reads the teacher's pooled embedding (teacher_features[-1]) only, never its maps
    teacher_outputs = frozenset({TEACHER_LOGITS, TEACHER_EMBEDDING})

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        for key in ("distance_weight", "angle_weight"):
            value = self.options[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"method_options.{key}: {value!r} must be a number >= 0.")
        self.distance_weight = float(self.options["distance_weight"])
        self.angle_weight = float(self.options["angle_weight"])

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        student = inputs.student_features[-1].flatten(1)
        teacher = inputs.teacher_features[-1].flatten(1)
        # The relations (B×B distances, B×B×B cosines) run in at least float32, even under
        # autocast: the squared-norm expansion of the distances cancels badly in bf16/fp16.
        dtype = torch.promote_types(student.dtype, torch.float32)
        with torch.autocast(student.device.type, enabled=False):
            student, teacher = student.to(dtype), teacher.to(dtype)
            loss = student.new_zeros(())
            if self.distance_weight:
                loss = loss + self.distance_weight * F.smooth_l1_loss(_distances(student),
                                                                      _distances(teacher))
            if self.angle_weight:
                loss = loss + self.angle_weight * F.smooth_l1_loss(_angles(student),
                                                                   _angles(teacher))
            return loss
