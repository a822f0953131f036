"""The training engine: metrics, exact resume, divergence, and a standalone run's outputs."""
import json

import pytest
import torch
from torch import nn

from mgkd.data import load_splits
from mgkd.distill.learner import reported_metrics
from mgkd.errors import TrainingDiverged
from mgkd.models import create_model
from mgkd.runner import run_training
from mgkd.training.engine import Schedule, Trainer
from mgkd.training.learner import InitStage, Learner

from conftest import TINY_DATA, VAL_ACC


class StopAfter:
    """Simulates an interruption (Ctrl-C) once ``epochs`` epochs are done and checkpointed."""

    def __init__(self, epochs):
        self.epochs = epochs

    def __call__(self, report):
        if report.epoch == self.epochs:
            raise KeyboardInterrupt


def test_schedule_milestones_scale_with_the_budget():
    assert Schedule(epochs=240, lr=0.05).milestone_epochs() == [150, 180, 210]
    assert Schedule(epochs=8, lr=0.05).milestone_epochs() == [5, 6, 7]
    assert Schedule(epochs=1, lr=0.05).milestone_epochs() == []


@pytest.mark.parametrize("method, mode", [("crd", "mas"), ("ab", "mag")])
def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, tiny_config, method, mode):
    # crd draws negatives from the global RNG and keeps a memory bank; ab has an init stage:
    # both must come back bit for bit.
    config = tiny_config(method=method, mode=mode, epochs=4)
    whole = run_training(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run_training(config, tmp_path / "cut", callbacks=[StopAfter(2)])
    partial = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert len(partial["history"]) == 2
    resumed = run_training(config, tmp_path / "cut", resume=True)
    assert resumed.state.history == whole.state.history  # every metric, to the last digit
    assert resumed.final == whole.final
    for a, b in zip(torch.load(tmp_path / "whole" / "student.pt")["model"].values(),
                    torch.load(tmp_path / "cut" / "student.pt")["model"].values()):
        assert torch.equal(a, b)


def test_standalone_run_writes_config_metrics_events_checkpoint(tmp_path, tiny_config):
    result = run_training(tiny_config(method="at", mode="mag"), tmp_path / "run")
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    epoch = metrics["history"][-1]
    for key in ("epoch", "train_loss", "loss_ce", "loss_logit", "loss_feature", "loss_granularity",
                "val_acc", "val_loss", "test_acc", "lr", "best_val_acc"):
        assert key in epoch, key
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["final"]["test_acc"] == epoch["test_acc"]
    assert metrics["final"]["best_val_acc"] == max(h["val_acc"] for h in metrics["history"])
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "config.yaml").read_text().count("feature_weight: 1000") == 1  # resolved
    assert (out / "checkpoint.pt").is_file() and result.state.epoch == 2
    # student.pt in RepDistiller's / mdistiller's form: their scripts do
    # model.load_state_dict(torch.load(f)["model"]) on the architecture they name.
    saved = torch.load(out / "student.pt", weights_only=True)
    assert saved["arch"] == "resnet8" and saved["num_classes"] == 4 and saved["epoch"] == 2
    student = create_model(saved["arch"], saved["num_classes"])
    student.load_state_dict(saved["model"], strict=True)
    assert "layer1.0.conv1.weight" in saved["model"] and "fc.weight" in saved["model"]


def test_tensorboard_events_hold_every_metric(tmp_path, tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_training(tiny_config(), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    # the tags a sweep trial's metrics get from Ray's logger: a final run overlays its trial
    assert {f"ray/tune/{name}" for name in reported_metrics("classification", "val_acc")} <= tags
    assert [e.step for e in events.Scalars("ray/tune/val_acc")] == [1, 2]
    hparams = read_hparams(tmp_path / "run" / "tensorboard")
    assert hparams["outcome"] == "mgkd train" and hparams["experiment/epochs"] == 2
    assert hparams["study"] == "resnet8x4__resnet8__kd__mas"
    assert hparams["experiment/lr"] == 0.05  # resolved: the value that ran


def read_hparams(log_dir):
    """The HPARAMS session of the run in ``log_dir``: {name: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    events = EventAccumulator(str(log_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in session.hparams.items()}


def test_an_existing_run_is_not_overwritten_and_resume_needs_one(tmp_path, tiny_config):
    from mgkd.errors import ConfigError
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_training(tiny_config(), tmp_path / "run", resume=True)
    run_training(tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(ConfigError, match="--resume"):
        run_training(tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(ConfigError, match="differs"):
        run_training(tiny_config(epochs=3), tmp_path / "run", resume=True)


class NaNTask(Learner):
    """A learner whose loss turns NaN: the engine must stop with a clear error."""

    def __init__(self):
        self.weight = nn.Parameter(torch.ones(()))
        self.modules = nn.ModuleDict()

    def trainable_parameters(self):
        return [self.weight]

    def loss_components(self, batch, epoch):
        return {"loss": self.weight * torch.log(torch.tensor(-1.0))}

    def eval_logits(self, batch):
        return [torch.zeros(len(batch.labels), 4)]


def test_nan_loss_stops_with_a_clear_error():
    splits = load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)
    trainer = Trainer(NaNTask(), splits, Schedule(epochs=3, lr=0.1), batch_size=16, seed=0,
                      objective=VAL_ACC)
    with pytest.raises(TrainingDiverged, match="NaN or infinite in epoch 1"):
        trainer.fit()


def test_init_stage_runs_once_before_the_main_stage():
    splits = load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)
    calls = []

    class Task(NaNTask):
        def loss_components(self, batch, epoch):
            calls.append(("main", epoch))
            return {"loss": self.weight ** 2}

        def init_stage(self):
            def loss(batch):
                calls.append(("init", None))
                return (self.weight - 3) ** 2
            return InitStage(epochs=2, parameters=[self.weight], loss=loss)

    trainer = Trainer(Task(), splits, Schedule(epochs=1, lr=0.1), batch_size=30, seed=0,
                      objective=VAL_ACC)
    trainer.fit()
    assert [c[0] for c in calls] == ["init"] * 4 + ["main"] * 2  # 60 images / 30 per batch
    assert trainer.state.init_done
