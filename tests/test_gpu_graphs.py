"""The graphed training step on a real GPU (skipped without CUDA; CI has none): what its first
run must prove. Graphed runs equal eager ones — with a partial last batch, across DKD's warm-up,
for every capturable method in bf16, for teacher and head training and for an OSNet re-ID step —
crd draws new negatives at every replay, a graphed run resumes, and a process that runs trial
after trial (a reused Ray actor) does not grow its GPU memory. Every test builds what it needs:
one failing hides none of the others (no ``-x`` needed or wanted).

Tolerances. fp32: with cuDNN's deterministic algorithms the eager and the graphed step launch the
same kernels; a few backward kernels still add with atomics, so per-epoch mean losses may differ
by float32 round-off grown over a few epochs: relative 1e-4. bf16 (autocast, channels-last):
the same kernels again, but one round-off that differs flips a bf16 rounding of a weight update
(8 bits of mantissa), and that grows over two epochs: relative 1e-2. A stale learning rate, a
skipped batch or a missed warm-up factor moves the losses by far more than either."""
import sys
from pathlib import Path

import pytest
import torch

from mgkd.catalog.methods import METHOD_DEFAULTS
from mgkd.catalog.objectives import get_objective
from mgkd.config import ExperimentConfig, resolve
from mgkd.config.execution import Execution, ExecutionSettings
from mgkd.data import Batch, load_splits, make_batches
from mgkd.distill.learner import build_learner, schedule_of
from mgkd.knowledge.heads import train_heads
from mgkd.knowledge.prepare import Knowledge
from mgkd.knowledge.teacher import TeacherRecipe, train_teacher
from mgkd.methods import METHOD_NAMES
from mgkd.training.engine import Trainer
from mgkd.training.steps import WARMUP_STEPS, CudaGraphRecorder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")
# 640 images, a tenth for validation: 576 = 9 full batches of 64.
CIFAR_SIZED = {"num_train": 640, "num_test": 128, "num_classes": 10, "image_size": 32, "seed": 0}
# 700 images: 630 = 9 full batches of 64 and one of 54, which runs eagerly.
WITH_PARTIAL = {**CIFAR_SIZED, "num_train": 700}
FP32, BF16 = 1e-4, 1e-2
GRAPHED_BF16 = Execution(cuda_graphs=True, amp=True, channels_last=True, eval_batch_size=1024)
EAGER_BF16 = Execution(cuda_graphs=False, amp=True, channels_last=True, eval_batch_size=1024)
CAPTURABLE = [m for m in METHOD_NAMES if METHOD_DEFAULTS[m].capture_blocker is None]


class CountingRecorder(CudaGraphRecorder):
    """The real recorder, counting recordings and replays."""

    def __init__(self, device: torch.device):
        super().__init__(device)
        self.captures = 0
        self.replays = 0

    def capture(self, fn):
        self.captures += 1
        return super().capture(fn)

    def replay(self, graph):
        self.replays += 1
        super().replay(graph)


@pytest.fixture(autouse=True)
def deterministic():
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def synthetic(options):
    return load_splits("synthetic", ".", val_fraction=0.1, options=options).to(CUDA)


@pytest.fixture(scope="module")
def splits():
    return synthetic(CIFAR_SIZED)


def config_of(tmp_path, data=CIFAR_SIZED, **changes):
    base = {"teacher": "resnet8x4", "student": "resnet8", "dataset": "synthetic",
            "data_options": data, "epochs": 3, "batch_size": 64, "device": "cuda",
            "cache_dir": str(tmp_path), "method": "kd", "mode": "mas",
            "granularities": [{"dim": 16, "temperature": 2.0}, {"dim": 64, "temperature": 8.0}]}
    return resolve(ExperimentConfig.from_dict({**base, **changes}))


