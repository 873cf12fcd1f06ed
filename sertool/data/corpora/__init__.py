"""Corpus adapters: one module per corpus, registered by name in :data:`ADAPTERS`.

Importing this package registers every built-in adapter; installed plugins (entry-point group
``sertool.corpora``, :mod:`sertool.plugins`) are found by :func:`get_adapter` when first asked for.
"""

from importlib import import_module

from sertool.data.corpora.base import (
    ADAPTERS,
    CorpusAdapter,
    SkippedFile,
    UtteranceRow,
    available_corpora,
    get_adapter,
    register,
)

for _mod in ("ravdess", "tess", "cremad", "savee", "emodb", "iemocap", "shemo", "csv", "demo"):
    try:
        import_module(f"sertool.data.corpora.{_mod}")
    except ModuleNotFoundError as _exc:  # an adapter module not written yet
        if _exc.name != f"sertool.data.corpora.{_mod}":
            raise

__all__ = [
    "ADAPTERS",
    "CorpusAdapter",
    "SkippedFile",
    "UtteranceRow",
    "available_corpora",
    "get_adapter",
    "register",
]
