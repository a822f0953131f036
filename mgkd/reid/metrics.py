"""Retrieval metrics for person re-ID under the Market-1501 protocol.

For each query the gallery is ranked by distance after removing the *junk* items: gallery items with
the query's identity taken by the query's camera, and items with identity ``-1``. Distractors
(identity ``0``) stay in the list as wrong matches. A query with no correct match left is skipped
(and counted in ``num_skipped``).

* CMC rank-k: the percentage of the remaining queries whose first correct match is in the top k.
* AP (``ap_rule="torchreid"``, the default): the mean, over the query's correct matches, of the
  precision at that match's rank — the non-interpolated AP that torchreid's ``eval_market1501``
  computes. OSNet's published Market-1501 numbers (the paper's reference row) come from torchreid,
  so this rule is the one comparable with them.
* ``ap_rule="market_trapezoid"``: the official Market-1501 MATLAB ``compute_AP``, which integrates
  the precision-recall curve with the trapezoid rule: each correct match adds
  ``(1 / n_good) · (precision_before + precision_at) / 2``, where ``precision_before`` is the
  precision one rank earlier (1 at rank 1). It gives slightly lower values whenever a correct match
  follows a wrong one.

Ties in distance are broken by gallery index (a stable sort), so results are deterministic.
Everything runs on the embeddings' device, queries in chunks (a few dozen bytes × chunk × gallery), with
one host synchronisation at the end.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from mgkd.catalog.tasks import REID_DISTANCES
from mgkd.errors import ConfigError, DataError

JUNK_ID = -1  # Market-1501's junk images: never a match, never counted as a wrong one


def squared_euclidean(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """``‖q − g‖²`` for every pair, (Q, G), from one matmul; clamped at 0 against rounding."""
    q_sq = query.pow(2).sum(dim=1, keepdim=True)
    g_sq = gallery.pow(2).sum(dim=1).unsqueeze(0)
    return (q_sq + g_sq - 2.0 * (query @ gallery.t())).clamp(min=0.0)


def cosine_distance(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """``1 − cos(q, g)`` for every pair, (Q, G)."""
    return 1.0 - F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).t()


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euclidean": squared_euclidean,
    "cosine": cosine_distance,
}
assert tuple(DISTANCES) == REID_DISTANCES, "the catalog lists the distances implemented here"


def pairwise_distances(query: torch.Tensor, gallery: torch.Tensor,
                       metric: str = "euclidean") -> torch.Tensor:
    """Distances (Q, G) in float32 between query (Q, D) and gallery (G, D) embeddings.

    ``metric="euclidean"`` gives squared Euclidean distances (same ranking as Euclidean);
    ``"cosine"`` gives ``1 − cosine similarity``. Autocast is switched off so bf16 training code
    still ranks with float32 distances.
    """
    if metric not in DISTANCES:
        raise ConfigError(f"metric: unknown distance {metric!r}; allowed values: "
                          f"{', '.join(sorted(DISTANCES))}. Pass one of them.")
    with torch.autocast(device_type=query.device.type, enabled=False):
        return DISTANCES[metric](query.float(), gallery.float())


@dataclass(frozen=True)
class _RankedMatches:
    """Per query of one chunk, over its sorted gallery: which positions are correct matches."""
    match: torch.Tensor  # (c, G) bool: correct match that is not junk
    kept_rank: torch.Tensor  # (c, G) int: 1-based rank among the non-junk items (junk repeats it)
    hits: torch.Tensor  # (c, G) int: correct matches up to and including this position
    num_good: torch.Tensor  # (c,) int: correct matches in the whole list


def _ap_torchreid(ranked: _RankedMatches) -> torch.Tensor:
    precision = ranked.hits / ranked.kept_rank.clamp(min=1)
    return (precision * ranked.match).sum(dim=1) / ranked.num_good.clamp(min=1)


def _ap_market_trapezoid(ranked: _RankedMatches) -> torch.Tensor:
    precision = ranked.hits / ranked.kept_rank.clamp(min=1)
    # At a correct match the precision one rank earlier is (hits − 1) / (rank − 1); 1 at rank 1.
    before = torch.where(ranked.kept_rank > 1,
                         (ranked.hits - 1) / (ranked.kept_rank - 1).clamp(min=1),
                         torch.ones_like(precision))
    return (0.5 * (precision + before) * ranked.match).sum(dim=1) / ranked.num_good.clamp(min=1)


AP_RULES: dict[str, Callable[[_RankedMatches], torch.Tensor]] = {
    "torchreid": _ap_torchreid,
    "market_trapezoid": _ap_market_trapezoid,
}


@dataclass(frozen=True)
class RetrievalResult:
    """CMC and mAP of one query set against one gallery, in percent."""
    rank: dict[int, float]  # CMC rank-k, percent of the valid queries
    map: float  # mean AP over the valid queries, percent
    map_se: float  # standard error of map: sample std of the per-query AP / sqrt(n), percent
    rank1_se: float  # binomial standard error of rank-1: 100 · sqrt(p (1 − p) / n)
    num_queries: int  # queries with at least one valid correct match (n)
    num_skipped: int  # queries left out: no correct match after removing the junk
    # With ``per_query=True``: each valid query's AP (a share in [0, 1]) and rank-1 hit, in query
    # order, on the CPU (which queries are valid depends on the labels only, so two models' lists
    # pair query by query).
    query_ap: torch.Tensor | None = field(default=None, compare=False, repr=False)
    query_hit: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def to_metrics(self) -> dict[str, float]:
        """``map``, ``rank{k}`` for every computed k, ``map_se``: what a re-ID split is scored by
        (the trainer prefixes the split, e.g. ``val_map``)."""
        metrics = {"map": float(self.map)}
        metrics.update({f"rank{k}": float(v) for k, v in sorted(self.rank.items())})
        metrics["map_se"] = float(self.map_se)
        return metrics


def _check_ranks(ranks: tuple[int, ...]) -> tuple[int, ...]:
    values = tuple(ranks)
    if not values or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in values):
        raise ConfigError(f"ranks: expected positive integers such as (1, 5, 10), got {ranks!r}. "
                          "Pass the CMC ranks to report as a tuple of integers >= 1.")
    return tuple(sorted({1, *values}))  # rank-1 is always computed (rank1_se needs it)


def _check_inputs(query_emb: torch.Tensor, query_ids: torch.Tensor, query_cams: torch.Tensor,
                  gallery_emb: torch.Tensor, gallery_ids: torch.Tensor,
                  gallery_cams: torch.Tensor) -> None:
    for side, emb, ids, cams in (("query", query_emb, query_ids, query_cams),
                                 ("gallery", gallery_emb, gallery_ids, gallery_cams)):
        if emb.dim() != 2 or emb.shape[0] == 0:
            raise DataError(f"{side}_emb: expected a non-empty (N, D) tensor of embeddings, got shape "
                            f"{tuple(emb.shape)}. Stack one embedding per {side} image.")
        for name, labels in (("ids", ids), ("cams", cams)):
            if labels.shape != (emb.shape[0],) or labels.is_floating_point():
                raise DataError(f"{side}_{name}: expected an integer tensor of shape "
                                f"({emb.shape[0]},) (one per {side} embedding), got "
                                f"{labels.dtype} of shape {tuple(labels.shape)}. Pass one identity "
                                f"and one camera index per {side} image.")
            if labels.device != emb.device:
                raise DataError(f"{side}_{name} is on {labels.device} but {side}_emb on "
                                f"{emb.device}; move all six tensors to one device.")
    if query_emb.shape[1] != gallery_emb.shape[1] or query_emb.device != gallery_emb.device:
        raise DataError(f"query_emb ({tuple(query_emb.shape)} on {query_emb.device}) and gallery_emb "
                        f"({tuple(gallery_emb.shape)} on {gallery_emb.device}) must have the same "
                        "embedding width and device; embed both with the same model on one device.")


def _rank_chunk(dist: torch.Tensor, q_ids: torch.Tensor, q_cams: torch.Tensor,
                gallery_ids: torch.Tensor, gallery_cams: torch.Tensor) -> _RankedMatches:
    order = torch.sort(dist, dim=1, stable=True).indices
    ids = gallery_ids[order]
    same_id = ids == q_ids.unsqueeze(1)
    junk = (same_id & (gallery_cams[order] == q_cams.unsqueeze(1))) | (ids == JUNK_ID)
    match = same_id & ~junk
    hits = torch.cumsum(match, dim=1, dtype=torch.int32)
    return _RankedMatches(match=match, kept_rank=torch.cumsum(~junk, dim=1, dtype=torch.int32),
                          hits=hits, num_good=hits[:, -1])


def _check_settings(ranks: tuple[int, ...], chunk: int, ap_rule: str) -> tuple[int, ...]:
    ranks = _check_ranks(ranks)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk: expected a positive integer (queries ranked at a time), got "
                          f"{chunk!r}. Pass e.g. 256; memory grows as chunk × gallery size.")
    if ap_rule not in AP_RULES:
        raise ConfigError(f"ap_rule: unknown rule {ap_rule!r}; allowed values: "
                          f"{', '.join(sorted(AP_RULES))}. Use torchreid unless comparing with the "
                          "official Market-1501 MATLAB code.")
    return ranks


def _score(distance_rows: Callable[[int, int], torch.Tensor], num_queries: int,
           query_ids: torch.Tensor, query_cams: torch.Tensor, gallery_ids: torch.Tensor,
           gallery_cams: torch.Tensor, ranks: tuple[int, ...], chunk: int,
           ap_rule: str, per_query: bool) -> RetrievalResult:
    """Rank the gallery for ``chunk`` queries at a time by ``distance_rows(start, stop)``;
    ``per_query``: with each valid query's AP and rank-1 hit."""
    average_precision = AP_RULES[ap_rule]
    first_ranks, aps, valids = [], [], []
    with torch.no_grad():
        for start in range(0, num_queries, chunk):
            stop = start + chunk
            ranked = _rank_chunk(distance_rows(start, stop), query_ids[start:stop],
                                 query_cams[start:stop], gallery_ids, gallery_cams)
            no_match = torch.iinfo(torch.int32).max
            first_ranks.append(torch.where(ranked.match, ranked.kept_rank, no_match).amin(dim=1))
            aps.append(average_precision(ranked).double())
            valids.append(ranked.num_good > 0)
        first_rank, ap, valid = torch.cat(first_ranks), torch.cat(aps), torch.cat(valids)
        result = _summarise(first_rank, ap, valid, ranks)
        if not per_query:
            return result
        return dataclasses.replace(result, query_ap=ap[valid].cpu(),
                                   query_hit=(first_rank[valid] <= 1).cpu())


