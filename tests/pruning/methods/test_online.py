"""The online baseline (spec §8): the k controller's arithmetic, the cost, the mask rebuild, uploads and resume."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from prunefl import metrics as K
from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError
from prunefl.pruning.methods import AggregateView, ClientView, MethodContext, build_method, get_spec
from prunefl.pruning.methods.online import (
    LABELS_KEY,
    SAMPLES_KEY,
    WARNING,
    OnlineControl,
    OnlineLearning,
    OnlineSettings,
    layer_counts,
    magnitude_masks,
    round_draws,
    start_control,
    stochastic_round,
    update_k,
)
from prunefl.timing.clock import DeviceProfile
from prunefl.timing.model import TimeModel

CTX = MethodContext(seed=0, rounds=20, local_steps=1, batch_size=4, lr=0.1, num_clients=2)
# t = (1, 2) s per weight of layers a, b and c = 5 s at K = 1; device 1 computes twice as slowly
TM = TimeModel(("a", "b"), (1.0, 2.0), 5.0, 0.0)
DEVICES = [DeviceProfile(TM), DeviceProfile(TM, compute_scale=2.0)]


def _loss(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """A linear model's squared error: prediction = x · (a ⊙ m_a, b ⊙ m_b), shape (n,)."""
    v = torch.cat([(state[n] * masks[n]).reshape(-1) for n in ("a", "b")])
    return float(((x @ v - y) ** 2).mean())


def _hand_view(round: int = 1) -> AggregateView:
    """N = 30 (a: 10, b: 20). Previous model all zeros; the aggregate has 28 = 9·1 + 0.5 + 18·1 + 2·0.25 in total.

    Each of the two clients uploaded the sample x = (1, …, 1), y = 30, so L = (Σ kept weights − 30)².
    """
    a = torch.tensor([1.0] * 9 + [0.5])
    b = torch.tensor([1.0] * 18 + [0.25, 0.25])
    sample = {SAMPLES_KEY: np.ones((1, 30), dtype=np.float32), LABELS_KEY: np.array([30.0], dtype=np.float32)}
    return AggregateView(
        round=round,
        state={"a": a, "b": b},
        previous_state={"a": torch.zeros(10), "b": torch.zeros(20)},
        masks={"a": torch.ones(10, dtype=torch.bool), "b": torch.ones(20, dtype=torch.bool)},
        importance=None,
        clients=[0, 1],
        devices=DEVICES,
        extras=[sample, dict(sample)],
        lr=0.1,
        evaluate_loss=_loss,
    )


# --- the k update on hand-worked numbers ---


@pytest.mark.parametrize(
    ("legacy", "cost", "cost_aux_raw"),
    [
        # quirk: |m_l| of the k_aux = 27 mask, (9, 18); slowest device t = (2, 4), c = 10: Σ t·m = 18 + 72 = 90
        (True, 10 + 1.0 * 90, 10 + 0.9 * 90),
        # intended: layer sizes (10, 20): Σ t·n = 20 + 80 = 100
        (False, 10 + 1.0 * 100, 10 + 0.9 * 100),
    ],
)
def test_after_aggregate_steps_k_from_hand_worked_losses_and_costs(
    legacy: bool, cost: float, cost_aux_raw: float
) -> None:
    # Prepare: k = 30, k_aux = ⌈27.0⌉ = 27, k_min = round(0.2·30) = 6, so d = 24; round 1 -> t = 2, η = 24/√4 = 12
    settings = OnlineSettings(start_round=1, k_min_fraction=0.2, legacy_cost_after_repruning=legacy)
    method = OnlineLearning(settings, CTX)
    # Execute
    decision = method.after_aggregate(_hand_view(round=1))
    # Assert: L_prev = (0 − 30)² = 900; L_cur = (28 − 30)² = 4; L_aux drops a's 0.5 and b's two 0.25: (27 − 30)² = 9
    assert decision is not None and decision.record is not None and decision.masks is not None
    rec = decision.record
    assert (rec[K.K_LOSS_PREV], rec[K.K_LOSS_CUR], rec[K.K_LOSS_AUX]) == (900.0, 4.0, 9.0)
    assert rec[K.K_COST] == pytest.approx(cost, rel=1e-12)
    # both losses fell: cost_aux = cost(k_aux)·(900 − 4)/(900 − 9), below cost, so k falls by η
    assert rec[K.K_COST_AUX] == pytest.approx(cost_aux_raw * 896 / 891, rel=1e-12)
    assert rec[K.K_STEP_SIZE] == 12.0 and rec[K.K_HELD] is False
    assert (rec[K.K_K_BEFORE], rec[K.K_K], rec[K.K_K_AUX]) == (30, 18, 12)  # 30 − 12; SR(18 − 6) exact
    # every layer keeps 18/30 of itself by magnitude, ties to the lower index: a 6 of 10, b 12 of 20
    assert decision.masks["a"].tolist() == [True] * 6 + [False] * 4
    assert decision.masks["b"].tolist() == [True] * 12 + [False] * 8
    assert rec[K.K_REMOVED] == {"a": 4, "b": 8} and rec[K.K_ADDED] == {"a": 0, "b": 0}
    assert rec[K.K_DENSITY_AFTER] == pytest.approx(18 / 30)
    assert method.control is not None and method.control.k == 18


