"""Search spaces: presets, define-by-run sampling with real Optuna studies, flat <-> nested mapping,
the paper default as an enqueued first trial, inline declarations and their validation."""
from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
import yaml

from mgkd.config import ExperimentConfig, paper_granularities, resolve
from mgkd.errors import ConfigError
from spaces import (MAX_LEVELS, PRESETS, TEMPERATURE_CHOICES, WIDTH_CHOICES, ParamSpec, SearchSpace,
                    build_space, parse_param)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

LEVEL_NAMES = {f"g{k}_{f}" for k in range(MAX_LEVELS) for f in ("dim", "temperature", "weight")}
GRANULARITY_NAMES = {"num_granularities"} | LEVEL_NAMES


def base_config(method: str = "kd", mode: str = "mas", **overrides: Any) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"teacher": "resnet32x4", "student": "resnet8x4",
                                       "dataset": "cifar100", "method": method, "mode": mode,
                                       "epochs": 10, **overrides})


def new_study() -> optuna.Study:
    return optuna.create_study(direction="maximize",
                               sampler=optuna.samplers.TPESampler(seed=0, multivariate=True))


def toy_objective(flat: dict[str, Any]) -> float:
    """A deterministic score so TPE has something to model."""
    score = -abs(math.log(flat.get("ce_weight", 1.0)))
    score -= abs(flat.get("num_granularities", 2) - 2)
    return score + 0.01 * flat.get("g0_dim", 0) / 512


def level_names(count: int) -> set[str]:
    return {f"g{k}_{f}" for k in range(count) for f in ("dim", "temperature", "weight")}


def paper_reference(base: ExperimentConfig) -> ExperimentConfig:
    return resolve(base.replace(granularities=[g.to_dict() for g in paper_granularities()]))


# ---- sampling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["kd", "at"])
def test_sampled_trials_are_conditional_and_map_to_valid_configs(method):
    space = build_space("full", base_config(method, "mas"))
    study = new_study()
    seen_heads = set()
    counts = set()
    for _ in range(50):
        trial = study.ask()
        flat = space.sample(trial)
        assert flat == trial.params
        count = flat["num_granularities"]
        counts.add(count)
        assert {n for n in flat if n in GRANULARITY_NAMES} == {"num_granularities"} | level_names(count)
        config = space.to_config(flat)
        assert config == resolve(config)  # resolved: no None weights or lr left
        assert len(config.granularities) == count
        for k, level in enumerate(config.granularities):
            assert (level.dim, level.temperature, level.weight) == (
                flat[f"g{k}_dim"], flat[f"g{k}_temperature"], flat[f"g{k}_weight"])
            assert level.dim in WIDTH_CHOICES and level.temperature in TEMPERATURE_CHOICES
            seen_heads.add((level.dim, level.temperature))
        for name in ("ce_weight", "logit_weight", "temperature", "lr", "weight_decay"):
            assert getattr(config, name) == flat[name]
        assert space.from_config(config) == flat
        study.tell(trial, toy_objective(flat))
    assert counts == {1, 2, 3, 4}
    assert seen_heads <= set(space.head_levels())
    assert len(space.head_levels()) == len(WIDTH_CHOICES) * len(TEMPERATURE_CHOICES)


def test_weights_preset_keeps_the_base_levels():
    base = base_config("at", "mag", granularities=[{"dim": 32, "temperature": 4.0, "weight": 0.5}])
    space = build_space("weights", base)
    study = new_study()
    for _ in range(10):
        trial = study.ask()
        flat = space.sample(trial)
        config = space.to_config(flat)
        assert config.granularities == base.granularities
        assert config.feature_weight == flat["feature_weight"]
        study.tell(trial, toy_objective(flat))
    assert space.head_levels() == [(32, 4.0)]


# ---- presets --------------------------------------------------------------------------------------
WEIGHTS = {
    ("kd", "plain"): {"ce_weight", "logit_weight", "temperature"},
    ("kd", "mag"): {"ce_weight", "logit_weight", "temperature"},
    ("kd", "mas"): {"ce_weight", "logit_weight", "temperature"},
    ("at", "plain"): {"ce_weight", "feature_weight"},
    ("at", "mag"): {"ce_weight", "logit_weight", "temperature", "feature_weight"},  # paper: logit 1
    ("at", "mas"): {"ce_weight", "logit_weight", "temperature", "feature_weight"},
    ("dkd", "plain"): {"ce_weight", "temperature", "feature_weight"},  # dkd reads T through its option
}


