"""VGG with BatchNorm for CIFAR, named and computed as RepDistiller's ``vgg*_bn`` (no FC stack).

State-dict names: ``block{0..4}.{3j}`` is the j-th 3x3 conv of a block (with bias) and
``block{0..4}.{3j+1}`` its BatchNorm; ``classifier`` is the linear layer. A block is
``conv-BN-ReLU-...-conv-BN`` and its last ReLU runs in ``forward``, as in RepDistiller, so a
RepDistiller or mdistiller ``vgg*`` checkpoint loads strictly.

Block widths are 64, 128, 256, 512, 512; ``convs`` gives the conv count per block (vgg8 = one
per block). A 2x2 max-pool (``pool0``..``pool2``) follows blocks 0, 1 and 2 only, so a 32x32
input gives maps of 32, 16, 8, 4, 4 and a 16x16 input 16, 8, 4, 2, 2, before the global average
pool (``pool4``). The max-pools use ``ceil_mode`` so they never shrink a map below 1x1; on the
even sizes RepDistiller runs (32x32 and 16x16 inputs) this equals its floor pooling. Unlike
RepDistiller, the 4th pool is never applied (RepDistiller applies it to 64x64 inputs only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgkd.models.common import init_weights

VGG_WIDTHS = (64, 128, 256, 512, 512)


def vgg_block(in_channels: int, width: int, count: int) -> nn.Sequential:
    """``count`` x (3x3 conv with bias -> BN -> ReLU), without the final ReLU."""
    layers: list[nn.Module] = []
    for _ in range(count):
        layers += [
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """VGG-BN: ``convs[i]`` conv-BN-ReLU layers in block i; embedding width 512.

    ``model(x)`` gives logits; ``model(x, features=True)`` gives ``([block0, ..., block4,
    embedding], logits)``, every map post-ReLU.
    """

    def __init__(self, num_classes: int, *, convs: Sequence[int]) -> None:
        if len(convs) != len(VGG_WIDTHS) or any(count < 1 for count in convs):
            raise ValueError(f"VGG needs {len(VGG_WIDTHS)} conv counts >= 1, got {tuple(convs)}")
        super().__init__()
        w = VGG_WIDTHS
        self.block0 = vgg_block(3, w[0], convs[0])
        self.block1 = vgg_block(w[0], w[1], convs[1])
        self.block2 = vgg_block(w[1], w[2], convs[2])
        self.block3 = vgg_block(w[2], w[3], convs[3])
        self.block4 = vgg_block(w[3], w[4], convs[4])
        self.pool0 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.pool1 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.pool2 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w[4], num_classes)
        self.embedding_dim: int = w[4]
        self.num_classes: int = num_classes
        init_weights(self)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` when ``features`` is true (see the class doc)."""
        blocks = (self.block0, self.block1, self.block2, self.block3, self.block4)
        pools: tuple[nn.Module | None, ...] = (self.pool0, self.pool1, self.pool2, None, None)
        feats = []
        for block, pool in zip(blocks, pools, strict=True):
            x = F.relu(block(x))
            feats.append(x)
            if pool is not None:
                x = pool(x)
        embedding = torch.flatten(self.pool4(x), 1)
        logits = self.classifier(embedding)
        if features:
            feats.append(embedding)
            return feats, logits
        return logits
