"""Transport: real codec sizes, masks resent only when they change, decoded messages equal what was sent."""

from __future__ import annotations

import numpy as np

from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.fl.transport import Transport, WireSettings


def _ins(density: float, seed: int = 0) -> TrainIns:
    rng = np.random.default_rng(seed)
    mask = rng.random((200, 100)) < density
    w = rng.standard_normal((200, 100)).astype(np.float32)
    return TrainIns(3, {"w": w, "b": np.ones(200, np.float32)}, {"w": mask}, 0.1, 5, 20)


def test_masks_are_sent_once_per_version_and_bytes_shrink_without_them() -> None:
    # Prepare
    t = Transport()
    ins = _ins(0.3)
    # Execute
    first = t.deliver(ins, [0, 1], mask_version=0)
    second = t.deliver(ins, [0, 1, 2], mask_version=0)  # client 2 is new
    third = t.deliver(ins, [0], mask_version=1)  # masks changed
    # Assert
    assert first.bytes_by_client[0] == first.bytes_by_client[1]
    assert second.bytes_by_client[0] < first.bytes_by_client[0]  # no mask section
    assert second.bytes_by_client[2] == first.bytes_by_client[0]
    assert third.bytes_by_client[0] == first.bytes_by_client[0]
    got = second.ins_by_client[0]
    np.testing.assert_array_equal(got.masks["w"], ins.masks["w"])
    np.testing.assert_array_equal(got.state["w"], ins.state["w"] * ins.masks["w"])  # pruned coordinates arrive as 0


def test_bytes_track_density() -> None:
    dense = Transport().deliver(_ins(1.0), [0], 0).bytes_by_client[0]
    sparse = Transport().deliver(_ins(0.1), [0], 0).bytes_by_client[0]
    # 20,000 float32 weights + 200 biases: dense ~80.8 kB; at 10 % ~8 kB of values + a ~0.47 bit/weight mask
    assert 80_800 <= dense <= 82_000
    assert sparse < 0.15 * dense


def test_float16_importance_halves_the_upload_and_rounds_values() -> None:
    # Prepare
    ins = _ins(0.5)
    state = {"w": ins.state["w"] * ins.masks["w"], "b": ins.state["b"]}
    imp = {"w": np.full((200, 100), 1.0 + 2**-13, np.float32), "b": np.ones(200, np.float32)}
    res = TrainRes(0, 100, state, 0.5, 0.01, imp)
    # Execute
    r32, n32 = Transport().collect(res, ins.masks)
    r16, n16 = Transport(WireSettings(importance_dtype="float16")).collect(res, ins.masks)
    # Assert
    assert n32 - n16 == (20_000 + 200) * 2  # two bytes saved per importance value
    assert r32.importance["w"][0, 0] == np.float32(1.0 + 2**-13)
    assert r16.importance["w"][0, 0] == 1.0  # below float16 resolution
    np.testing.assert_array_equal(r16.state["w"], state["w"])


def test_top_fraction_importance_sends_the_largest_tenth_and_shrinks_the_upload() -> None:
    # Prepare: distinct importance values, so each layer's top 10 % is unique
    ins = _ins(0.5)
    rng = np.random.default_rng(1)
    state = {"w": ins.state["w"] * ins.masks["w"], "b": ins.state["b"]}
    imp = {"w": rng.permutation(20_000).reshape(200, 100).astype(np.float32),
           "b": rng.permutation(200).astype(np.float32)}
    res = TrainRes(0, 100, state, 0.5, 0.01, imp)
    # Execute
    dense, n_dense = Transport().collect(res, ins.masks)
    top, n_top = Transport(WireSettings(importance_top_fraction=0.1)).collect(res, ins.masks)
    # Assert: 2,000 and 20 values survive, the largest (>= 18,000 and >= 180); 4 bytes a value plus ~0.47 bit a
    # weight of positions replace 4 bytes a weight: the importance part shrinks from 80.8 kB to ~9.2 kB
    np.testing.assert_array_equal(dense.importance["w"], imp["w"])
    np.testing.assert_array_equal(top.importance["w"], np.where(imp["w"] >= 18_000, imp["w"], 0))
    np.testing.assert_array_equal(top.importance["b"], np.where(imp["b"] >= 180, imp["b"], 0))
    np.testing.assert_array_equal(top.state["w"], state["w"])
    saved = n_dense - n_top
    assert 0.85 * 80_800 < saved < 0.9 * 80_800
