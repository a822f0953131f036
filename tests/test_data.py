"""Tests for mgkd.data: data sets, splits and on-device batching."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets
import torchvision.datasets.cifar

from mgkd import data as D
from mgkd.catalog.datasets import validate_data_options
from mgkd.errors import ConfigError, DataError

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _dump(path: Path, content: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def _write_cifar100(root: Path, num_train: int = 30, num_test: int = 12, seed: int = 1) -> dict:
    """A tiny CIFAR-100 folder in torchvision's format; returns the arrays written.

    The official files are Python 2 pickles whose str keys load as str under torchvision's
    ``encoding="latin1"``; torchvision reads ``data`` and ``fine_labels`` (and ``fine_label_names`` from
    ``meta``), so the keys here are str as well.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays = {}
    for split, count in (("train", num_train), ("test", num_test)):
        pixels = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=count).tolist()
        _dump(folder / split, {"data": pixels, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]})
        arrays[split] = (pixels, fine)
    _dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                            "coarse_label_names": [f"s{i}" for i in range(20)]})
    return arrays


def _write_cifar10(root: Path, per_batch: int = 4) -> dict:
    rng = np.random.default_rng(2)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    arrays: dict[str, list] = {"train": [], "test": []}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        pixels = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        _dump(folder / name, {"data": pixels, "labels": labels})
        arrays["test" if name == "test_batch" else "train"].append((pixels, labels))
    _dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return arrays


def _nchw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).view(-1, 3, 32, 32)


def _coord_split(num: int, size: int) -> D.ImageSplit:
    """Images whose pixels name themselves: ch0 = row + 1, ch1 = column + 1, ch2 = sample + 1 (pad = 0)."""
    assert num <= 254 and size <= 254
    rows = torch.arange(1, size + 1, dtype=torch.uint8).view(1, size, 1).expand(num, size, size)
    cols = torch.arange(1, size + 1, dtype=torch.uint8).view(1, 1, size).expand(num, size, size)
    ids = torch.arange(1, num + 1, dtype=torch.uint8).view(num, 1, 1).expand(num, size, size)
    return D.ImageSplit(torch.stack([rows, cols, ids], dim=1).contiguous(), torch.arange(num) % 10)


