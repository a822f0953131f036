"""The KD methods and distillation modes, with every method's default loss weights and options,
as plain tables that load without torch.

The one list of methods and the one source of their defaults: ``mgkd config``, config validation
and the search spaces read it, and :mod:`mgkd.methods` loads each method's class from the module
of the same name (``mgkd/methods/<name>.py``), which finds its defaults here. Adding a method is
its module plus one entry in :data:`METHOD_DEFAULTS`.

Weights are RepDistiller's CIFAR-100 settings (the README's method table) unless the entry says otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from mgkd.errors import ConfigError

PairOptions = Callable[[str, str], dict[str, Any]]


def _no_pair_options(teacher: str, student: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class MethodDefaults:
    """One method's defaults.

    feature_weight: β (0.0 where the strength lives in the options: kd unused, dkd α/β).
    ce_weight / logit_weight: the method's plain-mode CE and logit-KD weights.
    uses_feature_weight: False for kd (the logit term is the method).
    options: every option the method accepts, with its default; others are rejected.
    form_feature_weights: β of a ``form`` variant that comes with its own published β.
    pair_options: options whose default depends on the (teacher, student) pair.
    capture_blocker: why a step of this method cannot be recorded in a CUDA graph (None: it can;
      ``mgkd.training.capture`` checks the claim on the CPU, see ``tests/test_capture.py``).
    online: peers trained together from scratch, no teacher (a config with ``peers``); the
      logit weight is the weight of the mutual KL term.
    """

    name: str
    feature_weight: float
    ce_weight: float = 1.0
    logit_weight: float = 0.0
    uses_feature_weight: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    form_feature_weights: Mapping[str, float] = field(default_factory=dict)
    pair_options: PairOptions = _no_pair_options
    capture_blocker: str | None = None
    online: bool = False

    def __post_init__(self) -> None:  # read-only tables
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "form_feature_weights",
                           MappingProxyType(dict(self.form_feature_weights)))

    def resolve_options(self, options: Mapping[str, Any] | None, teacher: str = "",
                        student: str = "") -> dict[str, Any]:
        """Defaults filled in, unknown option names rejected with the allowed ones named."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(f"method_options: unknown option(s) {unknown} for method "
                              f"'{self.name}'; allowed: {allowed}.")
        return {**self.options, **self.pair_options(teacher, student), **options}

    def feature_weight_default(self, options: Mapping[str, Any]) -> float:
        """β for these (resolved) options."""
        return self.form_feature_weights.get(options.get("form"), self.feature_weight)


def _dkd_pair_options(teacher: str, student: str) -> dict[str, Any]:
    """β from mdistiller's CIFAR-100 configs: 2 for resnet56→resnet20 and resnet110→resnet32,
    6 for vgg teachers and wrn→wrn pairs (its wrn_40_2→ShuffleV1 keeps 8), else 8."""
    if (teacher, student) in {("resnet56", "resnet20"), ("resnet110", "resnet32")}:
        return {"beta": 2.0}
    if teacher.startswith("vgg") or (teacher.startswith("wrn_") and student.startswith("wrn_")):
        return {"beta": 6.0}
    return {}


_INIT_FRACTION = 30 / 240  # RepDistiller's init stage: 30 of 240 epochs

