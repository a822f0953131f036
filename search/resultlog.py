"""Ray's per-trial result files (``result.json``, ``progress.csv``) that keep every epoch's record
when a trial is restored.

Ray writes a trial's results into the driver's staging copy of the trial dir and syncs that copy to
the run dir every so often. When a trial restarts from a checkpoint (a killed worker, a resumed
sweep), Ray's loggers first copy the run dir's file over the staging one. That copy can be older
than the staging file — it is only as fresh as the last sync, which may predate the trial's first
epochs — so the records written since the last sync vanished: a restored trial's ``result.json``
then held only the epochs after its checkpoint. ``analysis``, ``mgkd best`` and the report read
those records.

:class:`KeepEveryRecord` replaces that copy: it keeps whichever of the two files holds more
records and drops only the records after the checkpoint the trial restarts from, since the trial
reports those epochs again. Every epoch is then in the file exactly once.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Callable

import pyarrow.fs
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from mgkd.io import atomic_write_text

log = logging.getLogger(__name__)
ITERATION = "training_iteration"  # what Ray numbers a trial's reports by


def _json_records(text: str) -> tuple[str, list[tuple[int | None, str]]]:
    """``result.json``: no header; one JSON record per line."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            iteration = json.loads(line).get(ITERATION)
        except (ValueError, AttributeError):  # a line cut off by a killed driver
            iteration = None
        records.append((iteration if isinstance(iteration, int) else None, line))
    return "", records


def _csv_records(text: str) -> tuple[str, list[tuple[int | None, str]]]:
    """``progress.csv``: a header line, then one row per record."""
    lines = text.splitlines()
    if not lines:
        return "", []
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]
    names = next(csv.reader([header]))
    column = names.index(ITERATION) if ITERATION in names else None
    records = []
    for row in rows:
        values = next(csv.reader([row]), [])
        try:
            iteration = int(values[column]) if column is not None else None
        except (IndexError, ValueError):
            iteration = None
        records.append((iteration, row))
    return header, records


PARSERS: dict[str, Callable[[str], tuple[str, list[tuple[int | None, str]]]]] = {
    JsonLoggerCallback._SAVED_FILE_TEMPLATES[0]: _json_records,
    CSVLoggerCallback._SAVED_FILE_TEMPLATES[0]: _csv_records,
}


def _read_local(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _read_storage(trial: Any, file_name: str) -> str:
    path = Path(trial.storage.trial_fs_path, file_name).as_posix()
    filesystem = trial.storage.storage_filesystem
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode()
    except (FileNotFoundError, OSError):
        return ""


def _same_file(trial: Any, local: Path, file_name: str) -> bool:
    if not isinstance(trial.storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return False
    stored = Path(trial.storage.trial_fs_path, file_name)
    return local.exists() and stored.exists() and local.samefile(stored)


def checkpoint_iteration(trial: Any) -> int:
    """The report number of the checkpoint a trial (re)starts from; 0 without one."""
    result = trial.latest_checkpoint_result
    metrics = getattr(result, "metrics", None) or {}
    value = metrics.get(ITERATION)
    return int(value) if isinstance(value, int) else 0


def merged_records(file_name: str, local_text: str, stored_text: str, keep_until: int) -> str:
    """The file a restarting trial continues: the copy with more records (the local one on a
    tie), without the records after report ``keep_until``. Unnumbered lines (a torn last line)
    are dropped with them."""
    parse = PARSERS[file_name]
    local, stored = parse(local_text), parse(stored_text)
    header, records = local if len(local[1]) >= len(stored[1]) else stored
    kept = [line for iteration, line in records if iteration is not None and iteration <= keep_until]
    if not kept:
        return ""
    return "".join(f"{line}\n" for line in ([header] if header else []) + kept)


class KeepEveryRecord:
    """Mixed in before one of Ray's file loggers: restoring a trial keeps every record up to its
    checkpoint (see the module's docstring) instead of copying the run dir's file over the
    staging one."""

    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        local = Path(trial.local_path, file_name)
        local_text = _read_local(local)
        stored_text = "" if _same_file(trial, local, file_name) else _read_storage(trial, file_name)
        until = checkpoint_iteration(trial)
        text = merged_records(file_name, local_text, stored_text, until)
        if text == local_text:
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(local, text)
        log.debug("%s of trial %s continues after report %d", file_name, trial, until)


class ResultJsonLogger(KeepEveryRecord, JsonLoggerCallback):
    """Ray's ``result.json`` / ``params.json`` logger (it replaces the default one)."""


class ProgressCsvLogger(KeepEveryRecord, CSVLoggerCallback):
    """Ray's ``progress.csv`` logger (it replaces the default one). Ray's opens the file at a
    trial's first result only, so a restarted worker appended to it unchecked; this one reopens
    it whenever the trial (re)starts, as the ``result.json`` logger does."""

    def log_trial_start(self, trial: Any) -> None:
        self._setup_trial(trial)
