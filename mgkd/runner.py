"""Standalone runs behind the command line: distillation / final training, teacher, head bank."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

from mgkd.catalog.methods import method_defaults
from mgkd.catalog.objectives import get_objective
from mgkd.config import ExperimentConfig, resolve, save_config
from mgkd.config.execution import ExecutionSettings, graphs_refusal
from mgkd.data import DataSplits, check_available, load_config_splits
from mgkd.distill.learner import final_metrics, make_trainer, reported_metrics
from mgkd.errors import ConfigError
from mgkd.io import atomic_write_text, file_sha256, safe_torch_load
from mgkd.knowledge.estimate import estimate_preparation_seconds
from mgkd.knowledge.prepare import head_bank, head_keys, prepare_knowledge
from mgkd.knowledge.teacher import (TeacherRecipe, load_teacher, save_teacher, teacher_path,
                                    train_teacher)
from mgkd.paths import sweep_run_dir_of, writable_dir
from mgkd.timing import format_duration
from mgkd.training.callbacks import (MetricsFile, ProgressLog, TensorBoardScalars, run_hparams,
                                     write_metrics)
from mgkd.training.checkpoint import RunState
from mgkd.training.engine import EpochCallback, resolve_device

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
STUDENT = "student.pt"
PEER_FILE = "peer{}.pt"  # a peer group's peers; student.pt is a copy of the best one
METRICS = "metrics.json"
TENSORBOARD_DIR = "tensorboard"


@dataclass
class RunResult:
    out_dir: Path
    state: RunState
    final: dict[str, Any]


def preflight(config: ExperimentConfig) -> None:
    """Cheap checks of everything a run will touch, before any training starts."""
    check_available(config.dataset, Path(config.data_dir).expanduser())
    device = resolve_device(config.device)
    refusal = graphs_refusal(config.cuda_graphs, on_gpu=device.type == "cuda",
                             capture_blocker=method_defaults(config.method).capture_blocker,
                             what=f"method {config.method}")
    if refusal:
        raise ConfigError(refusal)
    if config.teacher_checkpoint and not Path(config.teacher_checkpoint).expanduser().is_file():
        raise ConfigError(f"teacher_checkpoint: {config.teacher_checkpoint} does not exist; give an "
                          "existing file or null to train and cache a teacher.")
    for key, whose in (("student_init", "student's"), ("teacher_init", "teacher's")):
        path = getattr(config, key)
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"{key}: {path} does not exist; give an existing weights file for "
                              f"the {whose} backbone or null to start from random weights.")


def check_outputs(config: ExperimentConfig, out: Path) -> None:
    """``out`` and ``cache_dir`` can be written, and a run never writes into a sweep's run dir:
    checked before any training starts."""
    check_out_dir(out)
    if config.peers is not None:  # a peer group caches nothing
        return
    sweep = sweep_run_dir_of(config.cache_dir)
    if sweep is not None:  # reading a sweep's teacher and heads is fine; adding to them is not
        teacher_missing, heads_missing = _uncached(config)
        if teacher_missing or heads_missing:
            missing = "the teacher" if teacher_missing else f"{heads_missing} granularity head(s)"
            raise ConfigError(
                f"cache_dir: {config.cache_dir} lies inside the sweep run dir {sweep}, which lacks "
                f"{missing} for this config, and a run never writes there. Point cache_dir "
                "elsewhere, e.g. --set cache_dir=~/.cache/mgkd (the default).")
    writable_dir(config.cache_dir, "cache_dir", "point it at a directory you can write, e.g. "
                 "--set cache_dir=~/.cache/mgkd (teachers and granularity heads are cached there).")


def check_out_dir(out: Path) -> None:
    """``--out`` can be written and does not lie inside a sweep's run dir."""
    sweep = sweep_run_dir_of(out)
    if sweep is not None:
        raise ConfigError(f"--out: {out} lies inside the sweep run dir {sweep}; a run never writes "
                          "there. Choose a directory outside it, e.g. --out runs/final.")
    writable_dir(out, "--out", "choose another --out (a directory; it is created if missing).")


def _uncached(config: ExperimentConfig) -> tuple[bool, int]:
    """Whether ``config``'s teacher is missing from its cache, and how many of its heads are
    (neither for a peer group, which has no teacher)."""
    if config.peers is not None:
        return False, 0
    path = teacher_path(config)
    if not path.is_file():
        return True, len(head_keys(config, ""))
    bank = head_bank(config)
    return False, sum(not bank.has(k) for k in head_keys(config, file_sha256(path)))


def _check_resume_config(config: ExperimentConfig, saved_path: Path) -> None:
    saved = yaml.safe_load(saved_path.read_text())
    current = config.to_dict()
    # A key added after the run started is absent from its config.yaml: the run had its default.
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    changed = sorted(k for k in current if saved.get(k, defaults.get(k)) != current[k])
    if changed:
        raise ConfigError(f"--resume: the config differs from the one this run started with in "
                          f"{changed} ({saved_path}); resume with the same config or use a new --out.")


