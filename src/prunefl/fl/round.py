"""One FL round for every engine: the server's paired steps around the clients' training, and a client's side.

Like Flower's Strategy (``configure_train`` / ``aggregate_train`` around one concrete loop), a round is:

1. the engine decides who trains (the simulation draws client indices with
   :func:`prunefl.fl.selection.select_clients`; Flower samples node ids and maps them to partitions) and hands
   them to :meth:`RoundProtocol.configure_train`, which asks the method whether importance is tracked and
   uploaded, builds the instruction and encodes it per participant (:class:`prunefl.fl.links.ServerLink`);
2. each participant runs :func:`client_round`: decode → :func:`prunefl.fl.client.client_step` → the method's
   client hook → encode; the engine moves the messages (in-process, or over the network);
3. :meth:`RoundProtocol.aggregate_train` decodes and validates every reply before anything changes
   (:mod:`prunefl.fl.validate`: bad replies are dropped with a counted reason), aggregates the valid ones,
   applies the method's after-aggregate decision (state first, then masks) and builds the round's metrics row;
4. the engine adds its own fields (the clock's charges, kernels used, evaluation, wall time) and hands the
   finished row back through :meth:`RoundProtocol.observe`.

Nothing here imports an engine or Flower: both engines drive these steps and only move messages and keep time.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunefl import metrics as K
from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError, DecodeError, TooFewRepliesError
from prunefl.fl.client import ClientState, SwapCache, client_step
from prunefl.fl.links import ServerLink, TrainMessage, TrainReply
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.fl.server import Server
from prunefl.fl.validate import (
    R_DUPLICATE,
    R_NOT_SELECTED,
    Rejection,
    check_envelope,
    decode_rejection,
    expect_replies,
    validate_reply,
)
from prunefl.pruning.methods.base import AggregateView, ClientView, Decision, Method
from prunefl.seeds import CLIENT_HOOK_STREAM, rng
from prunefl.sparse.masks import MASK_SUFFIX, density, kept_counts, layer_densities
from prunefl.timing.clock import DeviceProfile

__all__ = ["ClientWorkspace", "Replies", "RoundPlan", "RoundResult", "RoundProtocol", "client_round", "apply_decision"]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# What an engine collected in a round: replies by participant, or (participant, reply) pairs in arrival order
Replies = Mapping[int, TrainReply] | Sequence[tuple[int, TrainReply]]
EvaluateLoss = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor], float]


@dataclass
class ClientWorkspace:
    """What a client trains with besides its state: a model workspace, the data, the loss and a kernel cache.

    Not state: a Flower ClientApp rebuilds it from the run config (the simulation shares one among all
    clients). ``seed`` is the run seed, from which the method's client-side streams (client, round) derive.
    """

    model: nn.Module
    dataset: ArrayDataset
    loss_fn: LossFn
    seed: int = 0
    swap_cache: SwapCache = field(default_factory=SwapCache)
    _expected: tuple[dict[str, tuple[int, ...]], dict[str, np.dtype]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def expected_entries(self) -> tuple[dict[str, tuple[int, ...]], dict[str, np.dtype]]:
        """The shapes and dtypes an instruction's state must have: the model's state, mask buffers excluded.

        A client decodes the server's instruction against them (``expected_shapes`` / ``expected_dtypes`` of
        :func:`prunefl.sparse.codec.decode_train_ins`), so an instruction for another model (larger, another
        dtype, an extra entry) is refused before anything is allocated, and the memory a decode allocates is
        bounded by this model's dense size, whatever the server sends. Computed on the first call and cached:
        the workspace's model keeps its entries for its lifetime (a kernel swap is undone within the round).

        Examples
        --------
        >>> shapes, dtypes = ClientWorkspace(nn.Linear(3, 2), None, None).expected_entries()  # no data needed here
        >>> shapes, dtypes["weight"]
        ({'weight': (2, 3), 'bias': (2,)}, dtype('float32'))
        """
        if self._expected is None:
            params = {name for name, _ in self.model.named_parameters()}
            shapes, dtypes = {}, {}
            for key, value in self.model.state_dict().items():  # one entry per tensor (~10-60), not per element
                if key.endswith(MASK_SUFFIX) and key[: -len(MASK_SUFFIX)] in params:
                    continue  # a mask buffer: masks travel in the instruction's own section
                shapes[key] = tuple(value.shape)
                dtypes[key] = np.dtype(str(value.dtype).removeprefix("torch."))
            self._expected = (shapes, dtypes)
        return self._expected


@dataclass(frozen=True)
class RoundPlan:
    """What :meth:`RoundProtocol.configure_train` set up for one round.

    Attributes
    ----------
    round : int
    participants : list[int]
        Who trains, as the engine chose them (client indices = partition indices).
    ins : TrainIns
        The instruction, before encoding.
    messages : dict[int, TrainMessage]
        The encoded instruction per participant (with masks only for those not holding them).
    kept : dict[str, int]
        Kept weights per prunable layer of the masks sent: what the clients train, and the clock charges.
    previous_state : dict[str, torch.Tensor]
        The global state the participants start from (aggregation replaces the server's, never modifies it).
    """

    round: int
    participants: list[int]
    ins: TrainIns
    messages: dict[int, TrainMessage]
    kept: dict[str, int]
    previous_state: dict[str, torch.Tensor]


@dataclass(frozen=True)
class RoundResult:
    """What :meth:`RoundProtocol.aggregate_train` produced.

    Attributes
    ----------
    row : dict
        The round's metrics row, without the engine's fields (clock, kernels, evaluation, wall time).
    clients : list[int]
        Whose replies were aggregated, in plan order.
    bytes_down, bytes_up : list[int]
        Bytes each of ``clients`` received and sent (the reply's codec bytes plus its extras).
    compute_wall_s : list[float]
        Local compute seconds each of ``clients`` measured.
    decision : Decision or None
        The method's after-aggregate decision, already applied to the server.
    rejections : list[Rejection]
        The replies dropped by validation, in arrival order (default: none).
    missing : list[int]
        Participants that did not reply, in plan order (default: none).
    """

    row: dict[str, Any]
    clients: list[int]
    bytes_down: list[int]
    bytes_up: list[int]
    compute_wall_s: list[float]
    decision: Decision | None
    rejections: list[Rejection] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


class RoundProtocol:
    """The server side of every round: configure the participants it is told, then validate, aggregate, decide.

    Holds no round state of its own: the server, the method and the server link keep theirs.

    Parameters
    ----------
    server : Server
        Global state and masks; aggregation is its :meth:`Server.aggregate_train`.
    method : Method
        The FL method whose hooks decide importance rounds and masks.
    link : ServerLink
        The server half of the transport.
    devices : Sequence[DeviceProfile]
        Every client's device profile, index = client id (the method's objectives read them).
    evaluate_loss : callable or None
        ``evaluate_loss(state, masks, x, y) -> float`` on the server's model workspace, for methods that compare
        models on samples (default: None).
    partition_sizes : Mapping[int, int] or None
        Training samples each participant holds (the simulation knows them; Flower nodes declare theirs at
        discovery); a participant holding none may not report samples (:func:`prunefl.fl.validate.
        check_sample_count`) (default: None: unknown).

    Raises
    ------
    ConfigError
        ``fl.aggregation`` is a robust rule and the method's clients change their own masks (FedDST).

    Examples
    --------
    >>> from prunefl.fl.server import ServerSettings
    >>> server = Server({"w": torch.ones(4)}, {"w": torch.tensor([True, True, False, True])},
    ...                 ServerSettings(num_clients=3, clients_per_round=2, local_steps=1, batch_size=1, lr=0.1))
    >>> plan = RoundProtocol(server, Method(), ServerLink(), devices=[]).configure_train(0, participants=[0, 2])
    >>> sorted(plan.messages), plan.kept
    ([0, 2], {'w': 3})
    """

    def __init__(
        self,
        server: Server,
        method: Method,
        link: ServerLink,
        devices: Sequence[DeviceProfile],
        evaluate_loss: EvaluateLoss | None = None,
        partition_sizes: Mapping[int, int] | None = None,
    ) -> None:
        self.server = server
        self.method = method
        self.link = link
        self.devices = devices
        self.evaluate_loss = evaluate_loss
        self.partition_sizes = partition_sizes
        aggregation = server.settings.aggregation
        if method.clients_change_masks and aggregation != "mean":
            raise ConfigError(
                f"fl.aggregation {aggregation!r} is not supported by a method whose clients change their own masks "
                f"({type(method).__name__}); use fl.aggregation = \"mean\""
            )

    def configure_train(self, round: int, participants: Sequence[int]) -> RoundPlan:
        """Build ``round``'s instruction and encode it for each of ``participants``.

        Modifies the server link (the mask version each participant now holds).
        """
        server, method = self.server, self.method
        upload = method.upload_importance(round)
        track = method.track_importance(round) or upload
        ins = server.configure_train(round, upload_importance=upload, track_importance=track)
        messages = self.link.encode_ins(ins, participants, server.mask_version)
        return RoundPlan(
            round=round,
            participants=list(participants),
            ins=ins,
            messages=messages,
            kept=kept_counts(server.masks),
            previous_state=server.state,
        )

    def aggregate_train(self, plan: RoundPlan, replies: Replies) -> RoundResult:
        """Decode and validate every reply, drop the bad ones, aggregate the rest, apply the method's decision.

        Modifies the server (state, then the decision's state and masks), only once every reply was decoded and
        checked (:mod:`prunefl.fl.validate`): a reply that fails a check is dropped with a
        :class:`prunefl.fl.validate.Rejection`, logged at WARNING and counted in the row (``rejected``,
        ``rejected-clients``); participants without a reply are listed in ``missing``. The rest aggregate in
        plan order, exactly as if the dropped replies had never been sent.

        Parameters
        ----------
        plan : RoundPlan
            The round's :meth:`configure_train`.
        replies : Mapping[int, TrainReply] or Sequence[tuple[int, TrainReply]]
            Replies by participant; a transport that can receive two replies from one participant passes them as
            (participant, reply) pairs in arrival order, so that the second one is rejected as a duplicate.

        Raises
        ------
        TooFewRepliesError
            Fewer than ``server.settings.min_valid_replies`` valid replies remain (at least 1). Nothing changed:
            server state, masks and mask version, the method and the link are untouched.
        InconsistentRepliesError
            The aggregate of the valid replies is not finite (:meth:`Server.aggregate_train`). Nothing changed.
        Exception
            Whatever the method's after-aggregate hook raises; the server's state, masks and mask version are
            rolled back to what they were (the method's own state is its business).
        """
        pairs = list(replies.items()) if isinstance(replies, Mapping) else list(replies)
        valid, rejections = self._validate(plan, pairs)
        order = {p: i for i, p in enumerate(plan.participants)}
        valid.sort(key=lambda item: order[item[0]])  # plan order: the sums do not depend on arrival order
        clients = [p for p, _, _ in valid]
        decoded = [res for _, _, res in valid]
        kept_replies = {p: reply for p, reply, _ in valid}
        replied = {p for p, _ in pairs}
        missing = [p for p in plan.participants if p not in replied]
        needed = max(1, self.server.settings.min_valid_replies)
        if len(valid) < needed:
            raise TooFewRepliesError(
                f"round {plan.round}: {len(valid)} valid replies of {len(plan.participants)} participants, fewer "
                f"than fl.min_valid_replies={needed} ({len(rejections)} rejected: "
                f"{[(r.participant, r.reason) for r in rejections]}; missing {missing}); the round is not applied",
                tuple(rejections), tuple(missing),
            )
        server = self.server
        before = (server.state, server.masks, server.mask_version)
        try:
            return self._apply(plan, clients, decoded, kept_replies, rejections, missing)
        except BaseException:
            # a method's hook failed after the new state was swapped in (a bug, or a case validation missed): the
            # global model goes back to what it was, so that a checkpoint or a retry never sees half a round
            server.state = before[0]
            server.restore_masks(before[1], before[2])
            raise

    def _apply(
        self,
        plan: RoundPlan,
        clients: list[int],
        decoded: list[TrainRes],
        kept_replies: dict[int, TrainReply],
        rejections: list[Rejection],
        missing: list[int],
    ) -> RoundResult:
        """Aggregate the valid replies, apply the method's decision and build the row (:meth:`aggregate_train`)."""
        server = self.server
        update = server.aggregate_train(plan.ins, decoded)  # builds the new state first, then swaps it in
        view = AggregateView(
            round=plan.round,
            state=server.state,
            previous_state=plan.previous_state,
            masks=server.masks,
            importance=update.importance,
            clients=clients,
            devices=self.devices,
            client_masks=[
                None if res.masks is None else {k: torch.from_numpy(v) for k, v in res.masks.items()} for res in decoded
            ],
            extras=[kept_replies[p].extras for p in clients],
            lr=plan.ins.lr,
            evaluate_loss=self.evaluate_loss,
        )
        decision = self.method.after_aggregate(view)
        apply_decision(server, decision)
        bytes_down = [plan.messages[p].nbytes for p in clients]
        bytes_up = [kept_replies[p].nbytes for p in clients]
        compute_wall_s = [res.compute_wall_s for res in decoded]
        row: dict[str, Any] = {
            K.K_ROUND: plan.round,
            K.K_STAGE: "fl",
            K.K_TRAIN_LOSS: update.train_loss,
            K.K_LR: plan.ins.lr,
            K.K_CLIENTS: clients,
            K.K_COMPUTE_WALL_S: compute_wall_s,
            K.K_BYTES_DOWN: sum(m.nbytes for m in plan.messages.values()),  # sent, whether or not a reply came
            K.K_BYTES_UP: sum(bytes_up),
            K.K_DENSITY: density(server.masks),
            K.K_LAYER_DENSITY: layer_densities(server.masks),
            K.K_RECONFIG: decision.record if decision is not None else None,
            K.K_REJECTED: dict(Counter(r.reason for r in rejections)),
            K.K_REJECTED_CLIENTS: [[r.participant, r.reason] for r in rejections],
            K.K_MISSING: missing,
        }
        return RoundResult(row, clients, bytes_down, bytes_up, compute_wall_s, decision, rejections, missing)

    def _validate(
        self, plan: RoundPlan, pairs: list[tuple[int, TrainReply]]
    ) -> tuple[list[tuple[int, TrainReply, TrainRes]], list[Rejection]]:
        """Decode and check each reply (in arrival order); return the valid ones and the rejections."""
        expected = expect_replies(
            plan.ins, self.link.own_masks, self.server.settings.max_update_norm_ratio
        )
        selected = set(plan.participants)
        seen: set[int] = set()
        valid: list[tuple[int, TrainReply, TrainRes]] = []
        rejections: list[Rejection] = []
        for p, reply in pairs:
            rejection: Rejection | None = None
            res: TrainRes | None = None
            if p not in selected:
                rejection = Rejection(p, R_NOT_SELECTED, f"participants of round {plan.round} are {plan.participants}")
            elif p in seen:
                rejection = Rejection(p, R_DUPLICATE, f"a reply from {p} was already received in round {plan.round}")
            else:
                seen.add(p)
                rejection = check_envelope(p, reply, expected)
            if rejection is None:
                try:
                    res = self.link.decode_res(p, reply.data, require_finite=False)  # NaN/inf: checked below
                except DecodeError as error:
                    rejection = decode_rejection(p, error)
            if rejection is None and res is not None:
                size = None if self.partition_sizes is None else self.partition_sizes.get(p)
                rejection = validate_reply(p, res, expected, size)
            if rejection is not None:
                logger.warning(
                    "round %d: reply from %d rejected (%s): %s", plan.round, p, rejection.reason, rejection.detail
                )
                rejections.append(rejection)
            elif res is not None:
                if not self.link.own_masks:
                    res.masks = None  # equal to the masks sent (checked): aggregate as a reply without masks
                valid.append((p, reply, res))
        return valid, rejections

    def observe(self, row: Mapping[str, Any]) -> None:
        """Hand the finished row (with the engine's fields: accuracy, clock) to the method, e.g. for triggers."""
        self.method.observe(row)


def client_round(
    message: TrainMessage,
    client: ClientState,
    workspace: ClientWorkspace,
    method: Method,
    partition: np.ndarray,
    sparse_layers: Collection[str] = (),
) -> TrainReply:
    """Run one client's round: decode the instruction, train, run the method's client hook, encode the reply.

    Modifies ``client`` (its stream, generators, importance, momentum buffers and link cache) and
    ``workspace`` (the model holds the trained weights; the swap cache the last kernel swap). A Flower ClientApp
    calls this with the client state it keeps in ``context.state``.

    Parameters
    ----------
    message : TrainMessage
        The server's instruction for this client, with its mask version.
    client : ClientState
        The client's state, whose link decodes and encodes.
    workspace : ClientWorkspace
        The model workspace, data and loss this client trains with.
    method : Method
        The run's method (its client hook runs on the trained workspace).
    partition : numpy.ndarray
        The client's training-sample indices, shape ``(n,)`` (the client hook may draw from them).
    sparse_layers : Collection[str]
        ``nn.Linear`` weights to train with the CSR kernel this round
        (:func:`prunefl.fl.client.choose_sparse_layers`) (default: none).

    Returns
    -------
    TrainReply
        The encoded reply and the hook's extra uploads.

    Raises
    ------
    DecodeError
        The instruction is malformed, is for another model (its entries' names, shapes or dtypes differ from the
        workspace model's), or omits masks this client does not hold.
    """
    shapes, dtypes = workspace.expected_entries()
    ins = client.link.decode_ins(message, expected_shapes=shapes, expected_dtypes=dtypes)
    res = client_step(
        workspace.model, ins, client, workspace.dataset, workspace.loss_fn,
        sparse_layers=sparse_layers, swap_cache=workspace.swap_cache, mask_version=message.mask_version,
    )
    view = ClientView(
        round=ins.round,
        client_id=client.client_id,
        model=workspace.model,
        masks={k: torch.from_numpy(np.asarray(v, dtype=np.bool_)) for k, v in ins.masks.items()},
        importance=client.importance or None,
        dataset=workspace.dataset,
        partition=partition,
        rng=rng(workspace.seed, CLIENT_HOOK_STREAM, client.client_id, ins.round),
    )
    hook = method.client_hook(view)
    extras = None
    if hook is not None:
        if hook.consumed_importance:
            client.importance = {}
        if hook.masks is not None:
            own = {k: v.numpy() for k, v in hook.masks.items()}
            res.masks = own
            for k, m in own.items():  # newly pruned weights leave, regrown ones start from 0
                res.state[k] = res.state[k] * m
        extras = hook.extras
    return TrainReply(client.link.encode_res(res), extras, round=ins.round)


def apply_decision(server: Server, decision: Decision | None) -> None:
    """Install a method's decision on ``server``: state first, since the masks setter may zero pruned values.

    Modifies ``server``; a new mask set bumps its mask version (spec §3.8 for ``regrow_init = "zero"``).

    Examples
    --------
    >>> from prunefl.fl.server import ServerSettings
    >>> s = Server({"w": torch.ones(2)}, {"w": torch.tensor([True, True])}, ServerSettings(2, 2, 1, 1, 0.1))
    >>> apply_decision(s, Decision(masks={"w": torch.tensor([True, False])}))
    >>> s.mask_version
    1
    """
    if decision is None:
        return
    if decision.state is not None:
        server.state = decision.state
    if decision.masks is not None:
        server.masks = decision.masks
