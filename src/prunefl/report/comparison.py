"""The report of a comparison folder (``prunefl compare``): per-method aggregates over seeds, as a table and plots.

A comparison folder holds ``comparison.json`` (the manifest: which methods and seeds ran, and how each run ended),
the resolved base ``config.toml``, and one ordinary run folder per method and seed, ``<method>/seed-<s>/``.
Everything here is recomputed from those files, so ``prunefl report DIR`` prints the table ``prunefl compare``
printed, without training again.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

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
    K_ROUND,
    K_SIM_CLOCK_S,
    K_TARGET_ACCURACY,
    K_TARGETS,
    K_TEST_ACCURACY,
)
from prunefl.pruning.methods import MethodSpec, all_specs
from prunefl.report.markdown import (
    REPORT_FILE,
    _config_lines,
    _fmt_accuracy,
    _fmt_bytes,
    _fmt_density,
    _fmt_seconds,
    _table,
)
from prunefl.report.plots import (
    _IP_END_ROUND,
    PLOTS_DIR,
    PlotStyle,
    _mark_targets,
    _new_figure,
    _round_label,
    _save,
    method_colours,
    time_unit,
)
from prunefl.report.results_io import (
    CONFIG_FILE,
    RunResults,
    evaluated_rows,
    fl_rows,
    load_run,
    plot_round,
    read_config,
)

__all__ = [
    "COMPARISON_FILE",
    "RUN_OK",
    "RUN_FAILED",
    "RUN_PENDING",
    "ACCURACY_VS_TIME_SEEDS",
    "DENSITY_VS_ROUND_SEEDS",
    "LOTTERY_TICKET",
    "RunRecord",
    "ComparisonManifest",
    "ComparisonResults",
    "Spread",
    "TargetCell",
    "MethodRow",
    "read_manifest",
    "load_comparison",
    "aggregate_comparison",
    "format_comparison_table",
    "mean_curve",
    "plot_comparison_folder",
    "render_comparison",
    "RenderedComparison",
]

logger = logging.getLogger(__name__)

COMPARISON_FILE = "comparison.json"
RUN_OK = "ok"
RUN_FAILED = "failed"
RUN_PENDING = "pending"  # not finished: still queued or running, or the comparison was interrupted
_STATUSES = (RUN_OK, RUN_FAILED, RUN_PENDING)

ACCURACY_VS_TIME_SEEDS = "accuracy_vs_time.png"
DENSITY_VS_ROUND_SEEDS = "density_vs_round.png"
LOTTERY_TICKET = "lottery_ticket.png"
_PLOT_CAPTIONS = {
    ACCURACY_VS_TIME_SEEDS: "Test accuracy vs simulated time (mean over seeds, band: min–max)",
    DENSITY_VS_ROUND_SEEDS: "Model size (density) vs round (mean over seeds, band: min–max)",
    LOTTERY_TICKET: "Lottery ticket: test accuracy vs round (mean over seeds, band: min–max)",
}

# comparison.json keys (kebab-case, as every results file)
_FORMAT = "prunefl-comparison"
_K_FORMAT = "format"
_K_VERSION = "version"
_K_CONFIG = "config"
_K_METHODS = "methods"
_K_SEEDS = "seeds"
_K_JOBS = "jobs"
_K_WALL_S = "wall-s"
_K_CREATED = "created"
_K_RUNS = "runs"
_K_METHOD = "method"
_K_SEED = "seed"
_K_RUN_DIR = "run-dir"
_K_STATUS = "status"
_K_ERROR = "error"
_K_REFERENCE = "reference"

_MISSING = "—"
_NOT_REACHED = "n.r."
_CLOCK_CHARGED = "IP charged"
_CLOCK_NOT_CHARGED = "IP not charged"
_CURVE_POINTS = 200  # grid points of the accuracy-vs-time mean curve


@dataclass(frozen=True)
class RunRecord:
    """One (method, seed) run of a comparison, as the manifest records it.

    Parameters
    ----------
    method : str
        Registered method name.
    seed : int
        The run's ``seed``.
    run_dir : str
        The run folder, relative to the comparison folder (``<method>/seed-<s>``).
    status : {"ok", "failed", "pending"}
        Finished, failed, or not finished (default: "pending").
    error : str or None
        Why the run failed (default: None).
    wall_s : float or None
        Real seconds the run took (default: None).
    reference : str or None
        The reference run folder the run took its density, mask or initial weights from, relative to the
        comparison folder; None when it used none or the config's ``[reference]`` (default: None).
    """

    method: str
    seed: int
    run_dir: str
    status: str = RUN_PENDING
    error: str | None = None
    wall_s: float | None = None
    reference: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object with kebab-case keys."""
        return {
            _K_METHOD: self.method, _K_SEED: self.seed, _K_RUN_DIR: self.run_dir, _K_STATUS: self.status,
            _K_ERROR: self.error, _K_WALL_S: self.wall_s, _K_REFERENCE: self.reference,
        }  # fmt: skip


