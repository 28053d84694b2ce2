"""Structure-aware fuzzing of the wire codec: real messages of real models, mutated in their structure.

The messages are instructions and replies of three models' states (the digits MLP, the digits CNN and a small
conv + BatchNorm net with an int64 counter), with and without masks and importance (dense and top-k), raw and
zstd. Each is parsed into its documented structure (format 2: header fields, layer table entries, sections) by
the independent parser below, mutated *there*, and serialised again with every checksum recomputed, so that
the mutation reaches the decoder's structure and size checks instead of stopping at a CRC:

* lying table fields: entry and importance counts, dtype codes, ndim and dims, mask codes, Rice k, kept counts,
  section codecs, stored and raw lengths, top-k flags and counts, the table's own lengths, kind and version;
  and odd scalars (negative counts, NaN or infinite floats, flags above 1);
* expanding sections: a real zstd frame of a large zero buffer put where a small section was, declaring its
  true size, or (header rewritten) declaring the small size it replaces with a 1 KiB window;
* reordered, duplicated and missing sections and entries;
* masks with the right popcount at the wrong positions (the server's strict decode must reject them);
* truncation at every section and table-entry boundary.

Decoders are the ones a deployment uses: the server's `ServerLink.decode_res` (strict, and accepting clients'
own masks) and the client's `decode_train_ins` with the model's shapes and dtypes.

Assertions, for every case:

* only `DecodeError` escapes, and never from the decoder's catch-all (`UNCHECKED`): an explicit check rejects;
* a reply the server accepts has the shapes and dtypes it sent, and (strict link) the masks it sent;
* **memory cap**: the decode's peak traced allocation is at most ``4 · D + 1 MiB``, where ``D`` is the dense
  size in bytes of the model the receiver expects (Σ numel · itemsize over its state). tracemalloc sees every
  numpy array and Python object the decoder makes (numpy reports its data buffers to it); it does not see
  libzstd's own context (window at most max(section raw size, 1 KiB), checked before decompression, plus
  block buffers) or torch allocations: the decoder makes no torch tensors, and a tensor built later with
  ``torch.from_numpy`` shares the numpy buffer (checked below). `test_structured_sample_under_rlimit_as` runs
  1,000 mutations in a child process under an address-space cap (size after setup + 4 D + 32 MiB, with
  sections expanding to 512 MiB) to cover what tracemalloc does not see.

Each slow target runs >= 10,000 hypothesis cases (derandomized); the quick variants run 300.
"""

from __future__ import annotations

import copy
import random
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunefl.errors import DecodeError
from prunefl.fl.links import ServerLink
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.models.registry import build_model
from prunefl.sparse.codec import decode_train_ins, encode_train_ins, encode_train_res

UNCHECKED = "no explicit check caught it"
SLACK_BYTES = 1 << 20
N_CASES = 10_000
N_QUICK = 300
FUZZ = settings(max_examples=N_CASES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
QUICK = settings(max_examples=N_QUICK, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))

# ---------------------------------------------------------------------------------------------------------------
# The documented layout (package docstring of prunefl.sparse.codec), independently of the codec's own structs.
# ---------------------------------------------------------------------------------------------------------------
FIXED = struct.Struct("<4sHBBIIQQI")
SCALAR_BYTES = {1: 34, 2: 33, 3: 0}
ENTRY_TAIL = ("mask_code", "rice_k", "n_kept", "mask_codec", "mask_stored", "mask_raw", "mask_crc", "wire",
              "values_codec", "values_stored", "values_crc")
ENTRY_TAIL_FMT = struct.Struct("<BBQBQQIBBQI")
IMP_HEAD = ("field", "dtype", "wire", "values_codec", "values_stored", "values_crc")
IMP_HEAD_FMT = struct.Struct("<IBBBQI")
IMP_TOPK = ("position_code", "rice_k", "n_top", "positions_codec", "positions_stored", "positions_raw",
            "positions_crc")
IMP_TOPK_FMT = struct.Struct("<BBQBQQI")
TOP_K_FLAG = 1 << 31
ITEMSIZE = {1: 1, 2: 1, 3: 1, 4: 2, 5: 4, 6: 8, 7: 2, 8: 4, 9: 8}


@dataclass
class Entry:
    """A state entry: its table fields (any may lie) and its two sections' stored bytes."""

    name: bytes
    dtype: int
    ndim: int
    shape: list[int]
    tail: dict[str, int]
    mask: bytes
    values: bytes


@dataclass
class Importance:
    """An importance entry: table fields (``topk`` empty for a dense one) and its sections' stored bytes."""

    head: dict[str, int]
    topk: dict[str, int]
    positions: bytes
    values: bytes


@dataclass
class Message:
    """A parsed message; `serialise` writes it back with every checksum recomputed over what a decoder reads."""

    head: dict[str, int]  # version, kind, table_codec (and lies: n_entries, n_importance, table_stored, table_raw)
    scalars: bytes
    entries: list[Entry]
    importance: list[Importance]
    lies: dict[str, int] = field(default_factory=dict)  # header fields written as given instead of computed
    section_order: list[int] | None = None  # body section order (indices into `sections()`); None: table order
    extra_body: bytes = b""
    cut: int | None = None  # truncate the serialised message to this length

    def sections(self) -> list[tuple[object, str, str]]:
        """(owner, bytes attribute, stored-length field) of every section, in the documented body order."""
        out: list[tuple[object, str, str]] = []
        for e in self.entries:
            out += [(e, "mask", "mask_stored"), (e, "values", "values_stored")]
        for imp in self.importance:
            if imp.topk:
                out.append((imp, "positions", "positions_stored"))
            out.append((imp, "values", "values_stored"))
        return out


