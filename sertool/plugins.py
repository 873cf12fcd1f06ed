"""Plugins: extractors, models, corpora and split strategies from installed packages.

A package adds to sertool without editing it by declaring entry points (``importlib.metadata``), as pytest
and scikit-learn-contrib packages do::

    [project.entry-points."sertool.extractors"]  # pyproject.toml ([options.entry_points] in setup.cfg)
    my-embed = "my_pkg:make_extractor"           # factory(name, **params) -> Extractor, or an Extractor class
    [project.entry-points."sertool.models"]
    my-head = "my_pkg:model_spec"                # a ModelSpec, or a callable returning one (or a list)
    [project.entry-points."sertool.corpora"]
    mycorpus = "my_pkg:MyAdapter"                # a CorpusAdapter subclass (or a factory, or an instance)
    [project.entry-points."sertool.splits"]
    my-protocol = "my_pkg:MyStrategy"            # a SplitStrategy subclass

Who reads each group: :func:`sertool.features.base.get_extractor` (``sertool.extractors``; every command's
``--features``/``--extractors``), :func:`sertool.models.registry.resolve_models` and the rest of the model
registry (``sertool.models``; ``--models NAME`` and ``all``), :func:`sertool.data.corpora.base.get_adapter`
(``sertool.corpora``; ``--corpus``), and :mod:`sertool.splits` (``sertool.splits``).

Each group is read once per process (:func:`clear_cache` forgets it, e.g. after installing a package). A
plugin that fails to import is reported by name with its error (a warning, and :func:`plugin_errors`) and
left out; the built-ins and the other plugins keep working. A built-in name always wins over a plugin of the
same name (:func:`warn_shadowed` says so, once).
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import entry_points
from typing import Any

__all__ = [
    "GROUPS",
    "clear_cache",
    "declared_names",
    "describe",
    "load_group",
    "plugin_errors",
    "plugin_source",
    "record_error",
    "warn_shadowed",
]

log = logging.getLogger(__name__)

#: The entry-point groups sertool reads.
GROUPS = ("sertool.extractors", "sertool.models", "sertool.corpora", "sertool.splits")

_ERRORS: dict[tuple[str, str], str] = {}
_SOURCES: dict[tuple[str, str], str] = {}
_SHADOWED: set[tuple[str, str]] = set()


def _source(ep: Any) -> str:
    """``module:attr`` of an entry point, with the distribution that declared it when known."""
    dist = getattr(ep, "dist", None)
    dist_name = getattr(dist, "name", None) if dist is not None else None
    return f"{ep.value} in {dist_name}" if dist_name else str(ep.value)


@functools.cache
def load_group(group: str) -> dict[str, Any]:
    """The loaded objects of one entry-point group, by entry-point name (lower-cased).

    Parameters
    ----------
    group : str
        One of :data:`GROUPS`.

    Returns
    -------
    dict
        ``{name: object}`` for every entry point of ``group`` that loaded; broken ones are logged and
        recorded in :func:`plugin_errors`, never raised. When two packages declare one name, the first
        one found is kept and the other is reported.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; expected one of {GROUPS}")
    out: dict[str, Any] = {}
    for ep in entry_points(group=group):
        name = ep.name.strip().lower()
        source = _source(ep)
        if name in out:
            log.warning(
                "plugin %r (%s) is declared twice: %s is used, %s is ignored",
                name,
                group,
                _SOURCES.get((group, name)),
                source,
            )
            continue
        try:
            out[name] = ep.load()
        except Exception as exc:  # a broken plugin must not break sertool's built-ins
            record_error(group, name, exc, source=source)
            continue
        _SOURCES[(group, name)] = source
    return out


@functools.cache
def declared_names(group: str) -> frozenset[str]:
    """Names (lower-cased) the installed packages declare in ``group``, read without importing any plugin.

    Registries use it to warn that a plugin is shadowed by a built-in even when only the built-in is asked
    for, without paying for importing the plugins.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; expected one of {GROUPS}")
    return frozenset(ep.name.strip().lower() for ep in entry_points(group=group))


def record_error(group: str, name: str, error: BaseException | str, *, source: str | None = None) -> None:
    """Report a plugin that cannot be used (a warning) and remember why (:func:`plugin_errors`).

    Registries call this for failures after loading too, e.g. a model entry point whose callable raises.

    Parameters
    ----------
    group : str
        The entry-point group.
    name : str
        The entry-point name.
    error : exception or str
        What went wrong.
    source : str, optional
        Where the plugin comes from (``module:attr in distribution``), for the message.
    """
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    _ERRORS[(group, name)] = reason
    if source is not None:
        _SOURCES[(group, name)] = source
    where = f", from {_SOURCES[(group, name)]}" if (group, name) in _SOURCES else ""
    log.warning("plugin %r (%s%s) failed to load and is left out: %s", name, group, where, reason)


def plugin_errors() -> dict[tuple[str, str], str]:
    """``{(group, name): reason}`` of every plugin that failed to load so far in this process."""
    return dict(_ERRORS)


def plugin_source(group: str, name: str) -> str | None:
    """``module:attr in distribution`` of a loaded (or failed) plugin, or ``None`` if unknown."""
    return _SOURCES.get((group, name))


def describe(group: str, name: str) -> str:
    """``'name' (module:attr in distribution)``: how messages name a plugin."""
    source = plugin_source(group, name)
    return f"{name!r} ({source})" if source else repr(name)


def warn_shadowed(group: str, name: str) -> None:
    """Say, once per process, that plugin ``name`` of ``group`` is ignored because a built-in has its name."""
    if (group, name) in _SHADOWED:
        return
    _SHADOWED.add((group, name))
    log.warning(
        "plugin %s (%s) is ignored: a built-in has the same name and wins", describe(group, name), group
    )


def clear_cache() -> None:
    """Forget loaded groups, errors and warnings: the next :func:`load_group` reads entry points again."""
    load_group.cache_clear()
    declared_names.cache_clear()
    _ERRORS.clear()
    _SOURCES.clear()
    _SHADOWED.clear()
