"""sertool: honest, fast speech emotion recognition benchmarks.

corpus folder -> manifest -> cached features -> saved split -> models -> results -> leaderboard.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sertool")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from sertool.data.audio import load_audio
from sertool.data.labels import apply_scheme, get_scheme
from sertool.data.manifest import build_manifest, load_manifest, save_manifest, summarize
from sertool.exceptions import (
    AudioError,
    CacheError,
    CorpusError,
    LeakageError,
    ManifestError,
    ParameterError,
    ResultsError,
    SertoolError,
    SplitError,
)

_LAZY = {name: "sertool.splits" for name in ("Fold", "Split", "check_split", "make_split", "split_summary")}
_LAZY["evaluate"] = "sertool.bench.suite"  # the suite: every corpus of a folder, one summary
_LAZY.update({name: "sertool.bench.definition" for name in ("Benchmark", "SplitSpec", "run_benchmark")})


def __getattr__(name: str) -> object:
    """Import heavy submodules (scikit-learn via splits) only when their names are used."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sertool' has no attribute {name!r}")


__all__ = [
    "AudioError",
    "Benchmark",
    "CacheError",
    "CorpusError",
    "Fold",
    "LeakageError",
    "ManifestError",
    "ParameterError",
    "ResultsError",
    "SertoolError",
    "Split",
    "SplitError",
    "SplitSpec",
    "__version__",
    "apply_scheme",
    "build_manifest",
    "check_split",
    "get_scheme",
    "load_audio",
    "load_manifest",
    "make_split",
    "run_benchmark",
    "save_manifest",
    "split_summary",
    "summarize",
]
