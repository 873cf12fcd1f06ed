"""Plugins: extractors, models, corpora and split strategies from installed packages.

A package adds to sertool without editing it by declaring entry points (``importlib.metadata``), as pytest
and scikit-learn-contrib packages do::

    [options.entry_points]                      # setup.cfg (or [project.entry-points.*] in pyproject.toml)
    sertool.extractors =
        my-embed = my_pkg:make_extractor        # factory(name, **params) -> Extractor
    sertool.models =
        my-head = my_pkg:model_spec             # a ModelSpec, or a callable returning one (or a list)
    sertool.corpora =
        mycorpus = my_pkg:MyAdapter             # a corpus adapter (class or instance)
    sertool.splits =
        my-protocol = my_pkg:MyStrategy         # a SplitStrategy subclass

Each group is read once per process. A plugin that fails to import is reported by name with its error (a
warning, and :func:`plugin_errors`) and left out; the built-ins and the other plugins keep working.
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import entry_points
from typing import Any

__all__ = ["GROUPS", "load_group", "plugin_errors"]

log = logging.getLogger(__name__)

#: The entry-point groups sertool reads.
GROUPS = ("sertool.extractors", "sertool.models", "sertool.corpora", "sertool.splits")

_ERRORS: dict[tuple[str, str], str] = {}


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
        recorded in :func:`plugin_errors`, never raised.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; expected one of {GROUPS}")
    out: dict[str, Any] = {}
    for ep in entry_points(group=group):
        name = ep.name.strip().lower()
        try:
            out[name] = ep.load()
        except Exception as exc:  # a broken plugin must not break sertool's built-ins
            reason = f"{type(exc).__name__}: {exc}"
            _ERRORS[(group, name)] = reason
            log.warning("plugin %r (%s, from %s) failed to load and is left out: %s", name, group, ep.value, reason)
    return out


def plugin_errors() -> dict[tuple[str, str], str]:
    """``{(group, name): reason}`` of every plugin that failed to load so far in this process."""
    return dict(_ERRORS)
