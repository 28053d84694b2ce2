"""Masked, sample-weighted FedAvg aggregation (spec §3.8)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

__all__ = ["masked_aggregate", "sum_importance"]


def masked_aggregate(
    global_state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    client_states: Sequence[Mapping[str, np.ndarray]],
    num_examples: Sequence[int],
    regrow_init: Literal["stale", "zero"] = "stale",
) -> dict[str, torch.Tensor]:
    """Aggregate client states into a new global state.

    For every entry e (parameters and BatchNorm running statistics), with p_i = N_i / Σ N::

        base_e = w_e ⊙ m_e   if e is a prunable weight, else w_e
        w_e   ← w_e + Σ_i p_i (w_{i,e} − base_e)

    In-use coordinates become the client mean. At pruned coordinates clients hold 0, so the server keeps its
    stale value (``regrow_init="stale"``, official) or sets it to 0 (``"zero"``), which makes a later regrown
    weight restart from 0. ``num_batches_tracked`` counters are left untouched.

    Parameters
    ----------
    global_state : Mapping[str, torch.Tensor]
        Current server state, keyed like ``state_dict()`` (mask buffers excluded). Not modified.
    masks : Mapping[str, torch.Tensor]
        Bool mask per prunable weight (the mask the clients trained with).
    client_states : Sequence[Mapping[str, numpy.ndarray]]
        One trained state per client, same keys and shapes as ``global_state``.
    num_examples : Sequence[int]
        Samples each client processed; the weights N_i.
    regrow_init : {"stale", "zero"}
        What pruned coordinates hold afterwards (default: "stale").

    Returns
    -------
    dict[str, torch.Tensor]
        The new global state (fresh tensors).

    Examples
    --------
    >>> g = {"w": torch.tensor([5.0, 7.0])}
    >>> m = {"w": torch.tensor([True, False])}
    >>> c = [{"w": np.array([1.0, 0.0], np.float32)}, {"w": np.array([3.0, 0.0], np.float32)}]
    >>> masked_aggregate(g, m, c, [1, 1])["w"].tolist()
    [2.0, 7.0]
    >>> masked_aggregate(g, m, c, [1, 3], regrow_init="zero")["w"].tolist()
    [2.5, 0.0]
    """
    total = float(sum(num_examples))
    weights = torch.tensor([n / total for n in num_examples], dtype=torch.float64)
    out: dict[str, torch.Tensor] = {}
    for key, current in global_state.items():  # one pass per tensor (~10-60 of them), vectorised inside
        if key.endswith("num_batches_tracked") or not torch.is_floating_point(current):
            out[key] = current.clone()
            continue
        stacked = torch.stack([torch.from_numpy(np.asarray(s[key])) for s in client_states])  # (n_clients, *shape)
        mean = torch.tensordot(weights.to(stacked.dtype), stacked, dims=1)  # Σ_i p_i w_{i,e}
        mask = masks.get(key)
        if mask is None:
            out[key] = mean.to(current.dtype)
        elif regrow_init == "zero":
            out[key] = (mean * mask).to(current.dtype)
        else:
            # w + Σ p_i (w_i − w⊙m) = mean + w⊙(1−m): kept coordinates take the mean, pruned ones stay stale
            out[key] = torch.where(mask, mean.to(current.dtype), current)
    return out


def sum_importance(uploads: Sequence[Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Sum clients' importance uploads element-wise in float64, without normalisation (spec §3.2).

    >>> sum_importance([{"w": np.array([1.0])}, {"w": np.array([2.0])}])["w"].tolist()
    [3.0]
    """
    out: dict[str, torch.Tensor] = {}
    for upload in uploads:
        for key, value in upload.items():
            t = torch.from_numpy(np.asarray(value)).to(torch.float64)
            if key in out:
                out[key] += t
            else:
                out[key] = t.clone()
    return out
