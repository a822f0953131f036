"""The best trial of every study: validation accuracy selects (ties: the earlier trial), test
accuracy is reported beside it and never used to choose; a confirmation over several seeds, when
the run dir holds one, replaces the single-run winner."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.confirm import Confirmation, confirmed_ranking, read_confirmations
from analysis.records import COMPLETE, STATES, Run, StudyInfo, TrialRecord, study_key
from analysis.run import read_run
from analysis.verdict import Verdict, binomial_se, experiment_val_size, verdict

log = logging.getLogger(__name__)
PLAIN_KD = ("kd", "plain")  # the baseline every MGKD study is also compared with


def ranked(trials: list[TrialRecord]) -> list[TrialRecord]:
    """COMPLETE trials with a validation accuracy, best first; ties go to the earlier trial."""
    done = [t for t in trials if t.state == COMPLETE and t.val_acc is not None]
    return sorted(done, key=lambda t: (-t.val_acc, t.trial_number if t.trial_number is not None
                                       else float("inf")))


def top_trials(run: Run, k: int) -> dict[str, list[TrialRecord]]:
    """The ``k`` best COMPLETE trials of every study (e.g. to re-run them with more seeds)."""
    return {key: ranked(run.trials_of(key))[:k] for key in run.studies}


@dataclass
class StudyBest:
    """One study's outcome: counts, the winner, the paper default and the comparisons."""

    study: StudyInfo
    counts: dict[str, int]
    winner: TrialRecord | None  # the best single run
    paper: TrialRecord | None  # the enqueued paper-default trial
    confirmed: Confirmation | None = None  # the best config over several seeds
    confirmed_trial: TrialRecord | None = None
    paper_confirmed: Confirmation | None = None
    plain_kd_val_acc: float | None = None  # the same pair's kd / plain study's selected val_acc
    val_size: int | None = None  # validation images: the n of the accuracies' standard errors
    notes: list[str] = field(default_factory=list)

    @property
    def selected(self) -> TrialRecord | None:
        """The trial whose config is exported: the confirmed winner, else the single-run one."""
        return self.confirmed_trial if self.confirmed else self.winner

    @property
    def selected_by(self) -> str:
        if self.confirmed:
            return f"mean of {len(self.confirmed.val_accs)} seeds"
        return "single run" if self.winner else "-"

    @property
    def val_acc(self) -> float | None:
        if self.confirmed:
            return self.confirmed.mean_val_acc
        return self.winner.val_acc if self.winner else None

    @property
    def val_acc_std(self) -> float | None:
        return self.confirmed.std_val_acc if self.confirmed else None

    @property
    def test_acc(self) -> float | None:
        """Test accuracy of the selected config (its mean over the seeds when confirmed)."""
        if self.confirmed:
            return self.confirmed.mean_test_acc
        return final_test_acc(self.winner, self.study.budget) if self.winner else None

    @property
    def trial_number(self) -> int | None:
        if self.confirmed:
            return self.confirmed.trial_number
        return self.winner.trial_number if self.winner else None

    @property
    def epochs(self) -> int | None:
        trial = self.selected
        return trial.epochs if trial else None

    @property
    def params(self) -> dict[str, Any]:
        if self.confirmed:
            return dict(self.confirmed.params or (self.selected.params if self.selected else {}))
        return dict(self.winner.params) if self.winner else {}

    @property
    def paper_val_acc(self) -> float | None:
        if self.paper_confirmed:
            return self.paper_confirmed.mean_val_acc
        return self.paper.val_acc if self.paper and self.paper.state == COMPLETE else None

    @property
    def gain(self) -> float | None:
        return _difference(self.val_acc, self.paper_val_acc)

    @property
    def val_se(self) -> float | None:
        """Binomial standard error of the selected val_acc, from the validation set's size."""
        return binomial_se(self.val_acc, self.val_size)

    @property
    def default_selected(self) -> bool:
        return (self.paper is not None and self.trial_number is not None
                and self.trial_number == self.paper.trial_number)

    @property
    def verdict(self) -> Verdict:
        """Whether the selected config beats the paper default beyond noise (analysis.verdict)."""
        return verdict(self.val_acc, self.paper_val_acc, val_size=self.val_size,
                       default_selected=self.default_selected,
                       best_seeds=self.confirmed.val_accs if self.confirmed else None,
                       paper_seeds=self.paper_confirmed.val_accs if self.paper_confirmed else None)

    @property
    def gain_over_plain_kd(self) -> float | None:
        return _difference(self.val_acc, self.plain_kd_val_acc)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``mgkd best --format json`` (and the report)."""
        s = self.study
        out = {"study": s.key, "teacher": s.teacher, "student": s.student, "method": s.method,
               "mode": s.mode, "epoch_budget": s.budget, "trials": sum(self.counts.values()),
               "complete": self.counts[COMPLETE], "pruned": self.counts["PRUNED"],
               "errored": self.counts["FAIL"], "running": self.counts["RUNNING"],
               "unknown": self.counts["UNKNOWN"], "selected_by": self.selected_by,
               "trial_number": self.trial_number,
               "ray_trial_id": self.selected.ray_trial_id if self.selected else None,
               "val_acc": self.val_acc, "val_acc_std": self.val_acc_std,
               "val_size": self.val_size, "val_se": self.val_se,
               "test_acc": self.test_acc, "epochs": self.epochs,
               "paper_default_val_acc": self.paper_val_acc, "gain_over_paper_default": self.gain,
               **self.verdict.to_dict(),
               "plain_kd_val_acc": self.plain_kd_val_acc,
               "gain_over_plain_kd": self.gain_over_plain_kd, "params": self.params,
               "notes": list(self.notes)}
        if self.confirmed:
            out["confirmation"] = {"seeds": self.confirmed.seeds, "val_accs": self.confirmed.val_accs,
                                   "test_accs": self.confirmed.test_accs}
            out["single_run"] = ({"trial_number": self.winner.trial_number,
                                  "val_acc": self.winner.val_acc,
                                  "test_acc": final_test_acc(self.winner, s.budget)}
                                 if self.winner else None)
        return out


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def final_test_acc(trial: TrialRecord, budget: int | None) -> float | None:
    """Test accuracy at the epoch whose validation accuracy is the trial's value."""
    return trial.metric_at(budget if budget is not None else trial.epochs, "test_acc")


