"""Warm starts, without Ray: a source trial's params fitted into another study's space (clip,
drop, levels by position, paper-default fill) and the sweep file's ``warm_start`` key."""
from __future__ import annotations

from typing import Any

import pytest

from mgkd.config import ExperimentConfig
from mgkd.config.sweep import SweepSpec
from mgkd.errors import ConfigError
from spaces import build_space, fit_params

NARROW = {"preset": "full",
          "num_granularities": {"type": "int", "low": 1, "high": 3},
          "g*_dim": {"type": "categorical", "choices": [16, 64, 256]},
          "g*_temperature": {"type": "categorical", "choices": [2, 8]},
          "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}}


def base(student: str = "resnet8", **overrides: Any) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"teacher": "resnet20", "student": student,
                                       "dataset": "digits", "method": "kd", "mode": "mas",
                                       "epochs": 4, **overrides})


def source_params(**changes: Any) -> dict[str, Any]:
    """A complete trial of the full preset's space (wider than NARROW)."""
    params = {"num_granularities": 2, "g0_dim": 64, "g0_temperature": 2.0, "g0_weight": 0.5,
              "g1_dim": 256, "g1_temperature": 8.0, "g1_weight": 2.0, "ce_weight": 0.4,
              "logit_weight": 1.5, "temperature": 3.0, "lr": 0.05, "weight_decay": 1e-3}
    params.update(changes)
    return params


def test_params_inside_the_space_are_taken_as_they_are():
    space = build_space(NARROW, base())
    fitted = fit_params(space, source_params())
    assert fitted.params == source_params(g0_temperature=2, g1_temperature=8)
    assert fitted.clipped == fitted.filled == fitted.ignored == [] and fitted.dropped is None
    assert fitted.params["g0_temperature"] == 2 and type(fitted.params["g0_temperature"]) is int
    space.to_config(fitted.params)  # a config the study accepts


def test_a_number_outside_the_range_is_clipped_to_the_nearer_end():
    space = build_space(NARROW, base())
    fitted = fit_params(space, source_params(lr=0.5, weight_decay=1e-7))
    assert fitted.params["lr"] == 0.1
    assert fitted.params["weight_decay"] == space.params["weight_decay"].low
    assert [line.split()[0] for line in fitted.clipped] == ["lr", "weight_decay"]
    assert "0.5 -> 0.1" in fitted.clipped[0]


def test_a_categorical_value_not_among_the_choices_drops_the_config():
    space = build_space(NARROW, base())
    fitted = fit_params(space, source_params(g1_dim=128))
    assert fitted.params is None
    assert "g1_dim 128 is not one of this space's choices [16, 64, 256]" in fitted.dropped


def test_levels_map_by_position_and_a_clipped_count_leaves_the_outer_levels_out():
    space = build_space(NARROW, base())
    four = source_params(num_granularities=4, g2_dim=16, g2_temperature=2.0, g2_weight=3.0,
                         g3_dim=512, g3_temperature=16.0, g3_weight=1.0)
    fitted = fit_params(space, four)
    assert fitted.params["num_granularities"] == 3
    assert (fitted.params["g2_dim"], fitted.params["g2_weight"]) == (16, 3.0)  # level 2 is level 2
    assert not any(name.startswith("g3_") for name in fitted.params)  # 512 / 16 never checked
    assert "levels from 3 on are left out" in fitted.clipped[0]
    config = space.to_config(fitted.params)
    assert [g.dim for g in config.granularities] == [64, 256, 16]


def test_a_categorical_level_count_outside_its_choices_drops_the_config():
    space = build_space({**NARROW, "num_granularities": {"type": "categorical",
                                                         "choices": [1, 2]}}, base())
    assert fit_params(space, source_params(num_granularities=3, g2_dim=16, g2_temperature=2,
                                           g2_weight=1.0)).params is None
    assert fit_params(space, source_params(num_granularities=1)).params == {
        "num_granularities": 1, "g0_dim": 64, "g0_temperature": 2, "g0_weight": 0.5,
        "ce_weight": 0.4, "logit_weight": 1.5, "temperature": 3.0, "lr": 0.05,
        "weight_decay": 1e-3}


def test_unsearched_source_names_are_ignored_and_missing_ones_take_the_paper_default():
    space = build_space(NARROW, base())
    only_levels = {"num_granularities": 3, "g0_dim": 16, "g0_temperature": 8, "g0_weight": 2.0,
                   "g1_dim": 16, "g1_temperature": 8, "g1_weight": 2.0, "g2_dim": 64,
                   "g2_temperature": 2, "momentum": 0.8}
    fitted = fit_params(space, only_levels)
    paper = space.paper_default()
    assert fitted.ignored == ["momentum"]
    for name in ("ce_weight", "logit_weight", "temperature", "lr", "weight_decay"):
        assert fitted.params[name] == paper[name]
    assert fitted.params["g2_weight"] == 1.0  # beyond the paper's two levels: weight 1
    assert set(fitted.filled) == {"ce_weight", "logit_weight", "temperature", "lr",
                                  "weight_decay", "g2_weight"}


def test_an_int_is_rounded_before_it_is_clipped():
    space = build_space({**NARROW, "num_granularities": {"type": "int", "low": 1, "high": 3}},
                        base())
    assert fit_params(space, source_params(num_granularities=2.0)).params["num_granularities"] == 2


# ---- the sweep file's key ------------------------------------------------------------------------
def sweep(**warm: Any) -> dict[str, Any]:
    return {"name": "w", "pairs": [{"teacher": "resnet20", "student": "resnet8"}],
            "num_samples": 4, "warm_start": warm}


def test_warm_start_key_parses_round_trips_and_makes_its_dirs_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = SweepSpec.from_dict(sweep(**{"from": ["runs/a"], "top_k": 2}))
    assert spec.warm_start.from_ == [str(tmp_path / "runs" / "a")]
    assert spec.to_dict()["warm_start"] == {"from": [str(tmp_path / "runs" / "a")], "top_k": 2}
    assert SweepSpec.from_dict(spec.to_dict()) == spec
    assert SweepSpec.from_dict({**sweep(), "warm_start": None}).warm_start is None


@pytest.mark.parametrize(("warm", "words"), [
    ({"from": []}, ["warm_start.from", "non-empty list of run dirs"]),
    ({"from": ["a"], "top_k": 0}, ["warm_start.top_k", "1 or more"]),
    ({"top_k": 1}, ["warm_start", "missing required key(s) ['from']"]),
    ({"from": ["a"], "k": 1}, ["warm_start", "allowed keys: from, top_k"]),
    ({"from": ["a"], "top_k": 4}, ["warm_start.top_k", "num_samples 4", "at most 3"]),
])
def test_bad_warm_start_keys_are_refused_naming_the_key(warm, words):
    with pytest.raises(ConfigError) as err:
        SweepSpec.from_dict(sweep(**warm))
    for word in words:
        assert word in str(err.value)
