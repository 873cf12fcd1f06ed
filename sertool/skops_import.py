"""``skops.io``, imported at a fraction of its usual start-up cost, with the same trusted types.

On import, skops lists scikit-learn's estimators (its default-trusted types) with
:func:`sklearn.utils.all_estimators`, whose package walk imports every subpackage of scikit-learn (its test
helpers and pytest, and the array-API shims, which import torch, Dask or CuPy when installed): most of the
start-up of ``sertool predict`` for a classical model, to compute a list of 200-odd names that only changes
with scikit-learn's version.

:func:`skops_io` computes that list once per (scikit-learn, skops) version pair, the slow way, and keeps the
names in the cache folder (``<cache>/skops-trusted/``). Later imports hand skops stand-in classes that carry the
same module and class names, so skops's trusted list is the one it computed for this version pair (skops's
names of the stand-ins are checked against the cached list after the import; a mismatch deletes the file). Only names of the form ``sklearn.<module>.<Class>``
are ever read back. Nothing in skops is patched after its import returns.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["skops_io", "trusted_names_file"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+")


class _NoArrayApiShims:
    """An import hook refusing scikit-learn's array-API shims of torch, CuPy, Dask and JAX.

    The package walk of :func:`sklearn.utils.all_estimators` imports them although they define no estimator
    (the list is the same without them; the walk skips subpackages that fail to import).
    """

    _SHIMS = ("sklearn.externals.array_api_compat.", "sklearn.externals.array_api_extra.")
    _BACKENDS = ("torch", "cupy", "dask", "jax")

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        for prefix in self._SHIMS:
            if name.startswith(prefix) and name[len(prefix) :].split(".")[0] in self._BACKENDS:
                raise ImportError(f"{name}: not needed to list scikit-learn's estimators")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def trusted_names_file(cache: str | Path | None = None) -> Path:
    """Where the estimator names of this (scikit-learn, skops) version pair are kept."""
    from sertool.util import cache_dir

    tag = f"sklearn-{_version('scikit-learn')}-skops-{_version('skops')}"
    return cache_dir(cache) / "skops-trusted" / f"{tag}.json"


def _read_names(path: Path) -> list[str] | None:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names)
    ):
        log.warning("ignoring %s: not a list of scikit-learn class names", path)
        return None
    return names


def _stand_ins(names: list[str]) -> list[tuple[str, type]]:
    """``(class name, class)`` pairs as :func:`sklearn.utils.all_estimators` gives them, for skops to name."""
    out = []
    for name in names:
        module, _, cls = name.rpartition(".")
        out.append((cls, type(cls, (), {"__module__": module})))
    return out


def _import_listing_sklearn() -> None:
    hook = _NoArrayApiShims()
    sys.meta_path.insert(0, hook)
    try:
        import skops.io  # noqa: F401
    finally:
        sys.meta_path.remove(hook)


def _import_with_names(names: list[str]) -> None:
    import sklearn.utils

    real = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda *a, **k: _stand_ins(names)
    try:
        import skops.io  # noqa: F401
    finally:
        sklearn.utils.all_estimators = real


def skops_io(cache: str | Path | None = None) -> Any:
    """The ``skops.io`` module (imported on the first call).

    Parameters
    ----------
    cache : path, optional
        Cache folder holding the names (default :func:`sertool.util.cache_dir`).

    Returns
    -------
    module
        ``skops.io``.
    """
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    path = trusted_names_file(cache)
    names = _read_names(path)
    if names is None:
        _import_listing_sklearn()
    else:
        _import_with_names(names)
    from skops.io import _trusted_types

    computed = _trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES
    if (
        names is not None and list(computed) != names
    ):  # skops changed how it names them: never trust a stale list
        log.warning(
            "%s disagrees with skops's estimator list; it is removed and rebuilt on the next import", path
        )
        path.unlink(missing_ok=True)
    elif names is None:
        try:
            from sertool.util import atomic_write_text

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(list(computed)))
        except OSError as exc:  # a read-only cache only costs start-up time
            log.debug("cannot keep skops's estimator names in %s: %s", path, exc)
    return sys.modules["skops.io"]
