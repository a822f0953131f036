"""Checks of the directories a command will write, made before any training starts.

A bad path (a file where a directory belongs, a directory that cannot be created or written, a
path inside a sweep's run dir) is a ``ConfigError`` naming the path and the fix, not a traceback
after a teacher has trained for an hour.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mgkd.errors import ConfigError

# A directory holding both is a sweep's run dir (``mgkd tune`` writes them first).
SWEEP_MARKERS: tuple[str, ...] = ("sweep.yaml", "optuna.db")


def writable_dir(path: str | Path, what: str, fix: str) -> Path:
    """Create ``path`` if missing and prove a file can be written there; returns it expanded.

    ``what`` names the option or key (``--out``, ``cache_dir``); ``fix`` says what to do instead."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: {path} is an existing file, not a directory; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".mgkd-write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{what}: {path} cannot be created or written ({reason}); {fix}") from None
    return path


def sweep_run_dir_of(path: str | Path) -> Path | None:
    """The sweep run dir ``path`` lies in (or is), if any."""
    path = Path(path).expanduser().absolute()
    for folder in (path, *path.parents):
        if all((folder / marker).exists() for marker in SWEEP_MARKERS):
            return folder
    return None
