"""In-process simulation engine: every client trains in turn on one model workspace; a simulated clock keeps time.

The engine only picks the clients, moves messages and keeps time; what a round does (instruction, client step,
the method's hooks, validation, aggregation, the metrics row) is the engine-agnostic round protocol
(:mod:`prunefl.fl.round`), which the Flower engine drives too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from prunefl.data.dataset import ArrayDataset
from prunefl import metrics as K
from prunefl.errors import TooFewRepliesError
from prunefl.faults import fault_point
from prunefl.fl.batches import BatchStream
from prunefl.fl.client import ClientState, choose_sparse_layers, load_model_state_
from prunefl.fl.evaluate import evaluate
from prunefl.fl.links import ClientLink, ServerLink, TrainReply, WireSettings
from prunefl.fl.round import ClientWorkspace, Replies, RoundPlan, RoundProtocol, client_round
from prunefl.fl.selection import select_clients
from prunefl.fl.server import Server
from prunefl.pruning.methods.base import BeforeFL, Method, SetupView
from prunefl.seeds import AUGMENT_STREAM, BATCH_STREAM, rng
from prunefl.sparse.masks import apply_masks_
from prunefl.timing.clock import DeviceProfile, charge_client

__all__ = ["SimulationSetup", "SimulationEngine", "new_client_state"]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SimulationSetup:
    """Everything one simulated run needs, already built and validated by the runner."""

    dataset: ArrayDataset
    partitions: list[np.ndarray]
    model: nn.Module
    server: Server
    devices: list[DeviceProfile]
    loss_fn: LossFn
    rounds: int
    eval_every: int
    eval_indices: torch.Tensor | None = None
    clock: Literal["model", "measured"] = "model"
    comm: Literal["per_weight", "link"] = "per_weight"
    seed: int = 0
    method: Method = field(default_factory=Method)  # the base class is FedAvg
    start_sim_clock_s: float = 0.0
    wire: WireSettings = field(default_factory=WireSettings)
    # break-even density per nn.Linear prunable weight, (without, with) dense weight gradients; empty: masked dense
    break_even: dict[str, tuple[float, float]] = field(default_factory=dict)
    momentum: float = 0.0  # clients' SGD momentum (fl.momentum); > 0 trains every layer masked dense


class SimulationEngine:
    """Runs FL rounds in-process over the round protocol and emits one metrics row per round."""

    @property
    def holds_client_states(self) -> bool:
        """Whether :attr:`clients` are the states the clients train with, so a checkpoint holds them.

        True for in-process delivery; an engine that overrides :meth:`deliver` sends the round to clients that
        keep their own state (a Flower node keeps it in ``context.state``), so its checkpoint cannot hold it.
        Such an engine may override this property.
        """
        return type(self).deliver is SimulationEngine.deliver

    def __init__(self, setup: SimulationSetup) -> None:
        self.setup = setup
        self.clients = [
            new_client_state(setup.seed, i, part, setup.momentum, setup.wire) for i, part in enumerate(setup.partitions)
        ]
        if setup.momentum > 0 and setup.break_even:
            logger.warning("fl.momentum=%g: every layer trains masked dense; the CSR kernels (fl.kernels=auto) stay "
                           "unused, since momentum buffers need the dense parameter shapes", setup.momentum)
        self.sim_clock_s = setup.start_sim_clock_s
        self.restored = False  # set by prunefl.experiments.state.restore_run_state: clients continue a checkpoint
        # one workspace for every client and the server: clients train in turn on the same model
        self.workspace = ClientWorkspace(setup.model, setup.dataset, setup.loss_fn, setup.seed)
        link = ServerLink(setup.wire, own_masks=setup.method.clients_change_masks)  # others' replies keep the masks sent
        self.protocol = RoundProtocol(
            setup.server, setup.method, link, setup.devices, evaluate_loss=self._evaluate_loss,
            partition_sizes={i: int(len(part)) for i, part in enumerate(setup.partitions)},
        )

    def prepare(self, view: SetupView) -> BeforeFL:
        """Run the method's ``before_fl`` and install its decision: state, then masks, and the clock it charged.

        Modifies the server and the clock. Returns the decision, whose summary and initial state the runner keeps.
        """
        before = self.run_before_fl(view)
        server = self.setup.server
        if before.state is not None:
            server.state = before.state
        if before.masks is not None:
            server.masks = before.masks  # state first: the masks setter zeroes pruned coordinates if "zero"
        self.setup.start_sim_clock_s = self.sim_clock_s = before.sim_clock_s
        return before

    def sync_clients(self) -> None:
        """Bring :attr:`clients` up to date before a checkpoint collects them: here they are, already.

        The Flower engine overrides it: there the clients' states live on the nodes.
        """

    def run_before_fl(self, view: SetupView) -> BeforeFL:
        """Where ``before_fl`` runs: here, in-process (this engine holds every client's data). Flower overrides it."""
        return self.setup.method.before_fl(view)

    def run(
        self,
        on_round: Callable[[dict[str, Any]], None],
        start_wall: float | None = None,
        start_round: int = 0,
        checkpoint_every: int = 0,
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> None:
        """Run rounds ``start_round`` … ``rounds − 1``, calling ``on_round(row)`` after each with its metrics row.

        Parameters
        ----------
        on_round : callable
            Called with each finished round's metrics row.
        start_wall : float or None
            ``time.perf_counter()`` at the run's start, from which rows' ``wall-s`` count (default: None: now).
        start_round : int
            The first round to run: a run resumed from a checkpoint of ``done`` rounds passes ``done``
            (default: 0).
        checkpoint_every : int
            Call ``on_checkpoint`` after every this many rounds; 0: only after the last (default: 0).
        on_checkpoint : callable or None
            ``on_checkpoint(done)``, called between rounds with the number of rounds done, and once after the
            last round; the engine is then in a state a checkpoint can hold (:mod:`prunefl.experiments.state`)
            (default: None).
        """
        s = self.setup
        start_wall = time.perf_counter() if start_wall is None else start_wall
        for r in range(start_round, s.rounds):
            row = self.run_round(r)
            row[K.K_WALL_S] = time.perf_counter() - start_wall
            on_round(row)
            fault_point("kill-after-round", r)  # test hook (prunefl.faults); nothing unless a kill test sets it
            done = r + 1
            if on_checkpoint is not None and checkpoint_every > 0 and done % checkpoint_every == 0 and done < s.rounds:
                on_checkpoint(done)
        if on_checkpoint is not None:
            on_checkpoint(max(start_round, s.rounds))

    def run_round(self, r: int) -> dict[str, Any]:
        """One FL round: pick the clients, run the round protocol in-process, charge the clock, evaluate."""
        s = self.setup
        settings = s.server.settings
        participants = select_clients(settings.num_clients, settings.clients_per_round, settings.seed, r)
        for attempt in range(settings.round_retries + 1):  # fl.round_retries: try a round without enough replies again
            plan = self.protocol.configure_train(r, participants)
            sparse = self.sparse_layers(plan.ins.importance_mode != "off")
            replies = self.deliver(plan, sparse)
            fault_point("kill-inside-round", r)  # test hook (prunefl.faults): clients trained, nothing aggregated
            try:
                result = self.protocol.aggregate_train(plan, replies)
                break
            except TooFewRepliesError as error:  # nothing changed on the server
                if attempt == settings.round_retries:
                    raise
                logger.warning("round %d, try %d of %d: %s; trying again", r, attempt + 1,
                               settings.round_retries + 1, error)
        local_steps = plan.ins.local_steps
        charges = [
            charge_client(s.devices[cid], plan.kept, local_steps, down, up, wall_s, s.clock, s.comm)
            for cid, down, up, wall_s in zip(result.clients, result.bytes_down, result.bytes_up, result.compute_wall_s)
        ]
        round_sim_s = max(c.total_s for c in charges)  # the slowest selected client sets the round
        self.sim_clock_s += round_sim_s
        row = result.row
        row[K.K_RETRIES] = attempt
        row[K.K_SPARSE_LAYERS] = sorted(sparse)
        row[K.K_ROUND_SIM_S] = round_sim_s
        row[K.K_CLIENT_SIM_S] = [c.total_s for c in charges]
        # both clocks every round, whichever one is charged (timing.clock)
        row[K.K_MODEL_COMPUTE_S] = [
            s.devices[c].time_model.compute_time_s(plan.kept, local_steps) * s.devices[c].compute_scale
            for c in result.clients
        ]
        row[K.K_SIM_CLOCK_S] = self.sim_clock_s
        row[K.K_TEST_ACCURACY] = None
        row[K.K_TEST_LOSS] = None
        if (r + 1) % s.eval_every == 0 or r == s.rounds - 1:
            acc, loss = self.evaluate_global()
            row[K.K_TEST_ACCURACY] = acc
            row[K.K_TEST_LOSS] = loss
        self.protocol.observe(row)
        logger.info(
            "round %d sim_clock_s=%.1f bytes_up=%d density=%.4f accuracy=%s",
            r, self.sim_clock_s, row[K.K_BYTES_UP], row[K.K_DENSITY], row[K.K_TEST_ACCURACY],
        )
        return row

    def deliver(self, plan: RoundPlan, sparse_layers: set[str]) -> Replies:
        """Deliver the round's messages and collect the replies: in-process, each client in turn.

        Another engine overrides this (the Flower engine sends them to its nodes); the rest of the round is shared.
        An override returns what arrived, as a mapping or as (participant, reply) pairs in arrival order (so that
        a duplicate is seen); the round protocol rejects bad replies and lists the participants without one.
        """
        s = self.setup
        return {
            c: client_round(plan.messages[c], self.clients[c], self.workspace, s.method, s.partitions[c], sparse_layers)
            for c in plan.participants
        }

    def _evaluate_loss(
        self, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> float:
        """Loss of ``state`` under ``masks`` on samples ``x``, ``y``, on the engine's workspace."""
        s = self.setup
        load_model_state_(s.model, {k: v.numpy() for k, v in state.items()}, {k: v.numpy() for k, v in masks.items()})
        apply_masks_(s.model)
        s.model.eval()
        with torch.no_grad():
            return float(s.loss_fn(s.model(x), y))

    def sparse_layers(self, dense_weight_grad: bool) -> set[str]:
        """Layers whose density is at or below their measured break-even this round (CSR kernel wins there)."""
        if self.setup.momentum > 0:
            return set()  # clients with momentum train masked dense (prunefl.fl.client.client_step)
        return choose_sparse_layers(self.setup.server.masks, self.setup.break_even, dense_weight_grad)

    def evaluate_global(self, full_test_set: bool = False) -> tuple[float, float]:
        """Accuracy and loss of the current global model on the evaluation subset (or the full test set)."""
        s = self.setup
        load_model_state_(
            s.model,
            {k: v.numpy() for k, v in s.server.state.items()},
            {k: v.numpy() for k, v in s.server.masks.items()},
        )
        apply_masks_(s.model)
        return evaluate(s.model, s.dataset, s.loss_fn, None if full_test_set else s.eval_indices)


def new_client_state(
    seed: int, client_id: int, partition: np.ndarray, momentum: float, wire: WireSettings
) -> ClientState:
    """A client's state at the start of a run: its batch stream and augmentation generator drawn from the run seed.

    Every engine starts client ``client_id`` from this state (a Flower node builds it for the partition its
    ``--node-config`` names), so the same seed gives the same batches everywhere.

    Examples
    --------
    >>> a = new_client_state(0, 1, np.arange(6), 0.0, WireSettings())
    >>> b = new_client_state(0, 1, np.arange(6), 0.0, WireSettings())
    >>> a.batches.next(4).tolist() == b.batches.next(4).tolist()
    True
    """
    return ClientState(
        client_id=client_id,
        batches=BatchStream(partition, rng(seed, BATCH_STREAM, client_id)),
        augment_generator=torch.Generator().manual_seed(
            int(np.random.SeedSequence(seed, spawn_key=(AUGMENT_STREAM, client_id)).generate_state(1)[0])
        ),
        momentum=momentum,
        link=ClientLink(wire),
    )
