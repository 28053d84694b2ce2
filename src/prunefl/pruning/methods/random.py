"""Random pruning: a uniformly random mask at the reference density, fixed from round 0."""

from __future__ import annotations

from dataclasses import dataclass

from prunefl.pruning.methods.registry import MethodSpec

__all__ = ["RandomSettings", "SPECS"]


@dataclass(frozen=True)
class RandomSettings:
    """Settings of the ``[random]`` config table (being written this session; the method is not registered yet)."""

    layerwise: bool = False

SPECS: list[MethodSpec] = []  # registered once the method is implemented
