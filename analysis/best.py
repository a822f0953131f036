"""The best trial of every study: the sweep's objective on the validation split selects (val_acc
unless the sweep names another, e.g. val_map for re-ID; ties: the earlier trial), its test metric
is reported beside it and never used to choose; a confirmation over several seeds, when the run dir
holds one, replaces the single-run winner."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.confirm import Confirmation, confirmed_ranking, read_confirmations
from analysis.records import COMPLETE, STATES, Run, StudyInfo, TrialRecord
from analysis.run import read_run
from analysis.outcomes import stored_val_size, trial_outcomes
from analysis.verdict import (UNPAIRED, Verdict, binomial_se, experiment_val_size, paired_verdict,
                              verdict)
from mgkd.catalog.objectives import OBJECTIVES, Objective, get_objective
from mgkd.config.sweep import study_key

log = logging.getLogger(__name__)
PLAIN_KD = ("kd", "plain")  # the baseline every MGKD study is also compared with


def ranked(trials: list[TrialRecord]) -> list[TrialRecord]:
    """COMPLETE trials with an objective value, best first; ties go to the earlier trial."""
    done = [t for t in trials if t.state == COMPLETE and t.objective_value is not None]
    return sorted(done, key=lambda t: (-t.objective_value, t.trial_number
                                       if t.trial_number is not None else float("inf")))


def top_trials(run: Run, k: int) -> dict[str, list[TrialRecord]]:
    """The ``k`` best COMPLETE trials of every study (e.g. to re-run them with more seeds)."""
    return {key: ranked(run.trials_of(key))[:k] for key in run.studies}


def study_objective(study: StudyInfo) -> Objective:
    """The objective a study selects on (``read_run`` works it out for run dirs that do not say)."""
    return get_objective(study.objective)


def task_metrics(objective: Objective) -> list[str]:
    """The validation and test metrics of the objective's task, e.g. val_acc, test_acc; for
    re-ID val_rank1, test_rank1, val_map, test_map."""
    return [name for o in OBJECTIVES.values() if o.task == objective.task
            for name in (o.name, o.test_metric)]


@dataclass
class StudyBest:
    """One study's outcome: counts, the winner, the paper default and the comparisons, all on
    the study's objective (``objective``)."""

    study: StudyInfo
    counts: dict[str, int]
    winner: TrialRecord | None  # the best single run
    paper: TrialRecord | None  # the enqueued paper-default trial
    confirmed: Confirmation | None = None  # the best config over several seeds
    confirmed_trial: TrialRecord | None = None
    paper_confirmed: Confirmation | None = None
    plain_kd_value: float | None = None  # the same pair's kd / plain study's selected value
    val_size: int | None = None  # validation images (queries for re-ID): the n of binomial errors
    paired: Verdict | None = None  # the single-run winner against the paper default, sample by sample
    warm_started: list[TrialRecord] = field(default_factory=list)  # configs of earlier studies
    notes: list[str] = field(default_factory=list)

    @property
    def objective(self) -> Objective:
        return study_objective(self.study)

    @property
    def selected(self) -> TrialRecord | None:
        """The trial whose config is exported: the confirmed winner, else the single-run one."""
        return self.confirmed_trial if self.confirmed else self.winner

    @property
    def selected_by(self) -> str:
        if self.confirmed:
            return f"mean of {len(self.confirmed.values)} seeds"
        return "single run" if self.winner else "-"

    @property
    def value(self) -> float | None:
        """The selected config's objective (its mean over the seeds when confirmed)."""
        if self.confirmed:
            return self.confirmed.mean_value
        return self.winner.objective_value if self.winner else None

    @property
    def value_std(self) -> float | None:
        return self.confirmed.std_value if self.confirmed else None

    @property
    def test_value(self) -> float | None:
        """The objective's test metric for the selected config (mean over seeds when confirmed)."""
        if self.confirmed:
            return self.confirmed.mean_test_value
        return self.final(self.winner, self.objective.test_metric)

    def final(self, trial: TrialRecord | None, name: str) -> float | None:
        """Metric ``name`` of ``trial`` at the study's final epoch (the selected epoch)."""
        return final_metric(trial, self.study.budget, name) if trial else None

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
    def warm_start_source(self) -> str | None:
        """Where the selected config came from when it is a warm start (sweep file's
        ``warm_start``): "resnet56→resnet20, trial 17, RUN_DIR"."""
        return self.selected.warm_start_source if self.selected else None

    def warm_start_rows(self) -> list[dict[str, Any]]:
        """The study's warm-started trials: number, source, state and objective value."""
        return [{"trial_number": t.trial_number, "source": t.warm_start_source, "state": t.state,
                 "value": t.objective_value if t.state == COMPLETE else None}
                for t in self.warm_started]

    @property
    def paper_value(self) -> float | None:
        if self.paper_confirmed:
            return self.paper_confirmed.mean_value
        return (self.paper.objective_value if self.paper and self.paper.state == COMPLETE
                else None)

    @property
    def gain(self) -> float | None:
        return _difference(self.value, self.paper_value)

    @property
    def val_se(self) -> float | None:
        """Standard error of the selected value: binomial from the validation size (accuracy,
        rank-1), else the one the selected trial reported (``val_map_se``)."""
        if self.objective.binomial:
            return binomial_se(self.value, self.val_size)
        return self.final(self.selected, self.objective.se_metric or "")

    @property
    def default_selected(self) -> bool:
        return (self.paper is not None and self.trial_number is not None
                and self.trial_number == self.paper.trial_number)

    @property
    def verdict(self) -> Verdict:
        """Whether the selected config beats the paper default beyond noise (analysis.verdict):
        paired when the trials stored their per-sample outcomes (or the confirmation's seeds
        match), else by the unpaired standard errors."""
        if self.paired is not None and not self.confirmed:
            return self.paired
        reported: dict[str, Any] = {}
        if not self.objective.binomial:
            paper_se = (self.final(self.paper, self.objective.se_metric or "")
                        if self.paper_value is not None else None)
            reported = {"best_se": self.val_se, "paper_se": paper_se,
                        "se_basis": self.objective.se_metric}
        return verdict(self.value, self.paper_value, val_size=self.val_size,
                       default_selected=self.default_selected,
                       best_seeds=self.confirmed.values if self.confirmed else None,
                       paper_seeds=self.paper_confirmed.values if self.paper_confirmed else None,
                       paired_seeds=self._seeds_pair(), **reported)

    def _seeds_pair(self) -> bool:
        """The winner and the paper default were confirmed with the same seeds, each run kept."""
        best, paper = self.confirmed, self.paper_confirmed
        return (best is not None and paper is not None and bool(best.seeds)
                and best.seeds == paper.seeds and len(best.values) == len(best.seeds)
                and len(paper.values) == len(paper.seeds))

    @property
    def gain_over_plain_kd(self) -> float | None:
        return _difference(self.value, self.plain_kd_value)

    def metric_values(self) -> dict[str, float | None]:
        """The task's metrics for the selected config at its final epoch; the objective and its
        test metric are ``value`` / ``test_value`` (means over seeds when confirmed)."""
        objective = self.objective
        own = {objective.name: self.value, objective.test_metric: self.test_value}
        return {name: own[name] if name in own else self.final(self.selected, name)
                for name in task_metrics(objective)}

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``mgkd best --format json`` (and the report).

        ``value`` / ``test_value`` are the objective and its test metric whatever the objective;
        the same numbers also appear under the metrics' own names (``val_acc``, ``test_acc``;
        for re-ID ``val_rank1``, ``test_rank1``, ``val_map``, ``test_map``), and ``<objective>_std``,
        ``paper_default_<objective>``, ``plain_kd_<objective>`` repeat the generic keys."""
        s, name = self.study, self.objective.name
        out = {"study": s.key, "pair": s.label, "teacher": s.teacher, "student": s.student,
               "method": s.method,
               "mode": s.mode, "epoch_budget": s.budget, "trials": sum(self.counts.values()),
               "complete": self.counts[COMPLETE], "pruned": self.counts["PRUNED"],
               "errored": self.counts["FAIL"], "running": self.counts["RUNNING"],
               "unknown": self.counts["UNKNOWN"], "selected_by": self.selected_by,
               "trial_number": self.trial_number,
               "ray_trial_id": self.selected.ray_trial_id if self.selected else None,
               "objective": name, "test_metric": self.objective.test_metric,
               "value": self.value, "value_std": self.value_std,
               "val_size": self.val_size, "val_se": self.val_se, "test_value": self.test_value,
               **self.metric_values(), f"{name}_std": self.value_std,
               "epochs": self.epochs, "paper_default_value": self.paper_value,
               f"paper_default_{name}": self.paper_value, "gain_over_paper_default": self.gain,
               **self.verdict.to_dict(),
               "plain_kd_value": self.plain_kd_value, f"plain_kd_{name}": self.plain_kd_value,
               "gain_over_plain_kd": self.gain_over_plain_kd, "params": self.params,
               "warm_start_source": self.warm_start_source,
               "warm_started": self.warm_start_rows(), "notes": list(self.notes)}
        if self.confirmed:
            out["confirmation"] = {"objective": name, "seeds": self.confirmed.seeds,
                                   "val_accs": self.confirmed.values,
                                   "test_accs": self.confirmed.test_values}
            out["single_run"] = (self._single_run() if self.winner else None)
        return out

    def _single_run(self) -> dict[str, Any]:
        assert self.winner is not None
        value = self.winner.objective_value
        test = self.final(self.winner, self.objective.test_metric)
        return {"trial_number": self.winner.trial_number, "value": value, "test_value": test,
                self.objective.name: value, self.objective.test_metric: test}


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def final_metric(trial: TrialRecord, budget: int | None, name: str) -> float | None:
    """Metric ``name`` at the epoch whose objective value is the trial's value (its last)."""
    return trial.metric_at(budget if budget is not None else trial.epochs, name)


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
    objective = best.objective
    final = final_metric(trial, budget, objective.name)
    test = objective.test_metric
    if trial.trial_dir is None or not trial.history:
        best.notes.append(f"trial {trial.trial_number} has no result.json: its {test} and epochs "
                          "are unknown.")
    elif final is None:
        best.notes.append(f"trial {trial.trial_number}'s result.json lacks its final epoch "
                          f"({budget}): its {test} is unknown.")
    elif final != trial.value and trial.value is not None:
        best.notes.append(f"trial {trial.trial_number}: optuna.db says {objective.name} "
                          f"{trial.value:.2f}, its result.json {final:.2f}; optuna.db's value is "
                          "used.")


