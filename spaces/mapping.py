"""Flat trial parameters <-> the nested experiment config.

A name the space does not sample keeps the base config's value; a level field that is not sampled
takes the base config's level of the same index (weight: 1 when the base has no such level).
"""
from __future__ import annotations

from typing import Any, Mapping

from mgkd.config import ExperimentConfig
from mgkd.errors import ConfigError
from spaces.names import LEVEL_FIELDS, NUM_LEVELS, level_name, parse_level_name
from spaces.params import ParamSpec


def _has_levels(params: Mapping[str, ParamSpec]) -> bool:
    return any(name == NUM_LEVELS or parse_level_name(name) for name in params)


def level_count(base: ExperimentConfig, flat: Mapping[str, Any]) -> int:
    """How many levels a trial with these flat params has."""
    return int(flat.get(NUM_LEVELS, len(base.granularities)))


def _level(base: ExperimentConfig, flat: Mapping[str, Any], level: int) -> dict[str, Any]:
    base_level = base.granularities[level].to_dict() if level < len(base.granularities) else {"weight": 1.0}
    out = {}
    for field in LEVEL_FIELDS:
        name = level_name(level, field)
        if name in flat:
            out[field] = flat[name]
        elif field in base_level:
            out[field] = base_level[field]
        else:
            raise ConfigError(f"{name}: level {level} is used but has no {field}: it was not given and "
                              f"the base config has only {len(base.granularities)} level(s).")
    return out


def flat_to_changes(base: ExperimentConfig, params: Mapping[str, ParamSpec],
                    flat: Mapping[str, Any]) -> dict[str, Any]:
    """The config changes that flat params ask for, each value checked against its declaration."""
    unknown = sorted(set(flat) - set(params))
    if unknown:
        raise ConfigError(f"unknown trial parameter(s) {unknown}; this space samples: "
                          f"{', '.join(params) or 'nothing'}.")
    for name, value in flat.items():
        if not params[name].contains(value):
            raise ConfigError(f"{name}: {value!r} is outside this space ({params[name].domain()}).")
    count = level_count(base, flat)
    changes = {name: value for name, value in flat.items()
               if name != NUM_LEVELS and parse_level_name(name) is None}
    for name in flat:
        parsed = parse_level_name(name)
        if parsed is not None and parsed[0] >= count:
            raise ConfigError(f"{name}: given for level {parsed[0]}, but the trial has {count} level(s) "
                              f"({NUM_LEVELS}); levels beyond the count are not sampled.")
    if _has_levels(params):
        changes["granularities"] = [_level(base, flat, level) for level in range(count)]
    return changes


def config_to_flat(config: ExperimentConfig, params: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """The flat params of a (resolved) config, for the names the space samples.

    Conditional like ``sample``: level fields only for the levels the config has.
    """
    flat: dict[str, Any] = {}
    levels = config.granularities
    for name, spec in params.items():
        parsed = parse_level_name(name)
        if name == NUM_LEVELS:
            value = len(levels)
        elif parsed is not None:
            if parsed[0] >= len(levels):
                continue
            value = getattr(levels[parsed[0]], parsed[1])
        else:
            value = getattr(config, name)
        flat[name] = spec.canonical(value)
    return flat
