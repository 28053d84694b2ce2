"""The Flower ServerApp and ClientApp in-process (a fake Grid calls the ClientApp directly): equal to the simulation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

pytest.importorskip("flwr")

import torch  # noqa: E402
from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from prunefl import metrics as K  # noqa: E402
from prunefl.engines.flower.app_config import parse_run_config  # noqa: E402
from prunefl.engines.flower.client_app import app as client_app  # noqa: E402
from prunefl.engines.flower.server_app import run_on_grid  # noqa: E402
from prunefl.errors import DecodeError, InconsistentRepliesError  # noqa: E402
from prunefl.sparse.codec import decode_train_ins  # noqa: E402
from prunefl.experiments.runner import run_experiment  # noqa: E402

# measured per run or per round, or what only Flower has: the only fields allowed to differ between the engines
WALL_KEYS = {K.K_WALL_S, K.K_COMPUTE_WALL_S, K.K_ROUND_WALL_S, K.K_DELIVERY_WALL_S, K.K_NODES, K.K_DROPPED}

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


IP = ("pruning.ip_interval=3 pruning.ip_check_every=2 pruning.ip_max_rounds=8 pruning.ip_batches=3 "
      "pruning.ip_start_factor=0")


def _assert_same_run(sim_dir: Path, flower_dir: Path) -> list[dict]:
    """Rows equal except measured fields, and the final checkpoint (state, masks) bit for bit; return Flower's rows."""
    sim, flower = _rows(sim_dir), _rows(flower_dir)
    assert len(sim) == len(flower)
    for a, b in zip(sim, flower):
        assert {k: v for k, v in a.items() if k not in WALL_KEYS} == {k: v for k, v in b.items() if k not in WALL_KEYS}
    ck_sim = load_file(next(sim_dir.glob("*.safetensors")))
    ck_flower = load_file(next(flower_dir.glob("*.safetensors")))
    assert sorted(ck_sim) == sorted(ck_flower)
    for key in ck_sim:
        assert ck_sim[key].dtype == ck_flower[key].dtype and torch.equal(ck_sim[key], ck_flower[key]), key
    return flower


def test_initial_pruning_runs_on_the_selected_node_and_equals_simulation(tmp_path: Path) -> None:
    # Prepare: PruneFL with a short initial pruning (it starts at once: ip_start_factor=0)
    overrides = OVERRIDES.replace("pruning.method=prunefl-no-ip", "pruning.method=prunefl") + " " + IP
    run_config = {"prunefl.overrides": overrides, "prunefl.run-dir": str(tmp_path / "flower")}
    config, _ = parse_run_config(run_config)
    grid = InProcessGrid(run_config, node_partitions={902: 0, 17: 1})

    # Execute
    run_experiment(config, tmp_path / "sim", plots=False)
    run_on_grid(grid, run_config, plots=False)

    # Assert: one setup message, to the node of the selected client, before any train message; the IP rows, the
    # pruned masks and the stale values it kept (spec §3.8) arrived exactly
    setup = [m for m in grid.sent if m.metadata.message_type == "train.setup"]
    assert len(setup) == 1 and grid.sent.index(setup[0]) < min(
        i for i, m in enumerate(grid.sent) if m.metadata.message_type == "train")
    summary = json.loads((tmp_path / "flower" / "summary.json").read_text())
    ip_client = summary[K.K_IP][K.K_IP_CLIENT]
    assert setup[0].metadata.dst_node_id == {0: 902, 1: 17}[ip_client]
    assert summary["before-fl-node"]["partition"] == ip_client
    flower = _assert_same_run(tmp_path / "sim", tmp_path / "flower")
    ip_rows = [r for r in flower if r[K.K_STAGE] == K.STAGE_IP]
    assert ip_rows and any(r[K.K_RECONFIG] is not None for r in ip_rows)
    assert ip_rows[-1][K.K_DENSITY] < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fedavg", "prunefl-ip-only", "snip", "synflow", "iterative", "online", "random",
                                    "feddst", "reinit", "random-reinit"])
