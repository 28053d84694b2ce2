"""SNIP's official FL variant: scores |w_0 ⊙ g| from round 0's aggregate, ⌊d·|J|⌋ + 1 plus ties, fixed afterwards."""

from __future__ import annotations

import pytest
import torch

from prunefl import metrics as K
from prunefl.errors import ConfigError
from prunefl.pruning.methods import AggregateView, MethodContext, ReferenceRun, build_method, get_spec
from prunefl.pruning.methods.snip import Snip, SnipSettings, snip_scores

CTX = MethodContext(seed=0, rounds=10, local_steps=5, batch_size=20, lr=0.5, num_clients=2)
LR = 0.5

# A tiny two-layer state (|J| = 7 prunable weights) worked by hand: g = (aggregate − w_0)/η with η = 0.5.
W0 = {
    "a.weight": torch.tensor([[2.0, -1.0], [1.0, 0.5]]),
    "a.bias": torch.tensor([0.1, 0.2]),  # not prunable: no mask, never scored or zeroed
    "b.weight": torch.tensor([1.0, -3.0, 0.0]),
}
AGGREGATE = {
    "a.weight": torch.tensor([[3.0, -0.5], [0.0, 1.0]]),  # delta [[1, .5], [-1, .5]] → g [[2, 1], [-2, 1]]
    "a.bias": torch.tensor([0.3, 0.4]),
    "b.weight": torch.tensor([2.0, -2.5, 7.0]),  # delta [1, .5, 7] → g [2, 1, 14]
}
# |w_0 ⊙ g|: a [[4, 1], [2, 0.5]], b [2, 3, 0]; sorted: 4, 3, 2, 2, 1, 0.5, 0
SCORES = {"a.weight": [[4.0, 1.0], [2.0, 0.5]], "b.weight": [2.0, 3.0, 0.0]}


def _view(round: int, state: dict[str, torch.Tensor] = AGGREGATE) -> AggregateView:
    masks = {n: torch.ones_like(W0[n], dtype=torch.bool) for n in ("a.weight", "b.weight")}
    return AggregateView(round=round, state=state, previous_state=W0, masks=masks, importance=None,
                         clients=[0, 1], devices=[], lr=LR)


def _snip(density: float, exact_count: bool = False) -> Snip:
    return build_method("snip", SnipSettings(exact_count=exact_count), CTX, ReferenceRun("runs/prunefl", density))


def test_snip_scores_are_initial_weight_times_estimated_gradient() -> None:
    # Execute
    scores = snip_scores(W0, AGGREGATE, LR, ["a.weight", "b.weight"])
    # Assert
    assert {n: s.tolist() for n, s in scores.items()} == SCORES


def test_snip_official_rule_keeps_floor_plus_one_and_the_tie() -> None:
    """Spec §12 item 10: d = 0.3, |J| = 7 → threshold at sorted position ⌊2.1⌋ = 2 (score 2.0); the scores
    ≥ 2.0 are 4, 3 and both 2s: ⌊d·|J|⌋ + 1 = 3 weights plus one tie."""
    # Execute
    decision = _snip(0.3).after_aggregate(_view(0))
    # Assert
    assert decision is not None and decision.masks is not None
    assert decision.masks["a.weight"].tolist() == [[True, False], [True, False]]
    assert decision.masks["b.weight"].tolist() == [True, True, False]


def test_snip_exact_count_keeps_round_of_density_times_total_ties_to_lower_index() -> None:
    # Prepare: d = 0.4 → round(2.8) = 3: scores 4, 3, then the first of the two 2s (a[1, 0] precedes b[0])
    snip = _snip(0.4, exact_count=True)
    # Execute
    decision = snip.after_aggregate(_view(0))
    # Assert
    assert decision is not None and decision.masks is not None
    assert decision.masks["a.weight"].tolist() == [[True, False], [True, False]]
    assert decision.masks["b.weight"].tolist() == [False, True, False]


def test_snip_zeroes_pruned_coordinates_of_the_aggregate_and_leaves_biases() -> None:
    # Execute
    decision = _snip(0.3).after_aggregate(_view(0))
    # Assert: the official code multiplies the aggregate by the new mask
    assert decision is not None and decision.state is not None
    assert decision.state["a.weight"].tolist() == [[3.0, 0.0], [0.0, 0.0]]
    assert decision.state["b.weight"].tolist() == [2.0, -2.5, 0.0]
    assert decision.state["a.bias"].tolist() == AGGREGATE["a.bias"].tolist()


def test_snip_full_density_keeps_everything() -> None:
    # Execute: the official index ⌊1·7⌋ = 7 runs past the end of the sorted scores
    decision = _snip(1.0).after_aggregate(_view(0))
    # Assert
    assert decision is not None and decision.masks is not None
    assert all(bool(m.all()) for m in decision.masks.values())


def test_snip_decides_at_round_zero_only_and_never_again() -> None:
    # Prepare
    snip = _snip(0.3)
    other = {k: -3 * v for k, v in AGGREGATE.items()}  # would score differently
    # Execute
    first = snip.after_aggregate(_view(0))
    later = [snip.after_aggregate(_view(r, other)) for r in (1, 2, 50)]
    again = snip.after_aggregate(_view(0, other))  # a repeated round 0 (resume) does not decide twice
    # Assert
    assert first is not None and first.record is not None
    assert later == [None, None, None] and again is None
    assert not any(snip.track_importance(r) or snip.upload_importance(r) for r in range(3))


def test_snip_does_nothing_when_the_first_round_is_not_zero() -> None:
    # Execute / Assert: SNIP scores the initial weights, which only round 0 starts from
    assert _snip(0.3).after_aggregate(_view(1)) is None


def test_snip_summary_records_target_source_and_counts() -> None:
    # Prepare
    snip = _snip(0.3)
    # Execute
    snip.after_aggregate(_view(0))
    summary = snip.summary()
    # Assert
    assert summary[K.K_TARGET_DENSITY] == 0.3
    assert summary[K.K_REFERENCE_SOURCE] == "runs/prunefl"
    assert summary[K.K_N_KEPT] == 4 and summary[K.K_N_TOTAL] == 7


def test_snip_state_dict_round_trips_the_decision() -> None:
    # Prepare
    snip = _snip(0.3)
    snip.after_aggregate(_view(0))
    resumed = _snip(0.3)
    # Execute
    resumed.load_state_dict(snip.state_dict())
    # Assert
    assert resumed.after_aggregate(_view(0)) is None
    assert resumed.summary() == snip.summary()


@pytest.mark.parametrize(
    "density",
    [
        0.0,  # nothing kept: not a density a reference can have
        1.5,  # above 1
    ],
)
def test_snip_rejects_a_density_outside_unit_interval(density: float) -> None:
    with pytest.raises(ConfigError, match=r"reference.density must be in \(0, 1\]"):
        Snip(SnipSettings(), density)


def test_snip_is_registered_as_official_with_its_colour() -> None:
    spec = get_spec("snip")
    assert (spec.display_name, spec.colour, spec.extension, spec.needs) == ("SNIP", "C2", False,
                                                                             frozenset({"density"}))
