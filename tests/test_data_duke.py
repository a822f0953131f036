"""DukeMTMC-reID: its file names (``PPPP_cC_fFFFFFFF.jpg``), its folders (the archive's
``DukeMTMC-reID/`` and torchreid's ``dukemtmc-reid/DukeMTMC-reID/``) and Market-1501's protocol, on
a fixture of real JPEG files in its exact format (no junk, no distractor files, no Thumbs.db)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from market_fixture import duke_name, write_market1501
from mgkd import data as D
from mgkd.catalog.datasets import validate_data_options
from mgkd.catalog.objectives import check_objective
from mgkd.config import ExperimentConfig
from mgkd.data.dukemtmcreid import DUKEMTMCREID
from mgkd.errors import DataError

SMALL = {"height": 32, "width": 16, "instances": 2}
IDS, CAMS, PER_CAM = 4, 3, 2


def write_duke(root: Path, folder: str = "dukemtmc-reid/DukeMTMC-reID") -> Path:
    return write_market1501(root, identities=IDS, cameras=CAMS, per_camera=PER_CAM, folder=folder,
                            naming=duke_name, junk_and_distractors=False)


def test_the_fixture_has_dukes_names():
    assert duke_name("0001", 2, 46182) == "0001_c2_f0046182.jpg"  # a real DukeMTMC-reID name


@pytest.mark.parametrize("folder, data_dir", [
    ("dukemtmc-reid/DukeMTMC-reID", "."),  # torchreid's data root
    ("DukeMTMC-reID", "."),  # the archive's folder's parent
    ("DukeMTMC-reID", "DukeMTMC-reID"),  # the folder itself
])
def test_duke_loads_from_every_layout_with_markets_protocol(tmp_path, folder, data_dir):
    write_duke(tmp_path, folder)
    given = tmp_path / data_dir
    splits = D.load_splits("dukemtmcreid", given, val_fraction=0.0, options=SMALL)
    assert splits.spec.task == "reid" and splits.spec.name == "dukemtmcreid"
    assert len(splits.train) == IDS * CAMS * PER_CAM and splits.spec.num_classes == IDS
    assert len(splits.test.query) == IDS * CAMS
    assert len(splits.test.gallery) == IDS * CAMS * PER_CAM
    listing = DUKEMTMCREID.train_listing(given, validate_data_options("dukemtmcreid", SMALL))
    assert set(listing.cameras.tolist()) == {1, 2, 3}
    assert set(listing.pids.tolist()) == {2, 4, 6, 8}
    for path, pid, cam in zip(listing.paths, listing.pids.tolist(), listing.cameras.tolist()):
        assert path.name.startswith(f"{pid:04d}_c{cam}_f")
    assert splits.test.query.images.shape[1:] == (3, 32, 16)
    assert torch.equal(splits.test.query.cameras.unique(), torch.tensor([1, 2, 3]))


def test_a_market_name_in_a_duke_folder_is_refused_with_dukes_pattern(tmp_path):
    write_duke(tmp_path)
    train = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID" / "bounding_box_train"
    (train / "0002_c1s1_000001_00.jpg").write_bytes((next(train.iterdir())).read_bytes())
    with pytest.raises(DataError) as info:
        D.load_splits("dukemtmcreid", tmp_path, val_fraction=0.0, options=SMALL)
    assert "0002_c1s1_000001_00.jpg" in str(info.value)
    assert "PPPP_cC_fFFFFFFF.jpg" in str(info.value) and "'dukemtmcreid'" in str(info.value)


def test_a_missing_duke_lists_its_layouts(tmp_path):
    with pytest.raises(DataError) as info:
        D.check_available("dukemtmcreid", tmp_path)
    message = str(info.value)
    for folder in (tmp_path, tmp_path / "DukeMTMC-reID",
                   tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"):
        assert f"{folder} (" in message
    assert "torchreid's data root" in message and "DukeMTMC-reID.zip" in message


def test_duke_is_a_reid_data_set_in_the_config():
    config = ExperimentConfig.from_dict({"dataset": "dukemtmcreid", "teacher": "osnet_x1_0",
                                         "student": "osnet_x0_25", "rerank": True})
    assert check_objective(config.objective, config.dataset).name == "val_map"
    assert D.dataset_spec("dukemtmcreid", validate_data_options("dukemtmcreid", {})).num_classes \
        == 702
