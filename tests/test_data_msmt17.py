"""MSMT17 (V1 and V2): its list files, image folders and camera field, torchreid's data root and
the other layouts, on a fixture of real JPEG files in the archive's exact format."""
from __future__ import annotations

import pytest
import torch

from market_fixture import msmt_name, write_msmt17
from mgkd import data as D
from mgkd.catalog.datasets import validate_data_options
from mgkd.config import ExperimentConfig
from mgkd.data.msmt17 import MSMT17
from mgkd.errors import DataError

SMALL = {"height": 32, "width": 16, "instances": 2}
IDS, CAMS, PER_CAM = 4, 3, 2


def test_the_fixture_has_msmt17s_names():
    assert msmt_name("0000", 1, 15) == "0000_015_01_0303morning_0015_0.jpg"


@pytest.mark.parametrize("version", ["MSMT17_V1", "MSMT17_V2"])
@pytest.mark.parametrize("folder, data_dir", [
    (None, "."),  # torchreid's data root: msmt17/<version>
    ("{version}", "."),  # the archive's folder's parent
    ("{version}", "{version}"),  # the folder itself
])
def test_msmt17_loads_train_and_val_lists_as_training_and_query_against_gallery(
        tmp_path, version, folder, data_dir):
    write_msmt17(tmp_path, version=version, identities=IDS, cameras=CAMS, per_camera=PER_CAM,
                 folder=None if folder is None else folder.format(version=version))
    given = tmp_path / data_dir.format(version=version)
    splits = D.load_splits("msmt17", given, val_fraction=0.0, options=SMALL)
    assert splits.spec.name == "msmt17" and splits.spec.task == "reid"
    assert len(splits.train) == IDS * CAMS * PER_CAM  # list_train + list_val
    assert splits.spec.num_classes == IDS
    assert len(splits.test.query) == IDS * CAMS and len(splits.test.gallery) == IDS * CAMS * PER_CAM
    listing = MSMT17.train_listing(given, validate_data_options("msmt17", SMALL))
    assert listing.pids.tolist().count(0) == CAMS * PER_CAM  # id 0 is a person, not a distractor
    assert set(listing.cameras.tolist()) == {1, 2, 3}
    for path, pid, cam in zip(listing.paths, listing.pids.tolist(), listing.cameras.tolist()):
        assert path.parent.name == f"{pid:04d}" and path.name.split("_")[2] == f"{cam:02d}"
    assert torch.equal(splits.test.gallery.cameras.unique(), torch.tensor([1, 2, 3]))


def test_a_malformed_list_line_is_named(tmp_path):
    write_msmt17(tmp_path, identities=2)
    lists = tmp_path / "msmt17" / "MSMT17_V1" / "list_query.txt"
    lists.write_text(lists.read_text() + "0001/broken.jpg\n")
    with pytest.raises(DataError) as info:
        D.load_splits("msmt17", tmp_path, val_fraction=0.0, options=SMALL)
    assert "list_query.txt" in str(info.value) and "'0001/broken.jpg'" in str(info.value)


def test_listed_images_that_are_missing_are_named(tmp_path):
    write_msmt17(tmp_path, identities=2)
    victim = next((tmp_path / "msmt17" / "MSMT17_V1" / "test" / "0001").iterdir())
    victim.unlink()
    with pytest.raises(DataError, match=f"missing \\(e.g. .*{victim.name}\\)"):
        D.load_splits("msmt17", tmp_path, val_fraction=0.0, options=SMALL)


def test_a_missing_msmt17_lists_every_layout_and_image_folders_are_required(tmp_path):
    with pytest.raises(DataError) as info:
        D.check_available("msmt17", tmp_path)
    for folder in ("MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2"):
        assert f"{tmp_path / folder} (" in str(info.value)
    write_msmt17(tmp_path, identities=2)
    root = tmp_path / "msmt17" / "MSMT17_V1"
    (root / "test").rename(root / "tests")
    with pytest.raises(DataError, match="not its image folders .*train/ \\+ test/"):
        D.check_available("msmt17", tmp_path)


def test_msmt17_in_the_config():
    config = ExperimentConfig.from_dict({"dataset": "msmt17", "teacher": "osnet_x1_0",
                                         "student": "osnet_x0_25"})
    assert config.dataset == "msmt17"
    assert D.dataset_spec("msmt17", validate_data_options("msmt17", {})).num_classes == 1041