def test_every_method_on_flower_equals_simulation(tmp_path: Path, method: str) -> None:
    # Prepare: methods that need a reference run take it from a PruneFL run folder ([reference] run_dir)
    reference = tmp_path / "reference"
    base = OVERRIDES.replace("fl.rounds=3", "fl.rounds=4") + " " + IP
    ref_config, _ = parse_run_config({"prunefl.overrides": base.replace("prunefl-no-ip", "prunefl")})
    run_experiment(ref_config, reference, plots=False)
    overrides = base.replace("pruning.method=prunefl-no-ip", f"pruning.method={method}") + (
        f" reference.run_dir={reference} iterative.prunes=2")
    run_config = {"prunefl.overrides": overrides, "prunefl.run-dir": str(tmp_path / "flower")}
    config, _ = parse_run_config(run_config)
    grid = InProcessGrid(run_config, node_partitions={5: 0, 6: 1})

    # Execute
    run_experiment(config, tmp_path / "sim", plots=False)
    run_on_grid(grid, run_config, plots=False)

    # Assert
    flower = _assert_same_run(tmp_path / "sim", tmp_path / "flower")
    assert [r[K.K_ROUND] for r in flower if r[K.K_STAGE] == "fl"] == [0, 1, 2, 3]


class DroppingGrid(InProcessGrid):
    """A grid on which nodes vanish: node ``n`` answers nothing from round ``gone[n]`` on, and is then not listed."""

    def __init__(self, run_config: dict[str, object], node_partitions: dict[int, int], gone: dict[int, int]) -> None:
        super().__init__(run_config, node_partitions)
        self.gone = gone
        self.round = -1  # the latest round a train message was sent for

    def _alive(self, node: int) -> bool:
        return node not in self.gone or self.round < self.gone[node]

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if self._alive(n)]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = []
        for message in messages:
            node = message.metadata.dst_node_id
            self.sent.append(message)
            if message.metadata.message_type == "train":
                self.round = max(self.round, int(message.metadata.group_id))
            if self._alive(node):
                out.append(client_app(message, self.contexts[node]))
        return out  # no reply from a vanished node: the caller's timeout ends the wait


def test_node_that_vanishes_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    # Prepare: node 11 (partition 1) answers rounds 0 and 1, then vanishes; one valid reply is enough
    overrides = OVERRIDES.replace("fl.rounds=3", "fl.rounds=4") + " fl.min_valid_replies=1"
    run_config = {"prunefl.overrides": overrides, "prunefl.run-dir": str(tmp_path / "flower")}
    grid = DroppingGrid(run_config, node_partitions={10: 0, 11: 1}, gone={11: 2})

    # Execute
    run_on_grid(grid, run_config, plots=False)

    # Assert: rounds 2 and 3 aggregate partition 0 alone and say who dropped and why: in round 2 the node was
    # still listed and did not reply, in round 3 it was gone from the list
    rows = [r for r in _rows(tmp_path / "flower") if r[K.K_STAGE] == "fl"]
    assert [r[K.K_CLIENTS] for r in rows] == [[0, 1], [0, 1], [0], [0]]
    assert [r[K.K_DROPPED] for r in rows[:2]] == [[], []]
    assert rows[2][K.K_DROPPED] == [{"partition": 1, "node": 11, "reason": "no reply within 600 s"}]
    assert rows[3][K.K_DROPPED] == [{"partition": 1, "node": 11, "reason": "node not connected"}]


def test_too_few_nodes_left_stops_the_run_with_an_error(tmp_path: Path) -> None:
    # Prepare: both replies are needed; node 11 vanishes from round 1 on
    overrides = OVERRIDES + " fl.min_valid_replies=2"
    run_config = {"prunefl.overrides": overrides, "prunefl.run-dir": str(tmp_path / "flower")}
    grid = DroppingGrid(run_config, node_partitions={10: 0, 11: 1}, gone={11: 1})

    # Execute / Assert: round 1 is not applied; the finished round stays in the results folder
    with pytest.raises(InconsistentRepliesError, match="valid repl"):
        run_on_grid(grid, run_config, plots=False)
    rows = [r for r in _rows(tmp_path / "flower") if r[K.K_STAGE] == "fl"]
    assert [r[K.K_ROUND] for r in rows] == [0]


