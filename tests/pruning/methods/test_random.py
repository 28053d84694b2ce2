"""Random pruning: exactly round(d·|J|) weights (or round(d·n_l) per layer), one mask per seed, fixed from round 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunefl import metrics as K
from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError
from prunefl.pruning.methods import (
    AggregateView,
    BeforeFL,
    MethodContext,
    ReferenceRun,
    SetupView,
    build_method,
    get_spec,
)
from prunefl.pruning.methods.random import RandomPruning, RandomSettings, random_masks

LIKE = {"a.weight": torch.ones(20, 30, dtype=torch.bool), "b.weight": torch.ones(10, 20, dtype=torch.bool)}  # |J| = 800


def _view() -> SetupView:
    state = {"a.weight": torch.full((20, 30), 2.0), "a.bias": torch.ones(20), "b.weight": torch.full((10, 20), -1.0)}
    x, y = torch.zeros(2, 1, 1, 1), torch.tensor([0, 1])
    return SetupView(state=state, masks=dict(LIKE), model=nn.Identity(), partitions=[], devices=[],
                     dataset=ArrayDataset("tiny", x, y, x, y, num_classes=2), loss_fn=nn.functional.cross_entropy,
                     record=lambda row: None, fresh_state=lambda s: {})


def _before_fl(seed: int, density: float = 0.3, layerwise: bool = False) -> BeforeFL:
    ctx = MethodContext(seed=seed, rounds=10, local_steps=5, batch_size=20, lr=0.1, num_clients=2)
    method = build_method("random", RandomSettings(layerwise=layerwise), ctx, ReferenceRun("config", density=density))
    return method.before_fl(_view())


def test_random_same_seed_gives_same_mask() -> None:
    # Execute
    first, second = _before_fl(seed=3), _before_fl(seed=3)
    # Assert
    assert first.masks is not None and second.masks is not None
    assert all(torch.equal(first.masks[n], second.masks[n]) for n in LIKE)


def test_random_other_seed_gives_other_mask() -> None:
    # Execute
    first, other = _before_fl(seed=3), _before_fl(seed=4)
    # Assert: two independent draws of 240 of 800 weights coincide with probability 1/C(800, 240)
    assert first.masks is not None and other.masks is not None
    assert not all(torch.equal(first.masks[n], other.masks[n]) for n in LIKE)


@pytest.mark.parametrize(("density", "n_kept"), [(0.3, 240), (0.0015, 1), (0.001, 1), (1.0, 800)])
def test_random_keeps_round_of_density_times_total_exactly(density: float, n_kept: int) -> None:
    # Execute: round(0.3·800) = 240, round(1.2) = 1, round(0.8) = 1
    masks = random_masks(LIKE, density, np.random.default_rng(0))
    # Assert
    assert sum(int(m.sum()) for m in masks.values()) == n_kept
    assert all(m.dtype == torch.bool and m.shape == LIKE[n].shape for n, m in masks.items())


def test_random_layerwise_keeps_the_density_in_every_layer() -> None:
    # Execute: round(0.3·600) = 180, round(0.3·200) = 60
    before = _before_fl(seed=0, layerwise=True)
    # Assert
    assert before.masks is not None
    assert [int(m.sum()) for m in before.masks.values()] == [180, 60]


def test_random_global_draw_is_uniform_over_weights() -> None:
    # Prepare: 400 seeds × 240 kept of 800: each weight kept 400·0.3 = 120 times on average, sd √(400·.3·.7) ≈ 9.2
    counts = torch.zeros(800)
    # Execute
    for seed in range(400):  # a statistical check, not a hot path
        masks = random_masks(LIKE, 0.3, np.random.default_rng(seed))
        counts += torch.cat([m.reshape(-1) for m in masks.values()]).float()
    # Assert: every weight within 6 sd of 120 (a false alarm has probability ~1e-6 over 800 weights); both
    # layers near density 0.3, so the draw does not favour the first layer
    assert float((counts - 120).abs().max()) < 6 * 9.2
    assert abs(float(counts[:600].mean()) - 120) < 2 and abs(float(counts[600:].mean()) - 120) < 2


def test_random_before_fl_zeroes_pruned_initial_weights_reports_provenance_and_stays_fixed() -> None:
    # Prepare
    method = RandomPruning(RandomSettings(), 0.3, seed=0, reference_source="runs/prunefl-seed0")
    view = _view()
    state = view.state
    # Execute
    before = method.before_fl(view)
    # Assert
    assert before.masks is not None and before.state is not None
    assert torch.equal(before.state["a.weight"], 2.0 * before.masks["a.weight"])
    assert torch.equal(before.state["a.bias"], state["a.bias"])
    assert method.summary() == {K.K_TARGET_DENSITY: 0.3, K.K_REFERENCE_SOURCE: "runs/prunefl-seed0",
                                "layerwise": False, K.K_N_KEPT: 240, K.K_N_TOTAL: 800}
    # the mask stays fixed: no hook after before_fl changes anything
    fixed = AggregateView(round=0, state=before.state, previous_state=state, masks=before.masks, importance=None,
                          clients=[0], devices=[])
    assert method.after_aggregate(fixed) is None and not method.track_importance(0)


def test_random_rejects_density_above_one() -> None:
    with pytest.raises(ConfigError, match=r"reference.density must be in \(0, 1\] for random, got 1.2"):
        RandomPruning(RandomSettings(), 1.2, seed=0)


def test_random_is_registered_as_an_extension() -> None:
    spec = get_spec("random")
    assert (spec.display_name, spec.colour, spec.extension, spec.needs) == ("Random", "C7", True,
                                                                            frozenset({"density"}))
