"""Runs as a researcher sees them: a TOML config in, a self-describing results folder out."""

from prunefl.experiments.compare import ComparisonResult, RunProgress, run_comparison
from prunefl.experiments.config import (
    DataConfig,
    FLConfig,
    ModelConfig,
    PruningConfig,
    ReferenceConfig,
    RunConfig,
    TimingConfig,
    load_config,
)
from prunefl.experiments.results import load_checkpoint, save_checkpoint, summarize
from prunefl.experiments.runner import RunResult, run_experiment

__all__ = [
    "ComparisonResult",
    "DataConfig",
    "FLConfig",
    "ModelConfig",
    "PruningConfig",
    "ReferenceConfig",
    "RunConfig",
    "RunProgress",
    "RunResult",
    "TimingConfig",
    "load_checkpoint",
    "load_config",
    "run_comparison",
    "run_experiment",
    "save_checkpoint",
    "summarize",
]
