"""Run fc layers on sparse kernels where a measured break-even density says it pays more than masked dense ones.

A layer runs sparse only where measurement says it pays (spec §3.9 converts every layer at density ≤ 0.9,
which §4.4 shows is no break-even point). Only `nn.Linear` layers have a sparse kernel (`SparseLinear`);
convolutions always stay dense with a mask. That is measured, not assumed: torch has no sparse convolution on
CPU, and the official method, im2col + CSR SpMM (spec §10 item 8), spends more on the im2col matrix alone
(`F.unfold`, 2.9 ms) than MKL-DNN spends on the whole dense forward of Conv-2's conv2 (2.5 ms; batch 20, one
thread, 2-core AMD EPYC), and the forward with CSR SpMM took 19-22 ms at densities 0.3-0.05.

Typical use in a local update (the optimiser is built after the swap, because the sparse layers bring new
parameters)::

    kernels = choose_kernels(model, masks, break_even)
    sparse_names = [name for name, kernel in kernels.items() if kernel == "sparse"]
    swapped = sparsify_linear_layers_(model, masks, sparse_names, previous=last_round_swap)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(local_steps):
        optimizer.zero_grad(); swapped.zero_grad(); loss_fn(model(x), y).backward()
        swapped.mask_gradients_(); optimizer.step(); swapped.apply_masks_()
    swapped.restore_()  # the dense nn.Linear layers are back, holding the trained values

The masks change only at reconfigurations (every 50 rounds in the paper, spec §3.6), so passing the previous
round's handle as `previous` skips rebuilding the sparse indices in most rounds.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from prunefl.errors import ConfigError
from prunefl.sparse.linear import SparseLinear
from prunefl.sparse.masks import layer_densities, multiplier

__all__ = [
    "SWITCH_MIN_SPEEDUP",
    "BreakEven",
    "Kernel",
    "SparseLayers",
    "choose_kernels",
    "measure_break_even",
    "sparsify_linear_layers_",
]

logger = logging.getLogger(__name__)

# Margin a layer's sparse kernel must beat masked dense by, in isolation, before a client switches it inside whole
# steps: measured on Conv-2's fc1, an isolated "win" at density 0.5 made whole 5-step updates slower (swap cost,
# cache effects between layers), while at <= 0.3 the isolated gain of >= 1.25x carried over.
SWITCH_MIN_SPEEDUP = 1.25

Kernel = Literal["dense", "sparse"]
"""How a prunable layer computes: "dense" (masked dense weight) or "sparse" (`SparseLinear`, fc layers only)."""

_SEED = 0  # masks, inputs and weights of measure_break_even: the same problem on every call


@dataclass(frozen=True)
class BreakEven:
    """Forward+backward times of one fc layer shape, masked dense against sparse, at several densities.

    Attributes
    ----------
    in_features, out_features, batch_size : int
        The problem: x (batch_size, in_features), W (out_features, in_features).
    dense_weight_grad : bool
        Whether the sparse path also computed the full dense weight gradient (importance rounds).
    densities : tuple of float
        Tested densities, as given.
    dense_s, sparse_s : tuple of float
        Median seconds at each density of the layer's work in one step, measured side by side: masked dense
        (forward, backward, masking) and sparse (forward, backward).
    break_even_density : float
        The highest tested density at which sparse was faster, or 0.0 if it never was. Densities between
        tested points are not interpolated.
    """

    in_features: int
    out_features: int
    batch_size: int
    dense_weight_grad: bool
    densities: tuple[float, ...]
    dense_s: tuple[float, ...]
    sparse_s: tuple[float, ...]
    break_even_density: float


def measure_break_even(
    in_features: int,
    out_features: int,
    batch_size: int,
    densities: Sequence[float],
    repeats: int,
    dense_weight_grad: bool = False,
    min_speedup: float = 1.0,
) -> BreakEven:
    """Time forward+backward of a masked dense and a sparse fc layer side by side; return the break-even density.

    Runs on CPU with the current `torch.get_num_threads()`. At each density a random mask keeps exactly
    ``round(density · in · out)`` weights (seeded: every call solves the same problem). The input requires
    grad, as inside a network, so both paths compute the input gradient. The masked dense path is what such
    a layer costs in a local step: forward, backward with the dense weight gradient, then the gradient and
    the weight multiplied by the mask. The sparse path is forward and backward with the kept-values
    gradient (plus the dense one if `dense_weight_grad`); it has nothing to mask. Each repeat times every
    density and both paths in turn after one untimed burn-in, so background load hits both alike; the
    median over repeats is kept.

    Parameters
    ----------
    in_features, out_features : int
        Layer sizes (≥ 1).
    batch_size : int
        Rows of the input (≥ 1).
    densities : Sequence[float]
        Densities to test, each in [0, 1].
    repeats : int
        Timed runs per density and path (≥ 1).
    dense_weight_grad : bool
        Whether the sparse path computes the dense weight gradient too (default: False).
    min_speedup : float
        Sparse "wins" at a density only when it is at least this many times faster; callers that switch layers
        inside whole training steps pass :data:`SWITCH_MIN_SPEEDUP` (default: 1.0).

    Returns
    -------
    BreakEven
        Times and the highest tested density at which sparse won (0.0 if none).

    Raises
    ------
    ConfigError
        If a size, `batch_size` or `repeats` is < 1, `densities` is empty, or a density is outside [0, 1].

    Examples
    --------
    >>> result = measure_break_even(8, 4, batch_size=2, densities=[1.0, 0.1], repeats=1)
    >>> result.densities, 0.0 <= result.break_even_density <= 1.0
    ((1.0, 0.1), True)
    """
    _check_measure_arguments(in_features, out_features, batch_size, densities, repeats)
    generator = torch.Generator().manual_seed(_SEED)
    x = torch.randn(batch_size, in_features, generator=generator).requires_grad_()
    grad_y = torch.randn(batch_size, out_features, generator=generator)
    layers: list[tuple[nn.Linear, Tensor, SparseLinear]] = []
    for value in densities:
        dense = nn.utils.skip_init(nn.Linear, in_features, out_features)  # no draw from the global RNG
        mask = _random_mask((out_features, in_features), value, generator)
        with torch.no_grad():
            dense.weight.copy_(torch.randn(out_features, in_features, generator=generator) * mask)
            dense.bias.copy_(torch.randn(out_features, generator=generator))
        layers.append((dense, mask, SparseLinear.from_dense(dense, mask, dense_weight_grad=dense_weight_grad)))
    dense_runs: list[list[float]] = [[] for _ in layers]
    sparse_runs: list[list[float]] = [[] for _ in layers]
    for repeat in range(repeats + 1):  # repeat 0 is the burn-in
        for index, (dense, mask, sparse) in enumerate(layers):
            if repeat % 2 == 0:  # alternate which path runs first, so neither always finds warm caches
                dense_s = _time_masked_dense_step(dense, mask, x, grad_y)
                sparse_s = _time_sparse_step(sparse, x, grad_y)
            else:
                sparse_s = _time_sparse_step(sparse, x, grad_y)
                dense_s = _time_masked_dense_step(dense, mask, x, grad_y)
            if repeat > 0:
                dense_runs[index].append(dense_s)
                sparse_runs[index].append(sparse_s)
    dense_median = tuple(statistics.median(runs) for runs in dense_runs)
    sparse_median = tuple(statistics.median(runs) for runs in sparse_runs)
    wins = [float(d) for d, ds, ss in zip(densities, dense_median, sparse_median) if ss * min_speedup < ds]
    result = BreakEven(
        in_features=in_features,
        out_features=out_features,
        batch_size=batch_size,
        dense_weight_grad=dense_weight_grad,
        densities=tuple(float(d) for d in densities),
        dense_s=dense_median,
        sparse_s=sparse_median,
        break_even_density=max(wins, default=0.0),
    )
    logger.debug("break-even of fc %dx%d, batch %d: %s", out_features, in_features, batch_size, result)
    return result


def choose_kernels(
    model: nn.Module, masks: Mapping[str, Tensor], break_even: Mapping[str, float]
) -> dict[str, Kernel]:
    """Return "sparse" for each fc weight whose density is at most its break-even density, else "dense".

    A weight is "sparse" when it belongs to an `nn.Linear`, `break_even` has a value b > 0 for it, and its
    mask density is ≤ b. Convolutions, fc layers missing from `break_even`, and layers with b = 0 (sparse
    never won) are "dense".

    Parameters
    ----------
    model : torch.nn.Module
        The dense model owning the weights named in `masks`.
    masks : Mapping[str, Tensor]
        Boolean masks keyed by parameter name (`named_parameters()` names).
    break_even : Mapping[str, float]
        Parameter name → measured break-even density in [0, 1] (`BreakEven.break_even_density`).

    Returns
    -------
    dict[str, Kernel]
        One entry per name of `masks`, in its order.

    Raises
    ------
    ConfigError
        If `break_even` names a weight absent from `masks` or one that is not the weight of an `nn.Linear`,
        or a break-even density is outside [0, 1].

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    >>> masks = {"0.weight": torch.eye(4, dtype=torch.bool), "1.weight": torch.ones(2, 4, dtype=torch.bool)}
    >>> choose_kernels(model, masks, {"0.weight": 0.3, "1.weight": 0.3})
    {'0.weight': 'sparse', '1.weight': 'dense'}
    """
    _check_break_even(model, masks, break_even)
    densities = layer_densities(masks)
    kernels: dict[str, Kernel] = {}
    for name, value in densities.items():
        threshold = break_even.get(name, 0.0)
        kernels[name] = "sparse" if threshold > 0.0 and value <= threshold else "dense"
    return kernels


def sparsify_linear_layers_(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    layers: Iterable[str],
    dense_weight_grad: bool = False,
    previous: SparseLayers | None = None,
    same_masks: bool = False,
) -> SparseLayers:
    """Swap the `nn.Linear` modules owning the weights `layers` for `SparseLinear` copies; return the handle.

    Modifies `model` in place: each named weight's `nn.Linear` is replaced in its parent by
    ``SparseLinear.from_dense(linear, masks[name])``. The dense modules are kept, unchanged, by the handle,
    which writes the trained values back into them (`SparseLayers.write_dense_`) and swaps them back
    (`SparseLayers.restore_`). All sparse layers are built before any is swapped in, so a failure leaves
    `model` unchanged. Build the optimiser after this call: the swapped layers' parameters are new objects.

    While swapped, masks of the swapped weights are not on the model (`get_masks(model)` fails on models
    that declare their prunable names); use the handle's `apply_masks_` and `mask_gradients_`, which act
    on the other weights of `masks`.

    Parameters
    ----------
    model : torch.nn.Module
        The model; its masks do not have to be applied yet (pruned coordinates are dropped anyway).
    masks : Mapping[str, Tensor]
        Boolean masks keyed by parameter name, with an entry for each name of `layers`; the other entries
        are the weights that stay masked dense.
    layers : Iterable[str]
        Parameter names ("fc1.weight") of `nn.Linear` weights to make sparse, e.g. the "sparse" entries of
        `choose_kernels`.
    dense_weight_grad : bool
        Initial `SparseLinear.dense_weight_grad` of every swapped layer (default: False).
    previous : SparseLayers or None
        The handle of an earlier swap (e.g. the previous round's, already restored). A layer whose mask is
        unchanged reuses its index buffers (`SparseLinear` `pattern_from`): the swap then costs a gather of
        the kept values instead of a pass building indices (default: None).
    same_masks : bool
        The caller knows the masks of `layers` are those of `previous` (e.g. the server's mask version is
        unchanged): reuse its indices without checking them (`SparseLinear` `trust_pattern`; default: False).

    Returns
    -------
    SparseLayers
        The handle.

    Raises
    ------
    ConfigError
        If a name of `layers` has no mask or is not the `weight` of an `nn.Linear` of `model`, `masks`
        names a weight that is not a parameter of `model` or one already swapped (restore the earlier swap
        first), or a mask has the wrong dtype or shape. `model` is unchanged then.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(3, 2))
    >>> swapped = sparsify_linear_layers_(model, {"0.weight": torch.ones(2, 3, dtype=torch.bool)}, ["0.weight"])
    >>> type(model[0]).__name__, [name for name, _ in model.named_parameters()]
    ('SparseLinear', ['0.values', '0.bias'])
    >>> swapped.restore_()
    >>> type(model[0]).__name__
    'Linear'
    """
    names = list(dict.fromkeys(layers))
    dense_layers = _check_swappable(model, masks, names)
    sparse_layers: dict[str, SparseLinear] = {}
    for name, linear in dense_layers.items():
        try:
            mask = masks[name].to(linear.weight.device)
            pattern_from = None if previous is None else previous.sparse.get(name)
            sparse_layers[name] = SparseLinear.from_dense(
                linear, mask, dense_weight_grad, pattern_from, trust_pattern=same_masks
            )
        except ConfigError as error:
            raise ConfigError(f"cannot make {name!r} sparse: {error}") from error
    masked: list[tuple[Tensor, Tensor]] = []
    for name, mask in masks.items():
        if name not in sparse_layers:
            parameter = model.get_parameter(name)
            masked.append((parameter, mask.to(parameter.device)))
    for name, layer in sparse_layers.items():
        _set_submodule(model, _module_path(name), layer)
    logger.debug("swapped %s for sparse layers: %s", names, list(sparse_layers.values()))
    return SparseLayers(model, dense_layers, sparse_layers, masked)


class SparseLayers:
    """The handle of a `sparsify_linear_layers_` swap: sparse layers in the model, dense originals kept aside.

    A class because its state lasts across a whole local update: the dense modules to restore and the masked
    weights that stay dense. Build it with `sparsify_linear_layers_`, not directly.

    Attributes
    ----------
    sparse : dict[str, SparseLinear]
        Weight name ("fc1.weight") → the sparse layer now in the model.
    dense : dict[str, torch.nn.Linear]
        Weight name → the original dense layer, out of the model until `restore_`.
    """

    def __init__(
        self,
        model: nn.Module,
        dense: dict[str, nn.Linear],
        sparse: dict[str, SparseLinear],
        masked: list[tuple[Tensor, Tensor]],
    ) -> None:
        self._model = model
        self.dense = dense
        self.sparse = sparse
        self._masked = masked
        self._restored = False

    def set_dense_weight_grad(self, enabled: bool) -> None:
        """Set `SparseLinear.dense_weight_grad` of every sparse layer (True in importance-collecting rounds)."""
        for layer in self.sparse.values():
            layer.dense_weight_grad = enabled

    def set_record_inputs(self, enabled: bool) -> None:
        """Set `SparseLinear.record_inputs` of every sparse layer (importance summed over a round, one GEMM)."""
        for layer in self.sparse.values():
            layer.record_inputs = enabled

    def recorded_weight_grads(self) -> dict[str, Tensor | None]:
        """Return each sparse layer's summed dense weight gradient since the last call (`recorded_weight_grad`)."""
        return {name: layer.recorded_weight_grad() for name, layer in self.sparse.items()}

    def dense_weight_grads(self) -> dict[str, Tensor | None]:
        """Return each sparse layer's dense weight gradient (out, in), keyed by weight name; None if not computed."""
        return {name: layer.weight_grad for name, layer in self.sparse.items()}

    def zero_grad(self) -> None:
        """Reset the dense weight gradients of the sparse layers (the optimiser does not know them)."""
        for layer in self.sparse.values():
            layer.zero_grad(set_to_none=True)

    def apply_masks_(self) -> None:
        """Zero the pruned coordinates of the weights that stay masked dense (`sparse.masks.apply_masks_`)."""
        with torch.no_grad():
            for parameter, mask in self._masked:
                parameter.mul_(multiplier(mask, parameter.dtype))

    def mask_gradients_(self) -> None:
        """Zero the gradients of the masked dense weights at pruned coordinates (`sparse.masks.mask_gradients_`)."""
        with torch.no_grad():
            for parameter, mask in self._masked:
                if parameter.grad is not None:
                    parameter.grad.mul_(multiplier(mask, parameter.grad.dtype))

    def write_dense_(self) -> None:
        """Write every sparse layer's values and bias into its dense original (pruned coordinates 0).

        Modifies the dense layers in place; the model keeps its sparse layers.
        """
        for name, layer in self.sparse.items():
            layer.to_dense_(self.dense[name])

    def restore_(self) -> None:
        """Write the values back (`write_dense_`) and put the dense layers back into the model.

        Modifies the model in place; afterwards it holds the original `nn.Linear` objects (parameter ids as
        before the swap) and their mask buffers. Calling it twice is a no-op.
        """
        if self._restored:
            return
        self.write_dense_()
        for name, linear in self.dense.items():
            _set_submodule(self._model, _module_path(name), linear)
        self._restored = True


