"""Every seeded stream of a run, named once: spawn-key tags for ``numpy.random.SeedSequence(seed, spawn_key=...)``.

Each purpose draws from its own stream keyed by (run seed, tag, ...), so results do not depend on the order in
which streams are consumed, and a method added later cannot shift another's draws. (The profiler's streams are
its own, keyed by the profile seed, in :mod:`prunefl.timing.profile`.)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SELECTION_STREAM",
    "DEVICE_STREAM",
    "BATCH_STREAM",
    "AUGMENT_STREAM",
    "EVAL_SUBSET_STREAM",
    "IP_STREAM",
    "METHOD_STREAM",
    "CLIENT_HOOK_STREAM",
    "rng",
]

SELECTION_STREAM = 1  # which clients train in a round: (tag, round)
DEVICE_STREAM = 2  # device heterogeneity draws
BATCH_STREAM = 3  # a client's minibatch order: (tag, client)
AUGMENT_STREAM = 4  # a client's augmentation generator: (tag, client)
EVAL_SUBSET_STREAM = 5  # the fixed evaluation subset
IP_STREAM = 6  # the initial-pruning client's fixed batches
METHOD_STREAM = 7  # a method's own server-side draws (random masks, stochastic rounding): (tag, ...)
CLIENT_HOOK_STREAM = 8  # a method's client-side draws: (tag, client, round)


def rng(seed: int, *key: int) -> np.random.Generator:
    """A generator for the stream ``key`` of run ``seed``.

    >>> float(rng(0, METHOD_STREAM).random()) == float(rng(0, METHOD_STREAM).random())
    True
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))
