"""End to end through the CLI: a few rounds on generated IDX files, then the results folder is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from idx_files import write_fashion_like
from prunefl.cli import main

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "configs" / "fmnist-conv2.toml"


def _small(data_dir: Path) -> list[str]:
    return [
        f"data.data_dir={data_dir}", "rounds=4", "eval_every=2", "eval_subset=100",
        "data.num_clients=4", "clients_per_round=4", "threads=1", "ip_client=0",
    ]


@pytest.mark.slow
def test_run_writes_complete_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    data = write_fashion_like(tmp_path / "fmnist", n_train=400, n_test=120)
    out = tmp_path / "run"
    args = ["run", "--config", str(CONFIG), "--out", str(out), "--no-progress"]
    for item in _small(data):
        args += ["--set", item]
    # Execute
    code = main(args)
    # Assert
    assert code == 0
    for name in ["config.toml", "metrics.jsonl", "summary.json", "checkpoint.safetensors", "checkpoint.json",
                 "plots/accuracy_vs_time.png", "plots/accuracy_vs_round.png", "plots/density_vs_time.png",
                 "report.md"]:
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert [r["test-accuracy"] is not None for r in rows] == [False, True, False, True]
    # dense Conv-2 (10 classes) under the official constants: 50.40 s per round (spec §4.4 with fc2 = 20,480)
    assert rows[0]["round-sim-s"] == pytest.approx(50.40, abs=0.01)
    assert rows[-1]["sim-clock-s"] == pytest.approx(4 * rows[0]["round-sim-s"])
    # both clocks are recorded: the time model's compute (the round less b x 6,495,008 kept weights) and the
    # measured wall time of the local steps
    model_compute = rows[0]["round-sim-s"] - 5.561621025626998e-06 * 6_495_008
    assert rows[0]["model-compute-s"] == pytest.approx([model_compute] * 4, rel=1e-9)
    assert all(0 < t < 60 for t in rows[0]["compute-wall-s"])
    assert all(r["density"] == 1.0 for r in rows)
    assert rows[0]["bytes-up"] > 4 * 4 * 6_000_000  # 4 clients send ~6.6 M float32 values each
    assert rows[-1]["wall-s"] > rows[0]["wall-s"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "fedavg" and summary["rounds"] == 4
    assert summary["final-accuracy"] == rows[-1]["test-accuracy"]
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["fl"]["rounds"] == 4 and cfg["data"]["data_dir"] == str(data)
    assert (out / "plots" / "accuracy_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "results:" in capsys.readouterr().out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "prunefl.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


@pytest.mark.slow
def test_bad_override_exits_2_with_clear_message_and_writes_nothing(tmp_path: Path) -> None:
    # Execute
    proc = _cli("run", "--config", str(CONFIG), "--set", "rounds=abc", "--out", str(tmp_path / "r"))
    # Assert
    assert proc.returncode == 2
    assert "fl.rounds must be an integer, got 'abc'" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_missing_data_exits_2_and_says_how_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    code = main(["run", "--config", str(CONFIG), "--set", f"data.data_dir={tmp_path / 'none'}",
                 "--out", str(tmp_path / "r"), "--no-progress"])
    # Assert
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none") in err and "dataset-fashion-mnist" in err
    assert not (tmp_path / "r").exists()


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_out_folder_that_is_not_empty_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("precious")
    # Execute
    code = main(["run", "--config", str(CONFIG), "--out", str(tmp_path / "r")])
    # Assert: refused, and the existing file is untouched
    assert code == 2
    assert (tmp_path / "r" / "keep.txt").read_text() == "precious"
