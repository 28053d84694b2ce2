"""End to end on digits: a hostile client's NaN replies are rejected every round, counted, and change nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prunefl.engines.simulation import SimulationEngine
from prunefl.errors import TooFewRepliesError
from prunefl.experiments.config import load_config
from prunefl.fl.links import TrainReply
from prunefl.fl.round import RoundPlan
from prunefl.sparse.codec import decode_train_res, encode_train_res

_OVERRIDES = [
    "data.dataset=digits", "data.partition=iid", "data.num_clients=3", "clients_per_round=3",
    "model.name=mlp", "timing.preset=uniform", "rounds=6", "eval_every=3", "lr=0.1", "threads=1",
    "method=prunefl-no-ip", "reconfig_interval=2", "first_reconfig_round=2", "max_decrease=0.9",
]
HOSTILE = 1


class _HostileEngine(SimulationEngine):
    """Client 1 trains as usual, then replaces one of its kept weights by NaN before sending."""

    def deliver(self, plan: RoundPlan, sparse_layers: set[str]) -> dict[int, TrainReply]:
        replies = super().deliver(plan, sparse_layers)
        res = decode_train_res(replies[HOSTILE].data, plan.ins.masks)
        weight = res.state["fc1.weight"]
        weight[np.nonzero(plan.ins.masks["fc1.weight"])[0][0], np.nonzero(plan.ins.masks["fc1.weight"])[1][0]] = np.nan
        replies[HOSTILE] = TrainReply(encode_train_res(res, plan.ins.masks, level=None), round=plan.round)
        return replies


class _SilentEngine(SimulationEngine):
    """Client 1 trains as usual, and its reply is lost."""

    def deliver(self, plan: RoundPlan, sparse_layers: set[str]) -> dict[int, TrainReply]:
        replies = super().deliver(plan, sparse_layers)
        del replies[HOSTILE]
        return replies


def _run(engine_class: type[SimulationEngine], *overrides: str) -> tuple[SimulationEngine, list[dict]]:
    from prunefl.experiments.runner import build_simulation, load_run_dataset

    config = load_config(None, [*_OVERRIDES, *overrides])
    torch.set_num_threads(1)
    engine = engine_class(build_simulation(config, load_run_dataset(config)))
    rows: list[dict] = []
    engine.run(rows.append)
    return engine, rows


@pytest.mark.slow
def test_a_client_sending_nan_every_round_is_rejected_and_the_run_equals_one_without_its_replies() -> None:
    # Prepare / Execute: the same run twice, client 1 hostile in one and silent in the other
    hostile, rows = _run(_HostileEngine)
    silent, silent_rows = _run(_SilentEngine)
    # Assert: every round counts one NaN rejection from client 1, and aggregates clients 0 and 2
    assert [r["rejected"] for r in rows] == [{"nan": 1}] * 6
    assert [r["rejected-clients"] for r in rows] == [[[HOSTILE, "nan"]]] * 6
    assert all(r["clients"] == [0, 2] and r["missing"] == [] for r in rows)
    assert all(r["missing"] == [HOSTILE] and r["rejected"] == {} for r in silent_rows)
    # the final model and masks are bit-for-bit those of the run in which client 1's replies never came
    a, b = hostile.setup.server, silent.setup.server
    assert a.state.keys() == b.state.keys() and all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks) and a.mask_version == b.mask_version
    assert rows[2]["reconfig"] is not None  # PruneFL reconfigured from the two honest clients' importance
    assert [r["test-accuracy"] for r in rows] == [r["test-accuracy"] for r in silent_rows]
    assert rows[-1]["test-accuracy"] > 0.3  # 10 classes: clearly learning


@pytest.mark.slow
def test_median_aggregation_learns_on_digits() -> None:
    # Prepare / Execute: FedAvg with the coordinate-wise median of 3 clients
    _, rows = _run(SimulationEngine, "method=fedavg", "aggregation=median")
    # Assert: nothing rejected, the model learns
    assert all(r["rejected"] == {} for r in rows)
    assert math.isfinite(rows[-1]["train-loss"]) and rows[-1]["test-accuracy"] > 0.3


class _FlakyEngine(SimulationEngine):
    """Every reply of round 1's first try is lost (all nodes dropped out for a moment)."""

    tries = 0

    def deliver(self, plan: RoundPlan, sparse_layers: set[str]) -> dict[int, TrainReply]:
        replies = super().deliver(plan, sparse_layers)
        if plan.round == 1:
            self.tries += 1
            if self.tries == 1:
                return {}
        return replies


@pytest.mark.slow
def test_a_round_without_replies_is_tried_again_by_option_and_stops_the_run_without() -> None:
    # Prepare / Execute: 3 FedAvg rounds, round 1's first try gets no reply
    engine, rows = _run(_FlakyEngine, "method=fedavg", "rounds=3", "round_retries=1")
    # Assert: round 1 was applied on its second try, and says so
    assert [r["retries"] for r in rows] == [0, 1, 0]
    assert [r["clients"] for r in rows] == [[0, 1, 2]] * 3
    # without retries the same fault stops the run at round 1
    with pytest.raises(TooFewRepliesError, match="round 1: 0 valid replies of 3 participants"):
        _run(_FlakyEngine, "method=fedavg", "rounds=3")


def test_robust_aggregation_is_refused_for_methods_whose_clients_own_masks() -> None:
    # Prepare
    from prunefl.errors import ConfigError
    from prunefl.experiments.runner import build_simulation, load_run_dataset

    config = load_config(None, [*_OVERRIDES, "method=feddst", "reference.density=0.5", "aggregation=median"])
    # Execute / Assert: refused while the run is assembled, before anything is written
    with pytest.raises(ConfigError, match="fl.aggregation 'median' is not supported by method 'feddst'"):
        build_simulation(config, load_run_dataset(config))
