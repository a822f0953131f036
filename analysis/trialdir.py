"""Reading one Ray trial dir from its files: params.json, result.json (or progress.csv) and the
error file, tolerating the damage an interrupted or copied sweep leaves."""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.rundir import parse_trial_dir_name

log = logging.getLogger(__name__)
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.csv"
PARAMS_FILE = "params.json"
ERROR_FILES = ("error.txt", "error.pkl")
# Ray's bookkeeping in each result line: dropped, the analysis keeps the metrics.
_RAY_FIELDS = frozenset({"config", "node", "node_ip", "hostname", "pid", "date", "done",
                         "checkpoint_dir_name", "should_checkpoint", "trial_id", "timestamp",
                         "training_iteration", "iterations_since_restore", "time_since_restore"})
_ERROR_CHARS = 400


@dataclass
class TrialDir:
    """What one trial dir says about its trial."""

    path: Path
    study: str | None
    trial_number: int | None
    ray_trial_id: str | None
    params: dict[str, Any] = field(default_factory=dict)
    experiment: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _read_params(path: Path, out: TrialDir) -> None:
    file = path / PARAMS_FILE
    if not file.is_file():
        out.notes.append(f"trial dir {path.name} has no {PARAMS_FILE}; its trial is identified by "
                         "the dir's name.")
        return
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        out.notes.append(f"trial dir {path.name}: {PARAMS_FILE} is not valid JSON ({err}); it is "
                         "identified by the dir's name.")
        return
    if not isinstance(data, dict):
        out.notes.append(f"trial dir {path.name}: {PARAMS_FILE} is not a mapping; ignored.")
        return
    if isinstance(data.get("study"), str):
        out.study = data["study"]
    if isinstance(data.get("trial_number"), int):
        out.trial_number = data["trial_number"]
    if isinstance(data.get("params"), dict):
        out.params = dict(data["params"])
    if isinstance(data.get("experiment"), dict):
        out.experiment = data["experiment"]


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _RAY_FIELDS}


def _parse_lines(path: Path, text: str, notes: list[str]) -> list[dict[str, Any]]:
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    records = []
    for position, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if position == len(lines) - 1:
                notes.append(f"trial dir {path.name}: the last line of {RESULT_FILE} is truncated "
                             "(cut off mid-write: the trial was killed, or is writing it now); its "
                             f"{len(records)} complete line(s) are used.")
            else:
                notes.append(f"trial dir {path.name}: line {number} of {RESULT_FILE} is not valid "
                             "JSON; skipped.")
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), (int, float)):
            records.append(_clean(record))
    return records


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text if text else None


def _read_progress(path: Path) -> list[dict[str, Any]]:
    with open(path / PROGRESS_FILE, newline="") as handle:
        rows = [{k: _number(v) for k, v in row.items() if k and k not in _RAY_FIELDS}
                for row in csv.DictReader(handle)]
    return [row for row in rows if isinstance(row.get("epoch"), (int, float))]


def _dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per epoch, the last reported: a worker resumed from a checkpoint reports the
    epochs after the checkpoint again, and the later report is the one the trial went on from."""
    by_epoch = {int(r["epoch"]): {**r, "epoch": int(r["epoch"])} for r in records}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _read_history(path: Path, out: TrialDir) -> None:
    if (path / RESULT_FILE).is_file():
        text = (path / RESULT_FILE).read_text(errors="replace")
        out.history = _dedupe(_parse_lines(path, text, out.notes))
    elif (path / PROGRESS_FILE).is_file():
        out.notes.append(f"trial dir {path.name} has no {RESULT_FILE}; its curve is read from "
                         f"{PROGRESS_FILE}.")
        try:
            out.history = _dedupe(_read_progress(path))
        except (csv.Error, UnicodeDecodeError) as err:
            out.notes.append(f"trial dir {path.name}: {PROGRESS_FILE} is unreadable ({err}).")


def _read_error(path: Path) -> str | None:
    text_file = path / ERROR_FILES[0]
    if text_file.is_file():
        lines = [line.strip() for line in text_file.read_text(errors="replace").splitlines()
                 if line.strip()]
        return (lines[-1] if lines else "error (empty error.txt)")[:_ERROR_CHARS]
    if (path / ERROR_FILES[1]).is_file():
        return "error (details only in error.pkl, which needs Ray to read)"
    return None


def read_trial_dir(path: Path) -> TrialDir:
    """Read a trial dir; anything missing or damaged becomes a note, never an exception."""
    parsed = parse_trial_dir_name(path.name)
    out = TrialDir(path, *(parsed if parsed else (None, None, None)))
    _read_params(path, out)
    if out.study is not None and out.trial_number is not None:
        prefix = f"{out.study}_{out.trial_number:03d}_"
        if path.name.startswith(prefix):
            out.ray_trial_id = path.name[len(prefix):]
    _read_history(path, out)
    out.error = _read_error(path)
    return out
