"""Data sets, train/val/test splits and on-device batching with augmentation.

Every split is held as one uint8 tensor (N, C, H, W) plus int64 labels. Training moves the split to the
training device once; :class:`DeviceBatches` then draws batches there, doing the shuffle, random crop,
horizontal flip and normalisation as a handful of vectorised tensor ops per batch (no DataLoader, no
worker processes, no per-sample Python work).

Data sets:

* ``cifar100`` / ``cifar10``: torchvision's on-disk format under ``data_dir``, read through torchvision's
  classes with the md5 check replaced by a presence check (md5 stays in :func:`download_dataset`).
* ``digits``: scikit-learn's bundled 8x8 handwritten digits, upsampled once to 16x16, 3 channels.
* ``synthetic``: learnable random data (smooth per-class prototypes plus noise) built from options.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DATASET_NAMES: tuple[str, ...] = ("cifar100", "cifar10", "digits", "synthetic")

#: Default options of the ``synthetic`` data set (read-only; copy before changing).
SYNTHETIC_DEFAULTS: Mapping[str, int] = MappingProxyType(
    {"num_train": 512, "num_test": 128, "num_classes": 10, "image_size": 32, "seed": 0}
)

# Allowed integer range per synthetic option (inclusive); None means unbounded above.
_SYNTHETIC_RANGES: Mapping[str, tuple[int, int | None]] = MappingProxyType(
    {
        "num_train": (1, None),
        "num_test": (1, None),
        "num_classes": (2, 1000),
        "image_size": (8, 512),
        "seed": (0, 2**63 - 1),
    }
)

_CIFAR_FOLDERS: Mapping[str, str] = MappingProxyType(
    {"cifar100": "cifar-100-python", "cifar10": "cifar-10-batches-py"}
)

# Usual per-channel statistics of the CIFAR training sets (std over all training pixels).
_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
_CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Digits: measured once on the 1,438-image digits training split after scaling to 0-255 and bilinear
# upsampling to 16x16 (tests/test_data.py recomputes them and checks these constants).
_DIGITS_MEAN = 0.3056
_DIGITS_STD = 0.3186
_DIGITS_SIZE = 16
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_IMAGES = 1797  # scikit-learn's bundled digits
# Training images of each data set as shipped (synthetic: its num_train option).
_TRAIN_IMAGES: Mapping[str, int] = MappingProxyType(
    {"cifar100": 50_000, "cifar10": 50_000,
     "digits": _DIGITS_IMAGES - round(_DIGITS_IMAGES * _DIGITS_TEST_FRACTION)}
)
_DIGITS_SPLIT_SEED = 0

# Synthetic data: prototype grid (image_size // _SYNTH_CELL cells a side, bilinear-upsampled so that a
# few pixels of crop shift keep the class recognisable) and per-pixel Gaussian noise on the 0-255 scale.
_SYNTH_CELL = 4
_SYNTH_NOISE = 40.0
_SYNTH_CHUNK = 4096
_SYNTH_MEAN = 0.5
_SYNTH_STD = 0.25

_MAX_VAL_FRACTION = 0.5


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """What models and augmentation need to know about a data set."""

    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    task: str = "classification"  # mgkd.objectives: what runs on it can select on


@dataclass
class ImageSplit:
    """One split: uint8 images (N, C, H, W) and int64 labels (N,) on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"ImageSplit.images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                f"with shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise DataError(
                f"ImageSplit.labels must be an int64 (N,) tensor, got {self.labels.dtype} "
                f"with shape {tuple(self.labels.shape)}"
            )
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"ImageSplit has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if self.images.device != self.labels.device:
            raise DataError(
                f"ImageSplit images are on {self.images.device} but labels on {self.labels.device}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        """The device both tensors live on."""
        return self.images.device

    def to(self, device: torch.device | str) -> ImageSplit:
        """This split on ``device`` (tensors already there are not copied)."""
        return ImageSplit(self.images.to(device), self.labels.to(device))


@dataclass
class DataSplits:
    """Train / val / test splits of one data set plus its spec."""

    spec: DatasetSpec
    train: ImageSplit
    val: ImageSplit | None
    test: ImageSplit

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
    """One batch: normalised float32 images, labels, and the samples' positions within the split."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


# --------------------------------------------------------------------------------------------------
# Options and specs
# --------------------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ConfigError(f"data.name: unknown data set {name!r}; allowed: {', '.join(DATASET_NAMES)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range_text(low: int, high: int | None) -> str:
    return f">= {low}" if high is None else f"in [{low}, {high}]"


def validate_data_options(name: str, options: dict | None) -> dict:
    """Check a data set's options and return them completed with defaults.

    Only ``synthetic`` takes options (keys of :data:`SYNTHETIC_DEFAULTS`, all integers); other data sets
    accept ``None`` or ``{}``. Raises :class:`ConfigError` naming the key and the allowed values.
    """
    _check_name(name)
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise ConfigError(f"data.options must be a mapping, got {type(options).__name__}")
    if name != "synthetic":
        if options:
            raise ConfigError(
                f"data.options: data set {name!r} takes no options (got {sorted(options)}); "
                "only 'synthetic' takes options"
            )
        return {}
    allowed = ", ".join(SYNTHETIC_DEFAULTS)
    result = dict(SYNTHETIC_DEFAULTS)
    for key, value in options.items():
        if key not in SYNTHETIC_DEFAULTS:
            raise ConfigError(f"data.options.{key}: unknown option for 'synthetic'; allowed: {allowed}")
        low, high = _SYNTHETIC_RANGES[key]
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise ConfigError(
                f"data.options.{key}: must be an integer {_range_text(low, high)}, got {value!r}"
            )
        result[key] = value
    return result


def dataset_spec(name: str, options: dict | None = None) -> DatasetSpec:
    """The :class:`DatasetSpec` of a data set (cheap: loads nothing)."""
    opts = validate_data_options(name, options)
    if name == "cifar100":
        return DatasetSpec("cifar100", 100, 32, 3, _CIFAR100_MEAN, _CIFAR100_STD, 4, True)
    if name == "cifar10":
        return DatasetSpec("cifar10", 10, 32, 3, _CIFAR10_MEAN, _CIFAR10_STD, 4, True)
    if name == "digits":
        return DatasetSpec(
            "digits", 10, _DIGITS_SIZE, 3, (_DIGITS_MEAN,) * 3, (_DIGITS_STD,) * 3, 2, False
        )
    size = opts["image_size"]
    return DatasetSpec(
        "synthetic",
        opts["num_classes"],
        size,
        3,
        (_SYNTH_MEAN,) * 3,
        (_SYNTH_STD,) * 3,
        max(1, size // 8),
        True,
    )


# --------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------


def _cifar_reader(name: str):
    """The torchvision reader class of a CIFAR set; torchvision (about a second to import) loads
    only here, when CIFAR is actually read or checked."""
    from mgkd.cifar_readers import CIFAR_READERS
    return CIFAR_READERS[name]


def _cifar_expected_files(name: str) -> list[str]:
    reader = _cifar_reader(name)
    return [entry[0] for entry in reader.train_list + reader.test_list] + [reader.meta["filename"]]


def _cifar_missing_message(name: str, data_dir: Path, missing: list[str]) -> str:
    folder = data_dir / _CIFAR_FOLDERS[name]
    what = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
    return (
        f"Data set {name!r} not found: expected torchvision's extracted folder at {folder} "
        f"(with files {', '.join(_cifar_expected_files(name))}), but it {what}. "
        f"Get it with `mgkd download {name} --data-dir {data_dir}`, or place torchvision's extracted "
        f"`{_CIFAR_FOLDERS[name]}` folder in {data_dir}."
    )


def check_available(name: str, data_dir: str | Path) -> None:
    """Raise :class:`DataError` if a CIFAR set is missing under ``data_dir`` (file presence only).

    ``digits`` and ``synthetic`` need no files and always pass.
    """
    _check_name(name)
    if name not in _CIFAR_FOLDERS:
        return
    root = Path(data_dir).expanduser().absolute()
    folder = root / _CIFAR_FOLDERS[name]
    missing = [f for f in _cifar_expected_files(name) if not (folder / f).is_file()]
    if missing:
        raise DataError(_cifar_missing_message(name, root, missing))


def _load_cifar(name: str, data_dir: str | Path, num_classes: int) -> tuple[ImageSplit, ImageSplit]:
    check_available(name, data_dir)
    root = Path(data_dir).expanduser().absolute()
    reader = _cifar_reader(name)
    splits = []
    for train in (True, False):
        try:
            dataset = reader(str(root), train=train, download=False)
            images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
            labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, RuntimeError) as exc:
            raise DataError(
                f"Data set {name!r} under {root / _CIFAR_FOLDERS[name]} is malformed "
                f"({type(exc).__name__}: {exc}); delete the folder and run "
                f"`mgkd download {name} --data-dir {root}`."
            ) from exc
        if images.dtype != torch.uint8:
            raise DataError(f"Data set {name!r}: images must be uint8, found {images.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise DataError(
                f"Data set {name!r}: labels must lie in [0, {num_classes - 1}], found "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        splits.append(ImageSplit(images, labels))
    logger.info("loaded %s from %s: %d train, %d test", name, root, len(splits[0]), len(splits[1]))
    return splits[0], splits[1]


def download_dataset(name: str, data_dir: str | Path) -> Path:
    """Download and verify (md5) a CIFAR set into ``data_dir``; return the extracted folder.

    The only function here that touches the network; nothing else downloads.
    """
    _check_name(name)
    if name not in _CIFAR_FOLDERS:
        source = "bundled with scikit-learn" if name == "digits" else "generated locally"
        raise ConfigError(
            f"data.name: {name!r} needs no download ({source}); downloadable: {', '.join(_CIFAR_FOLDERS)}"
        )
    root = Path(data_dir).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    import torchvision.datasets
    dataset_class = torchvision.datasets.CIFAR100 if name == "cifar100" else torchvision.datasets.CIFAR10
    logger.info("downloading %s into %s", name, root)
    try:
        for train in (True, False):
            dataset_class(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"Downloading {name!r} into {root} failed: {exc}") from exc
    return root / _CIFAR_FOLDERS[name]


# --------------------------------------------------------------------------------------------------
# Digits and synthetic
# --------------------------------------------------------------------------------------------------


def _load_digits() -> tuple[ImageSplit, ImageSplit]:
    """scikit-learn's digits as 16x16x3 uint8, split by a fixed seeded permutation (20% test)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = torch.as_tensor(bunch.images, dtype=torch.float32)  # (N, 8, 8), values 0-16
    scaled = (raw * (255.0 / 16.0)).unsqueeze(1)
    upsampled = F.interpolate(scaled, size=(_DIGITS_SIZE, _DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = upsampled.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    generator = torch.Generator().manual_seed(_DIGITS_SPLIT_SEED)
    order = torch.randperm(len(labels), generator=generator)
    num_test = round(len(labels) * _DIGITS_TEST_FRACTION)
    test_idx = order[:num_test].sort().values
    train_idx = order[num_test:].sort().values
    return (
        ImageSplit(images[train_idx], labels[train_idx]),
        ImageSplit(images[test_idx], labels[test_idx]),
    )


def _synthetic_samples(
    prototypes: torch.Tensor, count: int, generator: torch.Generator
) -> ImageSplit:
    """``count`` class-balanced noisy copies of the prototypes, drawn from ``generator``."""
    num_classes = prototypes.shape[0]
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
    images = torch.empty((count, *prototypes.shape[1:]), dtype=torch.uint8)
    for start in range(0, count, _SYNTH_CHUNK):
        chunk = labels[start : start + _SYNTH_CHUNK]
        noise = torch.randn((len(chunk), *prototypes.shape[1:]), generator=generator) * _SYNTH_NOISE
        images[start : start + len(chunk)] = (prototypes[chunk] + noise).round_().clamp_(0, 255).to(torch.uint8)
    return ImageSplit(images, labels)


def _load_synthetic(opts: dict) -> tuple[ImageSplit, ImageSplit]:
    """Learnable random data: smooth per-class prototypes plus Gaussian noise, fully seeded."""
    generator = torch.Generator().manual_seed(opts["seed"])
    size = opts["image_size"]
    coarse = max(2, size // _SYNTH_CELL)
    grid = torch.rand((opts["num_classes"], 3, coarse, coarse), generator=generator) * 255.0
    prototypes = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    train = _synthetic_samples(prototypes, opts["num_train"], generator)
    test = _synthetic_samples(prototypes, opts["num_test"], generator)
    return train, test


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def _validate_split_args(val_fraction: Any, train_subset: Any, seed: Any, num_classes: int) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (
        0.0 <= float(val_fraction) <= _MAX_VAL_FRACTION
    ):
        raise ConfigError(f"val_fraction: must be a number in [0, {_MAX_VAL_FRACTION}], got {val_fraction!r}")
    if train_subset is not None and (not _is_int(train_subset) or train_subset < 2 * num_classes):
        raise ConfigError(
            f"train_subset: must be null or an integer >= {2 * num_classes} (2 x {num_classes} classes), "
            f"got {train_subset!r}"
        )
    if not _is_int(seed):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")


def _num_val(total: int, val_fraction: float) -> int:
    """Validation images carved from ``total`` training images (at least 1, at most total - 1)."""
    return min(total - 1, max(1, round(total * float(val_fraction))))


def validation_size(name: str, options: dict | None, val_fraction: float,
                    train_subset: int | None = None) -> int:
    """How many validation images ``load_splits`` gives for these arguments, without loading
    anything (0 when ``val_fraction`` is 0): the ``n`` of a validation accuracy's standard error."""
    opts = validate_data_options(name, options)
    total = opts["num_train"] if name == "synthetic" else _TRAIN_IMAGES[name]
    if train_subset is not None:
        total = min(total, train_subset)
    return _num_val(total, val_fraction) if val_fraction > 0 else 0


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

    ``train_subset`` keeps the first N training images; then a permutation seeded by ``seed`` sends
    ``round(N * val_fraction)`` of them (at least 1 when ``val_fraction > 0``) to val. ``val_fraction == 0``
    gives ``val=None`` (final training on the full train set). Test is the data set's own test split.
    """
    opts = validate_data_options(name, options)
    spec = dataset_spec(name, opts)
    _validate_split_args(val_fraction, train_subset, seed, spec.num_classes)

    if name in _CIFAR_FOLDERS:
        train, test = _load_cifar(name, data_dir, spec.num_classes)
    elif name == "digits":
        train, test = _load_digits()
    else:
        train, test = _load_synthetic(opts)

    if train_subset is not None:
        if train_subset > len(train):
            raise ConfigError(
                f"train_subset: must be null or an integer in [{2 * spec.num_classes}, {len(train)}] "
                f"for {name!r} ({len(train)} training images), got {train_subset}"
            )
        train = ImageSplit(train.images[:train_subset], train.labels[:train_subset])

    val: ImageSplit | None = None
    if val_fraction > 0:
        total = len(train)
        num_val = _num_val(total, val_fraction)
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        val_idx = order[:num_val].sort().values
        train_idx = order[num_val:].sort().values
        val = ImageSplit(train.images[val_idx], train.labels[val_idx])
        train = ImageSplit(train.images[train_idx], train.labels[train_idx])
    else:
        train = ImageSplit(train.images.contiguous(), train.labels.contiguous())

    logger.debug(
        "%s splits: %d train, %d val, %d test", name, len(train), 0 if val is None else len(val), len(test)
    )
    return DataSplits(spec=spec, train=train, val=val, test=test)


# --------------------------------------------------------------------------------------------------
# Batching on the device
# --------------------------------------------------------------------------------------------------


class DeviceBatches:
    """One epoch of batches drawn from a uint8 split that lives on the training device.

    Iterating yields one epoch; iterating again yields the next one. With ``train=True`` each epoch draws
    its shuffle, crop offsets and flips from ``generator`` (the run's data RNG, on the split's device) in
    one go when the epoch starts, so saving the generator's state between epochs makes epochs
    reproducible. With ``train=False`` batches come in order, unaugmented, and ``generator`` is unused.
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
    ) -> None:
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        images = split.images
        if images.shape[1:] != (spec.channels, spec.image_size, spec.image_size):
            raise ValueError(
                f"split images have shape {tuple(images.shape[1:])}, spec {spec.name!r} expects "
                f"{(spec.channels, spec.image_size, spec.image_size)}"
            )
        device = images.device
        if train:
            if generator is None:
                raise ValueError("DeviceBatches(train=True) needs the run's data generator (torch.Generator)")
            if torch.device(generator.device).type != device.type:
                raise ValueError(f"generator is on {generator.device} but the split is on {device}")
        self._images = images
        self._labels = split.labels
        self._spec = spec
        self._batch_size = batch_size
        self._train = train
        self._generator = generator
        self._drop_last = drop_last
        self._num = len(split)

        # x_norm = (x / 255 - mean) / std  ==  x * scale + shift, fused into one addcmul.
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std

        size = spec.image_size
        pad = spec.crop_padding if train else 0
        self._pad = pad
        self._augment = train and (pad > 0 or spec.flip)
        padded = size + 2 * pad
        self._padded_width = padded
        # Flat offsets into a padded image: row part (H, 1), forward and mirrored columns (W,).
        self._row_offsets = (torch.arange(size, device=device) * padded).view(1, size, 1)
        self._cols = torch.arange(size, device=device)
        self._cols_flipped = self._cols.flip(0)
        self._all_indices = torch.arange(self._num, device=device)

    def __len__(self) -> int:
        if self._drop_last:
            return self._num // self._batch_size
        return math.ceil(self._num / self._batch_size)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        # Convert first: a mixed uint8 x float32 addcmul takes a slow path on CPU.
        return torch.addcmul(self._shift, images.float(), self._scale)

    def _eval_batches(self) -> Iterator[Batch]:
        for b in range(len(self)):
            lo, hi = b * self._batch_size, min((b + 1) * self._batch_size, self._num)
            yield Batch(self._normalise(self._images[lo:hi]), self._labels[lo:hi], self._all_indices[lo:hi])

    def _augmented(self, images: torch.Tensor, base: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        """Crop (flat start offset ``base`` into the zero-padded image) and optionally mirror a batch."""
        count, channels, size, _ = images.shape
        pad = self._pad
        if pad:
            images = F.pad(images, (pad, pad, pad, pad))
        if flip is None:
            cols = self._cols.view(1, 1, size)
        else:
            cols = torch.where(flip.view(-1, 1), self._cols_flipped, self._cols).view(count, 1, size)
        index = (base.view(-1, 1, 1) + self._row_offsets + cols).view(count, 1, size * size)
        flat = images.reshape(count, channels, -1)
        return flat.gather(2, index.expand(count, channels, size * size)).view(count, channels, size, size)

    def _train_batches(self) -> Iterator[Batch]:
        generator, device, num = self._generator, self._images.device, self._num
        order = torch.randperm(num, generator=generator, device=device)
        base: torch.Tensor | None = None
        flips: torch.Tensor | None = None
        if self._pad:
            offsets = torch.randint(0, 2 * self._pad + 1, (2, num), generator=generator, device=device)
            base = offsets[0] * self._padded_width + offsets[1]
        if self._spec.flip:
            flips = torch.randint(0, 2, (num,), generator=generator, device=device, dtype=torch.bool)
        if base is None and self._augment:
            base = torch.zeros(num, dtype=torch.int64, device=device)
        for b in range(len(self)):
            lo, hi = b * self._batch_size, min((b + 1) * self._batch_size, num)
            idx = order[lo:hi]
            images = self._images.index_select(0, idx)
            if self._augment:
                assert base is not None
                images = self._augmented(images, base[lo:hi], None if flips is None else flips[lo:hi])
            yield Batch(self._normalise(images), self._labels.index_select(0, idx), idx)

    def __iter__(self) -> Iterator[Batch]:
        return self._train_batches() if self._train else self._eval_batches()
