"""Fuzz every codec decoder: random, truncated, mutated and structure-aware hostile messages raise only DecodeError.

Each slow target runs >= 10,000 cases on small messages. Every decode is checked against a memory bound with
tracemalloc (`PEAK_BOUND_BYTES`: numpy and Python allocations; libzstd's own are not traced, and the decoder
bounds its window by the section's size), and no case may reach the decoder's catch-all (`UNCHECKED`): an
explicit check must reject it. One test decodes kilobyte bombs in a child process under an address-space cap.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunefl.errors import DecodeError
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.sparse.codec import (
    FORMAT_VERSION,
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
        return MAGIC + struct.pack("<HB", FORMAT_VERSION, draw(st.integers(0, 4))) + draw(st.binary(max_size=300))
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


UNCHECKED = "no explicit check caught it"
# 1 MiB: 8x the largest decode LIMITS allow (max_total_elements = 2**14 elements of at most 8 bytes = 128 KiB).
PEAK_BOUND_BYTES = 1 << 20


def _decode_all(data: bytes) -> None:
    for decode in DECODERS:
        _decode_bounded(decode, data)


TRACE_EVERY = 8  # tracemalloc slows a decode ~10x: every 8th decode is traced (and the bomb tests always)
_calls = [0]


def _decode_bounded(decode, data: bytes) -> bool:
    """Decode, traced every `TRACE_EVERY` calls; True if accepted. Only an explicit DecodeError may escape,
    and a traced decode must stay within `PEAK_BOUND_BYTES`."""
    _calls[0] += 1
    traced = _calls[0] % TRACE_EVERY == 0
    if traced:
        tracemalloc.start()
    try:
        decode(data)
        accepted = True
    except DecodeError as exc:
        assert UNCHECKED not in str(exc), str(exc)
        accepted = False
    finally:
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    if traced:
        assert peak <= PEAK_BOUND_BYTES, f"decode allocated {peak} bytes"
    return accepted


@dataclass
class Layout:
    """Where the fields and sections of a raw-table message sit, read with the documented layout (format 2)."""

    spans: list[tuple[int, int]]  # (offset, width) of every integer or float field
    table: tuple[int, int]  # (offset, stored length) of the layer table
    sections: list[tuple[int, int, int]]  # (offset of its CRC field, offset, stored length) per section, in order


def layout(data: bytes) -> Layout:
    """Parse a raw-table message's structure without checking anything (its fields may lie)."""
    spans = [(0, 4), (4, 2), (6, 1), (7, 1), (8, 4), (12, 4), (16, 8), (24, 8), (32, 4)]
    kind, table_codec, n_entries, n_importance = data[6], data[7], *struct.unpack_from("<II", data, 8)
    assert table_codec == 0, "only raw tables have fields at fixed offsets"
    pos = 36
    for width in {1: (8, 8, 8, 8, 1, 1), 2: (8, 8, 8, 8, 1), 3: ()}[kind]:  # kind scalars
        spans.append((pos, width))
        pos += width
    spans.append((pos, 4))  # header checksum
    pos += 4
    table_start = pos
    stored: list[tuple[int, int]] = []  # (CRC field offset, stored length) per section
    for _ in range(n_entries):
        (name_len,) = struct.unpack_from("<H", data, pos)
        spans += [(pos, 2), (pos + 2, 1)]  # name length and the name's first byte
        pos += 2 + name_len
        ndim = data[pos + 1]
        spans += [(pos, 1), (pos + 1, 1)] + [(pos + 2 + 8 * d, 8) for d in range(ndim)]
        pos += 2 + 8 * ndim
        fields = []
        for width in (1, 1, 8, 1, 8, 8, 4, 1, 1, 8, 4):  # mask code ... values stored length, values CRC
            spans.append((pos, width))
            fields.append(pos)
            pos += width
        stored += [(fields[6], struct.unpack_from("<Q", data, fields[4])[0]),
                   (fields[10], struct.unpack_from("<Q", data, fields[9])[0])]
    for _ in range(n_importance):
        (field,) = struct.unpack_from("<I", data, pos)
        top_k = (1, 1, 8, 1, 8, 8, 4) if field & 2**31 else ()  # position code ... positions raw length, CRC
        fields = []
        for width in (4, 1, 1, 1, 8, 4, *top_k):
            spans.append((pos, width))
            fields.append(pos)
            pos += width
        values = (fields[5], struct.unpack_from("<Q", data, fields[4])[0])
        if top_k:
            stored.append((fields[12], struct.unpack_from("<Q", data, fields[10])[0]))
        stored.append(values)
    sections, offset = [], pos
    for crc_at, length in stored:
        sections.append((crc_at, offset, length))
        offset += length
    return Layout(spans, (table_start, pos - table_start), sections)


