"""Reading a run dir's ``optuna.db`` (every study's trials) without changing it."""
from __future__ import annotations

import logging
import shlex
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from analysis.records import COMPLETE, FAIL, PRUNED, RUNNING

log = logging.getLogger(__name__)
# The user attributes search.multistudy sets on every trial: the enqueued paper-default trial and
# the Ray trial that ran it; on a warm-started trial, where its config came from
# ("resnet56→resnet20, trial 17, /runs/cifar-r56").
PAPER_DEFAULT_ATTR = "paper_default"
RAY_TRIAL_ATTR = "ray_trial_id"
WARM_START_ATTR = "warm_start_source"
STATE_NAMES: dict[TrialState, str] = {TrialState.COMPLETE: COMPLETE, TrialState.PRUNED: PRUNED,
                                      TrialState.FAIL: FAIL, TrialState.RUNNING: RUNNING}


def read_only_url(db: Path) -> str:
    """The SQLAlchemy URL that opens the sqlite file ``db`` read-only (sqlite's URI mode=ro):
    nothing that opens it can write, not even a schema into a file still being created."""
    return f"sqlite:///file:{db.resolve()}?mode=ro&uri=true"


def open_read_only(db: Path) -> optuna.storages.RDBStorage:
    """``db`` opened so that reading never writes: a reader opening a database the sweep is
    creating would otherwise write its schema version too, and the sweep's own write then fails.
    A database not yet complete raises instead (retry once the sweep is under way)."""
    return optuna.storages.RDBStorage(read_only_url(db), skip_table_creation=True)


def dashboard_command(db: Path) -> str:
    """The shell command that serves ``db`` in optuna-dashboard (installed with the project),
    read-only: opened with a plain ``sqlite:///`` URL it would create the file, or its schema,
    if it got there before the sweep."""
    return f"optuna-dashboard {shlex.quote(read_only_url(db))}"


def read_studies(db: Path, notes: list[str]) -> dict[str, list[FrozenTrial]]:
    """Every study's trials (in number order) from the sqlite file ``db``; a note when unreadable."""
    if not db.is_file():
        notes.append(f"no {db.name} in {db.parent}: trial states are inferred from the trial dirs "
                     "(errored: an error file; complete: every epoch of the budget reported).")
        return {}
    try:
        storage = open_read_only(db)
    except Exception as err:  # another schema version, not sqlite at all, or still being created
        notes.append(f"{db} could not be opened by Optuna {optuna.__version__} ({err}); trial "
                     "states are inferred from the trial dirs.")
        return {}
    studies: dict[str, list[FrozenTrial]] = {}
    try:
        for name in optuna.get_all_study_names(storage):
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            studies[name] = sorted(trials, key=lambda t: t.number)
    except Exception as err:  # a locked or damaged database: keep what was read
        notes.append(f"{db} could only be read in part ({err}); trials it did not yield are "
                     "inferred from the trial dirs.")
    finally:
        storage.engine.dispose()
    return studies


def state_name(trial: FrozenTrial) -> str | None:
    """The analysis state of an Optuna trial; None for WAITING (queued, never started)."""
    return STATE_NAMES.get(trial.state)


def load_stored_study(db: Path, key: str) -> optuna.Study:
    """Study ``key`` as stored in ``db`` (KeyError when it holds no such study)."""
    return optuna.load_study(study_name=key, storage=open_read_only(db))


def log_sampled(db: Path, key: str) -> set[str]:
    """Names of study ``key``'s parameters sampled on a log scale (empty when unreadable)."""
    if not db.is_file():
        return set()
    storage = None
    try:
        storage = open_read_only(db)
        trials = optuna.load_study(study_name=key, storage=storage).get_trials(deepcopy=False)
    except Exception:  # a missing study or a damaged file: the plot falls back to its heuristic
        return set()
    finally:
        if storage is not None:
            storage.engine.dispose()
    return {name for trial in trials for name, dist in trial.distributions.items()
            if getattr(dist, "log", False)}
