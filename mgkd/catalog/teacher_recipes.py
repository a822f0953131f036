"""How a teacher the run trains is trained (``teacher_recipe``), as a plain table.

* ``default``: this project's recipe for every data set: SGD (momentum 0.9, weight decay 5e-4) at
  the architecture's lr, x0.1 at 62.5 / 75 / 87.5 % of ``teacher_epochs``, batch 64, the task's base
  loss (re-ID: label-smoothed cross-entropy + batch-hard triplet), the data set's augmentation.
* ``torchreid_osnet``: torchreid's published OSNet recipe for Market-1501
  (``configs/im_osnet_x1_0_softmax_256x128_amsgrad.yaml``): AMSGrad at lr 0.0015 (weight decay
  5e-4, torchreid's default), batch 64, a single x0.1 step at epoch 60 of 150 (0.4 of the budget:
  set ``teacher_epochs: 150`` for the published length), label-smoothed softmax cross-entropy only
  (no triplet term), random flip as the only augmentation. Not matched: its 10 ``fixbase``
  epochs that train the classifier alone, and its random (not P x K) sampler; its ImageNet start
  is ``teacher_init``. Re-ID data sets only.

Adding a recipe is one entry in :data:`TEACHER_RECIPES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from mgkd.catalog.tasks import CLASSIFICATION, REID

OPTIMIZERS: tuple[str, ...] = ("sgd", "amsgrad")


@dataclass(frozen=True)
class TeacherRecipeDefaults:
    """What a recipe fixes; ``None`` keeps the default recipe's value (lr: the architecture's)."""

    tasks: tuple[str, ...]  # the tasks it is written for
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.625, 0.75, 0.875)
    decay: float = 0.1
    batch_size: int = 64
    triplet: bool = True  # re-ID: the batch-hard triplet term beside the cross-entropy
    flip_only: bool = False  # augmentation: random flip alone (no pad-and-crop, no erasing)


TEACHER_RECIPES: Mapping[str, TeacherRecipeDefaults] = MappingProxyType({
    "default": TeacherRecipeDefaults(tasks=(CLASSIFICATION, REID)),
    "torchreid_osnet": TeacherRecipeDefaults(
        tasks=(REID,), optimizer="amsgrad", lr=0.0015, weight_decay=5e-4, milestones=(0.4,),
        decay=0.1, batch_size=64, triplet=False, flip_only=True),
})
TEACHER_RECIPE_NAMES: tuple[str, ...] = tuple(TEACHER_RECIPES)
