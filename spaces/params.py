"""One declared hyperparameter (``ParamSpec``) and the parsing of a YAML declaration into one.

A declaration is a mapping ``{type: float|int|categorical, low, high, log, choices}``; every check
raises ``ConfigError`` naming the parameter and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import optuna

from mgkd.errors import ConfigError

PARAM_TYPES: tuple[str, ...] = ("float", "int", "categorical")
DECLARATION_KEYS: tuple[str, ...] = ("type", "low", "high", "log", "choices")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: a float/int range (optionally log-scaled) or a tuple of choices."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def __post_init__(self) -> None:
        if self.choices is not None and not isinstance(self.choices, tuple):
            object.__setattr__(self, "choices", tuple(self.choices))
        self._check()

    def _check(self) -> None:
        name = self.name
        if self.type not in PARAM_TYPES:
            raise ConfigError(f"{name}.type: unknown type {self.type!r}; allowed: {', '.join(PARAM_TYPES)}.")
        if self.type == "categorical":
            if self.low is not None or self.high is not None or self.log:
                raise ConfigError(f"{name}: a categorical parameter takes only choices, not low/high/log.")
            if not self.choices:
                raise ConfigError(f"{name}.choices: a categorical parameter needs a non-empty list of "
                                  "choices, e.g. choices: [32, 64].")
            for choice in self.choices:
                if choice is not None and not isinstance(choice, (bool, int, float, str)):
                    raise ConfigError(f"{name}.choices: {choice!r} is not a number, string, bool or null.")
            if len(set(self.choices)) != len(self.choices):
                raise ConfigError(f"{name}.choices: {list(self.choices)} repeats a value; list each once.")
            return
        if self.choices is not None:
            raise ConfigError(f"{name}: choices only go with type categorical; a {self.type} parameter "
                              "takes low, high and log.")
        for key in ("low", "high"):
            value = getattr(self, key)
            if not _is_number(value):
                raise ConfigError(f"{name}.{key}: a {self.type} parameter needs a finite number, "
                                  f"got {value!r}.")
            if self.type == "int" and value != int(value):
                raise ConfigError(f"{name}.{key}: an int parameter needs an integer, got {value!r}.")
        if not self.low < self.high:
            raise ConfigError(f"{name}: low ({self.low}) must be less than high ({self.high}).")
        if not isinstance(self.log, bool):
            raise ConfigError(f"{name}.log: expected true or false, got {self.log!r}.")
        if self.log and self.low <= 0:
            raise ConfigError(f"{name}: log: true needs low > 0, got low {self.low}.")

    # ---- sampling -------------------------------------------------------------------------------
    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for this parameter (also works on Ray's define-by-run trial proxy)."""
        if self.type == "float":
            return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    # ---- values ---------------------------------------------------------------------------------
    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this parameter can take."""
        if self.type == "categorical":
            return any(_same(value, choice) for choice in self.choices)
        if not _is_number(value):
            return False
        if self.type == "int" and value != int(value):
            return False
        return self.low <= value <= self.high

    def canonical(self, value: Any) -> Any:
        """``value`` as this parameter yields it: the matching choice object, an int or a float."""
        if self.type == "categorical":
            for choice in self.choices:
                if _same(value, choice):
                    return choice
            return value
        if self.type == "int":
            return int(value)
        return float(value)

    def bounds(self) -> list[Any]:
        """The values that bound this parameter: both ends of a range, or every choice."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def domain(self) -> str:
        """A short human-readable domain, e.g. ``float in [0.1, 10] (log)``."""
        if self.type == "categorical":
            return f"one of {list(self.choices)}"
        return f"{self.type} in [{self.low}, {self.high}]" + (" (log)" if self.log else "")

    def to_dict(self) -> dict[str, Any]:
        """The declaration as plain YAML-able data (the inverse of ``parse_param``)."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        return {"type": self.type, "low": self.low, "high": self.high, "log": self.log}


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 (YAML booleans are not numbers here)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def parse_param(name: str, declaration: Any) -> ParamSpec:
    """Turn a YAML declaration ``{type, low, high, log, choices}`` into a ``ParamSpec``."""
    if isinstance(declaration, ParamSpec):
        return dataclasses.replace(declaration, name=name)
    if not isinstance(declaration, Mapping):
        raise ConfigError(f"{name}: a parameter declaration must be a mapping with keys "
                          f"{', '.join(DECLARATION_KEYS)}, e.g. {{type: float, low: 0.1, high: 10, "
                          f"log: true}}; got {declaration!r}.")
    unknown = sorted(str(k) for k in set(declaration) - set(DECLARATION_KEYS))
    if unknown:
        raise ConfigError(f"{name}: unknown declaration key(s) {unknown}; allowed: "
                          f"{', '.join(DECLARATION_KEYS)}.")
    if "type" not in declaration:
        raise ConfigError(f"{name}.type: missing; allowed: {', '.join(PARAM_TYPES)}.")
    choices = declaration.get("choices")
    if choices is not None and not isinstance(choices, (list, tuple)):
        raise ConfigError(f"{name}.choices: expected a list of values, got {choices!r}.")
    return ParamSpec(name=name, type=declaration["type"], low=declaration.get("low"),
                     high=declaration.get("high"), log=declaration.get("log", False),
                     choices=None if choices is None else tuple(choices))