def _fields(owner: object, length_field: str) -> dict[str, int]:
    if isinstance(owner, Entry):
        return owner.tail
    assert isinstance(owner, Importance)
    return owner.topk if length_field.startswith("positions") else owner.head


def parse(data: bytes) -> Message:
    """Parse a valid message into its structure (sections keep their stored, possibly compressed, bytes)."""
    magic, version, kind, table_codec, n_entries, n_importance, table_stored, _, _ = FIXED.unpack_from(data)
    assert magic == b"PFL1"
    pos = FIXED.size
    scalars = data[pos : pos + SCALAR_BYTES[kind]]
    pos += SCALAR_BYTES[kind] + 4
    table = data[pos : pos + table_stored]
    body_at = pos + table_stored
    if table_codec == 1:
        table = zstandard.ZstdDecompressor().decompress(table)
    t = 0
    entries: list[Entry] = []
    for _ in range(n_entries):
        (name_len,) = struct.unpack_from("<H", table, t)
        name = table[t + 2 : t + 2 + name_len]
        t += 2 + name_len
        dtype, ndim = table[t], table[t + 1]
        shape = list(struct.unpack_from(f"<{ndim}Q", table, t + 2))
        t += 2 + 8 * ndim
        tail = dict(zip(ENTRY_TAIL, ENTRY_TAIL_FMT.unpack_from(table, t)))
        t += ENTRY_TAIL_FMT.size
        entries.append(Entry(name, dtype, ndim, shape, tail, b"", b""))
    importance: list[Importance] = []
    for _ in range(n_importance):
        head = dict(zip(IMP_HEAD, IMP_HEAD_FMT.unpack_from(table, t)))
        t += IMP_HEAD_FMT.size
        topk: dict[str, int] = {}
        if head["field"] & TOP_K_FLAG:
            topk = dict(zip(IMP_TOPK, IMP_TOPK_FMT.unpack_from(table, t)))
            t += IMP_TOPK_FMT.size
        importance.append(Importance(head, topk, b"", b""))
    assert t == len(table)
    msg = Message({"version": version, "kind": kind, "table_codec": table_codec}, scalars, entries, importance)
    pos = body_at
    for owner, attr, length_field in msg.sections():
        n = _fields(owner, length_field)[length_field]
        setattr(owner, attr, data[pos : pos + n])
        pos += n
    assert pos == len(data)
    return msg


def serialise(msg: Message) -> bytes:
    """Write the message; each checksum is the CRC32 of the bytes a decoder will take for what it covers.

    Section CRCs are computed over the body as laid out by the (possibly lying) stored lengths in the table,
    clipped to the body, so a lying length or a moved section is seen by the structure checks, not the CRC.
    """
    sections = msg.sections()
    order = list(range(len(sections)))
    if msg.section_order is not None:  # later mutations may have added or dropped sections
        order = [i for i in msg.section_order if i < len(sections)]
        order += [i for i in range(len(sections)) if i not in order]
    body = b"".join(getattr(sections[i][0], sections[i][1]) for i in order) + msg.extra_body
    offset = 0
    for owner, _, length_field in sections:
        fields = _fields(owner, length_field)
        n = fields[length_field]
        crc_field = length_field.replace("_stored", "_crc")
        fields[crc_field] = zlib.crc32(body[offset : offset + n]) if offset < len(body) else 0
        offset += n
    table = b""
    for e in msg.entries:
        table += struct.pack("<H", len(e.name)) + e.name + bytes([e.dtype, e.ndim])
        table += struct.pack(f"<{len(e.shape)}Q", *e.shape)
        table += ENTRY_TAIL_FMT.pack(*(e.tail[k] for k in ENTRY_TAIL))
    for imp in msg.importance:
        table += IMP_HEAD_FMT.pack(*(imp.head[k] for k in IMP_HEAD))
        if imp.topk:
            table += IMP_TOPK_FMT.pack(*(imp.topk[k] for k in IMP_TOPK))
    stored = zstandard.ZstdCompressor(write_content_size=True).compress(table) if msg.head["table_codec"] else table
    lies = msg.lies
    fixed = FIXED.pack(
        b"PFL1",
        lies.get("version", msg.head["version"]),
        lies.get("kind", msg.head["kind"]),
        msg.head["table_codec"],
        lies.get("n_entries", len(msg.entries)),
        lies.get("n_importance", len(msg.importance)),
        lies.get("table_stored", len(stored)),
        lies.get("table_raw", len(table)),
        zlib.crc32(stored),
    )
    out = fixed + msg.scalars + struct.pack("<I", zlib.crc32(fixed + msg.scalars)) + stored + body
    return out if msg.cut is None else out[: msg.cut]


# ---------------------------------------------------------------------------------------------------------------
# Real messages of real models
# ---------------------------------------------------------------------------------------------------------------
def _bn_net_state() -> dict[str, np.ndarray]:
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Linear(8, 10))
    return {k: v.detach().numpy().copy() for k, v in conv.state_dict().items()}


def _model_state(name: str) -> dict[str, np.ndarray]:
    if name == "bn-net":
        return _bn_net_state()
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, input_shape=(1, 8, 8))
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@dataclass
class Case:
    """One model: what the server sent, links that sent it, and valid messages both ways."""

    model: str
    state: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    dense_bytes: int
    strict: ServerLink
    own: ServerLink
    replies: list[bytes]  # valid for the strict link (and so the own-masks link)
    own_replies: list[bytes]  # valid for the own-masks link only: the client moved its masks (FedDST)
    instructions: list[bytes]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.state.items()}

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        return {k: v.dtype for k, v in self.state.items()}

    @property
    def bound(self) -> int:
        return 4 * self.dense_bytes + SLACK_BYTES


DENSITIES = (0.04, 0.5, 0.97, 1.0)  # Rice-kept, bitmask, Rice-pruned, all ones


