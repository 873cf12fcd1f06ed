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
- ``recall__<class>``: per-class recall of the pooled predictions.
- ``p_vs_best``: paired sign-flip permutation test (:func:`sertool.metrics.paired_test`, swapping whole
  speakers on speaker-independent splits) of the entry against the best entry, on the utterances both have
  predictions for; ``p_vs_best_holm``: the same p-values Holm-corrected over the family of entries. The best
  entry is the highest-ranked *complete* entry and gets empty values.
- ``fit_seconds``: mean training time per fold.
- ``complete``: the entry has a result for every fold of the split (folds from ``split.json``, else every
  fold seen for any entry of the split); incomplete entries are shown with their fold count.

Rows are sorted by ``ua_mean`` descending, ties broken by feature view then model name. Identical inputs
give a byte-identical CSV: every random procedure is seeded, floats are written with a fixed format, no
timestamps.
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
    aggregate_folds,
    bootstrap_ua_ci,
    confusion,
    correct_pvalues,
    paired_test,
    per_class_recall,
    unweighted_accuracy,
)

__all__ = [
    "BOARD_COLUMNS",
    "ResultSet",
    "ResultsError",
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
#: Extra columns after :data:`BOARD_COLUMNS` and before the ``recall__<class>`` columns.
EXTRA_COLUMNS: tuple[str, ...] = ("complete", "ua_pooled", "macro_f1_std", "n_test", "feature_key")

#: printf format of every float in the CSV files (fixed, so identical inputs give identical bytes).
FLOAT_FORMAT = "%.6g"
#: The unit record version read here (an alias of :data:`sertool.bench.records.RECORD_SCHEMA`).
SCHEMA = RECORD_SCHEMA
RECALL_PREFIX = "recall__"
PROBA_PREFIX = "proba__"

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
        of counts), ``split_dir, json_path, predictions_path`` and ``recall__<class>`` (fold-level).
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


def _load_predictions(units: pd.DataFrame) -> pd.DataFrame:
    """Read and pool the predictions parquet files of one entry's units."""
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
        for col in _PRED_COLUMNS:
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
        "wa": float(metrics["wa"]),
        "ua": float(metrics["ua"]),
        "macro_f1": float(metrics["macro_f1"]),
        "fit_seconds": float(record.fit_seconds),
        "predict_seconds": float(record.predict_seconds),
        "device": record.device,
        "tuned": bool(record.tuned),
        "confusion": metrics.get("confusion"),
        "split_dir": str(ResultsLayout.split_dir_of(path)),
        "json_path": str(path),
        "predictions_path": str(ResultsLayout.predictions_of(path)),
    }
    for c, r in (metrics.get("per_class_recall") or {}).items():
        row[f"{RECALL_PREFIX}{c}"] = math.nan if r is None else float(r)
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
        "feature_key": ";".join(sorted(set(units["feature_key"].astype(str)))),
    }


def _pooled_summary(
    preds: pd.DataFrame, split: _SplitFacts, *, n_boot: int, alpha: float, seed: int
) -> dict[str, Any]:
    """The columns of one entry that come from its test predictions pooled over folds: UA, its bootstrap
    interval (resampling speakers on a speaker-independent split, clips otherwise), the test count and
    ``recall__<class>`` (the split's classes first, then any other label seen, sorted)."""
    y_true, y_pred = preds["y_true"].to_numpy(), preds["y_pred"].to_numpy()
    groups = preds["speaker"].to_numpy() if split.speaker_independent else None
    low, high = bootstrap_ua_ci(y_true, y_pred, groups, n_boot=n_boot, alpha=alpha, seed=seed)
    labels = list(split.classes) + sorted((set(y_true) | set(y_pred)) - set(split.classes))
    recall = per_class_recall(y_true, y_pred, labels)
    return {
        "ua_ci_low": low,
        "ua_ci_high": high,
        "ua_pooled": unweighted_accuracy(y_true, y_pred),
        "n_test": len(preds),
        **{f"{RECALL_PREFIX}{c}": recall[c] for c in labels},
    }


