"""`mgkd tune`: validate a sweep, prepare teachers and head banks once, run every study under one
Tuner, resume an interrupted sweep, and summarise the best config per study."""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
import torch
from ray import tune

from analysis.best import StudyBest, best_trials
from analysis.formats import fmt_number, fmt_params
from analysis.optuna_db import dashboard_command
from analysis.records import COMPLETE, FAIL, PRUNED, RUNNING
from analysis.rundir import OPTUNA_DB, SWEEP_FILE
from analysis.verdict import verdict_sentence
from mgkd.catalog.objectives import Objective, get_objective
from mgkd.config.sweep import Study, SweepSpec
from mgkd.errors import ConfigError
from mgkd.io import atomic_write_text
from search.extend import earlier_counts
from search.multistudy import MultiStudySearcher, PerStudyASHA, StudyEntry
from search.progress import ProgressTable
from search.resultlog import ProgressCsvLogger, ResultJsonLogger
from search.sweep import load_run_spec, validate_sweep  # noqa: F401 (load_run_spec: confirm's)
from search.tblog import OutcomeTBXLogger
from search.trackers import tracker_callbacks
from search.warmstart import check_warm_start, started_studies, warm_configs
from spaces import build_space
from trainables.distill import distill_trainable, teacher_key
from trainables.prepare import TeacherJob, prepare_teachers

log = logging.getLogger(__name__)


def storage_url(run_dir: Path) -> str:
    return f"sqlite:///{run_dir / OPTUNA_DB}"


@dataclass
class SweepResult:
    """A finished (or interrupted) sweep: every study's outcome as ``analysis`` reads it from the
    run dir — the same numbers ``mgkd best`` and the report give."""

    run_dir: Path
    studies: list[StudyBest]
    interrupted: bool = False  # stopped (Ctrl-C) before every study had all its trials


# ---- set-up -------------------------------------------------------------------------------------
def connect(address: str | None, dashboard: bool = False) -> None:
    """Join the Ray cluster at ``address`` or start a local one (unless already connected);
    ``dashboard``: start Ray's dashboard with a local Ray and say where it is."""
    if ray.is_initialized():
        return
    # "local": a fresh Ray of our own, never a cluster some other process left running here.
    context = ray.init(address=address or "local", include_dashboard=dashboard,
                       log_to_driver=False, logging_level=logging.WARNING)
    url = getattr(context, "dashboard_url", None)
    if dashboard and url:  # Ray 2.60 guards a local Ray's dashboard with its token
        log.info("Ray dashboard: http://%s (it asks for Ray's token: `ray get-auth-token`)",
                 url.removeprefix("http://"))


def study_entries(spec: SweepSpec, studies: list[Study]) -> list[StudyEntry]:
    return [StudyEntry(key=s.key, space=build_space(spec.space, s.base),
                       num_samples=spec.num_samples, epochs=s.base.epochs) for s in studies]


def add_warm_starts(spec: SweepSpec, entries: list[StudyEntry]) -> None:
    """Give the studies that hold no trial yet their warm-start configs (the sweep file's
    ``warm_start``); reads the earlier run dirs, so it runs before Ray starts. A study that
    already holds trials (a resumed or extended sweep) keeps the ones it has."""
    if spec.warm_start is None:
        return
    started = started_studies(spec.run_dir)
    todo = {e.key: e.space for e in entries if e.key not in started}
    if not todo:
        return
    check_warm_start(spec)
    warm = warm_configs(spec.warm_start, todo)
    for entry in entries:
        entry.warm = warm.get(entry.key, [])


def teacher_jobs(studies: list[Study], entries: list[StudyEntry]):
    """One preparation job per teacher: a base config, every head level any of its studies can
    ask for, and each study's base config with the teacher passes over the training set its
    trials stand for (trials x epochs), which decide whether the teacher view bank pays."""
    jobs: dict[str, TeacherJob] = {}
    for study, entry in zip(studies, entries):
        if study.base.peers is not None:  # a peer group has no teacher
            continue
        key = teacher_key(study.base.teacher, study.base.teacher_checkpoint)
        config, levels, runs = jobs.get(key, (study.base, [], []))
        jobs[key] = (config, list(dict.fromkeys(levels + entry.space.head_levels())),
                     runs + [(study.base, entry.num_samples * entry.epochs)])
    return jobs


