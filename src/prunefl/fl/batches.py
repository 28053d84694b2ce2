"""A client's endless, reshuffled stream of minibatch indices, persistent across rounds (spec §3.10)."""

from __future__ import annotations

import numpy as np

__all__ = ["BatchStream"]


class BatchStream:
    """Yields minibatches of a client's sample indices; reshuffles at each pass, cycles small partitions.

    State lasts across rounds (the official workers keep one shuffled stream per partition), so it is a class.

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
