"""DukeMTMC-reID (Zheng, Zheng, Yang, ICCV 2017; torchreid's ``dukemtmcreid``): 1,404 identities
plus 408 distractor identities, 8 cameras, in the bounding-box layout of Market-1501
(:mod:`mgkd.data.bounding_boxes`) with the same query/gallery protocol.

Where it may lie: ``data_dir`` itself, ``<data_dir>/DukeMTMC-reID/`` (the archive's folder), or
torchreid's data root ``<data_dir>/dukemtmc-reid/DukeMTMC-reID/``. File names are
``PPPP_cC_fFFFFFFF.jpg`` (``0001_c2_f0046182.jpg``): person id PPPP, camera C, frame F. The
official training set holds 702 identities (16,522 images); query 2,228 images, gallery 17,661.
"""

from __future__ import annotations

import re

from mgkd.data.bounding_boxes import SUBFOLDERS, BoundingBoxSource, FileNaming
from mgkd.data.layout import FolderLayout

FOLDER_NAME = "DukeMTMC-reID"
TORCHREID_FOLDER = "dukemtmc-reid"
OFFICIAL_TRAIN_IDENTITIES = 702

DUKEMTMCREID = BoundingBoxSource(
    "dukemtmcreid",
    FolderLayout("dukemtmcreid", (
        ("", "the folder itself"),
        (FOLDER_NAME, "the archive's folder in data_dir"),
        (f"{TORCHREID_FOLDER}/{FOLDER_NAME}", "torchreid's data root"),
    ), SUBFOLDERS, "DukeMTMC-reID.zip"),
    FileNaming(re.compile(r"^(?P<pid>-1|\d+)_c(?P<camera>\d+)_f(\d+)\.jpg$"), "PPPP_cC_fFFFFFFF.jpg"),
    OFFICIAL_TRAIN_IDENTITIES,
)
