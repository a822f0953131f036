"""Small pieces shared by several model families: ShuffleNet's channel shuffle and the zoo's weight
initialisation. Each family keeps its own module names (RepDistiller's), so no skeleton is shared."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def pool_and_classify(last: Tensor, classifier: nn.Module, feats: list[Tensor],
                      features: bool) -> Tensor | tuple[list[Tensor], Tensor]:
    """Global-average-pool the last map into the embedding and classify it: logits, or
    ``(feats + [embedding], logits)`` when ``features``. The pooling kernel is the whole map:
    RepDistiller pools a fixed 8x8 (4x4) map the same way, and smaller inputs still work."""
    embedding = torch.flatten(F.avg_pool2d(last, last.shape[-2:]), 1)
    logits = classifier(embedding)
    if features:
        feats.append(embedding)
        return feats, logits
    return logits


class EmbeddingNet(nn.Module):
    """A re-ID network: ``_features(x)`` gives the feature maps and last the pooled embedding,
    which ``self.classifier`` maps to identity logits."""

    classifier: nn.Module

    def _features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def embed(self, x: Tensor) -> Tensor:
        """The retrieval embedding (B, ``embedding_dim``)."""
        return self._features(x)[-1]

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` when ``features`` is true."""
        feats = self._features(x)
        logits = self.classifier(feats[-1])
        return (feats, logits) if features else logits
