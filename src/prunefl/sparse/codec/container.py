"""One message, whatever its kind: writes and reads the fixed header, layer table and body sections."""

from __future__ import annotations

import logging
import math
import struct
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import zstandard

from prunefl.errors import DecodeError
from prunefl.sparse.codec.compress import _ZSTD_LEVELS, _compress_plain, _compress_values, _section_bytes
from prunefl.sparse.codec.format import (
    _CRC,
    _DTYPE_NDIM,
    _DTYPES,
    _ENTRY_TAIL,
    _FIXED,
    _FLOAT_WIRE,
    _IMPORTANCE_ENTRY,
    _IMPORTANCE_POSITIONS,
    _IMPORTANCE_TOP_K_FLAG,
    _KIND_SCALARS,
    _MAX_ENTRY_BYTES,
    _MAX_IMPORTANCE_ENTRY_BYTES,
    _MAX_NDIM,
    _NAME_LEN,
    FORMAT_VERSION,
    MAGIC,
    _check_crc,
    _Codec,
    _dtype_code,
    _Entry,
    _ImportanceEntry,
    _Kind,
    _MaskCode,
    _Reader,
    _Section,
    _wire_dtype,
)
from prunefl.sparse.codec.limits import (
    DecodeLimits,
    _check_encode_inputs,
    _check_entries,
    _check_scalars,
    _check_section_codec,
)
from prunefl.sparse.codec.masks import _decode_mask, _decode_positions, _encode_mask, _top_k_mask

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class _EncodeOptions:
    values_wire: int  # dtype code of kept values
    importance_wire: int  # dtype code of importance values
    compressor: zstandard.ZstdCompressor | None
    importance_top_fraction: float = 1.0  # < 1: top-k importance entries


def _encode_options(
    values_dtype: str, importance_dtype: str, level: int | None, importance_top_fraction: float = 1.0
) -> _EncodeOptions:
    for name, value in (("values_dtype", values_dtype), ("importance_dtype", importance_dtype)):
        if value not in _FLOAT_WIRE:
            raise ValueError(f"{name} must be one of {sorted(_FLOAT_WIRE)}, got {value!r}")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level not in _ZSTD_LEVELS):
        raise ValueError(f"level must be None or an int in [-7, {zstandard.MAX_COMPRESSION_LEVEL}], got {level!r}")
    # One compressor per message; content size is always written: the decoder requires it (bomb check).
    if isinstance(importance_top_fraction, bool) or not (
        isinstance(importance_top_fraction, (int, float)) and 0.0 < importance_top_fraction <= 1.0
    ):
        raise ValueError(f"importance_top_fraction must be a number in (0, 1], got {importance_top_fraction!r}")
    compressor = None if level is None else zstandard.ZstdCompressor(level=level, write_content_size=True)
    return _EncodeOptions(
        _FLOAT_WIRE[values_dtype], _FLOAT_WIRE[importance_dtype], compressor, float(importance_top_fraction)
    )


def _pack_scalars(fmt: struct.Struct, kind: str, *values: object) -> bytes:
    try:
        return fmt.pack(*values)
    except struct.error as exc:
        raise ValueError(f"{kind} scalar fields {values} do not fit the wire format: {exc}") from exc


