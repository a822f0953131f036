"""The graphed training path's control flow, run on the CPU: an InlineRecorder stands in for CUDA
graphs (recording keeps the step with the Python values it was built with, replaying calls it
again), so static buffers, warm-up, capture keys, re-recording at lr milestones and DKD's warm-up,
partial last batches, init stages and resume run here exactly as on a GPU — and must give the
eager path's results to the last bit."""
import dataclasses

import pytest
import torch

from mgkd.config import resolve
from mgkd.config.execution import Execution
from mgkd.data import load_splits
from mgkd.distill.learner import make_trainer
from mgkd.knowledge.teacher import SupervisedLearner
from mgkd.models import create_model
from mgkd.training.engine import Schedule, Trainer
from mgkd.training.steps import (WARMUP_STEPS, CudaGraphRecorder, InlineRecorder, capture_key,
                                 side_stream)
from mgkd.training.tasks import get_task

from conftest import TINY_DATA, VAL_ACC
from test_engine import StopAfter
from test_methods import untrained_knowledge

GRAPHED = Execution(cuda_graphs=True)
CLASSIFY = get_task("classification")


@pytest.fixture(scope="module")
def splits():
    # 60 training images: batches of 16 are 3 full ones and a last one of 12.
    return load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)


def classifier_trainer(splits, recorder=None, **kwargs):
    torch.manual_seed(0)
    task = SupervisedLearner(create_model("resnet8", TINY_DATA["num_classes"]), CLASSIFY)
    execution = GRAPHED if recorder is not None else None
    return Trainer(task, splits, Schedule(epochs=4, lr=0.1, milestones=(0.5, 0.75)),
                   batch_size=16, seed=0, objective=VAL_ACC, execution=execution, recorder=recorder,
                   **kwargs)


def weights(trainer):
    return [t.detach().clone() for t in trainer.learner.modules.state_dict().values()]


def assert_same_run(a, b):
    assert a.state.history == b.state.history  # every loss and metric, to the last digit
    for x, y in zip(weights(a), weights(b)):
        assert torch.equal(x, y)


def test_graphed_steps_equal_eager_steps_and_rerecord_at_each_lr_milestone(splits):
    eager = classifier_trainer(splits)
    eager.fit()
    recorder = InlineRecorder()
    graphed = classifier_trainer(splits, recorder)
    graphed.fit()
    assert_same_run(graphed, eager)
    assert [h["lr"] for h in graphed.state.history] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    # Epoch 1: three warm-up steps; then one recording per learning rate (epochs 2, 3, 4).
    assert recorder.captures == 3
    assert recorder.replays == 3 * 4 - WARMUP_STEPS
    assert recorder.eager_steps == WARMUP_STEPS + 4  # + every epoch's last batch of 12
    assert graphed._steps is None  # fit released the graph


def test_capture_key_holds_every_groups_lr_and_the_tasks_constants():
    # SGD reads the lr when its step runs, so the InlineRecorder cannot show a stale lr the way a
    # replayed CUDA graph would: the key itself is what keeps lr changes re-recorded.
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [weight]}, {"params": [], "lr": 0.5}], lr=0.1)
    assert capture_key(optimizer, (0.25,)) == ((0.1, 0.5), (0.25,))
    before = capture_key(optimizer)
    optimizer.param_groups[0]["lr"] = 0.01
    assert capture_key(optimizer) != before


def distill_trainer(config, splits, recorder=None, **kwargs):
    """The trainer `mgkd train` and a sweep trial get, its steps recorded by ``recorder``."""
    config = resolve(config)
    return make_trainer(config, splits, untrained_knowledge(config), recorder=recorder, **kwargs)


def graphed_equals_eager(config, splits):
    """Run ``config`` eagerly and graphed (InlineRecorder); they must agree to the last bit."""
    eager = distill_trainer(config, splits)
    eager.fit()
    recorder = InlineRecorder()
    graphed = distill_trainer(config, splits, recorder)
    graphed.fit()
    assert_same_run(graphed, eager)
    return graphed, recorder


def test_dkd_warm_up_factor_is_rerecorded_each_epoch(tiny_config, splits):
    # Warm-up over 3 of 4 epochs: factors 1/3, 2/3, 1, 1; lr milestones at epochs 3 and 4.
    # Epoch 1 is eager warm-up; epoch 2 records (factor 2/3), epoch 3 records again (factor 1 and
    # a new lr), epoch 4 too (a new lr).
    config = tiny_config(method="dkd", mode="mas", epochs=4,
                         method_options={"warmup_fraction": 0.75})
    graphed, recorder = graphed_equals_eager(config, splits)
    assert [graphed.learner.step_constants(e)[0] for e in range(4)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0])
    assert recorder.captures == 3


def test_a_graph_that_misses_dkds_warm_up_factor_would_train_differently(tiny_config, splits,
                                                                           monkeypatch):
    config = tiny_config(method="dkd", mode="plain", epochs=3,
                         method_options={"warmup_fraction": 1.0}, lr_milestones=[1.0])
    eager = distill_trainer(config, splits)
    eager.fit()
    stale = distill_trainer(config, splits, InlineRecorder())
    monkeypatch.setattr(stale.learner, "step_constants", lambda epoch: ())
    stale.fit()
    assert stale.state.history[1]["loss_feature"] == eager.state.history[1]["loss_feature"]
    assert stale.state.history[2]["loss_feature"] != eager.state.history[2]["loss_feature"]


