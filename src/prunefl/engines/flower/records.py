"""Flower records that carry prunefl's messages: the wire codec's bytes plus a few validated scalars.

A train instruction or reply travels as the codec's bytes (kept values, the mask only when it changed, importance
in importance rounds) in one :class:`flwr.app.ConfigRecord` entry of type ``bytes``, never as dense arrays; beside
them go the scalars the codec's format has no field for (round, partition id, mask version, the layers to train
with the CSR kernel). The online baseline's extra uploads travel as an :class:`flwr.app.ArrayRecord`. A client's
state between rounds is kept in ``context.state`` as safetensors bytes plus a JSON string.

Everything read from a record is checked here, once: a missing key, a wrong type, a negative id or a round that
is not the one expected raises :class:`prunefl.errors.DecodeError` naming the key and the value; no Flower or
numpy exception escapes. The codec's bytes are then decoded (and checked again) by :mod:`prunefl.fl.links`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from prunefl.errors import CheckpointError, DecodeError
from prunefl.fl.links import TrainMessage, TrainReply
from prunefl.sparse.codec import decode_state, encode_state

__all__ = [
    "FORMAT",
    "MESSAGE_KEY",
    "EXTRAS_KEY",
    "STATE_KEY",
    "TrainInstruction",
    "encode_instruction",
    "decode_instruction",
    "encode_reply",
    "decode_reply",
    "encode_query",
    "encode_query_reply",
    "decode_query_reply",
    "NodeInfo",
    "encode_setup_instruction",
    "decode_setup_instruction",
    "encode_setup_reply",
    "decode_setup_reply",
    "MAX_REPORT_BYTES",
    "SETUP_ACTION",
    "STATE_ACTION",
    "encode_setup_model",
    "decode_setup_model",
    "save_client_state",
    "load_client_state",
]

FORMAT = 2  # version of the record layout below; a record of another version is refused
MESSAGE_KEY = "prunefl"  # the ConfigRecord with the codec's bytes and the scalars
EXTRAS_KEY = "prunefl-extras"  # the ArrayRecord of a method's extra uploads
STATE_KEY = "prunefl-client-state"  # the ConfigRecord in context.state holding a ClientState

K_FORMAT = "format"
K_DATA = "data"
K_ROUND = "round"
K_PARTITION = "partition-id"
K_MASK_VERSION = "mask-version"
K_SPARSE_LAYERS = "sparse-layers"
K_TENSORS = "tensors"
K_VALUES = "values"
K_EXAMPLES = "examples"
K_CONFIG_DIGEST = "config-digest"
K_REPORT = "report"
K_STALE = "stale"
SETUP_ACTION = "setup"  # message type "train.setup": run the method's before_fl on the selected node
STATE_ACTION = "state"  # message type "query.state": send the client state kept in context.state (checkpoints)

MAX_REPORT_BYTES = 4 << 20  # the JSON report of a node's before_fl (initial pruning's rows): bounded before parsing


@dataclass(frozen=True)
class TrainInstruction:
    """One decoded train instruction: whom it is for, the codec message and the layers to train sparse.

    Attributes
    ----------
    round : int
        FL round index, >= 0.
    partition_id : int
        The data partition (client id) that trains, >= 0.
    message : TrainMessage
        The codec's bytes and the mask version they are for.
    sparse_layers : tuple[str, ...]
        ``nn.Linear`` weights to train with the CSR kernel this round (the server's choice, as in the simulation).
    """

    round: int
    partition_id: int
    message: TrainMessage
    sparse_layers: tuple[str, ...] = ()


def encode_instruction(ins: TrainInstruction) -> RecordDict:
    """Put a train instruction into a message's content.

    Examples
    --------
    >>> content = encode_instruction(TrainInstruction(2, 1, TrainMessage(b"abc", 0)))
    >>> decode_instruction(content, expected_round=2).message.data
    b'abc'
    """
    return RecordDict({
        MESSAGE_KEY: ConfigRecord({
            K_FORMAT: FORMAT,
            K_ROUND: ins.round,
            K_PARTITION: ins.partition_id,
            K_MASK_VERSION: ins.message.mask_version,
            K_SPARSE_LAYERS: list(ins.sparse_layers),
            K_DATA: ins.message.data,
        })
    })


def decode_instruction(content: RecordDict, expected_round: int | None = None) -> TrainInstruction:
    """Read and check a train instruction (its codec bytes are decoded later, by the client link).

    Raises
    ------
    DecodeError
        A key is missing or of the wrong type, an id or version is negative, a sparse layer name is not a string,
        or the round is not ``expected_round``.
    """
    record = _message_record(content)
    round_ = _nonnegative_int(record, K_ROUND)
    if expected_round is not None and round_ != expected_round:
        raise DecodeError(f"instruction is for round {round_}, expected round {expected_round}; not trained")
    found = record.get(K_SPARSE_LAYERS, [])
    layers = [name for name in found if isinstance(name, str)] if isinstance(found, list) else []
    if not isinstance(found, list) or len(layers) != len(found):
        raise DecodeError(f"instruction {K_SPARSE_LAYERS!r} must be a list of layer names, got {found!r}")
    return TrainInstruction(
        round=round_,
        partition_id=_nonnegative_int(record, K_PARTITION),
        message=TrainMessage(_bytes(record, K_DATA), _nonnegative_int(record, K_MASK_VERSION)),
        sparse_layers=tuple(layers),
    )


def encode_reply(round: int, partition_id: int, reply: TrainReply) -> RecordDict:
    """Put a client's reply (codec bytes, and its method's extra arrays if any) into a message's content.

    Examples
    --------
    >>> content = encode_reply(0, 3, TrainReply(b"xyz", {"x": np.zeros(2, np.float32)}))
    >>> got = decode_reply(content, expected_partition=3)
    >>> got.data, got.extras["x"].tolist()
    (b'xyz', [0.0, 0.0])
    """
    content = RecordDict({
        MESSAGE_KEY: ConfigRecord({K_FORMAT: FORMAT, K_ROUND: round, K_PARTITION: partition_id, K_DATA: reply.data})
    })
    if reply.extras is not None:
        content[EXTRAS_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in reply.extras.items()})
    return content


def decode_reply(content: RecordDict, expected_partition: int) -> TrainReply:
    """Read and check a reply: the partition it claims, the round it answers, its codec bytes and extra arrays.

    The round travels in the returned :class:`TrainReply` (the round protocol rejects a reply for another round).

    Raises
    ------
    DecodeError
        A key is missing or of the wrong type, the reply claims another partition than its sender holds, or an
        extra array is not a numeric array (or cannot be read).
    """
    record = _message_record(content)
    round_ = _nonnegative_int(record, K_ROUND)
    partition_id = _nonnegative_int(record, K_PARTITION)
    if partition_id != expected_partition:
        raise DecodeError(
            f"reply claims partition {partition_id}, its sender holds partition {expected_partition}; it is not "
            "aggregated"
        )
    extras = None
    if EXTRAS_KEY in content.array_records:
        extras = {}
        for name, array in content.array_records[EXTRAS_KEY].items():
            try:
                value = array.numpy()
            except (TypeError, ValueError, OSError) as error:
                raise DecodeError(f"reply extra {name!r} is not a numpy array: {error}") from error
            if value.dtype.kind not in "biuf":
                raise DecodeError(f"reply extra {name!r} must be a numeric array, got dtype {value.dtype}")
            extras[name] = value
    return TrainReply(_bytes(record, K_DATA), extras, round=round_)


def encode_query() -> RecordDict:
    """The content of a query asking a node which partition it holds."""
    return RecordDict({MESSAGE_KEY: ConfigRecord({K_FORMAT: FORMAT})})


@dataclass(frozen=True)
class NodeInfo:
    """What a node reports about itself when asked: its partition, how many samples it holds, and its config.

    Attributes
    ----------
    partition_id : int
        The partition its ``--node-config`` names, >= 0.
    examples : int
        Training samples in that partition, >= 0: the server checks it against its own draw, and bounds the
        sample count the node may claim in a reply by it.
    config_digest : str
        SHA-256 (hex) of the prunefl config the node resolved from the run config: a node that resolved another
        config (another version of prunefl, another preset file) would train another run.
    """

    partition_id: int
    examples: int
    config_digest: str


def encode_query_reply(info: NodeInfo) -> RecordDict:
    """A node's answer to :func:`encode_query`.

    Examples
    --------
    >>> decode_query_reply(encode_query_reply(NodeInfo(4, 120, "ab" * 32))).examples
    120
    """
    return RecordDict({MESSAGE_KEY: ConfigRecord({
        K_FORMAT: FORMAT, K_PARTITION: info.partition_id, K_EXAMPLES: info.examples, K_CONFIG_DIGEST: info.config_digest,
    })})


def decode_query_reply(content: RecordDict) -> NodeInfo:
    """What a node reported.

    Raises
    ------
    DecodeError
        The record is missing or of another format, an id or count is not an int >= 0, or the digest is not 64
        hex characters.
    """
    record = _message_record(content)
    digest = record.get(K_CONFIG_DIGEST)
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DecodeError(f"prunefl record {K_CONFIG_DIGEST!r} must be 64 lowercase hex characters, got {digest!r}")
    return NodeInfo(_nonnegative_int(record, K_PARTITION), _nonnegative_int(record, K_EXAMPLES), digest)


def encode_setup_instruction(partition_id: int, data: bytes) -> RecordDict:
    """Ask a node to run the method's ``before_fl`` (initial pruning) on its data, from the codec-encoded model.

    Examples
    --------
    >>> decode_setup_instruction(encode_setup_instruction(2, b"model"), expected_partition=2)
    b'model'
    """
    return RecordDict({MESSAGE_KEY: ConfigRecord({K_FORMAT: FORMAT, K_PARTITION: partition_id, K_DATA: data})})


def decode_setup_instruction(content: RecordDict, expected_partition: int) -> bytes:
    """The codec bytes of the model a node's ``before_fl`` starts from.

    Raises
    ------
    DecodeError
        A key is missing or of the wrong type, or the instruction is for another partition.
    """
    record = _message_record(content)
    partition_id = _nonnegative_int(record, K_PARTITION)
    if partition_id != expected_partition:
        raise DecodeError(
            f"setup instruction is for partition {partition_id}, this node holds partition {expected_partition}"
        )
    return _bytes(record, K_DATA)


def encode_setup_reply(partition_id: int, model: tuple[bytes, bytes], report: Mapping[str, Any]) -> RecordDict:
    """A node's ``before_fl`` result: the model it produced (:func:`encode_setup_model`) and a JSON report.

    ``report`` holds the metrics rows ``before_fl`` recorded, the simulated seconds it charged and its summary.

    Examples
    --------
    >>> model, report = decode_setup_reply(encode_setup_reply(1, (b"m", b"s"), {"rows": []}), expected_partition=1)
    >>> model, report
    ((b'm', b's'), {'rows': []})
    """
    text = json.dumps(report, allow_nan=False)
    return RecordDict({MESSAGE_KEY: ConfigRecord({
        K_FORMAT: FORMAT, K_PARTITION: partition_id, K_DATA: model[0], K_STALE: model[1], K_REPORT: text,
    })})


def decode_setup_reply(content: RecordDict, expected_partition: int) -> tuple[tuple[bytes, bytes], dict[str, Any]]:
    """The model bytes and the parsed JSON report of a node's ``before_fl`` (the caller checks the report's fields).

    Raises
    ------
    DecodeError
        A key is missing or of the wrong type, the reply is from another partition, the report is larger than
        :data:`MAX_REPORT_BYTES`, nested too deep, not JSON, or not a JSON object.
    """
    record = _message_record(content)
    partition_id = _nonnegative_int(record, K_PARTITION)
    if partition_id != expected_partition:
        raise DecodeError(f"setup reply claims partition {partition_id}, expected {expected_partition}")
    text = record.get(K_REPORT)
    if not isinstance(text, str):
        raise DecodeError(f"prunefl record {K_REPORT!r} must be a JSON string, got {type(text).__name__}")
    if len(text) > MAX_REPORT_BYTES:
        raise DecodeError(f"setup report has {len(text)} characters, more than the bound {MAX_REPORT_BYTES}")
    try:
        report = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise DecodeError(f"setup report is not valid JSON: {str(error)[:200]}") from error
    if not isinstance(report, dict):
        raise DecodeError(f"setup report must be a JSON object, got {type(report).__name__}")
    return (_bytes(record, K_DATA), _bytes(record, K_STALE)), report


def encode_setup_model(state: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> tuple[bytes, bytes]:
    """Encode a model whose pruned coordinates keep values (initial pruning's stale weights, spec §3.8) exactly.

    Two codec messages: the masks with the kept values (other entries dense), and the values at pruned
    coordinates under the complement masks. Together: every value once, plus one bit per prunable weight.

    Examples
    --------
    >>> state, masks = {"w": np.array([1.0, 2.0, 3.0], np.float32)}, {"w": np.array([True, False, True])}
    >>> got, got_masks = decode_setup_model(encode_setup_model(state, masks), {"w": (3,)})
    >>> got["w"].tolist(), got_masks["w"].tolist()
    ([1.0, 2.0, 3.0], [True, False, True])
    """
    kept = {k: (v * masks[k] if k in masks else v) for k, v in state.items()}
    pruned = {k: np.asarray(~np.asarray(m, dtype=np.bool_)) for k, m in masks.items()}
    stale = {k: state[k] * pruned[k] for k in masks}
    return encode_state(kept, masks, include_masks=True), encode_state(stale, pruned, include_masks=False)


def decode_setup_model(
    model: tuple[bytes, bytes], expected_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Decode :func:`encode_setup_model`'s pair against the shapes the server expects: (state, masks).

    Raises
    ------
    DecodeError
        Either message is malformed, over a limit, of other entries or shapes, not finite, or the stale part
        names other entries than the masks.
    """
    state, masks = decode_state(model[0], expected_shapes=expected_shapes)
    pruned = {k: np.asarray(~m) for k, m in masks.items()}
    stale, _ = decode_state(model[1], known_masks=pruned, expected_shapes={k: expected_shapes[k] for k in masks})
    if set(stale) != set(masks):
        raise DecodeError(f"setup model's stale values name {sorted(stale)}, its masks {sorted(masks)}")
    out = dict(state)
    for k, m in masks.items():
        out[k] = np.where(m, state[k], stale[k])
    return out, masks


def _refuse_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} in JSON")


