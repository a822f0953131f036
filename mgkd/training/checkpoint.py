"""Where a run stands (:class:`RunState`) and the checkpoint that continues it bit for bit: the
trained modules, the optimizer and scheduler, every random generator and the run state, written
and read as one mapping (``torch.save`` / the restricted ``safe_torch_load``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mgkd.catalog.objectives import Objective
from mgkd.models.legacy import upgrade_state
from mgkd.training.outcomes import SampleOutcomes

CHECKPOINT_FORMAT = 1


@dataclass
class RunState:
    """Where a run stands; ``best_value`` is the best objective value so far (``val_acc`` unless
    the run selects by another objective) and ``test_at_best`` the test counterpart then."""

    epoch: int = 0
    init_done: bool = False
    best_value: float | None = None
    best_epoch: int | None = None
    test_at_best: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # Per-sample validation outcomes (SampleOutcomes.to_dict) of the best and of the last epoch.
    best_outcomes: dict[str, Any] | None = None
    last_outcomes: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        """Also reads checkpoints written before runs could select by other objectives."""
        renamed = {"best_val_acc": "best_value", "test_acc_at_best_val": "test_at_best"}
        return cls(**{renamed.get(k, k): v for k, v in data.items()})

    def record(self, metrics: dict[str, Any], objective: Objective) -> None:
        """Take an epoch's ``metrics`` into the run: a new best when ``objective`` improved (ties
        keep the earlier epoch), and its running best added to ``metrics`` as ``best_<name>``."""
        value = metrics.get(objective.name)
        if value is not None and (self.best_value is None or value > self.best_value):
            self.best_value = value
            self.best_epoch = metrics["epoch"]
            self.test_at_best = metrics.get(objective.test_metric)
        metrics[objective.best_metric] = self.best_value
        self.epoch = metrics["epoch"]
        self.history.append(metrics)

    def keep_outcomes(self, outcomes: SampleOutcomes | None) -> None:
        """Take the per-sample outcomes of the epoch just ``record``-ed: the last epoch's, and the
        best epoch's when that epoch is the new best."""
        if outcomes is None:
            return
        self.last_outcomes = outcomes.to_dict()
        if self.best_epoch == outcomes.epoch:
            self.best_outcomes = self.last_outcomes


@dataclass
class Resumable:
    """Everything a checkpoint holds of a run besides the global random generators."""

    modules: nn.ModuleDict  # everything the learner checkpoints (trained or not)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data_rng: torch.Generator  # the batches' shuffling and augmentation

    def state_dict(self, run: RunState) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "modules": self.modules.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data_rng": self.data_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "run": dataclasses.asdict(run),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> RunState:
        """Restore everything ``state_dict`` saved; returns the run state it held."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        self.modules.load_state_dict(self._upgrade(state["modules"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data_rng.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return RunState.from_dict(state["run"])

    def _upgrade(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoints of earlier versions name zoo models' tensors ``stem.*``/``stages.*``:
        convert each checkpointed module's part positionally to today's names (a log line)."""
        out: dict[str, torch.Tensor] = {}
        for name, module in self.modules.items():
            prefix = f"{name}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            part = upgrade_state(part, module, source=f"checkpoint module '{name}'")
            out.update({prefix + k: v for k, v in part.items()})
        out.update({k: v for k, v in state.items()
                    if not any(k.startswith(f"{n}.") for n in self.modules)})
        return out
