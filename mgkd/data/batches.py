"""Batches drawn on the training device from a uint8 split that lives there.

* :class:`DeviceBatches`: the whole split in shuffled (train) or original (eval) order.
* :class:`IdentityBatches`: person re-ID training batches of P identities x K images each.
* :func:`make_batches`: the one the engine calls; picks by the data set's task.

Iterating yields one epoch; iterating again yields the next. A training epoch draws all of its
randomness (order, identities, augmentation) from the run's generator when it starts, so saving the
generator's state between epochs makes epochs reproducible. ``epoch(into=buffer)`` writes every
full batch straight into a :class:`~mgkd.data.containers.BatchBuffer` (a CUDA graph's static
inputs), and images come out in the memory format asked for (channels-last for the GPU): no copy
after a batch is made.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import MappingProxyType
from typing import Callable, Mapping, Protocol

import torch

from mgkd.catalog.datasets import MIN_INSTANCES, is_int
from mgkd.catalog.tasks import CLASSIFICATION, REID
from mgkd.data.augment import AugmentPlan, Augmenter
from mgkd.data.containers import Batch, BatchBuffer, DatasetSpec, ImageSplit
from mgkd.errors import ConfigError


def _check_common(split: ImageSplit, spec: DatasetSpec, batch_size: int, train: bool,
                  generator: torch.Generator | None) -> None:
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    expected = (spec.channels, *spec.image_shape)
    if tuple(split.images.shape[1:]) != expected:
        raise ValueError(
            f"split images have shape {tuple(split.images.shape[1:])}, spec {spec.name!r} expects {expected}"
        )
    if train:
        if generator is None:
            raise ValueError("training batches need the run's data generator (torch.Generator)")
        if torch.device(generator.device).type != split.device.type:
            raise ValueError(f"generator is on {generator.device} but the split is on {split.device}")


class EpochBatches(Protocol):
    """What the engine iterates: ``len()`` batches per epoch, each iteration a new epoch."""

    def __len__(self) -> int:
        ...

    def __iter__(self) -> Iterator[Batch]:
        ...

    def epoch(self, into: BatchBuffer | None = None) -> Iterator[Batch]:
        ...


class _Writer:
    """Makes the batches of one split: augmented (or plain) images, normalised, in the memory
    format asked for; full batches into a :class:`BatchBuffer` when one is given."""

    def __init__(self, split: ImageSplit, spec: DatasetSpec, batch_size: int, *, train: bool,
                 memory_format: torch.memory_format, views: bool = False) -> None:
        self.augmenter = Augmenter(spec, split.device, train=train)
        self.source = self.augmenter.source(split.images) if train else split.images
        self.labels = split.labels
        self.batch_size = batch_size
        self.memory_format = memory_format
        self._shape = tuple(split.images.shape[1:])
        self._device = split.device
        # Training batches carry view numbers when asked and the augmentation has a finite view
        # set (otherwise nothing is copied for them: steps outside a CUDA graph stay minimal).
        self.views = views and train and self.augmenter.view_count is not None

    def _images(self, count: int) -> torch.Tensor:
        return torch.empty((count, *self._shape), dtype=torch.float32, device=self._device,
                           memory_format=self.memory_format)

    def _target(self, into: BatchBuffer) -> Batch:
        count = self.batch_size
        held = into.batch
        if (held is None or tuple(held.images.shape) != (count, *self._shape)
                or held.images.device != self._device
                or not held.images.is_contiguous(memory_format=self.memory_format)):
            held = into.batch = Batch(self._images(count),
                                      torch.empty(count, dtype=self.labels.dtype, device=self._device),
                                      torch.empty(count, dtype=torch.int64, device=self._device),
                                      self._view_numbers(None, count))
        return held

    def _view_numbers(self, plan: AugmentPlan | None, count: int) -> torch.Tensor | None:
        """The batch's view numbers (all 0 for a data set trained without augmentation)."""
        if not self.views:
            return None
        if plan is not None and plan.views is not None:
            return plan.views
        return torch.zeros(count, dtype=torch.int64, device=self._device)

    def train_batch(self, indices: torch.Tensor, plan: AugmentPlan,
                    into: BatchBuffer | None) -> Batch:
        if into is not None and indices.shape[0] == self.batch_size:
            target = self._target(into)
            self.augmenter.gather(self.source, indices, plan, out=target.images)
            torch.index_select(self.labels, 0, indices, out=target.labels)
            target.indices.copy_(indices)
            if target.views is not None and plan.views is not None:
                target.views.copy_(plan.views)
            return target
        images = self.augmenter.gather(self.source, indices, plan,
                                       out=self._images(indices.shape[0]))
        return Batch(images, self.labels.index_select(0, indices), indices,
                     self._view_numbers(plan, indices.shape[0]))

    def eval_batch(self, lo: int, hi: int, indices: torch.Tensor) -> Batch:
        images = self.augmenter.normalise(self.source[lo:hi], out=self._images(hi - lo))
        return Batch(images, self.labels[lo:hi], indices[lo:hi])


