"""``resnet50_reid``: the ImageNet ResNet-50 as person re-ID backbone (torchreid's ``resnet50``).

Layout of torchvision's ResNet-50 (He et al., CVPR 2016, v1.5: the 3x3 conv carries a unit's
stride): 7x7/2 ``conv1`` + ``bn1``, 3x3/2 max-pool, bottleneck stages ``layer1..4`` of [3, 4, 6, 3]
units (1x1 -> 3x3 -> 1x1, 4x expansion, projection ``downsample`` = 1x1 conv + BN where the
stride or width changes), the last stage at ``last_stride`` (2, torchreid's default for
``resnet50``), global average pooling into the 2048-d embedding and the identity ``classifier``.

Names, registration order and shapes are torchvision's ``resnet50`` state dict without ``fc``
plus ``classifier``, which is torchreid's ``resnet50``; so torchreid's Market-1501 files load
strictly and torchvision's ImageNet file loads as a backbone (``init_backbone``). Written here
rather than imported from torchvision so ``import mgkd.models`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgkd.models.common import EmbeddingNet, init_weights

EXPANSION = 4


class Bottleneck(nn.Module):
    """``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + skip)``; ``conv2`` strided;
    ``downsample`` (``.0`` conv, ``.1`` BN) only where the identity does not fit."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class ReIDResNet(EmbeddingNet):
    """Bottleneck ResNet for re-ID. ``model(x)`` gives identity logits; ``model(x,
    features=True)`` gives ``([stem (after the max-pool), layer1..layer4, embedding], logits)``;
    ``model.embed(x)`` the pooled embedding (B, ``embedding_dim``)."""

    def __init__(self, num_classes: int, *, depths: Sequence[int] = (3, 4, 6, 3),
                 last_stride: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        strides = (1, 2, 2, last_stride)
        self._stage_names: list[str] = []
        for index, (depth, stride) in enumerate(zip(depths, strides, strict=True)):
            planes = 64 * 2 ** index
            units = [Bottleneck(channels, planes, stride)]
            channels = planes * EXPANSION
            units += [Bottleneck(channels, planes) for _ in range(depth - 1)]
            name = f"layer{index + 1}"
            self.add_module(name, nn.Sequential(*units))
            self._stage_names.append(name)
        self.classifier = nn.Linear(channels, num_classes)
        self.num_classes = num_classes
        self.embedding_dim = channels
        init_weights(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)

    def _features(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feats = [x]
        for name in self._stage_names:
            x = getattr(self, name)(x)
            feats.append(x)
        feats.append(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return feats


def resnet50_reid(num_classes: int) -> ReIDResNet:
    """torchreid's ``resnet50``: [3, 4, 6, 3] bottlenecks, last stride 2, 2048-d embedding."""
    return ReIDResNet(num_classes)