def _time_masked_dense_step(layer: nn.Linear, mask: Tensor, x: Tensor, grad_y: Tensor) -> float:
    """Time what a masked dense layer costs in a step: forward, backward, masking the gradient and the weight."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    start = time.perf_counter()
    layer(x).backward(grad_y)
    with torch.no_grad():
        assert layer.weight.grad is not None
        layer.weight.grad.mul_(multiplier(mask, layer.weight.dtype))
        layer.weight.mul_(multiplier(mask, layer.weight.dtype))
    return time.perf_counter() - start


def _time_sparse_step(layer: SparseLinear, x: Tensor, grad_y: Tensor) -> float:
    """Time forward and backward of a sparse layer; it has no pruned coordinate to mask."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    start = time.perf_counter()
    layer(x).backward(grad_y)
    return time.perf_counter() - start


def _random_mask(shape: tuple[int, int], density: float, generator: torch.Generator) -> Tensor:
    """Return a bool mask of `shape` keeping exactly round(density · numel) uniformly random coordinates."""
    n_total = shape[0] * shape[1]
    n_kept = round(density * n_total)
    mask = torch.zeros(n_total, dtype=torch.bool)
    mask[torch.randperm(n_total, generator=generator)[:n_kept]] = True
    return mask.view(shape)


def _module_path(weight_name: str) -> str:
    return weight_name.rpartition(".")[0]


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path), child, module)


