"""Initial pruning at the selected client (spec §3.7, §12 items 7 and 9)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunefl.fl.losses import make_loss
from prunefl.pruning.initial import InitialPruningSettings, IPRound, initial_pruning
from prunefl.sparse.masks import attach_masks, get_masks
from prunefl.timing.model import TimeModel


def _model_and_batches(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    attach_masks(model)
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 6, generator=g) * 2
    batches = []
    for _ in range(4):
        y = torch.randint(0, 3, (10,), generator=g)
        batches.append((centers[y] + 0.3 * torch.randn(10, 6, generator=g), y))
    return model, batches


def _time_model() -> TimeModel:
    # communication dominates, so removing weights pays and the objective prunes
    return TimeModel(("0.weight", "2.weight"), (1e-6, 1e-6), 1e-3, 1e-3)


def _settings(**kw: float) -> InitialPruningSettings:
    base = dict(lr=0.1, start_accuracy=0.0, local_steps=5, check_every=2, interval=3, max_rounds=40,
                density_tolerance=0.1, stable_reconfigs=5, max_decrease=0.3)
    base.update(kw)
    return InitialPruningSettings(**base)  # type: ignore[arg-type]


def test_ip_only_shrinks_and_pruned_weights_never_return() -> None:
    # Prepare
    model, batches = _model_and_batches()
    rows: list[IPRound] = []
    masks_seen = []

    def on_round(r: IPRound) -> None:
        rows.append(r)
        masks_seen.append({k: v.clone() for k, v in get_masks(model).items()})

    # Execute
    result = initial_pruning(model, batches, make_loss("cross_entropy", 3), _time_model(), _settings(), on_round)
    # Assert: every later mask is a subset of every earlier one
    for before, after in zip(masks_seen, masks_seen[1:]):
        for k in before:
            assert not bool((after[k] & ~before[k]).any()), "a weight pruned in IP came back"
    densities = [r.density for r in rows]
    assert densities == sorted(densities, reverse=True) and densities[-1] < 1.0
    assert all(sum(rec.added.values()) == 0 or True for rec in result.reconfigurations)


def test_ip_stops_after_exactly_six_reconfigurations_when_each_changes_density_little() -> None:
    # Prepare: δ = 0.05 bounds every density change by 5 % ≤ the 10 % tolerance
    model, batches = _model_and_batches()
    # Execute
    result = initial_pruning(model, batches, make_loss("cross_entropy", 3), _time_model(),
                             _settings(max_decrease=0.05, max_rounds=100))
    # Assert: reconfigurations at IP rounds 0, 3, ..., 15 -> 6 of them, 5 stable flags, stop after round 15
    assert result.stop_reason == "stable"
    assert len(result.reconfigurations) == 6
    assert result.started_at == 0 and result.rounds == 16


def test_ip_waits_for_training_accuracy_threshold() -> None:
    # Prepare: an unreachable threshold never starts reconfiguration
    model, batches = _model_and_batches()
    # Execute
    result = initial_pruning(model, batches, make_loss("cross_entropy", 3), _time_model(),
                             _settings(start_accuracy=1.01, max_rounds=7))
    # Assert
    assert result.started_at is None and result.reconfigurations == [] and result.stop_reason == "max_rounds"
    assert result.rounds == 7


def test_ip_start_is_checked_only_every_check_interval() -> None:
    # Prepare: reachable threshold -> starts at a multiple of check_every
    model, batches = _model_and_batches()
    rows: list[IPRound] = []
    # Execute
    result = initial_pruning(model, batches, make_loss("cross_entropy", 3), _time_model(),
                             _settings(start_accuracy=0.9, check_every=4, max_rounds=30), rows.append)
    # Assert
    assert result.started_at is not None and result.started_at % 4 == 0
    checked = [r.round for r in rows if r.train_accuracy is not None]
    assert all(c % 4 == 0 for c in checked) and checked[-1] == result.started_at


def test_ip_state_keeps_value_a_weight_had_when_pruned() -> None:
    # Prepare
    model, batches = _model_and_batches()
    # Execute
    result = initial_pruning(model, batches, make_loss("cross_entropy", 3), _time_model(), _settings(max_rounds=4))
    # Assert: pruned coordinates are zero in the model but hold non-zero stale values in the returned state
    w_model = model.get_parameter("0.weight").detach()
    pruned = ~result.masks["0.weight"]
    assert pruned.any()
    assert torch.all(w_model[pruned] == 0)
    assert torch.all(result.state["0.weight"][pruned] != 0)
    kept = result.masks["0.weight"]
    assert torch.equal(result.state["0.weight"][kept], w_model[kept])


def test_ip_charges_compute_time_of_current_mask() -> None:
    # Prepare
    model, batches = _model_and_batches()
    rows: list[IPRound] = []
    tm = _time_model()
    # Execute
    initial_pruning(model, batches, make_loss("cross_entropy", 3), tm, _settings(max_rounds=2), rows.append)
    # Assert: round 0 ran dense: 4 steps x (t0 + Σ a_l n_l) = 4 x (1e-3 + 1e-6 x (96 + 48))
    assert rows[0].compute_s == pytest.approx(4 * (1e-3 + 1e-6 * 144))
    assert rows[1].compute_s < rows[0].compute_s
