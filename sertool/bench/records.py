"""The results contract in code: the layout of a results folder and the typed record of one finished unit.

This module is the one place that knows where results live (``docs/RESULTS_FORMAT.md`` describes the same
contract in prose)::

    <results>/<corpus>/<split-id>/split.json
    <results>/<corpus>/<split-id>/runs/<view>/<model>/fold-<k>.json                 a UnitRecord
    <results>/<corpus>/<split-id>/runs/<view>/<model>/fold-<k>.predictions.parquet  per-utterance predictions
    <results>/<corpus>/<split-id>/leaderboard.{csv,md,html}

The runner writes :class:`UnitRecord` objects (:meth:`UnitRecord.write`), the leaderboard reads them
(:func:`read_unit`), and both name paths through :class:`ResultsLayout`; no other module builds these paths or
parses the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sertool.exceptions import ResultsError
from sertool.provenance import json_safe
from sertool.util import atomic_write_text

__all__ = [
    "RECORD_SCHEMA",
    "ResultsLayout",
    "UnitRecord",
    "corpus_name",
    "read_unit",
]

#: Version of the unit record (``schema`` in every ``fold-<k>.json``).
RECORD_SCHEMA = 1

_FOLD_RE = re.compile(r"^fold-(\d+)\.json$")
_UNIT_GLOB = "runs/*/*/fold-*.json"
_REQUIRED_KEYS = (
    "schema",
    "corpus",
    "split_id",
    "protocol",
    "label_scheme",
    "fold",
    "features",
    "model",
    "seed",
    "classes",
    "metrics",
)
_REQUIRED_METRICS = ("wa", "ua", "macro_f1")
#: The metrics a regression unit (``task: "regression"``) must hold.
_REQUIRED_REGRESSION_METRICS = ("ccc", "pearson", "mae", "rmse")


def corpus_name(manifest: pd.DataFrame) -> str:
    """``ravdess``, or ``ravdess+tess`` for a merged manifest: the corpus folder of its results."""
    return "+".join(sorted(manifest["corpus"].unique()))


@dataclass(frozen=True)
class ResultsLayout:
    """Paths of a results folder (see the module docstring).

    Parameters
    ----------
    root : Path
        The results root (``results/``).
    """

    root: Path

    def split_dir(self, corpus: str, split_id: str) -> Path:
        """``<root>/<corpus>/<split-id>``."""
        return Path(self.root) / corpus / split_id

    @staticmethod
    def unit_paths(split_dir: Path, view: str, model: str, fold: int) -> tuple[Path, Path]:
        """(record JSON, predictions parquet) of a unit inside one split folder."""
        d = Path(split_dir) / "runs" / view.replace("/", "_") / model
        return d / f"fold-{fold}.json", d / f"fold-{fold}.predictions.parquet"

    @staticmethod
    def split_file(split_dir: Path) -> Path:
        """The saved split of a split folder."""
        return Path(split_dir) / "split.json"

    def unit_files(self) -> list[Path]:
        """Every unit record under the root (a results root, or one split folder), sorted."""
        root = Path(self.root)
        pattern = _UNIT_GLOB if (root / "runs").is_dir() else f"*/*/{_UNIT_GLOB}"
        return sorted(p for p in root.glob(pattern) if _FOLD_RE.match(p.name))

    @staticmethod
    def predictions_of(record_path: Path) -> Path:
        """The predictions parquet beside a unit record."""
        fold = _FOLD_RE.match(record_path.name).group(1)  # type: ignore[union-attr]
        return record_path.with_name(f"fold-{fold}.predictions.parquet")

    @staticmethod
    def split_dir_of(record_path: Path) -> Path:
        """The split folder a unit record lies in (``<split-dir>/runs/<view>/<model>/fold-<k>.json``)."""
        return Path(record_path).parents[3]


@dataclass
class UnitRecord:
    """What is stored when one (feature view, model, fold) unit finishes.

    Every field is written to ``fold-<k>.json``; :meth:`to_dict` / :meth:`from_dict` round-trip it. Fields
    added later have defaults, so older records still read.
    """

    corpus: str
    split_id: str
    protocol: str
    label_scheme: str
    fold: int
    features: str
    model: str
    seed: int
    classes: list[str]
    metrics: dict[str, Any]
    manifest_hash: str = ""
    split_strategy: str = ""
    speaker_independent: bool = False
    feature_key: str = ""
    model_params: dict[str, Any] = field(default_factory=dict)
    n_train: int | None = None
    n_augmented: int = 0
    augment: dict[str, Any] | None = None
    preprocess: list[dict[str, Any]] | None = None
    normalize: str | None = None
    n_valid: int = 0
    n_test: int | None = None
    fit_seconds: float = math.nan
    predict_seconds: float = math.nan
    device: str = "cpu"
    tuned: bool = False
    best_params: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    task: str = "classification"
    layer_weights: list[float] | None = None
    schema: int = RECORD_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe dict written to disk."""
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "unit record") -> UnitRecord:
        """Build a record from its JSON dict, checking the schema, the required keys and the metrics.

        Raises
        ------
        ResultsError
            Another schema, a missing key or metric; unknown keys are ignored (a newer writer's extras).
        """
        if not isinstance(data, dict):
            raise ResultsError(f"{source}: a unit JSON must hold an object, got {type(data).__name__}")
        missing = [k for k in _REQUIRED_KEYS if k not in data]
        if missing:
            raise ResultsError(f"{source}: unit JSON lacks key(s) {missing}")
        if data["schema"] != RECORD_SCHEMA:
            raise ResultsError(
                f"{source}: schema {data['schema']!r} is not supported (this sertool reads {RECORD_SCHEMA})"
            )
        metrics = data["metrics"]
        required = _REQUIRED_REGRESSION_METRICS if data.get("task") == "regression" else _REQUIRED_METRICS
        if not isinstance(metrics, dict) or any(k not in metrics for k in required):
            raise ResultsError(f"{source}: 'metrics' must hold {list(required)}, got {metrics!r:.200}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "speaker_independent" not in data:
            kwargs["speaker_independent"] = str(data["protocol"]).startswith("speaker-independent")
        return cls(**kwargs)

    def write(self, path: Path) -> Path:
        """Write the record atomically (the unit counts as done from this moment)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))


def read_unit(path: Path) -> UnitRecord:
    """Read one unit record and check it against the path it lies at.

    Raises
    ------
    ResultsError
        Unreadable JSON, another schema, missing keys, or a record whose corpus, split, view, model or fold
        disagree with its path.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: unreadable unit JSON ({exc})") from exc
    record = UnitRecord.from_dict(data, source=str(path))
    fold = int(_FOLD_RE.match(path.name).group(1))  # type: ignore[union-attr]  # the glob guarantees it
    split_dir = path.parents[3]
    where = {
        "features": (str(record.features).replace("/", "_"), path.parents[1].name),
        "model": (str(record.model), path.parent.name),
        "fold": (record.fold, fold),
        "split_id": (str(record.split_id), split_dir.name),
        "corpus": (str(record.corpus), split_dir.parent.name),
    }
    for key, (said, found) in where.items():
        if said != found:
            raise ResultsError(f"{path}: the JSON says {key}={said!r} but its path says {found!r}")
    return record