def retrieval_metrics(query_emb: torch.Tensor, query_ids: torch.Tensor, query_cams: torch.Tensor,
                      gallery_emb: torch.Tensor, gallery_ids: torch.Tensor,
                      gallery_cams: torch.Tensor, *, ranks: tuple[int, ...] = (1, 5, 10),
                      chunk: int = 256, metric: str = "euclidean",
                      ap_rule: str = "torchreid", per_query: bool = False) -> RetrievalResult:
    """CMC rank-k and mAP of the queries against the gallery (Market-1501 protocol, module doc).

    Embeddings are (N, D); ids and cams are integer tensors (N,), all on one device, where the
    work runs. ``chunk`` queries are ranked at a time. ``per_query``: also return each valid
    query's AP and rank-1 hit (``query_ap``, ``query_hit``). Raises DataError when no query has a
    valid correct match.
    """
    ranks = _check_settings(ranks, chunk, ap_rule)
    _check_inputs(query_emb, query_ids, query_cams, gallery_emb, gallery_ids, gallery_cams)
    return _score(lambda start, stop: pairwise_distances(query_emb[start:stop], gallery_emb, metric),
                  query_emb.shape[0], query_ids, query_cams, gallery_ids, gallery_cams, ranks,
                  chunk, ap_rule, per_query)