def test_after_aggregate_before_start_round_does_nothing() -> None:
    method = OnlineLearning(OnlineSettings(start_round=2), CTX)
    assert method.after_aggregate(_hand_view(round=1)) is None
    assert method.control is None


@pytest.mark.parametrize(
    ("draws", "k", "k_aux"),
    [
        ((0.4, 0.7), 20, 15),  # SR(19.5): 0.4 < 0.5 -> 20; SR(20 − 5.25 = 14.75): 0.7 < 0.75 -> 15
        ((0.6, 0.8), 19, 13),  # SR(19.5): 0.6 -> 19; SR(19 − 5.25 = 13.75): 0.8 -> 13
    ],
)
def test_update_k_rounds_stochastically_with_the_given_draws(draws: tuple[float, float], k: int, k_aux: int) -> None:
    # Prepare: N = 30, k_min = round(0.3·30) = 9, d = 21; t = 2: η = 21/2 = 10.5
    control = start_control(30, k_min_fraction=0.3)
    # Execute: cost above cost_aux, so k moves down by η
    new = update_k(control, cost=2.0, cost_aux=1.0, t=2, draws=draws)
    # Assert
    assert (new.k, new.k_aux) == (k, k_aux)
    assert (new.window_min, new.window_max, new.window_updates) == (k, k, 1)


def test_update_k_grows_k_when_the_aux_model_costs_more() -> None:
    # Prepare: k = 15, k_aux = 10, d = 21, t = 2: η = 10.5
    control = dataclasses.replace(start_control(30, k_min_fraction=0.3), k=15, k_aux=10)
    # Execute
    new = update_k(control, cost=1.0, cost_aux=2.0, t=2, draws=(0.4, 0.9))
    # Assert: SR(25.5): 0.4 -> 26; SR(26 − 5.25 = 20.75): 0.9 -> 20
    assert (new.k, new.k_aux) == (26, 20)


def test_update_k_holds_eleven_rounds_then_grows_by_the_step() -> None:
    # Prepare: N = 30, k_min = 9, d = 21, k = 15
    control = dataclasses.replace(start_control(30, k_min_fraction=0.3), k=15, k_aux=10)
    # Execute: the gradient estimate is undefined for 12 rounds in a row, t = 2 … 13
    ks, holds = [], []
    for t in range(2, 14):
        control = update_k(control, cost=1.0, cost_aux=None, t=t, draws=(0.5, 0.5))
        ks.append(control.k)
        holds.append(control.hold)
    # Assert: held 11 times (counter 1 … 11); at t = 13: SR(15 + 21/√26 ≈ 19.12) with draw 0.5 -> 19
    assert ks == [15] * 11 + [19]
    assert holds == list(range(1, 12)) + [0]
    assert control.window_updates == 1  # held rounds do not count towards the range window
    assert 15 + 21 / math.sqrt(26) == pytest.approx(19.118, abs=1e-3)


