"""Teachers: training one (cached by everything it depends on), loading a checkpoint, hashing it."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgkd.catalog.models import default_lr
from mgkd.catalog.objectives import default_objective
from mgkd.catalog.teacher_recipes import TEACHER_RECIPES
from mgkd.config import ExperimentConfig
from mgkd.config.execution import ExecutionSettings
from mgkd.data import Batch, DataSplits
from mgkd.errors import ConfigError
from mgkd.io import atomic_torch_save, file_lock, file_sha256, safe_torch_load
from mgkd.models import MODELS, create_model
from mgkd.models.backbone_init import init_backbone
from mgkd.models.loading import load_zoo_model, state_dict_of
from mgkd.training.engine import EpochCallback, Schedule, Trainer
from mgkd.training.learner import Learner
from mgkd.training.tasks import Task, get_task

log = logging.getLogger(__name__)
# 2: weights under "model" in RepDistiller's naming (RepDistiller and mdistiller load these files).
# 1: weights under "state_dict" in the old stem/stages naming; still read (converted on load).
TEACHER_FORMAT = 2


def data_identity(config: ExperimentConfig) -> str:
    """A string naming the training split exactly: two configs with the same identity train on
    the same images (and keep the same validation images out)."""
    payload = {"dataset": config.dataset, "options": config.data_options,
               "train_subset": config.train_subset, "val_fraction": config.val_fraction,
               "split_seed": config.split_seed}
    return json.dumps(payload, sort_keys=True)


@dataclass(frozen=True)
class TeacherRecipe:
    """How a cached teacher is trained; its hash names the cache file."""

    arch: str
    data: str
    epochs: int
    seed: int
    lr: float
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.625, 0.75, 0.875)
    decay: float = 0.1
    # teacher_init: the weights file the backbone starts from (None: random) and its content
    # hash, which names the cached teacher (the path does not: a moved file is the same teacher)
    init: str | None = None
    init_sha256: str | None = None
    # teacher_recipe (mgkd.catalog.teacher_recipes): the optimizer, whether re-ID training adds
    # the triplet term, and whether random flip is the only augmentation
    optimizer: str = "sgd"
    triplet: bool = True
    flip_only: bool = False

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> "TeacherRecipe":
        init = Path(config.teacher_init).expanduser().absolute() if config.teacher_init else None
        fixed = TEACHER_RECIPES[config.teacher_recipe]
        return cls(arch=config.teacher, data=data_identity(config), epochs=config.teacher_epochs,
                   seed=config.teacher_seed,
                   lr=default_lr(config.teacher) if fixed.lr is None else fixed.lr,
                   batch_size=fixed.batch_size, weight_decay=fixed.weight_decay,
                   milestones=fixed.milestones, decay=fixed.decay, optimizer=fixed.optimizer,
                   triplet=fixed.triplet, flip_only=fixed.flip_only,
                   init=None if init is None else str(init),
                   init_sha256=None if init is None else _init_hash(init))

    def digest(self) -> str:
        """Names the cached teacher: every setting but ``init`` (its hash stands for it); the
        keys added later leave the digest of a recipe that keeps their first value as it was."""
        payload = {k: v for k, v in asdict(self).items()
                   if k != "init" and not (k in _LATER_KEYS and v == _LATER_KEYS[k])}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def matches(self, saved: dict[str, Any]) -> bool:
        """Whether ``saved`` (a run's ``recipe.json``) is this recipe; a key it lacks (written
        before the key existed) counts as the value every earlier recipe had."""
        current = json.loads(json.dumps(asdict(self)))  # as JSON: tuples come back as lists
        return {"init": None, **_LATER_KEYS, **saved} == current

    def schedule(self) -> Schedule:
        return Schedule(epochs=self.epochs, lr=self.lr, momentum=self.momentum,
                        weight_decay=self.weight_decay, milestones=self.milestones,
                        decay=self.decay, optimizer_name=self.optimizer)


# Recipe keys added after teachers were cached, with the value every earlier recipe had.
_LATER_KEYS: dict[str, Any] = {"init_sha256": None, "optimizer": "sgd", "triplet": True,
                               "flip_only": False}


def _init_hash(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"teacher_init: {path} does not exist; give an existing weights file for "
                          "the teacher's backbone or null to train it from random weights.")
    return file_sha256(path)


def cached_teacher_path(config: ExperimentConfig) -> Path:
    recipe = TeacherRecipe.from_config(config)
    root = Path(config.cache_dir).expanduser() / "teachers"
    return root / f"{config.teacher}_{config.dataset}_e{config.teacher_epochs}_{recipe.digest()[:12]}.pt"


def teacher_path(config: ExperimentConfig) -> Path:
    """The checkpoint a config distils from: its own, or the cached one it would train."""
    if config.teacher_checkpoint:
        return Path(config.teacher_checkpoint).expanduser()
    return cached_teacher_path(config)


class SupervisedLearner(Learner):
    """One network trained on its task's supervised loss alone (teachers): cross-entropy, or for
    re-ID label-smoothed cross-entropy plus the batch-hard triplet loss."""

    def __init__(self, model: nn.Module, task: Task):
        self.model = model
        self.task = task
        self.modules = nn.ModuleDict({"model": model})

    def loss_components(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        features, logits = self.model(batch.images, features=True)
        terms = self.task.base_loss(logits, features[-1], batch.labels)
        return {"loss": sum(terms.values()), **{f"loss_{k}": v for k, v in terms.items()}}

    def eval_logits(self, batch: Batch) -> list[torch.Tensor]:
        return [self.model(batch.images)]

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.images, features=True)[0][-1]


def progress_path(path: Path) -> Path:
    """Where the training of the teacher cached at ``path`` keeps its per-epoch checkpoint until the
    teacher is saved. Not a ``*.pt`` name: nothing takes it for a (half-trained) teacher."""
    return path.with_name(f".{path.stem}.progress")


def train_teacher(recipe: TeacherRecipe, splits: DataSplits, *,
                  callbacks: list[EpochCallback] | None = None,
                  checkpoint_path: Path | None = None,
                  settings: ExecutionSettings | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train a teacher per ``recipe``. With ``checkpoint_path`` every epoch is checkpointed there,
    and a checkpoint found there is continued: the result equals an uninterrupted run's.
    ``settings`` (a config's execution keys) say how steps run; not part of the recipe."""
    device = splits.train.images.device
    execution = (settings or ExecutionSettings()).resolve(
        device_type=device.type, batch_size=recipe.batch_size,
        image_shape=splits.spec.image_shape, what="teacher training")
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.arch, splits.spec.num_classes, key="teacher")
    if recipe.init is not None:
        if _init_hash(Path(recipe.init)) != recipe.init_sha256:
            raise ConfigError(f"teacher_init: {recipe.init} changed since this teacher's recipe was "
                              "made (its content hash differs); start the run again.")
        init_backbone(model, recipe.init, key="teacher_init", arch=recipe.arch)
    model = model.to(device)
    if execution.channels_last:
        model.to(memory_format=torch.channels_last)
    task = splits.spec.task
    supervised = get_task(task)
    if not recipe.triplet:
        supervised = dataclasses.replace(supervised, triplet_weight=0.0)
    if recipe.flip_only:
        splits = dataclasses.replace(splits, spec=dataclasses.replace(
            splits.spec, crop_padding=0, random_erasing=0.0))
    trainer = Trainer(SupervisedLearner(model, supervised), splits, recipe.schedule(),
                      batch_size=recipe.batch_size, seed=recipe.seed,
                      objective=default_objective(task), callbacks=callbacks,
                      checkpoint_path=checkpoint_path, execution=execution)
    if trainer.resume_from_checkpoint():
        log.info("teacher %s continues after epoch %d of %d (%s)", recipe.arch,
                 trainer.state.epoch, recipe.epochs, checkpoint_path)
    state = trainer.fit()
    model.eval()
    objective = trainer.objective
    return model, {"history": state.history, "objective": objective.name,
                   objective.best_metric: state.best_value}


