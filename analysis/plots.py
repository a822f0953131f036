"""The report's pictures as PNG files, drawn with matplotlib's Agg canvas (no pyplot state, no
display needed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.flatten import LEVEL_FIELDS, NUM_LEVELS, parse_level_column
from analysis.records import COMPLETE, PRUNED, TrialRecord

DPI = 100
LOG_SPAN = 20.0  # an axis whose positive values span more than this factor is drawn in log10


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def curves_png(trials: list[TrialRecord], paper: TrialRecord | None, title: str,
               path: Path) -> Path:
    """Validation accuracy per epoch of ``trials`` (ranked), the paper default dashed."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    shown = list(trials) + ([paper] if paper is not None and paper not in trials else [])
    for rank, trial in enumerate(shown, 1):
        points = [(r["epoch"], r["val_acc"]) for r in trial.history
                  if isinstance(r.get("val_acc"), (int, float))]
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
    axes.set_ylabel("validation accuracy (%)")
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
    """num_granularities, then the levels (g0_dim, g0_temperature, ...), then the rest as given."""
    def rank(item: tuple[int, str]) -> tuple[int, int, int, int]:
        position, name = item
        if name == NUM_LEVELS:
            return (0, 0, 0, position)
        parsed = parse_level_column(name)
        if parsed is not None:
            return (1, parsed[0], LEVEL_FIELDS.index(parsed[1]), position)
        return (2, 0, 0, position)
    return [name for _, name in sorted(enumerate(dict.fromkeys(names)), key=rank)]


def _axis(values: list[Any]) -> tuple[list[float | None], str, str]:
    """Values scaled to [0, 1] (log10 for wide positive ranges) and the axis' end labels."""
    numbers = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
               for v in values]
    present = [v for v in numbers if v is not None and math.isfinite(v)]
    if not present:
        return [None] * len(values), "", ""
    low, high = min(present), max(present)
    use_log = low > 0 and high / low > LOG_SPAN
    scale = (lambda v: math.log10(v)) if use_log else (lambda v: v)
    a, b = scale(low), scale(high)
    scaled = [None if v is None else (0.5 if b == a else (scale(v) - a) / (b - a)) for v in numbers]
    return scaled, f"{low:.3g}", f"{high:.3g}"


def parallel_png(trials: list[TrialRecord], names: list[str], title: str, path: Path) -> Path:
    """Parallel coordinates: one line per complete (coloured by val_acc) or pruned (grey) trial
    across its hyperparameters and its final validation accuracy."""
    shown = [t for t in trials if t.state in (COMPLETE, PRUNED) and t.val_acc is not None]
    axes_names = [*names, "val_acc"]
    columns = [_axis([t.params.get(n) for t in shown]) for n in names]
    columns.append(_axis([t.val_acc for t in shown]))
    figure = Figure(figsize=(max(6.0, 0.9 * len(axes_names)), 4.5), layout="constrained")
    axes = figure.add_subplot()
    complete = [t.val_acc for t in shown if t.state == COMPLETE]
    norm = Normalize(min(complete, default=0.0), max(complete, default=1.0))
    cmap = colormaps["viridis"]
    for order in (PRUNED, COMPLETE):  # complete trials drawn on top
        for i, trial in enumerate(shown):
            if trial.state != order:
                continue
            y = [c[0][i] for c in columns]
            colour = cmap(norm(trial.val_acc)) if order == COMPLETE else (0.75, 0.75, 0.75, 0.8)
            axes.plot(range(len(axes_names)), [math.nan if v is None else v for v in y],
                      color=colour, linewidth=1.5 if order == COMPLETE else 1.0, marker="o",
                      markersize=2)
    for x, (_, low, high) in enumerate(columns):
        axes.axvline(x, color="black", linewidth=0.6)
        axes.annotate(low, (x, -0.04), ha="center", va="top", fontsize=7,
                      annotation_clip=False)
        axes.annotate(high, (x, 1.04), ha="center", va="bottom", fontsize=7,
                      annotation_clip=False)
    axes.set_xticks(range(len(axes_names)), axes_names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks([])
    axes.set_ylim(-0.1, 1.12)
    axes.set_title(title + "  (colour: val_acc of complete trials; grey: pruned)", fontsize=9)
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="val_acc")
    return _save(figure, path)
