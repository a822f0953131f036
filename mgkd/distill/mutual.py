"""Online mutual distillation: a peer group trained together from scratch, no teacher.

DML (Zhang et al., CVPR 2018) in mode ``plain``; MDP-DML (the MGKD paper's ``mdp_dml.py``) in mode
``mag``, where every peer also carries granularity encoders and the peers match each other's
codes; in mode ``mas`` every peer's heads also decode their code to class logits, and a peer's
logits are matched through its stable target. Peer i's loss, over N peers::

    L_i = ce · CE(z_i, y) + w · T² · mean_{j≠i} KL(softmax(t_j/T) ‖ softmax(z_i/T))
          + Σ_k w_k · T_k² · mean_{j≠i} KL(softmax(c_jk/T_k) ‖ softmax(c_ik/T_k))
          + Σ_k [T_k² · KL(softmax(z_i/T_k) ‖ softmax(d_ik/T_k)) + CE(d_ik, y)]      (mas)

with ``t_j`` = peer j's logits ``z_j`` (mas: the mean of ``z_j`` and its decoders' logits
``d_jk``), every other peer's ``t_j`` and codes ``c_jk`` detached in L_i, in the decoder term
peer i's own logits detached (as a teacher head learns from its frozen teacher), and KL averaged
over the batch (``batchmean``). The paper's scripts divided it by the class count as well (``reduction=
'mean'``), ignored their temperature and weight arguments and skipped "self" by comparing a peer
index with a batch index: none of that here.

**One optimizer is exact.** L_i reaches another peer's parameters θ_j only through detached
tensors, so ∇_{θ_i} Σ_j L_j = ∇_{θ_i} L_i. SGD's momentum and weight decay are per parameter, so
one optimizer over every peer (one parameter group per peer, each with its own learning rate)
stepping on Σ_i L_i moves each peer exactly as N optimizers stepping each on its own L_i from the
same forward pass (``tests/test_mutual.py`` checks it). That is why a peer group is an ordinary
:class:`~mgkd.training.learner.Learner`: the Trainer's checkpoint, exact resume, bf16 autocast and
CUDA-graph capture apply unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mgkd.catalog.models import default_lr
from mgkd.config import ExperimentConfig
from mgkd.data import Batch, DataSplits
from mgkd.distill.loss import COMPONENTS
from mgkd.catalog.methods import MODES
from mgkd.knowledge.heads import StudentGranularity, TeacherHead, head_loss
from mgkd.methods.common import soft_kl
from mgkd.models import create_model
from mgkd.training.learner import Learner
from mgkd.training.tasks import Task, task_of


@dataclass(frozen=True)
class MutualWeights:
    """The weights of a peer's loss: CE, the mutual logit term at ``temperature``, and per
    granularity level its weight and temperature (none in plain)."""

    ce: float
    logit: float
    temperature: float
    level_temperatures: tuple[float, ...] = ()
    level_weights: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> "MutualWeights":
        """From a resolved config (``mgkd.config.resolve``)."""
        if config.ce_weight is None or config.logit_weight is None:
            raise ValueError("MutualWeights.from_config needs a resolved config (mgkd.config.resolve)")
        return cls(ce=float(config.ce_weight), logit=float(config.logit_weight),
                   temperature=float(config.temperature),
                   level_temperatures=tuple(float(g.temperature) for g in config.granularities),
                   level_weights=tuple(float(g.weight) for g in config.granularities))


def peer_metric(name: str, peer: int) -> str:
    """``val_acc`` of peer 1 -> ``val_acc_peer1``."""
    return f"{name}_peer{peer}"


def mean_peer_kl(outputs: list[torch.Tensor], peer: int, temperature: float,
                 targets: list[torch.Tensor] | None = None) -> torch.Tensor:
    """T² · mean over the other peers j of KL(softmax(t_j/T) ‖ softmax(o_peer/T)), batchmean,
    each t_j (``targets[j]``, default ``outputs[j]``) detached: the term pulls ``peer`` towards
    the others and never the reverse."""
    targets = outputs if targets is None else targets
    others = [soft_kl(outputs[peer], targets[j].detach(), temperature)
              for j in range(len(outputs)) if j != peer]
    return torch.stack(others).mean()


def stable_target(logits: torch.Tensor, decoded: list[torch.Tensor]) -> torch.Tensor:
    """A peer's stable target (mas): the mean of its logits and its decoders' logits."""
    return torch.stack([logits, *decoded]).mean(dim=0) if decoded else logits


def mutual_loss(weights: MutualWeights, logits: list[torch.Tensor],
                codes: list[list[torch.Tensor]], ce: list[torch.Tensor],
                decoded: list[list[torch.Tensor]] | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every peer's weighted terms summed over the peers (``loss_ce``, ``loss_logit`` — the
    mutual KL —, ``loss_granularity`` — the code terms and in mas the decoder terms;
    ``loss_feature`` is 0), each peer's total ``loss_peer<i>`` and its CE term
    ``loss_ce_peer<i>``, and ``loss`` = Σ_i L_i. ``codes[i]`` are peer i's granularity codes
    (empty lists in plain), ``ce[i]`` its unweighted CE; in mas ``decoded[i]`` its decoders'
    logits (the stable target's parts and the decoder terms, which need ``labels``)."""
    zero = logits[0].new_zeros(())
    terms = {name: zero for name in COMPONENTS}
    targets = [stable_target(z, d) for z, d in zip(logits, decoded)] if decoded else None
    for i in range(len(logits)):
        ce_term = weights.ce * ce[i]
        logit_term = (weights.logit * mean_peer_kl(logits, i, weights.temperature, targets)
                      if weights.logit else zero)
        level_term = zero
        for k, (temp, weight) in enumerate(zip(weights.level_temperatures, weights.level_weights)):
            level_term = level_term + weight * mean_peer_kl([c[k] for c in codes], i, temp)
            if decoded:
                assert labels is not None, "the decoder terms need the labels"
                level_term = level_term + head_loss(decoded[i][k], logits[i].detach(), labels,
                                                    temp)
        terms["loss_ce"] = terms["loss_ce"] + ce_term
        terms["loss_logit"] = terms["loss_logit"] + logit_term
        terms["loss_granularity"] = terms["loss_granularity"] + level_term
        terms[peer_metric("loss_ce", i)] = ce_term
        terms[peer_metric("loss", i)] = ce_term + logit_term + level_term
    terms["loss"] = terms["loss_ce"] + terms["loss_logit"] + terms["loss_granularity"]
    return terms


