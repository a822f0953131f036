"""NST: neuron selectivity transfer (Huang & Wang, "Like What You Like: Knowledge Distill via Neuron
Selectivity Transfer", 2017; RepDistiller's ``NSTLoss``)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, register
from mgkd.methods.common import match_spatial, stage_pairs


def _poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and all channel pairs of ``(a_i . b_j)^2`` (degree 2, c = 0)."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


def nst_stage_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared MMD with a degree-2 polynomial kernel between the channels' spatial distributions.

    Each channel's flattened map is L2-normalised (a distribution over positions); the larger map is
    average-pooled to the smaller's size first. At 1x1 maps every normalised channel is constant,
    so such a stage contributes a constant (no gradient)."""
    hw = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    # fp32 even under autocast: the MMD is a small difference of near-equal kernel means.
    with torch.autocast(student.device.type, enabled=False):
        s = F.normalize(match_spatial(student.float(), hw).flatten(2), dim=2)
        t = F.normalize(match_spatial(teacher.float(), hw).flatten(2), dim=2)
        return (_poly_kernel_mean(t, t).detach() + _poly_kernel_mean(s, s)
                - 2.0 * _poly_kernel_mean(s, t))


@register
class NSTMethod(DistillMethod):
    """MMD between student and teacher neuron-selectivity patterns, summed over paired stages.

    ``num_stages``: how many of the deepest paired maps to use; 0 (default) uses every stage output
    but the stem, as RepDistiller's ``feat[1:-1]`` (to which beta = 50 is tuned). Student and
    teacher may differ in channels: the kernel matrices compare channel sets of any size.
    """

    name = "nst"

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        num_stages = self.options["num_stages"]
        if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 0:
            raise ConfigError(f"method_options.num_stages: must be an integer >= 0 for method "
                              f"'nst' (0 = every stage but the stem), got {num_stages!r}.")
        s_shapes, t_shapes = context.student_shapes, context.teacher_shapes
        if num_stages == 0:
            num_stages = max(1, min(len(s_shapes), len(t_shapes)) - 2)
        self.pairs = stage_pairs(s_shapes, t_shapes, count=num_stages)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        losses = [nst_stage_loss(inputs.student_features[si], inputs.teacher_features[ti])
                  for si, ti in self.pairs]
        return torch.stack(losses).sum()
