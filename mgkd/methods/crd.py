"""CRD: contrastive representation distillation (Tian et al., "Contrastive Representation
Distillation", ICLR 2020; RepDistiller's ``crd/``)."""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import (TEACHER_EMBEDDING, TEACHER_LOGITS, DistillMethod,
                               MethodContext, MethodInputs, register)

logger = logging.getLogger(__name__)


class Embed(nn.Module):
    """Linear projection followed by L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)).float(), dim=1)


@register
class CRDMethod(DistillMethod):
    """Contrastive loss between student and teacher embeddings with two memory banks.

    Both embeddings (the last feature) are projected to ``feat_dim`` and L2-normalised. Each
    direction scores an anchor against its own sample's entry (the positive, ``inputs.indices``)
    and ``nce_k`` other samples' entries (negatives) of the other network's memory bank:
    student anchor vs teacher memory and teacher anchor vs student memory; the loss is the sum of
    both directions. Where RepDistiller uses NCE with a normalisation constant Z fixed from the
    first batch, this uses the softmax-over-(1 + K) (InfoNCE) form at temperature ``nce_t``: no Z to
    estimate or checkpoint, and stable from the first step. Both start near log(K + 1) per
    direction and fall as the positive separates from the negatives, so beta = 0.8 keeps its scale.

    Negatives: ``nce_k`` indices drawn uniformly with replacement per batch (global torch RNG, on
    the inputs' device) from the other training samples (the positive itself is excluded);
    RepDistiller's default draws them from other classes, which would need every sample's label.
    Memory banks (buffers, so they are checkpointed) start uniform in +-1/sqrt(feat_dim / 3) from
    the global RNG at construction; after the loss, in training mode only, each batch's entries
    become ``normalize(nce_m * old + (1 - nce_m) * new)`` under ``no_grad``.
    """

    name = "crd"
    # reads the teacher's pooled embedding (teacher_features[-1]) only, never its maps
    teacher_outputs = frozenset({TEACHER_LOGITS, TEACHER_EMBEDDING})

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        feat_dim, nce_k = self.options["feat_dim"], self.options["nce_k"]
        for key, value in (("feat_dim", feat_dim), ("nce_k", nce_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"method_options.{key}: must be an integer >= 1 for method "
                                  f"'crd', got {value!r}.")
        self.nce_t = float(self.options["nce_t"])
        self.nce_m = float(self.options["nce_m"])
        if not self.nce_t > 0:
            raise ConfigError(f"method_options.nce_t: must be > 0 for method 'crd', "
                              f"got {self.options['nce_t']!r}.")
        if not 0.0 <= self.nce_m < 1.0:
            raise ConfigError(f"method_options.nce_m: must be in [0, 1) for method 'crd', "
                              f"got {self.options['nce_m']!r}.")
        n_data = int(context.num_train_samples)
        if n_data < 2:
            raise ConfigError(f"method 'crd' needs at least 2 training samples for its memory "
                              f"bank, got num_train_samples={n_data}.")
        if nce_k > n_data - 1:
            logger.info("crd: nce_k %d capped at %d (the training split has %d samples)",
                        nce_k, n_data - 1, n_data)
            nce_k = n_data - 1
        self.nce_k = nce_k
        self.n_data = n_data
        self.embed_s = Embed(context.student_shapes[-1][0], feat_dim)
        self.embed_t = Embed(context.teacher_shapes[-1][0], feat_dim)
        bound = 1.0 / math.sqrt(feat_dim / 3.0)
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim).mul_(2 * bound).sub_(bound))

    def _score_whole_bank(self, batch: int, n_candidates: int) -> bool:
        return batch * n_candidates >= self.n_data

    def _scores(self, anchor: torch.Tensor, memory: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K) dot products of each anchor with its candidates' memory entries."""
        batch, n_cand = candidates.shape
        if self._score_whole_bank(batch, n_cand):
            # Cheaper (and far lighter on memory) to score the whole bank and pick than to gather
            # B x (1 + K) x feat_dim entries, as RepDistiller does. Autograd keeps a copy of the
            # bank for the backward pass, so the bank itself is updated in place afterwards.
            return torch.gather(anchor @ memory.clone().t(), 1, candidates)
        picked = memory.index_select(0, candidates.flatten()).view(batch, n_cand, -1)
        return torch.bmm(picked, anchor.unsqueeze(2)).squeeze(2)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        e_s = self.embed_s(inputs.student_features[-1])
        e_t = self.embed_t(inputs.teacher_features[-1])
        positives = inputs.indices.to(torch.long).view(-1, 1)
        # Uniform over the other n_data - 1 samples: draw from [0, n_data - 1), skip the positive.
        negatives = torch.randint(0, self.n_data - 1, (positives.shape[0], self.nce_k),
                                  device=positives.device)
        negatives = negatives + (negatives >= positives).long()
        candidates = torch.cat([positives, negatives], dim=1)
        target = torch.zeros(positives.shape[0], dtype=torch.long, device=positives.device)
        # fp32 even under autocast: the scores are divided by a small temperature.
        with torch.autocast(positives.device.type, enabled=False):
            logits_s = self._scores(e_s, self.memory_t, candidates) / self.nce_t
            logits_t = self._scores(e_t, self.memory_s, candidates) / self.nce_t
            loss = F.cross_entropy(logits_s, target) + F.cross_entropy(logits_t, target)
        if self.training:
            self._update_memory(positives.view(-1), e_s, e_t)
        return loss

    @torch.no_grad()
    def _update_memory(self, indices: torch.Tensor, e_s: torch.Tensor, e_t: torch.Tensor) -> None:
        """Momentum update of the batch's memory entries, in place: the banks stay the same
        tensors (a step recorded in a CUDA graph reads and writes them by address)."""
        m = self.nce_m
        for memory, emb in ((self.memory_s, e_s), (self.memory_t, e_t)):
            mixed = memory.index_select(0, indices) * m + emb.detach().to(memory.dtype) * (1 - m)
            memory.index_copy_(0, indices, F.normalize(mixed, dim=1))