def reseal(data: bytes | bytearray) -> bytes:
    """Recompute every checksum of a raw-table message, so that its (mutated) fields reach the structure checks.

    Sections are laid out by their (possibly lying) stored lengths and clipped to the message. A message whose
    table cannot be walked any more is returned unchanged (its checksums then reject it).
    """
    out = bytearray(data)
    try:
        lay = layout(bytes(out))
    except (struct.error, IndexError, KeyError, AssertionError):
        return bytes(out)
    for crc_at, offset, length in lay.sections:
        if crc_at + 4 <= lay.table[0] + lay.table[1] <= len(out):
            out[crc_at : crc_at + 4] = struct.pack("<I", zlib.crc32(out[offset : offset + length]))
    table_at, _ = lay.table
    (table_stored,) = struct.unpack_from("<Q", out, 16)
    out[32:36] = struct.pack("<I", zlib.crc32(out[table_at : table_at + table_stored]))
    out[table_at - 4 : table_at] = struct.pack("<I", zlib.crc32(out[: table_at - 4]))
    return bytes(out)


RAW_TABLE = [m for m in VALID if m[7] == 0]
# The decoder of each valid message's kind, with the masks it was encoded against and strict shapes.
KIND_DECODERS = {
    1: lambda d: decode_train_ins(d, MASKS, limits=LIMITS, expected_shapes=SHAPES),
    2: lambda d: decode_train_res(d, MASKS, limits=LIMITS, expected_shapes=SHAPES),
    3: lambda d: decode_state(d, MASKS, limits=LIMITS, expected_shapes=SHAPES),
}