def peer_lrs(config: ExperimentConfig) -> list[float]:
    """Each peer's learning rate: ``config.lr`` (resolved) is peer 0's; another peer's is scaled
    by the ratio of the architectures' RepDistiller rates (0.05; 0.01 for MobileNetV2 and the
    ShuffleNets), as the paper's scripts give each peer its own. One number stays searchable."""
    assert config.peers is not None and config.lr is not None
    first = default_lr(config.peers[0])
    return [float(config.lr) * default_lr(arch) / first for arch in config.peers]


class PeerHeads(nn.Module):
    """A peer's heads in mas: per level an encoder to the code and a decoder to class logits
    (a teacher head's shape), trained from scratch with the peer."""

    def __init__(self, width: int, dims: list[int], num_classes: int):
        super().__init__()
        self.heads = nn.ModuleList(TeacherHead(width, dim, num_classes) for dim in dims)

    def forward(self, embedding: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        outputs = [head(embedding) for head in self.heads]
        return [code for code, _ in outputs], [dec for _, dec in outputs]


class MutualLearner(Learner):
    """A peer group: ``modules`` holds ``peer<i>`` (the networks) and ``codes<i>`` (their
    granularity encoders — :class:`PeerHeads` with decoders in mas; empty in plain). Held-out
    batches score each peer separately."""

    separate_classifiers: ClassVar[bool] = True

    def __init__(self, peers: list[nn.Module], encoders: list[StudentGranularity | PeerHeads],
                 weights: MutualWeights, lrs: list[float], task: Task):
        if len(peers) != len(encoders) or len(peers) != len(lrs) or len(peers) < 2:
            raise ValueError("a peer group needs at least 2 peers, each with its encoders and lr")
        self.peers, self.encoders, self.weights, self.lrs, self.task = (
            peers, encoders, weights, lrs, task)
        modules: dict[str, nn.Module] = {}
        for i, (peer, codes) in enumerate(zip(peers, encoders)):
            modules[f"peer{i}"], modules[f"codes{i}"] = peer, codes
        self.modules = nn.ModuleDict(modules)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """One parameter group per peer (its network and its encoders) at the peer's lr."""
        return [{"params": [p for m in (peer, codes) for p in m.parameters() if p.requires_grad],
                 "lr": lr} for peer, codes, lr in zip(self.peers, self.encoders, self.lrs)]

    def loss_components(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        logits, codes, decoded, ce = [], [], [], []
        for peer, encoders in zip(self.peers, self.encoders):
            features, peer_logits = peer(batch.images, features=True)
            logits.append(peer_logits)
            if isinstance(encoders, PeerHeads):
                peer_codes, peer_decoded = encoders(features[-1])
                codes.append(peer_codes)
                decoded.append(peer_decoded)
            else:
                codes.append(encoders(features[-1]) if self.weights.level_weights else [])
            ce.append(self.task.base_loss(peer_logits, features[-1], batch.labels)["ce"])
        return mutual_loss(self.weights, logits, codes, ce, decoded or None, batch.labels)

    def eval_logits(self, batch: Batch) -> list[torch.Tensor]:
        return [peer(batch.images) for peer in self.peers]

    def select(self, metrics: dict[str, Any]) -> None:
        """Name the epoch's best peer (``best_peer``): the highest ``val_acc_peer<i>`` (ties: the
        first), or without a validation split the lowest training CE. ``val_acc`` already is its
        accuracy; ``test_acc`` / ``test_loss`` become its test values — the peer is chosen on
        validation, never on test."""
        count = len(self.peers)
        val = [metrics.get(peer_metric("val_acc", i)) for i in range(count)]
        if all(v is not None for v in val):
            best = max(range(count), key=lambda i: (val[i], -i))
        else:
            train_ce = [metrics.get(peer_metric("loss_ce", i), 0.0) for i in range(count)]
            best = min(range(count), key=lambda i: (train_ce[i], i))
        metrics["best_peer"] = best
        for name in ("acc", "loss"):
            value = metrics.get(peer_metric(f"test_{name}", best))
            if value is not None:
                metrics[f"test_{name}"] = value


def build_mutual_learner(config: ExperimentConfig, splits: DataSplits, device: torch.device, *,
                         channels_last: bool = False) -> MutualLearner:
    """The peers (and in mag their encoders) of a resolved peer-group ``config`` on ``device``,
    created in order after seeding the global RNG with ``config.seed`` (each peer its own
    initial weights, the same ones every time)."""
    assert config.peers is not None
    torch.manual_seed(config.seed)
    classes = splits.spec.num_classes
    dims = [g.dim for g in config.granularities]
    peers, encoders = [], []
    for i, arch in enumerate(config.peers):
        peer = create_model(arch, classes, key=f"peers[{i}]").to(device)
        if channels_last:
            peer.to(memory_format=torch.channels_last)
        peers.append(peer)
        heads = (PeerHeads(peer.embedding_dim, dims, classes) if MODES[config.mode].stable_target
                 else StudentGranularity(peer.embedding_dim, dims))
        encoders.append(heads.to(device))
    return MutualLearner(peers, encoders, MutualWeights.from_config(config), peer_lrs(config),
                         task_of(config))