@pytest.mark.parametrize(("method", "mode"), sorted(WEIGHTS))
def test_presets_hold_exactly_their_names(method, mode):
    base = base_config(method, mode)
    granularity = set() if mode == "plain" else GRANULARITY_NAMES
    expected = {"granularity": granularity, "weights": WEIGHTS[method, mode],
                "full": granularity | WEIGHTS[method, mode] | {"lr", "weight_decay"}}
    assert set(expected) == set(PRESETS)
    for preset, names in expected.items():
        assert set(build_space(preset, base).params) == names, preset
    assert set(build_space(None, base).params) == expected["full"]


def test_preset_ranges_are_centred_on_resolved_defaults():
    kd = build_space("full", base_config("kd", "mas")).params
    assert (kd["ce_weight"].low, kd["ce_weight"].high) == pytest.approx((0.02, 2.0))
    assert (kd["logit_weight"].low, kd["logit_weight"].high) == pytest.approx((0.08, 8.0))
    assert (kd["temperature"].low, kd["temperature"].high, kd["temperature"].log) == (1.0, 16.0, True)
    assert (kd["lr"].low, kd["lr"].high) == pytest.approx((0.01, 0.25))
    assert kd["g0_dim"].choices == WIDTH_CHOICES and kd["g3_temperature"].choices == TEMPERATURE_CHOICES
    at = build_space("weights", base_config("at", "mas")).params
    assert (at["feature_weight"].low, at["feature_weight"].high) == pytest.approx((100.0, 10000.0))
    assert (at["logit_weight"].low, at["logit_weight"].high) == pytest.approx((0.1, 10.0))  # mas: 1
    small_lr = build_space("full", base_config("kd", "mag", student="MobileNetV2")).params
    assert (small_lr["lr"].low, small_lr["lr"].high) == pytest.approx((0.002, 0.05))


def test_plain_mode_has_no_granularity_params_or_heads():
    space = build_space("granularity", base_config("kd", "plain"))
    assert space.params == {}
    assert space.head_levels() == []
    assert space.sample(new_study().ask()) == {}
    assert space.to_config({}).granularities == []


# ---- the paper default ------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "mode", "preset", "student"), [
    ("kd", "mas", "full", "resnet8x4"), ("at", "mag", "full", "resnet8x4"),
    ("at", "plain", "full", "resnet8x4"), ("dkd", "mas", "granularity", "resnet8x4"),
    ("crd", "mas", "weights", "MobileNetV2")])
def test_enqueued_paper_default_is_the_first_trial(method, mode, preset, student):
    base = base_config(method, mode, student=student)
    space = build_space(preset, base)
    paper = space.paper_default()
    assert set(paper) <= set(space.params)
    reference = paper_reference(base)
    assert space.to_config(paper) == reference
    study = new_study()
    study.enqueue_trial(paper)
    trial = study.ask()
    assert space.sample(trial) == paper
    assert space.to_config(space.sample(trial)) == reference


def test_paper_default_values():
    paper = build_space("full", base_config("kd", "mas")).paper_default()
    assert paper == {"num_granularities": 2, "g0_dim": 64, "g0_temperature": 2.0, "g0_weight": 1.0,
                     "g1_dim": 256, "g1_temperature": 8.0, "g1_weight": 1.0, "ce_weight": 0.2,
                     "logit_weight": 0.8, "temperature": 4.0, "lr": 0.05, "weight_decay": 5e-4}
    at = build_space("weights", base_config("at", "mas")).paper_default()
    assert at == {"ce_weight": 1.0, "logit_weight": 1.0, "temperature": 4.0, "feature_weight": 1000.0}


@pytest.mark.parametrize(("spec", "key"), [
    ({"g0_dim": {"type": "categorical", "choices": [32, 128]}}, "g0_dim"),
    ({"num_granularities": {"type": "categorical", "choices": [3, 4]}}, "num_granularities"),
    ({"preset": "weights", "lr": {"type": "float", "low": 0.1, "high": 0.5, "log": True}}, "lr"),
    ({"g*_temperature": {"type": "categorical", "choices": [1.0, 4.0]}}, "g0_temperature"),
])
def test_paper_default_outside_the_space_is_refused(spec, key):
    space = build_space(spec, base_config("kd", "mas"))
    with pytest.raises(ConfigError, match=rf"{key}.*paper default cannot be queued"):
        space.paper_default()


# ---- inline declarations ----------------------------------------------------------------------------
def test_inline_declaration_adds_a_parameter():
    space = build_space({"preset": "weights", "lr": {"type": "float", "low": 0.01, "high": 0.1,
                                                     "log": True}}, base_config("kd", "mas"))
    assert set(space.params) == {"ce_weight", "logit_weight", "temperature", "lr"}
    assert space.params["lr"] == ParamSpec("lr", "float", 0.01, 0.1, log=True)
    assert space.to_config({"lr": 0.02}).lr == 0.02


