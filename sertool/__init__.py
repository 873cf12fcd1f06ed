"""sertool: honest, fast speech emotion recognition benchmarks.

corpus folder -> manifest -> cached features -> saved split -> models -> results -> leaderboard.

Importing the package loads only the exception classes: every other public name is imported from its module
on first use (``sertool.load_audio`` imports numpy and soundfile then, ``sertool.make_split`` scikit-learn),
so ``sertool --help`` and commands that need none of them start without paying for them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sertool")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

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

#: public name -> the module that defines it, imported when the name is first used
_LAZY: dict[str, str] = {
    **dict.fromkeys(("load_audio",), "sertool.data.audio"),
    **dict.fromkeys(("apply_scheme", "get_scheme"), "sertool.data.labels"),
    **dict.fromkeys(
        ("build_manifest", "load_manifest", "save_manifest", "summarize"), "sertool.data.manifest"
    ),
    **dict.fromkeys(("Fold", "Split", "check_split", "make_split", "split_summary"), "sertool.splits"),
    **dict.fromkeys(("evaluate",), "sertool.bench.suite"),  # the suite: every corpus of a folder, one summary
    **dict.fromkeys(("Benchmark", "SplitSpec", "run_benchmark"), "sertool.bench.definition"),
}


def __getattr__(name: str) -> object:
    """Import the module defining a public name (numpy, pandas, scikit-learn ...) only when it is used.

    Parameters
    ----------
    name : str
        An attribute of the package.

    Returns
    -------
    object
        The public object; it is then cached in the package namespace.

    Raises
    ------
    AttributeError
        ``name`` is not a public name of sertool.
    """
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sertool' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily imported public ones included."""
    return sorted(set(globals()) | set(_LAZY))


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
    "evaluate",
    "get_scheme",
    "load_audio",
    "load_manifest",
    "make_split",
    "run_benchmark",
    "save_manifest",
    "split_summary",
    "summarize",
]
