"""Reading a run's results folder (metrics.jsonl, summary.json, config.toml) into plain Python objects.

Every file is validated here, once; the plotting and Markdown modules trust what these functions return.
Metric and summary keys are the ``K_*`` constants of :mod:`prunefl.metrics`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from prunefl.errors import ConfigError, DataError
from prunefl.metrics import (  # noqa: F401  (re-exported for the other report modules)
    K_ADDED,
    K_DENSITY,
    K_DENSITY_AFTER,
    K_DENSITY_BEFORE,
    K_IP,
    K_IP_COMPUTE_S,
    K_MAX_DECREASE,
    K_METHOD,
    K_OBJECTIVE_AFTER,
    K_OBJECTIVE_BEFORE,
    K_REMOVED,
    K_ROUND,
    K_SIM_CLOCK_S,
    K_STAGE,
    K_TARGET_ACCURACY,
    K_TARGETS,
    K_TEST_ACCURACY,
    STAGE_FL,
    STAGE_IP,
)

__all__ = [
    "METRICS_FILE",
    "SUMMARY_FILE",
    "CONFIG_FILE",
    "RunResults",
    "RunLike",
    "load_run",
    "read_metrics",
    "read_summary",
    "read_config",
    "evaluated_rows",
    "ip_rows",
    "fl_rows",
    "plot_round",
    "target_accuracies",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.toml"

# A row without these cannot be placed on any plot or table.
_REQUIRED_ROW_KEYS = (K_ROUND, K_SIM_CLOCK_S, K_DENSITY)


@dataclass(frozen=True)
class RunResults:
    """Everything a run folder holds that reports need, read once.

    Parameters
    ----------
    run_dir : pathlib.Path
        The results folder.
    rows : list of dict
        ``metrics.jsonl`` rows in file order (IP rows first, when present).
    summary : dict
        ``summary.json``.
    config : dict
        Parsed ``config.toml``; empty when the folder has none.
    """

    run_dir: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    config: dict[str, Any]

    @property
    def method(self) -> str:
        """Method name from the summary, e.g. ``"prunefl"``."""
        return str(self.summary[K_METHOD])


RunLike: TypeAlias = RunResults | str | os.PathLike[str]


def load_run(run: RunLike) -> RunResults:
    """Read a results folder's metrics, summary and config.

    A :class:`RunResults` is returned unchanged, so callers that already loaded a run can hand it on
    without reading the files again.

    Parameters
    ----------
    run : RunResults or path-like
        A loaded run or the results folder.

    Returns
    -------
    RunResults

    Raises
    ------
    DataError
        If ``metrics.jsonl`` or ``summary.json`` is missing or malformed, or ``config.toml`` is malformed.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "metrics.jsonl").write_text('{"round": 0, "sim-clock-s": 1.5, "density": 1.0}\\n')
    ...     _ = (Path(d) / "summary.json").write_text(json.dumps({"method": "fedavg"}))
    ...     run = load_run(d)
    >>> run.method, len(run.rows), run.config
    ('fedavg', 1, {})
    """
    if isinstance(run, RunResults):
        return run
    run_dir = Path(run)
    config_path = run_dir / CONFIG_FILE
    config = read_config(run_dir) if config_path.is_file() else {}
    if not config:
        logger.debug("%s has no %s; reports will omit the configuration", run_dir, CONFIG_FILE)
    return RunResults(run_dir=run_dir, rows=read_metrics(run_dir), summary=read_summary(run_dir), config=config)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the per-round rows of a ``metrics.jsonl`` file (JSON Lines, one object per round).

    Blank lines are skipped. Every other line must be a JSON object with at least ``round``,
    ``sim-clock-s`` and ``density``.

    Parameters
    ----------
    path : path-like
        The ``metrics.jsonl`` file, or the run folder that contains it.

    Returns
    -------
    list of dict
        Rows in file order.

    Raises
    ------
    DataError
        If the file is missing, or a line is not a JSON object with the required keys; the message names
        the file and the 1-based line number.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "metrics.jsonl").write_text('{"round": 0, "sim-clock-s": 2.0, "density": 1.0}\\n\\n')
    ...     rows = read_metrics(d)
    >>> [r["sim-clock-s"] for r in rows]
    [2.0]
    """
    file = Path(path)
    if file.is_dir():
        file = file / METRICS_FILE
    text = _read_text(file)
    rows: list[dict[str, Any]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{file} line {line_no}: expected one JSON object per line, got malformed JSON ({exc.msg}); "
                "the run may have been interrupted while writing, delete or repair that line"
            ) from exc
        except (ValueError, RecursionError) as exc:  # an int of > 4300 digits; nesting past the recursion limit
            raise DataError(f"{file} line {line_no}: expected a metrics row, got {type(exc).__name__}: {exc}") from exc
        _check_row(row, file, line_no)
        rows.append(row)
    return rows


