"""The method protocol: the hooks where FL pruning methods differ, and the views each hook receives.

A method is one class with four hooks (like torch's ``prune.py``, where a method is its ``compute_mask``, and
Flower's Strategy, whose hooks wrap one concrete loop). The round protocol owns everything else — selection,
local SGD, transport, aggregation, the clock — and calls:

* :meth:`Method.before_fl` once, before round 0: prune at initialisation, run initial pruning at a selected
  client, or load a reference run's mask and weights;
* :meth:`Method.track_importance` / :meth:`Method.upload_importance` each round: whether clients accumulate
  squared gradients (dense weight gradients) and whether they upload them;
* :meth:`Method.client_hook` at every client after its local steps (FedDST's prune-and-regrow, the online
  baseline's sample upload);
* :meth:`Method.after_aggregate` on the server after aggregation: the new masks (and, rarely, state);
* :meth:`Method.observe` with each finished metrics row (accuracy triggers).

Hooks return decisions (new masks, new state, a record); they never mutate the server, so a decision can be
validated and applied in one place, by whichever engine runs the round. Everything a method keeps across rounds
is in ``state_dict()`` (JSON-able scalars and lists, or tensors), which a checkpoint collects.

Nothing here imports an engine, Flower, ``prunefl.fl`` or ``prunefl.experiments``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from prunefl.data.dataset import ArrayDataset
from prunefl.timing.clock import DeviceProfile

__all__ = [
    "Method",
    "MethodContext",
    "ReferenceRun",
    "SetupView",
    "BeforeFL",
    "ClientView",
    "ClientHookResult",
    "AggregateView",
    "Decision",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Row = dict[str, Any]


@dataclass(frozen=True)
class MethodContext:
    """Run-wide settings every method may read; each field means what the same-named ``RunConfig`` field means.

    ``seed`` is the run seed; methods derive their own streams from it with ``numpy.random.SeedSequence``
    (:mod:`prunefl.seeds`).
    """

    seed: int
    rounds: int
    local_steps: int
    batch_size: int
    lr: float
    num_clients: int
    comm: str = "per_weight"  # timing.comm, for methods whose objective includes communication time


@dataclass(frozen=True)
class ReferenceRun:
    """What a method may take from a reference run (PruneFL's run of the same comparison and seed, or a folder).

    Attributes
    ----------
    source : str
        Where it came from (a run folder, or ``"config"`` for a density typed in the config), for provenance.
    density : float or None
        The reference's final density, in (0, 1].
    masks : dict[str, torch.Tensor] or None
        Its final bool masks, keyed by parameter name.
    init_state : dict[str, torch.Tensor] or None
        Its initial weights (before initial pruning), keyed like ``state_dict()`` without mask buffers.
    """

    source: str
    density: float | None = None
    masks: dict[str, torch.Tensor] | None = None
    init_state: dict[str, torch.Tensor] | None = None


@dataclass
class SetupView:
    """What :meth:`Method.before_fl` may use: the freshly initialised global model and the run's parts.

    ``state`` and ``masks`` are the server's (the method returns replacements rather than editing them);
    ``model`` is a workspace holding them, which the method may overwrite. ``record`` writes a metrics row (initial
    pruning writes its rows with stage "ip"); ``fresh_state(seed)`` builds a newly initialised state with another
    seed (random reinit).
    """

    state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    model: nn.Module
    dataset: ArrayDataset
    partitions: Sequence[np.ndarray]
    devices: Sequence[DeviceProfile]
    loss_fn: LossFn
    record: Callable[[Row], None]
    fresh_state: Callable[[int], dict[str, torch.Tensor]]
    start_wall: float = 0.0


@dataclass
class BeforeFL:
    """What :meth:`Method.before_fl` decided.

    Attributes
    ----------
    state, masks : dict or None
        Replacement global state / masks (None: unchanged).
    sim_clock_s : float
        Simulated seconds charged before round 0 (initial pruning, when charged).
    summary : dict
        Entries for ``summary.json`` (e.g. the initial-pruning summary under ``"ip"``).
    initial_state : dict or None
        The initialisation the run really starts from, when it is not the model's own (reinit and random
        reinit); the checkpoint saves it as the run's initial weights (None: the model's own).
    """

    state: dict[str, torch.Tensor] | None = None
    masks: dict[str, torch.Tensor] | None = None
    sim_clock_s: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    initial_state: dict[str, torch.Tensor] | None = None


@dataclass
class ClientView:
    """A client after its local steps of ``round``, as :meth:`Method.client_hook` sees it.

    ``model`` holds the trained weights (pruned coordinates zero); ``masks`` are those the client trained with;
    ``importance`` is the client's accumulated importance N_c·(Σ_k g)² per parameter when importance was tracked
    this round (else None); ``rng`` is the client's own stream for this round.
    """

    round: int
    client_id: int
    model: nn.Module
    masks: Mapping[str, torch.Tensor]
    importance: Mapping[str, torch.Tensor] | None
    dataset: ArrayDataset
    partition: np.ndarray
    rng: np.random.Generator


@dataclass
class ClientHookResult:
    """What a client hook changes: the client's own new masks (sent with its reply) and extra uploads.

    ``extras`` are arrays the client uploads besides its weights (their bytes are counted); ``consumed_importance``
    resets the client's importance accumulator.
    """

    masks: dict[str, torch.Tensor] | None = None
    extras: dict[str, np.ndarray] | None = None
    consumed_importance: bool = False


@dataclass
class AggregateView:
    """The server right after aggregating ``round``, as :meth:`Method.after_aggregate` sees it.

    Attributes
    ----------
    round : int
    state : dict[str, torch.Tensor]
        The freshly aggregated global state.
    previous_state : dict[str, torch.Tensor]
        The global state the clients started this round from.
    masks : dict[str, torch.Tensor]
        The masks the clients trained with.
    importance : dict[str, torch.Tensor] or None
        Σ over clients of their uploaded importance, when they uploaded this round.
    clients : list[int]
        Who trained, in reply order.
    devices : Sequence[DeviceProfile]
        Every client's device profile (index = client id).
    client_masks : list[dict[str, torch.Tensor] | None]
        Each reply's own masks, when its client hook changed them (else None), in reply order.
    extras : list[dict[str, numpy.ndarray] | None]
        Each reply's extra uploads, in reply order.
    lr : float
        This round's learning rate.
    evaluate_loss : Callable
        ``evaluate_loss(state, masks, x, y) -> float``: the loss of a model state on given samples, on the
        server's workspace (the online baseline compares models on uploaded samples).
    """

    round: int
    state: dict[str, torch.Tensor]
    previous_state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    importance: dict[str, torch.Tensor] | None
    clients: list[int]
    devices: Sequence[DeviceProfile]
    client_masks: list[dict[str, torch.Tensor] | None] = field(default_factory=list)
    extras: list[dict[str, np.ndarray] | None] = field(default_factory=list)
    lr: float = 0.0
    evaluate_loss: Callable[..., float] | None = None


@dataclass
class Decision:
    """What :meth:`Method.after_aggregate` decided: replacement masks and/or state, and a metrics record."""

    masks: dict[str, torch.Tensor] | None = None
    state: dict[str, torch.Tensor] | None = None
    record: dict[str, Any] | None = None


class Method:
    """Base class of every FL method: FedAvg's behaviour (no pruning), overridden hook by hook.

    Subclasses override only the hooks where they differ; each is one file in :mod:`prunefl.pruning.methods`
    and is registered in :mod:`prunefl.pruning.methods.registry`.
    """

    #: whether :meth:`client_hook` may return new masks; the server link rejects replies whose masks differ from
    #: those sent unless it is true (a hostile client cannot change the mask of a method that never does)
    clients_change_masks: bool = False
    #: how clients accumulate importance in the rounds where :meth:`track_importance` is true (spec §3.2)
    importance_mode: Literal["round_sum", "legacy_last_step"] = "round_sum"

    def before_fl(self, view: SetupView) -> BeforeFL:
        """Prepare the global model before round 0; FedAvg trains the dense initialisation as it is."""
        return BeforeFL()

    def before_fl_client(self, view: SetupView) -> int | None:
        """The client whose own data :meth:`before_fl` trains on (PruneFL's initial pruning), or None.

        An engine whose server holds no client data (Flower) runs :meth:`before_fl` at that client's node and
        installs what it returns; None: ``before_fl`` runs where the server is.
        """
        return None

    def track_importance(self, round: int) -> bool:
        """Whether clients accumulate importance in ``round`` (they then compute dense weight gradients)."""
        return False

    def upload_importance(self, round: int) -> bool:
        """Whether clients upload (and reset) their accumulated importance in ``round``."""
        return False

    def client_hook(self, view: ClientView) -> ClientHookResult | None:
        """Change a client's masks or add uploads after its local steps; None changes nothing."""
        return None

    def after_aggregate(self, view: AggregateView) -> Decision | None:
        """Decide new masks (or state) after aggregation; None keeps them."""
        return None

    def observe(self, row: Mapping[str, Any]) -> None:
        """See a finished metrics row (e.g. to start a schedule on an accuracy trigger)."""

    def summary(self) -> dict[str, Any]:
        """Entries for ``summary.json`` describing what the method did (counts, settings it resolved)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything the method keeps across rounds, for a checkpoint (JSON-able values or tensors)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")
