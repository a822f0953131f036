"""Tiny-ImageNet (the 200-class, 64 x 64 subset of ImageNet of Stanford's CS231n) from its
official folder, decoded and resized once.

Layout under ``data_dir`` (the extracted ``tiny-imagenet-200.zip``)::

    tiny-imagenet-200/wnids.txt                       200 class ids (n01443537, ...), one a line
    tiny-imagenet-200/train/<wnid>/images/*.JPEG      500 training images per class
    tiny-imagenet-200/val/val_annotations.txt         <file>\\t<wnid>\\t<box> per validation image
    tiny-imagenet-200/val/images/*.JPEG               10,000 validation images

A class's label is its line in ``wnids.txt`` (0-based). The labelled validation images serve as
the test split (the official test images carry no labels and are not read). Grey-scale JPEGs
(there are some) become 3 equal channels. Images are resized to ``image_size`` (default 32).
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
from mgkd.data.stl10 import IMAGENET_MEAN, IMAGENET_STD
from mgkd.errors import DataError

logger = logging.getLogger(__name__)

FOLDER = "tiny-imagenet-200"
NUM_CLASSES = 200
TRAIN_IMAGES = 100_000
SIDE = 64
_CHUNK = 2048  # images decoded at a time
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
LAYOUT = (f"{FOLDER}/wnids.txt, {FOLDER}/train/<wnid>/images/*.JPEG, "
          f"{FOLDER}/val/val_annotations.txt and {FOLDER}/val/images/*.JPEG")


def _layout_error(data_dir: Path, problem: str) -> DataError:
    return DataError(f"Data set 'tiny_imagenet' under {data_dir}: {problem}. Expected the "
                     f"official layout {LAYOUT}; download {URL} and extract it into {data_dir}.")


def read_wnids(root: Path, data_dir: Path) -> list[str]:
    """The 200 distinct class ids in ``wnids.txt`` order."""
    wnids = [line.strip() for line in (root / "wnids.txt").read_text().splitlines()
             if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise _layout_error(data_dir, f"{root / 'wnids.txt'} repeats class ids")
    if len(wnids) != NUM_CLASSES:
        raise _layout_error(data_dir, f"{root / 'wnids.txt'} lists {len(wnids)} class ids; the "
                                      f"official file lists {NUM_CLASSES}")
    return wnids


def _decode_chunk(paths: list[Path]) -> torch.Tensor:
    """The images at ``paths`` as one (N, 3, H, W) uint8 tensor (all must share a size)."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"Data set 'tiny_imagenet': {path} is not a readable image ({exc}); "
                            f"extract {URL} again.") from exc
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise DataError(f"Data set 'tiny_imagenet': images of several sizes {sorted(sizes)} near "
                        f"{paths[0]}; the official images are all {SIDE}x{SIDE}. Extract {URL} "
                        "again.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def decode_resized(paths: list[Path], size: int) -> torch.Tensor:
    """The images at ``paths`` decoded and resized to ``size`` x ``size``, a chunk at a time (the
    full-size images of a split are never all in memory)."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(paths), _CHUNK):
        out[start:start + _CHUNK] = resize_uint8(_decode_chunk(paths[start:start + _CHUNK]), size)
    return out


def list_train(root: Path, wnids: list[str], data_dir: Path) -> tuple[list[Path], list[int]]:
    """Training image files and labels, class by class in ``wnids.txt`` order, files sorted."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        files = sorted((root / "train" / wnid / "images").glob("*.JPEG"))
        if not files:
            raise _layout_error(data_dir, f"class {wnid} of wnids.txt has no images in "
                                          f"{root / 'train' / wnid / 'images'}")
        paths += files
        labels += [label] * len(files)
    return paths, labels


def list_val(root: Path, wnids: list[str], data_dir: Path) -> tuple[list[Path], list[int]]:
    """Validation image files and labels in ``val_annotations.txt`` order."""
    index = {wnid: i for i, wnid in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    annotations = root / "val" / "val_annotations.txt"
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise _layout_error(data_dir, f"line {number} of {annotations} is not "
                                          "'<file>\\t<wnid>\\t...' with a wnid of wnids.txt")
        paths.append(root / "val" / "images" / fields[0])
        labels.append(index[fields[1]])
    if not paths:
        raise _layout_error(data_dir, f"{annotations} lists no images")
    return paths, labels


@dataclass(frozen=True)
class TinyImageNetSource:
    """Tiny-ImageNet's 100,000 training and 10,000 labelled validation images (the test split)."""

    name: str = "tiny_imagenet"

    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        size = options["image_size"]
        return DatasetSpec(self.name, NUM_CLASSES, size, size, 3, IMAGENET_MEAN, IMAGENET_STD,
                           max(1, size // 8), True)

    def train_count(self, options: dict[str, Any]) -> int:
        return TRAIN_IMAGES

    def check_available(self, data_dir: Path) -> None:
        root = data_dir / FOLDER
        needed = [root / "wnids.txt", root / "train", root / "val" / "val_annotations.txt",
                  root / "val" / "images"]
        missing = [str(p.relative_to(data_dir)) for p in needed if not p.exists()]
        if missing:
            raise _layout_error(data_dir, f"{', '.join(missing)} not found")

    def download(self, data_dir: Path) -> Path:
        raise DataError(f"'tiny_imagenet' is not downloaded by mgkd: download {URL} yourself and "
                        f"extract it into {data_dir}, which then holds {LAYOUT}.")

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        self.check_available(data_dir)
        root = data_dir / FOLDER
        wnids = read_wnids(root, data_dir)
        size = options["image_size"]
        splits = []
        for lister in (list_train, list_val):
            paths, labels = lister(root, wnids, data_dir)
            missing = next((p for p in paths if not p.is_file()), None)
            if missing is not None:
                raise _layout_error(data_dir, f"{missing} is listed but missing")
            images = decode_resized(paths, size)
            splits.append(ImageSplit(images, torch.tensor(labels, dtype=torch.int64)))
        logger.info("loaded tiny_imagenet from %s: %d train, %d test at %dx%d", data_dir,
                    len(splits[0]), len(splits[1]), size, size)
        return SourceData(train=splits[0], test=splits[1])


TINY_IMAGENET = TinyImageNetSource()