def _case(model: str, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    state = _model_state(model)
    weights = [k for k, v in state.items() if k.endswith("weight") and v.ndim >= 2]
    masks = {k: rng.random(state[k].shape) < DENSITIES[i % len(DENSITIES)] for i, k in enumerate(weights)}
    sent = {k: (v * masks[k] if k in masks else v).astype(v.dtype) for k, v in state.items()}
    ins = TrainIns(2, sent, masks, 0.05, 3, 16, "round_sum", True)
    strict, own = ServerLink(own_masks=False), ServerLink(own_masks=True)
    for link in (strict, own):
        link.encode_ins(ins, [0], mask_version=1)
    trained = {k: (v + rng.standard_normal(v.shape).astype(v.dtype) * masks.get(k, 1)).astype(v.dtype)
               if v.dtype.kind == "f" else v + 1 for k, v in sent.items()}
    importance = {k: rng.random(state[k].shape).astype(np.float32) for k in masks}
    plain = TrainRes(0, 64, trained, 0.5, 0.01)
    with_imp = TrainRes(0, 64, trained, 0.5, 0.01, importance)
    replies = [
        encode_train_res(plain, masks, level=None),
        encode_train_res(plain, masks, level=3),
        encode_train_res(plain, masks, include_masks=True, level=None),
        encode_train_res(with_imp, masks, level=None),
        encode_train_res(with_imp, masks, level=3, values_dtype="float16", importance_dtype="float16"),
        encode_train_res(with_imp, masks, level=None, importance_top_fraction=0.1),
        encode_train_res(with_imp, masks, level=3, importance_top_fraction=0.6),
    ]
    moved = {k: _moved(m, rng) for k, m in masks.items()}
    own_state = {k: (v * moved[k]).astype(v.dtype) if k in moved else v for k, v in trained.items()}
    own_res = TrainRes(0, 64, own_state, 0.5, 0.01, importance, masks=moved)
    own_replies = [encode_train_res(own_res, masks, level=None), encode_train_res(own_res, masks, level=3)]
    instructions = [
        encode_train_ins(ins, level=None),
        encode_train_ins(ins, level=3),
        encode_train_ins(ins, include_masks=False, level=None),
        encode_train_ins(ins, values_dtype="float16", level=3),
    ]
    dense = sum(int(v.nbytes) for v in state.values())
    return Case(model, sent, masks, dense, strict, own, replies, own_replies, instructions)


def _moved(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same number of kept positions, at least one elsewhere (unless all or none are kept)."""
    flat = mask.reshape(-1)
    n = int(flat.sum())
    if n in (0, flat.size):
        return mask.copy()
    out = np.zeros_like(flat)
    out[rng.choice(flat.size, n, replace=False)] = True
    if np.array_equal(out, flat):
        out[np.flatnonzero(flat)[0]], out[np.flatnonzero(~flat)[0]] = False, True
    return out.reshape(mask.shape)


CASES = [_case("mlp", 0), _case("digits-cnn", 1), _case("bn-net", 2)]
# (case, valid message) pools the mutations start from: replies (both links decode them) and instructions
POOLS = {
    "replies": [(c, m) for c in CASES for m in c.replies + c.own_replies],
    "instructions": [(c, m) for c in CASES for m in c.instructions],
}


# ---------------------------------------------------------------------------------------------------------------
# Decoding under the memory cap
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Tally:
    decodes: int = 0
    accepted: int = 0
    peak: int = 0  # largest peak seen, bytes
    peak_ratio: float = 0.0  # largest peak / bound


def _traced(decode, data: bytes, bound: int, tally: Tally):
    """Run ``decode(data)`` with tracemalloc on; return the result or None if it raised DecodeError."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = None
    try:
        result = decode(data)
    except DecodeError as exc:
        assert UNCHECKED not in str(exc), str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1] - before
        if not tracing:
            tracemalloc.stop()
    tally.decodes += 1
    tally.accepted += result is not None
    tally.peak = max(tally.peak, peak)
    tally.peak_ratio = max(tally.peak_ratio, peak / bound)
    assert peak <= bound, f"decode allocated {peak} bytes, above the bound {bound}"
    return result


def _check_reply(case: Case, res: TrainRes, strict: bool) -> None:
    assert {k: v.shape for k, v in res.state.items()} == case.shapes
    assert {k: v.dtype for k, v in res.state.items()} == case.dtypes
    if res.masks is not None:
        assert set(res.masks) == set(case.masks)
        assert all(res.masks[k].shape == case.masks[k].shape for k in case.masks)
        if strict:
            assert all(np.array_equal(res.masks[k], case.masks[k]) for k in case.masks)
    if res.importance is not None:
        assert all(res.importance[k].shape == case.shapes[k] for k in res.importance)


def decode_reply_both(case: Case, data: bytes, tally: Tally) -> tuple[bool, bool]:
    """Decode a reply with the strict and the own-masks server link; whether each accepted it."""
    out = []
    for link, strict in ((case.strict, True), (case.own, False)):
        res = _traced(lambda d: link.decode_res(0, d), data, case.bound, tally)
        if res is not None:
            _check_reply(case, res, strict)
        out.append(res is not None)
    return out[0], out[1]


def decode_instruction(case: Case, data: bytes, tally: Tally) -> bool:
    ins = _traced(
        lambda d: decode_train_ins(d, case.masks, expected_shapes=case.shapes, expected_dtypes=case.dtypes),
        data, case.bound, tally,
    )
    if ins is not None:
        assert {k: v.shape for k, v in ins.state.items()} == case.shapes
    return ins is not None


# ---------------------------------------------------------------------------------------------------------------
# Mutations of the structure
# ---------------------------------------------------------------------------------------------------------------
BOUNDARY = [0, 1, 2, 3, 4, 7, 8, 9, 31, 32, 33, 255, 256, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
            2**62, 2**63, 2**64 - 1]
WIDTH = {name: w for name, w in zip(ENTRY_TAIL, (1, 1, 8, 1, 8, 8, 4, 1, 1, 8, 4))}
WIDTH |= {name: w for name, w in zip(IMP_HEAD, (4, 1, 1, 1, 8, 4))}
WIDTH |= {name: w for name, w in zip(IMP_TOPK, (1, 1, 8, 1, 8, 8, 4))}
WIDTH |= {"n_entries": 4, "n_importance": 4, "table_stored": 8, "table_raw": 8, "version": 2, "kind": 1}
_ZEROS = 8 << 20  # the zero buffer an expanding section holds: 8 MiB, far above every bound here


def _zstd_frames() -> tuple[bytes, dict[int, bytes]]:
    """Real zstd frames of 8 MiB of zeros: one declaring its size, and per window log 10-17 one declaring none.

    With a window of 2**w bytes the compressor writes RLE blocks of 2**w zeros (4 bytes each), so a frame whose
    window fits a section of 2**w bytes is far smaller than that section and expands 8 MiB.
    """
    zeros = bytes(_ZEROS)
    honest = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(zeros)
    windowed = {}
    for w in range(10, 18):
        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=w, write_content_size=False)
        windowed[w] = zstandard.ZstdCompressor(compression_params=params).compress(zeros)
    return honest, windowed


