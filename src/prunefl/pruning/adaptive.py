"""PruneFL's further pruning during FL: when to reconfigure, and applying one reconfiguration to the server.

The decision itself is the pure :func:`prunefl.pruning.reconfigure.reconfigure`; this module only keeps the
schedule state across rounds (spec §3.5, §3.6, §3.10), so it is the one class here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from prunefl import metrics as K
from prunefl.pruning.methods.base import AggregateView, Decision
from prunefl.pruning.reconfigure import Reconfiguration, reconfigure
from prunefl.pruning.schedules import density_cap, max_decrease
from prunefl.timing.clock import DeviceProfile
from prunefl.timing.model import TimeModel

__all__ = ["AdaptiveSettings", "AdaptivePruning", "reconfig_record", "objective_time_model", "fixed_importance"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptiveSettings:
    """Schedule of FL reconfigurations; each field means what the same-named ``PruningConfig`` field means."""

    total_rounds: int
    local_steps: int
    reconfig_interval: int = 50
    reconfig_start: Literal["round", "accuracy"] = "round"
    first_reconfig_round: int = 50
    reconfig_start_accuracy: float = 0.5
    max_decrease: float = 0.3
    max_decrease_half_life: float = 10000.0
    max_density: float = 1.0
    target_density: float = 1.0
    legacy_cap_off_by_one: bool = False
    comm: Literal["per_weight", "link"] = "per_weight"
    importance_window: int = 0


class AdaptivePruning:
    """Reconfigures the server's masks every interval, on the freshly aggregated weights (spec §3.1).

    The objective's round time is that of the slowest selected client at the current mask: the round lasts as
    long as that client, and its linear model is what one more kept weight costs the round (a max of linear
    models is not linear; the slowest one is its local slope).

    Parameters
    ----------
    settings : AdaptiveSettings
        The schedule.
    """

    def __init__(self, settings: AdaptiveSettings) -> None:
        self.settings = settings
        self._start: int | None = settings.first_reconfig_round if settings.reconfig_start == "round" else None
        self.history: list[Reconfiguration] = []  # this process's reconfigurations (a resumed run starts empty)
        self.n_reconfigurations = 0  # all of the run's, resumed ones included

    def upload_importance(self, round: int) -> bool:
        """True in reconfiguration rounds, when clients send the importance they accumulated."""
        s = self.settings
        if self._start is None or round < self._start:
            return False
        return (round - self._start) % s.reconfig_interval == 0

    def track_importance(self, round: int) -> bool:
        """True when clients accumulate importance in ``round``.

        Every round with ``importance_window = 0`` (the paper); otherwise only in the ``importance_window``
        rounds up to and including each reconfiguration round, so the other rounds need no dense weight
        gradients and can run fully sparse.
        """
        w = self.settings.importance_window
        if w == 0:
            return True
        if self._start is None:
            return False
        if round <= self._start:
            return round > self._start - w
        interval = self.settings.reconfig_interval
        next_reconfig = self._start + -(-(round - self._start) // interval) * interval
        return round > next_reconfig - w

    def after_aggregate(self, view: AggregateView) -> Decision | None:
        """In a reconfiguration round, return the reconfigured masks and their metrics record.

        The server then zeroes pruned coordinates itself under ``regrow_init = "zero"``.
        """
        round = view.round
        if not self.upload_importance(round):
            return None
        if view.importance is None:
            raise RuntimeError(f"round {round} is a reconfiguration round but no client uploaded importance")
        s = self.settings
        tm = objective_time_model([view.devices[c] for c in view.clients], view.masks, s.local_steps, s.comm)
        weights = {name: view.state[name] for name in view.masks}
        importance = {name: view.importance[name] for name in view.masks}
        cap = density_cap(round, s.max_density, s.target_density, s.total_rounds)
        rec = reconfigure(
            weights,
            view.masks,
            importance,
            tm,
            s.local_steps,
            max_decrease(round, s.max_decrease, s.max_decrease_half_life),
            density_cap=cap,
            fixed_importance=fixed_importance(view.importance, view.masks),
            legacy_cap_off_by_one=s.legacy_cap_off_by_one,
        )
        self.history.append(rec)
        self.n_reconfigurations += 1
        logger.info(
            "reconfiguration at round %d: density %.4f -> %.4f, removed %d, added %d, objective %.4g -> %.4g",
            round, rec.density_before, rec.density_after, sum(rec.removed.values()), sum(rec.added.values()),
            rec.objective_before, rec.objective_after,
        )
        return Decision(masks=rec.masks, record=reconfig_record(rec))

    def observe(self, row: Mapping[str, Any]) -> None:
        """See a finished metrics row; starts the schedule once the accuracy trigger is met."""
        s = self.settings
        acc = row.get(K.K_TEST_ACCURACY)
        if self._start is None and acc is not None and acc >= s.reconfig_start_accuracy:
            # first interval boundary after the trigger, counted from round 0 (as the official rounds 50, 100, ...)
            r = int(row[K.K_ROUND]) + 1
            self._start = -(-r // s.reconfig_interval) * s.reconfig_interval
            logger.info("accuracy %.4f reached at round %d: first reconfiguration at round %d", acc, r - 1, self._start)


    def state_dict(self) -> dict[str, Any]:
        """The schedule's position: the first reconfiguration round once known, and how many were done."""
        return {"start": self._start, "reconfigurations": self.n_reconfigurations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; past reconfigurations' records are in metrics.jsonl, only their count returns."""
        self._start = None if state["start"] is None else int(state["start"])
        self.n_reconfigurations = int(state["reconfigurations"])

def objective_time_model(
    devices: Sequence[DeviceProfile],
    masks: Mapping[str, torch.Tensor],
    local_steps: int,
    comm: Literal["per_weight", "link"] = "per_weight",
) -> TimeModel:
    """The time model of the slowest of ``devices`` at the current masks, as the objective's T(m).

    Under ``comm = "link"`` the per-weight communication cost becomes a float32 value each way over the
    device's link, instead of the official constant b.
    """
    kept = {k: int(v.sum()) for k, v in masks.items()}

    def model_of(d: DeviceProfile) -> TimeModel:
        tm = d.time_model.scaled(d.compute_scale) if d.compute_scale != 1.0 else d.time_model
        if comm == "link":
            b = 4.0 / d.link.uplink_bytes_per_s + 4.0 / d.link.downlink_bytes_per_s
            tm = dataclasses.replace(tm, comm_s_per_weight=b)
        return tm

    models = [model_of(d) for d in devices]
    return max(models, key=lambda tm: tm.round_time_s(kept, local_steps))


def fixed_importance(importance: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> float:
    """S_fix: summed importance of every parameter that cannot be pruned (biases, BatchNorm, …) (spec §2.3)."""
    return float(sum(float(v.sum()) for k, v in importance.items() if k not in masks))


def reconfig_record(rec: Reconfiguration) -> dict[str, Any]:
    """The metrics.jsonl form of a reconfiguration: per-layer removed/added (regrown) counts and objective."""
    return {
        K.K_REMOVED: dict(rec.removed),
        K.K_ADDED: dict(rec.added),
        K.K_KEPT: dict(rec.kept_after),
        K.K_OBJECTIVE_BEFORE: rec.objective_before,
        K.K_OBJECTIVE_AFTER: rec.objective_after,
        K.K_MAX_DECREASE: rec.max_decrease,
        K.K_DENSITY_CAP: rec.density_cap,
        K.K_DENSITY_BEFORE: rec.density_before,
        K.K_DENSITY_AFTER: rec.density_after,
    }