def _apply_confirmation(best: StudyBest, data: dict[str, Any] | None,
                        trials: list[TrialRecord]) -> None:
    if data is None:
        return
    if data.get("objective", best.objective.name) != best.objective.name:
        best.notes.append(f"its confirmation ranks by {data['objective']}, not the study's "
                          f"objective {best.objective.name}; the single-run winner stands.")
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


def _pair_outcomes(best: StudyBest) -> None:
    """Judge the single-run winner against the paper default sample by sample when both trials
    stored their outcomes at the epoch their values come from; else a note says the unpaired rule
    stands."""
    winner, paper = best.winner, best.paper
    if (winner is None or paper is None or paper.state != COMPLETE or best.default_selected
            or best.confirmed):
        return
    found = [trial_outcomes(t, best.study.budget if best.study.budget is not None else t.epochs)
             for t in (winner, paper)]
    missing = [f.missing for f in found if f.missing]
    if not missing:
        assert found[0].outcomes is not None and found[1].outcomes is not None
        try:
            best.paired = paired_verdict(found[0].outcomes, found[1].outcomes,
                                         per_query_ap=not best.objective.binomial)
            return
        except ValueError as err:
            missing = [str(err)]
    best.notes.append(f"no paired verdict ({'; '.join(missing)}): the verdict uses the "
                      f"{UNPAIRED} rule, as for run dirs from before paired verdicts.")


