"""Every exception prunefl raises on purpose, so callers can catch one family."""

from __future__ import annotations

__all__ = [
    "PruneFLError",
    "ConfigError",
    "DataError",
    "DecodeError",
    "InconsistentRepliesError",
    "TooFewRepliesError",
    "EntriesMismatchError",
    "MaskMismatchError",
    "DtypeMismatchError",
    "ScalarRangeError",
    "CheckpointError",
    "ResultsWriteError",
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


class TooFewRepliesError(InconsistentRepliesError):
    """Fewer valid replies than ``fl.min_valid_replies`` remained after validation; the round was not applied.

    ``rejections`` lists each rejected reply (:class:`prunefl.fl.validate.Rejection`), ``missing`` the
    participants that did not reply. Nothing on the server changed.
    """

    def __init__(self, message: str, rejections: tuple[object, ...] = (), missing: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.rejections = rejections
        self.missing = missing


class EntriesMismatchError(DecodeError):
    """A message's entries are not the expected ones: names ``missing``, ``unexpected``, or ``reshaped``."""

    def __init__(
        self,
        message: str,
        missing: tuple[str, ...] = (),
        unexpected: tuple[str, ...] = (),
        reshaped: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.reshaped = reshaped


class MaskMismatchError(DecodeError):
    """A reply carries masks other than those the server sent, where its method does not allow it."""


class DtypeMismatchError(DecodeError):
    """A message's entry has another dtype than the one the receiver expects."""


class ScalarRangeError(DecodeError):
    """A message's scalar field (named by ``field``, e.g. ``num_examples``) is out of its range."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class CheckpointError(PruneFLError, OSError):
    """A checkpoint is missing, corrupt, or does not match the run it is loaded into."""


class ResultsWriteError(PruneFLError, OSError):
    """The results folder cannot be written (not a folder, not writable, disk full); the message names the path.

    Whatever was written before (the previous checkpoint, the metrics rows up to it) is left intact.
    """


def check_setting(ok: bool, key: str, value: object, rule: str) -> None:
    """Raise :class:`ConfigError` "<key> <rule>, got <value>" unless ``ok``; settings dataclasses validate with it.

    >>> check_setting(True, "fl.lr", 0.1, "must be > 0")
    """
    if not ok:
        raise ConfigError(f"{key} {rule}, got {value!r}")
