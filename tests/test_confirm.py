"""`mgkd best --confirm K --seeds S`: the top configs re-run under further seeds through Ray."""
import json
import shutil

import pytest

from mgkd.errors import ConfigError
from search.confirm import confirm
from search.tune import run_sweep

from conftest import mgkd
from sweep_helpers import study_trials, tiny_sweep


@pytest.fixture(scope="module")
def swept(tmp_path_factory, local_ray):
    """One finished sweep of a plain study, 3 trials of its whole budget (no pruning); each test
    confirms in a copy of its run dir."""
    spec = tiny_sweep(tmp_path_factory.mktemp("confirm"), modes=["plain"], num_samples=3,
                      scheduler={"grace_period": 4, "reduction_factor": 2})
    return run_sweep(spec)


def copy_of(result, tmp_path):
    target = tmp_path / result.run_dir.name
    shutil.copytree(result.run_dir, target)
    return target


def test_top_configs_are_rerun_with_more_seeds_and_ranked_by_mean(swept, tmp_path):
    run_dir = copy_of(swept, tmp_path)
    key = swept.studies[0].study.key
    ranking = confirm(run_dir, 2, 2)[key]
    stored = json.loads((run_dir / "confirm" / f"{key}.json").read_text())
    assert stored == ranking
    trials = {t.number: t for t in study_trials(run_dir, key)}
    top_two = sorted(trials.values(), key=lambda t: (-t.value, t.number))[:2]
    # The top two, and the paper default (trial 0) too, so the verdict compares like with like.
    assert {e["trial_number"] for e in ranking["entries"]} == {t.number for t in top_two} | {0}
    for entry in ranking["entries"]:
        assert entry["seeds"] == [0, 1, 2]
        assert entry["val_accs"][0] == trials[entry["trial_number"]].value  # the sweep's own run
        assert len(entry["val_accs"]) == 3 and None not in entry["val_accs"]
        assert entry["mean_val_acc"] == pytest.approx(sum(entry["val_accs"]) / 3)
    means = [e["mean_val_acc"] for e in ranking["entries"]]
    assert means == sorted(means, reverse=True)
    with pytest.raises(ConfigError, match="at least 1"):
        confirm(run_dir, 0, 2)


def test_best_confirm_from_the_command_line_shows_the_confirmed_winner(swept, tmp_path):
    run_dir = copy_of(swept, tmp_path)
    out = mgkd("best", run_dir, "--confirm", "1", "--seeds", "1", "--format", "json")
    assert out.returncode == 0, out.stderr
    (study,) = json.loads(out.stdout)["studies"]
    stored = json.loads((run_dir / "confirm" / f"{study['study']}.json").read_text())
    assert study["selected_by"] == "mean of 2 seeds"
    assert study["val_acc"] == pytest.approx(stored["entries"][0]["mean_val_acc"])
    assert 0 in {e["trial_number"] for e in stored["entries"]}  # the paper default is re-run too
    assert study["verdict"] in ("beats default", "within noise", "default best")
    # Winner and paper default ran on the same seeds: judged by the per-seed differences.
    entries = {e["trial_number"]: e for e in stored["entries"]}
    if study["trial_number"] != 0:
        assert study["verdict_basis"] == "paired differences over 2 seeds"
        assert study["verdict_test"] == "paired seed differences"
        diffs = [b - p for b, p in zip(entries[study["trial_number"]]["val_accs"],
                                       entries[0]["val_accs"])]
        assert study["gain_se"] == pytest.approx(abs(diffs[0] - diffs[1]) / 2, rel=1e-9)
    assert study["val_se"] is not None and study["val_size"] > 0
