"""Test hook: kill this process at a named point of a run, so kill-and-resume tests are deterministic.

The one place that reads the environment variable ``PRUNEFL_FAULT_INJECT``. It is a *test hook*, not a
feature: unset (always, outside tests) :func:`fault_point` returns at once and does nothing. Set, it holds one
``point=count`` pair, and the process sends itself SIGKILL (no cleanup, no ``finally``, no flush: exactly what a
power cut or an OOM kill does) when it reaches that point with that count:

* ``kill-after-round=R``: FL round ``R`` (0-based) finished and its metrics row was written, before any
  checkpoint at that boundary;
* ``kill-inside-round=R``: the clients of round ``R`` trained (their states moved on), before aggregation;
* ``kill-checkpoint-written=N``: the ``N``-th checkpoint's temporary files are complete, none renamed yet;
* ``kill-checkpoint-half=N``: the ``N``-th checkpoint's tensors file was renamed into place, its JSON not yet
  (the torn pair a resume rolls forward).

Checkpoints are counted from 1 in the process that writes them (the one before round 0 is the first).
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_ENV", "fault_point"]

FAULT_ENV = "PRUNEFL_FAULT_INJECT"


def fault_point(point: str, count: int) -> None:
    """SIGKILL this process if ``PRUNEFL_FAULT_INJECT`` is ``"<point>=<count>"``; otherwise do nothing.

    >>> fault_point("kill-after-round", 3)  # the variable is unset outside kill tests: nothing happens
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, value = spec.partition("=")
    if name.strip() == point and value.strip() == str(count):
        os.kill(os.getpid(), signal.SIGKILL)
