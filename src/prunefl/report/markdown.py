"""Markdown reports of one run or of several runs compared, with a plain-text summary table for the CLI.

Numbers come from ``summary.json`` (time to target, totals) and ``metrics.jsonl`` (reconfigurations); nothing is
recomputed from the curves, so a report always agrees with the run's own summary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prunefl.metrics import (
    K_BEST_ACCURACY,
    K_BYTES_DOWN,
    K_BYTES_UP,
    K_DENSITY,
    K_FINAL_ACCURACY,
    K_FINAL_ACCURACY_FULL,
    K_FINAL_DENSITY,
    K_METHOD,
    K_RECONFIG,
    K_ROUND,
    K_ROUNDS,
    K_SIM_CLOCK_S,
    K_STAGE,
    K_TARGET_ACCURACY,
    K_TARGETS,
    K_WALL_S,
)
from prunefl.pruning.methods import all_specs
from prunefl.report.formatting import (
    MISSING,
    NOT_REACHED,
    config_section,
    fmt_accuracy,
    fmt_bytes,
    fmt_count,
    fmt_density,
    fmt_float,
    fmt_int,
    fmt_seconds,
    markdown_table,
    plots_section,
    text_table,
)
from prunefl.report.plots import (
    ACCURACY_VS_ROUND,
    ACCURACY_VS_TIME,
    BYTES_VS_ROUND,
    DENSITY_VS_TIME,
    PLOTS_DIR,
    PlotStyle,
    plot_comparison,
    plot_run,
    run_labels,
)
from prunefl.report.results_io import (
    K_ADDED,
    K_DENSITY_AFTER,
    K_DENSITY_BEFORE,
    K_IP,
    K_IP_COMPUTE_S,
    K_MAX_DECREASE,
    K_OBJECTIVE_AFTER,
    K_OBJECTIVE_BEFORE,
    K_REMOVED,
    STAGE_FL,
    RunLike,
    RunResults,
    load_run,
    target_accuracies,
)

__all__ = ["REPORT_FILE", "write_report", "write_comparison_report", "format_summary_table", "format_targets_table"]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
_PLOT_CAPTIONS = {
    ACCURACY_VS_TIME: "Test accuracy vs simulated time",
    ACCURACY_VS_ROUND: "Test accuracy vs round",
    DENSITY_VS_TIME: "Density vs simulated time",
    BYTES_VS_ROUND: "Cumulative bytes vs round",
}


def write_report(run: RunLike, *, make_plots: bool = False, style: PlotStyle | None = None) -> Path:
    """Write ``report.md`` into a run folder.

    Writes ``<run_dir>/report.md`` (overwriting it) and, with ``make_plots``, the plots of
    :func:`~prunefl.report.plots.plot_run` into ``<run_dir>/plots``. The report has the method and key
    configuration lines, a summary table (final and best accuracy, final density, simulated and wall time,
    bytes), the time to each target accuracy, the initial-pruning summary and the reconfiguration table when
    the run has them, and the plots found in ``<run_dir>/plots``, linked by relative path.

    Parameters
    ----------
    run : RunResults or path-like
        The results folder, or a run already loaded.
    make_plots : bool
        Draw the plots with :func:`~prunefl.report.plots.plot_run` first, from the already loaded run
        (default: False: embed whatever an earlier ``plot_run(run_dir)`` left in ``<run_dir>/plots``).
    style : PlotStyle
        Figure size and resolution (default: ``PlotStyle()``, 6.4×4.8 in at 300 dpi).

    Returns
    -------
    pathlib.Path
        The report file.

    Raises
    ------
    DataError
        If the run folder cannot be read.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "metrics.jsonl").write_text('{"round": 0, "sim-clock-s": 5.0, "density": 1.0}\\n')
    ...     _ = (Path(d) / "summary.json").write_text(json.dumps({"method": "fedavg", "final-accuracy": 0.5}))
    ...     text = write_report(d).read_text()
    >>> "| final accuracy | 0.5000 |" in text
    True
    """
    loaded = load_run(run)
    if make_plots:
        plot_run(loaded, loaded.run_dir / PLOTS_DIR, style=style)
    path = loaded.run_dir / REPORT_FILE
    path.write_text("\n".join(_run_report_lines(loaded)) + "\n", encoding="utf-8")
    logger.debug("wrote %s", path)
    return path


def write_comparison_report(
    runs: Sequence[RunLike],
    out_dir: str | os.PathLike[str],
    labels: Sequence[str] | None = None,
    *,
    make_plots: bool = False,
    style: PlotStyle | None = None,
) -> Path:
    """Write ``report.md`` comparing several runs.

    Writes ``<out_dir>/report.md`` (overwriting it) and, with ``make_plots``, the overlays of
    :func:`~prunefl.report.plots.plot_comparison` into ``out_dir``; the overlays found there are embedded.
    For every target accuracy in any summary, a table gives each run's round and simulated time to reach it
    and its speed-up over the first FedAvg/conventional run (baseline simulated time / run simulated time).
    Where the baseline never reached the target, the speed-up is a lower bound, ``> x``, from the baseline's
    whole simulated time. A second table gives final accuracy, density, times and bytes.

    Parameters
    ----------
    runs : sequence of RunResults or path-like
        Results folders (or loaded runs), at least one.
    out_dir : path-like
        Where the report and the overlays go; created if needed.
    labels : sequence of str or None
        Name of each run in tables and legends (default: :func:`~prunefl.report.plots.run_labels`).
    make_plots : bool
        Draw the overlays with :func:`~prunefl.report.plots.plot_comparison` first, from the already loaded
        runs (default: False: embed whatever an earlier ``plot_comparison(runs, out_dir)`` left there).
    style : PlotStyle
        Figure size and resolution (default: ``PlotStyle()``, 6.4×4.8 in at 300 dpi).

    Returns
    -------
    pathlib.Path
        The report file.

    Raises
    ------
    ValueError
        If ``runs`` is empty or ``labels`` has a different length.
    DataError
        If a run folder cannot be read.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for method, t_s in (("fedavg", 100.0), ("prunefl", 50.0)):
    ...         run = Path(d) / method
    ...         run.mkdir()
    ...         _ = (run / "metrics.jsonl").write_text('{"round": 0, "sim-clock-s": 5.0, "density": 1.0}\\n')
    ...         target = {"target-accuracy": 0.8, "round": 9, "sim-clock-s": t_s, "wall-s": 1.0}
    ...         _ = (run / "summary.json").write_text(json.dumps({"method": method, "targets": [target]}))
    ...     text = write_comparison_report([Path(d) / "fedavg", Path(d) / "prunefl"], d).read_text()
    >>> "| prunefl | prunefl | 9 | 50.0 s | 1.0 s | 2.00× |" in text
    True
    """
    if not runs:
        raise ValueError("write_comparison_report needs at least one run, got none")
    loaded = [load_run(run) for run in runs]
    labels = run_labels(loaded, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if make_plots:
        plot_comparison(loaded, out, labels, style=style)
    path = out / REPORT_FILE
    path.write_text("\n".join(_comparison_report_lines(loaded, labels, out)) + "\n", encoding="utf-8")
    logger.debug("wrote %s", path)
    return path


def format_summary_table(summaries: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> str:
    """Format run summaries as a plain-text table with aligned columns, one line per run.

    Parameters
    ----------
    summaries : sequence of dict
        ``summary.json`` contents (see :func:`~prunefl.report.results_io.read_summary`).
    labels : sequence of str or None
        First-column name of each run (default: its method).

    Returns
    -------
    str
        Header, rule and one line per run, without a trailing newline. Missing values show as ``—``.

    Raises
    ------
    ValueError
        If ``labels`` has a different length than ``summaries``.

    Examples
    --------
    >>> print(format_summary_table([
    ...     {"method": "fedavg", "rounds": 30, "final-accuracy": 0.8512, "final-density": 1.0, "sim-clock-s": 1512.0},
    ...     {"method": "prunefl", "rounds": 30, "final-accuracy": 0.8601, "final-density": 0.25},
    ... ]))
    run      rounds  final acc  best acc  density   sim time  wall time  bytes up  bytes down
    -------  ------  ---------  --------  -------  ---------  ---------  --------  ----------
    fedavg       30     0.8512         —  100.00%  1,512.0 s          —         —           —
    prunefl      30     0.8601         —   25.00%          —          —         —           —
    """
    if labels is None:
        labels = [str(summary.get(K_METHOD, MISSING)) for summary in summaries]
    elif len(labels) != len(summaries):
        raise ValueError(f"expected one label per summary ({len(summaries)}), got {len(labels)}: {list(labels)}")
    full = any(summary.get(K_FINAL_ACCURACY_FULL) is not None for summary in summaries)
    header = ["run", "rounds", "final acc", *(["full test"] if full else []), "best acc", "density", "sim time",
              "wall time", "bytes up", "bytes down"]
    body = [
        [
            label,
            fmt_int(summary.get(K_ROUNDS)),
            fmt_accuracy(summary.get(K_FINAL_ACCURACY)),
            *([fmt_accuracy(summary.get(K_FINAL_ACCURACY_FULL))] if full else []),
            fmt_accuracy(summary.get(K_BEST_ACCURACY)),
            fmt_density(summary.get(K_FINAL_DENSITY)),
            fmt_seconds(summary.get(K_SIM_CLOCK_S)),
            fmt_seconds(summary.get(K_WALL_S)),
            fmt_bytes(summary.get(K_BYTES_UP)),
            fmt_bytes(summary.get(K_BYTES_DOWN)),
        ]
        for label, summary in zip(labels, summaries, strict=True)
    ]
    return text_table(header, body)  # names left-aligned, numbers right-aligned


def format_targets_table(summaries: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> str:
    """Format time to each target accuracy as plain text: round and simulated time per run, and the speed-up.

    The speed-up is the simulated time of the first run of the registry's baseline method (FedAvg) divided by the
    run's (``n.r.`` where a run did not reach the target; empty without a baseline run).

    Examples
    --------
    >>> print(format_targets_table([
    ...     {"method": "prunefl", "targets": [{"target-accuracy": 0.8, "round": 40, "sim-clock-s": 500.0}]},
    ...     {"method": "fedavg", "targets": [{"target-accuracy": 0.8, "round": 45, "sim-clock-s": 2000.0}]},
    ... ]))
    target  run      round   sim time  speed-up
    ------  -------  -----  ---------  --------
       0.8  prunefl     40    500.0 s     4.00×
       0.8  fedavg      45  2,000.0 s     1.00×
    """
    if labels is None:
        labels = [str(summary.get(K_METHOD, MISSING)) for summary in summaries]
    baselines = {spec.name for spec in all_specs() if spec.baseline}
    baseline = next((s for s in summaries if s.get(K_METHOD) in baselines), None)
    header = ["target", "run", "round", "sim time", "speed-up"]
    body = []
    targets = target_accuracies(summaries)
    for target in targets:
        base_t = _target_entry(baseline, target).get(K_SIM_CLOCK_S) if baseline is not None else None
        for label, summary in zip(labels, summaries, strict=True):
            entry = _target_entry(summary, target)
            t = entry.get(K_SIM_CLOCK_S)
            speed = "" if base_t is None else (NOT_REACHED if t is None else f"{base_t / t:.2f}×")
            body.append([f"{target:g}", label, fmt_int(entry.get(K_ROUND), NOT_REACHED),
                         fmt_seconds(t, NOT_REACHED), speed])
    return text_table(header, body, left={1})  # the run names left-aligned, numbers right-aligned


def _run_report_lines(run: RunResults) -> Iterator[str]:
    summary = run.summary
    yield f"# Run report: {run.run_dir.name}"
    yield ""
    yield f"- **Method:** {run.method}{_extension_note(run.method)}"
    yield f"- **Rounds:** {fmt_int(summary.get(K_ROUNDS))}"
    yield f"- **Results folder:** `{run.run_dir}`"
    yield ""
    if run.config:
        yield from config_section(run.config)
    yield "## Summary"
    yield ""
    yield from markdown_table(
        ["quantity", "value"],
        [
            ["final accuracy", fmt_accuracy(summary.get(K_FINAL_ACCURACY))],
            ["best accuracy", fmt_accuracy(summary.get(K_BEST_ACCURACY))],
            ["final accuracy, full test set", fmt_accuracy(summary.get(K_FINAL_ACCURACY_FULL))],
            ["final density", fmt_density(summary.get(K_FINAL_DENSITY))],
            ["simulated time", fmt_seconds(summary.get(K_SIM_CLOCK_S))],
            ["wall time", fmt_seconds(summary.get(K_WALL_S))],
            ["bytes up", fmt_bytes(summary.get(K_BYTES_UP))],
            ["bytes down", fmt_bytes(summary.get(K_BYTES_DOWN))],
            ["total bytes", fmt_bytes(_sum_or_none(summary.get(K_BYTES_UP), summary.get(K_BYTES_DOWN)))],
        ],
    )
    targets = summary.get(K_TARGETS) or []
    if targets:
        yield "## Time to target accuracy"
        yield ""
        yield f"First round whose evaluation reaches the target; {NOT_REACHED} = not reached."
        yield ""
        yield from markdown_table(
            ["target accuracy", "round", "simulated time", "wall time"],
            [
                [
                    f"{float(target[K_TARGET_ACCURACY]):g}",
                    fmt_int(target.get(K_ROUND), missing=NOT_REACHED),
                    fmt_seconds(target.get(K_SIM_CLOCK_S), missing=NOT_REACHED),
                    fmt_seconds(target.get(K_WALL_S), missing=NOT_REACHED),
                ]
                for target in targets
            ],
        )
    ip = summary.get(K_IP)
    if ip:
        yield "## Initial pruning"
        yield ""
        yield from markdown_table(
            ["IP rounds", "density after IP", "charged to the clock", "IP compute at the client"],
            [
                [
                    fmt_int(ip.get(K_ROUNDS)),
                    fmt_density(ip.get(K_FINAL_DENSITY)),
                    fmt_seconds(ip.get(K_SIM_CLOCK_S)),
                    fmt_seconds(ip.get(K_IP_COMPUTE_S)),
                ]
            ],
        )
    reconfig_rows = [row for row in run.rows if row.get(K_RECONFIG)]
    if reconfig_rows:
        yield "## Reconfigurations"
        yield ""
        yield (
            "Weights removed and added, summed over layers; δ is the largest fraction of a layer's in-use weights "
            "one reconfiguration may remove (spec §2, §3.3)."
        )
        yield ""
        yield from markdown_table(
            ["round", "stage", "removed", "added", "density", "objective before", "objective after", "δ"],
            [_reconfig_cells(row) for row in reconfig_rows],
        )
    yield from plots_section(_PLOT_CAPTIONS, run.run_dir / PLOTS_DIR, run.run_dir)


def _comparison_report_lines(runs: list[RunResults], labels: list[str], out_dir: Path) -> Iterator[str]:
    yield f"# Comparison of {len(runs)} runs"
    yield ""
    yield from markdown_table(
        ["run", "method", "results folder"],
        [
            [label, run.method + _extension_note(run.method), f"`{run.run_dir}`"]
            for label, run in zip(labels, runs, strict=True)
        ],
    )
    baselines = {spec.name for spec in all_specs() if spec.baseline}  # speed-ups are against the first of these
    baseline = next((i for i, run in enumerate(runs) if run.method.lower() in baselines), None)
    targets = target_accuracies(run.summary for run in runs)
    if targets:
        yield "## Time to target accuracy"
        yield ""
        if baseline is None:
            yield f"No FedAvg/conventional run among these, so no speed-up; {NOT_REACHED} = not reached."
        else:
            yield (
                f"Speed-up = simulated time of {labels[baseline]} / simulated time of the run; `> x` where "
                f"{labels[baseline]} never reached the target (a lower bound from its whole simulated time); "
                f"{NOT_REACHED} = not reached."
            )
        yield ""
        header = ["run", "method", "round", "simulated time", "wall time"]
        if baseline is not None:
            header.append(f"speed-up vs {labels[baseline]}")
        for target in targets:
            yield f"### Target accuracy {target:g}"
            yield ""
            reached = [_target_entry(run.summary, target) for run in runs]
            rows = []
            for label, run, entry in zip(labels, runs, reached, strict=True):
                cells = [
                    label,
                    run.method,
                    fmt_int(entry.get(K_ROUND), missing=NOT_REACHED),
                    fmt_seconds(entry.get(K_SIM_CLOCK_S), missing=NOT_REACHED),
                    fmt_seconds(entry.get(K_WALL_S), missing=NOT_REACHED),
                ]
                if baseline is not None:
                    cells.append(_speed_up(reached[baseline], runs[baseline].summary, entry))
                rows.append(cells)
            yield from markdown_table(header, rows)
    yield "## Final results"
    yield ""
    yield from markdown_table(
        ["run", "rounds", "final accuracy", "best accuracy", "final density", "simulated time", "wall time",
         "bytes up", "bytes down"],
        [
            [
                label,
                fmt_int(run.summary.get(K_ROUNDS)),
                fmt_accuracy(run.summary.get(K_FINAL_ACCURACY)),
                fmt_accuracy(run.summary.get(K_BEST_ACCURACY)),
                fmt_density(run.summary.get(K_FINAL_DENSITY)),
                fmt_seconds(run.summary.get(K_SIM_CLOCK_S)),
                fmt_seconds(run.summary.get(K_WALL_S)),
                fmt_bytes(run.summary.get(K_BYTES_UP)),
                fmt_bytes(run.summary.get(K_BYTES_DOWN)),
            ]
            for label, run in zip(labels, runs, strict=True)
        ],
    )  # fmt: skip
    yield from plots_section(_PLOT_CAPTIONS, out_dir, out_dir)


def _reconfig_cells(row: dict[str, Any]) -> list[str]:
    reconfig = row[K_RECONFIG]
    if K_DENSITY_BEFORE in reconfig and K_DENSITY_AFTER in reconfig:
        density = f"{fmt_density(reconfig[K_DENSITY_BEFORE])} → {fmt_density(reconfig[K_DENSITY_AFTER])}"
    else:
        density = fmt_density(row.get(K_DENSITY))
    return [
        str(row[K_ROUND]),
        str(row.get(K_STAGE, STAGE_FL)),
        fmt_count(reconfig.get(K_REMOVED)),
        fmt_count(reconfig.get(K_ADDED)),
        density,
        fmt_float(reconfig.get(K_OBJECTIVE_BEFORE)),
        fmt_float(reconfig.get(K_OBJECTIVE_AFTER)),
        fmt_float(reconfig.get(K_MAX_DECREASE)),
    ]


def _target_entry(summary: dict[str, Any], target: float) -> dict[str, Any]:
    # Targets come from config floats written to JSON and read back, so equality is exact.
    return next((t for t in summary.get(K_TARGETS) or [] if float(t[K_TARGET_ACCURACY]) == target), {})


def _speed_up(baseline_entry: dict[str, Any], baseline_summary: dict[str, Any], entry: dict[str, Any]) -> str:
    time_s = entry.get(K_SIM_CLOCK_S)
    if time_s is None:
        return NOT_REACHED
    if time_s <= 0:
        return MISSING  # reached before any simulated time passed: no finite ratio
    baseline_s = baseline_entry.get(K_SIM_CLOCK_S)
    if baseline_s is not None:
        return f"{baseline_s / time_s:.2f}×"
    # The baseline ran its whole window without reaching the target, so it would have needed more than that.
    window_s = baseline_summary.get(K_SIM_CLOCK_S)
    return f"> {window_s / time_s:.2f}×" if window_s is not None else MISSING


def _extension_note(method: str) -> str:
    """Spec §8: every report labels methods that are not in the official code, and prints a method's caveat."""
    spec = next((s for s in all_specs() if s.name == method.lower()), None)
    if spec is None:
        return ""
    note = f" (extension, not in the official PruneFL code: {spec.display_name})" if spec.extension else ""
    return note + (f" — {spec.warning}" if spec.warning else "")


def _sum_or_none(*values: int | None) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)
