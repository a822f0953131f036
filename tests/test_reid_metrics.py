"""Re-ID losses and Market-1501 retrieval metrics: hand-computed values and slow references."""
from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from mgkd.catalog.tasks import task_entry
import torch
import torch.nn.functional as F

from mgkd.errors import ConfigError, DataError
from mgkd.reid.losses import ReidBaseLoss, batch_hard_triplet, label_smoothing_ce
from mgkd.reid.metrics import RetrievalResult, pairwise_distances, retrieval_metrics

# ---------------------------------------------------------------------------------------------
# A tiny gallery on a line (1-D embeddings, so squared distances are exact small floats).
#   index : position, id, camera
GALLERY = [(1.0, 1, 1),   # g0
           (2.0, 0, 2),   # g1  distractor: stays in the list as a wrong match
           (3.0, 1, 2),   # g2
           (4.0, 2, 1),   # g3
           (5.0, 1, 3),   # g4
           (6.0, -1, 2),  # g5  junk: removed for every query
           (7.0, 3, 1)]   # g6
QUERIES = [(0.0, 1, 1),   # q0
           (4.5, 1, 2),   # q1
           (7.5, 2, 3),   # q2
           (7.0, 3, 2),   # q3
           (0.0, 3, 1)]   # q4
# q0 (id 1, cam 1) ranks g0 g1 g2 g3 g4 g5 g6; g0 is id 1 from cam 1 (removed, else a rank-1 hit),
#    g5 junk. Kept: g1 ✗ (distractor), g2 ✓, g3 ✗, g4 ✓, g6 ✗ -> hits at ranks 2 and 4.
#    rank-1 no, rank-5 yes; AP = (1/2 + 2/4) / 2 = 0.5.
# q1 (id 1, cam 2): distances g3 .25, g4 .25, g2 2.25, g5 2.25, g1 6.25, g6 6.25, g0 12.25. Ties
#    are broken by gallery index (stable sort), so g3 precedes g4. g2 is id 1 from cam 2 (removed),
#    g5 junk. Kept: g3 ✗, g4 ✓, g1 ✗, g6 ✗, g0 ✓ -> hits at ranks 2 and 5.
#    rank-1 no (g4 first would make it yes); AP = (1/2 + 2/5) / 2 = 0.45.
# q2 (id 2, cam 3): g6 .25, g5 2.25 (junk), g4 6.25, g3 12.25, ... Kept: g6 ✗, g4 ✗, g3 ✓ -> rank 3.
#    rank-1 no, rank-5 yes; AP = 1/3.
# q3 (id 3, cam 2): g6 at distance 0, id 3 from cam 1 -> rank 1; AP = 1.
# q4 (id 3, cam 1): its only id-3 image g6 is from cam 1 -> removed; no valid match -> skipped.
HAND_AP = [0.5, 0.45, 1 / 3, 1.0]
HAND_RANK = {1: 1 / 4, 2: 3 / 4, 5: 4 / 4, 10: 4 / 4}  # first hits at ranks 2, 2, 3, 1


def _tensors(rows, device="cpu"):
    emb = torch.tensor([[r[0]] for r in rows], device=device)
    ids = torch.tensor([r[1] for r in rows], device=device)
    cams = torch.tensor([r[2] for r in rows], device=device)
    return emb, ids, cams


def _hand_example(device="cpu", **kwargs) -> RetrievalResult:
    return retrieval_metrics(*_tensors(QUERIES, device), *_tensors(GALLERY, device),
                             ranks=(1, 2, 5, 10), **kwargs)


def test_hand_computed_example():
    result = _hand_example()
    assert result.num_queries == 4 and result.num_skipped == 1
    for k, share in HAND_RANK.items():
        assert result.rank[k] == pytest.approx(100 * share, abs=1e-6)
    assert result.map == pytest.approx(100 * sum(HAND_AP) / 4, abs=1e-5)  # 57.083 %
    assert result.map_se == pytest.approx(100 * statistics.stdev(HAND_AP) / 2, abs=1e-5)
    assert result.rank1_se == pytest.approx(100 * math.sqrt(0.25 * 0.75 / 4), abs=1e-6)
    assert result.to_metrics() == pytest.approx(
        {"map": result.map, "rank1": 25.0, "rank2": 75.0, "rank5": 100.0,
         "rank10": 100.0, "map_se": result.map_se})
    assert all(type(v) is float for v in result.to_metrics().values())


def test_market_trapezoid_rule_matches_the_official_integration():
    # Each hit adds (1/n_good)·(precision one rank earlier + precision at the hit)/2.
    # q0: hits at 2 and 4 -> ((0/1 + 1/2)/2 + (1/3 + 2/4)/2) / 2 = (0.25 + 0.41667) / 2 = 1/3
    # q1: hits at 2 and 5 -> ((0 + 1/2)/2 + (1/4 + 2/5)/2) / 2 = (0.25 + 0.325) / 2 = 0.2875
    # q2: hit at 3 -> (0/2 + 1/3)/2 = 1/6;  q3: hit at 1 -> (1 + 1)/2 = 1
    expected = (1 / 3 + 0.2875 + 1 / 6 + 1.0) / 4
    assert _hand_example(ap_rule="market_trapezoid").map == pytest.approx(100 * expected, abs=1e-5)