@pytest.mark.slow  # lying tables, resealed, each through six decoders
def test_every_field_set_to_boundary_values_raises_only_decode_error() -> None:
    # Prepare: every field of every raw-table message, overwritten with each boundary value of its width, with
    # every checksum recomputed: the lie reaches the structure and size checks instead of the checksums
    assert len(RAW_TABLE) >= 5
    n_cases = 0
    for base in RAW_TABLE:
        for offset, width in layout(base).spans:
            top = 2 ** (8 * width)
            for value in {v for v in EXTREME_WORDS if v < top} | {top - 1, top // 2, 3, 4}:
                data = reseal(base[:offset] + value.to_bytes(width, "little") + base[offset + width :])
                # Execute / Assert
                _decode_all(data)
                n_cases += 1
    assert n_cases >= 10_000 // len(DECODERS)  # decodes: n_cases x 6 decoders


def test_reseal_keeps_valid_messages_valid() -> None:
    # Prepare / Execute / Assert: resealing an intact message changes nothing
    for base in RAW_TABLE:
        assert reseal(base) == base


@pytest.mark.slow  # 13,000+ flips of the raw-table messages
def test_every_single_bit_flip_is_rejected() -> None:
    # Prepare: CRC32 catches every single-bit error in what it covers; magic, version and kind are checked alone
    n_cases = 0
    for base in RAW_TABLE:
        decode = KIND_DECODERS[base[6]]
        assert _decode_bounded(decode, base)
        for bit in range(base[6], 8 * len(base), 8):  # every 8th bit: each bit position of a byte, in turn
            data = bytearray(base)
            data[bit // 8] ^= 1 << (bit % 8)
            # Execute / Assert
            assert not _decode_bounded(decode, bytes(data)), f"flip of bit {bit} accepted"
            n_cases += 1
        for bit in range(8 * min(len(base), 200)):  # all bits of the header and the start of the table
            data = bytearray(base)
            data[bit // 8] ^= 1 << (bit % 8)
            assert not _decode_bounded(decode, bytes(data)), f"flip of bit {bit} accepted"
            n_cases += 1
    assert n_cases >= 10_000


def test_single_bit_flips_of_compressed_messages_are_rejected() -> None:
    # Prepare: every 7th bit of each zstd-table message (the exhaustive run above covers raw tables)
    compressed = [m for m in VALID if m[7] != 0]
    assert compressed
    for base in compressed:
        decode = KIND_DECODERS[base[6]]
        for bit in range(0, 8 * len(base), 7):
            data = bytearray(base)
            data[bit // 8] ^= 1 << (bit % 8)
            # Execute / Assert
            assert not _decode_bounded(decode, bytes(data)), f"flip of bit {bit} accepted"


def rle_bomb(declared: int, n_blocks: int, block_bytes: int = 1024) -> bytes:
    """A zstd frame declaring ``declared`` bytes with a 1 KiB window, whose RLE blocks expand to far more."""
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0x80, 0]) + struct.pack("<I", declared)
    for i in range(n_blocks):
        frame += (int(i == n_blocks - 1) | 1 << 1 | block_bytes << 3).to_bytes(3, "little") + b"\x00"
    return frame


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    """Structure-aware attacks on a raw-table message, checksums resealed so that the structure checks see them.

    * lying table fields: a count, size, shape, Rice k or code set to a drawn or boundary value;
    * an expanding section: a section replaced by a zstd frame declaring its size and expanding past it;
    * reordered sections: two sections' bytes swapped (their table entries unchanged);
    * several of these at once.
    """
    base = draw(st.sampled_from(RAW_TABLE))
    lay = layout(base)
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["field", "field", "expand", "swap"]))
        if how == "field":
            offset, width = draw(st.sampled_from(lay.spans))
            top = 2 ** (8 * width)
            value = draw(st.sampled_from([v for v in EXTREME_WORDS if v < top]) | st.integers(0, top - 1))
            data[offset : offset + width] = value.to_bytes(width, "little")
        elif how == "expand":
            crc_at, offset, length = draw(st.sampled_from(lay.sections))
            bomb = rle_bomb(max(length, 1), draw(st.integers(2, 64)))
            data[offset : offset + length] = bomb
            # The section's codec and stored length precede its CRC: values (codec, stored: 1 + 8 bytes
            # before), mask (codec, stored, raw: 1 + 8 + 8 bytes before).
            codec_at = crc_at - draw(st.sampled_from([9, 17]))
            if codec_at > lay.table[0]:
                data[codec_at] = 1  # zstd
                data[codec_at + 1 : codec_at + 9] = struct.pack("<Q", len(bomb))
        elif len(lay.sections) >= 2:  # reorder: swap two sections
            (_, a, la), (_, b, lb) = sorted(draw(st.permutations(lay.sections))[:2], key=lambda t: t[1])
            data[a : b + lb] = data[b : b + lb] + data[a + la : b] + data[a : a + la]
    return reseal(data)


def test_hostile_messages_reach_past_the_checksums() -> None:
    # Prepare: a lying count, resealed, fails a structure check, not a checksum
    base = RAW_TABLE[0]
    offset, width = layout(base).spans[4]  # n_entries
    data = reseal(base[:offset] + (3).to_bytes(width, "little") + base[offset + width :])
    # Execute / Assert
    with pytest.raises(DecodeError) as info:
        KIND_DECODERS[base[6]](data)
    assert "checksum" not in str(info.value)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_messages())
def test_hostile_messages_raise_only_decode_error(data: bytes) -> None:
    _decode_all(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_messages())
def test_hostile_messages_raise_only_decode_error_quick(data: bytes) -> None:
    _decode_all(data)


