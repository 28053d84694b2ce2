"""Client SGD momentum (``fl.momentum``): per-client buffers across rounds, reset on a new mask, none where pruned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunefl.data import load_dataset
from prunefl.data.dataset import ArrayDataset
from prunefl.engines.simulation import SimulationEngine
from prunefl.experiments.config import load_config
from prunefl.experiments.runner import build_simulation
from prunefl.fl.batches import BatchStream
from prunefl.fl.client import ClientState, SwapCache, client_step, load_model_state_, model_state
from prunefl.fl.losses import make_loss
from prunefl.fl.messages import TrainIns
from prunefl.models import build_model
from prunefl.sparse.masks import apply_masks_, attach_masks, mask_gradients_

MU = 0.5
LR = 0.25  # μ, η and the inputs below are powers of two: every expected value is exact in float32


def _linear_setup() -> tuple[nn.Module, ArrayDataset]:
    """w·x with w = [1, 1] on samples all equal to x = [1, 2], loss = output: every step's gradient is g = [1, 2]."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 1, bias=False))
    attach_masks(model)
    x = torch.tensor([[1.0, 2.0]]).repeat(4, 1).view(4, 1, 1, 2)
    y = torch.zeros(4, dtype=torch.long)
    return model, ArrayDataset("same", x, y, x[:1], y[:1], num_classes=1)


def _sum_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.sum()


def _ins(weight: list[float], mask: list[bool], local_steps: int) -> TrainIns:
    state = {"1.weight": np.array([weight], dtype=np.float32)}
    return TrainIns(0, state, {"1.weight": np.array([mask])}, lr=LR, local_steps=local_steps, batch_size=1,
                    importance_mode="off", upload_importance=False)


def _client(momentum: float) -> ClientState:
    return ClientState(0, BatchStream(np.arange(4), np.random.default_rng(0)), torch.Generator().manual_seed(0),
                       momentum=momentum)


def test_two_steps_then_next_round_follow_hand_worked_momentum() -> None:
    # Prepare
    model, ds = _linear_setup()
    client = _client(MU)

    # Execute: round 1 of two steps, then round 2 of one step under the same mask version
    first = client_step(model, _ins([1.0, 1.0], [True, True], 2), client, ds, _sum_loss, mask_version=0)
    buffer_after_first = client.momentum_buffers["1.weight"].clone()
    second = client_step(model, _ins(first.state["1.weight"][0].tolist(), [True, True], 1), client, ds, _sum_loss,
                         mask_version=0)

    # Assert
    # step 1: b = g = [1, 2];                          w = [1, 1] − 0.25·[1, 2] = [0.75, 0.5]
    # step 2: b = 0.5·[1, 2] + [1, 2] = [1.5, 3];      w = [0.75, 0.5] − 0.25·[1.5, 3] = [0.375, −0.25]
    np.testing.assert_array_equal(first.state["1.weight"], [[0.375, -0.25]])
    assert torch.equal(buffer_after_first, torch.tensor([[1.5, 3.0]]))
    # round 2 carries b: b = 0.5·[1.5, 3] + [1, 2] = [1.75, 3.5]; w = [0.375, −0.25] − 0.25·[1.75, 3.5]
    np.testing.assert_array_equal(second.state["1.weight"], [[-0.0625, -1.125]])
    assert torch.equal(client.momentum_buffers["1.weight"], torch.tensor([[1.75, 3.5]]))


def test_new_mask_version_resets_buffers() -> None:
    # Prepare: buffers [1.5, 3] from a two-step round under mask version 0
    model, ds = _linear_setup()
    client = _client(MU)
    client_step(model, _ins([1.0, 1.0], [True, True], 2), client, ds, _sum_loss, mask_version=0)

    # Execute: the server's mask version moved to 1
    res = client_step(model, _ins([1.0, 1.0], [True, True], 1), client, ds, _sum_loss, mask_version=1)

    # Assert: the step starts afresh, b = g = [1, 2], w = [1, 1] − 0.25·[1, 2]
    assert torch.equal(client.momentum_buffers["1.weight"], torch.tensor([[1.0, 2.0]]))
    np.testing.assert_array_equal(res.state["1.weight"], [[0.75, 0.5]])
    assert client.momentum_mask_version == 1


