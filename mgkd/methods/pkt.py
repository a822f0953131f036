"""Probabilistic knowledge transfer (Passalis & Tefas, "Learning Deep Representations with
Probabilistic Knowledge Transfer", ECCV 2018).

Matches the conditional probability distributions that cosine similarities induce over a batch.
"""
from __future__ import annotations

from typing import Any

import torch

from mgkd.errors import ConfigError
from mgkd.methods.base import (TEACHER_EMBEDDING, TEACHER_LOGITS, DistillMethod,
                               MethodContext, MethodInputs, register)


def _conditional_probabilities(embedding: torch.Tensor, eps: float) -> torch.Tensor:
    """P[i, j] ∝ (cos(e_i, e_j) + 1) / 2, each row summing to one."""
    unit = embedding / (embedding.norm(dim=1, keepdim=True) + eps)
    unit = torch.where(torch.isnan(unit), torch.zeros_like(unit), unit)
    similarity = (unit @ unit.t() + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


@register
class PKT(DistillMethod):
    """KL(P_teacher ‖ P_student) of the cosine-similarity conditional probabilities of the pooled
    embeddings, averaged over the B² entries (as the authors' code); ``eps`` guards the norms and
    the logarithm."""

    name = "pkt"
    # reads the teacher's pooled embedding (teacher_features[-1]) only, never its maps
    teacher_outputs = frozenset({TEACHER_LOGITS, TEACHER_EMBEDDING})

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        eps = self.options["eps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise ConfigError(f"method_options.eps: {eps!r} must be a positive number.")
        self.eps = float(eps)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        student, teacher = inputs.student_features[-1], inputs.teacher_features[-1]
        # The probabilities are all close to 1/B: bf16/fp16 would drown the signal, so the B×B
        # maths runs in (at least) float32 even under autocast.
        dtype = torch.promote_types(student.dtype, torch.float32)
        with torch.autocast(student.device.type, enabled=False):
            p_student = _conditional_probabilities(student.flatten(1).to(dtype), self.eps)
            p_teacher = _conditional_probabilities(teacher.flatten(1).to(dtype), self.eps)
            ratio = (p_teacher + self.eps) / (p_student + self.eps)
            return (p_teacher * torch.log(ratio)).mean()
