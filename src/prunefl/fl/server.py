"""The server's state across rounds and its two paired steps: configure a round, aggregate its replies.

Engine-agnostic: the round protocol (:mod:`prunefl.fl.round`) drives this class for every engine.
The maths lives in free functions (:mod:`prunefl.fl.aggregate`, :mod:`prunefl.pruning`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from prunefl.errors import CheckpointError, InconsistentRepliesError, check_setting
from prunefl.fl.aggregate import (
    AGGREGATIONS,
    client_masked_aggregate,
    masked_aggregate,
    robust_aggregate,
    sum_importance,
)
from prunefl.fl.lr_schedule import learning_rate
from prunefl.fl.messages import TrainIns, TrainRes

__all__ = ["ServerSettings", "Server", "RoundUpdate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """What the server needs to run rounds; fields mean what they mean in ``RunConfig`` (``fl``, ``data``).

    The reply policy (``aggregation``, ``trim_fraction``, ``min_valid_replies``, ``max_update_norm_ratio``,
    ``round_retries``) is documented on ``FLConfig``; it is checked here too, since a Flower ServerApp builds
    these settings.
    """

    num_clients: int
    clients_per_round: int
    local_steps: int
    batch_size: int
    lr: float
    lr_schedule: Literal["constant", "half_life", "step"] = "constant"
    lr_half_life_rounds: float = 10000.0
    lr_step_rounds: int = 1000
    lr_step_gamma: float = 0.5**0.1
    regrow_init: Literal["stale", "zero"] = "stale"
    importance_mode: Literal["off", "round_sum", "legacy_last_step"] = "off"
    seed: int = 0
    aggregation: Literal["mean", "median", "trimmed-mean"] = "mean"
    trim_fraction: float = 0.1
    round_retries: int = 0
    min_valid_replies: int = 1
    max_update_norm_ratio: float = 1e6

    def __post_init__(self) -> None:
        check_setting(self.aggregation in AGGREGATIONS, "fl.aggregation", self.aggregation,
                      f"must be one of {list(AGGREGATIONS)}")
        check_setting(0 <= self.trim_fraction < 0.5, "fl.trim_fraction", self.trim_fraction, "must be in [0, 0.5)")
        check_setting(0 <= self.round_retries <= 100, "fl.round_retries", self.round_retries, "must be in [0, 100]")
        check_setting(self.min_valid_replies >= 1, "fl.min_valid_replies", self.min_valid_replies, "must be >= 1")
        check_setting(
            math.isfinite(self.max_update_norm_ratio) and self.max_update_norm_ratio >= 0,
            "fl.max_update_norm_ratio", self.max_update_norm_ratio, "must be a finite number >= 0 (0: no bound)",
        )


@dataclass(frozen=True)
class RoundUpdate:
    """What aggregating one round produced."""

    train_loss: float
    num_examples: int
    importance: dict[str, torch.Tensor] | None


class Server:
    """Global model state and masks, updated once per round.

    Parameters
    ----------
    state : dict[str, torch.Tensor]
        Initial global state (``state_dict()`` without mask buffers). The server owns it from now on.
    masks : dict[str, torch.Tensor]
        Bool mask per prunable weight.
    settings : ServerSettings
        Round settings.
    """

    def __init__(self, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], settings: ServerSettings):
        self.state = state
        self._masks = masks
        self.settings = settings
        self.mask_version = 0  # bumped whenever the masks are replaced, so transports know when to resend them

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Bool mask per prunable weight."""
        return self._masks

    @masks.setter
    def masks(self, value: dict[str, torch.Tensor]) -> None:
        """Replace the masks; with ``regrow_init = "zero"`` pruned coordinates of the state become 0 (spec §3.8)."""
        self._masks = value
        self.mask_version += 1
        if self.settings.regrow_init == "zero":
            self.state = {k: (v * value[k] if k in value else v) for k, v in self.state.items()}

    def restore_masks(self, masks: dict[str, torch.Tensor], mask_version: int) -> None:
        """Put back masks and their version as they were, without the setter's bump or zeroing (a rollback)."""
        self._masks = masks
        self.mask_version = mask_version

    def state_dict(self) -> dict[str, Any]:
        """The server's state across rounds: ``state/<k>`` and ``masks/<k>`` tensors (copies), ``mask-version``.

        Examples
        --------
        >>> s = Server({"w": torch.ones(2)}, {"w": torch.tensor([True, False])}, ServerSettings(2, 2, 1, 1, 0.1))
        >>> sorted(s.state_dict())
        ['mask-version', 'masks/w', 'state/w']
        """
        out: dict[str, Any] = {f"state/{k}": v.detach().clone() for k, v in self.state.items()}
        out.update({f"masks/{k}": v.detach().clone() for k, v in self._masks.items()})
        out["mask-version"] = self.mask_version
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into a server built for the same model: the masks are installed as they were
        (no version bump, no zeroing: the saved state already is what the run had).

        Raises
        ------
        CheckpointError
            Keys missing or unexpected, a shape or dtype differs from this server's, or the mask version is not an
            int >= 0. The server is left unchanged.

        Examples
        --------
        >>> a = Server({"w": torch.ones(2)}, {"w": torch.tensor([True, True])}, ServerSettings(2, 2, 1, 1, 0.1))
        >>> a.masks = {"w": torch.tensor([True, False])}
        >>> b = Server({"w": torch.zeros(2)}, {"w": torch.tensor([True, True])}, ServerSettings(2, 2, 1, 1, 0.1))
        >>> b.load_state_dict(a.state_dict())
        >>> b.mask_version, b.masks["w"].tolist(), b.state["w"].tolist()
        (1, [True, False], [1.0, 1.0])
        """
        new_state = _matching(state, "state", self.state)
        new_masks = _matching(state, "masks", self._masks)
        version = state.get("mask-version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise CheckpointError(f"server state needs 'mask-version' (an int >= 0), got {version!r}")
        self.state, self._masks, self.mask_version = new_state, new_masks, version

    def configure_train(self, round: int, upload_importance: bool = False, track_importance: bool = True) -> TrainIns:
        """Build the instruction every participant of ``round`` receives.

        Who trains is the caller's choice (:func:`prunefl.fl.selection.select_clients` in the simulation; Flower
        samples nodes), so selection is not hidden here. ``track_importance=False`` tells clients to skip
        importance this round (outside an importance window), so they need no dense weight gradients.
        """
        s = self.settings
        lr = learning_rate(round, s.lr, s.lr_schedule, s.lr_half_life_rounds, s.lr_step_rounds, s.lr_step_gamma)
        ins = TrainIns(
            round=round,
            state={k: v.numpy() for k, v in self.state.items()},
            masks={k: v.numpy() for k, v in self.masks.items()},
            lr=lr,
            local_steps=s.local_steps,
            batch_size=s.batch_size,
            importance_mode=s.importance_mode if track_importance else "off",
            upload_importance=upload_importance and track_importance and s.importance_mode != "off",
        )
        return ins

    def aggregate_train(self, ins: TrainIns, replies: Sequence[TrainRes]) -> RoundUpdate:
        """Replace the global state by the masked aggregate of ``replies`` (``settings.aggregation``).

        The round protocol validated every reply (:mod:`prunefl.fl.validate`) and dropped the bad ones; this
        repeats only the structural checks that aggregation itself relies on.

        Raises
        ------
        InconsistentRepliesError
            A reply misses a state entry, has a wrong shape, no examples, the result is not finite, or a robust
            rule meets clients' own masks (FedDST), which it does not support. The global state is left unchanged.
        """
        _check_replies(ins, replies)
        s = self.settings
        states, counts = [r.state for r in replies], [r.num_examples for r in replies]
        if any(r.masks is not None for r in replies):  # clients changed their own masks (FedDST)
            if s.aggregation != "mean":
                raise InconsistentRepliesError(
                    f"fl.aggregation={s.aggregation!r} does not support clients' own masks (round {ins.round}); "
                    "use fl.aggregation = \"mean\" with this method"
                )
            own = [r.masks if r.masks is not None else ins.masks for r in replies]
            new_state = client_masked_aggregate(self.state, states, own, counts, s.regrow_init)
        elif s.aggregation == "mean":
            new_state = masked_aggregate(self.state, self.masks, states, counts, s.regrow_init)
        else:
            new_state = robust_aggregate(self.state, self.masks, states, s.aggregation, s.trim_fraction, s.regrow_init)
        bad = [k for k, v in new_state.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
        if bad:
            raise InconsistentRepliesError(
                f"aggregated state has non-finite values in {bad} (round {ins.round}); the global model was not "
                "updated. Lower fl.lr or check the data."
            )
        self.state = new_state  # build first, then swap in
        n_total = sum(r.num_examples for r in replies)
        loss = sum(r.train_loss * r.num_examples for r in replies) / n_total
        uploads = [r.importance for r in replies if r.importance is not None]
        return RoundUpdate(train_loss=loss, num_examples=n_total, importance=sum_importance(uploads) if uploads else None)


def _matching(state: Mapping[str, Any], prefix: str, expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix/`` in ``state``, checked to have exactly ``expected``'s names, shapes and dtypes."""
    found = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + "/")}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"server {prefix} in the checkpoint: missing {missing}, unexpected {unexpected}; "
                              "it was written for another model")
    for k, v in found.items():
        e = expected[k]
        if not isinstance(v, torch.Tensor) or v.shape != e.shape or v.dtype != e.dtype:
            got = (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else type(v).__name__
            raise CheckpointError(f"server {prefix} {k!r} in the checkpoint is {got}, expected "
                                  f"{(tuple(e.shape), e.dtype)}")
    return {k: found[k].detach().clone() for k in expected}


def _check_replies(ins: TrainIns, replies: Sequence[TrainRes]) -> None:
    if not replies:
        raise InconsistentRepliesError(f"round {ins.round}: no client replied; nothing to aggregate")
    for r in replies:
        if r.num_examples <= 0:
            raise InconsistentRepliesError(
                f"client {r.client_id} reported num-examples={r.num_examples} in round {ins.round}; expected > 0"
            )
        if set(r.state) != set(ins.state):
            missing = sorted(set(ins.state) - set(r.state))
            extra = sorted(set(r.state) - set(ins.state))
            raise InconsistentRepliesError(
                f"client {r.client_id} state keys differ from the server's in round {ins.round}: "
                f"missing {missing}, unexpected {extra}; the round is not aggregated"
            )
        if r.masks is not None and (set(r.masks) != set(ins.masks) or any(
            np.shape(m) != np.shape(ins.masks[k]) for k, m in r.masks.items()
        )):
            raise InconsistentRepliesError(
                f"client {r.client_id} sent masks for {sorted(r.masks)} in round {ins.round}; expected masks of the "
                f"server's shapes for {sorted(ins.masks)}"
            )
        for k, v in r.state.items():
            if np.shape(v) != np.shape(ins.state[k]):
                raise InconsistentRepliesError(
                    f"client {r.client_id} sent {k!r} with shape {np.shape(v)}, expected {np.shape(ins.state[k])}"
                )