def test_unknown_mask_version_resets_buffers() -> None:
    # Prepare
    model, ds = _linear_setup()
    client = _client(MU)
    client_step(model, _ins([1.0, 1.0], [True, True], 2), client, ds, _sum_loss, mask_version=None)

    # Execute: without a version the client cannot tell that the masks are unchanged
    client_step(model, _ins([1.0, 1.0], [True, True], 1), client, ds, _sum_loss, mask_version=None)

    # Assert: b = g
    assert torch.equal(client.momentum_buffers["1.weight"], torch.tensor([[1.0, 2.0]]))


def test_pruned_coordinates_carry_no_momentum() -> None:
    # Prepare: the second weight is pruned; its gradient would be 2 at every step
    model, ds = _linear_setup()
    client = _client(MU)

    # Execute
    res = client_step(model, _ins([1.0, 0.7], [True, False], 2), client, ds, _sum_loss, mask_version=0)

    # Assert: the kept weight follows b = [1] then [1.5]; the pruned one has neither momentum nor value
    assert torch.equal(client.momentum_buffers["1.weight"], torch.tensor([[1.5, 0.0]]))
    np.testing.assert_array_equal(res.state["1.weight"], [[0.375, 0.0]])


def test_stored_buffer_at_a_pruned_coordinate_is_masked_when_loaded() -> None:
    # Prepare: a buffer that is not zero where the round's mask prunes (e.g. left by a client-side mask change)
    model, ds = _linear_setup()
    client = _client(MU)
    client.momentum_buffers = {"1.weight": torch.tensor([[4.0, 4.0]])}
    client.momentum_mask_version = 0

    # Execute
    res = client_step(model, _ins([1.0, 1.0], [True, False], 1), client, ds, _sum_loss, mask_version=0)

    # Assert: b = 0.5·[4, 0] + [1, 0] = [3, 0]; w = [1 − 0.25·3, 0]
    assert torch.equal(client.momentum_buffers["1.weight"], torch.tensor([[3.0, 0.0]]))
    np.testing.assert_array_equal(res.state["1.weight"], [[0.25, 0.0]])


def test_zero_momentum_keeps_no_buffers() -> None:
    # Prepare
    model, ds = _linear_setup()
    client = _client(0.0)

    # Execute
    res = client_step(model, _ins([1.0, 1.0], [True, True], 2), client, ds, _sum_loss, mask_version=0)

    # Assert: plain SGD, w = [1, 1] − 2·0.25·[1, 2]
    assert client.momentum_buffers == {}
    np.testing.assert_array_equal(res.state["1.weight"], [[0.5, 0.0]])


def test_zero_momentum_reply_is_bit_identical_to_plain_masked_sgd() -> None:
    # Prepare: the MLP on digits, fc1 half pruned, two clients drawing the same batches
    ds = load_dataset("digits", None, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", ds.num_classes, ds.input_shape)
    masks = {n: np.ones(tuple(p.shape), dtype=bool) for n, p in model.named_parameters() if n.endswith("weight")}
    attach_masks(model)
    masks["fc1.weight"] = np.random.default_rng(1).random(masks["fc1.weight"].shape) < 0.5
    state = model_state(model, masks)
    ins = TrainIns(0, state, masks, lr=0.1, local_steps=4, batch_size=16, importance_mode="off",
                   upload_importance=False)
    loss_fn = make_loss("cross_entropy", ds.num_classes)
    ours = ClientState(0, BatchStream(np.arange(200), np.random.default_rng(5)), torch.Generator(), momentum=0.0)
    plain_batches = BatchStream(np.arange(200), np.random.default_rng(5))

    # Execute
    res = client_step(model, ins, ours, ds, loss_fn, mask_version=0)
    # the plain masked SGD round written out: torch's SGD without momentum, update masked, pruned weights re-zeroed
    load_model_state_(model, state, masks)
    partial = {"fc1.weight"}
    apply_masks_(model, partial)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(4):
        idx = torch.from_numpy(plain_batches.next(16))
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(ds.prepare(ds.x_train[idx], train=True)), ds.y_train[idx]).backward()
        mask_gradients_(model, partial)
        optimizer.step()
        apply_masks_(model, partial)
    plain = model_state(model, masks)

    # Assert: bit for bit (no tolerance: the same operations in the same order)
    assert set(res.state) == set(plain)
    for name in plain:
        assert np.array_equal(res.state[name], plain[name]), name


