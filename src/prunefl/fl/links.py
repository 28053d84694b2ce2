"""The transport in two halves: the server link encodes instructions and decodes replies; the client link the reverse.

Every message of a round goes through the wire codec (:mod:`prunefl.sparse.codec`), so bytes on the clock are
the codec's real sizes and every reply the server aggregates went through the same validated decoder a remote
reply would (spec §10 items 1-2). Masks travel only when they changed since a participant last received them:
the server link remembers the mask version each participant holds, the client link caches the masks of the
last instruction that carried them, with their version.

The mask version travels *beside* the codec's bytes, as the field :attr:`TrainMessage.mask_version`: the codec's
train-ins header has no field for it (format version 1), and adding one would change the wire format. A Flower
message carries it as a config entry next to the bytes. The client needs it to know that its cached masks are
the ones the message omits, and its sparse-kernel swap cache and momentum buffers are keyed on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from prunefl.errors import CheckpointError, DecodeError, InconsistentRepliesError
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.sparse.codec import decode_train_ins, decode_train_res, encode_train_ins, encode_train_res

__all__ = ["WireSettings", "TrainMessage", "TrainReply", "ServerLink", "ClientLink"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WireSettings:
    """How messages are encoded.

    Parameters
    ----------
    level : int or None
        zstd level of the codec's sections; None sends them uncompressed, which costs ~15 % more bytes on float
        values but runs ~5× faster (default: None).
    values_dtype : {"float32", "float16"}
        Wire type of kept weight values (default: "float32").
    importance_dtype : {"float32", "float16"}
        Wire type of the importance upload, the largest message (default: "float32").
    importance_top_fraction : float
        Fraction in (0, 1] of each layer's importance values a client uploads: the largest ones, with their
        positions; the server reads the rest as 0 (default: 1.0: all of them, dense).
    """

    level: int | None = None
    values_dtype: Literal["float32", "float16"] = "float32"
    importance_dtype: Literal["float32", "float16"] = "float32"
    importance_top_fraction: float = 1.0


@dataclass(frozen=True)
class TrainMessage:
    """Server → one participant: the encoded instruction and the mask version it is for.

    Parameters
    ----------
    data : bytes
        The codec's train-ins message; without a mask section when the participant already holds the masks.
    mask_version : int
        The server's mask version of this round's masks (equal versions mean equal masks). It travels beside
        ``data`` because the codec's format has no field for it (module docstring).
    """

    data: bytes
    mask_version: int

    @property
    def nbytes(self) -> int:
        """Bytes on the wire (the codec's message; the version's few bytes are not counted)."""
        return len(self.data)


@dataclass(frozen=True)
class TrainReply:
    """One participant → server: the encoded reply and the extra arrays its method's client hook uploads.

    Parameters
    ----------
    data : bytes
        The codec's train-res message.
    extras : dict[str, numpy.ndarray] or None
        Arrays uploaded beside the weights (the online baseline's samples); their raw bytes are counted
        (default: None).
    round : int or None
        The round the reply answers, as the transport carries it beside ``data`` (the codec's train-res header
        has no round field); the server rejects a reply for another round (:mod:`prunefl.fl.validate`)
        (default: None: the transport does not say, and the check is skipped).
    """

    data: bytes
    extras: dict[str, np.ndarray] | None = None
    round: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes uploaded: the codec's message plus the extras' raw bytes."""
        return len(self.data) + sum(int(v.nbytes) for v in (self.extras or {}).values())


class ServerLink:
    """Server half: encodes instructions, remembers the mask version each participant holds, decodes replies.

    Participants are the ids the server addresses (client indices in the simulation); state lasts across
    rounds, so it is a class, with :meth:`state_dict` for a checkpoint.

    Parameters
    ----------
    settings : WireSettings or None
        Encoding options (default: None: ``WireSettings()``).
    own_masks : bool
        Accept replies whose masks differ from those sent: the client's own, for methods whose clients change
        masks (``Method.clients_change_masks``, FedDST); engines pass the method's flag (default: True; False: a
        reply's masks, if present, must equal those sent).

    Examples
    --------
    >>> ins = TrainIns(0, {"w": np.ones(4, np.float32)}, {"w": np.array([True, False, True, True])}, 0.1, 1, 2)
    >>> link = ServerLink()
    >>> first = link.encode_ins(ins, [0], mask_version=0)[0]
    >>> again = link.encode_ins(ins, [0], mask_version=0)[0]
    >>> again.nbytes < first.nbytes, link.held_mask_version(0)
    (True, 0)
    """

    def __init__(self, settings: WireSettings | None = None, *, own_masks: bool = True) -> None:
        self.settings = settings or WireSettings()
        self.own_masks = own_masks
        self._held: dict[int, int] = {}  # participant -> mask version it received last
        self._sent_masks: dict[int, Mapping[str, np.ndarray]] = {}  # participant -> masks of its last instruction
        # participant -> entry shapes and dtypes of its last instruction: a reply must have them, which bounds the
        # memory its decode allocates by the model's dense size
        self._sent_shapes: dict[int, dict[str, tuple[int, ...]]] = {}
        self._sent_dtypes: dict[int, dict[str, np.dtype]] = {}

    def held_mask_version(self, participant: int) -> int | None:
        """The mask version ``participant`` received last (None: never sent one)."""
        return self._held.get(participant)

    def encode_ins(self, ins: TrainIns, participants: Sequence[int], mask_version: int) -> dict[int, TrainMessage]:
        """Encode ``ins`` for each participant, with the masks only for those not holding ``mask_version``.

        Modifies the link: each participant is recorded as holding ``mask_version``, and its replies decode
        against ``ins.masks``. Encodes once per variant (with or without masks), not once per participant.
        """
        s = self.settings
        variants: dict[bool, bytes] = {}
        out: dict[int, TrainMessage] = {}
        shapes = {name: tuple(np.shape(value)) for name, value in ins.state.items()}
        dtypes = {name: np.asarray(value).dtype for name, value in ins.state.items()}
        for pid in participants:
            with_masks = self._held.get(pid) != mask_version
            if with_masks not in variants:
                variants[with_masks] = encode_train_ins(
                    ins, include_masks=with_masks, values_dtype=s.values_dtype, level=s.level
                )
            out[pid] = TrainMessage(variants[with_masks], mask_version)
            self._held[pid] = mask_version
            self._sent_masks[pid] = ins.masks
            self._sent_shapes[pid] = shapes
            self._sent_dtypes[pid] = dtypes
        return out

    def decode_res(self, participant: int, data: bytes, *, require_finite: bool = True) -> TrainRes:
        """Decode ``participant``'s reply against the entry shapes, dtypes and masks of the instruction it was sent.

        The reply must hold exactly the entries sent, with their shapes and dtypes, and mask exactly the entries
        sent masked; all of it is checked on the message's table before anything is allocated, so a reply's
        decode allocates memory bounded by the model's dense size, whatever its bytes. A reply with its own masks
        (FedDST) carries them; they are decoded from the message, and must equal those sent unless the link
        accepts clients' own masks (``own_masks``). ``require_finite=False`` lets
        NaN and ±inf through, for a caller that rejects them itself with its own reason (the round protocol).

        Raises
        ------
        InconsistentRepliesError
            ``participant`` was never sent an instruction.
        DecodeError
            The bytes are malformed or do not fit the masks sent.
        """
        masks = self._sent_masks.get(participant)
        if masks is None:
            raise InconsistentRepliesError(
                f"a reply came from participant {participant}, which was sent no instruction; it is not aggregated"
            )
        return decode_train_res(
            data, masks, expected_shapes=self._sent_shapes[participant], own_masks=self.own_masks,
            require_finite=require_finite, expected_dtypes=self._sent_dtypes[participant],
        )

    def state_dict(self) -> dict[str, Any]:
        """The mask version each participant holds, as JSON-able values (``{"held": {str(id): version}}``)."""
        return {"held": {str(pid): version for pid, version in self._held.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the masks of the instructions sent are not restored.

        Raises
        ------
        CheckpointError
            ``state`` has no ``held`` table, or an id or version that is not an int.
        """
        held = state.get("held")
        if not isinstance(held, Mapping):
            raise CheckpointError(f"server link state needs a 'held' table of mask versions, got {held!r}")
        try:
            table = {int(pid): int(version) for pid, version in held.items()}
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"server link 'held' table must map int ids to int versions: {error}") from error
        self._held = table
        self._sent_masks = {}
        self._sent_shapes = {}
        self._sent_dtypes = {}


class ClientLink:
    """Client half: decodes instructions with the masks it cached, encodes replies against them.

    The cache (the masks of the last instruction and their version) lasts across rounds; :meth:`state_dict`
    holds it, so a client restored from a checkpoint can decode an instruction that omits the masks.

    Parameters
    ----------
    settings : WireSettings or None
        Encoding options; they must be the server's (default: None: ``WireSettings()``).

    Examples
    --------
    >>> ins = TrainIns(0, {"w": np.ones(4, np.float32)}, {"w": np.array([True, False, True, True])}, 0.1, 1, 2)
    >>> server, client = ServerLink(), ClientLink()
    >>> _ = client.decode_ins(server.encode_ins(ins, [0], mask_version=3)[0])
    >>> got = client.decode_ins(server.encode_ins(ins, [0], mask_version=3)[0])  # no masks on the wire
    >>> got.masks["w"].tolist(), client.mask_version
    ([True, False, True, True], 3)
    """

    def __init__(self, settings: WireSettings | None = None) -> None:
        self.settings = settings or WireSettings()
        self._masks: dict[str, np.ndarray] | None = None
        self._mask_version: int | None = None

    @property
    def mask_version(self) -> int | None:
        """The version of the cached masks (None: none cached yet)."""
        return self._mask_version

    @property
    def masks(self) -> dict[str, np.ndarray] | None:
        """The masks of the last instruction decoded (None: none yet)."""
        return self._masks

    def decode_ins(
        self,
        message: TrainMessage,
        *,
        expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
        expected_dtypes: Mapping[str, np.dtype] | None = None,
    ) -> TrainIns:
        """Decode an instruction, with the cached masks where it omits them, and cache its masks and version.

        Parameters
        ----------
        message : TrainMessage
            The server's instruction.
        expected_shapes, expected_dtypes : Mapping or None
            The entries, shapes and dtypes of the client's own model state (mask buffers excluded,
            :meth:`prunefl.fl.round.ClientWorkspace.expected_entries`): the instruction must hold exactly
            them, checked on the message's table before anything is allocated, so a server cannot make the
            client allocate more than its model's dense size (default: None: only the codec's
            :class:`~prunefl.sparse.codec.DecodeLimits` bound it).

        Raises
        ------
        DecodeError
            The bytes are malformed or for another model, or the message omits masks that this client does not
            hold (its cached version differs from ``message.mask_version``). The cache is left unchanged.
        """
        known = self._masks if self._mask_version == message.mask_version else None
        try:
            ins = decode_train_ins(
                message.data, known_masks=known, expected_shapes=expected_shapes, expected_dtypes=expected_dtypes
            )
        except DecodeError as error:
            # the codec's wording for an omitted mask without known masks: then say why this client lacks them (a
            # lost instruction, or a client restarted without its state); other errors (another model) pass as they are
            if known is None and "omits its mask" in str(error):
                held = "no masks" if self._mask_version is None else f"version {self._mask_version}"
                raise DecodeError(
                    f"instruction for mask version {message.mask_version} omits masks, and this client holds "
                    f"{held}: {error}"
                ) from error
            raise
        self._masks, self._mask_version = ins.masks, message.mask_version
        return ins

    def encode_res(self, res: TrainRes) -> bytes:
        """Encode a reply against the masks of the last instruction decoded (a reply's own masks travel with it).

        Raises
        ------
        InconsistentRepliesError
            No instruction was decoded yet, so there are no masks to encode against.
        """
        if self._masks is None:
            raise InconsistentRepliesError(
                f"client {res.client_id} encodes a reply before it decoded any instruction; decode one first"
            )
        s = self.settings
        return encode_train_res(
            res,
            self._masks,
            values_dtype=s.values_dtype,
            importance_dtype=s.importance_dtype,
            level=s.level,
            importance_top_fraction=s.importance_top_fraction,
        )

    def state_dict(self) -> dict[str, Any]:
        """The cache: ``{"mask-version": int | None, "mask-names": [names in order], "masks/<name>": bool tensor}``."""
        out: dict[str, Any] = {"mask-version": self._mask_version, "mask-names": list(self._masks or {})}
        masks = self._masks or {}
        out.update({f"masks/{k}": torch.from_numpy(np.array(v, dtype=np.bool_)) for k, v in masks.items()})
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the cache :meth:`state_dict` returned.

        Raises
        ------
        CheckpointError
            A key is missing, or a mask is not a bool tensor. The cache is left unchanged.
        """
        version, names = state.get("mask-version"), state.get("mask-names")
        if "mask-version" not in state or not (version is None or isinstance(version, int)):
            raise CheckpointError(f"client link state needs 'mask-version' (an int or None), got {version!r}")
        if not isinstance(names, list) or any(f"masks/{n}" not in state for n in names):
            raise CheckpointError(
                f"client link state needs 'mask-names' and a 'masks/<name>' tensor for each, got {names!r}"
            )
        masks = {}
        for n in names:
            mask = state[f"masks/{n}"]
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                found = getattr(mask, "dtype", type(mask).__name__)
                raise CheckpointError(f"client link mask {n!r} must be a bool tensor, got {found}")
            masks[n] = mask.numpy().copy()
        self._masks = masks if names or version is not None else None
        self._mask_version = version
