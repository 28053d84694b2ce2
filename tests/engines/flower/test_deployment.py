"""A real Flower deployment on 127.0.0.1: SuperLink, 2 SuperNodes, `flwr run` — insecure, and with TLS + node auth.

Each test starts its processes (free ports, own FLWR_HOME), checks the run's final status (``flwr run`` exits 0
even when a run fails) and stops every process it started by process group, also when it fails
(:mod:`flower_deployment`). The run's results folder must equal a simulated run of the same config: rows (measured
times aside) and the final checkpoint's weights and masks bit for bit.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("flwr")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from flower_deployment import BIN, Deployment  # noqa: E402
from prunefl import metrics as K  # noqa: E402
from prunefl.engines.flower.app_config import parse_run_config  # noqa: E402
from prunefl.experiments.runner import run_experiment  # noqa: E402
from prunefl.experiments.state import load_run_state  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None, reason="flwr executables missing"),
]

WALL_KEYS = {K.K_WALL_S, K.K_COMPUTE_WALL_S, K.K_ROUND_WALL_S, K.K_DELIVERY_WALL_S, K.K_NODES, K.K_DROPPED}

# PruneFL with a short initial pruning on the selected node (train.setup), then 3 rounds with a reconfiguration
OVERRIDES = (
    "data.dataset=digits model.name=mlp data.num_clients=2 data.partition=iid fl.clients_per_round=2 fl.rounds=3 "
    "fl.local_steps=3 fl.batch_size=8 fl.eval_every=1 pruning.method=prunefl pruning.reconfig_interval=2 "
    "pruning.first_reconfig_round=2 pruning.ip_interval=3 pruning.ip_check_every=2 pruning.ip_max_rounds=6 "
    "pruning.ip_batches=3 pruning.ip_start_factor=0 timing.preset=uniform threads=1 seed=5"
)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run_config(overrides: str, run_dir: Path, **extra: object) -> str:
    items = [f'prunefl.overrides="{overrides}"', f'prunefl.run-dir="{run_dir}"']
    items += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(items)


def _deploy_and_compare(tmp_path: Path, secure: bool) -> None:
    # Prepare
    run_dir = tmp_path / "flower-results"
    config, _ = parse_run_config({"prunefl.overrides": OVERRIDES})
    run_experiment(config, tmp_path / "sim", plots=False)
    with Deployment(tmp_path / "deployment", secure=secure) as d:
        d.start_superlink()
        d.start_supernode(0)
        d.start_supernode(1)
        if secure:  # a node whose key was never registered claims partition 1 too
            intruder = d.start_supernode(1, register=False, name="intruder")

        # Execute
        run_id = d.submit(_run_config(OVERRIDES, run_dir))
        status = d.wait(run_id, timeout=600)

        # Assert: the run completed (flwr run's exit code says nothing about that); the intruder was refused
        assert status == "finished:completed", d.run_log(run_id)[-4000:]
        if secure:
            code = d.procs[intruder].wait(timeout=120)
            assert code != 0 and "Failed to activate SuperNode" in d.log(intruder), d.log(intruder)[-2000:]
    sim, flower = _rows(tmp_path / "sim"), _rows(run_dir)
    assert len(sim) == len(flower)
    for a, b in zip(sim, flower):
        assert {k: v for k, v in a.items() if k not in WALL_KEYS} == {k: v for k, v in b.items() if k not in WALL_KEYS}
    fl_rows = [r for r in flower if r[K.K_STAGE] == "fl"]
    assert [r[K.K_ROUND] for r in fl_rows] == [0, 1, 2]
    assert fl_rows[2][K.K_RECONFIG] is not None  # a reconfiguration in round 2
    assert any(r[K.K_STAGE] == K.STAGE_IP for r in flower)  # initial pruning ran, on the selected node
    assert all(len(set(r[K.K_NODES])) == 2 and r[K.K_ROUND_WALL_S] > 0 for r in fl_rows)
    ck_sim = load_file(tmp_path / "sim" / "checkpoint.safetensors")
    ck_flower = load_file(run_dir / "checkpoint.safetensors")
    assert sorted(ck_sim) == sorted(ck_flower) and any("mask" in k for k in ck_sim)
    for key in ck_sim:
        assert ck_sim[key].dtype == ck_flower[key].dtype and torch.equal(ck_sim[key], ck_flower[key]), key
    assert (run_dir / "report.md").is_file() and (run_dir / "summary.json").is_file()


def test_insecure_deployment_equals_simulation(tmp_path: Path) -> None:
    _deploy_and_compare(tmp_path, secure=False)


def test_tls_and_node_authentication_deployment_equals_simulation(tmp_path: Path) -> None:
    _deploy_and_compare(tmp_path, secure=True)


def _wait_for(d: Deployment, run_id: int, run_dir: Path, done: Callable[[list[dict]], bool],
              timeout: float = 300.0) -> None:
    """Wait until the run's FL rows satisfy ``done``; fail at once, with the ServerApp's log, if it finished before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run_dir / "metrics.jsonl"
        if path.is_file() and done([r for r in _rows_safe(path) if r.get(K.K_STAGE) == "fl"]):
            return
        if d.status(run_id).startswith("finished"):
            raise AssertionError(f"run finished too early: {d.run_log(run_id)[-4000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"rows not written within {timeout} s: {d.run_log(run_id)[-4000:]}")


def _rows_safe(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return out


def test_supernode_stopped_mid_run_the_run_goes_on_then_stops_when_too_few_remain(tmp_path: Path) -> None:
    # Prepare: FedAvg over 2 nodes, 1 valid reply is enough; a node that has not replied within 30 s has dropped
    # out of the round; a checkpoint every 2 rounds
    overrides = OVERRIDES.replace("pruning.method=prunefl", "pruning.method=fedavg").replace(
        "fl.rounds=3", "fl.rounds=12") + " fl.min_valid_replies=1 checkpoint_every=2"
    run_dir = tmp_path / "flower-results"
    with Deployment(tmp_path / "deployment") as d:
        d.start_superlink()
        d.start_supernode(0)
        d.start_supernode(1)
        run_id = d.submit(_run_config(overrides, run_dir, **{"prunefl.reply-timeout-s": 30.0}))

        # Execute: node 1 vanishes after round 0 (SIGKILL of its whole process tree); node 0 once it trained alone
        _wait_for(d, run_id, run_dir, lambda rows: len(rows) >= 1)
        d.stop("supernode-1")
        _wait_for(d, run_id, run_dir, lambda rows: any(r[K.K_CLIENTS] == [0] for r in rows))
        d.stop("supernode-0")
        status = d.wait(run_id, timeout=600)
        log = d.run_log(run_id)

    # Assert: the run went on with node 0 alone, recording the drop, and stopped with an error (not a hang, not a
    # traceback from inside the round) when no valid reply remained; finished rounds and a checkpoint stay
    assert status == "finished:failed", log[-4000:]
    assert "TooFewRepliesError" in log, log[-4000:]
    rows = [r for r in _rows(run_dir) if r[K.K_STAGE] == "fl"]
    assert rows[0][K.K_CLIENTS] == [0, 1] and rows[0][K.K_DROPPED] == []
    alone = [r for r in rows if r[K.K_CLIENTS] == [0]]
    assert alone, [r[K.K_CLIENTS] for r in rows]
    assert all(r[K.K_DROPPED] and r[K.K_DROPPED][0]["partition"] == 1 for r in alone)
    assert len(rows) < 12
    state = load_run_state(run_dir)  # the last checkpoint is whole
    assert state.round <= len(rows) and state.round % 2 == 0
