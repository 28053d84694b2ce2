"""One PruneFL mask reconfiguration: magnitude-bounded removal, then greedy addition by importance per unit time."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, TypeAlias

import numpy as np
import torch

from prunefl.errors import ConfigError
from prunefl.timing.model import TimeModel

__all__ = ["Reconfiguration", "reconfigure"]

logger = logging.getLogger(__name__)

# Half-width of the relative window around the optimal ratio Φ* inside which the greedy stop is resolved by the
# exact sequential rule (spec §3.4 vectorised form) instead of by the threshold alone. It only has to exceed the
# relative rounding error of the float64 sums S and T (≤ |C|·2^-53 ≈ 1e-9 for 10^7 terms, far less in practice).
_BAND_RTOL = 1e-6
# Newton (Dinkelbach) steps before falling back to a sort of the remaining candidates. Each step strictly shrinks
# the active set and convergence is superlinear; 3–8 steps are typical, so the fallback is a safety net only.
_MAX_NEWTON_STEPS = 64
# Array library for tensors on the CPU: "numpy" (default, see `reconfigure`) or "torch" (the code path of
# other devices; tests switch to it to exercise that path without a GPU).
_CPU_BACKEND = "numpy"


@dataclass(frozen=True)
class Reconfiguration:
    """Outcome of one reconfiguration (spec §3.3–3.4); every dict is keyed by prunable parameter name.

    Parameters
    ----------
    masks : dict[str, torch.Tensor]
        New masks, ``torch.bool``, same shapes and devices as the input masks.
    removed : dict[str, int]
        Weights in use before and pruned now (removed by magnitude and not re-added).
    added : dict[str, int]
        Weights pruned before and in use now ("regrown"; their stale server value resumes, spec §3.8).
    kept_before, kept_after : dict[str, int]
        ``|m_l|`` before and after; ``kept_after = kept_before − removed + added``.
    objective_before, objective_after : float
        Φ(m) = (S_fix + Σ_j m_j s_j) / T(m) of the old and the new mask, in importance units per second (spec §2.4).
    max_decrease : float
        δ used for the removal bound.
    density_cap : float or None
        D used for the addition cap, or None.
    density_before, density_after : float
        Fraction of prunable weights in use before and after, in [0, 1].
    """

    masks: dict[str, torch.Tensor]
    removed: dict[str, int]
    added: dict[str, int]
    kept_before: dict[str, int]
    kept_after: dict[str, int]
    objective_before: float
    objective_after: float
    max_decrease: float
    density_cap: float | None
    density_before: float
    density_after: float


def reconfigure(
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
    """Compute the next masks: remove small in-use weights (≤ δ per layer), then add by importance per second.

    Pure function: the inputs are not modified. Implements spec §3.3 (candidate split) and §3.4 (greedy
    addition) exactly, with the density cap of §3.10. The masks equal those of the sequential heap procedure
    (:func:`prunefl.pruning.reference.reconfigure_reference`) element for element, ties included; the only
    possible difference is where a candidate's ρ equals the running ratio S/T to within the float64 rounding of
    the two solvers' differently ordered sums (never when those sums are exact). Cost: O(|J|) passes and
    selections, no sort of the candidates; no Python loop over weights.

    Per layer l, with IU_l the weights in use: q_l = ⌊δ·|IU_l|⌋; τ_l = element q_l (0-based) of the ascending
    sort of |w| over IU_l; A_l = {|w| ≥ τ_l} must stay; the rest of IU_l and every pruned weight are candidates.
    Candidates are then added in decreasing ρ_j = s_j / t_l (ties: layer index, then flat index, ascending) as
    long as each strictly raises Φ = S/T, starting from S0 = S_fix + Σ_A s and T0 = c + Σ_l t_l·|A_l|, and at most
    ``max(0, ⌊D·|J|⌋ − Σ_l |A_l|)`` of them (one more with ``legacy_cap_off_by_one``).

    Parameters
    ----------
    weights : Mapping[str, torch.Tensor]
        Freshly aggregated server weights of every prunable layer (spec §3.8), any float dtype.
    masks : Mapping[str, torch.Tensor]
        Current masks, ``torch.bool``, same shapes as ``weights``.
    importance : Mapping[str, torch.Tensor]
        s_j ≥ 0 for every weight, pruned ones included (spec §2.3, §3.2), same shapes as ``weights``.
    time_model : TimeModel
        Round-time model; its ``layer_names`` are the prunable layers in model order, which fixes the layer
        index used for ties. The three mappings must have exactly these keys.
    local_steps : int
        K, local SGD steps per round, ≥ 1 (official: 5).
    max_decrease : float
        δ, max fraction of each layer's in-use weights that may be removed, in [0, 1] (spec §3.5; δ = 1 may
        remove a whole layer).
    density_cap : float or None
        D, cap on the density after addition, in (0, 1]; None = uncapped (default: None, spec §3.10).
    fixed_importance : float
        S_fix ≥ 0: summed importance of everything that cannot be removed (biases, BatchNorm, non-prunable
        layers); it shifts the ratio threshold (spec §2.3) (default: 0.0).
    legacy_cap_off_by_one : bool
        Reproduce the official "count > cap" test, which lets the density reach ⌊D·|J|⌋ + 1 (spec §9 D11)
        (default: False).

    Returns
    -------
    Reconfiguration

    Raises
    ------
    ConfigError
        If keys or shapes disagree, a mask is not bool, an importance is negative or not finite, a weight is
        not finite, δ or D is out of range, some t_l ≤ 0, or the must-keep set has zero round time (Φ undefined).

    Examples
    --------
    >>> import torch
    >>> from prunefl.timing import TimeModel
    >>> tm = TimeModel(("w",), (0.0,), 0.0, 1.0)   # t_l = 1 s per weight, c = 0
    >>> out = reconfigure({"w": torch.tensor([3.0, 1.0, 2.0, 0.0])}, {"w": torch.tensor([True, True, True, False])},
    ...                   {"w": torch.tensor([4.0, 6.0, 1.0, 5.5])}, tm, local_steps=1, max_decrease=0.7)
    >>> # q = ⌊0.7·3⌋ = 2, τ = 3: A = {w=3}, S0/T0 = 4/1. Add ρ=6 (10/2), ρ=5.5 (15.5/3); ρ=1 < 5.17 stops.
    >>> out.masks["w"].tolist(), out.removed, out.added
    ([True, True, False, True], {'w': 1}, {'w': 1})
    """
    names = time_model.layer_names
    _check_inputs(weights, masks, importance, names, max_decrease, density_cap, fixed_importance)
    t_np = time_model.per_weight_round_s(local_steps)  # (L,) float64, validates local_steps
    _check_positive_times(names, t_np)
    c = time_model.constant_round_s(local_steps)
    t_per_layer = [float(x) for x in t_np]
    # CPU tensors are processed as numpy views: single-threaded, so a busy machine cannot stall it in OpenMP
    # barriers (2-thread torch took 0.5–2 s instead of 0.06 s for 11 M weights on a shared 2-core box), and
    # np.flatnonzero / np.partition are ~10x faster than their torch counterparts there.
    use_numpy = _CPU_BACKEND == "numpy" and masks[names[0]].device.type == "cpu"

    # ---- §3.3 candidate split, one layer at a time (a loop over ~20 layers, never over weights) -----------
    layers = [
        _split_layer(name, *_flat_arrays(weights[name], masks[name], importance[name], use_numpy), max_decrease)
        for name in names
    ]
    n_total = sum(layer.n_total for layer in layers)
    n_keep_total = sum(layer.n_keep for layer in layers)
    s_keep = fixed_importance + math.fsum(layer.s_keep for layer in layers)
    s_before = fixed_importance + math.fsum(layer.s_in_use for layer in layers)
    # T summed per layer as t_l·|A_l|: the same products the heap reference forms, so exact inputs stay exact.
    t_keep = c + math.fsum(t * layer.n_keep for t, layer in zip(t_per_layer, layers, strict=True))
    t_before = c + math.fsum(t * layer.n_in_use for t, layer in zip(t_per_layer, layers, strict=True))
    if not t_keep > 0.0:
        raise ConfigError(
            "round time of the must-keep set is 0 s (constant_s_per_step = 0 and no weight kept), so the ratio "
            "objective S/T of spec §2.4 is undefined; give the time model a constant_s_per_step > 0"
        )
    theta0 = s_keep / t_keep  # Φ(A), the ratio before any addition

    # ---- §3.4 greedy addition -------------------------------------------------------------------------
    # Without a cap the greedy prefix is {ρ > Φ*}: along ρ-order the running ratio R rises while ρ_k > R and
    # stays ≥ every later ρ after the first failure (spec §3.4, points 1–2); within a run of equal ρ, adding
    # one element leaves R < ρ, so runs are all-or-nothing. Φ* is the root of the convex, decreasing,
    # piecewise-linear G(θ) = S0 − θ·T0 + Σ_j max(0, s_j − θ·t_j), found by Newton (Dinkelbach) steps
    # θ ← R({ρ > θ}) from θ0 = Φ(A) ≤ Φ*: each is one pass over a shrinking candidate set instead of a sort.
    # Only candidates with ρ above Φ(A) can ever be added, so collect those (minus a rounding margin) once.
    pool = _collect_pool(layers, t_per_layer, theta0)
    theta = _optimal_ratio(s_keep, t_keep, pool)

    # Elements clearly above Φ* are added and those clearly below are not, whatever the rounding of S and T;
    # the few within a relative _BAND_RTOL of Φ* (e.g. ties with Φ* itself) get the exact sequential test
    # ρ_k·T_{k−1} > S_{k−1} in the stable order (ρ desc, layer asc, flat index asc).
    above = pool.rho > theta * (1.0 + _BAND_RTOL)
    band = (pool.rho > theta * (1.0 - _BAND_RTOL)) & ~above
    above_pos = _flatnonzero(above)
    n_above = len(above_pos)
    s_above = s_keep + _sum64(_take(pool.s, above_pos))
    t_above = t_keep + _sum64(_take(pool.t, above_pos))
    band_pos = _flatnonzero(band)  # ascending = (layer, flat index) order
    band_pos = _take(band_pos, _argsort_descending_stable(_take(pool.rho, band_pos)))
    n_band = _sequential_prefix(_take(pool.rho, band_pos), _take(pool.s, band_pos), _take(pool.t, band_pos),
                                s_above, t_above)
    n_greedy = n_above + n_band

    # ---- §3.10 density cap: truncate the greedy prefix (a heuristic under the cap, reproduced as is) ------
    n_add = n_greedy
    if density_cap is not None:
        # Official code: `if count > cap: stop` before each addition, count starting at |A|: up to cap + 1.
        cap_count = math.floor(density_cap * n_total) + (1 if legacy_cap_off_by_one else 0)
        n_add = min(n_greedy, max(0, cap_count - n_keep_total))

    if n_add >= n_above:
        chosen = _copy(above)
        chosen[band_pos[: n_add - n_above]] = True
    else:
        chosen = _first_in_order(pool.rho, above, n_add)

    # ---- build the result --------------------------------------------------------------------------------
    new_masks: dict[str, torch.Tensor] = {}
    removed: dict[str, int] = {}
    added: dict[str, int] = {}
    kept_before: dict[str, int] = {}
    kept_after: dict[str, int] = {}
    chosen_pos = _flatnonzero(chosen)
    s_added = _sum64(_take(pool.s, chosen_pos))
    t_added = _sum64(_take(pool.t, chosen_pos))
    for i, layer in enumerate(layers):
        lo, hi = pool.offsets[i], pool.offsets[i + 1]
        # Flat indices of this layer's chosen candidates; those in use before were removed by magnitude and
        # re-added by importance, so they count neither as removed nor as added.
        idx = _take(pool.flat_index, lo + _flatnonzero(chosen[lo:hi]))
        flat = _copy(layer.keep)
        flat[idx] = True
        n_readded = _count(_take(layer.old_mask, idx))
        n_regrown = len(idx) - n_readded
        n_removed = layer.n_in_use - layer.n_keep - n_readded
        # Invariants of §3.3: removals come from IU only and never exceed q_l.
        assert 0 <= n_removed <= layer.n_in_use - layer.n_keep <= layer.max_removals
        new_masks[layer.name] = _as_mask(flat, masks[layer.name])
        removed[layer.name] = n_removed
        added[layer.name] = n_regrown
        kept_before[layer.name] = layer.n_in_use
        kept_after[layer.name] = layer.n_keep + len(idx)
    n_after = sum(kept_after.values())
    if density_cap is not None:
        assert n_add <= max(0, cap_count - n_keep_total)

    result = Reconfiguration(
        masks=new_masks,
        removed=removed,
        added=added,
        kept_before=kept_before,
        kept_after=kept_after,
        objective_before=s_before / t_before,
        objective_after=(s_keep + s_added) / (t_keep + t_added),
        max_decrease=float(max_decrease),
        density_cap=None if density_cap is None else float(density_cap),
        density_before=sum(kept_before.values()) / n_total if n_total else 0.0,
        density_after=n_after / n_total if n_total else 0.0,
    )
    logger.debug(
        "reconfigure: delta=%s cap=%s density %.6f -> %.6f, removed %s, added %s, phi %.6g -> %.6g",
        max_decrease,
        density_cap,
        result.density_before,
        result.density_after,
        sum(removed.values()),
        sum(added.values()),
        result.objective_before,
        result.objective_after,
    )
    return result


# ---------------------------------------------------------------------------------------------------------------
# Private helpers. Flat 1-D arrays are numpy arrays (CPU) or torch tensors (other devices); the _take, _sum64, ...
# shims below give both the same spelling, so the algorithm is written once.
# ---------------------------------------------------------------------------------------------------------------

# numpy.ndarray (CPU) or torch.Tensor (other devices). Any rather than the union: the algorithm is written once
# against the operators both share, which mypy cannot match across the two libraries' overloads.
Array: TypeAlias = Any


@dataclass(frozen=True)
class _LayerSplit:
    """Candidate split of one layer (spec §3.3); flat arrays have shape ``(n_total,)``."""

    name: str
    old_mask: Array  # bool, IU_l
    keep: Array  # bool, A_l
    importance: Array  # s_l, caller's dtype (bfloat16 widened to float32)
    n_total: int
    n_in_use: int
    n_keep: int
    max_removals: int  # q_l
    s_in_use: float  # Σ_{IU_l} s, float64
    s_keep: float  # Σ_{A_l} s, float64


@dataclass(frozen=True)
class _Pool:
    """Candidates that may be added, flattened over layers in (layer, flat index) order; shapes ``(n_pool,)``."""

    rho: Array  # float64, s / t_l
    s: Array  # float64
    t: Array  # float64, t_l of the element's layer
    flat_index: Array  # int64, index into the layer's flattened tensor
    offsets: list[int]  # layer i owns pool[offsets[i]:offsets[i + 1]]


def _flat_arrays(
    weight: torch.Tensor, mask: torch.Tensor, importance: torch.Tensor, use_numpy: bool
) -> tuple[Array, Array, Array]:
    """Return flat (weights, mask, importance), as numpy views of CPU tensors when ``use_numpy``."""
    flats = [x.detach().reshape(-1) for x in (weight, mask, importance)]
    if not use_numpy:
        return flats[0], flats[1], flats[2]
    # numpy has no bfloat16; widening to float32 is exact and keeps the magnitude ranking and every sum.
    w, m, s = (x.float() if x.dtype == torch.bfloat16 else x for x in flats)
    return w.numpy(), m.numpy(), s.numpy()


def _split_layer(name: str, w: Array, m: Array, s: Array, max_decrease: float) -> _LayerSplit:
    """Split one layer into must-keep weights and removal candidates (spec §3.3)."""
    if len(s):
        low, high = _min_max(s)
        if not (low >= 0.0 and math.isfinite(high)):  # NaN fails both comparisons
            raise ConfigError(f"importance[{name!r}] must be finite and >= 0, got min {low}, max {high}")
    iu = _flatnonzero(m)  # flat indices of IU_l, (n_in_use,)
    n_in_use = len(iu)
    # int(δ·n) as in the official code (δ ≥ 0, so int() = floor).
    q = math.floor(max_decrease * n_in_use)
    s_iu = _take(s, iu)  # (n_in_use,)
    s_in_use = _sum64(s_iu)
    if q == 0:
        # q_l = 0 removes nothing; this also covers an empty IU_l, where τ_l is undefined (official crash).
        # `keep` aliases the caller's mask; it is only read, and copied before the new mask is built.
        return _LayerSplit(name, m, m, s, len(m), n_in_use, n_in_use, q, s_in_use, s_in_use)
    w_iu_abs = abs(_take(w, iu))  # |w| over IU_l, (n_in_use,)
    if not math.isfinite(float(w_iu_abs.max())):  # max propagates NaN
        raise ConfigError(f"weights[{name!r}] has non-finite values at in-use positions; cannot rank by magnitude")
    if q >= n_in_use:  # δ = 1: element q does not exist; every in-use weight is a candidate (τ = +∞)
        keep_pos = iu[:0]
    else:
        # τ_l = element q (0-based) of the ascending sort: a selection, not a sort. Ties at τ_l are kept
        # (|w| ≥ τ_l), so at most q_l weights are removed.
        tau = _kth_smallest(w_iu_abs, q)
        keep_pos = _flatnonzero(w_iu_abs >= tau)  # positions within IU_l
    keep = _zeros_like(m)
    keep[_take(iu, keep_pos)] = True
    s_keep = _sum64(_take(s_iu, keep_pos))
    return _LayerSplit(name, m, keep, s, len(m), n_in_use, len(keep_pos), q, s_in_use, s_keep)


def _collect_pool(layers: list[_LayerSplit], t_per_layer: list[float], theta0: float) -> _Pool:
    """Gather every candidate whose ρ may exceed Φ(A) = ``theta0``, in (layer, flat index) order.

    A candidate with ρ ≤ Φ(A) is never added: the running ratio only rises from Φ(A) (spec §3.4, point 1).
    The threshold is lowered by a margin covering the rounding of ``theta0`` and of the comparison in the
    importance dtype, so the pool is a superset of what the band test of :func:`reconfigure` looks at.
    """
    rhos, ss, ts, idxs, offsets = [], [], [], [], [0]
    for layer, t_l in zip(layers, t_per_layer, strict=True):
        s = layer.importance
        eps = max(_BAND_RTOL, _dtype_eps(s))
        # s > θ·t_l ⟺ ρ > θ; compared in the importance dtype (no float64 copy of the whole layer).
        threshold = theta0 * (1.0 - 4.0 * eps) * t_l
        candidate = s > threshold
        candidate &= ~layer.keep
        idx = _flatnonzero(candidate)
        s_c = _as_float64(_take(s, idx))
        rhos.append(s_c / t_l)
        ss.append(s_c)
        ts.append(_full_like(s_c, t_l))
        idxs.append(idx)
        offsets.append(offsets[-1] + len(idx))
    return _Pool(_concat(rhos), _concat(ss), _concat(ts), _concat(idxs), offsets)


def _optimal_ratio(s0: float, t0: float, pool: _Pool) -> float:
    """Return Φ* = max over supersets of A of (S0 + Σ s)/(T0 + Σ t), by Newton steps on the pool.

    θ_{k+1} = R({ρ > θ_k}) increases monotonically to the fixed point Φ* (every R of a set is ≤ Φ*), and
    {ρ > θ_k} shrinks, so each step intersects with the previous survivors; that also guarantees termination
    when rounding makes θ stall. Survivors are compacted only once they are few, since gathers cost more than
    masked dot products while most of the pool survives.
    """
    rho, s, t = pool.rho, pool.s, pool.t
    theta = (s0 + _sum64(s)) / (t0 + _sum64(t))
    alive = rho == rho  # all True (ρ is never NaN)
    n_alive = len(rho)
    for _ in range(_MAX_NEWTON_STEPS):
        alive &= rho > theta
        n_next = _count(alive)
        if n_next == n_alive:
            return theta
        n_alive = n_next
        if 4 * n_alive < len(rho):
            pos = _flatnonzero(alive)
            rho, s, t = _take(rho, pos), _take(s, pos), _take(t, pos)
            alive = rho == rho
            s_sum, t_sum = _sum64(s), _sum64(t)
        else:
            weight = _as_float64(alive)  # 0/1, so the dot products are masked float64 sums
            s_sum, t_sum = _dot(weight, s), _dot(weight, t)
        theta = (s0 + s_sum) / (t0 + t_sum)
    logger.debug("reconfigure: Newton did not settle in %d steps; sorting %d candidates", _MAX_NEWTON_STEPS, n_alive)
    pos = _flatnonzero(alive)
    rho, s, t = _take(rho, pos), _take(s, pos), _take(t, pos)
    order = _argsort_descending_stable(rho)
    n = _sequential_prefix(_take(rho, order), _take(s, order), _take(t, order), s0, t0)
    return (s0 + _sum64(_take(s, order[:n]))) / (t0 + _sum64(_take(t, order[:n])))


def _sequential_prefix(rho: Array, s: Array, t: Array, s_start: float, t_start: float) -> int:
    """Return the longest prefix length n with ρ_k·T_{k−1} > S_{k−1} for every k < n (spec §3.4 vectorised form).

    ``rho``, ``s``, ``t`` are float64 in greedy order; S and T are running sums from ``s_start``/``t_start``,
    accumulated left to right (a cumulative sum seeded with the start value) like the sequential loop.
    """
    if len(rho) == 0:
        return 0
    s_run = _concat([_full_like(s[:1], s_start), s[:-1]]).cumsum(0)  # S_{k−1}, exclusive
    t_run = _concat([_full_like(t[:1], t_start), t[:-1]]).cumsum(0)  # T_{k−1}, exclusive
    fails = _flatnonzero(~(rho * t_run > s_run))
    return int(fails[0]) if len(fails) else len(rho)


def _first_in_order(rho: Array, eligible: Array, n: int) -> Array:
    """Return a bool mask of the first ``n`` eligible positions in (ρ desc, position asc) order, 0 ≤ n ≤ #eligible.

    Selection instead of a sort: v = n-th largest ρ; take all ρ > v, then the earliest positions with ρ = v.
    """
    if n == 0:
        return _zeros_like(eligible)
    values = _take(rho, _flatnonzero(eligible))
    v = _kth_smallest(values, len(values) - n)  # n-th largest
    strictly = eligible & (rho > v)
    ties = eligible & (rho == v)
    need = n - _count(strictly)
    return strictly | (ties & (ties.cumsum(0) <= need))


def _flatnonzero(mask: Array) -> Array:
    """Return the int64 indices of True entries of a 1-D bool array, ascending.

    On CPU this is numpy's flatnonzero, about 8x faster than torch.nonzero, and gathers use these indices
    rather than boolean masks (``x[indices]`` is about 10x faster than ``x[mask]``).
    """
    if isinstance(mask, np.ndarray):
        return np.flatnonzero(mask)
    return torch.nonzero(mask).flatten()


def _take(x: Array, idx: Array) -> Array:
    """Return ``x[idx]`` for a 1-D ``x`` and int64 indices."""
    return x[idx] if isinstance(x, np.ndarray) else x.index_select(0, idx)


def _sum64(x: Array) -> float:
    """Return the float64 sum of ``x`` (pairwise summation in both backends)."""
    return float(x.sum(dtype=np.float64) if isinstance(x, np.ndarray) else x.sum(dtype=torch.float64))


def _dot(x: Array, y: Array) -> float:
    """Return the float64 dot product of two float64 vectors.

    numpy: an elementwise product and a pairwise sum, not BLAS ddot, which may start threads of its own.
    """
    return float(np.multiply(x, y).sum() if isinstance(x, np.ndarray) else torch.dot(x, y))


def _count(mask: Array) -> int:
    """Return the number of True entries of a bool array."""
    return int(np.count_nonzero(mask) if isinstance(mask, np.ndarray) else torch.count_nonzero(mask))


def _min_max(x: Array) -> tuple[float, float]:
    """Return (min, max) of a non-empty array; NaN propagates."""
    if isinstance(x, np.ndarray):
        return float(x.min()), float(x.max())
    low, high = torch.aminmax(x)
    return float(low), float(high)


def _kth_smallest(values: Array, k: int) -> float:
    """Return element ``k`` (0-based) of the ascending sort of the 1-D ``values``, 0 ≤ k < len: a selection."""
    if isinstance(values, np.ndarray):
        return float(np.partition(values, k)[k])  # introselect, about 10x faster than kthvalue on CPU
    return float(torch.kthvalue(values, k + 1).values)


def _argsort_descending_stable(x: Array) -> Array:
    """Return the permutation sorting ``x`` descending; equal values keep their order."""
    if isinstance(x, np.ndarray):
        return np.argsort(-x, kind="stable")  # x ≥ 0 here, and −0.0 == 0.0, so negation keeps ties intact
    return torch.sort(x, descending=True, stable=True).indices


def _zeros_like(x: Array) -> Array:
    return np.zeros_like(x) if isinstance(x, np.ndarray) else torch.zeros_like(x)


def _copy(x: Array) -> Array:
    return x.copy() if isinstance(x, np.ndarray) else x.clone()


def _full_like(x: Array, value: float) -> Array:
    return np.full_like(x, value) if isinstance(x, np.ndarray) else torch.full_like(x, value)


def _as_float64(x: Array) -> Array:
    return x.astype(np.float64) if isinstance(x, np.ndarray) else x.to(torch.float64)


def _concat(parts: list[Array]) -> Array:
    return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else torch.cat(parts)


def _dtype_eps(x: Array) -> float:
    """Return the machine epsilon of ``x``'s float dtype."""
    return float(np.finfo(x.dtype).eps) if isinstance(x, np.ndarray) else float(torch.finfo(x.dtype).eps)


