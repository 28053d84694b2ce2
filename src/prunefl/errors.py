"""Every exception prunefl raises on purpose, so callers can catch one family."""

from __future__ import annotations

__all__ = [
    "PruneFLError",
    "ConfigError",
    "DataError",
    "DecodeError",
    "InconsistentRepliesError",
    "CheckpointError",
    "check_setting",
]


class PruneFLError(Exception):
    """Base class of all prunefl errors."""


class ConfigError(PruneFLError, ValueError):
    """A configuration value is unknown, of the wrong type, or out of range.

    The message names the key and the offending value.
    """


class DataError(PruneFLError, OSError):
    """A data set is missing or malformed; the message says what was expected where and how to get it."""


class DecodeError(PruneFLError, ValueError):
    """Bytes received from another process or machine are malformed, oversized or inconsistent."""


class InconsistentRepliesError(PruneFLError, ValueError):
    """Client replies in one round disagree with each other or with what the server sent."""


class CheckpointError(PruneFLError, OSError):
    """A checkpoint is missing, corrupt, or does not match the run it is loaded into."""


def check_setting(ok: bool, key: str, value: object, rule: str) -> None:
    """Raise :class:`ConfigError` "<key> <rule>, got <value>" unless ``ok``; settings dataclasses validate with it.

    >>> check_setting(True, "fl.lr", 0.1, "must be > 0")
    """
    if not ok:
        raise ConfigError(f"{key} {rule}, got {value!r}")
