"""The method registry: each method name's factory, display name, config table and what it needs from a reference.

Every method file declares ``SPECS``, a list of :class:`MethodSpec`; the registry collects them from the modules
named in ``_MODULES``. The runner, the engines and the report look methods up here and contain no method names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prunefl.errors import ConfigError
from prunefl.pruning.methods.base import Method, MethodContext, ReferenceRun

__all__ = ["MethodSpec", "Need", "REFERENCE_METHOD", "get_spec", "method_names", "build_method", "all_specs"]

Need = Literal["density", "mask", "init"]
Factory = Callable[[Any, MethodContext, ReferenceRun | None], Method]

# In a comparison (``prunefl compare``), methods that need a reference take this method's run of their seed
# (spec §8: the official baselines read PruneFL's saved models).
REFERENCE_METHOD = "prunefl"

# One module per method (or family of variants), in the order reports list them.
_MODULES = (
    "fedavg",
    "prunefl",
    "snip",
    "synflow",
    "iterative",
    "online",
    "random",
    "feddst",
    "reinit",
)


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes
    ----------
    name : str
        The name used in configs and on the command line (``pruning.method``, ``--methods``).
    display_name : str
        The name in tables and legends.
    factory : Callable
        ``factory(settings, context, reference) -> Method``; ``settings`` is the config table ``section`` (None
        when the method has none), ``reference`` the reference run when ``needs`` is not empty.
    description : str
        One line for ``--help`` and reports.
    section : str or None
        The config table holding the method's own settings (default: None).
    needs : frozenset of {"density", "mask", "init"}
        What the method takes from a reference run: its final density, its final mask, its initial weights
        (default: nothing).
    extension : bool
        Not in the official PruneFL code (spec §8); reports label it (default: False).
    warning : str
        A caveat every report prints beside the method (the online baseline uploads raw samples) (default: "").
    baseline : bool
        Speed-ups are measured against this method (default: False).
    colour : str
        Matplotlib colour of its curves (the paper's colours for the official methods) (default: "").
    initial_pruning : bool
        Runs initial pruning, so reports show its time charged and not charged (default: False).
    lottery : bool
        Belongs in the lottery-ticket figure beside the baseline (spec §11.5: reinit, random reinit, SNIP)
        (default: False).
    """

    name: str
    display_name: str
    factory: Factory
    description: str
    section: str | None = None
    needs: frozenset[Need] = frozenset()
    extension: bool = False
    warning: str = ""
    baseline: bool = False
    colour: str = ""
    initial_pruning: bool = False
    lottery: bool = False


def all_specs() -> list[MethodSpec]:
    """Every registered method, in report order."""
    if not _REGISTRY:
        _load()
    return list(_REGISTRY.values())


def method_names() -> tuple[str, ...]:
    """Names of every registered method.

    >>> "prunefl" in method_names() and "fedavg" in method_names()
    True
    """
    return tuple(spec.name for spec in all_specs())


def get_spec(name: str) -> MethodSpec:
    """The spec of method ``name``.

    Raises
    ------
    ConfigError
        ``name`` is not registered (the message lists the registered names).
    """
    if not _REGISTRY:
        _load()
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(_REGISTRY)}")
    return spec


def build_method(name: str, settings: Any, context: MethodContext, reference: ReferenceRun | None) -> Method:
    """Build method ``name``, checking first that ``reference`` holds what it needs.

    Raises
    ------
    ConfigError
        The method needs a reference density, mask or initial weights that ``reference`` lacks.
    """
    spec = get_spec(name)
    missing = sorted(need for need in spec.needs if _reference_value(reference, need) is None)
    if missing:
        have = "no reference run" if reference is None else f"reference {reference.source!r}"
        raise ConfigError(
            f"method {name!r} needs the reference run's {', '.join(missing)}, but there is {have}; run it in a "
            "comparison with prunefl (it takes PruneFL's run of the same seed), or set reference.run_dir to a "
            "finished PruneFL run folder" + (" or reference.density" if missing == ["density"] else "")
        )
    return spec.factory(settings, context, reference if spec.needs else None)


_REGISTRY: dict[str, MethodSpec] = {}


def _load() -> None:
    found: dict[str, MethodSpec] = {}
    for module in _MODULES:
        for spec in importlib.import_module(f"prunefl.pruning.methods.{module}").SPECS:
            if spec.name in found:
                raise RuntimeError(f"method {spec.name!r} is registered twice")  # our own bug
            found[spec.name] = spec
    _REGISTRY.update(found)


def _reference_value(reference: ReferenceRun | None, need: str) -> Any:
    if reference is None:
        return None
    return {"density": reference.density, "mask": reference.masks, "init": reference.init_state}[need]