def test_inline_declarations_narrow_levels():
    base = base_config("kd", "mag")
    space = build_space({"preset": "granularity",
                         "num_granularities": {"type": "int", "low": 1, "high": 2},
                         "g*_temperature": {"type": "categorical", "choices": [2.0, 8.0]},
                         "g0_dim": {"type": "categorical", "choices": [32, 64]}}, base)
    assert not any(name.startswith(("g2_", "g3_")) for name in space.params)  # unreachable: dropped
    assert space.params["g0_dim"].choices == (32, 64)
    assert space.params["g1_dim"].choices == WIDTH_CHOICES
    assert space.params["g1_temperature"].choices == (2.0, 8.0)
    heads = set(space.head_levels())
    assert heads == {(d, t) for d in WIDTH_CHOICES for t in (2.0, 8.0)}
    study = new_study()
    for _ in range(20):
        trial = study.ask()
        flat = space.sample(trial)
        assert flat["g0_dim"] in (32, 64) and flat["num_granularities"] in (1, 2)
        study.tell(trial, toy_objective(flat))


def test_inline_config_keys_map_through():
    space = build_space({"preset": "weights",
                         "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
                         "momentum": {"type": "float", "low": 0.8, "high": 0.95},
                         "g*_weight": {"type": "float", "low": 0.5, "high": 2.0}},
                        base_config("at", "mag"))
    assert {"batch_size", "momentum", "g0_weight", "g1_weight"} <= set(space.params)
    assert "g2_weight" not in space.params  # the base has two levels
    flat = {"batch_size": 128, "momentum": 0.85, "g1_weight": 1.5}
    config = space.to_config(flat)
    assert (config.batch_size, config.momentum) == (128, 0.85)
    assert [g.weight for g in config.granularities] == [1.0, 1.5]
    assert space.from_config(config) == {**flat, "g0_weight": 1.0, "ce_weight": 1.0,
                                         "logit_weight": 1.0, "temperature": 4.0,
                                         "feature_weight": 1000.0}


def test_describe_is_yaml_and_rebuilds_the_same_space():
    base = base_config("at", "mas")
    space = build_space({"preset": "full", "g0_dim": {"type": "categorical", "choices": [64]}}, base)
    text = yaml.safe_dump(space.describe())
    described = yaml.safe_load(text)
    assert described["preset"] == "full" and described["method"] == "at"
    rebuilt = build_space(described["params"], base)
    assert rebuilt.params == space.params
    assert [tuple(x) for x in described["head_levels"]] == space.head_levels()


def test_search_space_can_be_built_directly():
    base = base_config("kd", "mag")
    space = SearchSpace(base, {"temperature": parse_param("temperature", {"type": "categorical",
                                                                          "choices": [2.0, 4.0]})})
    assert space.paper_default() == {"temperature": 4.0}
    assert space.head_levels() == [(64, 2.0), (256, 8.0)]


