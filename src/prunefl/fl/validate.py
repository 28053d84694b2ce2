"""The checks a client's reply must pass before the server aggregates it: one function per check, one reason each.

A server must never let one faulty or hostile reply change the global model. The round protocol
(:meth:`prunefl.fl.round.RoundProtocol.aggregate_train`) runs these checks on every reply before anything on the
server changes, drops the replies that fail with a :class:`Rejection` (logged, and counted in the round's metrics
row), and aggregates the rest. The checks, in the order they run, and the reason each rejection carries:

=====================  ==================================================================================
reason                 rejected when
=====================  ==================================================================================
``not-selected``       the reply comes from a participant the round did not select
``duplicate``          a second reply from the same participant in one round (the first one counts)
``other-round``        the transport says the reply answers another round (:attr:`TrainReply.round`)
``oversize``           the reply has more bytes than any honest reply to the instruction sent can have
                       (:func:`max_reply_bytes`); checked before it is decoded
``extras``             the arrays a method's client hook uploads beside the weights (:attr:`TrainReply.extras`)
                       are not numeric arrays, hold NaN or ±inf, or take more bytes than the bound above or
                       64 MiB, whichever is larger (the online baseline's samples need not scale with the model)
``decode``             the codec rejects the bytes (malformed, corrupt, over a limit)
``client-id``          the reply claims another client id, or a negative one
``missing-layer``      a state entry the server sent is absent
``extra-layer``        the reply has an entry the server did not send
``shape``              an entry's shape differs from the one sent
``dtype``              an entry's dtype differs from the one sent
``mask``               the reply carries masks other than the ones sent (methods whose clients do not own
                       masks); for methods whose clients change their masks (FedDST,
                       ``Method.clients_change_masks``): masks of other names or shapes, or a layer whose
                       kept count differs from the one sent (their drop-and-grow swaps weights one for one)
``sample-count``       ``num_examples`` is not in 1..K·B: the protocol defines it as the samples processed,
                       K·B (:func:`prunefl.fl.client.client_step`), so no honest client reports more, and one
                       that reports more would outweigh the others; a participant known to hold no sample
                       (``partition_sizes``) may report none. A partition smaller than K·B is cycled, so its
                       size is no bound on the samples processed.
``bn-stats``           a BatchNorm ``running_var`` is negative or not finite, a ``running_mean`` is not
                       finite, or ``num_batches_tracked`` is negative
``nan`` / ``inf``      a state value or the training loss is NaN / ±inf
``importance``         importance (accumulated squared gradients, spec §3.2) was not asked for, is missing
                       when asked for, or has a negative, NaN, infinite or absurd (> ``max_importance``) value
``update-norm``        finite but absurd weights: for some float entry e,
                       ‖w_e − base_e‖₂ > ``max_update_norm_ratio`` · (‖base_e‖₂ + 1), where base_e is the
                       state sent (⊙ its mask for a prunable weight: what the client started from)
=====================  ==================================================================================

The update-norm bound is relative to the entry's norm, plus 1 so that an entry sent as zeros (a bias at
initialisation) may still move by up to the ratio. Honest updates are usually small but need not be
(measured, largest ratio over clients and layers): the embedded default preset (``fmnist-conv2``, PyTorch
initialisation, lr 0.25) 1.4 in round 0 and below 1 afterwards; digits with the MLP at lr 0.25 0.35, FedDST at
lr 1 1.2; but Fashion-MNIST with the official initialisation, which diverges at lr 0.25 (the preset says so),
2.2e4 in its first round, from clients that are merely unlucky, not hostile. The default ratio, 1e6
(``fl.max_update_norm_ratio``), therefore rejects no honest run and only stops absurd values (1e20 weights,
values near float32's overflow); against subtler attacks a user who cannot trust devices should choose a
robust aggregation (``fl.aggregation = "median"`` or ``"trimmed-mean"``,
:func:`prunefl.fl.aggregate.robust_aggregate`), or a smaller ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from prunefl.errors import (
    DecodeError,
    DtypeMismatchError,
    EntriesMismatchError,
    MaskMismatchError,
    ScalarRangeError,
)
from prunefl.fl.links import TrainReply
from prunefl.fl.messages import TrainIns, TrainRes

__all__ = [
    "REASONS",
    "R_NOT_SELECTED",
    "R_DUPLICATE",
    "R_OTHER_ROUND",
    "R_OVERSIZE",
    "R_EXTRAS",
    "R_DECODE",
    "R_CLIENT_ID",
    "R_MISSING_LAYER",
    "R_EXTRA_LAYER",
    "R_SHAPE",
    "R_DTYPE",
    "R_MASK",
    "R_SAMPLE_COUNT",
    "R_BN_STATS",
    "R_NAN",
    "R_INF",
    "R_IMPORTANCE",
    "R_UPDATE_NORM",
    "MAX_EXTRAS_BYTES",
    "MAX_IMPORTANCE",
    "Rejection",
    "ReplyExpectation",
    "expect_replies",
    "max_reply_bytes",
    "check_envelope",
    "check_extras",
    "decode_rejection",
    "validate_reply",
    "check_client_id",
    "check_layers",
    "check_shapes",
    "check_dtypes",
    "check_masks",
    "check_sample_count",
    "check_bn_stats",
    "check_finite",
    "check_importance",
    "check_update_norm",
]

# --- reason codes (kebab-case, as they appear in the metrics row) ---
R_NOT_SELECTED = "not-selected"
R_DUPLICATE = "duplicate"
R_OTHER_ROUND = "other-round"
R_OVERSIZE = "oversize"
R_EXTRAS = "extras"
R_DECODE = "decode"
R_CLIENT_ID = "client-id"
R_MISSING_LAYER = "missing-layer"
R_EXTRA_LAYER = "extra-layer"
R_SHAPE = "shape"
R_DTYPE = "dtype"
R_MASK = "mask"
R_SAMPLE_COUNT = "sample-count"
R_BN_STATS = "bn-stats"
R_NAN = "nan"
R_INF = "inf"
R_IMPORTANCE = "importance"
R_UPDATE_NORM = "update-norm"
REASONS = (
    R_NOT_SELECTED, R_DUPLICATE, R_OTHER_ROUND, R_OVERSIZE, R_EXTRAS, R_DECODE, R_CLIENT_ID, R_MISSING_LAYER, R_EXTRA_LAYER,
    R_SHAPE, R_DTYPE, R_MASK, R_SAMPLE_COUNT, R_BN_STATS, R_NAN, R_INF, R_IMPORTANCE, R_UPDATE_NORM,
)

MAX_EXTRAS_BYTES = 64 * 1024**2  # extras may always take this much, whatever the model's size
MAX_IMPORTANCE = 1e30  # per value; float32 holds 3.4e38, and the server sums uploads over clients and rounds

# Table bytes of one entry besides its name (fixed fields, up to 32 dims of 8 bytes, an importance entry),
# and of a message besides its table: both generous, so the bound is never below an honest reply.
_ENTRY_OVERHEAD_BYTES = 512
_MESSAGE_OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class Rejection:
    """A reply the server dropped, and why.

    Attributes
    ----------
    participant : int
        Who sent it (the id the engine addresses: a client index, a Flower partition).
    reason : str
        One of :data:`REASONS` (the module docstring's table).
    detail : str
        What was expected and what was found, for the log.
    """

    participant: int
    reason: str
    detail: str


@dataclass(frozen=True)
class ReplyExpectation:
    """What a valid reply to one round's instruction looks like; built once per round by :func:`expect_replies`.

    Attributes
    ----------
    round : int
    shapes : dict[str, tuple[int, ...]]
        Shape of every state entry sent.
    dtypes : dict[str, numpy.dtype]
        Dtype of every state entry sent.
    masks : Mapping[str, numpy.ndarray]
        The masks sent.
    base : dict[str, torch.Tensor]
        Float entries as the clients start from them (prunable weights ⊙ mask), in their dtype.
    base_norms : dict[str, float]
        ‖base_e‖₂ per float entry.
    max_examples : int
        K·B: the samples an honest client processes in the round.
    upload_importance : bool
        Whether the instruction asked for importance.
    own_masks : bool
        Whether clients may send their own masks (``Method.clients_change_masks``).
    max_bytes : int
        :func:`max_reply_bytes` of the instruction.
    max_update_norm_ratio : float
        The update-norm bound's ratio; 0 disables that check.
    max_importance : float
        Largest importance value accepted.
    """

    round: int
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    masks: Mapping[str, np.ndarray]
    base: dict[str, torch.Tensor]
    base_norms: dict[str, float]
    max_examples: int
    upload_importance: bool
    own_masks: bool
    max_bytes: int
    max_update_norm_ratio: float
    max_importance: float = MAX_IMPORTANCE


def expect_replies(
    ins: TrainIns, own_masks: bool, max_update_norm_ratio: float, max_importance: float = MAX_IMPORTANCE
) -> ReplyExpectation:
    """Describe the valid replies to ``ins`` (shapes, dtypes, masks, bounds) once, for every reply of the round.

    Examples
    --------
    >>> ins = TrainIns(2, {"w": np.array([3.0, 4.0], np.float32)}, {"w": np.array([True, False])}, 0.1, 5, 4)
    >>> e = expect_replies(ins, own_masks=False, max_update_norm_ratio=100.0)
    >>> e.max_examples, e.base["w"].tolist(), e.base_norms["w"]
    (20, [3.0, 0.0], 3.0)
    """
    base: dict[str, torch.Tensor] = {}
    for name, value in ins.state.items():
        arr = np.asarray(value)
        if arr.dtype.kind != "f" or name.endswith("num_batches_tracked"):
            continue
        t = torch.from_numpy(arr)
        if name in ins.masks:
            t = t * torch.from_numpy(np.asarray(ins.masks[name], dtype=np.bool_))
        base[name] = t
    return ReplyExpectation(
        round=ins.round,
        shapes={k: tuple(np.shape(v)) for k, v in ins.state.items()},
        dtypes={k: np.asarray(v).dtype for k, v in ins.state.items()},
        masks=ins.masks,
        base=base,
        base_norms={k: float(torch.linalg.vector_norm(v)) for k, v in base.items()},
        max_examples=ins.local_steps * ins.batch_size,
        upload_importance=ins.upload_importance,
        own_masks=own_masks,
        max_bytes=max_reply_bytes(ins),
        max_update_norm_ratio=max_update_norm_ratio,
        max_importance=max_importance,
    )


def max_reply_bytes(ins: TrainIns) -> int:
    """Bytes no honest codec reply to ``ins`` exceeds.

    Per entry of n elements: its values raw (at most n · max(itemsize, 4) bytes: the codec compresses a section
    only where that makes it smaller, and sends float16 or float32 values of float entries), a mask of at most
    a bitmask (n/8 bytes: a client's own masks; Rice coding is chosen only when smaller), dense float32
    importance and its positions (n · 4 + n/8 bytes), and its table entry; plus the header.

    Examples
    --------
    >>> ins = TrainIns(0, {"w": np.zeros(80, np.float32)}, {"w": np.ones(80, bool)}, 0.1, 1, 1)
    >>> max_reply_bytes(ins)  # 1024 + 512 + 1 ("w") + 80·4 + 10 + 1 + 80·4 + 10 + 1
    2199
    """
    total = _MESSAGE_OVERHEAD_BYTES
    for name, value in ins.state.items():
        arr = np.asarray(value)
        n = int(arr.size)
        bitmask = n // 8 + 1
        total += _ENTRY_OVERHEAD_BYTES + len(name.encode("utf-8"))
        total += n * max(arr.dtype.itemsize, 4) + bitmask + n * 4 + bitmask
    return total


def check_envelope(participant: int, reply: TrainReply, expected: ReplyExpectation) -> Rejection | None:
    """Check what is known before decoding: the round the transport says the reply answers, its size, its extras.

    Examples
    --------
    >>> ins = TrainIns(3, {"b": np.zeros(2, np.float32)}, {}, 0.1, 1, 1)
    >>> check_envelope(0, TrainReply(b"", round=2), expect_replies(ins, False, 100.0)).reason
    'other-round'
    """
    if reply.round is not None and reply.round != expected.round:
        return Rejection(participant, R_OTHER_ROUND, f"reply for round {reply.round}, this is round {expected.round}")
    data = reply.data
    n_bytes = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 0  # others: the codec says why
    if n_bytes > expected.max_bytes:
        return Rejection(
            participant, R_OVERSIZE,
            f"reply of {n_bytes} bytes, above the {expected.max_bytes} bytes any reply to the instruction sent can take",
        )
    return check_extras(participant, reply, expected)


def check_extras(participant: int, reply: TrainReply, expected: ReplyExpectation) -> Rejection | None:
    """The extra arrays a reply uploads must be numeric, finite, and within max(:func:`max_reply_bytes`, 64 MiB).

    Which arrays a method expects is the method's business (the online baseline's samples and labels); this
    only keeps them from being of any type, non-finite, or large enough to exhaust the server's memory.

    Examples
    --------
    >>> ins = TrainIns(3, {"b": np.zeros(2, np.float32)}, {}, 0.1, 1, 1)
    >>> bad = TrainReply(b"", {"x": np.array([1.0, np.nan])}, round=3)
    >>> check_extras(0, bad, expect_replies(ins, False, 100.0)).detail
    "extra 'x' has 1 NaN or infinite values"
    """
    if reply.extras is None:
        return None
    total, limit = 0, max(expected.max_bytes, MAX_EXTRAS_BYTES)
    for name, value in reply.extras.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            found = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            return Rejection(participant, R_EXTRAS, f"extra {name!r} must be a numeric array, got {found}")
        total += int(value.nbytes)
        if total > limit:
            return Rejection(participant, R_EXTRAS, f"extras take more than the {limit} bytes a reply may add")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int(np.count_nonzero(~np.isfinite(value)))
            return Rejection(participant, R_EXTRAS, f"extra {name!r} has {bad} NaN or infinite values")
    return None


def decode_rejection(participant: int, error: DecodeError) -> Rejection:
    """The rejection for a reply the codec refused: a precise reason where the codec's error names one.

    Examples
    --------
    >>> decode_rejection(4, ScalarRangeError("expected num_examples >= 0, found -3", "num_examples")).reason
    'sample-count'
    >>> decode_rejection(4, DecodeError("truncated")).reason
    'decode'
    """
    reason = R_DECODE
    if isinstance(error, EntriesMismatchError):
        reason = R_MISSING_LAYER if error.missing else R_EXTRA_LAYER if error.unexpected else R_SHAPE
    elif isinstance(error, MaskMismatchError):
        reason = R_MASK
    elif isinstance(error, DtypeMismatchError):
        reason = R_DTYPE
    elif isinstance(error, ScalarRangeError):
        reason = {"num_examples": R_SAMPLE_COUNT, "client_id": R_CLIENT_ID}.get(error.field, R_DECODE)
    return Rejection(participant, reason, str(error))


def validate_reply(
    participant: int, res: TrainRes, expected: ReplyExpectation, partition_size: int | None = None
) -> Rejection | None:
    """Run every check on a decoded reply, in the module docstring's order; the first that fails rejects it.

    Parameters
    ----------
    participant : int
        Who sent ``res``.
    res : TrainRes
        The decoded reply.
    expected : ReplyExpectation
        The round's :func:`expect_replies`.
    partition_size : int or None
        Training samples ``participant`` holds, when known (default: None: unknown).

    Returns
    -------
    Rejection or None
        None: the reply may be aggregated.

    Examples
    --------
    >>> ins = TrainIns(0, {"b": np.zeros(2, np.float32)}, {}, 0.1, 2, 3)
    >>> e = expect_replies(ins, own_masks=False, max_update_norm_ratio=100.0)
    >>> validate_reply(1, TrainRes(1, 6, {"b": np.ones(2, np.float32)}, 0.5, 0.0), e) is None
    True
    >>> validate_reply(1, TrainRes(1, 600, {"b": np.ones(2, np.float32)}, 0.5, 0.0), e).reason
    'sample-count'
    """
    checks = (
        (R_CLIENT_ID, lambda: check_client_id(res, participant)),
        (None, lambda: check_layers(res, expected)),
        (R_SHAPE, lambda: check_shapes(res, expected)),
        (R_DTYPE, lambda: check_dtypes(res, expected)),
        (R_MASK, lambda: check_masks(res, expected)),
        (R_SAMPLE_COUNT, lambda: check_sample_count(res, expected, partition_size)),
        (R_BN_STATS, lambda: check_bn_stats(res)),
        (None, lambda: check_finite(res)),
        (R_IMPORTANCE, lambda: check_importance(res, expected)),
        (R_UPDATE_NORM, lambda: check_update_norm(res, expected)),
    )
    for reason, check in checks:
        found = check()
        if found is None:
            continue
        if isinstance(found, tuple):  # checks with several reasons return (reason, detail)
            return Rejection(participant, found[0], found[1])
        assert reason is not None  # single-reason checks return their detail only
        return Rejection(participant, reason, found)
    return None


def check_client_id(res: TrainRes, participant: int) -> str | None:
    """The reply must claim the participant's own client id.

    >>> check_client_id(TrainRes(2, 1, {}, 0.0, 0.0), 3)
    'participant 3 replied as client 2'
    """
    if res.client_id != participant:
        return f"participant {participant} replied as client {res.client_id}"
    return None


def check_layers(res: TrainRes, expected: ReplyExpectation) -> tuple[str, str] | None:
    """The reply must hold exactly the entries sent: ("missing-layer" | "extra-layer", detail) otherwise.

    >>> ins = TrainIns(0, {"a": np.zeros(1, np.float32)}, {}, 0.1, 1, 1)
    >>> check_layers(TrainRes(0, 1, {}, 0.0, 0.0), expect_replies(ins, False, 100.0))
    ('missing-layer', "entries ['a'] are missing")
    """
    missing = sorted(set(expected.shapes) - set(res.state))
    if missing:
        return R_MISSING_LAYER, f"entries {missing} are missing"
    extra = sorted(set(res.state) - set(expected.shapes))
    if extra:
        return R_EXTRA_LAYER, f"entries {extra} were not sent"
    return None


def check_shapes(res: TrainRes, expected: ReplyExpectation) -> str | None:
    """Every entry must have the shape sent.

    >>> ins = TrainIns(0, {"a": np.zeros(2, np.float32)}, {}, 0.1, 1, 1)
    >>> check_shapes(TrainRes(0, 1, {"a": np.zeros(3, np.float32)}, 0.0, 0.0), expect_replies(ins, False, 1.0))
    "entry 'a' has shape (3,), expected (2,)"
    """
    for name, value in res.state.items():
        if np.shape(value) != expected.shapes[name]:
            return f"entry {name!r} has shape {np.shape(value)}, expected {expected.shapes[name]}"
    return None


def check_dtypes(res: TrainRes, expected: ReplyExpectation) -> str | None:
    """Every entry must have the dtype sent.

    >>> ins = TrainIns(0, {"a": np.zeros(2, np.float32)}, {}, 0.1, 1, 1)
    >>> check_dtypes(TrainRes(0, 1, {"a": np.zeros(2, np.float64)}, 0.0, 0.0), expect_replies(ins, False, 1.0))
    "entry 'a' has dtype float64, expected float32"
    """
    for name, value in res.state.items():
        if np.asarray(value).dtype != expected.dtypes[name]:
            return f"entry {name!r} has dtype {np.asarray(value).dtype}, expected {expected.dtypes[name]}"
    return None


def check_masks(res: TrainRes, expected: ReplyExpectation) -> str | None:
    """A reply's masks, if any, must be the ones sent; a client that owns its masks must keep each layer's count.

    Examples
    --------
    >>> ins = TrainIns(0, {"w": np.zeros(3, np.float32)}, {"w": np.array([True, False, True])}, 0.1, 1, 1)
    >>> moved = TrainRes(0, 1, {"w": np.zeros(3, np.float32)}, 0.0, 0.0, masks={"w": np.array([True, True, False])})
    >>> check_masks(moved, expect_replies(ins, own_masks=True, max_update_norm_ratio=1.0)) is None  # 2 kept
    True
    >>> check_masks(moved, expect_replies(ins, own_masks=False, max_update_norm_ratio=1.0))
    "masks of ['w'] differ from those sent"
    """
    if res.masks is None:
        return None
    if set(res.masks) != set(expected.masks):
        return f"masks for {sorted(res.masks)}, the server sent masks for {sorted(expected.masks)}"
    for name, mask in res.masks.items():
        arr = np.asarray(mask)
        if arr.dtype != np.bool_ or arr.shape != np.shape(expected.masks[name]):
            return f"mask {name!r} is {arr.dtype} {arr.shape}, expected bool {np.shape(expected.masks[name])}"
    if not expected.own_masks:
        changed = sorted(n for n, m in res.masks.items() if not np.array_equal(m, expected.masks[n]))
        return f"masks of {changed} differ from those sent" if changed else None
    counts = {n: (int(np.count_nonzero(m)), int(np.count_nonzero(expected.masks[n]))) for n, m in res.masks.items()}
    off = {n: c for n, c in counts.items() if c[0] != c[1]}
    if off:
        return f"own masks keep other counts than those sent (found, sent): {off}"
    return None


def check_sample_count(res: TrainRes, expected: ReplyExpectation, partition_size: int | None = None) -> str | None:
    """``num_examples`` must be in 1..K·B (0..0 for a participant known to hold no sample).

    >>> ins = TrainIns(0, {}, {}, 0.1, 5, 4)
    >>> check_sample_count(TrainRes(0, 0, {}, 0.0, 0.0), expect_replies(ins, False, 1.0))
    'num-examples 0 is outside 1..20 (K·B = 20)'
    """
    low, high = 1, expected.max_examples
    why = f"K·B = {expected.max_examples}"
    if partition_size is not None and partition_size <= 0:
        low = high = 0  # a participant without data trains on nothing: no reply of it counts
        why = "the participant holds no sample"
    if high == 0 or not low <= res.num_examples <= high:
        return f"num-examples {res.num_examples} is outside {low}..{high} ({why})"
    return None


def check_bn_stats(res: TrainRes) -> str | None:
    """BatchNorm statistics in range: running_var finite and ≥ 0, running_mean finite, num_batches_tracked ≥ 0.

    >>> check_bn_stats(TrainRes(0, 1, {"bn.running_var": np.array([1.0, -0.5], np.float32)}, 0.0, 0.0))
    "'bn.running_var' has 1 values that are negative or not finite"
    """
    for name, value in res.state.items():
        arr = np.asarray(value)
        if name.endswith("running_var"):
            bad = int(np.count_nonzero(~(np.isfinite(arr) & (arr >= 0))))
            if bad:
                return f"{name!r} has {bad} values that are negative or not finite"
        elif name.endswith("running_mean"):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                return f"{name!r} has {bad} values that are not finite"
        elif name.endswith("num_batches_tracked") and arr.size and int(arr.min()) < 0:
            return f"{name!r} is {arr.tolist()}, expected >= 0"
    return None


def check_finite(res: TrainRes) -> tuple[str, str] | None:
    """No NaN ("nan") nor ±inf ("inf") in float entries or the training loss.

    >>> check_finite(TrainRes(0, 1, {"w": np.array([0.0, np.inf], np.float32)}, 0.0, 0.0))
    ('inf', "'w' has 1 infinite values")
    """
    for name, value in res.state.items():
        arr = np.asarray(value)
        if arr.dtype.kind != "f" or np.isfinite(arr).all():  # one pass for the common case
            continue
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        if n_nan:
            return R_NAN, f"{name!r} has {n_nan} NaN values"
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        if n_inf:
            return R_INF, f"{name!r} has {n_inf} infinite values"
    if math.isnan(res.train_loss):
        return R_NAN, "train loss is NaN"
    if math.isinf(res.train_loss):
        return R_INF, f"train loss is {res.train_loss}"
    return None


def check_importance(res: TrainRes, expected: ReplyExpectation) -> str | None:
    """Importance only when asked for, and then every value finite, ≥ 0 and ≤ ``max_importance``.

    Importance is a sum of squared gradients (spec §3.2), so a negative value is impossible, and a huge one
    would decide every later pruning step on its own.

    >>> ins = TrainIns(0, {"w": np.zeros(2, np.float32)}, {}, 0.1, 1, 1, "round_sum", upload_importance=True)
    >>> res = TrainRes(0, 1, {"w": np.zeros(2, np.float32)}, 0.0, 0.0, importance={"w": np.array([1.0, -2.0])})
    >>> check_importance(res, expect_replies(ins, False, 1.0))
    "importance of 'w' has 1 values that are negative, not finite or above 1e+30"
    """
    if res.importance is None:
        return "importance was asked for and is missing" if expected.upload_importance else None
    if not expected.upload_importance:
        return "importance was not asked for this round"
    for name, value in res.importance.items():
        arr = np.asarray(value)
        if name not in expected.shapes or arr.shape != expected.shapes[name]:
            return f"importance of {name!r} has shape {arr.shape}, expected {expected.shapes.get(name)}"
        bad = int(np.count_nonzero(~((arr >= 0) & (arr <= expected.max_importance))))  # NaN fails both
        if bad:
            return (
                f"importance of {name!r} has {bad} values that are negative, not finite or above "
                f"{expected.max_importance:g}"
            )
    return None


def check_update_norm(res: TrainRes, expected: ReplyExpectation) -> str | None:
    """No float entry moves further than ``ratio · (‖base‖ + 1)`` from what the client started from.

    >>> ins = TrainIns(0, {"w": np.array([3.0, 4.0], np.float32)}, {}, 0.1, 1, 1)
    >>> far = TrainRes(0, 1, {"w": np.array([3.0, 65.0], np.float32)}, 0.0, 0.0)  # moved by 61 > 10 · (5 + 1)
    >>> check_update_norm(far, expect_replies(ins, False, max_update_norm_ratio=10.0))
    "'w' moved by 61 (L2), above 10 · (5 + 1) = 60"
    """
    ratio = expected.max_update_norm_ratio
    if ratio <= 0:
        return None
    for name, base in expected.base.items():
        # in the entry's dtype, 7x faster than float64 on Conv-2's fc1; an absurd value may overflow to inf,
        # and is then rejected, as it should be
        moved = float(torch.linalg.vector_norm(torch.from_numpy(np.asarray(res.state[name])) - base))
        bound = ratio * (expected.base_norms[name] + 1.0)
        if not moved <= bound:
            norm = expected.base_norms[name]
            return f"{name!r} moved by {moved:.6g} (L2), above {ratio:g} · ({norm:.6g} + 1) = {bound:.6g}"
    return None