def _encode(
    kind: _Kind,
    scalars: bytes,
    state: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    include_masks: bool,
    importance: Mapping[str, np.ndarray] | None,
    options: _EncodeOptions,
) -> bytes:
    _check_encode_inputs(state, masks, importance)
    table: list[bytes] = []
    body: list[object] = []  # bytes-like sections, joined once at the end
    index_of: dict[str, int] = {}
    for index, (name, value) in enumerate(state.items()):
        index_of[name] = index
        arr = np.asarray(value)
        logical = _dtype_code(arr.dtype, name)
        flat = arr.reshape(-1)
        if name in masks:
            mask = np.asarray(masks[name]).reshape(-1)
            n_kept = int(np.count_nonzero(mask))
            if not include_masks:
                code, rice_k, mask_raw = _MaskCode.KNOWN, 0, b""
                positions = None
            else:
                code, rice_k, mask_raw, positions = _encode_mask(mask, n_kept)
            if code == _MaskCode.ALL_ONES or n_kept == flat.size:
                kept = flat
            elif code == _MaskCode.RICE_KEPT:
                kept = flat[positions]  # positions are sorted: row-major order, and faster than a bool index
            else:
                kept = flat[mask]
            if kind == _Kind.TRAIN_RES and kept.size < flat.size and np.count_nonzero(kept) != np.count_nonzero(flat):
                # Only kept values travel, so a non-zero pruned coordinate would be lost silently (NaN counts).
                raise ValueError(f"state entry {name!r} has non-zero values at pruned coordinates (spec §3.8)")
            wire = _DTYPES[options.values_wire]
            values = _to_wire(kept, wire, name)
            mask_codec, mask_payload = _compress_plain(mask_raw, options.compressor)
        else:
            code, rice_k, n_kept = _MaskCode.DENSE, 0, flat.size
            wire = _DTYPES[logical]
            values = np.ascontiguousarray(flat, dtype=wire)  # lossless; byte-swapped on big-endian hosts
            mask_raw, mask_codec, mask_payload = b"", _Codec.RAW, b""
        values_codec, values_payload = _compress_values(values, options.compressor)
        name_bytes = name.encode("utf-8")
        table.append(
            _NAME_LEN.pack(len(name_bytes))
            + name_bytes
            + _DTYPE_NDIM.pack(logical, arr.ndim)
            + struct.pack(f"<{arr.ndim}Q", *arr.shape)
            + _ENTRY_TAIL.pack(
                code,
                rice_k,
                n_kept,
                mask_codec,
                len(mask_payload),
                len(mask_raw),
                zlib.crc32(mask_payload),
                _dtype_code(wire, name),
                values_codec,
                _nbytes(values_payload),
                zlib.crc32(values_payload),  # type: ignore[arg-type]
            )
        )
        body += [mask_payload, values_payload]
    n_importance = 0
    if importance is not None:
        wire = _DTYPES[options.importance_wire]
        for name, value in importance.items():
            arr = np.asarray(value)
            flat = arr.reshape(-1)
            field, positions_entry = index_of[name], b""
            if options.importance_top_fraction < 1.0:
                # The relative tolerance absorbs float error: 0.07 · 100 is 7.000000000000001 and keeps 7.
                k = math.ceil(options.importance_top_fraction * flat.size * (1 - 1e-12))
                top = _top_k_mask(flat, k, name)
                n_top = int(np.count_nonzero(top))
                code, rice_k, positions_raw, positions = _encode_mask(top, n_top)
                flat = flat[positions] if positions is not None else flat[top]  # row-major position order
                positions_codec, positions_payload = _compress_plain(positions_raw, options.compressor)
                field |= _IMPORTANCE_TOP_K_FLAG
                positions_entry = _IMPORTANCE_POSITIONS.pack(
                    code,
                    rice_k,
                    n_top,
                    positions_codec,
                    len(positions_payload),
                    len(positions_raw),
                    zlib.crc32(positions_payload),
                )
                body.append(positions_payload)
            values = _to_wire(flat, wire, f"importance[{name!r}]")
            codec, payload = _compress_values(values, options.compressor)
            table.append(
                _IMPORTANCE_ENTRY.pack(
                    field,
                    _dtype_code(arr.dtype, name),
                    options.importance_wire,
                    codec,
                    _nbytes(payload),
                    zlib.crc32(payload),  # type: ignore[arg-type]
                )
                + positions_entry
            )
            body.append(payload)
            n_importance += 1
    table_raw = b"".join(table)
    table_codec, table_payload = _compress_plain(table_raw, options.compressor)
    header = _FIXED.pack(
        MAGIC,
        FORMAT_VERSION,
        kind,
        table_codec,
        len(state),
        n_importance,
        len(table_payload),
        len(table_raw),
        zlib.crc32(table_payload),
    )
    header_crc = _CRC.pack(zlib.crc32(header + scalars))
    data = b"".join([header, scalars, header_crc, table_payload, *body])  # type: ignore[list-item]
    logger.debug("encoded %s: %d entries, %d importance entries, %d bytes", kind.name, len(state), n_importance,
                 len(data))
    return data


