"""scikit-learn's bundled 8x8 handwritten digits, upsampled once to 16x16, 3 channels (no files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mgkd.data.containers import DatasetSpec, ImageSplit, SourceData
from mgkd.errors import ConfigError

# Measured once on the 1,438-image digits training split after scaling to 0-255 and bilinear
# upsampling to 16x16 (tests/test_data.py recomputes them and checks these constants).
DIGITS_MEAN = 0.3056
DIGITS_STD = 0.3186
DIGITS_SIZE = 16
_TEST_FRACTION = 0.2
_IMAGES = 1797  # scikit-learn's bundled digits
_SPLIT_SEED = 0
_CROP_PADDING = 2


@dataclass(frozen=True)
class DigitsSource:
    """The digits data set; its test split is a fixed seeded 20% of the 1,797 images."""

    name: str = "digits"


    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        return DatasetSpec(self.name, 10, DIGITS_SIZE, DIGITS_SIZE, 3, (DIGITS_MEAN,) * 3,
                           (DIGITS_STD,) * 3, _CROP_PADDING, False)

    def train_count(self, options: dict[str, Any]) -> int:
        return _IMAGES - round(_IMAGES * _TEST_FRACTION)

    def check_available(self, data_dir: Path) -> None:
        """Always available: bundled with scikit-learn."""

    def download(self, data_dir: Path) -> Path:
        raise ConfigError(f"data.name: {self.name!r} needs no download (bundled with scikit-learn); "
                          "`mgkd download` is only for data sets read from files (cifar100, cifar10).")

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        raw = torch.as_tensor(bunch.images, dtype=torch.float32)  # (N, 8, 8), values 0-16
        scaled = (raw * (255.0 / 16.0)).unsqueeze(1)
        upsampled = F.interpolate(scaled, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear",
                                  align_corners=False)
        images = upsampled.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
        labels = torch.as_tensor(bunch.target, dtype=torch.int64)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
        num_test = round(len(labels) * _TEST_FRACTION)
        test_idx = order[:num_test].sort().values
        train_idx = order[num_test:].sort().values
        return SourceData(
            train=ImageSplit(images[train_idx], labels[train_idx]),
            test=ImageSplit(images[test_idx], labels[test_idx]),
        )


DIGITS = DigitsSource()
