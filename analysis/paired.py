"""Paired tests between two models scored on the same validation samples.

* :func:`mcnemar_exact`: per-sample right/wrong of two classifiers (or re-ID rank-1 hits). Only the
  discordant samples carry information: ``b`` (the first right, the second wrong) and ``c`` (the
  reverse). Under "both are equally good", each discordant sample is the first's with probability
  1/2, so ``b ~ Binomial(b + c, 1/2)``; the two-sided exact p-value is
  ``min(1, 2 · P(X ≤ min(b, c)))``, worked out with integers (no normal approximation).
* :func:`sign_flip_test`: per-query differences ``d_i`` of two re-ID models' AP. Under "no
  difference" each ``d_i`` is as likely ``+|d_i|`` as ``−|d_i|`` (the differences are symmetric
  about 0; nothing about their shape is assumed); the p-value is the share of the ``2^n`` sign
  patterns whose mean is at least as far from 0 as the observed one. Exact for up to
  :data:`EXACT_FLIPS_UP_TO` queries; beyond, :data:`RANDOM_FLIPS` patterns drawn with a fixed seed
  (the observed one counted in), so the same input always gives the same p-value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_FLIPS_UP_TO = 16  # 2^16 = 65,536 sign patterns: enumerated
RANDOM_FLIPS = 20_000  # patterns drawn beyond that: p-value resolution about 0.0001
FLIP_SEED = 0
# Differences closer than this (in AP, a share in [0, 1]) count as equal: float rounding of the same
# ranking must not make a tail.
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class McNemar:
    """An exact McNemar test: ``b`` samples only the first model got right, ``c`` only the second."""

    b: int
    c: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.b + self.c


def mcnemar_exact(b: int, c: int) -> McNemar:
    """The two-sided exact McNemar test for discordant counts ``b`` and ``c`` (module doc)."""
    if isinstance(b, bool) or isinstance(c, bool) or min(b, c) < 0:
        raise ValueError(f"discordant counts must be non-negative integers, got b={b!r}, c={c!r}")
    n = b + c
    if n == 0:
        return McNemar(b, c, 1.0)
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    p_value = min(1.0, 2 * tail / 2 ** n)
    return McNemar(b, c, p_value)


def discordant_counts(first: np.ndarray, second: np.ndarray) -> tuple[int, int]:
    """(first right and second wrong, first wrong and second right) for two boolean arrays of the
    same samples."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"the two models were scored on different samples ({first.size} vs "
                         f"{second.size}); pair only outcomes of the same validation split.")
    return int(np.sum(first & ~second)), int(np.sum(~first & second))


@dataclass(frozen=True)
class SignFlip:
    """A paired sign-flip test of per-query differences (first − second)."""

    n: int
    mean_difference: float
    p_value: float
    exact: bool  # every sign pattern enumerated (else RANDOM_FLIPS drawn)
    improved: int  # queries where the first is higher
    worsened: int  # queries where the second is higher


_CHUNK = 1024  # sign patterns held at once (a pattern is n floats)


def _flipped_sums(diff: np.ndarray, exact: bool) -> np.ndarray:
    """|Σ s_i d_i| for every sign pattern s (all 2^n when ``exact``, else RANDOM_FLIPS drawn)."""
    n = diff.size
    total = 2 ** n if exact else RANDOM_FLIPS
    rng = np.random.default_rng(FLIP_SEED)
    sums = []
    for start in range(0, total, _CHUNK):
        count = min(_CHUNK, total - start)
        if exact:
            codes = np.arange(start, start + count, dtype=np.int64)[:, None]
            bits = (codes >> np.arange(n, dtype=np.int64)) & 1
        else:
            bits = rng.integers(0, 2, size=(count, n))
        sums.append(np.abs((1.0 - 2.0 * bits) @ diff))
    return np.concatenate(sums)


def sign_flip_test(first: np.ndarray, second: np.ndarray) -> SignFlip:
    """The two-sided sign-flip permutation test of the mean of ``first − second`` (module doc)."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"the two models were scored on different queries ({first.shape} vs "
                         f"{second.shape}); pair only per-query values of the same query set.")
    diff = first - second
    diff[np.abs(diff) <= _TOLERANCE] = 0.0
    n = diff.size
    improved, worsened = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    mean = float(diff.mean()) if n else 0.0
    if improved + worsened == 0:
        return SignFlip(n, mean, 1.0, True, 0, 0)
    exact = n <= EXACT_FLIPS_UP_TO
    observed = abs(diff.sum())
    flipped = _flipped_sums(diff, exact)
    as_far = int(np.sum(flipped >= observed - _TOLERANCE * n))
    p_value = as_far / flipped.size if exact else (as_far + 1) / (flipped.size + 1)
    return SignFlip(n, mean, min(1.0, p_value), exact, improved, worsened)
