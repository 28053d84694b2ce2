"""Lottery-ticket baselines (spec §8): PruneFL's final mask on its original initialisation (reinit) or a fresh one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from prunefl import metrics as K
from prunefl.errors import ConfigError
from prunefl.errors import check_setting as _check
from prunefl.pruning.methods.base import BeforeFL, Method, MethodContext, ReferenceRun, SetupView
from prunefl.pruning.methods.registry import MethodSpec
from prunefl.sparse.masks import density, kept_counts, total_counts

__all__ = ["ReinitSettings", "Reinit", "check_reference_masks", "check_reference_state", "SPECS"]


@dataclass(frozen=True)
class ReinitSettings:
    """Settings of the lottery-ticket baselines (config table ``[reinit]``); reinit itself has none of its own.

    Attributes
    ----------
    seed_offset : int
        Random reinit initialises the model from seed ``seed + seed_offset`` (``seed`` = the run seed), ≥ 1, so
        its weights differ from the reference's initialisation of the same seed, and at most 2^32 − 1 (a seed's
        bound); the official code used the next seed (default: 1).
    """

    seed_offset: int = 1

    def __post_init__(self) -> None:
        _check(1 <= self.seed_offset <= 2**32 - 1, "reinit.seed_offset", self.seed_offset,
               "must be in [1, 2^32 - 1] (0 would reproduce the reference's own initialisation)")


class Reinit(Method):
    """FedAvg with the reference's final mask fixed from round 0, on its original or a fresh initialisation.

    ``reinit`` (``reinitialize.py -m r``) takes the reference's initial weights, saved before initial pruning, and
    its final mask: the lottery-ticket test of whether PruneFL found a trainable subnetwork of its own
    initialisation (spec §8, §11.5). ``random-reinit`` (``-m rr``) puts the same mask on a fresh initialisation
    from seed ``seed + seed_offset``. As in the official code the starting weights are multiplied by the mask, so
    pruned coordinates start (and, never regrown, stay) at 0; kept coordinates and every unpruned tensor are the
    chosen initialisation bit for bit. The mask never changes afterwards.

    Parameters
    ----------
    settings : ReinitSettings
        The ``[reinit]`` table.
    masks : Mapping[str, Tensor]
        The reference's final bool masks, keyed by parameter name.
    init_state : Mapping[str, Tensor] or None
        The reference's initial weights (keyed like the model's state without mask buffers); None draws a fresh
        initialisation instead (random reinit).
    seed : int
        The run seed.
    reference_source : str
        Where the mask and weights came from (``ReferenceRun.source``), reported in the summary (default: "").

    Raises
    ------
    ConfigError
        In :meth:`before_fl`: the masks or initial weights do not fit the model (names, shapes, dtypes).
    """

    def __init__(
        self,
        settings: ReinitSettings,
        masks: Mapping[str, Tensor],
        init_state: Mapping[str, Tensor] | None,
        seed: int,
        reference_source: str = "",
    ) -> None:
        self.settings = settings
        self.masks = dict(masks)
        self.init_state = None if init_state is None else dict(init_state)
        self.seed = seed
        self.reference_source = reference_source

    @property
    def init_seed(self) -> int | None:
        """The seed of the fresh initialisation (random reinit), or None when the reference's is used."""
        return self.seed + self.settings.seed_offset if self.init_state is None else None

    def before_fl(self, view: SetupView) -> BeforeFL:
        """Check the reference against the model, then install its mask on the chosen initialisation."""
        source = self.reference_source or "the reference run"
        check_reference_masks(self.masks, view.masks, source)
        if self.init_state is None:
            assert self.init_seed is not None
            start = view.fresh_state(self.init_seed)
        else:
            check_reference_state(self.init_state, view.state, source)
            start = self.init_state
        masks = {n: m.clone() for n, m in self.masks.items()}
        # official: weight.mul_(mask); torch.where so pruned coordinates are +0.0, never a product's -0.0
        state = {k: torch.where(masks[k], v, torch.zeros_like(v)) if k in masks else v.clone()
                 for k, v in start.items()}
        return BeforeFL(state=state, masks=masks, initial_state={k: v.clone() for k, v in start.items()})

    def summary(self) -> dict[str, Any]:
        return {
            K.K_REFERENCE_SOURCE: self.reference_source,
            "init": "fresh" if self.init_state is None else "reference",
            "init-seed": self.init_seed,
            K.K_TARGET_DENSITY: density(self.masks),
            K.K_N_KEPT: sum(kept_counts(self.masks).values()),
            K.K_N_TOTAL: sum(total_counts(self.masks).values()),
        }


