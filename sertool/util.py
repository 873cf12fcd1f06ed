"""One home for the plain helpers every module uses (cache folder, device, atomic writes).

Each helper exists once, here, and every module imports it from here: copies drift (the cache folder was once
resolved three ways, and ``SERTOOL_CACHE='~/c'`` sent features to ``$HOME/c`` but manifests to ``./~/c``).
Package versions live in :mod:`sertool.provenance`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Any

from sertool.exceptions import ParameterError

__all__ = [
    "atomic_parquet",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_dir",
    "check_device",
    "expand_path",
    "resolve_device",
]

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def expand_path(value: str | os.PathLike[str]) -> Path:
    """``value`` with ``~`` and ``$VARS`` expanded.

    Raises
    ------
    ParameterError
        ``value`` names an environment variable that is not set (a path with a literal ``$`` left in it
        would silently create a folder of that name).
    """
    text = os.path.expanduser(os.path.expandvars(os.fspath(value)))
    if "$" in text:
        raise ParameterError(f"{os.fspath(value)!r} names an unset environment variable")
    return Path(text)


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The feature / manifest / weights cache folder.

    Parameters
    ----------
    path : path, optional
        An explicit folder (``--cache``); default ``$SERTOOL_CACHE``, else ``~/.cache/sertool``.

    Returns
    -------
    Path
        The folder, with ``~`` and ``$VARS`` expanded (not created).
    """
    if path is not None and os.fspath(path):
        return expand_path(path)
    env = os.environ.get("SERTOOL_CACHE")
    return expand_path(env) if env else Path.home() / ".cache" / "sertool"


def check_device(device: str) -> None:
    """Raise :class:`ParameterError` unless ``device`` is ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ParameterError(f"device={device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; other valid values pass through.

    torch is imported only for ``"auto"`` and ``"cuda"`` (a machine without torch runs on the CPU).

    Raises
    ------
    ParameterError
        An unknown value, or CUDA asked for where torch sees none.
    """
    check_device(device)
    if device == "cpu":
        return device
    try:
        import torch

        available = bool(torch.cuda.is_available())
    except ImportError:
        available = False
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ParameterError(f"device={device!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    return device


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened/fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_path(path: Path) -> Path:
    """A temporary sibling unique to this process and thread (two threads may write one file at once)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling, fsync and rename: readers see the old file or
    the whole new one, never part of it. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_parquet(df: Any, path: str | os.PathLike[str]) -> Path:
    """Write a pandas DataFrame as parquet (no index) atomically, as :func:`atomic_write_bytes` does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        df.to_parquet(tmp, index=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