def test_default_ranks_and_metric_keys():
    result = retrieval_metrics(*_tensors(QUERIES), *_tensors(GALLERY))
    # exactly what the re-ID task's entry says its splits are scored by
    assert tuple(result.to_metrics()) == task_entry("reid").metric_names


def _random_split(seed, n_query=30, n_gallery=90, dim=6):
    gen = torch.Generator().manual_seed(seed)
    # query ids 8-10 never appear in the gallery: those queries are skipped
    q = (torch.randn(n_query, dim, generator=gen), torch.randint(1, 11, (n_query,), generator=gen),
         torch.randint(0, 4, (n_query,), generator=gen))
    # gallery ids include distractors (0) and junk (-1)
    g = (torch.randn(n_gallery, dim, generator=gen),
         torch.randint(-1, 8, (n_gallery,), generator=gen),
         torch.randint(0, 4, (n_gallery,), generator=gen))
    return q, g


def test_chunking_does_not_change_the_result():
    q, g = _random_split(0)
    whole = retrieval_metrics(*q, *g, chunk=1000)
    for chunk in (1, 7):
        assert retrieval_metrics(*q, *g, chunk=chunk) == whole


def _slow_reference(q, g):
    """Plain Python: per query, sort, drop junk, walk the list."""
    (qe, qi, qc), (ge, gi, gc) = [[t.tolist() for t in side] for side in (q, g)]
    first, aps, skipped = [], [], 0
    for emb, pid, cam in zip(qe, qi, qc):
        dists = [sum((a - b) ** 2 for a, b in zip(emb, other)) for other in ge]
        kept = [j for j in sorted(range(len(ge)), key=lambda j: (dists[j], j))
                if gi[j] != -1 and not (gi[j] == pid and gc[j] == cam)]
        hit_ranks = [r + 1 for r, j in enumerate(kept) if gi[j] == pid]
        if not hit_ranks:
            skipped += 1
            continue
        first.append(hit_ranks[0])
        aps.append(sum((i + 1) / r for i, r in enumerate(hit_ranks)) / len(hit_ranks))
    return first, aps, skipped


@pytest.mark.parametrize("seed", [1, 2])
def test_agrees_with_a_slow_reference(seed):
    q, g = _random_split(seed)
    first, aps, skipped = _slow_reference(q, g)
    result = retrieval_metrics(*q, *g, chunk=8)
    assert (result.num_queries, result.num_skipped) == (len(aps), skipped)
    assert 0 < skipped < 30  # the data exercise both paths
    assert result.map == pytest.approx(100 * statistics.mean(aps), abs=1e-4)
    assert result.map_se == pytest.approx(100 * statistics.stdev(aps) / math.sqrt(len(aps)), abs=1e-4)
    for k in (1, 5, 10):
        assert result.rank[k] == pytest.approx(100 * sum(f <= k for f in first) / len(first))


def test_pairwise_distances():
    q, g = torch.randn(5, 3), torch.randn(7, 3)
    assert torch.allclose(pairwise_distances(q, g), torch.cdist(q, g) ** 2, atol=1e-5)
    cosine = 1 - F.cosine_similarity(q.unsqueeze(1), g.unsqueeze(0), dim=2)
    assert torch.allclose(pairwise_distances(q, g, "cosine"), cosine, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pairwise_distances(q.bfloat16(), g).dtype == torch.float32
    with pytest.raises(ConfigError, match="euclidean"):
        pairwise_distances(q, g, "manhattan")


def test_bad_input_is_named():
    q, g = _tensors(QUERIES), _tensors(GALLERY)
    with pytest.raises(ConfigError, match="ranks"):
        retrieval_metrics(*q, *g, ranks=(0, 5))
    with pytest.raises(ConfigError, match="chunk"):
        retrieval_metrics(*q, *g, chunk=0)
    with pytest.raises(DataError, match="gallery_cams"):
        retrieval_metrics(*q, g[0], g[1], g[2][:3])
    with pytest.raises(DataError, match="embedding width"):
        retrieval_metrics(*q, torch.zeros(7, 2), g[1], g[2])
    with pytest.raises(DataError, match="none of the 5 queries"):
        retrieval_metrics(q[0], q[1] + 100, q[2], *g)


# ---------------------------------------------------------------------------------------------
# Losses

def _slow_triplet(emb, labels, margin):
    per_anchor = []
    for a in range(len(labels)):
        pos = [torch.dist(emb[a], emb[p]).item() for p in range(len(labels))
               if p != a and labels[p] == labels[a]]
        neg = [torch.dist(emb[a], emb[n]).item() for n in range(len(labels)) if labels[n] != labels[a]]
        if not pos or not neg:
            continue
        gap = max(pos) - min(neg)
        per_anchor.append(math.log1p(math.exp(gap)) if margin is None else max(0.0, gap + margin))
    return sum(per_anchor) / len(per_anchor)


@pytest.mark.parametrize("margin", [0.3, 2.0, None])
def test_triplet_equals_a_slow_loop(margin):
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(12, 5, generator=gen)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4])  # label 4: no positive, left out
    value = batch_hard_triplet(emb, labels, margin)
    assert value.item() == pytest.approx(_slow_triplet(emb, labels, margin), abs=1e-5)


