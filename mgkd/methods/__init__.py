"""KD methods, each a registered ``DistillMethod`` subclass in a module of its own, named as the
method (``mgkd/methods/<name>.py``); the catalog (:mod:`mgkd.catalog.methods`) lists them."""
import importlib

from mgkd.catalog.methods import DISTILL_METHOD_NAMES as METHOD_NAMES
from mgkd.methods.base import (METHODS, DistillMethod, MethodContext, MethodInputs, build_method,
                               get_method, register)

for _name in METHOD_NAMES:  # importing a method's module registers it, in the catalog's order
    importlib.import_module(f"mgkd.methods.{_name}")

__all__ = ["METHODS", "METHOD_NAMES", "DistillMethod", "MethodContext", "MethodInputs",
           "build_method", "get_method", "register"]
