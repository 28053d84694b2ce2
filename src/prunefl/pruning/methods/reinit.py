"""Lottery-ticket baselines (spec §8): PruneFL's final mask on its original initialisation (reinit) or a fresh one."""

from __future__ import annotations

from dataclasses import dataclass

from prunefl.pruning.methods.registry import MethodSpec

__all__ = ["ReinitSettings", "SPECS"]


@dataclass(frozen=True)
class ReinitSettings:
    """Settings of the ``[reinit]`` config table (being written this session; the method is not registered yet)."""

    seed_offset: int = 1

SPECS: list[MethodSpec] = []  # registered once the method is implemented
