"""Initial pruning (IP) at one selected client, on a few of its own batches, before FL starts (spec §3.7).

The client trains on its fixed batches with plain SGD; once its training accuracy on them reaches
factor/#classes it reconfigures every ``interval`` IP rounds with the same objective as FL (δ constant, no cap),
and stops after ``stable_reconfigs`` consecutive reconfigurations that changed the density by at most the
tolerance, or after ``max_rounds``. The mask is applied inside the step here, so pruned weights get zero
gradient and zero importance: IP only shrinks (spec §3.2, "IP stage").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunefl.pruning.adaptive import fixed_importance, reconfig_record
from prunefl.pruning.reconfigure import Reconfiguration, reconfigure
from prunefl.sparse.masks import apply_masks_, density, get_masks, kept_counts, mask_gradients_, set_masks_
from prunefl.timing.model import TimeModel

__all__ = ["InitialPruningSettings", "InitialPruningResult", "IPRound", "initial_pruning"]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InitialPruningSettings:
    """IP settings; each field means what the ``ip_*`` field of ``PruningConfig`` means."""

    lr: float
    start_accuracy: float
    local_steps: int  # the FL K, for the time model's round time
    check_every: int = 10
    interval: int = 50
    max_rounds: int = 1000
    density_tolerance: float = 0.1
    stable_reconfigs: int = 5
    max_decrease: float = 0.3
    compute_scale: float = 1.0


@dataclass(frozen=True)
class IPRound:
    """What one IP round did (one pass over the fixed batches)."""

    round: int
    train_loss: float
    train_accuracy: float | None  # measured before the pass, on check rounds until IP started
    compute_s: float  # simulated compute time of the pass under the time model
    wall_s: float
    density: float
    layer_density: dict[str, float]
    reconfig: dict[str, Any] | None


@dataclass
class InitialPruningResult:
    """Final IP state: the model holds the pruned weights; ``state`` restores stale values at pruned coordinates."""

    state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    rounds: int
    started_at: int | None
    stop_reason: str
    sim_compute_s: float
    reconfigurations: list[Reconfiguration] = field(default_factory=list)


def initial_pruning(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    time_model: TimeModel,
    settings: InitialPruningSettings,
    on_round: Callable[[IPRound], None] | None = None,
) -> InitialPruningResult:
    """Run initial pruning on ``model`` with the fixed ``batches`` (already prepared input tensors).

    Modifies ``model`` in place: weights are trained and masks (buffers, see :mod:`prunefl.sparse.masks`) shrink.
    The returned ``state`` is the model's state (mask buffers excluded) with every pruned coordinate holding
    the value it had when it was pruned, as the official IP model keeps it (it masks inside ``forward``), so
    that FL's ``regrow_init = "stale"`` regrows IP-pruned weights from those values.
    """
    masks = get_masks(model)
    mask_keys = {f"{n}_mask" for n in masks}
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.SGD([p for _, p in params], lr=settings.lr)
    # float32 sums of squares: a few hundred positive terms lose < 1e-4 relative, far below what separates the
    # weights reconfiguration ranks; float64 made each IP step ~15x slower on Conv-2 (a 51 MB copy per step).
    importance = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
    stale = {n: model.get_parameter(n).detach().clone() for n in masks}
    started: int | None = None
    flags: list[bool] = []
    prev_density: float | None = None
    history: list[Reconfiguration] = []
    sim_compute_s = 0.0
    stop_reason = "max_rounds"
    rounds_done = 0
    apply_masks_(model)
    for i in range(settings.max_rounds):
        t0 = time.perf_counter()
        train_acc = None
        if started is None and i % settings.check_every == 0:
            train_acc = _accuracy(model, batches)
            if train_acc >= settings.start_accuracy:
                started = i
                logger.info("IP: training accuracy %.4f >= %.4f at IP round %d; reconfiguring from now",
                            train_acc, settings.start_accuracy, i)
        kept = kept_counts(masks)
        loss_sum = 0.0
        model.train()
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            mask_gradients_(model)  # IP masks inside the step: pruned weights get zero gradient (spec §3.2)
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in params]
            torch._foreach_addcmul_([importance[n] for n, _ in params], grads, grads)  # s += g² per step
            optimizer.step()
            apply_masks_(model)
            loss_sum += float(loss.detach())
        step_s = time_model.compute_time_s(kept, len(batches)) * settings.compute_scale
        sim_compute_s += step_s
        record = None
        if started is not None and (i - started) % settings.interval == 0:
            rec = _reconfigure(model, masks, importance, time_model, settings)
            newly_pruned = {n: masks[n] & ~rec.masks[n] for n in masks}
            with torch.no_grad():
                for n in masks:  # ~4-20 layers; remember the value a weight had when it was pruned
                    stale[n] = torch.where(newly_pruned[n], model.get_parameter(n), stale[n])
            set_masks_(model, rec.masks)
            apply_masks_(model)
            masks = get_masks(model)
            history.append(rec)
            record = reconfig_record(rec)
            for v in importance.values():
                v.zero_()
            d = rec.density_after
            if prev_density is not None:
                flags.append(abs(d / prev_density - 1.0) <= settings.density_tolerance if prev_density > 0 else d == 0)
            prev_density = d
        rounds_done = i + 1
        if on_round is not None:
            on_round(IPRound(i, loss_sum / len(batches), train_acc, step_s, time.perf_counter() - t0,
                             density(masks), _layer_density(masks), record))
        if len(flags) >= settings.stable_reconfigs and all(flags[-settings.stable_reconfigs:]):
            stop_reason = "stable"
            break
    state = {}
    for k, v in model.state_dict().items():
        if k in mask_keys:
            continue
        state[k] = torch.where(masks[k], v, stale[k]) if k in masks else v.detach().clone()
    logger.info("IP finished after %d rounds (%s): density %.4f", rounds_done, stop_reason, density(masks))
    return InitialPruningResult(
        state=state,
        masks={k: v.clone() for k, v in masks.items()},
        rounds=rounds_done,
        started_at=started,
        stop_reason=stop_reason,
        sim_compute_s=sim_compute_s,
        reconfigurations=history,
    )


def _reconfigure(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    importance: dict[str, torch.Tensor],
    time_model: TimeModel,
    settings: InitialPruningSettings,
) -> Reconfiguration:
    weights = {n: model.get_parameter(n).detach() for n in masks}
    scaled = time_model.scaled(settings.compute_scale) if settings.compute_scale != 1.0 else time_model
    return reconfigure(
        weights,
        masks,
        {n: importance[n] for n in masks},
        scaled,
        settings.local_steps,
        settings.max_decrease,
        density_cap=None,
        fixed_importance=fixed_importance(importance, masks),
    )


def _accuracy(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    model.train()
    return correct / sum(int(y.shape[0]) for _, y in batches)


def _layer_density(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.float().mean()) for k, v in masks.items()}
