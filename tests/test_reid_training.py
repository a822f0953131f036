"""Re-ID runs through the generic engine: the reid task's base loss (label-smoothed CE plus the
batch-hard triplet term), P x K batches and retrieval metrics per epoch, on a Market-format fixture
of real JPEG files."""
from __future__ import annotations

import math

import pytest
import torch

from market_fixture import write_market1501
from mgkd.data import load_splits, make_batches
from mgkd.engine import RunState, Trainer
from mgkd.models import create_model
from mgkd.reid.metrics import retrieval_metrics
from mgkd.tasks import get_task
from mgkd.teacher import ClassifierTask, TeacherRecipe, train_teacher

SMALL = {"height": 64, "width": 32, "instances": 4}
RETRIEVAL_KEYS = ("map", "rank1", "rank5", "rank10", "map_se")


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = write_market1501(tmp_path_factory.mktemp("market"), identities=12, cameras=3,
                            per_camera=3, test_identities=6)
    return load_splits("market1501", root, val_fraction=0.25, seed=0, options=SMALL)


def recipe(epochs: int) -> TeacherRecipe:
    return TeacherRecipe(arch="osnet_x0_25", data="market-fixture", epochs=epochs, seed=0, lr=0.05,
                         batch_size=16)


def test_a_reid_teacher_reports_retrieval_metrics_and_its_triplet_term(market):
    _, metrics = train_teacher(recipe(2), market)
    history = metrics["history"]
    assert metrics["objective"] == "val_map"
    for row in history:
        for split in ("val", "test"):
            for name in RETRIEVAL_KEYS:
                value = row[f"{split}_{name}"]
                assert isinstance(value, float) and math.isfinite(value), (split, name)
            assert 0.0 <= row[f"{split}_rank1"] <= row[f"{split}_rank5"] <= 100.0
        assert row["loss_triplet"] > 0.0 and row["loss_ce"] > 0.0
        assert row["train_loss"] == pytest.approx(row["loss_ce"] + row["loss_triplet"], rel=1e-5)
        assert "val_acc" not in row
    assert metrics["best_val_map"] == max(row["val_map"] for row in history)


def test_evaluation_ranks_the_models_own_embeddings(market):
    torch.manual_seed(0)
    model = create_model("osnet_x0_25", market.spec.num_classes).eval()
    trainer = Trainer(ClassifierTask(model, get_task("reid")), market, recipe(1).schedule(),
                      batch_size=16, seed=0)
    got = trainer.evaluate(market.val, "val")

    def embed(split):
        with torch.no_grad():
            return torch.cat([model.embed(b.images) for b in
                              make_batches(split, market.spec, 7, train=False)])

    want = retrieval_metrics(embed(market.val.query), market.val.query.labels,
                             market.val.query.cameras, embed(market.val.gallery),
                             market.val.gallery.labels, market.val.gallery.cameras)
    assert got["val_map"] == pytest.approx(want.map, abs=1e-4)
    assert got["val_rank1"] == pytest.approx(want.rank[1], abs=1e-4)
    assert trainer.evaluate(None, "val") == {f"val_{k}": None for k in RETRIEVAL_KEYS}


def test_an_interrupted_reid_teacher_resumes_to_the_same_weights(market, tmp_path):
    whole, _ = train_teacher(recipe(2), market)
    checkpoint = tmp_path / "progress"

    class Stop(Exception):
        pass

    def stop_after_first(report):
        if report.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train_teacher(recipe(2), market, checkpoint_path=checkpoint, callbacks=[stop_after_first])
    resumed, _ = train_teacher(recipe(2), market, checkpoint_path=checkpoint)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoints_of_classification_runs_before_objectives_still_load():
    state = RunState.from_dict({"epoch": 3, "init_done": False, "best_val_acc": 71.0,
                                "best_epoch": 2, "test_acc_at_best_val": 70.5, "history": []})
    assert (state.best_value, state.test_at_best, state.best_epoch) == (71.0, 70.5, 2)
