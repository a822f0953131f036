"""FitNets hint learning (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015), in the
published form RepDistiller uses (its ``HintLoss`` with its ``ConvReg`` regressor).

One student map (the guided layer) goes through a convolutional regressor onto the teacher's map
at the same depth (the hint); the loss is the mean squared error between the two.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, Shape, register
from mgkd.methods.common import stage_pairs


def _regressor_conv(s_channels: int, t_channels: int, s_hw: tuple[int, int],
                    t_hw: tuple[int, int]) -> nn.Module:
    """The regressor's convolution, which also changes the spatial size to the teacher's.

    * student map twice the teacher's side: a 3x3 convolution with stride 2, padding 1;
    * student map half the teacher's side: a 4x4 transposed convolution with stride 2, padding 1
      (generalised to an integer factor f: kernel f + 2·(f // 2), stride f, padding f // 2);
    * otherwise, student map at least the teacher's size: a "valid" convolution with kernel
      (1 + H_s − H_t, 1 + W_s − W_t), which is 1x1 when the sizes agree.
    """
    (s_h, s_w), (t_h, t_w) = s_hw, t_hw
    if (s_h, s_w) == (2 * t_h, 2 * t_w):
        return nn.Conv2d(s_channels, t_channels, kernel_size=3, stride=2, padding=1)
    if t_h % s_h == 0 and t_w % s_w == 0 and t_h // s_h == t_w // s_w and t_h > s_h:
        factor = t_h // s_h
        return nn.ConvTranspose2d(s_channels, t_channels, kernel_size=factor + 2 * (factor // 2),
                                  stride=factor, padding=factor // 2)
    if s_h >= t_h and s_w >= t_w:
        return nn.Conv2d(s_channels, t_channels, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
    raise ConfigError(
        f"method 'fitnet': the student's hint map ({s_h}x{s_w}) is smaller than the teacher's "
        f"({t_h}x{t_w}) by a factor that is not a whole number, so no transposed convolution maps "
        "one onto the other; choose another method_options.hint_layer.")


class HintRegressor(nn.Module):
    """conv (spatial change included) + BN + ReLU from the student map to the teacher's shape."""

    def __init__(self, student_shape: Shape, teacher_shape: Shape):
        super().__init__()
        s_channels, s_h, s_w = student_shape
        t_channels, t_h, t_w = teacher_shape
        self.conv = _regressor_conv(s_channels, t_channels, (s_h, s_w), (t_h, t_w))
        self.bn = nn.BatchNorm2d(t_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


@register
class FitNet(DistillMethod):
    """MSE between the teacher's hint map and the regressed student map.

    ``hint_layer`` indexes the student's feature list (0 = stem, 1.. = stage outputs, as in
    RepDistiller's ``feat`` list); the teacher's partner is the map that ``stage_pairs`` aligns with
    it (same depth counted from the deepest stage), so pairs with different stage counts still match
    maps of the same role. The regressor is always built (also when the shapes already agree), as
    in the published form: the teacher's maps are post-ReLU, and so are the regressor's outputs.
    """

    name = "fitnet"

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
        self.regressor = HintRegressor(context.student_shapes[hint],
                                       context.teacher_shapes[self.teacher_index])

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        student = self.regressor(inputs.student_features[self.student_index])
        return F.mse_loss(student, inputs.teacher_features[self.teacher_index])
