"""The server's state across rounds and its two paired steps: configure a round, aggregate its replies.

Engine-agnostic: the round protocol (:mod:`prunefl.fl.round`) drives this class for every engine.
The maths lives in free functions (:mod:`prunefl.fl.aggregate`, :mod:`prunefl.pruning`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from prunefl.errors import InconsistentRepliesError
from prunefl.fl.aggregate import client_masked_aggregate, masked_aggregate, sum_importance
from prunefl.fl.lr_schedule import learning_rate
from prunefl.fl.messages import TrainIns, TrainRes

__all__ = ["ServerSettings", "Server", "RoundUpdate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """What the server needs to run rounds; fields mean what they mean in ``RunConfig`` (``fl``, ``data``)."""

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
        """Validate the replies once, then replace the global state by their masked average.

        Raises
        ------
        InconsistentRepliesError
            A reply misses a state entry, has a wrong shape, no examples, or the result is not finite.
            The global state is left unchanged.
        """
        _check_replies(ins, replies)
        states, counts = [r.state for r in replies], [r.num_examples for r in replies]
        if any(r.masks is not None for r in replies):  # clients changed their own masks (FedDST)
            own = [r.masks if r.masks is not None else ins.masks for r in replies]
            new_state = client_masked_aggregate(self.state, states, own, counts, self.settings.regrow_init)
        else:
            new_state = masked_aggregate(self.state, self.masks, states, counts, self.settings.regrow_init)
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
