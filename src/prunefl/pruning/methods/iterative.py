"""Iterative magnitude pruning (official baseline, spec §8): 20 prunes reaching the reference density halfway."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from prunefl import metrics as K
from prunefl.errors import ConfigError
from prunefl.errors import check_setting as _check
from prunefl.pruning.methods.base import AggregateView, Decision, Method, MethodContext, ReferenceRun
from prunefl.pruning.methods.density_target import DensityTargetMethod
from prunefl.pruning.methods.registry import MethodSpec
from prunefl.pruning.select import top_k_per_layer
from prunefl.sparse.masks import density, kept_counts

__all__ = ["IterativeSettings", "IterativePruning", "prune_rounds", "prune_fraction", "magnitude_prune", "SPECS"]


@dataclass(frozen=True)
class IterativeSettings:
    """Iterative pruning's settings (config table ``[iterative]``). Defaults are the official ones.

    The target density d_final is the reference run's (``reference.density`` or PruneFL's final density).

    Attributes
    ----------
    prunes : int
        How many times the model is pruned, in [1, 100 000] (NUM_ITERATIVE_PRUNING); there is at most one prune
        per round (default: 20).
    end_fraction : float
        Fraction of the FL rounds, in (0, 1), by which the last prune is done: prunes fall every
        ⌊end_fraction·R/prunes⌋ rounds (R = ``fl.rounds``), so d_final is reached at round
        prunes·⌊end_fraction·R/prunes⌋ ≤ end_fraction·R; 0.5 is the official mid-training (default: 0.5).
    """

    prunes: int = 20
    end_fraction: float = 0.5

    def __post_init__(self) -> None:
        _check(1 <= self.prunes <= 100_000, "iterative.prunes", self.prunes, "must be in [1, 100000]")
        _check(0 < self.end_fraction < 1, "iterative.end_fraction", self.end_fraction, "must be in (0, 1)")


class IterativePruning(DensityTargetMethod):
    """Magnitude pruning without rewinding at ``prunes`` evenly spaced rounds, ending at the reference density.

    The official ``bases/fl/simulation/iterative.py`` (spec §8, §12 item 10): after the aggregation of each prune
    round (:func:`prune_rounds`) every layer loses the fraction p = 1 − d_final^(1/prunes) of its in-use weights,
    those of smallest magnitude in the freshly aggregated model (:func:`magnitude_prune`); pruned weights are
    zeroed and never return, so the density falls geometrically to d_final and then stays. Clients train FedAvg
    under the current mask; no importance is tracked.

    Parameters
    ----------
    settings : IterativeSettings
        The ``[iterative]`` table.
    target_density : float
        d_final in (0, 1] (see :class:`~prunefl.pruning.methods.density_target.DensityTargetMethod`).
    rounds : int
        R, the number of FL rounds (``fl.rounds``).
    reference_source : str
        Where d_final came from (default: "").

    Raises
    ------
    ConfigError
        ``target_density`` is not in (0, 1], or ``rounds`` is too few for ``prunes`` prunes (see
        :func:`prune_rounds`).
    """

    name = "iterative"

    def __init__(
        self, settings: IterativeSettings, target_density: float, rounds: int, reference_source: str = ""
    ) -> None:
        super().__init__(target_density, reference_source)
        self.settings = settings
        self.rounds = prune_rounds(rounds, settings.prunes, settings.end_fraction)
        self._round_set = frozenset(self.rounds)
        self.fraction = prune_fraction(target_density, settings.prunes)
        self._outcome = {"prunes-done": 0}  # and n-kept / n-total after the latest prune

    def after_aggregate(self, view: AggregateView) -> Decision | None:
        """In a prune round, remove the fraction p of each layer's in-use weights by magnitude and zero them."""
        if view.round not in self._round_set:
            return None
        masks = magnitude_prune(view.state, view.masks, self.fraction)
        state = {k: _zero_pruned(v, masks[k]) if k in masks else v for k, v in view.state.items()}
        before, after = kept_counts(view.masks), kept_counts(masks)
        self._outcome = {"prunes-done": int(self._outcome["prunes-done"]) + 1, **self._counts(masks)}
        record = {
            K.K_REMOVED: {n: before[n] - after[n] for n in masks},
            K.K_ADDED: {n: 0 for n in masks},  # no regrowth, ever
            K.K_KEPT: after,
            K.K_DENSITY_BEFORE: density(view.masks),
            K.K_DENSITY_AFTER: density(masks),
        }
        return Decision(masks=masks, state=state, record=record)

    def _summary_entries(self) -> dict[str, Any]:
        return {"prunes": self.settings.prunes, "prune-fraction": self.fraction, "prune-rounds": list(self.rounds)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._outcome = {"prunes-done": 0, **state}  # the schedule follows from the config; only the counts


def prune_rounds(rounds: int, prunes: int = 20, end_fraction: float = 0.5) -> list[int]:
    """The FL rounds after whose aggregation iterative pruning prunes: i·⌊end_fraction·R/prunes⌋, i = 1…prunes.

    With the default ``end_fraction`` this is the official i·⌊R/40⌋ (``int(MAX_ROUND / 2 / 20)``): every 250
    rounds to round 5000 for R = 10001. ``end_fraction·R`` is computed exactly from the decimal value of
    ``end_fraction`` (0.3 counts as 3/10, not its binary approximation), so no float rounding moves a prune.

    Parameters
    ----------
    rounds : int
        R, the number of FL rounds (rounds 0 … R − 1 exist).
    prunes : int
        How many prunes, ≥ 1 (default: 20).
    end_fraction : float
        In (0, 1); see :class:`IterativeSettings` (default: 0.5).

    Returns
    -------
    list[int]
        ``prunes`` increasing 0-based round indices, all in 1 … R − 1.

    Raises
    ------
    ConfigError
        The interval ⌊end_fraction·R/prunes⌋ is 0; the message names ``fl.rounds`` and ``iterative.prunes`` and
        the fewest rounds that work, ⌈prunes/end_fraction⌉ (2·prunes by default).

    Examples
    --------
    >>> r = prune_rounds(10001)
    >>> r[:3], r[-1], len(r)
    ([250, 500, 750], 5000, 20)
    >>> prune_rounds(10, prunes=2, end_fraction=0.8)
    [4, 8]
    """
    _check(prunes >= 1, "iterative.prunes", prunes, "must be >= 1")
    _check(0 < end_fraction < 1, "iterative.end_fraction", end_fraction, "must be in (0, 1)")
    # the decimal typed, exactly: 0.5 gives the official int(R / 2 / prunes)
    fraction = Fraction(repr(float(end_fraction)))
    interval = math.floor(fraction * rounds / prunes)
    if interval < 1:  # from 1 on, the last prune prunes·interval <= end_fraction·R < R is a round that exists
        raise ConfigError(
            f"fl.rounds = {rounds} is too few for iterative.prunes = {prunes} at iterative.end_fraction = "
            f"{end_fraction}: one prune every ⌊end_fraction·rounds/prunes⌋ = 0 rounds; use fl.rounds >= "
            f"{math.ceil(prunes / fraction)} or fewer iterative.prunes"
        )
    return [i * interval for i in range(1, prunes + 1)]


def prune_fraction(target_density: float, prunes: int = 20) -> float:
    """p = 1 − d_final^(1/prunes): the fraction of in-use weights each prune removes, so prunes reach d_final.

    >>> prune_fraction(0.25, prunes=2)
    0.5
    """
    _check(0 < target_density <= 1, "reference.density", target_density, "must be in (0, 1]")
    _check(prunes >= 1, "iterative.prunes", prunes, "must be >= 1")
    return 1.0 - target_density ** (1.0 / prunes)


def magnitude_prune(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], fraction: float) -> dict[str, Tensor]:
    """Remove from each layer the ``fraction`` of its in-use weights with the smallest magnitude |w|.

    A layer with n in-use weights loses ⌊fraction·n⌋ of them, the official rounding (``int(num_weight * pct)``), so
    it keeps n − ⌊fraction·n⌋ = ⌈(1 − fraction)·n⌉. Repeated k times this keeps at least (1 − fraction)^k·n and
    fewer than (1 − fraction)^k·n + k weights per layer (each ceiling adds less than one weight, which later
    prunes shrink). Ties in |w| go to the lower flat index (:func:`prunefl.pruning.select.top_k_per_layer`;
    the official threshold kept every tie). Pruned weights are never candidates, so none returns.

    Parameters
    ----------
    weights : Mapping[str, Tensor]
        Weights keyed like ``masks`` (other keys are ignored).
    masks : Mapping[str, Tensor]
        The bool masks in force.
    fraction : float
        p in [0, 1].

    Returns
    -------
    dict[str, Tensor]
        New bool masks, each a subset of the old one.

    Examples
    --------
    >>> w = {"a": torch.tensor([0.5, -3.0, 0.1, 2.0, -1.0])}
    >>> m = {"a": torch.tensor([True, True, False, True, True])}
    >>> magnitude_prune(w, m, 0.5)["a"].tolist()  # 4 in use: ⌊0.5·4⌋ = 2 removed (|0.5|, |-1.0|)
    [False, True, False, True, False]
    """
    _check(0 <= fraction <= 1, "fraction", fraction, "must be in [0, 1]")
    counts = {n: k - math.floor(fraction * k) for n, k in kept_counts(masks).items()}
    return top_k_per_layer({n: weights[n].detach().abs() for n in masks}, counts, within=masks)


def _zero_pruned(values: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, values, torch.zeros_like(values))  # +0.0 at pruned coordinates, never a product's -0.0


def _build(settings: IterativeSettings, context: MethodContext, reference: ReferenceRun | None) -> Method:
    assert reference is not None and reference.density is not None  # build_method checked needs={"density"}
    return IterativePruning(settings, reference.density, context.rounds, reference.source)


SPECS = [
    MethodSpec("iterative", "Iterative", _build, "magnitude pruning without rewinding, 20 times to the reference "
               "density by mid-training (official baseline)", section="iterative", needs=frozenset({"density"}),
               colour="C4"),
]
