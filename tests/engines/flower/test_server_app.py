"""The Flower ServerApp and ClientApp in-process (a fake Grid calls the ClientApp directly): equal to the simulation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

pytest.importorskip("flwr")

import torch  # noqa: E402
from flwr.app import Context, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from prunefl import metrics as K  # noqa: E402
from prunefl.engines.flower.app_config import parse_run_config  # noqa: E402
from prunefl.engines.flower.client_app import app as client_app  # noqa: E402
from prunefl.engines.flower.server_app import run_on_grid  # noqa: E402
from prunefl.errors import DecodeError, InconsistentRepliesError  # noqa: E402
from prunefl.sparse.codec import decode_train_ins  # noqa: E402
from prunefl.experiments.runner import run_experiment  # noqa: E402

# measured per run or per round: the only fields allowed to differ between the engines
WALL_KEYS = {K.K_WALL_S, K.K_COMPUTE_WALL_S, K.K_ROUND_WALL_S, K.K_DELIVERY_WALL_S, K.K_NODES}

OVERRIDES = (
    "data.dataset=digits model.name=mlp data.num_clients=2 data.partition=iid fl.clients_per_round=2 fl.rounds=3 "
    "fl.local_steps=3 fl.batch_size=8 fl.eval_every=1 pruning.method=prunefl-no-ip pruning.reconfig_interval=2 "
    "pruning.first_reconfig_round=2 timing.preset=uniform threads=1 seed=5"
)


class InProcessGrid(Grid):
    """Flower's Grid, mocked: each message goes straight to the ClientApp with its node's own Context."""

    def __init__(self, run_config: dict[str, object], node_partitions: dict[int, int]) -> None:
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config={"partition-id": p}, state=RecordDict(),
                          run_config=run_config)
            for node, p in node_partitions.items()
        }
        self.sent: list[Message] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = []
        for message in messages:
            self.sent.append(message)
            out.append(client_app(message, self.contexts[message.metadata.dst_node_id]))
        return out

    # the engine uses only the calls above
    def set_run(self, run_id: int) -> None:  # type: ignore[override]
        raise NotImplementedError

    @property
    def run(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError


@pytest.fixture(autouse=True)
def serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Flower's ServerApp process sets before ``main`` runs: messages are stamped with the run and task."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_flower_run_in_process_equals_simulation_masks_bit_for_bit(tmp_path: Path) -> None:
    # Prepare: node ids in the opposite order of the partitions, so the mapping matters
    run_config = {"prunefl.overrides": OVERRIDES, "prunefl.run-dir": str(tmp_path / "flower")}
    config, _ = parse_run_config(run_config)
    grid = InProcessGrid(run_config, node_partitions={902: 0, 17: 1})

    # Execute
    run_experiment(config, tmp_path / "sim", plots=False)
    run_on_grid(grid, run_config, plots=False)

    # Assert: every row equal except measured times; a reconfiguration happened (round 2)
    sim, flower = _rows(tmp_path / "sim"), _rows(tmp_path / "flower")
    assert len(sim) == len(flower) == 3
    for a, b in zip(sim, flower):
        assert {k: v for k, v in a.items() if k not in WALL_KEYS} == {k: v for k, v in b.items() if k not in WALL_KEYS}
        assert b[K.K_NODES] == [902, 17]  # partitions 0 and 1
        assert b[K.K_DELIVERY_WALL_S] <= b[K.K_ROUND_WALL_S]
    assert flower[2][K.K_RECONFIG] is not None
    assert flower[2][K.K_DENSITY] < 1.0
    # the final checkpoint (state and masks) is bit for bit the simulation's
    # (run/...: the run state; the simulation's holds its clients' states, a Flower server's cannot: nodes keep them)
    ck_sim = {k: v for k, v in load_file(next((tmp_path / "sim").glob("*.safetensors"))).items() if k[:4] != "run/"}
    ck_flower = {k: v for k, v in load_file(next((tmp_path / "flower").glob("*.safetensors"))).items()
                 if k[:4] != "run/"}
    assert sorted(ck_sim) == sorted(ck_flower)
    assert any(k.endswith("_mask") or "mask" in k for k in ck_sim)
    for key in ck_sim:
        assert ck_sim[key].dtype == ck_flower[key].dtype and torch.equal(ck_sim[key], ck_flower[key]), key
    # the results folder has the same files
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == sorted(p.name for p in (tmp_path / "flower").iterdir())


def test_flower_run_masks_sent_only_when_changed(tmp_path: Path) -> None:
    # Prepare
    run_config = {"prunefl.overrides": OVERRIDES, "prunefl.run-dir": str(tmp_path / "flower")}
    grid = InProcessGrid(run_config, node_partitions={3: 0, 4: 1})

    # Execute
    run_on_grid(grid, run_config, plots=False)

    # Assert: round 0 carries the masks, rounds 1 and 2 (same mask version 0) omit them: without the masks a
    # node cached, their bytes do not decode; each node kept its client state between rounds
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(train) == 6
    records = [m.content.config_records["prunefl"] for m in train]
    assert [r["mask-version"] for r in records] == [0] * 6
    decode_train_ins(records[0]["data"])  # type: ignore[arg-type]
    for record in records[2:]:
        with pytest.raises(DecodeError):
            decode_train_ins(record["data"])  # type: ignore[arg-type]
    assert all("prunefl-client-state" in c.state.config_records for c in grid.contexts.values())


def test_flower_run_missing_partition_stops_with_error(tmp_path: Path) -> None:
    # Prepare: two nodes both claim partition 0, none holds partition 1
    run_config = {"prunefl.overrides": OVERRIDES, "prunefl.run-dir": str(tmp_path / "flower"),
                  "prunefl.connect-timeout-s": 0.1}
    grid = InProcessGrid(run_config, node_partitions={1: 0, 2: 0})

    # Execute / Assert
    with pytest.raises(InconsistentRepliesError, match="both hold partition 0"):
        run_on_grid(grid, run_config, plots=False)
