"""Data sets, train/val/test splits and on-device batching with augmentation.

Every split is held as one uint8 tensor (N, C, H, W) plus int64 labels (and cameras for person re-ID).
Training moves the split to the training device once; :func:`make_batches` then draws batches there,
doing the shuffle (or identity sampling), random crop, flip, random erasing and normalisation as a
handful of vectorised tensor ops per batch (no DataLoader, no worker processes, no per-sample Python).

Data sets live in a registry (:mod:`mgkd.data.registry`), one module each: ``cifar100`` / ``cifar10``
(:mod:`.cifar`), ``digits`` (:mod:`.digits`), ``synthetic`` (:mod:`.synthetic`) and ``market1501``
(:mod:`.market1501`, person re-ID).
"""

from __future__ import annotations

from pathlib import Path

from mgkd.data.augment import AugmentPlan, Augmenter
from mgkd.data.batches import DeviceBatches, EpochBatches, IdentityBatches, make_batches
from mgkd.data.containers import (
    TASKS,
    Batch,
    DatasetSpec,
    DataSplits,
    EvalSplit,
    ImageSplit,
    RetrievalSplit,
    SourceData,
)
from mgkd.data.registry import DATASET_NAMES, SOURCES, DatasetSource, get_source
from mgkd.data.splits import hold_out_identities, load_splits, validation_size
from mgkd.data.synthetic import SYNTHETIC_DEFAULTS


def validate_data_options(name: str, options: dict | None) -> dict:
    """Check a data set's options and return them completed with defaults.

    ``synthetic`` takes the keys of :data:`SYNTHETIC_DEFAULTS`; ``market1501`` takes ``height``,
    ``width``, ``instances`` and ``max_identities``; other data sets accept ``None`` or ``{}``. Raises
    :class:`~mgkd.errors.ConfigError` naming the key and the allowed values.
    """
    return get_source(name).validate_options(options)


def dataset_spec(name: str, options: dict | None = None) -> DatasetSpec:
    """The :class:`DatasetSpec` of a data set (cheap: loads nothing; a re-ID spec's ``num_classes`` is
    the nominal training identity count until :func:`load_splits` holds validation identities out)."""
    source = get_source(name)
    return source.spec(source.validate_options(options))


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


__all__ = [
    "DATASET_NAMES", "SOURCES", "SYNTHETIC_DEFAULTS", "TASKS", "AugmentPlan", "Augmenter", "Batch",
    "DataSplits", "DatasetSource", "DatasetSpec", "DeviceBatches", "EpochBatches", "EvalSplit",
    "IdentityBatches", "ImageSplit", "RetrievalSplit", "SourceData", "check_available", "dataset_spec",
    "download_dataset", "get_source", "hold_out_identities", "load_splits", "make_batches",
    "validate_data_options", "validation_size",
]
