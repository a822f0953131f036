"""The CKA matrix of ``mgkd cka`` as a heatmap PNG (matplotlib's Agg canvas, no display)."""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mgkd.probe.cka import CkaMatrix

DPI = 100


def cka_heatmap_png(matrix: CkaMatrix, title: str, path: Path) -> Path:
    """Teacher stages down, student stages across, each cell's value written in it (0 to 1)."""
    rows, cols = len(matrix.teacher_stages), len(matrix.student_stages)
    figure = Figure(figsize=(1.6 + 1.1 * cols, 1.4 + 0.6 * rows), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix.values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    axes.set_xticks(range(cols), matrix.student_stages, rotation=30, ha="right")
    axes.set_yticks(range(rows), matrix.teacher_stages)
    axes.set_xlabel("student stage")
    axes.set_ylabel("teacher stage")
    axes.set_title(title, fontsize=9)
    for r, row in enumerate(matrix.values):
        for c, value in enumerate(row):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            axes.text(c, r, text, ha="center", va="center", fontsize=8,
                      color="black" if not math.isnan(value) and value > 0.6 else "white")
    figure.colorbar(image, ax=axes, label="linear CKA")
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=DPI)
    return path