def _as_mask(flat: Array, like: torch.Tensor) -> torch.Tensor:
    """Return the flat bool array as a tensor with the shape and device of ``like``."""
    tensor = torch.from_numpy(flat) if isinstance(flat, np.ndarray) else flat
    return tensor.reshape(like.shape)


def _check_inputs(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    importance: Mapping[str, torch.Tensor],
    names: tuple[str, ...],
    max_decrease: float,
    density_cap: float | None,
    fixed_importance: float,
) -> None:
    """Raise ConfigError unless keys, dtypes, shapes, devices and scalars suit :func:`reconfigure`.

    Importance values (finite, ≥ 0) are checked per layer in ``_split_layer``, on the arrays it uses anyway.
    """
    if not names:
        raise ConfigError("the time model has no prunable layers; reconfigure needs at least one")
    expected = set(names)
    for label, mapping in (("weights", weights), ("masks", masks), ("importance", importance)):
        missing = [n for n in names if n not in mapping]
        extra = sorted(k for k in mapping if k not in expected)
        if missing or extra:
            raise ConfigError(
                f"{label} must have exactly the time model's prunable layers; missing {missing}, unknown {extra}"
            )
    for name in names:
        w, m, s = weights[name], masks[name], importance[name]
        if m.dtype != torch.bool:
            raise ConfigError(f"masks[{name!r}] must be torch.bool, got {m.dtype}")
        if not w.is_floating_point() or not s.is_floating_point():
            raise ConfigError(f"weights and importance of {name!r} must be floating point, got {w.dtype}, {s.dtype}")
        if w.shape != m.shape or s.shape != m.shape:
            raise ConfigError(
                f"shapes of {name!r} differ: weights {tuple(w.shape)}, masks {tuple(m.shape)}, "
                f"importance {tuple(s.shape)}"
            )
    devices = {str(x.device) for mapping in (weights, masks, importance) for x in (mapping[n] for n in names)}
    if len(devices) > 1:
        raise ConfigError(f"all weights, masks and importance must be on one device, got {sorted(devices)}")
    if not (isinstance(max_decrease, Real) and math.isfinite(max_decrease) and 0.0 <= max_decrease <= 1.0):
        raise ConfigError(f"max_decrease must be in [0, 1], got {max_decrease!r}")
    if density_cap is not None and not (
        isinstance(density_cap, Real) and math.isfinite(density_cap) and 0.0 < density_cap <= 1.0
    ):
        raise ConfigError(f"density_cap must be in (0, 1] or None, got {density_cap!r}")
    if not (isinstance(fixed_importance, Real) and math.isfinite(fixed_importance) and fixed_importance >= 0):
        raise ConfigError(f"fixed_importance must be finite and >= 0, got {fixed_importance!r}")


def _check_positive_times(names: tuple[str, ...], t: np.ndarray) -> None:
    """Raise ConfigError unless every per-weight round time t_l is > 0 (ρ = s/t_l needs it, spec §3.4)."""
    bad = {n: float(x) for n, x in zip(names, t, strict=True) if not x > 0.0}
    if bad:
        raise ConfigError(
            f"per-weight round time t_l = K·a_l + b must be > 0 for every layer, got {bad}; "
            "give the time model a comm_s_per_weight > 0"
        )
