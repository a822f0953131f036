"""torchvision's CIFAR readers without the md5 re-hash on every load (imported only when CIFAR is
read, so configs and the command line load without torchvision)."""
from __future__ import annotations

import pickle
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import torchvision.datasets


class _PresenceCheckMixin:
    """Replaces torchvision's md5 integrity checks with a check that the expected files exist."""

    root: str
    base_folder: str
    train_list: list[list[str]]
    test_list: list[list[str]]
    meta: dict[str, str]

    def _check_integrity(self) -> bool:
        folder = Path(self.root, self.base_folder)
        return all((folder / entry[0]).is_file() for entry in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = Path(self.root, self.base_folder, self.meta["filename"])
        if not path.is_file():
            raise RuntimeError(f"metadata file {path} not found")
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="latin1")
        self.classes = content[self.meta["key"]]
        self.class_to_idx = {label: i for i, label in enumerate(self.classes)}


class _LocalCIFAR10(_PresenceCheckMixin, torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 reader without the md5 re-hash on every load."""


class _LocalCIFAR100(_PresenceCheckMixin, torchvision.datasets.CIFAR100):
    """torchvision's CIFAR100 reader without the md5 re-hash on every load."""


CIFAR_READERS: Mapping[str, type[torchvision.datasets.CIFAR10]] = MappingProxyType(
    {"cifar100": _LocalCIFAR100, "cifar10": _LocalCIFAR10}
)


