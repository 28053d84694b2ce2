"""Measure this machine's local-step time against per-layer density and fit the time model to it (spec §10 item 9).

The official constants (spec §4) were measured once on undocumented edge devices, and no script reproduces
them; their shape suggests how they were made: ``t0 + Σ_l a_l·n_l`` reproduces the full-density sparse time, so they
are per-layer linear fits of the sparse iteration time against the non-zero count with intercept t0 (spec §4.2).
This module does that fit on the machine at hand: it times one local step (spec §3.1: forward on the masked
weights, dense backward, masked update) under random masks of known per-layer density, then fits
``step_s ≈ t0 + Σ_l a_l·|m_l|`` by non-negative least squares, and writes a JSON profile that a run loads with
``timing.profile = "<path>"`` in place of a preset.

The step being timed is a parameter (a :data:`StepBuilder`), so a sparse-kernel backend can be profiled through
the same code; the default, :func:`masked_dense_step`, is the step of ``prunefl.fl.client.client_step``.
:func:`sparse_kernel_step` is the step of ``fl.kernels = "auto"``: every ``nn.Linear`` at or below its measured
break-even density (:func:`measure_linear_break_even`) runs the CSR kernel, so its a_l is what the kernel costs.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunefl.errors import ConfigError
from prunefl.models import MODEL_NAMES, build_model
from prunefl.machine import cpu_model
from prunefl.sparse import native
from prunefl.sparse.backend import SWITCH_MIN_SPEEDUP, measure_break_even, sparsify_linear_layers_
from prunefl.sparse.masks import (
    apply_masks_,
    attach_masks,
    get_masks,
    layer_densities,
    mask_gradients_,
    prunable_parameters,
    set_masks_,
)
from prunefl.timing.model import TimeModel

__all__ = [
    "BREAK_EVEN_DENSITIES",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "FitResult",
    "Measurement",
    "ProfileSettings",
    "StepBuilder",
    "StepFn",
    "fit_time_model",
    "load_profile",
    "load_profile_break_even",
    "masked_dense_step",
    "measure_linear_break_even",
    "measure_step_times",
    "prunable_sizes",
    "run_profile",
    "save_profile",
    "sparse_kernel_step",
]

logger = logging.getLogger(__name__)

PROFILE_FORMAT = "prunefl-profile"
"""Value of the ``format`` key of every profile file."""
PROFILE_VERSION = 1
"""Version of the profile file layout; :func:`load_profile` refuses any other."""

StepFn = Callable[[Tensor, Tensor], None]
"""One local step on a batch: inputs ``(batch, C, H, W)`` float32 and labels ``(batch,)`` int64."""
StepBuilder = Callable[[nn.Module], StepFn]
"""Build the step for a model whose masks are set and applied. Called once per mask configuration, outside the
timed region, so a sparse backend can convert the masked weights (CSR from ``mask.nonzero()``) here. If the step
has a ``close()`` attribute, it is called after the configuration's timed steps to undo what the builder did (swap
the dense layers back), before the weights are reset for the next configuration."""
BREAK_EVEN_DENSITIES = (0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)
"""Densities at which :func:`measure_linear_break_even` compares the CSR kernel with the masked dense one."""
_BREAK_EVEN_KEYS = ("no-dense-grad", "dense-grad")  # profile JSON keys of the (without, with) pair

# Shape-defining defaults per model: (num_classes, input_shape) of the data set the paper pairs it with (spec §5).
_MODEL_DEFAULTS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "conv2": (10, (1, 28, 28)),  # FEMNIST has 62 classes; fc2 is 0.3 % of the weights, the step time barely moves
    "conv4": (2, (3, 84, 84)),  # CelebA smiling / not smiling
    "vgg11": (10, (3, 32, 32)),  # CIFAR-10
    "resnet18": (100, (3, 64, 64)),  # ImageNet-100; the paper used 168×168, ~7× the compute per step
    "digits-cnn": (10, (1, 8, 8)),  # scikit-learn digits
    "mlp": (10, (1, 8, 8)),  # scikit-learn digits
}

_PROFILE_LR = 0.01  # SGD learning rate of the timed steps; the value does not change the work, only keeps weights sane
_N_SYNTHETIC_BATCHES = 4  # cycled, so consecutive steps see different inputs, as in training
_CONFIG_STREAM = 0  # spawn-key tags: configurations, masks and visit order draw from independent streams
_MASK_STREAM = 1
_ORDER_STREAM = 2


@dataclass(frozen=True)
class ProfileSettings:
    """What to measure and how: the model, the batch, the mask configurations and the timing protocol.

    Each configuration gives every prunable layer a density from ``densities``: first one configuration per
    density with all layers equal, then ``n_configs`` configurations with each layer's density drawn
    independently, so the per-layer columns of the fit are not collinear. A configuration's measurement is the
    median of ``repeats`` timed steps, spread over ``passes`` visits; each pass visits every configuration once,
    in a freshly shuffled order, and each visit sets the configuration's (seeded, so identical) random masks,
    runs ``burn_in`` untimed steps and times its share of the repeats. On a shared machine a burst of other work
    then spoils a few samples of several configurations rather than every sample of one, and a slow drift does
    not line up with density.

    Parameters
    ----------
    model : str
        One of ``prunefl.models.MODEL_NAMES``.
    num_classes : int or None
        Output logits; None takes the model's data set: conv2 10, conv4 2, vgg11 10, resnet18 100, digits-cnn 10,
        mlp 10 (default: None).
    input_shape : tuple of int or None
        (channels, height, width) of one synthetic example; None takes conv2 (1, 28, 28), conv4 (3, 84, 84),
        vgg11 (3, 32, 32), resnet18 (3, 64, 64) (the paper used 168×168; pass it to match), digits-cnn and mlp
        (1, 8, 8) (default: None).
    batch_size : int
        B, examples per local step, ≥ 1 (default: 20, spec §2.1).
    threads : int
        torch intra-op threads while measuring, ≥ 0; 0 leaves torch's current setting (default: 0).
    densities : tuple of float
        Per-layer densities to sample, each in [0, 1] (default: (1.0, 0.5, 0.2, 0.05)).
    n_configs : int
        Random per-layer configurations on top of the all-equal ones, ≥ 0 (default: 24: with the 4 equal ones,
        28 rows for at most 19 unknowns, ResNet-18's t0 and 18 a_l).
    repeats : int
        Timed steps per configuration in all passes together, whose median is the measurement, ≥ ``passes``
        (default: 10).
    passes : int
        Visits per configuration that the repeats are split over (10 over 2: 5 each), ≥ 1 (default: 2).
    burn_in : int
        Untimed steps per visit before timing (caches, allocator, thread pool), ≥ 0 (default: 2).
    seed : int
        Seed of the weights, the synthetic batches, the configurations and the masks, ≥ 0 (default: 0).
    uplink_bytes_per_s, downlink_bytes_per_s : float
        Link bandwidth in each direction, > 0, for the communication coefficient b (default: 1e6 each, 1 MB/s).

    Raises
    ------
    ConfigError
        If a value is out of range or of the wrong type (the message names the field).

    Examples
    --------
    >>> s = ProfileSettings("resnet18")
    >>> s.num_classes, s.input_shape, s.comm_s_per_weight
    (100, (3, 64, 64), 8.25e-06)
    """

    model: str
    num_classes: int | None = None
    input_shape: tuple[int, int, int] | None = None
    batch_size: int = 20
    threads: int = 0
    densities: tuple[float, ...] = (1.0, 0.5, 0.2, 0.05)
    n_configs: int = 24
    repeats: int = 10
    passes: int = 2
    burn_in: int = 2
    seed: int = 0
    uplink_bytes_per_s: float = 1e6
    downlink_bytes_per_s: float = 1e6

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"model must be one of {', '.join(MODEL_NAMES)}; got {self.model!r}")
        default_classes, default_shape = _MODEL_DEFAULTS[self.model]
        # Resolve the model defaults here, so everything downstream (and the saved settings) sees the real values.
        if self.num_classes is None:
            object.__setattr__(self, "num_classes", default_classes)
        if self.input_shape is None:
            object.__setattr__(self, "input_shape", default_shape)
        else:
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "densities", tuple(self.densities))
        _check_settings(self)

    @property
    def comm_s_per_weight(self) -> float:
        """Return b, seconds per kept weight per round to send it up and down (spec §2.2).

        Each kept weight costs one float32 value (4 bytes) and one mask bit in each direction:
        b = (4 + 1/8) / uplink + (4 + 1/8) / downlink, 8.25e-6 s at 1 MB/s each way. The official code used
        5.56e-6 (its comment, "1MBps = 4e-6 * 2", implies 8e-6 without the bits; spec §2.2). Charging the mask
        per *kept* weight is an approximation forced by the linear model: a bitmap really costs n_l/8 bytes at
        any density, so it is under-charged below density 1; ``timing.comm = "link"`` counts real bytes instead.
        """
        bytes_per_weight = 4 + 1 / 8  # float32 value + one bit of the layer's bitmap
        return bytes_per_weight / self.uplink_bytes_per_s + bytes_per_weight / self.downlink_bytes_per_s


@dataclass(frozen=True)
class Measurement:
    """The measured local-step time of one mask configuration.

    Attributes
    ----------
    densities : dict[str, float]
        Requested density of each prunable layer, in model order.
    kept : dict[str, int]
        |m_l|, kept weights of each layer, ``round(density·n_l)``.
    median_step_s : float
        Median wall time of one local step over the timed repeats, in s.
    samples_s : tuple of float
        Every timed step, in s, in the order measured (first pass first).
    """

    densities: dict[str, float]
    kept: dict[str, int]
    median_step_s: float
    samples_s: tuple[float, ...] = field(default=())


@dataclass(frozen=True)
class FitResult:
    """A time model fitted to measurements, with its quality.

    Attributes
    ----------
    time_model : TimeModel
        The fitted a_l and t0, with the given b.
    r_squared : float
        Coefficient of determination of the fit on the medians (1 − SS_res/SS_tot); 1.0 when every
        measurement is identical and fitted exactly, 0.0 when identical and not.
    rmse_s : float
        Root-mean-square residual, s per step.
    measurements : tuple of Measurement
        The rows fitted, in the order given.
    predicted_s : tuple of float
        The model's step time for each measurement, in s.
    """

    time_model: TimeModel
    r_squared: float
    rmse_s: float
    measurements: tuple[Measurement, ...]
    predicted_s: tuple[float, ...]

    @property
    def constant_s_per_step(self) -> float:
        """Return t0, s per local step of a model with (almost) no weights."""
        return self.time_model.constant_s_per_step

    @property
    def compute_s_per_weight_per_step(self) -> dict[str, float]:
        """Return a_l by layer name, s per kept weight per local step."""
        tm = self.time_model
        return dict(zip(tm.layer_names, tm.compute_s_per_weight_per_step, strict=True))


def masked_dense_step(model: nn.Module) -> StepFn:
    """Return the local step of ``client_step`` on masked dense kernels, for a model with masks attached.

    The returned function modifies ``model`` in place: zero the gradients, forward on the masked weights,
    cross-entropy, dense backward, ``mask_gradients_``, one SGD step, ``apply_masks_`` (spec §3.1). Importance
    accumulation is left out (one ``_foreach_add_`` per step), as is data loading.

    Parameters
    ----------
    model : torch.nn.Module
        A model that went through ``attach_masks``, with its masks applied.

    Returns
    -------
    StepFn
        ``step(x, y)``: one local step on inputs ``x`` and integer labels ``y``.

    Examples
    --------
    >>> model = build_model("mlp", 3, (1, 2, 2), hidden_sizes=[4])
    >>> _ = attach_masks(model)
    >>> masked_dense_step(model)(torch.zeros(5, 1, 2, 2), torch.zeros(5, dtype=torch.long))
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=_PROFILE_LR)
    model.train()

    def step(x: Tensor, y: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        mask_gradients_(model)
        optimizer.step()
        apply_masks_(model)

    return step


def sparse_kernel_step(break_even: Mapping[str, tuple[float, float]]) -> StepBuilder:
    """Return a step builder that runs every ``nn.Linear`` at or below its break-even density on the CSR kernel.

    The builder swaps, for the configuration at hand, each weight of ``break_even`` whose mask density is at most
    its break-even density without dense weight gradient (and that density > 0) for a ``SparseLinear``
    (``sparsify_linear_layers_``), as ``SimulationEngine.sparse_layers`` chooses in a run outside importance
    rounds; the other weights stay masked dense. The step is :func:`masked_dense_step` on that model (the sparse
    layers have nothing to mask); its ``close()`` swaps the dense layers back, with the trained values.

    Parameters
    ----------
    break_even : Mapping[str, tuple[float, float]]
        Weight name → (break-even density without dense weight gradient, with it), as from
        :func:`measure_linear_break_even`; names absent stay masked dense.

    Returns
    -------
    StepBuilder
        Its ``__name__`` is ``"sparse_kernel_step"``, saved as the profile's ``meta["step"]``.

    Examples
    --------
    >>> model = build_model("mlp", 3, (1, 2, 2), hidden_sizes=[4])
    >>> _ = attach_masks(model)
    >>> step = sparse_kernel_step({"fc1.weight": (1.0, 1.0)})(model)
    >>> type(model.fc1).__name__
    'SparseLinear'
    >>> step(torch.zeros(5, 1, 2, 2), torch.zeros(5, dtype=torch.long)); step.close(); type(model.fc1).__name__
    'Linear'
    """
    thresholds = {name: without for name, (without, _) in break_even.items()}

    def build(model: nn.Module) -> StepFn:
        masks = get_masks(model)
        densities = layer_densities(masks)
        chosen = [n for n, b in thresholds.items() if b > 0 and densities[n] <= b]
        swapped = sparsify_linear_layers_(model, masks, chosen)
        optimizer = torch.optim.SGD(model.parameters(), lr=_PROFILE_LR)  # after the swap: new parameter objects
        model.train()

        def step(x: Tensor, y: Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            swapped.mask_gradients_()
            optimizer.step()
            swapped.apply_masks_()

        step.close = swapped.restore_  # type: ignore[attr-defined]
        return step

    build.__name__ = "sparse_kernel_step"
    return build


def measure_linear_break_even(
    settings: ProfileSettings,
    densities: Sequence[float] = BREAK_EVEN_DENSITIES,
    repeats: int = 5,
) -> dict[str, tuple[float, float]]:
    """Measure, per prunable ``nn.Linear`` weight of the profiled model, the density below which CSR wins.

    Runs ``prunefl.sparse.backend.measure_break_even`` on each layer's shape at ``settings.batch_size`` and
    ``settings.threads`` (0: torch's current count), without and with the dense weight gradient. Convolutions
    are left out: they stay masked dense.

    Parameters
    ----------
    settings : ProfileSettings
        The model, batch and threads.
    densities : Sequence[float]
        Densities to test (default: :data:`BREAK_EVEN_DENSITIES`).
    repeats : int
        Timed runs per density and path, ≥ 1 (default: 5).

    Returns
    -------
    dict[str, tuple[float, float]]
        Weight name → (without dense weight gradient, with it); 0.0 where the sparse kernel never won.

    Examples
    --------
    >>> table = measure_linear_break_even(ProfileSettings("mlp", threads=1), densities=(0.5, 0.1), repeats=1)
    >>> list(table)
    ['fc1.weight', 'fc2.weight']
    """
    with _torch_threads(settings.threads), torch.random.fork_rng():
        model = _build_model(settings)
        table: dict[str, tuple[float, float]] = {}
        for name, _ in prunable_parameters(model):
            owner = model.get_submodule(name.rpartition(".")[0])
            if not isinstance(owner, nn.Linear):
                continue
            without, with_dw = (
                measure_break_even(owner.in_features, owner.out_features, settings.batch_size, densities, repeats,
                                   dense_weight_grad=dw, min_speedup=SWITCH_MIN_SPEEDUP).break_even_density
                for dw in (False, True)
            )
            table[name] = (without, with_dw)
            logger.info("break-even density of %s: %.2f (no dense weight gradient), %.2f (with)", name, without,
                        with_dw)
    return table


def prunable_sizes(settings: ProfileSettings) -> dict[str, int]:
    """Return n_l, the number of weights of each prunable layer of the profiled model, in model order.

    Examples
    --------
    >>> prunable_sizes(ProfileSettings("digits-cnn"))
    {'conv1.weight': 144, 'conv2.weight': 4608, 'fc.weight': 5120}
    """
    with torch.random.fork_rng():  # building initialises weights from the global generator; leave it as it was
        model = _build_model(settings)
    return {name: p.numel() for name, p in prunable_parameters(model)}


def measure_step_times(
    settings: ProfileSettings,
    step: StepBuilder | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Measurement]:
    """Time one local step under random masks of the configured per-layer densities.

    Changes torch's thread count to ``settings.threads`` (if > 0) while measuring and restores it; the global
    torch generator is left as it was. Inputs are synthetic (standard normal, uniform labels): data loading is
    not part of the measurement, as in nanoGPT's ``bench.py``. Before each visit the weights are reset to their
    initial values, so zeroed weights of an earlier mask do not carry over.

    Parameters
    ----------
    settings : ProfileSettings
        Model, batch, configurations and timing protocol.
    step : StepBuilder or None
        Builds the step to time for a masked model; None times :func:`masked_dense_step` (default: None).
    progress : callable or None
        Called as ``progress(done, total)`` after each visit of a configuration; total = passes ×
        configurations (default: None).

    Returns
    -------
    list of Measurement
        One per configuration: the all-equal ones in the order of ``settings.densities``, then the random ones.

    Raises
    ------
    ConfigError
        If there are fewer configurations than unknowns of the fit (prunable layers + 1).

    Examples
    --------
    >>> rows = measure_step_times(ProfileSettings("mlp", threads=1, n_configs=1, repeats=2, burn_in=0))
    >>> len(rows), rows[0].densities, len(rows[0].samples_s)
    (5, {'fc1.weight': 1.0, 'fc2.weight': 1.0}, 2)
    """
    build_step = masked_dense_step if step is None else step
    with _torch_threads(settings.threads), torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        model = _build_model(settings)
        attach_masks(model)
        sizes = {name: p.numel() for name, p in prunable_parameters(model)}
        configs = _draw_configurations(settings, list(sizes))
        if len(configs) < len(sizes) + 1:
            raise ConfigError(
                f"model {settings.model!r} has {len(sizes)} prunable layers, so the fit needs at least "
                f"{len(sizes) + 1} configurations; got {len(configs)} ({len(set(settings.densities))} equal-density "
                f"+ n_configs={settings.n_configs}); raise n_configs"
            )
        initial_state = {k: v.clone() for k, v in model.state_dict().items()}
        batches = _synthetic_batches(settings)
        logger.info(
            "profiling %s: %d configurations x %d passes x (%d burn-in + share of %d timed steps), batch %d, "
            "%d threads",
            settings.model, len(configs), settings.passes, settings.burn_in, settings.repeats, settings.batch_size,
            torch.get_num_threads(),
        )
        visits = _visit_order(settings, len(configs))  # [(config index, timed steps)], pass after pass
        samples: list[list[float]] = [[] for _ in configs]
        kept: list[dict[str, int]] = [{} for _ in configs]
        for done, (index, n_timed) in enumerate(visits, start=1):
            # Same (seed, index) → same masks on every visit; regenerating costs untimed seconds, holding them
            # all would cost memory (ResNet-18: 28 configurations × 11 M bools).
            masks = _random_masks(model, configs[index], settings.seed, index)
            model.load_state_dict(initial_state)
            set_masks_(model, masks)
            apply_masks_(model)
            run = build_step(model)
            try:
                samples[index] += _time_steps(run, batches, settings.burn_in, n_timed)
            finally:
                close = getattr(run, "close", None)
                if close is not None:
                    close()
            kept[index] = {name: int(mask.sum()) for name, mask in masks.items()}
            if progress is not None:
                progress(done, len(visits))
    measurements = [
        Measurement(densities, counts, statistics.median(times), tuple(times))
        for densities, counts, times in zip(configs, kept, samples, strict=True)
    ]
    for index, m in enumerate(measurements):
        logger.debug("configuration %d %s: median %.6f s", index, m.densities, m.median_step_s)
    return measurements


def fit_time_model(
    measurements: Sequence[Measurement], layer_names: Sequence[str], comm_s_per_weight: float
) -> FitResult:
    """Fit t0 and the a_l of spec §2.2 to measured step times by non-negative least squares.

    Minimises Σ_i (step_s_i − t0 − Σ_l a_l·|m_l|_i)² over t0 ≥ 0, a_l ≥ 0: the per-layer linear fit of step
    time against kept count with intercept t0 that the official constants appear to come from (spec §4.2). The
    constraint is the time model's (a kept weight never makes a step faster); a layer whose count does not
    explain time gets a_l = 0, as the official first convolutions do.

    With masked dense kernels (the default step) the work does not shrink with density, so a_l ≈ 0 and t0 ≈ the
    dense step time is the honest result on that backend, and R² is near 0 (nothing but noise to explain). The fit
    is what a sparse-kernel backend needs, whose step time does fall with the kept count.

    Parameters
    ----------
    measurements : Sequence[Measurement]
        At least ``len(layer_names) + 1`` rows, each with a kept count for exactly ``layer_names``.
    layer_names : Sequence[str]
        Prunable layers in model order; the order of the fitted a_l.
    comm_s_per_weight : float
        b, s per kept weight per round, copied into the time model (not fitted), ≥ 0.

    Returns
    -------
    FitResult

    Raises
    ------
    ConfigError
        If there are too few measurements, or a measurement's layers differ from ``layer_names``.

    Examples
    --------
    >>> rows = [Measurement({"w": 1.0}, {"w": n}, 1.0 + 0.5 * n) for n in (0, 2, 4)]  # t0 = 1, a = 0.5
    >>> fit = fit_time_model(rows, ["w"], comm_s_per_weight=0.0)
    >>> round(fit.constant_s_per_step, 9), round(fit.compute_s_per_weight_per_step["w"], 9), fit.r_squared
    (1.0, 0.5, 1.0)
    """
    names = tuple(layer_names)
    _check_measurements(measurements, names)
    design = np.array([[1.0, *(m.kept[n] for n in names)] for m in measurements], dtype=np.float64)  # (rows, 1+L)
    measured = np.array([m.median_step_s for m in measurements], dtype=np.float64)  # (rows,)
    coef = _nnls_scaled(design, measured)  # (1+L,): t0, a_1 … a_L
    predicted = design @ coef
    ss_res = float(np.sum((measured - predicted) ** 2))
    ss_tot = float(np.sum((measured - measured.mean()) ** 2))
    if ss_tot > 0:
        # t0 = mean, a = 0 is feasible, so the optimum has SS_res <= SS_tot: R² >= 0 up to round-off (-1e-16)
        r_squared = max(0.0, 1.0 - ss_res / ss_tot)
    else:  # every measurement equal: R² is undefined; call an exact fit perfect and anything else useless
        r_squared = 1.0 if ss_res == 0 else 0.0
    time_model = TimeModel(
        layer_names=names,
        compute_s_per_weight_per_step=tuple(float(a) for a in coef[1:]),
        constant_s_per_step=float(coef[0]),
        comm_s_per_weight=comm_s_per_weight,
    )
    return FitResult(
        time_model=time_model,
        r_squared=r_squared,
        rmse_s=math.sqrt(ss_res / len(measurements)),
        measurements=tuple(measurements),
        predicted_s=tuple(float(p) for p in predicted),
    )


def save_profile(
    path: str | os.PathLike[str],
    fit: FitResult,
    settings: ProfileSettings,
    meta: Mapping[str, Any] | None = None,
    break_even: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Write a fitted profile as JSON, for ``timing.profile``, :func:`load_profile` and :func:`load_profile_break_even`.

    Creates the parent folders, and writes through a temporary file renamed into place, so a reader never sees
    half a file. JSON only: no pickle (spec §10 item 1).

    Parameters
    ----------
    path : str or PathLike
        Output file; replaced if it exists.
    fit : FitResult
        The fit and the measurements it came from.
    settings : ProfileSettings
        The settings measured with, saved in full.
    meta : Mapping or None
        Extra JSON-serialisable facts, saved under ``"meta"``; a ``"threads"`` key overrides the thread count
        recorded (default: ``settings.threads`` or torch's current count) (default: None).
    break_even : Mapping or None
        Weight name → (break-even density without dense weight gradient, with it) of a profile timed with
        sparse kernels; saved as ``"break_even": {name: {"no-dense-grad": x, "dense-grad": y}}`` with
        ``"kernels": "auto"``. None saves ``"kernels": "masked"`` and no table (default: None).

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile
    >>> fit = fit_time_model([Measurement({"w": 1.0}, {"w": n}, 1.0 + n) for n in (0, 1)], ["w"], 0.0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = save_profile(Path(d) / "p.json", fit, ProfileSettings("mlp"))
    ...     json.loads(out.read_text())["format"]
    'prunefl-profile'
    """
    extra = dict(meta or {})
    tm = fit.time_model
    record: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "model": settings.model,
        "layer_names": list(tm.layer_names),
        "compute_s_per_weight_per_step": list(tm.compute_s_per_weight_per_step),  # a_l
        "constant_s_per_step": tm.constant_s_per_step,  # t0
        "comm_s_per_weight": tm.comm_s_per_weight,  # b
        "kernels": "masked" if break_even is None else "auto",
        **({} if break_even is None else {"break_even": _break_even_record(break_even)}),
        "fit": {"r_squared": fit.r_squared, "rmse_s": fit.rmse_s, "n_measurements": len(fit.measurements)},
        "settings": asdict(settings),
        "environment": {
            "torch_version": torch.__version__,
            "threads": extra.get("threads", settings.threads or torch.get_num_threads()),
            "cpu_model": cpu_model(),
            "native_kernels": native.available(),
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python_version": platform.python_version(),
        },
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "meta": extra,
        "measurements": [
            {
                "densities": m.densities,
                "kept": m.kept,
                "median_step_s": m.median_step_s,
                "predicted_step_s": p,
                "samples_s": list(m.samples_s),
            }
            for m, p in zip(fit.measurements, fit.predicted_s, strict=True)
        ],
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    logger.info("wrote profile %s", out)
    return out


def load_profile(path: str | os.PathLike[str], layer_names: Sequence[str]) -> TimeModel:
    """Read a profile written by :func:`save_profile` as the time model of a run.

    Parameters
    ----------
    path : str or PathLike
        The profile file.
    layer_names : Sequence[str]
        The run model's prunable parameter names in model order; the profile's must be equal.

    Returns
    -------
    TimeModel

    Raises
    ------
    ConfigError
        If the file is missing, unreadable or not JSON; its format or version is not this one; a field is
        missing or malformed; or its layers differ from ``layer_names``. The message names the path.

    Examples
    --------
    >>> import tempfile
    >>> fit = fit_time_model([Measurement({"w": 1.0}, {"w": n}, 1.0 + n) for n in (0, 1)], ["w"], 0.0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     load_profile(save_profile(Path(d) / "p.json", fit, ProfileSettings("mlp")), ["w"]) == fit.time_model
    True
    """
    source = Path(path)
    record = _read_profile_record(source)
    found = tuple(record["layer_names"])
    expected = tuple(layer_names)
    if found != expected:
        raise ConfigError(
            f"profile {str(source)!r} was measured for layers {list(found)} (model {record.get('model')!r}), but "
            f"the run's prunable layers are {list(expected)}; profile the run's model"
        )
    try:
        return TimeModel(
            layer_names=found,
            compute_s_per_weight_per_step=tuple(record["compute_s_per_weight_per_step"]),
            constant_s_per_step=record["constant_s_per_step"],
            comm_s_per_weight=record["comm_s_per_weight"],
        )
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"profile {str(source)!r} holds an invalid time model: {exc}") from exc


def load_profile_break_even(
    path: str | os.PathLike[str], batch_size: int | None = None
) -> dict[str, tuple[float, float]] | None:
    """Read the break-even table of a profile timed with ``--kernels auto``; None for a masked profile.

    Break-even densities depend on the batch size and on whether the native CSR kernels ran: a warning is
    logged when the profile was measured at another `batch_size` or with another kernel implementation than
    this process has.

    Parameters
    ----------
    path : str or PathLike
        The profile file.
    batch_size : int or None
        The batch size of the run that will use the table; None skips that check (default: None).

    Returns
    -------
    dict[str, tuple[float, float]] or None
        Weight name → (break-even density without dense weight gradient, with it), the shape of
        ``SimulationSetup.break_even``; None if the profile has no table.

    Raises
    ------
    ConfigError
        If the file cannot be read as a profile (as :func:`load_profile`), or its table is malformed: not an
        object of ``{"no-dense-grad": x, "dense-grad": y}`` with each value in [0, 1].

    Examples
    --------
    >>> import tempfile
    >>> fit = fit_time_model([Measurement({"w": 1.0}, {"w": n}, 1.0 + n) for n in (0, 1)], ["w"], 0.0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save_profile(Path(d) / "p.json", fit, ProfileSettings("mlp"), None, {"w": (0.2, 0.1)})
    ...     load_profile_break_even(path)
    {'w': (0.2, 0.1)}
    """
    source = Path(path)
    record = _read_profile_record(source)
    table = record.get("break_even")
    if table is None:
        return None
    measured_batch = (record.get("settings") or {}).get("batch_size")
    if batch_size is not None and measured_batch is not None and measured_batch != batch_size:
        logger.warning(
            "profile %s measured break-even densities at batch %s; this run uses batch %s: re-run "
            "`prunefl profile --kernels auto --batch %s` for a table that fits", source, measured_batch, batch_size,
            batch_size,
        )
    measured_native = (record.get("environment") or {}).get("native_kernels")
    if measured_native is not None and measured_native != native.available():
        logger.warning(
            "profile %s measured break-even densities with the native CSR kernels %s, which are %s here",
            source, "on" if measured_native else "off", "available" if native.available() else "unavailable",
        )
    where = f"profile {str(source)!r}: break_even"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be an object of weight name -> densities, got {table!r}")
    out: dict[str, tuple[float, float]] = {}
    for name, entry in table.items():
        values = [entry.get(k) for k in _BREAK_EVEN_KEYS] if isinstance(entry, dict) else [None, None]
        if not all(_is_real(v) and 0.0 <= v <= 1.0 for v in values):  # type: ignore[operator]
            raise ConfigError(
                f"{where}[{name!r}] must be {{'no-dense-grad': x, 'dense-grad': y}} with x, y in [0, 1], got {entry!r}"
            )
        out[name] = (float(values[0]), float(values[1]))  # type: ignore[arg-type]
    return out


def run_profile(
    settings: ProfileSettings,
    out_path: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None = None,
    step: StepBuilder | None = None,
    break_even: Mapping[str, tuple[float, float]] | None = None,
) -> FitResult:
    """Measure, fit and save: :func:`measure_step_times`, :func:`fit_time_model`, :func:`save_profile`.

    Writes ``out_path``. The step's function name is saved as ``meta["step"]`` (spec §10 item 8: report the
    backend used).

    Parameters
    ----------
    settings : ProfileSettings
        What to measure.
    out_path : str or PathLike
        Profile file to write.
    progress : callable or None
        ``progress(done, total)`` after each configuration (default: None).
    step : StepBuilder or None
        The step to time; None is :func:`masked_dense_step`, or :func:`sparse_kernel_step` of ``break_even`` if
        that is given (default: None).
    break_even : Mapping or None
        Break-even table (:func:`measure_linear_break_even`) saved in the profile as ``kernels = "auto"``; None
        saves a masked profile (default: None).

    Returns
    -------
    FitResult

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     settings = ProfileSettings("mlp", threads=1, n_configs=1, repeats=2, burn_in=0)
    ...     fit = run_profile(settings, Path(d) / "mlp.json")
    >>> fit.time_model.layer_names
    ('fc1.weight', 'fc2.weight')
    """
    if step is not None:
        build_step = step
    else:
        build_step = masked_dense_step if break_even is None else sparse_kernel_step(break_even)
    threads = settings.threads or torch.get_num_threads()
    measurements = measure_step_times(settings, build_step, progress)
    fit = fit_time_model(measurements, list(measurements[0].kept), settings.comm_s_per_weight)
    meta = {"step": getattr(build_step, "__name__", type(build_step).__name__), "threads": threads}
    save_profile(out_path, fit, settings, meta, break_even)
    return fit


# ---------------------------------------------------------------------------------------------------------------
# Private helpers


MAX_PROFILE_BYTES = 16 << 20  # a profile of the largest model is tens of kB


def _read_profile_record(source: Path) -> dict[str, Any]:
    """Return the checked JSON record of a profile file; raise ConfigError naming the path if it is not one."""
    try:
        with open(source, "rb") as f:  # a profile is a few kB: read at most the bound, refuse what is larger
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"profile {str(source)!r} not found; create it with `prunefl profile --model <name>`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"profile {str(source)!r} cannot be read: {exc}") from exc
    if len(raw) > MAX_PROFILE_BYTES:
        raise ConfigError(f"profile {str(source)!r} is larger than {MAX_PROFILE_BYTES} bytes; not a profile")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, nesting past the stack, a huge integer
        raise ConfigError(f"profile {str(source)!r} is not valid JSON ({exc}); re-run `prunefl profile`") from exc
    _check_profile_record(record, source)
    return record


def _break_even_record(break_even: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    """Return the profile JSON form of a break-even table: {name: {"no-dense-grad": x, "dense-grad": y}}."""
    return {name: dict(zip(_BREAK_EVEN_KEYS, map(float, pair), strict=True)) for name, pair in break_even.items()}


def _build_model(settings: ProfileSettings) -> nn.Module:
    assert settings.num_classes is not None and settings.input_shape is not None  # resolved in __post_init__
    return build_model(settings.model, settings.num_classes, settings.input_shape)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the block (0: leave it), then restore it."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads > 0:
            torch.set_num_threads(before)


def _draw_configurations(settings: ProfileSettings, layer_names: list[str]) -> list[dict[str, float]]:
    """Return the per-layer density configurations to measure: all-equal ones, then random ones."""
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(_CONFIG_STREAM,)))
    levels = list(dict.fromkeys(settings.densities))  # unique, in the order given
    configs = [dict.fromkeys(layer_names, d) for d in levels]
    for _ in range(settings.n_configs):
        picks = rng.integers(0, len(levels), size=len(layer_names))
        configs.append({name: levels[int(i)] for name, i in zip(layer_names, picks, strict=True)})
    return configs


def _visit_order(settings: ProfileSettings, n_configs: int) -> list[tuple[int, int]]:
    """Return (configuration index, timed steps) per visit: every pass is a fresh shuffle of all configurations.

    The repeats are split as evenly as possible, earlier passes taking the remainder (10 over 3: 4, 3, 3).
    """
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(_ORDER_STREAM,)))
    base, extra = divmod(settings.repeats, settings.passes)
    return [
        (int(index), base + (1 if p < extra else 0))
        for p in range(settings.passes)
        for index in rng.permutation(n_configs)
    ]


def _random_masks(model: nn.Module, densities: Mapping[str, float], seed: int, index: int) -> dict[str, Tensor]:
    """Return uniformly random masks with exactly ``round(density·n_l)`` kept weights per layer."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_MASK_STREAM, index)))
    masks: dict[str, Tensor] = {}
    for name, parameter in prunable_parameters(model):
        n_total = parameter.numel()
        n_kept = round(densities[name] * n_total)
        flat = np.zeros(n_total, dtype=np.bool_)
        flat[rng.choice(n_total, size=n_kept, replace=False)] = True
        masks[name] = torch.from_numpy(flat).reshape(parameter.shape)
    return masks


def _synthetic_batches(settings: ProfileSettings) -> list[tuple[Tensor, Tensor]]:
    """Return a few fixed batches of standard-normal inputs and uniform labels, cycled through while timing."""
    assert settings.num_classes is not None and settings.input_shape is not None  # resolved in __post_init__
    generator = torch.Generator().manual_seed(settings.seed)
    return [
        (
            torch.randn((settings.batch_size, *settings.input_shape), generator=generator),  # (B, C, H, W)
            torch.randint(0, settings.num_classes, (settings.batch_size,), generator=generator),  # (B,)
        )
        for _ in range(_N_SYNTHETIC_BATCHES)
    ]


def _time_steps(run: StepFn, batches: list[tuple[Tensor, Tensor]], burn_in: int, repeats: int) -> list[float]:
    """Run ``burn_in`` untimed steps, then return the wall time of each of ``repeats`` steps, in s."""
    for i in range(burn_in):
        run(*batches[i % len(batches)])
    samples = []
    for i in range(repeats):
        x, y = batches[(burn_in + i) % len(batches)]
        start = time.perf_counter()
        run(x, y)  # CPU kernels are synchronous; a GPU step must synchronise before returning
        samples.append(time.perf_counter() - start)
    return samples


def _nnls_scaled(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Solve min ‖design·x − target‖ over x ≥ 0, with the columns scaled to unit maximum first.

    Counts reach millions while the intercept column is 1; scaling each column by its largest entry keeps the
    normal-equation pivots comparable, and is undone on the solution (x_j = x'_j / scale_j keeps x ≥ 0).
    """
    scale = np.abs(design).max(axis=0)  # (1+L,)
    scale[scale == 0] = 1.0  # a layer never kept: its column is 0 and its coefficient stays 0
    return np.maximum(_nnls(design / scale, target) / scale, 0.0)


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve min ‖a·x − b‖₂ subject to x ≥ 0 with the Lawson–Hanson active-set method.

    Why not clip and refit: clipping the unconstrained solution's negative entries to 0 and refitting the rest
    is not the constrained optimum when the columns are correlated (a clipped layer can make another negative,
    or a layer clipped early should come back). Lawson–Hanson is: it moves one coordinate at a time into the
    passive (free) set while the gradient ``w = aᵀ(b − a·x)`` says that lowers the residual, solves least
    squares on the passive set, and steps back along the segment to the first coordinate that would turn
    negative, dropping it. At the end every active (zero) coordinate has w ≤ tol: the KKT conditions.
    scipy.optimize.nnls does the same, but scipy is not a dependency.
    """
    n_rows, n_cols = a.shape
    x = np.zeros(n_cols)
    passive = np.zeros(n_cols, dtype=np.bool_)
    tol = 10 * np.finfo(np.float64).eps * np.abs(a).sum(axis=0).max() * max(n_rows, n_cols)
    max_iterations = 30 * n_cols  # Lawson–Hanson ends in finitely many steps; this only guards round-off cycling
    iterations = 0
    w = a.T @ (b - a @ x)
    while not passive.all() and (w[~passive] > tol).any() and iterations < max_iterations:
        passive[np.argmax(np.where(passive, -np.inf, w))] = True
        while iterations < max_iterations:
            iterations += 1
            z = np.zeros(n_cols)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                x = z
                break
            # Step from x towards z until the first passive coordinate hits 0; those leave the passive set.
            falling = passive & (z <= tol)
            alpha = np.min(x[falling] / (x[falling] - z[falling]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    if iterations >= max_iterations:
        logger.warning("NNLS stopped after %d iterations; the time-model fit may not be optimal", iterations)
    return x


def _check_settings(s: ProfileSettings) -> None:
    """Raise ConfigError naming the first field of ``s`` that is out of range."""
    _check_int(s.num_classes, "num_classes", 1)
    shape = s.input_shape
    if not (isinstance(shape, tuple) and len(shape) == 3 and all(_is_int(v) and v >= 1 for v in shape)):
        raise ConfigError(f"input_shape must be 3 positive ints (channels, height, width), got {shape!r}")
    _check_int(s.batch_size, "batch_size", 1)
    _check_int(s.threads, "threads", 0)
    _check_int(s.n_configs, "n_configs", 0)
    _check_int(s.repeats, "repeats", 1)
    _check_int(s.passes, "passes", 1)
    if s.repeats < s.passes:
        raise ConfigError(f"repeats must be >= passes (a timed step per visit), got {s.repeats} < {s.passes}")
    _check_int(s.burn_in, "burn_in", 0)
    _check_int(s.seed, "seed", 0)
    if not s.densities:
        raise ConfigError("densities must name at least one density in [0, 1], got ()")
    bad = [d for d in s.densities if not (_is_real(d) and 0.0 <= d <= 1.0)]
    if bad:
        raise ConfigError(f"densities must each be in [0, 1], got {bad}")
    if max(s.densities) == 0:
        raise ConfigError(f"densities must include one > 0 (no weight at all is no step), got {list(s.densities)}")
    for name in ("uplink_bytes_per_s", "downlink_bytes_per_s"):
        value = getattr(s, name)
        if not (_is_real(value) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _check_int(value: object, name: str, minimum: int) -> None:
    if not (_is_int(value) and value >= minimum):  # type: ignore[operator]
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_measurements(measurements: Sequence[Measurement], names: tuple[str, ...]) -> None:
    """Raise ConfigError unless there are enough rows and each has a count for exactly ``names``."""
    if len(measurements) < len(names) + 1:
        raise ConfigError(
            f"fitting t0 and {len(names)} a_l needs at least {len(names) + 1} measurements, got {len(measurements)}"
        )
    for i, m in enumerate(measurements):
        if set(m.kept) != set(names):
            missing = [n for n in names if n not in m.kept]
            unknown = [n for n in m.kept if n not in names]
            raise ConfigError(
                f"measurement {i} must count exactly layers {list(names)}; missing {missing}, unknown {unknown}"
            )


def _check_profile_record(record: object, source: Path) -> None:
    """Raise ConfigError unless ``record`` is a profile of this format and version with well-typed fields."""
    where = f"profile {str(source)!r}"
    if not isinstance(record, dict):
        raise ConfigError(f"{where} must hold a JSON object, got {type(record).__name__}")
    if record.get("format") != PROFILE_FORMAT:
        raise ConfigError(f"{where} has format {record.get('format')!r}, expected {PROFILE_FORMAT!r}")
    if record.get("version") != PROFILE_VERSION:
        raise ConfigError(
            f"{where} has version {record.get('version')!r}, this prunefl reads version {PROFILE_VERSION}; "
            "re-run `prunefl profile`"
        )
    names, coeffs = record.get("layer_names"), record.get("compute_s_per_weight_per_step")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{where}: layer_names must be a list of strings, got {names!r}")
    if not (isinstance(coeffs, list) and all(_is_real(a) for a in coeffs)):
        raise ConfigError(f"{where}: compute_s_per_weight_per_step must be a list of numbers, got {coeffs!r}")
    for key in ("constant_s_per_step", "comm_s_per_weight"):
        if not _is_real(record.get(key)):
            raise ConfigError(f"{where}: {key} must be a number, got {record.get(key)!r}")
