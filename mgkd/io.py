"""File helpers: atomic writes, content hashes and an advisory inter-process lock."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``.

    A reader sees either the old file or the complete new one, never a torn write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
