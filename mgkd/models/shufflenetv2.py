"""ShuffleNet v2 (1x) for CIFAR, named and computed as RepDistiller's ``ShuffleV2`` (widths
116/232/464, head 1024).

State-dict names: ``conv1``/``bn1`` (1x1 stem); ``layer{1,2,3}.0.{conv1..conv5,bn1..bn5}`` (the
stride-2 unit: left branch 1-2, right branch 3-5); ``layer{1,2,3}.{i>0}.{conv1..conv3,bn1..bn3}``
(stride-1 units); ``conv2``/``bn2`` (1x1 head) and ``linear`` (classifier), so a RepDistiller or
mdistiller ``ShuffleV2`` checkpoint loads strictly.

The stem is a 1x1 conv-BN-ReLU (no down-sampling); each stage is one stride-2 unit followed by
stride-1 units (``depths`` counts both, 4/8/4 as in RepDistiller's 3/7/3 plus the stride-2 unit),
so a 32x32 input gives maps of 32, 16, 8, 4. A 1x1 conv-BN-ReLU head widens to 1024 channels
before pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgkd.models.common import channel_shuffle, init_weights, pool_and_classify

STEM_CHANNELS = 24


class ShuffleV2DownUnit(nn.Module):
    """Stride-2 unit: both branches read the whole input and halve its size.

    Left: 3x3 depthwise conv-BN -> 1x1 conv-BN-ReLU. Right: 1x1 conv-BN-ReLU -> 3x3 depthwise
    conv-BN -> 1x1 conv-BN-ReLU. Concatenated (left first), then a 2-group channel shuffle.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.conv4 = nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False)
        self.bn4 = nn.BatchNorm2d(half)
        self.conv5 = nn.Conv2d(half, half, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleV2Unit(nn.Module):
    """Stride-1 unit: the input is split in half; the first half passes unchanged, the second
    goes through 1x1 conv-BN-ReLU -> 3x3 depthwise conv-BN -> 1x1 conv-BN-ReLU; the halves are
    concatenated (kept half first), then a 2-group channel shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        kept, transformed = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(transformed)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return channel_shuffle(torch.cat([kept, out], 1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet v2: 1x1 stem to 24 channels, three stride-2 stages, 1x1 head to ``head_width``.

    ``model(x)`` gives logits; ``model(x, features=True)`` gives ``([stem, stage1, stage2,
    stage3, embedding], logits)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        widths: Sequence[int] = (116, 232, 464),
        depths: Sequence[int] = (4, 8, 4),
        head_width: int = 1024,
    ) -> None:
        if len(widths) != 3 or len(depths) != 3 or any(w % 2 for w in widths):
            raise ValueError("ShuffleNetV2 has three stages: give three even widths, three depths")
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.layer1 = self._stage(STEM_CHANNELS, widths[0], depths[0])
        self.layer2 = self._stage(widths[0], widths[1], depths[1])
        self.layer3 = self._stage(widths[1], widths[2], depths[2])
        self.conv2 = nn.Conv2d(widths[2], head_width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(head_width)
        self.linear = nn.Linear(head_width, num_classes)
        self.embedding_dim: int = head_width
        self.num_classes: int = num_classes
        init_weights(self)

    @staticmethod
    def _stage(in_channels: int, width: int, depth: int) -> nn.Sequential:
        """A stride-2 unit then ``depth - 1`` stride-1 units, all ``width`` wide."""
        units: list[nn.Module] = [ShuffleV2DownUnit(in_channels, width)]
        units += [ShuffleV2Unit(width) for _ in range(depth - 1)]
        return nn.Sequential(*units)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` when ``features`` is true (see the class doc)."""
        x = F.relu(self.bn1(self.conv1(x)))
        feats = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            x = stage(x)
            feats.append(x)
        final = F.relu(self.bn2(self.conv2(x)))
        return pool_and_classify(final, self.linear, feats, features)
