"""Per-epoch callbacks for standalone runs: progress lines, TensorBoard scalars, metrics.json."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from mgkd.engine import EpochReport
from mgkd.io import atomic_write_text

log = logging.getLogger("mgkd.progress")


class ProgressLog:
    """One log line per epoch: epoch, loss, accuracies, learning rate and time."""

    def __init__(self, label: str, total_epochs: int):
        self.label = label
        self.total = total_epochs
        self.started = time.perf_counter()

    def __call__(self, report: EpochReport) -> None:
        m = report.metrics
        parts = [f"{self.label} epoch {report.epoch}/{self.total}",
                 f"loss {m['train_loss']:.4f}"]
        for key in ("val_acc", "test_acc"):
            if m.get(key) is not None:
                parts.append(f"{key} {m[key]:.2f}")
        parts.append(f"lr {m['lr']:.4g}")
        parts.append(f"{time.perf_counter() - self.started:.1f}s")
        log.info("  ".join(parts))


class TensorBoardScalars:
    """Every numeric metric as a scalar under its own name, step = epoch."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # imported only when used
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def __call__(self, report: EpochReport) -> None:
        for name, value in report.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "epoch":
                self.writer.add_scalar(name, value, report.epoch)
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
