"""Tests for prunefl.report.markdown: run reports, comparison reports and the plain-text summary table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunefl.metrics import (
    K_BEST_ACCURACY,
    K_BYTES_DOWN,
    K_BYTES_UP,
    K_DENSITY,
    K_FINAL_ACCURACY,
    K_FINAL_DENSITY,
    K_METHOD,
    K_RECONFIG,
    K_ROUND,
    K_ROUNDS,
    K_SIM_CLOCK_S,
    K_STAGE,
    K_TARGET_ACCURACY,
    K_TARGETS,
    K_TEST_ACCURACY,
    K_WALL_S,
)
from prunefl.report.markdown import format_summary_table, write_comparison_report, write_report
from prunefl.report.plots import PlotStyle, plot_run

SMALL = PlotStyle(width_in=4.0, height_in=3.0, dpi=50)
CONFIG = """seed = 0
[data]
dataset = "fashion-mnist"
[fl]
rounds = 30
lr = 0.25
momentum = 0.0
[pruning]
method = "prunefl"
"""

# IP rounds 1 and 2 reconfigure (1.0 → 0.5 → 0.3); FL rounds 9 and 19 reconfigure (0.3 → 0.35 → 0.4).
IP_RECONFIG = {"removed": {"conv1.weight": 10, "fc1.weight": 40}, "added": {}, "objective-before": 1.5,
               "objective-after": 2.25, "max-decrease": 0.3, "density-before": 1.0, "density-after": 0.5}  # fmt: skip
FL_RECONFIG = {"removed": {"conv1.weight": 2, "fc1.weight": 3}, "added": {"fc1.weight": 10}, "objective-before": 0.8,
               "objective-after": 0.9, "max-decrease": 0.29896}  # fmt: skip


def _target(accuracy: float, round_: int | None, sim_s: float | None, wall_s: float | None) -> dict:
    return {K_TARGET_ACCURACY: accuracy, K_ROUND: round_, K_SIM_CLOCK_S: sim_s, K_WALL_S: wall_s}


def _write_run(run_dir: Path, summary: dict, *, round_sim_s: float, with_ip: bool = False) -> Path:
    """30 FL rounds of ``round_sim_s`` each, evaluated every 5th; with IP: 3 IP rounds (charged 0 s) first."""
    rows = []
    if with_ip:
        for r, density in enumerate([1.0, 0.5, 0.3]):
            reconfig = None if r == 0 else {**IP_RECONFIG, "density-before": [1.0, 1.0, 0.5][r],
                                            "density-after": density}  # fmt: skip
            rows.append({K_ROUND: r, K_STAGE: "ip", K_SIM_CLOCK_S: 0.0, K_DENSITY: density, K_RECONFIG: reconfig})
    for r in range(30):
        density = (0.3 if r < 9 else 0.35 if r < 19 else 0.4) if with_ip else 1.0
        rows.append({K_ROUND: r, K_STAGE: "fl", K_SIM_CLOCK_S: round_sim_s * (r + 1), K_DENSITY: density,
                     K_BYTES_UP: 1000, K_BYTES_DOWN: 2000,
                     K_TEST_ACCURACY: 0.5 + 0.01 * (r + 1) if r % 5 == 4 else None,
                     K_RECONFIG: FL_RECONFIG if with_ip and r in (9, 19) else None})  # fmt: skip
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.toml").write_text(CONFIG)
    return run_dir


@pytest.fixture
def fedavg_run(tmp_path: Path) -> Path:
    # 10 s per round: target 0.6 (accuracy 0.5 + 0.01·(r+1)) at round 9, i.e. 100 s; 0.85 never.
    summary = {K_METHOD: "fedavg", K_ROUNDS: 30, K_FINAL_ACCURACY: 0.8, K_BEST_ACCURACY: 0.8,
               K_FINAL_DENSITY: 1.0, K_SIM_CLOCK_S: 300.0, K_WALL_S: 15.0, K_BYTES_UP: 30_000,
               K_BYTES_DOWN: 60_000,
               K_TARGETS: [_target(0.6, 9, 100.0, 5.0), _target(0.85, None, None, None)]}  # fmt: skip
    return _write_run(tmp_path / "fedavg", summary, round_sim_s=10.0)


@pytest.fixture
def prunefl_run(tmp_path: Path) -> Path:
    # 5 s per round, IP charged 0 s: target 0.6 at round 9, i.e. 50 s, half of FedAvg's 100 s.
    summary = {K_METHOD: "prunefl", K_ROUNDS: 30, K_FINAL_ACCURACY: 0.82, K_BEST_ACCURACY: 0.83,
               K_FINAL_DENSITY: 0.4, K_SIM_CLOCK_S: 150.0, K_WALL_S: 12.5, K_BYTES_UP: 12_000,
               K_BYTES_DOWN: 24_000,
               K_TARGETS: [_target(0.6, 9, 50.0, 4.0), _target(0.85, None, None, None)],
               "ip": {K_ROUNDS: 3, K_FINAL_DENSITY: 0.3, K_SIM_CLOCK_S: 0.0}}  # fmt: skip
    return _write_run(tmp_path / "prunefl", summary, round_sim_s=5.0, with_ip=True)


@pytest.fixture
def snip_run(tmp_path: Path) -> Path:
    # Reaches 0.85 at 250 s, which FedAvg never did within its 300 s: speed-up > 300/250 = 1.20.
    summary = {K_METHOD: "snip", K_ROUNDS: 30, K_FINAL_ACCURACY: 0.86, K_FINAL_DENSITY: 0.4,
               K_SIM_CLOCK_S: 270.0,
               K_TARGETS: [_target(0.6, 4, 45.0, 2.0), _target(0.85, 27, 250.0, 11.0)]}  # fmt: skip
    return _write_run(tmp_path / "snip", summary, round_sim_s=9.0)


def test_write_report_with_ip_and_reconfigs_has_every_section(prunefl_run: Path) -> None:
    # Execute
    path = write_report(prunefl_run, make_plots=True, style=SMALL)

    # Assert
    text = path.read_text()
    assert path == prunefl_run / "report.md"
    assert text.startswith("# Run report: prunefl\n")
    assert "- **Method:** prunefl" in text
    # key configuration lines, and the whole config folded away
    assert '| `data.dataset` | `"fashion-mnist"` |' in text
    assert "| `fl.lr` | `0.25` |" in text
    assert "fl.rounds = 30" in text
    assert "| `fl.momentum`" not in text
    assert "fl.momentum = 0.0" in text
    # summary: total bytes 12,000 + 24,000 = 36 kB
    for line in ["| final accuracy | 0.8200 |", "| best accuracy | 0.8300 |", "| final density | 40.00% |",
                 "| simulated time | 150.0 s |", "| wall time | 12.5 s |", "| bytes up | 12.00 kB |",
                 "| bytes down | 24.00 kB |", "| total bytes | 36.00 kB |"]:  # fmt: skip
        assert line in text
    # time to target
    assert "| 0.6 | 9 | 50.0 s | 4.0 s |" in text
    assert "| 0.85 | n.r. | n.r. | n.r. |" in text
    # IP summary
    assert "## Initial pruning" in text
    assert "| 3 | 30.00% | 0.0 s |" in text
    # reconfigurations: IP removes 10 + 40 = 50; FL removes 2 + 3 = 5 and adds 10 (density from the row)
    assert "| 1 | ip | 50 | 0 | 100.00% → 50.00% | 1.5 | 2.25 | 0.3 |" in text
    assert "| 2 | ip | 50 | 0 | 50.00% → 30.00% | 1.5 | 2.25 | 0.3 |" in text
    assert "| 9 | fl | 5 | 10 | 35.00% | 0.8 | 0.9 | 0.299 |" in text
    assert "| 19 | fl | 5 | 10 | 40.00% | 0.8 | 0.9 | 0.299 |" in text
    # plots, linked relative to the report, and present
    for name in ["accuracy_vs_time", "accuracy_vs_round", "density_vs_time", "bytes_vs_round"]:
        assert f"(plots/{name}.png)" in text
        assert (prunefl_run / "plots" / f"{name}.png").is_file()


def test_write_report_without_ip_or_reconfigs_omits_those_sections(fedavg_run: Path) -> None:
    # Execute
    text = write_report(fedavg_run, make_plots=True, style=SMALL).read_text()

    # Assert
    assert "| total bytes | 90.00 kB |" in text
    assert "| 0.6 | 9 | 100.0 s | 5.0 s |" in text
    assert "## Initial pruning" not in text
    assert "## Reconfigurations" not in text


def test_write_report_by_default_draws_nothing_and_embeds_no_missing_plot(fedavg_run: Path) -> None:
    # Execute
    text = write_report(fedavg_run).read_text()

    # Assert
    assert "## Plots" not in text
    assert not (fedavg_run / "plots").exists()


def test_write_report_embeds_plots_of_an_earlier_plot_run(fedavg_run: Path) -> None:
    # Prepare: the runner and CLI draw first, then write the report
    plot_run(fedavg_run, style=SMALL)

    # Execute
    text = write_report(fedavg_run).read_text()

    # Assert
    assert "![Cumulative bytes vs round](plots/bytes_vs_round.png)" in text


def test_write_report_long_run_shows_hours(tmp_path: Path) -> None:
    # Prepare: 17,200 s = 4.78 h (FEMNIST conventional FL to 0.70, spec §11.2)
    run_dir = _write_run(tmp_path / "long", {K_METHOD: "fedavg", K_SIM_CLOCK_S: 17_200.0}, round_sim_s=10.0)

    # Execute
    text = write_report(run_dir).read_text()

    # Assert
    assert "| simulated time | 17,200.0 s (4.78 h) |" in text
    assert "| final accuracy | — |" in text  # absent from the summary


def test_write_comparison_report_gives_speed_ups_against_fedavg(
    tmp_path: Path, fedavg_run: Path, prunefl_run: Path, snip_run: Path
) -> None:
    # Execute
    path = write_comparison_report([fedavg_run, prunefl_run, snip_run], tmp_path / "cmp", make_plots=True, style=SMALL)

    # Assert
    text = path.read_text()
    assert path == tmp_path / "cmp" / "report.md"
    target_06, target_085 = text.split("### Target accuracy 0.6")[1].split("### Target accuracy 0.85")
    # 0.6: 100 s / 50 s = 2.00; 100 s / 45 s = 2.22
    assert "| fedavg | fedavg | 9 | 100.0 s | 5.0 s | 1.00× |" in target_06
    assert "| prunefl | prunefl | 9 | 50.0 s | 4.0 s | 2.00× |" in target_06
    assert "| snip | snip | 4 | 45.0 s | 2.0 s | 2.22× |" in target_06
    # 0.85: FedAvg never reached it in 300 s, so SNIP's 250 s is more than 300/250 = 1.20 times faster
    assert "| fedavg | fedavg | n.r. | n.r. | n.r. | n.r. |" in target_085
    assert "| prunefl | prunefl | n.r. | n.r. | n.r. | n.r. |" in target_085
    assert "| snip | snip | 27 | 250.0 s | 11.0 s | > 1.20× |" in target_085
    # final results
    assert "| prunefl | 30 | 0.8200 | 0.8300 | 40.00% | 150.0 s | 12.5 s | 12.00 kB | 24.00 kB |" in text
    assert "| snip | 30 | 0.8600 | — | 40.00% | 270.0 s | — | — | — |" in text
    # overlays, next to the report
    for name in ["accuracy_vs_time", "accuracy_vs_round", "density_vs_time"]:
        assert f"]({name}.png)" in text
        assert (tmp_path / "cmp" / f"{name}.png").is_file()


def test_write_comparison_report_without_baseline_has_no_speed_up(
    tmp_path: Path, prunefl_run: Path, snip_run: Path
) -> None:
    # Execute
    text = write_comparison_report([prunefl_run, snip_run], tmp_path / "cmp", ["PruneFL", "SNIP"]).read_text()

    # Assert
    assert "No FedAvg/conventional run among these, so no speed-up" in text
    assert "speed-up vs" not in text
    assert "| PruneFL | prunefl | 9 | 50.0 s | 4.0 s |" in text


def test_write_comparison_report_labels_extension_methods(tmp_path: Path) -> None:
    # Prepare
    run_dir = _write_run(tmp_path / "synflow", {K_METHOD: "synflow"}, round_sim_s=1.0)

    # Execute
    text = write_comparison_report([run_dir], tmp_path / "cmp").read_text()

    # Assert
    assert "| synflow | synflow (extension, not in the official PruneFL code: SynFlow) |" in text


def test_format_summary_table_aligns_columns() -> None:
    # Prepare
    summaries = [
        {K_METHOD: "fedavg", K_ROUNDS: 30, K_FINAL_ACCURACY: 0.8, K_BEST_ACCURACY: 0.8, K_FINAL_DENSITY: 1.0,
         K_SIM_CLOCK_S: 300.0, K_WALL_S: 15.0, K_BYTES_UP: 30_000, K_BYTES_DOWN: 60_000},
        {K_METHOD: "prunefl", K_ROUNDS: 30, K_FINAL_ACCURACY: 0.82, K_FINAL_DENSITY: 0.4, K_SIM_CLOCK_S: 150.0},
    ]  # fmt: skip

    # Execute
    table = format_summary_table(summaries, labels=["fedavg (seed 0)", "prunefl"])

    # Assert
    header, rule, first, second = table.split("\n")
    assert header.split() == ["run", "rounds", "final", "acc", "best", "acc", "density", "sim", "time", "wall",
                              "time", "bytes", "up", "bytes", "down"]  # fmt: skip
    assert first.startswith("fedavg (seed 0)  ")
    assert second.startswith("prunefl          ")
    # right-aligned numbers end where their header ends
    assert first.index("0.8000") + len("0.8000") == header.index("final acc") + len("final acc")
    assert second.index("150.0 s") + len("150.0 s") == header.index("sim time") + len("sim time")
    assert first.endswith("60.00 kB")
    assert second.endswith("—")
    assert len(header) == len(rule) == len(first)


def test_format_summary_table_label_count_mismatch_raises_value_error() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="one label per summary"):
        format_summary_table([{K_METHOD: "fedavg"}], labels=[])
