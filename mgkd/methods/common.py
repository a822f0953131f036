"""Small helpers shared by several KD methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mgkd.methods.base import MethodInputs, Shape


def stage_pairs(student_shapes: list[Shape], teacher_shapes: list[Shape],
                count: int | None = None) -> list[tuple[int, int]]:
    """Pair the intermediate feature maps (4-D, i.e. every feature but the embedding) of student
    and teacher, aligned from the deepest stage backwards, so architectures with a different number
    of stages still pair stage for stage. ``count`` keeps only the deepest ``count`` pairs.
    Returns ``(student_index, teacher_index)`` pairs in shallow-to-deep order."""
    s_maps = [i for i, shape in enumerate(student_shapes) if len(shape) == 3]
    t_maps = [i for i, shape in enumerate(teacher_shapes) if len(shape) == 3]
    n = min(len(s_maps), len(t_maps))
    if count is not None:
        n = min(n, count)
    return list(zip(s_maps[len(s_maps) - n:], t_maps[len(t_maps) - n:]))


def match_spatial(source: torch.Tensor, target_hw: tuple[int, int]) -> torch.Tensor:
    """Adaptive-average-pool ``source`` (B, C, H, W) down to ``target_hw`` when it is larger."""
    if source.shape[-2:] == torch.Size(target_hw):
        return source
    if source.shape[-2] >= target_hw[0] and source.shape[-1] >= target_hw[1]:
        return F.adaptive_avg_pool2d(source, target_hw)
    return F.interpolate(source, size=target_hw, mode="bilinear", align_corners=False)


def soft_kl(student_logits: torch.Tensor, target_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(target/T) || softmax(student/T)), averaged over the batch."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_target = F.log_softmax(target_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_target, reduction="batchmean", log_target=True)
    return kl * temperature ** 2


class InitStageTransfer:
    """For ab and fsp: ``transfer_loss`` is the init stage's objective, and in the main stage it
    stays on (the paper's form, so beta means something to a search) or is 0 with ``form:
    repdistiller`` (RepDistiller drops it after the init stage). Mixed in before DistillMethod."""

    form: str

    def transfer_loss(self, inputs: MethodInputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        if self.form == "repdistiller":
            return inputs.student_features[0].new_zeros((), dtype=torch.float32)
        return self.transfer_loss(inputs)

    def init_loss(self, inputs: MethodInputs) -> torch.Tensor:
        return self.transfer_loss(inputs)