def _warn_of_knowledge_to_train(config: ExperimentConfig, splits: DataSplits) -> None:
    """Say up front when the run must train a teacher or heads before its own epochs, and about
    how long that takes here (a few steps timed): an exported config's full-training-set run
    cannot use the sweep's (they were trained on the sweep's training split), and that costs the
    teacher's whole schedule."""
    teacher_missing, heads_missing = _uncached(config)
    if not teacher_missing and not heads_missing:
        return
    what = [f"the teacher ({config.teacher_epochs} epochs)"] if teacher_missing else []
    if heads_missing:
        what.append(f"{heads_missing} granularity head(s) ({config.head_epochs} epochs)")
    seconds = estimate_preparation_seconds(
        TeacherRecipe.from_config(config), splits.to(resolve_device(config.device)),
        train_teacher=teacher_missing, head_epochs=config.head_epochs if heads_missing else 0)
    log.warning("this run first trains %s, about %s on this machine (measured from a few steps), "
                "before its own %d epochs; they are cached in %s for later runs. A config whose "
                "teacher and heads a sweep already trained reuses them with "
                "cache_dir=<the sweep's run dir>/cache.", " and ".join(what),
                format_duration(seconds), config.epochs, config.cache_dir)


def _trained_anything(out: Path) -> bool:
    """Whether ``out`` holds a run that finished an epoch (a checkpoint, or its results)."""
    return any((out / name).is_file() for name in (CHECKPOINT, STUDENT, METRICS))


def run_training(config: ExperimentConfig, out_dir: str | Path, *, resume: bool = False,
                 callbacks: list[EpochCallback] | None = None) -> RunResult:
    """Distil (or final-train) per ``config`` into ``out_dir``: config.yaml, metrics.json,
    TensorBoard events, checkpoint.pt (every epoch) and student.pt (final weights)."""
    out = Path(out_dir).expanduser()
    config = resolve(config)
    preflight(config)
    checkpoint, saved = out / CHECKPOINT, out / "config.yaml"
    if resume:
        # A run stopped while its teacher or heads trained has a config.yaml and no checkpoint
        # yet: it continues inside that training (the cache keeps its per-epoch progress).
        if not saved.is_file():
            raise ConfigError(f"--resume: {out} holds no run to continue (no checkpoint, no "
                              f"{saved.name}); start the run without --resume.")
        _check_resume_config(config, saved)
    elif _trained_anything(out):
        raise ConfigError(f"{out} already holds a run ({saved}); continue it with --resume or "
                          "choose another --out.")
    elif saved.is_file():
        # A run that ended before its first epoch (a bad teacher file, Ctrl-C while its teacher
        # trained) left its config.yaml only: the same command starts it over. Teacher and head
        # training keep their progress in the cache, so nothing is trained twice.
        log.info("%s holds a run that ended before its first epoch: starting it over", out)
        shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
    check_outputs(config, out)
    save_config(config, saved)
    splits = load_config_splits(config)
    knowledge = None
    if config.peers is None:  # a peer group trains from scratch: no teacher, no heads
        _warn_of_knowledge_to_train(config, splits)
        teacher_progress = [ProgressLog("teacher", config.teacher_epochs, config.task)]
        knowledge = prepare_knowledge(config, splits, teacher_callbacks=teacher_progress)

    board = TensorBoardScalars(out / TENSORBOARD_DIR, run_hparams(config.to_dict(), "mgkd train"),
                               reported_metrics(config.task, config.objective,
                                                len(config.peers or [])))
    summary = partial(final_metrics, objective=get_objective(config.objective))
    trainer = make_trainer(config, splits, knowledge, checkpoint_path=checkpoint, callbacks=[
        board, MetricsFile(out / METRICS, summary),
        ProgressLog(config.label, config.epochs, config.task), *(callbacks or [])])
    if trainer.resume_from_checkpoint():  # only with --resume: a checkpoint without it is refused
        log.info("resuming %s after epoch %d", out, trainer.state.epoch)
    try:
        state = trainer.fit()
    finally:
        board.close()
    final = summary(state)
    write_metrics(out / METRICS, state.history, final)
    objective = trainer.objective
    facts = {"epoch": state.epoch, "objective": objective.name,
             objective.best_metric: state.best_value,
             objective.test_metric: final[objective.test_metric]}
    modules, classes = trainer.learner.modules, splits.spec.num_classes
    if config.peers is None:
        save_student(modules["student"], config.student, classes, out / STUDENT, facts)
        return RunResult(out, state, final)
    # A peer group: every peer's weights, and the best peer's (its last epoch's) as student.pt,
    # so `mgkd noise / cka / transfer` and the report read a group's run as any other.
    best = int(final["best_peer"])
    for i, arch in enumerate(config.peers):
        save_student(modules[f"peer{i}"], arch, classes, out / PEER_FILE.format(i),
                     {**facts, "peer": i, objective.test_metric: final.get(f"test_acc_peer{i}")})
    save_student(modules[f"peer{best}"], config.peers[best], classes, out / STUDENT,
                 {**facts, "peer": best})
    return RunResult(out, state, final)


