"""Granularity heads on pooled embeddings, their training on a frozen teacher, and the head bank.

A teacher head k squeezes the teacher embedding (width D) to ``dim_k`` (encoder) and maps that back
to class logits (decoder); it is trained once per teacher on the frozen teacher with
``T_k^2 * KL(softmax(t_logits/T_k) || softmax(dec_k/T_k)) + CE(dec_k, y)`` and stored in the bank.
Student heads have encoders only; they learn through the granularity terms of the loss.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.catalog.objectives import default_objective
from mgkd.catalog.tasks import CLASSIFICATION
from mgkd.config.execution import ExecutionSettings
from mgkd.data import Batch, DataSplits
from mgkd.io import atomic_torch_save, file_lock, safe_torch_load
from mgkd.methods.common import soft_kl
from mgkd.training.engine import EpochCallback, Schedule, Trainer
from mgkd.training.learner import Learner

log = logging.getLogger(__name__)
HEAD_FORMAT = 1
# The heads' own recipe, independent of any trial's optimiser settings so that every trial of a
# sweep loads the same heads. Part of the bank key: changing it retrains.
HEAD_RECIPE = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64,
               "milestones": (0.625, 0.75, 0.875), "decay": 0.1}


def make_encoder(width: int, dim: int) -> nn.Sequential:
    """Linear(D, D) - ReLU - Linear(D, dim) on the pooled embedding."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))


class TeacherHead(nn.Module):
    """Encoder to a ``dim``-wide code plus a decoder from the code to class logits."""

    def __init__(self, width: int, dim: int, num_classes: int):
        super().__init__()
        self.encoder = make_encoder(width, dim)
        self.decoder = nn.Sequential(nn.Linear(dim, width), nn.ReLU(inplace=True),
                                     nn.Linear(width, num_classes))

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(embedding)
        return code, self.decoder(code)


class StudentGranularity(nn.Module):
    """The student's encoders, one per granularity level."""

    def __init__(self, width: int, dims: list[int]):
        super().__init__()
        self.encoders = nn.ModuleList(make_encoder(width, d) for d in dims)

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        return [encoder(embedding) for encoder in self.encoders]


@dataclass
class TeacherOutput:
    features: list[torch.Tensor]
    logits: torch.Tensor
    codes: list[torch.Tensor]  # per head: encoder output
    decoder_logits: list[torch.Tensor]  # per head: decoder output


class FrozenTeacher(nn.Module):
    """The teacher network and its heads, permanently in eval mode and without gradients."""

    def __init__(self, model: nn.Module, heads: list[TeacherHead]):
        super().__init__()
        self.model = model
        self.heads = nn.ModuleList(heads)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return self  # stays in eval mode: BatchNorm statistics of the teacher never move

    def store_matmul_weights_in(self, dtype: torch.dtype) -> None:
        """Keep convolution and linear weights (and biases) in ``dtype``, for runs under autocast
        to it. Autocast would cast them to ``dtype`` at every call; a frozen teacher's weights
        never change, so they are cast once here and the forward computes exactly the same
        (those ops see the same ``dtype`` weights; BatchNorm keeps float32, as under autocast).
        Outside autocast the teacher then refuses float32 inputs: it runs under autocast only."""
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                module.to(dtype)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> TeacherOutput:
        features, logits = self.model(images, features=True)
        return self._with_heads(features, logits)

    @torch.no_grad()
    def from_bank(self, logits: torch.Tensor, embedding: torch.Tensor | None) -> TeacherOutput:
        """The output for rows of the teacher view bank: its logits and pooled embedding (the
        only feature then; methods using the bank read no earlier one), heads run on it."""
        return self._with_heads([] if embedding is None else [embedding], logits)

    def _with_heads(self, features: list[torch.Tensor], logits: torch.Tensor) -> TeacherOutput:
        codes, decoded = [], []
        for head in self.heads:
            code, dec = head(features[-1])
            codes.append(code)
            decoded.append(dec)
        return TeacherOutput(features, logits, codes, decoded)


