"""FSP: flow of solution procedure (Yim et al., "A Gift from Knowledge Distillation: Fast
Optimization, Network Minimization and Transfer Learning", CVPR 2017; RepDistiller's ``FSP``)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, check_form, register
from mgkd.methods.common import InitStageTransfer, match_spatial, stage_pairs


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """(B, C_top, C_bottom) FSP matrix: the spatial mean of ``top_i * bottom_j``, the larger map
    average-pooled to the smaller one's size first."""
    hw = (min(bottom.shape[-2], top.shape[-2]), min(bottom.shape[-1], top.shape[-1]))
    bottom = match_spatial(bottom.float(), hw).flatten(2)
    top = match_spatial(top.float(), hw).flatten(2)
    return torch.bmm(top, bottom.transpose(1, 2)) / bottom.shape[-1]


@register
class FSPMethod(InitStageTransfer, DistillMethod):
    """MSE between student and teacher FSP matrices of consecutive paired maps.

    All intermediate maps (stem included, as RepDistiller's ``feat[:-1]``) are paired with
    ``stage_pairs``; each consecutive couple of pairs gives one FSP matrix per network and one MSE
    term, summed. RepDistiller requires equal channel counts; here a student map whose width
    differs from its teacher partner gets a bias-free 1x1 conv adapter to the teacher's width. A
    1x1 conv commutes with the spatial mean, so the adapter ``A`` is applied to the student's FSP
    matrix instead (``A_top @ G @ A_bottom^T``): the same value, at a fraction of the cost.

    Init stage: the student body and the adapters are trained on this loss alone. Main stage:
    unlike RepDistiller, which drops the FSP term to 0 after init (so beta would be meaningless to
    a search), ``forward`` returns the same loss. ``form: repdistiller`` drops it as RepDistiller
    does: the main stage's FSP term is 0.
    """

    name = "fsp"
    has_init_stage = True
    init_trains_student = True

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        self.form = check_form(self.name, self.options)
        if not 0.0 <= float(self.options["init_fraction"]) <= 1.0:
            raise ConfigError(f"method_options.init_fraction: must be in [0, 1] for method 'fsp', "
                              f"got {self.options['init_fraction']!r}.")
        s_shapes, t_shapes = context.student_shapes, context.teacher_shapes
        self.pairs = stage_pairs(s_shapes, t_shapes)
        if len(self.pairs) < 2:
            raise ConfigError("method 'fsp' needs at least two intermediate feature maps in both "
                              "networks (it matches the flow between consecutive maps).")
        # adapters[str(k)] maps the student's k-th paired map to its teacher partner's width.
        self.adapters = nn.ModuleDict()
        for k, (si, ti) in enumerate(self.pairs):
            if s_shapes[si][0] != t_shapes[ti][0]:
                self.adapters[str(k)] = nn.Linear(s_shapes[si][0], t_shapes[ti][0], bias=False)

    def _adapt(self, gram: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        if str(top) in self.adapters:
            gram = torch.matmul(self.adapters[str(top)].weight.float(), gram)
        if str(bottom) in self.adapters:
            gram = torch.matmul(gram, self.adapters[str(bottom)].weight.float().t())
        return gram

    def transfer_loss(self, inputs: MethodInputs) -> torch.Tensor:
        """Sum over consecutive paired maps of the FSP-matrix MSE."""
        s_feats, t_feats = inputs.student_features, inputs.teacher_features
        total = s_feats[0].new_zeros((), dtype=torch.float32)
        # fp32 even under autocast: the Gram matrices are small and their MSE needs the precision.
        with torch.autocast(s_feats[0].device.type, enabled=False):
            for k in range(len(self.pairs) - 1):
                (s_bot, t_bot), (s_top, t_top) = self.pairs[k], self.pairs[k + 1]
                student = self._adapt(fsp_matrix(s_feats[s_bot], s_feats[s_top]), k + 1, k)
                teacher = fsp_matrix(t_feats[t_bot], t_feats[t_top])
                total = total + (student - teacher).pow(2).mean()
        return total

    def init_parameters(self) -> Iterable[nn.Parameter]:
        return self.adapters.parameters()
