"""Decoder limits and the checks of header and table fields (and of encoder inputs) against the format."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from prunefl.errors import (
    ConfigError,
    DecodeError,
    DtypeMismatchError,
    EntriesMismatchError,
    MaskMismatchError,
    ScalarRangeError,
)
from prunefl.sparse.codec.format import (
    _IMPORTANCE_MODES,
    _IMPORTANCE_TOP_K_FLAG,
    _MAX_ELEMENTS_PER_ENTRY,
    _MAX_NDIM,
    _MAX_RICE_K,
    _Codec,
    _dtype_code,
    _Entry,
    _ImportanceEntry,
    _Kind,
    _MaskCode,
    _Section,
)



@dataclass(frozen=True)
class DecodeLimits:
    """Size limits a decoder enforces before it allocates (spec §10 item 1).

    Parameters
    ----------
    max_message_bytes : int
        Longest accepted message (default: 2 GiB).
    max_layers : int
        Most state entries in one message (default: 4096; ResNet-18 has 122).
    max_elements_per_layer : int
        Most elements in one entry (default: 64 Mi; at most 2**31, the format's limit, so that position
        arithmetic cannot overflow int64).
    max_total_elements : int
        Most elements over all state and importance entries (default: 512 Mi, 2 GiB of float32). A sparse
        message decodes to dense arrays, so this, not the message size, bounds the memory a decoder allocates;
        receivers that know the model should also pass ``expected_shapes``.
    max_decompressed_bytes : int
        Most bytes all zstd sections may decompress to, together (default: 2 GiB).
    max_table_bytes : int
        Longest layer table, after decompression (default: 16 MiB; ResNet-18's is about 6 kB). The table is
        also bounded by what its entry counts allow (65535-byte names, 32 dims).

    Raises
    ------
    prunefl.errors.ConfigError
        If a limit is not a non-negative int, or ``max_elements_per_layer`` exceeds 2**31.

    Examples
    --------
    >>> DecodeLimits(max_layers=256).max_layers
    256
    """

    max_message_bytes: int = 2 * 1024**3
    max_layers: int = 4096
    max_elements_per_layer: int = 64 * 1024**2
    max_total_elements: int = 512 * 1024**2
    max_decompressed_bytes: int = 2 * 1024**3
    max_table_bytes: int = 16 * 1024**2

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_layers",
            "max_elements_per_layer",
            "max_total_elements",
            "max_decompressed_bytes",
            "max_table_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"DecodeLimits.{name} must be a non-negative int, got {value!r}")
        if self.max_elements_per_layer > _MAX_ELEMENTS_PER_ENTRY:
            raise ConfigError(
                f"DecodeLimits.max_elements_per_layer must be <= 2**31 (format limit), "
                f"got {self.max_elements_per_layer}"
            )


_DEFAULT_LIMITS = DecodeLimits()


def _check_scalars(kind: _Kind, values: tuple, n_importance: int, require_finite: bool) -> tuple:
    """Check the kind's scalar fields; return them as Python values."""
    if kind == _Kind.TRAIN_INS:
        round_, lr, local_steps, batch_size, mode, upload = values
        _check_non_negative(round=round_, local_steps=local_steps, batch_size=batch_size)
        if not (math.isfinite(lr) and lr >= 0.0):
            raise DecodeError(f"expected a finite lr >= 0, found {lr}")
        if mode >= len(_IMPORTANCE_MODES):
            raise DecodeError(f"expected an importance_mode code below {len(_IMPORTANCE_MODES)}, found {mode}")
        _check_flag("upload_importance", upload)
    elif kind == _Kind.TRAIN_RES:
        client_id, num_examples, train_loss, compute_wall_s, has_importance = values
        _check_non_negative(client_id=client_id, num_examples=num_examples)
        if require_finite and not math.isfinite(train_loss):
            raise DecodeError(f"expected a finite train_loss, found {train_loss}")
        if not (math.isfinite(compute_wall_s) and compute_wall_s >= 0.0):
            raise DecodeError(f"expected a finite compute_wall_s >= 0, found {compute_wall_s}")
        _check_flag("has_importance", has_importance)
        if n_importance and not has_importance:
            raise DecodeError(f"has_importance is 0 but the table has {n_importance} importance entries")
    if n_importance and kind != _Kind.TRAIN_RES:
        raise DecodeError(f"a {kind.name} message carries no importance, found {n_importance} entries")
    return values


def _max_rice_k(numel: int) -> int:
    """Largest Rice parameter accepted for a layer of ``numel`` weights.

    Every gap is below ``numel``, so with ``k = numel.bit_length()`` every quotient is 0 and a larger ``k``
    only adds zero bits; the encoder's choice (at most one above Golomb's optimum, itself below
    ``log2(numel)``) never exceeds it.
    """
    return min(_MAX_RICE_K, numel.bit_length())


def _check_non_negative(**fields: int) -> None:
    for name, value in fields.items():
        if value < 0:
            raise ScalarRangeError(f"expected {name} >= 0, found {value}", name)


def _check_flag(name: str, value: int) -> None:
    if value not in (0, 1):
        raise DecodeError(f"expected {name} 0 or 1, found {value}")


def _check_section_codec(section: _Section, what: str, allow_shuffle: bool) -> None:
    allowed = (_Codec.RAW, _Codec.ZSTD, _Codec.SHUFFLED_ZSTD) if allow_shuffle else (_Codec.RAW, _Codec.ZSTD)
    if section.codec not in allowed:
        raise DecodeError(f"{what}: expected a codec in {[int(c) for c in allowed]}, found {section.codec}")
    if section.codec == _Codec.RAW and section.stored != section.raw:
        raise DecodeError(f"{what}: raw section of {section.raw} bytes is stored as {section.stored}")
    if section.codec != _Codec.RAW and not 0 < section.stored < section.raw:
        # The encoder keeps zstd only where it shrinks a section; anything else is malformed.
        raise DecodeError(
            f"{what}: expected a compressed size in (0, {section.raw}), found {section.stored}"
        )


def _check_entries(
    entries: list[_Entry],
    importance: list[_ImportanceEntry],
    known_masks: Mapping[str, np.ndarray] | None,
    expected_shapes: Mapping[str, tuple[int, ...]] | None,
    expected_dtypes: Mapping[str, np.dtype] | None = None,
    masked_names: Collection[str] | None = None,
) -> None:
    """Check names, dtypes, counts and section lengths of the table against each other and the caller's data.

    ``expected_dtypes`` (when given) fixes each named entry's dtype and caps its importance at
    ``max(4, itemsize)`` bytes an element; ``masked_names`` (when given) is the exact set of masked entries.
    Both are checked here, before any section is read, so that they bound what the decode allocates.
    """
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise DecodeError(f"expected unique entry names, found duplicates {duplicates}")
    if expected_shapes is not None:
        expected = {name: tuple(int(s) for s in shape) for name, shape in expected_shapes.items()}
        found = {e.name: e.shape for e in entries}
        if expected != found:
            missing = sorted(set(expected) - set(found))
            unexpected = sorted(set(found) - set(expected))
            reshaped = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])
            raise EntriesMismatchError(
                f"entries differ from expected_shapes: missing {missing}, unexpected {unexpected}, "
                f"other shape {[(n, found[n], expected[n]) for n in reshaped]} (found, expected)",
                tuple(missing), tuple(unexpected), tuple(reshaped),
            )
    if masked_names is not None:
        found_masked = {e.name for e in entries if e.mask_code != _MaskCode.DENSE}
        if found_masked != set(masked_names):
            raise MaskMismatchError(
                f"message masks entries {sorted(found_masked)}, the server sent masks for {sorted(masked_names)}; "
                "a reply must mask exactly the entries the server masked"
            )
        for e in entries:
            if e.mask_code != _MaskCode.DENSE and known_masks is not None:
                sent_shape = tuple(int(n) for n in np.shape(known_masks[e.name]))
                if sent_shape != e.shape:
                    raise MaskMismatchError(
                        f"entry {e.name!r}: the server sent a mask of shape {sent_shape}, the reply has shape {e.shape}"
                    )
    if expected_dtypes is not None:
        wanted = {name: np.dtype(dtype) for name, dtype in expected_dtypes.items()}
        for e in entries:
            want = wanted.get(e.name)
            if want is not None and (e.dtype.kind, e.dtype.itemsize) != (want.kind, want.itemsize):
                raise DtypeMismatchError(f"entry {e.name!r}: expected dtype {want}, found {e.dtype}")
        for imp in importance:
            name = entries[imp.entry].name  # the index was checked against n_entries
            cap = max(4, wanted[name].itemsize) if name in wanted else 8
            if imp.dtype.itemsize > cap:
                raise DecodeError(
                    f"importance of {name!r}: expected at most {cap} bytes an element, found dtype {imp.dtype}"
                )
    uses_known = False
    for e in entries:
        what = f"entry {e.name!r}"
        if not e.name:
            raise DecodeError("expected non-empty entry names, found an empty one")
        if e.mask_code not in set(_MaskCode):
            raise DecodeError(f"{what}: expected a mask code in 0..{max(_MaskCode)}, found {e.mask_code}")
        if e.n_kept > e.numel:
            raise DecodeError(f"{what}: {e.n_kept} kept coordinates in a shape of {e.numel} elements")
        rice = e.mask_code in (_MaskCode.RICE_KEPT, _MaskCode.RICE_PRUNED)
        if e.rice_k > (_max_rice_k(e.numel) if rice else 0):
            raise DecodeError(f"{what}: expected rice k <= {_max_rice_k(e.numel) if rice else 0}, found {e.rice_k}")
        _check_section_codec(e.mask, f"{what} mask", allow_shuffle=False)
        _check_section_codec(e.values, f"{what} values", allow_shuffle=True)
        if e.mask_code == _MaskCode.DENSE:
            if e.n_kept != e.numel or e.wire != e.dtype or e.mask.raw:
                raise DecodeError(
                    f"{what}: a dense entry needs n_kept = {e.numel}, wire dtype {e.dtype} and no mask, found "
                    f"{e.n_kept}, {e.wire} and {e.mask.raw} mask bytes"
                )
            continue
        if e.dtype.kind != "f" or e.wire.kind != "f":
            raise DecodeError(f"{what}: a masked entry must be float, found dtype {e.dtype}, wire {e.wire}")
        _check_mask_bytes(e.mask_code, e.rice_k, e.n_kept, e.numel, e.mask.raw, what, "mask")
        if e.mask_code == _MaskCode.KNOWN:
            uses_known = True
            _check_known_mask(e, known_masks)
    if uses_known:
        masked = {e.name for e in entries if e.mask_code != _MaskCode.DENSE}
        extra = sorted(set(known_masks or {}) - masked)
        if extra:
            raise DecodeError(f"known masks {extra} are not masked entries of the message")
    seen: set[int] = set()
    for imp in importance:
        e = entries[imp.entry]
        what = f"importance of {e.name!r}"
        if imp.entry in seen:
            raise DecodeError(f"expected one importance entry per state entry, found two for {e.name!r}")
        seen.add(imp.entry)
        if imp.dtype.kind != "f" or imp.wire.kind != "f":
            raise DecodeError(f"{what}: expected float dtypes, found {imp.dtype} (wire {imp.wire})")
        _check_section_codec(imp.values, what, allow_shuffle=True)
        if imp.positions is None:
            continue
        positions_what = f"{what} positions"
        if imp.position_code not in (_MaskCode.ALL_ONES, _MaskCode.BITMASK, _MaskCode.RICE_KEPT,
                                     _MaskCode.RICE_PRUNED):
            raise DecodeError(
                f"{positions_what}: expected a position code in 2..{max(_MaskCode)}, found {imp.position_code}"
            )
        if imp.n_top > e.numel:
            raise DecodeError(f"{positions_what}: {imp.n_top} values in a shape of {e.numel} elements")
        rice = imp.position_code in (_MaskCode.RICE_KEPT, _MaskCode.RICE_PRUNED)
        k_max = _max_rice_k(e.numel) if rice else 0
        if imp.rice_k > k_max:
            raise DecodeError(f"{positions_what}: expected rice k <= {k_max}, found {imp.rice_k}")
        _check_section_codec(imp.positions, positions_what, allow_shuffle=False)
        _check_mask_bytes(imp.position_code, imp.rice_k, imp.n_top, e.numel, imp.positions.raw, what, "positions")


