"""Command-line interface: ``prunefl run | compare | report | presets | methods | profile``.

Only this module prints, sets up logging handlers and owns the progress bar.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunefl.errors import PruneFLError
from prunefl.timing.profile_cli import add_profile_parser

if TYPE_CHECKING:
    from prunefl.experiments.compare import RunProgress

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
        print("prunefl: interrupted; finished rounds are in metrics.jsonl; `prunefl run --resume RUN_DIR` continues "
              "from the last checkpoint", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunefl", description="Federated learning with adaptive model pruning (PruneFL).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log one INFO line per round")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one experiment and write its results folder")
    run.add_argument("--config", default=None,
                     help="TOML config file or preset name, e.g. fmnist-conv2 (`prunefl presets` lists them); "
                     "required unless --resume")
    run.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the killed run in DIR from its last checkpoint (its config, with --set overrides "
                     "such as fl.rounds; --config, if given, must not change what shapes the run)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set fl.rounds=20 or --set rounds=20 (repeatable)")
    run.add_argument("--out", default=None, help="results folder (must not exist or be empty); default runs/<name>-<time>")
    run.add_argument("--no-plots", action="store_true", help="skip PNG plots and report.md")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    cmp = sub.add_parser("compare", help="run several methods over several seeds, in parallel, and compare them")
    cmp.add_argument("--config", default=None,
                     help="TOML config file or preset name (`prunefl presets` lists them); required unless --resume")
    cmp.add_argument("--methods", default=None,
                     help="comma-separated methods to run (`prunefl methods` lists them); required unless --resume")
    cmp.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the comparison in DIR: finished runs are kept, killed ones resume from their "
                     "checkpoints, runs that never started start")
    cmp.add_argument("--seeds", default=None,
                     help="comma-separated non-negative seeds, e.g. 0,1,2 (default: the config's seed)")
    cmp.add_argument("--jobs", type=int, default=None,
                     help="runs at a time in worker processes (default: CPU cores / config threads, at most the runs)")
    cmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    cmp.add_argument("--out", default=None, help="folder for all runs and the comparison (must not exist or be empty); "
                     "default runs/<name>-compare-<time>")
    cmp.add_argument("--no-run-plots", action="store_true",
                     help="skip each run's own plots and report.md (the comparison's are still drawn)")
    cmp.add_argument("--no-progress", action="store_true", help="no progress lines")
    cmp.set_defaults(func=_cmd_compare)

    rep = sub.add_parser("report", help="(re)draw plots and report.md for run folders (several runs are compared) "
                         "or for a comparison folder of `prunefl compare`")
    rep.add_argument("run_dirs", nargs="+", help="run folders, or comparison folders (holding comparison.json)")
    rep.add_argument("--out", default=None, help="folder for the comparison (default: the first run's parent/compare)")
    rep.set_defaults(func=_cmd_report)

    pre = sub.add_parser("presets", help="list the run presets shipped with prunefl (--config NAME), one line each")
    pre.set_defaults(func=_cmd_presets)

    met = sub.add_parser("methods", help="list the registered methods (pruning.method, --methods), one line each")
    met.set_defaults(func=_cmd_methods)

    add_profile_parser(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from prunefl.errors import ConfigError
    from prunefl.experiments.config import load_config
    from prunefl.experiments.results import new_run_dir
    from prunefl.experiments.runner import load_run_dataset, run_experiment
    from prunefl.experiments.state import check_resume_config, load_run_state, resume_config

    resume = None
    if args.resume is not None:
        if args.out is not None:
            raise ConfigError("--out cannot be given with --resume: the run continues in its own folder")
        resume = load_run_state(args.resume)  # CheckpointError naming the file if it is damaged
        config = load_config(args.config, args.set) if args.config else resume_config(resume.config, args.set)
        check_resume_config(resume.config, config, resume.round)
        run_dir = Path(args.resume)
    else:
        if args.config is None:
            raise ConfigError("prunefl run needs --config (a TOML file or preset name), or --resume DIR")
        config = load_config(args.config, args.set)  # validate everything before touching the disk
        run_dir = new_run_dir(args.out, config.name)
    dataset = load_run_dataset(config)
    bar = None if args.no_progress else _progress_bar(config.fl.rounds, config.name)
    if bar is not None and resume is not None:
        bar.skip(resume.round)
    try:
        result = run_experiment(config, run_dir, on_row=bar.update_row if bar else None, dataset=dataset,
                                plots=not args.no_plots, resume=resume)
    finally:
        if bar is not None:
            bar.close()
    _print_summary(result.summary, result.run_dir)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from prunefl.errors import ConfigError
    from prunefl.experiments.compare import default_jobs, resume_comparison, run_comparison
    from prunefl.experiments.config import load_config
    from prunefl.experiments.results import new_run_dir

    if args.resume is not None:
        if args.out is not None or args.methods is not None or args.seeds is not None:
            raise ConfigError("--resume continues the comparison's own methods and seeds in its own folder; "
                              "drop --out, --methods and --seeds")
        progress = None if args.no_progress else _ProgressLines()
        result = resume_comparison(args.resume, args.set, jobs=args.jobs, on_progress=progress,
                                   config_path=args.config, run_plots=not args.no_run_plots)
        print(result.table())
        for run in result.failed:
            print(f"prunefl: run {run.method} seed {run.seed} failed: {run.error}", file=sys.stderr)
        print(f"comparison: {result.report}")
        return 1 if result.failed else 0
    if args.config is None or args.methods is None:
        raise ConfigError("prunefl compare needs --config and --methods, or --resume DIR")
    config = load_config(args.config, args.set)  # validate everything before touching the disk
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = _parse_seeds(args.seeds) if args.seeds is not None else [config.seed]
    jobs = args.jobs if args.jobs is not None else default_jobs(config, len(methods) * len(seeds))
    out = new_run_dir(args.out, f"{config.name}-compare")
    progress = None if args.no_progress else _ProgressLines()
    result = run_comparison(config, methods, seeds, out, jobs, on_progress=progress, config_path=args.config,
                            run_plots=not args.no_run_plots)  # fmt: skip
    print(result.table())
    for run in result.failed:
        print(f"prunefl: run {run.method} seed {run.seed} failed: {run.error}", file=sys.stderr)
    print(f"comparison: {result.report}")
    return 1 if result.failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from prunefl.errors import ConfigError
    from prunefl.report import plot_comparison, plot_run, write_comparison_report, write_report
    from prunefl.report.comparison import render_comparison
    from prunefl.report.comparison_io import COMPARISON_FILE

    given = [Path(d) for d in args.run_dirs]
    comparisons = [d for d in given if (d / COMPARISON_FILE).is_file()]
    dirs = [d for d in given if d not in comparisons]
    for d in dirs:
        if not (d / "metrics.jsonl").is_file():
            raise ConfigError(f"{str(d)!r} is neither a run folder (no metrics.jsonl) nor a comparison folder "
                              f"(no {COMPARISON_FILE})")  # fmt: skip
    for d in comparisons:
        rendered = render_comparison(d)  # from the saved results, without training
        print(rendered.table)
        print(f"comparison: {rendered.report}")
    for d in dirs:
        plot_run(d)
        print(f"report: {write_report(d)}")
    if len(dirs) > 1:
        out = Path(args.out) if args.out else dirs[0].parent / "compare"
        out.mkdir(parents=True, exist_ok=True)
        plot_comparison(dirs, out)
        print(f"comparison: {write_comparison_report(dirs, out)}")
    return 0


def _parse_seeds(text: str) -> list[int]:
    from prunefl.errors import ConfigError

    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated non-negative integers (e.g. 0,1,2), got {text!r}") from None


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

    def skip(self, rounds: int) -> None:
        """Count ``rounds`` already done (a resumed run)."""
        self._bar.update(rounds)

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


class _ProgressLines:
    """Progress of a comparison's parallel runs: a line per running run at most every ``every_s`` seconds, plus
    one when it starts, finishes or fails (several runs at once would garble progress bars)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self._every_s = every_s
        self._last: dict[tuple[str, int], float] = {}

    def __call__(self, progress: RunProgress) -> None:
        import time

        key = (progress.method, progress.seed)
        now = time.monotonic()
        if progress.event == "row" and now - self._last.get(key, -self._every_s) < self._every_s:
            return
        self._last[key] = now
        print(_progress_line(progress), file=sys.stderr, flush=True)


def _progress_line(progress: RunProgress) -> str:
    """E.g. ``[prunefl seed 1] round 40/120 acc 0.812 density 0.081 sim 6.2min``."""
    from prunefl import metrics as K

    head = f"[{progress.method} seed {progress.seed}]"
    if progress.event != "row":
        return f"{head} {progress.event}" + (f": {progress.error}" if progress.error else "")
    where = (f"IP round {progress.round}" if progress.stage == K.STAGE_IP
             else f"round {(progress.round or 0) + 1}/{progress.rounds}")  # fmt: skip
    acc = "-" if progress.accuracy is None else f"{progress.accuracy:.3f}"
    density = "-" if progress.density is None else f"{progress.density:.3f}"
    sim = "-" if progress.sim_clock_s is None else _fmt_seconds(progress.sim_clock_s)
    return f"{head} {where} acc {acc} density {density} sim {sim}"


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
