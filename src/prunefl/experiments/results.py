"""A run's results folder: resolved config, per-round metrics (JSON Lines), summary, checkpoint.

Everything is a plain, self-describing file: TOML, JSON, JSON Lines and safetensors. Nothing is pickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prunefl.errors import CheckpointError, ConfigError
from prunefl.experiments.config import RunConfig, config_from_dict, dump_toml
from prunefl import metrics as K

__all__ = ["ResultsWriter", "summarize", "save_checkpoint", "load_checkpoint", "new_run_dir"]

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"


def new_run_dir(out: str | Path | None, name: str, root: str | Path = "runs") -> Path:
    """Choose the run folder: ``out`` if given (must be absent or empty), else ``runs/<name>-<UTC time>``.

    Nothing is created here; :class:`ResultsWriter` creates the folder once the run is ready to start.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"--out {str(path)!r} exists and is not an empty folder; choose a new folder")
        return path
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    n = 1
    while path.exists():
        path = Path(root) / f"{name}-{stamp}-{n}"
        n += 1
    return path


class ResultsWriter:
    """Writes one run's folder as the run goes, so an interrupted run keeps every finished round."""

    def __init__(self, run_dir: str | Path, config: RunConfig) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / CONFIG_FILE).write_text(dump_toml(config), encoding="utf-8")
        self._metrics = open(self.run_dir / METRICS_FILE, "w", encoding="utf-8")
        self.rows: list[dict[str, Any]] = []

    def write_row(self, row: Mapping[str, Any]) -> None:
        """Append one metrics row and flush it to disk."""
        self.rows.append(dict(row))
        self._metrics.write(json.dumps(row, allow_nan=False, default=_jsonable) + "\n")
        self._metrics.flush()

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        path = self.run_dir / SUMMARY_FILE
        path.write_text(json.dumps(summary, indent=2, allow_nan=False, default=_jsonable) + "\n", encoding="utf-8")
        return path

    def close(self) -> None:
        self._metrics.close()


def summarize(
    rows: Sequence[Mapping[str, Any]], method: str, targets: Sequence[float], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Summarise FL metrics rows: final and best accuracy, totals, and the first crossing of each target.

    IP rows (stage "ip") count towards the totals of time and bytes but not towards accuracy targets' rounds.

    >>> rows = [{"round": 0, "stage": "fl", "sim-clock-s": 1.0, "wall-s": 0.1, "test-accuracy": 0.5,
    ...          "density": 1.0, "bytes-up": 4, "bytes-down": 4},
    ...         {"round": 1, "stage": "fl", "sim-clock-s": 2.0, "wall-s": 0.2, "test-accuracy": 0.9,
    ...          "density": 1.0, "bytes-up": 4, "bytes-down": 4}]
    >>> s = summarize(rows, "fedavg", [0.8])
    >>> s["final-accuracy"], s["targets"][0]["round"], s["targets"][0]["sim-clock-s"]
    (0.9, 1, 2.0)
    """
    fl_rows = [r for r in rows if r.get(K.K_STAGE, "fl") == "fl"]
    evaluated = [r for r in fl_rows if r.get(K.K_TEST_ACCURACY) is not None]
    last = rows[-1] if rows else {}
    target_rows = []
    for t in targets:
        hit = next((r for r in evaluated if r[K.K_TEST_ACCURACY] >= t), None)
        target_rows.append(
            {
                K.K_TARGET_ACCURACY: t,
                K.K_ROUND: None if hit is None else hit[K.K_ROUND],
                K.K_SIM_CLOCK_S: None if hit is None else hit[K.K_SIM_CLOCK_S],
                K.K_WALL_S: None if hit is None else hit[K.K_WALL_S],
            }
        )
    summary: dict[str, Any] = {
        K.K_METHOD: method,
        K.K_ROUNDS: len(fl_rows),
        K.K_FINAL_ACCURACY: evaluated[-1][K.K_TEST_ACCURACY] if evaluated else None,
        K.K_BEST_ACCURACY: max((r[K.K_TEST_ACCURACY] for r in evaluated), default=None),
        K.K_FINAL_DENSITY: last.get(K.K_DENSITY),
        K.K_SIM_CLOCK_S: last.get(K.K_SIM_CLOCK_S, 0.0),
        K.K_WALL_S: last.get(K.K_WALL_S, 0.0),
        K.K_BYTES_UP: int(sum(r.get(K.K_BYTES_UP, 0) for r in rows)),
        K.K_BYTES_DOWN: int(sum(r.get(K.K_BYTES_DOWN, 0) for r in rows)),
        K.K_TARGETS: target_rows,
    }
    if extra:
        summary.update(extra)
    return summary


def save_checkpoint(
    run_dir: str | Path,
    state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    config: RunConfig,
    round: int,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save global state and masks as safetensors, plus a JSON file with the config, round and metadata.

    Tensor names are prefixed ``state/``, ``mask/`` (bool stored as uint8) and ``extra/``.
    """
    run_dir = Path(run_dir)
    tensors = {f"state/{k}": v.detach().contiguous().cpu() for k, v in state.items()}
    tensors.update({f"mask/{k}": v.detach().to(torch.uint8).contiguous().cpu() for k, v in masks.items()})
    tensors.update({f"extra/{k}": v.detach().contiguous().cpu() for k, v in (extra_tensors or {}).items()})
    save_file(tensors, str(run_dir / CHECKPOINT_TENSORS))
    doc = {"format": "prunefl-checkpoint", "version": 1, "round": round, "config": dump_toml(config), "meta": dict(meta or {})}
    (run_dir / CHECKPOINT_META).write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return run_dir / CHECKPOINT_TENSORS


def load_checkpoint(
    run_dir: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], RunConfig, dict[str, Any], dict[str, torch.Tensor]]:
    """Load ``(state, masks, config, meta-document, extra tensors)`` written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        Files missing, unreadable, or not a prunefl checkpoint.
    """
    import tomllib

    run_dir = Path(run_dir)
    try:
        doc = json.loads((run_dir / CHECKPOINT_META).read_text(encoding="utf-8"))
        tensors = load_file(str(run_dir / CHECKPOINT_TENSORS))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read a checkpoint in {str(run_dir)!r}: {exc}") from exc
    if doc.get("format") != "prunefl-checkpoint" or doc.get("version") != 1:
        raise CheckpointError(f"{str(run_dir / CHECKPOINT_META)!r} is not a version-1 prunefl checkpoint")
    config = config_from_dict(tomllib.loads(doc["config"]))
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("state/")}
    masks = {k[5:]: v.to(torch.bool) for k, v in tensors.items() if k.startswith("mask/")}
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra/")}
    return state, masks, config, doc, extra


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
