"""The corpus-adapter protocol and its registry.

An adapter turns a corpus folder in its ORIGINAL layout into candidate rows (one per utterance, labels
parsed from names or label files). It never guesses: a file that matches no naming rule or carries an
unknown code becomes a :class:`SkippedFile` with the reason. Reading audio headers and hashing is done once,
centrally, by :func:`sertool.data.manifest.build_manifest`.

Plugins: an installed package adds corpora through the entry-point group ``sertool.corpora``
(:mod:`sertool.plugins`); :func:`get_adapter` consults it for names no built-in adapter has. The entry
point's value is what :data:`ADAPTERS` stores for a built-in: a :class:`CorpusAdapter` subclass (or any
factory ``factory(**kwargs) -> CorpusAdapter``); an adapter instance is accepted too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sertool import plugins
from sertool.data.audio import is_audio_file
from sertool.exceptions import CorpusError, ParameterError, SertoolError

__all__ = [
    "ADAPTERS",
    "PLUGIN_GROUP",
    "CorpusAdapter",
    "SkippedFile",
    "UtteranceRow",
    "available_corpora",
    "get_adapter",
    "iter_audio_files",
    "register",
]


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a manifest, with the reason."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON-friendly form."""
        return {"path": self.path, "reason": self.reason}


@dataclass
class UtteranceRow:
    """One utterance found by an adapter, before audio headers are read.

    Attributes
    ----------
    utt_id : str
        Unique within the corpus and stable across machines (derived from the relative path / file name).
    path : str
        Absolute path of the audio file.
    speaker : str
        Speaker id, prefixed with the corpus name (``"ravdess-07"``) so merged corpora never collide.
    label : str
        Canonical label (see :data:`sertool.data.labels.CANONICAL_LABELS`).
    raw_label : str
        The corpus's own code or word.
    gender : str or None
        ``"female"``, ``"male"`` or ``None`` when unknown.
    extra : dict
        Corpus-specific columns (RAVDESS intensity, IEMOCAP session, ...).
    """

    utt_id: str
    path: str
    speaker: str
    label: str
    raw_label: str
    gender: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CorpusAdapter:
    """Base class: subclasses set ``name`` and implement :meth:`scan`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def scan(self, root: Path) -> tuple[list[UtteranceRow], list[SkippedFile]]:
        """Find utterances under ``root``.

        The default walks every audio file (any supported extension) and calls :meth:`parse_file`;
        adapters whose labels live in separate files (IEMOCAP, CSV) override this instead.

        Parameters
        ----------
        root : Path
            The corpus folder (already checked to exist).

        Returns
        -------
        rows : list of UtteranceRow
        skipped : list of SkippedFile
        """
        rows: list[UtteranceRow] = []
        skipped: list[SkippedFile] = []
        for path in iter_audio_files(root):
            parsed = self.parse_file(path)
            if isinstance(parsed, str):
                skipped.append(SkippedFile(str(path), parsed))
            else:
                rows.append(parsed)
        return rows, skipped

    def parse_file(self, path: Path) -> UtteranceRow | str:
        """Parse one audio file's name into a row, or return the reason it is skipped."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_file or scan")

    def check_root(self, root: str | os.PathLike) -> Path:
        """Resolve ``root`` and raise :class:`CorpusError` if it is not a folder."""
        path = Path(root).expanduser()
        if not path.exists():
            raise CorpusError(f"{self.name}: corpus root {str(path)!r} does not exist")
        if not path.is_dir():
            raise CorpusError(f"{self.name}: corpus root {str(path)!r} is not a folder")
        return path.resolve()


ADAPTERS: dict[str, Callable[..., CorpusAdapter]] = {}
#: The entry-point group of corpus plugins.
PLUGIN_GROUP = "sertool.corpora"


def register(cls: type[CorpusAdapter]) -> type[CorpusAdapter]:
    """Class decorator adding an adapter to :data:`ADAPTERS` under its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    ADAPTERS[cls.name] = cls
    return cls


def _plugin_adapters() -> dict[str, Any]:
    """Corpus plugins whose names no built-in adapter has (the shadowed ones are warned about, once)."""
    out: dict[str, Any] = {}
    for name, value in plugins.load_group(PLUGIN_GROUP).items():
        if name in ADAPTERS:
            plugins.warn_shadowed(PLUGIN_GROUP, name)
        else:
            out[name] = value
    return out


def available_corpora() -> list[str]:
    """Names of every corpus adapter: the built-ins, then the installed plugins."""
    from sertool.data import corpora  # noqa: F401  (registers the built-in adapters)

    return sorted(ADAPTERS) + sorted(_plugin_adapters())


def get_adapter(name: str, **kwargs: Any) -> CorpusAdapter:
    """Instantiate a registered adapter (a built-in, else a ``sertool.corpora`` plugin of that name).

    Raises
    ------
    ParameterError
        Unknown corpus name (the message lists the known ones, and says why a plugin of that name failed to
        load), or a plugin that fails to build or gives no :class:`CorpusAdapter` (named in the message).
    """
    from sertool.data import corpora  # noqa: F401  (registers the built-in adapters)

    key = name.lower()
    if key in ADAPTERS:
        if key in plugins.declared_names(PLUGIN_GROUP):
            plugins.warn_shadowed(PLUGIN_GROUP, key)
        try:
            return ADAPTERS[key](**kwargs)
        except TypeError as exc:  # an argument the adapter does not take
            raise ParameterError(f"corpus {key!r} does not accept {sorted(kwargs)}: {exc}") from None
    found = _plugin_adapters()
    if key in found:
        return _adapter_from_plugin(key, found[key], kwargs)
    broken = plugins.plugin_errors().get((PLUGIN_GROUP, key))
    raise ParameterError(
        f"unknown corpus {name!r}; known: {', '.join(available_corpora())}"
        + (f"; the plugin {key!r} failed to load: {broken}" if broken else "")
    )


def _adapter_from_plugin(name: str, value: Any, kwargs: dict[str, Any]) -> CorpusAdapter:
    """Build (or take) a plugin's adapter and check it."""
    who = f"corpus plugin {plugins.describe(PLUGIN_GROUP, name)}"
    if isinstance(value, CorpusAdapter):
        if kwargs:
            raise ParameterError(f"{who} is an adapter instance and takes no arguments; got {sorted(kwargs)}")
        adapter = value
    elif callable(value):
        try:
            adapter = value(**kwargs)
        except SertoolError:
            raise
        except Exception as exc:  # the plugin's own bug or a wrong argument: name the plugin
            raise ParameterError(f"{who} failed to build: {type(exc).__name__}: {exc}") from exc
    else:
        raise ParameterError(f"{who}: the entry point is a {type(value).__name__}, not an adapter class")
    if not isinstance(adapter, CorpusAdapter):
        raise ParameterError(
            f"{who} gave a {type(adapter).__name__}, not a sertool.data.corpora.base.CorpusAdapter subclass"
        )
    if adapter.name.lower() != name:
        raise ParameterError(
            f"{who} gave an adapter named {adapter.name!r}, not {name!r}: manifests, caches and speaker "
            "ids carry the corpus name, so the adapter's name must be the entry point's"
        )
    return adapter


def iter_audio_files(root: Path) -> Iterator[Path]:
    """All audio files below ``root`` (any supported extension), sorted, hidden files ignored.

    Symbolic-link loops and unreadable folders are skipped silently by :func:`os.walk`.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if not fn.startswith(".") and is_audio_file(fn):
                found.append(Path(dirpath) / fn)
    yield from sorted(found)
