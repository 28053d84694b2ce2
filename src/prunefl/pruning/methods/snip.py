"""SNIP, official FL variant (spec §8): one dense round, then a fixed mask from |w_0 ⊙ g| at the reference density."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from prunefl import metrics as K
from prunefl.pruning.methods.base import AggregateView, Decision, Method, MethodContext, ReferenceRun
from prunefl.pruning.methods.density_target import DensityTargetMethod
from prunefl.pruning.methods.registry import MethodSpec
from prunefl.pruning.select import top_k_global
from prunefl.sparse.masks import density, kept_counts

__all__ = ["SnipSettings", "Snip", "snip_scores", "snip_masks", "SPECS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnipSettings:
    """SNIP's settings (config table ``[snip]``, spec §8). Defaults are the official ones.

    The target density d is the reference run's (``reference.density`` or PruneFL's final density).

    Attributes
    ----------
    exact_count : bool
        Keep exactly round(d·|J|) weights, ties to the lower index. Off, the official rule applies: the
        threshold is the score at sorted (descending, 0-based) position ⌊d·|J|⌋ and every score ≥ it is kept,
        i.e. ⌊d·|J|⌋ + 1 weights plus ties (spec §12 item 10) (default: False).
    """

    exact_count: bool = False


class Snip(DensityTargetMethod):
    """SNIP in the official FL form: round 0 dense, then the mask from round 0's aggregate, fixed for good.

    Lee, Ajanthan, Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019, as the
    official PruneFL code runs it in FL (``bases/fl/simulation/snip.py``, spec §8). After round 0's aggregation
    the server estimates the gradient at the initial weights w_0 as g = (aggregate − w_0)/η, i.e. minus the
    client-averaged (sample-weighted) sum of the K local gradients, scores every prunable weight by |w_0 ⊙ g|
    and keeps the highest scores across all layers (one global threshold) at the target density. The mask is
    applied to round 0's aggregate, whose pruned coordinates are zeroed as in the official code, and never
    changes afterwards.

    The official clients clear their optimiser state when the mask arrives; here client momentum is reset
    whenever the server's mask version changes, which this decision does, so SNIP needs nothing of its own.

    Parameters
    ----------
    settings : SnipSettings
        The ``[snip]`` table.
    target_density, reference_source : float, str
        See :class:`~prunefl.pruning.methods.density_target.DensityTargetMethod` (d in (0, 1], else ConfigError).
    """

    name = "snip"

    def __init__(self, settings: SnipSettings, target_density: float, reference_source: str = "") -> None:
        super().__init__(target_density, reference_source)
        self.settings = settings

    def after_aggregate(self, view: AggregateView) -> Decision | None:
        """At round 0 only: score, threshold, and install the mask (and the pruned aggregate); later, nothing."""
        if view.round != 0 or self._outcome:
            return None
        names = list(view.masks)
        # round 0 started from the initial weights, so the round's start state is w_0
        scores = snip_scores(view.previous_state, view.state, view.lr, names)
        masks = snip_masks(scores, self.target_density, self.settings.exact_count)
        state = {k: (v * masks[k] if k in masks else v) for k, v in view.state.items()}
        self._outcome = self._counts(masks)  # non-empty from now on: a resumed run does not decide again
        logger.info("snip: kept %d of %d weights after round 0 (target density %.4f from %s)",
                    self._outcome[K.K_N_KEPT], self._outcome[K.K_N_TOTAL], self.target_density, self.reference_source)
        record = {
            K.K_DENSITY_BEFORE: density(view.masks),
            K.K_DENSITY_AFTER: density(masks),
            K.K_KEPT: kept_counts(masks),
        }
        return Decision(masks=masks, state=state, record=record)

    def _summary_entries(self) -> dict[str, Any]:
        return {"exact-count": self.settings.exact_count}


def snip_scores(
    initial: Mapping[str, Tensor], aggregated: Mapping[str, Tensor], lr: float, names: Iterable[str]
) -> dict[str, Tensor]:
    """SNIP's connection sensitivity |w_0 ⊙ g| of each weight in ``names``, with g = (aggregated − w_0)/η.

    ``initial`` is the state round 0 started from (w_0), ``aggregated`` round 0's aggregate and ``lr`` η, the
    round's learning rate. With plain local SGD, aggregated − w_0 = −η·Σ_k ḡ_k (ḡ_k the sample-weighted client
    average of step k's gradient), so g is −Σ_k ḡ_k; its sign does not matter under the absolute value.

    >>> w0, agg = {"w": torch.tensor([2.0, -1.0])}, {"w": torch.tensor([1.0, -1.5])}
    >>> snip_scores(w0, agg, 0.5, ["w"])["w"].tolist()
    [4.0, 1.0]
    """
    return {n: (initial[n] * ((aggregated[n] - initial[n]) / lr)).abs() for n in names}


def snip_masks(scores: Mapping[str, Tensor], target_density: float, exact_count: bool = False) -> dict[str, Tensor]:
    """Keep the highest ``scores`` across all layers at ``target_density`` d (one global threshold).

    Parameters
    ----------
    scores : Mapping[str, Tensor]
        Score per prunable weight, keyed like the masks.
    target_density : float
        d in (0, 1].
    exact_count : bool
        Keep exactly round(d·|J|) weights; otherwise the official ⌊d·|J|⌋ + 1 plus ties (see
        :class:`SnipSettings`) (default: False).

    Returns
    -------
    dict[str, Tensor]
        Bool masks.

    Examples
    --------
    >>> s = {"a": torch.tensor([4.0, 1.0, 2.0]), "b": torch.tensor([2.0])}
    >>> {n: m.tolist() for n, m in snip_masks(s, 0.25).items()}  # ⌊1⌋ + 1 = 2, plus the tie at 2.0
    {'a': [True, False, True], 'b': [True]}
    >>> {n: m.tolist() for n, m in snip_masks(s, 0.25, exact_count=True).items()}
    {'a': [True, False, False], 'b': [False]}
    """
    n_total = sum(s.numel() for s in scores.values())
    if exact_count:
        return top_k_global(scores, round(target_density * n_total))
    # The official threshold is sorted_scores[int(d·|J|)] (descending); keeping every score ≥ it keeps the
    # ⌊d·|J|⌋ + 1 best plus ties. int() of the same float product, so the count matches the official code's.
    # At d = 1 the official index runs past the end; here that keeps everything.
    return top_k_global(scores, min(int(target_density * n_total) + 1, n_total), keep_ties=True)


def _build(settings: SnipSettings, context: MethodContext, reference: ReferenceRun | None) -> Method:
    assert reference is not None and reference.density is not None  # build_method checked needs={"density"}
    return Snip(settings, reference.density, reference.source)


SPECS = [
    MethodSpec("snip", "SNIP", _build, "one dense round, then a fixed mask from |w0 * g| (g from round 0's "
               "aggregate) at the reference density (official FL variant)", section="snip",
               needs=frozenset({"density"}), colour="C2", lottery=True),  # spec §11.5 plots SNIP beside reinit
]
