"""The codec benchmark script runs end to end at tiny sizes and writes its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_codec_benchmark_smoke_run_writes_exact_round_trips(tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "codec.json"
    # Execute
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "codec.py"), "--smoke", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["config"]["smoke"] is True
    assert [r["density"] for r in report["results"]] == [1.0, 0.5, 0.3, 0.1, 0.05, 0.01]
    assert all(r["exact_round_trip"] for r in report["results"])
    assert {"numpy_version", "torch_version", "zstandard_version", "cpu"} <= report.keys()
    assert "/bound" in proc.stdout
