"""The recorded environment of every result: versions, commit, platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterable
from functools import cache, lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["environment", "json_safe", "package_versions"]

_PACKAGES = (
    "sertool",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "librosa",
    "soundfile",
    "soxr",
    "torch",
    "transformers",
    "ctranslate2",
    "xgboost",
    "lightgbm",
    "joblib",
)


@cache
def _dist_version(name: str) -> str | None:
    """Installed version of a distribution (None if absent); a process's packages do not change under it."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    """Installed versions of the distributions ``names``, in that order (absent ones left out).

    Parameters
    ----------
    names : iterable of str, optional
        Distribution names; default the numeric stack every result records.

    Returns
    -------
    dict
        name -> version string.
    """
    out: dict[str, str] = {}
    for name in names:
        v = _dist_version(name)
        if v is not None:
            out[name] = v
    return out


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as Python values, tuples as lists, keys as strings, and anything
    else that JSON cannot hold as its ``repr``."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Versions of sertool and its numeric stack, the git commit (if run from a checkout) and the platform.

    Returns
    -------
    dict
        ``sertool, git_commit, python, platform, packages`` (name -> version, installed ones only).
    """
    pkgs = package_versions()
    return {
        "sertool": pkgs.get("sertool", "0+unknown"),
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": pkgs,
    }
