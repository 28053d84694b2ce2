"""Time sparse fc kernels against masked dense and dense ones, per layer and over a whole local update.

The number that decides something: on Conv-2 at density 0.1 with 2 threads, the time of a whole 5-step local
update (batch 20, SGD) with sparse fc layers and no dense weight gradients, as a fraction of the dense update
measured in the same run; the target is <= 0.6. Also reported: each fc layer's break-even density (the highest
tested density at which the sparse layer beats the masked dense one), the input of
`prunefl.sparse.backend.choose_kernels`.

(a) forward+backward of every prunable layer of Conv-2 (conv1, conv2, fc1, fc2) and of VGG-11 (conv1-conv8, fc1-fc3):
    dense (no mask), masked (dense kernels, then gradient and weight multiplied by the mask, as a local step
    does), sparse (`SparseLinear` on the native kernels of `prunefl.sparse.native`, kept-values gradient only),
    sparse+dW (plus the dense weight gradient, which importance needs; spec §3.2) and sparse-torch (torch's
    CSR kernels: MKL SpMM and `sampled_addmm`). Convolutions have no sparse kernel and run dense or masked.
(b) a whole 5-step local update of Conv-2 (10 classes): dense, masked (spec §3.1 step), and sparse-fc (the fc
    layers a client would switch given (a) swapped for `SparseLinear`, the rest masked dense; the
    swap in and the write-back are timed too, with the indices of the previous round reused as the mask is
    unchanged between reconfigurations) on the native kernels and on torch's (sparse-fc-torch), each with
    importance (every weight's gradient summed over the round, the paper's every-round collection; sparse layers
    sum their dense weight gradients from recorded rows, one GEMM at the end, as the client does) and without (an
    "importance window" round: fully sparse fc layers).
(c) where the sparse-fc update's time goes at the headline density: the update and its parts (each layer's
    K forward+backward passes alone, the swap) timed side by side, and the swap after a mask change.

Every repeat runs all variants of a table once, in an order rotated between repeats, so background load hits
them alike; times are medians of the repeats and ratios are medians of the per-repeat ratios to dense.

Usage::

    .venv/bin/python benchmarks/kernels.py                     # 2 threads, 15 repeats
    .venv/bin/python benchmarks/kernels.py --threads 1 --repeats 25
    .venv/bin/python benchmarks/kernels.py --smoke             # one repeat, density 0.1: checks the script runs
    OMP_WAIT_POLICY=default .venv/bin/python benchmarks/kernels.py --json benchmarks/results/kernels-omp-default.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# OpenMP threads that wait actively (spin) for a descheduled sibling make every parallel region stall for a
# scheduler slice on a machine shared with other jobs: a Conv-2 step took ~380 ms with 2 threads instead of
# ~30 ms with passive waiting (2-core VM, two other busy processes). Must be set before torch loads OpenMP;
# an OMP_WAIT_POLICY already in the environment wins, and the report records the value used.
# OMP_WAIT_POLICY=default leaves libgomp's own default (spin a while, then sleep), which is what a run without the
# variable gets: dense updates are ~15 % faster with it on an idle machine, so RESULTS.md reports both.
if os.environ.get("OMP_WAIT_POLICY", "").lower() == "default":
    del os.environ["OMP_WAIT_POLICY"]
    OMP_POLICY = "default"
else:
    OMP_POLICY = os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from prunefl.models.conv2 import Conv2  # noqa: E402
from prunefl.sparse import (  # noqa: E402
    SparseLinear,
    apply_masks_,
    attach_masks,
    get_masks,
    mask_gradients_,
    sparsify_linear_layers_,
)
from prunefl.sparse.masks import multiplier  # noqa: E402
from prunefl.sparse.backend import SWITCH_MIN_SPEEDUP  # noqa: E402
from prunefl.machine import cpu_model  # noqa: E402
from prunefl.sparse import native  # noqa: E402

SEED = 0
BATCH_SIZE = 20  # B of every paper configuration (spec §5)
LOCAL_STEPS = 5  # K (spec §5)
NUM_CLASSES = 10  # the setting; FEMNIST has 62, which changes only fc2
LR = 0.25  # FEMNIST INIT_LR (spec §5); the value does not change the time
DENSITIES = (1.0, 0.5, 0.3, 0.1, 0.05, 0.01)
HEADLINE_DENSITY = 0.1
TARGET_RATIO = 0.6
# Conv-2's fc weights, the candidates for the sparse kernel. Which of them the sparse-fc updates run sparse at a
# density is what a client with a measured profile (`prunefl.sparse.backend.choose_kernels`) would choose from (a):
# `client_choice`.
FC_LAYERS = ["fc1.weight", "fc2.weight"]

# (model, layer, kind, weight shape, input shape without batch, input needs grad)
LAYERS: tuple[tuple[str, str, str, tuple[int, ...], tuple[int, ...], bool], ...] = (
    ("conv2", "conv1", "conv", (32, 1, 5, 5), (1, 28, 28), False),  # first layer: no input gradient
    ("conv2", "conv2", "conv", (64, 32, 5, 5), (32, 14, 14), True),
    ("conv2", "fc1", "fc", (2048, 3136), (3136,), True),
    ("conv2", "fc2", "fc", (NUM_CLASSES, 2048), (2048,), True),
    # VGG-11 on CIFAR-10 (3x3, pad 1; spatial size after each max-pool, spec §6)
    ("vgg11", "conv1", "conv", (64, 3, 3, 3), (3, 32, 32), False),
    ("vgg11", "conv2", "conv", (128, 64, 3, 3), (64, 16, 16), True),
    ("vgg11", "conv3", "conv", (256, 128, 3, 3), (128, 8, 8), True),
    ("vgg11", "conv4", "conv", (256, 256, 3, 3), (256, 8, 8), True),
    ("vgg11", "conv5", "conv", (512, 256, 3, 3), (256, 4, 4), True),
    ("vgg11", "conv6", "conv", (512, 512, 3, 3), (512, 4, 4), True),
    ("vgg11", "conv7", "conv", (512, 512, 3, 3), (512, 2, 2), True),
    ("vgg11", "conv8", "conv", (512, 512, 3, 3), (512, 2, 2), True),
    ("vgg11", "fc1", "fc", (512, 512), (512,), True),
    ("vgg11", "fc2", "fc", (512, 512), (512,), True),
    ("vgg11", "fc3", "fc", (10, 512), (512,), True),
)


@dataclass
class Case:
    """One timed variant: `setup` runs untimed before each timed `run`."""

    setup: Callable[[], None]
    run: Callable[[], None]


def time_interleaved(cases: dict[str, Case], repeats: int, burn_in: int) -> dict[str, list[float]]:
    """Return each case's perf_counter durations over `repeats` rounds that run every case once, in turn."""
    names = list(cases)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(burn_in + repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:  # rotate: no variant always runs right after another
            cases[name].setup()
            start = time.perf_counter()
            cases[name].run()
            elapsed = time.perf_counter() - start
            if repeat >= burn_in:
                runs[name].append(elapsed)
    return runs


def median_ratio(runs: list[float], baseline: list[float]) -> float:
    """Median over repeats of run / baseline of the same repeat."""
    return statistics.median(r / b for r, b in zip(runs, baseline))


def random_mask(shape: tuple[int, ...], density: float, generator: torch.Generator) -> Tensor:
    """Bool mask keeping each coordinate with probability `density` (Bernoulli: 10x cheaper than an exact count)."""
    return torch.rand(shape, generator=generator) < density


# --- (a) per layer -------------------------------------------------------------------------------------------


def layer_cases(
    kind: str,
    weight_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    input_grad: bool,
    densities: tuple[float, ...],
    batch_size: int,
    generator: torch.Generator,
) -> dict[str, Case]:
    """Build the cases of one layer: "dense", then "<variant>@<density>" for masked, sparse and sparse+dW."""
    x = torch.randn(batch_size, *input_shape, generator=generator).requires_grad_(input_grad)
    if kind == "fc":
        dense: nn.Module = nn.Linear(weight_shape[1], weight_shape[0])
        grad_y = torch.randn(batch_size, weight_shape[0], generator=generator)
    else:
        out_channels, in_channels, kernel, _ = weight_shape
        dense = nn.Conv2d(in_channels, out_channels, kernel_size=kernel, padding=kernel // 2)
        grad_y = torch.randn(batch_size, out_channels, *input_shape[1:], generator=generator)

    def reset(module: nn.Module) -> Callable[[], None]:
        def setup() -> None:
            module.zero_grad(set_to_none=True)
            x.grad = None

        return setup

    def forward_backward(module: nn.Module, mask: Tensor | None = None) -> Callable[[], None]:
        def run() -> None:
            module(x).backward(grad_y)
            if mask is not None:  # the masking a local step adds (spec §3.1): gradient, then weight
                with torch.no_grad():
                    module.weight.grad.mul_(multiplier(mask, module.weight.dtype))
                    module.weight.mul_(multiplier(mask, module.weight.dtype))

        return run

    cases = {"dense": Case(reset(dense), forward_backward(dense))}
    for density in densities:
        mask = random_mask(weight_shape, density, generator)
        masked = type(dense)(*_constructor_args(dense))
        with torch.no_grad():
            masked.weight.copy_(dense.weight * mask)
        cases[f"masked@{density}"] = Case(reset(masked), forward_backward(masked, mask))
        if kind == "fc":
            assert isinstance(masked, nn.Linear)
            sparse = SparseLinear.from_dense(masked, mask)
            sparse_dw = SparseLinear.from_dense(masked, mask, dense_weight_grad=True)
            sparse_torch = SparseLinear.from_dense(masked, mask)
            sparse_torch.native = False
            cases[f"sparse@{density}"] = Case(reset(sparse), forward_backward(sparse))
            cases[f"sparse+dW@{density}"] = Case(reset(sparse_dw), forward_backward(sparse_dw))
            cases[f"sparse-torch@{density}"] = Case(reset(sparse_torch), forward_backward(sparse_torch))
    return cases


def _constructor_args(module: nn.Module) -> tuple:
    if isinstance(module, nn.Linear):
        return (module.in_features, module.out_features)
    assert isinstance(module, nn.Conv2d)
    return (module.in_channels, module.out_channels, module.kernel_size, 1, module.padding)


def run_layers(densities: tuple[float, ...], repeats: int, burn_in: int, batch_size: int) -> list[dict]:
    rows = []
    for model_name, layer, kind, weight_shape, input_shape, input_grad in LAYERS:
        generator = torch.Generator().manual_seed(SEED)
        cases = layer_cases(kind, weight_shape, input_shape, input_grad, densities, batch_size, generator)
        runs = time_interleaved(cases, repeats, burn_in)
        dense_runs = runs["dense"]
        for density in densities:
            row: dict = {
                "model": model_name, "layer": layer, "kind": kind, "weight_shape": list(weight_shape),
                "density": density, "dense_s": statistics.median(dense_runs), "dense_runs_s": dense_runs,
            }
            for variant in ("masked", "sparse", "sparse+dW", "sparse-torch"):
                key = f"{variant}@{density}"
                if key in runs:
                    row[f"{variant}_s"] = statistics.median(runs[key])
                    row[f"{variant}_ratio"] = median_ratio(runs[key], dense_runs)
                    row[f"{variant}_runs_s"] = runs[key]
            rows.append(row)
    return rows


def break_even(rows: list[dict], variant: str, min_speedup: float = 1.0) -> dict[str, float]:
    """Per fc layer: the highest density at which `variant` beat masked dense by `min_speedup` (medians), or 0.0."""
    result: dict[str, float] = {}
    for row in rows:
        if row["kind"] != "fc":
            continue
        key = f"{row['model']}.{row['layer']}"
        wins = row[f"{variant}_s"] * min_speedup < row["masked_s"]
        result[key] = max(result.get(key, 0.0), row["density"] if wins else 0.0)
    return result


def client_choice(rows: list[dict], densities: tuple[float, ...]) -> dict[bool, dict[float, list[str]]]:
    """The Conv-2 fc weights a client would run sparse, by importance (dense weight gradients) and density.

    What `prunefl.sparse.backend.choose_kernels` decides from a profile: a layer is sparse at a density at or below
    its break-even, where the sparse kernel measured at least `SWITCH_MIN_SPEEDUP` times faster than masked dense.
    """
    choice: dict[bool, dict[float, list[str]]] = {}
    for importance, variant in ((True, "sparse+dW"), (False, "sparse")):
        limits = break_even([r for r in rows if r["model"] == "conv2"], variant, SWITCH_MIN_SPEEDUP)
        choice[importance] = {
            d: [name for name in FC_LAYERS if 0.0 < d <= limits[f"conv2.{name.split('.')[0]}"]] for d in densities
        }
    return choice


# --- (b) whole local update ----------------------------------------------------------------------------------


def make_data(batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """K fixed (image, label) batches for Conv-2."""
    generator = torch.Generator().manual_seed(SEED)
    return [
        (
            torch.randn(batch_size, *Conv2.INPUT_SHAPE, generator=generator),
            torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator),
        )
        for _ in range(LOCAL_STEPS)
    ]


def make_masks(density: float) -> dict[str, Tensor]:
    """Masks of every prunable Conv-2 weight at `density`, shared by all variants of that density."""
    generator = torch.Generator().manual_seed(SEED + round(density * 1e6))
    model = Conv2(num_classes=NUM_CLASSES)
    return {
        name: random_mask(tuple(model.get_parameter(name).shape), density, generator)
        for name in model.prunable_parameter_names()
    }


def masked_model(masks: dict[str, Tensor], state: dict[str, Tensor]) -> Conv2:
    """A Conv-2 holding `state` with `masks` attached (not yet applied)."""
    model = Conv2(num_classes=NUM_CLASSES)
    model.load_state_dict(state)
    attach_masks(model, masks)
    return model


def reset_to(model: nn.Module, state: dict[str, Tensor]) -> Callable[[], None]:
    def setup() -> None:
        model.load_state_dict(state, strict=False)  # masks stay; weights back to the same start

    return setup


def sgd_update(
    model: nn.Module, data: list[tuple[Tensor, Tensor]], importance: bool, masked: bool
) -> Callable[[], None]:
    """Plain SGD; with `importance`, every parameter's gradient is summed every step. With `masked`, the step of
    prunefl.fl.client.client_step: dense kernels, then gradients and weights masked."""

    def run() -> None:
        if masked:
            apply_masks_(model)
        params = list(model.parameters())
        optimizer = torch.optim.SGD(params, lr=LR)
        grad_sum = [torch.zeros_like(p) for p in params] if importance else []
        for x, y in data:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if importance:
                torch._foreach_add_(grad_sum, [p.grad for p in params])
            if masked:
                mask_gradients_(model)
            optimizer.step()
            if masked:
                apply_masks_(model)

    return run


def sparse_fc_update(
    model: nn.Module,
    masks: dict[str, Tensor],
    data: list[tuple[Tensor, Tensor]],
    importance: bool,
    native_kernels: bool = True,
    layers: list[str] = FC_LAYERS,
) -> Callable[[], None]:
    """`layers` swapped for SparseLinear for the update, the rest masked dense; swap and write-back timed.

    What `prunefl.fl.client.client_step` does: a round's mask is the previous round's except after a
    reconfiguration (every 50 rounds), so each swap reuses the previous round's indices (`previous`, and the
    server's unchanged mask version: `same_masks`); building them is timed apart, in (c). `native_kernels`
    False runs the swapped layers on torch's kernels (`SparseLinear.native`).
    """
    last = {"swap": sparsify_linear_layers_(model, masks, layers)}
    last["swap"].restore_()

    def run() -> None:
        swapped = sparsify_linear_layers_(model, masks, layers, previous=last["swap"], same_masks=True)
        for layer in swapped.sparse.values():
            layer.native = native_kernels
        # Importance covers the same tensors as in the dense update; the sparse layers' dense weight gradients
        # are summed over the round from their recorded rows, one GEMM at the end, as the client does.
        swapped.set_record_inputs(importance)
        swapped.apply_masks_()
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)  # built after the swap: new parameters
        tracked = [p for name, p in model.named_parameters() if not name.endswith(".values")]
        grad_sum = [torch.zeros_like(p) for p in tracked] if importance else []
        for x, y in data:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if importance:
                torch._foreach_add_(grad_sum, [p.grad for p in tracked])
            swapped.mask_gradients_()
            optimizer.step()
            swapped.apply_masks_()
        if importance:
            grad_sum += list(swapped.recorded_weight_grads().values())
        swapped.set_record_inputs(False)
        swapped.restore_()
        last["swap"] = swapped

    return run


def run_updates(
    densities: tuple[float, ...],
    repeats: int,
    burn_in: int,
    batch_size: int,
    choice: dict[bool, dict[float, list[str]]],
) -> list[dict]:
    """Time dense, masked and sparse-fc updates side by side, with and without importance.

    `choice` (`client_choice`) says which fc layers run sparse in each sparse-fc update; the others stay masked.
    """
    torch.manual_seed(SEED)
    initial = Conv2(num_classes=NUM_CLASSES).state_dict()
    data = make_data(batch_size)
    all_masks = {density: make_masks(density) for density in densities}
    rows = []
    for importance in (True, False):
        dense_model = Conv2(num_classes=NUM_CLASSES)
        dense_run = sgd_update(dense_model, data, importance, masked=False)
        cases = {"dense": Case(reset_to(dense_model, initial), dense_run)}
        for density, masks in all_masks.items():
            model = masked_model(masks, initial)
            masked_run = sgd_update(model, data, importance, masked=True)
            cases[f"masked@{density}"] = Case(reset_to(model, initial), masked_run)
            layers = choice[importance][density]
            model = masked_model(masks, initial)
            run = sparse_fc_update(model, masks, data, importance, layers=layers)
            cases[f"sparse-fc@{density}"] = Case(reset_to(model, initial), run)
            model = masked_model(masks, initial)
            run = sparse_fc_update(model, masks, data, importance, native_kernels=False, layers=layers)
            cases[f"sparse-fc-torch@{density}"] = Case(reset_to(model, initial), run)
        runs = time_interleaved(cases, repeats, burn_in)
        dense_runs = runs["dense"]
        for density in densities:
            row: dict = {
                "importance": importance,
                "density": density,
                "sparse_layers": choice[importance][density],
                "dense_s": statistics.median(dense_runs),
                "dense_runs_s": dense_runs,
            }
            for variant in ("masked", "sparse-fc", "sparse-fc-torch"):
                key = f"{variant}@{density}"
                row[f"{variant}_s"] = statistics.median(runs[key])
                row[f"{variant}_ratio"] = median_ratio(runs[key], dense_runs)
                row[f"{variant}_runs_s"] = runs[key]
            rows.append(row)
    return rows


# --- (c) where the sparse-fc update's time goes --------------------------------------------------------------


def run_breakdown(density: float, repeats: int, burn_in: int, batch_size: int, sparse: list[str]) -> dict:
    """Time the sparse-fc update (no importance; the fc weights `sparse` run sparse) and its parts side by side.

    Parts: each layer's K forward+backward passes alone (convolutions with their mask multiplies) on
    activations of the right shapes, and the swap with an unchanged mask; the rest is loss, ReLU/pooling,
    the optimiser and Python. The swap with a new mask (indices built) is timed too, for reference.
    """
    torch.manual_seed(SEED)
    initial = Conv2(num_classes=NUM_CLASSES).state_dict()
    data = make_data(batch_size)
    masks = make_masks(density)
    generator = torch.Generator().manual_seed(SEED)
    # A model that stays swapped: its layers are timed alone.
    parts_model = masked_model(masks, initial)
    apply_masks_(parts_model)
    kept_swapped = sparsify_linear_layers_(parts_model, get_masks(parts_model), sparse)
    with torch.no_grad():
        h0 = data[0][0]  # (B, 1, 28, 28)
        h1 = F.max_pool2d(F.relu(parts_model.conv1(h0)), 2)  # (B, 32, 14, 14)
        h2 = torch.flatten(F.max_pool2d(F.relu(parts_model.conv2(h1)), 2), 1)  # (B, 3136)
        h3 = F.relu(parts_model.fc1(h2))  # (B, 2048)
    layers: dict[str, tuple[nn.Module, Tensor, Tensor | None]] = {
        "conv1 (masked dense)": (parts_model.conv1, h0, parts_model.conv1.weight_mask),
        "conv2 (masked dense)": (parts_model.conv2, h1.requires_grad_(), parts_model.conv2.weight_mask),
    }
    for name, module, x in (("fc1", parts_model.fc1, h2), ("fc2", parts_model.fc2, h3)):
        if f"{name}.weight" in sparse:
            layers[f"{name} (sparse)"] = (module, x.requires_grad_(), None)
        else:
            layers[f"{name} (masked dense)"] = (module, x.requires_grad_(), module.weight_mask)

    def k_passes(module: nn.Module, x: Tensor, mask: Tensor | None) -> Case:
        with torch.no_grad():
            grad_y = torch.randn(module(x).shape, generator=generator)

        def setup() -> None:
            module.zero_grad(set_to_none=True)
            x.grad = None

        def run() -> None:
            for _ in range(LOCAL_STEPS):
                module(x).backward(grad_y)
                if mask is not None:  # what masking adds to a convolution's step
                    with torch.no_grad():
                        module.weight.grad.mul_(multiplier(mask, module.weight.dtype))
                        module.weight.mul_(multiplier(mask, module.weight.dtype))

        return Case(setup, run)

    update_model = masked_model(masks, initial)
    swap_model = masked_model(masks, initial)
    previous = sparsify_linear_layers_(swap_model, masks, sparse)
    previous.restore_()
    dense_model = Conv2(num_classes=NUM_CLASSES)
    swap_same = "swap to sparse and back (unchanged mask)"
    update = sparse_fc_update(update_model, masks, data, False, layers=sparse)
    cases = {
        "update": Case(reset_to(update_model, initial), update),
        "dense update": Case(reset_to(dense_model, initial), sgd_update(dense_model, data, False, masked=False)),
        **{name: k_passes(*layer) for name, layer in layers.items()},
        swap_same: Case(
            lambda: None,
            lambda: sparsify_linear_layers_(swap_model, masks, sparse, previous=previous, same_masks=True).restore_(),
        ),
        "swap (new mask)": Case(lambda: None, lambda: sparsify_linear_layers_(swap_model, masks, sparse).restore_()),
    }
    medians = {name: statistics.median(r) for name, r in time_interleaved(cases, repeats, burn_in).items()}
    kept_swapped.restore_()
    parts = {name: medians[name] for name in [*layers, swap_same]}
    parts["rest (loss, relu/pool, optimiser, Python)"] = medians["update"] - sum(parts.values())
    return {
        "density": density,
        "sparse_layers": sparse,
        "update_s": medians["update"],
        "dense_update_s": medians["dense update"],
        "parts_s": parts,
        "swap_new_mask_s": medians["swap (new mask)"],
    }


# --- report --------------------------------------------------------------------------------------------------


def print_layers(rows: list[dict], batch_size: int) -> None:
    print(f"\n(a) forward+backward per layer, batch {batch_size}: ms (ratio to dense in the same repeat)")
    header = (f"{'model':<6} {'layer':<6} {'density':>7} {'dense':>8} {'masked':>16} {'sparse':>16} {'sparse+dW':>16}"
              f" {'sparse-torch':>16}")
    print(header)
    print("-" * len(header))
    for r in rows:
        cells = []
        for variant in ("masked", "sparse", "sparse+dW", "sparse-torch"):
            if f"{variant}_s" in r:
                cells.append(f"{r[f'{variant}_s'] * 1e3:8.3f} ({r[f'{variant}_ratio']:5.2f})")
            else:
                cells.append("—")
        print(f"{r['model']:<6} {r['layer']:<6} {r['density']:>7g} {r['dense_s'] * 1e3:8.3f} "
              + " ".join(f"{c:>16}" for c in cells))


def print_updates(rows: list[dict], batch_size: int) -> None:
    print(f"\n(b) whole {LOCAL_STEPS}-step local update of Conv-2, batch {batch_size}: ms (ratio to dense)")
    header = (f"{'importance':<11} {'density':>7} {'dense':>9} {'masked':>17} {'sparse-fc':>17} {'sparse-fc-torch':>17}"
              f"  sparse layers")
    print(header)
    print("-" * len(header))
    for r in rows:
        label = "every step" if r["importance"] else "none"
        print(f"{label:<11} {r['density']:>7g} {r['dense_s'] * 1e3:9.2f} "
              f"{r['masked_s'] * 1e3:9.2f} ({r['masked_ratio']:4.2f}) "
              f"{r['sparse-fc_s'] * 1e3:9.2f} ({r['sparse-fc_ratio']:4.2f}) "
              f"{r['sparse-fc-torch_s'] * 1e3:9.2f} ({r['sparse-fc-torch_ratio']:4.2f})  "
              + ("+".join(name.split(".")[0] for name in r["sparse_layers"]) or "none"))


def print_breakdown(parts: dict) -> None:
    print(f"\n(c) sparse-fc update without importance at density {parts['density']:g} "
          f"({'+'.join(n.split('.')[0] for n in parts['sparse_layers']) or 'no layer'} sparse): "
          f"{parts['update_s'] * 1e3:.2f} ms (dense {parts['dense_update_s'] * 1e3:.2f} ms)")
    for name, seconds in parts["parts_s"].items():
        print(f"  {name:<46} {seconds * 1e3:8.2f} ms  {seconds / parts['update_s']:6.1%}")
    print(f"  after a reconfiguration, building the indices makes the swap {parts['swap_new_mask_s'] * 1e3:.2f} ms "
          f"(once per mask change, every 50 rounds in the paper)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/kernels.json", help="where to write results")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per table (median)")
    parser.add_argument("--burn-in", type=int, default=2, help="untimed repeats before timing")
    parser.add_argument(
        "--densities", default=",".join(str(d) for d in DENSITIES), help="comma-separated; must include 0.1"
    )
    parser.add_argument("--smoke", action="store_true", help="one repeat, density 0.1, batch 2: checks the script runs")
    args = parser.parse_args(argv)
    densities, batch_size = tuple(float(d) for d in args.densities.split(",") if d.strip()), BATCH_SIZE
    if args.smoke:
        densities, batch_size, args.repeats, args.burn_in = (HEADLINE_DENSITY,), 2, 1, 0
    if args.repeats < 1 or args.threads < 1 or args.burn_in < 0:
        parser.error("--repeats and --threads must be >= 1 and --burn-in >= 0")
    if HEADLINE_DENSITY not in densities or not all(0.0 <= d <= 1.0 for d in densities):
        parser.error(f"--densities must be in [0, 1] and include the headline density {HEADLINE_DENSITY}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    load_at_start = os.getloadavg()
    if not native.available():
        print("WARNING: the native CSR kernels did not build; 'sparse' columns use torch's kernels", file=sys.stderr)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_model()}, "
          f"native CSR kernels {'on' if native.available() else 'OFF'}, "
          f"OMP_WAIT_POLICY={OMP_POLICY}, repeats {args.repeats}, burn-in {args.burn_in}, "
          f"load average {os.getloadavg()}")

    layer_rows = run_layers(densities, args.repeats, args.burn_in, batch_size)
    print_layers(layer_rows, batch_size)
    choice = client_choice(layer_rows, densities)
    update_rows = run_updates(densities, args.repeats, args.burn_in, batch_size, choice)
    print_updates(update_rows, batch_size)
    parts = run_breakdown(HEADLINE_DENSITY, args.repeats, args.burn_in, batch_size, choice[False][HEADLINE_DENSITY])
    print_breakdown(parts)
    break_even_sparse = break_even(layer_rows, "sparse")
    break_even_dw = break_even(layer_rows, "sparse+dW")
    print("\nbreak-even density (highest tested density where sparse beat masked dense):")
    for key in break_even_sparse:
        print(f"  {key:<12} without dW {break_even_sparse[key]:g}, with dW {break_even_dw[key]:g}")
    headline = next(r for r in update_rows if r["density"] == HEADLINE_DENSITY and not r["importance"])
    met = headline["sparse-fc_ratio"] <= TARGET_RATIO
    print(f"\nConv-2, density {HEADLINE_DENSITY:g}, {torch.get_num_threads()} threads, "
          f"{LOCAL_STEPS}-step update without "
          f"dense weight gradients: sparse-fc / dense = {headline['sparse-fc_ratio']:.3f} "
          f"(target <= {TARGET_RATIO}): {'met' if met else 'NOT met'}")

    out = {
        "benchmark": "kernels",
        "config": {
            "densities": list(densities), "batch_size": batch_size, "local_steps": LOCAL_STEPS,
            "num_classes": NUM_CLASSES, "lr": LR, "repeats": args.repeats, "burn_in": args.burn_in,
            "seed": SEED, "smoke": args.smoke, "headline_density": HEADLINE_DENSITY, "target_ratio": TARGET_RATIO,
        },
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": OMP_POLICY,
        "cpu": cpu_model(),
        "native_kernels": native.available(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "layers": layer_rows,
        "updates": update_rows,
        "breakdown": parts,
        "break_even_density": {"sparse": break_even_sparse, "sparse+dW": break_even_dw},
        "headline": {"ratio": headline["sparse-fc_ratio"], "target": TARGET_RATIO, "met": met},
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
