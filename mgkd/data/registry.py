"""The data set registry: name -> source, derived from the catalog (:mod:`mgkd.catalog.datasets`),
whose entry names each data set's source object, its task and its options. Adding a data set is
one module declaring a source object (anything shaped like :class:`DatasetSource`) plus its entry
in the catalog."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Protocol

import torch

from mgkd.catalog.datasets import DATASETS, dataset_entry, validate_data_options
from mgkd.data.containers import DatasetSpec, SourceData


class DatasetSource(Protocol):
    """What every data set provides (its task and options are in the catalog)."""

    name: str

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


def _source(location: str) -> DatasetSource:
    module, name = location.split(":")
    return getattr(importlib.import_module(f"mgkd.data.{module}"), name)


SOURCES: Mapping[str, DatasetSource] = MappingProxyType(
    {name: _source(entry.source) for name, entry in DATASETS.items()})


def get_source(name: str) -> DatasetSource:
    """The registered source called ``name``; ConfigError listing the allowed names otherwise."""
    dataset_entry(name, key="data.name")
    return SOURCES[name]


def dataset_spec(name: str, options: dict | None = None) -> DatasetSpec:
    """The :class:`DatasetSpec` of a data set, its task taken from the catalog (cheap: loads
    nothing; a re-ID spec's ``num_classes`` is the nominal training identity count until
    ``load_splits`` holds validation identities out). Bad options are a ConfigError."""
    spec = get_source(name).spec(validate_data_options(name, options))
    return dataclasses.replace(spec, task=dataset_entry(name).task)
