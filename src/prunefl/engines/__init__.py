"""Engines move messages and keep time; every decision is in the engine-agnostic core."""

from prunefl.engines.simulation import MaskPolicy, SimulationEngine, SimulationSetup

__all__ = ["MaskPolicy", "SimulationEngine", "SimulationSetup"]
