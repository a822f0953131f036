"""A distillation run: the learner one step trains (frozen teacher and heads, student, student
encoders and the KD method's modules) and the trainer that runs it. The Ray trainable and
``mgkd train`` both build runs with :func:`make_trainer`."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgkd.catalog.methods import method_defaults
from mgkd.catalog.objectives import Objective, get_objective
from mgkd.catalog.tasks import task_entry
from mgkd.config import ExperimentConfig, resolve
from mgkd.config.execution import Execution, ExecutionSettings
from mgkd.data import Batch, DataSplits
from mgkd.distill.loss import COMPONENTS, LossWeights, compose_loss
from mgkd.distill.mutual import build_mutual_learner, peer_metric
from mgkd.knowledge.bank_use import open_run_bank
from mgkd.knowledge.heads import FrozenTeacher, StudentGranularity, TeacherHead
from mgkd.knowledge.prepare import Knowledge, head_levels
from mgkd.knowledge.views import ViewBank
from mgkd.methods import DistillMethod, MethodContext, MethodInputs, build_method
from mgkd.models import create_model, probe_feature_shapes
from mgkd.models.backbone_init import init_backbone
from mgkd.training.engine import EpochCallback, Schedule, Trainer, resolve_device
from mgkd.training.learner import InitStage, Learner
from mgkd.training.steps import Recorder
from mgkd.training.tasks import Task, task_of


class DistillationLearner(Learner):
    """One distillation step: frozen teacher (+ heads) and student (+ encoders, method modules)."""

    def __init__(self, config: ExperimentConfig, teacher: FrozenTeacher, student: nn.Module,
                 granularity: StudentGranularity, method: DistillMethod, task: Task,
                 bank: ViewBank | None = None):
        self.task = task
        self.teacher = teacher
        self.bank = bank  # where the teacher's outputs come from instead of its forward
        self.reads_views = bank is not None
        self.student = student
        self.granularity = granularity
        self.method = method
        self.weights = LossWeights.from_config(config)
        # Checkpointed state: everything that trains. The teacher is restored from Knowledge.
        self.modules = nn.ModuleDict({"student": student, "granularity": granularity,
                                      "method": method})

    def step_constants(self, epoch: int) -> tuple:
        return self.method.step_constants(epoch)

    def _forward(self, batch: Batch, epoch: int):
        images = batch.images
        if self.bank is not None:
            t = self.teacher.from_bank(*self.bank.gather(batch.indices, batch.views))
        else:
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
        base = self.task.base_loss(s_logits, s_features[-1], batch.labels)
        return compose_loss(self.weights, student_logits=s_logits, teacher_logits=t.logits,
                            base=base, method_loss=method_loss,
                            student_codes=student_codes, teacher_codes=t.codes,
                            decoder_logits=t.decoder_logits)

    def eval_logits(self, batch: Batch) -> list[torch.Tensor]:
        return [self.student(batch.images)]

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


def build_learner(config: ExperimentConfig, splits: DataSplits, knowledge: Knowledge,
                  device: torch.device, *, channels_last: bool = False,
                  amp: bool = False) -> DistillationLearner:
    """Models, heads and method on ``device`` for a resolved ``config``: convolutions of the
    teacher, the student and the method's modules channels-last when asked; under ``amp`` (bf16
    autocast) the frozen teacher's matmul weights stored in bf16 once, instead of cast every
    step. Seeds the global RNG with ``config.seed`` first, so the same config always starts from
    the same weights."""
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
        for module in (teacher, student, method):
            module.to(memory_format=torch.channels_last)
    if amp:
        teacher.store_matmul_weights_in(torch.bfloat16)
    bank = open_run_bank(config, splits, knowledge.bank, knowledge.teacher_hash,
                         teacher_model.embedding_dim, device)
    return DistillationLearner(config, teacher, student, granularity, method, task_of(config), bank)


def schedule_of(config: ExperimentConfig) -> Schedule:
    return Schedule(epochs=config.epochs, lr=float(config.lr), momentum=config.momentum,
                    weight_decay=config.weight_decay, milestones=tuple(config.lr_milestones),
                    decay=config.lr_decay)


def execution_of(config: ExperimentConfig, device: torch.device, splits: DataSplits) -> Execution:
    """How this distillation run's steps execute on ``device`` (``auto`` settings resolved)."""
    blocker = method_defaults(config.method).capture_blocker
    return ExecutionSettings.of(config).resolve(
        device_type=device.type, batch_size=config.batch_size,
        image_shape=splits.spec.image_shape, capture_blocker=blocker,
        what=f"{config.method} distillation")


