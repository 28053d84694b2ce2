"""SNIP, official FL variant (spec §8): one dense round, then a fixed mask from |w_0 ⊙ g| at the reference density."""

from __future__ import annotations

from dataclasses import dataclass

from prunefl.pruning.methods.registry import MethodSpec

__all__ = ["SnipSettings", "SPECS"]


@dataclass(frozen=True)
class SnipSettings:
    """Settings of the ``[snip]`` config table (being written this session; the method is not registered yet)."""

    exact_count: bool = False

SPECS: list[MethodSpec] = []  # registered once the method is implemented
