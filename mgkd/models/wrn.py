"""Wide ResNets (WRN-d-w) for CIFAR, named and computed as RepDistiller's ``wrn.py``.

State-dict names: ``conv1`` (stem), ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``
(pre-activation units), ``bn1`` (the final BN), ``fc`` (classifier), so a RepDistiller or
mdistiller ``wrn_*`` checkpoint loads strictly.

Because the units are pre-activation, a stage's output is the raw residual sum (there is no
activation between stages) and the stem output is the bare first conv, exactly the maps
RepDistiller returns with ``preact=False``. The final BN-ReLU runs before the global pool, so the
embedding is post-activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgkd.models.common import init_weights, pool_and_classify


class PreActUnit(nn.Module):
    """BN-ReLU -> conv3x3 -> BN-ReLU -> conv3x3, plus identity or 1x1-conv shortcut.

    When the width changes the shortcut is a 1x1 conv (``convShortcut``) that reads the
    activated input; otherwise the raw input is added unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.convShortcut: nn.Conv2d | None = None
        if in_channels != out_channels:
            self.convShortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        elif stride != 1:
            raise ValueError("a Wide ResNet unit with equal widths must have stride 1")

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(F.relu(self.bn2(out)))
        skip = x if self.convShortcut is None else self.convShortcut(activated)
        return torch.add(skip, out)


class UnitStack(nn.Module):
    """One WRN stage: ``depth`` units in ``self.layer`` (RepDistiller's ``NetworkBlock``)."""

    def __init__(self, depth: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        units = [PreActUnit(in_channels, out_channels, stride)]
        units += [PreActUnit(out_channels, out_channels, 1) for _ in range(depth - 1)]
        self.layer = nn.Sequential(*units)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN of depth ``6n + 4`` and widen factor ``widen``: widths 16w, 32w, 64w.

    ``model(x)`` gives logits; ``model(x, features=True)`` gives ``([stem, stage1, stage2,
    stage3, embedding], logits)``.
    """

    def __init__(self, num_classes: int, *, depth: int, widen: int) -> None:
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        super().__init__()
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.block1 = UnitStack(n, 16, widths[0], 1)
        self.block2 = UnitStack(n, widths[0], widths[1], 2)
        self.block3 = UnitStack(n, widths[1], widths[2], 2)
        self.bn1 = nn.BatchNorm2d(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)
        self.embedding_dim: int = widths[2]
        self.num_classes: int = num_classes
        init_weights(self)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` when ``features`` is true (see the class doc)."""
        x = self.conv1(x)
        feats = [x]
        for stage in (self.block1, self.block2, self.block3):
            x = stage(x)
            feats.append(x)
        final = F.relu(self.bn1(x))
        return pool_and_classify(final, self.fc, feats, features)
