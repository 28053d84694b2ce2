"""Wire format constants: header and table layout, kinds, mask and section codes, dtypes, version, checksums."""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from prunefl.errors import DecodeError



MAGIC = b"PFL1"
"""First four bytes of every message."""

FORMAT_VERSION = 2
"""Version of the byte layout in the package docstring (prunefl.sparse.codec); a decoder rejects any other."""

# Format limit: positions < 2**31 and at most 2**31 gaps, so Σ gaps < 2**62 fits int64 while decoding.
_MAX_ELEMENTS_PER_ENTRY = 2**31


class _Kind(enum.IntEnum):
    TRAIN_INS = 1
    TRAIN_RES = 2
    STATE = 3


class _MaskCode(enum.IntEnum):
    DENSE = 0  # not a masked entry: every value is sent
    KNOWN = 1  # masked; the receiver has the mask
    ALL_ONES = 2  # masked, nothing pruned: no mask bytes
    BITMASK = 3
    RICE_KEPT = 4  # Rice-coded positions of kept coordinates
    RICE_PRUNED = 5  # Rice-coded positions of pruned coordinates (density > 0.5)


class _Codec(enum.IntEnum):
    RAW = 0
    ZSTD = 1
    SHUFFLED_ZSTD = 2  # byte planes (element byte 0 of all elements, then byte 1, ...), then zstd


_FIXED = struct.Struct("<4sHBBIIQQI")  # ..., table CRC32
_CRC = struct.Struct("<I")
_INS_SCALARS = struct.Struct("<qdqqBB")
_RES_SCALARS = struct.Struct("<qqddB")
_KIND_SCALARS = {_Kind.TRAIN_INS: _INS_SCALARS, _Kind.TRAIN_RES: _RES_SCALARS, _Kind.STATE: struct.Struct("<")}
_NAME_LEN = struct.Struct("<H")
_DTYPE_NDIM = struct.Struct("<BB")
_ENTRY_TAIL = struct.Struct("<BBQBQQIBBQI")
_IMPORTANCE_ENTRY = struct.Struct("<IBBBQI")
_IMPORTANCE_TOP_K_FLAG = 1 << 31  # bit 31 of the entry field: a top-k importance entry, with positions
_IMPORTANCE_POSITIONS = struct.Struct("<BBQBQQI")  # code, rice k, k, positions codec, stored, raw, CRC32

# Wire dtypes are explicitly little-endian; ("kind", itemsize) identifies a host dtype of either byte order.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("|b1"),
    2: np.dtype("|u1"),
    3: np.dtype("|i1"),
    4: np.dtype("<i2"),
    5: np.dtype("<i4"),
    6: np.dtype("<i8"),
    7: np.dtype("<f2"),
    8: np.dtype("<f4"),
    9: np.dtype("<f8"),
}
_DTYPE_CODES: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}
_FLOAT_WIRE = {"float32": 8, "float16": 7}  # options for kept values and importance

_IMPORTANCE_MODES = ("off", "round_sum", "legacy_last_step")  # wire code = index
_IMPORTANCE_MODE_CODES = {mode: code for code, mode in enumerate(_IMPORTANCE_MODES)}

_MAX_NDIM = 32
_MAX_RICE_K = 31  # a gap is < 2**31
# Largest table entries the format allows: a 65535-byte name and 32 dims; a top-k importance entry.
_MAX_ENTRY_BYTES = _NAME_LEN.size + 0xFFFF + _DTYPE_NDIM.size + 8 * 32 + _ENTRY_TAIL.size
_MAX_IMPORTANCE_ENTRY_BYTES = _IMPORTANCE_ENTRY.size + _IMPORTANCE_POSITIONS.size


def _dtype_code(dtype: np.dtype, name: str) -> int:
    code = _DTYPE_CODES.get((dtype.kind, dtype.itemsize))
    if code is None:
        supported = ", ".join(dt.name for dt in _DTYPES.values())
        raise ValueError(
            f"entry {name!r} has dtype {dtype}, which the codec does not carry; expected one of {supported}"
        )
    return code


def _wire_dtype(code: int, what: str) -> np.dtype:
    dtype = _DTYPES.get(code)
    if dtype is None:
        raise DecodeError(f"{what}: expected a dtype code in {sorted(_DTYPES)}, found {code}")
    return dtype


def _check_crc(stored: bytes | bytearray | memoryview, expected: int, what: str) -> None:
    found = zlib.crc32(stored)
    if found != expected:
        raise DecodeError(f"{what}: checksum mismatch (CRC32 {found:#010x}, expected {expected:#010x}): corrupt")


@dataclass
class _Section:
    codec: int
    stored: int
    raw: int
    crc: int = 0  # CRC32 of the stored bytes
    offset: int = 0  # start in the message, set once the table is complete


@dataclass
class _Entry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    numel: int
    mask_code: int
    rice_k: int
    n_kept: int
    mask: _Section
    wire: np.dtype
    values: _Section


@dataclass
class _ImportanceEntry:
    entry: int
    dtype: np.dtype
    wire: np.dtype
    values: _Section
    # Top-k entries only: how the positions of the k values sent are coded (a mask code), and their section.
    position_code: int = 0
    rice_k: int = 0
    n_top: int = 0
    positions: _Section | None = None


class _Reader:
    """Bounds-checked sequential reads from a byte buffer; a short read raises `DecodeError`."""

    def __init__(self, buf: memoryview, what: str) -> None:
        self.buf, self.pos, self.what = buf, 0, what

    def unpack(self, fmt: struct.Struct, field: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, field))

    def take(self, n: int, field: str) -> memoryview:
        if n > len(self.buf) - self.pos:
            raise DecodeError(
                f"{self.what} truncated: expected {n} bytes of {field} at offset {self.pos}, found "
                f"{len(self.buf) - self.pos}"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out
