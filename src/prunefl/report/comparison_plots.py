"""The figures of a comparison folder: each method's mean over seeds with a min–max band."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunefl.metrics import K_DENSITY, K_ROUND, K_SIM_CLOCK_S, K_TEST_ACCURACY
from prunefl.pruning.methods import MethodSpec, all_specs
from prunefl.report.comparison_io import ComparisonResults
from prunefl.report.comparison_table import aggregate_comparison, method_label
from prunefl.report.plots import (
    IP_END_ROUND,
    PLOTS_DIR,
    PlotStyle,
    mark_targets,
    method_colours,
    new_figure,
    round_label,
    save_figure,
    time_unit,
)
from prunefl.report.results_io import RunResults, evaluated_rows, fl_rows, plot_round, target_accuracies

__all__ = [
    "ACCURACY_VS_TIME_SEEDS",
    "DENSITY_VS_ROUND_SEEDS",
    "LOTTERY_TICKET",
    "mean_curve",
    "plot_comparison_folder",
]

logger = logging.getLogger(__name__)

ACCURACY_VS_TIME_SEEDS = "accuracy_vs_time.png"
DENSITY_VS_ROUND_SEEDS = "density_vs_round.png"
LOTTERY_TICKET = "lottery_ticket.png"
_CURVE_POINTS = 200  # grid points of the accuracy-vs-time mean curve


def mean_curve(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Average curves sampled at different x positions: interpolate each on a common grid, then mean, min, max.

    Each curve is linearly interpolated (``numpy.interp``) between its own points. The grid covers only the x
    range every curve spans — from the latest first point to the earliest last point — so no curve is
    extrapolated and every grid point averages all curves; by default it has 200 evenly spaced points.

    Parameters
    ----------
    curves : sequence of (x, y) arrays
        Each ``x`` ascending, ``(n_points,)``; curves may have different lengths.
    grid : ndarray or None
        x positions to use instead; points outside the common range are dropped (default: None).

    Returns
    -------
    (grid, mean, low, high) arrays of shape ``(n_grid,)``, or None when there is no curve or no common range.

    Examples
    --------
    >>> x, mean, low, high = mean_curve([(np.array([0.0, 10.0]), np.array([0.0, 1.0])),
    ...                                  (np.array([5.0, 20.0]), np.array([0.5, 0.5]))], grid=np.array([5.0, 10.0]))
    >>> mean.tolist(), low.tolist(), high.tolist()
    ([0.5, 0.75], [0.5, 0.5], [0.5, 1.0])
    """
    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x)]
    if not curves:
        return None
    start = max(float(x[0]) for x, _ in curves)
    end = min(float(x[-1]) for x, _ in curves)
    if start > end:
        return None
    grid = np.linspace(start, end, _CURVE_POINTS if end > start else 1) if grid is None else np.asarray(grid, float)
    grid = grid[(grid >= start) & (grid <= end)]
    if not len(grid):
        return None
    stacked = np.stack([np.interp(grid, x, y) for x, y in curves])  # (n_curves, n_grid)
    return grid, stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0)