def _check_mask_bytes(code: int, rice_k: int, n_kept: int, numel: int, raw: int, what: str, noun: str) -> None:
    """Check the raw length of a mask (or positions) section against its code and counts."""
    expected: tuple[int, int]  # inclusive range of the raw length
    if code in (_MaskCode.KNOWN, _MaskCode.ALL_ONES):
        expected = (0, 0)
        if code == _MaskCode.ALL_ONES and n_kept != numel:
            raise DecodeError(f"{what}: all-ones mask but {n_kept} of {numel} kept")
    elif code == _MaskCode.BITMASK:
        expected = ((numel + 7) // 8,) * 2
    else:
        # [ceil(m·k/8) remainder bytes][unary: m one bits and Σ q <= (n_total - m) >> k zero bits]
        m = n_kept if code == _MaskCode.RICE_KEPT else numel - n_kept
        if 2 * m > numel:
            # Rice codes the minority side (the encoder: at most 35 % of the layer); more codes would only make
            # the decode allocate more (4 bytes a position) for nothing.
            raise DecodeError(
                f"{what}: {m} Rice-coded {noun} positions in a layer of {numel}; only the minority side (at most "
                "half) is coded this way"
            )
        remainder_bytes = (m * rice_k + 7) // 8
        expected = (remainder_bytes + (m + 7) // 8, remainder_bytes + (m + ((numel - m) >> rice_k) + 7) // 8)
    if not expected[0] <= raw <= expected[1]:
        raise DecodeError(
            f"{what}: expected {expected[0]}..{expected[1]} {noun} bytes for mask code {_MaskCode(code).name}, "
            f"found {raw}"
        )


def _check_same_masks(found: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray] | None) -> None:
    """Check that the masks a reply carries are the ones the server sent: same names, same bits."""
    sent = sent or {}
    if set(found) != set(sent):
        raise MaskMismatchError(
            f"reply masks entries {sorted(found)}, the server sent masks for {sorted(sent)}; a client may "
            "change masks only where the method allows it (own_masks)"
        )
    changed = sorted(n for n in found if not np.array_equal(found[n], np.asarray(sent[n])))  # shape and bits
    if changed:
        raise MaskMismatchError(
            f"reply carries masks for {changed} that differ from those the server sent; a client may change masks "
            "only where the method allows it (own_masks)"
        )


def _check_known_mask(e: _Entry, known_masks: Mapping[str, np.ndarray] | None) -> None:
    if known_masks is None or e.name not in known_masks:
        raise DecodeError(f"entry {e.name!r}: the message omits its mask, and known_masks has none")
    mask = np.asarray(known_masks[e.name])
    if mask.dtype != np.bool_ or mask.shape != e.shape:
        raise DecodeError(
            f"entry {e.name!r}: expected a bool known mask of shape {e.shape}, found {mask.dtype} {mask.shape}"
        )
    found = int(np.count_nonzero(mask))
    if found != e.n_kept:
        raise DecodeError(f"entry {e.name!r}: message has {e.n_kept} kept values, the known mask keeps {found}")


def _check_encode_inputs(
    state: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    importance: Mapping[str, np.ndarray] | None,
) -> None:
    if len(state) >= _IMPORTANCE_TOP_K_FLAG:  # the importance entry field holds the index in 31 bits
        raise ValueError(f"at most 2**31 - 1 entries fit the format, got {len(state)}")
    for name, value in state.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"entry names must be non-empty str, got {name!r}")
        try:
            n_name_bytes = len(name.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"entry name {name!r} is not valid UTF-8: {exc.reason}") from None
        if n_name_bytes > 0xFFFF:
            raise ValueError(f"entry name {name[:40]!r}... is {n_name_bytes} bytes, above 65535")
        arr = np.asarray(value)
        _dtype_code(arr.dtype, name)
        if arr.ndim > _MAX_NDIM or arr.size > _MAX_ELEMENTS_PER_ENTRY:
            raise ValueError(
                f"entry {name!r} has shape {arr.shape}; at most {_MAX_NDIM} dims and 2**31 elements fit the format"
            )
    unknown = sorted(set(masks) - set(state))
    if unknown:
        raise ValueError(f"masks {unknown} name no state entry")
    for name, mask in masks.items():
        mask_arr, arr = np.asarray(mask), np.asarray(state[name])
        if mask_arr.dtype != np.bool_ or mask_arr.shape != arr.shape:
            raise ValueError(
                f"mask of {name!r} must be bool of shape {arr.shape}, got {mask_arr.dtype} {mask_arr.shape}"
            )
        if arr.dtype.kind != "f":
            raise ValueError(f"masked entry {name!r} must be float, got {arr.dtype}")
    if importance is not None:
        for name, value in importance.items():
            arr = np.asarray(value)
            if name not in state or arr.shape != np.shape(state[name]):
                raise ValueError(
                    f"importance of {name!r} (shape {arr.shape}) must match a state entry of the same shape"
                )
            if arr.dtype.kind != "f":
                raise ValueError(f"importance of {name!r} must be float, got {arr.dtype}")
            _dtype_code(arr.dtype, name)
