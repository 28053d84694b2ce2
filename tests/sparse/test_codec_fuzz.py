"""Fuzz every codec decoder: random bytes, truncated and mutated valid messages raise only DecodeError."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunefl.errors import DecodeError
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.sparse.codec import (
    MAGIC,
    DecodeLimits,
    decode_state,
    decode_train_ins,
    decode_train_res,
    encode_state,
    encode_train_ins,
    encode_train_res,
)

# Small limits keep every example fast and exercise the limit checks; the messages below fit them.
LIMITS = DecodeLimits(
    max_message_bytes=1 << 16,
    max_layers=32,
    max_elements_per_layer=1 << 12,
    max_total_elements=1 << 14,
    max_decompressed_bytes=1 << 16,
)


def _valid_messages() -> tuple[list[bytes], dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    """Small valid messages covering every mask code, section codec and message kind."""
    rng = np.random.default_rng(0)
    masks = {
        "rice_kept.weight": rng.random((12, 10)) < 0.05,
        "rice_pruned.weight": rng.random(90) < 0.97,
        "bitmask.weight": rng.random((4, 5)) < 0.5,
        "all_ones.weight": np.ones(6, bool),
        "all_zeros.weight": np.zeros((2, 3), bool),
    }
    state = {name: (rng.standard_normal(m.shape) * m).astype(np.float32) for name, m in masks.items()}
    state |= {
        "fc.bias": np.zeros(70, np.float32),  # compressible
        "bn.running_var": rng.standard_normal(5),  # float64
        "bn.num_batches_tracked": np.array(12, np.int64),
        "buffer.flag": np.array([True, False, True]),
        "empty.weight": np.zeros((0, 4), np.float32),
    }
    importance = {name: rng.random(np.shape(value)).astype(np.float32) for name, value in state.items()
                  if name.endswith(".weight")}
    ins = TrainIns(3, state, masks, 0.05, 5, 20, "round_sum", True)
    res = TrainRes(4, 100, state, 0.7, 0.2, importance)
    messages = [
        encode_train_ins(ins),
        encode_train_ins(ins, level=None),
        encode_train_ins(ins, include_masks=False, level=None),
        encode_train_ins(ins, values_dtype="float16"),
        encode_train_res(res, masks),
        encode_train_res(res, masks, include_masks=True, importance_dtype="float16", level=None),
        encode_train_res(TrainRes(1, 1, state, 0.0, 0.0), masks),
        # Top-k importance: Rice-kept, bitmask, Rice-pruned and all-ones positions across the entries.
        encode_train_res(res, masks, importance_top_fraction=0.1, level=None),
        encode_train_res(res, masks, importance_top_fraction=0.5, importance_dtype="float16"),
        encode_train_res(res, masks, importance_top_fraction=0.9, level=None),
        encode_state(state, masks),
        encode_state(state, masks, level=None),
        encode_state(state, masks, include_masks=False, level=None),
    ]
    shapes = {name: np.shape(value) for name, value in state.items()}
    return messages, masks, shapes


VALID, MASKS, SHAPES = _valid_messages()
DECODERS = [
    lambda d: decode_train_ins(d, MASKS, limits=LIMITS),
    lambda d: decode_train_ins(d, limits=LIMITS, expected_shapes=SHAPES),
    lambda d: decode_train_res(d, MASKS, limits=LIMITS),
    lambda d: decode_train_res(d, None, limits=LIMITS, require_finite=False),
    lambda d: decode_state(d, MASKS, limits=LIMITS, expected_shapes=SHAPES),
    lambda d: decode_state(d, limits=LIMITS, require_finite=False),
]
# Field values that sit on the boundaries of the checks: zero, one, powers of two, all ones.
EXTREME_WORDS = [0, 1, 2, 7, 8, 255, 2**16 - 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]


@st.composite
def mutations(draw: st.DrawFn, size: int) -> tuple[str, int, int]:
    op = draw(st.sampled_from(["flip", "set", "insert", "delete", "word"]))
    # Half the positions fall in the header and layer table, where the structure lives.
    pos = draw(st.integers(0, min(size, 400)) | st.integers(0, size))
    value = draw(st.sampled_from(EXTREME_WORDS)) if op == "word" else draw(st.integers(0, 255))
    return op, pos, value


@st.composite
def fuzz_inputs(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["random", "prefixed", "truncated", "mutated", "mutated", "mutated"]))
    if how == "random":
        return draw(st.binary(max_size=300))
    if how == "prefixed":  # past the magic and version checks
        return MAGIC + struct.pack("<HB", 1, draw(st.integers(0, 4))) + draw(st.binary(max_size=300))
    base = draw(st.sampled_from(VALID))
    if how == "truncated":
        return base[: draw(st.integers(0, len(base) - 1))]
    data = bytearray(base)
    for op, pos, value in draw(st.lists(mutations(len(base)), min_size=1, max_size=4)):
        pos = min(pos, len(data))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << (value % 8)
        elif op == "set" and pos < len(data):
            data[pos] = value
        elif op == "insert":
            data[pos:pos] = bytes([value])
        elif op == "delete":
            del data[pos : pos + 1 + value % 4]
        elif op == "word":
            data[pos : pos + 8] = struct.pack("<Q", value)
    return bytes(data)


def _decode_all(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except DecodeError:
            pass  # the only exception allowed; anything else fails the test


def field_spans(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every integer or float field of a raw-table message, read with the documented layout."""
    spans = [(0, 4), (4, 2), (6, 1), (7, 1), (8, 4), (12, 4), (16, 8), (24, 8)]
    kind, table_codec, n_entries, n_importance = data[6], data[7], *struct.unpack_from("<II", data, 8)
    assert table_codec == 0, "only raw tables have fields at fixed offsets"
    pos = 32
    for width in {1: (8, 8, 8, 8, 1, 1), 2: (8, 8, 8, 8, 1), 3: ()}[kind]:  # kind scalars
        spans.append((pos, width))
        pos += width
    for _ in range(n_entries):
        (name_len,) = struct.unpack_from("<H", data, pos)
        spans += [(pos, 2), (pos + 2, 1)]  # name length and the name's first byte
        pos += 2 + name_len
        ndim = data[pos + 1]
        spans += [(pos, 1), (pos + 1, 1)] + [(pos + 2 + 8 * d, 8) for d in range(ndim)]
        pos += 2 + 8 * ndim
        for width in (1, 1, 8, 1, 8, 8, 1, 1, 8):  # mask code ... values stored length
            spans.append((pos, width))
            pos += width
    for _ in range(n_importance):
        (field,) = struct.unpack_from("<I", data, pos)
        top_k = (1, 1, 8, 1, 8, 8) if field & 2**31 else ()  # position code ... positions raw length
        for width in (4, 1, 1, 1, 8, *top_k):
            spans.append((pos, width))
            pos += width
    return spans