# ---- validation -----------------------------------------------------------------------------------
BAD_SPECS = [
    ("nonsense", r"preset.*granularity, weights, full"),
    ({"preset": "everything"}, r"preset.*granularity, weights, full"),
    (["weights"], r"space: expected a preset name"),
    ({"lr": {"type": "uniform", "low": 0.01, "high": 0.1}}, r"lr\.type.*float, int, categorical"),
    ({"lr": {"low": 0.01, "high": 0.1}}, r"lr\.type: missing"),
    ({"lr": {"type": "float", "low": 0.1, "high": 0.1}}, r"lr: low .* less than high"),
    ({"lr": {"type": "float", "low": 0.2, "high": 0.1}}, r"lr: low .* less than high"),
    ({"weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
     r"weight_decay: log.*low > 0"),
    ({"batch_size": {"type": "categorical", "choices": []}}, r"batch_size\.choices.*non-empty"),
    ({"batch_size": {"type": "categorical"}}, r"batch_size\.choices.*non-empty"),
    ({"batch_size": {"type": "categorical", "choices": [32, 32]}}, r"batch_size\.choices.*repeats"),
    ({"batch_size": {"type": "float", "low": 16, "high": 64}}, r"batch_size.*int or categorical"),
    ({"batch_size": {"type": "int", "low": 16.5, "high": 64}}, r"batch_size\.low.*integer"),
    ({"lr": {"type": "float", "lo": 0.01, "high": 0.1}}, r"lr: unknown declaration key.*'lo'"),
    ({"lr": 0.05}, r"lr: a parameter declaration must be a mapping"),
    ({"g0_dim": {"type": "int", "low": 16, "high": 512}}, r"g0_dim.*categorical.*head bank"),
    ({"g1_temperature": {"type": "float", "low": 1, "high": 8}}, r"g1_temperature.*categorical.*head bank"),
    ({"g*_dim": {"type": "int", "low": 16, "high": 512}}, r"g0_dim.*categorical.*head bank"),
    ({"g0_dim": {"type": "categorical", "choices": [64.5]}}, r"g0_dim.*integers"),
    ({"g0_temperature": {"type": "categorical", "choices": [0.0, 2.0]}}, r"g0_temperature.*0\.0"),
    ({"num_granularities": {"type": "float", "low": 1, "high": 3}}, r"num_granularities.*int"),
    ({"num_granularities": {"type": "int", "low": 1, "high": 6}}, r"num_granularities.*0\.\.4"),
    ({"preset": "weights", "g2_dim": {"type": "categorical", "choices": [64]}},
     r"g2_dim: level 2 is never used"),
    ({"num_granularities": {"type": "int", "low": 1, "high": 2},
      "g3_weight": {"type": "float", "low": 0.5, "high": 2}}, r"g3_weight: level 3 is never used"),
    ({"g9_dim": {"type": "categorical", "choices": [64]}}, r"g9_dim: unknown search parameter.*momentum"),
    ({"learning_rate": {"type": "float", "low": 0.01, "high": 0.1}},
     r"learning_rate: unknown search parameter.*num_granularities.*weight_decay"),
    ({"epochs": {"type": "int", "low": 5, "high": 10}}, r"epochs: cannot be searched"),
    ({"teacher_seed": {"type": "int", "low": 0, "high": 3}}, r"teacher_seed: cannot be searched"),
    ({"momentum": {"type": "float", "low": 0.5, "high": 1.5}}, r"momentum.*1\.5.*out of range"),
    ({"feature_weight": {"type": "float", "low": 1, "high": 10}}, r"feature_weight: method 'kd'"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_declarations_are_rejected_naming_the_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_space(spec, base_config("kd", "mas"))


@pytest.mark.parametrize("key", ["num_granularities", "g0_dim", "g*_weight"])
def test_granularity_declarations_are_left_to_mag_and_mas_studies(key):
    # One sweep-wide space serves plain, mag and mas studies alike.
    declaration = ({"type": "categorical", "choices": [64]} if key == "g0_dim"
                   else {"type": "int", "low": 1, "high": 2})
    plain = build_space({"preset": "weights", key: declaration}, base_config("kd", "plain"))
    assert not any(name.startswith(("g", "num_")) for name in plain.params)
    assert plain.head_levels() == []
    mas = build_space({"preset": "weights", key: declaration}, base_config("kd", "mas"))
    assert key.replace("*", "0") in mas.params or key in mas.params


def test_mas_logit_weight_range_cannot_reach_zero():
    with pytest.raises(ConfigError, match=r"logit_weight.*mas"):
        build_space({"logit_weight": {"type": "float", "low": 0.0, "high": 1.0}},
                    base_config("at", "mas"))


def test_temperature_nobody_reads_is_rejected():
    spec = {"preset": "weights", "temperature": {"type": "float", "low": 1, "high": 8}}
    with pytest.raises(ConfigError, match=r"temperature: nothing in this study reads"):
        build_space(spec, base_config("at", "plain"))  # plain: at has no logit term
    spec["logit_weight"] = {"type": "float", "low": 0.1, "high": 1.0}
    assert "temperature" in build_space(spec, base_config("at", "plain")).params


def test_levels_without_head_fields_are_rejected():
    spec = {"preset": "weights", "num_granularities": {"type": "int", "low": 1, "high": 3}}
    with pytest.raises(ConfigError, match=r"g2_dim: num_granularities can reach 3 levels"):
        build_space(spec, base_config("kd", "mag"))


def test_to_config_rejects_params_outside_the_space():
    space = build_space("full", base_config("kd", "mas"))
    paper = space.paper_default()
    with pytest.raises(ConfigError, match=r"g0_dim: 48 is outside"):
        space.to_config({**paper, "g0_dim": 48})
    with pytest.raises(ConfigError, match=r"unknown trial parameter.*'momentum'"):
        space.to_config({**paper, "momentum": 0.8})
    with pytest.raises(ConfigError, match=r"g1_dim: given for level 1.*1 level"):
        space.to_config({**paper, "num_granularities": 1})
