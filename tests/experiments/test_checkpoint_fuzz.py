"""Fuzz the checkpoint loader: a damaged run state gives CheckpointError, nothing else (issue 10 parts 1 and 4).

A real checkpoint of a small run (PruneFL with reconfiguration and momentum: server, link, method, clients with
importance, momentum buffers and cached masks) is mutated, structure-aware, and resealed (the JSON names the
mutated tensors' SHA-256, so the checks behind the seal are reached): any value of the JSON replaced by another
JSON value, and tensors dropped, renamed, reshaped or retyped. Each mutant is loaded
(:func:`prunefl.experiments.state.load_run_state`) and, when that succeeds, loaded into a run built from the
config (:func:`prunefl.experiments.state.restore_run_state`). Hypothesis runs derandomised: the same cases in CI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunefl.cli import main
from prunefl.engines.simulation import SimulationEngine
from prunefl.errors import CheckpointError
from prunefl.experiments.results import read_checkpoint_files, write_checkpoint_files
from prunefl.experiments.runner import build_simulation, load_run_dataset
from prunefl.experiments.state import load_run_state, restore_run_state
from resume_runs import run_args, write_config

SETS = ["method=prunefl-no-ip", "fl.momentum=0.5", "rounds=3", "first_reconfig_round=1", "reconfig_interval=1"]

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    folder = tmp_path_factory.mktemp("fuzz")
    assert main(run_args(write_config(folder), folder / "run", SETS)) == 0
    tensors, doc = read_checkpoint_files(folder / "run")
    del doc["tensors"]
    return folder / "run", tensors, doc


@pytest.fixture(scope="module")
def engine(original: tuple[Path, dict[str, torch.Tensor], dict[str, Any]]) -> SimulationEngine:
    config = load_run_state(original[0]).config
    return SimulationEngine(build_simulation(config, load_run_dataset(config)))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(doc))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def _load_only_checkpoint_error(folder: Path, engine: SimulationEngine) -> None:
    try:
        state = load_run_state(folder)
        restore_run_state(engine, state)
    except CheckpointError:
        pass


@pytest.mark.slow
@settings(max_examples=600, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_json_value_replaced_gives_checkpoint_error_or_a_loadable_state(
    data: st.DataObject, original: tuple[Path, dict[str, torch.Tensor], dict[str, Any]], engine: SimulationEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Prepare: one value anywhere in the JSON (the config text, the run state, a client's table...) replaced
    run, tensors, doc = original
    path = data.draw(st.sampled_from(_paths(doc)))
    mutant = _replace(doc, path, data.draw(JSON_VALUES))
    folder = tmp_path_factory.mktemp("json")
    shutil.copy(run / "metrics.jsonl", folder / "metrics.jsonl")
    write_checkpoint_files(folder, tensors, mutant)
    # Execute / Assert: only CheckpointError escapes
    _load_only_checkpoint_error(folder, engine)


@pytest.mark.slow
@settings(max_examples=600, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_tensors_dropped_renamed_reshaped_or_retyped_give_checkpoint_error(
    data: st.DataObject, original: tuple[Path, dict[str, torch.Tensor], dict[str, Any]], engine: SimulationEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Prepare
    run, tensors, doc = original
    mutant = dict(tensors)
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(sorted(mutant)))
        how = data.draw(st.sampled_from(["drop", "rename", "reshape", "retype", "empty"]))
        value = mutant.pop(name)
        if how == "rename":
            mutant[data.draw(st.sampled_from(sorted(tensors))) + data.draw(st.sampled_from(["", "x", "/y"]))] = value
        elif how == "reshape":
            mutant[name] = torch.zeros(value.numel() + data.draw(st.integers(1, 5)), dtype=value.dtype)
        elif how == "retype":
            mutant[name] = value.to(data.draw(st.sampled_from([torch.float64, torch.int64, torch.uint8, torch.bool])))
        elif how == "empty":
            mutant[name] = value.reshape(-1)[:0]
    folder = tmp_path_factory.mktemp("tensors")
    shutil.copy(run / "metrics.jsonl", folder / "metrics.jsonl")
    write_checkpoint_files(folder, mutant, doc)
    # Execute / Assert
    _load_only_checkpoint_error(folder, engine)