@pytest.mark.slow  # ~3 s: about 10,000 messages, each through six decoders
def test_every_field_set_to_boundary_values_raises_only_decode_error() -> None:
    # Prepare: every field of every raw-table message, overwritten with each boundary value of its width
    raw_table = [m for m in VALID if m[7] == 0]
    assert len(raw_table) >= 5
    n_cases = 0
    for base in raw_table:
        for offset, width in field_spans(base):
            top = 2 ** (8 * width)
            for value in {v for v in EXTREME_WORDS if v < top} | {top - 1, top // 2, 3, 4}:
                data = base[:offset] + value.to_bytes(width, "little") + base[offset + width :]
                # Execute / Assert
                _decode_all(data)
                n_cases += 1
    assert n_cases > 5000


def test_fuzz_inputs_start_from_valid_messages() -> None:
    # Prepare / Execute: each base message decodes with the decoder of its kind
    kinds = [decode_train_ins(VALID[0]), decode_train_res(VALID[4], MASKS), decode_state(VALID[-3])]
    top_k = [decode_train_res(m, MASKS).importance for m in VALID[7:10]]
    # Assert
    assert len(kinds) == 3
    assert all(len(imp) == 6 for imp in top_k)
    assert all(len(m) < LIMITS.max_message_bytes for m in VALID)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz_inputs())
def test_decoders_raise_only_decode_error_quick(data: bytes) -> None:
    _decode_all(data)


@pytest.mark.slow  # ~20 s
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz_inputs())
def test_decoders_raise_only_decode_error(data: bytes) -> None:
    _decode_all(data)
