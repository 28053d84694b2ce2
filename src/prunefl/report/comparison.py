"""The Markdown report of a comparison folder (``prunefl compare``), rendered from its saved results.

The folder's layout is in :mod:`prunefl.report.comparison_io`. Everything here is recomputed from its files, so
``prunefl report DIR`` prints the table ``prunefl compare`` printed, without training again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prunefl.report.comparison_io import RUN_OK, RUN_PENDING, ComparisonResults, load_comparison
from prunefl.report.comparison_plots import (
    ACCURACY_VS_TIME_SEEDS,
    DENSITY_VS_ROUND_SEEDS,
    LOTTERY_TICKET,
    plot_comparison_folder,
)
from prunefl.report.comparison_table import MethodRow, aggregate_comparison, format_comparison_table, table_cells
from prunefl.report.formatting import MISSING, NOT_REACHED, config_section, fmt_seconds, markdown_table, plots_section
from prunefl.report.markdown import REPORT_FILE
from prunefl.report.plots import PLOTS_DIR, PlotStyle

__all__ = ["RenderedComparison", "render_comparison", "wall_time_by_method"]

logger = logging.getLogger(__name__)

_PLOT_CAPTIONS = {
    ACCURACY_VS_TIME_SEEDS: "Test accuracy vs simulated time (mean over seeds, band: min–max)",
    DENSITY_VS_ROUND_SEEDS: "Model size (density) vs round (mean over seeds, band: min–max)",
    LOTTERY_TICKET: "Lottery ticket: test accuracy vs round (mean over seeds, band: min–max)",
}


@dataclass(frozen=True)
class RenderedComparison:
    """What :func:`render_comparison` wrote, and the plain-text table."""

    report: Path
    plots: list[Path]
    table: str


def render_comparison(
    out_dir: str | os.PathLike[str], *, make_plots: bool = True, style: PlotStyle | None = None
) -> RenderedComparison:
    """Write a comparison folder's ``report.md`` (and plots) from its saved results, without training.

    Writes ``<out_dir>/report.md`` (overwriting it) with the comparison's seeds, jobs, wall time and failed runs
    with their errors, the aggregate table of :func:`~prunefl.report.comparison_table.aggregate_comparison`, the
    base config's key settings and the plots of :func:`~prunefl.report.comparison_plots.plot_comparison_folder`
    (drawn into ``<out_dir>/plots`` with ``make_plots``).

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
        The report path, the plots written, and the plain-text table
        (:func:`~prunefl.report.comparison_table.format_comparison_table`).

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


def _report_lines(comparison: ComparisonResults, rows: list[MethodRow]) -> Iterator[str]:
    m = comparison.manifest
    yield f"# Comparison: {comparison.out_dir.name}"
    yield ""
    yield f"- **Methods:** {', '.join(m.methods)}"
    yield f"- **Seeds:** {', '.join(map(str, m.seeds))}"
    yield f"- **Config:** `{m.config}`" if m.config else "- **Config:** (Python API; resolved config below)"
    yield f"- **Jobs:** {m.jobs} runs at a time"
    yield f"- **Wall time:** {fmt_seconds(m.wall_s, missing='unfinished')}"
    n_ok = sum(r.status == RUN_OK for r in m.runs)
    n_pending = sum(r.status == RUN_PENDING for r in m.runs)
    yield f"- **Runs:** {n_ok} finished, {len(m.failed)} failed" + (f", {n_pending} not finished" if n_pending else "")
    yield f"- **Started:** {m.created}"
    yield ""
    if m.failed:
        yield "## Failed runs"
        yield ""
        yield from markdown_table(
            ["method", "seed", "run folder", "error"],
            [[r.method, str(r.seed), f"`{r.run_dir}`", r.error or MISSING] for r in m.failed],
        )
    yield "## Results over seeds"
    yield ""
    yield (
        "Time to target: mean simulated time over the seeds that reached it (min–max), mean round (min–max), and "
        f"seeds that reached it / finished runs; {NOT_REACHED} = no seed did. Speed-up: the baseline's simulated "
        "time / the method's, per seed where both reached the target, then the mean of those ratios (min–max) and "
        "how many seeds that was. The other columns are means over the finished runs; final accuracy is on the "
        "full test set where runs evaluated a subset each round. A method with initial pruning has two rows: its "
        "IP compute time charged to the clock, and not (IP runs before round 0, so every time shifts by it)."
    )
    yield ""
    header, body = table_cells(rows)
    yield from markdown_table(header, body)
    extensions = [row.method for row in rows if row.extension]
    if extensions:
        yield f"Extensions, not in the official PruneFL code (spec §8): {', '.join(dict.fromkeys(extensions))}."
        yield ""
    if comparison.config:
        varying = {k: v for k, v in comparison.config.items() if k != "seed"}
        if isinstance(varying.get("pruning"), dict):
            varying["pruning"] = {k: v for k, v in varying["pruning"].items() if k != "method"}
        yield from config_section(varying)  # the method and seed vary across runs; every other setting is shared
    yield from plots_section(_PLOT_CAPTIONS, comparison.out_dir / PLOTS_DIR, comparison.out_dir)
    yield from _wall_time_lines(comparison)
    yield "## Runs"
    yield ""
    yield from markdown_table(
        ["method", "seed", "status", "run folder", "wall time", "reference"],
        [[r.method, str(r.seed), r.status, f"[`{r.run_dir}`]({r.run_dir})", fmt_seconds(r.wall_s),
          f"`{r.reference}`" if r.reference else MISSING] for r in m.runs],
    )  # fmt: skip


def wall_time_by_method(comparison: ComparisonResults) -> dict[str, tuple[int, float, float]]:
    """Where a comparison's real time went: ``{method: (finished runs, total wall s, of which initial pruning)}``.

    A run's wall time is its manifest record's; the initial-pruning part is the wall clock of its last IP row
    (IP runs before round 0). Methods without finished runs are left out.
    """
    out: dict[str, tuple[int, float, float]] = {}
    for record in comparison.manifest.runs:
        run = comparison.runs.get((record.method, record.seed))
        if run is None or record.wall_s is None:
            continue
        ip_wall = max((float(r["wall-s"]) for r in run.rows if r.get("stage") == "ip"), default=0.0)
        n, total, ip = out.get(record.method, (0, 0.0, 0.0))
        out[record.method] = (n + 1, total + record.wall_s, ip + ip_wall)
    return out


def _wall_time_lines(comparison: ComparisonResults) -> Iterator[str]:
    by_method = wall_time_by_method(comparison)
    if not by_method:
        return
    grand = sum(total for _, total, _ in by_method.values())
    yield "## Where the wall time went"
    yield ""
    yield (
        f"Real seconds of the runs, summed per method ({fmt_seconds(grand)} in all; with "
        f"{comparison.manifest.jobs} jobs at a time the comparison took "
        f"{fmt_seconds(comparison.manifest.wall_s, missing='unfinished')}). Initial pruning is the wall time before "
        "round 0; everything else is the FL rounds (local training, codec, aggregation, evaluation)."
    )
    yield ""
    yield from markdown_table(
        ["method", "runs", "total", "per run", "share", "of which initial pruning"],
        [[method, str(n), fmt_seconds(total), fmt_seconds(total / n), f"{total / grand:.1%}",
          fmt_seconds(ip) if ip else MISSING] for method, (n, total, ip) in by_method.items()],
    )  # fmt: skip
    yield ""