def save_teacher(model: nn.Module, arch: str, num_classes: int, path: Path,
                 extra: dict[str, Any] | None = None) -> None:
    """``{"model": state_dict, "format", "arch", "num_classes", ...extra}``: the form RepDistiller
    and mdistiller save and load, so their scripts read it too."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"model": state, "format": TEACHER_FORMAT, "arch": arch,
                       "num_classes": num_classes, **(extra or {})}, path)


def ensure_teacher(config: ExperimentConfig, splits: DataSplits, *,
                   callbacks: list[EpochCallback] | None = None) -> Path:
    """The teacher checkpoint for ``config``; trains and caches one if none is given or cached."""
    if config.teacher_checkpoint:
        path = teacher_path(config)
        if not path.is_file():
            raise ConfigError(f"teacher_checkpoint: {path} does not exist; give an existing file or "
                              "set teacher_checkpoint: null to train and cache a teacher.")
        return path
    path = cached_teacher_path(config)
    with file_lock(path.with_name(f".{path.name}.lock")):
        if path.is_file():
            return path
        recipe = TeacherRecipe.from_config(config)
        log.info("training teacher %s on %s for %d epochs (cached at %s)", recipe.arch,
                 config.dataset, recipe.epochs, path)
        progress = progress_path(path)  # the recipe's digest is in the name: it fits this recipe
        model, metrics = train_teacher(recipe, splits, callbacks=callbacks,
                                       checkpoint_path=progress,
                                       settings=ExecutionSettings.of(config))
        save_teacher(model, recipe.arch, splits.spec.num_classes, path,
                     {"recipe": asdict(recipe), "metrics": metrics})
        progress.unlink(missing_ok=True)
    return path


def load_teacher(path: str | Path, arch: str, num_classes: int,
                 device: torch.device | str = "cpu") -> nn.Module:
    """Load a teacher checkpoint: ours, RepDistiller's or mdistiller's (``{"model": state_dict,
    ...}``) or a bare state dict, strictly, through torch's restricted unpickler. A file in this
    project's old naming is converted on load (one log line)."""
    path = Path(path).expanduser()
    source = f"teacher_checkpoint: {path}"
    raw = safe_torch_load(path, "teacher_checkpoint")
    # Our teacher.pt and student.pt say what they hold; RepDistiller's files do not.
    if isinstance(raw, dict) and raw.get("arch") in MODELS:
        if raw["arch"] != arch:
            raise ConfigError(f"{source} holds a {raw['arch']}, but teacher is '{arch}'; set "
                              f"teacher: {raw['arch']} or give a {arch} checkpoint.")
    state = state_dict_of(raw, source)
    model = load_zoo_model(arch, num_classes, state, source=source, key="teacher")
    return model.to(device).eval()
