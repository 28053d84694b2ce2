"""Flower records of prunefl's messages: round trips, and every malformed field refused with a DecodeError."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict  # noqa: E402

from prunefl.engines.flower.records import (  # noqa: E402
    FORMAT,
    TrainInstruction,
    decode_instruction,
    decode_reply,
    encode_instruction,
    encode_reply,
    load_client_state,
    save_client_state,
)
from prunefl.errors import CheckpointError, DecodeError  # noqa: E402
from prunefl.fl.links import TrainMessage, TrainReply  # noqa: E402


def test_instruction_round_trips() -> None:
    # Prepare
    ins = TrainInstruction(4, 1, TrainMessage(b"\x00\x01", 7), ("fc1.weight",))

    # Execute
    got = decode_instruction(encode_instruction(ins), expected_round=4)

    # Assert
    assert got == ins


GOOD = {"format": FORMAT, "round": 2, "partition-id": 0, "mask-version": 1, "sparse-layers": [], "data": b"x"}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": FORMAT + 1}, f"format must be {FORMAT}"),  # a newer sender
        ({"format": FORMAT - 1}, f"format must be {FORMAT}"),  # an older sender
        ({"round": -1}, "'round' must be an int >= 0"),  # negative round
        ({"round": 3}, "expected round 2"),  # a stale or early instruction
        ({"partition-id": "0"}, "'partition-id' must be an int"),  # wrong type
        ({"mask-version": True}, "'mask-version' must be an int"),  # a bool is not a version
        ({"data": "x"}, "'data' must be bytes"),  # text instead of bytes
        ({"sparse-layers": [1, 2]}, "list of layer names"),  # not names
    ],
)
def test_instruction_malformed_field_raises_decode_error(change: dict, match: str) -> None:
    # Prepare
    content = RecordDict({"prunefl": ConfigRecord({**GOOD, **change})})

    # Execute / Assert
    with pytest.raises(DecodeError, match=match):
        decode_instruction(content, expected_round=2)


def test_message_without_prunefl_record_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="no 'prunefl' config record"):
        decode_instruction(RecordDict({"other": ConfigRecord({"a": 1})}))


def test_reply_for_other_partition_raises_decode_error() -> None:
    # Prepare
    content = encode_reply(1, 0, TrainReply(b"abc"))

    # Execute / Assert
    with pytest.raises(DecodeError, match="claims partition 0, its sender holds partition 1"):
        decode_reply(content, expected_partition=1)


def test_reply_carries_the_round_it_answers() -> None:
    # Prepare: a stale reply (round 3) is decoded; the round protocol then rejects it as "other-round"
    content = encode_reply(3, 1, TrainReply(b"abc"))

    # Execute
    got = decode_reply(content, expected_partition=1)

    # Assert
    assert got.round == 3 and got.data == b"abc"


def test_reply_with_non_numeric_extra_raises_decode_error() -> None:
    # Prepare
    content = encode_reply(0, 0, TrainReply(b"abc"))
    content["prunefl-extras"] = ArrayRecord({"s": Array(np.array(["a", "b"]))})

    # Execute / Assert
    with pytest.raises(DecodeError, match="numeric array"):
        decode_reply(content, expected_partition=0)


def test_client_state_round_trips_tensors_and_values() -> None:
    # Prepare
    state = {"client-id": 3, "names": ["a"], "v": None, "masks/a": torch.tensor([True, False])}

    # Execute
    got = load_client_state(save_client_state(state))

    # Assert
    assert got["client-id"] == 3 and got["names"] == ["a"] and got["v"] is None
    assert torch.equal(got["masks/a"], state["masks/a"])


def test_client_state_corrupt_raises_checkpoint_error() -> None:
    with pytest.raises(CheckpointError, match="corrupt"):
        load_client_state(ConfigRecord({"tensors": b"\x05garbage", "values": "{}"}))
