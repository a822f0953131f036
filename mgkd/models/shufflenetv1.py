"""ShuffleNet v1 for CIFAR, named and computed as RepDistiller's ``ShuffleV1`` (groups 3, widths
240/480/960).

State-dict names: ``conv1``/``bn1`` (1x1 stem), ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}``
(grouped 1x1, depthwise 3x3, grouped 1x1 of unit i) and ``linear`` (classifier), so a RepDistiller
or mdistiller ``ShuffleV1`` checkpoint loads strictly.

The stem is a 1x1 conv-BN-ReLU (no down-sampling); every stage starts with a stride-2 unit whose
branch output is concatenated with a 3x3 average-pooled shortcut, so a 32x32 input gives maps of
32, 16, 8, 4. As in RepDistiller, the depthwise conv is followed by a ReLU and every unit ends in a
ReLU, so all maps are post-activation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgkd.models.common import ChannelShuffle, init_weights, pool_and_classify

STEM_CHANNELS = 24


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 -> shuffle -> 3x3 depthwise -> grouped 1x1, added to the input (stride 1) or
    concatenated with its 3x3 average pool (stride 2), then ReLU.

    ``out_channels`` is the unit's output width; at stride 2 the branch makes only the channels
    the pooled shortcut does not carry. The first 1x1 conv is not grouped when it reads the narrow
    stem output.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.concat = stride != 1
        if not self.concat and in_channels != out_channels:
            raise ValueError("a stride-1 ShuffleNet unit needs equal input and output widths")
        branch_out = out_channels - in_channels if self.concat else out_channels
        mid = branch_out // 4
        first_groups = 1 if in_channels == STEM_CHANNELS else groups
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle1 = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if self.concat else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.shuffle1(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = self.shortcut(x)
        return F.relu(torch.cat([out, skip], 1) if self.concat else out + skip)


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1: 1x1 stem to 24 channels, three stride-2 stages of grouped-conv units.

    ``model(x)`` gives logits; ``model(x, features=True)`` gives ``([stem, stage1, stage2,
    stage3, embedding], logits)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        widths: Sequence[int] = (240, 480, 960),
        depths: Sequence[int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        if len(widths) != 3 or len(depths) != 3:
            raise ValueError("ShuffleNetV1 has three stages: give three widths and three depths")
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.layer1 = self._stage(STEM_CHANNELS, widths[0], depths[0], groups)
        self.layer2 = self._stage(widths[0], widths[1], depths[1], groups)
        self.layer3 = self._stage(widths[1], widths[2], depths[2], groups)
        self.linear = nn.Linear(widths[2], num_classes)
        self.embedding_dim: int = widths[2]
        self.num_classes: int = num_classes
        init_weights(self)

    @staticmethod
    def _stage(in_channels: int, width: int, depth: int, groups: int) -> nn.Sequential:
        """A stride-2 unit then ``depth - 1`` stride-1 units, all ``width`` wide."""
        units = [ShuffleV1Unit(in_channels, width, 2, groups)]
        units += [ShuffleV1Unit(width, width, 1, groups) for _ in range(depth - 1)]
        return nn.Sequential(*units)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` when ``features`` is true (see the class doc)."""
        x = F.relu(self.bn1(self.conv1(x)))
        feats = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            x = stage(x)
            feats.append(x)
        return pool_and_classify(x, self.linear, feats, features)