def test_update_k_clips_k_and_bounds_k_aux_below_k() -> None:
    # Prepare: k already at k_min = 9; d = 21; t = 2: η = 10.5
    control = dataclasses.replace(start_control(30, k_min_fraction=0.3), k=9, k_aux=5)
    # Execute: k would fall to SR(−1.5); clipped to 9. k_aux = SR(9 − 5.25) = 3 with draw 0.9, floor ⌈0.9⌉ = 1
    new = update_k(control, cost=2.0, cost_aux=1.0, t=2, draws=(0.0, 0.9))
    # Assert
    assert (new.k, new.k_aux) == (9, 3)
    # and k_aux stays below k: k = 1 (k_min = 1) gives k_aux = 0 whatever the floor
    tiny = OnlineControl(k=1, k_aux=0, k_min=1, k_max=30, floor_k_min=1, n_total=30)
    assert update_k(tiny, cost=2.0, cost_aux=1.0, t=2, draws=(0.0, 0.0)).k_aux == 0


@pytest.mark.parametrize(
    ("window_max", "span_prev", "accepted"),
    [
        # window [120, 240] -> [round(80), round(360)]: width 280; 998 + 280 <= 998·√2 = 1411.4; span 50 >= 0
        (240, 0, True),
        (400, 0, False),  # -> [80, 600]: width 520; 998 + 520 > 1411.4
        (240, 60, False),  # the last change came after a longer span (60 > 50)
    ],
)
def test_update_k_narrows_the_range_every_twenty_updates(window_max: int, span_prev: int, accepted: bool) -> None:
    # Prepare: N = 1000, k_min = 2 (d = 998), 19 updates since the last attempt, smallest k 200
    control = OnlineControl(k=220, k_aux=200, k_min=2, k_max=1000, floor_k_min=2, n_total=1000, window_min=200,
                            window_max=window_max, window_updates=19, span_prev=span_prev)
    # Execute: t = 50: η = 998/√100 = 99.8; k = SR(120.2) = 120 with draw 0.5 is the 20th update
    new = update_k(control, cost=2.0, cost_aux=1.0, t=50, draws=(0.5, 0.5))
    # Assert
    assert new.k == 120 and new.k_aux == 70  # SR(120 − 49.9 = 70.1), draw 0.5 -> 70
    assert (new.k_min, new.k_max, new.t_ref) == ((80, 360, 50) if accepted else (2, 1000, 0))
    assert new.span_prev == (50 if accepted else span_prev)
    assert (new.window_min, new.window_max, new.window_updates) == (1000, 2, 0)  # reset either way


def test_stochastic_round_rounds_up_with_the_fractional_probability() -> None:
    assert [stochastic_round(12.25, u) for u in (0.0, 0.2499, 0.25, 0.9)] == [13, 13, 12, 12]
    assert stochastic_round(-1.5, 0.4) == -1 and stochastic_round(7.0, 0.0) == 7
    # over many draws, the mean is x (binomial standard error of 10,000 draws ≈ 0.004)
    u = np.random.default_rng(0).random(10_000)
    assert np.mean([stochastic_round(3.3, float(v)) for v in u]) == pytest.approx(3.3, abs=0.02)


def test_start_control_matches_the_official_initial_values() -> None:
    c = start_control(4736)  # the digits MLP
    assert (c.k, c.k_aux, c.k_min, c.k_max) == (4736, 4263, 9, 4736)  # ⌈4262.4⌉, round(9.472)


# --- the mask rebuild ---


def test_layer_counts_keep_the_same_fraction_of_every_layer() -> None:
    # n_l − ⌊n_l·(N − k)/N⌋, N = 30: k = 19 -> a: 10 − ⌊110/30⌋ = 7, b: 20 − ⌊220/30⌋ = 13
    assert layer_counts({"a": 10, "b": 20}, 19) == {"a": 7, "b": 13}
    assert layer_counts({"a": 10, "b": 20}, 30) == {"a": 10, "b": 20}
    assert layer_counts({"a": 10, "b": 20}, 0) == {"a": 0, "b": 0}


