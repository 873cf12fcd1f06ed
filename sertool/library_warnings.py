"""Warnings that libraries raise (librosa, scikit-learn, numpy ...), caught, counted and reported in sertool's
words, once per run, naming the clips they concern.

Left alone, a library warning reaches the terminal as the library's own line, once per source line (so the
twelfth short clip is not reported at all) and without the file it concerns, e.g. librosa's ``n_fft=2048 is
too large for input signal of length=800``. Here:

- :func:`capturing` installs, for the duration of a block, a process-wide router in place of
  :func:`warnings.showwarning`. Filters that would show a warning once (``default``, ``module``, ``once``)
  show it every time inside the block, so every occurrence is counted; ``ignore`` and ``error`` filters are
  kept. Blocks nest and may be entered from several threads (the first installs, the last restores).
- :func:`clip` routes the warnings raised on the current thread inside it to a list, as
  :class:`WarningRecord`\\ s naming the clip. The extraction runner wraps each clip in it, in this process,
  its threads and its worker processes, which send the records back with their results.
- :func:`collecting` is the catch-all of a whole command: warnings raised outside any :func:`clip` go to its
  list (the CLI reports them when the command ends). Where neither is active a warning is shown as Python
  would show it, once per place.
- :func:`summarize` groups records into kinds (a known cause in sertool's words, or the library's message
  with its numbers masked), with how many clips and occurrences, and :func:`log_summary` logs one line per
  kind, e.g. ``handcrafted94: 12 clips shorter than the 2048-sample FFT window (zero-padded by librosa;
  features of very short clips are less reliable), e.g. a.wav``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

__all__ = ["WarningRecord", "capturing", "clip", "collecting", "describe", "log_summary", "summarize"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarningRecord:
    """One warning a library raised.

    Attributes
    ----------
    category : str
        The warning class's name (``"UserWarning"``, ``"ConvergenceWarning"``, ...).
    library : str
        The top-level package whose code raised it (``"librosa"``), or the file's name.
    message : str
        The library's message.
    path : str
        The clip (input file) it was raised for; ``""`` when not known.
    """

    category: str
    library: str
    message: str
    path: str = ""


#: Known warnings: (pattern of the library's message, category or None for any, what the clips it concerns
#: are, what it means). Both texts may use the pattern's named groups and ``{message}`` (the match).
_KNOWN: tuple[tuple[re.Pattern[str], str | None, str, str], ...] = (
    (
        re.compile(r"n_fft=(?P<n_fft>\d+) is too large for input signal of length=\d+"),
        None,
        "shorter than the {n_fft}-sample FFT window (zero-padded by librosa; features of very short clips "
        "are less reliable)",
        "a clip shorter than the {n_fft}-sample FFT window was zero-padded; its features are less reliable",
    ),
    (
        re.compile(r"Trying to estimate tuning from empty frequency set"),
        None,
        "without a pitched peak between 150 and 4000 Hz (librosa assumed tuning 0 for the chroma features; "
        "silent, noisy or very short audio: chroma features are less reliable)",
        "a clip without a pitched peak between 150 and 4000 Hz: tuning 0 assumed; its chroma features are "
        "less reliable",
    ),
    (
        re.compile(r"Empty filters detected in mel frequency basis"),
        None,
        "computed with mel bands that the FFT does not resolve at this rate (those bands are always zero)",
        "mel bands that the FFT does not resolve at this rate are always zero",
    ),
    (
        re.compile(r".+"),
        "ConvergenceWarning",
        "whose model fit stopped at its iteration limit before converging (scores may be slightly lower than "
        "a converged fit would give)",
        "a model fit stopped at its iteration limit before converging; scores may be slightly lower than a "
        "converged fit would give",
    ),
    (
        re.compile(r"(invalid value|divide by zero|overflow) encountered"),
        "RuntimeWarning",
        "with non-finite intermediate values ({message}); a clip whose features end up non-finite is skipped",
        "non-finite intermediate values: {message}; a clip whose features end up non-finite is skipped",
    ),
)


def describe(record: WarningRecord) -> tuple[str, str, str]:
    """What a warning means, in sertool's words.

    Parameters
    ----------
    record : WarningRecord
        The warning.

    Returns
    -------
    (key, clips, meaning) : tuple of str
        ``key`` groups warnings of one kind (for an unknown kind, the library's message with its numbers
        masked); ``clips`` follows a count of clips (``"12 clips " + clips``); ``meaning`` explains one
        occurrence (empty for an unknown kind).
    """
    for pattern, category, clips, meaning in _KNOWN:
        match = pattern.search(record.message)
        if match is not None and (category is None or category == record.category):
            fields = {**match.groupdict(), "message": match.group(0)}
            text = clips.format(**fields)
            return f"{record.category}:{text}", text, meaning.format(**fields)
    masked = re.sub(r"\d+(\.\d+)?", "#", record.message)
    text = f"for which {record.library} raised {record.category}: {record.message}"
    return f"{record.category}:{record.library}:{masked}", text, ""


class _Router:
    """The process-wide replacement of :func:`warnings.showwarning` (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = 0
        self.saved: Any = None  # the entered warnings.catch_warnings (filters and showwarning to restore)
        self.previous: Any = None  # warnings.showwarning before the router replaced it
        self.local = threading.local()  # .sinks: [(records, path)] of the current thread
        self.run_sinks: list[list[WarningRecord]] = []  # collecting() blocks, innermost last
        self.shown: set[tuple[str, type, str, int]] = set()  # shown as Python would, once per place

    def install(self) -> None:
        with self.lock:
            if self.depth == 0:
                self.saved = warnings.catch_warnings()
                self.saved.__enter__()
                self.previous = warnings.showwarning
                # every occurrence is counted: once-only actions become "always"; "ignore"/"error" stay
                warnings.filters[:] = [
                    ("always" if f[0] in ("default", "module", "once") else f[0], *f[1:])
                    for f in warnings.filters
                ]
                warnings.simplefilter("always", append=True)  # the default action (no filter matches)
                warnings.showwarning = self.show
                self.shown.clear()
            self.depth += 1

    def uninstall(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                saved, self.saved, self.previous = self.saved, None, None
                saved.__exit__(None, None, None)

    def sinks(self) -> list[tuple[list[WarningRecord], str]]:
        sinks = getattr(self.local, "sinks", None)
        if sinks is None:
            sinks = self.local.sinks = []
        return sinks

    def show(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        sinks = self.sinks()
        records, path = sinks[-1] if sinks else (self.run_sinks[-1] if self.run_sinks else None, "")
        if records is not None:
            records.append(WarningRecord(category.__name__, _library(filename), str(message), path))
            return
        key = (str(message), category, filename, lineno)
        if key not in self.shown:  # outside any sink: as Python's default filter would, once per place
            self.shown.add(key)
            previous = self.previous
            if previous is not None:
                previous(message, category, filename, lineno, file, line)


_ROUTER = _Router()


def _library(filename: str) -> str:
    """The top-level package a source file belongs to (``.../site-packages/librosa/core/x.py`` -> librosa)."""
    parts = PurePath(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            name = parts[parts.index(marker) + 1]
            return name[:-3] if name.endswith(".py") else name
    if "sertool" in parts:
        return "sertool"
    return PurePath(filename).stem or "python"


@contextlib.contextmanager
def capturing() -> Iterator[None]:
    """Route warnings through sertool while the block runs (process-wide; nests; thread-safe).

    Yields
    ------
    None
    """
    _ROUTER.install()
    try:
        yield
    finally:
        _ROUTER.uninstall()


@contextlib.contextmanager
def clip(path: str, records: list[WarningRecord]) -> Iterator[list[WarningRecord]]:
    """Record the warnings raised on this thread inside the block into ``records``, for clip ``path``.

    Parameters
    ----------
    path : str
        The clip being processed.
    records : list of WarningRecord
        Where the records go (appended).

    Yields
    ------
    list of WarningRecord
        ``records``.
    """
    with capturing():
        sinks = _ROUTER.sinks()
        sinks.append((records, str(path)))
        try:
            yield records
        finally:
            sinks.pop()


@contextlib.contextmanager
def collecting() -> Iterator[list[WarningRecord]]:
    """Collect every warning raised in this process during the block outside a :func:`clip` block.

    Yields
    ------
    list of WarningRecord
        Filled while the block runs.
    """
    records: list[WarningRecord] = []
    with capturing():
        with _ROUTER.lock:
            _ROUTER.run_sinks.append(records)
        try:
            yield records
        finally:
            with _ROUTER.lock:
                _ROUTER.run_sinks.remove(records)


def summarize(records: Iterable[WarningRecord], *, examples: int = 3) -> list[dict[str, Any]]:
    """Group warning records by kind (see :func:`describe`), most frequent first.

    Parameters
    ----------
    records : iterable of WarningRecord
        The warnings of a run.
    examples : int, optional
        Clips named per kind.

    Returns
    -------
    list of dict
        One per kind: ``what`` (sertool's words, after a count of clips), ``meaning`` (of one occurrence;
        empty for an unknown kind), ``clips`` (distinct clips concerned), ``count``
        (occurrences), ``examples`` (the first clips), ``category``, ``library`` and ``message`` (the first
        occurrence's own words).
    """
    kinds: dict[str, dict[str, Any]] = {}
    for rec in records:
        key, text, meaning = describe(rec)
        kind = kinds.setdefault(
            key,
            {
                "what": text,
                "meaning": meaning,
                "clips": 0,
                "count": 0,
                "examples": [],
                "category": rec.category,
                "library": rec.library,
                "message": rec.message,
                "_paths": set(),
            },
        )
        kind["count"] += 1
        if rec.path and rec.path not in kind["_paths"]:
            kind["_paths"].add(rec.path)
            if len(kind["examples"]) < examples:
                kind["examples"].append(rec.path)
    out = []
    for kind in kinds.values():
        kind["clips"] = len(kind.pop("_paths"))
        out.append(kind)
    return sorted(out, key=lambda k: (-k["clips"], -k["count"], k["what"]))


def log_summary(
    records: Iterable[WarningRecord] | list[dict[str, Any]],
    context: str,
    logger: logging.Logger | None = None,
) -> list[str]:
    """Log one warning line per kind of library warning (see :func:`summarize`).

    Parameters
    ----------
    records : iterable of WarningRecord, or the output of :func:`summarize`
        The warnings of a run.
    context : str
        What ran (``"handcrafted94"``, ``"sertool predict"``), the line's prefix.
    logger : logging.Logger, optional
        Where to log (default this module's).

    Returns
    -------
    list of str
        The lines logged.
    """
    items = list(records)
    kinds = items if items and isinstance(items[0], dict) else summarize(items)  # type: ignore[arg-type]
    lines = []
    for kind in kinds:
        if kind["clips"]:
            n = kind["clips"]
            line = f"{context}: {n} clip{'s' if n != 1 else ''} {kind['what']}, e.g. {kind['examples'][0]}"
        else:  # raised outside any clip
            times = f"{kind['count']} time{'s' if kind['count'] != 1 else ''}"
            line = f"{context}: {kind['library']} warned {times}: {kind['category']}: {kind['message']}"
            if kind["meaning"]:
                line += f" ({kind['meaning']})"
        (logger or log).warning("%s", line)
        lines.append(line)
    return lines
