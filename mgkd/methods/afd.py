"""AFD: attention-based feature distillation (Ji, Heo & Park, "Show, Attend and Distill: Knowledge
Distillation via Attention-based Feature Matching", AAAI 2021; clovaai/attention-feature-distillation).

What it matches: every teacher stage against every student stage, with link strengths learnt by a
small attention meta-network instead of hand-picked pairs.

* Query of teacher stage t: ``LinearBN(GAP(h_t))``; key of student stage s: ``ReLU(LinearBN(GAP(h_s)))``
  followed by a per-teacher-stage bilinear map (one ``LinearBN(d, d·T)``), so the score is
  q_tᵀ W_t k_s. Learnable stage encodings p_t, p_s add p_tᵀ p_s; scores are divided by √d.
* α_t = softmax over the student stages: for each teacher stage the weights sum to one.
* Values: the spatial map φ(h) = L2-normalise(flatten(mean_c h²)); the student's map is resampled to
  the teacher stage's size (``match_spatial``) before normalising.
* L = Σ_t mean_b Σ_s α_{t,s} · mean_hw (φ(ĥ_s) - φ(h_t))².

Implementation notes (deviations from the authors' code):
* The feature lists here hold stem + stage outputs, not every residual block, so the candidate set
  is the stage outputs (stem left out unless it is the only map).
* Stages whose map is 1×1 are left out (unless nothing else is left): their normalised spatial
  map is a constant 1, so the distance carries no signal.
* With a single sample in training mode the BatchNorm layers use their running statistics
  (PyTorch cannot normalise a batch of one).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, Shape, register
from mgkd.methods.common import match_spatial


class LinearBN(nn.Module):
    """Linear layer followed by BatchNorm1d (the AFD meta-network's building block)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        # Batch statistics need more than one sample; fall back to the running ones.
        use_batch_stats = self.training and y.shape[0] > 1
        return F.batch_norm(y, self.bn.running_mean, self.bn.running_var, self.bn.weight,
                            self.bn.bias, training=use_batch_stats, momentum=self.bn.momentum,
                            eps=self.bn.eps)


def _usable_maps(shapes: list[Shape]) -> list[int]:
    """Stage maps (stem left out) with more than one spatial position, falling back to all maps."""
    maps = [i for i, shape in enumerate(shapes) if len(shape) == 3]
    stages = maps[1:] if len(maps) > 1 else maps
    spread = [i for i in stages if shapes[i][1] * shapes[i][2] > 1]
    return spread or stages


def spatial_map(feature: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """φ(h): channel mean of h², optionally resampled to ``size``, flattened and L2-normalised."""
    energy = feature.float().pow(2).mean(dim=1, keepdim=True)
    if size is not None:
        energy = match_spatial(energy, size)
    return F.normalize(energy.flatten(1), dim=1)


@register
class AFD(DistillMethod):
    """Attention-weighted matching of all teacher/student stage pairs (AFD, AAAI 2021).

    Options: ``qk_dim`` (query/key width, 128 as in the authors' code).

    The default ``feature_weight`` (its catalog entry) is 200: the authors' CIFAR-100 setting
    (``--beta 200`` with CE 1.0; their runs add Hinton KD at 0.9 on top, which here is the
    separate ``logit_weight``).
    """

    name: ClassVar[str] = "afd"

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        qk_dim = self.options["qk_dim"]
        if not isinstance(qk_dim, int) or isinstance(qk_dim, bool) or qk_dim < 1:
            raise ConfigError(f"method_options.qk_dim: must be an integer >= 1, got {qk_dim!r}.")
        self.qk_dim = qk_dim
        self.student_index = _usable_maps(context.student_shapes)
        self.teacher_index = _usable_maps(context.teacher_shapes)
        if not self.student_index or not self.teacher_index:
            raise ConfigError("method 'afd' needs at least one 4-D feature map on both sides.")
        s_channels = [context.student_shapes[i][0] for i in self.student_index]
        t_channels = [context.teacher_shapes[i][0] for i in self.teacher_index]
        n_t = len(t_channels)
        self.query = nn.ModuleList(LinearBN(c, qk_dim) for c in t_channels)
        self.key = nn.ModuleList(LinearBN(c, qk_dim) for c in s_channels)
        self.bilinear = LinearBN(qk_dim, qk_dim * n_t)  # W_t for every teacher stage at once
        self.pos_teacher = nn.Parameter(torch.empty(n_t, qk_dim))
        self.pos_student = nn.Parameter(torch.empty(len(s_channels), qk_dim))
        nn.init.xavier_normal_(self.pos_teacher)
        nn.init.xavier_normal_(self.pos_student)

    def attention(self, student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]
                  ) -> torch.Tensor:
        """Link weights α (B, T, S) of the selected maps; each row sums to one over S."""
        batch = student_maps[0].shape[0]
        query = torch.stack([layer(f.float().mean(dim=(2, 3)))
                             for layer, f in zip(self.query, teacher_maps)], dim=1)  # (B, T, d)
        key = torch.stack([F.relu(layer(f.float().mean(dim=(2, 3))))
                           for layer, f in zip(self.key, student_maps)], dim=1)  # (B, S, d)
        n_s, n_t = key.shape[1], query.shape[1]
        key = self.bilinear(key.reshape(batch * n_s, -1)).view(batch, n_s, n_t, self.qk_dim)
        scores = torch.einsum("bstd,btd->bts", key, query) + self.pos_teacher @ self.pos_student.t()
        return F.softmax(scores / math.sqrt(self.qk_dim), dim=2)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        student_maps = [inputs.student_features[i] for i in self.student_index]
        teacher_maps = [inputs.teacher_features[i] for i in self.teacher_index]
        weights = self.attention(student_maps, teacher_maps)  # (B, T, S)
        loss = weights.new_zeros(())
        for t, teacher in enumerate(teacher_maps):
            size = (teacher.shape[-2], teacher.shape[-1])
            target = spatial_map(teacher)  # (B, H_t·W_t)
            # Student maps resampled to this teacher stage's size: (B, S, H_t·W_t).
            student = torch.stack([spatial_map(f, size) for f in student_maps], dim=1)
            distance = (student - target.unsqueeze(1)).pow(2).mean(dim=2)  # (B, S)
            loss = loss + (weights[:, t] * distance).sum(dim=1).mean()
        return loss
