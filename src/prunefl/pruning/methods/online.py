"""The official online-learning baseline (spec §8, after Han et al. ICDCS 2020); uploads raw training samples."""

from __future__ import annotations

from dataclasses import dataclass

from prunefl.pruning.methods.registry import MethodSpec

__all__ = ["OnlineSettings", "SPECS"]


@dataclass(frozen=True)
class OnlineSettings:
    """Settings of the ``[online]`` config table (being written this session; the method is not registered yet)."""

    max_upload: int = 5

SPECS: list[MethodSpec] = []  # registered once the method is implemented
