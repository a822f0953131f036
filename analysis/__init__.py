"""Reading sweep run dirs from files alone (no Ray): a pandas DataFrame of every trial-epoch, the
best config per study, exports for ``mgkd train``, TensorBoard on the top trials and an HTML report.

The names below load on first use, so ``mgkd`` starts without pandas, Optuna or matplotlib.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "load_run": "analysis.load",
    "read_run": "analysis.run",
    "best_trials": "analysis.best",
    "top_trials": "analysis.best",
    "read_confirmations": "analysis.confirm",
    "export_configs": "analysis.export",
    "build_board": "analysis.board",
    "write_report": "analysis.report",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