def test_init_stage_and_main_stage_run_graphed_like_eager(tiny_config, splits):
    # Init stage: 2 epochs (warm-up, then one recording). Main stage: 3 epochs (warm-up, one
    # recording, one more at the lr milestone of epoch 3).
    config = tiny_config(method="fsp", mode="mas", epochs=3, method_options={"init_fraction": 0.5})
    _, recorder = graphed_equals_eager(config, splits)
    assert recorder.captures == 3


def test_a_graphed_run_resumes_from_its_checkpoint_exactly(tiny_config, splits, tmp_path):
    config = tiny_config(method="crd", mode="mas", epochs=4)
    eager = distill_trainer(config, splits)
    eager.fit()
    checkpoint = tmp_path / "checkpoint.pt"
    cut = distill_trainer(config, splits, InlineRecorder(), checkpoint_path=checkpoint,
                          callbacks=[StopAfter(2)])
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    assert cut._steps is None  # the interrupted run released its graph too
    recorder = InlineRecorder()
    resumed = distill_trainer(config, splits, recorder, checkpoint_path=checkpoint)
    assert resumed.resume_from_checkpoint()
    resumed.fit()
    assert_same_run(resumed, eager)
    assert recorder.eager_steps == WARMUP_STEPS + 2  # warm-up again, then the last batches


def test_loading_a_checkpoint_mid_run_records_the_step_again(splits, tmp_path):
    recorder = InlineRecorder()
    trainer = classifier_trainer(splits, recorder)
    trainer.schedule = Schedule(epochs=2, lr=0.1)
    trainer._fit()  # keeps the graph
    trainer.save_checkpoint(tmp_path / "c.pt")
    captures = recorder.captures
    trainer.load_checkpoint(tmp_path / "c.pt")  # new optimizer buffers: the graph is stale
    trainer.schedule = Schedule(epochs=3, lr=0.1)
    eager_before = recorder.eager_steps
    trainer._fit()
    assert recorder.captures == captures + 1
    assert recorder.eager_steps == eager_before + 2  # one warm-up step + the last batch
    trainer.close()


def test_evaluation_batch_size_changes_nothing_but_speed(splits):
    small = classifier_trainer(splits)
    large = Trainer(small.learner, splits, small.schedule, batch_size=16, seed=0, objective=VAL_ACC,
                    execution=Execution(eval_batch_size=1024))
    assert large.evaluate(splits.val, "val") == pytest.approx(small.evaluate(splits.val, "val"),
                                                              rel=1e-5)
    assert large.evaluate(splits.val, "val")["val_acc"] == small.evaluate(splits.val, "val")["val_acc"]


def test_cuda_graphs_without_a_gpu_or_recorder_is_a_clear_error(splits):
    from mgkd.errors import ConfigError
    with pytest.raises(ConfigError, match="cuda_graphs: true needs a CUDA GPU, but this run's "
                                          "data is on cpu"):
        Trainer(SupervisedLearner(create_model("resnet8", 4), CLASSIFY), splits,
                Schedule(epochs=1, lr=0.1), batch_size=16, seed=0, objective=VAL_ACC,
                execution=GRAPHED)


# ---- what only a GPU would hit, checked on the CPU --------------------------------------------
def test_a_checkpoint_resumes_whatever_device_the_run_has(splits, tmp_path):
    # A run on a GPU reads its checkpoint for that device; random generators take only CPU
    # states, so reading it onto the run's device broke every resume there. A device that is not
    # the CPU (meta, here) shows where the file is read to.
    trained = classifier_trainer(splits)
    trained.schedule = dataclasses.replace(trained.schedule, epochs=1)
    trained.fit()
    trained.save_checkpoint(tmp_path / "checkpoint.pt")
    fresh = classifier_trainer(splits)
    fresh.device = torch.device("meta")
    fresh.load_checkpoint(tmp_path / "checkpoint.pt")
    assert fresh.state.epoch == 1
    assert torch.equal(fresh.data_rng.get_state(), trained.data_rng.get_state())


def test_every_recorder_on_a_device_shares_its_side_stream(monkeypatch):
    made = []

    class Stream:  # stands in for torch.cuda.Stream: records which device each was made for
        def __init__(self, device):
            made.append(device)

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    side_stream.cache_clear()
    try:
        first, second = (CudaGraphRecorder(torch.device("cuda", 0)) for _ in range(2))
        other = CudaGraphRecorder(torch.device("cuda", 1))
        assert first.side_stream is second.side_stream is not other.side_stream
        assert made == [torch.device("cuda", 0), torch.device("cuda", 1)]
    finally:
        side_stream.cache_clear()


def test_closing_a_gpu_run_releases_the_cublas_workspaces(monkeypatch, splits):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: calls.append("cublas"),
                        raising=False)
    trainer = classifier_trainer(splits)
    trainer.close()
    assert calls == []  # a CPU run has nothing on a GPU to free
    trainer.device = torch.device("cuda")
    trainer.close()
    assert calls == ["empty_cache", "cublas"]
