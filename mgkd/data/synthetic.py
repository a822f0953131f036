"""Learnable random data (smooth per-class prototypes plus noise) built from options, fully seeded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from mgkd.catalog.datasets import DATASETS
from mgkd.data.containers import DatasetSpec, ImageSplit, SourceData
from mgkd.errors import ConfigError

#: Default options of the ``synthetic`` data set (read-only; copy before changing).
SYNTHETIC_DEFAULTS: Mapping[str, int] = MappingProxyType(
    {key: int(option.default or 0) for key, option in DATASETS["synthetic"].options.items()})

# Prototype grid (image_size // _CELL cells a side, bilinear-upsampled so that a few pixels of crop
# shift keep the class recognisable) and per-pixel Gaussian noise on the 0-255 scale.
_CELL = 4
_NOISE = 40.0
_CHUNK = 4096
_MEAN = 0.5
_STD = 0.25


def _samples(prototypes: torch.Tensor, count: int, generator: torch.Generator) -> ImageSplit:
    """``count`` class-balanced noisy copies of the prototypes, drawn from ``generator``."""
    num_classes = prototypes.shape[0]
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
    images = torch.empty((count, *prototypes.shape[1:]), dtype=torch.uint8)
    for start in range(0, count, _CHUNK):
        chunk = labels[start : start + _CHUNK]
        noise = torch.randn((len(chunk), *prototypes.shape[1:]), generator=generator) * _NOISE
        images[start : start + len(chunk)] = (prototypes[chunk] + noise).round_().clamp_(0, 255).to(torch.uint8)
    return ImageSplit(images, labels)


@dataclass(frozen=True)
class SyntheticSource:
    """Random square images of any size and class count (options: :data:`SYNTHETIC_DEFAULTS`)."""

    name: str = "synthetic"


    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        size = options["image_size"]
        return DatasetSpec(self.name, options["num_classes"], size, size, 3, (_MEAN,) * 3, (_STD,) * 3,
                           max(1, size // 8), True)

    def train_count(self, options: dict[str, Any]) -> int:
        return int(options["num_train"])

    def check_available(self, data_dir: Path) -> None:
        """Always available: generated locally."""

    def download(self, data_dir: Path) -> Path:
        raise ConfigError(f"data.name: {self.name!r} needs no download (generated locally); "
                          "`mgkd download` is only for data sets read from files (cifar100, cifar10).")

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        generator = torch.Generator().manual_seed(options["seed"])
        size = options["image_size"]
        coarse = max(2, size // _CELL)
        grid = torch.rand((options["num_classes"], 3, coarse, coarse), generator=generator) * 255.0
        prototypes = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
        train = _samples(prototypes, options["num_train"], generator)
        test = _samples(prototypes, options["num_test"], generator)
        return SourceData(train=train, test=test)


SYNTHETIC = SyntheticSource()