@dataclass(frozen=True)
class ComparisonManifest:
    """What a comparison ran and how each run ended (``comparison.json``).

    Parameters
    ----------
    config : str or None
        The config file or preset the comparison was started from, as given; None from the Python API without one.
    methods : list of str
        Methods, in the order given.
    seeds : list of int
        Seeds, in the order given.
    jobs : int
        Runs at a time.
    runs : list of RunRecord
        One per (method, seed).
    wall_s : float or None
        Real seconds the whole comparison took; None while it runs (default: None).
    created : str
        UTC time the comparison started, ISO 8601 (default: now).
    """

    config: str | None
    methods: list[str]
    seeds: list[int]
    jobs: int
    runs: list[RunRecord]
    wall_s: float | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def failed(self) -> list[RunRecord]:
        """Runs that failed."""
        return [r for r in self.runs if r.status == RUN_FAILED]

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object with kebab-case keys."""
        return {
            _K_FORMAT: _FORMAT, _K_VERSION: 1, _K_CREATED: self.created, _K_CONFIG: self.config,
            _K_METHODS: list(self.methods), _K_SEEDS: list(self.seeds), _K_JOBS: self.jobs, _K_WALL_S: self.wall_s,
            _K_RUNS: [r.to_json() for r in self.runs],
        }  # fmt: skip

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``<out_dir>/comparison.json`` (overwriting it, via a temporary file so a reader never sees half)."""
        path = Path(out_dir) / COMPARISON_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


@dataclass(frozen=True)
class ComparisonResults:
    """A comparison folder read back: the manifest, the resolved base config and every finished run.

    Parameters
    ----------
    out_dir : pathlib.Path
        The comparison folder.
    manifest : ComparisonManifest
    config : dict
        The resolved base config (``config.toml``); empty when the folder has none.
    runs : dict
        ``{(method, seed): RunResults}`` of the runs whose status is "ok".
    """

    out_dir: Path
    manifest: ComparisonManifest
    config: dict[str, Any]
    runs: dict[tuple[str, int], RunResults]

    def summaries(self) -> dict[str, dict[int, dict[str, Any] | None]]:
        """``{method: {seed: summary, or None where the run did not finish}}``, the input of
        :func:`aggregate_comparison`."""
        out: dict[str, dict[int, dict[str, Any] | None]] = {m: {} for m in self.manifest.methods}
        for record in self.manifest.runs:
            run = self.runs.get((record.method, record.seed))
            out.setdefault(record.method, {})[record.seed] = None if run is None else run.summary
        return out


