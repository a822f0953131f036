"""Capture policy: every method that claims its step can be recorded in a CUDA graph runs a whole
training step (forward, every loss term, backward, SGD) on the CPU without an op that would sync
with the host and without replacing a parameter or buffer; the ones that say they cannot are
caught for the reason they give."""
import pytest
import torch
from torch import nn

from mgkd.catalog.methods import METHOD_DEFAULTS
from mgkd.config import resolve
from mgkd.data import DeviceBatches, load_splits
from mgkd.distill.learner import build_learner
from mgkd.knowledge.heads import HeadLearner, TeacherHead
from mgkd.knowledge.teacher import SupervisedLearner
from mgkd.methods import METHOD_NAMES
from mgkd.models import create_model
from mgkd.reid.losses import ReidBaseLoss
from mgkd.training.capture import capture_problems
from mgkd.training.steps import train_step
from mgkd.training.tasks import get_task

from conftest import TINY_DATA
from test_methods import untrained_knowledge


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)


@pytest.fixture(scope="module")
def batch(splits):
    return next(iter(DeviceBatches(splits.train, splits.spec, 16, train=True,
                                   generator=torch.Generator().manual_seed(0))))


def step_problems(loss_of, parameters, modules, batch):
    """Problems of the second step (the first creates SGD's momentum buffers, as warm-up does)."""
    optimizer = torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=5e-4)
    sums = {}
    train_step(loss_of, optimizer, batch, sums)
    return capture_problems(lambda: train_step(loss_of, optimizer, batch, sums), modules)


def test_the_detector_names_host_reads_data_shapes_and_replaced_tensors():
    x = torch.randn(8, 3)
    assert "host" in capture_problems(lambda: x.sum().item(), [])[0]
    assert "shape depends on the data" in capture_problems(lambda: x[x > 0], [])[0]
    assert "torch.linalg.svd" in capture_problems(lambda: torch.linalg.svd(x), [])[0]
    assert capture_problems(lambda: torch.where(x > 0, x, 0.0).sum(), []) == []

    bank = nn.Module()
    bank.register_buffer("memory", torch.zeros(4))
    problems = capture_problems(lambda: setattr(bank, "memory", bank.memory + 1), [bank])
    assert problems == ["the step replaced tensor '0.memory' instead of updating it in place"]
    assert capture_problems(lambda: bank.memory.add_(1), [bank]) == []


def test_only_kdsvd_declares_a_blocker():
    assert [n for n in METHOD_NAMES if METHOD_DEFAULTS[n].capture_blocker] == ["kdsvd"]


# Every method in mas (all loss terms on); crd's gather path too; kd and dkd in every mode.
CASES = ([(m, "mas", {}) for m in METHOD_NAMES] + [("crd", "mas", {"nce_k": 2})]
         + [(m, mode, {}) for m in ("kd", "dkd") for mode in ("plain", "mag")])


@pytest.mark.parametrize("method,mode,options", CASES,
                         ids=[f"{m}-{mode}{'-' if o else ''}{'-'.join(o)}" for m, mode, o in CASES])
def test_each_methods_step_matches_its_declared_capture_policy(tiny_config, splits, batch,
                                                               method, mode, options):
    config = resolve(tiny_config(method=method, mode=mode, epochs=8, method_options=options))
    task = build_learner(config, splits, untrained_knowledge(config), torch.device("cpu"))
    task.train()
    modules = [task.modules, task.teacher]
    problems = step_problems(lambda b: task.loss_components(b, 0), task.trainable_parameters(),
                             modules, batch)
    stage = task.init_stage()
    if stage is not None:  # ab, ft, fsp: the init stage is recorded the same way
        problems += step_problems(lambda b: {"loss": stage.loss(b)}, stage.parameters, modules,
                                  batch)
    blocker = METHOD_DEFAULTS[method].capture_blocker
    if blocker is None:
        assert problems == []
    else:
        assert problems and all("torch.linalg.svd" in p for p in problems), problems


def test_teacher_head_and_reid_steps_can_be_captured(splits, batch):
    model = create_model("resnet8", TINY_DATA["num_classes"])
    teacher_task = SupervisedLearner(model, get_task("classification"))
    assert step_problems(lambda b: teacher_task.loss_components(b, 0), model.parameters(),
                         [model], batch) == []

    head = TeacherHead(model.embedding_dim, 8, TINY_DATA["num_classes"])
    heads_task = HeadLearner(model, [head], [2.0])
    assert step_problems(lambda b: heads_task.loss_components(b, 0), head.parameters(),
                         [model, head], batch) == []

    reid = SupervisedLearner(create_model("resnet8", TINY_DATA["num_classes"]), get_task("reid"))
    triplet = ReidBaseLoss()

    def reid_loss(b):
        features, logits = reid.model(b.images, features=True)
        terms = triplet(logits, features[-1], b.labels)
        return {"loss": sum(terms.values())}

    assert step_problems(reid_loss, reid.model.parameters(), [reid.model], batch) == []


@pytest.mark.parametrize("mode", ["plain", "mag", "mas"])
def test_a_peer_groups_whole_step_can_be_captured(tmp_path, splits, batch, mode):
    # dml declares no capture blocker: every peer's forward, the mutual terms, backward and the
    # SGD step record as one graph.
    from mgkd.config import ExperimentConfig
    from mgkd.distill.mutual import build_mutual_learner
    assert METHOD_DEFAULTS["dml"].capture_blocker is None
    config = resolve(ExperimentConfig.from_dict({
        "peers": ["resnet8", "wrn_16_1"], "method": "dml", "mode": mode, "dataset": "synthetic",
        "data_options": dict(TINY_DATA), "device": "cpu",
        "granularities": [{"dim": 8, "temperature": 2.0}, {"dim": 16, "temperature": 8.0}]}))
    group = build_mutual_learner(config, splits, torch.device("cpu"))
    group.train()
    assert step_problems(lambda b: group.loss_components(b, 0), group.trainable_parameters(),
                         [group.modules], batch) == []
