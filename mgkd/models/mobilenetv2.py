"""MobileNetV2 for CIFAR, named and computed as RepDistiller's ``mobile_half`` (width 0.5,
expansion 6).

State-dict names: ``conv1.{0,1}`` (stem conv, BN), ``blocks.{g}.{u}.conv.{0,1,3,4,6,7}`` (unit u
of inverted-residual group g: expand conv, BN, depthwise conv, BN, projection conv, BN),
``conv2.{0,1}`` (1x1 head conv, BN) and ``classifier.0`` (linear), so a RepDistiller or
mdistiller ``MobileNetV2`` (``mobile_half``) checkpoint loads strictly.

The stem is a stride-2 3x3 conv, so a 32x32 input gives maps of 16, 16, 8, 4, 2 (stem, four
feature taps). The seven groups feed four feature maps exactly where RepDistiller taps them:
after groups 1, 2, 4 and 6. Units end in a linear projection (no ReLU), so these maps are not
rectified; the head is a 1x1 conv to 1280 channels with BN-ReLU, so the embedding is.
"""

from __future__ import annotations

from torch import Tensor, nn

from mgkd.models.common import init_weights, pool_and_classify

# Inverted-residual groups at width 1.0: (channels, units, stride of the first unit). The first
# group uses expansion 1, the others the model's expansion ratio.
GROUPS = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
# A feature map is taken after each of these groups.
FEATURE_GROUPS = (1, 2, 4, 6)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int
) -> nn.Sequential:
    """Conv (same padding, no bias) -> BN -> ReLU; named ``0``, ``1``, ``2``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection (all in ``self.conv``); the input is
    added when stride and widths allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2 with width multiplier ``width_mult`` and expansion ratio ``expansion``.

    ``model(x)`` gives logits; ``model(x, features=True)`` gives ``([stem, tap1, tap2, tap3,
    tap4, embedding], logits)``.
    """

    def __init__(self, num_classes: int, *, width_mult: float = 0.5, expansion: int = 6) -> None:
        super().__init__()
        channels = int(STEM_CHANNELS * width_mult)
        self.conv1 = conv_bn_relu(3, channels, 3, 2)
        groups = []
        for index, (base, units, first_stride) in enumerate(GROUPS):
            width = int(base * width_mult)
            ratio = expansion if index > 0 else 1
            layers = []
            for unit in range(units):
                stride = first_stride if unit == 0 else 1
                layers.append(InvertedResidual(channels, width, stride, ratio))
                channels = width
            groups.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(groups)
        head_channels = max(HEAD_CHANNELS, int(HEAD_CHANNELS * width_mult))
        self.conv2 = conv_bn_relu(channels, head_channels, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(head_channels, num_classes))
        self.embedding_dim: int = head_channels
        self.num_classes: int = num_classes
        init_weights(self)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` when ``features`` is true (see the class doc)."""
        x = self.conv1(x)
        feats = [x]
        for index, group in enumerate(self.blocks):
            x = group(x)
            if index in FEATURE_GROUPS:
                feats.append(x)
        final = self.conv2(x)
        return pool_and_classify(final, self.classifier, feats, features)
