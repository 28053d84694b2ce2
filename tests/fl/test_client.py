"""Client step: masked local SGD and importance accumulation (spec §3.2, §12 item 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import CheckpointError
from prunefl.fl.batches import BatchStream
from prunefl.fl.client import ClientState, SwapCache, client_step, model_state
from prunefl.fl.losses import make_loss
from prunefl.fl.messages import TrainIns
from prunefl.sparse.masks import attach_masks


def _setup(seed: int = 0) -> tuple[nn.Module, ArrayDataset, dict[str, np.ndarray], dict[str, np.ndarray]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    attach_masks(model)
    x = torch.rand(8, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ds = ArrayDataset("tiny", x, y, x[:2], y[:2], num_classes=3)
    mask = np.ones((3, 4), dtype=bool)
    mask[0, 1] = mask[2, 3] = False
    state = model_state(model, {"1.weight": mask})
    state["1.weight"][~mask] = 0.7  # a stale server value at pruned coordinates; the client must zero it
    return model, ds, state, {"1.weight": mask}


def _client(ds: ArrayDataset) -> ClientState:
    # a stream that yields the samples in order 0..7, so the test knows each batch
    stream = BatchStream(np.arange(ds.n_train), np.random.default_rng(0))
    return ClientState(0, stream, torch.Generator().manual_seed(0))


def _reference(state: dict[str, np.ndarray], mask: np.ndarray, ds: ArrayDataset, order: np.ndarray, k: int, b: int,
               lr: float) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Independent re-derivation: K masked SGD steps with functional autograd; returns per-step grads and weights."""
    w = torch.from_numpy(state["1.weight"] * mask).clone().requires_grad_(True)
    bias = torch.from_numpy(state["1.bias"]).clone().requires_grad_(True)
    m = torch.from_numpy(mask)
    grads = []
    loss_fn = make_loss("cross_entropy", 3)
    for step in range(k):
        idx = order[step * b : (step + 1) * b]
        x = ds.x_train[idx].flatten(1)
        loss = loss_fn(x @ w.T + bias, ds.y_train[idx])
        gw, gb = torch.autograd.grad(loss, [w, bias])
        grads.append({"1.weight": gw, "1.bias": gb})
        with torch.no_grad():
            w -= lr * gw * m
            bias -= lr * gb
    return grads, {"1.weight": w.detach(), "1.bias": bias.detach()}


