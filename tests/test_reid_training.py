"""Re-ID runs through the generic engine: the reid task's base loss (label-smoothed CE plus the
batch-hard triplet term), P x K batches and retrieval metrics per epoch, on a Market-format fixture
of real JPEG files."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math

import pytest
import torch

from market_fixture import write_market1501
from mgkd.catalog.objectives import get_objective
from mgkd.config import ExperimentConfig, resolve
from mgkd.data import load_config_splits, load_splits, make_batches
from mgkd.distill.learner import build_learner, final_metrics, reported_metrics
from mgkd.errors import ConfigError
from mgkd.io import file_sha256
from mgkd.knowledge.prepare import Knowledge, prepare_knowledge
from mgkd.knowledge.teacher import SupervisedLearner, TeacherRecipe, load_teacher, train_teacher
from mgkd.models import create_model
from mgkd.reid.metrics import retrieval_metrics
from mgkd.runner import run_training
from mgkd.training.checkpoint import RunState
from mgkd.training.engine import Trainer
from mgkd.training.tasks import get_task, task_of

SMALL = {"height": 64, "width": 32, "instances": 4}
RETRIEVAL_KEYS = ("map", "rank1", "rank5", "rank10", "map_se")


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = write_market1501(tmp_path_factory.mktemp("market"), identities=12, cameras=3,
                            per_camera=3, test_identities=6)
    return load_splits("market1501", root, val_fraction=0.25, seed=0, options=SMALL)


# TeacherRecipe's fields before teacher_init and teacher_recipe: cached teachers are named by them
LEGACY_RECIPE_KEYS = ("arch", "data", "epochs", "seed", "lr", "batch_size", "momentum",
                      "weight_decay", "milestones", "decay")


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


def _torchreid_file(path, arch: str, classes: int) -> dict[str, torch.Tensor]:
    """A file as torchreid's save_checkpoint writes it (``module.`` names, numpy float32
    ``rank1``, optimizer state), of another identity count; returns the model's weights."""
    import numpy as np

    torch.manual_seed(7)
    weights = create_model(arch, classes).state_dict()
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": 3,
                "rank1": np.float32(0.5), "optimizer": optimizer.state_dict(),
                "scheduler": {"last_epoch": 3}}, path)
    return weights


def test_teacher_init_starts_the_teachers_backbone_from_a_torchreid_file(market, tmp_path):
    weights = _torchreid_file(tmp_path / "model.pth.tar-3", "osnet_x0_25", 1000)
    base = dataclasses.replace(recipe(1), lr=1e-12)  # one step that moves nothing measurably
    initialised = dataclasses.replace(base, init=str(tmp_path / "model.pth.tar-3"),
                                      init_sha256=file_sha256(tmp_path / "model.pth.tar-3"))
    model, _ = train_teacher(initialised, market)
    state = model.state_dict()
    torch.testing.assert_close(state["conv1.conv.weight"], weights["conv1.conv.weight"],
                               rtol=0, atol=1e-6)
    assert state["classifier.weight"].shape[0] == market.spec.num_classes != 1000
    plain, _ = train_teacher(base, market)
    assert not torch.allclose(plain.state_dict()["conv1.conv.weight"], weights["conv1.conv.weight"])
    # the content names the cached teacher, not the path; a recipe without init hashes as before
    moved = dataclasses.replace(initialised, init=str(tmp_path / "elsewhere.pth"))
    assert moved.digest() == initialised.digest() != base.digest()
    assert base.digest() == hashlib.sha256(json.dumps(
        {k: v for k, v in dataclasses.asdict(base).items() if k in LEGACY_RECIPE_KEYS},
        sort_keys=True).encode()).hexdigest()


def test_a_recipe_json_written_before_the_new_keys_still_matches():
    old = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(recipe(2)))).items()
           if k in LEGACY_RECIPE_KEYS}
    assert recipe(2).matches(old) and not recipe(3).matches(old)
    assert not dataclasses.replace(recipe(2), optimizer="amsgrad").matches(old)


