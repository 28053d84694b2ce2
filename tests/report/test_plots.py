"""Tests for prunefl.report.plots: PNG files of one run and of several runs compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from prunefl.errors import ConfigError
from prunefl.metrics import (
    K_BYTES_DOWN,
    K_BYTES_UP,
    K_DENSITY,
    K_LAYER_DENSITY,
    K_METHOD,
    K_RECONFIG,
    K_ROUND,
    K_SIM_CLOCK_S,
    K_STAGE,
    K_TARGET_ACCURACY,
    K_TARGETS,
    K_TEST_ACCURACY,
)
from prunefl.report.plots import PlotStyle, method_colours, plot_comparison, plot_run, time_unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = PlotStyle(width_in=4.0, height_in=3.0, dpi=50)  # 200×150 px: fast, still draws every element


def _write_run(run_dir: Path, method: str, *, with_ip: bool, round_sim_s: float = 10.0) -> Path:
    """30 FL rounds evaluated every 5th; with IP: 3 IP rounds first and reconfigurations."""
    rows = []
    if with_ip:
        for r, density in enumerate([0.7, 0.5, 0.3]):
            rows.append({K_ROUND: r, K_STAGE: "ip", K_SIM_CLOCK_S: 0.0, K_DENSITY: density,
                         K_LAYER_DENSITY: {"conv1.weight": density, "fc1.weight": density},
                         K_BYTES_UP: 0, K_BYTES_DOWN: 0, K_TEST_ACCURACY: None,
                         K_RECONFIG: {"removed": {"fc1.weight": 20}, "added": {}}})  # fmt: skip
    for r in range(30):
        rows.append({K_ROUND: r, K_STAGE: "fl", K_SIM_CLOCK_S: round_sim_s * (r + 1),
                     K_DENSITY: 0.3 if with_ip else 1.0,
                     K_LAYER_DENSITY: {"conv1.weight": 0.6, "fc1.weight": 0.2} if with_ip else {"fc1.weight": 1.0},
                     K_BYTES_UP: 1000, K_BYTES_DOWN: 2000,
                     K_TEST_ACCURACY: 0.5 + 0.01 * (r + 1) if r % 5 == 4 else None,
                     K_RECONFIG: {"removed": {"fc1.weight": 3}, "added": {"fc1.weight": 3}}
                     if with_ip and r % 10 == 9 else None})  # fmt: skip
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = {K_METHOD: method, K_TARGETS: [{K_TARGET_ACCURACY: 0.6}, {K_TARGET_ACCURACY: 0.85}]}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def _assert_png(path: Path, size_px: tuple[int, int]) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 2000  # a blank 200×150 PNG is a few hundred bytes; axes, text and lines add more
    with Image.open(path) as image:
        assert image.size == size_px


@pytest.mark.parametrize("with_ip", [True, False])
def test_plot_run_writes_four_pngs_of_configured_size(tmp_path: Path, with_ip: bool) -> None:
    # Prepare
    run_dir = _write_run(tmp_path / "run", "prunefl" if with_ip else "fedavg", with_ip=with_ip)

    # Execute
    paths = plot_run(run_dir, tmp_path / "out", style=SMALL)

    # Assert
    assert [p.name for p in paths] == [
        "accuracy_vs_time.png", "accuracy_vs_round.png", "density_vs_time.png", "bytes_vs_round.png"
    ]  # fmt: skip
    for path in paths:
        assert path.parent == tmp_path / "out"
        _assert_png(path, (200, 150))


def test_plot_run_default_writes_paper_size_into_run_plots_folder(tmp_path: Path) -> None:
    # Prepare
    run_dir = _write_run(tmp_path / "run", "prunefl", with_ip=True)

    # Execute
    paths = plot_run(run_dir)

    # Assert: 6.4×4.8 in at 300 dpi, the paper's 1920×1440 px (spec §11.5)
    assert {p.parent for p in paths} == {run_dir / "plots"}
    _assert_png(paths[0], (1920, 1440))


def test_plot_run_without_any_evaluation_still_writes_every_plot(tmp_path: Path) -> None:
    # Prepare: strip every evaluation and the optional keys
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [{K_ROUND: r, K_SIM_CLOCK_S: 5.0 * (r + 1), K_DENSITY: 1.0} for r in range(4)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run_dir / "summary.json").write_text(json.dumps({K_METHOD: "fedavg"}))

    # Execute
    paths = plot_run(run_dir, style=SMALL)

    # Assert
    assert len(paths) == 4
    for path in paths:
        _assert_png(path, (200, 150))


def test_plot_comparison_writes_three_overlays(tmp_path: Path) -> None:
    # Prepare
    runs = [
        _write_run(tmp_path / "fedavg", "fedavg", with_ip=False),
        _write_run(tmp_path / "prunefl", "prunefl", with_ip=True, round_sim_s=5.0),
        _write_run(tmp_path / "prunefl-seed1", "prunefl", with_ip=True, round_sim_s=6.0),
    ]

    # Execute
    paths = plot_comparison(runs, tmp_path / "cmp", style=SMALL)

    # Assert
    assert [p.name for p in paths] == ["accuracy_vs_time.png", "accuracy_vs_round.png", "density_vs_time.png"]
    for path in paths:
        _assert_png(path, (200, 150))


@pytest.mark.parametrize(
    ("runs", "labels", "match"),
    [
        ([], None, "at least one run"),  # nothing to compare
        (["a"], ["x", "y"], "one label per run"),  # more labels than runs
    ],
)
def test_plot_comparison_bad_arguments_raise_value_error(
    tmp_path: Path, runs: list[str], labels: list[str] | None, match: str
) -> None:
    # Prepare
    run_dirs = [_write_run(tmp_path / name, "fedavg", with_ip=False) for name in runs]

    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        plot_comparison(run_dirs, tmp_path / "cmp", labels, style=SMALL)


def test_method_colours_follow_paper_and_cycle_unknown_methods() -> None:
    # Prepare: registered methods, and two unregistered ones (one repeated)
    methods = ["fedavg", "prunefl", "mine", "other", "mine"]

    # Execute
    colours = method_colours(methods)

    # Assert
    assert colours == ["C0", "C1", "tab:olive", "tab:cyan", "tab:olive"]


@pytest.mark.parametrize(
    ("max_s", "expected"),
    [
        (0.0, ("s", 1.0)),  # empty run
        (119.9, ("s", 1.0)),  # just under two minutes
        (120.0, ("min", 60.0)),
        (7199.0, ("min", 60.0)),
        (7200.0, ("h", 3600.0)),
        (2.5e6, ("h", 3600.0)),  # ImageNet-100 window, spec §11.2
    ],
)
def test_time_unit_switches_at_two_minutes_and_two_hours(max_s: float, expected: tuple[str, float]) -> None:
    # Execute / Assert
    assert time_unit(max_s) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width_in": 0.0},  # no width
        {"height_in": -1.0},  # negative height
        {"dpi": 0},  # no resolution
    ],
)
def test_plot_style_non_positive_field_raises_config_error(kwargs: dict) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match="must be > 0"):
        PlotStyle(**kwargs)
