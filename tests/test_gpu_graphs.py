"""The graphed training step on a real GPU (skipped without CUDA; CI has none): a graphed run
equals an eager one, resume continues it, every capturable method records, and a process that
runs trial after trial (a reused Ray actor) does not grow its GPU memory.

Tolerance: with cuDNN's deterministic algorithms the eager and the graphed step launch the same
kernels; a few backward kernels still add with atomics, so per-epoch mean losses may differ by
float32 round-off, grown over a few epochs. We allow a relative 1e-4: a stale learning rate, a
skipped batch or a missed warm-up factor moves them by far more."""
import pytest
import torch

from mgkd.catalog.methods import METHOD_DEFAULTS
from mgkd.catalog.objectives import get_objective
from mgkd.config import ExperimentConfig, resolve
from mgkd.config.execution import Execution
from mgkd.data import load_splits
from mgkd.distill.learner import build_learner, schedule_of
from mgkd.knowledge.prepare import Knowledge
from mgkd.methods import METHOD_NAMES
from mgkd.training.engine import Trainer


pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CIFAR_SIZED = {"num_train": 640, "num_test": 128, "num_classes": 10, "image_size": 32, "seed": 0}
RELATIVE = 1e-4


@pytest.fixture(autouse=True)
def deterministic():
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", ".", val_fraction=0.1, options=CIFAR_SIZED).to("cuda")


def config_of(tmp_path, **changes):
    base = {"teacher": "resnet8x4", "student": "resnet8", "dataset": "synthetic",
            "data_options": CIFAR_SIZED, "epochs": 3, "batch_size": 64, "device": "cuda",
            "cache_dir": str(tmp_path), "method": "kd", "mode": "mas",
            "granularities": [{"dim": 16, "temperature": 2.0}, {"dim": 64, "temperature": 8.0}]}
    return resolve(ExperimentConfig.from_dict({**base, **changes}))


def trainer_of(config, splits, execution, **kwargs):
    knowledge = Knowledge.untrained(config, CIFAR_SIZED["num_classes"])
    learner = build_learner(config, splits, knowledge, torch.device("cuda"),
                            channels_last=execution.channels_last)
    return Trainer(learner, splits, schedule_of(config), batch_size=config.batch_size, seed=0,
                   objective=get_objective(config.objective), execution=execution, **kwargs)


def losses(trainer):
    return [h["train_loss"] for h in trainer.state.history]


def test_graphed_fp32_run_equals_the_eager_run(tmp_path, splits):
    config = config_of(tmp_path)
    eager = trainer_of(config, splits, Execution())
    eager.fit()
    graphed = trainer_of(config, splits, Execution(cuda_graphs=True))
    graphed.fit()
    assert losses(graphed) == pytest.approx(losses(eager), rel=RELATIVE)


def test_a_graphed_run_resumes_from_its_checkpoint(tmp_path, splits):
    config = config_of(tmp_path, epochs=4)
    whole = trainer_of(config, splits, Execution(cuda_graphs=True))
    whole.fit()

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
    assert losses(resumed) == pytest.approx(losses(whole), rel=RELATIVE)


@pytest.mark.parametrize("method", [m for m in METHOD_NAMES
                                    if METHOD_DEFAULTS[m].capture_blocker is None])
def test_every_capturable_method_records_and_trains_in_bf16(tmp_path, splits, method):
    config = config_of(tmp_path, method=method, epochs=2)
    trainer = trainer_of(config, splits, Execution(cuda_graphs=True, amp=True,
                                                   channels_last=True, eval_batch_size=1024))
    state = trainer.fit()
    assert all(torch.isfinite(torch.tensor(losses(trainer))))
    assert state.epoch == 2


def test_twenty_trials_in_one_process_do_not_grow_gpu_memory(tmp_path, splits):
    config = config_of(tmp_path, epochs=1)
    reserved = []
    for seed in range(20):
        trainer = trainer_of(config.replace(seed=seed), splits, Execution(cuda_graphs=True))
        trainer.fit()  # releases its graph when it ends
        del trainer
        reserved.append(torch.cuda.memory_reserved())
    assert max(reserved[5:]) <= max(reserved[:5]) + 64 * 2**20, reserved