def _check_measure_arguments(
    in_features: int, out_features: int, batch_size: int, densities: Sequence[float], repeats: int
) -> None:
    for key, value in (
        ("in_features", in_features),
        ("out_features", out_features),
        ("batch_size", batch_size),
        ("repeats", repeats),
    ):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if len(densities) == 0:
        raise ConfigError("densities must name at least one density in [0, 1], got none")
    bad = [d for d in densities if not 0.0 <= d <= 1.0]
    if bad:
        raise ConfigError(f"densities must be in [0, 1], got {bad}")


def _check_break_even(model: nn.Module, masks: Mapping[str, Tensor], break_even: Mapping[str, float]) -> None:
    unknown = [name for name in break_even if name not in masks]
    if unknown:
        raise ConfigError(f"break_even names weights {unknown} that have no mask; masks has {list(masks)}")
    not_linear = [name for name in break_even if not _is_linear_weight(model, name)]
    if not_linear:
        raise ConfigError(
            f"break_even names {not_linear}, which are not nn.Linear weights; only fc layers have a sparse "
            "kernel, convolutions stay masked dense"
        )
    bad = {name: value for name, value in break_even.items() if not 0.0 <= value <= 1.0}
    if bad:
        raise ConfigError(f"break-even densities must be in [0, 1], got {bad}")


