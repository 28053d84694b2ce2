"""Plots and Markdown reports built from results folders, for one run or several compared."""

from prunefl.report.markdown import (
    format_summary_table,
    format_targets_table,
    write_comparison_report,
    write_report,
)
from prunefl.report.plots import PlotStyle, plot_comparison, plot_run
from prunefl.report.results_io import RunResults, evaluated_rows, load_run, read_config, read_metrics, read_summary

__all__ = [
    "PlotStyle",
    "RunResults",
    "evaluated_rows",
    "format_summary_table",
    "format_targets_table",
    "load_run",
    "plot_comparison",
    "plot_run",
    "read_config",
    "read_metrics",
    "read_summary",
    "write_comparison_report",
    "write_report",
]
