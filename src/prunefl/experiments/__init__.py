"""Runs as a researcher sees them: a TOML config in, a self-describing results folder out."""

from prunefl.experiments.config import (
    METHODS,
    DataConfig,
    FLConfig,
    ModelConfig,
    PruningConfig,
    RunConfig,
    TimingConfig,
    load_config,
)
from prunefl.experiments.results import load_checkpoint, save_checkpoint, summarize
from prunefl.experiments.runner import RunResult, run_experiment

__all__ = [
    "METHODS",
    "DataConfig",
    "FLConfig",
    "ModelConfig",
    "PruningConfig",
    "RunConfig",
    "RunResult",
    "TimingConfig",
    "load_checkpoint",
    "load_config",
    "run_experiment",
    "save_checkpoint",
    "summarize",
]