def test_triplet_zero_when_classes_are_separated_by_more_than_the_margin():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    noise = 0.1 * torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    emb = centres.repeat_interleave(4, dim=0) + noise
    labels = torch.arange(3).repeat_interleave(4)
    assert batch_hard_triplet(emb, labels, margin=0.3).item() == 0.0
    assert batch_hard_triplet(emb, labels.roll(1), margin=0.3).item() > 0.0


def test_triplet_gradient_is_finite_with_duplicate_embeddings():
    base = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.0, 1.0, 3.0, 1.0], [2.0, -2.0, 1.0, 0.0]])
    # small integers: the duplicates' squared distance is exactly 0, where sqrt's slope is infinite
    emb = base.repeat_interleave(2, dim=0).requires_grad_()  # each class: two identical points
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = batch_hard_triplet(emb, labels, margin=10.0)  # margin large: every anchor active
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_triplet_under_bf16_autocast_computes_in_float32():
    emb, labels = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = batch_hard_triplet(emb, labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(batch_hard_triplet(emb, labels).item(), abs=1e-5)


def test_triplet_without_a_usable_anchor_is_a_zero_that_backpropagates():
    emb = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet(emb, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(emb.grad, torch.zeros_like(emb))


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.4])
def test_label_smoothing_ce_equals_the_formula(epsilon):
    logits, targets = 3 * torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    log_p = F.log_softmax(logits, dim=1)
    ce = -log_p.gather(1, targets.unsqueeze(1)).squeeze(1)
    expected = ((1 - epsilon) * ce + epsilon * (-log_p).mean(dim=1)).mean()
    assert label_smoothing_ce(logits, targets, epsilon).item() == pytest.approx(expected.item(),
                                                                                 abs=1e-6)


def test_reid_base_loss_components_and_validation():
    logits, emb = torch.randn(8, 4), torch.randn(8, 3)
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    terms = ReidBaseLoss(ce_epsilon=0.1, triplet_margin=0.3, triplet_weight=0.5)(logits, emb, targets)
    assert set(terms) == {"ce", "triplet"}
    assert terms["ce"].item() == pytest.approx(label_smoothing_ce(logits, targets, 0.1).item())
    assert terms["triplet"].item() == pytest.approx(0.5 * batch_hard_triplet(emb, targets).item())
    for bad in ({"ce_epsilon": 1.0}, {"triplet_margin": -1.0}, {"triplet_weight": float("nan")}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ReidBaseLoss(**bad)


def test_reid_modules_stay_free_of_ray_and_optuna():
    code = ("import sys, mgkd.reid.losses, mgkd.reid.metrics; "
            "bad = [m for m in ('ray', 'optuna', 'search', 'analysis') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cpu = _hand_example()
    cuda = _hand_example(device="cuda")
    assert cuda.rank == cpu.rank and cuda.num_skipped == cpu.num_skipped
    assert cuda.map == pytest.approx(cpu.map, abs=1e-4)
    q, g = _random_split(3, n_query=300, n_gallery=2000, dim=64)
    on_cpu = retrieval_metrics(*q, *g, chunk=64)
    on_gpu = retrieval_metrics(*[t.cuda() for t in q], *[t.cuda() for t in g], chunk=64)
    assert on_gpu.num_queries == on_cpu.num_queries
    assert on_gpu.map == pytest.approx(on_cpu.map, abs=0.05)
    emb, labels = torch.randn(16, 32), torch.arange(4).repeat_interleave(4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        value = batch_hard_triplet(emb.cuda(), labels.cuda())
    assert value.item() == pytest.approx(batch_hard_triplet(emb, labels).item(), abs=1e-4)


def test_per_query_values_are_each_valid_querys_ap_and_rank1_hit_in_order():
    result = _hand_example(per_query=True)
    # q4 is skipped (no valid match): four values, in query order.
    assert result.query_ap.tolist() == pytest.approx(HAND_AP, abs=1e-6)
    assert result.query_hit.tolist() == [False, False, False, True]  # first hits at 2, 2, 3, 1
    assert result == _hand_example()  # the per-query values change nothing else
    assert _hand_example().query_ap is None
