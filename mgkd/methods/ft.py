"""FT: factor transfer (Kim et al., "Paraphrasing Complex Network: Network Compression via Factor
Transfer", NeurIPS 2018; RepDistiller's ``Paraphraser``/``Translator``/``FactorTransfer``)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from mgkd.errors import ConfigError
from mgkd.methods.base import DistillMethod, MethodContext, MethodInputs, register
from mgkd.methods.common import match_spatial, stage_pairs

FACTOR_FORMS = ("flat", "channel_mean")


def _conv_block(in_channels: int, out_channels: int, use_bn: bool,
                transpose: bool = False) -> list[nn.Module]:
    conv_cls = nn.ConvTranspose2d if transpose else nn.Conv2d
    layers: list[nn.Module] = [conv_cls(in_channels, out_channels, 3, 1, 1)]
    if use_bn:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.1))
    return layers


class Paraphraser(nn.Module):
    """Conv auto-encoder on the teacher map: C -> C -> kC -> kC (factor) -> kC -> C -> C."""

    def __init__(self, channels: int, factor_channels: int):
        super().__init__()
        c, k = channels, factor_channels
        self.encoder = nn.Sequential(*_conv_block(c, c, False), *_conv_block(c, k, False),
                                     *_conv_block(k, k, False))
        self.decoder = nn.Sequential(*_conv_block(k, k, False, True),
                                     *_conv_block(k, c, False, True),
                                     *_conv_block(c, c, False, True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Convolutional encoder (with BN) from the student map to the teacher factor's width."""

    def __init__(self, channels: int, factor_channels: int):
        super().__init__()
        c, k = channels, factor_channels
        self.encoder = nn.Sequential(*_conv_block(c, c, True), *_conv_block(c, k, True),
                                     *_conv_block(k, k, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def factor_vector(factor: torch.Tensor, form: str) -> torch.Tensor:
    """Flatten a factor (B, C, H, W) per sample and L2-normalise it.

    ``flat``: the whole factor (Kim et al.'s FT(x)); ``channel_mean``: the channel mean of the
    squared factor, a spatial map (RepDistiller's ``factor``; degenerate at 1x1 maps)."""
    if form == "channel_mean":
        factor = factor.pow(2).mean(1)
    return F.normalize(factor.flatten(1), dim=1)


def factor_loss(student_factor: torch.Tensor, teacher_factor: torch.Tensor,
                form: str = "flat") -> torch.Tensor:
    """Mean absolute difference of the normalised factors, both pooled to the smaller size."""
    hw = (min(student_factor.shape[-2], teacher_factor.shape[-2]),
          min(student_factor.shape[-1], teacher_factor.shape[-1]))
    s = factor_vector(match_spatial(student_factor.float(), hw), form)
    t = factor_vector(match_spatial(teacher_factor.float(), hw), form)
    return (s - t).abs().mean()


@register
class FTMethod(DistillMethod):
    """Factor transfer on the last intermediate map of each network.

    Init stage: the paraphraser (an auto-encoder whose bottleneck has ``rate`` x the teacher's
    channels) is trained alone to reconstruct the teacher map (MSE); the student is untouched.
    Main stage: ``forward`` is the L1 distance between the L2-normalised flattened factors of the
    student's translator and of the teacher's paraphraser encoder. The paraphraser is frozen then:
    its factor is computed under ``no_grad`` so it never receives a gradient.
    """

    name = "ft"
    has_init_stage = True
    init_trains_student = False

    def __init__(self, context: MethodContext, options: dict[str, Any]):
        super().__init__(context, options)
        rate = float(self.options["rate"])
        if not 0.0 < rate <= 1.0:
            raise ConfigError(f"method_options.rate: must be in (0, 1] for method 'ft', "
                              f"got {self.options['rate']!r}.")
        self.form = str(self.options["factor"])
        if self.form not in FACTOR_FORMS:
            raise ConfigError(f"method_options.factor: unknown value {self.form!r} for method "
                              f"'ft'; allowed: {', '.join(FACTOR_FORMS)}.")
        if not 0.0 <= float(self.options["init_fraction"]) <= 1.0:
            raise ConfigError(f"method_options.init_fraction: must be in [0, 1] for method 'ft', "
                              f"got {self.options['init_fraction']!r}.")
        ((self.s_index, self.t_index),) = stage_pairs(context.student_shapes,
                                                      context.teacher_shapes, count=1)
        t_channels = context.teacher_shapes[self.t_index][0]
        s_channels = context.student_shapes[self.s_index][0]
        factor_channels = max(1, int(t_channels * rate))
        self.paraphraser = Paraphraser(t_channels, factor_channels)
        self.translator = Translator(s_channels, factor_channels)

    def forward(self, inputs: MethodInputs) -> torch.Tensor:
        with torch.no_grad():
            teacher_factor = self.paraphraser.encoder(inputs.teacher_features[self.t_index])
        student_factor = self.translator(inputs.student_features[self.s_index])
        return factor_loss(student_factor, teacher_factor, self.form)

    def init_loss(self, inputs: MethodInputs) -> torch.Tensor:
        teacher = inputs.teacher_features[self.t_index]
        _, reconstruction = self.paraphraser(teacher)
        return F.mse_loss(reconstruction.float(), teacher.float())

    def init_parameters(self) -> Iterable[nn.Parameter]:
        return self.paraphraser.parameters()
