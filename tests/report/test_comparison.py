"""Tests for a comparison folder's report: manifest (comparison_io), aggregates over seeds and table
(comparison_table), plots (comparison_plots) and report.md (comparison)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunefl.errors import DataError
from prunefl.metrics import (
    K_BEST_ACCURACY,
    K_BYTES_DOWN,
    K_BYTES_UP,
    K_DENSITY,
    K_FINAL_ACCURACY,
    K_FINAL_ACCURACY_FULL,
    K_FINAL_DENSITY,
    K_IP,
    K_IP_CHARGED,
    K_IP_COMPUTE_S,
    K_METHOD,
    K_ROUND,
    K_SIM_CLOCK_S,
    K_STAGE,
    K_TARGET_ACCURACY,
    K_TARGETS,
    K_TEST_ACCURACY,
)
from prunefl.pruning.methods import all_specs
from prunefl.report.comparison import render_comparison, wall_time_by_method
from prunefl.report.comparison_io import (
    COMPARISON_FILE,
    RUN_FAILED,
    RUN_OK,
    ComparisonManifest,
    RunRecord,
    load_comparison,
    read_manifest,
)
from prunefl.report.comparison_plots import ACCURACY_VS_TIME_SEEDS, DENSITY_VS_ROUND_SEEDS, LOTTERY_TICKET, mean_curve
from prunefl.report.comparison_table import Spread, aggregate_comparison, format_comparison_table
from prunefl.report.plots import PlotStyle

SMALL = PlotStyle(width_in=3.0, height_in=2.0, dpi=40)
BASELINE = next(spec.name for spec in all_specs() if spec.baseline)
WITH_IP = next(spec.name for spec in all_specs() if spec.initial_pruning)
PLAIN = next(spec.name for spec in all_specs() if not spec.baseline and not spec.initial_pruning)


def _summary(method: str, reached: list[tuple[float, int | None, float | None]], *, final: float = 0.8,
             sim_s: float = 2000.0, ip: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A summary.json with one target entry per (target, round, sim seconds); None = not reached."""
    summary = {
        K_METHOD: method, K_FINAL_ACCURACY: final, K_BEST_ACCURACY: final + 0.01, K_FINAL_DENSITY: 1.0,
        K_SIM_CLOCK_S: sim_s, K_BYTES_UP: 1000, K_BYTES_DOWN: 500,
        K_TARGETS: [{K_TARGET_ACCURACY: t, K_ROUND: r, K_SIM_CLOCK_S: s} for t, r, s in reached],
    }  # fmt: skip
    if ip is not None:
        summary[K_IP] = ip
    summary.update(extra)
    return summary