def make_trainer(config: ExperimentConfig, splits: DataSplits, knowledge: Knowledge | None, *,
                 callbacks: list[EpochCallback] | None = None,
                 checkpoint_path: Path | None = None, recorder: Recorder | None = None) -> Trainer:
    """A ready-to-fit distillation trainer; ``splits`` may live on the CPU (moved here). The
    config is resolved here (a no-op for a resolved one): everything below reads the resolved
    form. ``recorder`` (an :class:`~mgkd.training.steps.InlineRecorder`, for CPU tests and the
    benchmark's self-check) records the steps the way CUDA graphs would, on any device. A peer
    group (``config.peers``) has no teacher: ``knowledge`` is None for it."""
    config = resolve(config)
    device = resolve_device(config.device)
    execution = execution_of(config, device, splits)  # before any work: it may refuse the config
    if recorder is not None:
        execution = dataclasses.replace(execution, cuda_graphs=True)
    splits = splits.to(device)
    learner: Learner
    if config.peers is not None:
        learner = build_mutual_learner(config, splits, device,
                                       channels_last=execution.channels_last)
    elif knowledge is None:
        raise ValueError("a teacher -> student run needs its teacher's knowledge")
    else:
        learner = build_learner(config, splits, knowledge, device,
                                channels_last=execution.channels_last,
                                amp=execution.amp and device.type == "cuda")
    return Trainer(learner, splits, schedule_of(config), batch_size=config.batch_size,
                   seed=config.seed, objective=get_objective(config.objective),
                   callbacks=callbacks, execution=execution, checkpoint_path=checkpoint_path,
                   recorder=recorder, task=learner.task)


def reported_metrics(task: str, objective: str, peers: int = 0) -> tuple[str, ...]:
    """The keys every sweep trial reports each epoch (and `mgkd train` logs alike, so curves line
    up): losses, the task's metrics on val and test, the best objective value so far and lr. A
    group of ``peers`` adds each peer's loss and accuracies, the ensemble's accuracy and
    ``best_peer`` (whose values ``val_acc`` and ``test_acc`` are)."""
    entry = task_entry(task)
    evaluated = tuple(f"{split}_{name}" for split in ("val", "test") for name in entry.metric_names)
    best = get_objective(objective).best_metric
    group = tuple(name for i in range(peers) for name in (
        peer_metric("loss", i), peer_metric("val_acc", i), peer_metric("test_acc", i)))
    if peers:
        group += ("val_acc_ensemble", "test_acc_ensemble", "best_peer")
    return ("epoch", "train_loss", *COMPONENTS, *(f"loss_{name}" for name in entry.extra_losses),
            *evaluated, *group, best, "lr")


def final_metrics(state: Any, objective: Objective) -> dict[str, Any]:
    """The run's summary: the last epoch's objective and its test counterpart, the epoch with the
    best objective value (``best_val_acc``, ``best_epoch``) and, at that epoch, every summary
    metric of the task on test and the other ones on validation (``test_acc_at_best_val``; for
    re-ID ``test_map_at_best_val``, ``test_rank1_at_best_val``, ``test_rank5_at_best_val``,
    ``val_rank1_at_best_val``, ...)."""
    last = state.history[-1] if state.history else {}
    name, test = objective.name, objective.test_metric
    selected = next((row for row in state.history if row.get("epoch") == state.best_epoch), {})
    at_best = {f"{split}_{metric}_at_best_val": selected.get(f"{split}_{metric}")
               for split in ("val", "test") for metric in task_entry(objective.task).summary_metrics
               if f"{split}_{metric}" != name}
    # A peer group: which peer the values are (last epoch; at the best epoch), and every peer's.
    group = {f"{key}_at_best_val": value for key, value in selected.items()
             if key == "best_peer" or "_acc_peer" in key or key.endswith("_acc_ensemble")}
    if "best_peer" in last:
        group["best_peer"] = last["best_peer"]
    return {"epochs": state.epoch, name: last.get(name), test: last.get(test),
            objective.best_metric: state.best_value, "best_epoch": state.best_epoch,
            **at_best, objective.test_at_best: state.test_at_best, **group}
