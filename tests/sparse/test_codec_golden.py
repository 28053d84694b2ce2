"""Wire-format freeze: fixed messages must encode to exactly the bytes the single-module codec produced.

The SHA-256 digests below were produced by the pre-split code (``src/prunefl/sparse/codec.py`` at commit
04fbb4e, before it became the ``prunefl.sparse.codec`` package); any change to them is a wire-format change.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import zstandard

from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.sparse.codec import (
    decode_train_ins,
    decode_train_res,
    encode_state,
    encode_train_ins,
    encode_train_res,
)

# Digests of the raw (level=None) encodings: independent of the zstd library.
INS_RAW_SHA256 = "128979b2f399c9aaabc1c45e6372d98c4fa1a451b363012d123d2de1b28f1830"
RES_RAW_SHA256 = "53b3754a0e7e43e4caa5e6c4c3f9cfd358483d37c2380970b3a044751b2b2005"
RES_TOP_K_RAW_SHA256 = "6820526e3f5b4f9a8e613b559a82f79dc11a8eb6b50bbdb74868122265549a76"
STATE_RAW_SHA256 = "3fac7d65091964bc028ae95dd66c9e4b53005ff09821e9b3ed3d85c318eaf697"
# Digests of the zstd (level=3) encodings: fixed only for the libzstd they were made with.
ZSTD_VERSION = (1, 5, 7)
INS_ZSTD_SHA256 = "fc9d328eecbd8061b8190463abc625d6fb92b90be82ac0a45f6e6e45243437d1"
RES_ZSTD_SHA256 = "5ade8be2efc69c66d42ac50bb627aae2cf5f8ccc4e94eccfe9da16a6e10319a3"


def _values(shape: tuple[int, ...], mult: int, dtype: type = np.float32) -> np.ndarray:
    """Deterministic values exact in every float dtype: multiples of 1/8 in [-6.25, 6.25]."""
    n = int(np.prod(shape))
    return ((np.arange(n) * mult % 101 - 50) / 8).astype(dtype).reshape(shape)


def _mask(shape: tuple[int, ...], kept_percent: int) -> np.ndarray:
    """Deterministic boolean mask keeping about ``kept_percent`` % of positions, scattered."""
    n = int(np.prod(shape))
    return (np.arange(n) * 7919 % 100 < kept_percent).reshape(shape)


def _state_and_masks() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Entries covering every mask code the encoder picks: Rice kept/pruned, bitmask, all-ones, dense."""
    masks = {
        "conv.weight": _mask((8, 4, 3, 3), 5),  # sparse: Rice over kept positions
        "fc1.weight": _mask((32, 24), 97),  # nearly dense: Rice over pruned positions
        "fc2.weight": _mask((10, 32), 50),  # half: bitmask
        "fc3.weight": np.ones((4, 10), bool),  # all ones
    }
    state = {
        name: np.where(m, _values(m.shape, 37 + i), 0).astype(np.float32) for i, (name, m) in enumerate(masks.items())
    }
    state["fc1.bias"] = _values((32,), 11)
    state["bn.running_var"] = _values((8,), 13, np.float64)
    state["bn.num_batches_tracked"] = np.array(12345, dtype=np.int64)
    return state, masks


def _ins() -> TrainIns:
    """A train-ins with every mask code and importance mode round_sum."""
    state, masks = _state_and_masks()
    return TrainIns(7, state, masks, lr=0.05, local_steps=5, batch_size=20, importance_mode="round_sum",
                    upload_importance=True)


def _res() -> TrainRes:
    """A train-res of the same state, with importance for every masked entry."""
    state, masks = _state_and_masks()
    importance = {name: np.abs(_values(m.shape, 53 + i)) for i, (name, m) in enumerate(masks.items())}
    return TrainRes(3, 120, state, 0.75, 1.5, importance=importance)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_raw_train_ins_bytes_unchanged() -> None:
    # Prepare
    ins = _ins()

    # Execute
    data = encode_train_ins(ins, level=None)

    # Assert
    assert _sha(data) == INS_RAW_SHA256
    assert decode_train_ins(data).round == 7


def test_raw_train_res_bytes_unchanged() -> None:
    # Prepare
    res = _res()
    _, masks = _state_and_masks()

    # Execute
    dense = encode_train_res(res, masks, level=None, values_dtype="float16", importance_dtype="float16")
    top_k = encode_train_res(res, masks, level=None, include_masks=True, importance_top_fraction=0.1)

    # Assert
    assert _sha(dense) == RES_RAW_SHA256
    assert _sha(top_k) == RES_TOP_K_RAW_SHA256
    assert decode_train_res(top_k, masks).client_id == 3


def test_raw_state_bytes_unchanged() -> None:
    # Prepare
    state, masks = _state_and_masks()

    # Execute
    data = encode_state(state, masks, include_masks=False, level=None)

    # Assert
    assert _sha(data) == STATE_RAW_SHA256


@pytest.mark.skipif(zstandard.ZSTD_VERSION != ZSTD_VERSION, reason="zstd output is fixed per libzstd version")
def test_zstd_messages_bytes_unchanged() -> None:
    # Prepare
    ins, res = _ins(), _res()

    # Execute
    ins_data = encode_train_ins(ins)
    res_data = encode_train_res(res, ins.masks, importance_top_fraction=0.25)

    # Assert
    assert _sha(ins_data) == INS_ZSTD_SHA256
    assert _sha(res_data) == RES_ZSTD_SHA256
