"""Encode and decode TrainIns, TrainRes and model states: the only codec module that knows the message types."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.sparse.codec.container import _decode, _encode, _encode_options, _pack_scalars
from prunefl.sparse.codec.format import (
    _IMPORTANCE_MODE_CODES,
    _IMPORTANCE_MODES,
    _INS_SCALARS,
    _RES_SCALARS,
    _Kind,
)
from prunefl.sparse.codec.limits import _DEFAULT_LIMITS, DecodeLimits, _check_same_masks



def encode_train_ins(
    ins: TrainIns, include_masks: bool = True, *, values_dtype: str = "float32", level: int | None = 3
) -> bytes:
    """Encode a server → client message.

    Masked entries send only their kept values, so the server's stale values at pruned coordinates are not
    sent and decode as 0 (the client zeroes them anyway, spec §3.8).

    Parameters
    ----------
    ins : TrainIns
        The message; every key of ``ins.masks`` must be a float entry of ``ins.state`` with the same shape.
    include_masks : bool
        Send the masks (default: True). Pass False when the client already holds them (they did not change
        since the last message it received); it then decodes with ``known_masks``.
    values_dtype : {"float32", "float16"}
        Wire dtype of kept values (default: "float32"). float16 halves them at a relative error of at most
        2**-11 (absolute 2**-25 below 2**-14); finite values beyond ±65504 raise.
    level : int or None
        zstd level, from -7 to 22 (default: 3); None sends every section raw.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        An unknown option, a mask that does not fit its entry, an unsupported dtype, or a value float16
        cannot hold.

    Examples
    --------
    >>> ins = TrainIns(3, {"w": np.arange(4, dtype=np.float32)}, {"w": np.array([True, False, True, True])},
    ...                lr=0.1, local_steps=5, batch_size=10)
    >>> decode_train_ins(encode_train_ins(ins)).state["w"]
    array([0., 0., 2., 3.], dtype=float32)
    """
    mode = _IMPORTANCE_MODE_CODES.get(ins.importance_mode)
    if mode is None:
        raise ValueError(
            f"importance_mode must be one of {sorted(_IMPORTANCE_MODE_CODES)}, got {ins.importance_mode!r}"
        )
    scalars = _pack_scalars(
        _INS_SCALARS,
        "train-ins",
        int(ins.round),
        float(ins.lr),
        int(ins.local_steps),
        int(ins.batch_size),
        mode,
        int(bool(ins.upload_importance)),
    )
    options = _encode_options(values_dtype, "float32", level)
    return _encode(_Kind.TRAIN_INS, scalars, ins.state, ins.masks, include_masks, None, options)


def decode_train_ins(
    data: bytes | bytearray | memoryview,
    known_masks: Mapping[str, np.ndarray] | None = None,
    *,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    require_finite: bool = True,
    expected_dtypes: Mapping[str, np.dtype | str] | None = None,
) -> TrainIns:
    """Decode and validate a server → client message.

    Parameters
    ----------
    data : bytes-like
        The message.
    known_masks : Mapping[str, numpy.ndarray] or None
        Boolean masks the client holds; required for every entry whose mask the message omits, and then they
        must name exactly the masked entries (default: None). The returned ``masks`` reuse these arrays.
    limits : DecodeLimits
        Size limits (default: ``DecodeLimits()``).
    expected_shapes : Mapping[str, tuple of int] or None
        When given, the message must hold exactly these entries with these shapes (default: None).
    expected_dtypes : Mapping[str, numpy.dtype or str] or None
        When given, each entry it names must have this dtype (byte order aside), and that entry's importance
        at most ``max(4, itemsize)`` bytes an element; checked before anything is allocated (default: None).
    require_finite : bool
        Reject NaN and ±inf in float values (default: True).

    Returns
    -------
    TrainIns
        Fresh writable arrays; pruned coordinates are 0.

    Raises
    ------
    DecodeError
        On anything malformed, inconsistent or over a limit; the message says what was expected and found.

    Examples
    --------
    >>> ins = TrainIns(0, {"b": np.ones(2, np.float32)}, {}, lr=0.5, local_steps=1, batch_size=4)
    >>> decode_train_ins(encode_train_ins(ins)).lr
    0.5
    """
    msg = _decode(
        data, _Kind.TRAIN_INS, known_masks, limits, expected_shapes, require_finite, _dtypes(expected_dtypes)
    )
    round_, lr, local_steps, batch_size, mode, upload = msg.scalars
    return TrainIns(
        round=round_,
        state=msg.state,
        masks=msg.masks,
        lr=lr,
        local_steps=local_steps,
        batch_size=batch_size,
        importance_mode=_IMPORTANCE_MODES[mode],
        upload_importance=bool(upload),
    )


def encode_train_res(
    res: TrainRes,
    masks: Mapping[str, np.ndarray],
    *,
    include_masks: bool = False,
    values_dtype: str = "float32",
    importance_dtype: str = "float32",
    level: int | None = 3,
    importance_top_fraction: float = 1.0,
) -> bytes:
    """Encode a client → server message: kept values of masked entries, other entries dense, then importance.

    Parameters
    ----------
    res : TrainRes
        The reply; pruned coordinates of its state must be exactly 0 (spec §3.8), since only kept values are
        sent.
    masks : Mapping[str, numpy.ndarray]
        The masks in force this round (those of the `TrainIns` the client received).
    include_masks : bool
        Also send the masks (default: False: the server knows them). A reply whose ``masks`` is set (the client
        changed its own masks, FedDST) always sends those instead of ``masks``.
    values_dtype : {"float32", "float16"}
        Wire dtype of kept values (default: "float32"); see `encode_train_ins`.
    importance_dtype : {"float32", "float16"}
        Wire dtype of importance (default: "float32"). float16 flushes values below ~6e-8 to 0.
    level : int or None
        zstd level (default: 3); None sends every section raw.
    importance_top_fraction : float
        Fraction in (0, 1] of each importance entry to send (default: 1.0: all of it, dense). Below 1, only the
        ``ceil(fraction · n)`` largest values of each entry travel, with their positions; the decoder sets the
        others to 0. NaN importance then raises.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        As `encode_train_ins`, or a non-zero pruned coordinate, importance for an unknown entry or of another
        shape, ``importance_top_fraction`` outside (0, 1], or NaN importance with a fraction below 1.

    Examples
    --------
    >>> res = TrainRes(7, 50, {"w": np.array([0.0, 1.5], np.float32)}, 0.25, 0.01)
    >>> m = {"w": np.array([False, True])}
    >>> out = decode_train_res(encode_train_res(res, m), m)
    >>> out.client_id, out.state["w"]
    (7, array([0. , 1.5], dtype=float32))
    """
    scalars = _pack_scalars(
        _RES_SCALARS,
        "train-res",
        int(res.client_id),
        int(res.num_examples),
        float(res.train_loss),
        float(res.compute_wall_s),
        int(res.importance is not None),
    )
    options = _encode_options(values_dtype, importance_dtype, level, importance_top_fraction)
    if res.masks is not None:
        masks, include_masks = res.masks, True
    return _encode(_Kind.TRAIN_RES, scalars, res.state, masks, include_masks, res.importance, options)


def decode_train_res(
    data: bytes | bytearray | memoryview,
    masks: Mapping[str, np.ndarray] | None,
    *,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    require_finite: bool = True,
    expected_dtypes: Mapping[str, np.dtype | str] | None = None,
    own_masks: bool = False,
) -> TrainRes:
    """Decode and validate a client → server message.

    Parameters
    ----------
    data : bytes-like
        The message.
    masks : Mapping[str, numpy.ndarray] or None
        The masks the server sent this round; they must name exactly the entries the message masks (None: no
        entry may be masked), and a mask the reply carries must have the shape of the one sent.
    limits, expected_shapes, require_finite, expected_dtypes
        As in `decode_train_ins`. A server should pass the shapes and dtypes of the state it sent as
        ``expected_shapes`` and ``expected_dtypes``: they, not ``limits``, then bound the memory a reply can
        make it allocate.
    own_masks : bool
        Accept a reply that carries masks other than ``masks``: the client's own, for methods whose clients
        change masks (FedDST) (default: False: masks a reply carries must equal ``masks``, entry for entry).

    Returns
    -------
    TrainRes
        Fresh writable arrays; pruned coordinates are 0; ``importance`` is None unless the client sent it;
        ``masks`` is None unless the message carried masks (the client's own, FedDST).

    Raises
    ------
    DecodeError
        On anything malformed, inconsistent or over a limit, or masks other than ``masks`` without
        ``own_masks``.

    Examples
    --------
    >>> res = TrainRes(1, 10, {"w": np.ones(3, np.float32)}, 0.5, 0.1, importance={"w": np.ones(3, np.float32)})
    >>> decode_train_res(encode_train_res(res, {}), {}).importance["w"]
    array([1., 1., 1.], dtype=float32)
    """
    # The reply must mask exactly the entries ``masks`` names, with their shapes, whatever own_masks says; this
    # is checked on the table, before anything is allocated. Own masks may then differ from those sent in bits.
    msg = _decode(
        data, _Kind.TRAIN_RES, masks, limits, expected_shapes, require_finite, _dtypes(expected_dtypes),
        masked_names=set(masks or {}),
    )
    if msg.sent_masks and not own_masks:
        _check_same_masks(msg.masks, masks)
    client_id, num_examples, train_loss, compute_wall_s, has_importance = msg.scalars
    return TrainRes(
        client_id=client_id,
        num_examples=num_examples,
        state=msg.state,
        train_loss=train_loss,
        compute_wall_s=compute_wall_s,
        importance=msg.importance if has_importance else None,
        masks=msg.masks if msg.sent_masks else None,
    )


def encode_state(
    state: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    include_masks: bool = True,
    *,
    values_dtype: str = "float32",
    level: int | None = 3,
) -> bytes:
    """Encode a model state or update: kept values of masked entries (pruned coordinates dropped), others dense.

    Parameters
    ----------
    state : Mapping[str, numpy.ndarray]
        Entries to send.
    masks : Mapping[str, numpy.ndarray]
        Boolean mask per masked entry (a subset of ``state``'s keys, float entries only).
    include_masks : bool
        Send the masks (default: True); otherwise the receiver must pass them as ``known_masks``.
    values_dtype, level
        As in `encode_train_ins`.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        As `encode_train_ins`.

    Examples
    --------
    >>> data = encode_state({"w": np.zeros(8, np.float32)}, {"w": np.zeros(8, bool)}, level=None)
    >>> len(data)  # 36-byte header + 4-byte checksum + 58-byte table entry; an empty mask and no values: 0
    98
    """
    options = _encode_options(values_dtype, "float32", level)
    return _encode(_Kind.STATE, b"", state, masks, include_masks, None, options)


def decode_state(
    data: bytes | bytearray | memoryview,
    known_masks: Mapping[str, np.ndarray] | None = None,
    *,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    require_finite: bool = True,
    expected_dtypes: Mapping[str, np.dtype | str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Decode and validate a message written by `encode_state`.

    Parameters
    ----------
    data, known_masks, limits, expected_shapes, require_finite
        As in `decode_train_ins`.

    Returns
    -------
    state : dict[str, numpy.ndarray]
        Fresh writable arrays; pruned coordinates are 0.
    masks : dict[str, numpy.ndarray]
        The mask of every masked entry: decoded, or the array from ``known_masks``.

    Raises
    ------
    DecodeError
        On anything malformed, inconsistent or over a limit.

    Examples
    --------
    >>> m = {"w": np.array([[True, False], [False, True]])}
    >>> data = encode_state({"w": np.full((2, 2), 7, np.float32)}, m, include_masks=False)
    >>> decode_state(data, known_masks=m)[0]["w"]
    array([[7., 0.],
           [0., 7.]], dtype=float32)
    """
    msg = _decode(
        data, _Kind.STATE, known_masks, limits, expected_shapes, require_finite, _dtypes(expected_dtypes)
    )
    return msg.state, msg.masks


def _dtypes(expected: Mapping[str, np.dtype | str] | None) -> dict[str, np.dtype] | None:
    return None if expected is None else {name: np.dtype(dtype) for name, dtype in expected.items()}
