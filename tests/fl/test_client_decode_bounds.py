"""A client decodes the server's instruction against its own model (issue 10): an instruction for another model is
refused with DecodeError before its arrays are allocated, and an honest one trains as before."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import DecodeError
from prunefl.fl.batches import BatchStream
from prunefl.fl.client import ClientState
from prunefl.fl.links import ClientLink, TrainMessage
from prunefl.fl.losses import make_loss
from prunefl.fl.messages import TrainIns
from prunefl.fl.round import ClientWorkspace, client_round
from prunefl.pruning.methods.fedavg import FedAvg
from prunefl.seeds import BATCH_STREAM, rng
from prunefl.sparse.codec import encode_train_ins
from prunefl.sparse.masks import attach_masks

PARTITION = np.arange(6)
WEIGHT = "1.weight"  # Linear(16, 8): the prunable weight a hostile server inflates
BIG = (2048, 2048)  # 4 Mi float32 = 16 MiB dense, but all pruned: its message is a few KiB with zstd


def _workspace() -> ClientWorkspace:
    """Linear(16, 8) → BatchNorm → Linear(8, 3) with mask buffers, on 6 images of 1×4×4."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    attach_masks(model)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 3
    return ClientWorkspace(model, ArrayDataset("tiny", x, y, x[:3], y[:3], 3), make_loss("cross_entropy", 3), seed=0)


def _client() -> ClientState:
    return ClientState(0, BatchStream(PARTITION, rng(0, BATCH_STREAM, 0)), torch.Generator().manual_seed(0),
                       link=ClientLink())


def _honest_ins(work: ClientWorkspace) -> TrainIns:
    """The workspace model's own state and all-kept masks: what an honest server sends."""
    items = work.model.state_dict().items()
    state = {k: v.numpy().copy() for k, v in items if not k.endswith("_mask")}
    masks = {k[: -len("_mask")]: v.numpy().copy() for k, v in items if k.endswith("_mask")}
    return TrainIns(0, state, masks, lr=0.1, local_steps=1, batch_size=3)


def _message(ins: TrainIns) -> TrainMessage:
    return TrainMessage(encode_train_ins(ins, level=3), mask_version=0)


def test_expected_entries_are_the_model_state_without_mask_buffers() -> None:
    # Prepare
    work = _workspace()

    # Execute
    shapes, dtypes = work.expected_entries()

    # Assert: 2 linear layers (weight, bias) + BatchNorm (weight, bias, mean, var, count); no "*_mask" buffer
    assert shapes == {
        "1.weight": (8, 16), "1.bias": (8,), "2.weight": (8,), "2.bias": (8,), "2.running_mean": (8,),
        "2.running_var": (8,), "2.num_batches_tracked": (), "4.weight": (3, 8), "4.bias": (3,),
    }
    assert dtypes["2.num_batches_tracked"] == np.dtype("int64") and dtypes["1.weight"] == np.dtype("float32")
    assert work.expected_entries() is work.expected_entries()  # computed once per workspace


def test_instruction_for_a_larger_model_is_refused_before_allocation() -> None:
    # Prepare: the prunable weight claims 2048×2048, all pruned (a tiny message decoding to 16 MiB + 4 MiB of mask)
    work, client = _workspace(), _client()
    ins = _honest_ins(work)
    ins.state[WEIGHT] = np.zeros(BIG, np.float32)
    ins.masks[WEIGHT] = np.zeros(BIG, np.bool_)
    message = _message(ins)
    assert len(message.data) < 64 * 1024

    # Execute
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=WEIGHT) as caught:
            client_round(message, client, work, FedAvg(), PARTITION)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Assert: refused on the table, far below the 20 MiB the arrays would take; the link's cache untouched
    assert "2048" in str(caught.value) and "omits masks" not in str(caught.value)  # the cause, not a guess
    assert peak < 1024 * 1024
    assert client.link.mask_version is None and client.link.masks is None


def test_unchecked_decode_would_allocate_the_larger_model() -> None:
    # Prepare: the same message, decoded without the workspace's entries (what the client did before)
    work = _workspace()
    ins = _honest_ins(work)
    ins.state[WEIGHT] = np.zeros(BIG, np.float32)
    ins.masks[WEIGHT] = np.zeros(BIG, np.bool_)
    message = _message(ins)

    # Execute
    tracemalloc.start()
    try:
        got = ClientLink().decode_ins(message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Assert: the dense 2048·2048·4 B = 16 MiB weight was allocated: the bound above is the expected entries' doing
    assert got.state[WEIGHT].shape == BIG
    assert peak >= 2048 * 2048 * 4


@pytest.mark.parametrize(
    "change",
    [
        "dtype",  # the bias as float64: twice the bytes, and not what the model loads
        "extra",  # an entry the model does not have
        "missing",  # the model's last bias left out
    ],
)
def test_instruction_for_another_model_is_refused(change: str) -> None:
    # Prepare
    work, client = _workspace(), _client()
    ins = _honest_ins(work)
    if change == "dtype":
        ins.state["1.bias"] = ins.state["1.bias"].astype(np.float64)
    elif change == "extra":
        ins.state["5.weight"] = np.ones((3, 3), np.float32)
    else:
        del ins.state["4.bias"]
    before = {k: v.clone() for k, v in work.model.state_dict().items()}

    # Execute / Assert: refused, the model untouched
    with pytest.raises(DecodeError):
        client_round(_message(ins), client, work, FedAvg(), PARTITION)
    assert all(torch.equal(before[k], v) for k, v in work.model.state_dict().items())


def test_honest_instruction_trains() -> None:
    # Prepare
    work, client = _workspace(), _client()
    ins = _honest_ins(work)

    # Execute
    reply = client_round(_message(ins), client, work, FedAvg(), PARTITION)

    # Assert: a reply for round 0, and the link cached the instruction's masks at version 0
    assert reply.round == 0 and len(reply.data) > 0
    assert client.link.mask_version == 0
