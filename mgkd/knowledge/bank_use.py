"""Which runs use the teacher view bank, building it when knowledge is prepared and opening it when
a run starts (the rule itself: :mod:`mgkd.catalog.bank`; the file: :mod:`mgkd.knowledge.views`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mgkd.catalog.bank import BankChoice, bank_choice
from mgkd.config import ExperimentConfig
from mgkd.data import DatasetSpec, DataSplits
from mgkd.data.augment import Augmenter
from mgkd.knowledge.teacher import data_identity
from mgkd.knowledge.views import (BankLayout, BankMismatch, ViewBank, ViewBankKey, bank_key,
                                  ensure_bank, human_bytes, layout_of, open_bank)
from mgkd.methods import get_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedBank:
    """What knowledge preparation leaves for the runs: the bank's file, dtype and outputs (path
    None where none was built, ``note`` saying why)."""

    path: str | None = None
    dtype: str | None = None
    outputs: tuple[str, ...] = ()
    note: str = ""


def train_augmenter(spec: DatasetSpec) -> Augmenter:
    return Augmenter(spec, torch.device("cpu"), train=True)


def run_choice(config: ExperimentConfig, spec: DatasetSpec, count: int, embed_dim: int, *,
               passes: int | None) -> BankChoice:
    """The bank decision for a resolved ``config`` on a training split of ``count`` images."""
    view_count = train_augmenter(spec).view_count

    def size(dtype: str, outputs: tuple[str, ...]) -> int:
        key = ViewBankKey("", "", "", "", "", dtype, outputs)
        return layout_of(key, count, view_count or 0, spec.num_classes, embed_dim).nbytes

    return bank_choice(config.teacher_bank, config.teacher_bank_budget_gb, method=config.method,
                       method_outputs=get_method(config.method).teacher_outputs,
                       has_levels=bool(config.granularities), view_count=view_count,
                       dataset=config.dataset, size_bytes=size, passes=passes)


def _key(config: ExperimentConfig, teacher_hash: str, splits: DataSplits, dtype: str,
         outputs: tuple[str, ...]) -> ViewBankKey:
    return bank_key(teacher_hash, config.teacher, data_identity(config), splits.train,
                    train_augmenter(splits.spec), dtype, outputs)


def bank_root(config: ExperimentConfig) -> Path:
    return Path(config.cache_dir).expanduser() / "views"


def prepare_bank(runs: list[tuple[ExperimentConfig, int]], splits: DataSplits, teacher: nn.Module,
                 teacher_hash: str, device: torch.device,
                 progress: Callable[[str], None] | None = None) -> PreparedBank:
    """Build (or find) the bank the ``runs`` (resolved configs of one teacher, each with the
    teacher passes over the training set it stands for: epochs x trials) can use, once for all:
    the outputs any of them needs, in the first one's dtype. ``auto`` builds only when the
    passes of all runs it serves reach the views per image. Its size and build progress go
    through ``progress`` (default: logging)."""
    count, width = len(splits.train), int(teacher.embedding_dim)
    choices = [(config, passes, run_choice(config, splits.spec, count, width, passes=None))
               for config, passes in runs]
    using = [(c, p, choice) for c, p, choice in choices if choice.use]
    if not using:
        note = choices[0][2].reason if choices else "no run asked for the teacher view bank"
        log.info("teacher view bank: not built: %s", note)
        return PreparedBank(note=note)
    # the rule (mgkd.catalog.bank) once more, for the passes of all the runs the bank serves
    passes = sum(p for _, p, _ in using)
    config = using[0][0]
    first = run_choice(config, splits.spec, count, width, passes=passes)
    if not first.use:
        log.info("teacher view bank: not built: %s", first.reason)
        return PreparedBank(note=first.reason)
    dtype = first.dtype
    outputs = tuple(sorted({o for _, _, choice in using for o in choice.outputs}))
    views = train_augmenter(splits.spec).view_count or 0
    key = _key(config, teacher_hash, splits, dtype, outputs)
    layout = layout_of(key, count, views, splits.spec.num_classes, width)
    emit = progress or (lambda line: log.info("%s", line))
    embedding = f" + {layout.embed_dim} embedding" if layout.embed_dim else ""
    emit(f"teacher view bank: {count} images x {views} views x ({layout.classes} logits"
         f"{embedding}) x {dtype} = {human_bytes(layout.nbytes)}, for {passes} teacher "
         "pass(es) over the training set")
    path = ensure_bank(bank_root(config), key, teacher, splits.train, splits.spec, device, emit)
    return PreparedBank(str(path), dtype, outputs, first.reason)


def open_run_bank(config: ExperimentConfig, splits: DataSplits, prepared: PreparedBank,
                  teacher_hash: str, embed_dim: int, device: torch.device) -> ViewBank | None:
    """The bank this run reads its teacher outputs from, or None (the teacher runs online); one
    log line says which and why. A bank that fails its checks is never used."""
    choice = run_choice(config, splits.spec, len(splits.train), embed_dim, passes=None)
    if not choice.use:
        log.info("teacher view bank: not used: %s", choice.reason)
        return None
    if prepared.path is None:
        log.info("teacher view bank: not used: %s", prepared.note or "none was prepared")
        return None
    if prepared.dtype != choice.dtype or not set(choice.outputs) <= set(prepared.outputs):
        log.info("teacher view bank: not used: the prepared bank holds %s %s, this run needs %s %s;"
                 " the teacher runs online", prepared.dtype, "+".join(prepared.outputs),
                 choice.dtype, "+".join(choice.outputs))
        return None
    key = _key(config, teacher_hash, splits, prepared.dtype, prepared.outputs)
    views = train_augmenter(splits.spec).view_count or 0
    expected = layout_of(key, len(splits.train), views, splits.spec.num_classes, embed_dim)
    try:
        bank = open_bank(Path(prepared.path), key, expected)
    except BankMismatch as err:
        log.warning("teacher view bank: refused, the teacher runs online: %s", err)
        return None
    log.info("teacher view bank: %s (%s)", choice.reason, bank.path.name)
    return bank.to(device)


__all__ = ["BankLayout", "PreparedBank", "open_run_bank", "prepare_bank", "run_choice"]
