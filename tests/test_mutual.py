"""Online mutual distillation (method dml, a config's ``peers``): the loss by hand, one optimizer
on the summed loss equal to one optimizer per peer, each peer scored and the best chosen on
validation, exact resume, and a run's files."""
import json
import math

import pytest
import yaml
import torch
import torch.nn.functional as F

from mgkd.config import ExperimentConfig, load_config, resolve
from mgkd.data import load_splits
from mgkd.distill.learner import make_trainer, reported_metrics
from mgkd.distill.mutual import (MutualLearner, MutualWeights, build_mutual_learner, mutual_loss,
                                 peer_lrs)
from mgkd.errors import ConfigError
from mgkd.probe.modelfile import load_model_file
from mgkd.runner import run_training
from mgkd.training.engine import Schedule
from mgkd.training.steps import InlineRecorder
from mgkd.training.tasks import get_task

from conftest import TINY_DATA, assert_clean_error, mgkd, tiny_config_dict
from test_engine import StopAfter

LEVELS = [{"dim": 8, "temperature": 2.0, "weight": 1.0}, {"dim": 16, "temperature": 8.0,
                                                           "weight": 0.5}]


def group_dict(tmp_path, **overrides):
    settings = {"method": "dml", "mode": "mag", "granularities": LEVELS,
                "peers": ["resnet8", "resnet8"], **overrides}
    data = tiny_config_dict(tmp_path / "cache", **settings)
    for key in ("teacher", "student", "teacher_epochs", "head_epochs"):  # no teacher here
        del data[key]
    return data


def group_config(tmp_path, **overrides) -> ExperimentConfig:
    return ExperimentConfig.from_dict(group_dict(tmp_path, **overrides))


# ---- the loss, by hand ------------------------------------------------------------------------
def kl_by_hand(target_row, student_row, temperature):
    """KL(softmax(target/T) ‖ softmax(student/T)) of one sample, in plain Python."""
    def softmax(row):
        exps = [math.exp(v / temperature) for v in row]
        return [e / sum(exps) for e in exps]
    p, q = softmax(target_row), softmax(student_row)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_each_peers_loss_is_ce_plus_the_mean_kl_to_every_other_peer_by_hand():
    # Three peers, a batch of three: the paper's skip-self test (peer index != batch index)
    # would pair peer 0 with itself here and drop a real partner; its 'mean' reduction would
    # divide every KL by the class count as well.
    torch.manual_seed(0)
    logits = [torch.randn(3, 4, dtype=torch.float64) * 2 for _ in range(3)]
    labels = torch.tensor([0, 3, 1])
    ce = [F.cross_entropy(z, labels) for z in logits]
    weights = MutualWeights(ce=0.5, logit=0.7, temperature=2.0)
    terms = mutual_loss(weights, logits, [[], [], []], ce)
    total = 0.0
    for i in range(3):
        kl = [sum(kl_by_hand(logits[j][b].tolist(), logits[i][b].tolist(), 2.0)
                  for b in range(3)) / 3 for j in range(3) if j != i]  # batchmean
        expected = 0.5 * ce[i].item() + 0.7 * 4.0 * sum(kl) / 2  # T² · mean over 2 others
        assert terms[f"loss_peer{i}"].item() == pytest.approx(expected, rel=1e-12)
        total += expected
    assert terms["loss"].item() == pytest.approx(total, rel=1e-12)
    assert terms["loss_feature"].item() == 0.0 and terms["loss_granularity"].item() == 0.0