METHOD_DEFAULTS: Mapping[str, MethodDefaults] = MappingProxyType({d.name: d for d in (
    # The MGKD paper's scripts (RepDistiller itself uses ce 0.1 / logit 0.9).
    MethodDefaults("kd", 0.0, ce_weight=0.2, logit_weight=0.8, uses_feature_weight=False),
    MethodDefaults("fitnet", 100.0, options={"hint_layer": 2}),
    MethodDefaults("at", 1000.0, options={"p": 2}),
    MethodDefaults("sp", 3000.0),
    # 2000 for the paper's Gaussian-kernel CC; RepDistiller's form comes with its 0.02.
    MethodDefaults("cc", 2000.0, options={"embed_dim": 128, "kernel": "gaussian", "gamma": 0.4,
                                          "order": 2, "form": "paper"},
                   form_feature_weights={"repdistiller": 0.02}),
    MethodDefaults("vid", 1.0, options={"init_variance": 5.0, "eps": 1e-5}),
    MethodDefaults("rkd", 1.0, options={"distance_weight": 25.0, "angle_weight": 50.0}),
    MethodDefaults("pkt", 30000.0, options={"eps": 1e-7}),
    MethodDefaults("ab", 1.0, options={"margin": 1.0, "init_fraction": _INIT_FRACTION,
                                       "form": "paper"}),
    MethodDefaults("ft", 200.0, options={"rate": 0.5, "factor": "flat",
                                         "init_fraction": _INIT_FRACTION}),
    MethodDefaults("fsp", 50.0, options={"init_fraction": _INIT_FRACTION, "form": "paper"}),
    MethodDefaults("nst", 50.0, options={"num_stages": 0}),
    MethodDefaults("crd", 0.8, options={"feat_dim": 128, "nce_k": 16384, "nce_t": 0.07,
                                        "nce_m": 0.5}),
    # mdistiller's CIFAR-100 KDSVD weight (feature 1.0, CE 1.0).
    MethodDefaults("kdsvd", 1.0, options={"k": 1, "extra_candidates": 3, "rbf_width": 8.0,
                                          "form": "paper"},
                   capture_blocker="torch.linalg.svd reads its convergence flags back to the host "
                                   "in every step (a device-to-host sync)"),
    # The authors' CIFAR-100 setting (--beta 200 with CE 1.0).
    MethodDefaults("afd", 200.0, options={"qk_dim": 128}),
    # mdistiller has no separate weight: α and β carry the strength; the loss warms up over the
    # first 20 of 240 epochs; temperature None is the config's T.
    MethodDefaults("dkd", 1.0, options={"alpha": 1.0, "beta": 8.0, "warmup_fraction": 20 / 240,
                                        "temperature": None},
                   pair_options=_dkd_pair_options),
    # Deep mutual learning (online, no teacher). The MGKD paper's dml.py / mdp_dml.py parse
    # --alpha 0.5 ("weight for ce and kl") and --T 4 and never use them (a defect): used here, as
    # ce 1 - alpha, KL alpha, the config's T (4 by default). plain: DML; mag: MDP-DML (encoders
    # on every peer); mas (beyond the paper, whose peers have no decoders): decoders too, and
    # each peer is matched through its stable target.
    MethodDefaults("dml", 0.0, ce_weight=0.5, logit_weight=0.5, uses_feature_weight=False,
                   online=True),
)})


METHOD_NAMES: tuple[str, ...] = tuple(METHOD_DEFAULTS)
# The teacher -> student methods (a DistillMethod module each in mgkd.methods) and the online ones.
DISTILL_METHOD_NAMES: tuple[str, ...] = tuple(n for n, d in METHOD_DEFAULTS.items() if not d.online)
ONLINE_METHOD_NAMES: tuple[str, ...] = tuple(n for n, d in METHOD_DEFAULTS.items() if d.online)
MIN_PEERS, MAX_PEERS = 2, 4


def method_defaults(name: str) -> MethodDefaults:
    """The defaults of method ``name``; ConfigError naming the known methods otherwise."""
    try:
        return METHOD_DEFAULTS[name]
    except KeyError:
        raise ConfigError(f"method: unknown method '{name}'; allowed: "
                          f"{', '.join(METHOD_DEFAULTS)}.") from None


# ---- modes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mode:
    """How a study distils on top of its method.

    levels: the granularity terms are on (the config's ``granularities`` are used; plain has none).
    stable_target: the logit term's target is the mean of the teacher's logits and its heads'
      decoder logits (MAS), not the teacher's logits alone."""

    name: str
    levels: bool
    stable_target: bool


MODES: Mapping[str, Mode] = MappingProxyType({m.name: m for m in (
    Mode("plain", levels=False, stable_target=False),  # RepDistiller's baseline rows
    Mode("mag", levels=True, stable_target=False),  # granularity-wise
    Mode("mas", levels=True, stable_target=True),  # stable excitation
)})
MODE_NAMES: tuple[str, ...] = tuple(MODES)


def mode_has_levels(mode: str) -> bool:
    """Whether a run in ``mode`` uses granularity levels (plain does not)."""
    return MODES[mode].levels


def paper_logit_weight(method: str, mode: str) -> float:
    """The paper's logit-KD weight for ``method`` in ``mode``.

    plain is RepDistiller's baseline (``-a 0`` for feature methods): the method's own default. In
    mag and mas the paper's published runs (its ``scripts/cifar100_*.sh``) pass ``--div_weight 1.0``
    to every feature method, so a method whose own default is 0 gets a logit term of weight 1 (T 4)
    there; in mas a zero weight would also silently erase the stable target. kd keeps 0.2 / 0.8.
    """
    default = method_defaults(method).logit_weight
    if mode_has_levels(mode) and default == 0.0:
        return 1.0
    return default
