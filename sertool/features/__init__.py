"""Feature extractors (handcrafted94, mfcc40, whisper-*, ...) and the parquet feature cache.

Importing this package registers every built-in extractor; installed plugins (entry-point group
``sertool.extractors``, :mod:`sertool.plugins`) are found by :func:`get_extractor` when first asked for.
"""

import pkgutil
from importlib import import_module

from sertool.features.base import (
    EXTRACTORS,
    Extractor,
    FeatureView,
    ProtocolExtractor,
    as_extractor,
    available_extractors,
    configured_extractor,
    get_extractor,
    parse_view,
    register_extractor,
)

#: modules of this package that hold the cache and the extraction machinery, not extractors
_INFRASTRUCTURE = frozenset({"base", "extract", "store", "transcribe", "transforms", "weights"})

# every other module registers extractors when imported: a new built-in extractor is one new module
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in _INFRASTRUCTURE:
        import_module(f"sertool.features.{_info.name}")

__all__ = [
    "EXTRACTORS",
    "Extractor",
    "FeatureView",
    "ProtocolExtractor",
    "as_extractor",
    "available_extractors",
    "configured_extractor",
    "get_extractor",
    "parse_view",
    "register_extractor",
]