def test_the_granularity_terms_match_each_levels_codes_at_its_temperature():
    torch.manual_seed(1)
    logits = [torch.randn(2, 3, dtype=torch.float64) for _ in range(2)]
    codes = [[torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)]
             for _ in range(2)]
    ce = [torch.zeros((), dtype=torch.float64)] * 2
    weights = MutualWeights(ce=1.0, logit=0.0, temperature=4.0, level_temperatures=(2.0, 8.0),
                            level_weights=(1.0, 0.5))
    terms = mutual_loss(weights, logits, codes, ce)
    for i, j in ((0, 1), (1, 0)):
        expected = sum(w * t * t * sum(kl_by_hand(codes[j][k][b].tolist(),
                                                  codes[i][k][b].tolist(), t)
                                       for b in range(2)) / 2
                       for k, (t, w) in enumerate(((2.0, 1.0), (8.0, 0.5))))
        assert terms[f"loss_peer{i}"].item() == pytest.approx(expected, rel=1e-12)
    assert terms["loss_logit"].item() == 0.0  # weight 0: no mutual logit term


def test_in_mas_peers_match_stable_targets_and_their_decoders_learn_from_their_own_logits():
    # Two peers, one level (T_k 2, weight 0.5), logit T 3: every term from its formula.
    torch.manual_seed(2)
    f64 = dict(dtype=torch.float64)
    logits = [torch.randn(2, 3, **f64) for _ in range(2)]
    codes = [[torch.randn(2, 4, **f64)] for _ in range(2)]
    decoded = [[torch.randn(2, 3, **f64)] for _ in range(2)]
    labels = torch.tensor([2, 0])
    ce = [F.cross_entropy(z, labels) for z in logits]
    weights = MutualWeights(ce=1.0, logit=0.5, temperature=3.0, level_temperatures=(2.0,),
                            level_weights=(0.5,))
    terms = mutual_loss(weights, logits, codes, ce, decoded, labels)

    def ce_by_hand(row, label):
        return math.log(sum(math.exp(v) for v in row)) - row[label]

    for i, j in ((0, 1), (1, 0)):
        stable = ((logits[j] + decoded[j][0]) / 2).tolist()  # peer j's stable target
        logit = 0.5 * 9.0 * sum(kl_by_hand(stable[b], logits[i][b].tolist(), 3.0)
                                for b in range(2)) / 2
        code = 0.5 * 4.0 * sum(kl_by_hand(codes[j][0][b].tolist(), codes[i][0][b].tolist(), 2.0)
                               for b in range(2)) / 2
        decoder = sum(4.0 * kl_by_hand(logits[i][b].tolist(), decoded[i][0][b].tolist(), 2.0)
                      + ce_by_hand(decoded[i][0][b].tolist(), int(labels[b]))
                      for b in range(2)) / 2
        assert terms[f"loss_peer{i}"].item() == pytest.approx(ce[i].item() + logit + code
                                                             + decoder, rel=1e-12)


def test_no_peers_loss_reaches_another_peers_parameters(tmp_path):
    config = resolve(group_config(tmp_path))
    splits = load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)
    learner = build_mutual_learner(config, splits, torch.device("cpu"))
    batch = next(iter(make_trainer(config, splits, None)._training_batches().epoch()))
    terms = learner.loss_components(batch, 0)
    own = list(learner.modules["peer0"].parameters()) + list(learner.modules["codes0"].parameters())
    other = list(learner.modules["peer1"].parameters()) + list(learner.modules["codes1"].parameters())
    grads = torch.autograd.grad(terms["loss_peer0"], own + other, allow_unused=True)
    assert all(g is None or not g.any() for g in grads[len(own):])
    assert any(g is not None and g.abs().sum() > 0 for g in grads[:len(own)])


