"""A classification run dir built by hand the way a sweep writes one (sweep.yaml, optuna.db, one
trial dir per trial with params.json and result.json), with numbers chosen so the report's
analyses have known answers: no Ray, a second to build."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from mgkd.config.sweep import plan

from sweep_helpers import tiny_sweep

KEY = "resnet8__resnet8__kd__mas"
EPOCHS = 4  # ASHA grace 1, reduction factor 2: rungs at epochs 1 and 2
DIMS, TEMPERATURES = [16, 64, 256], [2, 8]


@dataclass(frozen=True)
class Trial:
    """One trial: its levels, lr and objective per epoch (a pruned trial has fewer epochs)."""

    levels: int
    lr: float
    curve: tuple[float, ...]

    @property
    def complete(self) -> bool:
        return len(self.curve) == EPOCHS


def ranked_trials(complete: int, pruned: int = 3) -> list[Trial]:
    """``complete`` trials whose epoch-1 values rank them exactly as their final values do and
    whose epoch-2 values rank them in reverse; then ``pruned`` trials stopped at epoch 1, one far
    below every complete trial and one with 4 levels (no complete trial has a 4th)."""
    trials = [Trial(levels=1 + i % 2, lr=0.01 * 1.2 ** i,
                    curve=(10.0 + i, 40.0 - i, 45.0, 50.0 + 3 * i)) for i in range(complete)]
    for j in range(pruned):
        trials.append(Trial(levels=4 if j == 1 else 1, lr=0.05, curve=(1.0 if j == 0 else 5.0,)))
    return trials


def _params(trial: Trial) -> tuple[dict, dict]:
    params = {"num_granularities": trial.levels, "lr": trial.lr}
    distributions = {"num_granularities": optuna.distributions.IntDistribution(1, 4),
                     "lr": optuna.distributions.FloatDistribution(0.001, 1.0, log=True)}
    for k in range(trial.levels):
        params[f"g{k}_dim"] = DIMS[k % 3]
        params[f"g{k}_temperature"] = TEMPERATURES[k % 2]
        distributions[f"g{k}_dim"] = optuna.distributions.CategoricalDistribution(DIMS)
        distributions[f"g{k}_temperature"] = optuna.distributions.CategoricalDistribution(
            TEMPERATURES)
    return params, distributions


def make_run(storage: Path, trials: list[Trial]) -> Path:
    """The run dir of a finished sweep with ``trials`` (trial 0 is the paper default)."""
    spec = tiny_sweep(storage, name="report", modes=["mas"],
                      scheduler={"grace_period": 1, "reduction_factor": 2},
                      base={"epochs": EPOCHS})
    run_dir = spec.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    (study_plan,) = plan(spec)
    study = optuna.create_study(study_name=KEY, storage=f"sqlite:///{run_dir / 'optuna.db'}",
                                direction="maximize")
    for number, trial in enumerate(trials):
        ray_id = f"r{number:04d}"
        params, distributions = _params(trial)
        history = [{"epoch": e, "val_acc": v, "test_acc": v - 1.0, "best_val_acc": v,
                    "train_loss": 1.0, "lr": trial.lr, "training_iteration": e}
                   for e, v in enumerate(trial.curve, 1)]
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions,
            state=(optuna.trial.TrialState.COMPLETE if trial.complete
                   else optuna.trial.TrialState.PRUNED),
            value=trial.curve[-1] if trial.complete else None,
            intermediate_values={h["epoch"]: h["val_acc"] for h in history},
            user_attrs={"ray_trial_id": ray_id, "paper_default": number == 0}))
        folder = run_dir / f"{KEY}_{number:03d}_{ray_id}"
        folder.mkdir()
        experiment = study_plan.base.replace(lr=trial.lr).to_dict()
        (folder / "params.json").write_text(json.dumps(
            {"study": KEY, "trial_number": number, "params": params, "experiment": experiment}))
        (folder / "result.json").write_text("".join(json.dumps(h) + "\n" for h in history))
    return run_dir
