"""AB: activation-boundary transfer (Heo et al., "Knowledge Transfer via Distillation of Activation
Boundaries Formed by Hidden Neurons", AAAI 2019; RepDistiller's ``ABLoss`` + ``Connector``)."""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, check_form, register
from mgkd.methods.common import InitStageTransfer, match_spatial, stage_pairs


def _connector(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + BN from a student map to the teacher's width (AB's connector, He init)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / out_channels))
    bn = nn.BatchNorm2d(out_channels)
    return nn.Sequential(conv, bn)


def ab_stage_loss(source: torch.Tensor, teacher: torch.Tensor, margin: float) -> torch.Tensor:
    """Alternative (squared-hinge) AB loss for one stage, summed over all elements.

    A student response is pushed below ``-margin`` where the teacher neuron is inactive and above
    ``+margin`` where it is active. The teacher maps here are post-ReLU, so "inactive" is
    ``t <= 0`` (that is ``t == 0``); a post-ReLU value is positive exactly where the pre-activation
    is, so the activation boundary is the same one the paper transfers from pre-ReLU maps.
    """
    source = source.float()
    active = teacher > 0
    push_down = (source > -margin) & ~active
    push_up = (source <= margin) & active
    loss = ((source + margin).pow(2) * push_down + (source - margin).pow(2) * push_up)
    return loss.sum()


@register
class ABMethod(InitStageTransfer, DistillMethod):
    """Activation boundaries of every paired stage output (the stem excluded, as RepDistiller's
    ``feat[1:-1]``), each student map pooled/interpolated to the teacher's size and mapped to its
    width by a 1x1 conv + BN connector.

    Per-stage weights ``2**(i - n + 1)`` (deepest stage 1, each shallower one halved), each stage
    divided by the batch size and scaled by 3/1000, as RepDistiller does.

    Init stage: the connectors and the student body are trained on this loss alone. Main stage:
    unlike RepDistiller, which drops the AB term to 0 after init (so beta would be meaningless to a
    search), ``forward`` returns the same transfer loss and the connectors keep training.
    ``form: repdistiller`` drops it as RepDistiller does: the main stage's AB term is 0.
    """

    name = "ab"
    has_init_stage = True
    init_trains_student = True

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        self.form = check_form(self.name, self.options)
        self.margin = float(self.options["margin"])
        if not self.margin > 0:
            raise ConfigError(f"method_options.margin: must be > 0 for method 'ab', "
                              f"got {self.options['margin']!r}.")
        if not 0.0 <= float(self.options["init_fraction"]) <= 1.0:
            raise ConfigError(f"method_options.init_fraction: must be in [0, 1] for method 'ab', "
                              f"got {self.options['init_fraction']!r}.")
        s_shapes, t_shapes = context.student_shapes, context.teacher_shapes
        n_maps = min(len(s_shapes), len(t_shapes)) - 1
        # Every stage output but the stem; a net with a single map keeps that one.
        self.pairs = stage_pairs(s_shapes, t_shapes, count=max(1, n_maps - 1))
        self.connectors = nn.ModuleList(
            _connector(s_shapes[si][0], t_shapes[ti][0]) for si, ti in self.pairs)
        n = len(self.pairs)
        self.stage_weights = [2.0 ** (i - n + 1) for i in range(n)]

    def transfer_loss(self, inputs: MethodInputs) -> torch.Tensor:
        """Weighted sum over paired stages of the AB loss."""
        batch = inputs.student_features[0].shape[0]
        total = inputs.student_features[0].new_zeros((), dtype=torch.float32)
        for (si, ti), connector, weight in zip(self.pairs, self.connectors, self.stage_weights):
            teacher = inputs.teacher_features[ti]
            student = match_spatial(inputs.student_features[si], tuple(teacher.shape[-2:]))
            stage = ab_stage_loss(connector(student), teacher, self.margin)
            total = total + stage * (weight * 3.0 / 1000.0 / batch)
        return total

    def init_parameters(self) -> Iterable[nn.Parameter]:
        return self.connectors.parameters()