def _write_comparison(root: Path, runs: dict[tuple[str, int], dict[str, Any] | str]) -> Path:
    """A comparison folder written by hand: a summary per finished run (4 FL rows, evaluated at rounds 1 and 3,
    round r ending at 100·(r+1) s), or an error message for a failed one."""
    records = []
    for (method, seed), outcome in runs.items():
        run_dir = f"{method}/seed-{seed}"
        if isinstance(outcome, str):
            records.append(RunRecord(method, seed, run_dir, RUN_FAILED, outcome, 0.5))
            continue
        (root / run_dir).mkdir(parents=True)
        (root / run_dir / "summary.json").write_text(json.dumps(outcome))
        rows = [{K_ROUND: r, K_STAGE: "fl", K_SIM_CLOCK_S: 100.0 * (r + 1), K_DENSITY: 1.0 - 0.1 * r,
                 K_TEST_ACCURACY: 0.2 * r + 0.05 * seed if r % 2 else None} for r in range(4)]  # fmt: skip
        (root / run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        records.append(RunRecord(method, seed, run_dir, RUN_OK, None, 1.5))
    methods = list(dict.fromkeys(m for m, _ in runs))
    seeds = sorted({s for _, s in runs})
    ComparisonManifest("cfg.toml", methods, seeds, 2, records, wall_s=3.0).write(root)
    (root / "config.toml").write_text('name = "cmp"\nseed = 0\n[fl]\nrounds = 4\n[pruning]\nmethod = "x"\n')
    return root


def _row(rows: list, method: str, clock: str = "") -> Any:
    return next(r for r in rows if r.method == method and r.clock == clock)


def test_time_to_target_is_mean_range_and_count_over_the_seeds_that_reached_it(tmp_path: Path) -> None:
    # Prepare: the baseline reaches 0.8 at 1000 s (round 40) and 1200 s (round 50); the third seed never does
    folder = _write_comparison(tmp_path, {
        (BASELINE, 0): _summary(BASELINE, [(0.8, 40, 1000.0)]),
        (BASELINE, 1): _summary(BASELINE, [(0.8, 50, 1200.0)]),
        (BASELINE, 2): _summary(BASELINE, [(0.8, None, None)]),
    })  # fmt: skip
    # Execute
    rows = aggregate_comparison(load_comparison(folder).summaries())
    # Assert: (1000 + 1200) / 2 = 1100 s, (40 + 50) / 2 = 45; 2 of 3 seeds
    cell = _row(rows, BASELINE).targets[0]
    assert cell.time_s == Spread(1100.0, 1000.0, 1200.0, 2)
    assert cell.round == Spread(45.0, 40.0, 50.0, 2)
    assert (cell.reached, cell.runs) == (2, 3)
    assert cell.speed_up == Spread(1.0, 1.0, 1.0, 2)  # against itself, on the seeds it reached


def test_speed_up_is_the_mean_of_per_seed_ratios_where_both_reached(tmp_path: Path) -> None:
    # Prepare: per seed, baseline / method = 1000/400 = 2.5, 1200/300 = 4.0; seed 2 the baseline did not reach
    folder = _write_comparison(tmp_path, {
        (BASELINE, 0): _summary(BASELINE, [(0.8, 40, 1000.0)]),
        (BASELINE, 1): _summary(BASELINE, [(0.8, 50, 1200.0)]),
        (BASELINE, 2): _summary(BASELINE, [(0.8, None, None)]),
        (PLAIN, 0): _summary(PLAIN, [(0.8, 20, 400.0)]),
        (PLAIN, 1): _summary(PLAIN, [(0.8, 15, 300.0)]),
        (PLAIN, 2): _summary(PLAIN, [(0.8, 30, 600.0)]),
    })  # fmt: skip
    # Execute
    cell = _row(aggregate_comparison(load_comparison(folder).summaries()), PLAIN).targets[0]
    # Assert: mean of the ratios (2.5 + 4.0) / 2 = 3.25, not the ratio of the means 1100 / 433.3 = 2.54
    assert cell.speed_up == Spread(3.25, 2.5, 4.0, 2)
    assert cell.time_s == Spread(pytest.approx(1300.0 / 3), 300.0, 600.0, 3)
    assert (cell.reached, cell.runs) == (3, 3)


@pytest.mark.parametrize("charged", [True, False])
def test_initial_pruning_gets_a_row_with_ip_charged_and_one_without(tmp_path: Path, charged: bool) -> None:
    # Prepare: IP cost 100 s at the client; the run's clock has it when charged. Charged times are 400 / 500 s.
    shift = 0.0 if charged else -100.0
    ip = {K_IP_COMPUTE_S: 100.0, K_IP_CHARGED: charged}
    folder = _write_comparison(tmp_path, {
        (BASELINE, 0): _summary(BASELINE, [(0.8, 40, 1000.0)], sim_s=3000.0),
        (BASELINE, 1): _summary(BASELINE, [(0.8, 50, 1200.0)], sim_s=3000.0),
        (WITH_IP, 0): _summary(WITH_IP, [(0.8, 20, 400.0 + shift)], sim_s=2000.0 + shift, ip=ip),
        (WITH_IP, 1): _summary(WITH_IP, [(0.8, 30, 500.0 + shift)], sim_s=2000.0 + shift, ip=ip),
    })  # fmt: skip
    # Execute
    rows = aggregate_comparison(load_comparison(folder).summaries())
    # Assert: charged 400/500 s (1000/400 = 2.5, 1200/500 = 2.4); not charged 300/400 s (3.333, 3.0)
    on, off = _row(rows, WITH_IP, "IP charged"), _row(rows, WITH_IP, "IP not charged")
    assert [r.method for r in rows] == [BASELINE, WITH_IP, WITH_IP]
    assert on.targets[0].time_s == Spread(450.0, 400.0, 500.0, 2)
    assert off.targets[0].time_s == Spread(350.0, 300.0, 400.0, 2)
    assert on.targets[0].round == off.targets[0].round == Spread(25.0, 20.0, 30.0, 2)  # rounds do not move
    assert on.targets[0].speed_up == Spread(pytest.approx(2.45), 2.4, 2.5, 2)
    assert off.targets[0].speed_up == Spread(pytest.approx((10 / 3 + 3.0) / 2), 3.0, pytest.approx(10 / 3), 2)
    assert (on.sim_time_s, off.sim_time_s) == (2000.0, 1900.0)
    assert "[IP charged]" in on.label and "[IP not charged]" in off.label


def test_means_prefer_the_full_test_accuracy_and_leave_failed_runs_out(tmp_path: Path) -> None:
    # Prepare: seed 0 measured the full test set (0.90 beside its subset 0.80), seed 1 did not; seed 2 failed
    folder = _write_comparison(tmp_path, {
        (BASELINE, 0): _summary(BASELINE, [(0.8, 40, 1000.0)], final=0.80, **{K_FINAL_ACCURACY_FULL: 0.90,
                                K_BYTES_UP: 1000, K_BYTES_DOWN: 3000}),
        (BASELINE, 1): _summary(BASELINE, [(0.8, 50, 1200.0)], final=0.70, **{K_BYTES_UP: 2000, K_BYTES_DOWN: 5000}),
        (BASELINE, 2): "DataError: gone",
    })  # fmt: skip
    # Execute
    row = _row(aggregate_comparison(load_comparison(folder).summaries()), BASELINE)
    # Assert: (0.90 + 0.70) / 2 = 0.80, best (0.81 + 0.71) / 2 = 0.76, bytes (1000 + 2000) / 2 and (3000 + 5000) / 2
    assert row.final_accuracy == pytest.approx(0.80)
    assert row.best_accuracy == pytest.approx(0.76)
    assert (row.bytes_up, row.bytes_down) == (1500.0, 4000.0)
    assert (row.runs, row.planned) == (2, 3)
    assert row.targets[0].runs == 2  # the failed seed is not counted as "not reached"


def test_rows_follow_the_registry_order_and_unknown_methods_come_last() -> None:
    # Prepare: given in reverse order, plus a method this version does not know
    summaries = {"zz-unknown": {0: _summary("zz-unknown", [])}, PLAIN: {0: _summary(PLAIN, [])},
                 BASELINE: {0: _summary(BASELINE, [])}}  # fmt: skip
    # Execute
    rows = aggregate_comparison(summaries)
    # Assert
    names = [spec.name for spec in all_specs()]
    assert [r.method for r in rows] == sorted([PLAIN, BASELINE], key=names.index) + ["zz-unknown"]
    assert rows[-1].label == "zz-unknown"


def test_table_prints_mean_range_round_count_and_speed_up_cells() -> None:
    # Prepare: baseline 812 s / 930 s (rounds 84 / 95) to 0.8; the other method 406 s (round 80) on seed 0 only
    summaries = {
        BASELINE: {0: _summary(BASELINE, [(0.8, 84, 812.0)]), 1: _summary(BASELINE, [(0.8, 95, 930.0)])},
        PLAIN: {0: _summary(PLAIN, [(0.8, 80, 406.0)]), 1: _summary(PLAIN, [(0.8, None, None)])},
    }
    # Execute
    text = format_comparison_table(aggregate_comparison(summaries))
    # Assert: mean (812 + 930) / 2 = 871, round (84 + 95) / 2 = 89.5; speed-up 812 / 406 = 2.00 on 1 of 2 seeds
    header, rule, *body = text.splitlines()
    assert header.split() == ["method", "seeds", "to", "0.8", "speed-up", "0.8", "final", "acc", "best", "acc",
                              "density", "bytes", "up", "bytes", "down", "sim", "time"]  # fmt: skip
    base, other = (body[0], body[1]) if body[0].startswith(_label(BASELINE)) else (body[1], body[0])
    assert "871 s (812–930), r 89.5 (84–95), 2/2" in base and "1.00×, 2/2" in base
    assert "406 s, r 80, 1/2" in other and "2.00×, 1/2" in other
    assert "0.8000" in other and "1.00 kB" in other and "500 B" in other and "2,000.0 s" in other


def test_table_without_the_baseline_has_no_speed_up_and_says_not_reached() -> None:
    # Execute
    text = format_comparison_table(aggregate_comparison({PLAIN: {0: _summary(PLAIN, [(0.8, None, None)])}}))
    # Assert
    assert "speed-up" not in text
    assert "n.r., 0/1" in text


def test_extensions_are_labelled_and_warnings_printed_beside_the_method() -> None:
    # Prepare: whichever registered methods are extensions or carry a warning (more land as methods are added)
    flagged = [spec for spec in all_specs() if spec.extension or spec.warning]
    if not flagged:
        pytest.skip("no registered method is an extension or has a warning yet")
    # Execute
    text = format_comparison_table(aggregate_comparison({s.name: {0: _summary(s.name, [])} for s in flagged}))
    # Assert
    lines = text.splitlines()
    assert (lines[0].split()[-1] == "notes") == any(s.warning for s in flagged)
    for spec in flagged:
        line = next(line for line in lines if line.startswith(spec.display_name))
        assert ("(extension)" in line) == spec.extension
        assert spec.warning in line


def test_mean_curve_interpolates_on_the_range_every_curve_covers() -> None:
    # Prepare: a rises 0 → 1 over [0, 10]; b is flat 0.5 over [5, 20]; the common range is [5, 10]
    a = (np.array([0.0, 10.0]), np.array([0.0, 1.0]))
    b = (np.array([5.0, 20.0]), np.array([0.5, 0.5]))
    # Execute
    x, mean, low, high = mean_curve([a, b])  # type: ignore[misc]
    # Assert: 200 points from 5 to 10; at 5 a is 0.5, at 10 a is 1.0, so the means are 0.5 and 0.75
    assert (len(x), x[0], x[-1]) == (200, 5.0, 10.0)
    assert (mean[0], mean[-1], low[-1], high[-1]) == (0.5, 0.75, 0.5, 1.0)


def test_mean_curve_without_a_common_range_is_none() -> None:
    early = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    late = (np.array([2.0, 3.0]), np.array([0.0, 1.0]))
    assert mean_curve([early, late]) is None
    assert mean_curve([]) is None


def test_render_writes_report_with_failures_table_config_and_plots(tmp_path: Path) -> None:
    # Prepare
    folder = _write_comparison(tmp_path, {
        (BASELINE, 0): _summary(BASELINE, [(0.8, 40, 1000.0)]),
        (BASELINE, 1): _summary(BASELINE, [(0.8, 50, 1200.0)]),
        (PLAIN, 0): _summary(PLAIN, [(0.8, 20, 400.0)]),
        (PLAIN, 1): "DataError: the data files vanished",
    })  # fmt: skip
    # Execute
    rendered = render_comparison(folder, style=SMALL)
    # Assert
    text = rendered.report.read_text()
    assert rendered.report == folder / "report.md"
    assert "- **Seeds:** 0, 1" in text and "- **Jobs:** 2 runs at a time" in text and "3 finished, 1 failed" in text
    assert f"| {PLAIN} | 1 | `{PLAIN}/seed-1` | DataError: the data files vanished |" in text
    assert "| `fl.rounds` | `4` |" in text and 'pruning.method = "x"' not in text  # method and seed vary
    assert [p.name for p in rendered.plots] == [ACCURACY_VS_TIME_SEEDS, DENSITY_VS_ROUND_SEEDS]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in rendered.plots)
    assert f"](plots/{ACCURACY_VS_TIME_SEEDS})" in text and LOTTERY_TICKET not in text
    # the same cells in both tables: (1000 + 1200) / 2 s, rounds (40 + 50) / 2; 400 s on 1 of 1 finished seed
    for cell in ["1,100 s (1,000–1,200), r 45 (40–50), 2/2", "400 s, r 20, 1/1", "2.50×, 1/1"]:
        assert f"| {cell} |" in text and cell in rendered.table


