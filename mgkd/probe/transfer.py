"""Linear-probe transfer: a frozen model's penultimate features (the pooled embedding that feeds
its classifier) on another data set, and a linear classifier trained on them.

The backbone runs once per split in eval mode without gradients (no weight and no BatchNorm
statistic changes; the paper's code instead swapped the head by attribute name, which silently
missed several architectures and trained an unused layer). The features are standardised with the
training split's mean and spread, then a softmax regression trains on them with Adam, seeded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.data import DatasetSpec, ImageSplit
from mgkd.errors import ConfigError
from mgkd.probe.outputs import run_model


@dataclass(frozen=True)
class ProbeSettings:
    """How the linear probe trains on the cached features."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be 1 or more, got "
                                  f"{getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"--lr must be > 0 and --weight-decay >= 0, got {self.lr} and "
                              f"{self.weight_decay}")


@dataclass(frozen=True)
class ProbeResult:
    """Accuracies in percent; ``feature_dim`` is the embedding width the probe saw."""

    feature_dim: int
    train_images: int
    test_images: int
    train_acc: float
    test_acc: float
    feature_seconds: float
    probe_seconds: float

def train_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int,
                settings: ProbeSettings) -> nn.Linear:
    """A softmax regression on (already standardised) features, trained with minibatch Adam."""
    generator = torch.Generator().manual_seed(settings.seed)
    probe = nn.Linear(train_x.shape[1], num_classes, dtype=train_x.dtype, device=train_x.device)
    with torch.no_grad():  # seeded initialisation, independent of the global generator
        bound = 1.0 / train_x.shape[1] ** 0.5
        probe.weight.copy_(torch.rand(probe.weight.shape, generator=generator) * 2 * bound - bound)
        probe.bias.zero_()
    optimiser = torch.optim.Adam(probe.parameters(), lr=settings.lr,
                                 weight_decay=settings.weight_decay)
    for _ in range(settings.epochs):
        order = torch.randperm(len(train_x), generator=generator).to(train_x.device)
        for start in range(0, len(order), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            loss = F.cross_entropy(probe(train_x[rows]), train_y[rows])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return probe.eval()


def _accuracy(probe: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((probe(x).argmax(1) == y).double().mean() * 100)


def linear_probe(model: nn.Module, train: ImageSplit, test: ImageSplit, spec: DatasetSpec, *,
                 settings: ProbeSettings = ProbeSettings(),
                 device: torch.device | str = "cpu") -> ProbeResult:
    """Compute ``model``'s embeddings of both splits once, train a linear probe on the training
    ones and score it on the test ones."""
    started = time.perf_counter()
    train_x = run_model(model, train, spec, keep="embedding", device=device).features[0]
    test_x = run_model(model, test, spec, keep="embedding", device=device).features[0]
    features_done = time.perf_counter()
    mean = train_x.mean(dim=0, keepdim=True)
    spread = train_x.std(dim=0, keepdim=True).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / spread, (test_x - mean) / spread
    probe = train_probe(train_x, train.labels.cpu(), spec.num_classes, settings)
    return ProbeResult(
        feature_dim=int(train_x.shape[1]), train_images=len(train), test_images=len(test),
        train_acc=_accuracy(probe, train_x, train.labels.cpu()),
        test_acc=_accuracy(probe, test_x, test.labels.cpu()),
        feature_seconds=features_done - started, probe_seconds=time.perf_counter() - features_done)
