"""FL methods behind one protocol (:mod:`.base`), one file each, looked up by name in :mod:`.registry`."""

from prunefl.pruning.methods.base import (
    AggregateView,
    BeforeFL,
    ClientHookResult,
    ClientView,
    Decision,
    Method,
    MethodContext,
    ReferenceRun,
    SetupView,
)
from prunefl.pruning.methods.registry import MethodSpec, all_specs, build_method, get_spec, method_names

__all__ = [
    "AggregateView",
    "BeforeFL",
    "ClientHookResult",
    "ClientView",
    "Decision",
    "Method",
    "MethodContext",
    "MethodSpec",
    "ReferenceRun",
    "SetupView",
    "all_specs",
    "build_method",
    "get_spec",
    "method_names",
]
