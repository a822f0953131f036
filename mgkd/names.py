"""The names the command line offers, as plain tuples that load without torch.

``mgkd --help`` and every subcommand's ``--help`` list them; the registries (``mgkd.models``,
``mgkd.methods``, ``mgkd.data``) stay the authority, and a test keeps these tuples equal to them.
"""
from __future__ import annotations

MODEL_NAMES: tuple[str, ...] = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2",
    "osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "resnet50_reid")
METHOD_NAMES: tuple[str, ...] = (
    "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd", "kdsvd",
    "afd", "dkd")
DATASET_NAMES: tuple[str, ...] = ("cifar100", "cifar10", "digits", "synthetic", "market1501")
# The task each data set serves (mgkd.tasks): what it trains, how it is scored.
DATASET_TASKS: dict[str, str] = {"cifar100": "classification", "cifar10": "classification",
                                 "digits": "classification", "synthetic": "classification",
                                 "market1501": "reid"}
TASK_NAMES: tuple[str, ...] = ("classification", "reid")