def _to_wire(values: np.ndarray, wire: np.dtype, what: str) -> np.ndarray:
    """Cast float values to the wire dtype; float16 must not turn finite values into inf."""
    with np.errstate(over="ignore"):  # overflow is reported below, with the entry's name
        out = np.ascontiguousarray(values, dtype=wire)
    if wire.itemsize < values.dtype.itemsize and out.size:
        overflow = np.isinf(out) & np.isfinite(values)
        if overflow.any():
            raise ValueError(
                f"{what}: {int(overflow.sum())} finite values exceed the {wire.name} range (|x| > "
                f"{float(np.finfo(wire).max)}); send float32"
            )
    return out


def _nbytes(payload: object) -> int:
    return payload.nbytes if isinstance(payload, np.ndarray) else len(payload)  # type: ignore[arg-type]


@dataclass
class _Decoded:
    scalars: tuple
    state: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    importance: dict[str, np.ndarray]
    sent_masks: bool = False  # some entry carried its own mask (not KNOWN)


def _decode(
    data: bytes | bytearray | memoryview,
    kind: _Kind,
    known_masks: Mapping[str, np.ndarray] | None,
    limits: DecodeLimits,
    expected_shapes: Mapping[str, tuple[int, ...]] | None,
    require_finite: bool,
    expected_dtypes: Mapping[str, np.dtype] | None = None,
    masked_names: Collection[str] | None = None,
) -> _Decoded:
    """Decode a message of ``kind``; any exception but `DecodeError` is a codec bug, reported as a DecodeError.

    Every input is meant to be rejected by an explicit check below; the net only guarantees callers a single
    exception type (a numpy or zstd error, or a MemoryError, must not take a server down). Its message starts
    with ``_UNCHECKED`` so that the fuzz tests can tell that no explicit check caught the input.
    """
    try:
        return _decode_checked(
            data, kind, known_masks, limits, expected_shapes, require_finite, expected_dtypes, masked_names
        )
    except DecodeError:
        raise
    except Exception as exc:  # MemoryError, numpy, zstd, struct, RecursionError...: one type for callers
        raise DecodeError(f"{_UNCHECKED}: {type(exc).__name__}: {exc}") from None


_UNCHECKED = "malformed message (no explicit check caught it)"


