"""Corpus adapters: one module per corpus, registered by name in :data:`ADAPTERS`.

Importing this package registers every built-in adapter; installed plugins (entry-point group
``sertool.corpora``, :mod:`sertool.plugins`) are found by :func:`get_adapter` when first asked for.
"""

import pkgutil
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

# every module but base is one adapter, registered when imported: a new built-in corpus is one new module
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base":
        import_module(f"sertool.data.corpora.{_info.name}")

__all__ = [
    "ADAPTERS",
    "CorpusAdapter",
    "SkippedFile",
    "UtteranceRow",
    "available_corpora",
    "get_adapter",
    "register",
]