def trainer_of(config, splits, execution, **kwargs):
    """The Trainer make_trainer would build, with the given execution; graphed runs record
    through a CountingRecorder (``trainer.recorder``)."""
    knowledge = Knowledge.untrained(config, CIFAR_SIZED["num_classes"])
    learner = build_learner(config, splits, knowledge, CUDA, channels_last=execution.channels_last,
                            amp=execution.amp)
    recorder = CountingRecorder(CUDA) if execution.cuda_graphs else None
    return Trainer(learner, splits, schedule_of(config), batch_size=config.batch_size, seed=0,
                   objective=get_objective(config.objective), execution=execution,
                   recorder=recorder, **kwargs)


def losses(trainer, name="train_loss"):
    return [h[name] for h in trainer.state.history]


def fitted(config, splits, execution, **kwargs):
    trainer = trainer_of(config, splits, execution, **kwargs)
    trainer.fit()
    return trainer


def test_graphed_fp32_run_equals_the_eager_run(tmp_path, splits):
    config = config_of(tmp_path)
    eager = fitted(config, splits, Execution())
    graphed = fitted(config, splits, Execution(cuda_graphs=True))
    assert graphed.recorder.replays == 3 * 9 - WARMUP_STEPS
    assert losses(graphed) == pytest.approx(losses(eager), rel=FP32)
    assert losses(graphed, "val_acc") == pytest.approx(losses(eager, "val_acc"), abs=0.5)


def test_a_partial_last_batch_runs_eagerly_and_the_run_still_equals_eager(tmp_path):
    data = synthetic(WITH_PARTIAL)
    assert len(data.train) % 64 == 54
    config = config_of(tmp_path, data=WITH_PARTIAL)
    eager = fitted(config, data, Execution())
    graphed = fitted(config, data, Execution(cuda_graphs=True))
    assert graphed.recorder.replays == 3 * 9 - WARMUP_STEPS  # the 54-image batches never replay
    assert losses(graphed) == pytest.approx(losses(eager), rel=FP32)


def test_dkd_records_again_as_its_warm_up_factor_changes(tmp_path, splits):
    # Warm-up over 3 of 4 epochs: factors 1/3, 2/3, 1, 1; lr milestones at epochs 3 and 4.
    # Epoch 1 records after its warm-up steps, epoch 2 (factor 2/3), 3 (factor 1, new lr) and
    # 4 (new lr) record again.
    config = config_of(tmp_path, method="dkd", epochs=4, method_options={"warmup_fraction": 0.75})
    eager = fitted(config, splits, Execution())
    graphed = fitted(config, splits, Execution(cuda_graphs=True))
    assert graphed.recorder.captures == 4
    assert losses(graphed, "loss_feature") == pytest.approx(losses(eager, "loss_feature"), rel=FP32)
    assert losses(graphed) == pytest.approx(losses(eager), rel=FP32)


@pytest.mark.parametrize("method", CAPTURABLE)
def test_every_capturable_method_graphed_equals_eager_in_bf16(tmp_path, splits, method):
    config = config_of(tmp_path, method=method, epochs=2)
    eager = fitted(config, splits, EAGER_BF16)
    graphed = fitted(config, splits, GRAPHED_BF16)
    assert graphed.recorder.replays >= 2 * 9 - WARMUP_STEPS  # ab, ft, fsp: their init stage too
    assert all(torch.isfinite(torch.tensor(losses(graphed))))
    assert losses(graphed) == pytest.approx(losses(eager), rel=BF16)


def test_crd_draws_new_negatives_at_every_replay(tmp_path, splits):
    """crd samples its negatives with torch.randint inside the step. Recorded in a graph, each
    replay must draw new ones: with the memory bank put back between two replays of the same
    batch, the contrastive loss differs only if the negatives do."""
    config = config_of(tmp_path, method="crd", mode="plain")
    learner = build_learner(config, splits, Knowledge.untrained(config, 10), CUDA)
    learner.train()
    batch = next(iter(make_batches(splits.train, splits.spec, 64, train=True,
                                   generator=torch.Generator(CUDA).manual_seed(0))))
    static = Batch(batch.images.clone(), batch.labels.clone(), batch.indices.clone())
    memory = {name: buffer.clone() for name, buffer in learner.method.named_buffers()}
    out = {}

    def step():
        with torch.no_grad():
            out["loss"] = learner.loss_components(static, 0)["loss_feature"]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    values = []
    for _ in range(2):
        for name, buffer in learner.method.named_buffers():
            buffer.copy_(memory[name])
        graph.replay()
        values.append(out["loss"].clone())
    torch.cuda.synchronize()
    assert torch.isfinite(values[0]) and not torch.equal(values[0], values[1])


