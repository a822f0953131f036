"""Standalone runs behind the command line: distillation / final training, teacher, head bank."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from mgkd.callbacks import MetricsFile, ProgressLog, TensorBoardScalars, write_metrics
from mgkd.config import ExperimentConfig, resolve, save_config
from mgkd.data import DataSplits, check_available
from mgkd.distill import (final_metrics, head_bank, head_keys, load_config_splits, make_trainer,
                          prepare_knowledge)
from mgkd.engine import EpochCallback, RunState, resolve_device
from mgkd.errors import ConfigError
from mgkd.io import atomic_torch_save, file_sha256, safe_torch_load
from mgkd.teacher import TeacherRecipe, load_teacher, save_teacher, train_teacher

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
STUDENT = "student.pt"


@dataclass
class RunResult:
    out_dir: Path
    state: RunState
    final: dict[str, Any]


def preflight(config: ExperimentConfig) -> None:
    """Cheap checks of everything a run will touch, before any training starts."""
    check_available(config.dataset, Path(config.data_dir).expanduser())
    resolve_device(config.device)
    if config.teacher_checkpoint and not Path(config.teacher_checkpoint).expanduser().is_file():
        raise ConfigError(f"teacher_checkpoint: {config.teacher_checkpoint} does not exist; give an "
                          "existing file or null to train and cache a teacher.")


def _check_resume_config(config: ExperimentConfig, saved_path: Path) -> None:
    saved = yaml.safe_load(saved_path.read_text())
    current = config.to_dict()
    changed = sorted(k for k in current if saved.get(k) != current[k])
    if changed:
        raise ConfigError(f"--resume: the config differs from the one this run started with in "
                          f"{changed} ({saved_path}); resume with the same config or use a new --out.")


def run_training(config: ExperimentConfig, out_dir: str | Path, *, resume: bool = False,
                 callbacks: list[EpochCallback] | None = None) -> RunResult:
    """Distil (or final-train) per ``config`` into ``out_dir``: config.yaml, metrics.json,
    TensorBoard events, checkpoint.pt (every epoch) and student.pt (final weights)."""
    out = Path(out_dir)
    config = resolve(config)
    preflight(config)
    checkpoint = out / CHECKPOINT
    if resume:
        if not checkpoint.is_file():
            raise ConfigError(f"--resume: no checkpoint at {checkpoint}; start the run without "
                              "--resume.")
        _check_resume_config(config, out / "config.yaml")
    elif checkpoint.is_file():
        raise ConfigError(f"{out} already holds a run ({checkpoint}); continue it with --resume or "
                          "choose another --out.")
    splits = load_config_splits(config)
    teacher_progress = [ProgressLog("teacher", config.teacher_epochs)]
    knowledge = prepare_knowledge(config, splits, teacher_callbacks=teacher_progress)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")

    board = TensorBoardScalars(out / "tensorboard")
    trainer = make_trainer(config, splits, knowledge, checkpoint_path=checkpoint, callbacks=[
        board, MetricsFile(out / "metrics.json", final_metrics),
        ProgressLog(f"{config.teacher}->{config.student}", config.epochs), *(callbacks or [])])
    if resume:
        trainer.load_checkpoint(checkpoint)
        log.info("resuming %s after epoch %d", out, trainer.state.epoch)
    try:
        state = trainer.fit()
    finally:
        board.close()
    final = final_metrics(state)
    write_metrics(out / "metrics.json", state.history, final)
    student = trainer.task.modules["student"]
    save_student(student, config.student, splits.spec.num_classes, out / STUDENT,
                 {"epoch": state.epoch, "best_val_acc": state.best_val_acc,
                  "test_acc": final["test_acc"]})
    return RunResult(out, state, final)


def save_student(model: torch.nn.Module, arch: str, num_classes: int, path: Path,
                 extra: dict[str, Any] | None = None) -> None:
    """``{"model": state_dict, "arch", "num_classes", ...extra}``: RepDistiller's and mdistiller's
    checkpoint form, so their evaluation scripts load a student trained here."""
    atomic_torch_save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "arch": arch, "num_classes": num_classes, **(extra or {})}, path)


def run_teacher(config: ExperimentConfig, out_dir: str | Path) -> RunResult:
    """Train ``config.teacher`` for ``config.teacher_epochs`` into ``out_dir/teacher.pt``."""
    out = Path(out_dir)
    preflight(config)
    splits = load_config_splits(config).to(resolve_device(config.device))
    recipe = TeacherRecipe.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    board = TensorBoardScalars(out / "tensorboard")
    try:
        model, metrics = train_teacher(recipe, splits, callbacks=[
            board, ProgressLog(f"teacher {config.teacher}", recipe.epochs)])
    finally:
        board.close()
    save_teacher(model, recipe.arch, splits.spec.num_classes, out / "teacher.pt",
                 {"metrics": metrics})
    history = metrics["history"]
    final = {"epochs": len(history), "val_acc": history[-1]["val_acc"],
             "test_acc": history[-1]["test_acc"], "best_val_acc": metrics["best_val_acc"]}
    write_metrics(out / "metrics.json", history, final)
    return RunResult(out, RunState(epoch=len(history), history=history), final)


def fill_head_bank(config: ExperimentConfig, levels: list[tuple[int, float]]) -> list[Path]:
    """Train (once) every head in ``levels`` for the config's teacher; returns the bank files."""
    preflight(config)
    if not config.teacher_checkpoint:
        raise ConfigError("heads: a teacher checkpoint is required (--teacher FILE).")
    device = resolve_device(config.device)
    splits: DataSplits = load_config_splits(config).to(device)
    path = Path(config.teacher_checkpoint).expanduser()
    teacher = load_teacher(path, config.teacher, splits.spec.num_classes, device)
    keys = head_keys(config, file_sha256(path), levels)
    bank = head_bank(config)
    trained = bank.ensure(teacher, keys, splits,
                          callbacks_for=lambda todo: [ProgressLog("heads", config.head_epochs)])
    log.info("head bank %s: %d head(s) trained, %d already there", bank.root, len(trained),
             len(keys) - len(trained))
    return [bank.path(k) for k in keys]


def teacher_arch_of(path: str | Path) -> str | None:
    """The architecture stored in one of our teacher checkpoints, if it says. Read through the
    restricted unpickler: a missing, unreadable or refused file is a ConfigError."""
    raw = safe_torch_load(path, "--teacher")
    arch = raw.get("arch") if isinstance(raw, dict) else None
    return arch if isinstance(arch, str) else None
