"""Feature extractors (handcrafted94, mfcc40, whisper-*, ...) and the parquet feature cache.

Importing this package registers every built-in extractor; installed plugins (entry-point group
``sertool.extractors``, :mod:`sertool.plugins`) are found by :func:`get_extractor` when first asked for.
"""

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

for _mod in ("handcrafted", "whisper", "egemaps", "ssl", "text", "spectrogram"):
    try:
        import_module(f"sertool.features.{_mod}")
    except ModuleNotFoundError as _exc:  # a module not written yet, or an optional dependency missing
        if _exc.name != f"sertool.features.{_mod}":
            raise

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