def test_magnitude_masks_keep_the_per_layer_fraction_by_magnitude_and_revive_stale_values() -> None:
    # Prepare: random weights; layer a's largest magnitude sits where the old mask pruned it (a stale value)
    gen = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(40, generator=gen), "b": torch.randn(8, 10, generator=gen)}
    weights["a"][3] = 10.0
    # Execute: k = 60 of N = 120: half of each layer
    masks = magnitude_masks(weights, 60)
    # Assert
    assert {n: int(m.sum()) for n, m in masks.items()} == {"a": 20, "b": 40}
    for name, mask in masks.items():
        kept, pruned = weights[name].abs()[mask], weights[name].abs()[~mask]
        assert float(kept.min()) >= float(pruned.max())
    assert bool(masks["a"][3])  # the stale coordinate is back


# --- uploads ---


def _dataset() -> ArrayDataset:
    x = torch.arange(10 * 4, dtype=torch.uint8).reshape(10, 1, 2, 2) * 5
    return ArrayDataset("t", x, torch.arange(10), torch.zeros((1, 1, 2, 2), dtype=torch.uint8),
                        torch.zeros(1, dtype=torch.long), 10)


def _client_view(round: int, partition: np.ndarray, seed: int = 0) -> ClientView:
    return ClientView(round=round, client_id=0, model=torch.nn.Linear(1, 1), masks={}, importance=None,
                      dataset=_dataset(), partition=partition, rng=np.random.default_rng(seed))


def test_client_hook_uploads_prepared_samples_from_its_partition_from_start_round() -> None:
    # Prepare
    method = OnlineLearning(OnlineSettings(start_round=3), CTX)
    partition = np.array([1, 4, 5, 7, 8, 9])
    # Execute
    before = method.client_hook(_client_view(2, partition))
    hook = method.client_hook(_client_view(3, partition))
    again = method.client_hook(_client_view(3, partition))
    # Assert
    assert before is None
    assert hook is not None and hook.extras is not None and hook.masks is None
    x, y = hook.extras[SAMPLES_KEY], hook.extras[LABELS_KEY]
    assert x.shape == (5, 1, 2, 2) and x.dtype == np.float32
    assert len(set(y.tolist())) == 5 and set(y.tolist()) <= set(partition.tolist())  # labels = indices here
    expected = _dataset().x_train[torch.from_numpy(y)].float() / 255.0  # digits-style scaling, no augmentation
    assert np.array_equal(x, expected.numpy())
    assert again is not None and again.extras is not None and np.array_equal(again.extras[LABELS_KEY], y)


def test_client_hook_uploads_the_whole_partition_when_it_is_smaller() -> None:
    hook = OnlineLearning(OnlineSettings(start_round=0), CTX).client_hook(_client_view(0, np.array([2, 6])))
    assert hook is not None and hook.extras is not None and sorted(hook.extras[LABELS_KEY].tolist()) == [2, 6]


# --- resume ---


def _random_view(round: int, masks: dict[str, torch.Tensor]) -> AggregateView:
    """A view whose states and samples depend only on the round, so two methods can be fed the same rounds."""
    gen = torch.Generator().manual_seed(round)
    state = {"a": torch.randn(10, generator=gen), "b": torch.randn(20, generator=gen)}
    prev = {"a": torch.randn(10, generator=gen), "b": torch.randn(20, generator=gen)}
    sample = {SAMPLES_KEY: torch.randn(3, 30, generator=gen).numpy(),
              LABELS_KEY: torch.randn(3, generator=gen).numpy()}
    return AggregateView(round=round, state=state, previous_state=prev, masks=masks, importance=None,
                         clients=[0, 1], devices=DEVICES, extras=[sample, None], lr=0.1, evaluate_loss=_loss)


def _run(method: OnlineLearning, rounds: range, masks: dict[str, torch.Tensor]) -> tuple[list, dict]:
    records = []
    for r in rounds:
        decision = method.after_aggregate(_random_view(r, masks))
        assert decision is not None
        masks = decision.masks if decision.masks is not None else masks
        records.append((decision.record, {n: m.tolist() for n, m in masks.items()}))
    return records, masks


