"""Reading confirmation results (``mgkd best --confirm``): ``confirm/<study key>.json`` holds the top
configs of a study re-run with further seeds, ranked by the mean of the sweep's objective. The file
keeps its first key names for every objective: ``val_accs`` / ``mean_val_acc`` / ``std_val_acc`` hold
the objective's values (e.g. val_map) and ``test_accs`` its test metric's (``search.confirm``)."""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.records import finite
from analysis.rundir import CONFIRM_DIR

log = logging.getLogger(__name__)


@dataclass
class Confirmation:
    """One re-run config: its objective (and test metric) over several seeds."""

    trial_number: int
    params: dict[str, Any]
    values: list[float]  # the objective per seed (the file's val_accs)
    test_values: list[float]  # its test metric per seed (test_accs)
    mean_value: float
    std_value: float
    seeds: list[Any] = field(default_factory=list)

    @property
    def mean_test_value(self) -> float | None:
        return statistics.fmean(self.test_values) if self.test_values else None


def _numbers(values: Any) -> list[float]:
    return [v for v in (finite(x) for x in values or []) if v is not None]


def _entry(data: Any, seeds: list[Any]) -> Confirmation | None:
    if not isinstance(data, dict) or not isinstance(data.get("trial_number"), int):
        return None
    values = _numbers(data.get("val_accs"))
    mean = finite(data.get("mean_val_acc"))
    if mean is None and values:
        mean = statistics.fmean(values)
    if mean is None:
        return None
    std = finite(data.get("std_val_acc"))
    if std is None:
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return Confirmation(trial_number=data["trial_number"], params=dict(data.get("params") or {}),
                        values=values, test_values=_numbers(data.get("test_accs")),
                        mean_value=mean, std_value=std,
                        seeds=list(data["seeds"] if isinstance(data.get("seeds"), list) else seeds))


def read_confirmations(run_dir: str | Path, notes: list[str] | None = None
                       ) -> dict[str, dict[str, Any]]:
    """The confirmation files of a run dir as ``{study key: the file's JSON}``, unreadable files
    left out (and described in ``notes`` when given)."""
    notes = [] if notes is None else notes
    folder = Path(run_dir) / CONFIRM_DIR
    found: dict[str, dict[str, Any]] = {}
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            notes.append(f"{CONFIRM_DIR}/{file.name} is not valid JSON ({err}); its confirmation "
                         "is ignored.")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            notes.append(f"{CONFIRM_DIR}/{file.name} has no list of entries; ignored.")
            continue
        found[str(data.get("study") or file.stem)] = data
    return found


def confirmed_ranking(data: dict[str, Any]) -> list[Confirmation]:
    """A confirmation file's valid entries, best mean objective first (ties: the earlier trial)."""
    seeds = data.get("seeds") if isinstance(data.get("seeds"), list) else []
    entries = [e for e in (_entry(item, seeds) for item in data.get("entries", [])) if e]
    return sorted(entries, key=lambda e: (-e.mean_value, e.trial_number))
