"""The Flower ClientApp: a SuperNode answers which partition it holds, and trains it one round per message.

A train message is decoded (:mod:`prunefl.engines.flower.records`), run through the round protocol's client side
(:func:`prunefl.fl.round.client_round`: decode with the cached masks, local steps, the method's client hook,
encode) and answered. The client's state (batch stream, generators, importance, momentum, cached masks) lives in
``context.state`` between rounds, as :meth:`prunefl.fl.client.ClientState.state_dict`; the first message of a run
starts it from the run seed exactly as the simulation does. Data, model workspace and method are rebuilt from the
run config (and cached per process), like the server's.

An entry point, like :mod:`prunefl.cli`: it uses :mod:`prunefl.experiments.runner` to build the run's parts.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from prunefl.engines.flower.app_config import node_partition, parse_run_config
from prunefl.engines.flower.records import (
    STATE_KEY,
    decode_instruction,
    encode_query_reply,
    encode_reply,
    load_client_state,
    save_client_state,
)
from prunefl.engines.simulation import new_client_state
from prunefl.errors import DecodeError
from prunefl.experiments.config import RunConfig, config_from_dict, dump_toml
from prunefl.experiments.runner import (
    build_model_state,
    build_partitions,
    build_run_method,
    load_run_dataset,
    wire_settings,
)
from prunefl.fl.losses import make_loss
from prunefl.fl.round import ClientWorkspace, client_round
from prunefl.pruning.methods import Method

__all__ = ["app", "handle_query", "handle_train"]

app = ClientApp()


@app.query()
def query(message: Message, context: Context) -> Message:
    """Answer the server's partition query."""
    return Message(handle_query(context), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train this node's partition for one round."""
    return Message(handle_train(message.content, context), reply_to=message)


def handle_query(context: Context) -> RecordDict:
    """The partition this node holds (``--node-config "partition-id=<i>"``), checked against the run config.

    Raises
    ------
    ConfigError
        The run config is invalid, or the node's partition id is missing or out of range.
    """
    config, _ = parse_run_config(context.run_config)
    return encode_query_reply(node_partition(context.node_config, config.data.num_clients))


def handle_train(content: RecordDict, context: Context) -> RecordDict:
    """Run one round for this node's partition and return the reply's content.

    Modifies ``context.state``: the client's state after the round replaces the one before.

    Raises
    ------
    DecodeError
        The instruction is malformed, or is for another partition, or omits masks this node does not hold.
    ConfigError
        The run config is invalid, or the node's partition id is missing or out of range.
    CheckpointError
        The state kept in ``context.state`` is corrupt or another client's.
    """
    config, _ = parse_run_config(context.run_config)
    partition_id = node_partition(context.node_config, config.data.num_clients)
    ins = decode_instruction(content)
    if ins.partition_id != partition_id:
        raise DecodeError(
            f"instruction is for partition {ins.partition_id}, this node holds partition {partition_id}; not trained"
        )
    node = _node(dump_toml(config))
    client = new_client_state(
        config.seed, partition_id, node.partitions[partition_id], config.fl.momentum, wire_settings(config)
    )
    if STATE_KEY in context.state.config_records:
        client.load_state_dict(load_client_state(context.state.config_records[STATE_KEY]))
    reply = client_round(
        ins.message, client, node.workspace, node.method, node.partitions[partition_id], ins.sparse_layers
    )
    context.state.config_records[STATE_KEY] = save_client_state(client.state_dict())
    return encode_reply(ins.round, partition_id, reply)


@dataclass(frozen=True)
class _Node:
    """What a node rebuilds from the run config: every partition's indices, a model workspace, the method."""

    partitions: list[np.ndarray]
    workspace: ClientWorkspace
    method: Method


@functools.lru_cache(maxsize=2)
def _node(config_toml: str) -> _Node:
    """Build (once per process and config) the node's data, workspace and method; keyed by the resolved config."""
    config: RunConfig = config_from_dict(tomllib.loads(config_toml))
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    dataset = load_run_dataset(config)
    with torch.random.fork_rng():  # building the model seeds torch's global generator; leave the caller's alone
        model, _ = build_model_state(config, dataset, config.seed)
    workspace = ClientWorkspace(model, dataset, make_loss(config.fl.loss, dataset.num_classes), config.seed)
    return _Node(build_partitions(config, dataset), workspace, build_run_method(config))