# ---- one optimizer on the sum == one optimizer per peer ----------------------------------------
@pytest.mark.parametrize("mode", ["mag", "mas"])
def test_one_optimizer_on_the_summed_loss_moves_every_peer_as_its_own_optimizer_would(tmp_path,
                                                                                     mode):
    # Two architectures at different learning rates (as MobileNetV2's is 1/5 of resnet8's),
    # granularity heads (mas: decoders and stable targets too), momentum and weight decay:
    # three SGD steps both ways from the same weights.
    config = resolve(group_config(tmp_path, peers=["resnet8", "resnet14"], mode=mode))
    splits = load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)
    batches = list(make_trainer(config, splits, None)._training_batches().epoch())[:3]
    schedule = Schedule(epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-4)

    summed = build_mutual_learner(config, splits, torch.device("cpu"))
    separate = build_mutual_learner(config, splits, torch.device("cpu"))
    separate.modules.load_state_dict(summed.modules.state_dict())
    summed.lrs = separate.lrs = [0.05, 0.01]
    start = {k: v.clone() for k, v in summed.modules.state_dict().items()}
    one = schedule.optimizer(summed.optimizer_groups())
    each = [schedule.optimizer([group]) for group in separate.optimizer_groups()]
    summed.train(), separate.train()
    for batch in batches:
        one.zero_grad()
        summed.loss_components(batch, 0)["loss"].backward()
        one.step()
        terms = separate.loss_components(batch, 0)  # one forward, then each peer in turn
        for i, optimizer in enumerate(each):
            optimizer.zero_grad()
            terms[f"loss_peer{i}"].backward(retain_graph=i + 1 < len(each))
            optimizer.step()
    a, b = summed.modules.state_dict(), separate.modules.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7, msg=name)
    moved = [name for name in a if a[name].is_floating_point()
             and not torch.equal(a[name], start[name])]
    assert any(n.startswith("peer0.") for n in moved) and any(n.startswith("peer1.") for n in moved)
    assert any(n.startswith("codes1.") for n in moved)


# ---- scoring: every peer, the best chosen on validation ----------------------------------------
class FixedPeers(MutualLearner):
    """Peers whose logits are given per split (looked up by the batch's first label)."""

    def __init__(self, logits):
        self.logits = logits
        self.peers = [None] * len(logits)

    def eval_logits(self, batch):
        return [peer[: len(batch.labels)] for peer in self.logits]


def test_each_peer_is_scored_and_the_test_values_are_the_validation_choice():
    from mgkd.data import Batch
    labels = torch.tensor([0, 1, 2, 3])
    right = F.one_hot(labels, 4).float() * 5
    wrong = F.one_hot((labels + 1) % 4, 4).float() * 5
    half = torch.cat([right[:2], wrong[2:]])
    sure = right * 2  # right, and more confident than ``half`` is wrong
    task = get_task("classification")

    class Split:
        def __len__(self):
            return 4

    def score(learner):
        batches = lambda split: [Batch(images=torch.zeros(4, 1), labels=labels, indices=None)]
        import contextlib
        return task.evaluate_outcomes(learner, Split(), batches, contextlib.nullcontext)

    # validation: peer 1 is right on every sample, peer 0 on half
    val, outcomes = score(FixedPeers([half, sure]))
    assert (val["acc_peer0"], val["acc_peer1"], val["acc"]) == (50.0, 100.0, 100.0)
    assert val["loss"] == val["loss_peer1"] < val["loss_peer0"]
    assert outcomes.correct.tolist() == [True] * 4  # the best peer's outcomes
    assert val["acc_ensemble"] == 100.0  # mean of softmaxes: peer 1's confident right answers
    # test: peer 0 happens to be better there, yet test_acc stays peer 1's (chosen on val)
    test, _ = score(FixedPeers([right, half]))
    metrics = {**{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()}}
    FixedPeers([half, sure]).select(metrics)
    assert metrics["best_peer"] == 1
    assert metrics["test_acc"] == test["acc_peer1"] == 50.0
    assert metrics["test_loss"] == test["loss_peer1"]


def test_without_a_validation_split_the_peer_with_the_lowest_training_ce_is_chosen():
    metrics = {"val_acc": None, "loss_ce_peer0": 0.9, "loss_ce_peer1": 0.4,
               "test_acc_peer0": 70.0, "test_acc_peer1": 60.0, "test_acc": 70.0}
    FixedPeers([None, None]).select(metrics)
    assert metrics["best_peer"] == 1 and metrics["test_acc"] == 60.0


