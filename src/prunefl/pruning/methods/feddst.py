"""FedDST (extension; Bibikar et al., AAAI 2022): clients prune by magnitude and regrow by gradient at fixed density."""

from __future__ import annotations

from dataclasses import dataclass

from prunefl.pruning.methods.registry import MethodSpec

__all__ = ["FedDSTSettings", "SPECS"]


@dataclass(frozen=True)
class FedDSTSettings:
    """Settings of the ``[feddst]`` config table (being written this session; the method is not registered yet)."""

    interval: int = 10

SPECS: list[MethodSpec] = []  # registered once the method is implemented
