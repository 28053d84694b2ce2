"""Typed messages between server and clients, and the message keys, defined once (metric keys: :mod:`prunefl.metrics`).

Both engines (in-process simulation and Flower) exchange exactly these dataclasses; the codec turns them
into bytes. Arrays are numpy so that nothing torch-specific crosses a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TrainIns", "TrainRes", "K_NUM_EXAMPLES"]

# --- message keys ---
K_NUM_EXAMPLES = "num-examples"


@dataclass
class TrainIns:
    """Server → client: the global state and what to do this round.

    Parameters
    ----------
    round : int
        FL round index (0-based).
    state : dict[str, numpy.ndarray]
        Full model state (parameters and buffers) keyed by ``state_dict()`` names. Pruned coordinates may hold
        stale server values; the client zeroes them (spec §3.8).
    masks : dict[str, numpy.ndarray]
        Boolean mask per prunable weight, keyed by parameter name.
    lr : float
        Learning rate for this round's local steps.
    local_steps : int
        Number of local SGD steps K.
    batch_size : int
        Minibatch size B.
    importance_mode : {"off", "round_sum", "legacy_last_step"}
        How the client accumulates importance this round (spec §3.2): ``round_sum`` adds N_c·(Σ_k g_k)² for every
        parameter, pruned weights included; ``legacy_last_step`` reproduces the official code's aliasing,
        4·N_c·g_K² (spec D4); ``off`` accumulates nothing (FedAvg).
    upload_importance : bool
        Whether the client returns (and then resets) its accumulated importance this round (reconfiguration
        round).
    """

    round: int
    state: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    lr: float
    local_steps: int
    batch_size: int
    importance_mode: str = "off"
    upload_importance: bool = False


@dataclass
class TrainRes:
    """Client → server: the locally trained state and what it cost.

    Parameters
    ----------
    client_id : int
        Which client trained.
    num_examples : int
        Samples processed this round (K·B); the aggregation weight.
    state : dict[str, numpy.ndarray]
        Trained state keyed like ``TrainIns.state``; pruned coordinates are exactly zero.
    train_loss : float
        Mean training loss over the local steps.
    compute_wall_s : float
        Measured wall seconds of the local steps on this machine.
    importance : dict[str, numpy.ndarray] or None
        Accumulated importance per parameter (float32, same shapes), only in reconfiguration rounds.
    masks : dict[str, numpy.ndarray] or None
        The client's own new masks, when a method's client hook changed them (FedDST); None: the server's.
        Pruned coordinates of ``state`` are zero under these masks.
    """

    client_id: int
    num_examples: int
    state: dict[str, np.ndarray]
    train_loss: float
    compute_wall_s: float
    importance: dict[str, np.ndarray] | None = field(default=None)
    masks: dict[str, np.ndarray] | None = field(default=None)
