"""Weight initialisation schemes a run can choose between."""

from __future__ import annotations

from typing import Literal

from torch import nn

__all__ = ["InitScheme", "apply_init_"]

InitScheme = Literal["official", "pytorch"]


def apply_init_(model: nn.Module, scheme: InitScheme) -> None:
    """Re-initialise ``model`` in place according to ``scheme``.

    ``official`` keeps what the model's constructor did (the official code's inits, spec §6). ``pytorch`` resets
    every submodule with a ``reset_parameters`` method to PyTorch's defaults. This matters for Conv-2 on a
    10-class task: the official kaiming-uniform fan_out init of fc2 scales with 1/√10 instead of 1/√62, and plain
    SGD with cross-entropy at lr 0.25 diverges in the first steps, whereas PyTorch's default init trains.

    >>> m = nn.Linear(4, 2)
    >>> apply_init_(m, "official")
    >>> apply_init_(m, "pytorch")
    """
    if scheme == "official":
        return
    if scheme == "pytorch":
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and module is not model:
                reset()
        return
    raise ValueError(f"unknown init scheme {scheme!r}; expected 'official' or 'pytorch'")
