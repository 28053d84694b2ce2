"""The importance-upload benchmark runs end to end in smoke mode and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_importance_upload_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "iu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "importance_upload.py"), "--smoke", "--json",
                           str(out), "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["importance-dtype"], r["importance-top-fraction"]) for r in rows] == [
        ("float32", 1.0), ("float16", 1.0), ("float32", 0.3), ("float32", 0.1)
    ]
    assert rows[1]["upload-bytes-per-client"] < rows[0]["upload-bytes-per-client"]
    assert rows[3]["upload-bytes-per-client"] < rows[2]["upload-bytes-per-client"] < rows[0]["upload-bytes-per-client"]
    assert rows[0]["mask-bits-identical"] == 1.0