def _check_winner(best: StudyBest) -> None:
    trial, budget = best.winner, best.study.budget
    if trial is None:
        running = best.counts["RUNNING"] + best.counts["UNKNOWN"]
        if sum(best.counts.values()) == 0:
            best.notes.append("no trial has started yet.")
        else:
            best.notes.append(f"no trial finished its {budget or '?'} epochs yet ({running} running "
                              f"or unknown, {best.counts['PRUNED']} pruned, {best.counts['FAIL']} "
                              "errored).")
        return
    final = trial.metric_at(budget if budget is not None else trial.epochs, "val_acc")
    if trial.trial_dir is None or not trial.history:
        best.notes.append(f"trial {trial.trial_number} has no result.json: its test_acc and epochs "
                          "are unknown.")
    elif final is None:
        best.notes.append(f"trial {trial.trial_number}'s result.json lacks its final epoch "
                          f"({budget}): its test_acc is unknown.")
    elif final != trial.value and trial.value is not None:
        best.notes.append(f"trial {trial.trial_number}: optuna.db says val_acc {trial.value:.2f}, "
                          f"its result.json {final:.2f}; optuna.db's value is used.")


def _apply_confirmation(best: StudyBest, data: dict[str, Any] | None,
                        trials: list[TrialRecord]) -> None:
    if data is None:
        return
    ranking = confirmed_ranking(data)
    if not ranking:
        best.notes.append("its confirmation file holds no valid entry; the single-run winner stands.")
        return
    by_number = {t.trial_number: t for t in trials}
    top = ranking[0]
    if top.trial_number not in by_number:
        best.notes.append(f"its confirmation names trial {top.trial_number}, which this run dir does "
                          "not hold; the single-run winner stands.")
        return
    best.confirmed, best.confirmed_trial = top, by_number[top.trial_number]
    if best.paper is not None:
        best.paper_confirmed = next((c for c in ranking if c.trial_number == best.paper.trial_number),
                                    None)


def study_best(run: Run, key: str, confirmation: dict[str, Any] | None = None) -> StudyBest:
    """One study's outcome (without the plain-KD comparison, which needs the other studies)."""
    trials = run.trials_of(key)
    counts = Counter({state: 0 for state in STATES})
    counts.update(t.state for t in trials)
    order = ranked(trials)
    paper = next((t for t in trials if t.paper_default), None)
    info = run.studies[key]
    best = StudyBest(info, dict(counts), order[0] if order else None, paper)
    best.val_size = experiment_val_size(info.base) or next(
        (n for n in (experiment_val_size(t.experiment) for t in trials) if n), None)
    _check_winner(best)
    _apply_confirmation(best, confirmation, trials)
    if paper is not None and paper.state != COMPLETE:
        best.notes.append(f"the paper-default trial ({paper.trial_number}) is {paper.state}: no gain "
                          "over it can be given.")
    return best


def best_of_run(run: Run) -> list[StudyBest]:
    """``best_trials`` for an already-read run; confirmation-file problems go to ``run.notes``."""
    confirmations = read_confirmations(run.path, run.notes)
    bests = [study_best(run, key, confirmations.get(key)) for key in run.studies]
    by_key = {b.study.key: b for b in bests}
    for best in bests:
        s = best.study
        baseline = by_key.get(study_key(s.teacher, s.student, *PLAIN_KD))
        if baseline is not None and baseline is not best:
            best.plain_kd_val_acc = baseline.val_acc
    return bests


def best_trials(run_dir: str | Path | Run) -> list[StudyBest]:
    """One ``StudyBest`` per study of a run dir, in the sweep's plan order.

    ``StudyBest.selected`` is the trial to export (``.experiment`` its config); ``to_dict()`` is
    the row ``mgkd best --format json`` prints."""
    run = run_dir if isinstance(run_dir, Run) else read_run(run_dir)
    return best_of_run(run)
