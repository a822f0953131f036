"""The teacher's knowledge a distillation run needs, prepared once: the frozen teacher's weights,
its trained granularity heads (trained and cached the first time, loaded ever after), as CPU
tensors handed to every run — through Ray's object store in a sweep — and, where the runs can use
it, the teacher view bank's file (built once; every run maps it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mgkd.config import ExperimentConfig
from mgkd.config.execution import ExecutionSettings
from mgkd.data import DataSplits
from mgkd.io import file_sha256
from mgkd.knowledge.bank_use import PreparedBank, prepare_bank
from mgkd.knowledge.heads import HeadBank, HeadKey, TeacherHead
from mgkd.knowledge.teacher import data_identity, ensure_teacher, load_teacher
from mgkd.models import create_model
from mgkd.training.callbacks import ProgressLog
from mgkd.training.engine import EpochCallback, resolve_device

Level = tuple[int, float]  # a head's (dim, temperature)


def head_levels(config: ExperimentConfig) -> list[Level]:
    """The (dim, temperature) of every granularity level of a resolved config (none in plain)."""
    return [(g.dim, g.temperature) for g in config.granularities]


def head_keys(config: ExperimentConfig, teacher_hash: str,
              levels: list[Level] | None = None) -> list[HeadKey]:
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
    heads: dict[Level, dict[str, torch.Tensor]] = field(default_factory=dict)
    bank: PreparedBank = field(default_factory=PreparedBank)  # the teacher view bank, if built

    @classmethod
    def untrained(cls, config: ExperimentConfig, num_classes: int, seed: int = 0) -> "Knowledge":
        """A randomly initialised teacher with the heads ``config`` (resolved) asks for: enough
        to run every term of a distillation step (tests and benchmarks). Leaves the global RNG
        as it was."""
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
            raise KeyError(f"head (dim {dim}, T {temperature:g}) was not prepared; "
                           f"have {have}") from None


def prepare_knowledge(config: ExperimentConfig, splits: DataSplits, *,
                      extra_levels: list[Level] | None = None,
                      teacher_callbacks: list[EpochCallback] | None = None,
                      progress: Callable[[str], None] | None = None,
                      bank_runs: list[tuple[ExperimentConfig, int]] | None = None) -> Knowledge:
    """Ensure the teacher and every head the resolved ``config`` (plus ``extra_levels``) needs
    exist — training the missing ones once — and load them; build the teacher view bank the
    runs can use (``bank_runs``: resolved configs with the teacher passes each stands for;
    default: this one run, its epochs). Teacher and head training and the bank's build print
    progress lines (elapsed, ETA) through ``progress`` (default: logging);
    ``teacher_callbacks`` replace the teacher's."""
    if teacher_callbacks is None:
        teacher_callbacks = [ProgressLog(f"teacher {config.teacher}", config.teacher_epochs,
                                         splits.spec.task, emit=progress)]
    device = resolve_device(config.device)
    splits = splits.to(device)  # once: teacher and head training both read it there
    path = ensure_teacher(config, splits, callbacks=teacher_callbacks)
    teacher = load_teacher(path, config.teacher, splits.spec.num_classes, device)
    teacher_hash = file_sha256(path)
    levels = list(dict.fromkeys(head_levels(config) + list(extra_levels or [])))
    keys = head_keys(config, teacher_hash, levels)
    bank = head_bank(config)
    if keys:
        bank.ensure(teacher, keys, splits, settings=ExecutionSettings.of(config),
                    callbacks_for=lambda todo: [ProgressLog(
                        f"{config.teacher} heads ({len(todo)})", config.head_epochs,
                        emit=progress)])
    width = teacher.embedding_dim
    heads = {(k.dim, k.temperature): bank.load(k, width, splits.spec.num_classes).state_dict()
             for k in keys}
    runs = bank_runs if bank_runs is not None else [(config, config.epochs)]
    bank = prepare_bank(runs, splits, teacher, teacher_hash, device, progress=progress)
    state = {k: v.detach().cpu() for k, v in teacher.state_dict().items()}
    return Knowledge(config.teacher, str(path), teacher_hash, state, heads, bank)
