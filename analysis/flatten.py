"""The nested experiment config <-> flat columns for pandas, and rebuilding a trial's config from
its flat search params (for trial dirs of older sweeps, whose params.json has no config)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from mgkd.config import ExperimentConfig, resolve
from spaces.names import LEVEL_FIELDS, NUM_LEVELS, level_name, split_level_name

# Config keys whose mappings become one column per entry, ``<key>.<entry>``.
MAPPING_KEYS: tuple[str, ...] = ("method_options", "data_options")
EXPERIMENT_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ExperimentConfig))


def _cell(value: Any) -> Any:
    """A value pandas keeps as one cell: lists become tuples, mappings JSON text."""
    if isinstance(value, list):
        return tuple(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _levels(value: Any) -> dict[str, Any]:
    levels = value if isinstance(value, list) else []
    out: dict[str, Any] = {NUM_LEVELS: len(levels)}
    for k, level in enumerate(levels):
        for name in LEVEL_FIELDS:
            out[level_name(k, name)] = level.get(name) if isinstance(level, dict) else None
    return out


def flatten_experiment(experiment: dict[str, Any]) -> dict[str, Any]:
    """One flat mapping: every config key; ``granularities`` as ``num_granularities`` and
    ``g<k>_<field>``; ``method_options`` / ``data_options`` as ``<key>.<name>``."""
    out: dict[str, Any] = {}
    for key in [*EXPERIMENT_KEYS, *(k for k in experiment if k not in EXPERIMENT_KEYS)]:
        if key not in experiment:
            continue
        value = experiment[key]
        if key == "granularities":
            out.update(_levels(value))
        elif key in MAPPING_KEYS:
            for name, option in (value or {}).items():
                out[f"{key}.{name}"] = _cell(option)
        else:
            out[key] = _cell(value)
    return out


def column_order(columns: set[str]) -> list[str]:
    """Config columns in the config's key order, levels by level then field, mappings after."""
    def rank(name: str) -> tuple[int, int, int, str]:
        parsed = split_level_name(name)
        if name == NUM_LEVELS or parsed is not None:
            position = EXPERIMENT_KEYS.index("granularities")
            level, field = (parsed if parsed else (-1, ""))
            return (position, level + 1, LEVEL_FIELDS.index(field) if field else 0, name)
        prefix = name.split(".", 1)[0]
        if prefix in MAPPING_KEYS and "." in name:
            return (len(EXPERIMENT_KEYS) + MAPPING_KEYS.index(prefix), 0, 0, name)
        if name in EXPERIMENT_KEYS:
            return (EXPERIMENT_KEYS.index(name), 0, 0, name)
        return (len(EXPERIMENT_KEYS) + len(MAPPING_KEYS), 0, 0, name)
    return sorted(columns, key=rank)


def rebuild_experiment(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A trial's resolved config from its study's base config and its flat search params
    (``num_granularities``, ``g<k>_<field>``, config keys), as the search space maps them.
    Raises ConfigError when the result is not a valid config."""
    data = dict(base)
    levels = [dict(g) for g in base.get("granularities") or []]
    has_levels = any(name == NUM_LEVELS or split_level_name(name) for name in params)
    count = int(params.get(NUM_LEVELS, len(levels)))
    rebuilt = []
    for k in range(count):
        level = levels[k] if k < len(levels) else {"weight": 1.0}
        for name in LEVEL_FIELDS:
            if level_name(k, name) in params:
                level[name] = params[level_name(k, name)]
        rebuilt.append(level)
    if has_levels:
        data["granularities"] = rebuilt
    data.update({k: v for k, v in params.items()
                 if k != NUM_LEVELS and split_level_name(k) is None})
    return resolve(ExperimentConfig.from_dict(data)).to_dict()
