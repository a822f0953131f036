"""The data set registry: name -> source. Adding a data set is one module declaring a source object
(anything shaped like :class:`DatasetSource`) plus one entry in :data:`SOURCES`."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Protocol

import torch

from mgkd.data.cifar import CIFAR10, CIFAR100
from mgkd.data.containers import DatasetSpec, SourceData
from mgkd.data.digits import DIGITS
from mgkd.data.market1501 import MARKET1501
from mgkd.data.synthetic import SYNTHETIC
from mgkd.errors import ConfigError


class DatasetSource(Protocol):
    """What every data set provides. ``task`` picks the split logic and the training batches."""

    name: str
    task: str  # "classification" or "reid"

    def validate_options(self, options: Any) -> dict[str, Any]:
        """``data_options`` completed with defaults; ConfigError naming the key if bad."""
        ...

    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        """The spec, loading nothing (a re-ID spec's ``num_classes`` is nominal until split)."""
        ...

    def check_available(self, data_dir: Path) -> None:
        """DataError naming the expected layout if the files are missing (presence only)."""
        ...

    def download(self, data_dir: Path) -> Path:
        """Fetch the data set into ``data_dir`` and return its folder, or explain why not."""
        ...

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        """The training images and the data set's own test split (CPU tensors)."""
        ...


class ClassificationSource(DatasetSource, Protocol):
    """A classification data set also knows its training-set size without loading."""

    def train_count(self, options: dict[str, Any]) -> int:
        ...


class ListedTrainFiles(Protocol):
    """Person and camera ids of a re-ID training set's files, in load order."""

    pids: torch.Tensor
    cameras: torch.Tensor


class ReidSource(DatasetSource, Protocol):
    """A person re-ID data set also lists its training files' ids without decoding them."""

    def train_listing(self, data_dir: Path, options: dict[str, Any]) -> ListedTrainFiles:
        ...


SOURCES: Mapping[str, DatasetSource] = MappingProxyType(
    {source.name: source for source in (CIFAR100, CIFAR10, DIGITS, SYNTHETIC, MARKET1501)}
)

DATASET_NAMES: tuple[str, ...] = tuple(SOURCES)


def get_source(name: str) -> DatasetSource:
    """The registered source called ``name``; ConfigError listing the allowed names otherwise."""
    source = SOURCES.get(name) if isinstance(name, str) else None
    if source is None:
        raise ConfigError(f"data.name: unknown data set {name!r}; allowed: {', '.join(DATASET_NAMES)}")
    return source
