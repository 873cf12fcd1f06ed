"""What a run predicts: the emotion (the default) or another per-utterance column of the manifest.

A target is a column the corpus adapter fills: RAVDESS and CREMA-D carry ``intensity`` (from the file names),
every adapter that knows it carries ``gender``, IEMOCAP carries ``valence``, ``arousal`` and ``dominance``
(1-5 ratings), and the ``csv`` and ``hf`` adapters carry every extra column of their table.
:func:`apply_target` turns a manifest whose ``label`` is the emotion into one whose ``label`` is the target:
the rest of sertool (splits, models, leaderboards, ``train`` / ``predict``) then works on it unchanged.

The target is recorded in the manifest's label-scheme id, ``<scheme>:<target>`` (``native-v1:intensity``),
so it reaches the saved split (and its id: ``speaker-6fold-intensity-<digest>``), every unit record, the
results path, each board's header and a saved model.

A numeric column with more than :data:`MAX_CLASSES` distinct values (IEMOCAP's averaged 1-5 ratings, a CSV
corpus's arousal column) is a **regression** target: the manifest then carries the value in
:data:`VALUE_COLUMN` (float) and ``label`` holds its quantile bin (``b1`` .. ``b<k>``, :data:`N_BINS` equal-count
bins of the whole corpus, fewer when values tie), which the stratified splits stratify on and the balanced
augmentation balances; models are fitted on the values (:func:`task_of` says which task a manifest is). The
emotion dimensions (:data:`DIMENSIONS`: ``arousal``, ``valence``, ``dominance``, ``activation``) are
regression targets whenever they are numeric; any other numeric column with few values can be asked for as
one: ``--target intensity:regression``.

A category with dimensions, ``--target emotion+arousal+valence``, is a **multi-task** target (for models of
task ``multitask``, e.g. ``mtl_head``): ``label`` is the category (stratification, UA) and each dimension's
value is in ``target_value__<dim>`` (NaN where a clip has no rating).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sertool.exceptions import ParameterError

__all__ = [
    "DEFAULT_TARGET",
    "MAX_CLASSES",
    "N_BINS",
    "VALUE_COLUMN",
    "apply_target",
    "candidate_targets",
    "dimension_columns",
    "target_of",
    "task_of",
]

log = logging.getLogger(__name__)

#: The target of a run that names none: the ``label`` column the adapters fill with the emotion.
DEFAULT_TARGET = "emotion"
#: Most distinct values a column may have to be a categorical target.
MAX_CLASSES = 20
#: Numeric columns that are regression targets whatever their number of distinct values (IEMOCAP's averaged
#: ratings take a couple of dozen values on a 1-5 scale; a small fixture, fewer).
DIMENSIONS = frozenset({"arousal", "valence", "dominance", "activation"})
#: Manifest column holding a regression target's value.
VALUE_COLUMN = "target_value"
#: Prefix of a multi-task manifest's dimension columns (``target_value__arousal``).
DIM_PREFIX = "target_value__"
#: Quantile bins of a regression target (its ``label``, for stratification only).
N_BINS = 5
#: Suffix of ``--target`` asking for a numeric column as a regression target.
REGRESSION_SUFFIX = ":regression"
#: Values that say the target is not known (CREMA-D's unspecified level): such clips are left out.
_UNKNOWN = frozenset({"", "unknown", "unspecified", "nan", "none"})
#: Manifest columns that are bookkeeping, never a target.
_NOT_TARGETS = frozenset(
    {"utt_id", "path", "speaker", "label", "label_canonical", "raw_label", "duration_s", "sample_rate", "channels",
     "sha1", "dup_group", "corpus", "start_s", "end_s", "text", "frames", VALUE_COLUMN}
)  # fmt: skip


def target_of(label_scheme: str | None) -> str:
    """The target recorded in a label-scheme id: ``"native-v1:intensity"`` -> ``"intensity"``, else emotion."""
    scheme = str(label_scheme or "")
    return scheme.split(":", 1)[1] if ":" in scheme else DEFAULT_TARGET


def task_of(manifest: pd.DataFrame) -> str:
    """``"regression"`` for a manifest whose target is continuous (it has :data:`VALUE_COLUMN`),
    ``"multitask"`` for a category with dimensions (:data:`DIM_PREFIX` columns), else ``"classification"``."""
    if VALUE_COLUMN in manifest.columns:
        return "regression"
    return "multitask" if dimension_columns(manifest) else "classification"


def dimension_columns(manifest: pd.DataFrame) -> list[str]:
    """The dimensions of a multi-task manifest, in target order (``["arousal", "valence"]``)."""
    order = manifest.attrs.get("dimensions")
    found = [str(c)[len(DIM_PREFIX) :] for c in manifest.columns if str(c).startswith(DIM_PREFIX)]
    return [d for d in order if d in found] if order else found


def _multitask(manifest: pd.DataFrame, parts: list[str]) -> pd.DataFrame:
    """``category+dim1+dim2``: the category as ``label`` (:func:`apply_target`), each dimension's value in
    ``target_value__<dim>`` (NaN where a clip has no rating: masked out of that dimension)."""
    first, dims = parts[0], parts[1:]
    if len(set(dims)) != len(dims) or first in dims:
        raise ParameterError(f"target {'+'.join(parts)!r} names a column twice")
    for dim in dims:
        if dim not in manifest.columns or not pd.api.types.is_numeric_dtype(manifest[dim]):
            raise ParameterError(
                f"multi-task target {'+'.join(parts)!r}: {dim!r} is not a numeric column of this manifest; "
                f"numeric columns: {', '.join(c for c in manifest.columns if pd.api.types.is_numeric_dtype(manifest[c]) and c not in _NOT_TARGETS)}"
            )
    out = apply_target(manifest, first)
    out = out.copy() if out is manifest else out
    for dim in dims:
        values = pd.to_numeric(out[dim], errors="coerce").astype(np.float64)
        if values.notna().sum() < 2 or values.nunique() < 2:
            raise ParameterError(f"multi-task target: dimension {dim!r} has fewer than two distinct values")
        out[f"{DIM_PREFIX}{dim}"] = values
    scheme = str(manifest.attrs.get("label_scheme", "native-v1"))
    out.attrs = dict(manifest.attrs)
    out.attrs["label_scheme"] = f"{scheme}:{'+'.join(parts)}"
    out.attrs["target"] = "+".join(parts)
    out.attrs["dimensions"] = list(dims)
    return out


def candidate_targets(manifest: pd.DataFrame) -> list[str]:
    """Columns of ``manifest`` that can be a target, emotion first: categorical ones (2 to :data:`MAX_CLASSES`
    values) and numeric ones with more values (regression targets)."""
    out = [DEFAULT_TARGET]
    for column in manifest.columns:
        if column in _NOT_TARGETS or column == DEFAULT_TARGET:
            continue
        values = manifest[column].dropna()
        if 2 <= values.nunique() <= MAX_CLASSES or (
            pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_CLASSES
        ):
            out.append(str(column))
    return out


def quantile_bins(values: pd.Series, n_bins: int = N_BINS) -> pd.Series:
    """Equal-count bins of ``values`` named ``b1`` (lowest) .. ``b<k>``; equal values share a bin (so with at
    most ``n_bins`` distinct values, one bin per value; with ties, possibly fewer than ``n_bins``)."""
    if values.nunique() <= n_bins:
        codes = values.rank(method="dense").astype(int) - 1
    else:
        codes = pd.qcut(values, q=n_bins, labels=False, duplicates="drop").astype(int)
    return ("b" + (codes + 1).astype(str)).rename(values.name)


def _regression(manifest: pd.DataFrame, name: str, values: pd.Series, present: pd.Series) -> pd.DataFrame:
    """The manifest of a regression target (module docstring)."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = present & numeric.isna()
    if bad.any():
        example = manifest.loc[bad, "path"].iloc[0] if "path" in manifest else ""
        raise ParameterError(
            f"target {name!r} is a regression target, but {int(bad.sum())} value(s) are not numbers "
            f"(e.g. {values[bad].iloc[0]!r} of {example})"
        )
    keep = present & numeric.notna() & np.isfinite(numeric.astype(float))
    if int((~keep).sum()):
        log.warning("target %s: %d clip(s) without a value left out", name, int((~keep).sum()))
    out = manifest[keep].copy()
    out["emotion"] = out["label"]
    out[VALUE_COLUMN] = numeric[keep].astype(np.float64)
    if out[VALUE_COLUMN].nunique() < 2:
        raise ParameterError(f"target {name!r} has a single value: nothing to regress")
    out["label"] = quantile_bins(out[VALUE_COLUMN]).to_numpy()
    return out


