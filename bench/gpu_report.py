"""The arithmetic and text of bench/gpu.py: tables with ratios, aims, the extrapolated run time,
throughput summed over concurrent workers and the one JSON line each worker prints. Standard
library only, so it is tested on any machine."""
from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

WORKER_MARK = "GPU_BENCH_WORKER "  # prefix of the one line a worker prints its figures on
GIB = 1024 ** 3


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def fmt_gib(size: int | None) -> str:
    return "-" if size is None else f"{size / GIB:.2f}"


def fmt_duration(seconds: float) -> str:
    """``42.0 s`` below two minutes, else ``9.6 min``."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def verdict(value: float | None, limit: float, *, at_most: bool = True) -> str:
    """``met`` when ``value <= limit`` (``>=`` with ``at_most=False``), else ``not met``;
    ``unknown`` without a value."""
    if value is None:
        return "unknown"
    ok = value <= limit if at_most else value >= limit
    return "met" if ok else "not met"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells; the table has {len(headers)}")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        parts = [cell.ljust(w) if i == 0 else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(cells, widths))]
        return indent + "  ".join(parts).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def extrapolate_run(epoch_seconds: Sequence[float], epochs: int) -> float:
    """Wall time of an ``epochs``-epoch run from measured epochs: the first epoch (warm-up and
    recording) as measured, every later one at the median of the later measured epochs (the first
    one's when only one was measured). Re-recordings at lr milestones are not added: a few tenths
    of a second each."""
    if not epoch_seconds:
        raise ValueError("extrapolate_run needs at least one measured epoch")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    first = epoch_seconds[0]
    steady = statistics.median(epoch_seconds[1:]) if len(epoch_seconds) > 1 else first
    return first + (epochs - 1) * steady


@dataclass(frozen=True)
class WorkerResult:
    """What one worker process measured. Memory figures are bytes (None off the GPU);
    ``device_used`` is the whole GPU's used memory (total - free) at its highest, so with one
    worker alone on a GPU it is that trial's footprint including the CUDA context."""

    worker: int
    steps: int
    batch: int
    seconds: float
    max_allocated: int | None = None
    max_reserved: int | None = None
    device_used: int | None = None
    replays: int | None = None  # InlineRecorder replays (CPU self-check only)

    @property
    def images_per_s(self) -> float:
        return self.steps * self.batch / self.seconds if self.seconds > 0 else 0.0

    @property
    def ms_per_step(self) -> float | None:
        return self.seconds * 1000 / self.steps if self.steps else None

    def line(self) -> str:
        return WORKER_MARK + json.dumps(asdict(self), sort_keys=True)


def parse_worker_output(text: str) -> WorkerResult:
    """The figures a worker printed: its last line that starts with :data:`WORKER_MARK`."""
    lines = [ln for ln in text.splitlines() if ln.startswith(WORKER_MARK)]
    if not lines:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise ValueError(f"the worker printed no '{WORKER_MARK.strip()}' line; its output ended "
                         f"with: {tail or '(nothing)'}")
    try:
        data = json.loads(lines[-1][len(WORKER_MARK):])
        return WorkerResult(**data)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"the worker's result line is malformed ({err}): {lines[-1]!r}") from None


@dataclass(frozen=True)
class Scaling:
    """Concurrent trials on one GPU: summed throughput and its ratio to one trial."""

    trials: int
    images_per_s: float
    ratio_to_one: float | None
    mean_ms_per_step: float | None


def scaling(levels: dict[int, Sequence[WorkerResult]]) -> list[Scaling]:
    """One row per number of concurrent trials, in increasing order; ratios are to the 1-trial
    level (None when it was not measured)."""
    totals = {n: sum(r.images_per_s for r in results) for n, results in levels.items()}
    base = totals.get(1)
    rows = []
    for n in sorted(levels):
        steps = [r.ms_per_step for r in levels[n] if r.ms_per_step is not None]
        rows.append(Scaling(n, totals[n], ratio(totals[n], base),
                            statistics.mean(steps) if steps else None))
    return rows


def trials_that_fit(total_bytes: int, per_trial_bytes: int | None) -> int | None:
    """How many trials of ``per_trial_bytes`` fit in ``total_bytes`` (memory only)."""
    if not per_trial_bytes or per_trial_bytes <= 0:
        return None
    return total_bytes // per_trial_bytes
