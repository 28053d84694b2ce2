"""The Flower ClientApp: a SuperNode answers which partition it holds, and trains it one round per message.

A ``train.setup`` message runs the method's ``before_fl`` on this node's own data (PruneFL's initial pruning at
the selected client, :meth:`prunefl.pruning.methods.base.Method.before_fl_client`) from the model the server sent,
and answers with the model it produced (codec bytes with its masks) and a JSON report (its metrics rows, the
simulated seconds it charged, its summary).

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
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from prunefl import metrics as K
from prunefl.engines.flower.app_config import config_digest, node_partition, parse_run_config
from prunefl.engines.flower.records import (
    SETUP_ACTION,
    STATE_ACTION,
    STATE_KEY,
    NodeInfo,
    decode_instruction,
    decode_setup_instruction,
    encode_query_reply,
    encode_reply,
    encode_setup_model,
    encode_setup_reply,
    load_client_state,
    save_client_state,
)
from prunefl.engines.simulation import new_client_state
from prunefl.errors import DecodeError
from prunefl.experiments.config import RunConfig, config_from_toml, dump_toml
from prunefl.experiments.runner import (
    build_devices,
    build_model_state,
    build_partitions,
    build_run_method,
    load_run_dataset,
    wire_settings,
)
from prunefl.fl.client import load_model_state_
from prunefl.fl.losses import make_loss
from prunefl.fl.round import ClientWorkspace, client_round
from prunefl.pruning.methods import Method
from prunefl.pruning.methods.base import SetupView
from prunefl.sparse.masks import prunable_parameters
from prunefl.sparse.codec import decode_train_ins
from prunefl.timing.clock import DeviceProfile

__all__ = ["app", "handle_query", "handle_train", "handle_setup"]

app = ClientApp()


@app.query()
def query(message: Message, context: Context) -> Message:
    """Answer the server's partition query."""
    return Message(handle_query(context), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train this node's partition for one round."""
    return Message(handle_train(message.content, context), reply_to=message)


@app.query(STATE_ACTION)
def state(message: Message, context: Context) -> Message:
    """Send the client state this node keeps (for the server's checkpoint)."""
    return Message(handle_state(context), reply_to=message)


@app.train(SETUP_ACTION)
def setup(message: Message, context: Context) -> Message:
    """Run the method's ``before_fl`` (initial pruning) on this node's data."""
    return Message(handle_setup(message.content, context), reply_to=message)


def handle_query(context: Context) -> RecordDict:
    """The partition this node holds (``--node-config "partition-id=<i>"``), its size and the config's digest.

    Raises
    ------
    ConfigError
        The run config is invalid, or the node's partition id is missing or out of range.
    """
    config, _ = parse_run_config(context.run_config)
    partition_id = node_partition(context.node_config, config.data.num_clients)
    node = _node(dump_toml(config))
    return encode_query_reply(NodeInfo(partition_id, int(node.partitions[partition_id].size), config_digest(config)))


def handle_state(context: Context) -> RecordDict:
    """The client state kept in ``context.state`` (empty content before the node's first round)."""
    out = RecordDict()
    if STATE_KEY in context.state.config_records:
        out[STATE_KEY] = context.state.config_records[STATE_KEY]
    return out


def handle_setup(content: RecordDict, context: Context) -> RecordDict:
    """Run the method's ``before_fl`` on this node's partition, starting from the model the server sent.

    Raises
    ------
    DecodeError
        The instruction is malformed, for another partition or for another model (entries, shapes or dtypes other
        than this node's model's), or the method does not run ``before_fl`` at this node's partition (the server
        and the node disagree on the selected client).
    ConfigError
        The run config is invalid, or the node's partition id is missing or out of range.
    """
    config, _ = parse_run_config(context.run_config)
    partition_id = node_partition(context.node_config, config.data.num_clients)
    node = _node(dump_toml(config))
    shapes, dtypes = node.workspace.expected_entries()  # the server's model must be this node's: bounds the decode
    ins = decode_train_ins(
        decode_setup_instruction(content, partition_id), expected_shapes=shapes, expected_dtypes=dtypes
    )
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    view = SetupView(
        state={k: torch.from_numpy(v) for k, v in ins.state.items()},  # the decoder's arrays are fresh
        masks={k: torch.from_numpy(np.asarray(v, dtype=np.bool_)) for k, v in ins.masks.items()},
        model=node.workspace.model,
        dataset=node.workspace.dataset,
        partitions=node.partitions,
        devices=node.devices,
        loss_fn=node.workspace.loss_fn,
        record=rows.append,
        fresh_state=lambda seed: build_model_state(config, node.workspace.dataset, seed)[1],
        start_wall=start,
    )
    load_model_state_(node.workspace.model, ins.state, ins.masks)  # the workspace holds the model before_fl starts from
    chosen = node.method.before_fl_client(view)
    if chosen != partition_id:
        raise DecodeError(
            f"the server asked partition {partition_id} to run {config.pruning.method}'s before_fl, but the method "
            f"selects {chosen}; server and node disagree"
        )
    with torch.random.fork_rng():
        before = node.method.before_fl(view)
    if before.initial_state is not None:
        raise DecodeError(f"{config.pruning.method}'s before_fl replaces the initial weights; it cannot run on a node")
    state = before.state if before.state is not None else view.state
    masks = before.masks if before.masks is not None else view.masks
    for row in rows:
        row.pop(K.K_WALL_S, None)  # the server stamps its own
    report = {"rows": rows, "sim-clock-s": before.sim_clock_s, "summary": before.summary}
    model = encode_setup_model({k: v.numpy() for k, v in state.items()}, {k: v.numpy() for k, v in masks.items()})
    return encode_setup_reply(partition_id, model, report)


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
    if STATE_KEY in content.config_records:  # a resumed run: the server sends the checkpoint's client state
        client.load_state_dict(load_client_state(content.config_records[STATE_KEY]))
    elif STATE_KEY in context.state.config_records:
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
    devices: list[DeviceProfile]


@functools.lru_cache(maxsize=2)
def _node(config_toml: str) -> _Node:
    """Build (once per process and config) the node's data, workspace and method; keyed by the resolved config."""
    config: RunConfig = config_from_toml(config_toml, "the node's resolved run config")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    dataset = load_run_dataset(config)
    with torch.random.fork_rng():  # building the model seeds torch's global generator; leave the caller's alone
        model, _ = build_model_state(config, dataset, config.seed)
    workspace = ClientWorkspace(model, dataset, make_loss(config.fl.loss, dataset.num_classes), config.seed)
    devices = build_devices(config, [n for n, _ in prunable_parameters(model)])
    return _Node(build_partitions(config, dataset), workspace, build_run_method(config), devices)


