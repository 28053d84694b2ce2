"""The shared base of methods that prune to a target density taken from a reference run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from prunefl import metrics as K
from prunefl.errors import check_setting as _check
from prunefl.pruning.methods.base import Method
from prunefl.sparse.masks import kept_counts, total_counts

__all__ = ["DensityTargetMethod"]


class DensityTargetMethod(Method):
    """A method whose target density d comes from a reference run (SNIP, SynFlow, random, iterative, FedDST).

    These baselines are compared with PruneFL at PruneFL's final density (spec §8), so each of them took d and
    the reference's provenance, checked d in the same words, reported both first in its summary and kept what
    it decided (kept/total counts) in a dict that is also its checkpoint state. This class holds that once; a
    subclass adds its own settings and hooks.

    Subclasses set :attr:`name` (the registry name, used in the error message), call ``super().__init__`` before
    anything that uses d, put their own summary entries in :meth:`_summary_entries` and what they decided in
    ``_outcome`` (:meth:`_counts` gives the usual kept/total counts). One whose state is more than ``_outcome``
    overrides :meth:`state_dict` and :meth:`load_state_dict`.

    Parameters
    ----------
    target_density : float
        d in (0, 1], the reference run's final density.
    reference_source : str
        Where d came from (``ReferenceRun.source``), reported in the summary (default: "").

    Raises
    ------
    ConfigError
        ``target_density`` is not in (0, 1].

    Examples
    --------
    >>> class Fixed(DensityTargetMethod):
    ...     name = "fixed"
    >>> Fixed(0.3, "config").summary()
    {'target-density': 0.3, 'reference-source': 'config'}
    """

    #: the method's registry name, for the message when d is out of range
    name: ClassVar[str]

    def __init__(self, target_density: float, reference_source: str = "") -> None:
        _check(0 < target_density <= 1, "reference.density", target_density, f"must be in (0, 1] for {self.name}")
        self.target_density = target_density
        self.reference_source = reference_source
        self._outcome: dict[str, Any] = {}  # what the method decided (e.g. kept and total counts); its state

    def summary(self) -> dict[str, Any]:
        """The target density and its source, then :meth:`_summary_entries`, then the outcome."""
        return {
            K.K_TARGET_DENSITY: self.target_density,
            K.K_REFERENCE_SOURCE: self.reference_source,
            **self._summary_entries(),
            **self._outcome,
        }

    def state_dict(self) -> dict[str, Any]:
        return dict(self._outcome)  # the masks are the server's; a decided outcome also tells a resumed run

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._outcome = dict(state)

    def _summary_entries(self) -> dict[str, Any]:
        """The method's own summary entries (its settings), between the reference's and the outcome."""
        return {}

    @staticmethod
    def _counts(masks: Mapping[str, Tensor]) -> dict[str, int]:
        """The outcome entries n-kept and n-total: the kept and total weight counts of ``masks``."""
        return {K.K_N_KEPT: sum(kept_counts(masks).values()), K.K_N_TOTAL: sum(total_counts(masks).values())}
