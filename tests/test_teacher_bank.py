"""The teacher view bank: view numbers, the decision rule, the file's checks, and runs that read
their teacher's outputs from it train exactly as runs with the online teacher."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch

from conftest import tiny_config_dict
from mgkd.catalog.bank import bank_choice
from mgkd.config import ExperimentConfig, resolve
from mgkd.data import load_config_splits
from mgkd.data.augment import Augmenter
from mgkd.data.containers import DatasetSpec
from mgkd.distill.learner import make_trainer
from mgkd.errors import ConfigError
from mgkd.knowledge.bank_use import prepare_bank
from mgkd.knowledge.prepare import Knowledge
from mgkd.knowledge.views import BankMismatch, read_header
from mgkd.methods import METHODS
from mgkd.methods.base import TEACHER_MAPS
from mgkd.models import create_model
from mgkd.training.capture import capture_problems
from mgkd.training.steps import InlineRecorder

# 8x8 synthetic images: padding 1 and flips, 3 x 3 x 2 = 18 views; 48 training images.
BANK_DATA = {"num_train": 64, "num_test": 16, "num_classes": 4, "image_size": 8, "seed": 0}
CIFAR_SPEC = DatasetSpec("cifar", 100, 32, 32, 3, (0.5,) * 3, (0.25,) * 3, 4, True)
LOSS_RTOL = 1e-4  # float32 bank vs online teacher, per-epoch mean losses (measured: <= 2e-5)


def _config(tmp_path: Path, **overrides) -> ExperimentConfig:
    data = tiny_config_dict(tmp_path / "cache", data_options=dict(BANK_DATA), epochs=2,
                            batch_size=16, **{"teacher": "resnet14", **overrides})
    return resolve(ExperimentConfig.from_dict(data))


def _knowledge(config: ExperimentConfig, splits, runs=None) -> Knowledge:
    knowledge = Knowledge.untrained(config, splits.spec.num_classes)
    teacher = create_model(config.teacher, splits.spec.num_classes)
    teacher.load_state_dict(knowledge.teacher_state)
    bank = prepare_bank(runs or [(config, config.epochs)], splits, teacher, "t" * 64,
                        torch.device("cpu"))
    return dataclasses.replace(knowledge, teacher_hash="t" * 64, bank=bank)


def _losses(config, splits, knowledge, **kw) -> list[dict]:
    trainer = make_trainer(config, splits, knowledge, **kw)
    uses_bank = trainer.learner.bank is not None
    history = trainer.fit().history
    keys = [k for k in history[0] if k == "train_loss" or k.startswith("loss_")]
    return uses_bank, [{k: row[k] for k in keys} for row in history]


def test_view_numbers_name_the_views_drawn():
    """A drawn plan's view numbers rebuild exactly the images the plan shows; CIFAR has 162."""
    augmenter = Augmenter(CIFAR_SPEC, torch.device("cpu"), train=True)
    assert augmenter.view_count == 162
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    plan = augmenter.draw(40, torch.Generator().manual_seed(3), views=True)
    plain = augmenter.draw(40, torch.Generator().manual_seed(3))
    assert plain.views is None and torch.equal(plain.starts, plan.starts)  # the same draws
    assert plan.views is not None and int(plan.views.min()) >= 0 and int(plan.views.max()) < 162
    rebuilt = augmenter.view_plan(plan.views)
    index = torch.arange(40)
    source = augmenter.source(images)
    assert torch.equal(augmenter.gather(source, index, plan), augmenter.gather(source, index, rebuilt))
    erasing = Augmenter(dataclasses.replace(CIFAR_SPEC, random_erasing=0.5), torch.device("cpu"),
                        train=True)
    assert erasing.view_count is None
    assert erasing.draw(8, torch.Generator().manual_seed(0), views=True).views is None


def test_methods_declare_what_they_read_from_the_teacher():
    online = {name for name, cls in METHODS.items() if TEACHER_MAPS in cls.teacher_outputs}
    assert {"kd", "dkd", "rkd", "pkt", "cc", "crd"}.isdisjoint(online)
    assert {"fitnet", "at", "sp", "vid", "ab", "ft", "fsp", "nst", "kdsvd", "afd"} <= online


def test_bank_choice_rule():
    def choose(setting="auto", budget=8.0, outputs=frozenset({"logits"}), levels=False, views=162,
               size=10**9, passes=None):
        # size: the float16 bank's bytes; float32 takes twice as many
        return bank_choice(setting, budget, method="m", method_outputs=outputs, has_levels=levels,
                           view_count=views, dataset="d",
                           size_bytes=lambda d, o: size * (2 if d == "float32" else 1),
                           passes=passes)

    assert choose().use and choose().outputs == ("logits",)
    # auto: float32 (exact) where it fits the budget, else float16 where that fits
    assert choose().dtype == "float32"
    assert choose(size=5 * 10**9).use and choose(size=5 * 10**9).dtype == "float16"
    assert "in float16" in choose(size=9 * 10**9).reason
    assert choose(levels=True).outputs == ("embedding", "logits")
    assert not choose(setting="off").use
    assert "random erasing" in choose(views=None).reason
    assert "feature maps" in choose(outputs=frozenset({"logits", "maps"})).reason
    over = choose(size=9 * 10**9)
    assert not over.use and "teacher_bank_budget_gb 8" in over.reason
    assert choose(setting="float16", size=9 * 10**9).use  # explicit: the budget is not asked
    assert choose(setting="float32").dtype == "float32"
    assert not choose(passes=100).use and choose(passes=200).use


def test_config_key_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="teacher_bank"):
        ExperimentConfig.from_dict(tiny_config_dict(tmp_path, teacher_bank="fp16"))
    with pytest.raises(ConfigError, match="teacher_bank_budget_gb"):
        ExperimentConfig.from_dict(tiny_config_dict(tmp_path, teacher_bank_budget_gb=-1))


