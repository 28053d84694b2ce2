"""Masked aggregation against hand-computed examples (spec §3.8, §12 item 8)."""

from __future__ import annotations

import numpy as np
import torch

from prunefl.fl.aggregate import masked_aggregate, sum_importance


def _np(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float32)


def test_kept_coordinates_take_sample_weighted_mean_pruned_keep_stale() -> None:
    # Prepare: weights 1:3, coordinate 1 pruned with stale server value 9
    g = {"fc.weight": torch.tensor([0.0, 9.0, 4.0]), "fc.bias": torch.tensor([1.0])}
    m = {"fc.weight": torch.tensor([True, False, True])}
    clients = [{"fc.weight": _np(2, 0, 4), "fc.bias": _np(2)}, {"fc.weight": _np(6, 0, 8), "fc.bias": _np(6)}]
    # Execute
    out = masked_aggregate(g, m, clients, [10, 30])
    # Assert: 0.25*2 + 0.75*6 = 5; 0.25*4 + 0.75*8 = 7; bias 0.25*2 + 0.75*6 = 5
    assert out["fc.weight"].tolist() == [5.0, 9.0, 7.0]
    assert out["fc.bias"].tolist() == [5.0]


def test_regrow_zero_clears_pruned_coordinates() -> None:
    g = {"w": torch.tensor([3.0, 9.0])}
    m = {"w": torch.tensor([True, False])}
    out = masked_aggregate(g, m, [{"w": _np(1, 0)}], [5], regrow_init="zero")
    assert out["w"].tolist() == [1.0, 0.0]


def test_bn_statistics_averaged_and_num_batches_tracked_untouched() -> None:
    # Prepare
    g = {"bn.running_mean": torch.tensor([0.0]), "bn.num_batches_tracked": torch.tensor(7)}
    clients = [
        {"bn.running_mean": _np(1.0), "bn.num_batches_tracked": np.array(100)},
        {"bn.running_mean": _np(3.0), "bn.num_batches_tracked": np.array(200)},
    ]
    # Execute
    out = masked_aggregate(g, {}, clients, [1, 1])
    # Assert
    assert out["bn.running_mean"].tolist() == [2.0]
    assert int(out["bn.num_batches_tracked"]) == 7


def test_aggregate_does_not_modify_inputs() -> None:
    g = {"w": torch.tensor([1.0, 2.0])}
    before = g["w"].clone()
    masked_aggregate(g, {"w": torch.tensor([True, True])}, [{"w": _np(5, 5)}], [1])
    assert torch.equal(g["w"], before)


def test_sum_importance_is_plain_sum_in_float64() -> None:
    out = sum_importance([{"w": _np(1, 2)}, {"w": _np(3, 4)}])
    assert out["w"].dtype == torch.float64
    assert out["w"].tolist() == [4.0, 6.0]
