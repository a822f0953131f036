"""Building blocks shared by every model family, and the common network skeleton.

Every network in the zoo is a :class:`FeatureNet`: ``stem -> stages -> head -> global average
pool -> linear classifier``. ``model(x)`` returns logits; ``model(x, features=True)`` returns
``(features, logits)`` where ``features`` holds the stem output, each stage's output map and,
last, the pooled embedding of width ``model.embedding_dim`` that feeds the classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    relu: bool = True,
    bias: bool = False,
) -> nn.Sequential:
    """Conv (same padding) -> BatchNorm -> optional ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=bias,
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` equal groups (ShuffleNet's channel shuffle)."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """Module wrapper of :func:`channel_shuffle`."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class Residual(nn.Module):
    """``merge(branch(x), shortcut(x))`` followed by an optional ReLU.

    ``merge`` is addition, or channel concatenation when ``concat`` is true (ShuffleNet v1's
    down-sampling unit). The shortcut defaults to the identity.
    """

    def __init__(
        self,
        branch: nn.Module,
        shortcut: nn.Module | None = None,
        concat: bool = False,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.concat = concat
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        out, skip = self.branch(x), self.shortcut(x)
        out = torch.cat([out, skip], dim=1) if self.concat else out + skip
        return torch.relu(out) if self.relu else out


def stack_stages(
    unit: Callable[[int, int, int], nn.Module],
    in_channels: int,
    widths: Sequence[int],
    depths: Sequence[int],
    strides: Sequence[int],
    expansion: int = 1,
) -> tuple[list[nn.Sequential], int]:
    """Build stages of ``unit(in_channels, width, stride)`` modules.

    Stage i holds ``depths[i]`` units of width ``widths[i]``; only its first unit uses
    ``strides[i]``. A unit outputs ``width * expansion`` channels. Returns the stages and the
    output width of the last one.
    """
    stages = []
    for width, depth, stride in zip(widths, depths, strides, strict=True):
        units = []
        for index in range(depth):
            units.append(unit(in_channels, width, stride if index == 0 else 1))
            in_channels = width * expansion
        stages.append(nn.Sequential(*units))
    return stages, in_channels


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan-out) convs, zero conv and linear biases, BatchNorm at identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class FeatureNet(nn.Module):
    """Skeleton shared by all zoo models: stem, stages, head, global pool, linear classifier.

    ``head`` runs on the last stage's map before pooling (for example a final BN-ReLU or a 1x1
    conv); the pooling is adaptive, so any input size that survives the strides works.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Iterable[nn.Module],
        embedding_dim: int,
        num_classes: int,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head if head is not None else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim: int = embedding_dim
        self.num_classes: int = num_classes
        init_weights(self)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` when ``features`` is true (see the module doc)."""
        x = self.stem(x)
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        embedding = torch.flatten(self.pool(self.head(x)), 1)
        logits = self.classifier(embedding)
        if features:
            feats.append(embedding)
            return feats, logits
        return logits