def apply_target(manifest: pd.DataFrame, target: str | None = DEFAULT_TARGET) -> pd.DataFrame:
    """A manifest whose ``label`` is ``target``.

    Parameters
    ----------
    manifest : pd.DataFrame
        A manifest (after its label scheme: :func:`sertool.data.labels.apply_scheme`), ``label`` the emotion.
    target : str, optional
        ``"emotion"`` (or None): the manifest unchanged. Else a column of the manifest.

    Returns
    -------
    pd.DataFrame
        A copy with ``label`` = the target's values as text, the emotion kept in ``emotion``, the clips without
        a value of the target (missing, empty, ``unknown`` or ``unspecified``) left out (their count is logged), ``attrs["label_scheme"]`` =
        ``<scheme>:<target>`` and ``attrs["target"]`` = ``target``.

    Raises
    ------
    ParameterError
        ``target`` is not a column, has a single value, or is continuous (more than :data:`MAX_CLASSES`
        numeric values: a regression target); the message lists the columns that can be targets.
    """
    name = DEFAULT_TARGET if target is None else str(target).strip()
    if name in ("", DEFAULT_TARGET):
        return manifest
    if "+" in name:  # a category and its dimensions, for a multi-task model
        return _multitask(manifest, [p.strip() for p in name.split("+")])
    forced = name.endswith(REGRESSION_SUFFIX)
    name = name.removesuffix(REGRESSION_SUFFIX)
    scheme = str(manifest.attrs.get("label_scheme", "native-v1"))
    if ":" in scheme:
        raise ParameterError(f"the manifest's labels are already the target {target_of(scheme)!r}")
    if name in _NOT_TARGETS or name not in manifest.columns:
        raise ParameterError(
            f"target {name!r} is not a column of this manifest; its targets: {', '.join(candidate_targets(manifest))}"
        )
    values = manifest[name]
    present = values.notna() & ~values.astype(str).str.strip().str.lower().isin(_UNKNOWN)
    distinct = values[present].nunique()
    numeric = pd.api.types.is_numeric_dtype(values)
    if forced or (numeric and (distinct > MAX_CLASSES or name.lower() in DIMENSIONS)):
        out = _regression(manifest, name, values, present).reset_index(drop=True)
        out.attrs = dict(manifest.attrs)
        # a numeric column asked for as a regression target keeps the suffix: its splits and results never
        # mix with the same column's categorical runs
        out.attrs["label_scheme"] = f"{scheme}:{name}" + (REGRESSION_SUFFIX if forced else "")
        out.attrs["target"] = name
        log.info(
            "target %s: regression on %d clips (values %.3g to %.3g)",
            name, len(out), out[VALUE_COLUMN].min(), out[VALUE_COLUMN].max(),
        )  # fmt: skip
        return out
    if distinct < 2:
        raise ParameterError(f"target {name!r} has {distinct} distinct value(s): nothing to classify")
    missing = int((~present).sum())
    if missing:
        log.warning("target %s: %d clip(s) without a value left out", name, missing)
    out = manifest[present].copy()
    out["emotion"] = out["label"]
    column = out[name]
    if pd.api.types.is_float_dtype(column) and (column == column.round()).all():
        column = column.astype("int64")  # 1.0 / 2.0 levels read back from parquet print as 1 / 2
    out["label"] = column.astype(str).str.strip()
    out = out.reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    out.attrs["label_scheme"] = f"{scheme}:{name}"
    out.attrs["target"] = name
    return out