# ---- runs --------------------------------------------------------------------------------------
def test_an_interrupted_group_resumes_to_the_uninterrupted_run_exactly(tmp_path):
    # mas: every module a group can have (peers, encoders, decoders) comes back bit for bit
    config = group_config(tmp_path, mode="mas")
    whole = run_training(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run_training(config, tmp_path / "cut", callbacks=[StopAfter(1)])
    resumed = run_training(config, tmp_path / "cut", resume=True)
    assert resumed.state.history == whole.state.history  # every metric, to the last digit
    assert resumed.final == whole.final
    for name in ("peer0.pt", "peer1.pt", "student.pt"):
        a = torch.load(tmp_path / "whole" / name)["model"]
        b = torch.load(tmp_path / "cut" / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_group_run_reports_every_peer_and_saves_the_best_as_its_student(tmp_path):
    config = group_config(tmp_path, mode="plain", peers=["resnet8", "wrn_16_1", "resnet8"],
                          epochs=1)
    result = run_training(config, tmp_path / "run")
    out = tmp_path / "run"
    history = json.loads((out / "metrics.json").read_text())["history"]
    for row in history:
        peers = [row[f"val_acc_peer{i}"] for i in range(3)]
        assert row["val_acc"] == max(peers)
        assert row["best_peer"] == peers.index(max(peers))
        assert row["test_acc"] == row[f"test_acc_peer{row['best_peer']}"]
        assert row["loss_granularity"] == 0.0  # plain: no levels
        assert set(reported_metrics("classification", "val_acc", 3)) <= set(row) | {"best_val_acc"}
    best = result.final["best_peer"]
    saved = torch.load(out / "student.pt")
    assert saved["arch"] == config.peers[best] and saved["peer"] == best
    peer = torch.load(out / f"peer{best}.pt")["model"]
    assert all(torch.equal(saved["model"][k], peer[k]) for k in peer)
    saved_config = yaml.safe_load((out / "config.yaml").read_text())
    assert "teacher" not in saved_config and "student" not in saved_config
    # the analyses read it as any student: the run's data come from its config.yaml
    for name in ("student.pt", "peer1.pt"):
        model = load_model_file(out / name)
        assert model.trained_on is not None and model.trained_on.dataset == "synthetic"
    assert not (tmp_path / "cache").exists()  # no teacher, no head bank
    # TensorBoard: every peer's curves beside the group's, under a sweep trial's tags
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"ray/tune/{name}" for name in ("val_acc_peer2", "test_acc_peer1", "loss_peer0",
                                            "best_peer", "val_acc_ensemble")} <= tags


def test_a_group_steps_the_same_recorded_as_eagerly(tmp_path):
    # The graphed path's control flow on the CPU (an InlineRecorder): buffers, warm-up, keys.
    config = group_config(tmp_path)
    splits = load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)
    eager = make_trainer(config, splits, None)
    eager.fit()
    graphed = make_trainer(config, splits, None, recorder=InlineRecorder())
    graphed.fit()
    assert graphed.state.history == eager.state.history


# ---- configs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("change, words", [
    ({"peers": ["resnet8"]}, ["peers: 1 peer(s)", "2 to 4"]),
    ({"peers": ["resnet8"] * 5}, ["peers: 5 peer(s)", "2 to 4"]),
    ({"method": "kd"}, ["peers:", "method is kd", "method: dml"]),
    ({"mode": "mas", "logit_weight": 0.0}, ["logit_weight: 0 with mode mas"]),
    ({"teacher_checkpoint": "t.pt"}, ["teacher_checkpoint:", "no teacher"]),
    ({"teacher": "resnet8"}, ["teacher:", "either a teacher -> student pair or peers"]),
    ({"dataset": "market1501", "data_options": {}}, ["peers:", "re-ID"]),
])
def test_a_bad_peer_group_is_named_with_the_fix(tmp_path, change, words):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({**group_dict(tmp_path), **change})
    for word in words:
        assert word in str(err.value)


