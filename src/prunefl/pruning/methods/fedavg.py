"""Conventional FL (FedAvg, McMahan et al. 2017): dense training, no pruning — the baseline every method is timed against."""

from __future__ import annotations

from prunefl.pruning.methods.base import Method, MethodContext, ReferenceRun
from prunefl.pruning.methods.registry import MethodSpec

__all__ = ["FedAvg", "SPECS"]


class FedAvg(Method):
    """Dense FedAvg: the base class's hooks, which change nothing (spec §8, "Conventional FL")."""


def _build(settings: None, context: MethodContext, reference: ReferenceRun | None) -> Method:
    return FedAvg()


SPECS = [
    MethodSpec("fedavg", "Conventional FL", _build, "FedAvg on the dense model (conventional FL)", baseline=True,
               colour="C0"),
]
