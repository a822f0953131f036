"""The searcher and scheduler that let one Tuner drive many Optuna studies (no Ray cluster needed:
they run in the driver, so real Optuna studies and Ray's real ASHA are exercised directly)."""
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from mgkd.config import ExperimentConfig
from search.multistudy import (PAPER_DEFAULT_ATTR, MultiStudySearcher, PerStudyASHA, StudyEntry,
                               trial_outcome)
from spaces import build_space

SPACE = {"preset": "full", "g*_dim": {"type": "categorical", "choices": [16, 64, 256]},
         "g*_temperature": {"type": "categorical", "choices": [2, 8]}}


def entry(key, mode="mas", samples=3, epochs=4):
    base = ExperimentConfig.from_dict({"teacher": "resnet8", "student": "resnet8",
                                       "dataset": "synthetic", "mode": mode, "epochs": epochs})
    return StudyEntry(key=key, space=build_space(SPACE, base), num_samples=samples, epochs=epochs)


@pytest.fixture
def searcher(tmp_path):
    return MultiStudySearcher([entry("a"), entry("b", mode="plain", samples=2)],
                              f"sqlite:///{tmp_path / 'optuna.db'}", seed=1)


def load(tmp_path, key):
    return optuna.load_study(study_name=key, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_outcomes():
    assert trial_outcome({"val_acc": 50.0, "epoch": 4}, False, 4, "val_acc") == (
        TrialState.COMPLETE, 50.0)
    assert trial_outcome({"val_acc": 50.0, "epoch": 2}, False, 4, "val_acc")[0] == TrialState.PRUNED
    assert trial_outcome({"val_acc": float("nan"), "epoch": 4}, False, 4, "val_acc")[0] == TrialState.FAIL
    assert trial_outcome(None, True, 4, "val_acc")[0] == TrialState.FAIL


def test_paper_default_first_then_exactly_num_samples_then_finished(tmp_path, searcher):
    configs = [searcher.suggest(f"t{i}") for i in range(5)]
    assert searcher.suggest("t5") == Searcher.FINISHED
    by_study = {}
    for config in configs:
        by_study.setdefault(config["study"], []).append(config)
    assert {k: len(v) for k, v in by_study.items()} == {"a": 3, "b": 2}
    # Studies are interleaved (the next trial goes to the least-advanced study).
    assert [c["study"] for c in configs[:2]] == ["a", "b"]
    first_a = by_study["a"][0]
    paper = entry("a").space
    assert first_a["params"] == paper.paper_default()
    assert ExperimentConfig.from_dict(first_a["experiment"]) == paper.to_config(paper.paper_default())
    assert load(tmp_path, "a").trials[0].user_attrs[PAPER_DEFAULT_ATTR] is True
    assert ExperimentConfig.from_dict(by_study["b"][0]["experiment"]).granularities == []


def test_stopped_trials_are_pruned_with_their_curve_and_finished_ones_complete(tmp_path, searcher):
    ids = [f"t{i}" for i in range(5)]
    configs = {i: searcher.suggest(i) for i in ids}
    a_ids = [i for i in ids if configs[i]["study"] == "a"]
    for epoch in (1, 2):
        for i in a_ids:
            searcher.on_trial_result(i, {"val_acc": 10.0 * epoch, "epoch": epoch})
    searcher.on_trial_complete(a_ids[0], {"val_acc": 20.0, "epoch": 2})  # stopped by ASHA at 2/4
    searcher.on_trial_result(a_ids[1], {"val_acc": 70.0, "epoch": 4})
    searcher.on_trial_complete(a_ids[1], {"val_acc": 70.0, "epoch": 4})
    searcher.on_trial_complete(a_ids[2], error=True)
    trials = load(tmp_path, "a").get_trials()
    states = {t.user_attrs["ray_trial_id"]: t for t in trials}
    pruned = states[a_ids[0]]
    assert pruned.state == TrialState.PRUNED and pruned.intermediate_values == {1: 10.0, 2: 20.0}
    assert states[a_ids[1]].state == TrialState.COMPLETE and states[a_ids[1]].value == 70.0
    assert states[a_ids[2]].state == TrialState.FAIL
    searcher.on_trial_complete(a_ids[1], {"val_acc": 1.0, "epoch": 4})  # told twice: no error
    assert load(tmp_path, "a").best_value == 70.0


def test_state_round_trip_and_orphans_are_reused(tmp_path, searcher):
    first = searcher.suggest("t0")
    searcher.save(str(tmp_path / "state.pkl"))
    searcher.suggest("t1")  # asked, then the driver "dies" before saving its state again
    restored = MultiStudySearcher([entry("a"), entry("b", mode="plain", samples=2)],
                                  f"sqlite:///{tmp_path / 'optuna.db'}", seed=1)
    restored.restore(str(tmp_path / "state.pkl"))
    again = restored.suggest("t1-again")
    assert again["study"] == "b" and again["trial_number"] == 0  # the orphan, not a new trial
    for i in range(3):
        restored.suggest(f"n{i}")
    assert restored.suggest("end") == Searcher.FINISHED
    assert len(load(tmp_path, "a").trials) == 3 and len(load(tmp_path, "b").trials) == 2
    assert first["study"] == "a"


def fake_trial(trial_id, study):
    return SimpleNamespace(trial_id=trial_id, config={"study": study})


def test_asha_compares_trials_only_within_their_study():
    scheduler = PerStudyASHA({"strong": 4, "weak": 4}, grace_period=1, reduction_factor=2)
    strong = [fake_trial(f"s{i}", "strong") for i in range(3)]
    weak = [fake_trial(f"w{i}", "weak") for i in range(2)]
    for trial in strong + weak:
        scheduler.on_trial_add(None, trial)
    for i, trial in enumerate(strong):
        scheduler.on_trial_result(None, trial, {"epoch": 1, "val_acc": 90.0 + i})
    # The weak study's trials score far below the strong study's at the same rung, but are only
    # compared with each other: its better trial goes on.
    first = scheduler.on_trial_result(None, weak[0], {"epoch": 1, "val_acc": 10.0})
    second = scheduler.on_trial_result(None, weak[1], {"epoch": 1, "val_acc": 12.0})
    assert first == TrialScheduler.CONTINUE and second == TrialScheduler.CONTINUE
    third = scheduler.on_trial_result(None, fake_trial("w2", "weak"), {"epoch": 1, "val_acc": 1.0})
    assert third == TrialScheduler.STOP  # the worst of its own study at the rung is stopped
    assert scheduler.on_trial_result(None, strong[0], {"epoch": 4, "val_acc": 1.0}) == TrialScheduler.STOP


def test_trials_finished_after_the_last_saved_state_count_on_restore(tmp_path, searcher):
    """A driver killed after Ray's last searcher snapshot may already have asked, run and told
    more trials; a searcher restored from that snapshot must not run them again on top."""
    first = searcher.suggest("t0")
    snapshot = searcher.get_state()
    searcher.on_trial_complete("t0", {"val_acc": 40.0, "epoch": 4})
    for trial_id in ("t1", "t2"):  # asked and finished after the snapshot
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, {"val_acc": 50.0, "epoch": 4})

    restored = MultiStudySearcher([entry("a"), entry("b", mode="plain", samples=2)],
                                  f"sqlite:///{tmp_path / 'optuna.db'}", seed=1)
    restored.set_state(snapshot)
    restored.on_trial_complete("t0", {"val_acc": 40.0, "epoch": 4})  # Ray re-reports t0
    more = []
    while (config := restored.suggest(f"r{len(more)}")) != Searcher.FINISHED:
        more.append(config)
    assert first["study"] == "a"
    assert len(more) == 5 - 3  # 3 of the 5 samples were already done
    assert len(load(tmp_path, "a").trials) == 3 and len(load(tmp_path, "b").trials) == 2


def test_the_driver_survives_another_process_creating_the_database_at_the_same_moment(
        tmp_path, monkeypatch):
    """The race CI hit: another opener (a script polling the run) writes the schema version after
    the driver read it as missing and before the driver writes it; the driver's write then fails
    on the duplicate row. Reproduced exactly: the other opener runs at that instant."""
    from alembic.runtime.migration import HeadMaintainer
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    insert_version = HeadMaintainer._insert_version
    raced = []

    def other_process_writes_first(self, version):
        if not raced:
            raced.append(True)
            optuna.storages.RDBStorage(url).engine.dispose()  # writes the version itself
        insert_version(self, version)

    monkeypatch.setattr(HeadMaintainer, "_insert_version", other_process_writes_first)
    searcher = MultiStudySearcher([entry("a")], url, seed=1)
    assert searcher.suggest("t1") is not None  # opened on its second attempt, then sampled
    assert raced
    assert [t.state for t in load(tmp_path, "a").trials] == [TrialState.RUNNING]
