"""The official online-learning baseline (spec §8, after Han et al. ICDCS 2020); uploads raw training samples.

The server tunes k, the number of retained weights, by online convex optimisation with a sign estimate of the
cost gradient: each round it compares the current model (k weights) with the same model re-pruned to k_aux < k on
a few raw training samples the clients upload, converts the loss difference into a cost, steps k by η_t against
the sign of the estimated gradient, and rebuilds the mask by magnitude, every layer at the same fraction k/N.
The pieces are pure functions (:func:`update_k`, :func:`online_cost`, :func:`cost_of_aux`,
:func:`magnitude_masks`, :func:`upload_samples`); :class:`OnlineLearning` only connects them to the protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from prunefl import metrics as K
from prunefl.data.dataset import ArrayDataset
from prunefl.errors import check_setting as _check
from prunefl.pruning.adaptive import objective_time_model
from prunefl.pruning.methods.base import (
    AggregateView,
    ClientHookResult,
    ClientView,
    Decision,
    Method,
    MethodContext,
    ReferenceRun,
)
from prunefl.pruning.methods.registry import MethodSpec
from prunefl.pruning.select import top_k_per_layer
from prunefl.seeds import METHOD_STREAM, rng
from prunefl.sparse.masks import density, kept_counts
from prunefl.timing.model import TimeModel

__all__ = [
    "OnlineSettings",
    "OnlineControl",
    "OnlineLearning",
    "WARNING",
    "SAMPLES_KEY",
    "LABELS_KEY",
    "start_control",
    "step_size",
    "stochastic_round",
    "round_draws",
    "update_k",
    "online_cost",
    "cost_of_aux",
    "magnitude_masks",
    "layer_counts",
    "upload_samples",
    "SPECS",
]

logger = logging.getLogger(__name__)

WARNING = "uploads raw training samples to the server (a privacy leak the official baseline accepts)"
SAMPLES_KEY = "online-samples"  # extras key: prepared model inputs, float32, (n, *input_shape)
LABELS_KEY = "online-labels"  # extras key: their labels, (n,)

# Constants of the official controller (OcoGradEstimation), not exposed as settings:
_K_AUX_FLOOR = 0.1  # k_aux never drops below ⌈0.1·k_min⌉ (the official "delta")
_RANGE_GROWTH = 1.5  # the observed window [min, max] is widened to [min/1.5, max·1.5] (the official "alpha")


@dataclass(frozen=True)
class OnlineSettings:
    """Settings of the online baseline (config table ``[online]``, spec §8). Defaults are the official ones.

    Attributes
    ----------
    max_upload : int
        Raw training samples each selected client uploads per round (the official MAX_NUM_UPLOAD), at most 10^7
        (a client uploads at most its partition) (default: 5).
    start_round : int
        First round in which k is updated and samples are uploaded; the official server starts once two test
        evaluations exist, i.e. at round 10. (Its clients send samples every round, unused before then; sending
        them only when used changes no decision, only the bytes counted.) At most 10^6, ``fl.rounds``' bound
        (default: 10).
    hold_rounds : int
        Rounds in a row k is held while the estimated gradient is undefined (the losses did not both fall); the
        round after that many holds k grows by η_t (the official timer ``<= 10``, i.e. 11 holds); at most 10^6,
        ``fl.rounds``' bound (default: 11).
    range_every : int
        k-updates (held rounds do not count) between attempts to narrow the range [k_min, k_max]; at most 10^6,
        ``fl.rounds``' bound (default: 20).
    k_min_fraction : float
        k_min = round(k_min_fraction·N), at least 1, where N is the number of prunable weights; the lower end of
        the initial range, and the floor of every later one (default: 0.002).
    k_aux_fraction : float
        The first k_aux = ⌈k_aux_fraction·N⌉, in (0, 1) (default: 0.9).
    legacy_cost_after_repruning : bool
        Reproduce the official quirk: the cost c + (k/N)·Σ_l t_l·|m_l| is computed after the model was re-pruned
        to k_aux, so |m_l| are the k_aux mask's counts. False: |m_l| are the layer sizes n_l, so the cost of k is
        that of the mask keeping fraction k/N of every layer, as intended (spec §8, §10 item 17) (default: True).
    """

    max_upload: int = 5
    start_round: int = 10
    hold_rounds: int = 11
    range_every: int = 20
    k_min_fraction: float = 0.002
    k_aux_fraction: float = 0.9
    legacy_cost_after_repruning: bool = True

    def __post_init__(self) -> None:
        _check(1 <= self.max_upload <= 10**7, "online.max_upload", self.max_upload, "must be in [1, 10^7]")
        _check(0 <= self.start_round <= 10**6, "online.start_round", self.start_round, "must be in [0, 10^6]")
        _check(0 <= self.hold_rounds <= 10**6, "online.hold_rounds", self.hold_rounds, "must be in [0, 10^6]")
        _check(1 <= self.range_every <= 10**6, "online.range_every", self.range_every, "must be in [1, 10^6]")
        _check(0 < self.k_min_fraction < 1, "online.k_min_fraction", self.k_min_fraction, "must be in (0, 1)")
        _check(0 < self.k_aux_fraction < 1, "online.k_aux_fraction", self.k_aux_fraction, "must be in (0, 1)")
        _check(self.k_min_fraction < self.k_aux_fraction, "online.k_min_fraction", self.k_min_fraction,
               f"must be < online.k_aux_fraction ({self.k_aux_fraction})")


@dataclass(frozen=True)
class OnlineControl:
    """The state of the k controller between rounds (spec §8); every field is a plain int, so it is JSON-able.

    Attributes
    ----------
    k, k_aux : int
        Retained weights of the model, and of the auxiliary model compared with it (k_aux < k).
    k_min, k_max : int
        The current range k is clipped to; its width is the step-size scale d = k_max − k_min.
    floor_k_min, n_total : int
        The original range [round(k_min_fraction·N), N]; a new range never leaves it.
    t_ref : int
        The round count t (= round + 1) of the last accepted range change, 0 before any.
    hold : int
        Rounds held in a row because the gradient estimate was undefined.
    window_min, window_max : int
        Smallest and largest k since the last range attempt (start inverted: N and floor_k_min).
    window_updates : int
        k-updates since the last range attempt.
    span_prev : int
        t − t_ref at the last accepted range change (a new range must not come sooner).
    """

    k: int
    k_aux: int
    k_min: int
    k_max: int
    floor_k_min: int
    n_total: int
    t_ref: int = 0
    hold: int = 0
    window_min: int = 0
    window_max: int = 0
    window_updates: int = 0
    span_prev: int = 0


def start_control(n_total: int, k_min_fraction: float = 0.002, k_aux_fraction: float = 0.9) -> OnlineControl:
    """The controller at the start: k = N, k_aux = ⌈0.9N⌉, range [round(0.002N), N] (spec §8).

    k_min is at least 1, so that a model always keeps a weight (the official value is 0 only for N ≤ 250).

    >>> c = start_control(1000)
    >>> c.k, c.k_aux, c.k_min, c.k_max
    (1000, 900, 2, 1000)
    """
    k_min = max(1, int(round(k_min_fraction * n_total)))
    return OnlineControl(
        k=n_total,
        k_aux=math.ceil(k_aux_fraction * n_total),  # float product, as the official np.ceil(N * 0.9)
        k_min=k_min,
        k_max=n_total,
        floor_k_min=k_min,
        n_total=n_total,
        window_min=n_total,  # inverted, so the first update sets both
        window_max=k_min,
    )


def step_size(control: OnlineControl, t: int) -> float:
    """η_t = d / √(2(t − t_ref)), with d = k_max − k_min and t = round + 1 (spec §8).

    >>> step_size(start_control(1000), t=8)  # 998 / √16
    249.5
    """
    return (control.k_max - control.k_min) / math.sqrt(2 * (t - control.t_ref))


def stochastic_round(x: float, draw: float) -> int:
    """Round ``x`` up with probability equal to its fractional part, given a uniform ``draw`` in [0, 1).

    >>> stochastic_round(12.25, draw=0.2), stochastic_round(12.25, draw=0.3), stochastic_round(7.0, draw=0.0)
    (13, 12, 7)
    """
    floor = math.floor(x)
    return int(floor) + (1 if draw < x - floor else 0)


def round_draws(seed: int, round: int) -> tuple[float, float]:
    """The two uniform draws of ``round``'s stochastic roundings (k, then k_aux), from the method's own stream.

    Keyed by round, so a resumed run draws what the uninterrupted one did.

    >>> round_draws(0, 10) == round_draws(0, 10) != round_draws(0, 11)
    True
    """
    u = rng(seed, METHOD_STREAM, round).random(2)
    return float(u[0]), float(u[1])


def update_k(
    control: OnlineControl,
    cost: float,
    cost_aux: float | None,
    t: int,
    draws: tuple[float, float],
    hold_rounds: int = 11,
    range_every: int = 20,
) -> OnlineControl:
    """One step of the controller (spec §8 steps 3–4): the new k and k_aux, the hold counter and the range.

    With the gradient estimate defined, ``k ← SR(k − η_t·sign((cost − cost_aux)/(k − k_aux)))``; without it k is
    held for up to ``hold_rounds`` rounds in a row, then ``k ← SR(k + η_t)``. k is clipped to [k_min, k_max];
    then ``k_aux ← SR(k − η_t/2)`` within [⌈0.1·k_min⌉, k − 1]. Every ``range_every`` updates (held rounds do not
    count) the range may become [max(min/1.5, floor), min(max·1.5, N)] of the k's seen since the last attempt:
    accepted only if non-empty, the rounds since the last change are not fewer than last time, and
    old + new width ≤ √2·old width.

    Parameters
    ----------
    control : OnlineControl
        The state before this round.
    cost, cost_aux : float, float or None
        The cost of k, and the loss-scaled cost of k_aux (:func:`cost_of_aux`; None when undefined).
    t : int
        round + 1.
    draws : tuple of float
        Uniform draws in [0, 1) for the stochastic roundings of k and of k_aux (:func:`round_draws`).
    hold_rounds, range_every : int
        See :class:`OnlineSettings` (default: 11, 20).

    Returns
    -------
    OnlineControl
        The state after this round.

    Examples
    --------
    >>> c = start_control(1000)  # t = 8: η = 998/4 = 249.5; cost > cost_aux: k falls by η
    >>> new = update_k(c, cost=2.0, cost_aux=1.0, t=8, draws=(0.3, 0.9))
    >>> new.k, new.k_aux  # SR(750.5) with draw 0.3 < 0.5 -> 751; SR(751 - 124.75 = 626.25), 0.9 -> 626
    (751, 626)
    """
    eta = step_size(control, t)
    held = False
    hold = 0
    if cost_aux is not None:
        # k > k_aux always, so the sign is that of cost − cost_aux; kept in the official form
        sign = float(np.sign((cost - cost_aux) / (control.k - control.k_aux)))
        k = stochastic_round(control.k - eta * sign, draws[0])
    elif control.hold < hold_rounds:
        k, held, hold = control.k, True, control.hold + 1
    else:
        k = stochastic_round(control.k + eta, draws[0])  # losses kept rising: try a larger model
    k = min(max(k, control.k_min), control.k_max)
    k_aux = stochastic_round(k - eta / 2.0, draws[1])
    k_aux = max(k_aux, math.ceil(control.k_min * _K_AUX_FLOOR))
    k_aux = min(k_aux, k - 1)
    new = dataclasses.replace(control, k=k, k_aux=k_aux, hold=hold)
    if not held:
        new = dataclasses.replace(
            new,
            window_min=min(new.window_min, k),
            window_max=max(new.window_max, k),
            window_updates=new.window_updates + 1,
        )
    if new.window_updates >= range_every:
        new = _update_range(new, t)
    return new


def online_cost(time_model: TimeModel, counts: Mapping[str, int], k: int, n_total: int, local_steps: int) -> float:
    """``cost(k) = c + (k/N)·Σ_l t_l·|m_l|`` with the device's round-time model (spec §2.2, §8 step 2).

    ``counts`` are the |m_l| used (the k_aux mask's under the official quirk, else the layer sizes).

    >>> tm = TimeModel(("a", "b"), (1.0, 2.0), 5.0, 0.0)  # t = (1, 2), c = 5 at K = 1
    >>> online_cost(tm, {"a": 9, "b": 18}, k=27, n_total=30, local_steps=1)  # 5 + 0.9·(9 + 36)
    45.5
    """
    t = time_model.per_weight_round_s(local_steps)  # (n_layers,)
    m = np.asarray([counts[name] for name in time_model.layer_names], dtype=np.float64)
    return time_model.constant_round_s(local_steps) + (k / n_total) * float(np.dot(t, m))


def cost_of_aux(cost_aux_raw: float, loss_prev: float, loss_cur: float, loss_aux: float) -> float | None:
    """``cost(k_aux)·(L_prev − L_cur)/(L_prev − L_aux)`` when both losses fell from L_prev, else None (spec §8).

    >>> cost_of_aux(10.0, loss_prev=3.0, loss_cur=1.0, loss_aux=2.0), cost_of_aux(10.0, 3.0, 1.0, 3.0)
    (20.0, None)
    """
    if loss_prev > loss_cur and loss_prev > loss_aux:
        return cost_aux_raw * (loss_prev - loss_cur) / (loss_prev - loss_aux)
    return None


def layer_counts(totals: Mapping[str, int], k: int) -> dict[str, int]:
    """Weights each layer keeps at the common fraction k/N: n_l − ⌊n_l·(N − k)/N⌋ (spec §8 step 5).

    The official ``prune_by_pct(1 − k/N)`` prunes ⌊n_l·(1 − k/N)⌋; this is the same in exact integer arithmetic.

    >>> layer_counts({"a": 10, "b": 20}, k=18)
    {'a': 6, 'b': 12}
    """
    n_total = sum(totals.values())
    return {name: n - (n * (n_total - k)) // n_total for name, n in totals.items()}


def magnitude_masks(weights: Mapping[str, Tensor], k: int) -> dict[str, Tensor]:
    """Reset to dense, then keep the largest-magnitude weights of every layer at the fraction k/N (spec §8 step 5).

    Every coordinate competes, pruned ones included, so stale server values can come back, as in the official
    code. Ties go to the lower index.

    >>> w = {"a": torch.tensor([0.1, -3.0, 2.0, 0.0])}
    >>> magnitude_masks(w, k=2)["a"].tolist()
    [False, True, True, False]
    """
    scores = {name: w.detach().abs() for name, w in weights.items()}
    return top_k_per_layer(scores, layer_counts({n: w.numel() for n, w in weights.items()}, k))


def upload_samples(
    dataset: ArrayDataset, partition: np.ndarray, n: int, generator: np.random.Generator
) -> dict[str, np.ndarray]:
    """A client's raw-sample upload: ``n`` of its training samples (fewer if it has fewer), drawn without
    replacement, as prepared model inputs (float32) and labels.

    >>> import torch
    >>> ds = ArrayDataset("t", torch.zeros((4, 1, 2, 2), dtype=torch.uint8), torch.arange(4), torch.zeros((1, 1, 2, 2),
    ...                   dtype=torch.uint8), torch.zeros(1, dtype=torch.long), 4)
    >>> up = upload_samples(ds, np.array([1, 3]), 5, np.random.default_rng(0))
    >>> up[SAMPLES_KEY].shape, up[SAMPLES_KEY].dtype, sorted(up[LABELS_KEY].tolist())
    ((2, 1, 2, 2), dtype('float32'), [1, 3])
    """
    chosen = generator.choice(partition, size=min(n, len(partition)), replace=False)
    idx = torch.from_numpy(np.asarray(chosen, dtype=np.int64))
    x = dataset.prepare(dataset.x_train[idx], train=False)
    return {SAMPLES_KEY: x.numpy().astype(np.float32, copy=False), LABELS_KEY: dataset.y_train[idx].numpy()}


class OnlineLearning(Method):
    """The online-learning baseline: k tuned each round by sign-based online convex optimisation (spec §8).

    After Han, Wang, Leung, "Adaptive gradient sparsification for efficient federated learning: an online
    learning approach", ICDCS 2020, as the official PruneFL code runs it (``bases/fl/simulation/online.py``).
    From ``start_round`` every selected client uploads ``max_upload`` raw training samples (a privacy leak); on
    them the server evaluates the previous global model (L_prev), the aggregate (L_cur) and the aggregate
    re-pruned to k_aux (L_aux), estimates the cost gradient's sign, steps k, and rebuilds the mask by magnitude
    at the fraction k/N in every layer. The round time model is that of the slowest selected device (as in
    PruneFL's objective, :func:`prunefl.pruning.adaptive.objective_time_model`).

    Parameters
    ----------
    settings : OnlineSettings
        The ``[online]`` table.
    context : MethodContext
        Run-wide settings (seed, local steps, communication model).
    """

    def __init__(self, settings: OnlineSettings, context: MethodContext) -> None:
        self.settings = settings
        self.context = context
        self.control: OnlineControl | None = None  # set at the first update, once N is known
        self.n_updates = 0

    def client_hook(self, view: ClientView) -> ClientHookResult | None:
        """From ``start_round``: upload ``max_upload`` raw training samples, chosen with the client's stream."""
        if view.round < self.settings.start_round:
            return None
        return ClientHookResult(extras=upload_samples(view.dataset, view.partition, self.settings.max_upload, view.rng))

    def after_aggregate(self, view: AggregateView) -> Decision | None:
        """From ``start_round``: compare the three models on the uploaded samples, update k, rebuild the masks."""
        s = self.settings
        if view.round < s.start_round:
            return None
        if view.evaluate_loss is None:
            raise RuntimeError("the online baseline needs an engine that provides evaluate_loss")  # our own bug
        x, y = _uploaded(view.extras, view.round)
        weights = {name: view.state[name] for name in view.masks}
        if self.control is None:
            self.control = start_control(sum(m.numel() for m in view.masks.values()), s.k_min_fraction,
                                         s.k_aux_fraction)
        control = self.control
        n_total = control.n_total

        loss_prev = view.evaluate_loss(view.previous_state, view.masks, x, y)
        loss_cur = view.evaluate_loss(view.state, view.masks, x, y)
        aux_masks = magnitude_masks(weights, control.k_aux)
        loss_aux = view.evaluate_loss(view.state, aux_masks, x, y)

        local_steps = self.context.local_steps
        tm = objective_time_model([view.devices[c] for c in view.clients], view.masks, local_steps,
                                  self.context.comm)  # type: ignore[arg-type]
        # the official quirk: the cost is computed on the model already re-pruned to k_aux
        sizes = {n: m.numel() for n, m in view.masks.items()}
        counts = kept_counts(aux_masks) if s.legacy_cost_after_repruning else sizes
        cost = online_cost(tm, counts, control.k, n_total, local_steps)
        cost_aux = cost_of_aux(online_cost(tm, counts, control.k_aux, n_total, local_steps), loss_prev, loss_cur,
                               loss_aux)
        t = view.round + 1
        eta = step_size(control, t)
        new = update_k(control, cost, cost_aux, t, round_draws(self.context.seed, view.round), s.hold_rounds,
                       s.range_every)
        masks = magnitude_masks(weights, new.k)
        self.control = new
        self.n_updates += 1

        changed = any(not torch.equal(masks[n], view.masks[n]) for n in masks)
        record = {
            K.K_K_BEFORE: control.k,
            K.K_K: new.k,
            K.K_K_AUX: new.k_aux,
            K.K_K_MIN: new.k_min,
            K.K_K_MAX: new.k_max,
            K.K_STEP_SIZE: eta,
            K.K_HELD: cost_aux is None and new.hold > 0,
            K.K_COST: cost,
            K.K_COST_AUX: cost_aux,
            K.K_LOSS_PREV: loss_prev,
            K.K_LOSS_CUR: loss_cur,
            K.K_LOSS_AUX: loss_aux,
            K.K_REMOVED: {n: int((view.masks[n] & ~masks[n]).sum()) for n in masks},
            K.K_ADDED: {n: int((masks[n] & ~view.masks[n]).sum()) for n in masks},
            K.K_KEPT: kept_counts(masks),
            K.K_DENSITY_BEFORE: density(view.masks),
            K.K_DENSITY_AFTER: density(masks),
        }
        logger.debug("online round %d: k %d -> %d (k_aux %d), cost %.4g vs %s, losses %.4g / %.4g / %.4g",
                     view.round, control.k, new.k, new.k_aux, cost, cost_aux, loss_prev, loss_cur, loss_aux)
        # an unchanged mask is not re-sent: a new mask version would reset the clients' momentum for nothing
        return Decision(masks=masks if changed else None, record=record)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {K.K_WARNING: WARNING, K.K_K_UPDATES: self.n_updates}
        if self.control is not None:
            out.update({K.K_K: self.control.k, K.K_K_AUX: self.control.k_aux, K.K_K_MIN: self.control.k_min,
                        K.K_K_MAX: self.control.k_max})
        return out

    def state_dict(self) -> dict[str, Any]:
        """The controller's fields (None before the first update) and the number of updates; JSON-able."""
        return {
            "control": None if self.control is None else dataclasses.asdict(self.control),
            "updates": self.n_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the stochastic-rounding draws are keyed by round, so nothing else is needed."""
        control = state["control"]
        self.control = None if control is None else OnlineControl(**{k: int(v) for k, v in control.items()})
        self.n_updates = int(state["updates"])


def _uploaded(extras: Sequence[Mapping[str, np.ndarray] | None], round: int) -> tuple[Tensor, Tensor]:
    """Every reply's uploaded samples and labels, concatenated in reply order."""
    found = [e for e in extras if e is not None and SAMPLES_KEY in e]
    if not found:
        raise RuntimeError(f"round {round}: no client uploaded samples for the online baseline")  # our own bug
    x = torch.from_numpy(np.concatenate([e[SAMPLES_KEY] for e in found]))
    y = torch.from_numpy(np.concatenate([e[LABELS_KEY] for e in found]))
    return x, y


def _update_range(control: OnlineControl, t: int) -> OnlineControl:
    """Try to narrow [k_min, k_max] to the widened window of recent k's (spec §8 step 4); always reset the window."""
    new_min = int(round(max(control.window_min / _RANGE_GROWTH, control.floor_k_min)))
    new_max = int(round(min(control.window_max * _RANGE_GROWTH, control.n_total)))
    width_new, width_old = new_max - new_min, control.k_max - control.k_min
    span = t - control.t_ref
    reset = dataclasses.replace(control, window_min=control.n_total, window_max=control.floor_k_min, window_updates=0)
    if width_new > 0 and span >= control.span_prev and width_old + width_new <= width_old * math.sqrt(2):
        logger.debug("online range at t=%d: [%d, %d] -> [%d, %d]", t, control.k_min, control.k_max, new_min, new_max)
        return dataclasses.replace(reset, k_min=new_min, k_max=new_max, t_ref=t, span_prev=span)
    return reset


def _build(settings: OnlineSettings, context: MethodContext, reference: ReferenceRun | None) -> Method:
    return OnlineLearning(settings, context)


SPECS = [
    MethodSpec("online", "Online", _build, "online convex optimisation of the number of retained weights with "
               "sign-based gradient estimates (Han et al. ICDCS 2020, official baseline)", section="online",
               warning=WARNING, colour="C3"),
]
