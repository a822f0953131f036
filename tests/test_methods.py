"""Every KD method in every mode: one optimisation step on synthetic data through the real
distillation task gives a finite loss and moves the student, its encoders and the method's modules."""
import pytest
import torch

from mgkd.config import resolve
from mgkd.data import DeviceBatches, load_splits
from mgkd.distill import Knowledge, build_task
from mgkd.errors import ConfigError
from mgkd.method_defaults import METHOD_DEFAULTS
from mgkd.methods import METHOD_NAMES, METHODS

from conftest import TINY_DATA

EXPECTED = ("kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd",
            "kdsvd", "afd", "dkd")


def test_all_sixteen_methods_are_registered():
    assert METHOD_NAMES == EXPECTED
    assert all(METHODS[name].name == name for name in EXPECTED)


def test_torch_free_defaults_are_the_methods_defaults():
    # One source of truth: `mgkd config` reads the table, the torch classes get it on register.
    assert tuple(METHOD_DEFAULTS) == METHOD_NAMES
    for name, cls in METHODS.items():
        table = METHOD_DEFAULTS[name]
        assert (cls.default_ce_weight, cls.default_logit_weight, cls.default_feature_weight,
                cls.uses_feature_weight) == (table.ce_weight, table.logit_weight,
                                             table.feature_weight, table.uses_feature_weight)
        assert dict(cls.option_defaults) == dict(table.options)
        for teacher, student in (("resnet56", "resnet20"), ("vgg13", "vgg8"),
                                 ("resnet32x4", "resnet8x4")):
            options = cls.resolve_options({}, teacher, student)
            assert options == table.resolve_options({}, teacher, student)
            assert cls.feature_weight_default(options) == table.feature_weight_default(options)
    assert METHODS["dkd"].resolve_options({}, "resnet56", "resnet20")["beta"] == 2.0
    assert METHODS["cc"].feature_weight_default({"form": "repdistiller"}) == 0.02
    with pytest.raises(ConfigError, match=r"method_options: unknown option\(s\) \['nope'\]"):
        METHODS["at"].resolve_options({"nope": 1})


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)


def untrained_knowledge(config):
    """A real (untrained) teacher and heads for the tiny data: every code path of a step."""
    return Knowledge.untrained(config, TINY_DATA["num_classes"])


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def moved(before, module):
    return any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))


@pytest.mark.parametrize("mode", ["plain", "mag", "mas"])
@pytest.mark.parametrize("method", EXPECTED)
def test_one_step_moves_student_and_method(tiny_config, splits, method, mode):
    config = resolve(tiny_config(method=method, mode=mode, epochs=8))
    task = build_task(config, splits, untrained_knowledge(config), torch.device("cpu"))
    batch = next(iter(DeviceBatches(splits.train, splits.spec, 16, train=True,
                                    generator=torch.Generator().manual_seed(0))))
    stage = task.init_stage()
    assert (stage is not None) == METHODS[method].has_init_stage
    if stage is not None:  # ab, ft, fsp: their warm-up stage trains the method's modules
        before = snapshot(task.method)
        init_loss = stage.loss(batch)
        assert torch.isfinite(init_loss)
        optimizer = torch.optim.SGD(stage.parameters, lr=0.05, momentum=0.9)
        init_loss.backward()
        optimizer.step()
        assert moved(before, task.method)

    student, method_mod = snapshot(task.student), snapshot(task.method)
    encoders, teacher = snapshot(task.granularity), snapshot(task.teacher)
    optimizer = torch.optim.SGD(task.trainable_parameters(), lr=0.05, momentum=0.9)
    task.train()
    terms = task.loss_components(batch, epoch=0)
    assert torch.isfinite(terms["loss"])
    assert set(terms) == {"loss", "loss_ce", "loss_logit", "loss_feature", "loss_granularity"}
    optimizer.zero_grad()
    terms["loss"].backward()
    optimizer.step()

    assert moved(student, task.student)
    assert not moved(teacher, task.teacher)
    if mode == "plain":
        assert float(terms["loss_granularity"].detach()) == 0.0
    else:
        assert float(terms["loss_granularity"].detach()) > 0.0 and moved(encoders, task.granularity)
    if mode == "mas":
        assert float(terms["loss_logit"].detach()) > 0.0
    trains_in_main_stage = [p for p in task.method.parameters() if p.requires_grad]
    if method not in ("kd", "ft") and trains_in_main_stage:
        assert float(terms["loss_feature"].detach()) != 0.0
        assert moved(method_mod, task.method)
