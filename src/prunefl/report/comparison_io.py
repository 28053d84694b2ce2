"""A comparison folder (``prunefl compare``) on disk: its manifest ``comparison.json``, and reading it back.

A comparison folder holds ``comparison.json`` (the manifest: which methods and seeds ran, and how each run ended),
the resolved base ``config.toml``, and one ordinary run folder per method and seed, ``<method>/seed-<s>/``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prunefl.errors import DataError
from prunefl.report.results_io import CONFIG_FILE, RunResults, load_run, read_config

__all__ = [
    "COMPARISON_FILE",
    "RUN_OK",
    "RUN_FAILED",
    "RUN_PENDING",
    "RunRecord",
    "ComparisonManifest",
    "ComparisonResults",
    "read_manifest",
    "load_comparison",
]

COMPARISON_FILE = "comparison.json"
RUN_OK = "ok"
RUN_FAILED = "failed"
RUN_PENDING = "pending"  # not finished: still queued or running, or the comparison was interrupted
_STATUSES = (RUN_OK, RUN_FAILED, RUN_PENDING)

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
        :func:`~prunefl.report.comparison_table.aggregate_comparison`."""
        out: dict[str, dict[int, dict[str, Any] | None]] = {m: {} for m in self.manifest.methods}
        for record in self.manifest.runs:
            run = self.runs.get((record.method, record.seed))
            out.setdefault(record.method, {})[record.seed] = None if run is None else run.summary
        return out


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
    except (ValueError, RecursionError) as exc:  # malformed JSON or UTF-8, an int of > 4300 digits, deep nesting
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