def plot_comparison_folder(comparison: ComparisonResults, out_dir: str | os.PathLike[str] | None = None, *,
                           style: PlotStyle | None = None) -> list[Path]:  # fmt: skip
    """Draw a comparison's figures, each method's mean over seeds with a min–max band.

    Writes into ``out_dir`` (created; files overwritten), skipping a figure with nothing to draw:

    - ``accuracy_vs_time.png``: test accuracy against simulated time. Each seed's evaluations are linearly
      interpolated onto a grid of 200 times spanning the range every seed of the method covers (from the
      latest first evaluation to the earliest last one, :func:`mean_curve`), then averaged. Runs are drawn
      on their own clocks (IP charged or not as configured).
    - ``density_vs_round.png``: density after each round, IP rounds at negative indices as in the run plots
      (:func:`~prunefl.report.results_io.plot_round`); where seeds ran different numbers of IP rounds, an IP
      round's mean is over the seeds that have it.
    - ``lottery_ticket.png``: test accuracy against round of the baseline and the methods marked
      ``MethodSpec.lottery`` (spec §11.5), at the rounds every seed evaluated; drawn only when such a method ran.

    Parameters
    ----------
    comparison : ComparisonResults
        From :func:`~prunefl.report.comparison_io.load_comparison`.
    out_dir : path-like or None
        Where the PNGs go (default: ``<comparison folder>/plots``).
    style : PlotStyle or None
        Figure size and resolution (default: ``PlotStyle()``).

    Returns
    -------
    list of pathlib.Path
        The files written, in the order above.
    """
    style = style or PlotStyle()
    out = Path(out_dir) if out_dir is not None else comparison.out_dir / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    specs = {spec.name: spec for spec in all_specs()}
    by_method: dict[str, list[RunResults]] = {}
    for row in aggregate_comparison(comparison.summaries()):
        runs = [run for (m, _), run in sorted(comparison.runs.items()) if m == row.method]
        if runs:
            by_method.setdefault(row.method, runs)
    colours = dict(zip(by_method, method_colours(list(by_method)), strict=True))
    targets = target_accuracies(run.summary for run in comparison.runs.values())
    paths = []

    # --- (a) accuracy against simulated time ---
    acc_time = {
        m: mean_curve([(np.array([r[K_SIM_CLOCK_S] for r in ev]), np.array([r[K_TEST_ACCURACY] for r in ev]))
                       for ev in (evaluated_rows(fl_rows(run.rows)) for run in runs)])
        for m, runs in by_method.items()
    }  # fmt: skip
    drawn = {m: c for m, c in acc_time.items() if c is not None}
    if drawn:
        unit, per_unit = time_unit(max(float(c[0][-1]) for c in drawn.values()))
        fig, ax = new_figure(style)
        for m, (x, mean, low, high) in drawn.items():
            _band(ax, x / per_unit, mean, low, high, colours[m], _legend(m, specs, len(by_method[m])))
        mark_targets(ax, targets)
        ax.set(title="Test accuracy vs simulated time (mean over seeds, band: min–max)",
               xlabel=f"Simulated time ({unit})", ylabel="Test accuracy")  # fmt: skip
        paths.append(save_figure(fig, ax, out / ACCURACY_VS_TIME_SEEDS, legend_loc="lower right"))

    # --- (b) density against round, IP at negative rounds ---
    if by_method:
        fig, ax = new_figure(style)
        any_ip = False
        for m, runs in by_method.items():
            x, values = _aligned(
                [(np.array(plot_round(run.rows), float), np.array([r[K_DENSITY] for r in run.rows], float))
                 for run in runs]
            )  # fmt: skip
            any_ip = any_ip or bool(len(x) and x[0] < 0)
            with np.errstate(all="ignore"):  # an all-NaN column cannot happen: every x comes from some seed
                _band(ax, x, np.nanmean(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                      colours[m], _legend(m, specs, len(runs)), steps=True)  # fmt: skip
        if any_ip:
            ax.axvline(IP_END_ROUND, color="0.4", ls="--", lw=1.0, label="end of IP")
        ax.set_ylim(0.0, 1.05)
        ax.set(title="Model size vs round (mean over seeds, band: min–max)", xlabel=round_label(any_ip),
               ylabel="Density (fraction of prunable weights kept)")  # fmt: skip
        paths.append(save_figure(fig, ax, out / DENSITY_VS_ROUND_SEEDS, legend_loc="best"))

    # --- (c) lottery ticket: baseline and lottery methods, accuracy against round ---
    lottery = [m for m in by_method if m in specs and (specs[m].lottery or specs[m].baseline)]
    if any(specs[m].lottery for m in lottery):
        fig, ax = new_figure(style)
        for m in lottery:
            x, values = _aligned(
                [(np.array([r[K_ROUND] for r in ev], float), np.array([r[K_TEST_ACCURACY] for r in ev], float))
                 for ev in (evaluated_rows(fl_rows(run.rows)) for run in by_method[m])]
            )  # fmt: skip
            every_seed = ~np.isnan(values).any(axis=0)
            if every_seed.any():
                v = values[:, every_seed]
                _band(ax, x[every_seed], v.mean(axis=0), v.min(axis=0), v.max(axis=0), colours[m],
                      _legend(m, specs, len(by_method[m])))  # fmt: skip
        mark_targets(ax, targets)
        ax.set(title="Lottery ticket: test accuracy vs round (mean over seeds, band: min–max)", xlabel="Round",
               ylabel="Test accuracy")  # fmt: skip
        paths.append(save_figure(fig, ax, out / LOTTERY_TICKET, legend_loc="lower right"))
    logger.debug("wrote %d comparison plots to %s", len(paths), out)
    return paths


def _legend(method: str, specs: Mapping[str, MethodSpec], n_seeds: int) -> str:
    return f"{method_label(method, specs.get(method))} ({n_seeds} seed{'s' if n_seeds != 1 else ''})"


def _band(ax: Any, x: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray, colour: str, label: str,
          *, steps: bool = False) -> None:  # fmt: skip
    step: dict[str, Any] = {"drawstyle": "steps-post"} if steps else {}
    ax.plot(x, mean, color=colour, lw=1.4, label=label, **step)
    ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0, **({"step": "post"} if steps else {}))


def _aligned(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Put curves with integer-like x on the union of their x: ``(x (n_x,), values (n_curves, n_x))``, NaN where a
    curve has no point."""
    x = np.unique(np.concatenate([cx for cx, _ in curves])) if curves else np.zeros(0)
    values = np.full((len(curves), len(x)), np.nan)
    for i, (cx, cy) in enumerate(curves):
        values[i, np.searchsorted(x, cx)] = cy
    return x, values