def test_lottery_figure_is_drawn_when_a_lottery_method_ran(tmp_path: Path) -> None:
    # Prepare
    lottery = next((spec.name for spec in all_specs() if spec.lottery), None)
    if lottery is None:
        pytest.skip("no registered method is marked lottery yet")
    folder = _write_comparison(tmp_path, {(BASELINE, 0): _summary(BASELINE, []), (lottery, 0): _summary(lottery, [])})
    # Execute
    rendered = render_comparison(folder, style=SMALL)
    # Assert
    assert LOTTERY_TICKET in [p.name for p in rendered.plots]


def test_manifest_round_trips_and_malformed_ones_are_rejected(tmp_path: Path) -> None:
    # Prepare
    manifest = ComparisonManifest("c.toml", [BASELINE], [3], 1, [RunRecord(BASELINE, 3, f"{BASELINE}/seed-3", RUN_OK,
                                                                           None, 2.0)], wall_s=4.0)  # fmt: skip
    manifest.write(tmp_path)
    # Execute
    back = read_manifest(tmp_path)
    # Assert
    assert back == manifest
    doc = json.loads((tmp_path / COMPARISON_FILE).read_text())
    for broken, message in [
        ({**doc, "format": "other"}, "prunefl-comparison"),  # not our file
        ({**doc, "jobs": "two"}, "'jobs' must be int"),  # wrong type
        ({**doc, "runs": [{**doc["runs"][0], "status": "done"}]}, "run status must be one of"),  # unknown status
        ({k: v for k, v in doc.items() if k != "seeds"}, "seeds"),  # missing field
    ]:
        (tmp_path / COMPARISON_FILE).write_text(json.dumps(broken))
        with pytest.raises(DataError, match=message):
            read_manifest(tmp_path)


