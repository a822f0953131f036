"""How a re-ID split is scored from its embeddings: the options re-ID papers report with.

* ``flip``: each image's embedding is the mean of its own and its mirror image's (the caller
  embeds both; :func:`flip_average`);
* ``normalize``: embeddings are scaled to unit L2 norm (after flip averaging);
* ``distance``: ``euclidean`` (squared; torchreid's default) or ``cosine`` (1 - cosine);
* ``rerank``: k-reciprocal re-ranking (:mod:`mgkd.reid.rerank`, k1 20, k2 6, lambda 0.3).

The defaults are torchreid's evaluation defaults: Euclidean distance on unnormalised embeddings,
no flip, no re-ranking. Embeddings and distances are float32 whatever the training precision.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mgkd.catalog.tasks import REID_DISTANCES
from mgkd.errors import ConfigError
from mgkd.reid.metrics import (RetrievalResult, metrics_of_distances, pairwise_distances,
                               retrieval_metrics)
from mgkd.reid.rerank import RerankParams, k_reciprocal_distances


@dataclass(frozen=True)
class RetrievalOptions:
    flip: bool = False
    normalize: bool = False
    distance: str = "euclidean"
    rerank: bool = False
    rerank_params: RerankParams = field(default_factory=RerankParams)

    def __post_init__(self) -> None:
        if self.distance not in REID_DISTANCES:
            raise ConfigError(f"eval_distance: unknown distance {self.distance!r}; allowed: "
                              f"{', '.join(REID_DISTANCES)}.")

    @classmethod
    def of(cls, config: Any) -> "RetrievalOptions":
        """The options an ``ExperimentConfig`` sets (typed loosely: this layer stays below the
        config's users)."""
        return cls(flip=config.eval_flip, normalize=config.eval_normalize,
                   distance=config.eval_distance, rerank=config.rerank)


def flip_average(embedding: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    """The mean of an image's embedding and its mirror image's, in float32."""
    return (embedding.float() + mirrored.float()) / 2.0


def prepared(embeddings: torch.Tensor, options: RetrievalOptions) -> torch.Tensor:
    """Float32 embeddings, L2-normalised when ``options.normalize``."""
    embeddings = embeddings.float()
    return F.normalize(embeddings, dim=1) if options.normalize else embeddings


def score_retrieval(query: torch.Tensor, query_ids: torch.Tensor, query_cams: torch.Tensor,
                    gallery: torch.Tensor, gallery_ids: torch.Tensor, gallery_cams: torch.Tensor,
                    options: RetrievalOptions = RetrievalOptions(), *,
                    per_query: bool = False) -> RetrievalResult:
    """CMC and mAP of the query embeddings against the gallery's under ``options``
    (``per_query``: with each valid query's AP and rank-1 hit)."""
    query, gallery = prepared(query, options), prepared(gallery, options)
    if not options.rerank:
        return retrieval_metrics(query, query_ids, query_cams, gallery, gallery_ids,
                                 gallery_cams, metric=options.distance, per_query=per_query)
    every = torch.cat([query, gallery])
    with torch.no_grad():
        distances = k_reciprocal_distances(pairwise_distances(every, every, options.distance),
                                           query.shape[0], options.rerank_params)
    return metrics_of_distances(distances, query_ids, query_cams, gallery_ids, gallery_cams,
                                per_query=per_query)