def _ranked(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The board of the entry rows: sorted by ``ua_mean`` (descending; ties by features, then model), ranked,
    with empty p-value columns and the documented column order."""
    board = pd.DataFrame(rows).assign(p_vs_best=math.nan, p_vs_best_holm=math.nan)
    board = board.sort_values(
        ["ua_mean", "features", "model"], ascending=[False, True, True], na_position="last", kind="mergesort"
    ).reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    recall_cols = [c for c in board.columns if c.startswith(RECALL_PREFIX)]
    return board[[*BOARD_COLUMNS, *EXTRA_COLUMNS, *recall_cols]]


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
    groups = {entry: units for entry, units in results.units.groupby(["features", "model"], sort=True)}
    pooled = {
        (feat, model): results.predictions(feat, model, corpus=split.corpus, split_id=split.split_id)
        for feat, model in groups
    }
    rows = [
        {
            **_fold_summary(entry, units, split),
            **_pooled_summary(pooled[entry], split, n_boot=n_boot, alpha=alpha, seed=seed),
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
    return (
        f"corpus: {meta['corpus']} | protocol: {meta['protocol']} | split: {meta['split_id']} | "
        f"label scheme: {meta['label_scheme']} | folds: {meta['n_folds']}"
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
        f"resampling {unit}.",
        f"p vs best: paired sign-flip permutation test of the UA difference against the best complete entry "
        f"on shared utterances, swapping {swap}; Holm-corrected over all entries.",
        "fit s: mean training time per fold. Entries marked incomplete lack folds; compare with care.",
    ]


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
                f"[{_num(r.ua_ci_low)}, {_num(r.ua_ci_high)}]",
                _num(r.macro_f1_mean),
                _num(r.fit_seconds, 2),
                _pval(r.p_vs_best),
                _pval(r.p_vs_best_holm),
            ]
        )
    return header, rows, right


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
    parts.append("## Per-class recall (pooled over folds)\n")
    parts.append(_md_table(*_recall_display(board)))
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

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.incomplete td { color: #888; font-style: italic; }
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
    layers = layerwise(board)
    if not layers.empty:
        png = plot_layerwise(layers, title=f"{meta['corpus']} / {meta['split_id']}")
        put("layerwise", out / "layerwise.png", "UA per encoder layer", png)
    else:  # a plot left by an earlier render must not stand beside a board it does not describe
        (out / "layerwise.png").unlink(missing_ok=True)
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
            _table("Per-class recall (pooled over folds)", _recall_display(board), row_cls),
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
        ``csv``, ``md``, ``html``, and with plots ``ua_ci``, ``layerwise`` (when the board has single-layer
        views) and ``confusion/<features>__<model>``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(board)
    title = title or f"Leaderboard: {meta['corpus']} / {meta['split_id']}"
    written = {"csv": out / "leaderboard.csv", "md": out / "leaderboard.md"}
    written["csv"].write_bytes(_csv_text(board).encode("utf-8"))
    written["md"].write_text(leaderboard_markdown(board, title=title), encoding="utf-8")
    images: list[tuple[str, bytes]] = []
    if plots:
        plot_files, images = _write_plots(board, results, out, meta)
        written.update(plot_files)
    written["html"] = out / "leaderboard.html"
    written["html"].write_text(_leaderboard_html(board, meta, title, images), encoding="utf-8")
    log.info("leaderboard of %s/%s written to %s", meta["corpus"], meta["split_id"], out)
    return written


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
        pairs. ``attrs["splits"]`` lists ``{key, corpus, protocol, split_id, label_scheme, n_folds,
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
            text = f"{_pm(r[f'ua_mean@{k}'], r[f'ua_std@{k}'])} [{_num(r[f'ua_ci_low@{k}'])}, "
            text += f"{_num(r[f'ua_ci_high@{k}'])}] #{int(r[f'rank@{k}'])}"
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
        board = build_leaderboard(sub, n_boot=n_boot, seed=seed)
        out = Path(sub.units["split_dir"].iloc[0])
        written += write_leaderboard(board, sub, out, plots=plots).values()
        boards.append(board)
    if compare and boards:
        written += write_comparison(compare_leaderboards(boards), results_dir).values()
    elif compare:
        log.warning("%s: no results, no comparison written", results_dir)
    return written
