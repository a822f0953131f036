"""Checks a whole space against its study's base config, before any Optuna or Ray work.

Every value a declaration can produce is run through the config's own validation, so a space
never yields a trial config that ``ExperimentConfig`` would reject.
"""
from __future__ import annotations

from typing import Any, Mapping

from mgkd.catalog.methods import method_defaults, mode_has_levels
from mgkd.config import ExperimentConfig
from mgkd.errors import ConfigError
from spaces.names import (CONFIG_KEYS, HEAD_FIELDS, INT_CONFIG_KEYS, MAX_LEVELS, NUM_LEVELS,
                          STUDY_FIXED_KEYS, allowed_names, is_granularity_name, level_name,
                          parse_level_name)
from spaces.params import ParamSpec
from spaces.presets import reads_temperature

_PROBE_LEVEL = {"dim": 64, "temperature": 2.0, "weight": 1.0}  # a valid level to vary one field of


def max_levels(base: ExperimentConfig, params: Mapping[str, ParamSpec]) -> int:
    """The most levels any trial of the space can have."""
    if NUM_LEVELS in params:
        return int(max(params[NUM_LEVELS].bounds()))
    return len(base.granularities)


def _probe(name: str, base: ExperimentConfig, changes: dict[str, Any], value: Any) -> None:
    """Raise, naming ``name``, when ``base`` with ``changes`` is not a valid config."""
    try:
        base.replace(**changes)
    except ConfigError as err:
        raise ConfigError(f"{name}: the declared value {value!r} gives an invalid config: {err}") from None


def check_num_levels(spec: ParamSpec) -> None:
    if spec.type == "float":
        raise ConfigError(f"{NUM_LEVELS}: a level count is an integer; declare it as type int "
                          f"(low/high) or categorical (choices), within 0..{MAX_LEVELS}.")
    for value in spec.bounds():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LEVELS:
            raise ConfigError(f"{NUM_LEVELS}: {value!r} is not a level count; allowed: integers "
                              f"0..{MAX_LEVELS}.")


def _check_level_param(base: ExperimentConfig, spec: ParamSpec, field: str) -> None:
    if field in HEAD_FIELDS and spec.type != "categorical":
        raise ConfigError(f"{spec.name}: declare it as type categorical with a list of choices: every "
                          f"(dim, temperature) a trial may ask for needs a teacher head trained ahead "
                          f"of time in the head bank, so the set must be finite and known.")
    for value in spec.bounds():
        if field == "dim" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{spec.name}: head widths are integers, got {value!r}.")
        level = {**_PROBE_LEVEL, field: value}
        _probe(spec.name, base, {"granularities": [level]}, value)


def _check_config_param(base: ExperimentConfig, spec: ParamSpec, params: Mapping[str, ParamSpec]) -> None:
    name = spec.name
    if name in INT_CONFIG_KEYS and spec.type == "float":
        raise ConfigError(f"{name}: the config key is an integer; declare it as type int or categorical.")
    if name == "feature_weight" and not method_defaults(base.method).uses_feature_weight:
        raise ConfigError(f"feature_weight: method '{base.method}' has no feature term, so searching "
                          "its weight changes nothing; remove the declaration.")
    if name == "temperature" and "logit_weight" not in params and not reads_temperature(base):
        raise ConfigError(f"temperature: nothing in this study reads the logit temperature (method "
                          f"'{base.method}', mode {base.mode}, logit_weight 0); remove the declaration "
                          "or declare logit_weight as well.")
    for value in spec.bounds():
        _probe(name, base, {name: value}, value)


def _check_levels(base: ExperimentConfig, params: Mapping[str, ParamSpec]) -> None:
    """Every declared level reachable; every reachable level's head fields known."""
    reach = max_levels(base, params)
    source = (f"{NUM_LEVELS} is at most {reach}" if NUM_LEVELS in params
              else f"{NUM_LEVELS} is not searched and the base config has {reach} level(s)")
    for name in params:
        parsed = parse_level_name(name)
        if parsed is not None and parsed[0] >= reach:
            raise ConfigError(f"{name}: level {parsed[0]} is never used because {source}; remove the "
                              f"declaration or allow more levels.")
    if NUM_LEVELS not in params:
        return
    for level in range(len(base.granularities), reach):
        for field in sorted(HEAD_FIELDS):
            name = level_name(level, field)
            if name not in params:
                raise ConfigError(f"{name}: {NUM_LEVELS} can reach {reach} levels but level {level} has no "
                                  f"{field}: the base config has {len(base.granularities)} level(s). "
                                  f"Declare {name} (e.g. {{type: categorical, choices: [64, 256]}}).")


def check_space(base: ExperimentConfig, params: Mapping[str, ParamSpec]) -> None:
    """Raise ``ConfigError`` (naming the parameter) for anything the space could get wrong."""
    for name, spec in params.items():
        if not isinstance(spec, ParamSpec) or spec.name != name:
            raise ConfigError(f"{name}: expected a ParamSpec named {name!r}, got {spec!r}.")
        if is_granularity_name(name) and not mode_has_levels(base.mode):
            raise ConfigError(f"{name}: mode plain has no granularity terms, so there is nothing to "
                              "search; use mode mag or mas, or remove the declaration.")
        parsed = parse_level_name(name)
        if name == NUM_LEVELS:
            check_num_levels(spec)
        elif parsed is not None:
            _check_level_param(base, spec, parsed[1])
        elif name in CONFIG_KEYS:
            _check_config_param(base, spec, params)
        elif name in STUDY_FIXED_KEYS:
            raise ConfigError(f"{name}: cannot be searched: {STUDY_FIXED_KEYS[name]}. Searchable names: "
                              f"{allowed_names()}.")
        else:
            raise ConfigError(f"{name}: unknown search parameter; allowed: {allowed_names()}.")
    _check_levels(base, params)
