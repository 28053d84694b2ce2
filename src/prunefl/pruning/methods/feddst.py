"""FedDST (extension; Bibikar et al., AAAI 2022): clients prune by magnitude and regrow by gradient at fixed density."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from prunefl import metrics as K
from prunefl.errors import ConfigError
from prunefl.errors import check_setting as _check
from prunefl.pruning.methods.base import (
    AggregateView,
    BeforeFL,
    ClientHookResult,
    ClientView,
    Decision,
    Method,
    MethodContext,
    ReferenceRun,
    SetupView,
)
from prunefl.pruning.methods.density_target import DensityTargetMethod
from prunefl.pruning.methods.registry import MethodSpec
from prunefl.pruning.schedules import is_reconfiguration_round
from prunefl.pruning.select import drop_and_grow, top_k_per_layer
from prunefl.seeds import METHOD_STREAM, rng
from prunefl.sparse.masks import density, kept_counts

__all__ = [
    "FedDSTSettings",
    "FedDST",
    "readjustment_fraction",
    "layer_counts",
    "client_readjust",
    "aggregate_masks",
    "SPECS",
]

_INITIAL_MASK_KEY = 0  # METHOD_STREAM sub-key of FedDST's initial mask draw


@dataclass(frozen=True)
class FedDSTSettings:
    """FedDST's settings (config table ``[feddst]``; spec §8, an extension not in the official PruneFL code).

    The target density d is the reference run's (``reference.density``, or PruneFL's final density in
    ``prunefl compare``). Defaults are those of the official FedDST code (``bibikar/feddst``, ``dst.py``) and its
    MNIST command line. The local training itself (K steps, B, η, momentum) is the run's ``[fl]`` table; the
    official code trains 10 local epochs with momentum 0.9 and weight decay 1e-3.

    What happens each round, as the official code does it (read for this; the paper's own text was not at hand, so
    "official" below means ``dst.py``/``models.py``, and each departure from them is stated):

    1. **Initial mask** (``before_fl``): each layer l keeps c_l weights, chosen uniformly at random (seeded), with
       the c_l from ``distribution`` so that Σ_l c_l = round(d·|J|). The counts never change afterwards, so
       the density is exactly constant. (Official: the layer's largest initial weights, which for i.i.d.
       initialisation is a random subset too, biased to large initial values.)
    2. **Client readjustment** (readjustment rounds only, after the local steps): each selected client drops
       ⌊α_t·c_l⌋ of its kept weights with the smallest magnitude |w| per layer and regrows as many of its pruned
       weights with the largest gradient magnitude; regrown weights start from 0. The gradient is the round's
       gradient sum |Σ_k g_k| over the K local steps (ranked through the importance N_c·(Σ_k g_k)², same order),
       where RigL and the official code use one minibatch's gradient at the final weights. Drop and grow sets
       are disjoint, so the client's density stays exactly d; the official code grows the top-|g| weights among
       *all* weights, so a kept or just-dropped weight can be "regrown" (and, if kept, zeroed), leaving fewer
       weights than the target. The client sends its new mask with its kept weights.
    3. **Server aggregation**: every coordinate is the sample-weighted mean over the clients whose mask keeps it
       (the sparse weighted average, :func:`prunefl.fl.aggregate.client_masked_aggregate`). The new global mask
       (:func:`aggregate_masks`) keeps, per layer, c_l of the coordinates at least one client keeps (the union
       of the client masks, the official ``min_votes = 0``), those of largest aggregated magnitude |w̄|. Weights
       that only regrowing clients keep are exactly 0 there, so ties at |w̄| = 0 go to the coordinate kept by more
       clients (votes), then to the lower index; the official code leaves them to ``torch.topk``'s unspecified
       order and can end denser than the target. In the other rounds every client trains the global mask and
       nothing changes. (Not implemented: the official ``min_votes`` > 0 and ``remember_old`` options, both off
       by default.)

    Attributes
    ----------
    alpha : float
        α in [0, 1], the readjustment fraction at round 0: the fraction of each layer's kept weights a client
        drops and regrows (default: 0.05, the official MNIST command; its CIFAR-10 command uses 0.01).
    interval : int
        ΔR in [1, 10^6] (``fl.rounds``' bound), FL rounds between readjustments (default: 10, the official
        ``--rounds-between-readjustments``).
    first_round : int
        The first readjustment round, in [0, 10^6]; readjustments fall at rounds first_round + i·ΔR while α_t > 0
        (default: 1: the official code readjusts when (r − 1) mod ΔR = 0).
    end_round : int
        R_end in [0, 10^6], the round at which the cosine annealing reaches 0 and readjustment stops; 0 means half the
        run's rounds, ⌊R/2⌋ (default: 0, the official ``--rate-decay-end``).
    distribution : {"erk", "uniform"}
        How the target density is spread over layers: Erdős–Rényi-Kernel (RigL's: density of layer l ∝
        Σ dims / Π dims, at most 1, the excess redistributed) or the same density in every layer (default:
        "erk", the official ``--sparsity-distribution``; the official ERK scales the sparsities rather than the
        densities and counts biases into layer sizes, which can leave a layer unpruned, so RigL's is used).
    legacy_alpha_squared : bool
        Use α_t = α · α/2·(1 + cos(πt/R_end)), as the official code does (it passes α both as the scale and as
        the amplitude of its decay function), instead of the cosine schedule α/2·(1 + cos(πt/R_end)) that the
        decay function itself implements (RigL's, and the paper's) (default: False).
    """

    alpha: float = 0.05
    interval: int = 10
    first_round: int = 1
    end_round: int = 0
    distribution: Literal["erk", "uniform"] = "erk"
    legacy_alpha_squared: bool = False

    def __post_init__(self) -> None:
        _check(0 <= self.alpha <= 1, "feddst.alpha", self.alpha, "must be in [0, 1]")
        _check(1 <= self.interval <= 10**6, "feddst.interval", self.interval, "must be in [1, 10^6]")
        _check(0 <= self.first_round <= 10**6, "feddst.first_round", self.first_round, "must be in [0, 10^6]")
        _check(0 <= self.end_round <= 10**6, "feddst.end_round", self.end_round,
               "must be in [0, 10^6] (0 = half the rounds)")
        _check(self.distribution in ("erk", "uniform"), "feddst.distribution", self.distribution,
               "must be 'erk' or 'uniform'")


class FedDST(DensityTargetMethod):
    """Federated Dynamic Sparse Training: a fixed-density sparse model whose mask clients readjust every ΔR rounds.

    Bibikar, Vikalo, Wang, Chen, "Federated Dynamic Sparse Training: Computing Less, Communicating Less, Yet
    Learning Better", AAAI 2022 (arXiv:2112.09824). What each round does, and where this differs from the
    official code, is on :class:`FedDSTSettings`. Clients accumulate importance only in readjustment rounds and
    upload nothing besides their weights and (in those rounds) their mask.

    Parameters
    ----------
    settings : FedDSTSettings
        The ``[feddst]`` table.
    context : MethodContext
        Run-wide settings (seed, rounds).
    target_density, reference_source : float, str
        See :class:`~prunefl.pruning.methods.density_target.DensityTargetMethod` (d in (0, 1], else ConfigError).
    """

    name = "feddst"
    clients_change_masks = True  # clients prune and regrow their own masks (the server link accepts them)

    def __init__(
        self, settings: FedDSTSettings, context: MethodContext, target_density: float, reference_source: str = ""
    ) -> None:
        super().__init__(target_density, reference_source)
        self.settings = settings
        self.context = context
        self.end_round = settings.end_round or context.rounds // 2
        self.n_readjustments = 0  # rounds whose aggregation received client masks
        self.n_changed = 0  # global-mask weights swapped over all readjustments (each swap: one out, one in)

    def readjusts(self, round: int) -> bool:
        """Whether clients readjust their masks at the end of ``round`` (first_round + i·ΔR, while α_t > 0)."""
        s = self.settings
        return is_reconfiguration_round(round, s.interval, s.first_round) and self.fraction(round) > 0

    def fraction(self, round: int) -> float:
        """α_t of ``round`` (:func:`readjustment_fraction` with this run's settings)."""
        s = self.settings
        return readjustment_fraction(round, s.alpha, self.end_round, s.legacy_alpha_squared)

    def before_fl(self, view: SetupView) -> BeforeFL:
        """Draw the initial sparse mask: c_l random weights per layer, Σ c_l = round(d·|J|)."""
        shapes = {name: tuple(m.shape) for name, m in view.masks.items()}
        counts = layer_counts(shapes, self.target_density, self.settings.distribution)
        gen = rng(self.context.seed, METHOD_STREAM, _INITIAL_MASK_KEY)
        scores = {name: torch.from_numpy(gen.random(shape)) for name, shape in shapes.items()}  # one draw per layer
        return BeforeFL(masks=top_k_per_layer(scores, counts))

    def track_importance(self, round: int) -> bool:
        return self.readjusts(round)

    def client_hook(self, view: ClientView) -> ClientHookResult | None:
        """In readjustment rounds, drop by magnitude and regrow by the round's gradient sum; else nothing."""
        if not self.readjusts(view.round):
            return None
        if view.importance is None:
            raise RuntimeError(  # the engine tracks importance whenever track_importance says so: our own bug
                f"feddst: client {view.client_id} has no importance in readjustment round {view.round}"
            )
        params = dict(view.model.named_parameters())
        weights = {name: params[name].detach() for name in view.masks}
        masks = client_readjust(view.masks, weights, view.importance, self.fraction(view.round))
        return ClientHookResult(masks=masks, consumed_importance=True)

    def after_aggregate(self, view: AggregateView) -> Decision | None:
        """After a readjustment round: the new global mask from the client masks and the aggregate's magnitudes."""
        if all(m is None for m in view.client_masks):
            return None
        client_masks = [view.masks if m is None else m for m in view.client_masks]
        counts = kept_counts(view.masks)
        new = aggregate_masks(view.state, client_masks, counts)
        removed = {n: int((view.masks[n] & ~new[n]).sum()) for n in new}
        added = {n: int((new[n] & ~view.masks[n]).sum()) for n in new}
        self.n_readjustments += 1
        self.n_changed += sum(added.values())
        record = {
            K.K_REMOVED: removed,
            K.K_ADDED: added,
            K.K_KEPT: kept_counts(new),
            K.K_DENSITY_BEFORE: density(view.masks),
            K.K_DENSITY_AFTER: density(new),
            K.K_READJUST_FRACTION: self.fraction(view.round),
        }
        return Decision(masks=new, record=record)

    def _summary_entries(self) -> dict[str, Any]:
        return {
            "readjustments": self.n_readjustments,
            "weights-changed": self.n_changed,
            "readjust-end-round": self.end_round,
            "distribution": self.settings.distribution,
        }

    def state_dict(self) -> dict[str, Any]:
        # The schedule is a function of the round, and the masks are the server's: only the counters carry over.
        return {"readjustments": self.n_readjustments, "weights-changed": self.n_changed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - {"readjustments", "weights-changed"})
        if unknown:
            raise ValueError(f"FedDST state has unknown keys {unknown}; expected 'readjustments', 'weights-changed'")
        self.n_readjustments = int(state.get("readjustments", 0))
        self.n_changed = int(state.get("weights-changed", 0))


def readjustment_fraction(round: int, alpha: float, end_round: int, legacy_squared: bool = False) -> float:
    """Return α_t = α/2·(1 + cos(π·t/R_end)) for t < R_end, else 0: the cosine-annealed readjustment fraction.

    Parameters
    ----------
    round : int
        FL round t, ≥ 0.
    alpha : float
        α = α_0, in [0, 1].
    end_round : int
        R_end; from this round on α_t = 0 (R_end = 0: always 0).
    legacy_squared : bool
        Multiply by α once more, as the official code does (default: False).

    Examples
    --------
    >>> readjustment_fraction(0, 0.2, 100), readjustment_fraction(50, 0.2, 100), readjustment_fraction(100, 0.2, 100)
    (0.2, 0.1, 0.0)
    >>> round(readjustment_fraction(0, 0.2, 100, legacy_squared=True), 12)
    0.04
    """
    if round >= end_round:
        return 0.0
    value = alpha / 2 * (1 + math.cos(math.pi * round / end_round))
    return alpha * value if legacy_squared else value


def layer_counts(
    shapes: Mapping[str, Sequence[int]], target_density: float, distribution: Literal["erk", "uniform"] = "erk"
) -> dict[str, int]:
    """Return the kept-weight count c_l of every layer, Σ_l c_l = round(d·|J|), spread by ``distribution``.

    ``uniform`` gives every layer density d. ``erk`` (Erdős–Rényi-Kernel, Evci et al. 2020) gives layer l the
    density min(1, ε·Σ dims / Π dims), ε chosen so that the counts add up to d·|J|. Real counts are rounded by
    the largest-remainder rule (floors first, then +1 to the largest fractional parts, ties to the earlier
    layer), so the total is exact.

    Parameters
    ----------
    shapes : Mapping[str, Sequence[int]]
        Each prunable weight's shape, in mask order.
    target_density : float
        d in [0, 1].
    distribution : {"erk", "uniform"}
        (default: "erk").

    Raises
    ------
    ConfigError
        ``target_density`` is outside [0, 1] or ``distribution`` is unknown.

    Examples
    --------
    >>> layer_counts({"a": (10, 10), "b": (2, 5)}, 0.5, "uniform")
    {'a': 50, 'b': 5}
    >>> layer_counts({"a": (10, 10), "b": (2, 5)}, 0.5)
    {'a': 45, 'b': 10}
    """
    _check(0 <= target_density <= 1, "target density", target_density, "must be in [0, 1]")
    names = list(shapes)
    n = np.array([math.prod(shapes[k]) for k in names], dtype=np.float64)  # (n_layers,)
    budget = target_density * n.sum()
    if distribution == "uniform":
        share = np.full(len(names), target_density)
    elif distribution == "erk":
        raw = np.array([sum(shapes[k]) / max(math.prod(shapes[k]), 1) for k in names])  # ER-kernel ratio
        # Want Σ_l n_l·min(1, ε·raw_l) = d·|J|. Solve ε over the layers not yet dense; a layer with ε·raw_l > 1
        # becomes dense and the rest share what is left. Making a layer dense only raises ε (it took less than
        # its ε-share), so every layer over 1 now stays over 1: all of them can turn dense at once.
        dense = np.zeros(len(names), dtype=bool)
        eps = 0.0
        while (~dense).any():
            denominator = float((raw[~dense] * n[~dense]).sum())
            eps = (budget - n[dense].sum()) / denominator if denominator > 0 else 0.0
            over = ~dense & (eps * raw > 1)
            if not over.any():
                break
            dense |= over
        share = np.where(dense, 1.0, np.minimum(eps * raw, 1.0))
    else:
        raise ConfigError(f"distribution must be 'erk' or 'uniform', got {distribution!r}")
    real = share * n
    counts = np.minimum(np.floor(real + 1e-9), n)  # 1e-9: a count that is whole up to float error stays whole
    missing = int(round(budget)) - int(counts.sum())
    frac = real - counts  # in (-1e-9, 1) per layer
    if missing > 0:
        frac = np.where(counts < n, frac, -np.inf)
        counts[np.argsort(-frac, kind="stable")[:missing]] += 1
    elif missing < 0:  # only through the float tolerance above
        counts[np.argsort(np.where(counts > 0, frac, np.inf), kind="stable")[:-missing]] -= 1
    return {k: int(c) for k, c in zip(names, counts)}


def client_readjust(
    masks: Mapping[str, Tensor], weights: Mapping[str, Tensor], importance: Mapping[str, Tensor], fraction: float
) -> dict[str, Tensor]:
    """Return a client's readjusted masks: per layer, drop ⌊α·c_l⌋ kept weights of least |w|, grow as many pruned
    weights of largest importance (the squared round gradient sum, ordered like |Σ_k g_k|).

    Drop and grow sets are disjoint (:func:`prunefl.pruning.select.drop_and_grow`), so every layer keeps c_l.

    >>> m = {"w": torch.tensor([True, True, True, True, False, False])}
    >>> w = {"w": torch.tensor([0.5, -0.1, 2.0, 0.3, 0.0, 0.0])}
    >>> g = {"w": torch.tensor([9.0, 9.0, 9.0, 9.0, 1.0, 4.0])}
    >>> client_readjust(m, w, g, 0.5)["w"].tolist()
    [True, False, True, False, True, True]
    """
    counts = {name: int(fraction * int(mask.sum())) for name, mask in masks.items()}  # ⌊α·c_l⌋
    drop_scores = {name: weights[name].abs() for name in masks}
    grow_scores = {name: torch.as_tensor(importance[name]) for name in masks}
    new, _, _ = drop_and_grow(masks, drop_scores, grow_scores, counts)
    return new


def aggregate_masks(
    state: Mapping[str, Tensor], client_masks: Sequence[Mapping[str, Tensor]], counts: Mapping[str, int]
) -> dict[str, Tensor]:
    """Return the new global mask: per layer, the ``counts[name]`` coordinates of the union of the client masks
    with the largest aggregated magnitude |w̄|; ties at |w̄| = 0 go to more votes, then to the lower index.

    ``state`` is the sparse weighted average of the clients' weights, so a coordinate only regrowing clients
    keep is 0 there and ranks below every trained weight; among such coordinates those more clients regrew come
    first. When every client mask keeps ``counts[name]`` weights, the union has at least as many, and the new mask
    keeps exactly ``counts[name]``.

    Parameters
    ----------
    state : Mapping[str, Tensor]
        The aggregated global state (at least the masked entries).
    client_masks : Sequence[Mapping[str, Tensor]]
        Each client's bool masks (every client processed K·B samples, so counting votes equals weighting them
        by samples).
    counts : Mapping[str, int]
        Weights to keep per layer.

    Examples
    --------
    >>> s = {"w": torch.tensor([0.9, 0.0, 0.2, 0.0, 0.0])}
    >>> a = {"w": torch.tensor([True, True, False, False, True])}
    >>> b = {"w": torch.tensor([True, False, True, False, True])}
    >>> aggregate_masks(s, [a, b], {"w": 3})["w"].tolist()
    [True, False, True, False, True]
    """
    union, votes = {}, {}
    for name in counts:  # a few layers; each step is vectorised over the layer
        stacked = torch.stack([torch.as_tensor(m[name], dtype=torch.bool) for m in client_masks])  # (n_clients, *shape)
        votes[name] = stacked.sum(dim=0).to(torch.float64)
        union[name] = votes[name] > 0
    magnitude = {name: state[name].detach().abs().to(torch.float64) for name in counts}
    trained = {name: union[name] & (magnitude[name] > 0) for name in counts}
    first = top_k_per_layer(magnitude, counts, within=trained)
    rest = {name: counts[name] - int(first[name].sum()) for name in counts}
    second = top_k_per_layer(votes, rest, within={name: union[name] & ~first[name] for name in counts})
    return {name: first[name] | second[name] for name in counts}


def _build(settings: FedDSTSettings, context: MethodContext, reference: ReferenceRun | None) -> Method:
    if reference is None or reference.density is None:  # build_method checks `needs` first: our own bug
        raise RuntimeError("feddst was built without a reference density")
    return FedDST(settings, context, reference.density, reference.source)


SPECS = [
    MethodSpec("feddst", "FedDST", _build, "Federated Dynamic Sparse Training (Bibikar et al., AAAI 2022): a fixed-"
               "density mask that clients readjust (magnitude drop, gradient regrowth) every ΔR rounds",
               section="feddst", needs=frozenset({"density"}), extension=True, colour="C6"),
]
