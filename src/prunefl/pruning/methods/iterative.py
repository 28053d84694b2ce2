"""Iterative magnitude pruning (official baseline, spec §8): 20 prunes reaching the reference density halfway."""

from __future__ import annotations

from dataclasses import dataclass

from prunefl.pruning.methods.registry import MethodSpec

__all__ = ["IterativeSettings", "SPECS"]


@dataclass(frozen=True)
class IterativeSettings:
    """Settings of the ``[iterative]`` config table (being written this session; the method is not registered yet)."""

    prunes: int = 20

SPECS: list[MethodSpec] = []  # registered once the method is implemented