def read_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a run folder's ``summary.json``.

    Parameters
    ----------
    run_dir : path-like
        The results folder (or the ``summary.json`` file itself).

    Returns
    -------
    dict
        The summary; it contains at least ``method``.

    Raises
    ------
    DataError
        If the file is missing, is not a JSON object, or has no ``method``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "summary.json").write_text('{"method": "prunefl", "rounds": 3}')
    ...     read_summary(d)["rounds"]
    3
    """
    file = Path(run_dir)
    if file.is_dir():
        file = file / SUMMARY_FILE
    try:
        summary = json.loads(_read_text(file))
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: expected a JSON object, got malformed JSON ({exc.msg} at line {exc.lineno})") from exc
    except (ValueError, RecursionError) as exc:  # an int of > 4300 digits; nesting past the recursion limit
        raise DataError(f"{file}: expected a run summary, got {type(exc).__name__}: {exc}") from exc
    if not isinstance(summary, dict):
        raise DataError(f"{file}: expected a JSON object, got {type(summary).__name__}")
    if K_METHOD not in summary:
        raise DataError(f"{file}: expected key {K_METHOD!r}, found only {sorted(summary)}")
    return summary


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a run folder's resolved ``config.toml``.

    Parameters
    ----------
    run_dir : path-like
        The results folder (or the ``config.toml`` file itself).

    Returns
    -------
    dict
        The parsed TOML document.

    Raises
    ------
    DataError
        If the file is missing, is larger than the config loader's ``MAX_CONFIG_BYTES`` or nested deeper than its
        ``MAX_TOML_NESTING`` (checked before the parser runs), or is not valid TOML; the message names the file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "config.toml").write_text('seed = 0\\n[fl]\\nrounds = 30\\n')
    ...     read_config(d)
    {'seed': 0, 'fl': {'rounds': 30}}
    """
    # the config loader's bounds (size, then nesting before the parser): the file may come from anyone
    from prunefl.experiments.config import MAX_CONFIG_BYTES, _parse_toml

    file = Path(run_dir)
    if file.is_dir():
        file = file / CONFIG_FILE
    try:
        return _parse_toml(_read_text(file, max_bytes=MAX_CONFIG_BYTES), str(file))
    except ConfigError as exc:
        raise DataError(f"{file}: expected the resolved run configuration as TOML, got: {exc}") from exc


def evaluated_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the rows in which the test set was evaluated (``test-accuracy`` present and not null).

    >>> evaluated_rows([{"round": 0, "test-accuracy": None}, {"round": 1, "test-accuracy": 0.5}, {"round": 2}])
    [{'round': 1, 'test-accuracy': 0.5}]
    """
    return [row for row in rows if row.get(K_TEST_ACCURACY) is not None]


def ip_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the initial-pruning rows (``stage == "ip"``).

    >>> ip_rows([{"round": 0, "stage": "ip"}, {"round": 0, "stage": "fl"}, {"round": 1}])
    [{'round': 0, 'stage': 'ip'}]
    """
    return [row for row in rows if row.get(K_STAGE) == STAGE_IP]


def fl_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the FL rows; a row without ``stage`` counts as FL.

    >>> [r["round"] for r in fl_rows([{"round": 0, "stage": "ip"}, {"round": 0, "stage": "fl"}, {"round": 1}])]
    [0, 1]
    """
    return [row for row in rows if row.get(K_STAGE, STAGE_FL) != STAGE_IP]


def plot_round(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Give each row its x position on a round axis: FL rounds as recorded, IP rounds at negative indices.

    IP rounds are counted back from the last one, which sits at -1, so that the IP/FL boundary is between
    -1 and 0 as in the paper's size plots (spec §11.5, "Figure conventions").

    >>> plot_round([{"round": 0, "stage": "ip"}, {"round": 1, "stage": "ip"}, {"round": 0, "stage": "fl"}])
    [-2, -1, 0]
    """
    ip_round_numbers = [int(row[K_ROUND]) for row in ip_rows(rows)]
    ip_offset = max(ip_round_numbers) + 1 if ip_round_numbers else 0
    return [int(row[K_ROUND]) - ip_offset if row.get(K_STAGE) == STAGE_IP else int(row[K_ROUND]) for row in rows]


def target_accuracies(summaries: Iterable[Mapping[str, Any]]) -> list[float]:
    """The target accuracies any of the run ``summaries`` lists (``targets``), each once, ascending.

    >>> target_accuracies([{"targets": [{"target-accuracy": 0.8}]}, {"targets": [{"target-accuracy": 0.7}]}, {}])
    [0.7, 0.8]
    """
    return sorted({float(t[K_TARGET_ACCURACY]) for s in summaries for t in s.get(K_TARGETS) or []})


def _read_text(file: Path, max_bytes: int | None = None) -> str:
    """The file's UTF-8 text; with ``max_bytes``, a larger file is refused after reading at most one byte more."""
    try:
        if max_bytes is None:
            return file.read_text(encoding="utf-8")
        with file.open("rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise DataError(f"{file}: larger than {max_bytes} bytes; a resolved run configuration is a few KB")
        return data.decode("utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{file}: not found; expected a results folder written by `prunefl run`") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: expected UTF-8 text, got undecodable bytes at offset {exc.start}") from exc


def _check_row(row: Any, file: Path, line_no: int) -> None:
    if not isinstance(row, dict):
        raise DataError(f"{file} line {line_no}: expected a JSON object, got {type(row).__name__}")
    missing = [key for key in _REQUIRED_ROW_KEYS if key not in row]
    if missing:
        raise DataError(f"{file} line {line_no}: expected keys {list(_REQUIRED_ROW_KEYS)}, missing {missing}")
    if not isinstance(row[K_ROUND], int) or isinstance(row[K_ROUND], bool):
        raise DataError(f"{file} line {line_no}: expected an integer {K_ROUND!r}, got {row[K_ROUND]!r}")
    for key in (K_SIM_CLOCK_S, K_DENSITY):
        value = row[key]
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise DataError(f"{file} line {line_no}: expected a finite number for {key!r}, got {value!r}")