def test_momentum_ignores_sparse_layers_and_matches_masked_dense() -> None:
    # Prepare: fc1 70 % pruned; one client asked to swap fc1 to the CSR kernel, one not
    ds = load_dataset("digits", None, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", ds.num_classes, ds.input_shape)
    masks = {n: np.ones(tuple(p.shape), dtype=bool) for n, p in model.named_parameters() if n.endswith("weight")}
    attach_masks(model)
    masks["fc1.weight"] = np.random.default_rng(1).random(masks["fc1.weight"].shape) < 0.3
    ins = TrainIns(0, model_state(model, masks), masks, lr=0.1, local_steps=3, batch_size=16,
                   importance_mode="off", upload_importance=False)
    loss_fn = make_loss("cross_entropy", ds.num_classes)
    clients = [ClientState(0, BatchStream(np.arange(200), np.random.default_rng(5)), torch.Generator(), momentum=0.9)
               for _ in range(2)]
    cache = SwapCache()

    # Execute
    swapped = client_step(model, ins, clients[0], ds, loss_fn, sparse_layers={"fc1.weight"}, swap_cache=cache,
                          mask_version=0)
    dense = client_step(model, ins, clients[1], ds, loss_fn, mask_version=0)

    # Assert: no swap happened, and the reply is the masked dense one bit for bit
    assert cache.previous is None
    assert all(np.array_equal(swapped.state[n], dense.state[n]) for n in dense.state)
    assert clients[0].momentum_buffers["fc1.weight"].shape == model.get_parameter("fc1.weight").shape


@pytest.mark.slow
def test_engine_gives_each_client_the_configured_momentum_and_no_sparse_layers() -> None:
    # Prepare: a (pretended) break-even that would swap fc1 to the CSR kernel once pruned below 0.95
    config = load_config(None, [
        "data.dataset=digits", "data.partition=iid", "data.num_clients=3", "clients_per_round=3", "model.name=mlp",
        "timing.preset=uniform", "rounds=4", "eval_every=2", "lr=0.05", "threads=1", "fl.momentum=0.9",
        "method=prunefl-no-ip", "reconfig_interval=2", "first_reconfig_round=2", "max_decrease=0.9",
    ])
    setup = build_simulation(config, load_dataset("digits", None, seed=0))
    setup.break_even = {"fc1.weight": (0.95, 0.95)}
    engine = SimulationEngine(setup)
    rows: list[dict] = []

    # Execute
    engine.run(rows.append)

    # Assert: pruned after round 2, yet every layer trained masked dense; buffers are zero where pruned
    assert [c.momentum for c in engine.clients] == [0.9, 0.9, 0.9]
    assert rows[-1]["density"] < 0.95
    assert all(row["sparse-layers"] == [] for row in rows)
    mask = setup.server.masks["fc1.weight"]
    for client in engine.clients:
        assert client.momentum_mask_version == setup.server.mask_version
        assert not client.momentum_buffers["fc1.weight"][~mask].any()
    assert rows[-1]["test-accuracy"] > 0.3  # 10 classes: clearly learning
