"""One training loop for teachers, granularity heads, distillation and final training.

A *learner* (:mod:`mgkd.training.learner`) says what one step computes (its loss components) and
what an evaluation batch shows; the data set's *task* (:mod:`mgkd.training.tasks`) scores it. The
``Trainer`` owns everything else: batches, SGD with the milestone schedule, per-epoch metrics,
callbacks and a checkpoint that continues a run bit-for-bit. How steps execute (CUDA graphs, bf16,
channels-last, the evaluation batch size) is an :class:`~mgkd.config.execution.Execution`; the
steps themselves run in :mod:`mgkd.training.steps`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator

import torch
from torch import nn

from mgkd.catalog.objectives import Objective
from mgkd.catalog.teacher_recipes import OPTIMIZERS
from mgkd.config.execution import Execution, graphs_refusal
from mgkd.data import Batch, DataSplits, EpochBatches, ImageSplit, make_batches
from mgkd.errors import ConfigError, TrainingDiverged
from mgkd.io import atomic_torch_save, safe_torch_load
from mgkd.training.checkpoint import Resumable, RunState
from mgkd.training.learner import Learner
from mgkd.training.outcomes import SampleOutcomes
from mgkd.training.steps import (ComputeFn, CudaGraphRecorder, EagerSteps, GraphedSteps, Recorder,
                                 StepRunner, capture_key, release_cublas_workspaces)
from mgkd.training.tasks import Task, get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """SGD (or AMSGrad, ``optimizer``) with step decay at fractions of the epoch budget (so short
    runs keep the shape)."""

    epochs: int
    lr: float
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.625, 0.75, 0.875)
    decay: float = 0.1
    optimizer_name: str = "sgd"  # one of mgkd.catalog.teacher_recipes.OPTIMIZERS

    def milestone_epochs(self) -> list[int]:
        epochs = {round(f * self.epochs) for f in self.milestones}
        return sorted(e for e in epochs if 0 < e < self.epochs)

    def optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """Over ``params``: parameters, or parameter groups (dicts; a group's ``lr`` wins)."""
        return _OPTIMIZERS[self.optimizer_name](list(params), self)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.MultiStepLR:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, self.milestone_epochs(), self.decay)


_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], Schedule], torch.optim.Optimizer]] = {
    "sgd": lambda params, s: torch.optim.SGD(params, lr=s.lr, momentum=s.momentum,
                                             weight_decay=s.weight_decay),
    # Adam with the AMSGrad correction, torch's default betas (torchreid's "amsgrad")
    "amsgrad": lambda params, s: torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay,
                                                  amsgrad=True),
}
assert tuple(_OPTIMIZERS) == OPTIMIZERS, "the catalog lists the optimizers built here"


@dataclass
class EpochReport:
    """Handed to every callback after each epoch."""

    epoch: int  # epochs finished so far (1-based)
    metrics: dict[str, Any]
    trainer: "Trainer"

    def save_checkpoint(self, path: Path) -> None:
        self.trainer.save_checkpoint(path)


EpochCallback = Callable[[EpochReport], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU Ray (or the user) made visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' was asked for but no CUDA GPU is visible; "
                          "use device: auto or cpu.")
    return torch.device(name)


