"""In-process simulation engine: every client trains in turn on one model workspace; a simulated clock keeps time.

The engine only moves messages and keeps time; the server step, client step and pruning decisions are the
engine-agnostic core (:mod:`prunefl.fl`, :mod:`prunefl.pruning`).
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
from prunefl.fl.batches import BatchStream
from prunefl.fl.client import ClientState, SwapCache, client_step, load_model_state_
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.fl.evaluate import evaluate
from prunefl.fl.server import RoundUpdate, Server
from prunefl.fl.transport import Transport
from prunefl.pruning.methods.base import AggregateView, ClientView, Decision, Method
from prunefl.seeds import AUGMENT_STREAM, BATCH_STREAM, CLIENT_HOOK_STREAM, rng
from prunefl.sparse.masks import apply_masks_, density, kept_counts, layer_densities
from prunefl.timing.clock import DeviceProfile, charge_client

__all__ = ["SimulationSetup", "SimulationEngine"]

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
    transport: Transport = field(default_factory=Transport)
    # break-even density per nn.Linear prunable weight, (without, with) dense weight gradients; empty: masked dense
    break_even: dict[str, tuple[float, float]] = field(default_factory=dict)
    momentum: float = 0.0  # clients' SGD momentum (fl.momentum); > 0 trains every layer masked dense


class SimulationEngine:
    """Runs FL rounds in-process and emits one metrics row per round."""

    def __init__(self, setup: SimulationSetup) -> None:
        self.setup = setup
        self.clients = [
            ClientState(
                client_id=i,
                batches=BatchStream(part, rng(setup.seed, BATCH_STREAM, i)),
                augment_generator=torch.Generator().manual_seed(
                    int(np.random.SeedSequence(setup.seed, spawn_key=(AUGMENT_STREAM, i)).generate_state(1)[0])
                ),
                momentum=setup.momentum,
            )
            for i, part in enumerate(setup.partitions)
        ]
        if setup.momentum > 0 and setup.break_even:
            logger.warning("fl.momentum=%g: every layer trains masked dense; the CSR kernels (fl.kernels=auto) stay "
                           "unused, since momentum buffers need the dense parameter shapes", setup.momentum)
        self.sim_clock_s = setup.start_sim_clock_s
        self.swap_cache = SwapCache()

    def run(self, on_round: Callable[[dict[str, Any]], None], start_wall: float | None = None) -> None:
        """Run all rounds, calling ``on_round(row)`` after each with its metrics row."""
        s = self.setup
        start_wall = time.perf_counter() if start_wall is None else start_wall
        for r in range(s.rounds):
            row = self.run_round(r)
            row[K.K_WALL_S] = time.perf_counter() - start_wall
            on_round(row)

    def run_round(self, r: int) -> dict[str, Any]:
        """One FL round: configure, train each selected client, aggregate, apply the method's decision, evaluate."""
        s = self.setup
        server, method = s.server, s.method
        upload = method.upload_importance(r)
        track = method.track_importance(r) or upload
        clients, ins = server.configure_train(r, upload_importance=upload, track_importance=track)
        kept = kept_counts(server.masks)
        previous_state = server.state  # replaced, never modified, by aggregation
        delivery = s.transport.deliver(ins, clients, server.mask_version)
        sparse = self.sparse_layers(ins.importance_mode != "off")
        replies, charges, bytes_up, extras = [], [], [], []
        for cid in clients:
            client_ins = delivery.ins_by_client[cid]
            res = client_step(s.model, client_ins, self.clients[cid], s.dataset, s.loss_fn,
                              sparse_layers=sparse, swap_cache=self.swap_cache, mask_version=server.mask_version)
            extra = self._client_hook(r, cid, client_ins, res)
            received, n_up = s.transport.collect(res, ins.masks)
            n_up += sum(int(v.nbytes) for v in (extra or {}).values())  # extra uploads travel beside the weights
            replies.append(received)
            extras.append(extra)
            bytes_up.append(n_up)
            charges.append(
                charge_client(s.devices[cid], kept, ins.local_steps, delivery.bytes_by_client[cid], n_up,
                              res.compute_wall_s, s.clock, s.comm)
            )
        update = server.aggregate_train(ins, replies)
        round_sim_s = max(c.total_s for c in charges)  # the slowest selected client sets the round
        self.sim_clock_s += round_sim_s
        row: dict[str, Any] = {
            K.K_ROUND: r,
            K.K_SPARSE_LAYERS: sorted(sparse),
            K.K_STAGE: "fl",
            K.K_ROUND_SIM_S: round_sim_s,
            K.K_TRAIN_LOSS: update.train_loss,
            K.K_LR: ins.lr,
            K.K_CLIENTS: clients,
            K.K_CLIENT_SIM_S: [c.total_s for c in charges],
            K.K_COMPUTE_WALL_S: [res.compute_wall_s for res in replies],
            # both clocks every round, whichever one is charged (timing.clock)
            K.K_MODEL_COMPUTE_S: [
                s.devices[c].time_model.compute_time_s(kept, ins.local_steps) * s.devices[c].compute_scale
                for c in clients
            ],
            K.K_BYTES_DOWN: sum(delivery.bytes_by_client.values()),
            K.K_BYTES_UP: sum(bytes_up),
        }
        view = AggregateView(
            round=r,
            state=server.state,
            previous_state=previous_state,
            masks=server.masks,
            importance=update.importance,
            clients=clients,
            devices=s.devices,
            client_masks=[
                None if res.masks is None else {k: torch.from_numpy(v) for k, v in res.masks.items()} for res in replies
            ],
            extras=extras,
            lr=ins.lr,
            evaluate_loss=self._evaluate_loss,
        )
        decision = method.after_aggregate(view)
        self._apply(decision)
        row[K.K_SIM_CLOCK_S] = self.sim_clock_s
        row[K.K_DENSITY] = density(server.masks)
        row[K.K_LAYER_DENSITY] = layer_densities(server.masks)
        row[K.K_RECONFIG] = decision.record if decision is not None else None
        row[K.K_TEST_ACCURACY] = None
        row[K.K_TEST_LOSS] = None
        if (r + 1) % s.eval_every == 0 or r == s.rounds - 1:
            acc, loss = self.evaluate_global()
            row[K.K_TEST_ACCURACY] = acc
            row[K.K_TEST_LOSS] = loss
        method.observe(row)
        logger.info(
            "round %d sim_clock_s=%.1f bytes_up=%d density=%.4f accuracy=%s",
            r, self.sim_clock_s, row[K.K_BYTES_UP], row[K.K_DENSITY], row[K.K_TEST_ACCURACY],
        )
        return row

    def _client_hook(self, r: int, cid: int, ins: TrainIns, res: TrainRes) -> dict[str, np.ndarray] | None:
        """Run the method's client hook on the trained workspace; fold new masks into the reply; return extras."""
        s = self.setup
        client = self.clients[cid]
        view = ClientView(
            round=r,
            client_id=cid,
            model=s.model,
            masks={k: torch.from_numpy(np.asarray(v, dtype=np.bool_)) for k, v in ins.masks.items()},
            importance=client.importance or None,
            dataset=s.dataset,
            partition=s.partitions[cid],
            rng=rng(s.seed, CLIENT_HOOK_STREAM, cid, r),
        )
        hook = s.method.client_hook(view)
        if hook is None:
            return None
        if hook.consumed_importance:
            client.importance = {}
        if hook.masks is not None:
            own = {k: v.numpy() for k, v in hook.masks.items()}
            res.masks = own
            for k, m in own.items():  # newly pruned weights leave, regrown ones start from 0
                res.state[k] = res.state[k] * m
        return hook.extras

    def _apply(self, decision: Decision | None) -> None:
        """Install a method's decision on the server: state first, since the masks setter may zero pruned values."""
        if decision is None:
            return
        server = self.setup.server
        if decision.state is not None:
            server.state = decision.state
        if decision.masks is not None:
            server.masks = decision.masks

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
        masks = self.setup.server.masks
        chosen = set()
        for name, (without, with_dw) in self.setup.break_even.items():
            threshold = with_dw if dense_weight_grad else without
            if threshold > 0 and float(masks[name].float().mean()) <= threshold:
                chosen.add(name)
        return chosen

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
