"""SynFlow (extension; Tanaka et al. 2020): data-free iterative pruning at initialisation to the reference density."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from prunefl import metrics as K
from prunefl.errors import check_setting as _check
from prunefl.pruning.methods.base import BeforeFL, Method, MethodContext, ReferenceRun, SetupView
from prunefl.pruning.methods.density_target import DensityTargetMethod
from prunefl.pruning.methods.registry import MethodSpec
from prunefl.pruning.select import top_k_global

__all__ = ["SynFlowSettings", "SynFlow", "synflow_scores", "synflow_masks", "SPECS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynFlowSettings:
    """SynFlow's settings (config table ``[synflow]``, spec §8). Defaults are the paper's.

    The target density d is the reference run's (``reference.density`` or PruneFL's final density).

    Attributes
    ----------
    iterations : int
        n, the number of score-and-prune iterations; iteration i = 1…n keeps round(d^(i/n)·|J|) weights
        (the exponential schedule), so the last one reaches round(d·|J|); at most 10 000, each one a forward and
        backward pass of the model (default: 100).
    """

    iterations: int = 100

    def __post_init__(self) -> None:
        _check(1 <= self.iterations <= 10_000, "synflow.iterations", self.iterations, "must be in [1, 10000]")


class SynFlow(DensityTargetMethod):
    """SynFlow: prune the initial model without data, then train with the mask fixed from round 0 (extension).

    Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data by iteratively conserving synaptic
    flow", NeurIPS 2020. Not in the official PruneFL code (spec §8, D13): a labelled extension run under the same
    protocol as SNIP (target = the reference density, one global threshold, mask fixed from round 0). The mask is
    found in :meth:`before_fl` by :func:`synflow_masks` on the server's workspace; the initial state's pruned
    coordinates are zeroed, as SNIP's are. Like SNIP's scoring, it runs at the server and charges the simulated
    clock nothing.

    Parameters
    ----------
    settings : SynFlowSettings
        The ``[synflow]`` table.
    target_density, reference_source : float, str
        See :class:`~prunefl.pruning.methods.density_target.DensityTargetMethod` (d in (0, 1], else ConfigError).
    """

    name = "synflow"

    def __init__(self, settings: SynFlowSettings, target_density: float, reference_source: str = "") -> None:
        super().__init__(target_density, reference_source)
        self.settings = settings

    def before_fl(self, view: SetupView) -> BeforeFL:
        """Run SynFlow on the workspace (which holds the initial state) and fix its mask from round 0."""
        start = time.perf_counter()
        masks = synflow_masks(view.model, list(view.masks), view.dataset.input_shape, self.target_density,
                              self.settings.iterations)
        state = {k: (v * masks[k] if k in masks else v) for k, v in view.state.items()}
        self._outcome = self._counts(masks)
        logger.info("synflow: %d iterations kept %d of %d weights (target density %.4f from %s) in %.1f s",
                    self.settings.iterations, self._outcome[K.K_N_KEPT], self._outcome[K.K_N_TOTAL],
                    self.target_density, self.reference_source, time.perf_counter() - start)
        return BeforeFL(state=state, masks=masks)

    def _summary_entries(self) -> dict[str, Any]:
        return {"iterations": self.settings.iterations}


def synflow_scores(
    model: nn.Module, names: Sequence[str], input_shape: Sequence[int], masks: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """SynFlow's score |θ ⊙ ∂R/∂θ| of the weights ``names`` of the linearised ``model`` (one iteration).

    Modifies ``model`` while it runs and restores it: its values, dtype and train/eval mode are as before, and
    its parameter objects are the same. Linearising means every parameter becomes |θ|, BatchNorm runs in eval
    mode, and the input is all ones of shape ``(1, *input_shape)``; R is the sum of the outputs. Weights pruned
    in ``masks`` count as 0 (default: None, none pruned).

    Returns
    -------
    dict[str, Tensor]
        float64 scores of the weights' shapes, on the CPU; a pruned weight scores 0.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[-1.0, 2.0]]))
    >>> synflow_scores(net, ["0.weight"], (2,))["0.weight"].tolist()  # R = |w|·1, score = |w|
    [[1.0, 2.0]]
    """
    with _linearised(model, names) as abs_weights:
        keep = masks if masks is not None else {n: torch.ones_like(w, dtype=torch.bool) for n, w in abs_weights.items()}
        return _flow_scores(model, abs_weights, keep, input_shape)


def synflow_masks(
    model: nn.Module, names: Sequence[str], input_shape: Sequence[int], target_density: float, iterations: int = 100
) -> dict[str, Tensor]:
    """Prune the weights ``names`` of ``model`` by iterative SynFlow to ``target_density`` d.

    Modifies ``model`` while it runs and restores it (see :func:`synflow_scores`). Iteration i = 1…n scores the
    weights still kept and keeps the round(d^(i/n)·|J|) best of them across all layers, so a pruned weight never
    returns and the last iteration keeps round(d·|J|) (spec §8; ties to the lower index).

    Parameters
    ----------
    model : torch.nn.Module
        The initialised model (any device; its mask buffers are ignored).
    names : Sequence[str]
        Its prunable weights, as in ``named_parameters()``.
    input_shape : Sequence[int]
        Shape of one input, without the batch dimension.
    target_density : float
        d in [0, 1].
    iterations : int
        n ≥ 1 (default: 100).

    Returns
    -------
    dict[str, Tensor]
        Bool masks on the CPU (like the server's), keyed by ``names``.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 0.5]]))
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, 2.0]]))
    >>> masks = synflow_masks(net, ["0.weight", "1.weight"], (2,), 0.5, iterations=2)
    >>> masks["0.weight"].tolist(), masks["1.weight"].tolist()
    ([[False, True], [True, False]], [[False, True]])
    """
    with _linearised(model, names) as abs_weights:
        n_total = sum(w.numel() for w in abs_weights.values())
        masks = {n: torch.ones(w.shape, dtype=torch.bool) for n, w in abs_weights.items()}  # on the CPU, as top-k's
        for i in range(1, iterations + 1):  # each iteration needs the previous one's mask
            scores = _flow_scores(model, abs_weights, masks, input_shape)
            n_kept = round(target_density ** (i / iterations) * n_total)  # exponential schedule d_i = d^(i/n)
            masks = top_k_global(scores, n_kept, within=masks)
        return masks


@contextmanager
def _linearised(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Make ``model`` SynFlow's linearised float64 network for the block; yield |θ| of ``names``; restore it."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    was_training = model.training
    try:
        # float64: with every weight positive nothing cancels, so R grows geometrically with depth (measured at
        # the official init: 5e7 for Conv-2, 1.5e15 for VGG-11, 2e27 for ResNet-18 on 64×64 inputs, with scores up
        # to 4e25). Two more such stages would pass float32's 3.4e38; float64 (1.8e308) leaves room for any model
        # we build, and one batch-1 pass per iteration costs little even in double precision.
        model.double()  # converts values in place: parameter objects (and optimisers holding them) stay valid
        model.eval()  # BatchNorm uses its running statistics (mean 0, variance 1 at initialisation)
        with torch.no_grad():
            for p in model.parameters():
                p.abs_()
        yield {n: model.get_parameter(n).detach().clone() for n in names}
    finally:
        model.to(dtype)
        model.load_state_dict(saved)  # the original signed weights
        model.train(was_training)


def _flow_scores(
    model: nn.Module, abs_weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], input_shape: Sequence[int]
) -> dict[str, Tensor]:
    """|θ ⊙ ∂R/∂θ| on the linearised ``model`` with the weights pruned by ``masks`` set to 0."""
    params = [model.get_parameter(n) for n in abs_weights]
    with torch.no_grad():
        for p, (n, w) in zip(params, abs_weights.items()):  # one tensor op per layer
            p.copy_(w * masks[n].to(w.device))
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=params[0].device)  # (1, *input_shape)
    with torch.enable_grad():  # also when the caller runs under no_grad
        r = model(x).sum()  # R = 1ᵀ(∏_l |θ_l|)1 for a linear network: the total synaptic flow
        grads = torch.autograd.grad(r, params)  # leaves .grad of the workspace untouched
    return {n: (p.detach() * g).abs().cpu() for n, p, g in zip(abs_weights, params, grads)}


def _build(settings: SynFlowSettings, context: MethodContext, reference: ReferenceRun | None) -> Method:
    assert reference is not None and reference.density is not None  # build_method checked needs={"density"}
    return SynFlow(settings, reference.density, reference.source)


SPECS = [
    MethodSpec("synflow", "SynFlow", _build, "data-free iterative pruning at initialisation (100 iterations, "
               "exponential schedule) to the reference density, mask fixed from round 0", section="synflow",
               needs=frozenset({"density"}), extension=True, colour="C5"),
]
