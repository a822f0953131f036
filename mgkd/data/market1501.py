"""Market-1501 (person re-ID) from its standard extracted folder under ``data_dir``.

Layout: a folder holding ``bounding_box_train``, ``bounding_box_test`` (the gallery) and ``query``:
``data_dir`` itself, ``<data_dir>/Market-1501-v15.09.15/`` (the official archive's folder), the
short alias ``<data_dir>/market1501/``, or torchreid's data root
``<data_dir>/market1501/Market-1501-v15.09.15/``. File names are ``PPPP_cCsS_FFFFFF_NN.jpg``: person id PPPP, camera C. Person id ``-1``
marks junk (left out everywhere); ``0000`` marks distractors (kept in the test gallery only). Files
that are not ``.jpg`` (the archive ships ``Thumbs.db``) are ignored.

Images are decoded once with PIL in a small thread pool and resized (bilinear, antialiased) to
``height x width`` uint8.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgkd.data.containers import DatasetSpec, ImageSplit, RetrievalSplit, SourceData
from mgkd.data.layout import FolderLayout
from mgkd.errors import DataError

logger = logging.getLogger(__name__)

FOLDER_NAMES: tuple[str, ...] = ("Market-1501-v15.09.15", "market1501")  # official, short alias
TRAIN, GALLERY, QUERY = "bounding_box_train", "bounding_box_test", "query"
SUBFOLDERS: tuple[str, ...] = (TRAIN, GALLERY, QUERY)
JUNK_ID = -1
DISTRACTOR_ID = 0
OFFICIAL_TRAIN_IDENTITIES = 751

_NAME = re.compile(r"^(-1|\d+)_c(\d+)s(\d+)_(\d+)_(\d+)\.jpg$")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CROP_PADDING = 10
_RANDOM_ERASING = 0.5
_MAX_DECODE_THREADS = 8



LAYOUT = FolderLayout("market1501", (
    ("", "the folder itself"),
    (FOLDER_NAMES[0], "the official archive's folder in data_dir"),
    (FOLDER_NAMES[1], "the short alias in data_dir"),
    (f"{FOLDER_NAMES[1]}/{FOLDER_NAMES[0]}", "torchreid's data root"),
), SUBFOLDERS, "Market-1501-v15.09.15.zip")


def layout_text(data_dir: Path) -> str:
    """The accepted folder layouts, for error messages."""
    return LAYOUT.expected_text(data_dir)


def find_root(data_dir: Path) -> Path:
    """The Market-1501 folder: ``data_dir`` itself, its ``Market-1501-v15.09.15`` or
    ``market1501`` folder, or torchreid's ``market1501/Market-1501-v15.09.15``; a DataError
    listing every layout tried otherwise."""
    return LAYOUT.find(data_dir)


@dataclass(frozen=True)
class Listing:
    """The usable files of one folder, in sorted name order, with person and camera ids."""

    paths: tuple[Path, ...]
    pids: torch.Tensor
    cameras: torch.Tensor

    def __len__(self) -> int:
        return len(self.paths)

    def keep(self, mask: torch.Tensor) -> Listing:
        """The entries where ``mask`` is True."""
        chosen = mask.nonzero().flatten().tolist()
        return Listing(tuple(self.paths[i] for i in chosen), self.pids[mask], self.cameras[mask])


def list_folder(folder: Path, *, keep_distractors: bool) -> Listing:
    """Parse every ``.jpg`` name in ``folder``; junk is left out, distractors only if asked."""
    entries: list[tuple[Path, int, int]] = []
    bad: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".jpg" or not path.is_file():
            continue
        match = _NAME.match(path.name)
        if match is None:
            bad.append(path.name)
            continue
        entries.append((path, int(match.group(1)), int(match.group(2))))
    if bad:
        raise DataError(
            f"Data set 'market1501': {len(bad)} file name(s) in {folder} do not follow Market-1501's "
            f"PPPP_cCsS_FFFFFF_NN.jpg pattern (e.g. {', '.join(bad[:3])}); the folder should hold the "
            "official files only. Remove or rename those files."
        )
    keep = [e for e in entries if e[1] != JUNK_ID and (keep_distractors or e[1] != DISTRACTOR_ID)]
    if not keep:
        raise DataError(
            f"Data set 'market1501': {folder} holds no usable images (found {len(entries)} .jpg files, "
            f"all junk or distractors); re-extract the official archive there."
        )
    logger.debug("market1501 %s: %d images kept of %d", folder.name, len(keep), len(entries))
    return Listing(
        tuple(e[0] for e in keep),
        torch.tensor([e[1] for e in keep], dtype=torch.int64),
        torch.tensor([e[2] for e in keep], dtype=torch.int64),
    )


def limit_identities(listing: Listing, max_identities: int | None) -> Listing:
    """Keep the ``max_identities`` smallest person ids (all when None)."""
    if max_identities is None:
        return listing
    allowed = listing.pids.unique()[:max_identities]
    return listing.keep(torch.isin(listing.pids, allowed))


def _decode_into(out: np.ndarray, paths: tuple[Path, ...], indices: range, size: tuple[int, int]) -> None:
    from PIL import Image, UnidentifiedImageError

    for i in indices:
        try:
            with Image.open(paths[i]) as image:
                rgb = image.convert("RGB")
                if rgb.size != size:
                    rgb = rgb.resize(size, Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(
                f"Data set 'market1501': cannot decode {paths[i]} ({type(exc).__name__}: {exc}); "
                "replace it from the official archive or delete it."
            ) from exc


def decode_images(paths: tuple[Path, ...], height: int, width: int) -> torch.Tensor:
    """Decode and resize ``paths`` into a uint8 (N, 3, height, width) tensor, a few threads at once."""
    out = np.empty((len(paths), 3, height, width), dtype=np.uint8)
    workers = max(1, min(_MAX_DECODE_THREADS, os.cpu_count() or 1))
    step = max(1, -(-len(paths) // (workers * 4)))
    chunks = [range(lo, min(lo + step, len(paths))) for lo in range(0, len(paths), step)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="market1501-decode") as pool:
        for future in [pool.submit(_decode_into, out, paths, chunk, (width, height)) for chunk in chunks]:
            future.result()
    return torch.from_numpy(out)


def _split(listing: Listing, options: dict[str, Any]) -> ImageSplit:
    images = decode_images(listing.paths, options["height"], options["width"])
    return ImageSplit(images, listing.pids.clone(), listing.cameras.clone())


@dataclass(frozen=True)
class Market1501Source:
    """Market-1501 read from disk (options: height, width, instances K, max_identities)."""

    name: str = "market1501"

    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        """The nominal spec: all official training identities (``load_splits`` sets the count the
        folder holds; held-out validation identities keep their classes)."""
        limit = options["max_identities"]
        classes = OFFICIAL_TRAIN_IDENTITIES if limit is None else min(limit, OFFICIAL_TRAIN_IDENTITIES)
        return DatasetSpec(self.name, classes, options["height"], options["width"], 3, _IMAGENET_MEAN,
                           _IMAGENET_STD, _CROP_PADDING, True,
                           random_erasing=_RANDOM_ERASING, instances=options["instances"])

    def check_available(self, data_dir: Path) -> None:
        find_root(data_dir)

    def download(self, data_dir: Path) -> Path:
        raise DataError(
            "Data set 'market1501' cannot be downloaded by mgkd (its authors distribute it on request "
            "and no licence allows a mirror). Obtain Market-1501-v15.09.15.zip and extract it so that "
            f"the layout is {layout_text(data_dir)}."
        )

    def train_listing(self, data_dir: Path, options: dict[str, Any]) -> Listing:
        """The training files that ``load`` decodes, in the same order (names only, no decoding)."""
        root = find_root(data_dir)
        return limit_identities(list_folder(root / TRAIN, keep_distractors=False),
                                options["max_identities"])

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        root = find_root(data_dir)
        train = self.train_listing(data_dir, options)
        query = list_folder(root / QUERY, keep_distractors=False)
        gallery = list_folder(root / GALLERY, keep_distractors=True)
        logger.info(
            "loading market1501 from %s: %d train images of %d identities, %d query, %d gallery "
            "(%d distractors) at %dx%d", root, len(train), len(train.pids.unique()), len(query),
            len(gallery), int((gallery.pids == DISTRACTOR_ID).sum()), options["height"], options["width"],
        )
        test = RetrievalSplit(query=_split(query, options), gallery=_split(gallery, options))
        return SourceData(train=_split(train, options), test=test)


MARKET1501 = Market1501Source()
