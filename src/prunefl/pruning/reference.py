"""Slow per-weight reference implementations of reconfiguration, kept as test and benchmark oracles only.

Do not use these in training: :func:`prunefl.pruning.reconfigure` computes the same masks tens of times faster.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from prunefl.errors import ConfigError
from prunefl.pruning.reconfigure import Reconfiguration, _check_inputs, _check_positive_times
from prunefl.timing.model import TimeModel

__all__ = ["brute_force_best_masks", "reconfigure_reference"]


def reconfigure_reference(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    importance: Mapping[str, torch.Tensor],
    time_model: TimeModel,
    local_steps: int,
    max_decrease: float,
    density_cap: float | None = None,
    fixed_importance: float = 0.0,
    legacy_cap_off_by_one: bool = False,
) -> Reconfiguration:
    """Reconfigure with the official heap procedure, one weight at a time (spec §3.3–3.4, §3.10).

    A test and benchmark oracle for :func:`prunefl.pruning.reconfigure` (same parameters, same result): the
    split sorts every layer's in-use magnitudes; each layer's candidates are sorted by ρ = s/t_l descending
    (stable, so flat index ascending on ties); a max-heap over layers (ties: lower layer index) yields the next
    candidate, which is added while ρ·T > S holds strictly and the cap allows, the cap being tested before each
    addition as the official code does ("count > cap" in legacy mode). Unlike the official code it does not crash
    when every candidate is added, starts from an exactly rounded S0 (``math.fsum``), adds s_j rather than ρ·t_l
    to S, and tests ρ·T > S rather than ρ > S/T; the last two only change float64 rounding.

    Examples
    --------
    >>> import torch
    >>> from prunefl.timing import TimeModel
    >>> tm = TimeModel(("w",), (0.0,), 0.0, 1.0)
    >>> out = reconfigure_reference({"w": torch.tensor([3.0, 1.0, 2.0, 0.0])},
    ...     {"w": torch.tensor([True, True, True, False])}, {"w": torch.tensor([4.0, 6.0, 1.0, 5.5])},
    ...     tm, local_steps=1, max_decrease=0.7)
    >>> out.masks["w"].tolist()
    [True, True, False, True]
    """
    names = time_model.layer_names
    _check_inputs(weights, masks, importance, names, max_decrease, density_cap, fixed_importance)
    t = [float(x) for x in time_model.per_weight_round_s(local_steps)]
    _check_positive_times(names, np.asarray(t))
    c = time_model.constant_round_s(local_steps)

    splits = [_split_by_sort(weights[n], masks[n], importance[n], max_decrease) for n in names]
    n_total = sum(sp.old_mask.size for sp in splits)
    count = sum(int(sp.keep.sum()) for sp in splits)
    s_run = math.fsum([fixed_importance] + [math.fsum(sp.s[sp.keep].tolist()) for sp in splits])
    t_run = c + math.fsum(t_l * int(sp.keep.sum()) for t_l, sp in zip(t, splits, strict=True))
    if not t_run > 0.0:
        raise ConfigError("round time of the must-keep set is 0 s; the ratio objective is undefined")

    # Per layer: candidate flat indices and ρ, sorted by ρ descending, stable (flat index ascending on ties).
    cand_idx, cand_rho, cand_s = [], [], []
    for t_l, sp in zip(t, splits, strict=True):
        idx = np.flatnonzero(~sp.keep)
        rho = sp.s[idx] / t_l
        order = np.argsort(-rho, kind="stable")
        cand_idx.append(idx[order])
        cand_rho.append(rho[order].tolist())
        cand_s.append(sp.s[idx][order].tolist())

    cap = None
    if density_cap is not None:
        cap = math.floor(density_cap * n_total)
    heap = [(-rho[0], layer, 0) for layer, rho in enumerate(cand_rho) if rho]  # (−ρ, layer index, position)
    heapq.heapify(heap)
    n_added = [0] * len(names)
    while heap:
        neg_rho, layer, pos = heap[0]
        if not (-neg_rho * t_run > s_run):  # strict: an addition must raise S/T
            break
        if cap is not None and (count > cap if legacy_cap_off_by_one else count >= cap):
            break
        s_run += cand_s[layer][pos]
        t_run += t[layer]
        count += 1
        n_added[layer] += 1
        if pos + 1 < len(cand_rho[layer]):
            heapq.heapreplace(heap, (-cand_rho[layer][pos + 1], layer, pos + 1))
        else:
            heapq.heappop(heap)  # layer exhausted; the official code would crash on the next peek if all empty

    new_masks = {}
    for name, sp, idx, n in zip(names, splits, cand_idx, n_added, strict=True):
        flat = sp.keep.copy()
        flat[idx[:n]] = True
        new_masks[name] = flat
    return _result(names, splits, new_masks, masks, time_model, local_steps, fixed_importance, max_decrease,
                   density_cap)


def brute_force_best_masks(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    importance: Mapping[str, torch.Tensor],
    time_model: TimeModel,
    local_steps: int,
    max_decrease: float,
    fixed_importance: float = 0.0,
    max_candidates: int = 20,
) -> tuple[float, list[dict[str, torch.Tensor]]]:
    """Return Φ* and every mask attaining it, by enumerating all subsets of the candidates (spec §2.4, no cap).

    The must-keep set A comes from the same split as :func:`reconfigure_reference`. All 2^|C| subsets are scored
    in float64; those within 1e-9 of the best are re-scored in exact rational arithmetic, so ties are decided
    exactly. Cost grows as 2^|C|: a test oracle for tiny instances.

    Parameters
    ----------
    weights, masks, importance, time_model, local_steps, max_decrease, fixed_importance
        As for :func:`prunefl.pruning.reconfigure` (there is no density cap).
    max_candidates : int
        Refuse more candidates than this (default: 20, about 10^6 subsets).

    Returns
    -------
    tuple[float, list[dict[str, torch.Tensor]]]
        Φ* rounded to float, and the optimal masks (bool, input shapes) in subset-enumeration order.

    Raises
    ------
    ValueError
        If there are more than ``max_candidates`` candidates.

    Examples
    --------
    >>> import torch
    >>> from prunefl.timing import TimeModel
    >>> tm = TimeModel(("w",), (0.0,), 0.0, 1.0)
    >>> best, optimal = brute_force_best_masks({"w": torch.tensor([3.0, 1.0, 2.0, 0.0])},
    ...     {"w": torch.tensor([True, True, True, False])}, {"w": torch.tensor([4.0, 6.0, 1.0, 5.5])},
    ...     tm, local_steps=1, max_decrease=0.7)
    >>> round(best, 4), [m["w"].tolist() for m in optimal]
    (5.1667, [[True, True, False, True]])
    """
    names = time_model.layer_names
    _check_inputs(weights, masks, importance, names, max_decrease, None, fixed_importance)
    t = [float(x) for x in time_model.per_weight_round_s(local_steps)]
    _check_positive_times(names, np.asarray(t))
    c = time_model.constant_round_s(local_steps)
    splits = [_split_by_sort(weights[n], masks[n], importance[n], max_decrease) for n in names]
    candidates = [(layer, int(j)) for layer, sp in enumerate(splits) for j in np.flatnonzero(~sp.keep)]
    if len(candidates) > max_candidates:
        raise ValueError(f"brute force needs <= {max_candidates} candidates, got {len(candidates)}")

    s0 = Fraction(fixed_importance) + sum(
        (Fraction(float(x)) for sp in splits for x in sp.s[sp.keep]), start=Fraction(0)
    )
    t0 = Fraction(c) + sum((Fraction(t_l) * int(sp.keep.sum()) for t_l, sp in zip(t, splits, strict=True)),
                           start=Fraction(0))
    if t0 == 0:
        raise ConfigError("round time of the must-keep set is 0 s; the ratio objective is undefined")
    s_c = np.array([splits[layer].s[j] for layer, j in candidates], dtype=np.float64)
    t_c = np.array([t[layer] for layer, _ in candidates], dtype=np.float64)
    n = len(candidates)
    bits = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.float64)  # (2^n, n), row = subset
    phi = (float(s0) + bits @ s_c) / (float(t0) + bits @ t_c)
    near = np.flatnonzero(phi >= phi.max() * (1.0 - 1e-9))
    exact = {}
    for row in near.tolist():
        chosen = [k for k in range(n) if row >> k & 1]
        exact[row] = (s0 + sum((Fraction(float(s_c[k])) for k in chosen), start=Fraction(0))) / (
            t0 + sum((Fraction(float(t_c[k])) for k in chosen), start=Fraction(0))
        )
    best = max(exact.values())
    optimal = []
    for row, value in exact.items():
        if value != best:
            continue
        flats = [sp.keep.copy() for sp in splits]
        for k, (layer, j) in enumerate(candidates):
            if row >> k & 1:
                flats[layer][j] = True
        optimal.append({name: _to_mask(f, masks[name]) for name, f in zip(names, flats, strict=True)})
    return float(best), optimal


# ---------------------------------------------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    """Candidate split of one layer as flat numpy arrays, shape ``(n_l,)``."""

    old_mask: np.ndarray  # bool, IU_l
    keep: np.ndarray  # bool, A_l
    s: np.ndarray  # float64 importance
    max_removals: int  # q_l


def _split_by_sort(weight: torch.Tensor, mask: torch.Tensor, importance: torch.Tensor, max_decrease: float) -> _Split:
    """Split one layer by a full sort of its in-use magnitudes, exactly as the official ``process_layer``."""
    w_abs = weight.detach().reshape(-1).abs().cpu().to(torch.float64).numpy()  # exact upcast: same ranking
    m = mask.reshape(-1).cpu().numpy().astype(bool)
    s = importance.detach().reshape(-1).cpu().to(torch.float64).numpy()
    if not bool(np.all(np.isfinite(s) & (s >= 0))):
        raise ConfigError("importance must be finite and >= 0")
    n_in_use = int(m.sum())
    q = int(max_decrease * n_in_use)
    if q == 0:  # also an empty layer
        keep = m.copy()
    elif q >= n_in_use:
        keep = np.zeros_like(m)
    else:
        tau = np.sort(w_abs[m], kind="stable")[q]
        keep = m & (w_abs >= tau)
    return _Split(m, keep, s, q)


def _to_mask(flat: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Return ``flat`` as a bool tensor with the shape and device of ``like``."""
    return torch.from_numpy(flat.copy()).reshape(like.shape).to(like.device)


