"""Exception hierarchy for sertool.

Every error sertool raises on purpose derives from :class:`SertoolError`, so a caller (the CLI in
particular) can tell an expected, explainable failure from a bug.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AudioError",
    "CacheError",
    "CorpusError",
    "LeakageError",
    "ManifestError",
    "ParameterError",
    "ResultsError",
    "SertoolError",
    "SplitError",
]


class SertoolError(Exception):
    """Base class of every error sertool raises deliberately."""


class ParameterError(SertoolError, ValueError):
    """An argument has an invalid value; the message names the parameter and the value."""


class AudioError(SertoolError):
    """An audio file cannot be used.

    Parameters
    ----------
    path : str or Path
        The offending file.
    reason : str
        A short, human-readable reason (``"unreadable: ..."``, ``"all-zero signal"``, ...).
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CorpusError(SertoolError):
    """A corpus root is missing, empty, or not in the layout its adapter expects."""


class ManifestError(SertoolError):
    """A manifest table is malformed (missing columns, duplicate ids, unknown labels, ...)."""


class SplitError(SertoolError):
    """A split is malformed or does not match the manifest it is used with."""


class LeakageError(SplitError):
    """A split lets a speaker (or a duplicate-audio group) appear on both sides of train/test."""


class ResultsError(SertoolError):
    """A results folder does not follow the results contract (docs/RESULTS_FORMAT.md)."""


class CacheError(SertoolError):
    """A feature cache entry is unusable."""
