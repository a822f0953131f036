"""Prediction noise and expected calibration error of a classifier's softmax outputs.

* **Prediction noise** (the paper's analysis): per sample, Σ_{j ≠ argmax} |p_j − (1 − p_max)/(C − 1)|,
  how unevenly the probability left after the top class is spread over the other C − 1 classes
  (0: spread evenly, as label smoothing would; at most 2(1 − p_max)(C − 2)/(C − 1)); the mean
  over samples is reported.
* **Expected calibration error** (Guo et al., ICML 2017): the confidences p_max fall into
  ``bins`` equal-width bins ((m−1)/M, m/M]; ECE = Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|, a fraction
  in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mgkd.errors import ConfigError

DEFAULT_BINS = 15


def prediction_noise(probs: torch.Tensor) -> torch.Tensor:
    """Per-sample prediction noise of ``probs`` (N, C) with C >= 2 (rows sum to 1)."""
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ConfigError(f"prediction noise needs (N, C>=2) probabilities, got shape "
                          f"{tuple(probs.shape)}")
    probs = probs.double()
    top, index = probs.max(dim=1)
    even = (1.0 - top) / (probs.shape[1] - 1)
    spread = (probs - even.unsqueeze(1)).abs()
    return spread.scatter(1, index.unsqueeze(1), 0.0).sum(dim=1)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                               bins: int = DEFAULT_BINS) -> float:
    """ECE of ``probs`` (N, C) against ``labels`` (N,) over ``bins`` equal-width confidence bins."""
    if bins < 1:
        raise ConfigError(f"--bins must be 1 or more, got {bins}")
    if len(probs) == 0:
        raise ConfigError("expected calibration error needs at least one sample")
    confidence, predicted = probs.double().max(dim=1)
    correct = (predicted == labels).double()
    # Bin m (0-based) holds confidences in (m/M, (m+1)/M]; a confidence of exactly 0 joins bin 0.
    # ECE = sum over bins of (n_m / N) |acc_m - conf_m| = sum |acc_sum_m - conf_sum_m| / N.
    which = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, confidence)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct)
    return float((acc_sum - conf_sum).abs().sum() / len(probs))


@dataclass(frozen=True)
class NoiseReport:
    """What ``mgkd noise`` prints and writes (accuracy in percent, ECE a fraction)."""

    model: str
    arch: str
    dataset: str
    split: str
    samples: int
    accuracy: float
    prediction_noise: float
    ece: float
    ece_bins: int
    mean_confidence: float

def noise_of(logits: torch.Tensor, labels: torch.Tensor, *, bins: int = DEFAULT_BINS
             ) -> dict[str, float]:
    """Accuracy (%), mean prediction noise, ECE and mean confidence of ``logits``."""
    probs = torch.softmax(logits.double(), dim=1)
    return {"accuracy": float((probs.argmax(1) == labels).double().mean() * 100),
            "prediction_noise": float(prediction_noise(probs).mean()),
            "ece": expected_calibration_error(probs, labels, bins),
            "mean_confidence": float(probs.max(1).values.mean())}