def _denormalise(images: torch.Tensor, spec: D.DatasetSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return ((images.cpu() * std + mean) * 255).round().to(torch.uint8)


def _normalise(images: torch.Tensor, spec: D.DatasetSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def _epoch(batches: D.DeviceBatches) -> list[D.Batch]:
    return list(batches)


def _cat(epoch: list[D.Batch], field: str) -> torch.Tensor:
    return torch.cat([getattr(b, field) for b in epoch])


# --------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------


def test_cifar100_round_trip(tmp_path: Path) -> None:
    arrays = _write_cifar100(tmp_path)
    splits = D.load_splits("cifar100", tmp_path, val_fraction=0.0)
    assert splits.val is None
    assert splits.spec == D.dataset_spec("cifar100")
    for split, loaded in (("train", splits.train), ("test", splits.test)):
        pixels, labels = arrays[split]
        assert loaded.images.dtype == torch.uint8 and loaded.images.shape == (len(labels), 3, 32, 32)
        assert torch.equal(loaded.images, _nchw(pixels))
        assert loaded.labels.dtype == torch.int64
        assert loaded.labels.tolist() == labels


def test_cifar100_val_split_partitions_train(tmp_path: Path) -> None:
    arrays = _write_cifar100(tmp_path, num_train=40)
    pixels, labels = arrays["train"]
    pixels[:, 0] = np.arange(40)  # make every image identifiable by its first byte
    _dump(tmp_path / "cifar-100-python" / "train", {"data": pixels, "fine_labels": labels, "coarse_labels": labels})
    splits = D.load_splits("cifar100", tmp_path, val_fraction=0.25, seed=3)
    assert splits.val is not None and len(splits.val) == 10 and len(splits.train) == 30
    ids = torch.cat([splits.train.images[:, 0, 0, 0], splits.val.images[:, 0, 0, 0]]).long()
    assert sorted(ids.tolist()) == list(range(40))
    original = _nchw(pixels)
    for part in (splits.train, splits.val):
        rows = part.images[:, 0, 0, 0].long()
        assert torch.equal(part.images, original[rows])
        assert part.labels.tolist() == [labels[i] for i in rows.tolist()]


def test_cifar10_round_trip(tmp_path: Path) -> None:
    arrays = _write_cifar10(tmp_path)
    splits = D.load_splits("cifar10", tmp_path, val_fraction=0.0)
    train_pixels = np.concatenate([p for p, _ in arrays["train"]])
    train_labels = sum((lab for _, lab in arrays["train"]), [])
    assert torch.equal(splits.train.images, _nchw(train_pixels))
    assert splits.train.labels.tolist() == train_labels
    assert torch.equal(splits.test.images, _nchw(arrays["test"][0][0]))
    assert splits.spec.num_classes == 10


def test_cifar_load_skips_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar100(tmp_path)

    def no_md5(*args: object, **kwargs: object) -> bool:
        raise AssertionError("md5 check must not run on load")

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", no_md5)
    D.check_available("cifar100", tmp_path)
    assert len(D.load_splits("cifar100", tmp_path, val_fraction=0.0).test) == 12


@pytest.mark.parametrize("name,folder", [("cifar100", "cifar-100-python"), ("cifar10", "cifar-10-batches-py")])
def test_missing_cifar_is_a_clear_error(tmp_path: Path, name: str, folder: str) -> None:
    for call in (lambda: D.check_available(name, tmp_path), lambda: D.load_splits(name, tmp_path)):
        with pytest.raises(DataError) as info:
            call()
        message = str(info.value)
        assert str(tmp_path / folder) in message
        assert f"mgkd download {name} --data-dir" in message
        assert "\n" not in message


def test_partly_missing_cifar_names_the_files(tmp_path: Path) -> None:
    _write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataError, match="lacks meta"):
        D.load_splits("cifar100", tmp_path)


def test_malformed_cifar_is_a_data_error(tmp_path: Path) -> None:
    _write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="malformed"):
        D.load_splits("cifar100", tmp_path)


def test_cifar_labels_out_of_range_rejected(tmp_path: Path) -> None:
    _write_cifar100(tmp_path)
    pixels = np.zeros((4, 3072), dtype=np.uint8)
    _dump(tmp_path / "cifar-100-python" / "test", {"data": pixels, "fine_labels": [0, 1, 2, 100], "coarse_labels": [0] * 4})
    with pytest.raises(DataError, match="labels"):
        D.load_splits("cifar100", tmp_path)


def test_download_only_for_cifar_and_wraps_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("digits", "synthetic"):
        with pytest.raises(ConfigError, match="needs no download"):
            D.download_dataset(name, tmp_path)
    calls = []

    class Recorder:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Recorder)
    assert D.download_dataset("cifar100", tmp_path / "d") == (tmp_path / "d" / "cifar-100-python").absolute()
    assert calls and all(download for _, _, download in calls)

    class Offline:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    with pytest.raises(DataError, match="network unreachable"):
        D.download_dataset("cifar100", tmp_path)


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> D.DataSplits:
    return D.load_splits("digits", "unused", val_fraction=0.0)


def test_digits_shape_and_determinism(digits: D.DataSplits) -> None:
    spec = digits.spec
    assert (spec.num_classes, spec.image_shape, spec.channels, spec.crop_padding, spec.flip) == (10, (16, 16), 3, 2, False)
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == round(1797 * 0.2)
    for part in (digits.train, digits.test):
        assert part.images.shape[1:] == (3, 16, 16) and part.images.dtype == torch.uint8
        assert torch.equal(part.images[:, 0], part.images[:, 1]) and torch.equal(part.images[:, 0], part.images[:, 2])
    assert set(digits.train.labels.tolist()) == set(range(10))
    assert int(digits.train.images.max()) == 255
    again = D.load_splits("digits", "unused", val_fraction=0.0, seed=7)  # config seed must not move the test split
    assert torch.equal(again.train.images, digits.train.images)
    assert torch.equal(again.test.images, digits.test.images)
    assert torch.equal(again.test.labels, digits.test.labels)


