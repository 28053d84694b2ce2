"""Batch streams, client selection, learning-rate schedules and losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunefl.fl.batches import BatchStream
from prunefl.fl.losses import make_loss
from prunefl.fl.lr_schedule import learning_rate
from prunefl.fl.selection import select_clients


def test_batch_stream_visits_every_sample_once_per_pass() -> None:
    # Prepare
    s = BatchStream(np.arange(10, 20), np.random.default_rng(0))
    # Execute: two full passes in batches of 4 (crossing pass boundaries)
    seen = np.concatenate([s.next(4) for _ in range(5)])
    # Assert
    assert sorted(seen[:10].tolist()) == list(range(10, 20))
    assert sorted(seen[10:20].tolist()) == list(range(10, 20))


def test_batch_stream_cycles_partitions_smaller_than_a_batch() -> None:
    s = BatchStream(np.array([3, 4]), np.random.default_rng(0))
    batch = s.next(5)
    assert batch.size == 5 and set(batch.tolist()) == {3, 4}


def test_selection_all_clients_when_m_equals_n() -> None:
    assert select_clients(4, 4, seed=1, round=9) == [0, 1, 2, 3]


def test_selection_is_deterministic_and_varies_by_round() -> None:
    # Execute
    draws = [select_clients(100, 10, seed=3, round=r) for r in range(5)]
    again = [select_clients(100, 10, seed=3, round=r) for r in range(5)]
    # Assert
    assert draws == again
    assert len({tuple(d) for d in draws}) == 5
    assert all(len(set(d)) == 10 and all(0 <= c < 100 for c in d) for d in draws)


@pytest.mark.parametrize(
    "schedule, r, expected",
    [("constant", 500, 0.2), ("half_life", 100, 0.1), ("step", 250, 0.2 * 0.5**2)],
)
def test_learning_rate_schedules(schedule: str, r: int, expected: float) -> None:
    lr = learning_rate(r, 0.2, schedule, half_life_rounds=100, step_rounds=100, step_gamma=0.5)
    assert lr == pytest.approx(expected)


def test_bce_onehot_is_mean_over_batch_and_classes() -> None:
    # Prepare: logits 0 give BCE log(2) per entry
    loss = make_loss("bce_onehot", 4)
    # Execute
    value = float(loss(torch.zeros(3, 4), torch.tensor([0, 1, 2])))
    # Assert
    assert value == pytest.approx(np.log(2.0))