class Trainer:
    """Trains a learner for ``schedule.epochs`` epochs; checkpoints continue a run exactly."""

    def __init__(self, learner: Learner, splits: DataSplits, schedule: Schedule, *,
                 batch_size: int, seed: int, objective: Objective,
                 callbacks: list[EpochCallback] | None = None, execution: Execution | None = None,
                 checkpoint_path: Path | None = None, recorder: Recorder | None = None,
                 task: Task | None = None):
        """``objective`` (e.g. val_acc, val_map) picks the best epoch. ``task`` scores the
        splits (default: the data set's task with its default settings). ``execution`` says how
        steps run (default: eager fp32, as on the CPU); with ``execution.cuda_graphs`` full
        training batches replay a recorded CUDA graph, through ``recorder`` when given (tests
        pass an :class:`~mgkd.training.steps.InlineRecorder` on the CPU)."""
        self.learner = learner
        self.splits = splits
        self.task = task if task is not None else get_task(splits.spec.task)
        self.objective = objective
        self.schedule = schedule
        self.batch_size = batch_size
        self.callbacks = list(callbacks or [])
        self.checkpoint_path = checkpoint_path
        self.device = splits.train.images.device
        self.execution = execution or Execution()
        self.amp = self.execution.amp and self.device.type == "cuda"
        if self.execution.cuda_graphs and recorder is None:
            refusal = graphs_refusal(True, on_gpu=self.device.type == "cuda",
                                     capture_blocker=None,
                                     cpu_because=f"this run's data is on {self.device}")
            if refusal:
                raise ConfigError(refusal)
            recorder = CudaGraphRecorder(self.device)
        self.recorder = recorder if self.execution.cuda_graphs else None
        self._steps: StepRunner | None = None
        self._train_batches: EpochBatches | None = None
        self.optimizer = schedule.optimizer(learner.optimizer_groups())
        self.scheduler = schedule.scheduler(self.optimizer)
        self.data_rng = torch.Generator(device=self.device)
        self.data_rng.manual_seed(seed)
        self.state = RunState()
        self._resumable = Resumable(learner.modules, self.optimizer, self.scheduler, self.data_rng)

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self._resumable.state_dict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = self._resumable.load_state_dict(state)
        if self._steps is not None:  # the optimizer's buffers are new tensors now
            self._steps.invalidate()

    def resume_from_checkpoint(self) -> bool:
        """Continue from ``checkpoint_path`` when a checkpoint is there (True), else start afresh."""
        if self.checkpoint_path is None or not self.checkpoint_path.is_file():
            return False
        self.load_checkpoint(self.checkpoint_path)
        return True

    def save_checkpoint(self, path: Path) -> None:
        atomic_torch_save(self.state_dict(), path)

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a checkpoint file, read through torch's restricted unpickler onto the
        CPU whatever the run's device: random generators take only CPU states, and the modules
        and the optimizer copy what they load onto their own device."""
        self.load_state_dict(safe_torch_load(path, "checkpoint"))

    # ---- the loop ----------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            # Autocast's weight-cast cache must be off while a CUDA graph records.
            return torch.autocast("cuda", dtype=torch.bfloat16,
                                  cache_enabled=not self.execution.cuda_graphs)
        return contextlib.nullcontext()

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.execution.channels_last else torch.contiguous_format

    def _training_batches(self) -> EpochBatches:
        """Built once a run (each iteration is a new epoch): the padded copy of the split that
        crops read from and re-ID's identity tables are made once, not every epoch."""
        if self._train_batches is None:
            self._train_batches = make_batches(self.splits.train, self.splits.spec,
                                               self.batch_size, train=True,
                                               generator=self.data_rng,
                                               memory_format=self._memory_format,
                                               views=self.learner.reads_views)
        return self._train_batches

    def steps_per_epoch(self) -> int:
        """Training steps in one epoch (a last, partial batch included)."""
        return len(self._training_batches())

    def _eval_batches(self, split: ImageSplit) -> EpochBatches:
        size = self.execution.eval_batch_size or self.batch_size
        return make_batches(split, self.splits.spec, size, train=False,
                            memory_format=self._memory_format)

    def _step_runner(self, optimizer: torch.optim.Optimizer) -> StepRunner:
        if self.recorder is None:
            return EagerSteps(optimizer)
        return GraphedSteps(optimizer, batch_size=self.batch_size, recorder=self.recorder)

    def _compute(self, loss_of: Callable[[Batch], dict[str, torch.Tensor]]) -> ComputeFn:
        def compute(batch: Batch) -> dict[str, torch.Tensor]:
            with self._autocast():
                return loss_of(batch)
        return compute

    def _run_epoch(self, steps: StepRunner, compute: ComputeFn, key: Hashable) -> dict[str, float]:
        """One pass over the training split; per-batch means of the components (one host sync)."""
        batches = self._training_batches()
        steps.begin_epoch()
        for batch in batches.epoch(into=steps.buffer):
            steps.step(batch, key, compute)
        return steps.means(len(batches))

    def _run_init_stage(self) -> None:
        stage = self.learner.init_stage()
        if stage is None or self.state.init_done:
            return
        optimizer = self.schedule.optimizer(stage.parameters)
        steps = self._step_runner(optimizer)
        log.info("init stage: %d epoch(s)", stage.epochs)
        try:
            for epoch in range(stage.epochs):
                self.learner.train()
                compute = self._compute(lambda batch: {"loss": stage.loss(batch)})
                value = self._run_epoch(steps, compute, capture_key(optimizer))["loss"]
                _check_finite({"init_loss": value}, epoch + 1)
                log.info("init epoch %d/%d  mean loss %.4f", epoch + 1, stage.epochs, value)
        finally:
            steps.close()
        self.state.init_done = True

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.learner.train()
        if self._steps is None:
            self._steps = self._step_runner(self.optimizer)
        key = (capture_key(self.optimizer, self.learner.step_constants(epoch))
               if self.recorder is not None else None)
        compute = self._compute(lambda batch: self.learner.loss_components(batch, epoch))
        means = self._run_epoch(self._steps, compute, key)
        return {("train_loss" if n == "loss" else n): v for n, v in means.items()}

    def close(self) -> None:
        """Free what the steps hold on the device (a CUDA graph and its memory pool): called when
        ``fit`` ends, so an actor that runs the next trial starts from released memory."""
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        self._train_batches = None  # the padded copy of the training split
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            release_cublas_workspaces()

    @torch.no_grad()
    def evaluate(self, split: Any, prefix: str) -> dict[str, float | None]:
        """The task's metrics on a split (accuracy and loss, or rank-k and mAP), named
        ``<prefix>_<metric>``; all None when there is no such split."""
        return self._evaluate(split, prefix, keep_outcomes=False)[0]

    @torch.no_grad()
    def _evaluate(self, split: Any, prefix: str, keep_outcomes: bool
                  ) -> tuple[dict[str, float | None], SampleOutcomes | None]:
        if split is None or len(split) == 0:
            return {f"{prefix}_{name}": None for name in self.task.entry.metric_names}, None
        self.learner.eval()
        outcomes = None
        if keep_outcomes:
            values, outcomes = self.task.evaluate_outcomes(self.learner, split,
                                                           self._eval_batches, self._autocast)
        else:
            values = self.task.evaluate(self.learner, split, self._eval_batches, self._autocast)
        return {f"{prefix}_{name}": value for name, value in values.items()}, outcomes

    def fit(self) -> RunState:
        """Train from the current state to the end of the budget; returns the run state."""
        try:
            with _cudnn_benchmark(self.execution.cudnn_benchmark and self.device.type == "cuda"):
                self._fit()
        finally:
            self.close()
        return self.state

    def _fit(self) -> None:
        self._run_init_stage()
        while self.state.epoch < self.schedule.epochs:
            epoch = self.state.epoch
            lr = self.optimizer.param_groups[0]["lr"]
            metrics: dict[str, Any] = {"epoch": epoch + 1, **self._train_epoch(epoch)}
            _check_finite(metrics, epoch + 1)
            self.scheduler.step()
            val_metrics, outcomes = self._evaluate(self.splits.val, "val", keep_outcomes=True)
            metrics.update(val_metrics)
            metrics.update(self.evaluate(self.splits.test, "test"))
            metrics["lr"] = lr
            self.learner.select(metrics)
            self.state.record(metrics, self.objective)
            if outcomes is not None:
                self.state.keep_outcomes(dataclasses.replace(outcomes, epoch=epoch + 1))
            if self.checkpoint_path is not None:
                self.save_checkpoint(self.checkpoint_path)
            report = EpochReport(epoch=epoch + 1, metrics=metrics, trainer=self)
            for callback in self.callbacks:
                callback(report)


@contextlib.contextmanager
def _cudnn_benchmark(on: bool) -> Iterator[None]:
    """cuDNN's algorithm search on while a run trains (torch's switch is process-wide: restored
    after, so the next run in a reused worker starts from the process's setting)."""
    if not on:
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _check_finite(metrics: dict[str, Any], epoch: int) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(
            f"the loss became NaN or infinite in epoch {epoch} ({', '.join(bad)}); lower lr or the "
            "loss weights (feature_weight, granularity weights), or raise the temperature.")
