"""Mask decisions of PruneFL: the reconfiguration step, its schedules, and slow reference oracles."""

from prunefl.pruning.reconfigure import Reconfiguration, reconfigure
from prunefl.pruning.reference import brute_force_best_masks, reconfigure_reference
from prunefl.pruning.schedules import density_cap, is_reconfiguration_round, max_decrease

__all__ = [
    "Reconfiguration",
    "brute_force_best_masks",
    "density_cap",
    "is_reconfiguration_round",
    "max_decrease",
    "reconfigure",
    "reconfigure_reference",
]