@pytest.mark.parametrize("mode", ["round_sum", "legacy_last_step"])
def test_importance_matches_hand_derivation(mode: str) -> None:
    # Prepare
    model, ds, state, masks = _setup()
    client = _client(ds)
    order = np.concatenate([client.batches._order, client.batches._order])  # the stream's first pass
    ins = TrainIns(0, state, masks, lr=0.5, local_steps=3, batch_size=2, importance_mode=mode, upload_importance=True)
    # Execute
    res = client_step(model, ins, client, ds, make_loss("cross_entropy", 3))
    # Assert
    grads, weights = _reference(state, masks["1.weight"], ds, order, 3, 2, 0.5)
    n_c = 3 * 2
    for name in ["1.weight", "1.bias"]:
        if mode == "round_sum":
            expected = n_c * sum(g[name] for g in grads) ** 2  # N_c·(Σ_k g_k)²
        else:
            expected = 4 * n_c * grads[-1][name] ** 2  # the aliasing artefact: (2·g_K)²·N_c
        np.testing.assert_allclose(res.importance[name], expected.numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(res.state["1.weight"], weights["1.weight"].numpy(), rtol=1e-5, atol=1e-7)


def test_pruned_weights_stay_zero_but_get_importance() -> None:
    # Prepare
    model, ds, state, masks = _setup()
    ins = TrainIns(0, state, masks, 0.5, 4, 2, importance_mode="round_sum", upload_importance=True)
    # Execute
    res = client_step(model, ins, _client(ds), ds, make_loss("cross_entropy", 3))
    # Assert: exactly zero where pruned (the stale 0.7 was cleared), non-zero importance there (dense gradient)
    pruned = ~masks["1.weight"]
    assert np.all(res.state["1.weight"][pruned] == 0.0)
    assert np.all(res.importance["1.weight"][pruned] > 0.0)


def test_importance_accumulates_across_rounds_and_resets_after_upload() -> None:
    # Prepare
    model, ds, state, masks = _setup()
    client = _client(ds)
    loss = make_loss("cross_entropy", 3)
    quiet = TrainIns(0, state, masks, 0.1, 1, 2, importance_mode="round_sum", upload_importance=False)
    # Execute
    first = client_step(model, quiet, client, ds, loss)
    after_one = client.importance["1.bias"].clone()
    upload = client_step(model, TrainIns(1, state, masks, 0.1, 1, 2, "round_sum", True), client, ds, loss)
    # Assert
    assert first.importance is None
    assert np.all(upload.importance["1.bias"] > after_one.numpy())  # round 1 added to round 0's sum
    assert client.importance == {}


def test_fedavg_mode_collects_nothing() -> None:
    model, ds, state, masks = _setup()
    res = client_step(model, TrainIns(0, state, masks, 0.1, 2, 2), _client(ds), ds, make_loss("cross_entropy", 3))
    assert res.importance is None and res.num_examples == 4


@pytest.mark.parametrize("mode", ["off", "round_sum"])
def test_sparse_kernel_round_matches_masked_dense_round(mode: str) -> None:
    # Prepare: the same round twice, once with the Linear layer on the CSR kernel
    model, ds, state, masks = _setup()
    loss = make_loss("cross_entropy", 3)
    ins = TrainIns(0, state, masks, 0.5, 4, 2, importance_mode=mode, upload_importance=mode != "off")
    # Execute
    dense = client_step(model, ins, _client(ds), ds, loss)
    sparse = client_step(model, ins, _client(ds), ds, loss, sparse_layers={"1.weight"})
    # Assert: float32 kernels sum in a different order, hence the tolerance
    for k in dense.state:
        np.testing.assert_allclose(sparse.state[k], dense.state[k], rtol=1e-5, atol=1e-6)
    assert np.all(sparse.state["1.weight"][~masks["1.weight"]] == 0.0)
    assert [n for n, _ in model.named_parameters()] == ["1.weight", "1.bias"]  # dense layer restored
    if mode == "round_sum":
        for k in dense.importance:
            np.testing.assert_allclose(sparse.importance[k], dense.importance[k], rtol=1e-4, atol=1e-7)
    else:
        assert sparse.importance is None


def test_swap_cache_reuses_indices_for_the_same_mask_version_and_rebuilds_for_a_new_one() -> None:
    # Prepare
    model, ds, state, masks = _setup()
    loss = make_loss("cross_entropy", 3)
    cache = SwapCache()
    other = {"1.weight": ~masks["1.weight"]}
    other["1.weight"][1, :] = True

    def round_(mask: dict[str, np.ndarray], version: int) -> tuple[np.ndarray, np.ndarray]:
        ins = TrainIns(0, state, mask, 0.5, 2, 2)
        sparse = client_step(model, ins, _client(ds), ds, loss, {"1.weight"}, swap_cache=cache, mask_version=version)
        dense = client_step(model, ins, _client(ds), ds, loss)
        return sparse.state["1.weight"], dense.state["1.weight"]

    # Execute
    first = round_(masks, version=1)
    indices_1 = cache.previous.sparse["1.weight"].col_indices
    second = round_(masks, version=1)
    indices_2 = cache.previous.sparse["1.weight"].col_indices
    third = round_(other, version=2)
    layer_3 = cache.previous.sparse["1.weight"]

    # Assert: shared buffers while the version holds, a new pattern (the new mask's) after it changes
    assert indices_2 is indices_1
    assert layer_3.col_indices is not indices_1 and layer_3.matches_mask(torch.from_numpy(other["1.weight"]))
    assert cache.mask_version == 2
    for got, expected in (first, second, third):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(third[0][~other["1.weight"]] == 0.0)


def test_round_sum_importance_of_sparse_layers_comes_from_recorded_rows_not_per_step_gradients() -> None:
    # Prepare
    model, ds, state, masks = _setup()
    loss = make_loss("cross_entropy", 3)
    cache = SwapCache()
    ins = TrainIns(0, state, masks, 0.5, 3, 2, importance_mode="round_sum", upload_importance=True)

    # Execute
    sparse = client_step(model, ins, _client(ds), ds, loss, {"1.weight"}, swap_cache=cache)
    dense = client_step(model, ins, _client(ds), ds, loss)

    # Assert: no per-step dense gradient, recording switched off again, the same importance as masked dense
    layer = cache.previous.sparse["1.weight"]
    assert layer.dense_weight_grad is False and layer.record_inputs is False and layer.weight_grad is None
    for k in dense.importance:
        np.testing.assert_allclose(sparse.importance[k], dense.importance[k], rtol=1e-4, atol=1e-7)


def test_client_state_survives_safetensors_and_json_and_trains_on_identically(tmp_path) -> None:
    # Prepare: a client with importance, a used batch stream and augmentation state, after one round
    from safetensors.torch import load_file, save_file

    model, ds, state, masks = _setup()
    ins = TrainIns(0, state, masks, 0.1, 2, 3, importance_mode="round_sum", upload_importance=False)
    client = _client(ds)
    client_step(model, ins, client, ds, make_loss("cross_entropy", 3))
    saved = client.state_dict()
    tensors = {k: v for k, v in saved.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, str(tmp_path / "client.safetensors"))  # no pickle: tensors here, the rest as JSON
    (tmp_path / "client.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in tensors}))
    # Execute: a fresh client of the same id and partition loads both files
    fresh = ClientState(0, BatchStream(np.arange(ds.n_train), np.random.default_rng(7)), torch.Generator())
    fresh.load_state_dict({**load_file(str(tmp_path / "client.safetensors")),
                           **json.loads((tmp_path / "client.json").read_text())})
    order = list(fresh.importance)
    again = TrainIns(1, state, masks, 0.1, 2, 3, importance_mode="round_sum", upload_importance=True)
    a = client_step(model, again, client, ds, make_loss("cross_entropy", 3))
    b = client_step(model, again, fresh, ds, make_loss("cross_entropy", 3))
    # Assert: importance names keep their order (it fixes the upload's layout), and the replies are equal
    assert order == list(a.importance) == list(b.importance) == ["1.weight", "1.bias"]
    assert all(np.array_equal(a.state[k], b.state[k]) for k in a.state)
    assert all(np.array_equal(a.importance[k], b.importance[k]) for k in a.importance)


def test_loading_another_clients_state_raises_and_changes_nothing() -> None:
    # Prepare
    _, ds, _, _ = _setup()
    other = ClientState(3, BatchStream(np.arange(ds.n_train), np.random.default_rng(1)), torch.Generator())
    client = _client(ds)
    before = client.state_dict()
    # Execute / Assert
    with pytest.raises(CheckpointError, match="client-id=3, loaded into client 0"):
        client.load_state_dict(other.state_dict())
    assert torch.equal(client.state_dict()["batches/order"], before["batches/order"])