def test_float32_bank_run_equals_online_run_and_resumes(tmp_path, caplog):
    """mas with crd: logits, embedding (heads and CRD's memory) and sample indices from the bank;
    per-epoch losses equal the online teacher's within LOSS_RTOL; a resumed run equals a whole one."""
    config = _config(tmp_path, method="crd", teacher_bank="float32",
                     method_options={"nce_k": 16, "feat_dim": 8})
    splits = load_config_splits(config)
    knowledge = _knowledge(config, splits)
    assert knowledge.bank.path is not None and knowledge.bank.outputs == ("embedding", "logits")
    online = dataclasses.replace(config, teacher_bank="off")
    with caplog.at_level(logging.INFO, logger="mgkd.knowledge.bank_use"):
        used, banked = _losses(config, splits, knowledge)
    assert used and "teacher outputs come from the float32 teacher view bank" in caplog.text
    used_online, reference = _losses(online, splits, knowledge)
    assert not used_online
    for got, want in zip(banked, reference):
        assert got == pytest.approx(want, rel=LOSS_RTOL)
    # resume after epoch 1 of 2
    first = make_trainer(config, splits, knowledge,
                         checkpoint_path=tmp_path / "ck.pt")
    first.schedule = dataclasses.replace(first.schedule, epochs=1)
    first.fit()
    resumed = make_trainer(config, splits, knowledge, checkpoint_path=tmp_path / "ck.pt")
    assert resumed.resume_from_checkpoint() and resumed.learner.bank is not None
    last = resumed.fit().history[-1]
    assert last["train_loss"] == pytest.approx(banked[-1]["train_loss"], rel=1e-6)


def test_float16_bank_stays_close_and_graphed_steps_gather_rows(tmp_path):
    """float16 rows: losses within 1e-2 of the online run's (measured far below); the recorded
    (inline-graphed) step reads its rows through the static buffers and matches the eager one."""
    config = _config(tmp_path, method="kd", mode="mas", teacher_bank="float16")
    splits = load_config_splits(config)
    knowledge = _knowledge(config, splits)
    _, banked = _losses(config, splits, knowledge)
    _, online = _losses(dataclasses.replace(config, teacher_bank="off"), splits, knowledge)
    for got, want in zip(banked, online):
        assert got == pytest.approx(want, rel=1e-2)
    recorder = InlineRecorder()
    used, graphed = _losses(config, splits, knowledge, recorder=recorder)
    assert used and recorder.replays > 0
    for got, want in zip(graphed, banked):
        assert got == pytest.approx(want, rel=1e-5)
    # the bank step (rows gathered by the batch's indices and views) syncs nothing with the host
    trainer = make_trainer(config, splits, knowledge)
    learner = trainer.learner
    batch = next(iter(trainer._training_batches()))
    assert batch.views is not None
    step = lambda: learner.loss_components(batch, 0)["loss"].backward()  # noqa: E731
    assert capture_problems(step, [learner.modules]) == []


def test_bank_refuses_stale_and_truncated_files(tmp_path, caplog):
    config = _config(tmp_path, method="kd", mode="plain", teacher_bank="float16")
    splits = load_config_splits(config)
    knowledge = _knowledge(config, splits)
    path = Path(knowledge.bank.path)
    header = read_header(path)
    assert header["layout"]["views"] == 18 and header["layout"]["embed_dim"] == 0
    # another teacher: the run refuses the file and runs the teacher online
    other = dataclasses.replace(knowledge, teacher_hash="u" * 64)
    with caplog.at_level(logging.WARNING, logger="mgkd.knowledge.bank_use"):
        assert make_trainer(config, splits, other).learner.bank is None
    assert "refused" in caplog.text and "teacher_hash" in caplog.text
    # another architecture under the same file hash: refused too
    resnet8 = dataclasses.replace(config, teacher="resnet8")
    knowledge8 = dataclasses.replace(Knowledge.untrained(resnet8, 4), teacher_hash="t" * 64,
                                     bank=knowledge.bank)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mgkd.knowledge.bank_use"):
        assert make_trainer(resnet8, splits, knowledge8).learner.bank is None
    assert "another teacher" in caplog.text
    # a truncated file is never opened, and preparing again rebuilds it
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 10)
    with pytest.raises(BankMismatch, match="truncated"):
        read_header(path)
    rebuilt = _knowledge(config, splits)
    assert Path(rebuilt.bank.path) == path and read_header(path)["layout"] == header["layout"]


def test_auto_runs_online_where_the_bank_does_not_pay_or_apply(tmp_path, caplog):
    config = _config(tmp_path, method="kd", mode="plain")  # auto, 2 epochs < 18 views
    splits = load_config_splits(config)
    with caplog.at_level(logging.INFO, logger="mgkd.knowledge.bank_use"):
        knowledge = _knowledge(config, splits)
        assert knowledge.bank.path is None and "would save 2" in knowledge.bank.note
        assert make_trainer(config, splits, knowledge).learner.bank is None
    # runs worth 20 passes (>= 18 views) build it; float32, as it fits the budget
    built = _knowledge(config, splits, runs=[(config, 20)])
    assert built.bank.dtype == "float32" and read_header(Path(built.bank.path))["layout"][
        "dtype"] == "float32"
    assert make_trainer(config, splits, built).learner.bank is not None
    fitnet = _config(tmp_path, method="fitnet", teacher_bank="float32")
    with caplog.at_level(logging.INFO, logger="mgkd.knowledge.bank_use"):
        assert _knowledge(fitnet, splits).bank.path is None
    assert "reads the teacher's feature maps" in caplog.text
