"""Command-line interface: ``prunefl run | compare | report | presets | methods | profile``.

Only this module prints, sets up logging handlers and owns the progress bar.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prunefl.errors import PruneFLError
from prunefl.timing.profile_cli import add_profile_parser

__all__ = ["main"]

EXIT_USAGE = 2  # bad config, missing data, bad arguments: the user's input, not a crash


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prunefl`` console script; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except PruneFLError as exc:
        print(f"prunefl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("prunefl: interrupted; finished rounds are in metrics.jsonl", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunefl", description="Federated learning with adaptive model pruning (PruneFL).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log one INFO line per round")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one experiment and write its results folder")
    run.add_argument("--config", required=True,
                     help="TOML config file or preset name, e.g. fmnist-conv2 (`prunefl presets` lists them)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set fl.rounds=20 or --set rounds=20 (repeatable)")
    run.add_argument("--out", default=None, help="results folder (must not exist or be empty); default runs/<name>-<time>")
    run.add_argument("--no-plots", action="store_true", help="skip PNG plots and report.md")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    cmp = sub.add_parser("compare", help="run several methods with the same settings side by side, and compare them")
    cmp.add_argument("--config", required=True, help="TOML config file")
    cmp.add_argument("--methods", default="prunefl,fedavg",
                     help="comma-separated methods to run (default: prunefl,fedavg)")
    cmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    cmp.add_argument("--out", default=None, help="folder for all runs and the comparison (must not exist or be empty)")
    cmp.add_argument("--no-progress", action="store_true", help="no progress bar")
    cmp.set_defaults(func=_cmd_compare)

    rep = sub.add_parser("report", help="(re)draw plots and report.md for run folders; several runs are compared")
    rep.add_argument("run_dirs", nargs="+", help="run folders")
    rep.add_argument("--out", default=None, help="folder for the comparison (default: the first run's parent/compare)")
    rep.set_defaults(func=_cmd_report)

    pre = sub.add_parser("presets", help="list the run presets shipped with prunefl (--config NAME), one line each")
    pre.set_defaults(func=_cmd_presets)

    met = sub.add_parser("methods", help="list the registered methods (pruning.method, --methods), one line each")
    met.set_defaults(func=_cmd_methods)

    add_profile_parser(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from prunefl.experiments.config import load_config
    from prunefl.experiments.results import new_run_dir
    from prunefl.experiments.runner import load_run_dataset, run_experiment

    config = load_config(args.config, args.set)  # validate everything before touching the disk
    run_dir = new_run_dir(args.out, config.name)
    dataset = load_run_dataset(config)
    bar = None if args.no_progress else _progress_bar(config.fl.rounds, config.name)
    try:
        result = run_experiment(config, run_dir, on_row=bar.update_row if bar else None, dataset=dataset,
                                plots=not args.no_plots)
    finally:
        if bar is not None:
            bar.close()
    _print_summary(result.summary, result.run_dir)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import dataclasses

    from prunefl.errors import ConfigError
    from prunefl.experiments.config import load_config
    from prunefl.pruning.methods import method_names
    from prunefl.experiments.results import new_run_dir
    from prunefl.experiments.runner import load_run_dataset, run_experiment
    from prunefl.report import format_summary_table, format_targets_table, plot_comparison, write_comparison_report

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in method_names()]
    if not methods or bad:
        raise ConfigError(f"--methods must list methods from {', '.join(method_names())}, got {args.methods!r}")
    base = load_config(args.config, args.set)
    configs = [
        dataclasses.replace(base, name=f"{base.name}-{m}", pruning=dataclasses.replace(base.pruning, method=m))
        for m in methods
    ]
    out = new_run_dir(args.out, f"{base.name}-compare")
    dataset = load_run_dataset(base)
    results = []
    for cfg in configs:
        bar = None if args.no_progress else _progress_bar(cfg.fl.rounds, cfg.pruning.method)
        try:
            results.append(run_experiment(cfg, out / cfg.pruning.method, on_row=bar.update_row if bar else None,
                                          dataset=dataset))
        finally:
            if bar is not None:
                bar.close()
    dirs = [r.run_dir for r in results]
    plot_comparison(dirs, out)
    report = write_comparison_report(dirs, out)
    print(format_summary_table([r.summary for r in results]))
    print()
    print(format_targets_table([r.summary for r in results]))
    print(f"comparison: {report}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from prunefl.errors import ConfigError
    from prunefl.report import plot_comparison, plot_run, write_comparison_report, write_report

    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not (d / "metrics.jsonl").is_file():
            raise ConfigError(f"{str(d)!r} is not a run folder (no metrics.jsonl)")
    for d in dirs:
        plot_run(d)
        print(f"report: {write_report(d)}")
    if len(dirs) > 1:
        out = Path(args.out) if args.out else dirs[0].parent / "compare"
        out.mkdir(parents=True, exist_ok=True)
        plot_comparison(dirs, out)
        print(f"comparison: {write_comparison_report(dirs, out)}")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from prunefl.experiments.presets import preset_descriptions

    descriptions = preset_descriptions()
    width = max(map(len, descriptions), default=0)
    for name, text in descriptions.items():
        print(f"{name:<{width}}  {text}")
    print("\nrun one with: prunefl run --config NAME (a file path works too)")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from prunefl.pruning.methods import all_specs

    specs = all_specs()  # whatever is registered now (prunefl.pruning.methods.registry)
    width = max((len(s.name) for s in specs), default=0)
    indent = " " * (width + 2)
    for spec in specs:
        print(f"{spec.name:<{width}}  {spec.display_name}: {spec.description}")
        needs = ", ".join(sorted(spec.needs))
        if needs:
            print(f"{indent}needs from a reference run: {needs}")
        if spec.extension:
            print(f"{indent}extension: not in the official PruneFL code")
        if spec.warning:
            print(f"{indent}warning: {spec.warning}")
    return 0


class _RoundBar:
    """tqdm bar that shows round, accuracy, density and simulated time (and initial-pruning rounds)."""

    def __init__(self, total: int, name: str) -> None:
        from tqdm import tqdm

        self._name = name
        self._bar = tqdm(total=total, desc=name, unit="round", dynamic_ncols=True, file=sys.stderr)
        self._acc: float | None = None

    def update_row(self, row: dict[str, Any]) -> None:
        from prunefl import metrics as K

        if row.get(K.K_TEST_ACCURACY) is not None:
            self._acc = row[K.K_TEST_ACCURACY]
        if row.get(K.K_STAGE, "fl") == "ip":
            self._bar.set_description(f"{self._name} initial pruning, IP round {row[K.K_ROUND]}", refresh=False)
            self._bar.set_postfix(density=f"{row[K.K_DENSITY]:.3f}", sim=_fmt_seconds(row[K.K_SIM_CLOCK_S]))
            return
        if row.get(K.K_ROUND) == 0:
            self._bar.set_description(self._name, refresh=False)
        self._bar.set_postfix(
            acc="-" if self._acc is None else f"{self._acc:.3f}",
            density=f"{row[K.K_DENSITY]:.3f}",
            sim=_fmt_seconds(row[K.K_SIM_CLOCK_S]),
            refresh=False,
        )
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(total: int, name: str) -> _RoundBar:
    return _RoundBar(total, name)


def _fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f}h"
    if s >= 60:
        return f"{s / 60:.1f}min"
    return f"{s:.1f}s"


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from prunefl.report import format_summary_table, format_targets_table

    print(format_summary_table([summary]))
    print()
    print(format_targets_table([summary]))
    print(f"results: {run_dir}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
