"""The sparse-kernel benchmark script runs end to end at smoke size and writes its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_kernels_benchmark_smoke_run_writes_report(tmp_path: Path) -> None:
    # Prepare: one thread, so a busy machine does not stall OpenMP barriers (the numbers are not checked)
    out = tmp_path / "kernels.json"

    # Execute
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kernels.py"), "--smoke", "--threads", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )

    # Assert: every table is there, with one row per layer / importance mode at the smoke density
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["config"]["smoke"] is True
    assert {"torch_version", "threads", "cpu", "omp_wait_policy"} <= report.keys()
    assert report["threads"] == 1
    assert {(r["model"], r["layer"]) for r in report["layers"]} == {
        ("conv2", "conv1"), ("conv2", "conv2"), ("conv2", "fc1"), ("conv2", "fc2"),
        *(("vgg11", f"conv{i}") for i in range(1, 9)),
        ("vgg11", "fc1"), ("vgg11", "fc2"), ("vgg11", "fc3"),
    }
    assert {r["importance"] for r in report["updates"]} == {True, False}
    assert all(r["sparse-fc_s"] > 0 and r["masked_s"] > 0 and r["dense_s"] > 0 for r in report["updates"])
    fc_layers = {"conv2.fc1", "conv2.fc2", "vgg11.fc1", "vgg11.fc2", "vgg11.fc3"}
    assert set(report["break_even_density"]["sparse"]) == fc_layers
    assert "sparse-fc / dense" in proc.stdout
