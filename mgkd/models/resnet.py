"""CIFAR ResNets: basic-block resnet8..110 / resnet8x4 / resnet32x4 and the bottleneck ResNet50.

Layouts follow RepDistiller's CIFAR variants: a 3x3 stem without max-pool, stages at strides
1, 2, 2(, 2), post-activation residual units, and a projection shortcut (1x1 conv + BN)
wherever the stride or the width changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from mgkd.models.common import FeatureNet, Residual, conv_bn, stack_stages

BOTTLENECK_EXPANSION = 4


def residual_unit(in_channels: int, planes: int, stride: int, bottleneck: bool) -> Residual:
    """One residual unit: two 3x3 convs, or 1x1-3x3-1x1 with 4x expansion when ``bottleneck``."""
    if bottleneck:
        out_channels = planes * BOTTLENECK_EXPANSION
        branch = nn.Sequential(
            conv_bn(in_channels, planes, 1),
            conv_bn(planes, planes, 3, stride),
            conv_bn(planes, out_channels, 1, relu=False),
        )
    else:
        out_channels = planes
        branch = nn.Sequential(
            conv_bn(in_channels, planes, 3, stride),
            conv_bn(planes, planes, 3, relu=False),
        )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = conv_bn(in_channels, out_channels, 1, stride, relu=False)
    return Residual(branch, shortcut)


class ResNet(FeatureNet):
    """CIFAR ResNet: 3x3 stem, then one stage per entry of ``widths`` (stride 1 first, 2 after)."""

    def __init__(
        self,
        num_classes: int,
        *,
        widths: Sequence[int],
        depths: Sequence[int],
        stem_width: int,
        bottleneck: bool = False,
    ) -> None:
        expansion = BOTTLENECK_EXPANSION if bottleneck else 1
        stages, channels = stack_stages(
            partial(residual_unit, bottleneck=bottleneck),
            stem_width,
            widths,
            depths,
            strides=(1,) + (2,) * (len(widths) - 1),
            expansion=expansion,
        )
        super().__init__(conv_bn(3, stem_width, 3), stages, channels, num_classes)


def cifar_resnet(
    num_classes: int,
    *,
    depth: int,
    stem_width: int = 16,
    widths: Sequence[int] = (16, 32, 64),
) -> ResNet:
    """Basic-block CIFAR ResNet of ``depth = 6n + 2`` layers (n units in each of 3 stages)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    return ResNet(num_classes, widths=widths, depths=(n,) * len(widths), stem_width=stem_width)


def resnet50(num_classes: int) -> ResNet:
    """Bottleneck ResNet50 for CIFAR: 64-wide 3x3 stem, [3, 4, 6, 3] units, embedding 2048."""
    return ResNet(
        num_classes,
        widths=(64, 128, 256, 512),
        depths=(3, 4, 6, 3),
        stem_width=64,
        bottleneck=True,
    )