HONEST_BOMB, WINDOWED_BOMBS = _zstd_frames()


def bomb_declaring(size: int) -> bytes:
    """A real frame of 8 MiB of zeros, its header rewritten to declare ``size`` bytes, with the largest window
    the decoder allows a section of that size (max(size, 1 KiB), at most 128 KiB)."""
    w = min(17, max(10, max(size, 1).bit_length() - 1))
    return declaring(WINDOWED_BOMBS[w], size)


def declaring(frame: bytes, size: int) -> bytes:
    """``frame`` (no content size, not single-segment) with its header rewritten to declare ``size`` bytes."""
    descriptor = frame[4]
    assert descriptor & 0xE0 == 0 and descriptor & 0x03 == 0  # FCS_flag 0, not single-segment, no dictionary
    return frame[:4] + bytes([descriptor | 0xC0]) + frame[5:6] + struct.pack("<Q", size) + frame[6:]


def _near(r: random.Random, value: int, width: int) -> int:
    top = 2 ** (8 * width)
    choice = r.choice(["boundary", "near", "scaled", "any"])
    if choice == "boundary":
        return r.choice([v for v in BOUNDARY if v < top] + [top - 1])
    if choice == "near":
        return (value + r.randint(-3, 3)) % top
    if choice == "scaled":
        return (value * r.choice([2, 8, 1024, 2**20])) % top
    return r.randint(0, top - 1)


@st.composite
def mutated(draw: st.DrawFn, pool: str) -> tuple[Case, bytes, list[str]]:
    """A real message of ``pool`` ("replies" or "instructions") with 1-3 structural mutations, resealed.

    Hypothesis draws the message, the mutations and a seed; each mutation draws its details (which entry,
    field, value) from a `random.Random` of that seed: far fewer hypothesis draws, so 10,000 cases fit the
    time budget, and a failing case is still reproduced exactly.
    """
    case, base = draw(st.sampled_from(POOLS[pool]))
    msg = parse(base)
    ops = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=3))
    r = random.Random(draw(st.integers(0, 2**32 - 1)))
    for op in ops:
        op(r, msg)
    return case, serialise(msg), [op.__name__ for op in ops]


def lie_header(r: random.Random, msg: Message) -> None:
    """A header count, table length, kind or version that lies."""
    name = r.choice(["n_entries", "n_importance", "table_stored", "table_raw", "version", "kind"])
    current = {"n_entries": len(msg.entries), "n_importance": len(msg.importance)}.get(name, 8)
    msg.lies[name] = _near(r, current, WIDTH[name])


SCALAR_FIELDS = {1: ((0, "q"), (8, "d"), (16, "q"), (24, "q"), (32, "B"), (33, "B")),  # round lr steps batch mode up
                 2: ((0, "q"), (8, "q"), (16, "d"), (24, "d"), (32, "B"))}  # client examples loss wall has_imp
ODD_FLOATS = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e308, -0.0, 5e-324]


def lie_scalar(r: random.Random, msg: Message) -> None:
    """A kind scalar (round, lr, sample count, loss, flags...) set to a boundary or odd value."""
    fields = SCALAR_FIELDS.get(msg.head["kind"], ())
    if not fields:
        return
    offset, fmt = r.choice(fields)
    if fmt == "d":
        value: object = r.choice(ODD_FLOATS)
    elif fmt == "q":
        value = r.choice([-1, -(2**63), 2**63 - 1, 0, 1, 2**31])
    else:
        value = r.choice([0, 1, 2, 3, 255])
    scalars = bytearray(msg.scalars)
    struct.pack_into("<" + fmt, scalars, offset, value)
    msg.scalars = bytes(scalars)


def lie_entry(r: random.Random, msg: Message) -> None:
    """A state entry's dtype, ndim, dims, mask code, Rice k, kept count, codec or section length lies."""
    e = r.choice(msg.entries)
    name = r.choice(["dtype", "ndim", "dim", "name", *ENTRY_TAIL])
    if name == "dtype":
        e.dtype = r.choice([r.randint(0, 10), r.randint(0, 255)])
    elif name == "ndim":
        e.ndim = _near(r, e.ndim, 1)  # the dims that follow keep their count: the table shifts
    elif name == "dim":
        if e.shape:
            i = r.randint(0, len(e.shape) - 1)
            e.shape[i] = _near(r, e.shape[i], 8)
    elif name == "name":
        e.name = r.choice([b"", e.name + b"x", e.name[:-1], b"\xff\xfe", e.name.upper()])
    elif not name.endswith("_crc"):
        e.tail[name] = _near(r, e.tail[name], WIDTH[name])


