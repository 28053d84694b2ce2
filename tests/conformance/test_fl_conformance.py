"""Spec §12 items 7, 8, 9, 11 and 12, each test named after its item."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prunefl.errors import DecodeError
from prunefl.fl.aggregate import masked_aggregate
from prunefl.fl.batches import BatchStream
from prunefl.fl.client import ClientState, client_step, model_state
from prunefl.fl.losses import make_loss
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.data.dataset import ArrayDataset
from prunefl.pruning.adaptive import AdaptivePruning, AdaptiveSettings
from prunefl.pruning.initial import InitialPruningSettings, initial_pruning
from prunefl.sparse.codec import decode_train_ins, decode_train_res, encode_train_ins, encode_train_res
from prunefl.sparse.masks import attach_masks
from prunefl.timing.clock import DeviceProfile
from prunefl.timing.model import TimeModel

TM = TimeModel(("0.weight",), (1e-6,), 1e-3, 1e-3)


def _tiny() -> tuple[nn.Module, ArrayDataset]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    attach_masks(model)
    x = torch.rand(12, 4)
    y = torch.arange(12) % 3
    return model, ArrayDataset("t", x, y, x, y, 3)


def test_item7_pruned_coordinates_get_nonzero_importance_in_fl_and_zero_in_ip() -> None:
    # Prepare
    model, ds = _tiny()
    mask = np.ones((3, 4), bool)
    mask[:, 0] = False
    state = model_state(model, {"0.weight": mask})
    ins = TrainIns(0, state, {"0.weight": mask}, 0.1, 3, 4, importance_mode="round_sum", upload_importance=True)
    client = ClientState(0, BatchStream(np.arange(12), np.random.default_rng(0)), torch.Generator())
    # Execute: FL
    res = client_step(model, ins, client, ds, make_loss("cross_entropy", 3))
    # Assert: FL importance at pruned coordinates is positive
    assert np.all(res.importance["0.weight"][:, 0] > 0)
    # Execute: IP with the same mask, watching the importance through the reconfiguration's record
    model2, _ = _tiny()
    with torch.no_grad():
        model2[0].weight_mask.copy_(torch.from_numpy(mask))
    result = initial_pruning(
        model2, [(ds.x_train[:4], ds.y_train[:4])], make_loss("cross_entropy", 3), TM,
        InitialPruningSettings(lr=0.1, start_accuracy=0.0, local_steps=5, interval=1, max_rounds=3, max_decrease=0.0),
    )
    # Assert: zero importance there, so the ratio rule (strict >) never re-adds them in IP
    assert not bool(result.masks["0.weight"][:, 0].any())


def test_item8_stale_values_kept_zero_option_and_bn_statistics() -> None:
    g = {"w": torch.tensor([1.0, 8.0]), "bn.running_var": torch.tensor([1.0]), "bn.num_batches_tracked": torch.tensor(4)}
    m = {"w": torch.tensor([True, False])}
    clients = [{"w": np.array([3.0, 0.0], np.float32), "bn.running_var": np.array([2.0], np.float32),
                "bn.num_batches_tracked": np.array(9)}] * 2
    stale = masked_aggregate(g, m, clients, [1, 1])
    zero = masked_aggregate(g, m, clients, [1, 1], regrow_init="zero")
    assert stale["w"].tolist() == [3.0, 8.0] and zero["w"].tolist() == [3.0, 0.0]
    assert stale["bn.running_var"].tolist() == [2.0] and int(stale["bn.num_batches_tracked"]) == 4


def test_item9_fl_reconfigures_at_50_100_150() -> None:
    # with and without IP end to end: tests/experiments/test_methods_e2e.py (prunefl and prunefl-no-ip)
    policy = AdaptivePruning(AdaptiveSettings(total_rounds=160, local_steps=5))
    assert [r for r in range(160) if policy.upload_importance(r)] == [50, 100, 150]


def test_item12_transport_never_unpickles_and_rejects_malformed(tmp_path: Path) -> None:
    # Prepare: a valid message and a pickle payload that would run code if unpickled
    ins = TrainIns(0, {"w": np.ones((2, 2), np.float32)}, {"w": np.ones((2, 2), bool)}, 0.1, 1, 1)
    good = encode_train_ins(ins)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (marker.write_text, ("x",))

    # Execute / Assert
    assert decode_train_ins(good).round == 0
    for bad in (pickle.dumps(Evil()), good[:-3], good[:4] + b"\xff" + good[5:], b"", good + b"junk"):
        with pytest.raises(DecodeError):
            decode_train_ins(bad)
    res = TrainRes(0, 1, {"w": np.ones((2, 2), np.float32)}, 0.0, 0.0)
    with pytest.raises(DecodeError):
        decode_train_res(encode_train_res(res, {"w": np.ones((2, 2), bool)})[:-1], {"w": np.ones((2, 2), bool)})
    assert not marker.exists()


def test_item12_nothing_in_the_package_imports_pickle_outside_the_cifar_reader() -> None:
    src = Path(__file__).parents[2] / "src" / "prunefl"
    users = sorted(str(p.relative_to(src)) for p in src.rglob("*.py") if "import pickle" in p.read_text())
    assert users == ["data/cifar.py"]  # a local file format, read with a restricted unpickler
