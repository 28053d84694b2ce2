"""FL reconfiguration schedule and its application to the server (spec §3.5-3.6, §12 item 9)."""

from __future__ import annotations

import numpy as np
import torch

from prunefl.fl.server import Server, ServerSettings
from prunefl.pruning.methods.base import AggregateView
from prunefl.pruning.adaptive import AdaptivePruning, AdaptiveSettings, fixed_importance, objective_time_model
from prunefl.timing.clock import DeviceProfile
from prunefl.timing.model import TimeModel

TM = TimeModel(("w",), (1e-6,), 1e-3, 1e-3)


def test_reconfigures_at_rounds_50_100_150() -> None:
    # Prepare
    policy = AdaptivePruning(AdaptiveSettings(total_rounds=200, local_steps=5))
    # Execute
    rounds = [r for r in range(200) if policy.upload_importance(r)]
    # Assert
    assert rounds == [50, 100, 150]


def test_accuracy_trigger_starts_at_next_interval_boundary() -> None:
    # Prepare
    s = AdaptiveSettings(total_rounds=300, local_steps=5, reconfig_start="accuracy", reconfig_start_accuracy=0.6)
    policy = AdaptivePruning(s)
    # Execute
    policy.observe({"round": 9, "test-accuracy": 0.5})
    before = [r for r in range(300) if policy.upload_importance(r)]
    policy.observe({"round": 59, "test-accuracy": 0.65})
    after = [r for r in range(300) if policy.upload_importance(r)]
    # Assert: nothing before the trigger; after accuracy at round 59 the next boundary is round 100
    assert before == []
    assert after == [100, 150, 200, 250]


def test_objective_uses_slowest_selected_device() -> None:
    # Prepare
    fast, slow = DeviceProfile(TM, compute_scale=1.0), DeviceProfile(TM, compute_scale=4.0)
    masks = {"w": torch.ones(10, dtype=torch.bool)}
    # Execute
    tm = objective_time_model([fast, slow], masks, 5)
    # Assert
    assert tm.constant_s_per_step == 4e-3 and tm.compute_s_per_weight_per_step == (4e-6,)


def test_fixed_importance_sums_non_prunable_parameters() -> None:
    imp = {"w": torch.tensor([5.0, 5.0]), "b": torch.tensor([1.0, 2.0]), "bn.weight": torch.tensor([3.0])}
    assert fixed_importance(imp, {"w": torch.ones(2, dtype=torch.bool)}) == 6.0


def test_after_aggregate_returns_reconfigured_masks_and_record() -> None:
    # Prepare: 10 weights in use; δ(50) = 0.35·0.5^(50/10000) ≈ 0.349 -> q = 3, so |w| = 0, 1, 2 are removed and,
    # with zero importance (ρ = 0, not strictly above S/T), not re-added
    w = torch.arange(10, dtype=torch.float32)
    state = {"w": w.clone(), "b": torch.zeros(1)}
    masks = {"w": torch.ones(10, dtype=torch.bool)}
    imp = {"w": torch.tensor([0, 0, 0] + [1.0] * 7, dtype=torch.float64), "b": torch.tensor([1.0], dtype=torch.float64)}
    policy = AdaptivePruning(AdaptiveSettings(total_rounds=100, local_steps=5, max_decrease=0.35))

    def view(r: int, importance):
        return AggregateView(round=r, state=state, previous_state=state, masks=masks, importance=importance,
                             clients=[0], devices=[DeviceProfile(TM)])

    # Execute
    decision = policy.after_aggregate(view(50, imp))
    # Assert
    assert decision is not None and decision.masks is not None and decision.record is not None
    rec = decision.record
    assert rec["removed"] == {"w": 3} and rec["added"] == {"w": 0}
    assert decision.masks["w"].tolist() == [False] * 3 + [True] * 7
    assert masks["w"].all()  # a decision, not a mutation: the server applies it
    assert np.isclose(rec["density-after"], 0.7)
    assert policy.after_aggregate(view(51, None)) is None
    assert policy.state_dict() == {"start": 50, "reconfigurations": 1}


def test_importance_window_tracks_only_rounds_before_each_reconfiguration() -> None:
    # Prepare: reconfigurations at 50, 100, 150; window of 3 rounds
    s = AdaptiveSettings(total_rounds=160, local_steps=5, importance_window=3)
    policy = AdaptivePruning(s)
    # Execute
    tracked = [r for r in range(160) if policy.track_importance(r)]
    # Assert
    assert tracked == [48, 49, 50, 98, 99, 100, 148, 149, 150]
    every = AdaptivePruning(AdaptiveSettings(total_rounds=10, local_steps=5))
    assert all(every.track_importance(r) for r in range(10))


def test_regrow_zero_server_clears_newly_pruned_coordinates_when_masks_change() -> None:
    # Prepare: stale values would stay at pruned coordinates; "zero" clears them the moment masks change
    state = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([4.0])}
    zero = Server(dict(state), {"w": torch.ones(3, dtype=torch.bool)}, ServerSettings(1, 1, 5, 2, 0.1, regrow_init="zero"))
    stale = Server(dict(state), {"w": torch.ones(3, dtype=torch.bool)}, ServerSettings(1, 1, 5, 2, 0.1))
    new = {"w": torch.tensor([True, False, True])}
    # Execute
    zero.masks = new
    stale.masks = new
    # Assert
    assert zero.state["w"].tolist() == [1.0, 0.0, 3.0] and zero.state["b"].tolist() == [4.0]
    assert stale.state["w"].tolist() == [1.0, 2.0, 3.0]
    assert zero.mask_version == stale.mask_version == 1