def save_student(model: torch.nn.Module, arch: str, num_classes: int, path: Path,
                 extra: dict[str, Any] | None = None) -> None:
    """The teacher file's form, ``{"model": state_dict, "arch", "num_classes", ...extra}``:
    RepDistiller's and mdistiller's evaluation scripts load a student trained here, and
    ``load_teacher`` reads it as a teacher."""
    save_teacher(model, arch, num_classes, path, extra)


def run_teacher(config: ExperimentConfig, out_dir: str | Path, *, resume: bool = False
                ) -> RunResult:
    """Train ``config.teacher`` for ``config.teacher_epochs`` into ``out_dir/teacher.pt``,
    checkpointing every epoch (``resume`` continues after the last finished one)."""
    out = Path(out_dir).expanduser()
    preflight(config)
    recipe = TeacherRecipe.from_config(config)
    checkpoint, saved = out / CHECKPOINT, out / "recipe.json"
    if resume:
        if not checkpoint.is_file():
            raise ConfigError(f"--resume: no checkpoint at {checkpoint}; start the teacher without "
                              "--resume.")
        if saved.is_file() and not recipe.matches(json.loads(saved.read_text())):
            raise ConfigError(f"--resume: the teacher in {out} was started with other settings "
                              f"({saved}); resume with the same arguments or use a new --out.")
    elif checkpoint.is_file() or (out / "teacher.pt").is_file():
        raise ConfigError(f"{out} already holds a teacher run ({checkpoint}); continue it with "
                          "--resume or choose another --out.")
    check_out_dir(out)
    splits = load_config_splits(config).to(resolve_device(config.device))
    atomic_write_text(saved, json.dumps(asdict(recipe), indent=1))
    board = TensorBoardScalars(out / TENSORBOARD_DIR)
    try:
        model, metrics = train_teacher(recipe, splits, checkpoint_path=checkpoint, callbacks=[
            board, ProgressLog(f"teacher {config.teacher}", recipe.epochs, splits.spec.task)],
            settings=ExecutionSettings.of(config))
    finally:
        board.close()
    save_teacher(model, recipe.arch, splits.spec.num_classes, out / "teacher.pt",
                 {"recipe": asdict(recipe), "metrics": metrics})
    history, objective = metrics["history"], get_objective(metrics["objective"])
    name, test, best = objective.name, objective.test_metric, objective.best_metric
    final = {"epochs": len(history), name: history[-1][name], test: history[-1][test],
             best: metrics[best]}
    write_metrics(out / METRICS, history, final)
    return RunResult(out, RunState(epoch=len(history), history=history), final)


def fill_head_bank(config: ExperimentConfig, levels: list[tuple[int, float]]) -> list[Path]:
    """Train (once) every head in ``levels`` for the config's teacher; returns the bank files."""
    preflight(config)
    if not config.teacher_checkpoint:
        raise ConfigError("heads: a teacher checkpoint is required (--teacher FILE).")
    writable_dir(config.cache_dir, "--cache-dir", "point it at a directory you can write, e.g. "
                 "--cache-dir ~/.cache/mgkd (the head bank lives under it).")
    device = resolve_device(config.device)
    splits: DataSplits = load_config_splits(config).to(device)
    path = Path(config.teacher_checkpoint).expanduser()
    teacher = load_teacher(path, config.teacher, splits.spec.num_classes, device)
    keys = head_keys(config, file_sha256(path), levels)
    bank = head_bank(config)
    trained = bank.ensure(teacher, keys, splits,
                          callbacks_for=lambda todo: [ProgressLog("heads", config.head_epochs)],
                          settings=ExecutionSettings.of(config))
    log.info("head bank %s: %d head(s) trained, %d already there", bank.root, len(trained),
             len(keys) - len(trained))
    return [bank.path(k) for k in keys]


def teacher_facts(path: str | Path) -> dict[str, Any]:
    """What one of our teacher checkpoints says about itself: ``arch``, and ``dataset`` /
    ``data_options`` when it records its recipe; empty for other checkpoints (RepDistiller's).
    Read through the restricted unpickler: a missing, unreadable or refused file is a
    ConfigError."""
    raw = safe_torch_load(path, "--teacher")
    if not isinstance(raw, dict):
        return {}
    facts: dict[str, Any] = {"arch": raw["arch"]} if isinstance(raw.get("arch"), str) else {}
    recipe = raw.get("recipe")
    if isinstance(recipe, dict) and isinstance(recipe.get("data"), str):
        data = json.loads(recipe["data"])
        facts.update(dataset=data.get("dataset"), data_options=data.get("options") or {})
    return facts
