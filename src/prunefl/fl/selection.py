"""Which clients train in a round: all of them, or M of N drawn from the run seed (spec §3.10)."""

from __future__ import annotations

import numpy as np

from prunefl.seeds import SELECTION_STREAM

__all__ = ["select_clients", "SELECTION_STREAM"]



def select_clients(num_clients: int, per_round: int, seed: int, round: int) -> list[int]:
    """Return the sorted ids of the clients that train in ``round``.

    With ``per_round == num_clients`` every client trains (the official default). Otherwise ``per_round``
    clients are drawn uniformly without replacement from a generator keyed by (seed, round), so the draw does
    not depend on how many rounds ran before (resume gives the same clients).

    >>> select_clients(5, 5, seed=0, round=3)
    [0, 1, 2, 3, 4]
    >>> select_clients(10, 3, seed=0, round=1) == select_clients(10, 3, seed=0, round=1)
    True
    """
    if not 1 <= per_round <= num_clients:
        raise ValueError(f"per_round must be in [1, {num_clients}], got {per_round}")
    if per_round == num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SELECTION_STREAM, round)))
    return sorted(int(i) for i in rng.choice(num_clients, size=per_round, replace=False))
