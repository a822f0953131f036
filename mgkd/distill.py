"""A distillation run: the teacher's knowledge (prepared once), the task one step computes, and
the trainer that runs it. The Ray trainable and ``mgkd train`` both build runs from here."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.config import ExperimentConfig, resolve
from mgkd.data import Batch, DataSplits, load_splits
from mgkd.engine import EpochCallback, InitStage, Schedule, Trainer, resolve_device
from mgkd.execution import Execution, ExecutionSettings
from mgkd.granularity import FrozenTeacher, HeadBank, HeadKey, StudentGranularity, TeacherHead
from mgkd.io import file_sha256
from mgkd.loss import LossWeights, compose_loss
from mgkd.methods import DistillMethod, MethodContext, MethodInputs, build_method, get_method
from mgkd.models import create_model, probe_feature_shapes
from mgkd.models.backbone_init import init_backbone
from mgkd.objectives import OBJECTIVES, Objective
from mgkd.tasks import Task, get_task
from mgkd.teacher import data_identity, ensure_teacher, load_teacher

log = logging.getLogger(__name__)


def load_config_splits(config: ExperimentConfig) -> DataSplits:
    """The train/val/test splits a config asks for, as CPU tensors."""
    return load_splits(config.dataset, Path(config.data_dir).expanduser(),
                       val_fraction=config.val_fraction, train_subset=config.train_subset,
                       seed=config.split_seed, options=config.data_options)


def head_levels(config: ExperimentConfig) -> list[tuple[int, float]]:
    return [] if config.mode == "plain" else [(g.dim, g.temperature) for g in config.granularities]


def head_keys(config: ExperimentConfig, teacher_hash: str,
              levels: list[tuple[int, float]] | None = None) -> list[HeadKey]:
    levels = head_levels(config) if levels is None else levels
    return [HeadKey(teacher_hash=teacher_hash, dim=dim, temperature=float(temp),
                    epochs=config.head_epochs, seed=config.teacher_seed,
                    data=data_identity(config)) for dim, temp in levels]


def head_bank(config: ExperimentConfig) -> HeadBank:
    return HeadBank(Path(config.cache_dir).expanduser() / "heads")


@dataclass
class Knowledge:
    """The frozen teacher's weights and its trained heads, as CPU tensors: prepared once per
    teacher and handed to every run (through Ray's object store in a sweep)."""

    teacher_arch: str
    teacher_path: str
    teacher_hash: str
    teacher_state: dict[str, torch.Tensor]
    heads: dict[tuple[int, float], dict[str, torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def untrained(cls, config: ExperimentConfig, num_classes: int, seed: int = 0) -> "Knowledge":
        """A randomly initialised teacher with the heads ``config`` asks for: enough to run every
        term of a distillation step (tests and benchmarks). Leaves the global RNG as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            teacher = create_model(config.teacher, num_classes)
            heads = {(dim, temp): TeacherHead(teacher.embedding_dim, dim, num_classes).state_dict()
                     for dim, temp in head_levels(config)}
        return cls(config.teacher, "", "", teacher.state_dict(), heads)

    def head_state(self, dim: int, temperature: float) -> dict[str, torch.Tensor]:
        try:
            return self.heads[(dim, float(temperature))]
        except KeyError:
            have = ", ".join(f"(dim {d}, T {t:g})" for d, t in self.heads) or "none"
            raise KeyError(f"head (dim {dim}, T {temperature:g}) was not prepared; have {have}") from None


def prepare_knowledge(config: ExperimentConfig, splits: DataSplits, *,
                      extra_levels: list[tuple[int, float]] | None = None,
                      teacher_callbacks: list[EpochCallback] | None = None) -> Knowledge:
    """Ensure the teacher and every head ``config`` (plus ``extra_levels``) needs exist — training
    the missing ones once — and load them."""
    device = resolve_device(config.device)
    splits = splits.to(device)  # once: teacher and head training both read it there
    path = ensure_teacher(config, splits, callbacks=teacher_callbacks)
    teacher = load_teacher(path, config.teacher, splits.spec.num_classes, device)
    teacher_hash = file_sha256(path)
    levels = list(dict.fromkeys(head_levels(config) + list(extra_levels or [])))
    keys = head_keys(config, teacher_hash, levels)
    bank = head_bank(config)
    if keys:
        bank.ensure(teacher, keys, splits, settings=ExecutionSettings.of(config))
    width = teacher.embedding_dim
    heads = {(k.dim, k.temperature): bank.load(k, width, splits.spec.num_classes).state_dict()
             for k in keys}
    state = {k: v.detach().cpu() for k, v in teacher.state_dict().items()}
    return Knowledge(config.teacher, str(path), teacher_hash, state, heads)


class DistillationTask:
    """One distillation step: frozen teacher (+ heads) and student (+ encoders, method modules)."""

    def __init__(self, config: ExperimentConfig, teacher: FrozenTeacher, student: nn.Module,
                 granularity: StudentGranularity, method: DistillMethod, kind: Task):
        self.kind = kind
        self.teacher = teacher
        self.student = student
        self.granularity = granularity
        self.method = method
        self.weights = LossWeights.from_config(config, method.uses_feature_weight)
        # Checkpointed state: everything that trains. The teacher is restored from Knowledge.
        self.modules = nn.ModuleDict({"student": student, "granularity": granularity,
                                      "method": method})

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.modules.parameters() if p.requires_grad]

    def train(self) -> None:
        self.modules.train()

    def eval(self) -> None:
        self.modules.eval()

    def capture_blocker(self) -> str | None:
        """Why this task's step cannot be recorded in a CUDA graph (None: it can)."""
        return self.method.capture_blocker

    def step_constants(self, epoch: int) -> tuple:
        return self.method.step_constants(epoch)

    def _forward(self, batch: Batch, epoch: int):
        images = batch.images
        t = self.teacher(images)
        s_features, s_logits = self.student(images, features=True)
        inputs = MethodInputs(student_features=s_features, teacher_features=t.features,
                              student_logits=s_logits, teacher_logits=t.logits,
                              targets=batch.labels, indices=batch.indices, epoch=epoch)
        return t, s_features, s_logits, inputs

    def loss_components(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        t, s_features, s_logits, inputs = self._forward(batch, epoch)
        method_loss = self.method(inputs) if self.weights.feature else s_logits.new_zeros(())
        student_codes = self.granularity(s_features[-1]) if self.weights.level_weights else []
        base = self.kind.base_loss(s_logits, s_features[-1], batch.labels)
        return compose_loss(self.weights, student_logits=s_logits, teacher_logits=t.logits,
                            base=base, method_loss=method_loss,
                            student_codes=student_codes, teacher_codes=t.codes,
                            decoder_logits=t.decoder_logits)

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.student(batch.images)
        return (F.cross_entropy(logits.float(), batch.labels, reduction="sum"),
                (logits.argmax(1) == batch.labels).sum())

    def embed(self, batch: Batch) -> torch.Tensor:
        """The student's pooled embedding: what re-ID retrieval ranks by."""
        return self.student(batch.images, features=True)[0][-1]

    def init_stage(self) -> InitStage | None:
        if not self.method.has_init_stage:
            return None
        params = list(self.method.init_parameters())
        if self.method.init_trains_student:
            params += list(self.student.parameters())

        def loss(batch: Batch) -> torch.Tensor:
            return self.method.init_loss(self._forward(batch, 0)[3])

        return InitStage(epochs=self.method.init_epochs(), parameters=params, loss=loss)


def build_task(config: ExperimentConfig, splits: DataSplits, knowledge: Knowledge,
               device: torch.device, *, channels_last: bool = False) -> DistillationTask:
    """Models, heads and method on ``device`` (convolutions channels-last when asked). Seeds the
    global RNG with ``config.seed`` first, so the same config always starts from the same
    weights."""
    torch.manual_seed(config.seed)
    classes, size = splits.spec.num_classes, splits.spec.image_shape
    teacher_model = create_model(config.teacher, classes, key="teacher")
    teacher_model.load_state_dict(knowledge.teacher_state)
    heads = []
    for dim, temp in head_levels(config):
        head = TeacherHead(teacher_model.embedding_dim, dim, classes)
        head.load_state_dict(knowledge.head_state(dim, temp))
        heads.append(head)
    teacher = FrozenTeacher(teacher_model, heads).to(device)
    student = create_model(config.student, classes, key="student")
    if config.student_init:
        init_backbone(student, Path(config.student_init).expanduser(), key="student_init",
                      arch=config.student)
    student = student.to(device)
    granularity = StudentGranularity(student.embedding_dim,
                                     [dim for dim, _ in head_levels(config)]).to(device)
    context = MethodContext(student_shapes=probe_feature_shapes(student, size, splits.spec.channels),
                            teacher_shapes=probe_feature_shapes(teacher_model, size,
                                                                splits.spec.channels),
                            num_classes=classes, num_train_samples=len(splits.train),
                            epochs=config.epochs, temperature=config.temperature,
                            teacher=config.teacher, student=config.student)
    method = build_method(config.method, context, config.method_options).to(device)
    if channels_last:
        for module in (teacher, student):
            module.to(memory_format=torch.channels_last)
    return DistillationTask(config, teacher, student, granularity, method,
                            get_task(splits.spec.task))


def schedule_of(config: ExperimentConfig) -> Schedule:
    return Schedule(epochs=config.epochs, lr=float(config.lr), momentum=config.momentum,
                    weight_decay=config.weight_decay, milestones=tuple(config.lr_milestones),
                    decay=config.lr_decay)


def execution_of(config: ExperimentConfig, device: torch.device, splits: DataSplits) -> Execution:
    """How this distillation run's steps execute on ``device`` (``auto`` settings resolved)."""
    blocker = get_method(config.method).capture_blocker
    return ExecutionSettings.of(config).resolve(
        device_type=device.type, batch_size=config.batch_size,
        image_shape=splits.spec.image_shape, capture_blocker=blocker,
        what=f"{config.method} distillation")


def make_trainer(config: ExperimentConfig, splits: DataSplits, knowledge: Knowledge, *,
                 callbacks: list[EpochCallback] | None = None,
                 checkpoint_path: Path | None = None) -> Trainer:
    """A ready-to-fit distillation trainer; ``splits`` may live on the CPU (moved here)."""
    config = resolve(config)
    device = resolve_device(config.device)
    execution = execution_of(config, device, splits)  # before any work: it may refuse the config
    splits = splits.to(device)
    task = build_task(config, splits, knowledge, device, channels_last=execution.channels_last)
    return Trainer(task, splits, schedule_of(config), batch_size=config.batch_size,
                   seed=config.seed, callbacks=callbacks, execution=execution,
                   checkpoint_path=checkpoint_path, objective=config.objective)


def final_metrics(state: Any, objective: Objective = OBJECTIVES["val_acc"]) -> dict[str, Any]:
    """The run's summary: the last epoch's objective and its test counterpart, plus the epoch
    with the best objective value (``best_val_acc``, ``test_acc_at_best_val`` for val_acc)."""
    last = state.history[-1] if state.history else {}
    name, test = objective.name, objective.test_metric
    return {"epochs": state.epoch, name: last.get(name), test: last.get(test),
            objective.best_metric: state.best_value, "best_epoch": state.best_epoch,
            objective.test_at_best: state.test_at_best}
