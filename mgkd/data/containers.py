"""The data containers every data set produces: a spec, image splits, retrieval splits, batches.

Every split is one uint8 tensor (N, C, H, W) plus int64 labels (and, for person re-ID, int64 camera
ids) on one device; training moves it to the training device once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mgkd.errors import DataError

@dataclass(frozen=True)
class DatasetSpec:
    """What models, batching and augmentation need to know about a data set.

    ``task`` is the data set's (:mod:`mgkd.catalog.tasks`; filled in by the registry's
    ``dataset_spec``); ``random_erasing`` is the per-image probability of
    erasing a random rectangle in training (0 = off); ``instances`` is K, the images per identity in a
    re-ID training batch (0 for classification).
    """

    name: str
    num_classes: int
    height: int
    width: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    task: str = "classification"
    random_erasing: float = 0.0
    instances: int = 0

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` of every image, as models are probed with."""
        return (self.height, self.width)


def _check_vector(name: str, tensor: torch.Tensor, count: int, device: torch.device) -> None:
    if tensor.dtype != torch.int64 or tensor.dim() != 1:
        raise DataError(
            f"ImageSplit.{name} must be an int64 (N,) tensor, got {tensor.dtype} with shape "
            f"{tuple(tensor.shape)}"
        )
    if tensor.shape[0] != count:
        raise DataError(f"ImageSplit has {count} images but {tensor.shape[0]} {name}")
    if tensor.device != device:
        raise DataError(f"ImageSplit images are on {device} but {name} on {tensor.device}")


@dataclass
class ImageSplit:
    """One split: uint8 images (N, C, H, W), int64 labels (N,) and optional int64 cameras (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    cameras: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"ImageSplit.images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                f"with shape {tuple(self.images.shape)}"
            )
        count, device = int(self.images.shape[0]), self.images.device
        _check_vector("labels", self.labels, count, device)
        if self.cameras is not None:
            _check_vector("cameras", self.cameras, count, device)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        """The device every tensor lives on."""
        return self.images.device

    def to(self, device: torch.device | str) -> ImageSplit:
        """This split on ``device`` (tensors already there are not copied)."""
        cameras = None if self.cameras is None else self.cameras.to(device)
        return ImageSplit(self.images.to(device), self.labels.to(device), cameras)

    def select(self, index: torch.Tensor) -> ImageSplit:
        """The samples at ``index`` (an int64 index or a bool mask), cameras included."""
        cameras = None if self.cameras is None else self.cameras[index]
        return ImageSplit(self.images[index], self.labels[index], cameras)

    def head(self, count: int) -> ImageSplit:
        """The first ``count`` samples."""
        cameras = None if self.cameras is None else self.cameras[:count]
        return ImageSplit(self.images[:count], self.labels[:count], cameras)

    def contiguous(self) -> ImageSplit:
        """This split with contiguous tensors."""
        cameras = None if self.cameras is None else self.cameras.contiguous()
        return ImageSplit(self.images.contiguous(), self.labels.contiguous(), cameras)


@dataclass
class RetrievalSplit:
    """A person re-ID evaluation split: queries ranked against a gallery.

    Labels are person ids (distractors, id 0, only in the test gallery) and both halves carry cameras.
    ``len()`` is the number of queries.
    """

    query: ImageSplit
    gallery: ImageSplit

    def __post_init__(self) -> None:
        for name, part in (("query", self.query), ("gallery", self.gallery)):
            if part.cameras is None:
                raise DataError(f"RetrievalSplit.{name} needs camera ids (ImageSplit.cameras)")
        if self.query.device != self.gallery.device:
            raise DataError(
                f"RetrievalSplit query is on {self.query.device} but gallery on {self.gallery.device}"
            )

    def __len__(self) -> int:
        return len(self.query)

    @property
    def device(self) -> torch.device:
        """The device both halves live on."""
        return self.query.device

    def to(self, device: torch.device | str) -> RetrievalSplit:
        """This split on ``device``."""
        return RetrievalSplit(self.query.to(device), self.gallery.to(device))


EvalSplit = ImageSplit | RetrievalSplit


@dataclass
class DataSplits:
    """Train / val / test splits of one data set plus its spec.

    Classification: every split is an :class:`ImageSplit`. Person re-ID: ``train`` is an
    :class:`ImageSplit` with contiguous identity labels, ``val`` and ``test`` are
    :class:`RetrievalSplit` (``val`` None when no validation was carved).
    """

    spec: DatasetSpec
    train: ImageSplit
    val: EvalSplit | None
    test: EvalSplit

    def to(self, device: torch.device | str) -> DataSplits:
        """A copy of all splits on ``device``."""
        return DataSplits(
            spec=self.spec,
            train=self.train.to(device),
            val=None if self.val is None else self.val.to(device),
            test=self.test.to(device),
        )


@dataclass
class Batch:
    """One batch: normalised float32 images, labels, the samples' positions within the split and,
    for training batches of a finite view set, each sample's view number
    (:attr:`mgkd.data.augment.AugmentPlan.views`; None otherwise)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    views: torch.Tensor | None = None


@dataclass
class BatchBuffer:
    """Where full training batches are written when the consumer asks for it: the same
    tensors for every batch, so a recorded CUDA graph finds each batch at the addresses it was
    recorded with (and no copy into them is needed). Filled by the first full batch; a batch
    yielded into it is valid until the next one is drawn."""

    batch: Batch | None = None


@dataclass
class SourceData:
    """What a data set's loader reads: its training images and its own test split.

    Re-ID sources give training labels as raw person ids with cameras; the split logic relabels them.
    """

    train: ImageSplit
    test: EvalSplit
