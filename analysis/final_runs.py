"""Final runs (``mgkd train`` out dirs) for the report: their test accuracy as ``metrics.json``
records it, and the model analyses of :mod:`mgkd.probe` on their ``student.pt`` — prediction
noise and ECE on the test split, linear CKA against the teacher they were distilled from.

What cannot be computed (no ``student.pt``, the teacher file gone from the cache, the data set
missing on this machine) becomes a note on that run; the rest of the report is still written."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgkd.config import ExperimentConfig, load_config
from mgkd.errors import MgkdError

log = logging.getLogger(__name__)
DEFAULT_CKA_SAMPLES = 500


@dataclass
class FinalRun:
    """One ``mgkd train`` out dir and what the analyses found (None where they could not run)."""

    path: Path
    config: ExperimentConfig | None
    final: dict[str, Any]
    noise: Any = None  # mgkd.probe.noise.NoiseReport
    cka: Any = None  # mgkd.probe.runs.CkaResult
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.config is None:
            return self.path.name
        c = self.config
        if c.peers is not None:
            return f"{c.label} {c.mode}"
        return f"{c.teacher}→{c.student} {c.method} {c.mode}"


def _final_metrics(path: Path, notes: list[str]) -> dict[str, Any]:
    metrics = path / "metrics.json"
    try:
        return json.loads(metrics.read_text()).get("final") or {}
    except (OSError, ValueError, AttributeError) as err:
        notes.append(f"{metrics} unreadable ({type(err).__name__}): no recorded test accuracy")
        return {}


def read_final_run(path: str | Path, *, device: Any = "cpu",
                   cka_samples: int = DEFAULT_CKA_SAMPLES) -> FinalRun:
    """Read one final run dir and analyse its ``student.pt``."""
    from mgkd.knowledge.teacher import teacher_path
    from mgkd.probe.runs import cka_report, noise_report

    path = Path(path).expanduser()
    notes: list[str] = []
    try:
        config = load_config(path / "config.yaml")
    except MgkdError as err:
        return FinalRun(path, None, {}, notes=[f"{path}: not an `mgkd train` out dir ({err})"])
    run = FinalRun(path, config, _final_metrics(path, notes), notes=notes)
    student = path / "student.pt"
    if not student.is_file():
        notes.append(f"{student} missing (the run has not finished): no noise or CKA")
        return run
    try:
        run.noise = noise_report(student, data_dir=config.data_dir, device=device)
    except MgkdError as err:
        notes.append(f"prediction noise not computed: {err}")
    if config.peers is not None:
        notes.append("a peer group has no teacher: no CKA")
        return run
    teacher = teacher_path(config)
    if not teacher.is_file():
        notes.append(f"teacher file {teacher} not found (cache_dir {config.cache_dir} on another "
                     "machine?): no CKA")
        return run
    try:
        run.cka = cka_report(teacher, student, teacher_arch=config.teacher,
                             data_dir=config.data_dir, samples=cka_samples, device=device)
    except MgkdError as err:
        notes.append(f"CKA not computed: {err}")
    return run
