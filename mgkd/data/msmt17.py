"""MSMT17 (Wei et al., CVPR 2018; torchreid's ``msmt17``): 4,101 identities, 15 cameras, in
``MSMT17_V1`` (folders ``train``, ``test``) or ``MSMT17_V2`` (``mask_train_v2``, ``mask_test_v2``),
with the list files ``list_train.txt``, ``list_val.txt``, ``list_query.txt``, ``list_gallery.txt``.

A list line is ``<path relative to its image folder> <person id>``, e.g.
``0000/0000_000_01_0303morning_0015_0.jpg 0``; the camera is the file name's third field (``01``).
Training (1,041 identities, 32,621 images) is ``list_train`` + ``list_val``, the data set's
official training set (torchreid leaves ``list_val`` out unless ``combineall``); the test protocol
is Market-1501's on ``list_query`` (11,659 images) against ``list_gallery`` (82,161), 3,060
identities. MSMT17 has no junk or distractor ids.

Where it may lie: ``data_dir`` itself, ``<data_dir>/MSMT17_V1/`` or ``<data_dir>/MSMT17_V2/``, or
torchreid's data root ``<data_dir>/msmt17/MSMT17_V1|V2/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgkd.data.bounding_boxes import Listing, decode_split, limit_identities, reid_spec
from mgkd.data.containers import DatasetSpec, RetrievalSplit, SourceData
from mgkd.data.layout import FolderLayout
from mgkd.errors import DataError

logger = logging.getLogger(__name__)

NAME = "msmt17"
LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
# per version: (training image folder, test image folder)
VERSIONS: dict[str, tuple[str, str]] = {"MSMT17_V1": ("train", "test"),
                                        "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
OFFICIAL_TRAIN_IDENTITIES = 1041

LAYOUT = FolderLayout(NAME, (
    ("", "the folder itself"),
    *((version, f"the {version} folder in data_dir") for version in VERSIONS),
    *((f"msmt17/{version}", "torchreid's data root") for version in VERSIONS),
), LISTS, "MSMT17_V1.tar.gz or MSMT17_V2.tar.gz")


def image_folders(root: Path) -> tuple[Path, Path]:
    """The (training, test) image folders of the version found at ``root``."""
    for train, test in VERSIONS.values():
        if (root / train).is_dir() and (root / test).is_dir():
            return root / train, root / test
    wanted = " or ".join(f"{train}/ + {test}/" for train, test in VERSIONS.values())
    raise DataError(f"Data set 'msmt17' at {root} has its list files but not its image folders "
                    f"({wanted}); re-extract the archive there.")


def read_list(list_file: Path, images: Path) -> Listing:
    """The images ``list_file`` names (under ``images``), with their person and camera ids."""
    paths, pids, cameras = [], [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        parts = Path(fields[0]).name.split("_") if fields else []
        if (len(fields) != 2 or not fields[1].isdigit() or len(parts) < 4
                or not parts[2].isdigit()):
            raise DataError(f"Data set 'msmt17': line {number} of {list_file} is {line!r}, not "
                            "'<folder>/<PPPP_XXX_CC_...>.jpg <person id>'; re-extract the "
                            "official list files.")
        paths.append(images / fields[0])
        pids.append(int(fields[1]))
        cameras.append(int(parts[2]))
    if not paths:
        raise DataError(f"Data set 'msmt17': {list_file} lists no images; re-extract the official "
                        "list files.")
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"Data set 'msmt17': {len(missing)} image(s) listed in {list_file} are "
                        f"missing (e.g. {missing[0]}); re-extract the archive.")
    return Listing(tuple(paths), torch.tensor(pids, dtype=torch.int64),
                   torch.tensor(cameras, dtype=torch.int64))


def _joined(first: Listing, second: Listing) -> Listing:
    return Listing(first.paths + second.paths, torch.cat([first.pids, second.pids]),
                   torch.cat([first.cameras, second.cameras]))


@dataclass(frozen=True)
class Msmt17Source:
    """MSMT17 V1 or V2 read through its list files (options as every re-ID data set)."""

    name: str = NAME

    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        return reid_spec(self.name, OFFICIAL_TRAIN_IDENTITIES, options)

    def find_root(self, data_dir: Path) -> Path:
        return LAYOUT.find(data_dir)

    def check_available(self, data_dir: Path) -> None:
        image_folders(self.find_root(data_dir))

    def download(self, data_dir: Path) -> Path:
        raise DataError(
            f"Data set 'msmt17' cannot be downloaded by mgkd (its authors distribute it on request). "
            f"Obtain {LAYOUT.archive} and extract it so that the layout is "
            f"{LAYOUT.expected_text(data_dir)}.")

    def train_listing(self, data_dir: Path, options: dict[str, Any]) -> Listing:
        """``list_train`` + ``list_val``, in that order (names only, no decoding)."""
        root = self.find_root(data_dir)
        train_images, _ = image_folders(root)
        both = _joined(read_list(root / LISTS[0], train_images),
                       read_list(root / LISTS[1], train_images))
        return limit_identities(both, options["max_identities"])

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        root = self.find_root(data_dir)
        _, test_images = image_folders(root)
        train = self.train_listing(data_dir, options)
        query = read_list(root / LISTS[2], test_images)
        gallery = read_list(root / LISTS[3], test_images)
        logger.info("loading msmt17 from %s: %d train images of %d identities, %d query, "
                    "%d gallery at %dx%d", root, len(train), len(train.pids.unique()), len(query),
                    len(gallery), options["height"], options["width"])
        test = RetrievalSplit(query=decode_split(query, options),
                              gallery=decode_split(gallery, options))
        return SourceData(train=decode_split(train, options), test=test)


MSMT17 = Msmt17Source()
