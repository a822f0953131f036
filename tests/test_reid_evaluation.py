"""Re-ID evaluation options: flip-averaged embeddings, L2 normalisation, cosine distance and
k-reciprocal re-ranking, each on a hand-checked case; re-ranking against a reference written here
from the paper's equations (Zhong et al., CVPR 2017); float32 embeddings under bf16 autocast."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mgkd.config import ExperimentConfig, resolve
from mgkd.data import Batch, ImageSplit
from mgkd.errors import ConfigError
from mgkd.reid.evaluation import RetrievalOptions, score_retrieval
from mgkd.reid.metrics import metrics_of_distances, pairwise_distances, retrieval_metrics
from mgkd.reid.rerank import RerankParams, k_reciprocal_distances
from mgkd.training.tasks import PersonReid, task_of

IDS = torch.tensor([1])
CAM_Q, CAM_G = torch.tensor([0]), torch.tensor([1, 1])


# ---- L2 normalisation and cosine distance: one query, two gallery images ------------------------
# q = (3, 4); g0 = (6, 8) is the same person (same direction, twice as long), g1 = (3, 3) another.
# Squared Euclidean: g0 25, g1 1 -> g1 first: rank-1 0 %, the hit at rank 2, AP 1/2.
# L2-normalised: q = (.6, .8), g0 = (.6, .8) at 0, g1 = (.7071, .7071) at .0202 -> g0 first.
# Cosine: 1 - cos(q, g0) = 0, 1 - cos(q, g1) = 1 - 21 / (5 * sqrt 18) = .0101 -> g0 first.
QUERY = torch.tensor([[3.0, 4.0]])
GALLERY = torch.tensor([[6.0, 8.0], [3.0, 3.0]])
GALLERY_IDS = torch.tensor([1, 2])


def _score(options: RetrievalOptions) -> tuple[float, float]:
    result = score_retrieval(QUERY, IDS, CAM_Q, GALLERY, GALLERY_IDS, CAM_G, options)
    return result.rank[1], result.map


def test_plain_euclidean_ranks_by_length_too():
    assert _score(RetrievalOptions()) == (0.0, 50.0)


def test_l2_normalisation_ranks_by_direction():
    assert _score(RetrievalOptions(normalize=True)) == (100.0, 100.0)


def test_cosine_distance_ranks_by_direction():
    assert _score(RetrievalOptions(distance="cosine")) == (100.0, 100.0)
    distances = pairwise_distances(QUERY, GALLERY, "cosine")
    torch.testing.assert_close(distances, torch.tensor([[0.0, 1 - 21 / (5 * math.sqrt(18))]]),
                               rtol=1e-6, atol=1e-7)


# ---- flip: the mean of an image's embedding and its mirror's ------------------------------------
class FirstRow:
    """A learner whose embedding is the first pixel row of channel 0: mirroring reverses it."""

    def embed(self, batch: Batch) -> torch.Tensor:
        return batch.images[:, 0, 0, :]


def _split(rows: list[list[int]]) -> ImageSplit:
    images = torch.zeros(len(rows), 3, 2, len(rows[0]), dtype=torch.uint8)
    images[:, 0, 0, :] = torch.tensor(rows, dtype=torch.uint8)
    return ImageSplit(images, torch.arange(len(rows)), torch.zeros(len(rows), dtype=torch.int64))


def _batches(split: ImageSplit):
    # as the evaluation batches do, in float32 (no normalisation here: the values stay readable)
    yield Batch(split.images.float(), split.labels, torch.arange(len(split.labels)))


def test_flip_averages_each_embedding_with_its_mirror_images():
    split = _split([[1, 2, 6], [0, 0, 9]])
    plain = PersonReid().embed_split(FirstRow(), split, _batches)
    flipped = PersonReid(RetrievalOptions(flip=True)).embed_split(FirstRow(), split, _batches)
    assert plain.tolist() == [[1, 2, 6], [0, 0, 9]]
    # (1, 2, 6) and its mirror (6, 2, 1) -> (3.5, 2, 3.5); (0, 0, 9) -> (4.5, 0, 4.5)
    assert flipped.tolist() == [[3.5, 2.0, 3.5], [4.5, 0.0, 4.5]]


# ---- float32 embeddings whatever the training precision -----------------------------------------
class Projection:
    def __init__(self) -> None:
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(3 * 2 * 5, 16)

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.layer(batch.images.flatten(1))


def test_embeddings_for_evaluation_are_float32_under_bf16_autocast():
    torch.manual_seed(1)
    split = ImageSplit(torch.randint(0, 256, (6, 3, 2, 5), dtype=torch.uint8), torch.arange(6),
                       torch.zeros(6, dtype=torch.int64))
    learner = Projection()
    exact = learner.embed(next(_batches(split)))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the control: autocast does change it
        assert learner.embed(next(_batches(split))).dtype == torch.bfloat16
        got = PersonReid().embed_split(learner, split, _batches)
    assert got.dtype == torch.float32 and torch.equal(got, exact)


# ---- k-reciprocal re-ranking: a reference from the paper's equations ----------------------------
def reference_rerank(features: np.ndarray, num_query: int, k1: int, k2: int,
                     lam: float) -> np.ndarray:
    """Zhong et al. 2017, Eqs. 4-12, with sets and loops, in float64. ``d`` is the squared
    Euclidean distance over all images divided by its maximum (the module's documented choice)."""
    n = len(features)
    d = ((features[:, None, :] - features[None, :, :]) ** 2).sum(-1)
    d = d / d.max()

    def nearest(p: int, k: int) -> list[int]:  # N(p, k), ties by index
        return sorted(range(n), key=lambda j: (d[p, j], j))[:k]

    def reciprocal(p: int, k: int) -> set[int]:  # R(p, k), Eq. 4
        return {g for g in nearest(p, k) if p in nearest(g, k)}

    def expanded(p: int, k: int) -> set[int]:  # R*(p, k), Eq. 6
        base = reciprocal(p, k)
        out = set(base)
        for q in base:
            half = reciprocal(q, k // 2)
            if len(base & half) >= 2 / 3 * len(half):
                out |= half
        return out

    v = np.zeros((n, n))
    for p in range(n):  # Eq. 7
        for g in expanded(p, k1):
            v[p, g] = math.exp(-d[p, g])
    v = np.stack([v[nearest(p, k2)].mean(axis=0) for p in range(n)])  # Eq. 11
    out = np.zeros((num_query, n - num_query))
    for p in range(num_query):
        for j, g in enumerate(range(num_query, n)):
            jaccard = 1 - np.minimum(v[p], v[g]).sum() / np.maximum(v[p], v[g]).sum()  # Eq. 10
            out[p, j] = (1 - lam) * jaccard + lam * d[p, g]  # Eq. 12
    return out


def _clustered(seed: int, identities: int, per_identity: int, dim: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(identities, dim))
    return np.concatenate([c + rng.normal(0.0, 1.2, size=(per_identity, dim)) for c in centres])


@pytest.mark.parametrize("params", [RerankParams(), RerankParams(k1=5, k2=3, lambda_value=0.5),
                                    RerankParams(k1=7, k2=1, lambda_value=0.0)])
def test_rerank_matches_the_papers_equations(params: RerankParams):
    features = _clustered(seed=params.k1, identities=9, per_identity=5)  # 45 images
    rng = np.random.default_rng(1)
    features = features[rng.permutation(len(features))]
    num_query = 12
    expected = reference_rerank(features, num_query, params.k1, params.k2, params.lambda_value)
    every = torch.from_numpy(features).float()
    got = k_reciprocal_distances(pairwise_distances(every, every), num_query, params)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(expected[:, :5], expected[:, :5].mean())  # not a degenerate case


def test_rerank_with_lambda_one_keeps_the_original_ranking():
    features = torch.from_numpy(_clustered(seed=3, identities=5, per_identity=4)).float()
    ids = torch.arange(5).repeat_interleave(4)
    cams = torch.arange(20) % 2
    query, gallery = slice(0, 20, 4), [i for i in range(20) if i % 4]
    plain = retrieval_metrics(features[query], ids[query], cams[query], features[gallery],
                              ids[gallery], cams[gallery])
    every = torch.cat([features[query], features[gallery]])
    ranked = k_reciprocal_distances(pairwise_distances(every, every), 5,
                                    RerankParams(lambda_value=1.0))
    again = metrics_of_distances(ranked, ids[query], cams[query], ids[gallery], cams[gallery])
    assert (again.rank, again.map) == (plain.rank, plain.map)


def test_score_retrieval_reranks_the_normalised_embeddings():
    features = _clustered(seed=4, identities=6, per_identity=5)
    ids = torch.arange(6).repeat_interleave(5)
    cams = torch.arange(30) % 3
    query, gallery = list(range(0, 30, 5)), [i for i in range(30) if i % 5]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = reference_rerank(np.concatenate([unit[query], unit[gallery]]), 6, 20, 6, 0.3)
    want = metrics_of_distances(torch.from_numpy(expected).float(), ids[query], cams[query],
                                ids[gallery], cams[gallery])
    emb = torch.from_numpy(features).float()
    got = score_retrieval(emb[query], ids[query], cams[query], emb[gallery], ids[gallery],
                          cams[gallery], RetrievalOptions(normalize=True, rerank=True))
    assert got.rank == pytest.approx(want.rank) and got.map == pytest.approx(want.map, rel=1e-6)


def test_bad_rerank_parameters_are_refused():
    with pytest.raises(ConfigError, match="rerank k1: expected an integer >= 1"):
        RerankParams(k1=0)
    with pytest.raises(ConfigError, match=r"rerank lambda: expected a number in \[0, 1\]"):
        RerankParams(lambda_value=1.5)


# ---- the config keys ----------------------------------------------------------------------------
def test_config_keys_reach_the_task(tmp_path):
    config = resolve(ExperimentConfig.from_dict({
        "dataset": "market1501", "data_dir": str(tmp_path), "eval_flip": True,
        "eval_normalize": True, "eval_distance": "cosine", "rerank": True}))
    assert task_of(config).retrieval == RetrievalOptions(flip=True, normalize=True,
                                                         distance="cosine", rerank=True)
    default = resolve(ExperimentConfig.from_dict({"dataset": "market1501"}))
    assert task_of(default).retrieval == RetrievalOptions()  # torchreid's defaults


@pytest.mark.parametrize("changes, words", [
    ({"dataset": "market1501", "eval_distance": "manhattan"},
     ["eval_distance", "manhattan", "euclidean, cosine"]),
    ({"dataset": "market1501", "rerank": "yes"}, ["rerank", "true or false"]),
    ({"dataset": "cifar100", "eval_flip": True}, ["eval_flip", "re-ID data sets only", "cifar100"]),
])
def test_bad_evaluation_options_are_refused(changes, words):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict(changes)
    assert all(word in str(info.value) for word in words), str(info.value)
