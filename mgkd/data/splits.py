"""Train / val / test splits, per task.

* classification: ``train_subset`` keeps the first N training images; a permutation seeded by ``seed``
  sends ``round(N * val_fraction)`` of them (at least 1) to val.
* reid: a seeded choice of ``round(val_fraction x identities)`` training identities (at least 1), among
  those seen by two or more cameras, is held out; for each, one image per camera (seeded) becomes a
  val query and the rest the val gallery. Class k is the k-th training identity in person-id order
  (held-out identities keep their classes but no images), so ``spec.num_classes`` is the number of
  training identities whatever ``val_fraction`` is. The test query / gallery are never used for
  selection.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Protocol, cast

import torch

from mgkd.catalog.datasets import dataset_task, is_int, validate_data_options
from mgkd.catalog.tasks import CLASSIFICATION, REID
from mgkd.data.containers import DatasetSpec, DataSplits, ImageSplit, RetrievalSplit, SourceData
from mgkd.data.registry import (ClassificationSource, DatasetSource, ReidSource, dataset_spec,
                                get_source)
from mgkd.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_VAL_FRACTION = 0.5


def _check_val_fraction(val_fraction: Any) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (
        0.0 <= float(val_fraction) <= MAX_VAL_FRACTION
    ):
        raise ConfigError(f"val_fraction: must be a number in [0, {MAX_VAL_FRACTION}], got {val_fraction!r}")


def _check_seed(seed: Any) -> None:
    if not is_int(seed):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")


def _root(data_dir: str | Path | None, name: str) -> Path:
    if data_dir is None:
        raise ConfigError(
            f"data_dir: data set {name!r} is read from files, so its validation size needs data_dir "
            "(the folder that holds the data set); pass data_dir=..."
        )
    return Path(data_dir).expanduser().absolute()


class _TaskSplitter(Protocol):
    def check_arguments(self, spec: DatasetSpec, train_subset: Any) -> None:
        """ConfigError for arguments this task cannot use (checked before anything loads)."""
        ...

    def validation_size(self, source: DatasetSource, options: dict[str, Any], val_fraction: float,
                        train_subset: int | None, seed: int, data_dir: str | Path | None) -> int:
        ...

    def split(self, spec: DatasetSpec, data: SourceData, val_fraction: float,
              train_subset: int | None, seed: int) -> DataSplits:
        ...


# ---- classification ------------------------------------------------------------------------------


def _num_val(total: int, val_fraction: float) -> int:
    """Validation images carved from ``total`` training images (at least 1, at most total - 1)."""
    return min(total - 1, max(1, round(total * float(val_fraction))))


def _check_subset(train_subset: Any, num_classes: int) -> None:
    if train_subset is not None and (not is_int(train_subset) or train_subset < 2 * num_classes):
        raise ConfigError(
            f"train_subset: must be null or an integer >= {2 * num_classes} (2 x {num_classes} classes), "
            f"got {train_subset!r}"
        )


class ClassificationSplitter:
    """Seeded random image split of the training set."""

    def check_arguments(self, spec: DatasetSpec, train_subset: Any) -> None:
        _check_subset(train_subset, spec.num_classes)

    def validation_size(self, source: DatasetSource, options: dict[str, Any], val_fraction: float,
                        train_subset: int | None, seed: int, data_dir: str | Path | None) -> int:
        total = cast(ClassificationSource, source).train_count(options)
        if train_subset is not None:
            total = min(total, train_subset)
        return _num_val(total, val_fraction) if val_fraction > 0 else 0

    def split(self, spec: DatasetSpec, data: SourceData, val_fraction: float,
              train_subset: int | None, seed: int) -> DataSplits:
        _check_subset(train_subset, spec.num_classes)
        train = data.train
        if train_subset is not None:
            if train_subset > len(train):
                raise ConfigError(
                    f"train_subset: must be null or an integer in [{2 * spec.num_classes}, {len(train)}] "
                    f"for {spec.name!r} ({len(train)} training images), got {train_subset}"
                )
            train = train.head(train_subset)
        val: ImageSplit | None = None
        if val_fraction > 0:
            total = len(train)
            order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
            num_val = _num_val(total, val_fraction)
            val = train.select(order[:num_val].sort().values)
            train = train.select(order[num_val:].sort().values)
        else:
            train = train.contiguous()
        return DataSplits(spec=spec, train=train, val=val, test=data.test)


# ---- person re-ID --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """Index tensors into the training listing: images kept for training, val queries, val gallery."""

    train: torch.Tensor
    query: torch.Tensor
    gallery: torch.Tensor


def _first_per_group(groups: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Positions of the smallest key within each group (groups: int64, keys in [0, 1))."""
    order = torch.argsort(groups.double() + keys, stable=True)
    sorted_groups = groups[order]
    first = torch.ones_like(sorted_groups, dtype=torch.bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    return order[first]


def hold_out_identities(pids: torch.Tensor, cameras: torch.Tensor, val_fraction: float,
                        seed: int) -> HeldOut:
    """Choose the validation identities and their query images (see the module docstring)."""
    everything = torch.arange(len(pids))
    empty = everything[:0]
    if val_fraction <= 0:
        return HeldOut(train=everything, query=empty, gallery=empty)
    identities = pids.unique()
    pair_pids = torch.unique(torch.stack([pids, cameras]), dim=1)[0]  # one entry per (id, camera)
    seen_by, cameras_per_id = torch.unique(pair_pids, return_counts=True)
    eligible = seen_by[cameras_per_id >= 2]
    wanted = max(1, round(float(val_fraction) * len(identities)))
    if wanted > len(eligible) or wanted >= len(identities):
        raise ConfigError(
            f"val_fraction: {val_fraction} asks for {wanted} validation identities, but the training set "
            f"has {len(identities)} identities of which {len(eligible)} are seen by two or more cameras "
            "(validation needs such identities and at least one identity left to train on); lower "
            "val_fraction, use more identities (data_options.max_identities), or set val_fraction: 0."
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[:wanted]]
    keys = torch.rand(len(pids), generator=generator, dtype=torch.float64)
    in_val = torch.isin(pids, chosen)
    val_positions = everything[in_val]
    groups = pids[in_val] * (int(cameras.max()) + 1) + cameras[in_val]
    query = val_positions[_first_per_group(groups, keys[in_val])].sort().values
    is_query = torch.zeros(len(pids), dtype=torch.bool)
    is_query[query] = True
    return HeldOut(train=everything[~in_val], query=query, gallery=everything[in_val & ~is_query])


class ReidSplitter:
    """Held-out identities as the validation query / gallery."""

    def check_arguments(self, spec: DatasetSpec, train_subset: Any) -> None:
        self._refuse_subset(train_subset, spec.name)

    @staticmethod
    def _refuse_subset(train_subset: Any, name: str) -> None:
        if train_subset is not None:
            raise ConfigError(
                f"train_subset: not supported for the person re-ID data set {name!r} (a subset of images "
                "would break the identity structure); set train_subset: null, and use "
                "data_options.max_identities to train on fewer identities."
            )

    def validation_size(self, source: DatasetSource, options: dict[str, Any], val_fraction: float,
                        train_subset: int | None, seed: int, data_dir: str | Path | None) -> int:
        self._refuse_subset(train_subset, source.name)
        listing = cast(ReidSource, source).train_listing(_root(data_dir, source.name), options)
        return len(hold_out_identities(listing.pids, listing.cameras, val_fraction, seed).query)

    def split(self, spec: DatasetSpec, data: SourceData, val_fraction: float,
              train_subset: int | None, seed: int) -> DataSplits:
        self._refuse_subset(train_subset, spec.name)
        train = data.train
        assert train.cameras is not None, "re-ID sources give training cameras"
        held = hold_out_identities(train.labels, train.cameras, val_fraction, seed)
        val = None
        if val_fraction > 0:
            val = RetrievalSplit(query=train.select(held.query), gallery=train.select(held.gallery))
        # Classes are all training identities in ascending person-id order, held-out ones
        # included (they get no training images): the label space does not depend on
        # val_fraction, and equals deep-person-reid's, so its Market-1501 models (751-way
        # classifiers) are teachers whose identity logits line up with ours.
        identities = torch.unique(train.labels)
        kept = train.select(held.train)
        labels = torch.searchsorted(identities, kept.labels)
        kept = ImageSplit(kept.images, labels.to(torch.int64), kept.cameras)
        spec = dataclasses.replace(spec, num_classes=len(identities))
        return DataSplits(spec=spec, train=kept, val=val, test=data.test)


_SPLITTERS: Mapping[str, _TaskSplitter] = MappingProxyType(
    {CLASSIFICATION: ClassificationSplitter(), REID: ReidSplitter()}
)


# ---- public --------------------------------------------------------------------------------------


def validation_size(name: str, options: dict | None, val_fraction: float,
                    train_subset: int | None = None, *, data_dir: str | Path | None = None,
                    seed: int = 0) -> int:
    """How many validation samples ``load_splits`` gives for these arguments, without decoding
    anything (0 when ``val_fraction`` is 0): the ``n`` of a validation score's standard error.

    Classification: validation images. Re-ID: validation queries, which needs ``data_dir`` (a
    directory listing) and the split ``seed`` (the held-out identities differ in camera count).
    """
    source = get_source(name)
    opts = validate_data_options(name, options)
    _check_val_fraction(val_fraction)
    _check_seed(seed)
    return _SPLITTERS[dataset_task(name)].validation_size(source, opts, val_fraction, train_subset,
                                                          seed, data_dir)


def load_splits(
    name: str,
    data_dir: str | Path,
    *,
    val_fraction: float = 0.1,
    train_subset: int | None = None,
    seed: int = 0,
    options: dict | None = None,
) -> DataSplits:
    """Load a data set and split it into train / val / test (CPU tensors).

    ``val_fraction == 0`` gives ``val=None`` (final training on the full train set). Test is the data
    set's own test split. How val is carved depends on the task (see the module docstring).
    """
    source = get_source(name)
    opts = validate_data_options(name, options)
    spec = dataset_spec(name, opts)
    _check_val_fraction(val_fraction)
    _check_seed(seed)
    splitter = _SPLITTERS[spec.task]
    splitter.check_arguments(spec, train_subset)  # before loading anything
    data = source.load(Path(data_dir).expanduser().absolute(), opts)
    splits = splitter.split(spec, data, val_fraction, train_subset, seed)
    logger.debug("%s splits: %d train, %d val, %d test", name, len(splits.train),
                 0 if splits.val is None else len(splits.val), len(splits.test))
    return splits
