"""MobileNetV2 for CIFAR (RepDistiller's ``mobile_half``: width 0.5, expansion 6).

The stem is a stride-2 3x3 conv, so a 32x32 input gives maps of 16, 16, 8, 4, 2 (stem, four
stages). The seven inverted-residual groups are merged into four feature stages exactly where
RepDistiller taps its features: groups {0, 1}, {2}, {3, 4}, {5, 6}. Blocks end in a linear
projection (no ReLU), so stage outputs are not rectified; the head is a 1x1 conv to 1280
channels with BN-ReLU, so the embedding is.
"""

from __future__ import annotations

from torch import nn

from mgkd.models.common import FeatureNet, Residual, conv_bn

# Inverted-residual groups at width 1.0: (channels, units, stride of the first unit). The first
# group uses expansion 1, the others the model's expansion ratio.
GROUPS = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
STAGES = ((0, 1), (2,), (3, 4), (5, 6))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def inverted_residual(
    in_channels: int, out_channels: int, stride: int, expansion: int
) -> nn.Module:
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; identity skip when shapes allow."""
    hidden = in_channels * expansion
    branch = nn.Sequential(
        conv_bn(in_channels, hidden, 1),
        conv_bn(hidden, hidden, 3, stride, groups=hidden),
        conv_bn(hidden, out_channels, 1, relu=False),
    )
    if stride == 1 and in_channels == out_channels:
        return Residual(branch, relu=False)
    return branch


class MobileNetV2(FeatureNet):
    """CIFAR MobileNetV2 with width multiplier ``width_mult`` and expansion ratio ``expansion``."""

    def __init__(
        self, num_classes: int, *, width_mult: float = 0.5, expansion: int = 6
    ) -> None:
        channels = int(STEM_CHANNELS * width_mult)
        stem = conv_bn(3, channels, 3, stride=2)
        groups = []
        for index, (base, units, first_stride) in enumerate(GROUPS):
            width = int(base * width_mult)
            ratio = expansion if index > 0 else 1
            layers = []
            for unit in range(units):
                stride = first_stride if unit == 0 else 1
                layers.append(inverted_residual(channels, width, stride, ratio))
                channels = width
            groups.append(layers)
        stages = [nn.Sequential(*(m for g in members for m in groups[g])) for members in STAGES]
        head_channels = max(HEAD_CHANNELS, int(HEAD_CHANNELS * width_mult))
        head = conv_bn(channels, head_channels, 1)
        super().__init__(stem, stages, head_channels, num_classes, head=head)
