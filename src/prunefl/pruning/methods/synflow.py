"""SynFlow (extension; Tanaka et al. 2020): data-free iterative pruning at initialisation to the reference density."""

from __future__ import annotations

from dataclasses import dataclass

from prunefl.pruning.methods.registry import MethodSpec

__all__ = ["SynFlowSettings", "SPECS"]


@dataclass(frozen=True)
class SynFlowSettings:
    """Settings of the ``[synflow]`` config table (being written this session; the method is not registered yet)."""

    iterations: int = 100

SPECS: list[MethodSpec] = []  # registered once the method is implemented