def _result(
    names: tuple[str, ...],
    splits: list[_Split],
    new_flat: dict[str, np.ndarray],
    masks: Mapping[str, torch.Tensor],
    time_model: TimeModel,
    local_steps: int,
    fixed_importance: float,
    max_decrease: float,
    density_cap: float | None,
) -> Reconfiguration:
    """Assemble a :class:`Reconfiguration` from old and new flat masks, counting everything per weight."""
    kept_before = {n: int(sp.old_mask.sum()) for n, sp in zip(names, splits, strict=True)}
    kept_after = {n: int(new_flat[n].sum()) for n in names}
    removed = {n: int((sp.old_mask & ~new_flat[n]).sum()) for n, sp in zip(names, splits, strict=True)}
    added = {n: int((~sp.old_mask & new_flat[n]).sum()) for n, sp in zip(names, splits, strict=True)}
    n_total = sum(sp.old_mask.size for sp in splits)

    def objective(flats: list[np.ndarray]) -> float:
        s = math.fsum([fixed_importance] + [math.fsum(sp.s[f].tolist()) for sp, f in zip(splits, flats, strict=True)])
        kept = {n: int(f.sum()) for n, f in zip(names, flats, strict=True)}
        return s / time_model.round_time_s(kept, local_steps)

    return Reconfiguration(
        masks={n: _to_mask(new_flat[n], masks[n]) for n in names},
        removed=removed,
        added=added,
        kept_before=kept_before,
        kept_after=kept_after,
        objective_before=objective([sp.old_mask for sp in splits]),
        objective_after=objective([new_flat[n] for n in names]),
        max_decrease=float(max_decrease),
        density_cap=None if density_cap is None else float(density_cap),
        density_before=sum(kept_before.values()) / n_total if n_total else 0.0,
        density_after=sum(kept_after.values()) / n_total if n_total else 0.0,
    )
