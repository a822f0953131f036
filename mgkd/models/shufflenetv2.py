"""ShuffleNet v2 (1x) for CIFAR (RepDistiller's ``ShuffleV2``: widths 116/232/464, head 1024).

The stem is a 1x1 conv (no down-sampling); each stage is one stride-2 unit followed by
stride-1 units (``depths`` counts both, 4/8/4 as in the paper), so a 32x32 input gives maps of
32, 16, 8, 4. A 1x1 conv-BN-ReLU head widens to 1024 channels before pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mgkd.models.common import FeatureNet, channel_shuffle, conv_bn, stack_stages

STEM_CHANNELS = 24


def _right_branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv-BN-ReLU -> 3x3 depthwise conv-BN (carries the stride) -> 1x1 conv-BN-ReLU."""
    return nn.Sequential(
        conv_bn(in_channels, out_channels, 1),
        conv_bn(out_channels, out_channels, 3, stride, groups=out_channels, relu=False),
        conv_bn(out_channels, out_channels, 1),
    )


class ShuffleV2Unit(nn.Module):
    """ShuffleNet v2 unit: two branches concatenated, then a 2-group channel shuffle.

    At stride 1 the input is split in half, the first half passes through unchanged and only the
    second is transformed; at stride 2 both branches read the whole input and down-sample it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.left: nn.Module | None = None
        if stride == 1:
            if in_channels != out_channels:
                raise ValueError("a stride-1 ShuffleNet v2 unit needs equal in and out widths")
            self.right = _right_branch(half, half, 1)
        else:
            self.left = nn.Sequential(
                conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, relu=False),
                conv_bn(in_channels, half, 1),
            )
            self.right = _right_branch(in_channels, half, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.left is None:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat([kept, self.right(transformed)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(FeatureNet):
    """ShuffleNet v2: 1x1 stem to 24 channels, three stride-2 stages, 1x1 head to ``head_width``."""

    def __init__(
        self,
        num_classes: int,
        *,
        widths: Sequence[int] = (116, 232, 464),
        depths: Sequence[int] = (4, 8, 4),
        head_width: int = 1024,
    ) -> None:
        stages, channels = stack_stages(
            ShuffleV2Unit, STEM_CHANNELS, widths, depths, strides=(2,) * len(widths)
        )
        stem = conv_bn(3, STEM_CHANNELS, 1)
        head = conv_bn(channels, head_width, 1)
        super().__init__(stem, stages, head_width, num_classes, head=head)