def save_client_state(state: Mapping[str, Any]) -> ConfigRecord:
    """Pack a :meth:`prunefl.fl.client.ClientState.state_dict` into a record for ``context.state``.

    Tensors go into safetensors bytes, the other values (ints, lists of names, None) into a JSON string; no pickle.

    Examples
    --------
    >>> record = save_client_state({"client-id": 1, "augment-rng": torch.zeros(3, dtype=torch.uint8)})
    >>> sorted(load_client_state(record))
    ['augment-rng', 'client-id']
    """
    tensors = {k: v.detach().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    values = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    return ConfigRecord({K_TENSORS: save_tensors(tensors), K_VALUES: json.dumps(values)})


def load_client_state(record: ConfigRecord) -> dict[str, Any]:
    """Unpack what :func:`save_client_state` packed (``ClientState.load_state_dict`` checks the contents).

    Raises
    ------
    CheckpointError
        The record lacks its two entries, or they are not safetensors bytes and a JSON object.
    """
    tensors, values = record.get(K_TENSORS), record.get(K_VALUES)
    if not isinstance(tensors, bytes) or not isinstance(values, str):
        raise CheckpointError(
            f"client state record needs {K_TENSORS!r} (bytes) and {K_VALUES!r} (a JSON string), got "
            f"{type(tensors).__name__} and {type(values).__name__}"
        )
    try:
        out: dict[str, Any] = dict(load_tensors(tensors))
        plain = json.loads(values)
    except Exception as error:  # safetensors raises its own SafetensorError; json a ValueError
        raise CheckpointError(f"client state record is corrupt: {error}") from error
    if not isinstance(plain, dict):
        raise CheckpointError(f"client state record {K_VALUES!r} must be a JSON object, got {type(plain).__name__}")
    out.update(plain)
    return out


def _message_record(content: RecordDict) -> ConfigRecord:
    """The message's prunefl record, of this format."""
    if not isinstance(content, RecordDict) or MESSAGE_KEY not in content.config_records:
        raise DecodeError(f"message has no {MESSAGE_KEY!r} config record; it is not a prunefl message")
    record = content.config_records[MESSAGE_KEY]
    found = record.get(K_FORMAT)
    if found != FORMAT or isinstance(found, bool):
        raise DecodeError(f"prunefl record format must be {FORMAT}, got {found!r}; sender and receiver disagree")
    return record


def _nonnegative_int(record: ConfigRecord, key: str) -> int:
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DecodeError(f"prunefl record {key!r} must be an int >= 0, got {value!r}")
    return value


def _bytes(record: ConfigRecord, key: str) -> bytes:
    value = record.get(key)
    if not isinstance(value, bytes):
        raise DecodeError(f"prunefl record {key!r} must be bytes, got {type(value).__name__}")
    return value
