"""All four methods end to end on the real scikit-learn digits, timed by a profile measured here (issue 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunefl.cli import main

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`prunefl profile` on digits-cnn, cut down to a few configurations."""
    out = tmp_path_factory.mktemp("profile") / "digits-cnn.json"
    code = main(["profile", "--model", "digits-cnn", "--threads", "1", "--configs", "6", "--repeats", "2",
                 "--passes", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def _config(tmp_path: Path, profile: Path) -> Path:
    path = tmp_path / "digits.toml"
    path.write_text(f"""
name = "digits"
seed = 3
threads = 1
[data]
dataset = "digits"
partition = "iid"
num_clients = 4
[model]
name = "digits-cnn"
[fl]
rounds = 12
clients_per_round = 4
local_steps = 5
batch_size = 20
lr = 0.1
eval_every = 4
target_accuracies = [0.3, 0.99]
[timing]
profile = "{profile}"
[pruning]
reconfig_interval = 4
first_reconfig_round = 4
ip_interval = 3
ip_check_every = 2
ip_max_rounds = 12
ip_batches = 3
""")
    return path


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fedavg", "prunefl", "prunefl-no-ip", "prunefl-ip-only"])
def test_method_runs_with_measured_profile(method: str, tmp_path: Path, profile: Path) -> None:
    # Execute
    out = tmp_path / "run"
    code = main(["run", "--config", str(_config(tmp_path, profile)), "--set", f"method={method}",
                 "--out", str(out), "--no-progress", "--no-plots"])
    # Assert
    assert code == 0
    rows = _rows(out)
    ip = [r for r in rows if r["stage"] == "ip"]
    fl = [r for r in rows if r["stage"] == "fl"]
    assert len(fl) == 12
    assert bool(ip) == (method in ("prunefl", "prunefl-ip-only"))
    reconf_rounds = [r["round"] for r in fl if r["reconfig"] is not None]
    assert reconf_rounds == ([4, 8] if method in ("prunefl", "prunefl-no-ip") else [])
    densities = {r["density"] for r in fl}
    if method == "fedavg":
        assert densities == {1.0}
    if method == "prunefl-ip-only":
        assert len(densities) == 1 and densities.pop() < 1.0  # mask fixed after initial pruning
    if ip:
        assert ip[-1]["density"] < 1.0
        assert fl[0]["sim-clock-s"] > ip[-1]["sim-clock-s"] > 0  # IP compute is charged by default
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method
    assert ("ip" in summary) == bool(ip)
    if ip:
        assert summary["ip"]["final-density"] == ip[-1]["density"]
        assert summary["ip"]["rounds"] == len(ip) and summary["ip"]["sim-compute-s"] > 0
    # the profile's constants, not a preset, timed the rounds: the t0 it measured on this machine
    prof = json.loads(profile.read_text())
    assert fl[0]["round-sim-s"] >= 5 * prof["constant_s_per_step"] * 0.99


@pytest.mark.slow
def test_same_seed_gives_identical_masks_selection_and_metrics(tmp_path: Path, profile: Path) -> None:
    # Prepare (spec §12 item 11)
    cfg = _config(tmp_path, profile)
    runs = []
    for name in ("a", "b"):
        assert main(["run", "--config", str(cfg), "--set", "method=prunefl", "--set", "clients_per_round=2",
                     "--out", str(tmp_path / name), "--no-progress", "--no-plots"]) == 0
        runs.append(_rows(tmp_path / name))
    # Assert: everything but measured wall times is identical
    volatile = {"wall-s", "compute-wall-s"}
    strip = [[{k: v for k, v in r.items() if k not in volatile} for r in rows] for rows in runs]
    assert strip[0] == strip[1]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
