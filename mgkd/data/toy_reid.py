"""Tiny person re-ID folders of real JPEG files in the official formats (Market-1501,
DukeMTMC-reID, MSMT17): the tests' data, and ``mgkd toy-data``'s, to try re-ID without the real
data sets.

Training identities get even person ids (0002, 0004, ...), test identities odd ones (0001, 0003, ...),
as in Market-1501 the two sets are disjoint. Every identity has its own shirt and trouser colours and
stripe period (learnable by a tiny model); cameras change the brightness a little, and each image has
its own noise, so no two files decode to the same pixels. Besides the identities the folders hold junk
(person id -1) in all three folders, distractors (0000) in the gallery and in the training folder (which
the loader must drop), and a ``Thumbs.db`` as the official archive does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import numpy as np
from PIL import Image

OFFICIAL_FOLDER = "Market-1501-v15.09.15"
JUNK_PER_FOLDER = {"bounding_box_train": 1, "bounding_box_test": 2, "query": 1}
DISTRACTORS = {"bounding_box_train": 1, "bounding_box_test": 3}


def market_name(person: str, camera: int, frame: int) -> str:
    """Market-1501's ``PPPP_cCsS_FFFFFF_NN.jpg``."""
    return f"{person}_c{camera}s1_{frame:06d}_{frame % 100:02d}.jpg"


def duke_name(person: str, camera: int, frame: int) -> str:
    """DukeMTMC-reID's ``PPPP_cC_fFFFFFFF.jpg`` (e.g. ``0001_c2_f0046182.jpg``)."""
    return f"{person}_c{camera}_f{frame:07d}.jpg"


@dataclass
class _Writer:
    folder: Path
    size: tuple[int, int]
    rng: np.random.Generator
    naming: Callable[[str, int, int], str] = market_name
    frame: int = 0

    def write(self, pid: int, camera: int, colours: np.ndarray, period: int) -> None:
        height, width = self.size
        image = np.empty((height, width, 3), dtype=np.float64)
        image[: height // 2] = colours[0]
        image[height // 2 :] = colours[1]
        stripes = (np.arange(height // 2) // period) % 2 == 1
        image[: height // 2][stripes] *= 0.6
        image *= 0.85 + 0.05 * camera
        image += self.rng.normal(0.0, 8.0, size=image.shape)
        pixels = np.clip(image, 0, 255).astype(np.uint8)
        self.frame += 1
        person = "-1" if pid < 0 else f"{pid:04d}"
        name = self.naming(person, camera, self.frame)
        Image.fromarray(pixels).save(self.folder / name, quality=92)


def _look(pid: int, seed: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([seed, pid + 1])
    return rng.uniform(30, 230, size=(2, 3)), int(rng.integers(2, 9))


def write_market1501(
    root: str | Path,
    *,
    identities: int = 6,
    cameras: int = 3,
    per_camera: int = 2,
    size: tuple[int, int] = (128, 64),
    seed: int = 0,
    test_identities: int | None = None,
    folder: str = OFFICIAL_FOLDER,
    naming: Callable[[str, int, int], str] = market_name,
    junk_and_distractors: bool = True,
) -> Path:
    """Write the fixture under ``root/folder`` and return ``root`` (the ``data_dir`` to load from).

    ``identities`` training identities (and ``test_identities``, default the same, for query and
    gallery), each seen by ``cameras`` cameras with ``per_camera`` training / gallery images per camera
    and one query per camera; ``size`` is (height, width). ``naming`` makes the file names
    (Market-1501's by default); ``junk_and_distractors`` adds Market's id -1 and 0000 files and a
    ``Thumbs.db`` (DukeMTMC-reID ships none of them).
    """
    root = Path(root)
    base = root / folder
    rng = np.random.default_rng(seed)
    writers = {}
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (base / sub).mkdir(parents=True, exist_ok=True)
        writers[sub] = _Writer(base / sub, size, rng, naming)
    test_identities = identities if test_identities is None else test_identities
    for i in range(identities):
        pid = 2 * i + 2
        colours, period = _look(pid, seed)
        for camera in range(1, cameras + 1):
            for _ in range(per_camera):
                writers["bounding_box_train"].write(pid, camera, colours, period)
    for i in range(test_identities):
        pid = 2 * i + 1
        colours, period = _look(pid, seed)
        for camera in range(1, cameras + 1):
            writers["query"].write(pid, camera, colours, period)
            for _ in range(per_camera):
                writers["bounding_box_test"].write(pid, camera, colours, period)
    if not junk_and_distractors:
        return root
    for sub, count in JUNK_PER_FOLDER.items():
        for k in range(count):
            writers[sub].write(-1, 1 + k % cameras, rng.uniform(0, 255, size=(2, 3)), 3)
    for sub, count in DISTRACTORS.items():
        for k in range(count):
            writers[sub].write(0, 1 + k % cameras, rng.uniform(0, 255, size=(2, 3)), 5)
    (base / "bounding_box_test" / "Thumbs.db").write_bytes(b"\x00not an image")
    return root


def msmt_name(person: str, camera: int, frame: int) -> str:
    """MSMT17's ``PPPP_NNN_CC_<date><time>_FFFF_K.jpg`` (e.g. ``0000_000_01_0303morning_0015_0.jpg``)."""
    return f"{person}_{frame % 1000:03d}_{camera:02d}_0303morning_{frame:04d}_0.jpg"


def write_msmt17(root: str | Path, *, version: str = "MSMT17_V1", folder: str | None = None,
                 identities: int = 4, cameras: int = 3, per_camera: int = 2,
                 size: tuple[int, int] = (128, 64), seed: int = 0) -> Path:
    """An MSMT17 folder (``root/folder``, default torchreid's ``msmt17/<version>``) in the
    archive's format: images under ``<train|test folder>/<PPPP>/``, the four list files with
    ``<PPPP>/<file> <pid>`` lines. Training and test identities are both numbered from 0 (as in
    MSMT17); the last training image of each identity goes to ``list_val.txt``. Returns ``root``."""
    train_dir, test_dir = {"MSMT17_V1": ("train", "test"),
                           "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}[version]
    root = Path(root)
    base = root / (folder if folder is not None else f"msmt17/{version}")
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {name: [] for name in ("train", "val", "query", "gallery")}
    for split, images in (("train", train_dir), ("test", test_dir)):
        for pid in range(identities):
            person = f"{pid:04d}"
            writer = _Writer(base / images / person, size, rng, msmt_name,
                             frame=1000 * pid + (500 if split == "test" else 0))
            writer.folder.mkdir(parents=True, exist_ok=True)
            colours, period = _look(pid if split == "train" else 100 + pid, seed)
            names = []
            for camera in range(1, cameras + 1):
                for shot in range(per_camera + (1 if split == "test" else 0)):
                    writer.write(pid, camera, colours, period)
                    names.append((camera, shot, f"{person}/{msmt_name(person, camera, writer.frame)}"))
            if split == "train":
                lists["train"] += [f"{name} {pid}" for _, _, name in names[:-1]]
                lists["val"].append(f"{names[-1][2]} {pid}")
            else:  # one query per camera, the rest in the gallery
                lists["query"] += [f"{name} {pid}" for _, shot, name in names if shot == 0]
                lists["gallery"] += [f"{name} {pid}" for _, shot, name in names if shot > 0]
    for name, lines in lists.items():
        (base / f"list_{name}.txt").write_text("\n".join(lines) + "\n")
    return root
