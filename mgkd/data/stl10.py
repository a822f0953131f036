"""STL-10 (Coates, Ng and Lee, AISTATS 2011) from its official binary files, resized once.

Layout under ``data_dir``: ``stl10_binary/train_X.bin``, ``train_y.bin``, ``test_X.bin``,
``test_y.bin`` (the extracted ``stl10_binary.tar.gz``; the unlabeled split is not read). Each
``*_X.bin`` holds uint8 images of 3 x 96 x 96, one after the other, each channel stored
column by column (column-major, as MATLAB writes); each ``*_y.bin`` one uint8 label per image,
1 to 10. The images are resized to ``image_size`` (default 32, the size the CIFAR zoo and the
paper's transfer experiment use).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgkd.data.containers import DatasetSpec, ImageSplit, SourceData
from mgkd.data.resize import resize_uint8
from mgkd.errors import DataError

logger = logging.getLogger(__name__)

FOLDER = "stl10_binary"
SIDE = 96
CHANNELS = 3
NUM_CLASSES = 10
TRAIN_IMAGES = 5000
FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
# STL-10's images are ImageNet crops: the usual ImageNet channel statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = (f"{FOLDER}/train_X.bin, train_y.bin, test_X.bin, test_y.bin (uint8 images of "
          f"{CHANNELS}x{SIDE}x{SIDE}, column-major; uint8 labels 1-{NUM_CLASSES})")


def read_images(path: Path) -> torch.Tensor:
    """The images of one ``*_X.bin`` file as a (N, 3, 96, 96) uint8 tensor (row-major)."""
    raw = np.fromfile(path, dtype=np.uint8)
    per_image = CHANNELS * SIDE * SIDE
    if raw.size == 0 or raw.size % per_image:
        raise DataError(f"STL-10 file {path} holds {raw.size} bytes, not a whole number of "
                        f"{CHANNELS}x{SIDE}x{SIDE} images ({per_image} bytes each); it is not an "
                        f"official STL-10 binary file. Extract {URL} again.")
    # Each channel is stored column by column: swap the last two axes to get (row, column).
    images = raw.reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 1, 3, 2)
    return torch.from_numpy(np.ascontiguousarray(images))


def read_labels(path: Path, count: int) -> torch.Tensor:
    """The labels of one ``*_y.bin`` file, shifted from 1-10 to 0-9 (int64)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size != count:
        raise DataError(f"STL-10 file {path} holds {raw.size} labels but its image file "
                        f"{count} images; the pair does not belong together. Extract {URL} again.")
    if raw.size and (raw.min() < 1 or raw.max() > NUM_CLASSES):
        raise DataError(f"STL-10 file {path} holds labels in [{raw.min()}, {raw.max()}]; the "
                        f"official files hold 1 to {NUM_CLASSES}. Extract {URL} again.")
    return torch.from_numpy(raw.astype(np.int64) - 1)


@dataclass(frozen=True)
class Stl10Source:
    """STL-10's labelled train (5,000) and test (8,000) images, resized to ``image_size``."""

    name: str = "stl10"

    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        size = options["image_size"]
        return DatasetSpec(self.name, NUM_CLASSES, size, size, CHANNELS, IMAGENET_MEAN,
                           IMAGENET_STD, max(1, size // 8), True)

    def train_count(self, options: dict[str, Any]) -> int:
        return TRAIN_IMAGES

    def check_available(self, data_dir: Path) -> None:
        folder = data_dir / FOLDER
        missing = [name for pair in FILES.values() for name in pair
                   if not (folder / name).is_file()]
        if missing:
            where = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
            raise DataError(f"Data set 'stl10' not found: expected the official binary files at "
                            f"{data_dir}/{LAYOUT}, but {folder} {where}. Download {URL} and "
                            f"extract it into {data_dir}.")

    def download(self, data_dir: Path) -> Path:
        raise DataError(f"'stl10' is not downloaded by mgkd (2.6 GB): download {URL} yourself and "
                        f"extract it into {data_dir}, which then holds {LAYOUT}.")

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        self.check_available(data_dir)
        splits = {}
        for split, (images_file, labels_file) in FILES.items():
            images = read_images(data_dir / FOLDER / images_file)
            labels = read_labels(data_dir / FOLDER / labels_file, len(images))
            splits[split] = ImageSplit(resize_uint8(images, options["image_size"]), labels)
        logger.info("loaded stl10 from %s: %d train, %d test at %dx%d", data_dir,
                    len(splits["train"]), len(splits["test"]), options["image_size"],
                    options["image_size"])
        return SourceData(train=splits["train"], test=splits["test"])


STL10 = Stl10Source()