def test_node_with_other_data_is_refused(tmp_path: Path) -> None:
    # Prepare: node 2 resolves another partition setting than the server (its own run config)
    run_config = {"prunefl.overrides": OVERRIDES, "prunefl.run-dir": str(tmp_path / "flower")}
    grid = InProcessGrid(run_config, node_partitions={1: 0, 2: 1})
    grid.contexts[2].run_config = {**run_config, "prunefl.overrides": OVERRIDES.replace("data.partition=iid",
                                                                                          "data.partition=shards")}

    # Execute / Assert
    with pytest.raises(InconsistentRepliesError, match="node 2"):
        run_on_grid(grid, run_config, plots=False)
    assert not (tmp_path / "flower").exists()  # refused before the results folder is written


def test_flower_run_resumes_from_its_checkpoint_to_the_same_results(tmp_path: Path) -> None:
    # Prepare: a 4-round run stopped after round 1 (node 11 vanishes, both replies needed) with a checkpoint
    # every round; the nodes' client states reach the checkpoint through query.state
    overrides = OVERRIDES.replace("fl.rounds=3", "fl.rounds=4") + " checkpoint_every=1 pruning.reconfig_interval=1"
    full = {"prunefl.overrides": overrides, "prunefl.run-dir": str(tmp_path / "full")}
    run_on_grid(InProcessGrid(full, node_partitions={10: 0, 11: 1}), full, plots=False)
    stopped = {"prunefl.overrides": overrides + " fl.min_valid_replies=2", "prunefl.run-dir": str(tmp_path / "run")}
    with pytest.raises(InconsistentRepliesError):
        run_on_grid(DroppingGrid(stopped, node_partitions={10: 0, 11: 1}, gone={11: 2}), stopped, plots=False)

    # Execute: a new Flower run (new nodes, empty context.state) continues from the folder's checkpoint
    resumed = {"prunefl.overrides": overrides + " fl.min_valid_replies=2", "prunefl.resume": str(tmp_path / "run")}
    run_on_grid(InProcessGrid(resumed, node_partitions={20: 0, 21: 1}), resumed, plots=False)

    # Assert: the same rows (measured fields aside) and final weights and masks as the run never stopped
    _assert_same_run(tmp_path / "full", tmp_path / "run")


class HostileGrid(InProcessGrid):
    """A grid whose node ``node`` answers every train message twice, the second time with NaN weights."""

    def __init__(self, run_config: dict[str, object], node_partitions: dict[int, int], node: int) -> None:
        super().__init__(run_config, node_partitions)
        self.node = node

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = list(super().send_and_receive(messages, timeout=timeout))
        for reply in list(out):
            if reply.metadata.src_node_id == self.node and reply.metadata.message_type == "train":
                record = dict(reply.content.config_records["prunefl"])
                record["data"] = b"\x00" * 16  # not a codec message
                asked = [m for m in self.sent if m.metadata.dst_node_id == self.node][-1]
                out.append(Message(RecordDict({"prunefl": ConfigRecord(record)}), reply_to=asked))
        return out


def test_duplicate_and_malformed_replies_are_rejected_and_counted(tmp_path: Path) -> None:
    # Prepare: node 11 sends a second, malformed reply every round
    run_config = {"prunefl.overrides": OVERRIDES, "prunefl.run-dir": str(tmp_path / "flower")}
    config, _ = parse_run_config(run_config)
    run_experiment(config, tmp_path / "sim", plots=False)

    # Execute
    run_on_grid(HostileGrid(run_config, node_partitions={10: 0, 11: 1}, node=11), run_config, plots=False)

    # Assert: each round counts the duplicate, and the model is the simulation's bit for bit (the first reply won)
    rows = [r for r in _rows(tmp_path / "flower") if r[K.K_STAGE] == "fl"]
    assert all(r[K.K_REJECTED] == {"duplicate": 1} for r in rows), [r[K.K_REJECTED] for r in rows]
    ck_sim = load_file(tmp_path / "sim" / "checkpoint.safetensors")
    ck_flower = load_file(tmp_path / "flower" / "checkpoint.safetensors")
    for key in ck_sim:
        assert torch.equal(ck_sim[key], ck_flower[key]), key
