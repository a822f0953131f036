"""Every KD method in every mode: one optimisation step on synthetic data through the real
distillation task gives a finite loss and moves the student, its encoders and the method's modules."""
import pytest
import torch

from mgkd.catalog.methods import METHOD_DEFAULTS
from mgkd.config import resolve
from mgkd.data import DeviceBatches, load_splits
from mgkd.distill.learner import build_learner
from mgkd.errors import ConfigError
from mgkd.knowledge.prepare import Knowledge
from mgkd.methods import METHOD_NAMES, METHODS

from conftest import TINY_DATA

def test_every_catalog_method_is_registered_under_its_name_with_its_entry():
    # The registry is derived from the catalog: each method's module, named as the method,
    # registers a class of that name, which reads its defaults from its catalog entry. The
    # online methods (dml) train peer groups and have no DistillMethod.
    teacher_student = tuple(n for n, d in METHOD_DEFAULTS.items() if not d.online)
    assert tuple(METHODS) == METHOD_NAMES == teacher_student
    assert [n for n, d in METHOD_DEFAULTS.items() if d.online] == ["dml"]
    assert all(cls.name == name and cls.defaults is METHOD_DEFAULTS[name]
               for name, cls in METHODS.items())


def test_a_method_without_a_catalog_entry_is_refused():
    from mgkd.methods.base import DistillMethod, register

    class Nameless(DistillMethod):
        name = "not_in_the_catalog"

    with pytest.raises(RuntimeError, match="not_in_the_catalog"):
        register(Nameless)


def test_pair_and_form_defaults_come_from_the_catalog():
    assert METHOD_DEFAULTS["dkd"].resolve_options({}, "resnet56", "resnet20")["beta"] == 2.0
    assert METHODS["dkd"].resolve_options({}, "resnet56", "resnet20")["beta"] == 2.0
    assert METHOD_DEFAULTS["cc"].feature_weight_default({"form": "repdistiller"}) == 0.02
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
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_one_step_moves_student_and_method(tiny_config, splits, method, mode):
    config = resolve(tiny_config(method=method, mode=mode, epochs=8))
    task = build_learner(config, splits, untrained_knowledge(config), torch.device("cpu"))
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


def test_channels_last_reaches_the_methods_own_convolutions(tiny_config, splits):
    """ft's paraphraser and translator hold 3x3 convolutions: channels-last for the teacher and
    the student alone would leave them converting layouts on every call."""
    config = resolve(tiny_config(method="ft", mode="plain"))
    task = build_learner(config, splits, untrained_knowledge(config), torch.device("cpu"),
                         channels_last=True)
    kernels = [p for p in task.method.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert not all(p.is_contiguous() for p in kernels)
