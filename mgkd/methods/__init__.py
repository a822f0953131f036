"""KD methods, each a registered ``DistillMethod`` subclass in a module of its own."""
from mgkd.methods.base import (METHODS, DistillMethod, MethodContext, MethodInputs, build_method,
                               get_method, register)
# Importing the modules registers the methods; the order here is the order of METHOD_NAMES.
from mgkd.methods import (kd, fitnet, at, sp, cc, vid, rkd, pkt,  # noqa: E402,F401
                          ab, ft, fsp, nst, crd, kdsvd, afd, dkd)

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

__all__ = ["METHODS", "METHOD_NAMES", "DistillMethod", "MethodContext", "MethodInputs",
           "build_method", "get_method", "register"]