def test_digits_mean_std_constants_match_training_images(digits: D.DataSplits) -> None:
    pixels = digits.train.images.double() / 255
    assert digits.spec.mean == pytest.approx((pixels.mean().item(),) * 3, abs=1e-3)
    assert digits.spec.std == pytest.approx((pixels.std().item(),) * 3, abs=1e-3)


def test_digits_takes_no_options() -> None:
    with pytest.raises(ConfigError, match="takes no options"):
        D.load_splits("digits", "unused", options={"num_train": 5})


# --------------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------------


def test_synthetic_defaults_and_options() -> None:
    splits = D.load_splits("synthetic", "unused", val_fraction=0.0)
    assert len(splits.train) == D.SYNTHETIC_DEFAULTS["num_train"]
    assert len(splits.test) == D.SYNTHETIC_DEFAULTS["num_test"]
    assert splits.spec.num_classes == 10 and splits.train.images.shape[1:] == (3, 32, 32)
    opts = {"num_train": 60, "num_test": 20, "num_classes": 3, "image_size": 12, "seed": 4}
    small = D.load_splits("synthetic", "unused", val_fraction=0.0, options=opts)
    assert small.train.images.shape == (60, 3, 12, 12) and small.test.images.shape == (20, 3, 12, 12)
    assert small.spec.num_classes == 3 and small.spec.image_shape == (12, 12)
    assert set(small.train.labels.tolist()) == {0, 1, 2}
    assert small.train.images.dtype == torch.uint8


def test_synthetic_seeded_and_independent_of_global_rng() -> None:
    state = torch.get_rng_state()
    a = D.load_splits("synthetic", "unused", options={"seed": 1})
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    b = D.load_splits("synthetic", "unused", options={"seed": 1})
    c = D.load_splits("synthetic", "unused", options={"seed": 2})
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.train.images, c.train.images)


def test_synthetic_is_learnable() -> None:
    splits = D.load_splits("synthetic", "unused", val_fraction=0.0, options={"num_train": 400, "num_test": 200})
    x = splits.train.images.float().flatten(1)
    centroids = torch.stack([x[splits.train.labels == k].mean(0) for k in range(10)])
    predicted = torch.cdist(splits.test.images.float().flatten(1), centroids).argmin(1)
    assert (predicted == splits.test.labels).float().mean() > 0.9


