"""``SearchSpace``: the define-by-run space of one study (one pair, method and mode)."""
from __future__ import annotations

import itertools
from typing import Any, Mapping

import optuna

from mgkd.catalog.methods import mode_has_levels
from mgkd.config import ExperimentConfig, paper_granularities, resolve
from mgkd.errors import ConfigError
from spaces.mapping import config_to_flat, flat_to_changes
from spaces.names import NUM_LEVELS, canonical_order, level_name, parse_level_name
from spaces.params import ParamSpec
from spaces.validate import check_space, max_levels


class SearchSpace:
    """The parameters one study searches, on top of the study's base config.

    ``sample`` is the define-by-run function (for ``study.ask()`` or Ray's ``OptunaSearch``);
    ``to_config`` / ``from_config`` map its flat params to and from the nested experiment config.
    """

    def __init__(self, base: ExperimentConfig, params: Mapping[str, ParamSpec], *,
                 preset: str | None = None):
        self.base: ExperimentConfig = resolve(base)
        check_space(self.base, params)
        self.params: dict[str, ParamSpec] = {name: params[name] for name in canonical_order(list(params))}
        self.preset = preset

    # ---- sampling -------------------------------------------------------------------------------
    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest this space's params on ``trial``; level fields only for levels below the count."""
        flat: dict[str, Any] = {}
        count = len(self.base.granularities)
        for name, spec in self.params.items():
            parsed = parse_level_name(name)
            if parsed is not None and parsed[0] >= count:
                continue
            flat[name] = spec.suggest(trial)
            if name == NUM_LEVELS:
                count = flat[name]
        return flat

    # ---- flat <-> nested ----------------------------------------------------------------------
    def to_config(self, flat: Mapping[str, Any]) -> ExperimentConfig:
        """The validated, resolved trial config: the base with the flat params applied."""
        return resolve(self.base.replace(**flat_to_changes(self.base, self.params, flat)))

    def from_config(self, config: ExperimentConfig) -> dict[str, Any]:
        """The flat params of ``config`` for the names this space samples (inverse of ``to_config``)."""
        return config_to_flat(resolve(config), self.params)

    # ---- the paper's setting ----------------------------------------------------------------------
    def paper_config(self) -> ExperimentConfig:
        """The study's paper-default config: the base (its method defaults resolved) with the paper's
        two heads when the space chooses the levels; with the base's own levels otherwise."""
        if NUM_LEVELS in self.params:
            return resolve(self.base.replace(granularities=[g.to_dict() for g in paper_granularities()]))
        return resolve(self.base)

    def paper_default(self) -> dict[str, Any]:
        """Flat params reproducing ``paper_config()``, for ``study.enqueue_trial`` as the first trial.

        Raises ConfigError when a paper value lies outside this space's declarations.
        """
        reference = self.paper_config()
        flat = self.from_config(reference)
        for name, value in flat.items():
            spec = self.params[name]
            if not spec.contains(value):
                raise ConfigError(f"{name}: the paper default {value!r} lies outside this space "
                                  f"({spec.domain()}), so the paper default cannot be queued as a trial "
                                  "of this space; widen the declaration to include it.")
        differing = [key for key, value in self.to_config(flat).to_dict().items()
                     if reference.to_dict()[key] != value]
        if differing:
            raise ConfigError(f"the paper default cannot be queued with this space: its params do not "
                              f"reproduce the paper config in {differing} (the levels not searched come "
                              f"from the base config); declare those level fields or use the paper's "
                              "levels in the base config.")
        return flat

    # ---- the head bank and logs ---------------------------------------------------------------
    def head_levels(self) -> list[tuple[int, float]]:
        """Every (dim, temperature) a trial of this space (or the base) can ask for, sorted."""
        if not mode_has_levels(self.base.mode) or self.base.peers is not None:
            return []  # a peer group's encoders train from scratch: no teacher heads
        levels = {(g.dim, float(g.temperature)) for g in self.base.granularities}
        for level in range(max_levels(self.base, self.params)):
            levels.update(itertools.product(self._values(level, "dim"), self._values(level, "temperature")))
        return sorted((int(d), float(t)) for d, t in levels)

    def _values(self, level: int, field: str) -> list[Any]:
        spec = self.params.get(level_name(level, field))
        if spec is not None:
            return list(spec.choices)
        return [getattr(self.base.granularities[level], field)]

    def describe(self) -> dict[str, Any]:
        """Plain data (YAML-able) describing the space, for logs and sweep summaries."""
        return {
            "preset": self.preset,
            **({"peers": list(self.base.peers)} if self.base.peers is not None
               else {"teacher": self.base.teacher, "student": self.base.student}),
            "method": self.base.method,
            "mode": self.base.mode,
            "params": {name: spec.to_dict() for name, spec in self.params.items()},
            "fixed_levels": ([] if NUM_LEVELS in self.params or not mode_has_levels(self.base.mode)
                             else [g.to_dict() for g in self.base.granularities]),
            "head_levels": [[dim, temperature] for dim, temperature in self.head_levels()],
        }

    def __repr__(self) -> str:
        return (f"SearchSpace(method={self.base.method!r}, mode={self.base.mode!r}, "
                f"preset={self.preset!r}, params={list(self.params)})")
