"""``load_run``: a run dir as one pandas DataFrame, one row per trial and epoch."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.flatten import column_order, flatten_experiment
from analysis.records import Run, TrialRecord
from analysis.run import read_run

log = logging.getLogger(__name__)
ID_COLUMNS: tuple[str, ...] = ("study", "teacher", "student", "method", "mode", "trial_number",
                               "ray_trial_id", "state", "paper_default", "warm_start_source",
                               "trial_dir")
# The metrics every trial reports each epoch; the epoch's learning rate is ``epoch_lr`` (``lr`` is
# the config's initial learning rate).
METRIC_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "loss_ce", "loss_logit", "loss_feature",
                                   "loss_granularity", "val_acc", "val_loss", "test_acc",
                                   "best_val_acc", "epoch_lr", "time_total_s")
# Re-ID trials report these instead of (or beside) the accuracies; columns only when reported.
REID_METRIC_COLUMNS: tuple[str, ...] = (
    "val_rank1", "val_rank5", "val_rank10", "val_map", "val_map_se", "test_rank1", "test_rank5",
    "test_rank10", "test_map", "test_map_se", "best_val_map", "best_val_rank1")
_RENAMED = {"lr": "epoch_lr"}
_INT_COLUMNS = ("trial_number", "epoch")


def _identity(run: Run, trial: TrialRecord) -> dict[str, Any]:
    study = run.studies.get(trial.study)
    return {"study": trial.study,
            "teacher": study.teacher if study else None, "student": study.student if study else None,
            "method": study.method if study else None, "mode": study.mode if study else None,
            "trial_number": trial.trial_number, "ray_trial_id": trial.ray_trial_id,
            "state": trial.state, "paper_default": trial.paper_default,
            "warm_start_source": trial.warm_start_source,
            "trial_dir": str(trial.trial_dir) if trial.trial_dir else None}


def metric_columns(run: Run) -> tuple[str, ...]:
    """METRIC_COLUMNS, then the re-ID metrics any trial of ``run`` reported."""
    reported = {name for trial in run.trials for epoch in trial.history for name in epoch}
    return METRIC_COLUMNS + tuple(n for n in REID_METRIC_COLUMNS if n in reported)


def _metrics(epoch: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    row = {_RENAMED.get(k, k): v for k, v in epoch.items()}
    return {name: row.get(name) for name in names}


def trial_rows(run: Run, trial: TrialRecord,
               metrics: tuple[str, ...] = METRIC_COLUMNS) -> list[dict[str, Any]]:
    """One row per reported epoch (one row with an empty epoch when the trial reported none)."""
    identity = _identity(run, trial)
    config = {k: v for k, v in flatten_experiment(trial.experiment or {}).items()
              if k not in identity}
    epochs = trial.history or [{}]
    return [{**identity, **_metrics(epoch, metrics), **config} for epoch in epochs]


def _integral(rows: list[dict[str, Any]], name: str) -> bool:
    """Whether a column holds integers with gaps (pandas would make it float)."""
    values = [row.get(name) for row in rows]
    present = [v for v in values if v is not None]
    return (bool(present) and len(present) < len(values)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in present))


def run_frame(run: Run) -> pd.DataFrame:
    """The DataFrame of an already-read run (see ``load_run``)."""
    metrics = metric_columns(run)
    rows = [row for trial in run.trials for row in trial_rows(run, trial, metrics)]
    config_columns = {c for row in rows for c in row} - set(ID_COLUMNS) - set(metrics)
    columns = [*ID_COLUMNS, *metrics, *column_order(config_columns)]
    frame = pd.DataFrame(rows, columns=columns)
    for name in _INT_COLUMNS:
        frame[name] = frame[name].astype("Int64")
    for name in metrics[1:]:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    frame["paper_default"] = frame["paper_default"].astype(bool)
    for name in columns[len(ID_COLUMNS) + len(metrics):]:
        if _integral(rows, name):  # e.g. g1_dim, empty where a trial has one level
            frame[name] = frame[name].astype("Int64")
    frame.attrs["run_dir"] = str(run.path)
    frame.attrs["warnings"] = list(run.notes)
    return frame


def load_run(run_dir: str | Path) -> pd.DataFrame:
    """Every trial-epoch of a sweep's run dir as one DataFrame, read from files alone (no Ray).

    Columns: ``study, teacher, student, method, mode, trial_number, ray_trial_id, state``
    (COMPLETE / PRUNED / FAIL / RUNNING / UNKNOWN), ``paper_default``, ``warm_start_source``
    (where a warm-started trial's config came from, else empty), ``trial_dir``; the reported
    metrics ``epoch, train_loss, loss_ce, loss_logit, loss_feature, loss_granularity, val_acc,
    val_loss, test_acc, best_val_acc, epoch_lr, time_total_s`` (and, for a re-ID sweep, the
    REID_METRIC_COLUMNS its trials reported: val_map, val_rank1, test_map, ...); then every
    ExperimentConfig key,
    with ``granularities`` as ``num_granularities, g0_dim, g0_temperature, g0_weight, g1_dim, ...``
    and ``method_options`` / ``data_options`` as ``method_options.<name>`` / ``data_options.<name>``.
    A trial that reported no epoch has one row with an empty ``epoch``. Damaged or partial input
    is noted in ``frame.attrs["warnings"]`` (and logged); MgkdError when ``run_dir`` is not a run dir.
    """
    run = read_run(run_dir)
    for note in run.notes:
        log.warning("%s", note)
    return run_frame(run)
