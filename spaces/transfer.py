"""Fitting another study's trial parameters into this study's space (warm starts).

A finished study of the same method and mode on another pair (or with another space) knows which
region wins; its best trials are tried first by a new study. Their flat params are mapped name by
name, so granularity levels map by position (``g1_dim`` there is ``g1_dim`` here). The rules, one
per kind of parameter:

* a number outside this space's range is **clipped** to the nearer end (an int is rounded first);
* a categorical value that is not one of this space's choices **drops** the config (no nearest
  choice is right for a head width or a temperature: each names a trained head);
* ``num_granularities`` follows its declaration's kind: an int range clips the count (the levels
  beyond it are left out), a categorical one drops the config;
* a parameter this space searches and the source did not takes this study's paper-default value
  (a level beyond the paper's two has weight 1, as a level the base config lacks has);
* parameters this space does not search are ignored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from mgkd.errors import ConfigError
from spaces.names import NUM_LEVELS, parse_level_name
from spaces.params import ParamSpec
from spaces.space import SearchSpace

DEFAULT_LEVEL_WEIGHT = 1.0  # the weight of a level the base config lacks (spaces.mapping)


@dataclass
class Fitted:
    """One source trial's params in this space: ``params`` None when the config was dropped."""

    params: dict[str, Any] | None
    clipped: list[str] = field(default_factory=list)  # "lr 0.5 -> 0.2 (float in [0.01, 0.2] (log))"
    filled: list[str] = field(default_factory=list)  # names taken from this study's paper default
    ignored: list[str] = field(default_factory=list)  # source names this space does not search
    dropped: str | None = None  # why the config cannot be tried here


class _Drop(Exception):
    pass


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fit_value(spec: ParamSpec, value: Any, clipped: list[str]) -> Any:
    """``value`` as this parameter can take it: clipped into a range; _Drop when impossible."""
    if spec.type == "categorical":
        if spec.contains(value):
            return spec.canonical(value)
        raise _Drop(f"{spec.name} {value!r} is not one of this space's choices "
                    f"{list(spec.choices)}")
    if not _number(value):
        raise _Drop(f"{spec.name} {value!r} is not a number ({spec.domain()})")
    fitted = float(value)
    if spec.type == "int":
        fitted = float(round(fitted))
    fitted = min(max(fitted, float(spec.low)), float(spec.high))
    fitted = int(fitted) if spec.type == "int" else fitted
    if fitted != value:
        clipped.append(f"{spec.name} {value!r} -> {fitted!r} ({spec.domain()})")
    return fitted


def _missing(space: SearchSpace, name: str, paper: Mapping[str, Any], filled: list[str]) -> Any:
    if name in paper:
        filled.append(name)
        return paper[name]
    parsed = parse_level_name(name)
    if parsed is not None and parsed[1] == "weight":
        filled.append(name)
        return DEFAULT_LEVEL_WEIGHT
    raise _Drop(f"the source gives no {name} and this study's paper default has none either")


def fit_params(space: SearchSpace, params: Mapping[str, Any],
               paper: Mapping[str, Any] | None = None) -> Fitted:
    """Map another study's flat ``params`` into ``space`` (see the module's rules).

    ``paper`` is this space's ``paper_default()`` (computed when not given): the values of the
    parameters the source did not search. The result is a config ``space.to_config`` accepts."""
    paper = space.paper_default() if paper is None else paper
    out = Fitted(params=None, ignored=sorted(set(params) - set(space.params)))
    flat: dict[str, Any] = {}
    count = len(space.base.granularities)
    try:
        for name, spec in space.params.items():
            parsed = parse_level_name(name)
            if parsed is not None and parsed[0] >= count:
                continue
            value = (params[name] if name in params
                     else _missing(space, name, paper, out.filled))
            flat[name] = _fit_value(spec, value, out.clipped)
            if name == NUM_LEVELS:
                count = int(flat[name])
                if count < value:
                    out.clipped[-1] += f"; its levels from {count} on are left out"
        space.to_config(flat)
    except _Drop as why:
        out.dropped = str(why)
        return out
    except ConfigError as err:
        out.dropped = f"this study's config rejects it ({err})"
        return out
    out.params = flat
    return out
