"""What the Trainer trains: a :class:`Learner` — a teacher on its own, a teacher's granularity
heads, or a student distilled from a teacher.

A learner owns its modules (everything checkpointed), says what one training step computes (its
named loss terms) and what a held-out batch shows: the logits of its classifier(s) and its
retrieval embedding. How those are scored is the task's business (:mod:`mgkd.training.tasks`):
accuracy and cross-entropy for classification, rank-k and mAP for person re-ID.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mgkd.data import Batch


@dataclass
class InitStage:
    """A warm-up stage some KD methods run before the main training (ab, ft, fsp)."""

    epochs: int
    parameters: list[nn.Parameter]
    loss: Callable[[Batch], torch.Tensor]


class Learner:
    """Base class. A subclass sets ``modules`` and implements ``loss_components`` and
    ``eval_logits`` (and ``embed`` when it is evaluated on a re-ID split)."""

    modules: nn.ModuleDict  # everything whose state is checkpointed (trained or not)
    # Each classifier of ``eval_logits`` is scored on its own (a peer group), not their mean.
    separate_classifiers: ClassVar[bool] = False
    # whether training batches must carry their view numbers (the teacher view bank reads them)
    reads_views: bool = False

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.modules.parameters() if p.requires_grad]

    def optimizer_groups(self) -> list[Any]:
        """What the optimizer trains: parameters, or parameter groups (dicts with their own
        ``lr``) where parts of the learner learn at different rates."""
        return self.trainable_parameters()

    def select(self, metrics: dict[str, Any]) -> None:
        """Complete an epoch's evaluated ``metrics`` in place before they are recorded (a peer
        group names its best peer there); nothing by default."""

    def train(self) -> None:
        self.modules.train()

    def eval(self) -> None:
        self.modules.eval()

    def init_stage(self) -> InitStage | None:
        """A stage to run before the main training (None: there is none)."""
        return None

    def step_constants(self, epoch: int) -> Hashable:
        """Python numbers one step of ``epoch`` bakes in besides the learning rate (e.g. DKD's
        warm-up factor); a recorded CUDA graph is recorded again when they change. Only asked
        when steps run as CUDA graphs."""
        return ()

    def loss_components(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Named loss terms for one batch; ``"loss"`` is the total that is back-propagated."""
        raise NotImplementedError

    def eval_logits(self, batch: Batch) -> list[torch.Tensor]:
        """The class logits of each classifier the learner trains, on an evaluation batch (a
        classification split scores their mean)."""
        raise NotImplementedError

    def embed(self, batch: Batch) -> torch.Tensor:
        """The retrieval embedding of an evaluation batch (what a re-ID split ranks by)."""
        raise NotImplementedError(f"{type(self).__name__} has no retrieval embedding")
