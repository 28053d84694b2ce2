"""The Flower engine: the round protocol of the simulation engine, with each round's messages sent to SuperNodes.

:class:`FlowerEngine` is :class:`prunefl.engines.simulation.SimulationEngine` with two steps replaced:

* :meth:`FlowerEngine.deliver`: instead of training each client in-process it sends every participant's encoded
  instruction to the node holding that partition through Flower's :class:`flwr.serverapp.Grid` and collects the
  replies. A participant whose node is gone, failed, or did not reply within ``reply_timeout_s`` has dropped
  out of the round: it is recorded in the row (``dropped``: partition, node, reason) and the round goes on with
  the others; the round protocol stops the run when fewer valid replies than ``fl.min_valid_replies`` remain.
* :meth:`FlowerEngine.run_before_fl`: a method whose ``before_fl`` trains on a client's own data (PruneFL's
  initial pruning, :meth:`prunefl.pruning.methods.base.Method.before_fl_client`) runs it on that client's node, as a
  message exchange (``train.setup``): the server sends the model, the node answers with the pruned model, its
  masks and a report (metrics rows, simulated seconds), all checked here before anything is installed.

Selection (the same seeded draw of partitions), the round protocol (validation, aggregation, the method's
decisions), the modelled clock and evaluation are the simulation's, so a run on Flower gives the simulation's
masks and metrics; it adds the real time of each round and of its delivery.

At start the engine asks every connected node which partition its ``--node-config`` names, how many samples it
holds and which config it resolved (:func:`discover_partitions`): one node per partition, with the server's own
partition sizes and config, or the run does not start.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from prunefl import metrics as K
from prunefl.engines.flower.app_config import FlowerSettings
from prunefl.engines.flower.records import (
    SETUP_ACTION,
    STATE_ACTION,
    STATE_KEY,
    NodeInfo,
    TrainInstruction,
    decode_query_reply,
    decode_reply,
    decode_setup_model,
    decode_setup_reply,
    encode_instruction,
    encode_query,
    encode_setup_instruction,
    load_client_state,
    save_client_state,
)
from prunefl.engines.simulation import SimulationEngine, SimulationSetup
from prunefl.errors import CheckpointError, DecodeError, InconsistentRepliesError
from prunefl.fl.links import TrainReply
from prunefl.fl.messages import TrainIns
from prunefl.fl.round import Replies, RoundPlan
from prunefl.pruning.methods.base import BeforeFL, SetupView
from prunefl.sparse.codec import encode_train_ins

__all__ = ["FlowerEngine", "discover_partitions"]

logger = logging.getLogger(__name__)

POLL_S = 1.0  # how often the server looks for newly connected nodes at start
MAX_SETUP_ROWS = 100_000  # metrics rows a node's before_fl may report (initial pruning writes one per IP round)


class FlowerEngine(SimulationEngine):
    """Runs the round protocol with one SuperNode per partition; rows gain real round and delivery seconds.

    Parameters
    ----------
    setup : SimulationSetup
        The run, assembled by the runner exactly as for the simulation (see the module docstring).
    grid : flwr.serverapp.Grid
        Flower's link to the SuperNodes.
    settings : FlowerSettings
        Timeouts (documented there).
    config_digest : str
        SHA-256 of the server's resolved config (:func:`prunefl.engines.flower.app_config.config_digest`); every
        node must report the same (default: "": not checked).
    """

    def __init__(self, setup: SimulationSetup, grid: Grid, settings: FlowerSettings, config_digest: str = "") -> None:
        super().__init__(setup)
        self.grid = grid
        self.settings = settings
        sizes = [int(p.size) for p in setup.partitions]
        self.nodes = discover_partitions(grid, sizes, settings, config_digest)
        self._delivery_wall_s = 0.0
        self._dropped: list[dict[str, Any]] = []
        self._pushed: set[int] = set()  # partitions whose node got its client state from a checkpoint
        logger.info("flower nodes by partition: %s", self.nodes)

    # -- client states (checkpoints) -------------------------------------------------------------------------
    @property
    def holds_client_states(self) -> bool:
        """True: :meth:`sync_clients` fetches the nodes' states before every checkpoint, so it holds them."""
        return True

    def sync_clients(self) -> None:
        """Fetch each connected node's client state (``query.state``) into :attr:`clients`, for a checkpoint.

        A node that keeps none yet (before its first round), or has gone, leaves the server's copy as it is;
        a state that does not load (another client's, corrupt) is refused and logged, never installed.
        """
        online = set(self.grid.get_node_ids())
        asked = {self.nodes[p]: p for p in range(len(self.clients)) if self.nodes[p] in online}
        messages = [Message(encode_query(), dst_node_id=n, message_type=f"{MessageType.QUERY}.{STATE_ACTION}")
                    for n in asked]
        for reply in self.grid.send_and_receive(messages, timeout=self.settings.reply_timeout_s) if messages else []:
            node = reply.metadata.src_node_id
            if node not in asked or reply.has_error():
                continue
            record = reply.content.config_records.get(STATE_KEY)
            if record is None:
                continue
            p = asked[node]
            try:
                self.clients[p].load_state_dict(load_client_state(record))
            except (CheckpointError, ValueError, KeyError, TypeError) as error:
                logger.warning("node %d (partition %d) sent a client state that does not load: %s", node, p, error)

    # -- before FL -------------------------------------------------------------------------------------------
    def run_before_fl(self, view: SetupView) -> BeforeFL:
        """Run ``before_fl`` on the selected client's node if it trains on that client's data, else here.

        Raises
        ------
        InconsistentRepliesError
            The node failed, or did not answer within ``setup_timeout_s``.
        DecodeError
            Its answer is malformed: the model does not fit the server's shapes, is not finite, or the report's
            rows, simulated seconds or summary are not what ``before_fl`` records.
        """
        client = self.setup.method.before_fl_client(view)
        if client is None:
            return super().run_before_fl(view)
        node = self.nodes[client]
        s = self.setup.server.settings
        ins = TrainIns(0, {k: v.numpy() for k, v in view.state.items()}, {k: v.numpy() for k, v in view.masks.items()},
                       s.lr, s.local_steps, s.batch_size)
        message = Message(encode_setup_instruction(client, encode_train_ins(ins, include_masks=True)),
                          dst_node_id=node, message_type=f"{MessageType.TRAIN}.{SETUP_ACTION}")
        logger.info("before_fl runs on partition %d (node %d)", client, node)
        start = time.perf_counter()
        replies = [r for r in self.grid.send_and_receive([message], timeout=self.settings.setup_timeout_s)
                   if r.metadata.src_node_id == node]
        if not replies:
            raise InconsistentRepliesError(
                f"node {node} (partition {client}) did not answer the before_fl request within "
                f"{self.settings.setup_timeout_s} s (prunefl.setup-timeout-s); the run stops"
            )
        reply = replies[0]
        if reply.has_error():
            raise InconsistentRepliesError(f"node {node} (partition {client}) failed before_fl: {reply.error.reason}")
        model, report = decode_setup_reply(reply.content, client)
        shapes = {k: tuple(v.shape) for k, v in view.state.items()}
        state, masks = decode_setup_model(model, shapes)
        if set(state) != set(shapes) or set(masks) != set(view.masks):
            raise DecodeError(
                f"node {node}'s before_fl model has entries {sorted(state)} and masks {sorted(masks)}, expected "
                f"{sorted(shapes)} and {sorted(view.masks)}"
            )
        rows, sim_clock_s, summary = _check_setup_report(report)
        wall = time.perf_counter() - view.start_wall
        for row in rows:
            row[K.K_WALL_S] = wall
            view.record(row)
        summary = {**summary, "before-fl-node": {"partition": client, "node": node,
                                                 "wall-s": time.perf_counter() - start}}
        return BeforeFL(
            state={k: torch.from_numpy(v) for k, v in state.items()},
            masks={k: torch.from_numpy(np.asarray(v, dtype=np.bool_)) for k, v in masks.items()},
            sim_clock_s=sim_clock_s,
            summary=summary,
        )

    # -- rounds ----------------------------------------------------------------------------------------------
    def run_round(self, r: int) -> dict[str, Any]:
        """One round as in the simulation, plus its real seconds (whole round, send to last reply) and dropouts."""
        start = time.perf_counter()
        row = super().run_round(r)
        row[K.K_ROUND_WALL_S] = time.perf_counter() - start
        row[K.K_DELIVERY_WALL_S] = self._delivery_wall_s
        row[K.K_NODES] = [self.nodes[c] for c in row[K.K_CLIENTS]]
        row[K.K_DROPPED] = self._dropped
        return row

    def deliver(self, plan: RoundPlan, sparse_layers: set[str]) -> Replies:
        """Send each participant's instruction to its node; return ``(partition, reply)`` pairs in arrival order.

        The round protocol validates every pair (a second reply of a node is a ``duplicate``, a reply from a
        node not asked ``not-selected``, a malformed record ``decode``, a reply for another round
        ``other-round``). Participants whose node is no longer connected, answered with an error, or did not
        reply within ``reply_timeout_s`` have dropped out (recorded for the row); the protocol decides whether
        enough valid replies remain (``fl.min_valid_replies``).
        """
        layers = tuple(sorted(sparse_layers))
        online = set(self.grid.get_node_ids())
        dropped: dict[int, str] = {}
        messages = []
        for p in plan.participants:
            if self.nodes[p] not in online:
                dropped[p] = "node not connected"
                continue
            content = encode_instruction(TrainInstruction(plan.round, p, plan.messages[p], layers))
            if self.restored and p not in self._pushed:  # a resumed run: the node continues the checkpoint's state
                content.config_records[STATE_KEY] = save_client_state(self.clients[p].state_dict())
                self._pushed.add(p)
            messages.append(Message(content, dst_node_id=self.nodes[p], message_type=MessageType.TRAIN,
                                    group_id=str(plan.round)))
        start = time.perf_counter()
        replies = self.grid.send_and_receive(messages, timeout=self.settings.reply_timeout_s) if messages else []
        out = _collect(replies, {n: p for p, n in self.nodes.items()}, plan.round, dropped)
        self._delivery_wall_s = time.perf_counter() - start
        answered = {p for p, _ in out}
        for p in plan.participants:
            if p not in answered and p not in dropped:
                dropped[p] = f"no reply within {self.settings.reply_timeout_s:g} s"
        self._dropped = [{"partition": p, "node": self.nodes[p], "reason": why} for p, why in sorted(dropped.items())]
        for d in self._dropped:
            logger.warning("round %d: partition %d (node %d) dropped out: %s", plan.round, d["partition"], d["node"],
                           d["reason"])
        return out


