"""Iterative magnitude pruning: 20 prunes at i·⌊R/40⌋, each removing ⌊p·n⌋ in-use weights by magnitude, to d_final."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunefl import metrics as K
from prunefl.errors import ConfigError
from prunefl.experiments.config import load_config
from prunefl.experiments.results import load_checkpoint
from prunefl.experiments.runner import run_experiment
from prunefl.pruning.methods import AggregateView, Decision, MethodContext, ReferenceRun, build_method, get_spec
from prunefl.pruning.methods.iterative import (
    IterativePruning,
    IterativeSettings,
    magnitude_prune,
    prune_fraction,
    prune_rounds,
)


def _context(rounds: int) -> MethodContext:
    return MethodContext(seed=0, rounds=rounds, local_steps=5, batch_size=20, lr=0.1, num_clients=2)


def _iterative(rounds: int, density: float, prunes: int = 20) -> IterativePruning:
    method = build_method("iterative", IterativeSettings(prunes=prunes), _context(rounds),
                          ReferenceRun("runs/prunefl", density))
    assert isinstance(method, IterativePruning)
    return method


def _run(method: IterativePruning, rounds: int, shapes: dict[str, tuple[int, ...]]) -> list[tuple[AggregateView,
                                                                                                  Decision | None]]:
    """Feed the method ``rounds`` aggregations of a model that keeps changing (seeded noise each round), applying
    each decision as the engine does; return every (view, decision)."""
    gen = torch.Generator().manual_seed(0)
    state = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    state["fc.bias"] = torch.randn(3, generator=gen)  # not prunable: no mask
    masks = {n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()}
    out = []
    for r in range(rounds):
        # a round of "training": every weight moves, pruned coordinates stay 0 as the clients' masking keeps them
        state = {k: v + 0.3 * torch.randn(v.shape, generator=gen) * (masks[k] if k in masks else 1) for k, v in
                 state.items()}
        view = AggregateView(round=r, state=state, previous_state=state, masks=masks, importance=None, clients=[0, 1],
                             devices=[])
        decision = method.after_aggregate(view)
        out.append((view, decision))
        if decision is not None:  # the engine installs state first, then masks
            assert decision.state is not None and decision.masks is not None
            state, masks = decision.state, decision.masks
    return out


@pytest.mark.parametrize(
    ("rounds", "interval"),
    [
        (10001, 250),  # FEMNIST / CIFAR-10: MAX_ROUND 10001 → every 250 rounds, last at 5000
        (10000, 250),
        (3001, 75),  # CelebA
        (20001, 500),  # ImageNet-100
    ],
)
def test_prune_rounds_are_the_official_multiples_of_floor_r_over_40(rounds: int, interval: int) -> None:
    # Execute
    schedule = prune_rounds(rounds)
    # Assert: spec §12 item 10
    assert schedule == [interval * i for i in range(1, 21)]


def test_prune_rounds_end_fraction_moves_the_last_prune() -> None:
    # Execute / Assert: ⌊0.3·100/3⌋ = 10 (0.3 counted as 3/10, not 0.29999…)
    assert prune_rounds(100, prunes=3, end_fraction=0.3) == [10, 20, 30]


@pytest.mark.parametrize(
    ("rounds", "prunes", "fewest"),
    [
        (39, 20, 40),  # ⌊39/40⌋ = 0: no interval
        (0, 20, 40),  # no rounds at all
        (5, 3, 6),  # ⌊5/6⌋ = 0
    ],
)
def test_too_few_rounds_is_a_config_error_naming_rounds_and_prunes(rounds: int, prunes: int, fewest: int) -> None:
    # Execute / Assert: at construction, before any round runs
    with pytest.raises(ConfigError, match=rf"fl.rounds = {rounds} .*iterative.prunes = {prunes}.*>= {fewest}"):
        _iterative(rounds, 0.2, prunes=prunes)


def test_fewest_rounds_prunes_every_round_from_round_one() -> None:
    # Execute / Assert: R = 2·prunes is the smallest that works, interval 1
    assert _iterative(40, 0.2).rounds == list(range(1, 21))


@pytest.mark.parametrize(
    "settings",
    [
        {"prunes": 0},  # never prunes
        {"end_fraction": 0.0},  # every prune at round 0
        {"end_fraction": 1.0},  # the last prune would need round R
    ],
)
def test_settings_out_of_range_are_config_errors(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="iterative."):
        IterativeSettings(**settings)  # type: ignore[arg-type]


def test_prune_fraction_reaches_the_target_after_all_prunes() -> None:
    # Execute / Assert: (1 − p)^2 = 0.25 → p = 0.5; tolerance: one float rounding of the 20th root
    assert prune_fraction(0.25, prunes=2) == 0.5
    assert (1 - prune_fraction(0.2)) ** 20 == pytest.approx(0.2, rel=1e-12)


def test_magnitude_prune_removes_floor_of_fraction_of_in_use_weights_smallest_first() -> None:
    # Prepare: 5 weights, 4 in use (index 2 pruned already, its large value must not matter)
    w = {"a": torch.tensor([0.5, -3.0, 9.0, 2.0, -1.0]), "b": torch.tensor([[1.0, -2.0], [3.0, 0.1]])}
    m = {"a": torch.tensor([True, True, False, True, True]), "b": torch.ones(2, 2, dtype=torch.bool)}
    # Execute: p = 0.6 → a loses ⌊2.4⌋ = 2 (|0.5|, |-1|), b loses ⌊2.4⌋ = 2 (|0.1|, |1|)
    new = magnitude_prune(w, m, 0.6)
    # Assert
    assert new["a"].tolist() == [False, True, False, True, False]
    assert new["b"].tolist() == [[False, True], [True, False]]


def test_magnitude_prune_ties_go_to_the_lower_index() -> None:
    # Execute: three equal magnitudes, ⌊0.5·3⌋ = 1 removed: the kept two are the lower indices
    new = magnitude_prune({"a": torch.tensor([1.0, -1.0, 1.0])}, {"a": torch.ones(3, dtype=torch.bool)}, 0.5)
    # Assert
    assert new["a"].tolist() == [True, True, False]


def test_iterative_prunes_only_at_schedule_rounds_and_stays_afterwards() -> None:
    # Prepare: R = 60 → interval ⌊60/40⌋ = 1: prunes after rounds 1 … 20, nothing at 0 or 21 … 59
    method = _iterative(60, 0.2)
    # Execute
    trace = _run(method, 60, {"fc.weight": (10, 10), "out.weight": (30, 10)})
    # Assert
    assert [r for r, (_, d) in enumerate(trace) if d is not None] == list(range(1, 21))
    assert method.summary()["prunes-done"] == 20


def test_iterative_each_prune_removes_floor_p_of_in_use_weights_per_layer() -> None:
    """d_final = 0.2, 20 prunes: p = 1 − 0.2^(1/20) = 0.07732. A layer of 100 weights keeps, prune by prune,
    n − ⌊p·n⌋: 100, 93, 86, 80, 74, 69, 64, 60, 56, 52, 48, 45, 42, 39, 36, 34, 32, 30, 28, 26, 24 (worked by
    hand: ⌊7.73⌋ = 7, ⌊7.19⌋ = 7, ⌊6.65⌋ = 6, …, ⌊2.01⌋ = 2)."""
    # Prepare
    method = _iterative(40, 0.2)
    # Execute
    trace = _run(method, 40, {"fc.weight": (10, 10), "out.weight": (30, 10)})
    # Assert
    kept = [100] + [d.record[K.K_KEPT]["fc.weight"] for _, d in trace if d is not None and d.record is not None]
    assert kept == [100, 93, 86, 80, 74, 69, 64, 60, 56, 52, 48, 45, 42, 39, 36, 34, 32, 30, 28, 26, 24]
    p = method.fraction
    for view, decision in trace:
        if decision is None:
            continue
        assert decision.record is not None
        for name, mask in view.masks.items():
            n_in_use = int(mask.sum())
            assert decision.record[K.K_REMOVED][name] == int(p * n_in_use)  # ⌊p·n⌋, the official int()


def test_iterative_reaches_target_density_at_the_halfway_round() -> None:
    # Prepare: |J| = 100 + 300 + 2500; R = 41 → interval ⌊41/40⌋ = 1, the 20th and last prune at round 20 ≈ R/2
    shapes = {"fc.weight": (10, 10), "out.weight": (30, 10), "big.weight": (50, 50)}
    method = _iterative(41, 0.2)
    # Execute
    trace = _run(method, 41, shapes)
    # Assert: after the 20th prune each layer keeps between 0.2·n and 0.2·n + 20 weights (each ⌊p·n⌋ leaves less
    # than one weight more than exact geometric decay: fewer than 20 extra after 20 prunes)
    last_view, last = trace[20]
    assert last is not None and last.masks is not None and last.record is not None
    for name, shape in shapes.items():
        n = torch.Size(shape).numel()
        assert 0.2 * n <= int(last.masks[name].sum()) < 0.2 * n + 20
    # 100 → 24 (worked above), 300 → 66, 2500 → 505 by the same n − ⌊p·n⌋ steps; exact decay: 20, 60, 500
    assert {n: int(m.sum()) for n, m in last.masks.items()} == {"fc.weight": 24, "out.weight": 66, "big.weight": 505}
    assert last.record[K.K_DENSITY_AFTER] == (24 + 66 + 505) / 2900
    assert all(d is None for _, d in trace[21:])


def test_iterative_prunes_smallest_aggregated_magnitudes_and_zeroes_them() -> None:
    # Prepare
    method = _iterative(40, 0.2)
    # Execute
    trace = _run(method, 40, {"fc.weight": (10, 10), "out.weight": (30, 10)})
    # Assert
    for view, decision in trace:
        if decision is None:
            continue
        assert decision.masks is not None and decision.state is not None
        for name, old in view.masks.items():
            new = decision.masks[name]
            removed = old & ~new
            assert not bool((new & ~old).any())  # nothing regrows
            magnitude = view.state[name].abs()
            assert float(magnitude[removed].max()) <= float(magnitude[new].min())  # smallest of the fresh aggregate
            assert bool((decision.state[name][~new] == 0).all())  # pruned weights are zeroed
            assert torch.equal(decision.state[name][new], view.state[name][new])  # kept weights untouched
        assert torch.equal(decision.state["fc.bias"], view.state["fc.bias"])  # not prunable


def test_iterative_record_uses_the_report_keys() -> None:
    # Prepare: 2 prunes to 0.25 (p = 0.5) on 10 + 4 weights, R = 4 → interval ⌊4/4⌋ = 1: rounds 1 and 2
    method = _iterative(4, 0.25, prunes=2)
    # Execute
    trace = _run(method, 4, {"fc.weight": (10,), "out.weight": (4,)})
    # Assert: 10 → 5 → 3 and 4 → 2 → 1 (⌊0.5·5⌋ = 2, ⌊0.5·2⌋ = 1)
    first, second = trace[1][1], trace[2][1]
    assert first is not None and second is not None
    assert first.record == {
        K.K_REMOVED: {"fc.weight": 5, "out.weight": 2},
        K.K_ADDED: {"fc.weight": 0, "out.weight": 0},
        K.K_KEPT: {"fc.weight": 5, "out.weight": 2},
        K.K_DENSITY_BEFORE: 1.0,
        K.K_DENSITY_AFTER: 7 / 14,
    }
    assert second.record is not None
    assert second.record[K.K_REMOVED] == {"fc.weight": 2, "out.weight": 1}
    assert (second.record[K.K_DENSITY_BEFORE], second.record[K.K_DENSITY_AFTER]) == (7 / 14, 4 / 14)


def test_iterative_full_density_reference_removes_nothing() -> None:
    # Prepare: d_final = 1 → p = 0
    method = _iterative(40, 1.0)
    # Execute
    trace = _run(method, 40, {"fc.weight": (10, 10)})
    # Assert: the prunes still happen (and are recorded), but keep every weight
    decisions = [d for _, d in trace if d is not None]
    assert len(decisions) == 20
    assert all(d.masks is not None and bool(d.masks["fc.weight"].all()) for d in decisions)


def test_iterative_summary_records_reference_and_counts() -> None:
    # Prepare
    method = _iterative(4, 0.25, prunes=2)
    # Execute
    _run(method, 4, {"fc.weight": (10,), "out.weight": (4,)})
    summary = method.summary()
    # Assert: spec §10 item 12, provenance of the target
    assert summary[K.K_TARGET_DENSITY] == 0.25 and summary[K.K_REFERENCE_SOURCE] == "runs/prunefl"
    assert summary["prunes-done"] == 2 and summary["prune-rounds"] == [1, 2] and summary["prune-fraction"] == 0.5
    assert (summary[K.K_N_KEPT], summary[K.K_N_TOTAL]) == (4, 14)


def test_iterative_state_dict_round_trips_the_counts() -> None:
    # Prepare
    method = _iterative(4, 0.25, prunes=2)
    _run(method, 4, {"fc.weight": (10,), "out.weight": (4,)})
    resumed = _iterative(4, 0.25, prunes=2)
    # Execute
    resumed.load_state_dict(method.state_dict())
    # Assert
    assert resumed.summary() == method.summary()


def test_iterative_without_reference_density_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="density"):
        build_method("iterative", IterativeSettings(), _context(100), ReferenceRun("runs/x"))


def test_iterative_is_registered_as_official_needing_density() -> None:
    spec = get_spec("iterative")
    assert (spec.display_name, spec.colour, spec.extension, spec.needs, spec.section) == (
        "Iterative", "C4", False, frozenset({"density"}), "iterative")


@pytest.mark.slow
def test_iterative_end_to_end_on_digits_prunes_at_schedule_rounds_to_the_reference_density(tmp_path: Path) -> None:
    """MLP on digits, |J| = 4096 (fc1) + 640 (fc2); d = 0.3, 2 prunes (p = 1 − √0.3 = 0.45228) over R = 6
    rounds: interval ⌊6/4⌋ = 1, prunes after rounds 1 and 2. fc1 4096 → 4096 − ⌊1852.5⌋ = 2244 → 2244 −
    ⌊1014.9⌋ = 1230; fc2 640 → 640 − ⌊289.5⌋ = 351 → 351 − ⌊158.7⌋ = 193 (exact decay: 1228.8 and 192)."""
    # Prepare
    config = load_config(None, [
        "data.dataset=digits", "data.partition=iid", "data.num_clients=3", "clients_per_round=3", "model.name=mlp",
        "timing.preset=uniform", "rounds=6", "eval_every=3", "lr=0.25", "threads=1", "method=iterative",
        "reference.density=0.3", "iterative.prunes=2",
    ])
    # Execute
    result = run_experiment(config, tmp_path / "iterative", plots=False)
    # Assert
    rows = [json.loads(line) for line in (tmp_path / "iterative" / "metrics.jsonl").read_text().splitlines()]
    assert [r[K.K_ROUND] for r in rows if r[K.K_RECONFIG] is not None] == [1, 2]
    assert [r[K.K_RECONFIG][K.K_KEPT] for r in rows[1:3]] == [{"fc1.weight": 2244, "fc2.weight": 351},
                                                              {"fc1.weight": 1230, "fc2.weight": 193}]
    assert [r[K.K_DENSITY] for r in rows] == [1.0, 2595 / 4736] + [1423 / 4736] * 4  # reached at round 2, then kept
    state, masks, _, _, _ = load_checkpoint(tmp_path / "iterative")
    assert {n: int(m.sum()) for n, m in masks.items()} == {"fc1.weight": 1230, "fc2.weight": 193}
    assert all(bool((state[n][~m] == 0).all()) for n, m in masks.items())  # pruned weights zeroed
    assert result.summary["prunes-done"] == 2 and result.summary[K.K_REFERENCE_SOURCE] == "config"
    assert rows[-1][K.K_TEST_ACCURACY] > 0.3  # 10 classes (chance 0.1): the pruned model learns
