"""VGG with BatchNorm for CIFAR (RepDistiller's ``vgg*_bn``): five conv blocks, no FC stack.

Block widths are 64, 128, 256, 512, 512; ``convs`` gives the 3x3 conv-BN-ReLU count per block
(vgg8 = one per block). Block 0 is the stem. A 2x2 max-pool precedes blocks 1, 2 and 3 only, so
a 32x32 input gives maps of 32, 16, 8, 4, 4 and a 16x16 input 16, 8, 4, 2, 2, before the
global average pool. The pools use ``ceil_mode`` so they never shrink a map below 1x1 (a 1x1
map stays 1x1 and odd sizes round up); for even sizes this equals the usual floor pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mgkd.models.common import FeatureNet, conv_bn

VGG_WIDTHS = (64, 128, 256, 512, 512)
POOLED_BLOCKS = (1, 2, 3)


class VGG(FeatureNet):
    """VGG-BN: ``convs[i]`` conv-BN-ReLU layers in block i; embedding width 512."""

    def __init__(self, num_classes: int, *, convs: Sequence[int]) -> None:
        blocks = []
        channels = 3
        for index, (width, count) in enumerate(zip(VGG_WIDTHS, convs, strict=True)):
            layers: list[nn.Module] = []
            if index in POOLED_BLOCKS:
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            for _ in range(count):
                layers.append(conv_bn(channels, width, 3, bias=True))
                channels = width
            blocks.append(nn.Sequential(*layers))
        super().__init__(blocks[0], blocks[1:], channels, num_classes)