def check_reference_masks(masks: Mapping[str, Tensor], model_masks: Mapping[str, Tensor], source: str) -> None:
    """Check that a reference's masks are bool and have exactly the model's prunable names and shapes.

    Raises
    ------
    ConfigError
        Naming the missing, unexpected, misshapen and non-bool keys.

    Examples
    --------
    >>> check_reference_masks({"w": torch.ones(2, dtype=torch.bool)}, {"w": torch.ones(2, dtype=torch.bool)}, "r")
    >>> check_reference_masks({"w": torch.ones(3, dtype=torch.bool)}, {"w": torch.ones(2, dtype=torch.bool)},
    ...                       "r")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.ConfigError: reference 'r' masks do not fit the model: shape differs at w (3,) (model (2,)); ...
    """
    problems = _mismatches(masks, model_masks)
    not_bool = sorted(k for k, v in masks.items() if k in model_masks and v.dtype != torch.bool)
    if not_bool:
        problems.append(f"not bool at {', '.join(not_bool)}")
    if problems:
        raise ConfigError(
            f"reference {source!r} masks do not fit the model: {'; '.join(problems)}; the reference must be a run "
            "of the same model (model.name) on the same data set"
        )


def check_reference_state(state: Mapping[str, Tensor], model_state: Mapping[str, Tensor], source: str) -> None:
    """Check that a reference's initial weights have exactly the model's state keys, shapes and dtypes.

    Raises
    ------
    ConfigError
        Naming the missing, unexpected and misshapen keys.

    Examples
    --------
    >>> check_reference_state({"w": torch.zeros(2)}, {"w": torch.ones(2), "b": torch.ones(1)}, "r")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.ConfigError: reference 'r' initial weights do not fit the model: missing b; ...
    """
    problems = _mismatches(state, model_state)
    dtypes = sorted(
        f"{k} {v.dtype} (model {model_state[k].dtype})"
        for k, v in state.items()
        if k in model_state and v.dtype != model_state[k].dtype
    )
    if dtypes:
        problems.append(f"dtype differs at {', '.join(dtypes)}")
    if problems:
        raise ConfigError(
            f"reference {source!r} initial weights do not fit the model: {'; '.join(problems)}; the reference must "
            "be a run of the same model (model.name) on the same data set"
        )


def _mismatches(given: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> list[str]:
    """Missing keys, unexpected keys and shape differences of ``given`` against ``expected``, as message parts."""
    problems = []
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k} {tuple(v.shape)} (model {tuple(expected[k].shape)})"
        for k, v in given.items()
        if k in expected and v.shape != expected[k].shape
    )
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape differs at {', '.join(shapes)}")
    return problems


def _factory(fresh: bool):  # type: ignore[no-untyped-def]
    def build(settings: ReinitSettings, context: MethodContext, reference: ReferenceRun | None) -> Method:
        # build_method checked needs: masks always, initial weights for reinit
        assert reference is not None and reference.masks is not None
        assert fresh or reference.init_state is not None
        return Reinit(settings, reference.masks, None if fresh else reference.init_state, context.seed,
                      reference.source)

    return build


SPECS = [
    MethodSpec("reinit", "Reinit", _factory(False), "the reference's final mask on its original initialisation, "
               "fixed, trained by FedAvg (lottery ticket)", section="reinit", needs=frozenset({"mask", "init"}),
               colour="teal", lottery=True),
    MethodSpec("random-reinit", "Random reinit", _factory(True), "the reference's final mask on a fresh random "
               "initialisation (seed + reinit.seed_offset), fixed, trained by FedAvg", section="reinit",
               needs=frozenset({"mask"}), colour="darkgoldenrod", lottery=True),
]
