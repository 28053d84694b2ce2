"""PruneFL (spec §3): initial pruning at a selected client, then adaptive reconfiguration during FL; and its ablations.

``prunefl`` runs both stages; ``prunefl-no-ip`` reconfigures from the dense model; ``prunefl-ip-only`` keeps the
mask initial pruning found. The decisions themselves are :func:`prunefl.pruning.initial.initial_pruning` and
:class:`prunefl.pruning.adaptive.AdaptivePruning`; this file connects them to the method protocol.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from prunefl import metrics as K
from prunefl.data.dataset import ArrayDataset
from prunefl.errors import check_setting as _check
from prunefl.pruning.adaptive import AdaptivePruning, AdaptiveSettings
from prunefl.pruning.initial import InitialPruningSettings, IPRound, initial_pruning
from prunefl.pruning.methods.base import (
    AggregateView,
    BeforeFL,
    Decision,
    Method,
    MethodContext,
    ReferenceRun,
    SetupView,
)
from prunefl.pruning.methods.registry import MethodSpec
from prunefl.seeds import IP_STREAM, rng
from prunefl.sparse.masks import density

__all__ = ["PruneFLSettings", "PruneFL", "choose_ip_client", "ip_batches", "SPECS"]


@dataclass(frozen=True)
class PruneFLSettings:
    """PruneFL's settings (config table ``[pruning]``, spec §3). Defaults are the official ones.

    Attributes
    ----------
    importance : {"round_sum", "legacy_last_step"}
        ``round_sum``: N_c·(Σ_k g_k)² per client and round; ``legacy_last_step``: the official code's aliasing
        artefact 4·N_c·g_K² under PyTorch < 2.0 (spec §3.2, D4) (default: "round_sum").
    reconfig_interval : int
        FL rounds between reconfigurations, ΔR, in [1, 10^6] (``fl.rounds``' bound) (default: 50).
    reconfig_start : {"round", "accuracy"}
        First FL reconfiguration at ``first_reconfig_round`` (official), or at the first interval boundary
        after the test accuracy reached ``reconfig_start_accuracy`` (default: "round").
    first_reconfig_round : int
        Round of the first reconfiguration for ``reconfig_start = "round"``, in [0, 10^6] (default: 50).
    reconfig_start_accuracy : float
        Test accuracy that starts reconfiguration for ``reconfig_start = "accuracy"`` (default: 0.5).
    max_decrease : float
        δ0, the largest fraction of a layer's in-use weights one reconfiguration may remove (default: 0.3).
    max_decrease_half_life : float
        Rounds over which δ halves: δ(r) = δ0·0.5^(r/half-life) (spec §3.5) (default: 10000.0).
    max_density, target_density : float
        Density cap D(r) annealed linearly from ``max_density`` at round 0 to ``target_density`` at the last
        round; it limits additions only (spec §3.10). 1.0 and 1.0 mean no cap (default: 1.0, 1.0).
    legacy_cap_off_by_one : bool
        Allow ⌊D·|J|⌋ + 1 weights, as the official code does (spec D11) (default: False).
    importance_window : int
        0: clients accumulate importance every round (the paper). w > 0: only in the w rounds up to each
        reconfiguration, so the other rounds need no dense weight gradients (beyond the paper); at most 10^6
        (default: 0).
    ip_batches : int
        Initial pruning uses the selected client's first this many minibatches, fixed; at most 1000, since all
        of them are prepared once and held in memory (default: 10).
    ip_lr : float
        Learning rate of initial pruning; 0 means ``fl.lr`` (the official INIT_LR) (default: 0.0).
    ip_start_factor : float
        Initial pruning starts reconfiguring once its training accuracy on its batches reaches
        ip_start_factor / #classes (ADJ_THR_ACC = 1.5/#classes) (default: 1.5).
    ip_check_every : int
        IP rounds between checks of that accuracy, in [1, 10^6] (default: 10).
    ip_interval : int
        IP rounds between IP reconfigurations, in [1, 10^6] (default: 50).
    ip_max_rounds : int
        Upper bound on IP rounds, in [1, 10^6] (default: 1000).
    ip_density_tolerance : float
        A reconfiguration is "stable" when |d/d_prev − 1| is at most this (default: 0.1).
    ip_stable_reconfigs : int
        IP stops after this many consecutive stable reconfigurations, in [1, 10^6] (default: 5).
    ip_max_decrease : float
        δ during initial pruning, constant (default: 0.3).
    ip_client_choice : {"fixed", "balanced"}
        How the selected client is chosen: ``fixed`` takes ``ip_client`` (the official client 0); ``balanced``
        takes, for each seed's partition, the client holding the most classes and, among those, the one whose
        labels have the highest entropy (most evenly held), ties to the lower id — so initial pruning sees every
        class wherever the split puts them (default: "fixed").
    ip_client : int
        The selected client for ``ip_client_choice = "fixed"``, in [0, 10^5) (``data.num_clients``' bound)
        (default: 0).
    ip_node : {"client", "server"}
        Which device's speed initial pruning is charged at: the selected client's own profile, or a server
        ``ip_server_speedup`` times faster (the official prototype ran IP on the server) (default: "client").
    ip_server_speedup : float
        How many times faster than the selected client's device the IP server computes (default: 1.0).
    charge_ip_time : bool
        Charge the IP client's compute to the simulated clock; the official simulation charged 0 s (spec D2)
        (default: True).
    """

    importance: Literal["round_sum", "legacy_last_step"] = "round_sum"
    reconfig_interval: int = 50
    reconfig_start: Literal["round", "accuracy"] = "round"
    first_reconfig_round: int = 50
    reconfig_start_accuracy: float = 0.5
    max_decrease: float = 0.3
    max_decrease_half_life: float = 10000.0
    max_density: float = 1.0
    target_density: float = 1.0
    legacy_cap_off_by_one: bool = False
    importance_window: int = 0
    ip_batches: int = 10
    ip_lr: float = 0.0
    ip_start_factor: float = 1.5
    ip_check_every: int = 10
    ip_interval: int = 50
    ip_max_rounds: int = 1000
    ip_density_tolerance: float = 0.1
    ip_stable_reconfigs: int = 5
    ip_max_decrease: float = 0.3
    ip_client_choice: Literal["fixed", "balanced"] = "fixed"
    ip_client: int = 0
    ip_node: Literal["client", "server"] = "client"
    ip_server_speedup: float = 1.0
    charge_ip_time: bool = True

    def __post_init__(self) -> None:
        _check(1 <= self.reconfig_interval <= 10**6, "pruning.reconfig_interval", self.reconfig_interval,
               "must be in [1, 10^6]")
        _check(0 <= self.first_reconfig_round <= 10**6, "pruning.first_reconfig_round", self.first_reconfig_round,
               "must be in [0, 10^6]")
        _check(0 < self.reconfig_start_accuracy <= 1, "pruning.reconfig_start_accuracy", self.reconfig_start_accuracy,
               "must be in (0, 1]")
        _check(0 <= self.max_decrease <= 1, "pruning.max_decrease", self.max_decrease, "must be in [0, 1]")
        _check(self.max_decrease_half_life > 0, "pruning.max_decrease_half_life", self.max_decrease_half_life, "must be > 0")
        _check(0 < self.max_density <= 1, "pruning.max_density", self.max_density, "must be in (0, 1]")
        _check(0 < self.target_density <= 1, "pruning.target_density", self.target_density, "must be in (0, 1]")
        _check(self.target_density <= self.max_density, "pruning.target_density", self.target_density,
               f"must be <= pruning.max_density ({self.max_density})")
        _check(0 <= self.importance_window <= 10**6, "pruning.importance_window", self.importance_window,
               "must be in [0, 10^6] (0 = every round)")
        _check(1 <= self.ip_batches <= 1000, "pruning.ip_batches", self.ip_batches, "must be in [1, 1000]")
        _check(self.ip_lr >= 0, "pruning.ip_lr", self.ip_lr, "must be >= 0 (0 = fl.lr)")
        _check(self.ip_start_factor >= 0, "pruning.ip_start_factor", self.ip_start_factor, "must be >= 0")
        _check(1 <= self.ip_check_every <= 10**6, "pruning.ip_check_every", self.ip_check_every, "must be in [1, 10^6]")
        _check(1 <= self.ip_interval <= 10**6, "pruning.ip_interval", self.ip_interval, "must be in [1, 10^6]")
        _check(1 <= self.ip_max_rounds <= 10**6, "pruning.ip_max_rounds", self.ip_max_rounds, "must be in [1, 10^6]")
        _check(self.ip_density_tolerance >= 0, "pruning.ip_density_tolerance", self.ip_density_tolerance, "must be >= 0")
        _check(1 <= self.ip_stable_reconfigs <= 10**6, "pruning.ip_stable_reconfigs", self.ip_stable_reconfigs,
               "must be in [1, 10^6]")
        _check(0 <= self.ip_max_decrease <= 1, "pruning.ip_max_decrease", self.ip_max_decrease, "must be in [0, 1]")
        _check(0 <= self.ip_client < 100_000, "pruning.ip_client", self.ip_client, "must be in [0, 100000)")
        _check(self.ip_server_speedup > 0 and math.isfinite(self.ip_server_speedup), "pruning.ip_server_speedup",
               self.ip_server_speedup, "must be a finite number > 0")


class PruneFL(Method):
    """PruneFL: optional initial pruning before FL, optional adaptive reconfiguration during FL.

    Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge Devices", IEEE TNNLS 2022
    (arXiv:1909.12326).

    Parameters
    ----------
    settings : PruneFLSettings
        The ``[pruning]`` table.
    context : MethodContext
        Run-wide settings.
    initial_pruning : bool
        Run initial pruning at the selected client before FL (default: True).
    adaptive : bool
        Reconfigure during FL (default: True).
    """

    def __init__(
        self, settings: PruneFLSettings, context: MethodContext, initial_pruning: bool = True, adaptive: bool = True
    ) -> None:
        self.settings = settings
        self.context = context
        self.initial_pruning = initial_pruning
        self.importance_mode = settings.importance
        self.adaptive = AdaptivePruning(_adaptive_settings(settings, context)) if adaptive else None

    def before_fl(self, view: SetupView) -> BeforeFL:
        """Run initial pruning at the selected client and install its weights and masks (spec §3.7)."""
        if not self.initial_pruning:
            return BeforeFL()
        return _run_initial_pruning(self.settings, self.context, view)

    def before_fl_client(self, view: SetupView) -> int | None:
        """The selected client, where initial pruning runs (``ip_node = "client"``; at the server otherwise)."""
        if not self.initial_pruning or self.settings.ip_node != "client":
            return None
        return choose_ip_client(self.settings, view.dataset.y_train.numpy(), view.partitions)

    def track_importance(self, round: int) -> bool:
        return self.adaptive is not None and self.adaptive.track_importance(round)

    def upload_importance(self, round: int) -> bool:
        return self.adaptive is not None and self.adaptive.upload_importance(round)

    def after_aggregate(self, view: AggregateView) -> Decision | None:
        """Reconfigure in reconfiguration rounds, on the freshly aggregated weights (spec §3.1)."""
        return self.adaptive.after_aggregate(view) if self.adaptive is not None else None

    def observe(self, row: Mapping[str, Any]) -> None:
        if self.adaptive is not None:
            self.adaptive.observe(row)

    def summary(self) -> dict[str, Any]:
        return {"reconfigurations": self.adaptive.n_reconfigurations} if self.adaptive is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return self.adaptive.state_dict() if self.adaptive is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.adaptive is not None:
            self.adaptive.load_state_dict(state)
        else:
            super().load_state_dict(state)


def choose_ip_client(settings: PruneFLSettings, labels: np.ndarray, partitions: Sequence[np.ndarray]) -> int:
    """The client that runs initial pruning: ``ip_client``, or the one with the most classes, then the most even.

    ``labels`` are the training labels, shape ``(n_train,)``; ``partitions`` each client's sample indices.

    >>> s = PruneFLSettings(ip_client_choice="balanced")
    >>> labels = np.array([0, 0, 1, 1, 2, 3, 0, 1, 2, 2, 2, 2])
    >>> choose_ip_client(s, labels, [np.array([0, 2]), np.array([4, 5, 6, 7]), np.array([6, 7, 8, 9, 10, 11])])
    1
    """
    if settings.ip_client_choice == "fixed":
        return settings.ip_client
    n_classes = int(labels.max()) + 1 if labels.size else 1
    counts = np.stack([np.bincount(labels[p], minlength=n_classes) for p in partitions]).astype(np.float64)
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)  # (n_clients, n_classes)
    entropy = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=1)
    held = (counts > 0).sum(axis=1)
    # lexicographic: classes held first (entropy < log(#classes) + 1 never outweighs one more class)
    key = held * (np.log(n_classes) + 1.0) + np.round(entropy, 12)
    return int(np.argmax(key))  # argmax takes the first (lowest id) of equal keys


def ip_batches(
    dataset: ArrayDataset, own: np.ndarray, n_batches: int, batch_size: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The selected client's fixed IP minibatches: drawn once from a seeded shuffle of its own data (spec §3.7)."""
    stream = rng(seed, IP_STREAM)
    order = stream.permutation(own)
    order = np.resize(order, n_batches * batch_size)  # cycles a partition smaller than the IP data set
    gen = torch.Generator().manual_seed(int(stream.integers(2**31)))
    out = []
    for i in range(n_batches):  # a handful of batches, prepared once
        idx = torch.from_numpy(order[i * batch_size : (i + 1) * batch_size])
        out.append((dataset.prepare(dataset.x_train[idx], train=True, generator=gen), dataset.y_train[idx]))
    return out


def _run_initial_pruning(settings: PruneFLSettings, context: MethodContext, view: SetupView) -> BeforeFL:
    p = settings
    client = choose_ip_client(p, view.dataset.y_train.numpy(), view.partitions)
    device = view.devices[client]
    speedup = p.ip_server_speedup if p.ip_node == "server" else 1.0
    ip_settings = InitialPruningSettings(
        lr=p.ip_lr or context.lr,
        start_accuracy=p.ip_start_factor / view.dataset.num_classes,
        local_steps=context.local_steps,
        check_every=p.ip_check_every,
        interval=p.ip_interval,
        max_rounds=p.ip_max_rounds,
        density_tolerance=p.ip_density_tolerance,
        stable_reconfigs=p.ip_stable_reconfigs,
        max_decrease=p.ip_max_decrease,
        compute_scale=device.compute_scale / speedup,
    )
    clock = [0.0]

    def on_ip_round(ip: IPRound) -> None:
        charged = ip.compute_s if p.charge_ip_time else 0.0
        clock[0] += charged
        view.record({
            K.K_ROUND: ip.round,
            K.K_STAGE: K.STAGE_IP,
            K.K_ROUND_SIM_S: charged,
            K.K_SIM_CLOCK_S: clock[0],
            K.K_WALL_S: time.perf_counter() - view.start_wall,
            K.K_TRAIN_LOSS: ip.train_loss,
            K.K_TRAIN_ACCURACY: ip.train_accuracy,
            K.K_TEST_ACCURACY: None,
            K.K_TEST_LOSS: None,
            K.K_DENSITY: ip.density,
            K.K_LAYER_DENSITY: ip.layer_density,
            K.K_BYTES_UP: 0,
            K.K_BYTES_DOWN: 0,
            K.K_LR: ip_settings.lr,
            K.K_CLIENTS: [client],
            K.K_RECONFIG: ip.reconfig,
        })

    batches = ip_batches(view.dataset, view.partitions[client], p.ip_batches, context.batch_size, context.seed)
    result = initial_pruning(view.model, batches, view.loss_fn, device.time_model, ip_settings, on_ip_round)
    return BeforeFL(
        state=result.state,
        masks=result.masks,
        sim_clock_s=clock[0],
        summary={K.K_IP: {
            K.K_ROUNDS: result.rounds,
            K.K_IP_STARTED_AT: result.started_at,
            K.K_IP_STOP_REASON: result.stop_reason,
            "reconfigurations": len(result.reconfigurations),
            K.K_FINAL_DENSITY: density(result.masks),
            K.K_SIM_CLOCK_S: clock[0],  # what the clock was charged
            K.K_IP_COMPUTE_S: result.sim_compute_s,  # what IP cost the node that ran it, charged or not
            K.K_IP_CHARGED: p.charge_ip_time,
            K.K_IP_CLIENT: client,
            K.K_IP_NODE: p.ip_node,
        }},
    )


def _adaptive_settings(p: PruneFLSettings, context: MethodContext) -> AdaptiveSettings:
    return AdaptiveSettings(
        total_rounds=context.rounds,
        local_steps=context.local_steps,
        reconfig_interval=p.reconfig_interval,
        reconfig_start=p.reconfig_start,
        first_reconfig_round=p.first_reconfig_round,
        reconfig_start_accuracy=p.reconfig_start_accuracy,
        max_decrease=p.max_decrease,
        max_decrease_half_life=p.max_decrease_half_life,
        max_density=p.max_density,
        target_density=p.target_density,
        legacy_cap_off_by_one=p.legacy_cap_off_by_one,
        comm=context.comm,  # type: ignore[arg-type]
        importance_window=p.importance_window,
    )


def _factory(initial: bool, adaptive: bool):  # type: ignore[no-untyped-def]
    def build(settings: PruneFLSettings, context: MethodContext, reference: ReferenceRun | None) -> Method:
        return PruneFL(settings, context, initial_pruning=initial, adaptive=adaptive)

    return build


SPECS = [
    MethodSpec("prunefl", "PruneFL", _factory(True, True), "initial pruning at a selected client, then adaptive "
               "reconfiguration during FL (the paper's method)", section="pruning", colour="C1", initial_pruning=True),
    MethodSpec("prunefl-no-ip", "PruneFL (no IP)", _factory(False, True), "adaptive reconfiguration from the dense "
               "model, without initial pruning (ablation)", section="pruning", colour="C8"),
    MethodSpec("prunefl-ip-only", "PruneFL (IP only)", _factory(True, False), "initial pruning, then the mask stays "
               "fixed (ablation)", section="pruning", colour="C9", initial_pruning=True),
]
