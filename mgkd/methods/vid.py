"""Variational information distillation (Ahn et al., "Variational Information Distillation for
Knowledge Transfer", CVPR 2019).

Maximises a variational lower bound on the mutual information between paired stages: the teacher
map is modelled as a Gaussian whose mean a small regressor predicts from the student map and whose
per-channel variance is learned.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, register
from mgkd.methods.common import match_spatial, stage_pairs


class _VIDHead(nn.Module):
    """Mean regressor (1x1 conv - ReLU - 1x1 conv - ReLU - 1x1 conv, width = teacher channels, as in
    the paper's CIFAR setting) and the per-channel variance of one stage pair."""

    def __init__(self, s_channels: int, t_channels: int, init_variance: float, eps: float):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, kernel_size=1, bias=False))
        # variance = softplus(raw) + eps, so raw = softplus⁻¹(init − eps) = log(expm1(init − eps)).
        raw = math.log(math.expm1(init_variance - eps))
        self.raw_variance = nn.Parameter(torch.full((t_channels,), raw))
        self.eps = eps

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        mean = self.regressor(student)
        variance = (F.softplus(self.raw_variance) + self.eps).view(1, -1, 1, 1)
        neg_log_likelihood = 0.5 * ((mean - teacher).pow(2) / variance + variance.log())
        return neg_log_likelihood.mean()


@register
class VID(DistillMethod):
    """Sum over stage pairs of the Gaussian negative log-likelihood (constant dropped) of the
    teacher map given the student map. Stages are paired as in ``at`` (stem left out,
    deepest-aligned); the larger map of a pair is average-pooled to the smaller one's size."""

    name = "vid"

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        init_variance, eps = self.options["init_variance"], self.options["eps"]
        for key, value in (("eps", eps), ("init_variance", init_variance)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"method_options.{key}: {value!r} must be a positive number.")
        if init_variance <= eps:
            raise ConfigError(f"method_options.init_variance: {init_variance!r} must exceed "
                              f"eps ({eps!r}).")
        pairs = stage_pairs(context.student_shapes, context.teacher_shapes)
        self.pairs = [pair for pair in pairs if 0 not in pair] or pairs
        self.heads = nn.ModuleList(
            _VIDHead(context.student_shapes[s][0], context.teacher_shapes[t][0],
                     float(init_variance), float(eps))
            for s, t in self.pairs)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        loss = inputs.student_logits.new_zeros(())
        for (s_index, t_index), head in zip(self.pairs, self.heads):
            student = inputs.student_features[s_index]
            teacher = inputs.teacher_features[t_index]
            hw = (min(student.shape[-2], teacher.shape[-2]),
                  min(student.shape[-1], teacher.shape[-1]))
            loss = loss + head(match_spatial(student, hw), match_spatial(teacher, hw))
        return loss