def _decode_checked(
    data: bytes | bytearray | memoryview,
    kind: _Kind,
    known_masks: Mapping[str, np.ndarray] | None,
    limits: DecodeLimits,
    expected_shapes: Mapping[str, tuple[int, ...]] | None,
    require_finite: bool,
    expected_dtypes: Mapping[str, np.dtype] | None = None,
    masked_names: Collection[str] | None = None,
) -> _Decoded:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected a bytes-like message, found {type(data).__name__}")
    try:
        buf = memoryview(data).cast("B")
    except TypeError:
        raise DecodeError("expected a contiguous bytes-like message") from None
    if len(buf) > limits.max_message_bytes:
        raise DecodeError(f"message is {len(buf)} bytes, above max_message_bytes={limits.max_message_bytes}")
    reader = _Reader(buf, "message")
    fixed = reader.take(_FIXED.size, "fixed header")
    (magic, version, wire_kind, table_codec, n_entries, n_importance, table_stored, table_raw,
     table_crc) = _FIXED.unpack(fixed)
    # Magic, version and kind are checked before the header checksum: they say which layout (and so which
    # scalars) to read, and each is rejected on its own when wrong.
    if magic != MAGIC:
        raise DecodeError(f"expected magic {MAGIC!r}, found {bytes(magic)!r}: not a prunefl message")
    if version != FORMAT_VERSION:
        old = " (version 1 messages carry no checksums and are no longer accepted: re-encode them)"
        raise DecodeError(
            f"expected format version {FORMAT_VERSION}, found {version}{old if version == 1 else ''}"
        )
    if wire_kind != kind:
        found = _Kind(wire_kind).name if wire_kind in set(_Kind) else str(wire_kind)
        raise DecodeError(f"expected a {kind.name} message, found kind {found}")
    raw_scalars = reader.take(_KIND_SCALARS[kind].size, "scalar fields")
    (header_crc,) = reader.unpack(_CRC, "header checksum")
    _check_crc(buf[: reader.pos - _CRC.size], header_crc, "fixed header and scalar fields")
    if n_entries > limits.max_layers:
        raise DecodeError(f"message has {n_entries} entries, above max_layers={limits.max_layers}")
    if n_importance > n_entries:
        raise DecodeError(
            f"expected at most {n_entries} importance entries (one per state entry), found {n_importance}"
        )
    scalars = _check_scalars(kind, _KIND_SCALARS[kind].unpack(raw_scalars), n_importance, require_finite)
    table_section = _Section(table_codec, table_stored, table_raw, table_crc)
    _check_section_codec(table_section, "layer table", allow_shuffle=False)
    # The table's size is bounded by what its entry counts allow before anything is decompressed.
    max_table = min(
        limits.max_table_bytes, n_entries * _MAX_ENTRY_BYTES + n_importance * _MAX_IMPORTANCE_ENTRY_BYTES
    )
    if table_raw > max_table:
        raise DecodeError(
            f"layer table of {table_raw} bytes is above the {max_table} bytes that {n_entries} entries and "
            f"{n_importance} importance entries can take (max_table_bytes={limits.max_table_bytes})"
        )
    if table_codec != _Codec.RAW and table_raw > limits.max_decompressed_bytes:
        raise DecodeError(
            f"layer table decompresses to {table_raw} bytes, above max_decompressed_bytes="
            f"{limits.max_decompressed_bytes}"
        )
    table_stored_bytes = reader.take(table_stored, "layer table")
    _check_crc(table_stored_bytes, table_crc, "layer table")
    table = _section_bytes(table_stored_bytes, table_section, "layer table")
    entries, importance_entries = _parse_table(table, n_entries, n_importance, limits)
    _check_entries(entries, importance_entries, known_masks, expected_shapes, expected_dtypes, masked_names)

    # Lay out the body: sections follow in table order and must fill the message exactly.
    sections = [s for e in entries for s in (e.mask, e.values)]
    for imp in importance_entries:
        sections += [imp.values] if imp.positions is None else [imp.positions, imp.values]
    offset = reader.pos
    for section in sections:
        section.offset = offset
        offset += section.stored
    if offset != len(buf):
        raise DecodeError(
            f"expected a message of {offset} bytes (header, table and sections), found {len(buf)}: "
            f"{'truncated' if offset > len(buf) else 'trailing bytes'}"
        )
    # Every section's checksum is verified before any section is used.
    for e in entries:
        for section, noun in ((e.mask, "mask"), (e.values, "values")):
            _check_crc(buf[section.offset : section.offset + section.stored], section.crc, f"entry {e.name!r} {noun}")
    for imp in importance_entries:
        for part in (imp.values, imp.positions):
            if part is not None:
                what = f"importance of {entries[imp.entry].name!r}"
                _check_crc(buf[part.offset : part.offset + part.stored], part.crc, what)
    compressed_total = sum(s.raw for s in sections if s.codec != _Codec.RAW)
    compressed_total += table_raw if table_codec != _Codec.RAW else 0
    if compressed_total > limits.max_decompressed_bytes:
        raise DecodeError(
            f"sections decompress to {compressed_total} bytes, above max_decompressed_bytes="
            f"{limits.max_decompressed_bytes}"
        )

    state: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for e in entries:
        what = f"entry {e.name!r}"
        values = _decode_values(buf, e.values, e.wire, e.n_kept, f"{what} values", require_finite)
        if e.mask_code == _MaskCode.DENSE:
            state[e.name] = _owned(values, e.dtype.newbyteorder("=")).reshape(e.shape)
            continue
        mask_raw = _section_bytes(buf[e.mask.offset : e.mask.offset + e.mask.stored], e.mask, f"{what} mask")
        mask_flat, positions = _decode_mask(e, mask_raw, known_masks)
        out = np.zeros(e.numel, dtype=e.dtype.newbyteorder("="))
        if e.n_kept == e.numel:
            out[:] = values
        elif positions is not None:
            out[positions] = values  # kept positions, sorted: the row-major order the values were sent in
        else:
            out[mask_flat] = values
        state[e.name] = out.reshape(e.shape)
        if e.mask_code == _MaskCode.KNOWN:
            assert known_masks is not None  # _check_entries required it
            masks[e.name] = known_masks[e.name]  # the caller's own array, not a copy
        else:
            masks[e.name] = mask_flat.reshape(e.shape)
    importance: dict[str, np.ndarray] = {}
    for imp in importance_entries:
        e = entries[imp.entry]
        what = f"importance of {e.name!r}"
        if imp.positions is None:
            values = _decode_values(buf, imp.values, imp.wire, e.numel, what, require_finite)
            importance[e.name] = _owned(values, imp.dtype.newbyteorder("=")).reshape(e.shape)
            continue
        positions_raw = _section_bytes(buf[imp.positions.offset : imp.positions.offset + imp.positions.stored],
                                       imp.positions, f"{what} positions")
        top, positions = _decode_positions(imp.position_code, imp.rice_k, imp.n_top, e.numel, positions_raw,
                                           f"{what} positions")
        values = _decode_values(buf, imp.values, imp.wire, imp.n_top, what, require_finite)
        out = np.zeros(e.numel, dtype=imp.dtype.newbyteorder("="))
        out[positions if positions is not None else top] = values  # row-major position order
        importance[e.name] = out.reshape(e.shape)
    sent = any(e.mask_code not in (_MaskCode.KNOWN, _MaskCode.DENSE) for e in entries)
    return _Decoded(scalars, state, masks, importance, sent)


