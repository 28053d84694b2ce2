"""Tests for prunefl.report.results_io: reading and validating a run's results folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunefl.errors import DataError, PruneFLError
from prunefl.metrics import K_DENSITY, K_METHOD, K_ROUND, K_SIM_CLOCK_S, K_STAGE, K_TEST_ACCURACY
from prunefl.report.results_io import (
    RunResults,
    evaluated_rows,
    fl_rows,
    ip_rows,
    load_run,
    plot_round,
    read_config,
    read_metrics,
    read_summary,
)


def _row(round_: int, stage: str = "fl", accuracy: float | None = None) -> dict:
    return {K_ROUND: round_, K_STAGE: stage, K_SIM_CLOCK_S: 10.0 * (round_ + 1), K_DENSITY: 1.0,
            K_TEST_ACCURACY: accuracy}  # fmt: skip


def _write_run(run_dir: Path, rows: list[dict], summary: dict | None = None, config: str | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run_dir / "summary.json").write_text(json.dumps(summary or {K_METHOD: "fedavg"}))
    if config is not None:
        (run_dir / "config.toml").write_text(config)
    return run_dir


def test_read_metrics_run_dir_and_file_give_same_rows_skipping_blank_lines(tmp_path: Path) -> None:
    # Prepare
    run_dir = _write_run(tmp_path / "run", [_row(0), _row(1, accuracy=0.5)])
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write("\n   \n")

    # Execute
    from_dir = read_metrics(run_dir)
    from_file = read_metrics(run_dir / "metrics.jsonl")

    # Assert
    assert from_dir == from_file == [_row(0), _row(1, accuracy=0.5)]


@pytest.mark.parametrize(
    ("bad_line", "expected_in_message"),
    [
        ('{"round": 2, "sim-clock-s": 3.0,', "malformed JSON"),  # truncated write of an interrupted run
        ("[1, 2, 3]", "expected a JSON object, got list"),  # valid JSON, not an object
        ('{"round": 2, "density": 1.0}', "missing ['sim-clock-s']"),  # required key absent
        ('{"round": 2.0, "sim-clock-s": 3.0, "density": 1.0}', "integer 'round'"),  # round must be an int
        ('{"round": 2, "sim-clock-s": 3.0, "density": NaN}', "finite number for 'density'"),  # NaN is not a density
        ('{"round": 2, "sim-clock-s": true, "density": 1.0}', "finite number for 'sim-clock-s'"),  # bool is no time
    ],
)
def test_read_metrics_bad_line_raises_data_error_naming_file_and_line(
    tmp_path: Path, bad_line: str, expected_in_message: str
) -> None:
    # Prepare: the bad line is line 3, after two good rows
    run_dir = _write_run(tmp_path / "run", [_row(0), _row(1)])
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(bad_line + "\n")

    # Execute
    with pytest.raises(DataError) as excinfo:
        read_metrics(run_dir)

    # Assert
    message = str(excinfo.value)
    assert "metrics.jsonl line 3:" in message
    assert expected_in_message in message
    assert isinstance(excinfo.value, PruneFLError)


def test_read_metrics_missing_file_raises_data_error(tmp_path: Path) -> None:
    # Prepare
    tmp_path.joinpath("empty").mkdir()

    # Execute / Assert
    with pytest.raises(DataError, match=r"metrics\.jsonl: not found"):
        read_metrics(tmp_path / "empty")


@pytest.mark.parametrize(
    ("text", "expected_in_message"),
    [
        ('{"method": "fedavg",', "malformed JSON"),  # truncated
        ('["fedavg"]', "got list"),  # not an object
        ('{"rounds": 30}', "expected key 'method'"),  # no method
    ],
)
def test_read_summary_bad_file_raises_data_error(tmp_path: Path, text: str, expected_in_message: str) -> None:
    # Prepare
    (tmp_path / "summary.json").write_text(text)

    # Execute / Assert
    with pytest.raises(DataError, match=r"summary\.json") as excinfo:
        read_summary(tmp_path)
    assert expected_in_message in str(excinfo.value)


def test_read_config_malformed_toml_raises_data_error(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "config.toml").write_text("[fl\nrounds = 30\n")

    # Execute / Assert
    with pytest.raises(DataError, match=r"config\.toml: expected the resolved run configuration as TOML"):
        read_config(tmp_path)


def test_load_run_reads_all_three_files_and_passes_loaded_run_through(tmp_path: Path) -> None:
    # Prepare
    run_dir = _write_run(tmp_path / "run", [_row(0)], {K_METHOD: "prunefl"}, "seed = 3\n[fl]\nlr = 0.25\n")

    # Execute
    run = load_run(run_dir)

    # Assert
    assert run == RunResults(run_dir, [_row(0)], {K_METHOD: "prunefl"}, {"seed": 3, "fl": {"lr": 0.25}})
    assert run.method == "prunefl"
    assert load_run(run) is run


def test_load_run_without_config_gives_empty_config(tmp_path: Path) -> None:
    # Prepare
    run_dir = _write_run(tmp_path / "run", [_row(0)])

    # Execute
    run = load_run(str(run_dir))

    # Assert
    assert run.config == {}


def test_row_filters_split_ip_fl_and_evaluated_rows() -> None:
    # Prepare: 2 IP rounds (one evaluated), 3 FL rounds (two evaluated, one with accuracy 0.0)
    rows = [_row(0, "ip"), _row(1, "ip", 0.2), _row(0, "fl", 0.3), _row(1, "fl"), _row(2, "fl", 0.0)]

    # Execute
    evaluated = evaluated_rows(rows)

    # Assert: 0.0 is an evaluation, not a missing one
    assert [row[K_TEST_ACCURACY] for row in evaluated] == [0.2, 0.3, 0.0]
    assert ip_rows(rows) == rows[:2]
    assert fl_rows(rows) == rows[2:]


def test_plot_round_puts_ip_at_negative_indices_ending_at_minus_one() -> None:
    # Prepare: IP rounds 0..2, FL rounds 0..1
    rows = [_row(0, "ip"), _row(1, "ip"), _row(2, "ip"), _row(0), _row(1)]

    # Execute
    x = plot_round(rows)

    # Assert
    assert x == [-3, -2, -1, 0, 1]


def test_plot_round_without_ip_keeps_rounds() -> None:
    # Prepare: rows without a stage count as FL
    rows = [{K_ROUND: 0}, {K_ROUND: 1}]

    # Execute / Assert
    assert plot_round(rows) == [0, 1]
