"""Wide ResNets (WRN-d-w) for CIFAR, pre-activation units as in RepDistiller's ``wrn.py``.

Because the units are pre-activation, a stage's output is the raw residual sum (there is no
activation between stages); the stem output is the bare first conv. The final BN-ReLU runs in
the head, before pooling, so the embedding is post-activation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mgkd.models.common import FeatureNet, conv_bn, stack_stages


class PreActUnit(nn.Module):
    """BN-ReLU -> conv3x3 -> BN-ReLU -> conv3x3, plus identity or 1x1-conv shortcut.

    The projection shortcut (used when width or stride changes) reads the activated input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.preact = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))
        self.branch = nn.Sequential(
            conv_bn(in_channels, out_channels, 3, stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        )
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.preact(x)
        skip = x if self.projection is None else self.projection(activated)
        return torch.add(self.branch(activated), skip)


class WideResNet(FeatureNet):
    """WRN of depth ``6n + 4`` and widen factor ``widen``: widths 16w, 32w, 64w."""

    def __init__(self, num_classes: int, *, depth: int, widen: int) -> None:
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        stages, channels = stack_stages(PreActUnit, 16, widths, (n, n, n), strides=(1, 2, 2))
        stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        super().__init__(stem, stages, channels, num_classes, head=head)
