"""CIFAR-100 and CIFAR-10 in torchvision's on-disk format under ``data_dir``.

Read through torchvision's classes with the md5 check replaced by a presence check (md5 stays in
:meth:`CifarSource.download`, the only place that touches the network).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgkd.data.containers import DatasetSpec, ImageSplit, SourceData
from mgkd.errors import DataError

logger = logging.getLogger(__name__)

_TRAIN_IMAGES = 50_000
_CROP_PADDING = 4
_SIZE = 32


def _reader(name: str) -> Any:
    """The torchvision reader class of a CIFAR set; torchvision (about a second to import) loads
    only here, when CIFAR is actually read or checked."""
    from mgkd.data.cifar_readers import CIFAR_READERS
    return CIFAR_READERS[name]


@dataclass(frozen=True)
class CifarSource:
    """One CIFAR set: its folder name inside ``data_dir``, class count and channel statistics."""

    name: str
    folder: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        return DatasetSpec(self.name, self.num_classes, _SIZE, _SIZE, 3, self.mean, self.std,
                           _CROP_PADDING, True)

    def train_count(self, options: dict[str, Any]) -> int:
        return _TRAIN_IMAGES

    def _expected_files(self) -> list[str]:
        reader = _reader(self.name)
        return [entry[0] for entry in reader.train_list + reader.test_list] + [reader.meta["filename"]]

    def _missing_message(self, data_dir: Path, missing: list[str]) -> str:
        folder = data_dir / self.folder
        what = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        return (
            f"Data set {self.name!r} not found: expected torchvision's extracted folder at {folder} "
            f"(with files {', '.join(self._expected_files())}), but it {what}. "
            f"Get it with `mgkd download {self.name} --data-dir {data_dir}`, or place torchvision's "
            f"extracted `{self.folder}` folder in {data_dir}."
        )

    def check_available(self, data_dir: Path) -> None:
        folder = data_dir / self.folder
        missing = [f for f in self._expected_files() if not (folder / f).is_file()]
        if missing:
            raise DataError(self._missing_message(data_dir, missing))

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        self.check_available(data_dir)
        reader = _reader(self.name)
        splits = []
        for train in (True, False):
            try:
                dataset = reader(str(data_dir), train=train, download=False)
                images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
                labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
            except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, RuntimeError) as exc:
                raise DataError(
                    f"Data set {self.name!r} under {data_dir / self.folder} is malformed "
                    f"({type(exc).__name__}: {exc}); delete the folder and run "
                    f"`mgkd download {self.name} --data-dir {data_dir}`."
                ) from exc
            if images.dtype != torch.uint8:
                raise DataError(f"Data set {self.name!r}: images must be uint8, found {images.dtype}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise DataError(
                    f"Data set {self.name!r}: labels must lie in [0, {self.num_classes - 1}], found "
                    f"[{int(labels.min())}, {int(labels.max())}]"
                )
            splits.append(ImageSplit(images, labels))
        logger.info("loaded %s from %s: %d train, %d test", self.name, data_dir, len(splits[0]),
                    len(splits[1]))
        return SourceData(train=splits[0], test=splits[1])

    def download(self, data_dir: Path) -> Path:
        data_dir.mkdir(parents=True, exist_ok=True)
        import torchvision.datasets
        dataset_class = getattr(torchvision.datasets, self.name.upper())
        logger.info("downloading %s into %s", self.name, data_dir)
        try:
            for train in (True, False):
                dataset_class(str(data_dir), train=train, download=True)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"Downloading {self.name!r} into {data_dir} failed: {exc}") from exc
        return data_dir / self.folder


# Usual per-channel statistics of the CIFAR training sets (std over all training pixels).
CIFAR100 = CifarSource("cifar100", "cifar-100-python", 100,
                       (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
CIFAR10 = CifarSource("cifar10", "cifar-10-batches-py", 10,
                      (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
