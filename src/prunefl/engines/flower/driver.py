"""The Flower engine: the round protocol of the simulation engine, with each round's messages sent to SuperNodes.

:class:`FlowerEngine` is :class:`prunefl.engines.simulation.SimulationEngine` with one step replaced,
:meth:`FlowerEngine.deliver`: instead of training each client in-process it sends every participant's encoded
instruction to the node holding that partition through Flower's :class:`flwr.serverapp.Grid`, and collects and
checks the replies. Selection (the same seeded draw of partitions), the round protocol (validation, aggregation,
the method's decisions), the modelled clock and evaluation are the simulation's, so a run on Flower gives the
simulation's masks and metrics; it adds the real time of each round and of its delivery.

At start the engine asks every connected node which partition its ``--node-config`` names
(:func:`discover_partitions`); a node per partition is required (no node dropout yet).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from prunefl import metrics as K
from prunefl.engines.flower.app_config import FlowerSettings
from prunefl.engines.flower.records import (
    TrainInstruction,
    decode_query_reply,
    decode_reply,
    encode_instruction,
    encode_query,
)
from prunefl.engines.simulation import SimulationEngine, SimulationSetup
from prunefl.errors import DecodeError, InconsistentRepliesError
from prunefl.fl.links import TrainReply
from prunefl.fl.round import RoundPlan

__all__ = ["FlowerEngine", "discover_partitions"]

logger = logging.getLogger(__name__)

POLL_S = 1.0  # how often the server looks for newly connected nodes at start


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
    """

    def __init__(self, setup: SimulationSetup, grid: Grid, settings: FlowerSettings) -> None:
        super().__init__(setup)
        self.grid = grid
        self.settings = settings
        self.nodes = discover_partitions(grid, setup.server.settings.num_clients, settings)
        self._delivery_wall_s = 0.0
        logger.info("flower nodes by partition: %s", self.nodes)

    def run_round(self, r: int) -> dict[str, Any]:
        """One round as in the simulation, plus its real seconds (whole round, and send to last reply)."""
        start = time.perf_counter()
        row = super().run_round(r)
        row[K.K_ROUND_WALL_S] = time.perf_counter() - start
        row[K.K_DELIVERY_WALL_S] = self._delivery_wall_s
        row[K.K_NODES] = [self.nodes[c] for c in row[K.K_CLIENTS]]
        return row

    def deliver(self, plan: RoundPlan, sparse_layers: set[str]) -> dict[int, TrainReply]:
        """Send each participant's instruction to its node and return the checked replies by partition.

        Raises
        ------
        InconsistentRepliesError
            A node replied with an error, a reply came from a node not asked, or a participant did not reply
            within ``reply_timeout_s``. Nothing changed on the server.
        DecodeError
            A reply's records are malformed, or claim another round or partition.
        """
        layers = tuple(sorted(sparse_layers))
        messages = [
            Message(
                encode_instruction(TrainInstruction(plan.round, p, plan.messages[p], layers)),
                dst_node_id=self.nodes[p],
                message_type=MessageType.TRAIN,
                group_id=str(plan.round),
            )
            for p in plan.participants
        ]
        start = time.perf_counter()
        replies = self.grid.send_and_receive(messages, timeout=self.settings.reply_timeout_s)
        out = _collect(replies, {self.nodes[p]: p for p in plan.participants}, plan.round)
        self._delivery_wall_s = time.perf_counter() - start
        missing = sorted(set(plan.participants) - set(out))
        if missing:
            raise InconsistentRepliesError(
                f"round {plan.round}: no reply from partitions {missing} (nodes "
                f"{[self.nodes[p] for p in missing]}) within {self.settings.reply_timeout_s} s; the run stops"
            )
        return out


def discover_partitions(grid: Grid, num_clients: int, settings: FlowerSettings) -> dict[int, int]:
    """Wait for the nodes to connect and ask each which partition it holds; return ``{partition: node id}``.

    Raises
    ------
    InconsistentRepliesError
        Fewer than ``num_clients`` nodes connected within ``connect_timeout_s``, a node failed the query, two
        nodes hold the same partition, or a partition has no node.
    DecodeError
        A node's answer is malformed.
    """
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
    by_node: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=settings.reply_timeout_s):
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise InconsistentRepliesError(f"node {node} failed the partition query: {reply.error.reason}")
        by_node[node] = decode_query_reply(reply.content)
    partitions: dict[int, int] = {}
    for node, p in sorted(by_node.items()):
        if p in partitions:
            raise InconsistentRepliesError(
                f"nodes {partitions[p]} and {node} both hold partition {p}; give each node its own partition-id"
            )
        partitions[p] = node
    missing = sorted(set(range(num_clients)) - set(partitions))
    if missing:
        raise InconsistentRepliesError(
            f"partitions {missing} have no node (nodes report {sorted(partitions)}); start a SuperNode with "
            f'--node-config "partition-id=<i>" for each'
        )
    return partitions


def _collect(replies: Iterable[Message], asked: dict[int, int], round: int) -> dict[int, TrainReply]:
    """Check each reply message (sender asked, no error, records well formed) and decode its records."""
    out: dict[int, TrainReply] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if node not in asked:
            raise InconsistentRepliesError(f"round {round}: reply from node {node}, which was not asked to train")
        if reply.has_error():
            raise InconsistentRepliesError(
                f"round {round}: node {node} (partition {asked[node]}) failed: {reply.error.reason}; the run stops"
            )
        try:
            out[asked[node]] = decode_reply(reply.content, round, asked[node])
        except DecodeError as error:
            raise DecodeError(f"round {round}: node {node}: {error}") from error
    return out
