"""prunefl: federated learning on edge devices with adaptive, distributed model pruning (PruneFL)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
