"""Initialise a model's backbone from a user's weights file (e.g. torchreid's ImageNet- or
Market-1501-trained OSNet / ResNet-50 ``.pth``, or torchvision's ImageNet ResNet-50).

Unlike a teacher checkpoint, which must fit exactly, a backbone file may come from training on
another set of classes: its classifier is skipped when its shape differs, and tensors the model
does not have (torchvision's ``fc``) are left unused. Every other tensor must fit by name and
shape, or the file is refused with a message that says what it most likely holds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mgkd.errors import ConfigError
from mgkd.io import safe_torch_load
from mgkd.models import MODELS
from mgkd.models.identify import guess_architecture
from mgkd.models.loading import state_dict_of, strip_data_parallel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_backbone` did with a file's tensors (names in the model's naming)."""

    path: Path
    loaded: tuple[str, ...]  # copied into the model
    skipped_classifier: tuple[str, ...]  # the file's classifier, of another class count
    unused: tuple[str, ...]  # in the file, not in the model
    missing: tuple[str, ...]  # in the model, not in the file: left as initialised

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.skipped_classifier)} classifier "
                f"tensors skipped (other class count), {len(self.unused)} unused, "
                f"{len(self.missing)} left as initialised")


def classifier_prefix(model: nn.Module) -> str:
    """The name of the model's last ``nn.Linear`` (its classifier in every zoo model) plus a dot."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear classifier")
    return names[-1] + "."


def _what_it_holds(state: Mapping[str, torch.Tensor]) -> str:
    guess = guess_architecture(state, MODELS)
    return f" ({guess.describe()})" if guess is not None else ""


def init_backbone(model: nn.Module, path: str | Path, *, key: str,
                  arch: str | None = None) -> InitReport:
    """Copy every tensor of the file at ``path`` whose name and shape fit ``model`` into it.

    The file is read with the restricted unpickler; it may be a bare state dict, or hold one under
    ``"state_dict"`` (torchreid) or ``"model"`` (RepDistiller, this project); a ``module.``
    prefix is dropped. The classifier is skipped when its shape differs. ``key`` names the setting
    (``"student_init"``, ``"teacher_checkpoint"``) and ``arch`` the architecture in messages.
    Raises ConfigError when no backbone tensor fits or a backbone tensor's shape differs.
    Logs one line with the counts.
    """
    path = Path(path).expanduser()
    arch = arch or type(model).__name__
    source = f"{key}: {path}"
    state = strip_data_parallel(state_dict_of(safe_torch_load(path, key), source))
    own = model.state_dict()
    head = classifier_prefix(model)
    loaded, skipped, unused, wrong = [], [], [], []
    for name, value in state.items():
        if name not in own:
            unused.append(name)
        elif tuple(value.shape) == tuple(own[name].shape):
            loaded.append(name)
        elif name.startswith(head):
            skipped.append(name)
        else:
            wrong.append(f"{name} {tuple(value.shape)} where the {arch} has "
                         f"{tuple(own[name].shape)}")
    backbone_loaded = [name for name in loaded if not name.startswith(head)]
    if wrong:
        raise ConfigError(
            f"{source} does not fit a {arch} backbone{_what_it_holds(state)}: {len(wrong)} "
            f"tensors differ in shape, e.g. {'; '.join(wrong[:3])}. Give a {arch} weights file "
            f"(or set the architecture to the one the file holds), or set {key}: null.")
    if not backbone_loaded:
        sample = ", ".join(list(state)[:3])
        raise ConfigError(
            f"{source} has no tensor that fits a {arch} backbone{_what_it_holds(state)}: none of "
            f"its {len(state)} names (e.g. {sample}) is one of the {arch}'s. Give a {arch} "
            f"weights file in torchreid's or this project's naming, or set {key}: null.")
    model.load_state_dict({**own, **{name: state[name] for name in loaded}}, strict=True)
    missing = [name for name in own if name not in state]
    report = InitReport(path, tuple(loaded), tuple(skipped), tuple(unused), tuple(missing))
    log.info("%s: %s into the %s", source, report.summary(), arch)
    return report
