"""Correlation congruence (Peng et al., "Correlation Congruence for Knowledge Distillation",
ICCV 2019).

Matches the instance-to-instance correlation matrices of the two networks' embeddings.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import (TEACHER_EMBEDDING, TEACHER_LOGITS, DistillMethod,
                               MethodContext, MethodInputs, check_form, register)

KERNELS = ("gaussian", "bilinear")


@register
class CC(DistillMethod):
    """(1/B²)·||C_t − C_s||² of the batch correlation matrices of linearly embedded embeddings.

    Both pooled embeddings go through their own trainable linear layer to ``embed_dim`` (like
    RepDistiller's ``LinearEmbed``) and are L2-normalised. ``kernel: gaussian`` (the paper's choice)
    approximates exp(−γ‖x−y‖²) by its Taylor series of order ``order`` in x·y, which is exact for
    unit vectors up to the truncation:  k(x, y) ≈ Σ_{p=0..P} e^{−2γ} (2γ)^p / p! · (x·y)^p.
    ``kernel: bilinear`` uses k(x, y) = x·y.

    β: RepDistiller's 0.02 belongs to its own, much larger CC variant (products of embedding
    differences between neighbouring samples); on this formula it leaves the term near 1e-5 at
    initialisation (resnet32x4 -> resnet8x4), so the default here is 2000, which puts the term at
    the size RepDistiller's β·L_cc has.

    ``form: repdistiller`` is that variant, to reproduce RepDistiller's numbers: the linear
    embeddings are not normalised, and with Δ = |e_s − e_t| (per sample and dimension) the loss is
    mean_i Σ_d Δ_i,d · Δ_i+1,d over neighbouring samples of the batch; its β default is 0.02.
    ``kernel``, ``gamma`` and ``order`` belong to the paper form only.
    """

    name = "cc"
    # reads the teacher's pooled embedding (teacher_features[-1]) only, never its maps
    teacher_outputs = frozenset({TEACHER_LOGITS, TEACHER_EMBEDDING})

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        dim, kernel = self.options["embed_dim"], self.options["kernel"]
        gamma, order = self.options["gamma"], self.options["order"]
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"method_options.embed_dim: {dim!r} must be a positive integer.")
        if kernel not in KERNELS:
            raise ConfigError(f"method_options.kernel: unknown kernel {kernel!r}; "
                              f"allowed: {', '.join(KERNELS)}.")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0:
            raise ConfigError(f"method_options.gamma: {gamma!r} must be a positive number.")
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ConfigError(f"method_options.order: {order!r} must be an integer >= 0.")
        self.form = check_form(self.name, self.options)
        self.kernel = kernel
        if kernel == "gaussian":
            self.coefficients = [math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p)
                                 for p in range(order + 1)]
        else:
            self.coefficients = [0.0, 1.0]
        self.embed_student = nn.Linear(context.student_shapes[-1][0], dim)
        self.embed_teacher = nn.Linear(context.teacher_shapes[-1][0], dim)

    def _correlation(self, embedding: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(embedding.flatten(1), dim=1)
        similarity = unit @ unit.t()
        # Horner's scheme for Σ_p c_p · s^p.
        correlation = torch.full_like(similarity, self.coefficients[-1])
        for coefficient in reversed(self.coefficients[:-1]):
            correlation = correlation * similarity + coefficient
        return correlation

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        student = self.embed_student(inputs.student_features[-1].flatten(1))
        teacher = self.embed_teacher(inputs.teacher_features[-1].flatten(1))
        if self.form == "repdistiller":
            delta = (student - teacher).abs()
            if delta.shape[0] < 2:  # no neighbouring pair in a batch of one
                return delta.sum() * 0.0
            return (delta[:-1] * delta[1:]).sum(dim=1).mean()
        # The correlations run in at least float32, even under autocast (they differ by little).
        dtype = torch.promote_types(student.dtype, torch.float32)
        with torch.autocast(student.device.type, enabled=False):
            return F.mse_loss(self._correlation(student.to(dtype)),
                              self._correlation(teacher.to(dtype)))
