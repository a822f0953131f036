"""FitNets hint learning (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

One student map (the guided layer) is regressed onto the teacher's map at the same depth (the hint)
and the two are matched with a mean squared error.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, register
from mgkd.methods.common import match_spatial, stage_pairs


@register
class FitNet(DistillMethod):
    """MSE between the teacher's hint map and the regressed student map.

    ``hint_layer`` indexes the student's feature list (0 = stem, 1.. = stage outputs, as in
    RepDistiller's ``feat`` list); the teacher's partner is the map that ``stage_pairs`` aligns with
    it (same depth counted from the deepest stage), so pairs with different stage counts still match
    maps of the same role. The student map is resized to the teacher's spatial size, then a
    1x1 conv + BN maps its channels onto the teacher's (identity where the counts agree).
    """

    name = "fitnet"
    default_feature_weight = 100.0
    option_defaults = {"hint_layer": 2}

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        hint = self.options["hint_layer"]
        partners = dict(stage_pairs(context.student_shapes, context.teacher_shapes))
        if isinstance(hint, bool) or not isinstance(hint, int) or hint not in partners:
            raise ConfigError(
                f"method_options.hint_layer: {hint!r} is not a student feature map paired with a "
                f"teacher map; allowed: {sorted(partners)}.")
        self.student_index = hint
        self.teacher_index = partners[hint]
        s_channels = context.student_shapes[hint][0]
        t_channels, t_h, t_w = context.teacher_shapes[self.teacher_index]
        self.teacher_hw = (t_h, t_w)
        self.regressor: nn.Module
        if s_channels == t_channels:
            self.regressor = nn.Identity()
        else:
            self.regressor = nn.Sequential(
                nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(t_channels))

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        student = inputs.student_features[self.student_index]
        teacher = inputs.teacher_features[self.teacher_index]
        # Resizing before the 1x1 conv is cheaper and, for pooling, identical (both are linear).
        student = self.regressor(match_spatial(student, teacher.shape[-2:]))
        return F.mse_loss(student, teacher)
