"""Masked aggregation of client states: sample-weighted FedAvg (spec §3.8), or a robust coordinate-wise rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

__all__ = ["AGGREGATIONS", "masked_aggregate", "robust_aggregate", "client_masked_aggregate", "sum_importance"]

AGGREGATIONS = ("mean", "median", "trimmed-mean")


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
    shares = [n / total for n in num_examples]
    out: dict[str, torch.Tensor] = {}
    for key, current in global_state.items():  # one pass per tensor (~10-60 of them), vectorised inside
        if key.endswith("num_batches_tracked") or not torch.is_floating_point(current):
            out[key] = current.clone()
            continue
        # Σ_i p_i w_{i,e} as a running sum: no (n_clients, *shape) stack, 7x faster on Conv-2's fc1
        mean = torch.from_numpy(np.asarray(client_states[0][key])).mul(shares[0])
        for state, share in zip(client_states[1:], shares[1:]):
            mean.add_(torch.from_numpy(np.asarray(state[key])), alpha=share)
        # w + Σ p_i (w_i − w⊙m) = mean + w⊙(1−m): kept coordinates take the mean, pruned ones stay stale
        out[key] = _under_mask(mean, current, masks.get(key), regrow_init)
    return out


def robust_aggregate(
    global_state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    client_states: Sequence[Mapping[str, np.ndarray]],
    rule: Literal["median", "trimmed-mean"],
    trim_fraction: float = 0.1,
    regrow_init: Literal["stale", "zero"] = "stale",
) -> dict[str, torch.Tensor]:
    """Aggregate client states coordinate-wise with the median or a trimmed mean, for devices one cannot trust.

    Every in-use coordinate (every coordinate of an unmasked float entry, the kept ones of a prunable weight)
    becomes, over the n clients' values sorted per coordinate, the mean of those left after dropping the
    ``t`` smallest and ``t`` largest: ``t = ⌊trim_fraction · n⌋`` for ``"trimmed-mean"``, ``t = ⌊(n − 1)/2⌋``
    for ``"median"`` (the middle value, or the mean of the two middle ones), never more than ``⌊(n − 1)/2⌋``.
    Fewer than ``t`` hostile clients can then move a coordinate only within the honest values' range, at the
    price of a noisier average (Yin et al., ICML 2018, https://arxiv.org/abs/1803.01498). The rules ignore the
    sample counts: honest clients all report K·B. Pruned coordinates stay stale (or 0 under
    ``regrow_init = "zero"``); ``num_batches_tracked`` is left untouched, as in :func:`masked_aggregate`.

    Parameters
    ----------
    global_state, masks, client_states, regrow_init
        As in :func:`masked_aggregate`.
    rule : {"median", "trimmed-mean"}
        The coordinate-wise rule.
    trim_fraction : float
        Fraction in [0, 0.5) of the clients dropped at each end by ``"trimmed-mean"`` (default: 0.1).

    Returns
    -------
    dict[str, torch.Tensor]
        The new global state (fresh tensors).

    Examples
    --------
    >>> g = {"w": torch.tensor([5.0, 7.0])}
    >>> m = {"w": torch.tensor([True, False])}
    >>> c = [{"w": np.array([v, 0.0], np.float32)} for v in (1.0, 2.0, 3.0, 100.0)]
    >>> robust_aggregate(g, m, c, "median")["w"].tolist()  # (2 + 3) / 2; the pruned coordinate stays 7
    [2.5, 7.0]
    >>> robust_aggregate(g, m, c, "trimmed-mean", trim_fraction=0.25)["w"].tolist()  # drops 1 and 100
    [2.5, 7.0]
    """
    n = len(client_states)
    trim = (n - 1) // 2 if rule == "median" else min(int(trim_fraction * n), (n - 1) // 2)
    out: dict[str, torch.Tensor] = {}
    for key, current in global_state.items():
        if key.endswith("num_batches_tracked") or not torch.is_floating_point(current):
            out[key] = current.clone()
            continue
        stacked = torch.stack([torch.from_numpy(np.asarray(s[key])) for s in client_states])  # (n, *shape)
        ordered = stacked.sort(dim=0).values  # per coordinate, over the client axis
        value = ordered[trim : n - trim].to(torch.float64).mean(dim=0)
        out[key] = _under_mask(value, current, masks.get(key), regrow_init)
    return out


def client_masked_aggregate(
    global_state: Mapping[str, torch.Tensor],
    client_states: Sequence[Mapping[str, np.ndarray]],
    client_masks: Sequence[Mapping[str, np.ndarray]],
    num_examples: Sequence[int],
    regrow_init: Literal["stale", "zero"] = "stale",
) -> dict[str, torch.Tensor]:
    """Aggregate client states trained under each client's own masks (FedDST's sparse weighted average).

    Each coordinate of a masked entry is the N_i-weighted mean over the clients whose mask keeps it,
    Σ_i N_i m_i w_i / Σ_i N_i m_i; a coordinate no client keeps stays stale (or 0 under ``regrow_init = "zero"``).
    Unmasked entries are the plain weighted mean; ``num_batches_tracked`` is left untouched.

    Parameters
    ----------
    global_state : Mapping[str, torch.Tensor]
        Current server state. Not modified.
    client_states : Sequence[Mapping[str, numpy.ndarray]]
        One trained state per client; pruned coordinates (under that client's mask) are 0.
    client_masks : Sequence[Mapping[str, numpy.ndarray]]
        Each client's bool masks, keyed like the server's masks.
    num_examples : Sequence[int]
        The weights N_i.
    regrow_init : {"stale", "zero"}
        What coordinates no client keeps hold afterwards (default: "stale").

    Examples
    --------
    >>> g = {"w": torch.tensor([5.0, 7.0, 9.0])}
    >>> c = [{"w": np.array([1.0, 4.0, 0.0], np.float32)}, {"w": np.array([3.0, 0.0, 0.0], np.float32)}]
    >>> m = [{"w": np.array([True, True, False])}, {"w": np.array([True, False, False])}]
    >>> client_masked_aggregate(g, c, m, [1, 1])["w"].tolist()
    [2.0, 4.0, 9.0]
    """
    weights = torch.tensor([float(n) for n in num_examples], dtype=torch.float64)
    weights = weights / weights.sum()
    masked = set(client_masks[0]) if client_masks else set()
    out: dict[str, torch.Tensor] = {}
    for key, current in global_state.items():
        if key.endswith("num_batches_tracked") or not torch.is_floating_point(current):
            out[key] = current.clone()
            continue
        stacked = torch.stack([torch.from_numpy(np.asarray(s[key])) for s in client_states]).to(torch.float64)
        if key not in masked:
            out[key] = torch.tensordot(weights, stacked, dims=1).to(current.dtype)
            continue
        kept = torch.stack([torch.from_numpy(np.asarray(m[key], dtype=np.bool_)) for m in client_masks])
        share = torch.tensordot(weights, kept.to(torch.float64), dims=1)  # Σ_i p_i m_i, per coordinate
        total = torch.tensordot(weights, stacked * kept, dims=1)  # Σ_i p_i m_i w_i
        fallback = torch.zeros_like(current) if regrow_init == "zero" else current
        out[key] = torch.where(share > 0, (total / share.clamp_min(1e-300)).to(current.dtype), fallback)
    return out


def _under_mask(
    value: torch.Tensor, current: torch.Tensor, mask: torch.Tensor | None, regrow_init: Literal["stale", "zero"]
) -> torch.Tensor:
    """``value`` in ``current``'s dtype at in-use coordinates; pruned ones keep ``current`` (stale) or become 0."""
    value = value.to(current.dtype)
    if mask is None:
        return value
    if regrow_init == "zero":
        return value * mask
    return torch.where(mask, value, current)


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