@pytest.mark.parametrize(
    "options,match",
    [
        ({"colour": 1}, "colour.*allowed: num_train, num_test, num_classes, image_size, seed"),
        ({"num_classes": 1}, r"num_classes.*\[2, 1000\]"),
        ({"image_size": "32"}, "image_size"),
        ({"num_train": True}, "num_train"),
        ({"num_test": 0}, "num_test.*>= 1"),
    ],
)
def test_synthetic_bad_options_rejected(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_data_options("synthetic", options)
    with pytest.raises(ConfigError, match=match):
        D.load_splits("synthetic", "unused", options=options)


def test_validate_data_options_and_spec() -> None:
    assert validate_data_options("synthetic", None) == dict(D.SYNTHETIC_DEFAULTS)
    assert validate_data_options("synthetic", {"seed": 9})["seed"] == 9
    assert validate_data_options("cifar100", None) == {}
    assert validate_data_options("cifar10", {}) == {}
    with pytest.raises(ConfigError, match="allowed: cifar100, cifar10, digits, synthetic"):
        D.dataset_spec("imagenet")
    spec = D.dataset_spec("synthetic", {"num_classes": 7, "image_size": 16})
    assert (spec.num_classes, spec.image_shape, spec.crop_padding) == (7, (16, 16), 2)
    cifar = D.dataset_spec("cifar100")
    assert (cifar.num_classes, cifar.image_shape, cifar.crop_padding, cifar.flip) == (100, (32, 32), 4, True)
    assert cifar.mean == pytest.approx((0.5071, 0.4865, 0.4409), abs=1e-4)


# --------------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------------


def test_split_sizes_and_determinism() -> None:
    a = D.load_splits("synthetic", "unused", val_fraction=0.1, seed=5)
    assert a.val is not None
    assert len(a.val) == round(512 * 0.1) and len(a.train) == 512 - len(a.val) and len(a.test) == 128
    b = D.load_splits("synthetic", "unused", val_fraction=0.1, seed=5)
    c = D.load_splits("synthetic", "unused", val_fraction=0.1, seed=6)
    assert b.val is not None and c.val is not None
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # test split does not depend on the config seed
    full = D.load_splits("synthetic", "unused", val_fraction=0.0)
    assert full.val is None and len(full.train) == 512


def test_train_subset_takes_first_images_before_val() -> None:
    full = D.load_splits("synthetic", "unused", val_fraction=0.0)
    sub = D.load_splits("synthetic", "unused", val_fraction=0.2, train_subset=100, seed=1)
    assert sub.val is not None and len(sub.val) == 20 and len(sub.train) == 80
    first = full.train.images[:100].flatten(1)
    for part in (sub.train, sub.val):
        matches = (part.images.flatten(1)[:, None, :] == first[None]).all(-1)
        assert bool(matches.any(1).all())
    assert len(D.load_splits("synthetic", "unused", val_fraction=0.0, train_subset=20).train) == 20


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"val_fraction": 0.6}, r"val_fraction.*\[0, 0.5\]"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_fraction": True}, "val_fraction"),
        ({"train_subset": 19}, "train_subset.*>= 20"),
        ({"train_subset": 513}, r"train_subset.*\[20, 512\]"),
        ({"train_subset": 50.0}, "train_subset"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_split_arguments_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        D.load_splits("synthetic", "unused", **kwargs)


def test_split_to_device_and_validation() -> None:
    splits = D.load_splits("synthetic", "unused", val_fraction=0.0, options={"num_train": 30, "num_test": 10})
    moved = splits.to("cpu")
    assert moved.val is None and torch.equal(moved.train.images, splits.train.images)
    assert moved.train.device == torch.device("cpu")
    with pytest.raises(DataError):
        D.ImageSplit(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError):
        D.ImageSplit(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_mgkd_data_does_not_import_ray_or_optuna() -> None:
    code = "import sys, mgkd.data; bad = [m for m in ('ray', 'optuna') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --------------------------------------------------------------------------------------------------
# DeviceBatches
# --------------------------------------------------------------------------------------------------

_SPEC32 = dataclasses.replace(D.dataset_spec("cifar100"), name="coords")


def _generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def test_train_epoch_covers_every_index_once() -> None:
    split = _coord_split(203, 32)
    batches = D.DeviceBatches(split, _SPEC32, 16, train=True, generator=_generator(0))
    assert len(batches) == 13
    epoch = _epoch(batches)
    assert len(epoch) == 13 and epoch[-1].images.shape[0] == 203 - 12 * 16
    indices = _cat(epoch, "indices")
    assert sorted(indices.tolist()) == list(range(203))
    assert indices.tolist() != list(range(203))  # shuffled
    assert torch.equal(_cat(epoch, "labels"), split.labels[indices])
    for batch in epoch:
        assert batch.images.dtype == torch.float32 and batch.labels.dtype == torch.int64
        assert batch.indices.dtype == torch.int64
    dropped = D.DeviceBatches(split, _SPEC32, 16, train=True, generator=_generator(0), drop_last=True)
    assert len(dropped) == 12 and all(b.images.shape[0] == 16 for b in dropped)


def _snapshot(batch: D.Batch) -> tuple[torch.Tensor, ...]:
    return batch.images.clone(), batch.labels.clone(), batch.indices.clone()


@pytest.mark.parametrize("task", ["classification", "reid"])
def test_full_batches_are_written_into_the_buffer_and_equal_fresh_ones(task: str) -> None:
    """A CUDA graph reads its inputs at fixed addresses: with epoch(into=buffer) every full batch
    is the buffer's own tensors (nothing copied after the batch is made), channels-last when
    asked, and holds exactly what a batch made without the buffer holds."""
    if task == "reid":
        spec = dataclasses.replace(_SPEC32, task="reid", instances=4, random_erasing=0.5)
        split = D.ImageSplit(_coord_split(96, 32).images, torch.arange(96) % 12)
    else:
        spec, split = _SPEC32, _coord_split(203, 32)

    def batches(**kw):
        return D.make_batches(split, spec, 16, train=True, generator=_generator(5), **kw)

    fresh = [_snapshot(b) for b in batches()]
    buffer = D.BatchBuffer()
    layout = torch.channels_last
    written = []
    for batch in batches(memory_format=layout).epoch(into=buffer):
        full = batch.labels.shape[0] == 16
        assert (batch is buffer.batch) == full  # the last, partial batch is a batch of its own
        assert batch.images.is_contiguous(memory_format=layout)
        written.append(_snapshot(batch))
    assert buffer.batch is not None
    assert len(written) == len(fresh) == (13 if task == "classification" else 6)
    for got, want in zip(written, fresh):
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def test_eval_batches_are_exact_and_in_order() -> None:
    splits = D.load_splits("synthetic", "unused", val_fraction=0.0, options={"num_train": 50, "num_test": 37})
    batches = D.DeviceBatches(splits.test, splits.spec, 8, train=False)
    epoch = _epoch(batches)
    assert len(batches) == len(epoch) == 5
    assert _cat(epoch, "indices").tolist() == list(range(37))
    assert torch.equal(_cat(epoch, "labels"), splits.test.labels)
    torch.testing.assert_close(_cat(epoch, "images"), _normalise(splits.test.images, splits.spec))
    again = _cat(_epoch(batches), "images")
    assert torch.equal(again, _cat(epoch, "images"))


def _check_crops(epoch: list[D.Batch], split: D.ImageSplit, spec: D.DatasetSpec) -> tuple[set, set]:
    """Recover each sample's crop offset and flip from its pixels, compare with a reference crop."""
    pad, size = spec.crop_padding, spec.height
    centre = size // 2
    offsets, flips = set(), set()
    for batch in epoch:
        out = _denormalise(batch.images, spec).long()
        for k, index in enumerate(batch.indices.tolist()):
            assert int(out[k, 2, centre, centre]) - 1 == index
            flipped = int(out[k, 1, centre, centre + 1]) < int(out[k, 1, centre, centre])
            oy = int(out[k, 0, centre, centre]) - 1 - centre + pad
            column = int(out[k, 1, centre, centre]) - 1
            ox = column - (size - 1 - centre) + pad if flipped else column - centre + pad
            assert 0 <= oy <= 2 * pad and 0 <= ox <= 2 * pad
            reference = F.pad(split.images[index], (pad, pad, pad, pad))[:, oy : oy + size, ox : ox + size]
            if flipped:
                reference = reference.flip(-1)
            assert torch.equal(out[k], reference.long())
            offsets.add((oy, ox))
            flips.add(flipped)
    return offsets, flips


def test_random_crop_and_flip_match_reference() -> None:
    split = _coord_split(250, 32)
    batches = D.DeviceBatches(split, _SPEC32, 64, train=True, generator=_generator(3))
    offsets, flips = set(), set()
    for _ in range(4):
        o, f = _check_crops(_epoch(batches), split, _SPEC32)
        offsets |= o
        flips |= f
    assert flips == {False, True}
    assert {oy for oy, _ in offsets} == set(range(9)) and {ox for _, ox in offsets} == set(range(9))


def test_digits_never_flip_but_crop() -> None:
    spec = D.dataset_spec("digits")
    split = _coord_split(200, 16)
    batches = D.DeviceBatches(split, spec, 50, train=True, generator=_generator(1))
    offsets, flips = set(), set()
    for _ in range(3):
        o, f = _check_crops(_epoch(batches), split, spec)
        offsets |= o
        flips |= f
    assert flips == {False}
    assert len(offsets) > 1 and max(max(o) for o in offsets) == 4


def test_padding_zero_without_flip_leaves_images_unchanged() -> None:
    spec = dataclasses.replace(_SPEC32, crop_padding=0, flip=False)
    split = _coord_split(70, 32)
    epoch = _epoch(D.DeviceBatches(split, spec, 32, train=True, generator=_generator(0)))
    indices = _cat(epoch, "indices")
    torch.testing.assert_close(_cat(epoch, "images"), _normalise(split.images[indices], spec))


def test_padding_zero_with_flip_only_mirrors() -> None:
    spec = dataclasses.replace(_SPEC32, crop_padding=0)
    split = _coord_split(70, 32)
    epoch = _epoch(D.DeviceBatches(split, spec, 32, train=True, generator=_generator(0)))
    offsets, flips = _check_crops(epoch, split, spec)
    assert offsets == {(0, 0)} and flips == {False, True}


def test_same_seed_same_batches_and_state_restore() -> None:
    splits = D.load_splits("synthetic", "unused", val_fraction=0.0, options={"num_train": 100, "num_test": 10})
    def run(generator: torch.Generator) -> list[D.Batch]:
        return _epoch(D.DeviceBatches(splits.train, splits.spec, 32, train=True, generator=generator))

    first, second = run(_generator(11)), run(_generator(11))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
    other = run(_generator(12))
    assert not torch.equal(_cat(first, "indices"), _cat(other, "indices"))

    generator = _generator(5)
    batches = D.DeviceBatches(splits.train, splits.spec, 32, train=True, generator=generator)
    _epoch(batches)  # epoch 1
    state = generator.get_state()
    epoch2 = _epoch(batches)
    epoch3 = _epoch(batches)
    assert not torch.equal(_cat(epoch2, "images"), _cat(epoch3, "images"))
    generator.set_state(state)
    replay = _epoch(D.DeviceBatches(splits.train, splits.spec, 32, train=True, generator=generator))
    assert torch.equal(_cat(replay, "images"), _cat(epoch2, "images"))
    assert torch.equal(_cat(replay, "indices"), _cat(epoch2, "indices"))


def test_batches_leave_global_rng_alone() -> None:
    split = _coord_split(40, 32)
    state = torch.get_rng_state()
    _epoch(D.DeviceBatches(split, _SPEC32, 16, train=True, generator=_generator(0)))
    assert torch.equal(torch.get_rng_state(), state)


def test_device_batches_argument_checks() -> None:
    split = _coord_split(10, 32)
    with pytest.raises(ValueError, match="generator"):
        D.DeviceBatches(split, _SPEC32, 4, train=True)
    with pytest.raises(ValueError, match="batch_size"):
        D.DeviceBatches(split, _SPEC32, 0, train=False)
    with pytest.raises(ValueError, match="expects"):
        D.DeviceBatches(split, D.dataset_spec("digits"), 4, train=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_batches_on_cuda() -> None:
    split = _coord_split(150, 32).to("cuda")
    batches = D.DeviceBatches(split, _SPEC32, 64, train=True, generator=_generator(0, "cuda"))
    epoch = _epoch(batches)
    assert all(b.images.is_cuda and b.indices.is_cuda for b in epoch)
    assert sorted(_cat(epoch, "indices").tolist()) == list(range(150))
    _check_crops(epoch, split.to("cpu"), _SPEC32)
    with pytest.raises(ValueError, match="generator"):
        D.DeviceBatches(split, _SPEC32, 4, train=True, generator=_generator(0))


@pytest.mark.parametrize("name, options, fraction, subset", [
    ("digits", None, 0.2, None),
    ("digits", None, 0.5, 300),
    ("synthetic", {"num_train": 97, "num_test": 8}, 0.1, None),
    ("synthetic", {"num_train": 50, "num_test": 8}, 0.3, 40),
    ("digits", None, 0.0, None),
])
def test_validation_size_matches_the_split_load_splits_makes(name, options, fraction, subset):
    from mgkd.data import load_splits, validation_size

    splits = load_splits(name, "unused", val_fraction=fraction, train_subset=subset, options=options)
    expected = 0 if splits.val is None else len(splits.val)
    assert validation_size(name, options, fraction, subset) == expected
