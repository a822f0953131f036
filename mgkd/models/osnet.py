"""OSNet (Zhou et al., ICCV 2019, "Omni-Scale Feature Learning for Person Re-Identification").

The network, as the paper describes it: a 7x7/2 conv + 3x3/2 max-pool stem; three stages of two
omni-scale residual bottlenecks, the first two stages closed by a 1x1 conv + 2x2 average-pool
transition; a final 1x1 conv, global average pooling and a 512-d fully connected embedding
(Linear + BatchNorm1d + ReLU) that feeds the identity classifier.

An omni-scale bottleneck reduces the input with a 1x1 conv to a quarter of its output width, runs
T = 4 streams of 1, 2, 3 and 4 stacked "lite 3x3" layers (pointwise 1x1 then depthwise 3x3, one
BN + ReLU) over it, weights every stream channel-wise with **one** unified aggregation gate (the
same GAP -> FC -> ReLU -> FC -> sigmoid module for all streams, each gated by its own content),
sums them and expands back with a linear 1x1 conv; a linear 1x1 projection carries the input
when the width changes. Plain OSNet: no instance normalisation.

Parameter and buffer names, their registration order and shapes follow torchreid's
``torchreid/models/osnet.py`` (KaiyangZhou/deep-person-reid), so its ImageNet- and
Market-1501-trained ``osnet_x*`` files load strictly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgkd.models.common import EmbeddingNet, init_weights

STREAMS = 4  # T: streams of 1..T lite 3x3 layers
BOTTLENECK_REDUCTION = 4
GATE_REDUCTION = 16
EMBEDDING_DIM = 512

# name -> channels of [stem, stage 1, stage 2, stage 3]
OSNET_WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "osnet_x1_0": (64, 256, 384, 512),
    "osnet_x0_75": (48, 192, 288, 384),
    "osnet_x0_5": (32, 128, 192, 256),
    "osnet_x0_25": (16, 64, 96, 128),
}


class ConvBN(nn.Module):
    """``conv`` (no bias) then ``bn``, then ReLU when ``relu`` (torchreid's ConvLayer / Conv1x1
    with ``relu``, Conv1x1Linear without)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, *, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class LiteConv3x3(nn.Module):
    """The paper's "lite 3x3": pointwise ``conv1``, depthwise 3x3 ``conv2``, ``bn``, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels,
                               bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv2(self.conv1(x))))


class AggregationGate(nn.Module):
    """Unified aggregation gate: ``x * sigmoid(fc2(relu(fc1(GAP(x)))))`` with 1x1 convs (with
    bias) as the FC layers, reduction ``GATE_REDUCTION``."""

    def __init__(self, channels: int, reduction: int = GATE_REDUCTION) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"gate needs at least {reduction} channels, got {channels}")
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * weights


def _stream(channels: int, depth: int) -> nn.Module:
    """``depth`` stacked lite 3x3 layers; a single one is registered bare (torchreid's
    ``conv2a``), deeper ones as a ``Sequential`` (``conv2b.0``, ...)."""
    if depth == 1:
        return LiteConv3x3(channels, channels)
    return nn.Sequential(*(LiteConv3x3(channels, channels) for _ in range(depth)))


class OmniScaleBlock(nn.Module):
    """Omni-scale residual bottleneck: ``conv1`` (1x1 reduce), streams ``conv2a..conv2d`` of
    1..4 lite 3x3 layers, one shared ``gate``, ``conv3`` (linear 1x1 expand), ``downsample``
    (linear 1x1 projection, only when the width changes), ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // BOTTLENECK_REDUCTION
        self.conv1 = ConvBN(in_channels, mid)
        for index in range(STREAMS):
            self.add_module(f"conv2{'abcd'[index]}", _stream(mid, index + 1))
        self.gate = AggregationGate(mid)
        self.conv3 = ConvBN(mid, out_channels, relu=False)
        self.downsample: nn.Module | None = None
        if in_channels != out_channels:
            self.downsample = ConvBN(in_channels, out_channels, relu=False)

    def streams(self) -> list[nn.Module]:
        return [getattr(self, f"conv2{'abcd'[index]}") for index in range(STREAMS)]

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.conv1(x)
        aggregated = sum(self.gate(stream(reduced)) for stream in self.streams())
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(aggregated) + skip)


def _stage(in_channels: int, out_channels: int, depth: int, transition: bool) -> nn.Sequential:
    """``depth`` omni-scale blocks, then (when ``transition``) 1x1 conv + 2x2 average pool."""
    units: list[nn.Module] = [OmniScaleBlock(in_channels, out_channels)]
    units += [OmniScaleBlock(out_channels, out_channels) for _ in range(depth - 1)]
    if transition:
        units.append(nn.Sequential(ConvBN(out_channels, out_channels), nn.AvgPool2d(2, 2)))
    return nn.Sequential(*units)


class OSNet(EmbeddingNet):
    """OSNet with ``widths`` = channels of [stem, stage 1, stage 2, stage 3].

    ``model(x)`` gives identity logits; ``model(x, features=True)`` gives ``([stem (after the
    max-pool), stage 1, stage 2, stage 3, embedding], logits)`` — the final 1x1 ``conv5`` is a
    head, not a stage, as in the CIFAR zoo's MobileNetV2/ShuffleV2 — and ``model.embed(x)`` the
    512-d retrieval embedding (``fc``'s output, the last feature).
    """

    def __init__(self, num_classes: int, *, widths: Sequence[int],
                 depths: Sequence[int] = (2, 2, 2), embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        if len(widths) != 4 or len(depths) != 3:
            raise ValueError(f"OSNet needs 4 widths and 3 depths, got {widths} and {depths}")
        self.conv1 = ConvBN(3, widths[0], 7, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(widths[0], widths[1], depths[0], transition=True)
        self.conv3 = _stage(widths[1], widths[2], depths[1], transition=True)
        self.conv4 = _stage(widths[2], widths[3], depths[2], transition=False)
        self.conv5 = ConvBN(widths[3], widths[3])
        self.fc = nn.Sequential(nn.Linear(widths[3], embedding_dim),
                                nn.BatchNorm1d(embedding_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        init_weights(self)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _features(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.conv1(x))
        feats = [x]
        for stage in (self.conv2, self.conv3, self.conv4):
            x = stage(x)
            feats.append(x)
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.conv5(x), 1), 1)
        feats.append(self.fc(pooled))
        return feats


def osnet(num_classes: int, *, name: str) -> OSNet:
    """The OSNet width variant ``name`` (a key of :data:`OSNET_WIDTHS`)."""
    return OSNet(num_classes, widths=OSNET_WIDTHS[name])