def discover_partitions(
    grid: Grid, partition_sizes: list[int], settings: FlowerSettings, config_digest: str = ""
) -> dict[int, int]:
    """Wait for the nodes to connect and ask each which partition it holds; return ``{partition: node id}``.

    Raises
    ------
    InconsistentRepliesError
        Fewer nodes than partitions connected within ``connect_timeout_s``, a node failed the query, two nodes
        hold the same partition, a partition has no node, a node holds another number of samples than the
        server's draw gives its partition, or resolved another config.
    DecodeError
        A node's answer is malformed.
    """
    num_clients = len(partition_sizes)
    deadline = time.monotonic() + settings.connect_timeout_s
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < num_clients and time.monotonic() < deadline:
        time.sleep(POLL_S)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) < num_clients:
        raise InconsistentRepliesError(
            f"{len(nodes)} nodes connected within {settings.connect_timeout_s} s, need one per partition "
            f"(data.num_clients={num_clients}); start the missing SuperNodes"
        )
    messages = [Message(encode_query(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    by_node: dict[int, NodeInfo] = {}
    # a node answers its first message after starting a ClientApp that loads the data: the connect timeout applies
    wait_s = max(settings.connect_timeout_s, settings.reply_timeout_s)
    replies = list(grid.send_and_receive(messages, timeout=wait_s))
    if len(replies) < len(nodes):
        silent = sorted(set(nodes) - {r.metadata.src_node_id for r in replies})
        raise InconsistentRepliesError(
            f"nodes {silent} did not answer the partition query within {wait_s:g} s "
            "(prunefl.connect-timeout-s); are they overloaded, or missing the data set?"
        )
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise InconsistentRepliesError(f"node {node} failed the partition query: {reply.error.reason}")
        by_node[node] = decode_query_reply(reply.content)
    partitions: dict[int, int] = {}
    for node, info in sorted(by_node.items()):
        p = info.partition_id
        if p in partitions:
            raise InconsistentRepliesError(
                f"nodes {partitions[p]} and {node} both hold partition {p}; give each node its own partition-id"
            )
        if p >= num_clients:
            raise InconsistentRepliesError(f"node {node} holds partition {p}, but data.num_clients={num_clients}")
        if info.examples != partition_sizes[p]:
            raise InconsistentRepliesError(
                f"node {node} holds {info.examples} samples for partition {p}, the server's draw gives it "
                f"{partition_sizes[p]}; the node has other data or another partition setting"
            )
        if config_digest and info.config_digest != config_digest:
            raise InconsistentRepliesError(
                f"node {node} (partition {p}) resolved another config than the server (digest "
                f"{info.config_digest[:12]}… vs {config_digest[:12]}…): another prunefl version, or another "
                "preset/TOML file under the same name"
            )
        partitions[p] = node
    missing = sorted(set(range(num_clients)) - set(partitions))
    if missing:
        raise InconsistentRepliesError(
            f"partitions {missing} have no node (nodes report {sorted(partitions)}); start a SuperNode with "
            f'--node-config "partition-id=<i>" for each'
        )
    return partitions


def _collect(
    replies: Iterable[Message], partition_of: Mapping[int, int], round: int, dropped: dict[int, str]
) -> list[tuple[int, TrainReply]]:
    """Turn reply messages into ``(partition, reply)`` pairs for the round protocol's validation.

    The participant is the sender node's own partition, whatever the reply claims. A reply from a node that holds
    no partition of this run is logged and left out; an error reply marks its partition dropped (``dropped``);
    a malformed record becomes an empty reply, which validation rejects as ``decode``.
    """
    out: list[tuple[int, TrainReply]] = []
    for reply in replies:
        node = reply.metadata.src_node_id
        if node not in partition_of:
            logger.warning("round %d: ignored a reply from node %d, which holds no partition of this run", round, node)
            continue
        p = partition_of[node]
        if reply.has_error():
            dropped.setdefault(p, f"node error: {reply.error.reason}")
            continue
        try:
            out.append((p, decode_reply(reply.content, p)))
        except DecodeError as error:
            logger.warning("round %d: node %d (partition %d) sent a malformed reply: %s", round, node, p, error)
            out.append((p, TrainReply(b"", None, round=round)))
    return out


def _check_setup_report(report: Mapping[str, Any]) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    """The rows, simulated seconds and summary a node's ``before_fl`` reported, checked before any is used."""
    rows, sim, summary = report.get("rows"), report.get("sim-clock-s"), report.get("summary")
    if not isinstance(rows, list) or len(rows) > MAX_SETUP_ROWS:
        raise DecodeError(f"setup report 'rows' must be a list of at most {MAX_SETUP_ROWS} rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or row.get(K.K_STAGE) != K.STAGE_IP or not isinstance(row.get(K.K_ROUND), int):
            raise DecodeError(f"setup report row {i} is not an initial-pruning row (stage {K.STAGE_IP!r}, int round)")
    if isinstance(sim, bool) or not isinstance(sim, int | float) or not math.isfinite(sim) or sim < 0:
        raise DecodeError(f"setup report 'sim-clock-s' must be a finite number >= 0, got {sim!r}")
    if not isinstance(summary, dict):
        raise DecodeError(f"setup report 'summary' must be a JSON object, got {type(summary).__name__}")
    return rows, float(sim), summary
