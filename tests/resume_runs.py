"""Helpers of the kill-and-resume and disk-fault tests: a small digits config, `prunefl run` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

RUN = "import sys; from prunefl.cli import main; sys.exit(main())"

# digits, MLP, 4 clients (3 a round), 8 rounds, a checkpoint every 2: about 1 s of training
BASE = """
name = "digits"
seed = 3
threads = 1
checkpoint_every = 2
[data]
dataset = "digits"
partition = "iid"
num_clients = 4
eval_subset = 200
[model]
name = "mlp"
[fl]
rounds = 8
clients_per_round = 3
local_steps = 3
batch_size = 16
lr = 0.1
eval_every = 2
[timing]
preset = "uniform"
[pruning]
method = "fedavg"
reconfig_interval = 2
first_reconfig_round = 2
ip_interval = 3
ip_check_every = 2
ip_max_rounds = 9
ip_batches = 3
"""


def write_config(folder: Path, name: str = "cfg.toml") -> Path:
    """The base config as a file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(BASE, encoding="utf-8")
    return path


def prunefl(args: Sequence[str], fault: str | None = None,
            preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``prunefl`` CLI in a new process (``fault``: the PRUNEFL_FAULT_INJECT test hook)."""
    env = {k: v for k, v in os.environ.items() if k != "PRUNEFL_FAULT_INJECT"}
    if fault is not None:
        env["PRUNEFL_FAULT_INJECT"] = fault
    return subprocess.run([sys.executable, "-c", RUN, *args], env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec)


def run_args(config: Path, out: Path, sets: Sequence[str]) -> list[str]:
    args = ["run", "--config", str(config), "--out", str(out), "--no-progress", "--no-plots"]
    for s in sets:
        args += ["--set", s]
    return args


def resume_args(out: Path, sets: Sequence[str] = ()) -> list[str]:
    args = ["run", "--resume", str(out), "--no-progress", "--no-plots"]
    for s in sets:
        args += ["--set", s]
    return args


def rows_without_wall(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows, without the real-time fields (wall-s and every *-wall-s)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in r.items() if k != "wall-s" and not k.endswith("-wall-s")} for r in rows]


def final_tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint.safetensors"))


def tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names that differ (missing on one side, or not bit-for-bit equal); empty when identical."""
    names = sorted(set(a) | set(b))
    return [n for n in names if n not in a or n not in b or a[n].dtype != b[n].dtype or not torch.equal(a[n], b[n])]
