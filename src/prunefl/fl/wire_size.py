"""Bytes a message occupies on the wire under the plain uncompressed encoding.

Until the sparse codec lands, messages travel as dense little-endian arrays: float32 state entries and one bit
per mask entry. These are the sizes a straightforward transport really sends, not an estimate of a sparse one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from prunefl.fl.messages import TrainIns, TrainRes

__all__ = ["train_ins_nbytes", "train_res_nbytes"]


def train_ins_nbytes(ins: TrainIns) -> int:
    """Bytes sent to one client: the full state plus a packed bitmask per prunable weight.

    >>> ins = TrainIns(0, {"w": np.zeros(10, np.float32)}, {"w": np.ones(10, bool)}, 0.1, 1, 1)
    >>> train_ins_nbytes(ins)
    42
    """
    return _arrays_nbytes(ins.state) + sum((np.size(m) + 7) // 8 for m in ins.masks.values())


def train_res_nbytes(res: TrainRes) -> int:
    """Bytes one client sends back: its state, plus its importance in reconfiguration rounds."""
    return _arrays_nbytes(res.state) + (_arrays_nbytes(res.importance) if res.importance is not None else 0)


def _arrays_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))