def _parse_table(
    table: bytes | bytearray | memoryview, n_entries: int, n_importance: int, limits: DecodeLimits
) -> tuple[list[_Entry], list[_ImportanceEntry]]:
    reader = _Reader(memoryview(table), "layer table")
    entries: list[_Entry] = []
    total_elements = 0
    for i in range(n_entries):
        (name_len,) = reader.unpack(_NAME_LEN, f"entry {i} name length")
        try:
            name = str(reader.take(name_len, f"entry {i} name"), "utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"entry {i}: expected a UTF-8 name, found invalid bytes ({exc.reason})") from None
        what = f"entry {i} ({name!r})"
        dtype_code, ndim = reader.unpack(_DTYPE_NDIM, f"{what} dtype and ndim")
        dtype = _wire_dtype(dtype_code, f"{what} dtype")
        if ndim > _MAX_NDIM:
            raise DecodeError(f"{what}: expected at most {_MAX_NDIM} dimensions, found {ndim}")
        shape = struct.unpack(f"<{ndim}Q", reader.take(8 * ndim, f"{what} shape"))
        numel = math.prod(shape)
        # Each dimension too: an empty entry (a 0 in the shape) could otherwise carry dimensions numpy refuses.
        if numel > limits.max_elements_per_layer or max(shape, default=0) > limits.max_elements_per_layer:
            raise DecodeError(
                f"{what}: shape {shape} has {numel} elements, above max_elements_per_layer="
                f"{limits.max_elements_per_layer}"
            )
        total_elements += numel
        if total_elements > limits.max_total_elements:
            raise DecodeError(f"entries have over {limits.max_total_elements} elements (max_total_elements)")
        (mask_code, rice_k, n_kept, mask_codec, mask_stored, mask_raw, mask_crc, wire_code, values_codec,
         values_stored, values_crc) = reader.unpack(_ENTRY_TAIL, f"{what} sections")
        wire = _wire_dtype(wire_code, f"{what} values wire dtype")
        entries.append(
            _Entry(
                name=name,
                dtype=dtype,
                shape=tuple(int(s) for s in shape),
                numel=numel,
                mask_code=mask_code,
                rice_k=rice_k,
                n_kept=n_kept,
                mask=_Section(mask_codec, mask_stored, mask_raw, mask_crc),
                wire=wire,
                # The raw length of values is implied; n_kept is checked against numel before it is trusted.
                values=_Section(values_codec, values_stored, min(n_kept, numel) * wire.itemsize, values_crc),
            )
        )
    importance: list[_ImportanceEntry] = []
    for j in range(n_importance):
        field, dtype_code, wire_code, codec, stored, crc = reader.unpack(_IMPORTANCE_ENTRY, f"importance entry {j}")
        what = f"importance entry {j}"
        index = field & ~_IMPORTANCE_TOP_K_FLAG
        if index >= n_entries:
            raise DecodeError(f"{what}: expected a state entry index below {n_entries}, found {index}")
        dtype = _wire_dtype(dtype_code, f"{what} dtype")
        wire = _wire_dtype(wire_code, f"{what} wire dtype")
        numel = entries[index].numel
        total_elements += numel
        if total_elements > limits.max_total_elements:
            raise DecodeError(f"entries have over {limits.max_total_elements} elements (max_total_elements)")
        if not field & _IMPORTANCE_TOP_K_FLAG:
            importance.append(_ImportanceEntry(index, dtype, wire, _Section(codec, stored, numel * wire.itemsize, crc)))
            continue
        code, rice_k, n_top, positions_codec, positions_stored, positions_raw, positions_crc = reader.unpack(
            _IMPORTANCE_POSITIONS, f"{what} positions"
        )
        importance.append(
            _ImportanceEntry(
                index,
                dtype,
                wire,
                # n_top is checked against numel before it is trusted.
                _Section(codec, stored, min(n_top, numel) * wire.itemsize, crc),
                code,
                rice_k,
                n_top,
                _Section(positions_codec, positions_stored, positions_raw, positions_crc),
            )
        )
    if reader.pos != len(reader.buf):
        raise DecodeError(
            f"layer table: expected {reader.pos} bytes for {n_entries} entries and {n_importance} importance "
            f"entries, found {len(reader.buf)}"
        )
    return entries, importance


def _decode_values(
    buf: memoryview,
    section: _Section,
    wire: np.dtype,
    count: int,
    what: str,
    require_finite: bool,
) -> np.ndarray:
    """Return ``count`` wire-dtype values (possibly a read-only view: `_owned` makes them the caller's)."""
    raw = _section_bytes(buf[section.offset : section.offset + section.stored], section, what)
    if section.codec == _Codec.SHUFFLED_ZSTD:
        planes = np.frombuffer(raw, dtype=np.uint8).reshape(wire.itemsize, count)
        values = np.empty(count, dtype=wire)  # a fresh array: `_owned` keeps it rather than copying it again
        values.view(np.uint8).reshape(count, wire.itemsize)[...] = planes.T
    else:
        values = np.frombuffer(raw, dtype=wire, count=count)
    if wire.kind == "b":
        # A bool is one byte that must be 0 or 1; numpy would accept any byte and misbehave later.
        if values.size and values.view(np.uint8).max() > 1:
            raise DecodeError(f"{what}: expected bool bytes 0 or 1, found {int(values.view(np.uint8).max())}")
    elif wire.kind == "f" and require_finite and values.size:
        # max and min propagate NaN and show ±inf without allocating a mask of the values; count only on error
        if not (np.isfinite(values.max()) and np.isfinite(values.min())):
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            raise DecodeError(f"{what}: expected finite values, found {bad} NaN or inf")
    return values


def _owned(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as a writable array of ``dtype`` that nothing else holds: a copy unless they already are one.

    A values array owns its memory only when `_decode_values` built it (byte-shuffled sections); raw sections
    are views of the message, and decompressed ones of a buffer the caller does not get. Not copying a fresh
    array keeps a decode's peak memory at twice an entry, not three times.
    """
    if values.dtype == dtype and values.flags.owndata and values.flags.writeable:
        return values
    return values.astype(dtype, copy=True)