# ---- head training ---------------------------------------------------------------------------
def head_loss(decoder_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
              temperature: float) -> torch.Tensor:
    return soft_kl(decoder_logits, teacher_logits, temperature) + F.cross_entropy(decoder_logits,
                                                                                  targets)


class HeadLearner(Learner):
    """Trains several heads at once on one frozen teacher: one teacher forward per batch serves all.

    Heads do not interact (each has its own parameters and loss), so a head trained here is the
    same as one trained alone with the same seed."""

    def __init__(self, teacher: nn.Module, heads: list[TeacherHead], temperatures: list[float]):
        self.teacher = FrozenTeacher(teacher, [])
        self.heads = heads
        self.temperatures = temperatures
        self.modules = nn.ModuleDict({"heads": nn.ModuleList(heads)})

    def loss_components(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        out = self.teacher(batch.images)
        embedding = out.features[-1]
        total = torch.zeros((), device=embedding.device)
        for head, temperature in zip(self.heads, self.temperatures):
            _, dec = head(embedding)
            total = total + head_loss(dec, out.logits, batch.labels, temperature)
        return {"loss": total}

    def eval_logits(self, batch: Batch) -> list[torch.Tensor]:
        """Every head's decoder logits (the heads are scored by their mean)."""
        embedding = self.teacher(batch.images).features[-1]
        return [head(embedding)[1] for head in self.heads]


def _derived_seed(*parts: Any) -> int:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def train_heads(teacher: nn.Module, splits: DataSplits, levels: list[tuple[int, float]], *,
                epochs: int, seed: int, callbacks: list[EpochCallback] | None = None,
                checkpoint_path: Path | None = None, settings: ExecutionSettings | None = None
                ) -> tuple[list[TeacherHead], dict[str, Any]]:
    """Train one head per (dim, temperature) on the frozen teacher; returns heads and last metrics.
    With ``checkpoint_path`` every epoch is checkpointed there and a checkpoint found there is
    continued. ``settings`` (a config's execution keys) say how steps run; the caller's teacher
    keeps its memory layout (no channels-last here)."""
    device = splits.train.images.device
    execution = dataclasses.replace(
        (settings or ExecutionSettings()).resolve(
            device_type=device.type, batch_size=HEAD_RECIPE["batch_size"],
            image_shape=splits.spec.image_shape, what="head training"),
        channels_last=False)
    width = teacher.embedding_dim
    heads = []
    for dim, temperature in levels:
        # Each head's initialisation depends on its own key only, not on which heads share the run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(seed, dim, temperature))
            heads.append(TeacherHead(width, dim, splits.spec.num_classes).to(device))
    learner = HeadLearner(teacher, heads, [t for _, t in levels])
    if splits.spec.task != CLASSIFICATION:
        # Heads decode to training classes; a retrieval split (unseen identities) cannot score them.
        splits = dataclasses.replace(splits, val=None, test=None)
    schedule = Schedule(epochs=epochs, lr=HEAD_RECIPE["lr"], momentum=HEAD_RECIPE["momentum"],
                        weight_decay=HEAD_RECIPE["weight_decay"],
                        milestones=HEAD_RECIPE["milestones"], decay=HEAD_RECIPE["decay"])
    # Heads decode the training classes: scored (where a split exists) as a classifier is.
    trainer = Trainer(learner, splits, schedule, batch_size=HEAD_RECIPE["batch_size"], seed=seed,
                      objective=default_objective(CLASSIFICATION), callbacks=callbacks,
                      checkpoint_path=checkpoint_path, execution=execution)
    if trainer.resume_from_checkpoint():
        log.info("granularity heads continue after epoch %d of %d (%s)", trainer.state.epoch,
                 epochs, checkpoint_path)
    state = trainer.fit()
    for head in heads:
        head.eval()
    return heads, (state.history[-1] if state.history else {})


# ---- the head bank ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadKey:
    """Everything a trained head depends on. Equal keys mean interchangeable heads."""

    teacher_hash: str  # sha256 of the teacher checkpoint's bytes
    dim: int
    temperature: float
    epochs: int
    seed: int
    data: str  # the training split's identity (dataset, options, subset, val fraction, split seed)

    def digest(self) -> str:
        payload = {**asdict(self), "recipe": HEAD_RECIPE, "format": HEAD_FORMAT}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def filename(self) -> str:
        return (f"t{self.teacher_hash[:12]}_d{self.dim}_T{self.temperature:g}_e{self.epochs}"
                f"_s{self.seed}_{self.digest()[:12]}.pt")


class HeadBank:
    """Teacher heads stored under ``root``; a head is trained once and loaded ever after."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def path(self, key: HeadKey) -> Path:
        return self.root / key.filename()

    def progress_path(self, keys: list[HeadKey]) -> Path:
        """The per-epoch checkpoint of training exactly ``keys`` together (not a ``*.pt`` name)."""
        digest = hashlib.sha256("".join(sorted(k.digest() for k in keys)).encode()).hexdigest()
        return self.root / f".progress-{keys[0].teacher_hash[:12]}-{digest[:12]}"

    def has(self, key: HeadKey) -> bool:
        return self._read(key) is not None

    def _read(self, key: HeadKey) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = safe_torch_load(path, "head bank entry")
        except Exception as err:  # a damaged or refused file is treated as missing and rebuilt
            log.warning("head bank entry %s is unreadable (%s); it will be retrained", path, err)
            return None
        if not isinstance(entry, dict) or entry.get("format") != HEAD_FORMAT or entry.get("key") != asdict(key):
            log.warning("head bank entry %s does not match its key; it will be retrained", path)
            return None
        return entry

    def load(self, key: HeadKey, width: int, num_classes: int,
             device: torch.device | str = "cpu") -> TeacherHead:
        entry = self._read(key)
        if entry is None:
            raise FileNotFoundError(f"no head in the bank for {key}")
        head = TeacherHead(width, key.dim, num_classes)
        head.load_state_dict(entry["state_dict"])
        return head.to(device).eval()

    def ensure(self, teacher: nn.Module, keys: list[HeadKey], splits: DataSplits,
               callbacks_for: Callable[[list[HeadKey]], list[EpochCallback]] | None = None,
               settings: ExecutionSettings | None = None) -> list[HeadKey]:
        """Train and store every head in ``keys`` that the bank lacks; returns the ones trained.

        Processes that ask for heads of the same teacher at once take turns through a lock file:
        the first trains, the others find the heads stored and load them."""
        keys = list(dict.fromkeys(keys))
        if not keys or all(self.has(k) for k in keys):
            return []
        trained: list[HeadKey] = []
        groups: dict[tuple, list[HeadKey]] = {}
        for key in keys:
            groups.setdefault((key.teacher_hash, key.epochs, key.seed, key.data), []).append(key)
        for (teacher_hash, epochs, seed, _), group in groups.items():
            with file_lock(self.root / f".lock-{teacher_hash[:16]}"):
                missing = [k for k in group if not self.has(k)]
                if not missing:
                    continue
                log.info("training %d granularity head(s) for %d epochs: %s", len(missing), epochs,
                         ", ".join(f"dim {k.dim} T {k.temperature:g}" for k in missing))
                callbacks = callbacks_for(missing) if callbacks_for else None
                progress = self.progress_path(missing)
                heads, metrics = train_heads(teacher, splits,
                                             [(k.dim, k.temperature) for k in missing],
                                             epochs=epochs, seed=seed, callbacks=callbacks,
                                             checkpoint_path=progress, settings=settings)
                for key, head in zip(missing, heads):
                    atomic_torch_save({"format": HEAD_FORMAT, "key": asdict(key),
                                       "state_dict": head.state_dict(), "metrics": metrics},
                                      self.path(key))
                progress.unlink(missing_ok=True)
                trained.extend(missing)
        return trained
