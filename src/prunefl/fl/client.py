"""One client's round: load the global state, K masked SGD steps, accumulate importance, reply (spec §3.1-3.2)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import CheckpointError
from prunefl.fl.batches import BatchStream
from prunefl.fl.links import ClientLink
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.sparse.backend import SparseLayers, sparsify_linear_layers_
from prunefl.sparse.masks import apply_masks_, mask_gradients_

__all__ = ["ClientState", "SwapCache", "choose_sparse_layers", "client_step", "model_state", "load_model_state_"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SwapCache:
    """The last sparse-kernel swap of a model workspace, so the next one reuses unchanged index buffers.

    `mask_version` is the server's mask version that swap was built for: when the next round's is the same, the
    indices are reused without checking them against the masks.
    """

    previous: SparseLayers | None = None
    mask_version: int | None = None


@dataclass
class ClientState:
    """What a client keeps between rounds: data stream, RNGs, importance, momentum buffers, the masks it cached.

    :meth:`state_dict` holds all of it as tensors and JSON-able values (no pickle), so a Flower ClientApp can
    keep it in ``context.state`` between rounds and a checkpoint can hold it; a client rebuilt from the run's
    config and loaded with it replies exactly as one that never stopped.

    Attributes
    ----------
    client_id : int
        The client's index.
    batches : BatchStream
        Its minibatch index stream.
    augment_generator : torch.Generator
        Draws its augmentation.
    importance : dict of str to torch.Tensor
        Importance accumulated since the last upload, keyed by parameter name (default: empty).
    momentum : float
        SGD momentum μ of this client's local steps, in [0, 1): a client-side setting (``fl.momentum``), not
        part of the round's instructions; 0 is plain SGD (default: 0.0).
    momentum_buffers : dict of str to torch.Tensor
        SGD momentum buffer of every trained parameter, keyed by parameter name, carried from round to round;
        empty when ``momentum`` is 0 or before the first round under the current masks (default: empty).
    momentum_mask_version : int or None
        The server mask version ``momentum_buffers`` were accumulated under (default: None).
    link : ClientLink
        The client half of the transport, with the masks it cached (default: ``ClientLink()``, default wire
        settings).
    """

    client_id: int
    batches: BatchStream
    augment_generator: torch.Generator
    importance: dict[str, torch.Tensor] = field(default_factory=dict)
    momentum: float = 0.0
    momentum_buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    momentum_mask_version: int | None = None
    link: ClientLink = field(default_factory=ClientLink)

    def state_dict(self) -> dict[str, Any]:
        """Everything the client keeps across rounds, as a flat dict of tensors and JSON-able values.

        Keys: ``client-id``; ``batches/order``, ``batches/position``, ``batches/rng`` (the batch stream);
        ``augment-rng`` (uint8 tensor, the augmentation generator's state); ``importance/<name>`` with
        ``importance-names`` (the accumulator, in its order, which fixes the order of the upload);
        ``momentum-buffers/<name>`` with ``momentum-names`` and ``momentum-mask-version``; ``link/...`` (the
        cached masks, :meth:`ClientLink.state_dict`). ``momentum`` is a setting, not state: it comes from the
        config. Tensors are copies.

        Examples
        --------
        >>> c = ClientState(2, BatchStream(np.arange(4), np.random.default_rng(0)), torch.Generator())
        >>> c.state_dict()["client-id"], c.state_dict()["importance-names"]
        (2, [])
        """
        out: dict[str, Any] = {"client-id": self.client_id}
        out.update({f"batches/{k}": v for k, v in self.batches.state_dict().items()})
        out["augment-rng"] = self.augment_generator.get_state()
        out["importance-names"] = list(self.importance)
        out.update({f"importance/{k}": v.detach().clone() for k, v in self.importance.items()})
        out["momentum-names"] = list(self.momentum_buffers)
        out.update({f"momentum-buffers/{k}": v.detach().clone() for k, v in self.momentum_buffers.items()})
        out["momentum-mask-version"] = self.momentum_mask_version
        out.update({f"link/{k}": v for k, v in self.link.state_dict().items()})
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned into a client built for the same id and partition.

        Raises
        ------
        CheckpointError
            The state is another client's, or a key is missing or malformed. The client is left unchanged
            (every part is checked and built first, then swapped in).

        Examples
        --------
        >>> a = ClientState(0, BatchStream(np.arange(4), np.random.default_rng(0)), torch.Generator())
        >>> b = ClientState(0, BatchStream(np.arange(4), np.random.default_rng(1)), torch.Generator())
        >>> _ = a.batches.next(3)
        >>> b.load_state_dict(a.state_dict())
        >>> b.batches.next(5).tolist() == a.batches.next(5).tolist()
        True
        """
        if state.get("client-id") != self.client_id:
            raise CheckpointError(
                f"client state is for client-id={state.get('client-id')!r}, loaded into client {self.client_id}; "
                "load each client's own state"
            )
        importance = _tensor_group(state, "importance", "importance-names")
        buffers = _tensor_group(state, "momentum-buffers", "momentum-names")
        version = state.get("momentum-mask-version")
        if "momentum-mask-version" not in state or not (version is None or isinstance(version, int)):
            raise CheckpointError(f"client state needs 'momentum-mask-version' (an int or None), got {version!r}")
        generator_state = state.get("augment-rng")
        if not isinstance(generator_state, torch.Tensor) or generator_state.dtype != torch.uint8:
            raise CheckpointError(f"client state needs 'augment-rng' as a uint8 tensor, got {generator_state!r}")
        try:  # on a scratch generator first
            torch.Generator().set_state(generator_state.clone())
        except RuntimeError as error:
            raise CheckpointError(f"client state's 'augment-rng' is not a generator state: {error}") from error
        link = ClientLink(self.link.settings)
        link.load_state_dict(_group(state, "link"))
        self.batches.load_state_dict(_group(state, "batches"))  # checks everything before it changes the stream
        self.augment_generator.set_state(generator_state.clone())
        self.importance = importance
        self.momentum_buffers = buffers
        self.momentum_mask_version = version
        self.link = link


def choose_sparse_layers(
    masks: Mapping[str, np.ndarray] | Mapping[str, torch.Tensor],
    break_even: Mapping[str, tuple[float, float]],
    dense_weight_grad: bool,
) -> set[str]:
    """Choose the layers to train with the CSR kernel this round: those at or below their break-even density.

    Parameters
    ----------
    masks : Mapping[str, numpy.ndarray or torch.Tensor]
        The round's bool masks.
    break_even : Mapping[str, tuple[float, float]]
        Per ``nn.Linear`` weight, the break-even density (without, with) dense weight gradients, measured on the
        machine that trains; 0 means the kernel never wins.
    dense_weight_grad : bool
        Whether the round tracks importance, so sparse layers must also compute dense weight gradients.

    Examples
    --------
    >>> m, table = {"fc.weight": np.array([True, False, False, False])}, {"fc.weight": (0.3, 0.0)}
    >>> choose_sparse_layers(m, table, dense_weight_grad=False), choose_sparse_layers(m, table, dense_weight_grad=True)
    ({'fc.weight'}, set())
    """
    chosen = set()
    for name, (without, with_dw) in break_even.items():  # one entry per nn.Linear layer, not per weight
        threshold = with_dw if dense_weight_grad else without
        # float32 mean, as torch computes it, so the choice is the same from numpy or torch masks
        if threshold > 0 and float(torch.as_tensor(masks[name]).float().mean()) <= threshold:
            chosen.add(name)
    return chosen


def client_step(
    model: nn.Module,
    ins: TrainIns,
    client: ClientState,
    dataset: ArrayDataset,
    loss_fn: LossFn,
    sparse_layers: Collection[str] = (),
    swap_cache: SwapCache | None = None,
    mask_version: int | None = None,
) -> TrainRes:
    """Train ``model`` locally for one round and return the reply.

    Modifies ``model`` in place (it is a workspace: its state is overwritten with ``ins.state``),
    ``client.importance`` (accumulated, and reset after an upload) and, with momentum, ``client.momentum_buffers``.

    Each step computes the dense gradient at the masked weights, so pruned coordinates get a gradient too
    (PruneFL needs it for importance); only the update is masked, then pruned coordinates are re-zeroed.
    Importance is the square of the round's gradient sum (``round_sum``), or the official code's aliasing
    artefact 4·N_c·g_K² (``legacy_last_step``), for every parameter (spec §3.2, D4).

    ``sparse_layers`` names ``nn.Linear`` weights to train with the CSR kernel of
    :mod:`prunefl.sparse.linear` for this round (the layers whose density is below their measured break-even);
    they compute dense weight gradients only when importance is tracked this round: for ``round_sum`` they keep
    each step's input rows and take the round's gradient sum Σ_k g_k as one GEMM at the end, for
    ``legacy_last_step`` one dense GEMM per step. ``swap_cache`` keeps the
    last swap handle (updated here), whose index buffers are reused where a mask did not change; with the server's
    ``mask_version`` (equal versions mean equal masks) an unchanged version skips the check. The reply is the
    same as with masked dense kernels up to float rounding.

    With ``client.momentum`` μ > 0 the local steps are SGD with momentum (PyTorch's: b ← μ·b + g, w ← w − η·b,
    the first step b = g) and the client keeps its buffers ``b`` from round to round. They start afresh when the
    server's ``mask_version`` differs from the one they were built under (or is None): official SNIP clears the
    client optimiser state when it sets the mask, and regrown coordinates must not restart with momentum. Pruned
    coordinates carry no momentum: their gradient is masked before the step and the buffers are masked when
    loaded. Momentum needs the dense parameter shapes, so with μ > 0 ``sparse_layers`` is ignored and every layer
    trains masked dense. μ = 0 is plain SGD, bit for bit.
    """
    momentum = client.momentum > 0
    if momentum:
        sparse_layers = ()  # a CSR swap replaces a weight by its kept values: the buffers' shapes would not match
        if mask_version is None or client.momentum_mask_version != mask_version:
            client.momentum_buffers = {}
        client.momentum_mask_version = mask_version
    load_model_state_(model, ins.state, ins.masks)
    partial = {name for name, m in ins.masks.items() if not np.all(m)}  # layers where masking changes anything
    # Swapped layers drop their pruned coordinates at the swap and get zeros there at the write-back.
    apply_masks_(model, partial - set(sparse_layers))
    tracking = ins.importance_mode != "off"
    names = [n for n, p in model.named_parameters() if p.requires_grad]  # original names, before any swap
    swap = None
    if sparse_layers:
        masks_t = {k: torch.from_numpy(np.asarray(v, dtype=np.bool_)) for k, v in ins.masks.items() if k in partial}
        previous = swap_cache.previous if swap_cache is not None else None
        same = swap_cache is not None and mask_version is not None and swap_cache.mask_version == mask_version
        # round_sum needs only Σ_k g_k of a sparse layer's dense weight: recorded rows, one GEMM at the end.
        # legacy_last_step needs each step's gradient: a dense GEMM per step.
        per_step = ins.importance_mode == "legacy_last_step"
        swap = sparsify_linear_layers_(model, masks_t, sparse_layers, per_step, previous=previous, same_masks=same)
        swap.set_record_inputs(ins.importance_mode == "round_sum")
        if swap_cache is not None:
            swap_cache.previous, swap_cache.mask_version = swap, mask_version
    deferred = set(swap.sparse) if swap is not None and ins.importance_mode == "round_sum" else set()
    stepwise = [n for n in names if n not in deferred]  # parameters whose gradients are summed after every step
    params = [p for p in model.parameters() if p.requires_grad]
    if momentum:
        optimizer = _momentum_sgd(model, names, client, ins.masks, partial, ins.lr)
    else:
        optimizer = torch.optim.SGD(params, lr=ins.lr)
    sums = {n: torch.zeros(_shape_of(model, n, swap)) for n in stepwise} if tracking else {}
    stepwise_sum = list(sums.values())
    loss_sum = torch.zeros((), dtype=torch.float64)
    model.train()
    start = time.perf_counter()
    for _ in range(ins.local_steps):
        idx = torch.from_numpy(client.batches.next(ins.batch_size))
        x = dataset.prepare(dataset.x_train[idx], train=True, generator=client.augment_generator)
        y = dataset.y_train[idx]
        optimizer.zero_grad(set_to_none=True)
        if swap is not None:
            swap.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if tracking:
            grads = _gradients(model, stepwise, swap)
            if ins.importance_mode == "legacy_last_step":
                # the official sum aliases .grad: zeroing clears it and backward refills it, so it ends as 2·g_K
                torch._foreach_mul_(stepwise_sum, 0.0)
                torch._foreach_add_(stepwise_sum, grads, alpha=2.0)
            else:
                torch._foreach_add_(stepwise_sum, grads)  # explicit buffers: no aliasing of .grad
        if swap is None:
            mask_gradients_(model, partial)
            optimizer.step()
            apply_masks_(model, partial)
        else:
            swap.mask_gradients_()
            optimizer.step()
            swap.apply_masks_()
        loss_sum += loss.detach()
    if swap is not None and deferred:  # deferred is non-empty only in round_sum rounds with a swap
        for n, total in swap.recorded_weight_grads().items():
            sums[n] = total if total is not None else torch.zeros(_shape_of(model, n, swap))
    if swap is not None:
        swap.set_record_inputs(False)
        swap.restore_()  # kept values back into the dense weights, pruned coordinates 0
    if momentum:
        client.momentum_buffers = _momentum_buffers(model, names, optimizer)
    compute_wall_s = time.perf_counter() - start
    num_examples = ins.local_steps * ins.batch_size
    if tracking:
        _accumulate_importance(client, names, [sums[n] for n in names], num_examples)
    importance = None
    if ins.upload_importance:
        importance = {n: t.numpy() for n, t in client.importance.items()}
        client.importance = {}
    return TrainRes(
        client_id=client.client_id,
        num_examples=num_examples,
        state=model_state(model, ins.masks),
        train_loss=float(loss_sum) / ins.local_steps,
        compute_wall_s=compute_wall_s,
        importance=importance,
    )


def model_state(model: nn.Module, masks: dict[str, np.ndarray] | dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Copy the model's state (parameters and buffers, mask buffers excluded) into numpy arrays."""
    skip = {f"{name}_mask" for name in masks}
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items() if k not in skip}


def load_model_state_(model: nn.Module, state: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> None:
    """Load ``state`` and ``masks`` into ``model`` in place (parameter identities survive)."""
    full = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    full.update({f"{name}_mask": torch.from_numpy(np.asarray(m, dtype=np.bool_)) for name, m in masks.items()})
    model.load_state_dict(full, strict=True)


def _accumulate_importance(
    client: ClientState, names: list[str], grad_sum: list[torch.Tensor], num_examples: int
) -> None:
    torch._foreach_mul_(grad_sum, grad_sum)  # (Σ_k g)² element-wise
    if not client.importance:
        client.importance = {n: torch.zeros_like(g, dtype=torch.float32) for n, g in zip(names, grad_sum)}
    acc = [client.importance[n] for n in names]
    torch._foreach_add_(acc, grad_sum, alpha=float(num_examples))  # += N_c·(Σ_k g)²


def _momentum_sgd(
    model: nn.Module,
    names: list[str],
    client: ClientState,
    masks: dict[str, np.ndarray],
    partial: set[str],
    lr: float,
) -> torch.optim.SGD:
    """SGD with the client's momentum, its buffers loaded from ``client.momentum_buffers`` and masked.

    Modifies the stored buffers in place (pruned coordinates set to 0); a parameter without a buffer gets one from
    its first step's gradient, as in :class:`torch.optim.SGD`.
    """
    params = [model.get_parameter(n) for n in names]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=client.momentum)
    for name, parameter in zip(names, params):  # one entry per parameter tensor (~10-60), not per element
        buffer = client.momentum_buffers.get(name)
        if buffer is None:
            continue
        if name in partial:
            buffer.mul_(torch.from_numpy(np.asarray(masks[name], dtype=np.bool_)))
        optimizer.state[parameter]["momentum_buffer"] = buffer
    return optimizer


def _momentum_buffers(model: nn.Module, names: list[str], optimizer: torch.optim.SGD) -> dict[str, torch.Tensor]:
    """The optimiser's momentum buffers after the round, keyed by parameter name (parameters that stepped)."""
    out = {}
    for name in names:
        buffer = optimizer.state.get(model.get_parameter(name), {}).get("momentum_buffer")
        if buffer is not None:
            out[name] = buffer
    return out


def _shape_of(model: nn.Module, name: str, swap: SparseLayers | None) -> torch.Size:
    if swap is not None and name in swap.sparse:
        return swap.dense[name].weight.shape
    return model.get_parameter(name).shape


def _gradients(model: nn.Module, names: list[str], swap: SparseLayers | None) -> list[torch.Tensor]:
    """Dense gradient of every original parameter: ``.grad``, or a sparse layer's dense weight gradient."""
    dense = swap.dense_weight_grads() if swap is not None else {}
    out = []
    for n in names:  # one entry per parameter tensor (~10-60), not per element
        g = dense[n] if n in dense else model.get_parameter(n).grad
        out.append(g if g is not None else torch.zeros(_shape_of(model, n, swap)))  # unused parameter: no gradient
    return out


def _group(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state`` under ``prefix/``, with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in state.items() if k.startswith(prefix + "/")}


def _tensor_group(state: Mapping[str, Any], prefix: str, names_key: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix/``, in the order ``state[names_key]`` lists, as copies."""
    names = state.get(names_key)
    if not isinstance(names, list):
        raise CheckpointError(f"client state needs {names_key!r} (a list of names), got {names!r}")
    out = {}
    for n in names:
        value = state.get(f"{prefix}/{n}")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"client state needs a tensor at '{prefix}/{n}', got {type(value).__name__}")
        out[n] = value.detach().clone()
    return out
