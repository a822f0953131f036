"""KDSVD (Lee, Kim & Song, "Self-supervised Knowledge Distillation Using Singular Value
Decomposition", ECCV 2018; TF code sseung0703/SSKD_SVD, PyTorch port in mdistiller).

What it matches: for every stage map, the top-k right singular vectors of the (C, H·W) feature
matrix, i.e. the dominant spatial patterns, compressed independently of the channel count.
Student vectors are sign-aligned to the teacher's, weighted by the teacher's normalised singular
values, and the RBF relations between the vectors of consecutive stages,
``exp(-(v_l[i] - v_{l+1}[j])² / rbf_width)``, are matched with a squared L2 loss (summed,
divided by the batch size, as in mdistiller).

Deviations from the authors' code, all for heterogeneous pairs and numerical safety:
* Vectors live over spatial positions (not channels), so student and teacher may differ in
  width; each paired stage is pooled to the smaller of the two spatial sizes (``match_spatial``).
* Stages are paired deepest-first (``stage_pairs``), stems left out. A pair whose matched map
  has a single position is skipped: its singular vector is just a sign (±1) after alignment.
  With one usable pair left the relation is taken within that stage; with none the loss is 0.
* The singular-vector backward is a custom one: the 1/(λ_i - λ_j) factors of the eigenvector
  derivative are Lorentzian-broadened, (λ_i - λ_j) / ((λ_i - λ_j)² + ε²), with ε relative to the
  largest eigenvalue. PyTorch's own SVD backward returns NaN/inf for repeated singular values
  (constant or zero maps, any map with fewer channels than positions beyond its rank); the
  authors' TF code also replaced the non-finite factors of its custom gradient by zeros.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError
from mgkd.methods.base import (DistillMethod, MethodContext, MethodInputs, Shape, check_form,
                               register)
from mgkd.methods.common import match_spatial, stage_pairs

# Broadening of 1/(λ_i - λ_j) relative to the largest eigenvalue: gradients stay bounded
# (≤ 1/(2ε)) when singular values (nearly) coincide and are exact to ~1e-8 elsewhere.
_REL_EPS = 1e-4
_ABS_EPS = 1e-20


class _TopRightSingularVectors(torch.autograd.Function):
    """Top-k right singular vectors V_k (B, N, k) of x (B, C, N) and the singular values (B, k).

    Backward through the eigenvectors of A = xᵀx: dL/dA = V (F ∘ VᵀG) V_kᵀ + (I - VVᵀ) G Λ_k⁻¹ V_kᵀ
    with F_ji = 1/(λ_i - λ_j) (broadened, 0 on the diagonal), then dL/dx = x (Ā + Āᵀ). The
    singular values are returned without gradient (only the teacher's are used, as weights).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        v = vh.transpose(1, 2)  # (B, N, r), r = min(C, N)
        ctx.save_for_backward(x, v, s)
        ctx.k = k
        s_k = s[:, :k].contiguous()
        ctx.mark_non_differentiable(s_k)
        return v[:, :, :k].contiguous(), s_k

    @staticmethod
    def backward(ctx: Any, grad_v: torch.Tensor, grad_s: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, None]:
        x, v, s = ctx.saved_tensors
        k = ctx.k
        lam = s * s  # eigenvalues of xᵀx, descending, (B, r)
        lam_k = lam[:, :k]
        v_k = v[:, :, :k]
        eps = _REL_EPS * lam[:, :1] + _ABS_EPS  # (B, 1)
        gap = lam_k.unsqueeze(1) - lam.unsqueeze(2)  # [b, j, i] = λ_i - λ_j, (B, r, k)
        eps3 = eps.unsqueeze(2)
        inv_gap = gap / (gap * gap + eps3 * eps3)  # 0 where j == i
        coeff = v.transpose(1, 2) @ grad_v  # Vᵀ G, (B, r, k)
        left = v @ (inv_gap * coeff)  # (B, N, k); Ā = left · V_kᵀ
        if v.shape[1] > v.shape[2]:
            # Eigenvectors with λ = 0 outside the row space of x: gap = λ_i, projector I - VVᵀ.
            outside = grad_v - v @ coeff
            left = left + outside * (lam_k / (lam_k * lam_k + eps * eps)).unsqueeze(1)
        # dL/dx = x (Ā + Āᵀ) with Ā = left V_kᵀ, without forming the (N, N) matrix.
        grad_x = (x @ left) @ v_k.transpose(1, 2) + (x @ v_k) @ left.transpose(1, 2)
        return grad_x, None


def top_right_singular_vectors(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k right singular vectors (B, N, k) and singular values (B, k) of x (B, C, N),
    computed in float32 (or float64 if given) outside autocast, with a NaN-safe backward."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _TopRightSingularVectors.apply(x.to(dtype), k)


def align_to_teacher(v_student: torch.Tensor, v_teacher: torch.Tensor) -> torch.Tensor:
    """For every teacher vector pick the student candidate with the largest |cosine| and flip
    its sign to agree with the teacher. (B, N, m), (B, N, k) -> (B, N, k)."""
    cosine = v_student.transpose(1, 2) @ v_teacher  # (B, m, k)
    best = cosine.abs().argmax(dim=1, keepdim=True)  # (B, 1, k)
    chosen = v_student.gather(2, best.expand(-1, v_student.shape[1], -1))
    sign = torch.where(cosine.gather(1, best) >= 0, 1.0, -1.0).to(chosen.dtype)
    return chosen * sign


def stage_indices(shapes: list[Shape]) -> list[int]:
    """Indices of the stage maps: every 4-D feature (3-D shape) but the stem, which is only used
    when it is the sole map."""
    maps = [i for i, shape in enumerate(shapes) if len(shape) == 3]
    return maps[1:] if len(maps) > 1 else maps


@register
class KDSVD(DistillMethod):
    """Singular-vector relations between consecutive stages (KDSVD, ECCV 2018).

    Options: ``k`` (singular vectors per stage, 1 as in the authors' CIFAR-100 runs and
    mdistiller), ``extra_candidates`` (student vectors searched beyond k for the best match to
    each teacher vector; mdistiller's 3), ``rbf_width`` (denominator of the RBF, 8 in both codes).

    The default ``feature_weight`` (its catalog entry) is 1.0: mdistiller's CIFAR-100 KDSVD
    weight (feature 1.0, CE 1.0); the TF original adds its distillation gradient at unit weight
    too (norm-clipped to CE's).

    ``form: repdistiller`` reproduces RepDistiller's ``KDSVD``: each stage map is read as an
    (H·W, C) matrix, so the vectors live over channels; no pooling (spatial sizes may differ), but
    every paired stage must have as many student as teacher channels; a lone stage gives no loss;
    non-finite relation terms are zeroed; the teacher's relation carries no gradient.
    """

    name: ClassVar[str] = "kdsvd"

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        k = self.options["k"]
        extra = self.options["extra_candidates"]
        self.rbf_width = float(self.options["rbf_width"])
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"method_options.k: must be an integer >= 1, got {k!r}.")
        if not isinstance(extra, int) or isinstance(extra, bool) or extra < 0:
            raise ConfigError(
                f"method_options.extra_candidates: must be an integer >= 0, got {extra!r}.")
        if self.rbf_width <= 0:
            raise ConfigError(f"method_options.rbf_width: must be > 0, got {self.rbf_width}.")
        self.form = check_form(self.name, self.options)

        s_index = stage_indices(context.student_shapes)
        t_index = stage_indices(context.teacher_shapes)
        s_stages = [context.student_shapes[i] for i in s_index]
        t_stages = [context.teacher_shapes[i] for i in t_index]
        # (student feature index, teacher feature index, matched (H, W)) of every usable pair.
        self.pairs: list[tuple[int, int, tuple[int, int]]] = []
        k_eff = k
        for si, ti in stage_pairs(s_stages, t_stages):
            (c_s, h_s, w_s), (c_t, h_t, w_t) = s_stages[si], t_stages[ti]
            if self.form == "repdistiller":
                if c_s != c_t:
                    raise ConfigError(
                        f"method 'kdsvd' with method_options.form repdistiller needs as many "
                        f"student as teacher channels at every paired stage (its singular vectors "
                        f"live over channels); stage maps {s_stages[si]} and {t_stages[ti]} differ. "
                        "Use form: paper (vectors over positions) for this pair.")
                self.pairs.append((s_index[si], t_index[ti], (h_s, w_s)))
                k_eff = min(k_eff, c_s, h_s * w_s, h_t * w_t)
                continue
            hw = (min(h_s, h_t), min(w_s, w_t))
            positions = hw[0] * hw[1]
            if positions < 2:
                continue  # a single position: the singular vector is only a sign
            self.pairs.append((s_index[si], t_index[ti], hw))
            # The relation is elementwise over the k vectors, so k is shared by all stages.
            k_eff = min(k_eff, positions, c_s, c_t)
        self.k = k_eff
        self.extra_candidates = extra

    def _stage_vectors(self, student: torch.Tensor, teacher: torch.Tensor, hw: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned, singular-value-weighted student and teacher vectors (B, N, k) of one pair:
        over positions (paper form: (C, H·W) matrices, pooled to ``hw``) or over channels
        (RepDistiller form: (H·W, C) matrices)."""
        if self.form == "repdistiller":
            student = student.flatten(2).transpose(1, 2)
            teacher = teacher.flatten(2).transpose(1, 2)
        else:
            student = match_spatial(student, hw).flatten(2)
            teacher = match_spatial(teacher, hw).flatten(2)
        v_t, s_t = top_right_singular_vectors(teacher.detach(), self.k)
        candidates = min(self.k + self.extra_candidates, *student.shape[1:])
        v_s, _ = top_right_singular_vectors(student, candidates)
        v_s = align_to_teacher(v_s, v_t)
        weight = F.normalize(s_t, dim=1).unsqueeze(1)  # (B, 1, k), 1 for k = 1
        return v_s * weight, v_t * weight

    def _relation(self, upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        """RBF between every entry of ``upper`` (B, N1, k) and ``lower`` (B, N2, k): (B, N1, N2, k)."""
        return torch.exp(-(upper.unsqueeze(2) - lower.unsqueeze(1)).pow(2) / self.rbf_width)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        s_feats, t_feats = inputs.student_features, inputs.teacher_features
        if not self.pairs:
            return s_feats[-1].new_zeros((), dtype=torch.float32)
        vectors = [self._stage_vectors(s_feats[si], t_feats[ti], hw) for si, ti, hw in self.pairs]
        if self.form == "repdistiller":
            return self._repdistiller_loss(vectors, s_feats[-1].shape[0])
        # Consecutive stages; a lone stage is related to itself.
        links = list(zip(vectors[:-1], vectors[1:])) if len(vectors) > 1 else [(vectors[0],) * 2]
        batch = s_feats[-1].shape[0]
        loss = s_feats[-1].new_zeros((), dtype=torch.float32)
        for (s_up, t_up), (s_low, t_low) in links:
            diff = self._relation(s_up, s_low) - self._relation(t_up, t_low)
            loss = loss + diff.pow(2).sum()
        return loss / batch

    def _repdistiller_loss(self, vectors: list[tuple[torch.Tensor, torch.Tensor]],
                           batch: int) -> torch.Tensor:
        """Σ over consecutive stages of Σ (rbf_s − rbf_t)², non-finite terms zeroed, / B."""
        loss = vectors[0][0].new_zeros(())
        for (s_prev, t_prev), (s_cur, t_cur) in zip(vectors[:-1], vectors[1:]):
            diff = self._relation(s_cur, s_prev) - self._relation(t_cur, t_prev).detach()
            squared = diff.pow(2)
            loss = loss + torch.where(torch.isfinite(squared), squared,
                                      torch.zeros_like(squared)).sum()
        return loss / batch
