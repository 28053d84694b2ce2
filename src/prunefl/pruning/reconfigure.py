"""One PruneFL mask reconfiguration: magnitude-bounded removal, then greedy addition by importance per unit time."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real

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

    # ---- §3.3 candidate split, one layer at a time (a loop over ~20 layers, never over weights) -----------
    layers = [
        _split_layer(name, weights[name], masks[name], importance[name], max_decrease) for name in names
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
    n_above = int(above_pos.numel())
    s_above = s_keep + float(pool.s.index_select(0, above_pos).sum())
    t_above = t_keep + float(pool.t.index_select(0, above_pos).sum())
    band_pos = _flatnonzero(band)  # ascending = (layer, flat index) order
    band_pos = band_pos[torch.sort(pool.rho[band_pos], descending=True, stable=True).indices]
    n_band = _sequential_prefix(pool.rho[band_pos], pool.s[band_pos], pool.t[band_pos], s_above, t_above)
    n_greedy = n_above + n_band

    # ---- §3.10 density cap: truncate the greedy prefix (a heuristic under the cap, reproduced as is) ------
    n_add = n_greedy
    if density_cap is not None:
        # Official code: `if count > cap: stop` before each addition, count starting at |A|: up to cap + 1.
        cap_count = math.floor(density_cap * n_total) + (1 if legacy_cap_off_by_one else 0)
        n_add = min(n_greedy, max(0, cap_count - n_keep_total))

    chosen = torch.zeros_like(above)
    if n_add >= n_above:
        chosen |= above
        chosen[band_pos[: n_add - n_above]] = True
    elif n_add > 0:
        chosen[_first_in_order(pool.rho, above, n_add)] = True

    # ---- build the result --------------------------------------------------------------------------------
    new_masks: dict[str, torch.Tensor] = {}
    removed: dict[str, int] = {}
    added: dict[str, int] = {}
    kept_before: dict[str, int] = {}
    kept_after: dict[str, int] = {}
    chosen_pos = _flatnonzero(chosen)
    s_added = float(pool.s.index_select(0, chosen_pos).sum())
    t_added = float(pool.t.index_select(0, chosen_pos).sum())
    for i, layer in enumerate(layers):
        lo, hi = pool.offsets[i], pool.offsets[i + 1]
        # Flat indices of this layer's chosen candidates; those in use before were removed by magnitude and
        # re-added by importance, so they count neither as removed nor as added.
        idx = pool.flat_index.index_select(0, lo + _flatnonzero(chosen[lo:hi]))
        flat = layer.keep.clone()
        flat[idx] = True
        n_readded = int(layer.old_mask.index_select(0, idx).sum())
        n_regrown = int(idx.numel()) - n_readded
        n_removed = layer.n_in_use - layer.n_keep - n_readded
        # Invariants of §3.3: removals come from IU only and never exceed q_l.
        assert 0 <= n_removed <= layer.n_in_use - layer.n_keep <= layer.max_removals
        new_masks[layer.name] = flat.reshape(layer.shape)
        removed[layer.name] = n_removed
        added[layer.name] = n_regrown
        kept_before[layer.name] = layer.n_in_use
        kept_after[layer.name] = layer.n_keep + int(idx.numel())
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
# Private helpers
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LayerSplit:
    """Candidate split of one layer (spec §3.3); flat tensors have shape ``(n_total,)``."""

    name: str
    shape: torch.Size
    old_mask: torch.Tensor  # bool, IU_l
    keep: torch.Tensor  # bool, A_l
    importance: torch.Tensor  # s_l, caller's dtype
    n_total: int
    n_in_use: int
    n_keep: int
    max_removals: int  # q_l
    s_in_use: float  # Σ_{IU_l} s, float64
    s_keep: float  # Σ_{A_l} s, float64


@dataclass(frozen=True)
class _Pool:
    """Candidates that may be added, flattened over layers in (layer, flat index) order; shapes ``(n_pool,)``."""

    rho: torch.Tensor  # float64, s / t_l
    s: torch.Tensor  # float64
    t: torch.Tensor  # float64, t_l of the element's layer
    flat_index: torch.Tensor  # int64, index into the layer's flattened tensor
    offsets: list[int]  # layer i owns pool[offsets[i]:offsets[i + 1]]


def _split_layer(
    name: str, weight: torch.Tensor, mask: torch.Tensor, importance: torch.Tensor, max_decrease: float
) -> _LayerSplit:
    """Split one layer into must-keep weights and removal candidates (spec §3.3)."""
    w = weight.detach().reshape(-1)
    m = mask.reshape(-1)
    s = importance.detach().reshape(-1)
    iu = _flatnonzero(m)  # flat indices of IU_l, (n_in_use,)
    n_in_use = int(iu.numel())
    # int(δ·n) as in the official code (δ ≥ 0, so int() = floor).
    q = math.floor(max_decrease * n_in_use)
    s_iu = s.index_select(0, iu)  # (n_in_use,)
    s_in_use = float(s_iu.sum(dtype=torch.float64))
    if q == 0:
        # q_l = 0 removes nothing; this also covers an empty IU_l, where τ_l is undefined (official crash).
        # `keep` aliases the caller's mask; it is only read, and copied before the new mask is built.
        return _LayerSplit(name, mask.shape, m, m, s, int(m.numel()), n_in_use, n_in_use, q, s_in_use, s_in_use)
    w_iu_abs = w.index_select(0, iu).abs_()  # |w| over IU_l, (n_in_use,)
    if not math.isfinite(float(w_iu_abs.max())):  # max propagates NaN
        raise ConfigError(f"weights[{name!r}] has non-finite values at in-use positions; cannot rank by magnitude")
    if q >= n_in_use:  # δ = 1: element q does not exist; every in-use weight is a candidate (τ = +∞)
        keep_pos = iu[:0]
    else:
        # τ_l = element q (0-based) of the ascending sort: a selection, not a sort. Ties at τ_l are kept
        # (|w| ≥ τ_l), so at most q_l weights are removed.
        tau = _kth_smallest(w_iu_abs, q)
        keep_pos = _flatnonzero(w_iu_abs >= tau)  # positions within IU_l
    keep = torch.zeros_like(m)
    keep[iu.index_select(0, keep_pos)] = True
    s_keep = float(s_iu.index_select(0, keep_pos).sum(dtype=torch.float64))
    n_keep = int(keep_pos.numel())
    return _LayerSplit(name, mask.shape, m, keep, s, int(m.numel()), n_in_use, n_keep, q, s_in_use, s_keep)


def _collect_pool(layers: list[_LayerSplit], t_per_layer: list[float], theta0: float) -> _Pool:
    """Gather every candidate whose ρ may exceed Φ(A) = ``theta0``, in (layer, flat index) order.

    A candidate with ρ ≤ Φ(A) is never added: the running ratio only rises from Φ(A) (spec §3.4, point 1).
    The threshold is lowered by a margin covering the rounding of ``theta0`` and of the comparison in the
    importance dtype, so the pool is a superset of what the band test of :func:`reconfigure` looks at.
    """
    rhos, ss, ts, idxs, offsets = [], [], [], [], [0]
    for layer, t_l in zip(layers, t_per_layer, strict=True):
        s = layer.importance
        eps = max(_BAND_RTOL, float(torch.finfo(s.dtype).eps)) if s.is_floating_point() else _BAND_RTOL
        # s > θ·t_l ⟺ ρ > θ; compared in the importance dtype (no float64 copy of the whole layer).
        threshold = theta0 * (1.0 - 4.0 * eps) * t_l
        idx = _flatnonzero((s > threshold) & ~layer.keep)
        s_c = s.index_select(0, idx).to(torch.float64)
        rhos.append(s_c / t_l)
        ss.append(s_c)
        ts.append(torch.full_like(s_c, t_l))
        idxs.append(idx)
        offsets.append(offsets[-1] + int(idx.numel()))
    return _Pool(torch.cat(rhos), torch.cat(ss), torch.cat(ts), torch.cat(idxs), offsets)


def _optimal_ratio(s0: float, t0: float, pool: _Pool) -> float:
    """Return Φ* = max over supersets of A of (S0 + Σ s)/(T0 + Σ t), by Newton steps on the pool.

    θ_{k+1} = R({ρ > θ_k}) increases monotonically to the fixed point Φ* (every R of a set is ≤ Φ*), and
    {ρ > θ_k} shrinks, so each step intersects with the previous survivors; that also guarantees termination
    when rounding makes θ stall. Survivors are compacted only once they are few, since gathers cost more than
    masked dot products while most of the pool survives.
    """
    rho, s, t = pool.rho, pool.s, pool.t
    theta = (s0 + float(s.sum())) / (t0 + float(t.sum()))
    alive = torch.ones_like(rho, dtype=torch.bool)
    n_alive = int(rho.numel())
    for _ in range(_MAX_NEWTON_STEPS):
        alive &= rho > theta
        n_next = int(torch.count_nonzero(alive))
        if n_next == n_alive:
            return theta
        n_alive = n_next
        if 4 * n_alive < rho.numel():
            pos = _flatnonzero(alive)
            rho, s, t = rho.index_select(0, pos), s.index_select(0, pos), t.index_select(0, pos)
            alive = torch.ones_like(rho, dtype=torch.bool)
            s_sum, t_sum = float(s.sum()), float(t.sum())
        else:
            weight = alive.to(rho.dtype)  # 0/1, so the dot products are masked float64 sums
            s_sum, t_sum = float(torch.dot(weight, s)), float(torch.dot(weight, t))
        theta = (s0 + s_sum) / (t0 + t_sum)
    logger.debug("reconfigure: Newton did not settle in %d steps; sorting %d candidates", _MAX_NEWTON_STEPS, n_alive)
    pos = _flatnonzero(alive)
    rho, s, t = rho.index_select(0, pos), s.index_select(0, pos), t.index_select(0, pos)
    order = torch.sort(rho, descending=True, stable=True).indices
    n = _sequential_prefix(rho[order], s[order], t[order], s0, t0)
    return (s0 + float(s[order[:n]].sum())) / (t0 + float(t[order[:n]].sum()))


def _sequential_prefix(rho: torch.Tensor, s: torch.Tensor, t: torch.Tensor, s_start: float, t_start: float) -> int:
    """Return the longest prefix length n with ρ_k·T_{k−1} > S_{k−1} for every k < n (spec §3.4 vectorised form).

    ``rho``, ``s``, ``t`` are float64 in greedy order; S and T are running sums from ``s_start``/``t_start``,
    accumulated left to right (a cumulative sum seeded with the start value) like the sequential loop.
    """
    if rho.numel() == 0:
        return 0
    s_run = torch.cumsum(torch.cat([s.new_tensor([s_start]), s[:-1]]), dim=0)  # S_{k−1}, exclusive
    t_run = torch.cumsum(torch.cat([t.new_tensor([t_start]), t[:-1]]), dim=0)  # T_{k−1}, exclusive
    fails = _flatnonzero(~(rho * t_run > s_run))
    return int(fails[0]) if fails.numel() else int(rho.numel())


def _first_in_order(rho: torch.Tensor, eligible: torch.Tensor, n: int) -> torch.Tensor:
    """Return a bool mask of the first ``n`` eligible positions in (ρ desc, position asc) order, 1 ≤ n ≤ #eligible.

    Selection instead of a sort: v = n-th largest ρ; take all ρ > v, then the earliest positions with ρ = v.
    """
    values = rho.index_select(0, _flatnonzero(eligible))
    v = _kth_smallest(values, values.numel() - n)  # n-th largest
    strictly = eligible & (rho > v)
    ties = eligible & (rho == v)
    need = n - int(strictly.sum())
    return strictly | (ties & (torch.cumsum(ties, dim=0) <= need))


def _flatnonzero(mask: torch.Tensor) -> torch.Tensor:
    """Return the int64 indices of True entries of a 1-D bool tensor, ascending, on its device.

    On CPU numpy's flatnonzero is about 8x faster than torch.nonzero (which also returns a 2-D tensor), and
    ``x[indices]`` is about 10x faster than ``x[mask]``; this is the hot path of the whole reconfiguration.
    """
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).flatten()


def _kth_smallest(values: torch.Tensor, k: int) -> float:
    """Return element ``k`` (0-based) of the ascending sort of the 1-D tensor ``values``, 0 ≤ k < numel.

    Selection in O(n): numpy's introselect on CPU (about 10x faster than torch.kthvalue there), kthvalue elsewhere.
    """
    if values.device.type == "cpu" and values.dtype in (torch.float16, torch.float32, torch.float64):
        return float(np.partition(values.numpy(), k)[k])
    return float(torch.kthvalue(values, k + 1).values)


def _check_inputs(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    importance: Mapping[str, torch.Tensor],
    names: tuple[str, ...],
    max_decrease: float,
    density_cap: float | None,
    fixed_importance: float,
) -> None:
    """Raise ConfigError unless the inputs satisfy the preconditions of :func:`reconfigure`."""
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
        if not (w.device == m.device == s.device):
            raise ConfigError(f"tensors of {name!r} are on different devices: {w.device}, {m.device}, {s.device}")
        if s.numel():
            low, high = torch.aminmax(s.detach())
            if not (float(low) >= 0.0 and math.isfinite(float(high))):
                raise ConfigError(
                    f"importance[{name!r}] must be finite and >= 0, got min {float(low)}, max {float(high)}"
                )
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
