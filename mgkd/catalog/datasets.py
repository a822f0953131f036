"""The data sets: each one's task, its ``data_options`` (integer options with ranges and defaults)
and where its loader lives, as a plain table that loads without torch.

The one list of data sets: ``mgkd config``, config validation and the sweep checks read it, and
:mod:`mgkd.data` finds each data set's source object (the loader) by the entry's ``source``.
Adding a data set is its source module under ``mgkd/data`` plus one entry in :data:`DATASETS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from mgkd.catalog.tasks import CLASSIFICATION, REID
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
    why: str = ""  # why the range is what it is, and what to set; follows the error


    def check(self, dataset: str, key: str, value: Any) -> int | None:
        """``value`` if allowed, else a ConfigError naming the key and the allowed values."""
        if value is None and self.nullable:
            return None
        if not is_int(value) or value < self.low or (self.high is not None and value > self.high):
            null = "null or " if self.nullable else ""
            raise ConfigError(
                f"data.options.{key}: for {dataset!r} must be {null}an integer "
                f"{_range_text(self.low, self.high)}, got {value!r}"
                + (f"; {self.why}" if self.why else "")
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
                "remove data_options or pick a data set that takes them "
                f"({', '.join(_WITH_OPTIONS)})"
            )
        return {}
    allowed = ", ".join(schema)
    result = {key: option.default for key, option in schema.items()}
    for key, value in options.items():
        if key not in schema:
            raise ConfigError(f"data.options.{key}: unknown option for {dataset!r}; allowed: {allowed}")
        result[key] = schema[key].check(dataset, key, value)
    return result


@dataclass(frozen=True)
class DatasetEntry:
    """``task``: what a run on it learns (:mod:`mgkd.catalog.tasks`). ``source``:
    ``"<module>:<object>"`` under ``mgkd.data``, the loader. ``options``: the ``data_options`` it
    takes (none: only ``{}`` or null is accepted)."""

    task: str
    source: str
    options: Mapping[str, IntOption] = field(default_factory=dict)

    def __post_init__(self) -> None:  # read-only tables
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


# K, the images of each identity in a re-ID training batch: the batch-hard triplet loss needs a
# positive pair, so K >= 2 (with K = 1 the term would be silently 0).
MIN_INSTANCES = 2
INSTANCES = IntOption(4, MIN_INSTANCES, 64, why=(
    f"the batch-hard triplet loss needs K >= {MIN_INSTANCES} images of each identity in a batch "
    "(with K = 1 no positive pair exists and the triplet term is silently 0). Set instances: 4 "
    "(the usual 16 identities x 4 images) or another K >= 2 that divides batch_size."))

# Every re-ID data set's options: image size, K and a cap on the training identities.
REID_OPTIONS: Mapping[str, IntOption] = MappingProxyType({
    "height": IntOption(256, 16, 1024),
    "width": IntOption(128, 16, 1024),
    "instances": INSTANCES,
    "max_identities": IntOption(None, 2, None, nullable=True),
})

DATASETS: Mapping[str, DatasetEntry] = MappingProxyType({
    "cifar100": DatasetEntry(CLASSIFICATION, "cifar:CIFAR100"),
    "cifar10": DatasetEntry(CLASSIFICATION, "cifar:CIFAR10"),
    # scikit-learn's bundled handwritten digits: the embedded default of the demo
    "digits": DatasetEntry(CLASSIFICATION, "digits:DIGITS"),
    "synthetic": DatasetEntry(CLASSIFICATION, "synthetic:SYNTHETIC", {
        "num_train": IntOption(512, 1),
        "num_test": IntOption(128, 1),
        "num_classes": IntOption(10, 2, 1000),
        "image_size": IntOption(32, 8, 512),
        "seed": IntOption(0, 0, 2**63 - 1),
    }),
    # transfer targets (and trainable like any classification set): read from their official
    # files, resized once to image_size (the paper's transfer experiment uses 32)
    "stl10": DatasetEntry(CLASSIFICATION, "stl10:STL10", {"image_size": IntOption(32, 8, 96)}),
    "tiny_imagenet": DatasetEntry(CLASSIFICATION, "tiny_imagenet:TINY_IMAGENET",
                                  {"image_size": IntOption(32, 8, 64)}),
    "market1501": DatasetEntry(REID, "market1501:MARKET1501", REID_OPTIONS),
    "dukemtmcreid": DatasetEntry(REID, "dukemtmcreid:DUKEMTMCREID", REID_OPTIONS),
    "msmt17": DatasetEntry(REID, "msmt17:MSMT17", REID_OPTIONS),
})
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
_WITH_OPTIONS: tuple[str, ...] = tuple(name for name, entry in DATASETS.items() if entry.options)


def dataset_entry(name: str, key: str = "dataset") -> DatasetEntry:
    """The entry of data set ``name``; ConfigError naming ``key`` and the known names otherwise."""
    entry = DATASETS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ConfigError(f"{key}: unknown data set {name!r}; allowed: {', '.join(DATASET_NAMES)}")
    return entry


def dataset_task(name: str) -> str:
    """The task a run on data set ``name`` learns (classification; reid for the re-ID sets)."""
    return dataset_entry(name).task


def validate_data_options(dataset: str, options: Any) -> dict[str, Any]:
    """``options`` of the (known) data set completed with defaults; ConfigError naming the key."""
    return check_int_options(dataset, options, dataset_entry(dataset).options)
