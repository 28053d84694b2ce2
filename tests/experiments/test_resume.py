"""The checkpoint files, the metrics repair and the config check behind `prunefl run --resume` (issue 10 part 1)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from prunefl.cli import main
from prunefl.errors import CheckpointError, ConfigError
from prunefl.experiments.config import RunConfig, load_config
from prunefl.experiments.results import (
    MetricsPosition,
    ResultsWriter,
    atomic_write,
    read_checkpoint_files,
    write_checkpoint_files,
)
from prunefl.experiments.state import check_resume_config, load_run_state
from resume_runs import resume_args, run_args, write_config

DOC = {"format": "prunefl-checkpoint", "version": 2, "round": 4, "config": "", "meta": {}}


def _pair(folder: Path, value: float, round: int) -> None:
    write_checkpoint_files(folder, {"state/w": torch.full((3,), value)}, {**DOC, "round": round})


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "summary.json"
    path.write_text("old")
    # Execute
    atomic_write(path, "new")
    # Assert
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_checkpoint_pair_round_trips_and_names_the_tensors_sha256(tmp_path: Path) -> None:
    # Execute
    _pair(tmp_path, 1.5, 4)
    tensors, doc = read_checkpoint_files(tmp_path)
    # Assert
    assert tensors["state/w"].tolist() == [1.5, 1.5, 1.5]
    data = (tmp_path / "checkpoint.safetensors").read_bytes()
    assert doc["tensors"] == {"file": "checkpoint.safetensors", "sha256": hashlib.sha256(data).hexdigest(),
                              "bytes": len(data)}
    assert doc["round"] == 4


def test_torn_pair_rolls_forward_to_the_complete_new_json(tmp_path: Path) -> None:
    # Prepare: checkpoint of round 2 in place; the round-4 one killed between its two renames
    _pair(tmp_path, 1.0, 2)
    newer = tmp_path / "newer"
    newer.mkdir()
    _pair(newer, 2.0, 4)
    (newer / "checkpoint.safetensors").replace(tmp_path / "checkpoint.safetensors")
    (newer / "checkpoint.json").replace(tmp_path / "checkpoint.json.tmp")
    # Execute
    tensors, doc = read_checkpoint_files(tmp_path, finish=True)
    # Assert
    assert (doc["round"], tensors["state/w"].tolist()) == (4, [2.0, 2.0, 2.0])
    assert not (tmp_path / "checkpoint.json.tmp").exists()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["round"] == 4


@pytest.mark.parametrize("damage", ["no-json", "no-tensors", "bad-json", "not-a-checkpoint", "flipped-byte",
                                    "bad-header"])
def test_damaged_checkpoint_raises_checkpoint_error_naming_the_file(damage: str, tmp_path: Path) -> None:
    # Prepare
    _pair(tmp_path, 1.0, 2)
    tensors, meta = tmp_path / "checkpoint.safetensors", tmp_path / "checkpoint.json"
    if damage == "no-json":
        meta.unlink()
    elif damage == "no-tensors":
        tensors.unlink()
    elif damage == "bad-json":
        meta.write_text("{not json")
    elif damage == "not-a-checkpoint":
        meta.write_text('{"format": "other"}')
    elif damage == "flipped-byte":
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 0x01
        tensors.write_bytes(bytes(data))
    else:  # a header that lies about its length, with a JSON naming its SHA-256
        garbage = (10**9).to_bytes(8, "little") + b"{}"
        tensors.write_bytes(garbage)
        doc = json.loads(meta.read_text())
        doc["tensors"] = {"sha256": hashlib.sha256(garbage).hexdigest(), "bytes": len(garbage)}
        meta.write_text(json.dumps(doc))
    # Execute / Assert
    with pytest.raises(CheckpointError, match="checkpoint"):
        read_checkpoint_files(tmp_path)


def _writer_with_rows(folder: Path, n: int) -> tuple[ResultsWriter, MetricsPosition]:
    writer = ResultsWriter(folder, RunConfig())
    for r in range(n):
        writer.write_row({"round": r})
    return writer, writer.position()


def test_resume_drops_rows_after_the_checkpoint_and_a_torn_line(tmp_path: Path) -> None:
    # Prepare: 2 rows checkpointed, then a third row and half a fourth before the kill
    writer, pos = _writer_with_rows(tmp_path, 2)
    writer.write_row({"round": 2})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "ab") as f:
        f.write(b'{"round": 3, "te')
    # Execute
    resumed = ResultsWriter(tmp_path, RunConfig(), resume=pos)
    resumed.write_row({"round": 2, "again": True})
    resumed.close()
    # Assert
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines == ['{"round": 0}', '{"round": 1}', '{"round": 2, "again": true}']
    assert pos == MetricsPosition(26, 2, hashlib.sha256(b'{"round": 0}\n{"round": 1}\n').hexdigest())
    assert [r["round"] for r in resumed.rows] == [0, 1, 2]


@pytest.mark.parametrize("change", ["shorter", "edited"])
def test_resume_refuses_metrics_changed_since_the_checkpoint(change: str, tmp_path: Path) -> None:
    # Prepare
    writer, pos = _writer_with_rows(tmp_path, 2)
    writer.close()
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(path.read_bytes()[:10] if change == "shorter" else path.read_bytes().replace(b"1", b"7"))
    before = path.read_bytes()
    # Execute / Assert
    with pytest.raises(CheckpointError, match="metrics.jsonl"):
        ResultsWriter(tmp_path, RunConfig(), resume=pos)
    assert path.read_bytes() == before


def test_check_resume_config_names_every_shaping_key_and_allows_the_free_ones() -> None:
    # Prepare
    saved = load_config(None, ["rounds=10", "seed=1"])
    free = load_config(None, ["rounds=20", "seed=1", "threads=2", "eval_every=5", "checkpoint_every=3"])
    shaped = load_config(None, ["rounds=10", "seed=2", "model.name=mlp", "method=prunefl"])
    # Execute / Assert
    check_resume_config(saved, free, done=10)
    with pytest.raises(ConfigError) as caught:
        check_resume_config(saved, shaped, done=4)
    message = str(caught.value)
    for key in ("seed", "model.name", "pruning.method"):
        assert f"{key} differs" in message
    with pytest.raises(ConfigError, match="fl.rounds=5 is below the 8 rounds"):
        check_resume_config(saved, dataclasses.replace(saved, fl=dataclasses.replace(saved.fl, rounds=5)), done=8)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing-key", "reshaped", "client-count"])
def test_resume_refuses_a_checkpoint_that_does_not_fit_the_run(
    damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a finished 8-round run, its checkpoint rewritten (validly sealed) with a wrong part
    out = tmp_path / "run"
    assert main(run_args(write_config(tmp_path), out, ["rounds=2"])) == 0
    tensors, doc = read_checkpoint_files(out)
    if damage == "missing-key":
        del tensors[next(k for k in tensors if k.startswith("state/"))]
    elif damage == "reshaped":
        key = next(k for k in tensors if k.startswith("state/"))
        tensors[key] = torch.zeros(tensors[key].numel() + 1)
    else:
        doc["run-state"]["clients"] = doc["run-state"]["clients"][:-1]
    del doc["tensors"]
    write_checkpoint_files(out, tensors, doc)
    before = (out / "metrics.jsonl").read_bytes()
    # Execute
    code = main(resume_args(out, ["rounds=4"]))
    # Assert
    assert code == 2
    assert "checkpoint.json" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_bytes() == before


@pytest.mark.slow
def test_load_run_state_gives_the_rounds_done_and_metrics_position(tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "run"
    assert main(run_args(write_config(tmp_path), out, ["rounds=3"])) == 0
    # Execute
    state = load_run_state(out)
    # Assert
    assert state.round == 3 and len(state.clients) == 4 and state.config.fl.rounds == 3
    assert state.metrics.rows == 3 and state.metrics.bytes == (out / "metrics.jsonl").stat().st_size
    assert state.server["mask-version"] == 0 and state.sim_clock_s > 0