def test_missing_manifest_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="prunefl compare"):
        read_manifest(tmp_path)


def _label(method: str) -> str:
    return next(spec.display_name for spec in all_specs() if spec.name == method)


def test_wall_time_is_summed_per_method_with_the_initial_pruning_part(tmp_path: Path) -> None:
    # Prepare: every finished run took 1.5 s (the writer's records); one run of WITH_IP gets two IP rows, the last
    # ending at 0.4 s of wall time; a failed run counts nothing
    root = _write_comparison(tmp_path, {(BASELINE, 0): _summary(BASELINE, []), (WITH_IP, 0): _summary(WITH_IP, []),
                                        (WITH_IP, 1): _summary(WITH_IP, []), (PLAIN, 0): "boom"})  # fmt: skip
    metrics = root / WITH_IP / "seed-0" / "metrics.jsonl"
    ip_rows = [{K_ROUND: i, K_STAGE: "ip", K_SIM_CLOCK_S: 0.0, K_DENSITY: 0.5, "wall-s": w, K_TEST_ACCURACY: None}
               for i, w in enumerate((0.1, 0.4))]  # fmt: skip
    metrics.write_text("".join(json.dumps(r) + "\n" for r in ip_rows) + metrics.read_text())
    # Execute
    by_method = wall_time_by_method(load_comparison(root))
    # Assert
    assert by_method == {BASELINE: (1, 1.5, 0.0), WITH_IP: (2, 3.0, 0.4)}
    assert "## Where the wall time went" in render_comparison(root, make_plots=False).report.read_text()