def lie_importance(r: random.Random, msg: Message) -> None:
    """An importance entry's index, top-k flag, dtypes, codec, lengths or top-k fields lie."""
    if not msg.importance:
        return lie_entry(r, msg)
    imp = r.choice(msg.importance)
    names = [k for k in IMP_HEAD if not k.endswith("_crc")] + [k for k in imp.topk if not k.endswith("_crc")]
    name = r.choice([*names, "flip_top_k"])
    if name == "flip_top_k":
        imp.head["field"] ^= TOP_K_FLAG  # the table then lacks, or has extra, top-k fields
    elif name in imp.head:
        imp.head[name] = _near(r, imp.head[name], WIDTH[name])
    else:
        imp.topk[name] = _near(r, imp.topk[name], WIDTH[name])


def shift_boundary(r: random.Random, msg: Message) -> None:
    """Two adjacent sections' stored lengths lie by ±n in opposite ways: the total still fits the message."""
    sections = msg.sections()
    if len(sections) < 2:
        return
    i = r.randint(0, len(sections) - 2)
    n = r.randint(1, 64)
    (a, _, fa), (b, _, fb) = sections[i], sections[i + 1]
    sign = r.choice([1, -1])
    fields_a, fields_b = _fields(a, fa), _fields(b, fb)
    if fields_a[fa] - n * sign < 0 or fields_b[fb] + n * sign < 0:
        return
    fields_a[fa] -= n * sign
    fields_b[fb] += n * sign


def expand_section(r: random.Random, msg: Message) -> None:
    """A section becomes a real zstd frame of 8 MiB of zeros: declaring 8 MiB, or declaring the raw size it replaces."""
    owner, attr, length_field = r.choice(msg.sections())
    fields = _fields(owner, length_field)
    codec_field = length_field.replace("_stored", "_codec")
    raw_field = length_field.replace("_stored", "_raw")
    if raw_field in fields:  # mask and positions sections declare their raw length
        raw = fields[raw_field]
    else:  # values: implied by count and wire dtype; use what the section holds when raw
        raw = len(getattr(owner, attr)) if fields[codec_field] == 0 else max(len(getattr(owner, attr)) * 2, 64)
    frame = r.choice([HONEST_BOMB, bomb_declaring(raw), bomb_declaring(_ZEROS)])
    setattr(owner, attr, frame)
    fields[length_field] = len(frame)
    fields[codec_field] = r.choice([1, 1, 2])
    if raw_field in fields and r.random() < 0.5:
        fields[raw_field] = r.choice([raw, _ZEROS])


def reorder_sections(r: random.Random, msg: Message) -> None:
    """The body's sections in another order, the table unchanged."""
    n = len(msg.sections())
    msg.section_order = r.sample(range(n), n)


def swap_section_bytes(r: random.Random, msg: Message) -> None:
    """Two sections exchange their bytes and their table lengths (each then sits where the other belongs)."""
    sections = msg.sections()
    if len(sections) < 2:
        return
    i, j = r.sample(range(len(sections)), 2)
    (a, aa, fa), (b, ab, fb) = sections[i], sections[j]
    bytes_a, bytes_b = getattr(a, aa), getattr(b, ab)
    setattr(a, aa, bytes_b)
    setattr(b, ab, bytes_a)
    _fields(a, fa)[fa], _fields(b, fb)[fb] = len(bytes_b), len(bytes_a)


def duplicate_entry(r: random.Random, msg: Message) -> None:
    """A state entry (and its sections), an importance entry, or one section's bytes appear twice."""
    what = r.choice(["entry", "importance", "section"])
    if what == "entry":
        i = r.randint(0, len(msg.entries) - 1)
        msg.entries.insert(r.randint(0, len(msg.entries)), copy.deepcopy(msg.entries[i]))
    elif what == "importance" and msg.importance:
        msg.importance.append(copy.deepcopy(r.choice(msg.importance)))
    else:
        owner, attr, _ = r.choice(msg.sections())
        msg.extra_body += getattr(owner, attr)


def drop_entry(r: random.Random, msg: Message) -> None:
    """A state entry (with its sections and importance), an importance entry, or one section's bytes is missing."""
    what = r.choice(["entry", "importance", "section"])
    if what == "entry" and len(msg.entries) > 1:
        i = r.randint(0, len(msg.entries) - 1)
        del msg.entries[i]
        kept = []
        for imp in msg.importance:
            index = imp.head["field"] & ~TOP_K_FLAG
            if index != i:
                imp.head["field"] -= int(index > i)
                kept.append(imp)
        msg.importance = kept
    elif what == "importance" and msg.importance:
        del msg.importance[r.randint(0, len(msg.importance) - 1)]
    else:
        owner, attr, _ = r.choice(msg.sections())
        setattr(owner, attr, b"")  # its table length still claims the bytes


def truncate(r: random.Random, msg: Message) -> None:
    """The message cut short (at a drawn length; every boundary is tried in its own test)."""
    full = len(serialise(msg))  # serialising only recomputes checksums, which the final one does again
    msg.cut = r.randint(0, max(full - 1, 0))


OPS = [lie_header, lie_scalar, lie_entry, lie_entry, lie_entry, lie_importance, lie_importance, shift_boundary,
       expand_section, expand_section, reorder_sections, swap_section_bytes, duplicate_entry, drop_entry, truncate]


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------
def test_parse_and_serialise_reproduce_every_valid_message_byte_for_byte() -> None:
    # Prepare / Execute / Assert: the independent parser reads the documented layout exactly
    n = 0
    for case in CASES:
        for data in case.replies + case.own_replies + case.instructions:
            assert serialise(parse(data)) == data
            n += 1
    assert n == 3 * (7 + 2 + 4)


