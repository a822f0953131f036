"""How long preparing a teacher's knowledge will take, measured before it starts: a few real
training and inference steps of the teacher on a real batch, scaled to the whole schedule. Rough
(the first steps of a process are slower, evaluation is counted as inference only) but tells
minutes from hours before a user waits."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from mgkd.data import DataSplits, EvalSplit, RetrievalSplit
from mgkd.knowledge.heads import HEAD_RECIPE
from mgkd.knowledge.teacher import TeacherRecipe
from mgkd.models import create_model

TIMED_STEPS = 2  # after one warm-up step


@dataclass(frozen=True)
class StepTimes:
    """Seconds per training step and per inference step of one batch."""

    train: float
    inference: float


def _timed(step, repeats: int) -> float:
    step()  # warm-up: allocations, lazy initialisation
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


def time_model_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     repeats: int = TIMED_STEPS) -> StepTimes:
    """Time SGD steps and no-grad forward passes of ``model`` on one batch; leaves its weights
    as they were."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    @torch.no_grad()
    def inference_step() -> None:
        model(images)

    model.train()
    train = _timed(train_step, repeats)
    model.eval()
    inference = _timed(inference_step, repeats)
    model.load_state_dict(state)
    return StepTimes(train, inference)


def _eval_images(split: EvalSplit | None) -> int:
    if split is None:
        return 0
    if isinstance(split, RetrievalSplit):
        return len(split.query.labels) + len(split.gallery.labels)
    return len(split.labels)


def preparation_seconds(times: StepTimes, *, batch_size: int, train_images: int,
                        eval_images: int, teacher_epochs: int, head_epochs: int) -> float:
    """Seconds for ``teacher_epochs`` of teacher training (SGD steps of ``batch_size`` plus an
    evaluation pass per epoch) and then ``head_epochs`` of head training (one frozen-teacher
    forward per training image, the small heads neglected, plus evaluation), from measured
    ``times`` of a batch of ``batch_size``."""
    per_image = times.inference / batch_size
    teacher_epoch = math.ceil(train_images / batch_size) * times.train + eval_images * per_image
    head_batch = HEAD_RECIPE["batch_size"]
    head_epoch = (math.ceil(train_images / head_batch) * head_batch + eval_images) * per_image
    return teacher_epochs * teacher_epoch + head_epochs * head_epoch


def estimate_preparation_seconds(recipe: TeacherRecipe, splits: DataSplits, *,
                                 train_teacher: bool, head_epochs: int) -> float:
    """Seconds to train the teacher of ``recipe`` (when ``train_teacher``) and then its
    granularity heads for ``head_epochs`` (0: none), timed on the splits' device."""
    device = splits.train.images.device
    batch = min(recipe.batch_size, len(splits.train.labels))
    images = splits.train.images[:batch].float().div(255)
    labels = splits.train.labels[:batch]
    with torch.random.fork_rng(devices=[]):
        model = create_model(recipe.arch, splits.spec.num_classes, key="teacher").to(device)
    times = time_model_steps(model, images, labels)
    return preparation_seconds(
        times, batch_size=batch, train_images=len(splits.train.labels),
        eval_images=_eval_images(splits.val) + _eval_images(splits.test),
        teacher_epochs=recipe.epochs if train_teacher else 0, head_epochs=head_epochs)