def build_trainable(spec: SweepSpec, studies: list[Study], entries: list[StudyEntry], *,
                    checkpoint_every: int | None = None):
    """The trial function with the sweep's data and every teacher's knowledge bound to it (put in
    Ray's object store once), and the per-trial resources. Prepares the teachers first."""
    from mgkd.data import load_config_splits

    data = load_config_splits(studies[0].base)  # the data set is sweep-wide (base)
    knowledge = prepare_teachers(teacher_jobs(studies, entries), data,
                                 cpus=spec.resources_per_trial.cpu,
                                 gpus=spec.resources_per_trial.gpu)
    every = spec.checkpoint_every if checkpoint_every is None else checkpoint_every
    trainable = tune.with_parameters(distill_trainable, data=data, knowledge=knowledge,
                                     checkpoint_every=every)
    return tune.with_resources(trainable, {"cpu": spec.resources_per_trial.cpu,
                                           "gpu": spec.resources_per_trial.gpu})


def _trial_dirname(trial) -> str:
    # Readable and unique, without Ray's default of every parameter in the name.
    return f"{trial.config.get('study', 'trial')}_{trial.config.get('trial_number', 0):03d}_{trial.trial_id}"


class _NoRestoreHint(logging.Filter):
    """Drops Ray's "Resume experiment with: Tuner.restore(...)": `mgkd tune` names its own
    command (`mgkd tune --resume RUN_DIR`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


def quiet_ray() -> None:
    """The sweep prints its own progress table: keep Ray's and Optuna's chatter out of the way."""
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoRestoreHint) for f in tune_log.filters):
        tune_log.addFilter(_NoRestoreHint())
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def sweep_objective(studies: list[Study]) -> Objective:
    """The objective every study of a sweep selects on (resolved into each base config by
    ``plan``; the data set, and so the objective, is sweep-wide)."""
    return get_objective(studies[0].base.objective)


def _new_tuner(spec: SweepSpec, entries: list[StudyEntry], trainable,
               callbacks: list[tune.Callback], metric: str, *, extend: bool = False):
    run_dir = spec.run_dir
    searcher = MultiStudySearcher(entries, storage_url(run_dir), seed=spec.searcher.seed,
                                  multivariate=spec.searcher.multivariate, metric=metric)
    searcher.storage()  # optuna.db complete before any trial starts or any reader looks
    scheduler = PerStudyASHA({e.key: e.epochs for e in entries},
                             grace_period=spec.scheduler.grace_period,
                             reduction_factor=spec.scheduler.reduction_factor, metric=metric)
    progress = ProgressTable({e.key: e.epochs for e in entries},
                             {e.key: e.num_samples for e in entries}, metric=metric,
                             earlier=earlier_counts(run_dir) if extend else None)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, metric=metric, mode="max",
            num_samples=sum(e.num_samples for e in entries),
            max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=True,
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=str(run_dir.parent), verbose=0,
            callbacks=[progress, OutcomeTBXLogger(), ResultJsonLogger(), ProgressCsvLogger(),
                       *tracker_callbacks(spec), *callbacks],
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            # What a trial writes into its trial dir (val_outcomes.json, the per-sample outcomes
            # the paired verdict reads) reaches the run dir with each checkpoint and at its end.
            sync_config=tune.SyncConfig(sync_artifacts=True)))


# ---- running ------------------------------------------------------------------------------------
def run_sweep(spec: SweepSpec, *, resume: bool = False, extend: bool = False,
              callbacks: list[tune.Callback] | None = None) -> SweepResult:
    """Run (or with ``resume`` continue) a sweep; returns the per-study summary. ``callbacks``
    are extra Tune callbacks for a new sweep (a resumed one keeps those it started with).

    ``extend`` (with ``resume``; ``spec`` from ``search.extend.extended``): the finished sweep in
    ``spec.run_dir`` goes on to ``spec.num_samples`` trials a study in a new Ray experiment of
    the same run dir, whose studies' samplers see every earlier trial."""
    if extend and not resume:
        raise ValueError("extend continues a sweep: it needs resume")
    # Every error before Ray starts; for a local Ray, this machine's CPUs and GPUs are the cluster.
    local = None if spec.ray_address else {"CPU": float(os.cpu_count() or 1),
                                            "GPU": float(torch.cuda.device_count())}
    studies = validate_sweep(spec, cluster_resources=local, check_data=True)
    run_dir = spec.run_dir
    # A sweep stopped while its teachers were prepared has its sweep.yaml but no Tuner state yet:
    # it starts its Tuner afresh (the teachers continue from their per-epoch checkpoints).
    restore = resume and not extend and tune.Tuner.can_restore(str(run_dir))
    if resume and not restore and not (run_dir / SWEEP_FILE).is_file():
        raise ConfigError(f"--resume: {run_dir} holds no sweep state to resume; run the sweep "
                          "without --resume.")
    if not resume and (run_dir / SWEEP_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a sweep; continue it with `mgkd tune --resume "
                          f"{run_dir}` or give the sweep another name.")
    entries = study_entries(spec, studies)
    add_warm_starts(spec, entries)
    objective = sweep_objective(studies)
    quiet_ray()
    connect(spec.ray_address, dashboard=spec.ray_dashboard)
    validate_sweep(spec, cluster_resources=ray.cluster_resources(), check_data=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        import yaml
        atomic_write_text(run_dir / SWEEP_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    log.info("sweep %s: %d studies x %d samples -> %s", spec.name, len(studies),
             spec.num_samples, run_dir)
    trainable = build_trainable(spec, studies, entries)
    if restore:
        tuner = tune.Tuner.restore(str(run_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False)
    else:
        tuner = _new_tuner(spec, entries, trainable, list(callbacks or []), objective.name,
                           extend=extend)
    if extend:
        # Recorded once the new experiment exists (its tuner.pkl): from now on a plain --resume
        # continues the extension.
        atomic_write_text(run_dir / SWEEP_FILE, spec.to_yaml())
        log.info("sweep %s: extended to %d trials a study; the trials done so far are not re-run "
                 "and every study's sampler sees them", spec.name, spec.num_samples)
    # The first Ctrl-C makes Tune stop its trials, save its state and return (a second one
    # raises KeyboardInterrupt at once); an incomplete sweep after fit() means it was interrupted.
    tuner.fit()
    bests = best_trials(run_dir)
    finished = (COMPLETE, PRUNED, FAIL)
    unfinished = [b for b in bests if sum(b.counts[s] for s in finished) < spec.num_samples]
    return SweepResult(run_dir, bests, interrupted=bool(unfinished))


# ---- summary ------------------------------------------------------------------------------------
def format_summary(result: SweepResult) -> str:
    """The summary ``mgkd tune`` prints: one row per study (what ``analysis.best`` selected),
    one verdict sentence each, and where to look next."""
    width = max([len("study")] + [len(b.study.key) for b in result.studies])
    name = result.studies[0].objective.name if result.studies else "val_acc"
    best_head = f"best {name}"
    # After a Ctrl-C the trials it stopped are RUNNING in optuna.db: shown as interrupted, as in
    # the progress table above the summary, not folded into another column.
    stopped = result.interrupted
    lines = [f"{'study':<{width}}  done  pruned  err  " + ("interrupted  " if stopped else "")
             + f"{best_head:>12}  val se  paper default  gain  {'verdict':<13}  best hyperparameters"]
    verdicts = []
    for b in result.studies:
        judged = b.verdict
        lines.append(f"{b.study.key:<{width}}  {b.counts[COMPLETE]:>4}  {b.counts[PRUNED]:>6}  "
                     f"{b.counts[FAIL]:>3}  "
                     + (f"{b.counts.get(RUNNING, 0):>11}  " if stopped else "")
                     + f"{fmt_number(b.value):>{len(best_head)}}  "
                     f"{fmt_number(b.val_se):>6}  {fmt_number(b.paper_value):>13}  "
                     f"{fmt_number(b.gain, sign=True):>5}  {judged.verdict:<13}  "
                     f"{fmt_params(dict(sorted(b.params.items())))}")
        verdicts.append(f"{b.study.key}: {verdict_sentence(judged, b.objective.label)}")
    lines += ["", *verdicts, "",
              f"run dir:      {result.run_dir}",
              f"optuna study: {dashboard_command(result.run_dir / OPTUNA_DB)}  (read-only; "
              "http://127.0.0.1:8080)",
              f"tensorboard:  tensorboard --logdir {result.run_dir}"]
    return "\n".join(lines)
