"""When a run takes its teacher's outputs from the teacher view bank (``mgkd.knowledge.views``)
instead of running the teacher: the ``teacher_bank`` settings and the one rule that decides.
Torch-free: config validation and sweep planning read it.

* ``off``: the teacher always runs online.
* ``float16`` / ``float32``: the bank (in that storage dtype) wherever it applies.
* ``auto`` (default): a bank where it applies, where it fits ``teacher_bank_budget_gb`` and where
  it pays, i.e. the runs it serves pass the teacher over the training set at least as many times as
  there are views per image (building costs one teacher forward per view). float32 where that fits
  the budget, else float16: float16's rounding perturbs a run like another CPU's kernels do, and a
  short fragile run (the digits demo) then lands elsewhere; float32 reproduces the online run.

It applies where the training augmentation is a finite set of views (no random erasing) and the
method reads no teacher feature maps (its ``teacher_outputs``). Granularity heads read the
teacher's pooled embedding, which the bank then stores beside the logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

TEACHER_BANK_SETTINGS: tuple[str, ...] = ("auto", "off", "float16", "float32")
AUTO_DTYPES: tuple[str, ...] = ("float32", "float16")  # auto's preference, the first that fits
DEFAULT_BANK_BUDGET_GB = 8.0
LOGITS, EMBEDDING, MAPS = "logits", "embedding", "maps"


@dataclass(frozen=True)
class BankChoice:
    """Whether a run (or the runs of a sweep) use the bank, in which dtype, storing which
    outputs, and why (one log line)."""

    use: bool
    reason: str
    dtype: str = "float16"
    outputs: tuple[str, ...] = (LOGITS,)


def bank_outputs(method_outputs: frozenset[str], has_levels: bool) -> tuple[str, ...]:
    """What the bank must store for a method reading ``method_outputs`` (and granularity heads,
    which read the embedding, when ``has_levels``)."""
    if EMBEDDING in method_outputs or has_levels:
        return (EMBEDDING, LOGITS)
    return (LOGITS,)


def bank_choice(setting: str, budget_gb: float, *, method: str,
                method_outputs: frozenset[str], has_levels: bool, view_count: int | None,
                dataset: str, size_bytes: Callable[[str, tuple[str, ...]], int],
                passes: int | None) -> BankChoice:
    """The decision for ``setting``. ``size_bytes(dtype, outputs)`` is the bank's size;
    ``passes`` the teacher passes over the training set the bank would replace (None: not
    asked, the bank exists already)."""
    if setting not in TEACHER_BANK_SETTINGS:
        raise ValueError(f"teacher_bank: {setting!r}; allowed: {', '.join(TEACHER_BANK_SETTINGS)}")
    if setting == "off":
        return BankChoice(False, "teacher_bank: off, the teacher runs online")
    if view_count is None:
        return BankChoice(False, f"the {dataset} training augmentation (random erasing) is not a "
                                 "finite set of views, so the teacher runs online")
    if MAPS in method_outputs:
        return BankChoice(False, f"method {method} reads the teacher's feature maps, which the "
                                 "bank does not hold, so the teacher runs online")
    outputs = bank_outputs(method_outputs, has_levels)
    if setting == "auto":
        fitting = [d for d in AUTO_DTYPES if size_bytes(d, outputs) <= budget_gb * 1e9]
        dtype = fitting[0] if fitting else AUTO_DTYPES[-1]
    else:
        dtype = setting
    size = size_bytes(dtype, outputs)
    if setting == "auto":
        if size > budget_gb * 1e9:
            return BankChoice(False, f"the teacher view bank would take {size / 1e9:.2f} GB in "
                                     f"{dtype}, over teacher_bank_budget_gb {budget_gb:g}; the "
                                     "teacher runs online (raise the budget or set teacher_bank: "
                                     "float16)", dtype, outputs)
        if passes is not None and passes < view_count:
            return BankChoice(False, f"the teacher view bank costs {view_count} teacher passes "
                                     f"(one per view) and would save {passes}; the teacher runs "
                                     "online (set teacher_bank: float32 or float16 to build it "
                                     "anyway)",
                              dtype, outputs)
    return BankChoice(True, f"teacher outputs come from the {dtype} teacher view bank "
                            f"({size / 1e9:.2f} GB, {view_count} views per image)", dtype, outputs)
