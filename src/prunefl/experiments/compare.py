"""Run several methods over several seeds, in parallel processes, into one comparison folder.

Each (method, seed) is an independent run in a worker process (``spawn``), on the config with ``seed`` replaced,
so every method of a seed sees the same data split, partition and device profiles. Only our own config dicts,
paths and small status records cross the process boundary; results come back through the run folders.
Methods that need a reference (``MethodSpec.needs``) wait for the reference method's run of their seed
(``registry.REFERENCE_METHOD``) when it is among the methods, and take it as their ``reference``.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import numbers
import os
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prunefl import metrics as K
from prunefl.errors import ConfigError
from prunefl.experiments.config import RunConfig, config_from_dict, config_to_dict, dump_toml
from prunefl.experiments.reference import resolve_reference
from prunefl.experiments.results import CHECKPOINT_META, CHECKPOINT_TENSORS, CONFIG_FILE, SUMMARY_FILE, new_run_dir
from prunefl.pruning.methods import ReferenceRun, get_spec
from prunefl.pruning.methods.registry import REFERENCE_METHOD
from prunefl.report.comparison import render_comparison
from prunefl.report.comparison_io import (
    RUN_FAILED,
    RUN_OK,
    RUN_PENDING,
    ComparisonManifest,
    RunRecord,
    read_manifest,
)
from prunefl.report.comparison_table import aggregate_comparison, format_comparison_table
from prunefl.report.plots import PlotStyle

__all__ = ["RunProgress", "ComparisonResult", "run_comparison", "resume_comparison", "default_jobs", "run_dir_name"]

logger = logging.getLogger(__name__)

ERROR_FILE = "error.txt"  # traceback of a failed run, in its run folder
_STAND_IN_DENSITY = 0.5  # any density in (0, 1) does for checking that a method builds
_POLL_S = 0.5  # how often the parent checks for finished runs and progress rows
_END_WAIT_S = 5.0  # how long a finished run's last progress rows may lag behind its result


@dataclass(frozen=True)
class RunProgress:
    """One event of a comparison's run, for ``on_progress``.

    Parameters
    ----------
    method, seed : str, int
        Which run.
    event : {"started", "row", "finished", "failed"}
        The run was handed to a worker, recorded a metrics row, finished, or failed (``error`` says why).
    rounds : int
        FL rounds the run will do.
    round : int or None
        The row's round (``row`` events).
    stage : str
        ``"fl"`` or ``"ip"`` (initial pruning) (default: "fl").
    accuracy : float or None
        The latest test accuracy the run has recorded.
    density : float or None
        The row's density.
    sim_clock_s : float or None
        The row's simulated clock.
    error : str or None
        Why the run failed.
    """

    method: str
    seed: int
    event: Literal["started", "row", "finished", "failed"]
    rounds: int
    round: int | None = None
    stage: str = K.STAGE_FL
    accuracy: float | None = None
    density: float | None = None
    sim_clock_s: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ComparisonResult:
    """A finished comparison.

    Parameters
    ----------
    out_dir : pathlib.Path
        The comparison folder.
    manifest : ComparisonManifest
        What ran and how each run ended (also in ``comparison.json``).
    summaries : dict
        ``{method: {seed: summary.json contents, or None where the run failed}}``.
    report : pathlib.Path or None
        ``report.md``; None when the report was not written.
    """

    out_dir: Path
    manifest: ComparisonManifest
    summaries: dict[str, dict[int, dict[str, Any] | None]]
    report: Path | None

    @property
    def failed(self) -> list[RunRecord]:
        """Runs that failed."""
        return self.manifest.failed

    def table(self) -> str:
        """The plain-text aggregate table (the one ``prunefl report`` prints for this folder)."""
        return format_comparison_table(aggregate_comparison(self.summaries))


def default_jobs(config: RunConfig, n_runs: int) -> int:
    """Runs at a time when not given: the CPU cores over the threads each run uses, at least 1, at most ``n_runs``.

    >>> default_jobs(RunConfig(threads=os.cpu_count() or 1), 8)
    1
    """
    return max(1, min(n_runs, (os.cpu_count() or 1) // max(1, config.threads)))


def run_dir_name(method: str, seed: int) -> str:
    """A run's folder inside the comparison folder.

    >>> run_dir_name("fedavg", 2)
    'fedavg/seed-2'
    """
    return f"{method}/seed-{seed}"


def run_comparison(
    config: RunConfig,
    methods: Sequence[str],
    seeds: Sequence[int],
    out: str | os.PathLike[str],
    jobs: int = 1,
    on_progress: Callable[[RunProgress], None] | None = None,
    *,
    config_path: str | None = None,
    run_plots: bool = True,
    style: PlotStyle | None = None,
) -> ComparisonResult:
    """Run every method for every seed, ``jobs`` runs at a time in worker processes, and report them together.

    Side effects: creates ``out`` (only after everything is validated) with ``config.toml`` (the base config),
    ``comparison.json`` (rewritten as runs finish), one run folder ``<method>/seed-<s>/`` per run (with
    ``error.txt`` holding the traceback where a run failed), ``report.md`` and ``plots/``
    (:func:`~prunefl.report.comparison.render_comparison`). A failed run is recorded and the others go on; a
    run whose reference run failed is recorded as failed without starting.

    Each run's config is ``config`` with ``seed`` and ``pruning.method`` replaced. A method that needs a reference
    takes the reference method's run of its seed when that method is among ``methods`` (``reference.density``
    > 0 still overrides the density), else the config's ``[reference]``. Workers load the data set once per
    process and seed; where ``config.threads`` is 0, each worker uses the CPU cores over ``jobs`` threads.

    Parameters
    ----------
    config : RunConfig
        The shared settings.
    methods : sequence of str
        Registered method names, each once.
    seeds : sequence of int
        Non-negative seeds, each once.
    out : path-like
        The comparison folder; must not exist or be empty.
    jobs : int
        Runs at a time, >= 1; capped at the number of runs (default: 1).
    on_progress : callable or None
        Called in this process with each :class:`RunProgress` (default: None).
    config_path : str or None
        The config file or preset name, recorded in the manifest (default: None).
    run_plots : bool
        Draw each run's own plots and report.md (default: True).
    style : PlotStyle or None
        Figure size and resolution of the comparison plots (default: ``PlotStyle()``).

    Returns
    -------
    ComparisonResult

    Raises
    ------
    ConfigError
        Unknown or repeated methods, bad seeds, ``jobs`` < 1, ``out`` not empty, or a method needs a reference
        that neither the comparison nor ``[reference]`` provides; nothing is written then.
    DataError
        The data set is missing or corrupt (it is loaded once here to check); nothing is written then.
    """
    tasks = _plan(config, methods, seeds, jobs)
    methods, seeds = list(methods), [int(s) for s in seeds]  # numpy integers become plain ones for JSON
    out_dir = new_run_dir(Path(out), config.name)
    from prunefl.experiments.runner import load_run_dataset

    load_run_dataset(config)  # DataError now, before anything is written, if the data set is missing or corrupt
    jobs = min(jobs, len(tasks))
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(dump_toml(config), encoding="utf-8")
    # The manifest lists runs method by method, whatever order they run in.
    listed = sorted(tasks, key=lambda t: (list(methods).index(t.method), list(seeds).index(t.seed)))
    records = {t.key: RunRecord(t.method, t.seed, t.run_dir, reference=t.reference_dir) for t in listed}
    manifest = ComparisonManifest(config=config_path, methods=list(methods), seeds=list(seeds), jobs=jobs,
                                  runs=list(records.values()))  # fmt: skip
    manifest.write(out_dir)
    logger.info("comparison of %s over seeds %s: %d runs, %d at a time, in %s", ", ".join(methods),
                list(seeds), len(tasks), jobs, out_dir)  # fmt: skip

    def save() -> None:
        dataclasses.replace(manifest, runs=[records[t.key] for t in listed]).write(out_dir)

    _Scheduler(tasks, records, out_dir, jobs, config, run_plots, on_progress, save).run()
    return _finish(out_dir, manifest, listed, records, time.perf_counter() - started, style)


def resume_comparison(
    out: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    jobs: int | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    *,
    config_path: str | None = None,
    run_plots: bool = True,
    style: PlotStyle | None = None,
) -> ComparisonResult:
    """Continue the comparison in ``out`` (``prunefl compare --resume``): keep its finished runs, resume the others.

    A run recorded as finished whose summary.json exists is kept as it is. Any other run (interrupted, failed,
    never started) resumes from the checkpoint in its folder (:func:`prunefl.experiments.state.load_run_state`)
    when it has one, else starts afresh in its folder. The comparison's methods and seeds are its manifest's;
    its config is its ``config.toml`` with ``overrides`` (``key=value``; only settings that do not shape a run,
    such as ``fl.rounds``, may differ from the runs' checkpoints), or the file ``config_path`` names.

    Parameters
    ----------
    out : path-like
        A comparison folder written by :func:`run_comparison`.
    overrides : sequence of str
        ``key=value`` config overrides (default: none).
    jobs : int or None
        Runs at a time (default: None: the manifest's).
    on_progress, config_path, run_plots, style
        As for :func:`run_comparison`.

    Raises
    ------
    DataError
        ``out`` holds no readable comparison manifest.
    ConfigError
        The config is invalid, or differs from a run's checkpoint in what shapes the run (when that run resumes,
        it fails with the error and the others go on).
    """
    from prunefl.experiments.config import load_config

    out_dir = Path(out)
    manifest = read_manifest(out_dir)
    base = load_config(config_path if config_path else out_dir / CONFIG_FILE, overrides)
    jobs = manifest.jobs if jobs is None else jobs
    tasks = _plan(base, manifest.methods, manifest.seeds, jobs)
    started = time.perf_counter()
    old = {(r.method, r.seed): r for r in manifest.runs}
    listed = sorted(tasks, key=lambda t: (manifest.methods.index(t.method), manifest.seeds.index(t.seed)))
    records: dict[tuple[str, int], RunRecord] = {}
    todo = []
    for t in listed:
        record = old.get(t.key, RunRecord(t.method, t.seed, t.run_dir, reference=t.reference_dir))
        run_dir = out_dir / t.run_dir
        if record.status == RUN_OK and (run_dir / SUMMARY_FILE).is_file():
            records[t.key] = record
            continue
        records[t.key] = dataclasses.replace(record, status=RUN_PENDING, error=None, wall_s=None)
        has_checkpoint = (run_dir / CHECKPOINT_META).exists() or (run_dir / CHECKPOINT_TENSORS).exists()
        todo.append(dataclasses.replace(t, resume=has_checkpoint))
    logger.info("resuming comparison %s: %d of %d runs to do", out_dir, len(todo), len(listed))
    manifest = dataclasses.replace(manifest, jobs=jobs)

    def save() -> None:
        dataclasses.replace(manifest, runs=[records[t.key] for t in listed]).write(out_dir)

    save()
    if todo:
        _Scheduler(todo, records, out_dir, min(jobs, len(todo)), base, run_plots, on_progress, save).run()
    wall = (manifest.wall_s or 0.0) + time.perf_counter() - started
    return _finish(out_dir, manifest, listed, records, wall, style)


def _finish(
    out_dir: Path,
    manifest: ComparisonManifest,
    listed: list[_Task],
    records: dict[tuple[str, int], RunRecord],
    wall_s: float,
    style: PlotStyle | None,
) -> ComparisonResult:
    """Write the final manifest and the comparison report; gather the runs' summaries."""
    methods = manifest.methods
    manifest = dataclasses.replace(manifest, runs=[records[t.key] for t in listed], wall_s=wall_s)
    manifest.write(out_dir)
    rendered = render_comparison(out_dir, style=style)
    summaries: dict[str, dict[int, dict[str, Any] | None]] = {m: {} for m in methods}
    for t in listed:
        summaries[t.method][t.seed] = (
            _read_summary(out_dir / t.run_dir) if records[t.key].status == RUN_OK else None
        )
    return ComparisonResult(out_dir=out_dir, manifest=manifest, summaries=summaries, report=rendered.report)


# --------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Task:
    """One run, as sent to a worker: our own plain config dict and paths, nothing else."""

    method: str
    seed: int
    rounds: int
    config: dict[str, Any]  # config_to_dict of the run's RunConfig
    run_dir: str  # relative to the comparison folder
    reference_dir: str | None  # relative: the reference method's run of this seed, or None
    plots: bool = True
    resume: bool = False  # continue from the checkpoint in run_dir (prunefl compare --resume)

    @property
    def key(self) -> tuple[str, int]:
        return self.method, self.seed

    @property
    def reference_key(self) -> tuple[str, int] | None:
        return None if self.reference_dir is None else (REFERENCE_METHOD, self.seed)


def _plan(config: RunConfig, methods: Sequence[str], seeds: Sequence[int], jobs: int) -> list[_Task]:
    """Validate the comparison and list its runs: reference runs first, then seed by seed in method order."""
    _check_methods(methods)
    _check_seeds(seeds)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be an integer >= 1, got {jobs!r}")
    needing = {m: sorted(get_spec(m).needs) for m in methods if get_spec(m).needs}
    from_comparison = REFERENCE_METHOD in methods
    if needing and not from_comparison:
        if resolve_reference(config) is None:
            needs = "; ".join(f"{m} needs its {', '.join(n)}" for m, n in needing.items())
            raise ConfigError(
                f"methods {', '.join(needing)} need a reference run ({needs}), but {REFERENCE_METHOD!r} is not "
                f"among the methods and the config has no [reference] (reference.run_dir or reference.density); "
                f"add {REFERENCE_METHOD} to --methods or set reference.run_dir to a finished {REFERENCE_METHOD} run"
            )
    # Build every method once, as its runs will: settings that do not fit the run (too few rounds for a schedule)
    # and a [reference] that lacks what a method needs fail here. The reference run of the comparison does not
    # exist yet, so those methods get a stand-in with its parts (their factories only keep them).
    from prunefl.experiments.runner import build_run_method

    stand_in = ReferenceRun(source=f"the {REFERENCE_METHOD} run of the comparison (validation stand-in)",
                            density=_STAND_IN_DENSITY, masks={}, init_state={})  # fmt: skip
    for m in methods:
        build_run_method(_run_config(config, m, int(seeds[0])), stand_in if m in needing and from_comparison else None)
    tasks = []
    for seed in map(int, seeds):
        for m in methods:
            run_config = _run_config(config, m, seed)  # validates the method name in the config too
            reference = run_dir_name(REFERENCE_METHOD, seed) if m in needing and from_comparison else None
            tasks.append(_Task(m, seed, run_config.fl.rounds, config_to_dict(run_config), run_dir_name(m, seed),
                               reference))  # fmt: skip
    # Reference runs first (others wait for them), then seed-major, so a worker's cached data set is reused.
    return sorted(tasks, key=lambda t: t.method != REFERENCE_METHOD)


def _run_config(config: RunConfig, method: str, seed: int) -> RunConfig:
    return dataclasses.replace(
        config, name=f"{config.name}-{method}-seed-{seed}", seed=seed,
        pruning=dataclasses.replace(config.pruning, method=method),
    )  # fmt: skip


def _check_methods(methods: Sequence[str]) -> None:
    if isinstance(methods, str) or not methods:
        raise ConfigError(f"methods must be a non-empty list of method names, got {methods!r}")
    for m in methods:
        get_spec(m)  # ConfigError naming the registered methods
    repeated = sorted({m for m in methods if list(methods).count(m) > 1})
    if repeated:
        raise ConfigError(f"methods must each be given once, got {', '.join(repeated)} more than once")


def _check_seeds(seeds: Sequence[int]) -> None:
    if isinstance(seeds, str) or not seeds:
        raise ConfigError(f"seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0]
    if bad:
        raise ConfigError(f"seeds must be non-negative integers, got {bad[0]!r} in {list(seeds)}")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ConfigError(f"seeds must each be given once, got {', '.join(map(str, repeated))} more than once")


# --------------------------------------------------------------------------------------------- parent side


class _Scheduler:
    """Hands runs to worker processes as slots free up and references finish; records how each ended."""

    def __init__(
        self,
        tasks: list[_Task],
        records: dict[tuple[str, int], RunRecord],
        out_dir: Path,
        jobs: int,
        config: RunConfig,
        plots: bool,
        on_progress: Callable[[RunProgress], None] | None,
        save: Callable[[], None],
    ) -> None:
        self.pending = [dataclasses.replace(t, plots=plots) for t in tasks]
        self.records = records
        self.out_dir = out_dir
        self.jobs = jobs
        # PyTorch's default is every core per process; with several workers that oversubscribes the CPU.
        self.worker_threads = config.threads or max(1, (os.cpu_count() or 1) // jobs)
        self.on_progress = on_progress
        self.save = save
        self.context = multiprocessing.get_context("spawn")
        self.queue: Any = self.context.Queue()
        self.executor: ProcessPoolExecutor | None = None
        self.running: dict[Future[_Outcome], _Task] = {}
        self.tasks = {t.key: t for t in self.pending}
        self.ended: set[tuple[str, int]] = set()  # runs whose worker sent its end marker
        self.accuracy: dict[tuple[str, int], float] = {}

    def run(self) -> None:
        try:
            while self.pending or self.running:
                self._submit_ready()
                if not self.running:
                    continue
                done, _ = wait(self.running, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                self._drain()
                for future in done:
                    if future in self.running:  # a broken pool fails every running future at once
                        self._finish(future, self.running.pop(future))
        except BaseException:
            # Interrupted (Ctrl-C) or our own bug: stop the workers we started instead of waiting for their runs.
            self._stop_workers()
            raise
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True, cancel_futures=True)
            self.queue.close()

    def _stop_workers(self) -> None:
        if self.executor is None:
            return
        processes = list((self.executor._processes or {}).values())  # no public API before Python 3.14
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()

    def _submit_ready(self) -> None:
        for task in list(self.pending):
            if len(self.running) >= self.jobs:
                return
            ref = task.reference_key
            if ref is not None and self.records[ref].status == RUN_PENDING:
                continue  # its reference has not finished yet
            self.pending.remove(task)
            if ref is not None and self.records[ref].status == RUN_FAILED:
                self._record(task, RUN_FAILED, f"not run: its reference run {task.reference_dir} failed", None)
                continue
            if self.executor is None:
                self.executor = ProcessPoolExecutor(
                    max_workers=self.jobs, mp_context=self.context, initializer=_init_worker,
                    initargs=(self.queue, self.worker_threads),
                )  # fmt: skip
            future = self.executor.submit(_run_task, task, str(self.out_dir))
            self.running[future] = task
            self._emit(RunProgress(task.method, task.seed, "started", task.rounds))

    def _drain(self, until: tuple[str, int] | None = None) -> None:
        """Report the progress rows that have arrived; with ``until``, wait (a few seconds at most) for that run's
        end marker, so that all its rows are reported before it is recorded as finished."""
        deadline = time.monotonic() + _END_WAIT_S
        while until is None or until not in self.ended:
            try:
                if until is None:
                    key, row = self.queue.get_nowait()
                else:
                    key, row = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            task = self.tasks[tuple(key)]
            if row is None:  # the worker's end marker: no more rows of this run
                self.ended.add(task.key)
                continue
            if row.get(K.K_TEST_ACCURACY) is not None:
                self.accuracy[task.key] = row[K.K_TEST_ACCURACY]
            self._emit(RunProgress(
                task.method, task.seed, "row", task.rounds, round=row.get(K.K_ROUND),
                stage=row.get(K.K_STAGE, K.STAGE_FL), accuracy=self.accuracy.get(task.key),
                density=row.get(K.K_DENSITY), sim_clock_s=row.get(K.K_SIM_CLOCK_S),
            ))  # fmt: skip

    def _finish(self, future: Future[_Outcome], task: _Task) -> None:
        try:
            outcome = future.result()
        except BrokenProcessPool as exc:
            # A worker died (killed, out of memory): the pool and every run in it are lost; the next submit
            # starts a new pool.
            for other in list(self.running.values()):
                self._record(other, RUN_FAILED, f"its worker pool broke when another run's worker died: {exc}", None)
            self.running.clear()
            if self.executor is not None:
                self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
            outcome = _Outcome(RUN_FAILED, f"the worker process died: {exc}", None)
        else:
            self._drain(until=task.key)
        self._record(task, outcome.status, outcome.error, outcome.wall_s)

    def _record(self, task: _Task, status: str, error: str | None, wall_s: float | None) -> None:
        self.records[task.key] = dataclasses.replace(self.records[task.key], status=status, error=error,
                                                     wall_s=wall_s)  # fmt: skip
        if error:
            logger.warning("run %s seed %d failed: %s", task.method, task.seed, error)
        self.save()
        self._emit(RunProgress(task.method, task.seed, "finished" if status == RUN_OK else "failed", task.rounds,
                               accuracy=self.accuracy.get(task.key), error=error))  # fmt: skip

    def _emit(self, progress: RunProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)


# --------------------------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _Outcome:
    status: str
    error: str | None
    wall_s: float | None


_worker_queue: Any = None
_dataset_cache: dict[str, Any] = {}  # one entry: the data set of the last (data settings, seed) this worker loaded


def _init_worker(progress_queue: Any, threads: int) -> None:
    import torch

    global _worker_queue
    _worker_queue = progress_queue
    progress_queue.cancel_join_thread()  # a worker's exit never waits on unread progress rows; they are expendable
    torch.set_num_threads(threads)


def _run_task(task: _Task, out_dir: str) -> _Outcome:
    """Run one task in a worker; every failure comes back as a message, the traceback goes to error.txt."""
    from prunefl.experiments.reference import load_reference_run
    from prunefl.experiments.runner import load_run_dataset, run_experiment

    start = time.perf_counter()
    run_dir = Path(out_dir) / task.run_dir
    try:
        config = config_from_dict(task.config)
        reference = None if task.reference_dir is None else load_reference_run(Path(out_dir) / task.reference_dir)
        key = repr((config.data, config.seed))
        if key not in _dataset_cache:
            _dataset_cache.clear()  # keep one data set in memory: Fashion-MNIST is ~220 MB as float32
            _dataset_cache[key] = load_run_dataset(config)

        def send(row: dict[str, Any]) -> None:
            if _worker_queue is not None:
                _worker_queue.put((task.key, {k: row.get(k) for k in _PROGRESS_KEYS}))

        state = None
        (run_dir / ERROR_FILE).unlink(missing_ok=True)  # from an earlier try of this run
        if task.resume:
            from prunefl.experiments.state import load_run_state

            state = load_run_state(run_dir)
        run_experiment(config, run_dir, on_row=send, dataset=_dataset_cache[key], plots=task.plots,
                       reference=reference, resume=state)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 (any failure of one run is recorded, and the comparison goes on)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(traceback.format_exc(), encoding="utf-8")
        return _Outcome(RUN_FAILED, f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
    finally:
        if _worker_queue is not None:
            _worker_queue.put((task.key, None))  # end marker, after every row on the same queue
    return _Outcome(RUN_OK, None, time.perf_counter() - start)


_PROGRESS_KEYS = (K.K_ROUND, K.K_STAGE, K.K_TEST_ACCURACY, K.K_DENSITY, K.K_SIM_CLOCK_S)


def _read_summary(run_dir: Path) -> dict[str, Any]:
    from prunefl.report.results_io import read_summary

    return read_summary(run_dir / SUMMARY_FILE)
