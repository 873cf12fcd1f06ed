"""The recorded environment of every result: versions, commit, platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["environment"]

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
    pkgs: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            continue
    return {
        "sertool": pkgs.get("sertool", "0+unknown"),
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": pkgs,
    }
