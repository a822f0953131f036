"""Market-1501 (person re-ID) data: parsing, splits, identity batches, random erasing, errors."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from market_fixture import DISTRACTORS, OFFICIAL_FOLDER, write_market1501
from mgkd import data as D
from mgkd.catalog.datasets import validate_data_options
from mgkd.data import market1501 as M
from mgkd.data.augment import ERASE_AREA, ERASE_ASPECT, AugmentPlan, Augmenter
from mgkd.errors import ConfigError, DataError

SMALL = {"height": 64, "width": 32}  # half the on-disk size: fast to decode and batch
IDS, CAMS, PER_CAM = 10, 3, 2


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_market1501(tmp_path_factory.mktemp("market"), identities=IDS, cameras=CAMS,
                            per_camera=PER_CAM)


def _load(root: Path, val_fraction: float = 0.3, seed: int = 0, **options: int) -> D.DataSplits:
    return D.load_splits("market1501", root, val_fraction=val_fraction, seed=seed,
                         options={**SMALL, **options})


def _digest(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


def _raw_ids(root: Path) -> dict[str, int]:
    """Image digest -> person id, from a load without validation (labels index the sorted ids)."""
    full = _load(root, val_fraction=0.0)
    options = validate_data_options("market1501", SMALL)
    pids = M.MARKET1501.train_listing(root, options).pids.unique()
    return {_digest(img): int(pids[label]) for img, label in zip(full.train.images, full.train.labels)}


# ---- file names and folders ----------------------------------------------------------------------


def test_names_parsed_junk_dropped_distractors_only_where_asked(market: Path) -> None:
    base = market / OFFICIAL_FOLDER
    gallery = M.list_folder(base / M.GALLERY, M.MARKET1501.naming, keep_distractors=True,
                            dataset="market1501")
    assert len(gallery) == IDS * CAMS * PER_CAM + DISTRACTORS["bounding_box_test"]  # junk, Thumbs.db out
    assert int((gallery.pids == 0).sum()) == DISTRACTORS["bounding_box_test"]
    assert set(gallery.pids.tolist()) == {0} | {2 * i + 1 for i in range(IDS)}
    assert set(gallery.cameras.tolist()) == {1, 2, 3}
    for path, pid, camera in zip(gallery.paths, gallery.pids.tolist(), gallery.cameras.tolist()):
        assert path.name.startswith(f"{pid:04d}_c{camera}s1_")
    train = M.list_folder(base / M.TRAIN, M.MARKET1501.naming, keep_distractors=False,
                          dataset="market1501")
    assert -1 not in train.pids.tolist() and 0 not in train.pids.tolist()
    assert len(train) == IDS * CAMS * PER_CAM


def test_splits_junk_out_everywhere_distractors_only_in_test_gallery(market: Path) -> None:
    splits = _load(market)
    assert isinstance(splits.val, D.RetrievalSplit) and isinstance(splits.test, D.RetrievalSplit)
    test = splits.test
    assert len(test.query) == IDS * CAMS and len(test) == len(test.query)
    assert int((test.gallery.labels == 0).sum()) == DISTRACTORS["bounding_box_test"]
    for part in (test.query, test.gallery, splits.val.query, splits.val.gallery):
        assert int(part.labels.min()) >= 0 and part.cameras is not None
    for part in (test.query, splits.val.query, splits.val.gallery):
        assert 0 not in part.labels.tolist()
    assert len(splits.train) + len(splits.val.query) + len(splits.val.gallery) == IDS * CAMS * PER_CAM
    assert splits.train.images.shape[1:] == (3, 64, 32) and splits.train.images.dtype == torch.uint8


def test_classes_are_all_training_identities_in_person_id_order(market: Path) -> None:
    raw = _raw_ids(market)
    every = sorted(set(raw.values()) - {0, -1})
    for fraction, held in ((0.0, 0), (0.3, 3), (0.05, 1)):
        splits = _load(market, val_fraction=fraction)
        assert splits.spec.num_classes == IDS  # held-out identities keep their (unused) class
        trained = set(splits.train.labels.tolist())
        assert len(trained) == IDS - held and trained <= set(range(IDS))
        for image, label in zip(splits.train.images, splits.train.labels.tolist()):
            assert every[label] == raw[_digest(image)]
        if fraction:
            held_classes = {every.index(pid) for pid in splits.val.query.labels.tolist()}
            assert held_classes.isdisjoint(trained)
        assert (splits.val is None) == (fraction == 0)
    assert D.dataset_spec("market1501").num_classes == M.OFFICIAL_TRAIN_IDENTITIES


def test_held_out_identities_disjoint_and_query_one_per_camera(market: Path) -> None:
    raw = _raw_ids(market)
    splits = _load(market, val_fraction=0.3, seed=4)
    assert isinstance(splits.val, D.RetrievalSplit)
    train_ids = {raw[_digest(img)] for img in splits.train.images}
    val_ids = set(splits.val.query.labels.tolist())
    assert len(val_ids) == 3 and not train_ids & val_ids and len(train_ids) == IDS - 3
    assert set(splits.val.gallery.labels.tolist()) == val_ids
    assert all(pid % 2 == 0 for pid in val_ids)  # training identities, never test ones (odd)
    for part in (splits.val.query, splits.val.gallery):  # labels are the images' person ids
        assert [raw[_digest(img)] for img in part.images] == part.labels.tolist()
    pairs = list(zip(splits.val.query.labels.tolist(), splits.val.query.cameras.tolist()))
    assert sorted(pairs) == sorted((pid, cam) for pid in val_ids for cam in range(1, CAMS + 1))
    gallery = list(zip(splits.val.gallery.labels.tolist(), splits.val.gallery.cameras.tolist()))
    assert sorted(gallery) == sorted((p, c) for p in val_ids for c in range(1, CAMS + 1)
                                     for _ in range(PER_CAM - 1))
    query_digests = {_digest(img) for img in splits.val.query.images}
    assert not query_digests & {_digest(img) for img in splits.val.gallery.images}


def test_only_identities_seen_by_two_cameras_are_held_out() -> None:
    pids = torch.tensor([5, 5, 5, 7, 7, 9, 9, 9, 11])
    cams = torch.tensor([1, 1, 1, 1, 2, 2, 3, 3, 4])  # 5 and 11: one camera each
    for seed in range(10):
        held = D.hold_out_identities(pids, cams, 0.4, seed)
        assert set(pids[held.query].tolist()) <= {7, 9}
        assert len(set(pids[held.query].tolist())) == 2
        assert sorted(torch.cat([held.train, held.query, held.gallery]).tolist()) == list(range(9))
    with pytest.raises(ConfigError, match="two or more cameras"):
        D.hold_out_identities(pids, cams, 0.75, 0)  # 3 wanted, 2 eligible


def test_val_split_is_seeded(market: Path) -> None:
    a, b = _load(market, seed=1), _load(market, seed=1)
    assert isinstance(a.val, D.RetrievalSplit) and isinstance(b.val, D.RetrievalSplit)
    assert torch.equal(a.val.query.images, b.val.query.images)
    assert torch.equal(a.train.labels, b.train.labels)
    ids = {frozenset(_load(market, seed=s).val.query.labels.tolist()) for s in range(4)}
    assert len(ids) > 1
    assert torch.equal(_load(market, seed=3).test.gallery.images, a.test.gallery.images)


@pytest.mark.parametrize("fraction,seed", [(0.0, 0), (0.1, 0), (0.3, 2), (0.5, 7)])
def test_validation_size_equals_the_val_queries(market: Path, fraction: float, seed: int) -> None:
    splits = _load(market, val_fraction=fraction, seed=seed)
    expected = 0 if splits.val is None else len(splits.val)
    assert D.validation_size("market1501", SMALL, fraction, data_dir=market, seed=seed) == expected


def test_validation_size_needs_data_dir_and_refuses_train_subset(market: Path) -> None:
    with pytest.raises(ConfigError, match="data_dir"):
        D.validation_size("market1501", None, 0.1)
    with pytest.raises(ConfigError, match="train_subset.*not supported.*max_identities"):
        D.validation_size("market1501", None, 0.1, 20, data_dir=market)
    with pytest.raises(ConfigError, match="train_subset.*not supported"):
        D.load_splits("market1501", market, train_subset=20)


def test_full_size_images_and_max_identities(market: Path) -> None:
    splits = D.load_splits("market1501", market, val_fraction=0.0, options={"max_identities": 4})
    assert splits.spec.image_shape == (256, 128) and splits.train.images.shape[1:] == (3, 256, 128)
    assert splits.spec.num_classes == 4 and len(splits.train) == 4 * CAMS * PER_CAM
    spec = splits.spec
    facts = (spec.task, spec.crop_padding, spec.flip, spec.random_erasing, spec.instances)
    assert facts == ("reid", 10, True, 0.5, 4)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)


def test_fixture_identities_are_learnable(market: Path) -> None:
    """Nearest neighbour on raw pixels finds the right person for most test queries."""
    test = _load(market, val_fraction=0.0).test
    distance = torch.cdist(test.query.images.float().flatten(1), test.gallery.images.float().flatten(1))
    best = test.gallery.labels[distance.argmin(1)]
    assert (best == test.query.labels).float().mean() > 0.8


# ---- identity batches ----------------------------------------------------------------------------


def _plain(spec: D.DatasetSpec) -> D.DatasetSpec:
    return dataclasses.replace(spec, crop_padding=0, flip=False, random_erasing=0.0)


def test_identity_batches_hold_p_identities_times_k(market: Path) -> None:
    splits = _load(market, val_fraction=0.0, instances=4)  # 6 images per identity
    spec = _plain(splits.spec)
    batches = D.make_batches(splits.train, spec, 12, train=True, generator=torch.Generator().manual_seed(0))
    assert isinstance(batches, D.IdentityBatches) and len(batches) == len(splits.train) // 12
    seen = set()
    for batch in batches:
        labels = batch.labels.view(3, 4)
        assert (labels == labels[:, :1]).all() and len(set(labels[:, 0].tolist())) == 3
        assert torch.equal(batch.labels, splits.train.labels[batch.indices])
        for row in batch.indices.view(3, 4):
            assert len(set(row.tolist())) == 4  # 6 >= K images: drawn without replacement
        torch.testing.assert_close(batch.images, Augmenter(spec, torch.device("cpu"), train=False)
                                   .normalise(splits.train.images[batch.indices]))
        seen |= set(labels[:, 0].tolist())
    assert len(seen) >= 8


def test_identity_batches_small_identities_with_replacement_and_reproducible(market: Path) -> None:
    splits = _load(market, val_fraction=0.0, instances=8)  # 6 images per identity < K
    spec = _plain(splits.spec)
    generator = torch.Generator().manual_seed(3)
    batches = D.IdentityBatches(splits.train, spec, 16, generator=generator)
    first = list(batches)
    for batch in first:
        assert batch.labels.view(2, 8).unique(dim=1).shape[1] == 1
        assert len(set(batch.indices.tolist())) < 16  # some image repeats
    state = generator.get_state()
    second = [b.indices for b in batches]
    generator.set_state(state)
    replay = [b.indices for b in D.IdentityBatches(splits.train, spec, 16, generator=generator)]
    assert all(torch.equal(a, b) for a, b in zip(second, replay, strict=True))
    assert not all(torch.equal(a.indices, b) for a, b in zip(first, second, strict=True))


def test_identity_batches_argument_errors(market: Path) -> None:
    splits = _load(market, val_fraction=0.0)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="batch_size: 18 is not a multiple of data_options.instances K = 4"):
        D.make_batches(splits.train, splits.spec, 18, train=True, generator=generator)
    with pytest.raises(ConfigError, match="only 10 identities"):
        D.IdentityBatches(splits.train, splits.spec, 44, generator=generator)
    with pytest.raises(ValueError, match="generator"):
        D.IdentityBatches(splits.train, splits.spec, 16, generator=None)
    evaluation = D.make_batches(splits.train, splits.spec, 7, train=False)
    assert isinstance(evaluation, D.DeviceBatches)
    assert torch.cat([b.indices for b in evaluation]).tolist() == list(range(len(splits.train)))


# ---- augmentation --------------------------------------------------------------------------------


def _spec(height: int, width: int, **changes: object) -> D.DatasetSpec:
    base = D.DatasetSpec("t", 2, height, width, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 0, False)
    return dataclasses.replace(base, **changes)


def _slow_reference(images: torch.Tensor, plan: AugmentPlan, spec: D.DatasetSpec) -> torch.Tensor:
    """Per-sample pad, crop, flip, normalise, erase."""
    pad, (height, width) = spec.crop_padding, spec.image_shape
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    out = []
    for k, image in enumerate(images):
        padded = F.pad(image, (pad, pad, pad, pad))
        top, left = plan.offsets[k].tolist() if plan.offsets is not None else (0, 0)
        crop = padded[:, top : top + height, left : left + width]
        if plan.flips is not None and bool(plan.flips[k]):
            crop = crop.flip(-1)
        result = (crop.float() / 255 - mean) / std
        if plan.boxes is not None:
            y, x, h, w = plan.boxes[k].tolist()
            result[:, y : y + h, x : x + w] = 0.0
        out.append(result)
    return torch.stack(out)


def test_non_square_crop_flip_erase_match_a_slow_reference() -> None:
    spec = _spec(12, 7, crop_padding=3, flip=True, random_erasing=0.7)
    images = torch.randint(0, 256, (64, 3, 12, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    augmenter = Augmenter(spec, torch.device("cpu"), train=True)
    plan = augmenter.draw(64, torch.Generator().manual_seed(2))
    assert plan.offsets is not None and plan.flips is not None and plan.boxes is not None
    assert set(plan.offsets[:, 0].tolist()) == set(range(7)) and set(plan.flips.tolist()) == {False, True}
    torch.testing.assert_close(augmenter.apply(images, plan), _slow_reference(images, plan, spec))
    half = plan.slice(10, 20)
    torch.testing.assert_close(augmenter.apply(images[10:20], half), _slow_reference(images[10:20], half, spec))


def test_device_batches_non_square_eval_is_plain_and_train_crops() -> None:
    spec = _spec(10, 6, crop_padding=2, flip=True, random_erasing=0.5)
    split = D.ImageSplit(torch.randint(0, 256, (20, 3, 10, 6), dtype=torch.uint8), torch.arange(20) % 2)
    evaluation = torch.cat([b.images for b in D.DeviceBatches(split, spec, 8, train=False)])
    torch.testing.assert_close(evaluation, (split.images.float() / 255 - 0.5) / 0.25)
    train = list(D.DeviceBatches(split, spec, 8, train=True, generator=torch.Generator().manual_seed(0)))
    assert [b.images.shape for b in train] == [(8, 3, 10, 6), (8, 3, 10, 6), (4, 3, 10, 6)]
    with pytest.raises(ValueError, match=r"expects \(3, 6, 10\)"):
        D.DeviceBatches(split, _spec(6, 10), 4, train=False)


def _erased_box(out: torch.Tensor) -> tuple[int, int, int, int] | None:
    zero = (out == 0).all(0)
    if not zero.any():
        return None
    rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    h, w = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    assert bool(zero[top : top + h, left : left + w].all()) and int(zero.sum()) == h * w  # one rectangle
    return top, left, h, w


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_random_erasing_blanks_one_rectangle_with_probability_p(probability: float) -> None:
    height, width, count = 32, 16, 1000
    spec = _spec(height, width, random_erasing=probability)
    images = torch.full((count, 3, height, width), 200, dtype=torch.uint8)  # normalises to 1.137, never 0
    augmenter = Augmenter(spec, torch.device("cpu"), train=True)
    out = augmenter.apply(images, augmenter.draw(count, torch.Generator().manual_seed(0)))
    boxes = [_erased_box(o) for o in out]
    erased = [b for b in boxes if b is not None]
    assert abs(len(erased) / count - probability) < 0.05
    for _, _, h, w in erased:
        assert ERASE_AREA[0] * 0.7 <= h * w / (height * width) <= ERASE_AREA[1] * 1.3
        assert ERASE_ASPECT[0] * 0.6 <= h / w <= ERASE_ASPECT[1] * 1.6
    kept = out[[b is None for b in boxes]]
    assert torch.allclose(kept, torch.full_like(kept, (200 / 255 - 0.5) / 0.25))
    if probability == 1.0:
        assert len({b[:2] for b in erased}) > 50  # positions vary


# ---- options and errors --------------------------------------------------------------------------


@pytest.mark.parametrize("options,match", [
    ({"height": 8}, r"data.options.height: for 'market1501' must be an integer in \[16, 1024\]"),
    ({"width": "128"}, "width"),
    ({"instances": 0}, "instances"),
    ({"instances": 1}, r"instances: for 'market1501' must be an integer in \[2, 64\], got 1; the "
                       r"batch-hard triplet loss needs K >= 2 .*Set instances: 4"),
    ({"max_identities": 1}, r"max_identities.*null or an integer >= 2"),
    ({"colour": 1}, "colour.*allowed: height, width, instances, max_identities"),
])
def test_bad_options_are_clear_errors(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_data_options("market1501", options)
    assert validate_data_options("market1501", None) == {
        "height": 256, "width": 128, "instances": 4, "max_identities": None}


def test_one_image_per_identity_is_refused_by_the_config_and_the_batches(tmp_path) -> None:
    """K = 1 leaves the batch-hard triplet loss no positive pair: its term would be silently 0."""
    from mgkd.config import ExperimentConfig
    from mgkd.reid.losses import batch_hard_triplet

    one_each = torch.randn(4, 8), torch.arange(4)
    assert batch_hard_triplet(*one_each, 0.3).item() == 0.0  # what the refusal prevents
    with pytest.raises(ConfigError, match="data.options.instances: .* got 1; the batch-hard"):
        ExperimentConfig.from_dict({"dataset": "market1501", "data_dir": str(tmp_path),
                                    "data_options": {"instances": 1}})
    market = write_market1501(tmp_path, identities=4, cameras=2, per_camera=2)
    splits = _load(market, val_fraction=0.0, instances=4)
    spec = dataclasses.replace(splits.spec, instances=1)
    with pytest.raises(ConfigError, match="K >= 2 images per identity, got 1"):
        D.IdentityBatches(splits.train, spec, 4, generator=torch.Generator())


def _message(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_data_set_lists_every_layout_tried(tmp_path: Path) -> None:
    (tmp_path / "market1501").mkdir()  # torchreid's root folder, without the archive inside
    for call in (lambda: D.check_available("market1501", tmp_path),
                 lambda: D.load_splits("market1501", tmp_path)):
        message = _message(call)
        for tried in (f"{tmp_path} (the folder itself; lacks bounding_box_train, "
                      "bounding_box_test, query)",
                      f"{tmp_path / 'Market-1501-v15.09.15'} (the official archive's folder in "
                      "data_dir; absent)",
                      f"{tmp_path / 'market1501'} (the short alias in data_dir; lacks",
                      f"{tmp_path / 'market1501' / 'Market-1501-v15.09.15'} (torchreid's data "
                      "root; absent)"):
            assert tried in message, message
    message = _message(lambda: D.download_dataset("market1501", tmp_path))
    assert "cannot be downloaded" in message and "bounding_box_train,bounding_box_test,query" in message


@pytest.mark.parametrize("folder, data_dir", [
    (OFFICIAL_FOLDER, "."),  # the parent of the official folder
    ("market1501", "."),  # the parent of the short alias
    (OFFICIAL_FOLDER, OFFICIAL_FOLDER),  # the folder itself
    (f"market1501/{OFFICIAL_FOLDER}", "."),  # torchreid's data root
    (f"market1501/{OFFICIAL_FOLDER}", "market1501"),  # torchreid's dataset_dir
])
def test_every_layout_loads_the_same_files(tmp_path: Path, folder: str, data_dir: str) -> None:
    write_market1501(tmp_path, identities=3, cameras=2, per_camera=1, folder=folder)
    given = (tmp_path / data_dir).resolve()
    assert M.find_root(given) == tmp_path / folder
    D.check_available("market1501", given)
    train = M.MARKET1501.train_listing(given, validate_data_options("market1501", {}))
    assert len(train) == 6 and all(path.parent == tmp_path / folder / M.TRAIN
                                   for path in train.paths)


def test_a_folder_missing_a_subfolder_is_named_with_what_it_lacks(tmp_path: Path) -> None:
    root = write_market1501(tmp_path, identities=3, cameras=2, per_camera=1, folder="market1501")
    (root / "market1501" / "query").rename(root / "market1501" / "queries")
    message = _message(lambda: D.check_available("market1501", root))
    assert f"{root / 'market1501'} (the short alias in data_dir; lacks query)" in message


def test_empty_folder_and_bad_names_are_data_errors(tmp_path: Path) -> None:
    root = write_market1501(tmp_path, identities=3, cameras=2, per_camera=1)
    train = root / OFFICIAL_FOLDER / "bounding_box_train"
    for path in train.iterdir():
        if not path.name.startswith("-1_"):
            path.unlink()
    assert "holds no usable images" in _message(lambda: _load(root))
    (train / "0002_c1s1_000001_00.jpg").write_bytes(b"")
    (train / "person7.jpg").write_bytes(b"")
    message = _message(lambda: _load(root))
    assert "person7.jpg" in message and "PPPP_cCsS_FFFFFF_NN.jpg" in message
    (train / "person7.jpg").unlink()
    assert "cannot decode" in _message(lambda: _load(root, val_fraction=0.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_identity_batches_and_erasing_on_cuda(market: Path) -> None:
    splits = _load(market, val_fraction=0.0)
    train = splits.train.to("cuda")
    batches = D.make_batches(train, splits.spec, 16, train=True,
                             generator=torch.Generator(device="cuda").manual_seed(0))
    for batch in batches:
        assert batch.images.is_cuda and batch.images.shape == (16, 3, 64, 32)
        labels = batch.labels.view(4, 4)
        assert bool((labels == labels[:, :1]).all()) and len(set(labels[:, 0].tolist())) == 4
        assert torch.equal(batch.labels, train.labels[batch.indices])


def test_mgkd_toy_data_writes_the_folder_the_toy_sweep_reads(tmp_path):
    """`mgkd toy-data market1501` then `mgkd tune sweeps/toy-market1501.yaml`: the folder is
    where the sweep file looks (run from the repository root), and its splits load."""
    from conftest import mgkd
    from mgkd.config.sweep import load_sweep
    from mgkd.data import load_config_splits
    from search.sweep import validate_sweep

    made = mgkd("toy-data", "market1501", "--identities", "12", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "mgkd tune sweeps/toy-market1501.yaml" in made.stdout
    root = tmp_path / "data" / "toy-reid" / OFFICIAL_FOLDER
    assert len(list((root / "bounding_box_train").glob("0*.jpg"))) >= 12 * 3 * 2
    repo = Path(__file__).resolve().parents[1]
    spec = load_sweep(repo / "sweeps" / "toy-market1501.yaml")
    base = spec.to_dict()["base"]
    assert base["data_dir"] == "./data/toy-reid"
    spec = type(spec).from_dict({**spec.to_dict(), "base": {**base, "data_dir": str(root.parent)}})
    (study, *_) = validate_sweep(spec, check_data=True)
    splits = load_config_splits(study.base)
    assert splits.spec.num_classes == 12 and len(splits.val) == 3 * 3  # 3 held-out ids x 3 cameras
    too_few = mgkd("toy-data", "market1501", "--identities", "3", cwd=tmp_path)
    assert too_few.returncode == 2 and "--identities" in too_few.stderr