@dataclass(frozen=True)
class Spread:
    """Mean, smallest and largest value of one quantity over the seeds that have it, and how many do."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """The spread of ``values``; None when there are none.

        >>> Spread.of([812.0, 930.0, 883.0])
        Spread(mean=875.0, low=812.0, high=930.0, n=3)
        """
        if not values:
            return None
        return cls(float(np.mean(values)), float(min(values)), float(max(values)), len(values))


@dataclass(frozen=True)
class TargetCell:
    """Time to one target accuracy of one method, over seeds.

    Parameters
    ----------
    target : float
        The target accuracy.
    time_s : Spread or None
        Simulated time of the first evaluation at or above the target, over the seeds that reached it.
    round : Spread or None
        That evaluation's round.
    reached : int
        Seeds that reached the target.
    runs : int
        Finished runs of the method (the denominator of ``reached``).
    speed_up : Spread or None
        Baseline time / this method's time, per seed where both reached the target; None without such seeds.
    """

    target: float
    time_s: Spread | None
    round: Spread | None
    reached: int
    runs: int
    speed_up: Spread | None


@dataclass(frozen=True)
class MethodRow:
    """One row of the comparison table: a method (for initial pruning, one row per IP clock) over its seeds.

    Parameters
    ----------
    method : str
        Registered method name.
    label : str
        Name in the table: display name, "(extension)" where the spec says so, and the IP clock if any.
    clock : str
        "" (the run's own clock), "IP charged" or "IP not charged".
    extension : bool
        Not in the official PruneFL code (``MethodSpec.extension``).
    warning : str
        The method's caveat (``MethodSpec.warning``), printed beside it.
    runs, planned : int
        Finished runs aggregated here, and runs the comparison planned for the method.
    targets : tuple of TargetCell
        One per target accuracy, ascending.
    final_accuracy, best_accuracy, final_density, bytes_up, bytes_down, sim_time_s : float or None
        Means over the finished runs (final accuracy on the full test set where the run measured it).
    """

    method: str
    label: str
    clock: str
    extension: bool
    warning: str
    runs: int
    planned: int
    targets: tuple[TargetCell, ...]
    final_accuracy: float | None
    best_accuracy: float | None
    final_density: float | None
    bytes_up: float | None
    bytes_down: float | None
    sim_time_s: float | None


@dataclass(frozen=True)
class RenderedComparison:
    """What :func:`render_comparison` wrote, and the plain-text table."""

    report: Path
    plots: list[Path]
    table: str


def read_manifest(path: str | os.PathLike[str]) -> ComparisonManifest:
    """Read and check a ``comparison.json`` (or the folder holding it).

    Raises
    ------
    DataError
        The file is missing, not JSON, or lacks a field or has one of the wrong type (the message names it).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = ComparisonManifest("cfg.toml", ["fedavg"], [0], 1, [RunRecord("fedavg", 0, "fedavg/seed-0")]).write(d)
    ...     read_manifest(d).runs[0].status
    'pending'
    """
    file = Path(path)
    if file.is_dir():
        file = file / COMPARISON_FILE
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{file}: not found; expected a comparison folder written by `prunefl compare`") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: expected a JSON comparison manifest, got unreadable content ({exc})") from exc
    if not isinstance(doc, dict) or doc.get(_K_FORMAT) != _FORMAT:
        raise DataError(f"{file}: expected a JSON object with {_K_FORMAT!r} = {_FORMAT!r}")
    try:
        runs = [
            RunRecord(
                method=_typed(r, _K_METHOD, str), seed=_typed(r, _K_SEED, int), run_dir=_typed(r, _K_RUN_DIR, str),
                status=_typed(r, _K_STATUS, str), error=_typed(r, _K_ERROR, str, optional=True),
                wall_s=_typed(r, _K_WALL_S, float, optional=True),
                reference=_typed(r, _K_REFERENCE, str, optional=True),
            )  # fmt: skip
            for r in _typed(doc, _K_RUNS, list)
        ]
        manifest = ComparisonManifest(
            config=_typed(doc, _K_CONFIG, str, optional=True),
            methods=[str(m) for m in _typed(doc, _K_METHODS, list)],
            seeds=[int(s) for s in _typed(doc, _K_SEEDS, list)],
            jobs=_typed(doc, _K_JOBS, int),
            runs=runs,
            wall_s=_typed(doc, _K_WALL_S, float, optional=True),
            created=_typed(doc, _K_CREATED, str),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{file}: malformed comparison manifest: {exc}") from exc
    bad = [r.status for r in runs if r.status not in _STATUSES]
    if bad:
        raise DataError(f"{file}: run status must be one of {list(_STATUSES)}, got {bad[0]!r}")
    return manifest


def load_comparison(out_dir: str | os.PathLike[str]) -> ComparisonResults:
    """Read a comparison folder: manifest, base config, and the results of every finished run.

    Raises
    ------
    DataError
        The manifest cannot be read, or a run it lists as finished has an unreadable folder.
    """
    out = Path(out_dir)
    manifest = read_manifest(out)
    config = read_config(out) if (out / CONFIG_FILE).is_file() else {}
    runs = {(r.method, r.seed): load_run(out / r.run_dir) for r in manifest.runs if r.status == RUN_OK}
    return ComparisonResults(out_dir=out, manifest=manifest, config=config, runs=runs)


def aggregate_comparison(summaries: Mapping[str, Mapping[int, Mapping[str, Any] | None]]) -> list[MethodRow]:
    """Aggregate each method's run summaries over seeds into table rows.

    Rows follow the registry order (unregistered methods last, in the given order). Times to target are the
    run summaries' own (first evaluation at or above the target); mean, min and max are over the seeds that
    reached it. The speed-up is the baseline method's (``MethodSpec.baseline``) time divided by this method's,
    per seed where both reached the target, then averaged over those seeds. Accuracies, density, bytes and
    total simulated time are means over the finished runs; the final accuracy is the full-test-set one where
    the run measured it (``final-accuracy-full-test``).

    A method with initial pruning (``MethodSpec.initial_pruning``, summary ``ip``) gets two rows: IP compute
    charged to the clock and not charged. The run has one of them on its clock; since IP happens before round 0,
    the other shifts every time by ± ``ip.sim-compute-s``.

    Parameters
    ----------
    summaries : mapping
        ``{method: {seed: summary.json contents, or None where the run did not finish}}``.

    Returns
    -------
    list of MethodRow

    Examples
    --------
    >>> def run(t_s, acc):
    ...     return {"targets": [{"target-accuracy": 0.8, "round": 9, "sim-clock-s": t_s}], "final-accuracy": acc}
    >>> rows = aggregate_comparison({"fedavg": {0: run(100.0, 0.75), 1: run(300.0, 0.25)},
    ...                              "prunefl-no-ip": {0: run(50.0, 0.5), 1: run(100.0, None)}})
    >>> [(r.method, r.targets[0].speed_up.mean, r.final_accuracy) for r in rows]
    [('fedavg', 1.0, 0.5), ('prunefl-no-ip', 2.5, 0.5)]
    """
    specs = {spec.name: spec for spec in all_specs()}
    order = {name: i for i, name in enumerate(specs)}
    methods = sorted(summaries, key=lambda m: (order.get(m, len(order)), list(summaries).index(m)))
    targets = sorted({float(t[K_TARGET_ACCURACY]) for per_seed in summaries.values() for s in per_seed.values()
                      if s is not None for t in s.get(K_TARGETS) or []})  # fmt: skip
    baseline = next((m for m in methods if m in specs and specs[m].baseline), None)
    baseline_times = (
        {seed: _target_times(s, targets, 0.0) for seed, s in summaries[baseline].items() if s is not None}
        if baseline is not None else {}
    )  # fmt: skip
    rows = []
    for method in methods:
        spec = specs.get(method)
        finished = {seed: s for seed, s in summaries[method].items() if s is not None}
        has_ip = (spec is not None and spec.initial_pruning
                  and any(_ip_compute_s(s) is not None for s in finished.values()))  # fmt: skip
        for clock in (_CLOCK_CHARGED, _CLOCK_NOT_CHARGED) if has_ip else ("",):
            shifts = {seed: _clock_shift_s(s, clock) for seed, s in finished.items()}
            rows.append(_method_row(method, spec, clock, finished, len(summaries[method]), shifts, targets,
                                    baseline_times if baseline is not None else None))  # fmt: skip
    return rows


def format_comparison_table(rows: Sequence[MethodRow]) -> str:
    """Format aggregated rows as a plain-text table with aligned columns (the stdout twin of report.md's).

    A time-to-target cell reads ``875 s (812–930), r 89 (84–95), 3/3``: mean simulated time (min–max),
    mean round (min–max), seeds that reached the target / finished runs; ``n.r.`` where none did. A speed-up
    cell is the mean of the per-seed ratios (min–max) and how many seeds both reached the target.

    Examples
    --------
    >>> def run(t_s, r):
    ...     return {"targets": [{"target-accuracy": 0.8, "round": r, "sim-clock-s": t_s}], "final-accuracy": 0.8}
    >>> print(format_comparison_table(aggregate_comparison({"fedavg": {0: run(812.0, 84), 1: run(930.0, 95)},
    ...                                                     "prunefl-no-ip": {0: run(406.0, 80), 1: None}})))
    method           seeds                                to 0.8  speed-up 0.8  final acc  best acc  density  bytes up  bytes down  sim time
    ---------------  -----  ------------------------------------  ------------  ---------  --------  -------  --------  ----------  --------
    Conventional FL      2  871 s (812–930), r 89.5 (84–95), 2/2    1.00×, 2/2     0.8000         —        —         —           —         —
    PruneFL (no IP)    1/2                      406 s, r 80, 1/1    2.00×, 1/1     0.8000         —        —         —           —         —
    """
    header, body = _cells(rows)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    left = {0, len(header) - 1} if header[-1] == "notes" else {0}  # names and notes left-aligned, numbers right
    lines = [
        "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True)))  # fmt: skip
        for row in [header, ["-" * w for w in widths], *body]
    ]
    return "\n".join(line.rstrip() for line in lines)


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
        From :func:`load_comparison`.
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
    targets = sorted({float(t[K_TARGET_ACCURACY]) for run in comparison.runs.values()
                      for t in run.summary.get(K_TARGETS) or []})  # fmt: skip
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
        fig, ax = _new_figure(style)
        for m, (x, mean, low, high) in drawn.items():
            _band(ax, x / per_unit, mean, low, high, colours[m], _legend(m, specs, len(by_method[m])))
        _mark_targets(ax, targets)
        ax.set(title="Test accuracy vs simulated time (mean over seeds, band: min–max)",
               xlabel=f"Simulated time ({unit})", ylabel="Test accuracy")  # fmt: skip
        paths.append(_save(fig, ax, out / ACCURACY_VS_TIME_SEEDS, legend_loc="lower right"))

    # --- (b) density against round, IP at negative rounds ---
    if by_method:
        fig, ax = _new_figure(style)
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
            ax.axvline(_IP_END_ROUND, color="0.4", ls="--", lw=1.0, label="end of IP")
        ax.set_ylim(0.0, 1.05)
        ax.set(title="Model size vs round (mean over seeds, band: min–max)", xlabel=_round_label(any_ip),
               ylabel="Density (fraction of prunable weights kept)")  # fmt: skip
        paths.append(_save(fig, ax, out / DENSITY_VS_ROUND_SEEDS, legend_loc="best"))

    # --- (c) lottery ticket: baseline and lottery methods, accuracy against round ---
    lottery = [m for m in by_method if m in specs and (specs[m].lottery or specs[m].baseline)]
    if any(specs[m].lottery for m in lottery):
        fig, ax = _new_figure(style)
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
        _mark_targets(ax, targets)
        ax.set(title="Lottery ticket: test accuracy vs round (mean over seeds, band: min–max)", xlabel="Round",
               ylabel="Test accuracy")  # fmt: skip
        paths.append(_save(fig, ax, out / LOTTERY_TICKET, legend_loc="lower right"))
    logger.debug("wrote %d comparison plots to %s", len(paths), out)
    return paths


def render_comparison(
    out_dir: str | os.PathLike[str], *, make_plots: bool = True, style: PlotStyle | None = None
) -> RenderedComparison:
    """Write a comparison folder's ``report.md`` (and plots) from its saved results, without training.

    Writes ``<out_dir>/report.md`` (overwriting it) with the comparison's seeds, jobs, wall time and failed runs
    with their errors, the aggregate table of :func:`aggregate_comparison`, the base config's key settings and
    the plots of :func:`plot_comparison_folder` (drawn into ``<out_dir>/plots`` with ``make_plots``).

    Parameters
    ----------
    out_dir : path-like
        The comparison folder (holding ``comparison.json``).
    make_plots : bool
        Draw the plots first (default: True; False embeds whatever is in ``<out_dir>/plots``).
    style : PlotStyle or None
        Figure size and resolution (default: ``PlotStyle()``).

    Returns
    -------
    RenderedComparison
        The report path, the plots written, and the plain-text table (:func:`format_comparison_table`).

    Raises
    ------
    DataError
        The manifest or a finished run's folder cannot be read.
    """
    comparison = load_comparison(out_dir)
    rows = aggregate_comparison(comparison.summaries())
    plots = plot_comparison_folder(comparison, style=style) if make_plots else []
    path = comparison.out_dir / REPORT_FILE
    path.write_text("\n".join(_report_lines(comparison, rows)) + "\n", encoding="utf-8")
    logger.debug("wrote %s", path)
    return RenderedComparison(report=path, plots=plots, table=format_comparison_table(rows))


# --------------------------------------------------------------------------------------------- helpers


def _method_row(
    method: str,
    spec: MethodSpec | None,
    clock: str,
    finished: Mapping[int, Mapping[str, Any]],
    planned: int,
    shifts: Mapping[int, float],
    targets: Sequence[float],
    baseline_times: Mapping[int, dict[float, float | None]] | None,
) -> MethodRow:
    times = {seed: _target_times(s, targets, shifts[seed]) for seed, s in finished.items()}
    rounds = {seed: _target_rounds(s, targets) for seed, s in finished.items()}
    cells = []
    for target in targets:
        reached = [seed for seed in finished if times[seed][target] is not None]
        speed_up = None
        if baseline_times is not None:
            ratios = []
            for seed in reached:
                base_s, own_s = baseline_times.get(seed, {}).get(target), times[seed][target]
                if base_s is not None and own_s is not None and own_s > 0:  # at 0 s there is no finite ratio
                    ratios.append(base_s / own_s)
            speed_up = Spread.of(ratios)
        cells.append(TargetCell(
            target=target,
            time_s=Spread.of([t for seed in reached if (t := times[seed][target]) is not None]),
            round=Spread.of([float(r) for seed in reached if (r := rounds[seed][target]) is not None]),
            reached=len(reached),
            runs=len(finished),
            speed_up=speed_up,
        ))  # fmt: skip
    label = method if spec is None else spec.display_name
    if spec is not None and spec.extension:
        label += " (extension)"
    if clock:
        label += f" [{clock}]"
    sim_times = [float(s[K_SIM_CLOCK_S]) + shifts[seed] for seed, s in finished.items()
                 if s.get(K_SIM_CLOCK_S) is not None]  # fmt: skip
    return MethodRow(
        method=method,
        label=label,
        clock=clock,
        extension=spec is not None and spec.extension,
        warning="" if spec is None else spec.warning,
        runs=len(finished),
        planned=planned,
        targets=tuple(cells),
        final_accuracy=_mean([_final_accuracy(s) for s in finished.values()]),
        best_accuracy=_mean([s.get(K_BEST_ACCURACY) for s in finished.values()]),
        final_density=_mean([s.get(K_FINAL_DENSITY) for s in finished.values()]),
        bytes_up=_mean([s.get(K_BYTES_UP) for s in finished.values()]),
        bytes_down=_mean([s.get(K_BYTES_DOWN) for s in finished.values()]),
        sim_time_s=_mean(sim_times),
    )


def _target_times(summary: Mapping[str, Any], targets: Sequence[float], shift_s: float) -> dict[float, float | None]:
    entries = {float(t[K_TARGET_ACCURACY]): t for t in summary.get(K_TARGETS) or []}
    out: dict[float, float | None] = {}
    for target in targets:
        t = entries.get(target, {}).get(K_SIM_CLOCK_S)
        out[target] = None if t is None else float(t) + shift_s
    return out


def _target_rounds(summary: Mapping[str, Any], targets: Sequence[float]) -> dict[float, int | None]:
    entries = {float(t[K_TARGET_ACCURACY]): t for t in summary.get(K_TARGETS) or []}
    return {target: entries.get(target, {}).get(K_ROUND) for target in targets}


def _ip_compute_s(summary: Mapping[str, Any]) -> float | None:
    ip = summary.get(K_IP)
    if not isinstance(ip, Mapping) or ip.get(K_IP_COMPUTE_S) is None or ip.get(K_IP_CHARGED) is None:
        return None
    return float(ip[K_IP_COMPUTE_S])


def _clock_shift_s(summary: Mapping[str, Any], clock: str) -> float:
    """Seconds to add to the run's clock to put it on ``clock``: IP ran before round 0, so every later time moves
    by the IP compute time when the run charged it and the row does not, or the other way round."""
    ip_s = _ip_compute_s(summary)
    if ip_s is None or not clock:
        return 0.0
    charged = bool(summary[K_IP][K_IP_CHARGED])
    want = clock == _CLOCK_CHARGED
    return 0.0 if charged == want else (ip_s if want else -ip_s)


def _final_accuracy(summary: Mapping[str, Any]) -> Any:
    full = summary.get(K_FINAL_ACCURACY_FULL)
    return full if full is not None else summary.get(K_FINAL_ACCURACY)


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _cells(rows: Sequence[MethodRow]) -> tuple[list[str], list[list[str]]]:
    targets = [cell.target for cell in rows[0].targets] if rows else []
    speed = any(cell.speed_up is not None for row in rows for cell in row.targets) or any(
        _is_baseline(row.method) for row in rows
    )
    notes = any(row.warning for row in rows)
    header = ["method", "seeds"]
    for target in targets:
        header += [f"to {target:g}", *([f"speed-up {target:g}"] if speed else [])]
    header += ["final acc", "best acc", "density", "bytes up", "bytes down", "sim time", *(["notes"] if notes else [])]
    body = []
    for row in rows:
        cells = [row.label, str(row.runs) if row.runs == row.planned else f"{row.runs}/{row.planned}"]
        for cell in row.targets:
            cells.append(_fmt_target(cell))
            if speed:
                cells.append(_fmt_speed_up(cell))
        cells += [
            _fmt_accuracy(row.final_accuracy),
            _fmt_accuracy(row.best_accuracy),
            _fmt_density(row.final_density),
            _fmt_bytes(None if row.bytes_up is None else round(row.bytes_up)),
            _fmt_bytes(None if row.bytes_down is None else round(row.bytes_down)),
            _fmt_seconds(row.sim_time_s),
        ]
        if notes:
            cells.append(row.warning)
        body.append(cells)
    return header, body


def _is_baseline(method: str) -> bool:
    return any(spec.baseline for spec in all_specs() if spec.name == method)


def _fmt_target(cell: TargetCell) -> str:
    if cell.time_s is None or cell.round is None:
        return f"{_NOT_REACHED}, 0/{cell.runs}"
    # Whole seconds from 100 s up (a paper's ks scale), tenths below (test-sized runs).
    seconds = "{:,.0f}" if cell.time_s.high >= 100 else "{:.1f}"
    return f"{_fmt_spread(cell.time_s, seconds, ' s')}, r {_fmt_spread(cell.round, '{:g}')}, {cell.reached}/{cell.runs}"


def _fmt_speed_up(cell: TargetCell) -> str:
    if cell.speed_up is None:
        return _MISSING
    return f"{_fmt_spread(cell.speed_up, '{:.2f}', '×')}, {cell.speed_up.n}/{cell.runs}"


def _fmt_spread(spread: Spread, number: str, unit: str = "") -> str:
    """``mean unit (low–high)``; the range only where it shows two different numbers."""
    mean = number.format(round(spread.mean, 1) if number == "{:g}" else spread.mean)
    low, high = number.format(spread.low), number.format(spread.high)
    return f"{mean}{unit}" if low == high else f"{mean}{unit} ({low}–{high})"


def _report_lines(comparison: ComparisonResults, rows: list[MethodRow]) -> Iterator[str]:
    m = comparison.manifest
    yield f"# Comparison: {comparison.out_dir.name}"
    yield ""
    yield f"- **Methods:** {', '.join(m.methods)}"
    yield f"- **Seeds:** {', '.join(map(str, m.seeds))}"
    yield f"- **Config:** `{m.config}`" if m.config else "- **Config:** (Python API; resolved config below)"
    yield f"- **Jobs:** {m.jobs} runs at a time"
    yield f"- **Wall time:** {_fmt_seconds(m.wall_s, missing='unfinished')}"
    n_ok = sum(r.status == RUN_OK for r in m.runs)
    n_pending = sum(r.status == RUN_PENDING for r in m.runs)
    yield f"- **Runs:** {n_ok} finished, {len(m.failed)} failed" + (f", {n_pending} not finished" if n_pending else "")
    yield f"- **Started:** {m.created}"
    yield ""
    if m.failed:
        yield "## Failed runs"
        yield ""
        yield from _table(
            ["method", "seed", "run folder", "error"],
            [[r.method, str(r.seed), f"`{r.run_dir}`", r.error or _MISSING] for r in m.failed],
        )
    yield "## Results over seeds"
    yield ""
    yield (
        "Time to target: mean simulated time over the seeds that reached it (min–max), mean round (min–max), and "
        f"seeds that reached it / finished runs; {_NOT_REACHED} = no seed did. Speed-up: the baseline's simulated "
        "time / the method's, per seed where both reached the target, then the mean of those ratios (min–max) and "
        "how many seeds that was. The other columns are means over the finished runs; final accuracy is on the "
        "full test set where runs evaluated a subset each round. A method with initial pruning has two rows: its "
        "IP compute time charged to the clock, and not (IP runs before round 0, so every time shifts by it)."
    )
    yield ""
    header, body = _cells(rows)
    yield from _table(header, body)
    extensions = [row.method for row in rows if row.extension]
    if extensions:
        yield f"Extensions, not in the official PruneFL code (spec §8): {', '.join(dict.fromkeys(extensions))}."
        yield ""
    if comparison.config:
        varying = {k: v for k, v in comparison.config.items() if k != "seed"}
        if isinstance(varying.get("pruning"), dict):
            varying["pruning"] = {k: v for k, v in varying["pruning"].items() if k != "method"}
        yield from _config_lines(varying)  # the method and seed vary across runs; every other setting is shared
    present = [(f, c) for f, c in _PLOT_CAPTIONS.items() if (comparison.out_dir / PLOTS_DIR / f).is_file()]
    if present:
        yield "## Plots"
        yield ""
        for file, caption in present:
            yield f"![{caption}]({PLOTS_DIR}/{file})"
            yield ""
    yield "## Runs"
    yield ""
    yield from _table(
        ["method", "seed", "status", "run folder", "wall time", "reference"],
        [[r.method, str(r.seed), r.status, f"[`{r.run_dir}`]({r.run_dir})", _fmt_seconds(r.wall_s),
          f"`{r.reference}`" if r.reference else _MISSING] for r in m.runs],
    )  # fmt: skip


def _legend(method: str, specs: Mapping[str, MethodSpec], n_seeds: int) -> str:
    spec = specs.get(method)
    name = method if spec is None else spec.display_name + (" (extension)" if spec.extension else "")
    return f"{name} ({n_seeds} seed{'s' if n_seeds != 1 else ''})"


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


def _typed(doc: Any, key: str, kind: type, *, optional: bool = False) -> Any:
    if not isinstance(doc, dict):
        raise TypeError(f"expected a JSON object holding {key!r}, got {type(doc).__name__}")
    value = doc[key]
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{key!r} must be {kind.__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key!r} must be finite, got {value!r}")
    return value
