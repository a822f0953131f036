"""Person re-ID data sets in the bounding-box layout (Market-1501, DukeMTMC-reID): a folder with
``bounding_box_train``, ``bounding_box_test`` (the gallery) and ``query``, one JPEG per crop, whose
name carries the person id and the camera.

A :class:`BoundingBoxSource` is one such data set: its name, where it may lie under ``data_dir``
(:class:`~mgkd.data.layout.FolderLayout`), its file naming and its official training identity
count. Person id ``-1`` marks junk (left out everywhere); ``0`` marks distractors (kept in the test
gallery only). Files that are not ``.jpg`` (archives ship ``Thumbs.db``) are ignored.

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

TRAIN, GALLERY, QUERY = "bounding_box_train", "bounding_box_test", "query"
SUBFOLDERS: tuple[str, ...] = (TRAIN, GALLERY, QUERY)
JUNK_ID = -1
DISTRACTOR_ID = 0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PADDING = 10
RANDOM_ERASING = 0.5
_MAX_DECODE_THREADS = 8


@dataclass(frozen=True)
class FileNaming:
    """A data set's crop file names: ``pattern`` has the groups ``pid`` and ``camera``;
    ``text`` shows the form to people (``PPPP_cCsS_FFFFFF_NN.jpg``)."""

    pattern: re.Pattern[str]
    text: str

    def parse(self, name: str) -> tuple[int, int] | None:
        match = self.pattern.match(name)
        return None if match is None else (int(match.group("pid")), int(match.group("camera")))


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


def list_folder(folder: Path, naming: FileNaming, *, keep_distractors: bool,
                dataset: str) -> Listing:
    """Parse every ``.jpg`` name in ``folder``; junk is left out, distractors only if asked."""
    entries: list[tuple[Path, int, int]] = []
    bad: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".jpg" or not path.is_file():
            continue
        parsed = naming.parse(path.name)
        if parsed is None:
            bad.append(path.name)
            continue
        entries.append((path, *parsed))
    if bad:
        raise DataError(
            f"Data set {dataset!r}: {len(bad)} file name(s) in {folder} do not follow its "
            f"{naming.text} pattern (e.g. {', '.join(bad[:3])}); the folder should hold the "
            "official files only. Remove or rename those files."
        )
    keep = [e for e in entries if e[1] != JUNK_ID and (keep_distractors or e[1] != DISTRACTOR_ID)]
    if not keep:
        raise DataError(
            f"Data set {dataset!r}: {folder} holds no usable images (found {len(entries)} .jpg files, "
            f"all junk or distractors); re-extract the official archive there."
        )
    logger.debug("%s %s: %d images kept of %d", dataset, folder.name, len(keep), len(entries))
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
                f"cannot decode the image {paths[i]} ({type(exc).__name__}: {exc}); "
                "replace it from the official archive or delete it."
            ) from exc


def decode_images(paths: tuple[Path, ...], height: int, width: int) -> torch.Tensor:
    """Decode and resize ``paths`` into a uint8 (N, 3, height, width) tensor, a few threads at once."""
    out = np.empty((len(paths), 3, height, width), dtype=np.uint8)
    workers = max(1, min(_MAX_DECODE_THREADS, os.cpu_count() or 1))
    step = max(1, -(-len(paths) // (workers * 4)))
    chunks = [range(lo, min(lo + step, len(paths))) for lo in range(0, len(paths), step)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reid-decode") as pool:
        for future in [pool.submit(_decode_into, out, paths, chunk, (width, height)) for chunk in chunks]:
            future.result()
    return torch.from_numpy(out)


def decode_split(listing: Listing, options: dict[str, Any]) -> ImageSplit:
    """The listed images decoded at the options' size, with their person and camera ids."""
    images = decode_images(listing.paths, options["height"], options["width"])
    return ImageSplit(images, listing.pids.clone(), listing.cameras.clone())


def reid_spec(name: str, official_train_identities: int, options: dict[str, Any]) -> DatasetSpec:
    """The nominal spec of a re-ID data set: all official training identities (``load_splits``
    sets the count the folder holds; held-out validation identities keep their classes)."""
    limit = options["max_identities"]
    classes = official_train_identities if limit is None else min(limit, official_train_identities)
    return DatasetSpec(name, classes, options["height"], options["width"], 3, IMAGENET_MEAN,
                       IMAGENET_STD, CROP_PADDING, True,
                       random_erasing=RANDOM_ERASING, instances=options["instances"])


@dataclass(frozen=True)
class BoundingBoxSource:
    """One bounding-box re-ID data set read from disk (options: height, width, instances K,
    max_identities)."""

    name: str
    layout: FolderLayout
    naming: FileNaming
    official_train_identities: int

    def spec(self, options: dict[str, Any]) -> DatasetSpec:
        return reid_spec(self.name, self.official_train_identities, options)

    def find_root(self, data_dir: Path) -> Path:
        return self.layout.find(data_dir)

    def check_available(self, data_dir: Path) -> None:
        self.find_root(data_dir)

    def download(self, data_dir: Path) -> Path:
        raise DataError(
            f"Data set {self.name!r} cannot be downloaded by mgkd (its authors distribute it on "
            f"request and no licence allows a mirror). Obtain {self.layout.archive} and extract it "
            f"so that the layout is {self.layout.expected_text(data_dir)}."
        )

    def _list(self, folder: Path, keep_distractors: bool) -> Listing:
        return list_folder(folder, self.naming, keep_distractors=keep_distractors, dataset=self.name)

    def train_listing(self, data_dir: Path, options: dict[str, Any]) -> Listing:
        """The training files that ``load`` decodes, in the same order (names only, no decoding)."""
        return limit_identities(self._list(self.find_root(data_dir) / TRAIN, False),
                                options["max_identities"])

    def load(self, data_dir: Path, options: dict[str, Any]) -> SourceData:
        root = self.find_root(data_dir)
        train = self.train_listing(data_dir, options)
        query = self._list(root / QUERY, False)
        gallery = self._list(root / GALLERY, True)
        logger.info(
            "loading %s from %s: %d train images of %d identities, %d query, %d gallery "
            "(%d distractors) at %dx%d", self.name, root, len(train), len(train.pids.unique()),
            len(query), len(gallery), int((gallery.pids == DISTRACTOR_ID).sum()),
            options["height"], options["width"],
        )
        test = RetrievalSplit(query=decode_split(query, options), gallery=decode_split(gallery, options))
        return SourceData(train=decode_split(train, options), test=test)