def test_teacher_init_is_refused_beside_a_teacher_checkpoint_and_when_missing(market_dir, tmp_path):
    with pytest.raises(ConfigError, match="teacher_init: .*teacher_checkpoint names a finished"):
        reid_config(market_dir, tmp_path, teacher_init="a.pth", teacher_checkpoint="b.pth")
    config = reid_config(market_dir, tmp_path, teacher_init=str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="teacher_init: .*nope.pth does not exist"):
        run_training(config, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_the_torchreid_osnet_recipe_trains_as_its_published_config(market, market_dir, tmp_path):
    """configs/im_osnet_x1_0_softmax_256x128_amsgrad.yaml: AMSGrad lr 0.0015, x0.1 at epoch 60 of
    150, batch 64, label-smoothed softmax alone, random flip alone."""
    config = reid_config(market_dir, tmp_path, teacher_recipe="torchreid_osnet",
                         teacher_epochs=150)
    published = TeacherRecipe.from_config(config)
    assert (published.optimizer, published.lr, published.weight_decay, published.batch_size,
            published.triplet, published.flip_only) == ("amsgrad", 0.0015, 5e-4, 64, False, True)
    assert published.schedule().milestone_epochs() == [60]
    default = TeacherRecipe.from_config(reid_config(market_dir, tmp_path, teacher_epochs=150))
    assert (default.optimizer, default.triplet, default.flip_only) == ("sgd", True, False)
    assert published.digest() != default.digest()

    seen = []
    short = dataclasses.replace(published, epochs=1, batch_size=16)
    _, metrics = train_teacher(short, market, callbacks=[seen.append])
    trainer = seen[0].trainer
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert trainer.optimizer.param_groups[0]["amsgrad"] is True
    assert (trainer.splits.spec.crop_padding, trainer.splits.spec.random_erasing) == (0, 0.0)
    assert trainer.splits.spec.flip and market.spec.crop_padding > 0  # the data set's own stays
    row = metrics["history"][0]
    assert row["loss_triplet"] == 0.0 and row["train_loss"] == pytest.approx(row["loss_ce"])


@pytest.mark.parametrize("changes, words", [
    ({"dataset": "cifar100", "teacher_recipe": "torchreid_osnet"},
     ["teacher_recipe", "reid data sets", "cifar100", "default"]),
    ({"dataset": "market1501", "teacher_recipe": "torchreid_osnet", "teacher_checkpoint": "t.pt"},
     ["teacher_recipe", "teacher_checkpoint: null"]),
    ({"dataset": "market1501", "teacher_recipe": "torchreid"}, ["teacher_recipe",
                                                                "default, torchreid_osnet"]),
])
def test_a_teacher_recipe_that_does_not_fit_is_refused(changes, words):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict(changes)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_evaluation_ranks_the_models_own_embeddings(market):
    torch.manual_seed(0)
    model = create_model("osnet_x0_25", market.spec.num_classes).eval()
    trainer = Trainer(SupervisedLearner(model, get_task("reid")), market, recipe(1).schedule(),
                      batch_size=16, seed=0, objective=get_objective("val_map"))
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
    # The per-query values a paired mAP verdict reads: their means are mAP and rank-1.
    metrics, outcomes = get_task("reid").evaluate_outcomes(
        trainer.learner, market.val, trainer._eval_batches, trainer._autocast)
    assert outcomes.size == want.num_queries and outcomes.ap is not None
    assert 100 * outcomes.ap.mean() == pytest.approx(metrics["map"], rel=1e-5)
    assert 100 * outcomes.correct.mean() == pytest.approx(metrics["rank1"], rel=1e-9)


@pytest.mark.slow  # trains an OSNet teacher twice
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


@pytest.mark.parametrize("objective", ["val_map", "val_rank1"])
def test_the_run_summary_reports_rank1_and_rank5_beside_map_at_the_selected_epoch(objective):
    """Epoch 2 is selected (best objective), epoch 3 is the last: the summary's ``*_at_best_val``
    values are epoch 2's, never the last epoch's."""
    rows = [{"epoch": e, "val_map": m, "val_rank1": r1, "val_rank5": r5, "test_map": tm,
             "test_rank1": t1, "test_rank5": t5}
            for e, m, r1, r5, tm, t1, t5 in ((1, 40.0, 60.0, 80.0, 30.0, 50.0, 70.0),
                                             (2, 55.0, 75.0, 90.0, 45.0, 65.0, 85.0),
                                             (3, 50.0, 70.0, 88.0, 48.0, 68.0, 89.0))]
    state = RunState()
    for row in rows:
        state.record(dict(row), get_objective(objective))
    final = final_metrics(state, get_objective(objective))
    assert final["best_epoch"] == 2 and final[f"best_{objective}"] == rows[1][objective]
    for key in ("test_map", "test_rank1", "test_rank5", "val_map", "val_rank1", "val_rank5"):
        if key != objective:
            assert final[f"{key}_at_best_val"] == rows[1][key], key
    assert f"{objective}_at_best_val" not in final  # that is best_<objective>
    assert final[objective] == rows[2][objective]  # the last epoch's, labelled as such


def test_checkpoints_of_classification_runs_before_objectives_still_load():
    state = RunState.from_dict({"epoch": 3, "init_done": False, "best_val_acc": 71.0,
                                "best_epoch": 2, "test_acc_at_best_val": 70.5, "history": []})
    assert (state.best_value, state.test_at_best, state.best_epoch) == (71.0, 70.5, 2)


def reid_config(data_dir, tmp_path, **changes) -> ExperimentConfig:
    base = {"dataset": "market1501", "data_dir": str(data_dir), "data_options": SMALL,
            "teacher": "osnet_x0_25", "student": "osnet_x0_25", "method": "rkd", "mode": "mas",
            "val_fraction": 0.25, "epochs": 2, "teacher_epochs": 1, "head_epochs": 1,
            "batch_size": 16, "device": "cpu", "cache_dir": str(tmp_path / "cache"),
            "granularities": [{"dim": 8, "temperature": 2.0}]}
    return ExperimentConfig.from_dict({**base, **changes})


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory):
    # teachers and heads train at batch 64 = 16 identities x 4: at least 16 training identities
    return write_market1501(tmp_path_factory.mktemp("market-run"), identities=24, cameras=2,
                            per_camera=2, test_identities=4)