def metrics_of_distances(distances: torch.Tensor, query_ids: torch.Tensor,
                         query_cams: torch.Tensor, gallery_ids: torch.Tensor,
                         gallery_cams: torch.Tensor, *, ranks: tuple[int, ...] = (1, 5, 10),
                         chunk: int = 256, ap_rule: str = "torchreid",
                         per_query: bool = False) -> RetrievalResult:
    """:func:`retrieval_metrics` of a ready (Q, G) distance matrix (e.g. re-ranked)."""
    ranks = _check_settings(ranks, chunk, ap_rule)
    if distances.dim() != 2:
        raise DataError(f"distances: expected a (queries, gallery) matrix, got shape "
                        f"{tuple(distances.shape)}.")
    dummy_q = distances.new_zeros(distances.shape[0], 1)
    dummy_g = distances.new_zeros(distances.shape[1], 1)
    _check_inputs(dummy_q, query_ids, query_cams, dummy_g, gallery_ids, gallery_cams)
    return _score(lambda start, stop: distances[start:stop], distances.shape[0], query_ids,
                  query_cams, gallery_ids, gallery_cams, ranks, chunk, ap_rule, per_query)


def _summarise(first_rank: torch.Tensor, ap: torch.Tensor, valid: torch.Tensor,
               ranks: tuple[int, ...]) -> RetrievalResult:
    """Aggregates on the device, then one host sync for every number."""
    n = valid.sum().double()
    n_safe = n.clamp(min=1.0)
    weight = valid.double()
    mean_ap = (ap * weight).sum() / n_safe
    variance = ((ap - mean_ap).pow(2) * weight).sum() / (n - 1.0).clamp(min=1.0)
    map_se = (variance / n_safe).sqrt()
    hit_rates = [((first_rank <= k) & valid).sum().double() / n_safe for k in ranks]
    rank1 = hit_rates[0]
    rank1_se = (rank1 * (1.0 - rank1) / n_safe).sqrt()
    numbers = torch.stack([n, mean_ap, map_se, rank1_se, *hit_rates]).tolist()  # the one sync
    num_queries = int(numbers[0])
    if num_queries == 0:
        raise DataError(f"retrieval_metrics: none of the {valid.numel()} queries has a correct match "
                        "in the gallery once the same-identity same-camera images and junk (id -1) "
                        "are removed. Check that query and gallery ids come from the same identity "
                        "labelling and that the gallery holds other cameras' images of them.")
    return RetrievalResult(rank={k: 100.0 * v for k, v in zip(ranks, numbers[4:])},
                           map=100.0 * numbers[1], map_se=100.0 * numbers[2],
                           rank1_se=100.0 * numbers[3], num_queries=num_queries,
                           num_skipped=valid.numel() - num_queries)
