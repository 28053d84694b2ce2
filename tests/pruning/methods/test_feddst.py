"""FedDST: annealing, layer counts, client prune-and-regrow, server mask aggregation, and a digits run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError
from prunefl.fl.aggregate import client_masked_aggregate
from prunefl.pruning.methods import (
    AggregateView,
    ClientView,
    MethodContext,
    ReferenceRun,
    SetupView,
    build_method,
    get_spec,
)
from prunefl.pruning.methods.feddst import (
    FedDST,
    FedDSTSettings,
    aggregate_masks,
    client_readjust,
    layer_counts,
    readjustment_fraction,
)

CTX = MethodContext(seed=0, rounds=100, local_steps=5, batch_size=20, lr=0.1, num_clients=4)


def _method(settings: FedDSTSettings | None = None, density: float = 0.3, seed: int = 0) -> FedDST:
    ctx = MethodContext(seed=seed, rounds=100, local_steps=5, batch_size=20, lr=0.1, num_clients=4)
    method = build_method("feddst", settings or FedDSTSettings(), ctx, ReferenceRun(source="config", density=density))
    assert isinstance(method, FedDST)
    return method


def _tiny_dataset() -> ArrayDataset:
    x = torch.zeros(4, 1, 2, 2)
    y = torch.tensor([0, 1, 0, 1])
    return ArrayDataset("tiny", x, y, x, y, num_classes=2)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))


# --- registration and settings ---


def test_feddst_is_registered_as_an_extension_needing_a_density() -> None:
    # Execute
    spec = get_spec("feddst")
    # Assert
    assert (spec.display_name, spec.colour, spec.extension, spec.section) == ("FedDST", "C6", True, "feddst")
    assert spec.needs == frozenset({"density"})
    with pytest.raises(ConfigError, match="density"):
        build_method("feddst", FedDSTSettings(), CTX, ReferenceRun(source="x"))


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("alpha", 1.5, "feddst.alpha"),  # a fraction of the kept weights: at most 1
        ("alpha", -0.1, "feddst.alpha"),  # negative fraction
        ("interval", 0, "feddst.interval"),  # ΔR must be at least one round
        ("first_round", -1, "feddst.first_round"),  # rounds are 0-based
        ("end_round", -5, "feddst.end_round"),  # 0 already means "half the rounds"
        ("distribution", "er", "feddst.distribution"),  # only ERK and uniform are implemented
    ],
)
def test_bad_setting_is_a_config_error_naming_key_and_value(field: str, value: object, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}.*got {value!r}"):
        FedDSTSettings(**{field: value})  # type: ignore[arg-type]


def test_target_density_outside_zero_one_is_rejected() -> None:
    with pytest.raises(ConfigError, match="reference.density"):
        _method(density=1.5)


# --- schedule ---


@pytest.mark.parametrize(
    ("round", "expected"),
    [
        (0, 0.2),  # α/2·(1 + cos 0) = α
        (25, 0.1 * (1 + math.sqrt(0.5))),  # cos(π/4) = √½: 0.170710678…
        (50, 0.1),  # cos(π/2) = 0: half of α
        (75, 0.1 * (1 - math.sqrt(0.5))),  # 0.029289321…
        (100, 0.0),  # R_end: annealing is over
        (150, 0.0),  # after R_end
    ],
)
def test_readjustment_fraction_is_cosine_annealed_to_zero_at_end_round(round: int, expected: float) -> None:
    assert readjustment_fraction(round, 0.2, 100) == pytest.approx(expected, abs=1e-15)


def test_legacy_alpha_squared_multiplies_by_alpha_once_more() -> None:
    # α = 0.2 at round 50: 0.2 · 0.1
    assert readjustment_fraction(50, 0.2, 100, legacy_squared=True) == pytest.approx(0.02, abs=1e-15)


def test_readjustment_rounds_start_at_first_round_every_interval_and_stop_at_end_round() -> None:
    # Prepare: ΔR = 3 from round 1; R_end = 10, so round 10 (α_t = 0) is not a readjustment
    method = _method(FedDSTSettings(interval=3, first_round=1, end_round=10, alpha=0.5))
    # Execute
    rounds = [r for r in range(20) if method.readjusts(r)]
    # Assert
    assert rounds == [1, 4, 7]
    assert [r for r in range(20) if method.track_importance(r)] == rounds
    assert not any(method.upload_importance(r) for r in range(20))


def test_default_end_round_is_half_the_run() -> None:
    # Prepare: 100 rounds, official defaults ΔR = 10 from round 1, R_end = 50
    method = _method()
    # Execute / Assert
    assert [r for r in range(100) if method.readjusts(r)] == [1, 11, 21, 31, 41]


# --- layer counts and the initial mask ---


def test_uniform_counts_give_every_layer_the_density_and_an_exact_total() -> None:
    # Prepare: 0.3·(100 + 10 + 7) = 35.1 -> 35 in all; floors 30 + 3 + 2 = 35 (2.1 -> 2)
    shapes = {"a": (10, 10), "b": (2, 5), "c": (7,)}
    # Execute / Assert
    assert layer_counts(shapes, 0.3, "uniform") == {"a": 30, "b": 3, "c": 2}


def test_erk_counts_make_small_layers_dense_and_share_the_rest() -> None:
    # Prepare: raw ratios Σdims/Πdims: a = 20/100 = 0.2, b = 7/10 = 0.7. d·|J| = 0.5·110 = 55.
    # ε = 55 / (0.2·100 + 0.7·10) = 2.04: b would get 1.43 > 1, so b is dense (10) and a takes 45 (ε = 2.25).
    shapes = {"a": (10, 10), "b": (2, 5)}
    # Execute / Assert
    assert layer_counts(shapes, 0.5, "erk") == {"a": 45, "b": 10}


def test_erk_counts_without_a_dense_layer_follow_the_ratios() -> None:
    # Prepare: raw a = 0.2, b = (10+20)/200 = 0.15; d·|J| = 0.1·300 = 30 = ε(0.2·100 + 0.15·200) -> ε = 0.6:
    # a: 0.12·100 = 12, b: 0.09·200 = 18
    shapes = {"a": (10, 10), "b": (10, 20)}
    # Execute / Assert
    assert layer_counts(shapes, 0.1, "erk") == {"a": 12, "b": 18}


@pytest.mark.parametrize("distribution", ["erk", "uniform"])
@pytest.mark.parametrize("target", [0.01, 0.3, 0.37, 0.9, 1.0])
def test_layer_counts_total_is_round_of_density_times_size(distribution: str, target: float) -> None:
    # Prepare: conv-like and linear shapes of an awkward total
    shapes = {"conv1": (8, 1, 3, 3), "conv2": (16, 8, 3, 3), "fc1": (37, 64), "fc2": (10, 37)}
    total = sum(math.prod(s) for s in shapes.values())
    # Execute
    counts = layer_counts(shapes, target, distribution)  # type: ignore[arg-type]
    # Assert
    assert sum(counts.values()) == round(target * total)
    assert all(0 <= counts[k] <= math.prod(s) for k, s in shapes.items())


def _setup_view(model: nn.Module) -> SetupView:
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n.endswith("weight")}
    rows: list[dict] = []
    return SetupView(
        state={k: v.clone() for k, v in model.state_dict().items()},
        masks=masks,
        model=model,
        dataset=_tiny_dataset(),
        partitions=[np.arange(4)],
        devices=[],
        loss_fn=nn.functional.cross_entropy,
        record=rows.append,
        fresh_state=lambda seed: {},
    )


def test_initial_mask_has_the_layer_counts_and_depends_only_on_the_seed() -> None:
    # Prepare: weights 4·6 = 24 and 6·2 = 12; uniform 0.5 -> 12 and 6
    settings = FedDSTSettings(distribution="uniform")
    view = _setup_view(_model())
    # Execute
    first = _method(settings, density=0.5, seed=1).before_fl(view).masks
    again = _method(settings, density=0.5, seed=1).before_fl(view).masks
    other = _method(settings, density=0.5, seed=2).before_fl(view).masks
    # Assert
    assert first is not None and again is not None and other is not None
    assert {k: int(m.sum()) for k, m in first.items()} == {"1.weight": 12, "3.weight": 6}
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


# --- client readjustment ---


def test_client_readjust_drops_smallest_magnitudes_and_grows_largest_gradients_hand_worked() -> None:
    # Prepare: 5 of 8 kept; α = 0.5 -> ⌊2.5⌋ = 2 swapped. Smallest |w| among kept: idx 4 (0.05), idx 1 (0.1).
    # Largest importance among pruned (idx 2, 5, 7): idx 7 (8.0), idx 2 (3.0); the dropped idx 1 has the
    # largest importance of all but may not come back (disjoint sets).
    masks = {"w": torch.tensor([True, True, False, True, True, False, True, False])}
    weights = {"w": torch.tensor([0.9, -0.1, 0.0, 0.5, 0.05, 0.0, -0.7, 0.0])}
    importance = {"w": torch.tensor([1.0, 99.0, 3.0, 1.0, 1.0, 2.0, 1.0, 8.0])}
    # Execute
    new = client_readjust(masks, weights, importance, 0.5)["w"]
    # Assert
    assert new.tolist() == [True, False, True, True, False, False, True, True]


def test_client_readjust_per_layer_drop_and_grow_are_disjoint_and_equal() -> None:
    # Prepare: two random layers at density 0.3, α = 0.25
    gen = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(shape, generator=gen) < 0.3 for n, shape in [("a", (20, 30)), ("b", (7, 9))]}
    weights = {n: torch.randn(m.shape, generator=gen) * m for n, m in masks.items()}
    importance = {n: torch.rand(m.shape, generator=gen) for n, m in masks.items()}
    # Execute
    new = client_readjust(masks, weights, importance, 0.25)
    # Assert
    for n, old in masks.items():
        dropped, grown = old & ~new[n], new[n] & ~old
        assert not bool((dropped & grown).any())
        assert int(dropped.sum()) == int(grown.sum()) == int(0.25 * int(old.sum()))
        assert int(new[n].sum()) == int(old.sum())


def _client_view(round: int, model: nn.Module, masks: dict, importance: dict | None) -> ClientView:
    return ClientView(round=round, client_id=0, model=model, masks=masks, importance=importance,
                      dataset=_tiny_dataset(), partition=np.arange(4), rng=np.random.default_rng(0))


def test_client_hook_readjusts_only_in_readjustment_rounds_and_consumes_importance() -> None:
    # Prepare: readjustments at 1, 3, ...; layer 1 keeps 12 of 24; α_1 = 0.25·(1 + cos(π/50)) ≈ 0.4995 swaps 5
    method = _method(FedDSTSettings(alpha=0.5, interval=2, first_round=1, end_round=50))
    model = _model()
    masks = {n: torch.arange(p.numel()).reshape(p.shape) % 2 == 0 for n, p in model.named_parameters()
             if n.endswith("weight")}
    importance = {n: p.detach().abs() + 1.0 for n, p in model.named_parameters()}
    # Execute
    quiet = method.client_hook(_client_view(2, model, masks, importance))
    hook = method.client_hook(_client_view(1, model, masks, importance))
    # Assert
    assert quiet is None
    assert hook is not None and hook.consumed_importance and hook.extras is None and hook.masks is not None
    alpha = readjustment_fraction(1, 0.5, 50)
    for n, old in masks.items():
        changed = int((old & ~hook.masks[n]).sum())
        assert changed == int(alpha * int(old.sum())) and int(hook.masks[n].sum()) == int(old.sum())


# --- server mask aggregation ---


def test_server_mask_two_clients_union_then_magnitude_then_votes_hand_worked() -> None:
    # Prepare: the global mask keeps 4 of 8 (idx 0-3). Both clients drop idx 3; A drops idx 2, B drops idx 1.
    # A regrows idx 5 and 6, B regrows idx 6 and 7; regrown weights hold 0.
    glob = torch.tensor([True, True, True, True, False, False, False, False])
    a = np.array([True, True, False, False, False, True, True, False])
    b = np.array([True, False, True, False, False, False, True, True])
    a_w = np.array([0.4, -0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    b_w = np.array([0.2, 0.0, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    server = {"w": torch.full((8,), 7.0)}  # stale values: only idx 3 (kept by nobody) and 4 keep them
    # Execute: sparse weighted average (equal N_i), then the new mask
    state = client_masked_aggregate(server, [{"w": a_w}, {"w": b_w}], [{"w": a}, {"w": b}], [100, 100])
    new = aggregate_masks(state, [{"w": torch.from_numpy(a)}, {"w": torch.from_numpy(b)}], {"w": 4})
    # Assert: w̄ = [0.3, -0.6, 0.05, 7 (stale), 7 (stale), 0, 0, 0]; union = {0, 1, 2, 5, 6, 7}.
    # Trained magnitudes keep 0, 1, 2 (3 of 4 slots); idx 3's stale 7.0 is outside the union, so it is gone.
    # The last slot goes to the regrown weight with the most votes: idx 6 (2 votes) over 5 and 7 (1 each).
    assert state["w"].tolist() == pytest.approx([0.3, -0.6, 0.05, 7.0, 7.0, 0.0, 0.0, 0.0])
    assert new["w"].tolist() == [True, True, True, False, False, False, True, False]
    assert int(new["w"].sum()) == int(glob.sum())


def test_server_mask_keeps_the_largest_aggregated_magnitudes_of_the_union() -> None:
    # Prepare: disjoint client masks; w̄ = [0.1, -0.9, 0.5, 0.2]; keep 2 -> idx 1 and 2
    state = {"w": torch.tensor([0.1, -0.9, 0.5, 0.2])}
    masks = [{"w": torch.tensor([True, True, False, False])}, {"w": torch.tensor([False, False, True, True])}]
    # Execute / Assert
    assert aggregate_masks(state, masks, {"w": 2})["w"].tolist() == [False, True, True, False]


def test_equal_votes_between_regrown_weights_go_to_the_lower_index() -> None:
    state = {"w": torch.tensor([0.5, 0.0, 0.0])}
    masks = [{"w": torch.tensor([True, False, True])}, {"w": torch.tensor([True, True, False])}]
    assert aggregate_masks(state, masks, {"w": 2})["w"].tolist() == [True, True, False]


def _aggregate_view(round: int, masks: dict, state: dict, client_masks: list) -> AggregateView:
    return AggregateView(round=round, state=state, previous_state=state, masks=masks, importance=None,
                         clients=list(range(len(client_masks))), devices=[], client_masks=client_masks)


def test_after_aggregate_installs_the_new_mask_with_a_record_and_skips_quiet_rounds() -> None:
    # Prepare: the two-client example above, readjustment round 1
    method = _method(FedDSTSettings(alpha=0.5, interval=2, first_round=1, end_round=50))
    glob = {"w": torch.tensor([True, True, True, True, False, False, False, False])}
    state = {"w": torch.tensor([0.3, -0.6, 0.05, 7.0, 7.0, 0.0, 0.0, 0.0])}
    own = [{"w": torch.tensor([True, True, False, False, False, True, True, False])},
           {"w": torch.tensor([True, False, True, False, False, False, True, True])}]
    # Execute
    quiet = method.after_aggregate(_aggregate_view(2, glob, state, [None, None]))
    decision = method.after_aggregate(_aggregate_view(1, glob, state, own))
    # Assert
    assert quiet is None
    assert decision is not None and decision.masks is not None and decision.state is None
    assert decision.masks["w"].tolist() == [True, True, True, False, False, False, True, False]
    record = decision.record
    assert record is not None
    assert (record["removed"], record["added"], record["kept"]) == ({"w": 1}, {"w": 1}, {"w": 4})
    assert record["density-before"] == record["density-after"] == 0.5
    assert record["readjust-fraction"] == pytest.approx(readjustment_fraction(1, 0.5, 50))
    assert method.summary()["readjustments"] == 1 and method.summary()["weights-changed"] == 1


def test_state_dict_round_trips_the_counters_and_rejects_unknown_keys() -> None:
    # Prepare
    a = _method()
    a.n_readjustments, a.n_changed = 3, 17
    b = _method()
    # Execute
    b.load_state_dict(a.state_dict())
    # Assert
    assert (b.n_readjustments, b.n_changed) == (3, 17)
    with pytest.raises(ValueError, match="unknown keys"):
        b.load_state_dict({"mask": 1})


# --- end to end ---


@pytest.mark.slow
def test_digits_run_keeps_the_target_density_while_the_mask_moves_and_learns(tmp_path: Path) -> None:
    # Prepare: 12 rounds, readjust at 1, 4, 7, 10 (ΔR = 3, R_end = 12), α = 0.3, d = 0.3, MLP on digits
    from prunefl.experiments.config import load_config
    from prunefl.experiments.results import load_checkpoint
    from prunefl.experiments.runner import run_experiment

    config = load_config(None, [
        "data.dataset=digits", "data.partition=iid", "data.num_clients=4", "clients_per_round=4",
        "model.name=mlp", "timing.preset=uniform", "rounds=12", "eval_every=4", "lr=0.1", "threads=1",
        "method=feddst", "reference.density=0.3", "feddst.interval=3", "feddst.alpha=0.3", "feddst.end_round=12",
    ])
    out = tmp_path / "run"
    # Execute
    run_experiment(config, out, plots=False)
    # Assert
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    _, masks, _, _, _ = load_checkpoint(out)
    n_total = sum(m.numel() for m in masks.values())
    assert len(rows) == 12
    assert len({r["density"] for r in rows}) == 1  # exactly constant, readjustment rounds included
    assert rows[0]["density"] == round(0.3 * n_total) / n_total
    readjusted = [r for r in rows if r["reconfig"] is not None]
    assert [r["round"] for r in readjusted] == [1, 4, 7, 10]
    assert sum(sum(r["reconfig"]["added"].values()) for r in readjusted) > 0  # the global mask moved
    for r in readjusted:
        assert r["reconfig"]["added"] == r["reconfig"]["removed"]  # swaps only, per layer
    assert {k: int(m.sum()) for k, m in masks.items()} == readjusted[-1]["reconfig"]["kept"]
    assert rows[-1]["test-accuracy"] > 0.3  # 10 classes: chance is 0.1
