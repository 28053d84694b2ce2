"""The reference run a baseline takes its density, mask or initial weights from: a PruneFL run folder, or a density.

Spec §10 item 12: the official baselines read PruneFL's outputs from fixed paths; here the source is explicit
(``[reference]`` or the comparison's own PruneFL run) and recorded in the baseline's summary.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from prunefl import metrics as K
from prunefl.errors import CheckpointError, ConfigError
from prunefl.experiments.config import RunConfig
from prunefl.experiments.results import SUMMARY_FILE, load_checkpoint
from prunefl.pruning.methods import ReferenceRun

__all__ = ["resolve_reference", "load_reference_run"]


MAX_SUMMARY_BYTES = 64 << 20  # a run's summary.json is kilobytes


def resolve_reference(config: RunConfig) -> ReferenceRun | None:
    """The reference the config names: ``reference.run_dir`` (with ``reference.density`` overriding its density),
    or a bare ``reference.density``; None when neither is set.

    Raises
    ------
    ConfigError
        ``reference.run_dir`` is not a finished run folder.
    """
    r = config.reference
    if r.run_dir:
        ref = load_reference_run(r.run_dir)
        return dataclasses.replace(ref, density=r.density) if r.density > 0 else ref
    if r.density > 0:
        return ReferenceRun(source="config", density=r.density)
    return None


def load_reference_run(run_dir: str | Path) -> ReferenceRun:
    """Read a finished run folder's final density (summary.json), final masks and initial weights (checkpoint).

    Raises
    ------
    ConfigError
        The folder has no summary or checkpoint, or they cannot be read (the message names the file).
    """
    run_dir = Path(run_dir)
    summary_file = run_dir / SUMMARY_FILE
    try:
        with open(summary_file, "rb") as f:
            raw = f.read(MAX_SUMMARY_BYTES + 1)
        if len(raw) > MAX_SUMMARY_BYTES:
            raise ValueError(f"{str(summary_file)!r} is larger than {MAX_SUMMARY_BYTES} bytes")
        summary = json.loads(raw.decode("utf-8"))
        _, masks, _, _, extra = load_checkpoint(run_dir)
    except (OSError, ValueError, RecursionError, CheckpointError) as exc:
        raise ConfigError(
            f"reference.run_dir {str(run_dir)!r} is not a finished run folder (summary.json and checkpoint): {exc}"
        ) from exc
    density = summary.get(K.K_FINAL_DENSITY) if isinstance(summary, dict) else None
    if not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ConfigError(f"{str(summary_file)!r} has no final density in (0, 1], found {density!r}")
    init = {k[len("init/"):]: v for k, v in extra.items() if k.startswith("init/")}
    return ReferenceRun(
        source=str(run_dir),
        density=float(density),
        masks={k: v.to(torch.bool) for k, v in masks.items()},
        init_state=init or None,
    )
