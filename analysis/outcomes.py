"""Finding the per-sample validation outcomes (``val_outcomes.json``) of a study's winner and its
paper default, for the paired verdict (analysis.verdict.paired_verdict)."""
from __future__ import annotations

from dataclasses import dataclass

from analysis.records import TrialRecord
from mgkd.training.outcomes import BEST, LAST, OUTCOMES_FILE, OutcomesError, SampleOutcomes, \
    read_outcomes


@dataclass(frozen=True)
class Found:
    """A trial's outcomes at the wanted epoch, or why there are none."""

    outcomes: SampleOutcomes | None
    missing: str | None = None  # why not, e.g. "trial 3's dir has no val_outcomes.json"


def trial_outcomes(trial: TrialRecord, epoch: int | None) -> Found:
    """``trial``'s per-sample outcomes at ``epoch`` (the epoch its value comes from)."""
    name = f"trial {trial.trial_number}"
    if trial.trial_dir is None:
        return Found(None, f"{name} has no trial dir")
    path = trial.trial_dir / OUTCOMES_FILE
    if not path.is_file():
        return Found(None, f"{name} has no {OUTCOMES_FILE}")
    try:
        records = read_outcomes(path)
    except OutcomesError as err:
        return Found(None, f"{name}: {err}")
    for record in (records.get(LAST), records.get(BEST)):
        if record is not None and record.epoch == epoch:
            return Found(record)
    held = sorted({r.epoch for r in records.values()})
    return Found(None, f"{name}'s {OUTCOMES_FILE} holds epoch(s) {held}, not epoch {epoch} its "
                       "value comes from")


def stored_val_size(trials: list[TrialRecord]) -> int | None:
    """Validation samples (re-ID: queries) the first of ``trials`` that stored its outcomes was
    scored on; None when none did (older run dirs)."""
    for trial in trials:
        if trial.trial_dir is None or not (trial.trial_dir / OUTCOMES_FILE).is_file():
            continue
        try:
            records = read_outcomes(trial.trial_dir / OUTCOMES_FILE)
        except OutcomesError:
            continue
        for record in records.values():
            return record.size
    return None
