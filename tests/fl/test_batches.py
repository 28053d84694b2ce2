"""A client's batch stream continues exactly from its state dict, and refuses another client's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prunefl.errors import CheckpointError
from prunefl.fl.batches import BatchStream


def test_state_dict_continues_the_stream_across_a_pass_boundary() -> None:
    # Prepare: 7 of 10 indices drawn, so the next batch of 6 ends this pass and starts a new shuffle
    original = BatchStream(np.arange(10, 20), np.random.default_rng(0))
    original.next(7)
    fresh = BatchStream(np.arange(10, 20), np.random.default_rng(99))
    # Execute
    state = original.state_dict()
    fresh.load_state_dict(state)
    # Assert: JSON-able besides the order tensor, and the same draws from here on
    assert state["position"] == 7 and json.loads(state["rng"])["bit_generator"] == "PCG64"
    assert [fresh.next(6).tolist() for _ in range(3)] == [original.next(6).tolist() for _ in range(3)]


@pytest.mark.parametrize(
    "change",
    [
        {"position": 10},  # past the end of a 10-index pass
        {"position": 2.0},  # not an int
        {"rng": "{not json"},  # unreadable generator state
        {"rng": json.dumps({"bit_generator": "MT19937"})},  # another kind of generator
        {"order": np.arange(9)},  # 9 indices, the stream has 10
        {"order": np.arange(10, 20) + 1},  # another client's indices
    ],
)
def test_bad_state_raises_and_leaves_the_stream_unchanged(change: dict) -> None:
    # Prepare
    stream = BatchStream(np.arange(10, 20), np.random.default_rng(0))
    twin = BatchStream(np.arange(10, 20), np.random.default_rng(0))
    stream.next(3)
    twin.next(3)
    # Execute / Assert
    with pytest.raises(CheckpointError):
        stream.load_state_dict({**stream.state_dict(), **change})
    assert stream.next(12).tolist() == twin.next(12).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.bool])
def test_batch_stream_state_with_non_integer_order_raises_checkpoint_error(dtype: torch.dtype) -> None:
    # Prepare: a checkpoint whose order tensor was retyped (it would be cast silently)
    stream = BatchStream(np.arange(4), np.random.default_rng(0))
    state = stream.state_dict()
    state["order"] = torch.as_tensor(np.asarray(state["order"])).to(dtype)

    # Execute / Assert
    with pytest.raises(CheckpointError, match="integer indices"):
        BatchStream(np.arange(4), np.random.default_rng(0)).load_state_dict(state)
