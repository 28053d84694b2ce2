"""Time one PruneFL reconfiguration at paper model sizes: vectorised solver against the heap reference.

The number that decides something: seconds per reconfiguration at ResNet-18 size (11 M prunable weights); the
target is <= 0.25 s on a 2-core CPU and >= 10x faster than the heap procedure of the official code (spec §10 item 3).

Usage::

    .venv/bin/python benchmarks/reconfigure.py                      # conv2,resnet18, 5 repeats
    .venv/bin/python benchmarks/reconfigure.py --sizes resnet18 --repeats 9 --threads 1
    .venv/bin/python benchmarks/reconfigure.py --smoke              # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from prunefl.pruning import Reconfiguration, max_decrease, reconfigure, reconfigure_reference
from prunefl.timing import preset_time_model
from prunefl.machine import cpu_model

# Prunable weight shapes in model order (spec §6); hard-coded so the benchmark does not depend on prunefl.models.
_RESNET18_SHAPES: list[tuple[str, tuple[int, ...]]] = (
    [("conv1.weight", (64, 3, 7, 7))]
    + [(f"layer1.{b}.conv{c}.weight", (64, 64, 3, 3)) for b in (0, 1) for c in (1, 2)]
    + [("layer2.0.conv1.weight", (128, 64, 3, 3))]
    + [(n, (128, 128, 3, 3)) for n in ("layer2.0.conv2.weight", "layer2.1.conv1.weight", "layer2.1.conv2.weight")]
    + [("layer3.0.conv1.weight", (256, 128, 3, 3))]
    + [(n, (256, 256, 3, 3)) for n in ("layer3.0.conv2.weight", "layer3.1.conv1.weight", "layer3.1.conv2.weight")]
    + [("layer4.0.conv1.weight", (512, 256, 3, 3))]
    + [(n, (512, 512, 3, 3)) for n in ("layer4.0.conv2.weight", "layer4.1.conv1.weight", "layer4.1.conv2.weight")]
    + [("fc.weight", (100, 512))]
)
SIZES: dict[str, tuple[str, list[tuple[str, tuple[int, ...]]]]] = {
    # name: (time-model preset model, [(layer, shape), ...])
    "conv2": (
        "conv2",
        [
            ("conv1.weight", (32, 1, 5, 5)),
            ("conv2.weight", (64, 32, 5, 5)),
            ("fc1.weight", (2048, 3136)),
            ("fc2.weight", (62, 2048)),
        ],
    ),
    "resnet18": ("resnet18", _RESNET18_SHAPES),
    # Smoke sizes: the same layer structure, a few hundred weights per layer.
    "tiny-conv2": (
        "conv2",
        [
            ("conv1.weight", (4, 1, 3, 3)),
            ("conv2.weight", (8, 4, 3, 3)),
            ("fc1.weight", (16, 32)),
            ("fc2.weight", (6, 16)),
        ],
    ),
    "tiny-resnet18": ("resnet18", [(name, (4, 4, 3, 3)) for name, _ in _RESNET18_SHAPES]),
}
SEED = 0
LOCAL_STEPS = 5  # K of every paper configuration (spec §5)
ROUND = 50  # first FL reconfiguration: δ(50) = 0.29896 (spec §3.5)


def make_instance(size: str, density: float, seed: int) -> dict:
    """Build weights, masks and importance for one size: N(0, 1) weights, Bernoulli masks, log-uniform s."""
    model_name, shapes = SIZES[size]
    gen = np.random.default_rng(seed)
    weights, masks, importance = {}, {}, {}
    for name, shape in shapes:
        weights[name] = torch.from_numpy(gen.standard_normal(shape, dtype=np.float32))
        masks[name] = torch.from_numpy(gen.random(shape, dtype=np.float32) < density)
        # Accumulated squared gradients span many decades; log-uniform over 10 of them, float32 like the buffers.
        importance[name] = torch.from_numpy((10.0 ** gen.uniform(-10.0, 0.0, size=shape)).astype(np.float32))
    time_model = preset_time_model("rpi_official", model_name, [name for name, _ in shapes])
    # S_fix: biases and BN (spec §2.3); about the importance of 1 % of the weights.
    fixed_importance = float(sum(float(s.sum(dtype=torch.float64)) for s in importance.values())) * 0.01
    return {
        "weights": weights,
        "masks": masks,
        "importance": importance,
        "time_model": time_model,
        "local_steps": LOCAL_STEPS,
        "max_decrease": max_decrease(ROUND),
        "fixed_importance": fixed_importance,
    }


def time_runs(
    fn: Callable[..., Reconfiguration], kwargs: dict, repeats: int, burn_in: int
) -> tuple[list[float], list[float], Reconfiguration]:
    """Time ``repeats`` calls after ``burn_in`` untimed ones: wall (perf_counter) and process CPU seconds.

    CPU time is recorded beside wall time because a shared machine inflates the wall time of multi-threaded
    torch ops (threads wait for a busy core) while the work done stays the same.
    """
    for _ in range(burn_in):
        fn(**kwargs)
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn(**kwargs)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu, result  # repeats >= 1, checked in main()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="conv2,resnet18", help=f"comma-separated, of {sorted(SIZES)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the vectorised solver (median)")
    parser.add_argument("--heap-repeats", type=int, default=1, help="timed runs of the heap reference (slow)")
    parser.add_argument("--density", type=float, default=0.3, help="density of the random input masks")
    parser.add_argument("--density-cap", type=float, default=None, help="D of spec §3.10 (default: no cap)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", default="benchmarks/results/reconfigure.json", help="where to write results")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.repeats, args.heap_repeats = "tiny-conv2,tiny-resnet18", 1, 1
    if args.repeats < 1 or args.heap_repeats < 1:
        parser.error(f"--repeats and --heap-repeats must be >= 1, got {args.repeats}, {args.heap_repeats}")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; expected some of {sorted(SIZES)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    rows = []
    header = (
        f"{'size':<14} {'weights':>11} {'vectorised s':>13} {'(cpu s)':>8} {'heap s':>9} {'speed-up':>9} "
        f"{'identical':>9}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        kwargs = make_instance(size, args.density, SEED)
        kwargs["density_cap"] = args.density_cap
        n_weights = sum(w.numel() for w in kwargs["weights"].values())
        vec_s, vec_cpu, vec = time_runs(reconfigure, kwargs, args.repeats, burn_in=1)
        heap_s, heap_cpu, ref = time_runs(reconfigure_reference, kwargs, args.heap_repeats, burn_in=0)
        identical = all(torch.equal(vec.masks[n], ref.masks[n]) for n in vec.masks)
        vec_median, heap_median = statistics.median(vec_s), statistics.median(heap_s)
        rows.append(
            {
                "size": size,
                "weights": n_weights,
                "layers": len(kwargs["weights"]),
                "vectorised_s": vec_median,
                "vectorised_runs_s": vec_s,
                "vectorised_cpu_s": statistics.median(vec_cpu),
                "heap_s": heap_median,
                "heap_runs_s": heap_s,
                "heap_cpu_s": statistics.median(heap_cpu),
                "speed_up": heap_median / vec_median if vec_median > 0 else math.inf,
                "identical": identical,
                "density_before": vec.density_before,
                "density_after": vec.density_after,
                "removed": sum(vec.removed.values()),
                "added": sum(vec.added.values()),
            }
        )
        r = rows[-1]
        print(
            f"{size:<14} {n_weights:>11,} {vec_median:>13.4f} {r['vectorised_cpu_s']:>8.4f} {heap_median:>9.3f} "
            f"{r['speed_up']:>8.1f}x {str(identical):>9}"
        )

    out = {
        "benchmark": "reconfigure",
        "config": {
            "sizes": sizes,
            "repeats": args.repeats,
            "heap_repeats": args.heap_repeats,
            "density": args.density,
            "density_cap": args.density_cap,
            "seed": SEED,
            "local_steps": LOCAL_STEPS,
            "round": ROUND,
            "max_decrease": max_decrease(ROUND),
            "time_model_preset": "rpi_official",
            "smoke": args.smoke,
        },
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "load_average_at_end": os.getloadavg(),
        "results": rows,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
