"""Market-1501 (Zheng et al., ICCV 2015): 1,501 identities, 6 cameras, in the bounding-box layout
(:mod:`mgkd.data.bounding_boxes`).

Where it may lie: ``data_dir`` itself, ``<data_dir>/Market-1501-v15.09.15/`` (the official
archive's folder), the short alias ``<data_dir>/market1501/``, or torchreid's data root
``<data_dir>/market1501/Market-1501-v15.09.15/``. File names are ``PPPP_cCsS_FFFFFF_NN.jpg``:
person id PPPP (``-1`` junk, ``0000`` distractors), camera C.
"""

from __future__ import annotations

import re
from pathlib import Path

from mgkd.data.bounding_boxes import (GALLERY, QUERY, SUBFOLDERS, TRAIN, BoundingBoxSource,
                                      FileNaming, Listing, list_folder)
from mgkd.data.layout import FolderLayout

__all__ = ["GALLERY", "QUERY", "TRAIN", "MARKET1501", "Listing", "find_root", "list_folder"]

FOLDER_NAMES: tuple[str, ...] = ("Market-1501-v15.09.15", "market1501")  # official, short alias
OFFICIAL_TRAIN_IDENTITIES = 751

MARKET1501 = BoundingBoxSource(
    "market1501",
    FolderLayout("market1501", (
        ("", "the folder itself"),
        (FOLDER_NAMES[0], "the official archive's folder in data_dir"),
        (FOLDER_NAMES[1], "the short alias in data_dir"),
        (f"{FOLDER_NAMES[1]}/{FOLDER_NAMES[0]}", "torchreid's data root"),
    ), SUBFOLDERS, "Market-1501-v15.09.15.zip"),
    FileNaming(re.compile(r"^(?P<pid>-1|\d+)_c(?P<camera>\d+)s(\d+)_(\d+)_(\d+)\.jpg$"),
               "PPPP_cCsS_FFFFFF_NN.jpg"),
    OFFICIAL_TRAIN_IDENTITIES,
)


def find_root(data_dir: Path) -> Path:
    """The Market-1501 folder under ``data_dir`` (every accepted layout, module doc); a DataError
    listing each layout tried otherwise."""
    return MARKET1501.find_root(data_dir)
