"""Random pruning (extension): a uniformly random mask at the reference density, fixed from round 0."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from prunefl import metrics as K
from prunefl.pruning.methods.base import BeforeFL, Method, MethodContext, ReferenceRun, SetupView
from prunefl.pruning.methods.density_target import DensityTargetMethod
from prunefl.pruning.methods.registry import MethodSpec
from prunefl.pruning.select import top_k_global, top_k_per_layer
from prunefl.seeds import METHOD_STREAM, rng

__all__ = ["RandomSettings", "RandomPruning", "random_masks", "SPECS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RandomSettings:
    """Random pruning's settings (config table ``[random]``).

    The target density d is the reference run's (``reference.density`` or PruneFL's final density).

    Attributes
    ----------
    layerwise : bool
        Keep round(d·n_l) weights in every layer l, so each layer has density d; off, keep round(d·|J|) weights
        drawn among all prunable weights, so layer densities vary around d (default: False).
    """

    layerwise: bool = False


class RandomPruning(DensityTargetMethod):
    """A uniformly random mask at the reference density, drawn before round 0 and fixed (extension).

    The sanity baseline of prune-at-initialisation studies: not in the official PruneFL code, so reports label it
    an extension. The draw comes from the run seed's method stream (:data:`prunefl.seeds.METHOD_STREAM`), so one
    seed always gives the same mask. The initial state's pruned coordinates are zeroed, as SNIP's are.

    Parameters
    ----------
    settings : RandomSettings
        The ``[random]`` table.
    target_density : float
        d in (0, 1] (see :class:`~prunefl.pruning.methods.density_target.DensityTargetMethod`; else ConfigError).
    seed : int
        The run seed.
    reference_source : str
        Where d came from (default: "").
    """

    name = "random"

    def __init__(self, settings: RandomSettings, target_density: float, seed: int, reference_source: str = "") -> None:
        super().__init__(target_density, reference_source)
        self.settings = settings
        self.seed = seed

    def before_fl(self, view: SetupView) -> BeforeFL:
        """Draw the mask over the server's prunable weights and fix it from round 0."""
        masks = random_masks(view.masks, self.target_density, rng(self.seed, METHOD_STREAM), self.settings.layerwise)
        state = {k: (v * masks[k] if k in masks else v) for k, v in view.state.items()}
        self._outcome = self._counts(masks)
        logger.info("random: kept %d of %d weights (target density %.4f from %s, layerwise=%s)",
                    self._outcome[K.K_N_KEPT], self._outcome[K.K_N_TOTAL], self.target_density,
                    self.reference_source, self.settings.layerwise)
        return BeforeFL(state=state, masks=masks)

    def _summary_entries(self) -> dict[str, Any]:
        return {"layerwise": self.settings.layerwise}


def random_masks(
    like: Mapping[str, Tensor], target_density: float, generator: np.random.Generator, layerwise: bool = False
) -> dict[str, Tensor]:
    """A uniformly random mask keeping round(d·|J|) of the weights shaped like ``like`` (or round(d·n_l) per layer).

    Every weight gets an independent uniform score and the top ones are kept, so every subset of the kept size is
    equally likely; ``like`` gives only the shapes (its values, e.g. an older mask, are ignored).

    Parameters
    ----------
    like : Mapping[str, Tensor]
        Tensors of the weights' shapes (the masks or the weights), keyed by parameter name.
    target_density : float
        d in [0, 1].
    generator : numpy.random.Generator
        The stream to draw from.
    layerwise : bool
        Density d in every layer rather than overall (see :class:`RandomSettings`) (default: False).

    Returns
    -------
    dict[str, Tensor]
        Bool masks on the CPU.

    Examples
    --------
    >>> like = {"a": torch.ones(4, 5), "b": torch.ones(10)}
    >>> masks = random_masks(like, 0.5, np.random.default_rng(0))
    >>> sum(int(m.sum()) for m in masks.values())
    15
    >>> [int(m.sum()) for m in random_masks(like, 0.5, np.random.default_rng(0), layerwise=True).values()]
    [10, 5]
    """
    names = list(like)
    sizes = [like[n].numel() for n in names]
    uniform = torch.from_numpy(generator.random(sum(sizes)))  # (|J|,) float64, one draw per weight
    scores = {n: u.reshape(like[n].shape) for n, u in zip(names, torch.split(uniform, sizes))}
    if layerwise:
        return top_k_per_layer(scores, {n: round(target_density * s) for n, s in zip(names, sizes)})
    return top_k_global(scores, round(target_density * sum(sizes)))


def _build(settings: RandomSettings, context: MethodContext, reference: ReferenceRun | None) -> Method:
    assert reference is not None and reference.density is not None  # build_method checked needs={"density"}
    return RandomPruning(settings, reference.density, context.seed, reference.source)


SPECS = [
    MethodSpec("random", "Random", _build, "a uniformly random mask at the reference density, fixed from round 0",
               section="random", needs=frozenset({"density"}), extension=True, colour="C7"),
]
