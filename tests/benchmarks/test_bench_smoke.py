"""The reconfiguration benchmark script runs end to end at tiny sizes and writes its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_reconfigure_benchmark_smoke_run_writes_identical_results(tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "reconfigure.json"
    # Execute
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reconfigure.py"), "--smoke", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["config"]["smoke"] is True
    assert {r["size"] for r in report["results"]} == {"tiny-conv2", "tiny-resnet18"}
    assert all(r["identical"] for r in report["results"])
    assert {"torch_version", "threads", "cpu"} <= report.keys()
    assert "speed-up" in proc.stdout
