"""prunefl's Flower app on Flower's simulation runtime (Ray): a SuperLink started with ``--simulation``, virtual
SuperNodes as Ray actors, no ``flower-supernode`` processes.

The runtime gives each virtual node ``node_config = {"partition-id": i, "num-partitions": N}`` (i = 0 … N-1, ints),
which is what :func:`prunefl.engines.flower.app_config.node_partition` reads, so the app runs unchanged; the number
of virtual nodes must equal ``data.num_clients`` (``flwr run --federation-config "num-supernodes=N"``).

Needs ``flwr[simulation]`` (ray); skipped without it. Every process is stopped by process group
(:mod:`flower_deployment`), and so is the SuperExec's own group, where the ``flwr-simulation`` process and Ray
run (:meth:`RayDeployment.close`).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from flower_deployment import APP_DIR, BIN, Deployment  # noqa: E402
from prunefl import metrics as K  # noqa: E402
from prunefl.engines.flower.app_config import parse_run_config  # noqa: E402
from prunefl.experiments.runner import run_experiment  # noqa: E402

pytestmark = pytest.mark.slow

WALL_KEYS = {K.K_WALL_S, K.K_COMPUTE_WALL_S, K.K_ROUND_WALL_S, K.K_DELIVERY_WALL_S, K.K_NODES, K.K_DROPPED}
PRESET = "digits-flower"  # PruneFL, digits, 2 clients, initial pruning on a node, 3 rounds, reconfiguration in round 2


class RayDeployment(Deployment):
    """A SuperLink with Flower's simulation runtime: ClientApps run as Ray actors inside the SuperLink's tree."""

    def start_superlink(self) -> None:
        self._start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--simulation",
                                  "--disable-runtime-dependency-installation",
                                  "--host", "127.0.0.1", "--port", str(self.port)])
        self._wait_port(self.port, "superlink")

    def __enter__(self) -> "RayDeployment":
        return self

    def close(self) -> None:
        """Stop the SuperLink's tree, and the SuperExec's: a session of its own, where Ray's processes live too.

        The SuperExec (and the ``flwr-simulation`` process and Ray under it) is started detached by the SuperLink;
        it exits with the SuperLink, but a run stopped half-way leaves Ray's agents behind (they ignore SIGTERM),
        so its whole process group is killed as well.
        """
        link = self.procs.get("superlink")
        groups = _child_groups(link.pid) - {link.pid} if link is not None else set()
        super().close()
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def submit_simulation(self, run_config: str, num_supernodes: int) -> int:
        """`flwr run` the app on ``num_supernodes`` virtual nodes; return the run id."""
        out = self.flwr("run", str(APP_DIR), "test", "--run-config", run_config, "--format", "json",
                        "--federation-config", f"num-supernodes={num_supernodes}")
        return int(json.loads(out)["run-id"])


def _child_groups(pid: int) -> set[int]:
    """The process groups of the processes whose parent is ``pid`` (Linux /proc), alive now."""
    out: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields after the name: state, ppid, pgrp, ...
            out.add(int(fields[2]))
    return out


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ray_simulation_runtime_equals_simulation(tmp_path: Path) -> None:
    # Prepare
    run_dir = tmp_path / "ray-results"
    config, _ = parse_run_config({"prunefl.config": PRESET})
    run_experiment(config, tmp_path / "sim", plots=False)
    with RayDeployment(tmp_path / "deployment") as d:
        d.start_superlink()

        # Execute
        run_id = d.submit_simulation(f'prunefl.config="{PRESET}" prunefl.run-dir="{run_dir}"', num_supernodes=2)
        status = d.wait(run_id, timeout=300)

        # Assert: the run completed (flwr run exits 0 either way)
        assert status == "finished:completed", d.run_log(run_id)[-4000:]
    sim, ray = _rows(tmp_path / "sim"), _rows(run_dir)
    assert len(sim) == len(ray) == 9  # 6 initial-pruning rows (on virtual node 0), 3 FL rows
    for a, b in zip(sim, ray):
        assert {k: v for k, v in a.items() if k not in WALL_KEYS} == {k: v for k, v in b.items() if k not in WALL_KEYS}
    fl_rows = [r for r in ray if r[K.K_STAGE] == "fl"]
    assert all(len(set(r[K.K_NODES])) == 2 and r[K.K_DROPPED] == [] for r in fl_rows)
    ck_sim = load_file(tmp_path / "sim" / "checkpoint.safetensors")
    ck_ray = load_file(run_dir / "checkpoint.safetensors")
    assert sorted(ck_sim) == sorted(ck_ray) and any(k.startswith("mask/") for k in ck_sim)
    for key in ck_sim:
        assert ck_sim[key].dtype == ck_ray[key].dtype and torch.equal(ck_sim[key], ck_ray[key]), key
