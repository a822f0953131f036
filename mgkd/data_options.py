"""Checking a data set's ``data_options``: integer options with ranges, completed with defaults.

Loads without torch (``mgkd config`` and config validation use it): every data set's option table
lives here, and the sources in :mod:`mgkd.data` validate against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from mgkd.errors import ConfigError


def is_int(value: Any) -> bool:
    """True for a real integer (``bool`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _range_text(low: int, high: int | None) -> str:
    return f">= {low}" if high is None else f"in [{low}, {high}]"


def as_mapping(options: Any) -> Mapping[str, Any]:
    """``options`` as a mapping (``None`` means no options)."""
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise ConfigError(f"data.options must be a mapping, got {type(options).__name__}")
    return options


@dataclass(frozen=True)
class IntOption:
    """One integer option: default (None allowed only when ``nullable``) and inclusive range."""

    default: int | None
    low: int
    high: int | None = None
    nullable: bool = False

    def check(self, dataset: str, key: str, value: Any) -> int | None:
        """``value`` if allowed, else a ConfigError naming the key and the allowed values."""
        if value is None and self.nullable:
            return None
        if not is_int(value) or value < self.low or (self.high is not None and value > self.high):
            null = "null or " if self.nullable else ""
            raise ConfigError(
                f"data.options.{key}: for {dataset!r} must be {null}an integer "
                f"{_range_text(self.low, self.high)}, got {value!r}"
            )
        return value


def check_int_options(dataset: str, options: Any, schema: Mapping[str, IntOption]) -> dict[str, Any]:
    """Validate ``options`` against ``schema`` and return them completed with defaults.

    A data set with an empty schema accepts only ``None`` or ``{}``.
    """
    options = as_mapping(options)
    if not schema:
        if options:
            raise ConfigError(
                f"data.options: data set {dataset!r} takes no options (got {sorted(options)}); "
                f"remove data_options or pick a data set that takes them ({', '.join(DATA_OPTIONS)})"
            )
        return {}
    allowed = ", ".join(schema)
    result = {key: option.default for key, option in schema.items()}
    for key, value in options.items():
        if key not in schema:
            raise ConfigError(f"data.options.{key}: unknown option for {dataset!r}; allowed: {allowed}")
        result[key] = schema[key].check(dataset, key, value)
    return result


#: The options of every data set that takes any (the others accept only ``None`` or ``{}``).
DATA_OPTIONS: Mapping[str, Mapping[str, IntOption]] = MappingProxyType({
    "synthetic": MappingProxyType({
        "num_train": IntOption(512, 1),
        "num_test": IntOption(128, 1),
        "num_classes": IntOption(10, 2, 1000),
        "image_size": IntOption(32, 8, 512),
        "seed": IntOption(0, 0, 2**63 - 1),
    }),
    "market1501": MappingProxyType({
        "height": IntOption(256, 16, 1024),
        "width": IntOption(128, 16, 1024),
        "instances": IntOption(4, 1, 64),
        "max_identities": IntOption(None, 2, None, nullable=True),
    }),
})


def validate_data_options(dataset: str, options: Any) -> dict[str, Any]:
    """``options`` of the (known) data set completed with defaults; ConfigError naming the key."""
    return check_int_options(dataset, options, DATA_OPTIONS.get(dataset, {}))
