"""Linear centered kernel alignment (Kornblith, Norouzi, Lee and Hinton, ICML 2019).

For representations X (n × p) and Y (n × q) of the same n examples, with every column centred,

    CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F · ‖YᵀY‖_F) = ⟨K, L⟩ / (‖K‖_F · ‖L‖_F),

K = XXᵀ and L = YYᵀ the (centred) Gram matrices. It is 1 for X = Y, unchanged by an orthogonal
transform or an isotropic scaling of either side, and needs no equal widths, so a teacher stage
compares with any student stage. The Gram form is used: n × n whatever the width (a CIFAR stage
map flattens to 65,536 values), each stage's Gram computed once, in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mgkd.errors import ConfigError


GRAM_CHUNK = 4096  # feature columns converted to float64 at a time


def centered_gram(x: torch.Tensor) -> torch.Tensor:
    """The Gram matrix (n × n, float64) of ``x`` (n, ...) flattened per example, columns centred.

    Summed over chunks of columns (centring is per column, so each chunk centres on its own): a
    float64 copy of a 65,536-wide stage map is never made whole."""
    flat = x.reshape(x.shape[0], -1)
    gram = torch.zeros(flat.shape[0], flat.shape[0], dtype=torch.float64)
    for start in range(0, flat.shape[1], GRAM_CHUNK):
        chunk = flat[:, start:start + GRAM_CHUNK].double()
        chunk -= chunk.mean(dim=0, keepdim=True)
        gram += chunk @ chunk.T
    return gram


def cka_of_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    """Linear CKA from two centred Gram matrices; NaN when a side does not vary at all."""
    norms = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)
    if norms == 0:
        return math.nan
    return float((k * l).sum() / norms)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between ``x`` (n, ...) and ``y`` (n, ...), rows the same examples."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ConfigError(f"linear CKA needs the same 2+ examples on both sides, got {x.shape[0]} "
                          f"and {y.shape[0]}")
    return cka_of_grams(centered_gram(x), centered_gram(y))


@dataclass(frozen=True)
class CkaMatrix:
    """CKA of every teacher stage (rows) with every student stage (columns)."""

    teacher_stages: list[str]
    student_stages: list[str]
    values: list[list[float]]

    def to_csv(self) -> str:
        """Rows: teacher stages; columns: student stages; 6 decimals."""
        lines = [",".join(["teacher \\ student", *self.student_stages])]
        for name, row in zip(self.teacher_stages, self.values):
            lines.append(",".join([name, *(f"{v:.6f}" for v in row)]))
        return "\n".join(lines) + "\n"


def cka_matrix(teacher_grams: list[torch.Tensor], student_grams: list[torch.Tensor],
               teacher_stages: list[str], student_stages: list[str]) -> CkaMatrix:
    """CKA of each teacher stage with each student stage, from their :func:`centered_gram`\ s
    (same examples; a model's features can be dropped once its Grams are made)."""
    if teacher_grams[0].shape != student_grams[0].shape:
        raise ConfigError("CKA needs the teacher's and the student's outputs on the same examples")
    values = [[cka_of_grams(k, l) for l in student_grams] for k in teacher_grams]
    return CkaMatrix(list(teacher_stages), list(student_stages), values)
