"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), written from the paper's equations.

Over the set S of every query and gallery image, with ``d`` the evaluation distance:

* N(p, k): the k nearest members of S to p (p itself included; ties by index);
* R(p, k) = {g in N(p, k) : p in N(g, k)}, the k-reciprocal neighbours (Eq. 4);
* R*(p, k) = R(p, k) united with every R(q, k/2), q in R(p, k), that shares at least 2/3 of its
  members with R(p, k) (Eq. 6; k/2 is ``k // 2``);
* V_p[g] = exp(-d(p, g)) for g in R*(p, k1), else 0 (Eq. 7); local query expansion replaces V_p
  by the mean of V_g over g in N(p, k2) (Eq. 11);
* d_J(p, g) = 1 - sum_l min(V_p[l], V_g[l]) / sum_l max(V_p[l], V_g[l]) (Eq. 10);
* d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g) (Eq. 12).

One choice the paper leaves open: ``d`` is the evaluation distance divided by its largest value over
S, so that exp(-d) and lambda * d live on the Jaccard distance's [0, 1] scale whatever the
embeddings' norm (a global scale changes no neighbour set and no ranking of ``d``).

Memory: a few (Q + G)^2 float32 matrices on the embeddings' device (Market-1501's test split:
about 23,000^2, 2 GB each), so re-ranking is meant for a GPU or for small splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mgkd.errors import ConfigError


@dataclass(frozen=True)
class RerankParams:
    """The paper's parameters; its defaults k1 = 20, k2 = 6, lambda = 0.3."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        for name in ("k1", "k2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"rerank {name}: expected an integer >= 1, got {value!r}; the "
                                  "paper's values are k1 = 20, k2 = 6.")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ConfigError(f"rerank lambda: expected a number in [0, 1], got "
                              f"{self.lambda_value!r}; the paper's value is 0.3.")


def _neighbours(order: torch.Tensor, k: int) -> torch.Tensor:
    """(n, n) bool: [p, g] is True when g is in N(p, k)."""
    n = order.shape[0]
    member = torch.zeros(n, n, dtype=torch.bool, device=order.device)
    member.scatter_(1, order[:, :min(k, n)], True)
    return member


def _reciprocal(order: torch.Tensor, k: int) -> torch.Tensor:
    """(n, n) bool: R(p, k) per row."""
    member = _neighbours(order, k)
    return member & member.t()


def _expanded(order: torch.Tensor, k: int) -> torch.Tensor:
    """(n, n) bool: R*(p, k) per row (Eq. 6)."""
    full = _reciprocal(order, k)
    half = _reciprocal(order, max(1, k // 2)).float()
    shared = full.float() @ half.t()  # [p, q] = |R(p, k) ∩ R(q, k/2)|, exact small integers
    size = half.sum(dim=1)  # |R(q, k/2)|
    taken = full & (3.0 * shared >= 2.0 * size.unsqueeze(0))
    return full | ((taken.float() @ half) > 0)


def _jaccard(v_query: torch.Tensor, v_gallery: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """(Q, G) Jaccard distances between rows of ``v_query`` and ``v_gallery`` (Eq. 10), using
    only the columns where the query's row is non-zero (a min with 0 adds nothing)."""
    out = torch.empty(v_query.shape[0], v_gallery.shape[0], device=v_query.device,
                      dtype=v_query.dtype)
    gallery_sums = v_gallery.sum(dim=1)
    for start in range(0, v_query.shape[0], chunk):
        rows = v_query[start:start + chunk]
        width = max(1, int((rows > 0).sum(dim=1).max()))
        values, columns = rows.topk(width, dim=1)  # every non-zero entry (padding: zeros)
        shared = torch.minimum(v_gallery[:, columns], values.unsqueeze(0)).sum(dim=2)  # (G, c)
        union = rows.sum(dim=1).unsqueeze(0) + gallery_sums.unsqueeze(1) - shared
        out[start:start + chunk] = (1.0 - shared / union).t()
    return out


def k_reciprocal_distances(all_distances: torch.Tensor, num_query: int,
                           params: RerankParams = RerankParams()) -> torch.Tensor:
    """Re-ranked (Q, G) distances from ``all_distances``, the (n, n) distances over S = the
    ``num_query`` queries followed by the gallery."""
    n = all_distances.shape[0]
    if all_distances.shape != (n, n) or not 0 < num_query < n:
        raise ValueError(f"expected square distances over queries then gallery, got "
                         f"{tuple(all_distances.shape)} with {num_query} queries")
    d = all_distances.float()
    d = d / d.max().clamp(min=torch.finfo(d.dtype).tiny)
    order = torch.sort(d, dim=1, stable=True).indices
    v = torch.where(_expanded(order, params.k1), torch.exp(-d), torch.zeros_like(d))
    near = _neighbours(order, params.k2).float()
    v = (near @ v) / near.sum(dim=1, keepdim=True)
    jaccard = _jaccard(v[:num_query], v[num_query:])
    return (1.0 - params.lambda_value) * jaccard + params.lambda_value * d[:num_query, num_query:]