def study_best(run: Run, key: str, confirmation: dict[str, Any] | None = None) -> StudyBest:
    """One study's outcome (without the plain-KD comparison, which needs the other studies)."""
    trials = run.trials_of(key)
    counts = Counter({state: 0 for state in STATES})
    counts.update(t.state for t in trials)
    order = ranked(trials)
    paper = next((t for t in trials if t.paper_default), None)
    info = run.studies[key]
    best = StudyBest(info, dict(counts), order[0] if order else None, paper,
                     warm_started=[t for t in trials if t.warm_start_source])
    # The size the trials stored with their outcomes; working it out from the config instead
    # needs the data set's code (and torch): a second or more per command.
    best.val_size = stored_val_size(order) or experiment_val_size(info.base) or next(
        (n for n in (experiment_val_size(t.experiment) for t in trials) if n), None)
    _check_winner(best)
    _apply_confirmation(best, confirmation, trials)
    _pair_outcomes(best)
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
            best.plain_kd_value = baseline.value
    return bests


def best_trials(run_dir: str | Path | Run) -> list[StudyBest]:
    """One ``StudyBest`` per study of a run dir, in the sweep's plan order.

    ``StudyBest.selected`` is the trial to export (``.experiment`` its config); ``to_dict()`` is
    the row ``mgkd best --format json`` prints."""
    run = run_dir if isinstance(run_dir, Run) else read_run(run_dir)
    return best_of_run(run)
