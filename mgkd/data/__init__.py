"""Data sets, train/val/test splits and on-device batching with augmentation.

Every split is held as one uint8 tensor (N, C, H, W) plus int64 labels (and cameras for person re-ID).
Training moves the split to the training device once; :func:`make_batches` then draws batches there,
doing the shuffle (or identity sampling), random crop, flip, random erasing and normalisation as a
handful of vectorised tensor ops per batch (no DataLoader, no worker processes, no per-sample Python).

Data sets are listed in the catalog (:mod:`mgkd.catalog.datasets`: task, options, source) and each
has a source module here: ``cifar100`` / ``cifar10`` (:mod:`.cifar`), ``digits`` (:mod:`.digits`),
``synthetic`` (:mod:`.synthetic`), and for person re-ID ``market1501`` (:mod:`.market1501`) and
``dukemtmcreid`` (:mod:`.dukemtmcreid`), both in the bounding-box layout (:mod:`.bounding_boxes`),
and ``msmt17`` (:mod:`.msmt17`, read through its list files).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mgkd.data.augment import AugmentPlan, Augmenter
from mgkd.data.batches import DeviceBatches, EpochBatches, IdentityBatches, make_batches
from mgkd.data.containers import (
    Batch,
    BatchBuffer,
    DatasetSpec,
    DataSplits,
    EvalSplit,
    ImageSplit,
    RetrievalSplit,
    SourceData,
)
from mgkd.data.registry import SOURCES, DatasetSource, dataset_spec, get_source
from mgkd.data.splits import hold_out_identities, load_splits, validation_size
from mgkd.data.synthetic import SYNTHETIC_DEFAULTS

if TYPE_CHECKING:
    from mgkd.config import ExperimentConfig


def _root(data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser().absolute()


def check_available(name: str, data_dir: str | Path) -> None:
    """Raise :class:`~mgkd.errors.DataError` if a data set's files are missing under ``data_dir``
    (presence only). ``digits`` and ``synthetic`` need no files and always pass."""
    get_source(name).check_available(_root(data_dir))


def download_dataset(name: str, data_dir: str | Path) -> Path:
    """Download and verify a data set into ``data_dir``; return its folder.

    The only function here that touches the network; nothing else downloads. Data sets that need no
    download, or cannot be downloaded (Market-1501), say so and where their files go.
    """
    return get_source(name).download(_root(data_dir))


def load_config_splits(config: ExperimentConfig) -> DataSplits:
    """The train/val/test splits a config asks for, as CPU tensors."""
    return load_splits(config.dataset, Path(config.data_dir).expanduser(),
                       val_fraction=config.val_fraction, train_subset=config.train_subset,
                       seed=config.split_seed, options=config.data_options)


def config_validation_size(config: ExperimentConfig) -> int:
    """Validation images (re-ID: queries) a run of ``config`` selects on, the ``n`` of its score's
    standard error (0 with ``val_fraction: 0``); decodes nothing."""
    return validation_size(config.dataset, config.data_options, config.val_fraction,
                           config.train_subset, data_dir=Path(config.data_dir).expanduser(),
                           seed=config.split_seed)


__all__ = [
    "SOURCES", "SYNTHETIC_DEFAULTS", "AugmentPlan", "Augmenter", "Batch", "BatchBuffer",
    "DataSplits",
    "DatasetSource", "DatasetSpec", "DeviceBatches", "EpochBatches", "EvalSplit", "IdentityBatches",
    "ImageSplit", "RetrievalSplit", "SourceData", "check_available", "config_validation_size",
    "dataset_spec", "download_dataset", "get_source", "hold_out_identities", "load_config_splits",
    "load_splits", "make_batches", "validation_size",
]
