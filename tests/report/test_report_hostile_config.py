"""A results folder's config.toml is read with the config loader's bounds, and its JSON files with their
parser's failures caught (issue 10): a hostile file makes `prunefl report` exit 2 with a message naming it, never a
RecursionError traceback or a huge read of config.toml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunefl.cli import main
from prunefl.errors import DataError
from prunefl.experiments.config import MAX_CONFIG_BYTES, MAX_TOML_NESTING
from prunefl.metrics import K_DENSITY, K_METHOD, K_ROUND, K_SIM_CLOCK_S
from prunefl.report.results_io import read_config


def _run_folder(run_dir: Path, config: str) -> Path:
    """A one-row run folder whose config.toml holds ``config``."""
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps({K_ROUND: 0, K_SIM_CLOCK_S: 1.0, K_DENSITY: 1.0}) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({K_METHOD: "fedavg"}))
    (run_dir / "config.toml").write_text(config)
    return run_dir


@pytest.mark.parametrize(
    ("config", "expected_in_message"),
    [
        # 100 000 nested arrays: tomllib recurses once per "[" and would hit RecursionError
        ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", f"at most {MAX_TOML_NESTING}"),
        # a dotted key of 5000 parts: tomllib keeps every prefix, O(n²) memory
        (".".join(["k"] * 5000) + " = 1\n", f"at most {MAX_TOML_NESTING}"),
        # one byte over the size cap: refused after reading at most MAX_CONFIG_BYTES + 1 bytes
        ("#" * MAX_CONFIG_BYTES + "\n", f"larger than {MAX_CONFIG_BYTES} bytes"),
        # an integer of 5000 digits: int() refuses more than 4300 with a ValueError
        ("seed = " + "9" * 5000 + "\n", "not valid TOML"),
        # plain malformed TOML
        ("[fl\nrounds = 30\n", "not valid TOML"),
    ],
)
def test_prunefl_report_refuses_hostile_config_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, expected_in_message: str
) -> None:
    # Prepare
    run_dir = _run_folder(tmp_path / "run", config)

    # Execute
    code = main(["report", str(run_dir)])

    # Assert: the usage exit code, and one error line naming the file and the reason
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("prunefl: error: ")
    assert str(run_dir / "config.toml") in err
    assert expected_in_message in err


def test_read_config_refuses_oversized_file_without_reading_it_all(tmp_path: Path) -> None:
    # Prepare: 8 MiB of comment, 8x the cap
    (tmp_path / "config.toml").write_bytes(b"#" * (8 * MAX_CONFIG_BYTES))

    # Execute / Assert
    with pytest.raises(DataError, match=r"config\.toml: larger than"):
        read_config(tmp_path)


def test_read_config_still_reads_a_resolved_config(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "config.toml").write_text('seed = 3\n[fl]\nlr = 0.25\ntarget_accuracies = [0.8, 0.9]\n')

    # Execute
    config = read_config(tmp_path)

    # Assert
    assert config == {"seed": 3, "fl": {"lr": 0.25, "target_accuracies": [0.8, 0.9]}}


@pytest.mark.parametrize(
    ("file", "text"),
    [
        # 100 000 nested arrays: json's scanner recurses once per "[" (RecursionError)
        ("summary.json", "[" * 100_000),
        # an integer of 5000 digits: a ValueError, not a JSONDecodeError
        ("summary.json", '{"method": "fedavg", "rounds": ' + "9" * 5000 + "}"),
        ("metrics.jsonl", "[" * 100_000 + "\n"),
        ("metrics.jsonl", '{"round": ' + "9" * 5000 + "}\n"),
        # a comparison folder's manifest
        ("comparison.json", "{" * 100_000),
    ],
)
def test_prunefl_report_refuses_hostile_json_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, text: str
) -> None:
    # Prepare: a valid run folder, then one of its JSON files replaced
    run_dir = _run_folder(tmp_path / "run", "seed = 0\n")
    (run_dir / file).write_text(text)

    # Execute
    code = main(["report", str(run_dir)])

    # Assert
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("prunefl: error: ") and str(run_dir / file) in err