# A reply may carry masks; the server decodes it against the masks it sent.
REPLY_MASKS = {name: m for name, m in MASKS.items() if 0 < m.sum() < m.size}


@st.composite
def moved_masks(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """The sent masks with one layer's kept positions moved: the same count, at least one position differs."""
    name = draw(st.sampled_from(sorted(REPLY_MASKS)))
    mask = REPLY_MASKS[name].reshape(-1)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    moved = np.zeros_like(mask)
    moved[rng.choice(mask.size, int(mask.sum()), replace=False)] = True
    if np.array_equal(moved, mask):  # the draw put them back: move one kept position to a pruned one
        moved[np.flatnonzero(mask)[0]], moved[np.flatnonzero(~mask)[0]] = False, True
    return REPLY_MASKS | {name: moved.reshape(REPLY_MASKS[name].shape)}


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moved_masks(), st.sampled_from([None, 3]))
def test_masks_with_the_right_count_at_wrong_positions_are_rejected(masks: dict, level: int | None) -> None:
    # Prepare: a well-formed reply whose masks keep as many weights as the sent ones, elsewhere
    state = {name: np.where(m, 1.0, 0.0).astype(np.float32) for name, m in masks.items()}
    data = encode_train_res(TrainRes(1, 10, state, 0.0, 0.0, masks=masks), REPLY_MASKS, level=level)
    shapes = {name: m.shape for name, m in masks.items()}
    # Execute / Assert: rejected by the default (strict) decode, accepted where clients may change masks
    assert not _decode_bounded(lambda d: decode_train_res(d, REPLY_MASKS, limits=LIMITS, expected_shapes=shapes),
                               data)
    assert _decode_bounded(
        lambda d: decode_train_res(d, REPLY_MASKS, limits=LIMITS, expected_shapes=shapes, own_masks=True), data
    )


def test_kilobyte_bombs_stay_under_an_address_space_cap_with_default_limits() -> None:
    # Prepare: a child process caps its address space at what it uses after its imports + 128 MiB and decodes,
    # with the default DecodeLimits, a 4 kB message declaring one 64 Mi-element float32 layer (256 MiB) whose
    # zstd frame declares 256 MiB and holds 1000 RLE blocks of 1 KiB: once with the shapes the server sent
    # (a (4,) layer), once without them
    script = textwrap.dedent(
        r"""
        import resource, struct, zlib
        from prunefl.errors import DecodeError
        from prunefl.sparse.codec import decode_state
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + (128 << 20), vm + (128 << 20)))
        n = 64 * 1024 * 1024
        frame = struct.pack("<I", 0xFD2FB528) + bytes([0x80, 0]) + struct.pack("<I", 4 * n)
        for i in range(1000):
            frame += (int(i == 999) | 1 << 1 | 1024 << 3).to_bytes(3, "little") + b"\x00"
        entry = b"\x01\x00w" + bytes([8, 1]) + struct.pack("<Q", n) + struct.pack(
            "<BBQBQQIBBQI", 0, 0, n, 0, 0, 0, 0, 8, 1, len(frame), zlib.crc32(frame))
        fixed = struct.pack("<4sHBBIIQQI", b"PFL1", 2, 3, 0, 1, 0, len(entry), len(entry), zlib.crc32(entry))
        data = fixed + struct.pack("<I", zlib.crc32(fixed)) + entry + frame
        for shapes in ({"w": (4,)}, None):
            try:
                decode_state(data, expected_shapes=shapes)
                print("accepted")
            except DecodeError as exc:
                print("rejected:", str(exc)[:90])
        print("bytes", len(data))
        """
    )
    # Execute
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    # Assert: both rejected by explicit checks, within the cap: by the shapes sent, then by the frame's content
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("rejected: entries differ from expected_shapes"), lines
    assert lines[1].startswith("rejected:") and UNCHECKED not in lines[1], lines
    assert lines[2] == "bytes 4108", lines  # 40 header + 58 table + 10 frame header + 4000 block bytes


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
