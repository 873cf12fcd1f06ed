"""``sertool.skops_import``: skops's trusted list is the same whether the estimator names come from the
scikit-learn package walk or from the cached file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json, sys
import sklearn.utils
real = sklearn.utils.all_estimators
from sertool.skops_import import skops_io, trusted_names_file
skops_io()
from skops.io import _trusted_types
print(json.dumps({
    "names": list(_trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES),
    "file": str(trusted_names_file()),
    "restored": sklearn.utils.all_estimators is real,
    "torch": "torch" in sys.modules,
}))
"""


def _probe(cache: Path) -> dict:
    env = {**os.environ, "SERTOOL_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


_REFERENCE = """
import json
from sklearn.utils import all_estimators
names = [f"{cls.__module__}.{cls.__name__}" for _, cls in all_estimators()]
print(json.dumps([n for n in names if n.startswith("sklearn.")]))
"""


def _reference() -> list[str]:
    """skops's own rule on scikit-learn's full estimator list, in a fresh interpreter without sertool (the
    list depends on what a process imported: an experimental enabler adds the halving searches)."""
    out = subprocess.run([sys.executable, "-c", _REFERENCE], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cached_names_give_skops_the_same_trusted_list(tmp_path: Path) -> None:
    first = _probe(tmp_path)  # no cached file: scikit-learn is walked, the names are written
    path = Path(first["file"])
    assert path.is_file() and json.loads(path.read_text()) == first["names"]
    second = _probe(tmp_path)  # from the file
    assert first["names"] == second["names"] == _reference()
    assert "sklearn.svm._classes.SVC" in second["names"]
    assert second["restored"] and not second["torch"]


def test_a_tampered_file_is_not_read(tmp_path: Path) -> None:
    first = _probe(tmp_path)
    path = Path(first["file"])
    path.write_text(json.dumps(["os.system", *first["names"]]))  # not a scikit-learn class name
    again = _probe(tmp_path)
    assert "os.system" not in again["names"] and again["names"] == _reference()