class DeviceBatches:
    """One epoch of batches over a whole split on the training device.

    With ``train=True`` each epoch draws its shuffle and augmentation (crop, flip, random erasing as
    the spec asks) from ``generator`` (on the split's device). With ``train=False`` batches come in
    order, unaugmented, and ``generator`` is unused.
    """

    def __init__(
        self,
        split: ImageSplit,
        spec: DatasetSpec,
        batch_size: int,
        *,
        train: bool,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
        views: bool = False,
    ) -> None:
        _check_common(split, spec, batch_size, train, generator)
        self._batch_size = batch_size
        self._train = train
        self._generator = generator
        self._drop_last = drop_last
        self._num = len(split)
        self._writer = _Writer(split, spec, batch_size, train=train, memory_format=memory_format,
                               views=views)
        self._all_indices = torch.arange(self._num, device=split.device)

    def __len__(self) -> int:
        if self._drop_last:
            return self._num // self._batch_size
        return math.ceil(self._num / self._batch_size)

    def _bounds(self, b: int) -> tuple[int, int]:
        return b * self._batch_size, min((b + 1) * self._batch_size, self._num)

    def _eval_batches(self) -> Iterator[Batch]:
        for b in range(len(self)):
            yield self._writer.eval_batch(*self._bounds(b), self._all_indices)

    def _train_batches(self, into: BatchBuffer | None) -> Iterator[Batch]:
        order = torch.randperm(self._num, generator=self._generator, device=self._all_indices.device)
        plan = self._writer.augmenter.draw(self._num, self._generator,
                                           views=self._writer.views)
        for b in range(len(self)):
            lo, hi = self._bounds(b)
            yield self._writer.train_batch(order[lo:hi], plan.slice(lo, hi), into)

    def epoch(self, into: BatchBuffer | None = None) -> Iterator[Batch]:
        """One epoch of batches; in training, full ones written into ``into`` when given."""
        return self._train_batches(into) if self._train else self._eval_batches()

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch()


