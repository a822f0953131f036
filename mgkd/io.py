"""File helpers: atomic writes, safe checkpoint reads, content hashes and an advisory
inter-process lock."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mgkd.errors import ConfigError
from mgkd.numpy_pickle import UnsafeNumpyValue, numpy_safe_globals

# Classes a checkpoint may hold beyond tensors and plain values: RepDistiller's ``*_last.pth``
# files store their argparse options; a Namespace only holds attributes and runs no code.
# Numpy scalars of plain number types (torchreid's ``rank1``) come through the checked stand-ins
# of :mod:`mgkd.numpy_pickle`.
SAFE_CHECKPOINT_CLASSES = (argparse.Namespace,)


def _process_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, which races with
    other threads creating files); 0o022 where /proc does not say."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``.

    A reader sees either the old file or the complete new one, never a torn write. The file gets
    the mode a plain ``open`` would give it (mkstemp's temp files are private, 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_process_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(Path(path), text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch  # here, not at the top: the config and the command line load without torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write_bytes(Path(path), buffer.getvalue())


def safe_torch_load(path: str | Path, what: str, map_location: Any = "cpu") -> Any:
    """Read a torch checkpoint with torch's restricted unpickler (``weights_only=True``).

    Only tensors, plain Python values (dicts, lists, tuples, numbers, strings, None),
    :data:`SAFE_CHECKPOINT_CLASSES` and numpy scalars of plain number types are rebuilt; a pickle that would import or call anything else
    is refused before it runs. ``what`` names the setting the file came from (e.g.
    ``"teacher_checkpoint"``) and starts every error message. Raises ConfigError for a missing,
    unreadable or refused file."""
    import torch  # here, not at the top: the config and the command line load without torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}: {path} does not exist; give an existing checkpoint file.")
    try:
        with torch.serialization.safe_globals([*SAFE_CHECKPOINT_CLASSES, *numpy_safe_globals()]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except UnsafeNumpyValue as err:
        raise ConfigError(f"{what}: {path} was refused: {err}; MGKD-Tune reads numpy values only "
                          "as scalars of plain number types (as torchreid's rank1). Give a file "
                          "that holds only tensors and plain values.") from None
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
            reason = detail.group(1).strip() if detail else str(err).splitlines()[0]
            raise ConfigError(_unreadable(what, path, reason)) from None
        needs = f"the Python object {found.group(1)}"
        raise ConfigError(
            f"{what}: {path} was refused: unpickling it would need {needs}, and MGKD-Tune only "
            "reads checkpoints with torch's restricted unpickler (weights_only=True) because "
            "loading a pickle can run arbitrary code. Give a file that holds only tensors and "
            "plain values (a state dict, or {'model': state_dict, ...} as RepDistiller's "
            "ckpt_epoch_*.pth); if you trust this file, re-save just its weights, e.g. "
            "torch.save({'model': torch.load(OLD, weights_only=False)['model']}, NEW), and "
            "point at NEW.") from None
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(_unreadable(what, path, first_line)) from None


def _unreadable(what: str, path: str | Path, reason: str) -> str:
    return (f"{what}: {path} could not be read as a torch checkpoint: the file is damaged or was "
            f"not written by torch.save (torch's reader stopped with: {reason}). Give a file "
            "written by torch.save (a state dict, or {'model': state_dict, ...}).")


def read_yaml_file(path: Path, kind: str, hint: str) -> Any:
    """Parse a YAML file the user named; a missing or malformed file is a ConfigError that says
    which file, what is wrong and (``hint``) how to get a good one."""
    import yaml

    from mgkd.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"{kind} file {path} does not exist; {hint}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{kind} file {path} is not valid YAML: {err}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if missing), released on exit.

    Lets two processes that need the same cached artefact agree that one builds it and the other
    waits and loads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
