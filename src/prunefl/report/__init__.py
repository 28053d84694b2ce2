"""Plots and Markdown reports built from results folders, for one run or several compared."""

from prunefl.report.comparison import render_comparison
from prunefl.report.comparison_io import ComparisonResults, load_comparison
from prunefl.report.comparison_plots import plot_comparison_folder
from prunefl.report.comparison_table import aggregate_comparison, format_comparison_table
from prunefl.report.markdown import (
    format_summary_table,
    format_targets_table,
    write_comparison_report,
    write_report,
)
from prunefl.report.plots import PlotStyle, plot_comparison, plot_run
from prunefl.report.results_io import RunResults, evaluated_rows, load_run, read_config, read_metrics, read_summary

__all__ = [
    "ComparisonResults",
    "PlotStyle",
    "RunResults",
    "aggregate_comparison",
    "evaluated_rows",
    "format_comparison_table",
    "format_summary_table",
    "format_targets_table",
    "load_comparison",
    "load_run",
    "plot_comparison",
    "plot_comparison_folder",
    "plot_run",
    "read_config",
    "read_metrics",
    "read_summary",
    "render_comparison",
    "write_comparison_report",
    "write_report",
]
