"""Leaderboards: per-unit results -> one ranked table per split (CSV, Markdown, self-contained HTML, plots).

Input is the results contract of ``docs/RESULTS_FORMAT.md``: one unit record
(:class:`sertool.bench.records.UnitRecord`, ``fold-<k>.json``, + predictions parquet) per (feature view,
model, fold), found and read through :class:`sertool.bench.records.ResultsLayout` and
:func:`sertool.bench.records.read_unit`; this module knows neither the folder layout nor the JSON.

What a leaderboard row states, and how it is computed
------------------------------------------------------
- ``wa_mean``/``ua_mean``/``macro_f1_mean`` and the ``*_std`` columns: mean and **sample** standard deviation
  (``ddof=1``; ``nan`` for a single fold) of the per-fold metrics stored by the runner
  (:func:`sertool.metrics.aggregate_folds`).
- ``ua_pooled``: UA of the test predictions of all folds pooled together; ``ua_ci_low``/``ua_ci_high``: its
  percentile bootstrap interval (:func:`sertool.metrics.bootstrap_ua_ci`), resampling **speakers** when the
  split is speaker-independent (clips of one speaker are correlated) and clips otherwise. Pooled
  predictions are ordered by fold, then utt_id, so the result does not depend on row order in the files.
  With fewer than :data:`MIN_CI_SPEAKERS` test speakers on a speaker-independent split the interval is
  left empty (``nan``; "n/a: 2 speakers" on the pages): a cluster bootstrap over so few speakers says
  nothing. ``n_test_speakers``: the distinct speakers of the pooled predictions.
- ``recall__<class>``: per-class recall of the pooled predictions.
- Calibration, from the stored class probabilities (``proba__<class>``), computed per fold and summarised as
  mean and sample std over folds: ``ece_*`` (expected calibration error, 15 equal-width bins of the top
  probability, :func:`sertool.metrics.expected_calibration_error`), ``brier_*`` (multi-class Brier score)
  and ``nll_*`` (negative log-likelihood of the true class, ``p`` clipped at ``1e-12``). The HTML page
  draws the reliability diagram of the best three entries (``reliability.png``).
- Slices of the pooled predictions: ``ua_speaker_worst``/``ua_speaker_median``/``ua_speaker_spread`` (UA
  within each test speaker: the lowest, the median, highest minus lowest) and ``worst_speakers`` (the three
  lowest, ``"Actor_05 0.310; ..."``); ``ua_gender_<value>`` (UA within each gender) when the predictions
  carry a ``gender`` column with two known values or more.
- ``ua_accepted``/``accepted_fraction``: UA over the clips the out-of-distribution guard accepted (the
  predictions' ``in_distribution`` column, pooled over folds) and their share; ``nan`` without that column.
- ``p_vs_best``: paired sign-flip permutation test (:func:`sertool.metrics.paired_test`, swapping whole
  speakers on speaker-independent splits) of the entry against the best entry, on the utterances both have
  predictions for; ``p_vs_best_holm``: the same p-values Holm-corrected over the family of entries. The best
  entry is the highest-ranked *complete* entry and gets empty values.
- ``fit_seconds``: mean training time per fold.
- ``complete``: the entry has a result for every fold of the split (folds from ``split.json``, else every
  fold seen for any entry of the split); incomplete entries are shown with their fold count.

Rows are sorted by ``ua_mean`` descending, ties broken by feature view then model name. Identical inputs
give a byte-identical CSV: every random procedure is seeded, floats are written with a fixed format, no
timestamps. ``provenance.json`` beside the board states where its numbers came from: the union over its
unit records of package versions, git commits, devices, seeds, split ids, label schemes, feature keys and
the range of their creation times (:func:`board_provenance`).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sertool.bench.records import RECORD_SCHEMA, ResultsLayout, UnitRecord, read_unit
from sertool.exceptions import ParameterError, ResultsError
from sertool.metrics import (
    ECE_BINS,
    aggregate_folds,
    bootstrap_ua_ci,
    brier_score,
    confusion,
    correct_pvalues,
    expected_calibration_error,
    negative_log_likelihood,
    paired_test,
    per_class_recall,
    reliability_bins,
    ua_by_group,
    unweighted_accuracy,
)

__all__ = [
    "BOARD_COLUMNS",
    "EXTRA_COLUMNS",
    "MIN_CI_SPEAKERS",
    "ResultSet",
    "ResultsError",
    "board_provenance",
    "build_leaderboard",
    "collect_results",
    "compare_leaderboards",
    "render_leaderboards",
    "write_comparison",
    "write_leaderboard",
]

log = logging.getLogger(__name__)


#: Leading columns of a leaderboard, in this order (``recall__<class>`` columns and extras follow).
BOARD_COLUMNS: tuple[str, ...] = (
    "rank",
    "features",
    "model",
    "folds",
    "wa_mean",
    "wa_std",
    "ua_mean",
    "ua_std",
    "ua_ci_low",
    "ua_ci_high",
    "macro_f1_mean",
    "fit_seconds",
    "p_vs_best",
    "p_vs_best_holm",
    "protocol",
    "split_id",
    "label_scheme",
    "corpus",
    "seed",
)
#: Extra columns after :data:`BOARD_COLUMNS` and before the ``ua_gender_<value>`` and ``recall__<class>``
#: columns.
EXTRA_COLUMNS: tuple[str, ...] = (
    "complete",
    "ua_pooled",
    "macro_f1_std",
    "n_test",
    "feature_key",
    "n_test_speakers",
    "ece_mean",
    "ece_std",
    "brier_mean",
    "brier_std",
    "nll_mean",
    "nll_std",
    "ece_pooled",
    "ua_speaker_worst",
    "ua_speaker_median",
    "ua_speaker_spread",
    "worst_speakers",
    "ua_accepted",
    "accepted_fraction",
)
#: Fewest test speakers whose speaker-cluster bootstrap interval is printed (fewer: ``nan``, "n/a").
MIN_CI_SPEAKERS = 5
#: Number of entries whose reliability diagram the HTML page draws (the best ones).
RELIABILITY_ENTRIES = 3

#: printf format of every float in the CSV files (fixed, so identical inputs give identical bytes).
FLOAT_FORMAT = "%.6g"
#: The unit record version read here (an alias of :data:`sertool.bench.records.RECORD_SCHEMA`).
SCHEMA = RECORD_SCHEMA
RECALL_PREFIX = "recall__"
#: Prefix of a multi-task unit's dimension metrics in :attr:`ResultSet.units` (``dim__ccc__arousal``); the
#: board has their fold means and stds (``dim__ccc__arousal_mean``, ``_std``).
DIM_METRIC_PREFIX = "dim__"
PROBA_PREFIX = "proba__"
GENDER_PREFIX = "ua_gender_"
#: How many of the lowest-UA speakers ``worst_speakers`` names.
N_WORST_SPEAKERS = 3

_PRED_COLUMNS = ("utt_id", "speaker", "y_true", "y_pred")


# ------------------------------------------------------------------------------------------- collecting


@dataclass
class ResultSet:
    """The units found under a results folder, with their predictions loaded on demand.

    Attributes
    ----------
    root : Path
        The folder that was scanned.
    units : pandas.DataFrame
        One row per unit JSON, sorted by corpus, split id, features, model, fold. Columns: ``corpus,
        split_id, split_strategy, speaker_independent, protocol, label_scheme, fold, features,
        feature_key, model, model_params`` (JSON text), ``seed, classes`` (tuple), ``n_train, n_valid,
        n_test, n, wa, ua, macro_f1, fit_seconds, predict_seconds, device, tuned, confusion`` (nested list
        of counts), ``provenance`` (JSON text of the record's provenance), ``created``, ``split_dir,
        json_path, predictions_path`` and ``recall__<class>`` (fold-level).
    """

    root: Path
    units: pd.DataFrame
    _cache: dict[tuple[str, str, str], pd.DataFrame] = field(default_factory=dict, repr=False)

    def splits(self) -> list[tuple[str, str]]:
        """The ``(corpus, split_id)`` pairs present, sorted."""
        if self.units.empty:
            return []
        pairs = self.units[["corpus", "split_id"]].drop_duplicates().itertuples(index=False)
        return sorted((str(c), str(s)) for c, s in pairs)

    def entries(self) -> list[tuple[str, str]]:
        """The ``(features, model)`` pairs present, sorted."""
        if self.units.empty:
            return []
        pairs = self.units[["features", "model"]].drop_duplicates().itertuples(index=False)
        return sorted((str(f), str(m)) for f, m in pairs)

    def select(
        self,
        *,
        corpus: str | None = None,
        split_id: str | None = None,
        features: str | None = None,
        model: str | None = None,
    ) -> ResultSet:
        """The subset of units matching every given field (shares the predictions cache)."""
        mask = np.ones(len(self.units), dtype=bool)
        for col, value in (
            ("corpus", corpus),
            ("split_id", split_id),
            ("features", features),
            ("model", model),
        ):
            if value is not None:
                mask &= (self.units[col] == value).to_numpy()
        return ResultSet(self.root, self.units[mask].reset_index(drop=True), self._cache)

    def predictions(
        self, features: str, model: str, *, corpus: str | None = None, split_id: str | None = None
    ) -> pd.DataFrame:
        """Test predictions of one entry, pooled over its folds.

        Parameters
        ----------
        features, model : str
            The entry.
        corpus, split_id : str, optional
            Needed only when the set holds several splits.

        Returns
        -------
        pandas.DataFrame
            ``utt_id, speaker, y_true, y_pred, proba__<class>..., fold``; one row per test utterance, sorted
            by fold then utt_id.

        Raises
        ------
        ParameterError
            The entry is absent, or present in several splits and ``corpus``/``split_id`` do not pick one.
        ResultsError
            A predictions file is missing or malformed, or an utterance is tested in two folds.
        """
        sub = self.select(corpus=corpus, split_id=split_id, features=features, model=model).units
        if sub.empty:
            raise ParameterError(
                f"no results for features={features!r}, model={model!r}"
                + (f" in {corpus}/{split_id}" if corpus or split_id else "")
                + f" under {self.root}"
            )
        split_dirs = sorted(sub["split_dir"].unique())
        if len(split_dirs) > 1:
            raise ParameterError(
                f"{features} / {model} has results in {len(split_dirs)} splits ({', '.join(split_dirs)}); "
                "pass corpus= and split_id="
            )
        key = (split_dirs[0], features, model)
        if key not in self._cache:
            self._cache[key] = _load_predictions(sub)
        return self._cache[key]


def _load_predictions(units: pd.DataFrame, *, numeric_targets: bool = False) -> pd.DataFrame:
    """Read and pool the predictions parquet files of one entry's units (``numeric_targets``: a regression
    entry's, whose ``y_true`` / ``y_pred`` stay numbers and must be numbers)."""
    frames = []
    for row in units.sort_values("fold").itertuples(index=False):
        path = Path(row.predictions_path)
        try:
            df = pd.read_parquet(path)
        except FileNotFoundError as exc:
            raise ResultsError(
                f"{path}: predictions file missing (its unit JSON {row.json_path} exists)"
            ) from exc
        except Exception as exc:
            raise ResultsError(f"{path}: unreadable predictions file ({type(exc).__name__}: {exc})") from exc
        missing = [c for c in _PRED_COLUMNS if c not in df.columns]
        if missing:
            raise ResultsError(f"{path}: predictions lack column(s) {missing}; it has {list(df.columns)}")
        if len(df) != row.n and not (isinstance(row.n, float) and math.isnan(row.n)):
            log.warning("%s: %d predictions but the unit JSON says n=%s", path, len(df), row.n)
        df = df.copy()
        if numeric_targets and not all(pd.api.types.is_numeric_dtype(df[c]) for c in ("y_true", "y_pred")):
            raise ResultsError(f"{path}: y_true / y_pred are not numbers: not a regression unit")
        for col in _PRED_COLUMNS[:2] if numeric_targets else _PRED_COLUMNS:
            df[col] = df[col].astype(str)
        df["fold"] = int(row.fold)
        frames.append(df)
    pooled = pd.concat(frames, ignore_index=True)
    dup = pooled["utt_id"][pooled["utt_id"].duplicated()]
    if not dup.empty:
        raise ResultsError(
            f"{Path(units['json_path'].iloc[0]).parent}: utterance(s) tested in more than one fold, "
            f"e.g. {dup.iloc[:3].tolist()}"
        )
    return pooled.sort_values(["fold", "utt_id"], kind="mergesort").reset_index(drop=True)


def _unit_row(record: UnitRecord, path: Path) -> dict[str, Any]:
    """The flat row of one unit record in :attr:`ResultSet.units` (``path``: where the record lies)."""
    metrics = record.metrics
    row: dict[str, Any] = {
        "corpus": str(record.corpus),
        "split_id": str(record.split_id),
        "split_strategy": str(record.split_strategy),
        "speaker_independent": bool(record.speaker_independent),
        "protocol": str(record.protocol),
        "label_scheme": str(record.label_scheme),
        "fold": int(record.fold),
        "features": str(record.features),
        "feature_key": str(record.feature_key),
        "model": str(record.model),
        "model_params": json.dumps(record.model_params, sort_keys=True, default=str),
        "seed": record.seed,
        "classes": tuple(str(c) for c in record.classes),
        "n_train": record.n_train,
        "n_valid": record.n_valid,
        "n_test": record.n_test,
        "n": metrics.get("n", record.n_test),
        "task": str(record.task),
        "wa": float(metrics.get("wa", math.nan)),
        "ua": float(metrics.get("ua", math.nan)),
        "macro_f1": float(metrics.get("macro_f1", math.nan)),
        "fit_seconds": float(record.fit_seconds),
        "predict_seconds": float(record.predict_seconds),
        "device": record.device,
        "tuned": bool(record.tuned),
        "confusion": metrics.get("confusion"),
        "layer_weights": record.layer_weights,
        "provenance": json.dumps(record.provenance, sort_keys=True, default=str),
        "created": str(record.created),
        "split_dir": str(ResultsLayout.split_dir_of(path)),
        "json_path": str(path),
        "predictions_path": str(ResultsLayout.predictions_of(path)),
    }
    for c, r in (metrics.get("per_class_recall") or {}).items():
        row[f"{RECALL_PREFIX}{c}"] = math.nan if r is None else float(r)
    if record.task == "regression":
        for key in ("ccc", "pearson", "mae", "rmse"):
            value = metrics.get(key)
            row[key] = math.nan if value is None else float(value)
    for key, value in metrics.items():  # a multi-task unit's dimensions: ccc__arousal, mae__arousal, ...
        if str(key).split("__", 1)[0] in ("ccc", "pearson", "mae", "rmse") and "__" in str(key):
            row[DIM_METRIC_PREFIX + str(key)] = math.nan if value is None else float(value)
    return row


def collect_results(
    results_dir: str | Path, *, corpus: str | None = None, split_id: str | None = None
) -> ResultSet:
    """Read every unit JSON under a results folder.

    Parameters
    ----------
    results_dir : str or Path
        ``<results>`` (holding ``<corpus>/<split-id>/runs/...``) or one split folder
        ``<results>/<corpus>/<split-id>`` (holding ``runs/...``).
    corpus, split_id : str, optional
        Keep only these.

    Returns
    -------
    ResultSet
        ``units`` has one row per unit (may be empty); predictions are read when first asked for.

    Raises
    ------
    ResultsError
        The folder does not exist, or a unit JSON is unreadable, has another schema, lacks required keys,
        or disagrees with the path it lies at.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ResultsError(f"{root}: results folder not found")
    units = pd.DataFrame([_unit_row(read_unit(p), p) for p in ResultsLayout(root).unit_files()])
    if units.empty:
        log.warning("%s: no unit results", root)
        units = pd.DataFrame(columns=["corpus", "split_id", "features", "model", "fold", "split_dir"])
    if corpus is not None:
        units = units[units["corpus"] == corpus]
    if split_id is not None:
        units = units[units["split_id"] == split_id]
    units = units.sort_values(["corpus", "split_id", "features", "model", "fold"], kind="mergesort")
    return ResultSet(root, units.reset_index(drop=True))


def _split_folds(split_dir: Path) -> set[int] | None:
    """Fold indices of the saved split ``split.json`` (:meth:`sertool.splits.Split.to_dict` format).

    ``None`` when the file is absent or unreadable (the caller then uses the folds seen in the results).
    """
    path = ResultsLayout.split_file(split_dir)
    if not path.is_file():
        return None
    try:
        folds = json.loads(path.read_text())["folds"]
        return {int(f["index"]) for f in folds} or None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: no fold list (%r); fold count taken from the results", path, exc)
        return None


# ------------------------------------------------------------------------------------------- the board


_TRANSDUCTIVE = ", transductive"


def _single(values: pd.Series, name: str, where: str) -> Any:
    uniq = pd.unique(values)
    if len(uniq) != 1:
        raise ResultsError(f"{where}: units disagree on {name}: {sorted(map(str, uniq))}")
    value = uniq[0]
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class _SplitFacts:
    """What every entry of one split shares: its identity, protocol and the folds and classes it should have."""

    corpus: str
    split_id: str
    where: str  # names the split in error messages
    protocol: str
    label_scheme: str
    speaker_independent: bool
    expected_folds: frozenset[int]
    classes: tuple[str, ...]


def _split_facts(results: ResultSet) -> _SplitFacts:
    """Check that ``results`` holds one split whose units agree, and state the facts its entries share.

    The expected folds come from ``split.json``, else from every fold seen for any entry; the classes are those
    of the units, in first-seen order.
    """
    units = results.units
    if units.empty:
        raise ResultsError(f"{results.root}: no results to rank")
    splits = results.splits()
    if len(splits) > 1:
        raise ParameterError(
            f"build_leaderboard ranks one split; {results.root} holds {len(splits)}: "
            + ", ".join(f"{c}/{s}" for c, s in splits)
            + " (use ResultSet.select(corpus=..., split_id=...))"
        )
    corpus, split_id = splits[0]
    where = f"{results.root} ({corpus}/{split_id})"
    classes: list[str] = []
    for cls in units["classes"]:
        classes.extend(c for c in cls if c not in classes)
    return _SplitFacts(
        corpus=corpus,
        split_id=split_id,
        where=where,
        # the split's protocol; an entry normalised with test-group statistics adds ", transductive"
        protocol=_single(units["protocol"].str.replace(_TRANSDUCTIVE, "", regex=False), "protocol", where),
        label_scheme=_single(units["label_scheme"], "label_scheme", where),
        speaker_independent=bool(_single(units["speaker_independent"], "speaker_independent", where)),
        expected_folds=frozenset(_split_folds(Path(units["split_dir"].iloc[0])) or units["fold"].astype(int)),
        classes=tuple(classes),
    )


def _dimension_summary(units: pd.DataFrame) -> dict[str, Any]:
    """A multi-task entry's dimension metrics: fold mean and sample std of each (empty for other entries)."""
    out: dict[str, Any] = {}
    for col in sorted(c for c in units.columns if str(c).startswith(DIM_METRIC_PREFIX)):
        values = units[col].astype(float).dropna()
        if values.empty:
            continue
        out[f"{col}_mean"] = float(values.mean())
        out[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return out


def _dimensions_display(board: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]] | None:
    """The multi-task table (CCC, Pearson r, MAE per dimension, mean ± std over folds), or None."""
    dims = sorted(
        {c[len(DIM_METRIC_PREFIX + "ccc__") : -len("_mean")] for c in board.columns
         if c.startswith(DIM_METRIC_PREFIX + "ccc__") and c.endswith("_mean")}
    )  # fmt: skip
    if not dims:
        return None
    header = ["#", "features", "model"]
    for d in dims:
        header += [f"CCC {d}", f"r {d}", f"MAE {d}"]
    rows = []
    for _, r in board.iterrows():
        if pd.isna(r.get(f"{DIM_METRIC_PREFIX}ccc__{dims[0]}_mean")):
            continue
        cells = [str(r["rank"]), str(r["features"]), str(r["model"])]
        for d in dims:
            for key in ("ccc", "pearson", "mae"):
                base = f"{DIM_METRIC_PREFIX}{key}__{d}"
                cells.append(_pm(r.get(f"{base}_mean"), r.get(f"{base}_std", math.nan)))
        rows.append(cells)
    return header, rows, [True, False, False] + [True] * (3 * len(dims))


_DIMENSIONS_CAPTION = (
    "Dimensions (multi-task entries: CCC, Pearson r, MAE on the rated test clips, mean ± std over folds)"
)


def _fold_summary(entry: tuple[str, str], units: pd.DataFrame, split: _SplitFacts) -> dict[str, Any]:
    """The columns of one entry that come from its per-fold records: fold means and sample stds, mean fit
    time, seed(s), feature key(s), fold count and completeness."""
    agg = aggregate_folds(units[["wa", "ua", "macro_f1"]].to_dict("records"))
    seeds = sorted({str(s) for s in units["seed"]})
    folds = set(units["fold"].astype(int))
    return {
        "features": entry[0],
        "model": entry[1],
        "folds": len(folds),
        **{f"{m}_{s}": agg[f"{m}_{s}"] for m in ("wa", "ua", "macro_f1") for s in ("mean", "std")},
        "fit_seconds": float(units["fit_seconds"].mean()),
        "protocol": _single(units["protocol"], "protocol", f"{split.where} {entry}"),
        "split_id": split.split_id,
        "label_scheme": split.label_scheme,
        "corpus": split.corpus,
        "seed": int(seeds[0]) if len(seeds) == 1 and seeds[0].lstrip("-").isdigit() else ";".join(seeds),
        "complete": folds >= split.expected_folds,
        **_dimension_summary(units),
        "feature_key": ";".join(sorted(set(units["feature_key"].astype(str)))),
    }


def _pooled_summary(
    preds: pd.DataFrame, split: _SplitFacts, *, n_boot: int, alpha: float, seed: int
) -> dict[str, Any]:
    """The columns of one entry that come from its test predictions pooled over folds: UA, its bootstrap
    interval (resampling speakers on a speaker-independent split, clips otherwise; ``nan`` with fewer than
    :data:`MIN_CI_SPEAKERS` test speakers on a speaker-independent split), the test and speaker counts and
    ``recall__<class>`` (the split's classes first, then any other label seen, sorted)."""
    y_true, y_pred = preds["y_true"].to_numpy(), preds["y_pred"].to_numpy()
    n_speakers = int(preds["speaker"].nunique())
    groups = preds["speaker"].to_numpy() if split.speaker_independent else None
    if split.speaker_independent and n_speakers < MIN_CI_SPEAKERS:
        low, high = math.nan, math.nan
    else:
        low, high = bootstrap_ua_ci(y_true, y_pred, groups, n_boot=n_boot, alpha=alpha, seed=seed)
    labels = list(split.classes) + sorted((set(y_true) | set(y_pred)) - set(split.classes))
    recall = per_class_recall(y_true, y_pred, labels)
    return {
        "ua_ci_low": low,
        "ua_ci_high": high,
        "ua_pooled": unweighted_accuracy(y_true, y_pred),
        "n_test": len(preds),
        "n_test_speakers": n_speakers,
        **{f"{RECALL_PREFIX}{c}": recall[c] for c in labels},
    }


def _proba_columns(preds: pd.DataFrame) -> list[str]:
    return [c for c in preds.columns if c.startswith(PROBA_PREFIX)]


def _fold_proba(part: pd.DataFrame) -> tuple[np.ndarray, list[str]] | None:
    """The probability matrix of one fold's predictions and its class names (columns a fold lacks, i.e. all
    empty after pooling, are left out); ``None`` without probabilities."""
    cols = [c for c in _proba_columns(part) if part[c].notna().any()]
    if not cols:
        return None
    return part[cols].to_numpy(dtype=np.float64), [c[len(PROBA_PREFIX) :] for c in cols]


def _calibration_summary(preds: pd.DataFrame, name: str) -> dict[str, Any]:
    """``ece_*``, ``brier_*``, ``nll_*`` (mean and sample std over folds) of one entry's stored probabilities,
    and ``ece_pooled`` (ECE of all folds' test clips together: a fold of a few hundred clips biases ECE
    upwards, since even perfectly calibrated probabilities show a sampling gap per bin); ``nan`` without
    probabilities or when they are malformed (logged, naming the entry)."""
    empty = {f"{m}_{s}": math.nan for m in ("ece", "brier", "nll") for s in ("mean", "std")}
    empty["ece_pooled"] = math.nan
    folds = []
    for fold, part in preds.groupby("fold", sort=True):
        got = _fold_proba(part)
        if got is None:
            log.warning("%s: fold %s has no class probabilities; no calibration figures", name, fold)
            return empty
        proba, classes = got
        y_true, y_pred = part["y_true"].to_numpy(), part["y_pred"].to_numpy()
        try:
            folds.append(
                {
                    "ece": expected_calibration_error(y_true, proba, classes, y_pred=y_pred),
                    "brier": brier_score(y_true, proba, classes),
                    "nll": negative_log_likelihood(y_true, proba, classes),
                }
            )
        except ParameterError as exc:
            log.warning(
                "%s: fold %s: unusable class probabilities (%s); no calibration figures", name, fold, exc
            )
            return empty
    agg = aggregate_folds(folds, metrics=("ece", "brier", "nll"))
    proba, classes = _fold_proba(preds)  # type: ignore[misc]  # every fold has probabilities here
    try:
        ece_pooled = expected_calibration_error(
            preds["y_true"].to_numpy(), np.nan_to_num(proba), classes, y_pred=preds["y_pred"].to_numpy()
        )
    except ParameterError:  # e.g. folds with different class columns
        ece_pooled = math.nan
    return {**{k: agg[k] for k in empty if k != "ece_pooled"}, "ece_pooled": ece_pooled}


def _known_genders(preds: pd.DataFrame) -> pd.Series | None:
    """The ``gender`` column as stripped lower-case text, unknown (empty, missing) as ``None``; ``None`` when
    the predictions have no such column."""
    if "gender" not in preds.columns:
        return None
    text = preds["gender"].astype("string").str.strip().str.lower().fillna("").astype(object)
    return text.where(~text.isin(("", "nan", "none")), None)


def _accepted(preds: pd.DataFrame, name: str) -> np.ndarray | None:
    """The ``in_distribution`` column as booleans; ``None`` when absent, partly missing or not boolean (the
    last two logged)."""
    if "in_distribution" not in preds.columns:
        return None
    col = preds["in_distribution"]
    if col.isna().any():
        log.warning(
            "%s: %d of %d predictions lack in_distribution (a fold without the guard); no ua_accepted",
            name,
            int(col.isna().sum()),
            len(col),
        )
        return None
    values = col.to_numpy()
    if values.dtype == bool:
        return values
    if values.dtype == object and all(isinstance(v, bool | np.bool_) for v in values):
        return values.astype(bool)
    if np.issubdtype(values.dtype, np.number) and np.isin(values, (0, 1)).all():
        return values.astype(bool)
    log.warning("%s: in_distribution is not boolean (dtype %s); no ua_accepted", name, values.dtype)
    return None


def _slice_summary(preds: pd.DataFrame, name: str) -> dict[str, Any]:
    """UA within slices of one entry's pooled predictions: per speaker (lowest, median, spread, the three
    lowest named), per gender (``ua_gender_<value>``, with two known genders or more) and over the clips the
    out-of-distribution guard accepted."""
    y_true, y_pred = preds["y_true"].to_numpy(), preds["y_pred"].to_numpy()
    per_speaker = ua_by_group(y_true, y_pred, preds["speaker"].to_numpy())
    ua = np.array(list(per_speaker.values()))
    # ties (to rounding: UA sums recalls in another order per speaker) broken by speaker name
    worst = sorted(per_speaker.items(), key=lambda kv: (round(kv[1], 12), str(kv[0])))[:N_WORST_SPEAKERS]
    out: dict[str, Any] = {
        "ua_speaker_worst": float(ua.min()),
        "ua_speaker_median": float(np.median(ua)),
        "ua_speaker_spread": float(ua.max() - ua.min()),
        "worst_speakers": "; ".join(f"{spk} {_num(v)}" for spk, v in worst),
        "ua_accepted": math.nan,
        "accepted_fraction": math.nan,
    }
    genders = _known_genders(preds)
    if genders is not None and genders.nunique() >= 2:
        known = genders.notna().to_numpy()
        by_gender = ua_by_group(y_true[known], y_pred[known], genders[known].to_numpy())
        out.update({f"{GENDER_PREFIX}{g}": v for g, v in by_gender.items()})
    accepted = _accepted(preds, name)
    if accepted is not None:
        out["accepted_fraction"] = float(accepted.mean())
        if accepted.any():
            out["ua_accepted"] = unweighted_accuracy(y_true[accepted], y_pred[accepted])
    return out


def _ranked(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The board of the entry rows: sorted by ``ua_mean`` (descending; ties by features, then model), ranked,
    with empty p-value columns and the documented column order."""
    board = pd.DataFrame(rows).assign(p_vs_best=math.nan, p_vs_best_holm=math.nan)
    board = board.sort_values(
        ["ua_mean", "features", "model"], ascending=[False, True, True], na_position="last", kind="mergesort"
    ).reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    gender_cols = sorted(c for c in board.columns if c.startswith(GENDER_PREFIX))
    recall_cols = [c for c in board.columns if c.startswith(RECALL_PREFIX)]
    dim_cols = sorted(c for c in board.columns if c.startswith(DIM_METRIC_PREFIX))
    return board[[*BOARD_COLUMNS, *EXTRA_COLUMNS, *gender_cols, *recall_cols, *dim_cols]]


def _best_index(board: pd.DataFrame) -> int:
    """Row of the best entry: the highest-ranked complete one (the first row when none is complete)."""
    complete_idx = np.flatnonzero(board["complete"].to_numpy())
    return int(complete_idx[0]) if complete_idx.size else 0


def _paired_p(
    best: pd.DataFrame, other: pd.DataFrame, names: tuple[str, str], split: _SplitFacts, *, seed: int
) -> float | None:
    """p-value of the paired test of one entry against the best on the utterances both predicted.

    ``names`` are the best's and the other entry's names (for messages). ``None`` when they share no utterance.

    Raises
    ------
    ResultsError
        The two entries disagree on the true label of an utterance.
    """
    both = best.merge(other, on="utt_id", suffixes=("_best", "_other"), validate="one_to_one")
    if both.empty:
        log.warning("%s shares no utterance with the best entry %s; no p-value", names[1], names[0])
        return None
    bad = both["y_true_best"] != both["y_true_other"]
    if bad.any():
        raise ResultsError(
            f"{split.where}: {names[0]} and {names[1]} disagree on the true label of {int(bad.sum())} "
            f"utterance(s), e.g. {both['utt_id'][bad].iloc[0]!r}"
        )
    return paired_test(
        both["y_true_best"].to_numpy(),
        both["y_pred_best"].to_numpy(),
        both["y_pred_other"].to_numpy(),
        both["speaker_best"].to_numpy() if split.speaker_independent else None,
        seed=seed,
    )


def _fill_p_vs_best(
    board: pd.DataFrame,
    pooled: dict[tuple[str, str], pd.DataFrame],
    best_i: int,
    split: _SplitFacts,
    *,
    seed: int,
) -> None:
    """Set ``p_vs_best`` (paired test of each entry against row ``best_i``) and ``p_vs_best_holm`` (the same,
    Holm-corrected over the entries that got a p-value) in place; the best row keeps empty values."""
    entries = list(zip(board["features"], board["model"], strict=True))
    best = entries[best_i]
    raw: dict[int, float] = {}
    for i, entry in enumerate(entries):
        if i == best_i:
            continue
        names = (f"{best[0]}/{best[1]}", f"{entry[0]}/{entry[1]}")
        p = _paired_p(pooled[best], pooled[entry], names, split, seed=seed)
        if p is not None:
            raw[i] = p
    if raw:
        keys = sorted(raw)
        board.loc[keys, "p_vs_best"] = [raw[k] for k in keys]
        board.loc[keys, "p_vs_best_holm"] = correct_pvalues([raw[k] for k in keys], method="holm")


def build_leaderboard(
    results: ResultSet, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> pd.DataFrame:
    """Rank the (features, model) entries of one split.

    Parameters
    ----------
    results : ResultSet
        Results of exactly one ``(corpus, split_id)`` (see :meth:`ResultSet.select`).
    n_boot : int
        Bootstrap resamples of the UA confidence interval.
    seed : int
        Seed of the bootstrap and of the permutation tests (the same for every entry).
    alpha : float
        ``1 - alpha`` is the coverage of the interval (default: 95 %).

    Returns
    -------
    pandas.DataFrame
        One row per entry, columns :data:`BOARD_COLUMNS`, then :data:`EXTRA_COLUMNS`, then
        ``ua_gender_<value>`` (sorted; only when the predictions carry two known genders or more), then
        ``recall__<class>`` in the class order of the units. ``attrs`` holds ``corpus, split_id, protocol,
        label_scheme, speaker_independent, n_folds, n_boot, alpha, seed, best``.

    Raises
    ------
    ResultsError
        No units, or units of one split that disagree on corpus/protocol/label scheme.
    ParameterError
        ``results`` holds several splits.
    """
    split = _split_facts(results)
    if "task" in results.units and (results.units["task"] == "regression").any():
        raise ParameterError(
            f"{split.where} holds regression units: rank them with "
            "sertool.bench.regression_board.build_regression_board"
        )
    groups = {entry: units for entry, units in results.units.groupby(["features", "model"], sort=True)}
    pooled = {
        (feat, model): results.predictions(feat, model, corpus=split.corpus, split_id=split.split_id)
        for feat, model in groups
    }
    rows = [
        {
            **_fold_summary(entry, units, split),
            **_pooled_summary(pooled[entry], split, n_boot=n_boot, alpha=alpha, seed=seed),
            **_calibration_summary(pooled[entry], f"{split.where} {entry[0]}/{entry[1]}"),
            **_slice_summary(pooled[entry], f"{split.where} {entry[0]}/{entry[1]}"),
        }
        for entry, units in groups.items()
    ]
    board = _ranked(rows)
    best_i = _best_index(board)
    _fill_p_vs_best(board, pooled, best_i, split, seed=seed)
    board.attrs.update(
        corpus=split.corpus,
        split_id=split.split_id,
        protocol=split.protocol,
        label_scheme=split.label_scheme,
        speaker_independent=split.speaker_independent,
        n_folds=len(split.expected_folds),
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        best=f"{board.at[best_i, 'features']} / {board.at[best_i, 'model']}",
    )
    return board


# ------------------------------------------------------------------------------------------- formatting


def _csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format=FLOAT_FORMAT, na_rep="", lineterminator="\n")


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{float(x):.{digits}f}"


def _pval(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _pm(mean: Any, std: Any) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return _num(mean) + ("" if isinstance(std, float) and math.isnan(std) else f" ± {_num(std)}")


def _ci_cell(low: Any, high: Any, n_speakers: Any) -> str:
    """``[0.431, 0.598]``, or ``n/a: 2 speakers`` when the interval was withheld for too few speakers."""
    if _num(low) == "" and n_speakers is not None and not pd.isna(n_speakers):
        n = int(n_speakers)
        if n < MIN_CI_SPEAKERS:
            return f"n/a: {n} speaker{'' if n == 1 else 's'}"
    return f"[{_num(low)}, {_num(high)}]"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[bool]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---:" if r else "---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _is_synthetic(corpus: str) -> bool:
    return "demo" in str(corpus).split("+")


def _banner() -> str:
    from sertool.demo import DEMO_BANNER  # lazy: sertool.demo imports the data stack

    return DEMO_BANNER


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", text)


def _confusion_name(features: str, model: str) -> str:
    return f"{_safe_name(features)}__{_safe_name(model)}"


def _meta(board: pd.DataFrame) -> dict[str, Any]:
    """Split-level facts of a board (from attrs, else from its columns)."""
    if board.empty:
        raise ParameterError("the leaderboard is empty")
    first = board.iloc[0]
    meta = {k: first[k] for k in ("corpus", "protocol", "split_id", "label_scheme")}
    meta.update(
        {k: v for k, v in board.attrs.items() if k in ("corpus", "protocol", "split_id", "label_scheme")}
    )
    meta["n_folds"] = board.attrs.get("n_folds", int(board["folds"].max()))
    meta["n_boot"] = board.attrs.get("n_boot")
    meta["alpha"] = board.attrs.get("alpha", 0.05)
    meta["speaker_independent"] = board.attrs.get(
        "speaker_independent", meta["protocol"] == "speaker-independent"
    )
    meta["seed"] = board.attrs.get("seed")
    meta["best"] = board.attrs.get("best")
    return meta


def _header_line(meta: dict[str, Any]) -> str:
    from sertool.data.targets import target_of

    scheme = str(meta["label_scheme"])
    return (
        f"corpus: {meta['corpus']} | target: {target_of(scheme)} | protocol: {meta['protocol']} | "
        f"split: {meta['split_id']} | label scheme: {scheme.split(':', 1)[0]} | folds: {meta['n_folds']}"
    )


def _notes(meta: dict[str, Any]) -> list[str]:
    level = round(100 * (1 - float(meta["alpha"])))
    unit = "speakers (cluster bootstrap)" if meta["speaker_independent"] else "clips"
    swap = "whole speakers" if meta["speaker_independent"] else "single clips"
    boot = f"{meta['n_boot']} resamples" if meta["n_boot"] else "bootstrap"
    return [
        "WA = accuracy, UA = balanced accuracy (mean per-class recall), F1 = macro-F1.",
        "WA/UA/F1: mean ± sample standard deviation (ddof=1) over folds.",
        f"UA {level}% CI: percentile bootstrap ({boot}) of the pooled test predictions of all folds, "
        f"resampling {unit}"
        + (
            f"; not given (n/a) with fewer than {MIN_CI_SPEAKERS} test speakers."
            if meta["speaker_independent"]
            else "."
        ),
        f"Calibration: ECE = expected calibration error ({ECE_BINS} equal-width bins of the top probability: "
        "sum over bins of |bin|/n x |accuracy - mean confidence|); Brier = mean over clips of "
        "sum_k (p_k - 1[y=k])^2; NLL = mean -log p(true class), p clipped at 1e-12; each per fold, then "
        "mean ± sample std over folds; ECE (pooled) over all folds' test clips at once (a fold of a few "
        "hundred clips biases ECE upwards). Lower is better for all three. reliability.png: reliability diagrams "
        f"of the best {RELIABILITY_ENTRIES} entries (pooled test predictions).",
        "Slices: UA within each test speaker (worst, median, spread = best - worst, the three worst named) "
        "and within each gender, from the pooled predictions. UA accepted: UA over the clips the "
        "out-of-distribution guard accepted (accepted = their share); shown only when the predictions "
        "carry the guard's decision.",
        f"p vs best: paired sign-flip permutation test of the UA difference against the best complete entry "
        f"on shared utterances, swapping {swap}; Holm-corrected over all entries.",
        "fit s: mean training time per fold. Entries marked incomplete lack folds; compare with care.",
    ]


_CALIBRATION_CAPTION = "Calibration (test probabilities; mean ± std over folds)"
_SLICES_CAPTION = "Slices (UA within speakers and groups; pooled over folds)"


def _board_display(board: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    level = "UA CI"
    header = [
        "#",
        "features",
        "model",
        "folds",
        "WA",
        "UA",
        level,
        "macro-F1",
        "fit s",
        "p vs best",
        "p (Holm)",
    ]
    right = [True, False, False, True, True, True, True, True, True, True, True]
    rows = []
    for r in board.itertuples(index=False):
        folds = str(r.folds) + ("" if r.complete else " (incomplete)")
        rows.append(
            [
                str(r.rank),
                str(r.features),
                str(r.model),
                folds,
                _pm(r.wa_mean, r.wa_std),
                _pm(r.ua_mean, r.ua_std),
                _ci_cell(r.ua_ci_low, r.ua_ci_high, getattr(r, "n_test_speakers", None)),
                _num(r.macro_f1_mean),
                _num(r.fit_seconds, 2),
                _pval(r.p_vs_best),
                _pval(r.p_vs_best_holm),
            ]
        )
    return header, rows, right


def _has(board: pd.DataFrame, col: str) -> bool:
    return col in board.columns and bool(board[col].notna().any())


def _calibration_display(board: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    header = ["features", "model", "ECE (folds)", "ECE (pooled)", "Brier", "NLL"]
    rows = [
        [
            str(r["features"]),
            str(r["model"]),
            _pm(r.get("ece_mean"), r.get("ece_std", math.nan)),
            _num(r.get("ece_pooled", math.nan)),
            *(_pm(r.get(f"{m}_mean"), r.get(f"{m}_std", math.nan)) for m in ("brier", "nll")),
        ]
        for _, r in board.iterrows()
    ]
    return header, rows, [False, False, True, True, True, True]


def _slices_display(board: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    genders = sorted(c for c in board.columns if c.startswith(GENDER_PREFIX))
    guard = _has(board, "accepted_fraction")
    header = [
        "features",
        "model",
        "speakers",
        "worst speaker",
        "median speaker",
        "spread",
        "3 worst speakers",
    ]
    header += [f"UA {g[len(GENDER_PREFIX) :]}" for g in genders]
    header += ["UA accepted", "accepted"] if guard else []
    rows = []
    for _, r in board.iterrows():
        n = r.get("n_test_speakers")
        cells = [
            str(r["features"]),
            str(r["model"]),
            "" if n is None or pd.isna(n) else str(int(n)),
            _num(r.get("ua_speaker_worst")),
            _num(r.get("ua_speaker_median")),
            _num(r.get("ua_speaker_spread")),
            "" if pd.isna(r.get("worst_speakers")) else str(r.get("worst_speakers", "")),
            *(_num(r[g]) for g in genders),
        ]
        if guard:
            cells += [_num(r.get("ua_accepted")), _num(r.get("accepted_fraction"))]
        rows.append(cells)
    right = [False, False, True, True, True, True, False, *([True] * len(genders))]
    return header, rows, right + ([True, True] if guard else [])


def _recall_display(board: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    cols = [c for c in board.columns if c.startswith(RECALL_PREFIX)]
    header = ["features", "model", *(c[len(RECALL_PREFIX) :] for c in cols)]
    rows = [[str(r["features"]), str(r["model"]), *(_num(r[c]) for c in cols)] for _, r in board.iterrows()]
    return header, rows, [False, False, *([True] * len(cols))]


def leaderboard_markdown(board: pd.DataFrame, *, title: str = "") -> str:
    """The leaderboard as a Markdown document (header line, optional SYNTHETIC banner, tables, notes)."""
    meta = _meta(board)
    parts = [f"# {title or 'Leaderboard'}\n", f"{_header_line(meta)}\n"]
    if _is_synthetic(meta["corpus"]):
        parts.append(f"> **{_banner()}**\n")
    parts.append(_md_table(*_board_display(board)))
    parts.append(f"## {_CALIBRATION_CAPTION}\n")
    parts.append(_md_table(*_calibration_display(board)))
    parts.append(f"## {_SLICES_CAPTION}\n")
    parts.append(_md_table(*_slices_display(board)))
    parts.append("## Per-class recall (pooled over folds)\n")
    parts.append(_md_table(*_recall_display(board)))
    dims = _dimensions_display(board)
    if dims is not None:
        parts.append(f"## {_DIMENSIONS_CAPTION}\n")
        parts.append(_md_table(*dims))
    layers = layerwise(board)
    if not layers.empty:
        parts.append("## Layer-wise UA (single-layer views; `layerwise.png`)\n")
        parts.append(layerwise_markdown(layers))
    parts.append("## Notes\n")
    parts.append("".join(f"- {n}\n" for n in _notes(meta)))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------- plots


def _png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_ua_ci(board: pd.DataFrame) -> bytes:
    """PNG of pooled UA with its CI per entry (best at top); ``x`` marks the mean of fold UAs, dashes chance.

    Returns
    -------
    bytes
        The PNG file's content.
    """
    n = len(board)
    fig = _new_figure(7.5, 1.2 + 0.4 * n)
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    pooled = board["ua_pooled"].to_numpy(dtype=float)
    low = np.clip(pooled - board["ua_ci_low"].to_numpy(dtype=float), 0, None)
    high = np.clip(board["ua_ci_high"].to_numpy(dtype=float) - pooled, 0, None)
    complete = board["complete"].to_numpy(dtype=bool)
    for mask, color, label in ((complete, "C0", "pooled UA, CI"), (~complete, "0.6", "incomplete entry")):
        if mask.any():
            ax.errorbar(
                pooled[mask],
                y[mask],
                xerr=[low[mask], high[mask]],
                fmt="o",
                color=color,
                capsize=3,
                label=label,
            )
    ax.plot(board["ua_mean"].to_numpy(dtype=float), y, "x", color="C3", label="mean of fold UAs", zorder=5)
    n_classes = sum(c.startswith(RECALL_PREFIX) for c in board.columns)
    if n_classes:
        ax.axvline(1 / n_classes, color="0.5", linestyle="--", linewidth=1, label=f"chance (1/{n_classes})")
    ax.set_yticks(y, [f"{f} / {m}" for f, m in zip(board["features"], board["model"], strict=True)])
    ax.set_xlabel("UA (balanced accuracy)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _png_bytes(fig)


_LAYER_VIEW = re.compile(r"^(?P<encoder>[A-Za-z0-9_.\-]+)@(?P<layer>\d+)(?P<rest>(?:~.*)?)$")


def layerwise(board: pd.DataFrame) -> pd.DataFrame:
    """The single-layer entries of a board (``whisper-base@3``, ``whisper-tiny.en@0~aug-awgn``), one row per
    (encoder, model, layer), sorted: the layer-wise table of a probing or attentive-pooling study.

    Returns
    -------
    pandas.DataFrame
        Columns ``encoder`` (the view without its layer), ``model``, ``layer``, ``ua_mean``, ``ua_std``,
        ``wa_mean``, ``folds``, ``complete``; only encoders seen at two layers or more (empty otherwise).
    """
    m = board["features"].astype(str).str.extract(_LAYER_VIEW)
    rows = board.assign(encoder=m["encoder"] + m["rest"].fillna(""), layer=pd.to_numeric(m["layer"]))
    rows = rows.dropna(subset=["layer"])
    cols = ["encoder", "model", "layer", "ua_mean", "ua_std", "wa_mean", "folds", "complete"]
    if "complete" not in rows:
        rows = rows.assign(complete=True)
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = rows[cols].astype({"layer": int}).sort_values(["encoder", "model", "layer"])
    # a curve needs two layers: an encoder probed at one layer only is no layer-wise study
    n_layers = out.groupby("encoder")["layer"].transform("nunique")
    return out[n_layers >= 2].reset_index(drop=True)


def layerwise_markdown(table: pd.DataFrame) -> str:
    """A layer-wise table as Markdown: one row per (encoder, model), one UA column per layer, best in bold;
    an entry that lacks folds is marked ``†`` (and a note says so)."""
    layers = sorted(table["layer"].unique())
    header = ["encoder", "model", *[f"L{i}" for i in layers]]
    rows = []
    for (enc, model), part in table.groupby(["encoder", "model"], sort=True):
        ua = dict(zip(part["layer"], part["ua_mean"], strict=True))
        done = dict(zip(part["layer"], part["complete"].astype(bool), strict=True))
        best = max(ua, key=lambda k: ua[k])
        cells = [
            ("" if i not in ua else f"**{_num(ua[i])}**" if i == best else _num(ua[i]))
            + ("" if done.get(i, True) else " †")
            for i in layers
        ]
        rows.append([enc, model, *cells])
    text = _md_table(header, rows, [False, False, *[True] * len(layers)])
    if not table["complete"].astype(bool).all():
        text += "\n† incomplete: fewer folds than the split has (compare with care)\n"
    return text


def plot_layerwise(table: pd.DataFrame, *, title: str = "") -> bytes:
    """PNG of UA (mean ± std over folds) against the encoder layer, one line per (encoder, model)."""
    fig = _new_figure(6.5, 3.8)
    ax = fig.add_subplot()
    for (enc, model), part in table.groupby(["encoder", "model"], sort=True):
        line = ax.errorbar(
            part["layer"],
            part["ua_mean"],
            yerr=part["ua_std"],
            marker="o",
            capsize=3,
            label=f"{enc} / {model}",
        )
        partial = ~part["complete"].astype(bool).to_numpy()
        if partial.any():  # entries that lack folds: hollow markers
            color = line[0].get_color()
            ax.plot(part["layer"][partial], part["ua_mean"][partial], "o", mfc="white", color=color)
    ax.set_xlabel("encoder layer (0 = input embedding; hollow: fewer folds than the split)")
    ax.set_ylabel("UA (mean ± std over folds)")
    ax.set_xticks(sorted(table["layer"].unique()))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _png_bytes(fig)


def plot_reliability(panels: Sequence[tuple[str, dict[str, np.ndarray]]]) -> bytes:
    """PNG of reliability diagrams side by side: per entry, accuracy against confidence per bin (bars; the
    dashed diagonal is perfect calibration, dots the mean confidence of each bin) above the clips per bin.

    Parameters
    ----------
    panels : sequence of (title, table)
        ``table`` from :func:`sertool.metrics.reliability_bins` (pooled test predictions of one entry).

    Returns
    -------
    bytes
        The PNG file's content.
    """
    n = max(1, len(panels))
    fig = _new_figure(3.6 * n, 5.2)
    grid = fig.add_gridspec(2, n, height_ratios=(3, 1), hspace=0.08)
    for i, (title, table) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        counts = fig.add_subplot(grid[1, i], sharex=ax)
        lower, upper = table["lower"], table["upper"]
        width, centre = upper - lower, (lower + upper) / 2
        acc = np.nan_to_num(table["accuracy"], nan=0.0)
        ax.bar(centre, acc, width=width, color="C0", edgecolor="white", alpha=0.85, label="accuracy")
        used = table["count"] > 0
        ax.plot(table["confidence"][used], table["accuracy"][used], "o", color="C3", ms=3, label="mean conf.")
        ax.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize="small")
        ax.tick_params(labelbottom=False)
        if i == 0:
            ax.set_ylabel("accuracy")
            ax.legend(loc="upper left", fontsize="x-small")
        counts.bar(centre, table["count"], width=width, color="0.5", edgecolor="white")
        counts.set_xlabel("confidence (top probability)")
        if i == 0:
            counts.set_ylabel("clips")
    return _png_bytes(fig)


def plot_confusion(y_true: Any, y_pred: Any, classes: Sequence[str], *, title: str = "") -> bytes:
    """PNG of a row-normalised confusion matrix (rows: true class, columns: predicted), as bytes."""
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = confusion(y_true, y_pred, list(classes), normalize="true")
    k = len(classes)
    fig = _new_figure(1.6 + 0.6 * k, 1.4 + 0.55 * k)
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(cm, display_labels=list(classes)).plot(
        ax=ax,
        cmap="Blues",
        values_format=".2f",
        colorbar=False,
        xticks_rotation=45,
        im_kw={"vmin": 0, "vmax": 1},
    )
    ax.set_title(title, fontsize="small")
    return _png_bytes(fig)


# ------------------------------------------------------------------------------------------- writing

#: The style every sertool page shares (leaderboards, suite summaries).
PAGE_CSS = """body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""

_HTML = (
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
"""
    + PAGE_CSS
    + """tr.incomplete td { color: #888; font-style: italic; }
.banner { background: #fff3cd; border: 2px solid #e0a800; padding: 0.8em; font-weight: bold; }
.meta { color: #555; }
.cms { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
figcaption { font-size: 0.85em; text-align: center; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">{{ header_line }}</p>
{% if banner %}<p class="banner">{{ banner }}</p>{% endif %}
{% for table in tables %}
{% if table.caption %}<h2>{{ table.caption }}</h2>{% endif %}
<table>
<thead><tr>{% for h in table.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}<tr{% if row.cls %} class="{{ row.cls }}"{% endif %}>
{% for v in row.cells %}<td{% if table.right[loop.index0] %} class="num"{% endif %}>{{ v }}</td>{% endfor %}
</tr>
{% endfor %}</tbody>
</table>
{% endfor %}
{% if images %}<h2>Plots</h2>
<div class="cms">
{% for img in images %}<figure><img alt="{{ img.alt }}" src="data:image/png;base64,{{ img.data }}">
<figcaption>{{ img.alt }}</figcaption></figure>
{% endfor %}</div>{% endif %}
<h2>Notes</h2>
<ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>
</body>
</html>
"""
)


def _render_html(
    *,
    title: str,
    header_line: str,
    banner: str,
    tables: list[dict[str, Any]],
    images: list[tuple[str, bytes]],
    notes: list[str],
) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(_HTML).render(
        title=title,
        header_line=header_line,
        banner=banner,
        tables=tables,
        images=[{"alt": alt, "data": base64.b64encode(data).decode("ascii")} for alt, data in images],
        notes=notes,
    )


def _table(
    caption: str, display: tuple[list[str], list[list[str]], list[bool]], classes: Sequence[str] | None = None
) -> dict[str, Any]:
    header, rows, right = display
    cls = classes or [""] * len(rows)
    return {
        "caption": caption,
        "header": header,
        "right": right,
        "rows": [{"cells": r, "cls": c} for r, c in zip(rows, cls, strict=True)],
    }


def learned_layer_weights(results: ResultSet) -> dict[str, np.ndarray]:
    """``"<features> / <model>"`` -> the learned layer weights of its folds, ``(n_folds, n_layers)``, for the
    entries whose unit records hold them (frame heads with ``stacked_layers > 1``)."""
    units = results.units
    if "layer_weights" not in units:
        return {}
    out: dict[str, np.ndarray] = {}
    for (feat, model), part in units.groupby(["features", "model"], sort=True):
        rows = [w for w in part.sort_values("fold")["layer_weights"] if isinstance(w, list | tuple) and w]
        if rows and len({len(w) for w in rows}) == 1:
            out[f"{feat} / {model}"] = np.asarray(rows, dtype=np.float64)
    return out


def plot_layer_weights(learned: dict[str, np.ndarray]) -> bytes:
    """One line per entry: the mean learned weight of each layer over folds, with the folds' range."""
    fig = _new_figure(6.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name, w in learned.items():
        x = np.arange(w.shape[1])
        mean = w.mean(axis=0)
        ax.errorbar(
            x, mean, yerr=[mean - w.min(axis=0), w.max(axis=0) - mean], marker="o", capsize=3, label=name
        )
    n = max(w.shape[1] for w in learned.values())
    ax.axhline(1.0 / n, color="#888888", linestyle="--", linewidth=1, label="uniform (the start)")
    ax.set_xticks(range(n))
    ax.set_xlabel("layer")
    ax.set_ylabel("softmax weight")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png_bytes(fig)


def _write_plots(
    board: pd.DataFrame, results: ResultSet, out: Path, meta: dict[str, Any]
) -> tuple[dict[str, Path], list[tuple[str, bytes]]]:
    """Draw ``ua_ci.png``, ``layerwise.png`` (single-layer views only; a stale one is removed) and
    ``confusion/<features>__<model>.png`` into ``out``.

    Returns
    -------
    tuple
        The files written (keyed as in :func:`write_leaderboard`) and ``(caption, png)`` per image, for the
        HTML page.
    """
    written: dict[str, Path] = {}
    images: list[tuple[str, bytes]] = []

    def put(key: str, path: Path, caption: str, png: bytes) -> None:
        path.write_bytes(png)
        written[key] = path
        images.append((caption, png))

    put("ua_ci", out / "ua_ci.png", "UA with confidence interval per entry", plot_ua_ci(board))
    panels = _reliability_panels(board, results, meta)
    if panels:
        caption = "Reliability (pooled test predictions): " + ", ".join(title for title, _ in panels)
        put("reliability", out / "reliability.png", caption, plot_reliability(panels))
    else:  # no entry has probabilities: a diagram left by an earlier render must go
        (out / "reliability.png").unlink(missing_ok=True)
    layers = layerwise(board)
    if not layers.empty:
        png = plot_layerwise(layers, title=f"{meta['corpus']} / {meta['split_id']}")
        put("layerwise", out / "layerwise.png", "UA per encoder layer", png)
    else:  # a plot left by an earlier render must not stand beside a board it does not describe
        (out / "layerwise.png").unlink(missing_ok=True)
    learned = learned_layer_weights(results)
    if learned:
        caption = "Learned layer weights of frame heads over stacked layers (mean and range over folds)"
        put("layer_weights", out / "layer_weights.png", caption, plot_layer_weights(learned))
    else:
        (out / "layer_weights.png").unlink(missing_ok=True)
    classes = [c[len(RECALL_PREFIX) :] for c in board.columns if c.startswith(RECALL_PREFIX)]
    (out / "confusion").mkdir(exist_ok=True)
    for r in board.itertuples(index=False):
        preds = results.predictions(r.features, r.model, corpus=meta["corpus"], split_id=meta["split_id"])
        name = _confusion_name(r.features, r.model)
        png = plot_confusion(
            preds["y_true"], preds["y_pred"], classes, title=f"{r.features} / {r.model} (row-normalised)"
        )
        put(
            f"confusion/{name}",
            out / "confusion" / f"{name}.png",
            f"Confusion: {r.features} / {r.model}",
            png,
        )
    return written, images


def _reliability_panels(
    board: pd.DataFrame, results: ResultSet, meta: dict[str, Any]
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``(title, reliability table)`` of the best :data:`RELIABILITY_ENTRIES` entries (board order) whose
    predictions carry usable class probabilities, pooled over folds."""
    panels: list[tuple[str, dict[str, np.ndarray]]] = []
    for r in board.itertuples(index=False):
        if len(panels) == RELIABILITY_ENTRIES:
            break
        preds = results.predictions(r.features, r.model, corpus=meta["corpus"], split_id=meta["split_id"])
        got = _fold_proba(preds)
        if got is None or preds[[PROBA_PREFIX + c for c in got[1]]].isna().any().any():
            continue
        proba, classes = got
        y_true, y_pred = preds["y_true"].to_numpy(), preds["y_pred"].to_numpy()
        try:
            table = reliability_bins(y_true, proba, classes, y_pred=y_pred)
        except ParameterError:
            continue  # logged when the board was built
        ece = expected_calibration_error(y_true, proba, classes, y_pred=y_pred)
        panels.append((f"#{r.rank} {r.features} / {r.model} (ECE {_num(ece)})", table))
    return panels


def _leaderboard_html(
    board: pd.DataFrame, meta: dict[str, Any], title: str, images: list[tuple[str, bytes]]
) -> str:
    """The self-contained HTML page of a board (tables, embedded images, notes)."""
    row_cls = ["" if c else "incomplete" for c in board["complete"]]
    return _render_html(
        title=title,
        header_line=_header_line(meta),
        banner=_banner() if _is_synthetic(meta["corpus"]) else "",
        tables=[
            _table("", _board_display(board), row_cls),
            _table(_CALIBRATION_CAPTION, _calibration_display(board), row_cls),
            _table(_SLICES_CAPTION, _slices_display(board), row_cls),
            _table("Per-class recall (pooled over folds)", _recall_display(board), row_cls),
            *(
                [_table(_DIMENSIONS_CAPTION, dims)]
                if (dims := _dimensions_display(board)) is not None
                else []
            ),
        ],
        images=images,
        notes=_notes(meta),
    )


def write_leaderboard(
    board: pd.DataFrame, results: ResultSet, out_dir: str | Path, *, title: str = "", plots: bool = True
) -> dict[str, Path]:
    """Write a leaderboard's files.

    Parameters
    ----------
    board : pandas.DataFrame
        From :func:`build_leaderboard`.
    results : ResultSet
        The results it was built from (for the pooled predictions of the confusion matrices).
    out_dir : str or Path
        Usually ``<results>/<corpus>/<split-id>``.
    title : str
        Heading of the Markdown and HTML files (default: ``"Leaderboard: <corpus> / <split-id>"``).
    plots : bool
        Also draw ``ua_ci.png`` and ``confusion/<features>__<model>.png`` (embedded in the HTML).

    Returns
    -------
    dict of str to Path
        ``csv``, ``md``, ``html``, ``provenance`` (``provenance.json``, :func:`board_provenance`), and with
        plots ``ua_ci``, ``reliability`` (when an entry has class probabilities), ``layerwise`` (when the
        board has single-layer views) and ``confusion/<features>__<model>``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(board)
    title = title or f"Leaderboard: {meta['corpus']} / {meta['split_id']}"
    written = {"csv": out / "leaderboard.csv", "md": out / "leaderboard.md"}
    written["csv"].write_bytes(_csv_text(board).encode("utf-8"))
    written["provenance"] = out / "provenance.json"
    provenance = board_provenance(board, results)
    written["provenance"].write_text(
        json.dumps(provenance, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    written["md"].write_text(leaderboard_markdown(board, title=title), encoding="utf-8")
    images: list[tuple[str, bytes]] = []
    if plots:
        plot_files, images = _write_plots(board, results, out, meta)
        written.update(plot_files)
    written["html"] = out / "leaderboard.html"
    written["html"].write_text(_leaderboard_html(board, meta, title, images), encoding="utf-8")
    log.info("leaderboard of %s/%s written to %s", meta["corpus"], meta["split_id"], out)
    return written


# ------------------------------------------------------------------------------------------- provenance


def _union(values: Iterable[Any]) -> list[Any]:
    """The distinct values, sorted (numbers before text, ``None`` last), as plain JSON values."""
    uniq = {(v.item() if isinstance(v, np.generic) else v) for v in values}
    return sorted(
        uniq,
        key=lambda v: (
            v is None,
            not isinstance(v, int | float),
            v if isinstance(v, int | float) else str(v),
        ),
    )


def _created_range(values: Iterable[Any]) -> dict[str, str | None]:
    stamps = sorted(str(v) for v in values if v is not None and str(v) not in ("", "nan"))
    return {"first": stamps[0] if stamps else None, "last": stamps[-1] if stamps else None}


def _provenance_union(units: pd.DataFrame, *, packages: bool) -> dict[str, Any]:
    """Union over some unit rows of what their records say about where they ran."""
    provs = [json.loads(p) if isinstance(p, str) and p else {} for p in units.get("provenance", [])]
    out: dict[str, Any] = {
        "n_units": len(units),
        "folds": _union(int(f) for f in units["fold"]),
        "git_commits": _union(p.get("git_commit") for p in provs),
        "sertool_versions": _union(p.get("sertool") for p in provs),
        "devices": _union(units["device"]) if "device" in units else [],
        "seeds": _union(units["seed"]),
        "feature_keys": _union(units["feature_key"].astype(str)),
        "created": _created_range(units.get("created", [])),
    }
    if packages:
        out["split_ids"] = _union(units["split_id"].astype(str))
        out["label_schemes"] = _union(units["label_scheme"].astype(str))
        out["python_versions"] = _union(p.get("python") for p in provs)
        out["platforms"] = _union(p.get("platform") for p in provs)
        names = sorted({str(k) for p in provs for k in (p.get("packages") or {})})
        out["packages"] = {n: _union((p.get("packages") or {}).get(n) for p in provs) for n in names}
    return out


def board_provenance(board: pd.DataFrame, results: ResultSet) -> dict[str, Any]:
    """Where a board's numbers came from: the union over the unit records of its entries.

    Parameters
    ----------
    board : pandas.DataFrame
        From :func:`build_leaderboard`.
    results : ResultSet
        The results it was built from (units of other splits or entries are ignored).

    Returns
    -------
    dict
        JSON-ready and deterministic (every list sorted; written with sorted keys): ``corpus``,
        ``split_id``, then over all its units ``n_units, folds, git_commits`` (``null`` = not recorded),
        ``sertool_versions, devices, seeds, feature_keys, created`` (``{first, last}``), ``split_ids,
        label_schemes, python_versions, platforms, packages`` (name -> versions seen; ``null`` among them: a
        unit that did not record that package), and ``entries``:
        ``"<features> / <model>"`` -> the same first eight keys for that entry's units.
    """
    meta = _meta(board)
    units = results.select(corpus=meta["corpus"], split_id=meta["split_id"]).units
    wanted = set(zip(board["features"].astype(str), board["model"].astype(str), strict=True))
    keep = [(f, m) in wanted for f, m in zip(units["features"], units["model"], strict=True)]
    units = units[np.asarray(keep, dtype=bool)]
    out: dict[str, Any] = {"corpus": str(meta["corpus"]), "split_id": str(meta["split_id"])}
    if units.empty:
        log.warning("%s/%s: no unit records for the board's entries; provenance is empty", *out.values())
        out["entries"] = {}
        return out
    out.update(_provenance_union(units, packages=True))
    out["entries"] = {
        f"{feat} / {model}": _provenance_union(part, packages=False)
        for (feat, model), part in units.groupby(["features", "model"], sort=True)
    }
    return out


# ------------------------------------------------------------------------------------------- comparison


def _split_key(board: pd.DataFrame) -> str:
    meta = _meta(board)
    return f"{meta['corpus']}/{meta['split_id']}"


def compare_leaderboards(boards: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Put the entries of several leaderboards (splits, corpora) side by side.

    Parameters
    ----------
    boards : iterable of pandas.DataFrame
        Leaderboards from :func:`build_leaderboard`, each of one split.

    Returns
    -------
    pandas.DataFrame
        One row per (features, model), sorted by name. For each split ``<key> = <corpus>/<split-id>``
        (ordered by corpus, protocol, split id): ``ua_mean@<key>, ua_std@<key>, ua_ci_low@<key>,
        ua_ci_high@<key>, rank@<key>, complete@<key>``. For each corpus with both a speaker-dependent and a
        speaker-independent split: ``gap@<corpus>`` = UA mean (speaker-dependent) - UA mean
        (speaker-independent), or ``gap@<corpus>/<sd-split>-vs-<si-split>`` when a corpus has several such
        pairs. Then ``n_test_speakers@<key>`` per split. ``attrs["splits"]`` lists ``{key, corpus, protocol, split_id, label_scheme, n_folds,
        entries}`` per split.
    """
    boards = [b for b in boards if not b.empty]
    if not boards:
        raise ParameterError("compare_leaderboards needs at least one non-empty leaderboard")
    metas = sorted(
        ((_meta(b), b) for b in boards),
        key=lambda mb: (mb[0]["corpus"], mb[0]["protocol"], mb[0]["split_id"]),
    )
    keys = [f"{m['corpus']}/{m['split_id']}" for m, _ in metas]
    if len(set(keys)) != len(keys):
        raise ParameterError(f"compare_leaderboards got the same split twice: {keys}")
    entries = sorted({(f, m) for _, b in metas for f, m in zip(b["features"], b["model"], strict=True)})
    out = pd.DataFrame(entries, columns=["features", "model"])
    out["n_splits"] = 0
    stats = ("ua_mean", "ua_std", "ua_ci_low", "ua_ci_high", "rank", "complete")
    for key, (_, b) in zip(keys, metas, strict=True):
        part = b[["features", "model", *stats]].rename(columns={s: f"{s}@{key}" for s in stats})
        out = out.merge(part, on=["features", "model"], how="left", validate="one_to_one")
        out["n_splits"] += out[f"rank@{key}"].notna().astype(int)
        out[f"rank@{key}"] = out[f"rank@{key}"].astype("Int64")
        out[f"complete@{key}"] = out[f"complete@{key}"].astype("boolean")
    by_corpus: dict[str, list[tuple[str, str, str]]] = {}
    for key, (m, _) in zip(keys, metas, strict=True):
        by_corpus.setdefault(m["corpus"], []).append((m["protocol"], m["split_id"], key))
    for corpus, items in sorted(by_corpus.items()):
        sd = [(s, k) for p, s, k in items if p == "speaker-dependent"]
        si = [(s, k) for p, s, k in items if p == "speaker-independent"]
        pairs = [(a, b) for a in sd for b in si]
        for (sd_id, sd_key), (si_id, si_key) in pairs:
            name = f"gap@{corpus}" if len(pairs) == 1 else f"gap@{corpus}/{sd_id}-vs-{si_id}"
            out[name] = out[f"ua_mean@{sd_key}"] - out[f"ua_mean@{si_key}"]
    for key, (_, b) in zip(keys, metas, strict=True):  # after the gaps: the older columns keep their place
        if "n_test_speakers" in b.columns:
            part = b[["features", "model", "n_test_speakers"]].rename(
                columns={"n_test_speakers": f"n_test_speakers@{key}"}
            )
            out = out.merge(part, on=["features", "model"], how="left", validate="one_to_one")
            out[f"n_test_speakers@{key}"] = out[f"n_test_speakers@{key}"].astype("Int64")
    out.attrs["splits"] = [
        {
            "key": key,
            "corpus": m["corpus"],
            "protocol": m["protocol"],
            "split_id": m["split_id"],
            "label_scheme": m["label_scheme"],
            "n_folds": m["n_folds"],
            "entries": len(b),
        }
        for key, (m, b) in zip(keys, metas, strict=True)
    ]
    return out


def _comparison_display(comp: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    keys = [s["key"] for s in comp.attrs.get("splits", [])]
    gaps = [c for c in comp.columns if c.startswith("gap@")]
    header = [
        "features",
        "model",
        *(f"UA {k}" for k in keys),
        *(g.replace("gap@", "gap SD-SI ") for g in gaps),
    ]
    rows = []
    for _, r in comp.iterrows():
        cells = [str(r["features"]), str(r["model"])]
        for k in keys:
            if pd.isna(r[f"rank@{k}"]):
                cells.append("")
                continue
            ci = _ci_cell(r[f"ua_ci_low@{k}"], r[f"ua_ci_high@{k}"], r.get(f"n_test_speakers@{k}"))
            text = f"{_pm(r[f'ua_mean@{k}'], r[f'ua_std@{k}'])} {ci} #{int(r[f'rank@{k}'])}"
            cells.append(text + ("" if r[f"complete@{k}"] else " (incomplete)"))
        cells += [("" if pd.isna(r[g]) else f"{r[g]:+.3f}") for g in gaps]
        rows.append(cells)
    return header, rows, [False, False, *([True] * (len(keys) + len(gaps)))]


def _splits_display(comp: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    header = ["split", "corpus", "protocol", "split id", "label scheme", "folds", "entries"]
    rows = [
        [
            s["key"],
            s["corpus"],
            s["protocol"],
            s["split_id"],
            s["label_scheme"],
            str(s["n_folds"]),
            str(s["entries"]),
        ]
        for s in comp.attrs.get("splits", [])
    ]
    return header, rows, [False] * 5 + [True, True]


def write_comparison(comp: pd.DataFrame, out_dir: str | Path, *, title: str = "") -> dict[str, Path]:
    """Write ``comparison.csv``, ``comparison.md`` and ``comparison.html`` into ``out_dir``.

    Parameters
    ----------
    comp : pandas.DataFrame
        From :func:`compare_leaderboards`.
    out_dir : str or Path
        Usually the results root.
    title : str
        Heading (default ``"Comparison across splits"``).

    Returns
    -------
    dict of str to Path
        ``csv``, ``md``, ``html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or "Comparison across splits"
    corpora = sorted({s["corpus"] for s in comp.attrs.get("splits", [])})
    synthetic = any(_is_synthetic(c) for c in corpora)
    line = f"corpora: {', '.join(corpora)} | splits: {len(comp.attrs.get('splits', []))}"
    notes = [
        "Cells: UA mean ± sample std over folds [pooled-UA bootstrap CI] #rank within its split.",
        "gap SD-SI <corpus>: UA mean under the speaker-dependent split minus UA mean under the "
        "speaker-independent split of the same corpus (how much speaker leakage inflates the score).",
    ]
    written = {"csv": out / "comparison.csv", "md": out / "comparison.md", "html": out / "comparison.html"}
    written["csv"].write_bytes(_csv_text(comp).encode("utf-8"))
    md = [f"# {title}\n", f"{line}\n"]
    if synthetic:
        md.append(f"> **{_banner()}**\n")
    md += [
        "## Splits\n",
        _md_table(*_splits_display(comp)),
        "## Entries\n",
        _md_table(*_comparison_display(comp)),
    ]
    md += ["## Notes\n", "".join(f"- {n}\n" for n in notes)]
    written["md"].write_text("\n".join(md), encoding="utf-8")
    html = _render_html(
        title=title,
        header_line=line,
        banner=_banner() if synthetic else "",
        tables=[_table("Splits", _splits_display(comp)), _table("Entries", _comparison_display(comp))],
        images=[],
        notes=notes,
    )
    written["html"].write_text(html, encoding="utf-8")
    return written


def render_leaderboards(
    results_dir: str | Path,
    *,
    compare: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    plots: bool = True,
) -> list[Path]:
    """Re-render the leaderboard of every split under a results folder.

    Parameters
    ----------
    results_dir : str or Path
        ``<results>``; every ``<corpus>/<split-id>/`` with unit results gets its files rewritten.
    compare : bool
        Also write ``<results>/comparison.{csv,md,html}`` (entries side by side across splits and corpora,
        with the speaker-dependent minus speaker-independent gap).
    n_boot, seed : int
        Passed to :func:`build_leaderboard`.
    plots : bool
        Passed to :func:`write_leaderboard`.

    Returns
    -------
    list of Path
        Every file written.
    """
    results = collect_results(results_dir)
    written: list[Path] = []
    boards = []
    for corpus, split_id in results.splits():
        sub = results.select(corpus=corpus, split_id=split_id)
        out = Path(sub.units["split_dir"].iloc[0])
        if "task" in sub.units and (sub.units["task"] == "regression").any():
            from sertool.bench.regression_board import build_regression_board, write_regression_board

            board = build_regression_board(sub, n_boot=n_boot, seed=seed)
            written += write_regression_board(board, sub, out, plots=plots).values()
            continue  # regression boards are not compared with classification ones
        board = build_leaderboard(sub, n_boot=n_boot, seed=seed)
        written += write_leaderboard(board, sub, out, plots=plots).values()
        boards.append(board)
    if compare and boards:
        written += write_comparison(compare_leaderboards(boards), results_dir).values()
    elif compare:
        log.warning("%s: no results, no comparison written", results_dir)
    return written
