"""Engines move messages and keep time; every decision is in the engine-agnostic core."""

from prunefl.engines.simulation import SimulationEngine, SimulationSetup

__all__ = ["SimulationEngine", "SimulationSetup"]
