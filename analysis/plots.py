"""The report's pictures as PNG files, drawn with matplotlib's Agg canvas (no pyplot state, no
display needed)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.records import COMPLETE, PRUNED, TrialRecord
from mgkd.catalog.objectives import OBJECTIVES, Objective
from spaces.names import canonical_order

DPI = 100
LOG_SPAN = 20.0  # an undeclared axis whose positive values span more than this factor is log10
PAGE_WIDTH_IN = 12.0  # the report's page is 1200 px wide: at DPI 100 the picture is not shrunk
LABEL_FONT = 11
TICK_FONT = 9.5


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def curves_png(trials: list[TrialRecord], paper: TrialRecord | None, title: str,
               path: Path, objective: Objective = OBJECTIVES["val_acc"]) -> Path:
    """The objective (validation accuracy, mAP, ...) per epoch of ``trials`` (ranked), the paper
    default dashed."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    shown = list(trials) + ([paper] if paper is not None and paper not in trials else [])
    for rank, trial in enumerate(shown, 1):
        points = [(r["epoch"], r[objective.name]) for r in trial.history
                  if isinstance(r.get(objective.name), (int, float))]
        if not points:
            continue
        x, y = zip(*points)
        label = (f"#{rank} trial {trial.trial_number}" if trial in trials
                 else f"trial {trial.trial_number}")
        if trial.paper_default:
            label += " (paper default)"
        if trial.state != COMPLETE:
            label += f" {trial.state.lower()}"
        style = {"linestyle": "--", "color": "black"} if trial.paper_default else {}
        axes.plot(x, y, marker="o", markersize=3, label=label, **style)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(f"validation {objective.label} (%) [{objective.name}]")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=8)
    return _save(figure, path)


def importance_png(importances: dict[str, float], title: str, path: Path) -> Path:
    """Horizontal bars, the most important parameter on top."""
    names = list(importances)[::-1]
    figure = Figure(figsize=(6, 0.4 * len(names) + 1.2), layout="constrained")
    axes = figure.add_subplot()
    axes.barh(names, [importances[n] for n in names], color="tab:blue")
    axes.set_xlabel("importance (fANOVA, normalised)")
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def param_order(names: list[str]) -> list[str]:
    """num_granularities, then the levels (g0_dim, g0_temperature, ...), then the rest as given
    (each name once): the order a space samples in."""
    return canonical_order(list(dict.fromkeys(names)))


@dataclass
class Axis:
    """One parallel-coordinates axis: values scaled to [0, 1] and its tick labels."""

    name: str
    scaled: list[float | None]
    ticks: list[tuple[float, str]]  # (position in [0, 1], label)
    log: bool


def _axis(name: str, values: list[Any], log: bool | None = None) -> Axis | None:
    """An axis for ``values`` (None when none is a number). ``log``: True / False as the
    parameter was sampled, None to decide (log10 for positive values spanning > LOG_SPAN)."""
    numbers = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
               for v in values]
    present = [v for v in numbers if v is not None and math.isfinite(v)]
    if not present:
        return None
    low, high = min(present), max(present)
    use_log = low > 0 and (log if log is not None else high / low > LOG_SPAN)
    scale = math.log10 if use_log else (lambda v: v)
    a, b = scale(low), scale(high)
    place = lambda v: 0.5 if b == a else (scale(v) - a) / (b - a)
    scaled = [None if v is None or not math.isfinite(v) else place(v) for v in numbers]
    ticks = [(place(low), f"{low:.3g}"), (place(high), f"{high:.3g}")]
    if b != a and len(set(present)) > 2:  # a middle tick shows how the axis is scaled
        middle = 10 ** ((a + b) / 2) if use_log else (low + high) / 2
        ticks.insert(1, (0.5, f"{middle:.3g}"))
    return Axis(name, scaled, ticks, use_log)


def parallel_png(trials: list[TrialRecord], names: list[str], title: str, path: Path,
                 log_params: set[str] | None = None,
                 objective: Objective = OBJECTIVES["val_acc"]) -> Path:
    """Parallel coordinates: one line per complete (coloured by the objective) or pruned (grey)
    trial across its hyperparameters and its final objective value. Parameters in ``log_params``
    (sampled log-uniformly) get log axes; parameters no shown trial has are left out. Drawn at
    the report page's width with labels legible there."""
    shown = [t for t in trials if t.state in (COMPLETE, PRUNED) and t.objective_value is not None]
    declared = log_params or set()
    metric = objective.name
    columns = [_axis(n, [t.params.get(n) for t in shown], log=True if n in declared else None)
               for n in names] + [_axis(metric, [t.objective_value for t in shown], log=False)]
    columns = [c for c in columns if c is not None]  # none when no trial ended yet
    figure = Figure(figsize=(PAGE_WIDTH_IN, 5.5), layout="constrained")
    axes = figure.add_subplot()
    complete = [t.objective_value for t in shown if t.state == COMPLETE]
    norm = Normalize(min(complete, default=0.0), max(complete, default=1.0))
    cmap = colormaps["viridis"]
    xs = range(len(columns))
    for order in (PRUNED, COMPLETE):  # complete trials drawn on top
        for i, trial in enumerate(shown):
            if trial.state != order:
                continue
            y = [math.nan if c.scaled[i] is None else c.scaled[i] for c in columns]
            colour = (cmap(norm(trial.objective_value)) if order == COMPLETE
                      else (0.6, 0.6, 0.6, 0.7))
            axes.plot(xs, y, color=colour, linewidth=2.0 if order == COMPLETE else 1.2,
                      marker="o", markersize=4, zorder=3 if order == COMPLETE else 2)
    for x, column in enumerate(columns):
        axes.axvline(x, color="black", linewidth=0.8, zorder=1)
        for position, label in column.ticks:
            axes.annotate(label, (x, position), xytext=(4, 0), textcoords="offset points",
                          ha="left", va="center", fontsize=TICK_FONT, zorder=4,
                          bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                                "alpha": 0.8})
    labels = [f"{c.name} (log)" if c.log else c.name for c in columns]  # one line: no overlap
    axes.set_xticks(list(xs), labels, rotation=35, ha="right", rotation_mode="anchor",
                    fontsize=LABEL_FONT)
    axes.set_xlim(-0.3, len(columns) - 0.1)
    axes.set_yticks([])
    axes.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        axes.spines[side].set_visible(False)
    axes.set_title(f"{title}: colour = {metric} of complete trials, grey = pruned",
                   fontsize=LABEL_FONT + 1)
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, pad=0.01, aspect=30)
    bar.set_label(metric, fontsize=LABEL_FONT)
    bar.ax.tick_params(labelsize=TICK_FONT)
    return _save(figure, path)
