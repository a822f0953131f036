"""CIFAR ResNets: basic-block resnet8..110 / resnet8x4 / resnet32x4 and the bottleneck ResNet50.

Parameter and buffer names, their registration order and the forward computation follow
RepDistiller's ``models/resnet.py`` (the CIFAR ResNets: ``conv1``/``bn1`` stem, ``layer1..3`` of
``BasicBlock`` units with a ``downsample`` projection, ``fc``) and ``models/resnetv2.py``
(ResNet50: ``layer1..4`` of ``Bottleneck`` units with a ``shortcut`` projection, ``linear``), so
their published checkpoints load strictly. Post-activation units; a projection (1x1 conv + BN)
wherever the stride or the width changes. Global pooling is adaptive (RepDistiller's CIFAR
ResNets pool a fixed 8x8, which is the same at 32x32 input), so the models also run on 16x16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgkd.models.common import init_weights

BOTTLENECK_EXPANSION = 4


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, bias=False)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv + BN shortcut (registered as ``<name>.0`` conv and ``<name>.1`` BN)."""
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the projection is ``downsample``
    (RepDistiller's CIFAR ResNet naming) and is absent when the identity fits."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != planes:
            self.downsample = _projection(in_channels, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 with 4x expansion; the projection is ``shortcut`` (an empty
    ``Sequential`` when the identity fits), as in RepDistiller's ``resnetv2.py``."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * BOTTLENECK_EXPANSION
        self.conv1 = _conv(in_channels, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _layer(block: type[nn.Module], in_channels: int, planes: int, depth: int,
           stride: int) -> tuple[nn.Sequential, int]:
    """``depth`` units of ``block``; only the first one is strided. Returns it and its width."""
    expansion = BOTTLENECK_EXPANSION if block is Bottleneck else 1
    units = []
    for index in range(depth):
        units.append(block(in_channels, planes, stride if index == 0 else 1))
        in_channels = planes * expansion
    return nn.Sequential(*units), in_channels


class _ResNetBase(nn.Module):
    """Shared forward: 3x3 stem (``conv1``, ``bn1``), the ``layer<i>`` stages, global average
    pool, linear classifier (named by the subclass). ``features=True`` returns the stem output,
    each stage's output and the pooled embedding, all post-activation."""

    embedding_dim: int
    num_classes: int

    def _build(self, block: type[nn.Module], stem_width: int, widths: Sequence[int],
               depths: Sequence[int], num_classes: int, classifier: str) -> None:
        self.conv1 = _conv(3, stem_width, 3)
        self.bn1 = nn.BatchNorm2d(stem_width)
        channels = stem_width
        self._stage_names: list[str] = []
        for index, (planes, depth) in enumerate(zip(widths, depths, strict=True)):
            layer, channels = _layer(block, channels, planes, depth, 1 if index == 0 else 2)
            name = f"layer{index + 1}"
            self.add_module(name, layer)
            self._stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self._classifier_name = classifier
        self.add_module(classifier, nn.Linear(channels, num_classes))
        self.embedding_dim = channels
        self.num_classes = num_classes
        init_weights(self)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` when ``features`` is true (see the class doc)."""
        x = F.relu(self.bn1(self.conv1(x)))
        feats = [x]
        for name in self._stage_names:
            x = getattr(self, name)(x)
            feats.append(x)
        embedding = torch.flatten(self.avgpool(x), 1)
        logits = getattr(self, self._classifier_name)(embedding)
        if features:
            feats.append(embedding)
            return feats, logits
        return logits


class CifarResNet(_ResNetBase):
    """RepDistiller's CIFAR ResNet: stem of ``widths[0]`` channels, three basic-block stages of
    ``widths[1:]`` channels at strides 1, 2, 2, classifier ``fc``."""

    def __init__(self, num_classes: int, *, depth: int,
                 widths: Sequence[int] = (16, 16, 32, 64)) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        super().__init__()
        n = (depth - 2) // 6
        self._build(BasicBlock, widths[0], widths[1:], (n,) * (len(widths) - 1), num_classes,
                    classifier="fc")


class ResNet50(_ResNetBase):
    """RepDistiller's ``resnetv2.ResNet50`` for CIFAR: 64-wide 3x3 stem, bottleneck stages of
    [3, 4, 6, 3] units at strides 1, 2, 2, 2, embedding 2048, classifier ``linear``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self._build(Bottleneck, 64, (64, 128, 256, 512), (3, 4, 6, 3), num_classes,
                    classifier="linear")


def cifar_resnet(num_classes: int, *, depth: int,
                 widths: Sequence[int] = (16, 16, 32, 64)) -> CifarResNet:
    """Basic-block CIFAR ResNet of ``depth = 6n + 2`` layers (n units in each of 3 stages)."""
    return CifarResNet(num_classes, depth=depth, widths=widths)


def resnet50(num_classes: int) -> ResNet50:
    return ResNet50(num_classes)
