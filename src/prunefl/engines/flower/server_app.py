"""The Flower ServerApp: resolve the run config, run the experiment with the Flower engine, write the results folder.

An entry point, like :mod:`prunefl.cli`: it sits above :mod:`prunefl.experiments` (it calls
:func:`prunefl.experiments.runner.run_experiment`, which builds the run exactly as for a simulated one and writes
the same results folder: config.toml, metrics.jsonl, summary.json, checkpoint, plots, report.md), while
:mod:`prunefl.engines.flower.driver` stays below it.

A method whose ``before_fl`` trains on a client's own data (PruneFL's initial pruning) runs it on that client's
node (:meth:`prunefl.engines.flower.driver.FlowerEngine.run_before_fl`); other methods' ``before_fl`` (pruning at
initialisation, a reference mask) runs in the ServerApp's process, as in the simulation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from prunefl.engines.flower.app_config import config_digest, parse_run_config
from prunefl.engines.flower.driver import FlowerEngine
from prunefl.engines.simulation import SimulationEngine, SimulationSetup
from prunefl.errors import PruneFLError
from prunefl.experiments.runner import RunResult, run_experiment
from prunefl.experiments.state import load_run_state

__all__ = ["app", "run_on_grid"]

logger = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry point: one prunefl run over the connected SuperNodes."""
    try:
        result = run_on_grid(grid, context.run_config, run_id=context.run_id)
    except PruneFLError as error:  # the run stops cleanly: finished rounds and the last checkpoint stay on disk
        logger.error("prunefl run stopped: %s: %s", type(error).__name__, error)
        raise  # Flower then marks the run failed (`flwr ls` status finished:failed)
    logger.info("prunefl run finished: results in %s", result.run_dir)


def run_on_grid(grid: Grid, run_config: Mapping[str, object], run_id: int = 0, plots: bool = True) -> RunResult:
    """Run the experiment that ``run_config`` describes on ``grid``'s nodes and write its results folder.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        Flower's link to the SuperNodes (one per partition, each started with ``--node-config partition-id=<i>``).
    run_config : Mapping[str, object]
        Flower's run config (:func:`prunefl.engines.flower.app_config.parse_run_config`).
    run_id : int
        Flower's run id, naming the default results folder (default: 0).
    plots : bool
        Draw the plots and the report, as a simulated run does (default: True).

    Raises
    ------
    ConfigError
        The run config is invalid.
    InconsistentRepliesError, DecodeError
        Nodes are missing, fail, or reply with malformed or inconsistent messages, or fewer valid replies than
        ``fl.min_valid_replies`` came in a round (``TooFewRepliesError``); the results folder keeps every finished
        round and the last checkpoint, from which ``prunefl.resume`` continues.
    CheckpointError
        ``prunefl.resume`` names a folder without a whole checkpoint, or one of another run.
    """
    config, settings = parse_run_config(run_config)
    resume = load_run_state(settings.resume) if settings.resume else None
    run_dir = Path(settings.resume) if settings.resume else settings.results_dir(run_id)

    def engine(setup: SimulationSetup) -> SimulationEngine:
        return FlowerEngine(setup, grid, settings, config_digest(config))

    return run_experiment(config, run_dir, plots=plots, engine_factory=engine, resume=resume)
