"""Elapsed time and ETA as people read them: one format for every progress line."""
from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``2h03m``."""
    seconds = int(round(max(seconds, 0.0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def elapsed_and_eta(elapsed: float, done: int, total: int) -> str:
    """``elapsed 1m10s, ETA 3m30s`` after ``done`` of ``total`` equal units of work took
    ``elapsed`` seconds (the rest at the same pace)."""
    if done <= 0:
        return f"elapsed {format_duration(elapsed)}"
    left = max(total - done, 0) * elapsed / done
    return f"elapsed {format_duration(elapsed)}, ETA {format_duration(left)}"
