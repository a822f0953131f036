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
AXIS_SPACING_IN = 0.62  # between parallel axes: room for their value labels (<= ~50 px)
CLIP = 0.04  # where values outside an axis's range are drawn, past its ends
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


def importance_png(importances: dict[str, float], title: str, path: Path,
                   spread: dict[str, float] | None = None) -> Path:
    """Horizontal bars, the most important parameter on top; ``spread`` (e.g. the standard
    deviation over bootstrap resamples) as error bars."""
    names = list(importances)[::-1]
    figure = Figure(figsize=(6, 0.4 * len(names) + 1.2), layout="constrained")
    axes = figure.add_subplot()
    errors = [spread.get(n, 0.0) for n in names] if spread else None
    axes.barh(names, [importances[n] for n in names], xerr=errors, color="tab:blue",
              error_kw={"ecolor": "black", "capsize": 3, "linewidth": 1})
    axes.set_xlim(left=0)
    axes.set_xlabel("importance (fANOVA, normalised)"
                    + (" ± 1 sd over bootstrap resamples" if spread else ""))
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def param_order(names: list[str]) -> list[str]:
    """num_granularities, then the levels (g0_dim, g0_temperature, ...), then the rest as given
    (each name once): the order a space samples in."""
    return canonical_order(list(dict.fromkeys(names)))


@dataclass
class Axis:
    """One parallel-coordinates axis: values scaled to [0, 1] over its range (values outside it
    clipped to just past the ends) and its tick labels."""

    name: str
    scaled: list[float | None]
    ticks: list[tuple[float, str]]  # (position in [0, 1], label)
    log: bool
    clipped: int = 0  # values outside the range, drawn at its ends


def short_number(value: float) -> str:
    """3 significant digits, exponents without padding (``1.09e-5``): narrow tick labels."""
    text = f"{value:.3g}"
    if "e" not in text and value != 0 and abs(value) < 1e-3:  # 0.000133 -> 1.33e-4
        text = f"{value:.2e}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _numbers(values: list[Any]) -> list[float | None]:
    return [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) else None for v in values]


def _axis(name: str, values: list[Any], log: bool | None = None,
          basis: list[int] | None = None) -> Axis | None:
    """An axis for ``values`` (None when none is a number). Its range: the values at the indices
    ``basis`` (the complete trials), or all values when ``basis`` is None or gives fewer than
    two distinct ones. ``log``: True / False as the parameter was sampled, None to decide
    (log10 for positive values spanning > LOG_SPAN)."""
    numbers = _numbers(values)
    present = [v for v in numbers if v is not None]
    if not present:
        return None
    ranged = [numbers[i] for i in basis or [] if numbers[i] is not None]
    if len(set(ranged)) < 2:
        ranged = present
    low, high = min(ranged), max(ranged)
    use_log = low > 0 and min(present) > 0 and (log if log is not None else high / low > LOG_SPAN)
    scale = math.log10 if use_log else (lambda v: v)
    a, b = scale(low), scale(high)
    place = lambda v: 0.5 if b == a else (scale(v) - a) / (b - a)
    scaled, clipped = [], 0
    for v in numbers:
        if v is None:
            scaled.append(None)
            continue
        position = place(v)
        if position < 0 or position > 1:
            clipped += 1
            position = -CLIP if position < 0 else 1 + CLIP
        scaled.append(position)
    ticks = [(place(low), short_number(low)), (place(high), short_number(high))]
    if b != a and len(set(ranged)) > 2:  # a middle tick shows how the axis is scaled
        middle = 10 ** ((a + b) / 2) if use_log else (low + high) / 2
        ticks.insert(1, (0.5, short_number(middle)))
    return Axis(name, scaled, ticks, use_log, clipped)


def parallel_columns(trials: list[TrialRecord], names: list[str], log_params: set[str],
                     metric: str) -> list[Axis]:
    """The axes: every parameter a complete trial has (any shown trial's, when none is complete)
    and the objective, each ranged over the complete trials."""
    basis = [i for i, t in enumerate(trials) if t.state == COMPLETE]
    having = [trials[i] for i in basis] or trials
    names = [n for n in names if any(n in t.params for t in having)]
    columns = [_axis(n, [t.params.get(n) for t in trials], log=True if n in log_params else None,
                     basis=basis) for n in names]
    columns.append(_axis(metric, [t.objective_value for t in trials], log=False, basis=basis))
    return [c for c in columns if c is not None]


def parallel_figure(trials: list[TrialRecord], names: list[str], title: str,
                    log_params: set[str] | None = None,
                    objective: Objective = OBJECTIVES["val_acc"]) -> Figure:
    """Parallel coordinates: one line per complete trial (coloured by the objective) across its
    hyperparameters and its final objective value; pruned trials faint grey behind them, inside
    the complete trials' ranges (their values beyond sit at the axis ends). Parameters in
    ``log_params`` (sampled log-uniformly) get log axes. Wide enough that neighbouring axes'
    labels never meet."""
    shown = [t for t in trials if t.state in (COMPLETE, PRUNED) and t.objective_value is not None]
    metric = objective.name
    columns = parallel_columns(shown, names, log_params or set(), metric)
    width = max(PAGE_WIDTH_IN, AXIS_SPACING_IN * len(columns) + 2.0)
    figure = Figure(figsize=(width, 5.5), layout="constrained")
    axes = figure.add_subplot()
    complete = [t.objective_value for t in shown if t.state == COMPLETE]
    norm = Normalize(min(complete, default=0.0), max(complete, default=1.0))
    cmap = colormaps["viridis"]
    xs = range(len(columns))
    for i, trial in enumerate(shown):
        y = [math.nan if c.scaled[i] is None else c.scaled[i] for c in columns]
        if trial.state == COMPLETE:
            axes.plot(xs, y, color=cmap(norm(trial.objective_value)), linewidth=2.0, marker="o",
                      markersize=4, zorder=3)
        else:
            axes.plot(xs, y, color=(0.55, 0.55, 0.55, 0.35), linewidth=1.0, zorder=2)
    for x, column in enumerate(columns):
        axes.axvline(x, color="black", linewidth=0.8, zorder=1)
        for position, label in column.ticks:
            axes.annotate(label, (x, position), xytext=(4, 0), textcoords="offset points",
                          ha="left", va="center", fontsize=TICK_FONT, zorder=4,
                          bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                                "alpha": 0.85})
    labels = [f"{c.name} (log)" if c.log else c.name for c in columns]
    axes.set_xticks(list(xs), labels, rotation=30, ha="right", rotation_mode="anchor",
                    fontsize=LABEL_FONT)
    axes.set_xlim(-0.3, len(columns) - 0.3)
    axes.set_yticks([])
    axes.set_ylim(-0.08, 1.08)
    for side in ("left", "right", "top"):
        axes.spines[side].set_visible(False)
    pruned = len(shown) - len(complete)
    axes.set_title(f"{title}: {len(complete)} complete (colour = {metric}), {pruned} pruned "
                   "(faint grey)", fontsize=LABEL_FONT + 1)
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, pad=0.01, aspect=30)
    bar.set_label(metric, fontsize=LABEL_FONT)
    bar.ax.tick_params(labelsize=TICK_FONT)
    return figure


def parallel_png(trials: list[TrialRecord], names: list[str], title: str, path: Path,
                 log_params: set[str] | None = None,
                 objective: Objective = OBJECTIVES["val_acc"]) -> Path:
    """:func:`parallel_figure` as a PNG."""
    return _save(parallel_figure(trials, names, title, log_params, objective), path)
