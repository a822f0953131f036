"""The teacher view bank: the frozen teacher's outputs for every training image under every view
of the training augmentation, computed once and memory-mapped by every run.

CIFAR-style training augmentation shows an image through one of a finite set of views (a crop
offset into the padded image and a flip: 162 for padding 4), numbered as
:attr:`mgkd.data.augment.AugmentPlan.views`. A frozen teacher's output for a view never changes,
so a bank row ``(image i, view v)`` holds its logits (and its pooled embedding when a run needs
it) and a batch gathers its rows by ``i * V + v`` instead of running the teacher.

File layout: a :data:`HEADER_BYTES` header (magic line, then the JSON of the key and the layout,
zero-padded), then ``count * views`` rows of ``classes + embed_dim`` values in the key's dtype.
Files are written to a temp name and renamed when complete; a file whose header does not hold the
expected key, or whose size does not match its layout (truncated), is never used. Reading maps
the file read-only (``np.memmap``), so every process on a node shares one copy: the OS page cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mgkd.data import DatasetSpec, ImageSplit
from mgkd.data.augment import Augmenter
from mgkd.io import file_lock
from mgkd.timing import elapsed_and_eta, format_duration

log = logging.getLogger(__name__)

BANK_FORMAT = 1
HEADER_BYTES = 4096
MAGIC = b"MGKD-TEACHER-VIEW-BANK\n"
LOGITS, EMBEDDING = "logits", "embedding"
BANK_DTYPES: dict[str, tuple[torch.dtype, type]] = {"float16": (torch.float16, np.float16),
                                                    "float32": (torch.float32, np.float32)}
BUILD_BATCH = 256  # images per teacher forward while building
PROGRESS_SECONDS = 10.0


class BankMismatch(RuntimeError):
    """A bank file that must not be used: another key, a truncated file, an unreadable header."""


def split_fingerprint(split: ImageSplit) -> str:
    """sha256 of a split's images and labels: rows are indexed by position in exactly these."""
    digest = hashlib.sha256()
    digest.update(split.images.detach().cpu().contiguous().numpy().tobytes())
    digest.update(split.labels.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class BankLayout:
    """The shape of a bank: ``count`` images x ``views`` rows of ``classes`` logits followed by
    ``embed_dim`` embedding values (0 without the embedding)."""

    count: int
    views: int
    classes: int
    embed_dim: int
    dtype: str

    @property
    def width(self) -> int:
        return self.classes + self.embed_dim

    @property
    def rows(self) -> int:
        return self.count * self.views

    @property
    def nbytes(self) -> int:
        return self.rows * self.width * np.dtype(BANK_DTYPES[self.dtype][1]).itemsize


@dataclass(frozen=True)
class ViewBankKey:
    """Everything a bank's rows depend on. Equal keys: interchangeable banks."""

    teacher_hash: str  # sha256 of the teacher file's bytes
    teacher: str  # its architecture
    data: str  # the training split's identity (data set, options, subset, val fraction, seed)
    split: str  # sha256 of the training split's images and labels (split_fingerprint)
    augment: str  # the augmentation's spec as JSON (Augmenter.augment_spec)
    dtype: str  # float16 | float32
    outputs: tuple[str, ...]  # ("logits",) or ("logits", "embedding")

    def digest(self) -> str:
        payload = {**asdict(self), "format": BANK_FORMAT}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        kind = "le" if EMBEDDING in self.outputs else "l"
        return f"views-t{self.teacher_hash[:12]}-{kind}-{self.dtype}-{self.digest()[:12]}.bank"

    def to_json(self) -> dict:
        return {**asdict(self), "outputs": list(self.outputs)}


def bank_key(teacher_hash: str, teacher: str, data: str, split: ImageSplit, augmenter: Augmenter,
             dtype: str, outputs: tuple[str, ...]) -> ViewBankKey:
    if dtype not in BANK_DTYPES:
        raise ValueError(f"bank dtype {dtype!r}; allowed: {', '.join(BANK_DTYPES)}")
    return ViewBankKey(teacher_hash=teacher_hash, teacher=teacher, data=data,
                       split=split_fingerprint(split),
                       augment=json.dumps(augmenter.augment_spec(), sort_keys=True), dtype=dtype,
                       outputs=tuple(sorted(set(outputs))))


def layout_of(key: ViewBankKey, count: int, views: int, classes: int, embed_dim: int) -> BankLayout:
    return BankLayout(count=count, views=views, classes=classes,
                      embed_dim=embed_dim if EMBEDDING in key.outputs else 0, dtype=key.dtype)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover


Emit = Callable[[str], None]


def _log_line(line: str) -> None:
    log.info("%s", line)


# ---- reading -----------------------------------------------------------------------------------
def read_header(path: Path) -> dict:
    """The header's JSON; :class:`BankMismatch` when the file is no bank or is truncated."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
    except OSError as err:
        raise BankMismatch(f"cannot read {path}: {err}") from None
    if len(head) < HEADER_BYTES or not head.startswith(MAGIC):
        raise BankMismatch(f"{path} is not a teacher view bank (no header)")
    try:
        header = json.loads(head[len(MAGIC):].rstrip(b"\0").decode())
        layout = BankLayout(**header["layout"])
    except (ValueError, KeyError, TypeError) as err:
        raise BankMismatch(f"{path} has a damaged header ({err})") from None
    expected = HEADER_BYTES + layout.nbytes
    actual = path.stat().st_size
    if actual != expected:
        raise BankMismatch(f"{path} holds {actual} bytes but its layout needs {expected} "
                           "(truncated or damaged)")
    return header


@dataclass
class ViewBank:
    """An opened bank: ``rows`` (count * views, width) — memory-mapped on the CPU, or copied to a
    GPU — and its layout. :meth:`gather` is a few device ops, no host sync (graph-capturable)."""

    rows: torch.Tensor
    layout: BankLayout
    key: ViewBankKey
    path: Path

    def gather(self, indices: torch.Tensor, views: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Float32 (logits, embedding or None) of images ``indices`` (split positions) under
        ``views`` (view numbers; None only for a one-view bank)."""
        if views is None:
            if self.layout.views != 1:
                raise ValueError("the batch carries no view numbers but the bank has "
                                 f"{self.layout.views} views per image")
            flat = indices
        else:
            flat = indices * self.layout.views + views
        picked = self.rows.index_select(0, flat.to(self.rows.device)).float()
        classes = self.layout.classes
        embedding = picked[:, classes:] if self.layout.embed_dim else None
        return picked[:, :classes], embedding

    def to(self, device: torch.device) -> ViewBank:
        """This bank with its rows on ``device`` (a GPU copy per process; the CPU maps the file)."""
        if self.rows.device == device:
            return self
        return ViewBank(self.rows.to(device), self.layout, self.key, self.path)


def open_bank(path: Path, key: ViewBankKey, expected: BankLayout | None = None) -> ViewBank:
    """Map a bank read-only after checking its header holds ``key``, its size its layout and
    (when given) its layout the ``expected`` one; :class:`BankMismatch` (naming what differs)
    otherwise."""
    header = read_header(path)
    if header.get("format") != BANK_FORMAT:
        raise BankMismatch(f"{path} has bank format {header.get('format')}, this code reads "
                           f"{BANK_FORMAT}")
    stored, wanted = header.get("key", {}), key.to_json()
    if stored != wanted:
        differs = sorted(k for k in wanted if stored.get(k) != wanted[k])
        raise BankMismatch(f"{path} was built for another {', '.join(differs) or 'key'} "
                           "(stale: other teacher, data or augmentation)")
    layout = BankLayout(**header["layout"])
    if expected is not None and layout != expected:
        raise BankMismatch(f"{path} holds {layout}, the run needs {expected}")
    array = np.memmap(path, dtype=BANK_DTYPES[layout.dtype][1], mode="r", offset=HEADER_BYTES,
                      shape=(layout.rows, layout.width))
    with warnings.catch_warnings():  # read-only on purpose: nothing writes to a bank
        warnings.simplefilter("ignore", UserWarning)
        rows = torch.from_numpy(array)
    return ViewBank(rows, layout, key, path)


# ---- building ----------------------------------------------------------------------------------
@torch.no_grad()
def _fill(array: np.ndarray, layout: BankLayout, teacher: nn.Module, split: ImageSplit,
          augmenter: Augmenter, device: torch.device, emit: Emit) -> None:
    """Every row of ``array`` (rows, width): the teacher's outputs for each image and view,
    images shown exactly as training batches show them (Augmenter.gather)."""
    source = augmenter.source(split.images.to(device))
    views, classes = layout.views, layout.classes
    started = shown = time.monotonic()
    for lo in range(0, layout.count, BUILD_BATCH):
        hi = min(lo + BUILD_BATCH, layout.count)
        count = hi - lo
        indices = torch.arange(lo, hi, device=device)
        block = torch.empty((count, views, layout.width), dtype=torch.float32, device=device)
        per_forward = max(1, BUILD_BATCH // count)  # views per forward: batches of ~BUILD_BATCH
        for first in range(0, views, per_forward):
            last = min(first + per_forward, views)
            numbers = torch.arange(first, last).repeat_interleave(count)
            images = augmenter.gather(source, indices.repeat(last - first),
                                      augmenter.view_plan(numbers))
            features, logits = teacher(images, features=True)
            block[:, first:last, :classes] = logits.float().view(last - first, count, -1
                                                                 ).transpose(0, 1)
            if layout.embed_dim:
                block[:, first:last, classes:] = features[-1].flatten(1).float().view(
                    last - first, count, -1).transpose(0, 1)
        array[lo * views:hi * views] = block.view(-1, layout.width).cpu().numpy()
        now = time.monotonic()
        if now - shown >= PROGRESS_SECONDS or hi == layout.count:
            shown = now
            emit(f"teacher view bank: {hi}/{layout.count} images "
                 f"({100.0 * hi / layout.count:.1f}%), "
                 f"{elapsed_and_eta(now - started, hi, layout.count)}")


def build_bank(path: Path, key: ViewBankKey, teacher: nn.Module, split: ImageSplit,
               spec: DatasetSpec, device: torch.device, emit: Emit = _log_line) -> None:
    """Compute and write the bank of ``key`` to ``path`` (temp file, renamed when complete),
    with progress lines (elapsed, ETA) through ``emit``."""
    augmenter = Augmenter(spec, device, train=True)
    views = augmenter.view_count
    if views is None:
        raise ValueError(f"{spec.name}: random erasing draws no finite set of views; no bank")
    layout = layout_of(key, len(split), views, spec.num_classes, int(teacher.embedding_dim))
    emit(f"teacher view bank: building {path.name} ({layout.count} images x {layout.views} "
         f"views x {layout.width} values, {layout.dtype}, {human_bytes(layout.nbytes)})")
    header = json.dumps({"format": BANK_FORMAT, "key": key.to_json(),
                         "layout": asdict(layout)}).encode()
    if len(MAGIC) + len(header) > HEADER_BYTES:
        raise ValueError("view bank header too long")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write((MAGIC + header).ljust(HEADER_BYTES, b"\0"))
            handle.truncate(HEADER_BYTES + layout.nbytes)
        array = np.memmap(tmp, dtype=BANK_DTYPES[layout.dtype][1], mode="r+",
                          offset=HEADER_BYTES, shape=(layout.rows, layout.width))
        was_training = teacher.training
        teacher.eval()
        try:
            _fill(array, layout, teacher, split, augmenter, device, emit)
        finally:
            teacher.train(was_training)
        array.flush()
        del array
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_bank(root: Path, key: ViewBankKey, teacher: nn.Module, split: ImageSplit,
                spec: DatasetSpec, device: torch.device, emit: Emit = _log_line) -> Path:
    """The bank of ``key`` under ``root``, built first when it is missing or fails its checks
    (a stale or truncated file is rebuilt, with a warning). Processes that ask at once take turns
    through a lock file: the first builds, the others find it built."""
    path = root / key.filename()
    with file_lock(root / f".lock-{key.digest()[:16]}"):
        if path.is_file():
            try:
                open_bank(path, key)
                log.info("teacher view bank: using %s", path)
                return path
            except BankMismatch as err:
                log.warning("teacher view bank: %s; rebuilding it", err)
        started = time.monotonic()
        build_bank(path, key, teacher, split, spec, device, emit)
        emit(f"teacher view bank: built {path} in {format_duration(time.monotonic() - started)}")
    return path
