"""Per-epoch callbacks for standalone runs: progress lines, TensorBoard scalars, metrics.json."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from mgkd.catalog.tasks import CLASSIFICATION, task_entry
from mgkd.config.sweep import config_study_key
from mgkd.io import atomic_write_text
from mgkd.timing import elapsed_and_eta
from mgkd.training.engine import EpochReport

log = logging.getLogger("mgkd.progress")

# Ray Tune's TensorBoard logger names a trial's metric ``ray/tune/<name>`` and its hparams after the
# trial's flattened config ({"study", "trial_number", "params": ..., "experiment": ...}).
TAG_PREFIX = "ray/tune/"
OUTCOME = "outcome"  # an hparam saying how a run ended: complete, pruned (ASHA), errored, final run


class ProgressLog:
    """One line per epoch: epoch, loss, accuracies, learning rate, elapsed time and an ETA (at
    the pace of the epochs this process ran; a resumed run counts from where it resumed).
    ``emit`` takes each line (default: this module's logger, at INFO)."""

    def __init__(self, label: str, total_epochs: int, task: str = CLASSIFICATION,
                 emit: Callable[[str], None] | None = None):
        self.label = label
        self.total = total_epochs
        self.shown = task_entry(task).shown_metrics
        self.emit = emit or log.info
        self.started = time.perf_counter()
        self._first_epoch: int | None = None  # the first epoch this process ran

    def __call__(self, report: EpochReport) -> None:
        m = report.metrics
        if self._first_epoch is None:
            self._first_epoch = report.epoch
        parts = [f"{self.label} epoch {report.epoch}/{self.total}",
                 f"loss {m['train_loss']:.4f}"]
        for key in self.shown:
            if m.get(key) is not None:
                parts.append(f"{key} {m[key]:.2f}")
        parts.append(f"lr {m['lr']:.4g}")
        ran = report.epoch - self._first_epoch + 1
        parts.append(elapsed_and_eta(time.perf_counter() - self.started, ran,
                                     self.total - self._first_epoch + 1))
        self.emit("  ".join(parts))


def run_hparams(config: dict[str, Any], outcome: str) -> dict[str, Any]:
    """A standalone run's hparams under the names a sweep trial's carry: ``study`` and
    ``experiment/<key>`` for every scalar config key, plus ``outcome``."""
    study = config_study_key(config)
    out: dict[str, Any] = {"study": study, OUTCOME: outcome}
    for key, value in config.items():
        if isinstance(value, (bool, int, float, str)):
            out[f"experiment/{key}"] = value
    return out


class TensorBoardScalars:
    """Every numeric metric as a scalar, step = epoch, under the tag a sweep trial's metric has
    (``ray/tune/<name>``); with ``hparams`` also the HPARAMS entry (naming the ``reported``
    metrics), so a run and the trials of its sweep compare side by side in one TensorBoard."""

    def __init__(self, log_dir: Path, hparams: dict[str, Any] | None = None,
                 reported: tuple[str, ...] = ()):
        from torch.utils.tensorboard import SummaryWriter  # imported only when used
        self.writer = SummaryWriter(log_dir=str(log_dir))
        if hparams:
            self._write_hparams(hparams, reported)

    def _write_hparams(self, hparams: dict[str, Any], reported: tuple[str, ...]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries
        metrics = {f"{TAG_PREFIX}{name}": 0.0 for name in reported if name != "epoch"}
        for summary in hparams_summaries(hparams, metrics):  # names only; values are the scalars
            self.writer.file_writer.add_summary(summary)

    def __call__(self, report: EpochReport) -> None:
        for name, value in report.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{TAG_PREFIX}{name}", value, report.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MetricsFile:
    """``metrics.json`` rewritten atomically after every epoch: ``history`` and ``final``."""

    def __init__(self, path: Path, summary: Callable[[Any], dict[str, Any]]):
        self.path = path
        self.summary = summary

    def __call__(self, report: EpochReport) -> None:
        state = report.trainer.state
        write_metrics(self.path, state.history, self.summary(state))


def write_metrics(path: Path, history: list[dict[str, Any]], final: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps({"history": history, "final": final}, indent=1))