def test_valid_messages_decode_within_the_bound() -> None:
    # Prepare
    tally = Tally()
    for case in CASES:
        # Execute / Assert: replies pass both links, moved masks only the own-masks link; instructions decode
        for data in case.replies:
            assert decode_reply_both(case, data, tally) == (True, True)
        for data in case.own_replies:
            assert decode_reply_both(case, data, tally) == (False, True)
        for data in case.instructions:
            assert decode_instruction(case, data, tally)
    # The peak of a valid decode is real work: at least the model's dense size for the largest model
    assert tally.peak >= max(c.dense_bytes for c in CASES)


def test_tracemalloc_sees_decoded_arrays_and_torch_from_numpy_shares_them() -> None:
    # Prepare: the largest model's reply with importance (state + importance = 2 D decoded)
    case = max(CASES, key=lambda c: c.dense_bytes)
    tracemalloc.start()
    try:
        # Execute
        before = tracemalloc.get_traced_memory()[0]
        res = case.strict.decode_res(0, case.replies[3])
        held = tracemalloc.get_traced_memory()[0] - before
        tensors = {k: torch.from_numpy(v) for k, v in res.state.items()}
        after_torch = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Assert: the decoded arrays are traced; from_numpy allocates no new buffer (it shares numpy's)
    assert held >= 2 * case.dense_bytes
    assert after_torch - held < 64 * 1024
    assert all(t.data_ptr() == res.state[k].ctypes.data for k, t in tensors.items())


@pytest.mark.parametrize("pool", ["replies", "instructions"])
def test_truncation_at_every_section_and_table_entry_boundary_is_rejected(pool: str) -> None:
    # Prepare: every boundary of every valid message: header fields, each table entry, each section
    tally = Tally()
    n_cases = 0
    for case in CASES:
        for data in getattr(case, pool):
            msg = parse(data)
            header = FIXED.size + len(msg.scalars) + 4
            (table_stored,) = struct.unpack_from("<Q", data, 16)
            cuts = {0, 4, 6, 7, 8, 12, 16, 24, 32, FIXED.size, header - 4, header, header + table_stored}
            if msg.head["table_codec"] == 0:
                t = header
                for e in msg.entries:
                    t += 2 + len(e.name) + 2 + 8 * len(e.shape) + ENTRY_TAIL_FMT.size
                    cuts.add(t)
                for imp in msg.importance:
                    t += IMP_HEAD_FMT.size + (IMP_TOPK_FMT.size if imp.topk else 0)
                    cuts.add(t)
            offset = header + table_stored
            for owner, _, length_field in msg.sections():
                offset += _fields(owner, length_field)[length_field]
                cuts.add(offset)
            cuts = {c for c in cuts if c < len(data)} | {len(data) - 1}
            for cut in sorted(cuts):
                # Execute / Assert
                if pool == "replies":
                    assert decode_reply_both(case, data[:cut], tally) == (False, False), cut
                else:
                    assert not decode_instruction(case, data[:cut], tally), cut
                n_cases += 1
    assert n_cases >= 200


def test_a_section_expanding_past_its_declared_size_is_rejected_within_the_bound() -> None:
    # Prepare: the largest values section of the digits CNN's first (raw) reply replaced by a real zstd frame
    # of 8 MiB of zeros whose header declares the section's raw length (implied by count and dtype), smaller
    # than that length, as a compressed section must be
    case = CASES[1]
    msg = parse(case.replies[0])
    e = max(msg.entries, key=lambda entry: len(entry.values))
    raw = len(e.values)
    e.values = bomb_declaring(raw)
    e.tail["values_stored"], e.tail["values_codec"] = len(e.values), 1
    assert len(e.values) < raw
    tally = Tally()
    # Execute
    accepted = decode_reply_both(case, serialise(msg), tally)
    # Assert: both links reject it, the decode never holding more than the bound (8 MiB would not fit)
    assert accepted == (False, False)
    assert case.bound < _ZEROS
    with pytest.raises(DecodeError, match="zstd"):
        case.strict.decode_res(0, serialise(msg))


def _rice_all_zero_gaps(m: int, k: int) -> bytes:
    """A Rice section of m codes, every gap 0 (remainders 0, unary all ones): positions 0..m-1."""
    return bytes((m * k + 7) // 8) + np.packbits(np.ones(m, np.uint8), bitorder="little").tobytes()


def _one_layer_worst_cases() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[tuple[str, bytes]]]:
    """A 2**18-weight layer (1 MiB, so 4 D dominates the bound) at density 0.3: valid replies in every
    encoding, and hostile ones whose Rice sections code half the layer (the most the decoder accepts)."""
    n = 1 << 18
    rng = np.random.default_rng(5)
    mask = rng.random(n) < 0.3
    state = {"w": (rng.standard_normal(n) * mask).astype(np.float32), "b": np.zeros(4, np.float32)}
    importance = {"w": rng.random(n).astype(np.float32), "b": np.ones(4, np.float32)}
    res = TrainRes(0, 1, state, 0.0, 0.0, importance)
    masks = {"w": mask}
    out = [(f"{kw}", encode_train_res(res, masks, **kw)) for kw in (
        {"level": None}, {"level": 3}, {"level": 3, "include_masks": True}, {"level": None, "include_masks": True},
        {"level": 3, "importance_top_fraction": 0.35}, {"level": None, "importance_top_fraction": 0.5},
        {"level": 3, "importance_dtype": "float16", "values_dtype": "float16"},
    )]
    k = n.bit_length()
    hostile = parse(encode_train_res(res, masks, level=None, include_masks=True, importance_top_fraction=0.5))
    w = hostile.entries[0]
    w.mask = _rice_all_zero_gaps(n // 2, k)
    w.values = np.ones(n // 2, np.float32).tobytes()
    w.tail.update(mask_code=4, rice_k=k, n_kept=n // 2, mask_codec=0, mask_stored=len(w.mask), mask_raw=len(w.mask),
                  values_codec=0, values_stored=len(w.values))
    imp = next(i for i in hostile.importance if i.head["field"] & ~TOP_K_FLAG == 0)
    imp.positions = _rice_all_zero_gaps(n // 2, k)
    imp.values = np.ones(n // 2, np.float32).tobytes()
    imp.topk.update(position_code=4, rice_k=k, n_top=n // 2, positions_codec=0, positions_stored=len(imp.positions),
                    positions_raw=len(imp.positions))
    imp.head.update(values_codec=0, values_stored=len(imp.values))
    out.append(("hostile: Rice mask and top-k positions coding half the layer", serialise(hostile)))
    return state, masks, out


def test_worst_case_replies_of_a_one_layer_model_decode_within_4_dense_sizes() -> None:
    # Prepare: one layer holds the whole model, so nothing is spread over several entries; the links decode
    state, masks, messages = _one_layer_worst_cases()
    dense = sum(int(v.nbytes) for v in state.values())
    ins = TrainIns(0, state, masks, 0.1, 1, 1)
    links = [ServerLink(own_masks=False), ServerLink(own_masks=True)]
    for link in links:
        link.encode_ins(ins, [0], mask_version=0)
    tally = Tally()
    for label, data in messages:
        for link in links:
            # Execute
            _traced(lambda d: link.decode_res(0, d), data, 4 * dense + SLACK_BYTES, tally)
    # Assert: every decode stayed within the bound (checked in _traced), valid ones were accepted, and the
    # bound is not loose: the largest peak is over 3 dense sizes (state, importance and a section in flight)
    assert tally.decodes == 2 * len(messages)
    assert tally.accepted >= 2 * (len(messages) - 1)
    assert 3 * dense < tally.peak <= 4 * dense + SLACK_BYTES


def test_sections_over_one_read_chunk_decompress_once_into_their_buffer_and_bombs_are_refused() -> None:
    # Prepare: a 3 MiB zero layer (compressed to a few hundred bytes; over the 1 MiB read chunk, so checked by a
    # counting pass, then read into one buffer), and the same section holding 8 MiB or 2 MiB of zeros instead
    n = 3 << 18
    state = {"w": np.zeros(n, np.float32)}
    dense = 4 * n
    link = ServerLink(own_masks=False)
    link.encode_ins(TrainIns(0, state, {}, 0.1, 1, 1), [0], mask_version=0)
    good = encode_train_res(TrainRes(0, 1, state, 0.0, 0.0), {}, level=3)
    msg = parse(good)
    assert msg.entries[0].tail["values_codec"] == 2 and len(msg.entries[0].values) < 1024
    bombs = []
    for held in (_ZEROS, 2 << 20):
        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=17, write_content_size=False)
        frame = declaring(zstandard.ZstdCompressor(compression_params=params).compress(bytes(held)), dense)
        bomb = parse(good)
        bomb.entries[0].values = frame
        bomb.entries[0].tail["values_stored"] = len(frame)
        bombs.append(serialise(bomb))
    tally = Tally()
    # Execute
    res = _traced(lambda d: link.decode_res(0, d), good, 2 * dense + SLACK_BYTES, tally)
    refused = [_traced(lambda d: link.decode_res(0, d), b, 2 * dense + SLACK_BYTES, tally) for b in bombs]
    # Assert: the valid one decodes to zeros within 2 dense sizes (its buffer and nothing twice); both lies
    # about the size are refused by the counting pass (or libzstd, which checks the declared size at the
    # frame end), before a buffer of the declared size exists
    assert res is not None and not res.state["w"].any()
    assert refused == [None, None]
    with pytest.raises(DecodeError, match="expected a zstd frame of exactly 3145728 bytes, found more"):
        link.decode_res(0, bombs[0])
    with pytest.raises(DecodeError, match="exactly 3145728 bytes, found 2097152|corrupt zstd data"):
        link.decode_res(0, bombs[1])


def rle_bomb_declaring(size: int, expands_to: int = 512 << 20) -> bytes:
    """A zstd frame declaring ``size`` bytes, with the largest window allowed for that size (at most 128 KiB),
    whose RLE blocks (4 bytes each) expand to ``expands_to`` bytes, or as many as keep it shorter than ``size``."""
    w = min(17, max(10, size.bit_length() - 1))
    n_blocks = max(1, min(expands_to >> w, (size - 32) // 4))
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0xC0, (w - 10) << 3]) + struct.pack("<Q", size)
    block = (1 << 1 | (1 << w) << 3).to_bytes(3, "little") + b"\x00"
    last = (1 | 1 << 1 | (1 << w) << 3).to_bytes(3, "little") + b"\x00"
    return frame + block * (n_blocks - 1) + last


CHILD = r"""
import importlib.util, random, resource, sys
from prunefl.errors import DecodeError
from prunefl.fl.links import ServerLink
from prunefl.fl.messages import TrainIns
spec = importlib.util.spec_from_file_location("fz", sys.argv[1])
fz = importlib.util.module_from_spec(spec)
sys.modules["fz"] = fz
spec.loader.exec_module(fz)
fz.bomb_declaring = fz.rle_bomb_declaring  # expanding sections now expand to 512 MiB, not 8 MiB
state, masks, worst = fz._one_layer_worst_cases()
links = [ServerLink(own_masks=False), ServerLink(own_masks=True)]
for link in links:
    link.encode_ins(TrainIns(0, state, masks, 0.1, 1, 1), [0], mask_version=0)
pool = [(links, data) for _, data in worst]
pool += [([c.strict, c.own], data) for c in fz.CASES for data in c.replies + c.own_replies]
dense = sum(int(v.nbytes) for v in state.values())
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
cap = vm + 4 * dense + (32 << 20)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
r = random.Random(int(sys.argv[2]))
n = accepted = 0
for _ in range(int(sys.argv[3])):
    decoders, base = r.choice(pool)
    msg = fz.parse(base)
    for op in r.sample(fz.OPS, r.randint(1, 3)):
        op(r, msg)
    data = fz.serialise(msg)
    for link in decoders:
        try:
            link.decode_res(0, data)
            accepted += 1
        except DecodeError as exc:
            assert fz.UNCHECKED not in str(exc), str(exc)
        n += 1
print("decodes", n, "accepted", accepted, "cap_over_vm", cap - vm)
"""


@pytest.mark.slow
def test_structured_sample_under_rlimit_as() -> None:
    # Prepare: what tracemalloc does not see (libzstd's contexts and windows) is capped by the address space:
    # a child caps it at its size after setup + 4 x the one-layer model (1 MiB) + 32 MiB, then decodes 1,000
    # structured mutations of the one-layer worst cases and the three models' replies, with both server links;
    # its expanding sections are RLE frames that expand to 512 MiB
    # Execute
    out = subprocess.run([sys.executable, "-c", CHILD, __file__, "7", "1000"], capture_output=True, text=True,
                         timeout=300)
    # Assert: no decode failed to allocate (a MemoryError would reach the catch-all) and all finished
    assert out.returncode == 0, out.stderr[-3000:]
    words = out.stdout.split()
    assert words[0] == "decodes" and int(words[1]) == 2000, out.stdout


def test_reply_masks_with_the_right_count_at_wrong_positions_are_rejected_by_the_strict_link() -> None:
    # Prepare: each model's own-masks replies keep as many weights per layer as the masks sent, elsewhere
    tally = Tally()
    for case in CASES:
        for data in case.own_replies:
            # Execute / Assert
            assert decode_reply_both(case, data, tally) == (False, True)
            with pytest.raises(DecodeError, match="differ from those the server sent"):
                case.strict.decode_res(0, data)


def test_a_reply_sending_a_masked_entry_dense_is_rejected_by_both_links() -> None:
    # Prepare: the reply sends every entry dense (no mask), so values at pruned coordinates would travel
    case = CASES[0]
    trained = {k: np.ones_like(v) for k, v in case.state.items()}
    data = encode_train_res(TrainRes(0, 64, trained, 0.5, 0.01), {}, level=None)
    # Execute / Assert
    for link in (case.strict, case.own):
        with pytest.raises(DecodeError, match="a reply must mask exactly the entries the server masked"):
            link.decode_res(0, data)


def test_a_reply_with_a_wider_dtype_is_rejected_before_allocation() -> None:
    # Prepare: the MLP's reply in float64 (twice the memory the server expects)
    case = CASES[0]
    wide = {k: (v * case.masks[k] if k in case.masks else v).astype(np.float64) for k, v in case.state.items()}
    data = encode_train_res(TrainRes(0, 64, wide, 0.5, 0.01), case.masks, level=None)
    # Execute / Assert
    with pytest.raises(DecodeError, match="expected dtype float32, found float64"):
        case.strict.decode_res(0, data)


def test_entries_reordered_consistently_decode_to_the_same_reply() -> None:
    # Prepare: state entries (with their sections) in reverse order, importance indices renumbered
    case = CASES[2]
    msg = parse(case.replies[3])
    n = len(msg.entries)
    msg.entries.reverse()
    for imp in msg.importance:
        imp.head["field"] = n - 1 - imp.head["field"]
    # Execute
    a, b = case.strict.decode_res(0, case.replies[3]), case.strict.decode_res(0, serialise(msg))
    # Assert
    assert list(b.state) == list(reversed(list(a.state)))
    assert all(np.array_equal(a.state[k], b.state[k]) for k in a.state)
    assert a.importance is not None and b.importance is not None
    assert all(np.array_equal(a.importance[k], b.importance[k]) for k in a.importance)


_REPLY_TALLY, _INS_TALLY = Tally(), Tally()


@pytest.fixture(scope="module", autouse=True)
def _print_tallies():
    """After the module, print what the fuzz targets decoded (shown with ``pytest -s``)."""
    started = time.perf_counter()
    yield
    for name, tally in (("replies", _REPLY_TALLY), ("instructions", _INS_TALLY)):
        if tally.decodes:
            print(f"\n{name}: {tally.decodes} decodes, {tally.accepted} accepted, largest peak {tally.peak} B, "
                  f"{tally.peak_ratio:.3f} of its bound; module {time.perf_counter() - started:.1f} s")


@pytest.mark.slow
@FUZZ
@given(mutated("replies"), mutated("instructions"))
def test_structured_mutations_raise_only_decode_error_within_the_bound(
    reply: tuple[Case, bytes, list[str]], instruction: tuple[Case, bytes, list[str]]
) -> None:
    # Each example is two cases: a mutated reply (decoded by the strict and the own-masks server link) and a
    # mutated instruction (decoded by the client): 10,000 of each
    case, data, _ = reply
    decode_reply_both(case, data, _REPLY_TALLY)
    case, data, _ = instruction
    decode_instruction(case, data, _INS_TALLY)


@QUICK
@given(mutated("replies"))
def test_structured_mutations_of_replies_quick(example: tuple[Case, bytes, list[str]]) -> None:
    case, data, _ = example
    decode_reply_both(case, data, Tally())


@QUICK
@given(mutated("instructions"))
def test_structured_mutations_of_instructions_quick(example: tuple[Case, bytes, list[str]]) -> None:
    case, data, _ = example
    decode_instruction(case, data, Tally())