class IdentityBatches:
    """Identity-balanced training batches for the triplet loss: P = batch_size // K identities x K
    images each (K = ``spec.instances``), every batch full.

    An epoch has ``max(1, len(split) // batch_size)`` batches. Identities come from fresh random
    permutations of all identities, each permutation cut into whole batches of P distinct identities
    (a remainder of fewer than P is dropped), so within a batch identities never repeat and across an
    epoch each identity appears about equally often. For each appearance K of the identity's images
    are drawn at random, without replacement when it has at least K images, with replacement otherwise.
    """

    def __init__(self, split: ImageSplit, spec: DatasetSpec, batch_size: int, *,
                 generator: torch.Generator | None,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 views: bool = False) -> None:
        _check_common(split, spec, batch_size, True, generator)
        instances = spec.instances
        if not is_int(instances) or instances < MIN_INSTANCES:
            raise ConfigError(f"data_options.instances: identity batches for the triplet loss need "
                              f"K >= {MIN_INSTANCES} images per identity, got {instances!r} in the "
                              f"{spec.name!r} spec; set instances: 4.")
        if batch_size % instances:
            raise ConfigError(
                f"batch_size: {batch_size} is not a multiple of data_options.instances K = {instances}; "
                f"re-ID batches hold P identities x K images, so use e.g. batch_size "
                f"{max(1, batch_size // instances) * instances} or change instances."
            )
        device = split.device
        identities, inverse = torch.unique(split.labels, return_inverse=True)
        self._per_batch = batch_size // instances
        if self._per_batch > len(identities):
            raise ConfigError(
                f"batch_size: {batch_size} / K {instances} = {self._per_batch} identities per batch, but the "
                f"training split has only {len(identities)} identities; lower batch_size to at most "
                f"{len(identities) * instances}."
            )
        self._images = split.images
        self._labels = split.labels
        self._generator = generator
        self._instances = instances
        self._batch_size = batch_size
        self._num_ids = len(identities)
        self._num_batches = max(1, len(split) // batch_size)
        self._counts = torch.bincount(inverse, minlength=self._num_ids).to(device)
        self._members = torch.argsort(inverse, stable=True).to(device)  # split positions grouped by id
        self._starts = torch.cumsum(self._counts, 0) - self._counts
        self._width = max(int(self._counts.max()), instances)
        self._columns = torch.arange(self._width, device=device)
        self._writer = _Writer(split, spec, batch_size, train=True, memory_format=memory_format,
                               views=views)

    def __len__(self) -> int:
        return self._num_batches

    def _identity_slots(self) -> torch.Tensor:
        """Identity (0..C-1) of each of the epoch's P x batches slots, distinct within a batch."""
        device, per_batch = self._images.device, self._per_batch
        batches_per_perm = self._num_ids // per_batch
        perms = math.ceil(self._num_batches / batches_per_perm)
        usable = batches_per_perm * per_batch
        drawn = [torch.randperm(self._num_ids, generator=self._generator, device=device)[:usable]
                 for _ in range(perms)]
        return torch.cat(drawn)[: self._num_batches * per_batch]

    def _epoch_indices(self) -> torch.Tensor:
        """Split positions of the epoch's images, batch after batch (K consecutive per identity)."""
        device, k = self._images.device, self._instances
        slots = self._identity_slots()
        counts = self._counts[slots].view(-1, 1)
        keys = torch.rand((len(slots), self._width), generator=self._generator, device=device)
        keys = keys.masked_fill(self._columns.view(1, -1) >= counts, 2.0)  # past the identity's images
        distinct = keys.topk(k, dim=1, largest=False).indices
        repeated = (torch.rand((len(slots), k), generator=self._generator, device=device) * counts).long()
        picks = torch.where(counts >= k, distinct, repeated.clamp_max_(counts - 1))
        return self._members[self._starts[slots].view(-1, 1) + picks].flatten()

    def epoch(self, into: BatchBuffer | None = None) -> Iterator[Batch]:
        """One epoch of batches (all full), written into ``into`` when given."""
        indices = self._epoch_indices()
        plan = self._writer.augmenter.draw(len(indices), self._generator,
                                           views=self._writer.views)
        for b in range(self._num_batches):
            lo, hi = b * self._batch_size, (b + 1) * self._batch_size
            yield self._writer.train_batch(indices[lo:hi], plan.slice(lo, hi), into)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch()


_Factory = Callable[..., EpochBatches]

_TRAIN_BATCHES: Mapping[str, _Factory] = MappingProxyType({
    CLASSIFICATION: lambda split, spec, size, **kw: DeviceBatches(split, spec, size, train=True, **kw),
    REID: lambda split, spec, size, **kw: IdentityBatches(split, spec, size, **kw),
})


def make_batches(split: ImageSplit, spec: DatasetSpec, batch_size: int, *, train: bool,
                 generator: torch.Generator | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 views: bool = False) -> EpochBatches:
    """The batches the engine iterates: training batches by the spec's task (identity-balanced for
    re-ID, shuffled otherwise); evaluation batches in order, unaugmented, for every task. Images
    come in ``memory_format`` (channels-last for a channels-last model); training batches carry
    their view numbers when ``views`` asks (where the augmentation has a finite view set)."""
    if not train:
        return DeviceBatches(split, spec, batch_size, train=False, memory_format=memory_format)
    return _TRAIN_BATCHES[spec.task](split, spec, batch_size, generator=generator,
                                     memory_format=memory_format, views=views)
