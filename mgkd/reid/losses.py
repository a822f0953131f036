"""The re-ID training base: identity cross-entropy with label smoothing plus the
batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss", 2017).

Label smoothing uses ``F.cross_entropy(..., label_smoothing=ε)``: torch mixes the one-hot target
with the uniform distribution over the C classes, ``(1 − ε)·onehot + ε/C``, so the loss is
``(1 − ε)·CE + ε·mean_c(−log p_c)`` — Szegedy et al.'s definition, the one torchreid's
``CrossEntropyLabelSmooth`` uses (the tests check the formula against the installed torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError
from mgkd.reid.metrics import squared_euclidean

_SQRT_EPS = 1e-12  # squared distances are clamped here before sqrt: finite gradient at 0


def _check_epsilon(epsilon: float, key: str) -> None:
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not 0.0 <= epsilon < 1.0:
        raise ConfigError(f"{key}: expected a label-smoothing factor in [0, 1), got {epsilon!r}. "
                          "Use 0.1 (the usual re-ID value) or 0 for plain cross-entropy.")


def _check_margin(margin: float | None, key: str) -> None:
    if margin is None:
        return
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (
            math.isfinite(margin) and margin >= 0.0):
        raise ConfigError(f"{key}: expected a margin >= 0 or null (soft margin), got {margin!r}. "
                          "Use 0.3 (the usual re-ID value) or null for log(1 + exp(d_ap − d_an)).")


def label_smoothing_ce(logits: torch.Tensor, targets: torch.Tensor,
                       epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against ``(1 − ε)·onehot + ε/C``, mean over the batch (float32 under autocast)."""
    _check_epsilon(epsilon, "epsilon")
    return F.cross_entropy(logits.float(), targets, label_smoothing=float(epsilon))


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor,
                       margin: float | None = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss on (B, D) embeddings with (B,) integer labels.

    For each anchor: the farthest positive (same label, not itself) and the nearest negative
    (another label), Euclidean distances in float32; ``relu(d_ap − d_an + margin)``, or
    ``softplus(d_ap − d_an)`` when ``margin`` is None. The mean runs over the anchors that have a
    positive and a negative (a triplet needs both); with none the loss is a zero that still
    backpropagates. Vectorised, no host sync.
    """
    _check_margin(margin, "margin")
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        points = embeddings.float()
        distance = squared_euclidean(points, points).clamp(min=_SQRT_EPS).sqrt()
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        itself = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
        positive = same & ~itself
        negative = ~same
        hardest_positive = torch.where(positive, distance, -math.inf).amax(dim=1)
        hardest_negative = torch.where(negative, distance, math.inf).amin(dim=1)
        usable = positive.any(dim=1) & negative.any(dim=1)
        # Anchors without a positive or a negative get a finite stand-in; their term is masked out.
        gap = torch.where(usable, hardest_positive - hardest_negative, torch.zeros_like(distance[:, 0]))
        per_anchor = F.softplus(gap) if margin is None else F.relu(gap + float(margin))
        return (per_anchor * usable).sum() / usable.sum().clamp(min=1)


@dataclass(frozen=True)
class ReidBaseLoss:
    """``ce_epsilon``-smoothed identity CE + ``triplet_weight`` · batch-hard triplet.

    Calling it returns the already-weighted components ``{"ce": ..., "triplet": ...}``; the
    training loss is their sum. ``triplet_margin=None`` selects the soft margin.
    """
    ce_epsilon: float = 0.1
    triplet_margin: float | None = 0.3
    triplet_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_epsilon(self.ce_epsilon, "ce_epsilon")
        _check_margin(self.triplet_margin, "triplet_margin")
        weight = self.triplet_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                math.isfinite(weight) and weight >= 0.0):
            raise ConfigError(f"triplet_weight: expected a finite number >= 0, got {weight!r}. "
                              "Use 1.0 (the usual re-ID base) or 0 to train on cross-entropy only.")

    def __call__(self, logits: torch.Tensor, embeddings: torch.Tensor,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = label_smoothing_ce(logits, targets, self.ce_epsilon)
        if self.triplet_weight:
            triplet = self.triplet_weight * batch_hard_triplet(embeddings, targets,
                                                               self.triplet_margin)
        else:
            triplet = ce.new_zeros(())
        return {"ce": ce, "triplet": triplet}
