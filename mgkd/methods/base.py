"""The contract every KD method implements, and the registry that finds them by name.

A method is an ``nn.Module`` that owns its auxiliary modules (regressors, embeddings, memory banks)
and turns teacher/student features into one unweighted scalar loss. The loss composition
(``mgkd.distill.loss``) multiplies it by ``feature_weight`` and adds CE, logit-KD and granularity
terms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from mgkd.catalog.methods import METHOD_DEFAULTS, MethodDefaults
from mgkd.errors import ConfigError

Shape = tuple[int, ...]

# What a method reads from the teacher (``DistillMethod.teacher_outputs``): its logits, its pooled
# embedding (the last feature), or its feature maps (any earlier feature: stage or stem maps).
TEACHER_LOGITS, TEACHER_EMBEDDING, TEACHER_MAPS = "logits", "embedding", "maps"


@dataclass(frozen=True)
class MethodContext:
    """What a method needs to know to build its auxiliary modules."""

    student_shapes: list[Shape]  # per feature, without batch dim; the last is the embedding (D_s,)
    teacher_shapes: list[Shape]  # same for the teacher; the last is (D_t,)
    num_classes: int
    num_train_samples: int  # size of the training split (CRD's memory bank)
    epochs: int  # the run's epoch budget (warm-ups and init stages scale with it)
    temperature: float  # the config's logit temperature T
    teacher: str = ""  # architecture names, for pair-specific defaults
    student: str = ""


@dataclass
class MethodInputs:
    """One training batch as a method sees it. Teacher tensors carry no gradient."""

    student_features: list[torch.Tensor]  # stem/stage maps ..., embedding (B, D_s)
    teacher_features: list[torch.Tensor]
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    targets: torch.Tensor  # (B,) int64 class labels
    indices: torch.Tensor  # (B,) int64 positions in the training split (CRD)
    epoch: int  # 0-based epoch of the main stage


class DistillMethod(nn.Module):
    """Base class. Subclasses set ``name`` (their catalog entry's name, which is also their
    module's), the init-stage flags and implement ``forward``; ``register`` hands them their
    entry of the torch-free table ``mgkd.catalog.methods`` as ``defaults`` (loss weights, options,
    capture blocker).

    Class attributes of the subclass:
      has_init_stage: True for ab, ft, fsp (RepDistiller trains them first for a few epochs).
      init_trains_student: whether the init stage also updates the student (ab, fsp) or only the
        method's own modules (ft's paraphraser).
      teacher_outputs: what the method reads from the teacher (TEACHER_LOGITS, TEACHER_EMBEDDING,
        TEACHER_MAPS). Without TEACHER_MAPS a run can take the teacher's outputs from the teacher
        view bank (mgkd.knowledge.views) instead of running it; the default assumes maps.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[MethodDefaults]
    has_init_stage: ClassVar[bool] = False
    init_trains_student: ClassVar[bool] = False
    teacher_outputs: ClassVar[frozenset[str]] = frozenset({TEACHER_LOGITS, TEACHER_EMBEDDING,
                                                           TEACHER_MAPS})

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__()
        self.context = context
        self.options = self.resolve_options(options, context.teacher, context.student)

    @classmethod
    def resolve_options(cls, options: dict[str, Any] | None, teacher: str = "",
                        student: str = "") -> dict[str, Any]:
        """Defaults filled in, unknown option names rejected with the allowed ones named."""
        return cls.defaults.resolve_options(options, teacher, student)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:  # pragma: no cover - abstract
        """The unweighted method loss, a scalar tensor."""
        raise NotImplementedError

    def step_constants(self, epoch: int) -> tuple:
        """Python numbers a step of main-stage ``epoch`` computes with that change between epochs
        (none by default). A step recorded in a CUDA graph is recorded again when they change."""
        return ()

    def init_loss(self, inputs: MethodInputs) -> torch.Tensor:
        """The init-stage objective (only for ``has_init_stage`` methods). By default the method's
        own transfer loss (ab, fsp); a method whose init stage differs overrides it (ft)."""
        if not self.has_init_stage:
            raise NotImplementedError(f"method '{self.name}' has no init stage")
        return self(inputs)

    def init_parameters(self) -> Iterable[nn.Parameter]:
        """The method's own parameters trained in the init stage (default: all of them)."""
        return self.parameters()

    def init_epochs(self) -> int:
        """Init-stage length: ``init_fraction`` of the epoch budget, at least one epoch."""
        fraction = float(self.options.get("init_fraction", 0.0))
        return max(1, round(fraction * self.context.epochs)) if self.has_init_stage else 0


METHODS: dict[str, type[DistillMethod]] = {}


FORMS: tuple[str, ...] = ("paper", "repdistiller")


def check_form(method: str, options: dict[str, Any]) -> str:
    """The ``form`` option of a method offering its original paper's form and RepDistiller's."""
    form = options.get("form")
    if form not in FORMS:
        raise ConfigError(f"method_options.form: unknown value {form!r} for method '{method}'; "
                          f"allowed: {', '.join(FORMS)} (paper: as the method's own paper; "
                          "repdistiller: as RepDistiller's distiller_zoo, to reproduce its numbers).")
    return form


def register(cls: type[DistillMethod]) -> type[DistillMethod]:
    """Class decorator: adds a method to ``METHODS`` under ``cls.name``, with its catalog entry
    as ``cls.defaults``."""
    if not cls.name or cls.name in METHODS or cls.name not in METHOD_DEFAULTS:
        raise RuntimeError(f"method name missing, registered twice or without an entry in "
                           f"mgkd.catalog.methods: {cls.name!r}")
    cls.defaults = METHOD_DEFAULTS[cls.name]
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[DistillMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method: unknown method '{name}'; allowed: "
                          f"{', '.join(METHODS)}.") from None


def build_method(name: str, context: MethodContext, options: dict[str, Any] | None) -> DistillMethod:
    return get_method(name)(context, dict(options or {}))