def test_state_dict_round_trip_continues_identically() -> None:
    # Prepare: a short range window so a range attempt falls after the checkpoint too
    settings = OnlineSettings(start_round=1, k_min_fraction=0.1, range_every=3, hold_rounds=2)
    dense = {"a": torch.ones(10, dtype=torch.bool), "b": torch.ones(20, dtype=torch.bool)}
    whole, _ = _run(OnlineLearning(settings, CTX), range(1, 13), dense)
    first = OnlineLearning(settings, CTX)
    _, masks = _run(first, range(1, 5), dense)  # stops mid-hold (counter 2) with 2 updates in the range window
    # Execute: through JSON, into a fresh method
    resumed = OnlineLearning(settings, CTX)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    rest, _ = _run(resumed, range(5, 13), masks)
    # Assert
    assert first.control is not None and first.control.hold == 2 and first.control.window_updates == 2
    assert rest == whole[4:]
    assert len({rec[K.K_K] for rec, _ in whole}) > 1  # k did move, so the comparison means something


def test_round_draws_depend_only_on_seed_and_round() -> None:
    assert round_draws(3, 10) == round_draws(3, 10)
    assert round_draws(3, 10) != round_draws(3, 11) and round_draws(3, 10) != round_draws(4, 10)


# --- settings and registration ---


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_upload", 0),  # no samples, no losses to compare
        ("start_round", -1),  # rounds are 0-based
        ("hold_rounds", -1),  # a count of rounds
        ("range_every", 0),  # would attempt a range change without any update
        ("k_min_fraction", 0.0),  # k_min must keep weights
        ("k_aux_fraction", 1.0),  # k_aux must be below k = N
        ("k_min_fraction", 0.95),  # above k_aux_fraction (0.9)
    ],
)
def test_bad_settings_raise_config_error_naming_the_key(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"online.{field}"):
        OnlineSettings(**{field: value})


def test_spec_registers_online_with_its_privacy_warning() -> None:
    spec = get_spec("online")
    method = build_method("online", OnlineSettings(), CTX, None)
    assert isinstance(method, OnlineLearning)
    assert (spec.display_name, spec.colour, spec.section, spec.needs) == ("Online", "C3", "online", frozenset())
    assert spec.warning == WARNING and "raw training samples" in WARNING
    assert method.summary()[K.K_WARNING] == WARNING


# --- end to end ---


@pytest.mark.slow
def test_online_run_on_digits_prunes_uploads_samples_and_warns(tmp_path: Path) -> None:
    from prunefl.experiments.config import load_config
    from prunefl.experiments.runner import run_experiment

    # Prepare: 4 clients, all selected; k updates from round 3
    overrides = ["data.dataset=digits", "data.partition=iid", "data.num_clients=4", "clients_per_round=4",
                 "model.name=mlp", "timing.preset=uniform", "rounds=15", "eval_every=5", "lr=0.1", "threads=1",
                 "online.start_round=3"]
    # Execute
    online = run_experiment(load_config(None, [*overrides, "method=online"]), tmp_path / "online")
    fedavg = run_experiment(load_config(None, [*overrides, "method=fedavg"]), tmp_path / "fedavg", plots=False)
    # Assert
    rows = [json.loads(line) for line in (tmp_path / "online" / "metrics.jsonl").read_text().splitlines()]
    base = [json.loads(line) for line in (tmp_path / "fedavg" / "metrics.jsonl").read_text().splitlines()]
    assert {r["density"] for r in rows[:3]} == {1.0} and min(r["density"] for r in rows) < 1.0
    assert all(r["reconfig"] is None for r in rows[:3]) and all(r["reconfig"] is not None for r in rows[3:])
    # each of 4 clients uploads 5 prepared 8×8 inputs (float32) and 5 int64 labels: 4·(5·64·4 + 5·8) bytes
    sample_bytes = 4 * (5 * 64 * 4 + 5 * 8)
    diff = [a["bytes-up"] - b["bytes-up"] for a, b in zip(rows, base, strict=True)]
    assert diff[:3] == [0, 0, 0]  # same training, no uploads yet
    assert diff[3] == sample_bytes  # same dense weights (the first update acts after this round), plus samples
    assert online.summary[K.K_WARNING] == WARNING and K.K_WARNING not in fedavg.summary
    assert WARNING in (tmp_path / "online" / "report.md").read_text()
