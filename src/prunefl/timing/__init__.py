"""Simulated time: the per-device round-time model of spec §2.2 and its measured presets (spec §4)."""

from prunefl.timing.model import TimeModel
from prunefl.timing.presets import OFFICIAL_COMM_S_PER_WEIGHT, list_presets, preset_time_model

__all__ = ["OFFICIAL_COMM_S_PER_WEIGHT", "TimeModel", "list_presets", "preset_time_model"]