def test_dml_without_peers_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="method: dml trains a peer group.*give peers"):
        ExperimentConfig.from_dict(tiny_config_dict(tmp_path, method="dml", mode="plain"))


def test_a_group_config_round_trips_and_resolves_the_papers_dml_settings(tmp_path):
    config = resolve(ExperimentConfig.from_dict({"peers": ["resnet32", "ShuffleV1"],
                                                 "method": "dml", "mode": "plain"}))
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    # dml.py's --alpha 0.5 (ce 1 - alpha, KL alpha) and --T 4, used; lr 0.05 for resnet32
    assert (config.ce_weight, config.logit_weight, config.temperature) == (0.5, 0.5, 4.0)
    assert config.lr == 0.05 and peer_lrs(config) == pytest.approx([0.05, 0.01])
    assert config.label == "dml: resnet32+ShuffleV1"


def test_mgkd_config_prints_a_peer_groups_config(tmp_path):
    result = mgkd("config", "--peers", "resnet8", "MobileNetV2", "--dataset", "digits")
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert (data["peers"], data["method"], data["mode"]) == (["resnet8", "MobileNetV2"], "dml",
                                                              "mag")
    assert not {"teacher", "student", "teacher_epochs", "head_epochs"} & set(data)
    (tmp_path / "c.yaml").write_text(result.stdout)
    assert load_config(tmp_path / "c.yaml").peers == ["resnet8", "MobileNetV2"]
    assert_clean_error(mgkd("config", "--peers", "resnet8", "resnet8", "--teacher", "resnet8",
                            "--dataset", "digits"), "either --teacher and --student", "--peers")
    assert_clean_error(mgkd("config", "--dataset", "digits"), "--teacher and --student",
                       "--peers")


@pytest.mark.parametrize("change, words", [
    ({"groups": [{"peers": ["resnet8"]}]}, ["sweep groups[0].peers: 1 peer(s)", "2 to 4"]),
    ({"methods": ["kd"]}, ["sweep groups:", "add dml to methods"]),
    ({"groups": [], "pairs": [{"teacher": "resnet8", "student": "resnet8"}]},
     ["sweep methods: dml trains peer groups", "add groups"]),
    ({"groups": [{"peers": ["resnet8", "resnet8"]}] * 2}, ["sweep groups[1]", "repeats groups[0]"]),
    ({"groups": [{"peers": ["resnet8", "nope"]}]}, ["sweep groups[0].peers[1]", "unknown architecture"]),
    ({"methods": ["dml", "kd"]}, ["sweep methods: kd distils a teacher -> student pair"]),
])
def test_a_bad_group_sweep_is_named_with_the_fix(change, words):
    from mgkd.config.sweep import SweepSpec, plan
    data = {"name": "g", "groups": [{"peers": ["resnet8", "resnet8"]}], "methods": ["dml"],
            "modes": ["plain", "mag"], "base": {"dataset": "digits"}, **change}
    with pytest.raises(ConfigError) as err:
        plan(SweepSpec.from_dict(data))
    for word in words:
        assert word in str(err.value)


def test_a_group_study_drops_the_teacher_settings_base_gives_the_pairs():
    from mgkd.config.sweep import SweepSpec, plan
    spec = SweepSpec.from_dict({
        "name": "g", "pairs": [{"teacher": "resnet20", "student": "resnet8"}],
        "groups": [{"peers": ["resnet8", "wrn_16_1"]}], "methods": ["kd", "dml"],
        "modes": ["plain"], "base": {"dataset": "digits", "teacher_epochs": 7, "head_epochs": 3}})
    studies = plan(spec)
    assert [s.key for s in studies] == ["resnet20__resnet8__kd__plain",
                                        "resnet8+wrn_16_1__dml__plain"]
    assert studies[0].base.teacher_epochs == 7 and studies[1].base.peers == ["resnet8", "wrn_16_1"]
    assert studies[1].base.teacher_epochs == 240  # the default: a group reads none of them
