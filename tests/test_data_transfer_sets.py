"""The transfer targets' readers on files written here in the official formats: STL-10's binary
files (column-major images, labels 1-10) and Tiny-ImageNet's folder (wnids.txt, per-class train
folders, val_annotations.txt), with errors that name the expected layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgkd.data import check_available, dataset_spec, load_splits
from mgkd.errors import DataError


def _stl_images(count: int, seed: int) -> np.ndarray:
    """(N, 3, 96, 96) uint8 in row-major (channel, row, column) order, rows unlike columns."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 3, 96, 96), dtype=np.uint8)
    images[:, 0, 5, :] = 255  # a bright row 5 in channel 0: a transposed read makes it a column
    images[:, 0, :, 5] = 0
    return images


def write_stl10(root: Path, train: int = 12, test: int = 8) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, count, seed in (("train", train, 0), ("test", test, 1)):
        images = _stl_images(count, seed)
        labels = (np.arange(count) % 10 + 1).astype(np.uint8)  # the official files: 1 to 10
        # Each channel column by column, as the official files (written from MATLAB) store it.
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        written[split] = (images, labels)
    return written


def test_stl10_reads_the_official_binary_format(tmp_path):
    written = write_stl10(tmp_path)
    splits = load_splits("stl10", tmp_path, val_fraction=0.0, options={"image_size": 96})
    for split, (images, labels) in (("train", written["train"]), ("test", written["test"])):
        got = getattr(splits, split)
        assert torch.equal(got.images, torch.from_numpy(images))
        assert got.labels.tolist() == (labels.astype(np.int64) - 1).tolist()
    assert splits.spec.num_classes == 10 and splits.spec.image_shape == (96, 96)


def test_stl10_is_resized_once_to_image_size(tmp_path):
    write_stl10(tmp_path)
    splits = load_splits("stl10", tmp_path, val_fraction=0.25, options={})  # default 32
    assert splits.train.images.shape == (9, 3, 32, 32) and len(splits.val) == 3
    assert splits.test.images.dtype == torch.uint8
    # The bright row stays a bright row (rows and columns were not swapped).
    row = splits.test.images[:, 0].float()
    assert (row[:, 1, :].mean() > row[:, :, 1].mean() + 40)
    assert dataset_spec("stl10", {"image_size": 48}).image_shape == (48, 48)


def test_stl10_missing_or_malformed_files_name_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"stl10_binary/train_X\.bin, train_y\.bin, test_X\.bin"):
        check_available("stl10", tmp_path)
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(DataError, match="lacks test_y.bin"):
        check_available("stl10", tmp_path)
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(DataError, match="3 labels but its image file 8 images"):
        load_splits("stl10", tmp_path, val_fraction=0.0)
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes(8))
    with pytest.raises(DataError, match="labels in \\[0, 0\\]; the official files hold 1 to 10"):
        load_splits("stl10", tmp_path, val_fraction=0.0)
    (tmp_path / "stl10_binary" / "train_X.bin").write_bytes(bytes(1000))
    with pytest.raises(DataError, match="not a whole number of 3x96x96 images"):
        load_splits("stl10", tmp_path, val_fraction=0.0)


def _colour(label: int) -> tuple[int, int, int]:
    return (label % 7 * 36, label // 7 % 7 * 36, 200 - label // 49 * 40)


def write_tiny_imagenet(root: Path, val_labels=(3, 0, 199, 57)) -> list[str]:
    """The official layout with 200 classes, one flat-coloured JPEG each (class 1 grey-scale) and
    a second image for class 0; validation images listed in val_annotations.txt."""
    base = root / "tiny-imagenet-200"
    wnids = [f"n{10000000 + 7 * i:08d}" for i in range(200)]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for label, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        image = Image.new("RGB", (64, 64), _colour(label))
        (image.convert("L") if label == 1 else image).save(folder / f"{wnid}_0.JPEG", quality=95)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    Image.new("RGB", (64, 64), _colour(0)).save(
        base / "train" / wnids[0] / "images" / f"{wnids[0]}_1.JPEG", quality=95)
    lines = []
    for number, label in enumerate(val_labels):
        Image.new("RGB", (64, 64), _colour(label)).save(base / "val" / "images" /
                                                        f"val_{number}.JPEG", quality=95)
        lines.append(f"val_{number}.JPEG\t{wnids[label]}\t1\t2\t60\t61")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


def test_tiny_imagenet_reads_the_official_folder(tmp_path):
    write_tiny_imagenet(tmp_path)
    splits = load_splits("tiny_imagenet", tmp_path, val_fraction=0.0, options={"image_size": 64})
    assert splits.spec.num_classes == 200
    assert len(splits.train) == 201 and splits.train.labels.tolist()[:3] == [0, 0, 1]
    assert splits.test.labels.tolist() == [3, 0, 199, 57]
    means = splits.test.images.float().mean(dim=(2, 3))
    expected = torch.tensor([_colour(label) for label in (3, 0, 199, 57)], dtype=torch.float32)
    assert torch.allclose(means, expected, atol=3)  # JPEG round trip of flat colours
    grey = splits.train.images[2]  # class 1, saved grey-scale: three equal channels
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_tiny_imagenet_is_resized_to_image_size(tmp_path):
    write_tiny_imagenet(tmp_path)
    splits = load_splits("tiny_imagenet", tmp_path, val_fraction=0.0, options={})
    assert splits.train.images.shape == (201, 3, 32, 32)
    flat = splits.train.images[3].float().mean(dim=(1, 2))
    assert torch.allclose(flat, torch.tensor(_colour(2), dtype=torch.float32), atol=3)


def test_tiny_imagenet_layout_errors_name_the_layout(tmp_path):
    with pytest.raises(DataError, match="tiny-imagenet-200/wnids.txt, tiny-imagenet-200/train/"
                                        "<wnid>/images/\\*.JPEG"):
        check_available("tiny_imagenet", tmp_path)
    wnids = write_tiny_imagenet(tmp_path)
    base = tmp_path / "tiny-imagenet-200"
    annotations = base / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="line 5 of .*val_annotations.txt"):
        load_splits("tiny_imagenet", tmp_path, val_fraction=0.0)
    annotations.write_text(f"val_9.JPEG\t{wnids[4]}\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="val_9.JPEG is listed but missing"):
        load_splits("tiny_imagenet", tmp_path, val_fraction=0.0)
    for image in (base / "train" / wnids[5] / "images").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=f"class {wnids[5]} of wnids.txt has no images"):
        load_splits("tiny_imagenet", tmp_path, val_fraction=0.0)
    (base / "wnids.txt").write_text("\n".join(wnids[:3]) + "\n")
    with pytest.raises(DataError, match="lists 3 class ids; the official file lists 200"):
        load_splits("tiny_imagenet", tmp_path, val_fraction=0.0)
