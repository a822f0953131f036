"""ShuffleNet v1 for CIFAR (RepDistiller's ``ShuffleV1``: groups 3, widths 240/480/960).

The stem is a 1x1 conv (no down-sampling); every stage starts with a stride-2 unit whose branch
output is concatenated with a 3x3 average-pooled shortcut, so a 32x32 input gives maps of 32,
16, 8, 4. As in RepDistiller, the depthwise conv is followed by a ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from mgkd.models.common import ChannelShuffle, FeatureNet, Residual, conv_bn, stack_stages

STEM_CHANNELS = 24


def shuffle_v1_unit(in_channels: int, out_channels: int, stride: int, groups: int) -> Residual:
    """Grouped 1x1 -> shuffle -> 3x3 depthwise -> grouped 1x1, added to (or, at stride 2,
    concatenated with an average-pooled) shortcut, then ReLU.

    The first 1x1 conv is not grouped when it reads the narrow stem output.
    """
    concat = stride != 1
    if not concat and in_channels != out_channels:
        raise ValueError("a stride-1 ShuffleNet unit needs equal input and output widths")
    branch_out = out_channels - in_channels if concat else out_channels
    mid = branch_out // 4
    first_groups = 1 if in_channels == STEM_CHANNELS else groups
    branch = nn.Sequential(
        conv_bn(in_channels, mid, 1, groups=first_groups),
        ChannelShuffle(first_groups),
        conv_bn(mid, mid, 3, stride, groups=mid),
        conv_bn(mid, branch_out, 1, groups=groups, relu=False),
    )
    shortcut = nn.AvgPool2d(3, stride=stride, padding=1) if concat else None
    return Residual(branch, shortcut, concat=concat)


class ShuffleNetV1(FeatureNet):
    """ShuffleNet v1: 1x1 stem to 24 channels, three stride-2 stages of grouped-conv units."""

    def __init__(
        self,
        num_classes: int,
        *,
        widths: Sequence[int] = (240, 480, 960),
        depths: Sequence[int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        stages, channels = stack_stages(
            partial(shuffle_v1_unit, groups=groups),
            STEM_CHANNELS,
            widths,
            depths,
            strides=(2,) * len(widths),
        )
        stem = conv_bn(3, STEM_CHANNELS, 1)
        super().__init__(stem, stages, channels, num_classes)