def fp32(graphed: bool) -> ExecutionSettings:
    return ExecutionSettings(cuda_graphs=graphed, amp=False, channels_last=False)


def teacher_trained_both_ways(recipe, data):
    """{graphed: (teacher, metrics)} of train_teacher, eager and graphed, in fp32."""
    return {graphed: train_teacher(recipe, data, settings=fp32(graphed))
            for graphed in (False, True)}


def test_teacher_and_head_training_graphed_equal_eager():
    data = synthetic(CIFAR_SIZED)
    recipe = TeacherRecipe(arch="resnet8x4", data="synthetic-gpu-test", epochs=3, seed=0,
                           lr=0.05, batch_size=64)
    teachers = teacher_trained_both_ways(recipe, data)
    runs = {}
    for graphed, (teacher, metrics) in teachers.items():
        _, head_metrics = train_heads(teacher, data, [(16, 2.0), (64, 8.0)], epochs=2, seed=0,
                                      settings=fp32(graphed))
        runs[graphed] = ([h["train_loss"] for h in metrics["history"]], head_metrics)
    assert runs[True][0] == pytest.approx(runs[False][0], rel=FP32)
    assert runs[True][1]["train_loss"] == pytest.approx(runs[False][1]["train_loss"], rel=FP32)


def test_an_osnet_reid_step_graphed_equals_eager():
    # Market-shaped tensors made on the device (the JPEG fixture would need Pillow there).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.gpu_work import ReidSize
    market = ReidSize(num_train=144, identities=12, num_query=12, num_gallery=36,
                      test_identities=6, height=64, width=32).load(CUDA)
    recipe = TeacherRecipe(arch="osnet_x0_25", data="market-gpu-test", epochs=3, seed=0,
                           lr=0.05, batch_size=16)
    runs = {graphed: metrics["history"]
            for graphed, (_, metrics) in teacher_trained_both_ways(recipe, market).items()}
    for name in ("train_loss", "loss_triplet"):
        assert ([h[name] for h in runs[True]]
                == pytest.approx([h[name] for h in runs[False]], rel=FP32)), name
    assert all(h["test_map"] is not None for h in runs[True])


def test_a_graphed_run_resumes_from_its_checkpoint(tmp_path, splits):
    config = config_of(tmp_path, epochs=4)
    whole = fitted(config, splits, Execution(cuda_graphs=True))

    def stop_after_two(report):
        if report.epoch == 2:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "checkpoint.pt"
    cut = trainer_of(config, splits, Execution(cuda_graphs=True), checkpoint_path=checkpoint,
                     callbacks=[stop_after_two])
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    resumed = trainer_of(config, splits, Execution(cuda_graphs=True), checkpoint_path=checkpoint)
    assert resumed.resume_from_checkpoint()
    resumed.fit()
    assert losses(resumed) == pytest.approx(losses(whole), rel=FP32)


def test_twenty_trials_in_one_process_do_not_grow_gpu_memory(tmp_path, splits):
    config = config_of(tmp_path, epochs=1)
    reserved = []
    for seed in range(20):
        trainer = trainer_of(config.replace(seed=seed), splits, Execution(cuda_graphs=True))
        trainer.fit()  # releases its graph when it ends
        del trainer
        reserved.append(torch.cuda.memory_reserved())
    assert max(reserved[5:]) <= max(reserved[:5]) + 64 * 2**20, reserved
