"""A client's endless, reshuffled stream of minibatch indices, persistent across rounds (spec §3.10)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from prunefl.errors import CheckpointError

__all__ = ["BatchStream"]


class BatchStream:
    """Yields minibatches of a client's sample indices; reshuffles at each pass, cycles small partitions.

    State lasts across rounds (the official workers keep one shuffled stream per partition), so it is a class;
    :meth:`state_dict` holds it (the current pass's order, the position in it and the generator's state), so a
    client rebuilt from its partition continues the same stream.

    Parameters
    ----------
    indices : numpy.ndarray
        The client's training-sample indices, shape ``(n,)``, n ≥ 1.
    rng : numpy.random.Generator
        Source of the shuffles; derive it from the run seed and client id.

    Examples
    --------
    >>> s = BatchStream(np.arange(3), np.random.default_rng(0))
    >>> sorted(np.concatenate([s.next(2), s.next(2)])[:3].tolist())
    [0, 1, 2]
    """

    def __init__(self, indices: np.ndarray, rng: np.random.Generator) -> None:
        if indices.size == 0:
            raise ValueError("a client needs at least one training sample, got an empty partition")
        self._indices = np.asarray(indices, dtype=np.int64)
        self._rng = rng
        self._order = self._rng.permutation(self._indices)
        self._pos = 0

    def __len__(self) -> int:
        return int(self._indices.size)

    def next(self, batch_size: int) -> np.ndarray:
        """Return the next ``batch_size`` indices, starting new shuffled passes as needed."""
        parts = []
        need = batch_size
        while need > 0:  # loops once per pass crossed, never per sample
            take = min(need, self._order.size - self._pos)
            parts.append(self._order[self._pos : self._pos + take])
            self._pos += take
            need -= take
            if self._pos == self._order.size:
                self._order = self._rng.permutation(self._indices)
                self._pos = 0
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def state_dict(self) -> dict[str, Any]:
        """The stream's position: this pass's order, the position in it and the generator's state.

        Returns ``{"order": int64 tensor (n,), "position": int, "rng": JSON text of the bit generator's
        state}``: tensors and JSON-able values only (the generator state's integers exceed 64 bits, so they
        travel as JSON text).

        Examples
        --------
        >>> s = BatchStream(np.arange(3), np.random.default_rng(0))
        >>> _ = s.next(2)
        >>> s.state_dict()["position"]
        2
        """
        return {
            "order": torch.from_numpy(self._order.copy()),
            "position": self._pos,
            "rng": json.dumps(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream that :meth:`state_dict` described; the stream must be over the same indices.

        Raises
        ------
        CheckpointError
            A key is missing, the order is not a permutation of this stream's indices, the position is outside
            it, or the generator state is of another kind. The stream is left unchanged.

        Examples
        --------
        >>> a = BatchStream(np.arange(5), np.random.default_rng(0))
        >>> b = BatchStream(np.arange(5), np.random.default_rng(1))
        >>> _ = a.next(3)
        >>> b.load_state_dict(a.state_dict())
        >>> bool(np.array_equal(a.next(4), b.next(4)))
        True
        """
        missing = sorted({"order", "position", "rng"} - set(state))
        if missing:
            raise CheckpointError(f"batch stream state misses {missing}; expected order, position and rng")
        raw = state["order"]
        if isinstance(raw, torch.Tensor):
            integer = not (raw.dtype.is_floating_point or raw.dtype.is_complex or raw.dtype == torch.bool)
        else:
            integer = np.asarray(raw).dtype.kind in "iu"
        if not integer:
            raise CheckpointError(f"batch stream order must hold integer indices, got dtype {getattr(raw, 'dtype', None)}")
        order = np.asarray(raw, dtype=np.int64).reshape(-1)
        if not np.array_equal(np.sort(order), np.sort(self._indices)):
            raise CheckpointError(
                f"batch stream order of {order.size} indices is not a permutation of this client's {self._indices.size}"
                " training indices; load the state of the same client and partition"
            )
        position = state["position"]
        if not isinstance(position, int) or not 0 <= position < order.size:
            raise CheckpointError(f"batch stream position must be an int in [0, {order.size}), got {position!r}")
        try:  # validated on a scratch generator of the same kind first, so a bad state changes nothing
            rng_state = json.loads(state["rng"])
            type(self._rng.bit_generator)().state = rng_state
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"batch stream rng state could not be restored: {error}") from error
        self._order = order.copy()
        self._pos = position
        self._rng.bit_generator.state = rng_state