def test_a_reid_distillation_run_selects_on_map_and_logs_every_term(market_dir, tmp_path):
    config = reid_config(market_dir, tmp_path)
    assert (resolve(config).task, resolve(config).objective) == ("reid", "val_map")
    result = run_training(config, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    last = metrics["history"][-1]
    for key in reported_metrics("reid", "val_map"):
        assert key in last, key
    for key in ("loss_triplet", "loss_feature", "loss_granularity", "loss_logit", "loss_ce"):
        assert last[key] > 0.0, key
    final = metrics["final"]
    assert final["best_val_map"] == max(h["val_map"] for h in metrics["history"])
    best = max(metrics["history"], key=lambda h: h["val_map"])
    assert final["test_map_at_best_val"] == best["test_map"]
    assert final["test_rank1_at_best_val"] == best["test_rank1"]
    assert final["test_rank5_at_best_val"] == best["test_rank5"]
    assert result.final == final and "val_acc" not in final
    saved = torch.load(tmp_path / "run" / "student.pt", weights_only=True)
    assert saved["arch"] == "osnet_x0_25" and saved["objective"] == "val_map"


def test_a_reid_run_evaluates_with_the_configs_options(market_dir, tmp_path):
    """flip + L2 + cosine + re-ranking reach the run's metrics: the last epoch's test metrics are
    what scoring the saved student with those options gives, not the default scoring's."""
    options = {"eval_flip": True, "eval_normalize": True, "eval_distance": "cosine",
               "rerank": True}
    config = reid_config(market_dir, tmp_path, epochs=1, mode="plain", **options)
    run_training(config, tmp_path / "run")
    last = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"][-1]
    splits = load_config_splits(resolve(config))
    student = load_teacher(tmp_path / "run" / "student.pt", "osnet_x0_25",
                           splits.spec.num_classes).eval()
    learner = SupervisedLearner(student, get_task("reid"))
    batches = lambda split: make_batches(split, splits.spec, 16, train=False)  # noqa: E731
    scores = {}
    for name, task in (("configured", task_of(resolve(config))), ("default", get_task("reid"))):
        with torch.no_grad():
            scores[name] = task.evaluate(learner, splits.test, batches, contextlib.nullcontext)
    for key in ("map", "rank1", "rank5"):
        assert last[f"test_{key}"] == pytest.approx(scores["configured"][key], rel=1e-4), key
    assert scores["configured"] != scores["default"]


def test_student_init_starts_the_student_from_the_file(market_dir, tmp_path):
    donor = create_model("osnet_x0_25", 100)  # another identity count: the classifier is skipped
    torch.save({"state_dict": donor.state_dict()}, tmp_path / "imagenet.pth")
    config = resolve(reid_config(market_dir, tmp_path, student_init=str(tmp_path / "imagenet.pth"),
                                 mode="plain"))
    splits = load_config_splits(config)
    task = build_learner(config, splits, prepare_knowledge(config, splits), torch.device("cpu"))
    student = task.modules["student"].state_dict()
    assert torch.equal(student["conv1.conv.weight"], donor.state_dict()["conv1.conv.weight"])
    assert student["classifier.weight"].shape[0] == splits.spec.num_classes != 100


@pytest.mark.parametrize("changes, words", [
    ({"objective": "val_acc"}, ["objective", "val_map", "val_rank1"]),
    ({"task": "classification"}, ["task", "reid"]),
    ({"batch_size": 18}, ["batch_size", "instances", "16"]),
])
def test_reid_settings_that_do_not_fit_are_refused_before_any_work(market_dir, tmp_path, changes,
                                                                   words):
    with pytest.raises(ConfigError) as err:
        reid_config(market_dir, tmp_path, **changes)
    assert all(word in str(err.value) for word in words), str(err.value)
    assert not (tmp_path / "cache").exists()


def test_a_missing_student_init_is_refused_before_training(market_dir, tmp_path):
    config = reid_config(market_dir, tmp_path, student_init=str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="student_init"):
        run_training(config, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_torchreid_teacher_file_over_every_training_identity_is_distilled_from(market_dir,
                                                                                  tmp_path):
    # deep-person-reid saves {"state_dict": ...} with DataParallel's "module." prefix and a
    # classifier over all training identities; held-out validation identities do not change that.
    teacher = create_model("osnet_x0_25", 24)
    state = {f"module.{k}": v for k, v in teacher.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 250}, tmp_path / "osnet_market.pth.tar")
    path = tmp_path / "osnet_market.pth.tar"
    config = reid_config(market_dir, tmp_path, teacher_checkpoint=str(path), method="kd",
                         mode="plain", epochs=1)
    result = run_training(config, tmp_path / "run")
    assert result.final["val_map"] is not None
    assert not (tmp_path / "cache" / "teachers").exists()  # nothing trained: the file is the teacher


@pytest.mark.parametrize("student", ["osnet_x0_75", "resnet50_reid"])
@pytest.mark.parametrize("method", ["rkd", "kd", "pkt", "sp", "at", "fitnet"])
def test_the_papers_re_id_pairs_take_a_step_with_every_embedding_method(market, tmp_path, method,
                                                                        student):
    config = resolve(ExperimentConfig.from_dict({
        "dataset": "market1501", "data_options": SMALL, "teacher": "osnet_x1_0",
        "student": student, "method": method, "mode": "mas", "batch_size": 16,
        "granularities": [{"dim": 64, "temperature": 2.0}, {"dim": 256, "temperature": 8.0}]}))
    task = build_learner(config, market, Knowledge.untrained(config, market.spec.num_classes),
                      torch.device("cpu"))
    batch = next(iter(make_batches(market.train, market.spec, 16, train=True,
                                   generator=torch.Generator().manual_seed(0))))
    before = [p.detach().clone() for p in task.student.parameters()]
    task.train()
    terms = task.loss_components(batch, epoch=0)
    names = ["loss_ce", "loss_triplet", "loss_logit", "loss_granularity"]
    names += [] if method == "kd" else ["loss_feature"]  # kd is the logit term alone
    for name in names:
        value = terms[name].detach()
        assert torch.isfinite(value) and float(value) > 0.0, name
    terms["loss"].backward()
    torch.optim.SGD(task.trainable_parameters(), lr=0.05).step()
    assert any(not torch.equal(a, p) for a, p in zip(before, task.student.parameters()))