def _check_swappable(model: nn.Module, masks: Mapping[str, Tensor], names: list[str]) -> dict[str, nn.Linear]:
    missing = [name for name in names if name not in masks]
    if missing:
        raise ConfigError(f"layers {missing} have no mask; masks has {list(masks)}")
    swapped = [name for name in masks if _is_swapped(model, name)]
    if swapped:
        raise ConfigError(f"layers {swapped} are already SparseLinear; call restore_() on the earlier swap first")
    parameters = dict(model.named_parameters())
    unknown = [name for name in masks if name not in parameters]
    if unknown:
        raise ConfigError(f"masks names {unknown}, which are not parameters of {type(model).__name__}")
    not_linear = [name for name in names if not _is_linear_weight(model, name)]
    if not_linear:
        raise ConfigError(
            f"layers {not_linear} are not the weight of an nn.Linear (exactly that class) of {type(model).__name__}"
        )
    linears: dict[str, nn.Linear] = {}
    for name in names:
        module = model.get_submodule(_module_path(name))
        assert isinstance(module, nn.Linear)  # checked by _is_linear_weight just above
        linears[name] = module
    return linears


def _is_swapped(model: nn.Module, name: str) -> bool:
    path, _, leaf = name.rpartition(".")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return False
    return leaf == "weight" and isinstance(module, SparseLinear)


def _is_linear_weight(model: nn.Module, name: str) -> bool:
    path, _, leaf = name.rpartition(".")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return False
    return leaf == "weight" and type(module) is nn.Linear
