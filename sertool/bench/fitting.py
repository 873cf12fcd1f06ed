"""One fit path: the steps that turn cached features into a fitted model, shared by bench and ``train``.

A benchmark unit and ``sertool train`` call the same functions, in the same order, so a saved model is by
construction the one a leaderboard measured (scikit-learn's ``cross_validate`` and ``fit`` share
``_fit_and_score`` for the same reason):

1. :func:`prepare_view` - configure the view's extractor(s), extract what is not cached, choose the models
   the view can feed, load their input (pooled vectors and/or frame sequences), add the augmented copies the
   folds' training parts use, apply label-free group normalisation, and name the entry;
2. :func:`fit_unit` - fit one model on one fold's training data (training + validation parts for classical
   models, training part with early stopping on the validation part for neural heads), with balanced sample
   weights, the thread cap, the device, and an optional grid search inside the training data only; with
   ``calibrate="temperature"``, then fit one temperature on the validation part (see below);
3. :func:`predict_classes` - class probabilities in the canonical class order and the predicted labels
   (ties broken in the label encoder's order, the same everywhere).

Protocol decisions (they decide what the numbers mean): labels are encoded once, over the manifest's classes;
the test part is never seen by any step here except :func:`predict_classes`; augmented copies join training
data only (never a validation part used for early stopping, never a test part).

Calibration (``calibrate="temperature"``, :mod:`sertool.calibration`): one temperature per fold, fitted on
that fold's validation part only, so the model it rescales must not have been fitted on that part. Classical
models then fit on the training part alone (not training + validation as usual: they have ~10% less data, so
their UA may differ from the uncalibrated entry's; the temperature itself never changes a predicted label).
Neural heads keep early-stopping on the validation part and the temperature is fitted on that same part (the
usual practice, Guo et al. 2017), but are not refitted on training + validation afterwards (``refit=False``:
:func:`calibration_params`), since the refitted network would have trained on the clips its temperature comes
from. A fold without a validation part cannot be calibrated: :class:`~sertool.exceptions.ParameterError`
names it (:func:`check_calibration_folds`). The entry is named ``<view>~cal-temp`` (after ``~norm-...``), in
bench and ``train`` alike.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from sertool.data.labels import CANONICAL_LABELS
from sertool.engine import predict_classes
from sertool.exceptions import ParameterError

__all__ = [
    "FitContext",
    "FittedUnit",
    "PreparedView",
    "ViewData",
    "augmented_rows",
    "calibration_overrides",
    "calibration_params",
    "check_calibration_folds",
    "class_order",
    "entry_name",
    "feature_label",
    "fit_unit",
    "fold_threads",
    "normalize_groups",
    "predict_classes",
    "prepare_view",
]

log = logging.getLogger(__name__)


def class_order(labels: Sequence[str]) -> list[str]:
    """Classes present in ``labels``, in canonical order (unknown labels last, alphabetically)."""
    order = {lab: i for i, lab in enumerate(CANONICAL_LABELS)}
    return sorted(set(labels), key=lambda c: (order.get(c, len(order)), c))


def entry_name(mspec: Any, tune: bool) -> str:
    """The model's leaderboard name: ``svm``, or ``svm+tuned`` when its grid is searched in this run, so
    tuned and untuned runs of one model never overwrite each other's units."""
    return f"{mspec.name}+tuned" if tune and mspec.param_grid and mspec.family != "neural" else mspec.name


def feature_label(view: str, extractor: Any, augment: Any = None) -> str:
    """The leaderboard name of a view: ``handcrafted94``, ``handcrafted94~denoise-trim`` (preprocessed),
    ``mfcc40~aug-awgn`` (training parts augmented): what follows ``~`` are the run's signal transforms."""
    label = view + str(getattr(extractor, "entry_tag", "") or "")
    pre = getattr(extractor, "preprocess", None)
    if pre:
        label += "~" + "-".join(step["name"] for step in pre)
    if augment is not None:
        label += "~" + augment.tag
    return label


def fold_threads(unit_jobs: int = 1) -> int:
    """BLAS/OpenMP threads per fit: ``$SERTOOL_N_JOBS`` when set, else the cores divided among the units
    that run at once (one unit at a time on a 2-core machine gets 1: an unbounded BLAS pool made
    scikit-learn's MLP 20x slower on 2 busy cores)."""
    from sertool.models.classic import n_jobs_from_env

    cores = os.cpu_count() or 1
    if os.environ.get("SERTOOL_N_JOBS", "").strip():
        n = n_jobs_from_env()
        return cores if n < 0 else max(1, n)
    return max(1, cores // max(1, unit_jobs)) if unit_jobs > 1 else 1


# ------------------------------------------------------------------------------------------- view data
@dataclass
class ViewData:
    """One feature view's model input for the utterances that have it.

    Attributes
    ----------
    X : ndarray or list of ndarray
        Pooled vectors ``(n, d)`` or frame sequences (a list of ``(T_i, F)`` arrays), in ``utt_ids`` order.
    utt_ids : list of str
    key : str
        Feature cache key (``+``-joined for fused views).
    entry : str
        The leaderboard name of the view (``whisper-base@all~norm-speaker``).
    augment : AugmentSpec, optional
        The run's augmentation; ``aug`` holds one loaded set per augmented copy.
    preprocess : list of dict
        Preprocessing steps applied to every clip (part of the cache key).
    normalize : str, optional
        The manifest column whose groups were z-scored (``speaker`` / ``corpus``).
    """

    X: Any
    utt_ids: list[str]
    key: str
    entry: str
    aug: list[ViewData] = field(default_factory=list)
    augment: Any = None
    preprocess: list[dict[str, Any]] = field(default_factory=list)
    normalize: str | None = None
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {u: i for i, u in enumerate(self.utt_ids)}

    def present(self, ids: Sequence[str]) -> list[str]:
        """The utterances of ``ids`` that have features here (skipped clips have none)."""
        return [u for u in ids if u in self.index]

    def rows(self, ids: Sequence[str]) -> Any:
        """Model input of ``ids`` (every one must be present)."""
        idx = [self.index[u] for u in ids]
        if isinstance(self.X, np.ndarray):
            return self.X[idx]
        return [self.X[i] for i in idx]

    def augment_record(self) -> dict[str, Any] | None:
        """What a unit record stores of the augmentation (spec + the copies' cache keys)."""
        if self.augment is None:
            return None
        return {**self.augment.to_dict(), "copy_keys": [c.key for c in self.aug]}


def augmented_rows(
    fit_ids: Sequence[str], labels: dict[str, str], augment: Any, seed: int, fold: int
) -> list[tuple[str, int]]:
    """(utterance, copy) pairs added to one fold's training data.

    Without ``balance``: every copy of every training utterance. With it: per class, copies of its clips in a
    seeded order (first copy of each, then second, ...) until the class has as many rows as the largest
    class, at most ``augment.copies`` per clip.
    """
    if not augment.balance:
        return [(u, c) for c in range(augment.copies) for u in fit_ids]
    by_class: dict[str, list[str]] = {}
    for u in fit_ids:
        by_class.setdefault(labels[u], []).append(u)
    top = max(len(v) for v in by_class.values())
    rng = np.random.default_rng([seed, fold, 7])
    rows: list[tuple[str, int]] = []
    for label in sorted(by_class):
        members = [by_class[label][i] for i in rng.permutation(len(by_class[label]))]
        need = min(top - len(members), len(members) * augment.copies)
        rows += [(members[j % len(members)], j // len(members)) for j in range(need)]
    return rows


def _with_augmented(
    data: ViewData, ids: list[str], labels: dict[str, str], seed: int, fold: int
) -> tuple[Any, list[str]]:
    """Rows of ``ids`` followed by the augmented copies for them; returns (X, origin id per row)."""
    X = data.rows(ids)
    if data.augment is None:
        return X, ids
    rows = augmented_rows(ids, labels, data.augment, seed, fold)
    parts, origin = [X], list(ids)
    for c, copy in enumerate(data.aug):
        take = [u for u, cc in rows if cc == c and u in copy.index]
        if take:
            parts.append(copy.rows(take))
            origin += take
    if isinstance(X, np.ndarray):
        return np.concatenate(parts), origin
    return [x for part in parts for x in part], origin


def normalize_groups(data: ViewData, manifest: pd.DataFrame, column: str) -> None:
    """Z-score ``data.X`` (and its augmented copies) per ``column`` group with the group's own clean-clip
    mean and standard deviation (no labels involved); renames the entry ``<view>~norm-<column>``."""
    group = dict(zip(manifest["utt_id"], manifest[column].astype(str), strict=True))
    X = np.asarray(data.X, dtype=np.float64)
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = pd.Series([group[u] for u in data.utt_ids])
    for g, idx in rows.groupby(rows).groups.items():
        idx = np.asarray(idx)
        stats[g] = group_statistics(X[idx])
        X[idx] = (X[idx] - stats[g][0]) / stats[g][1]
    data.X = X.astype(np.float32)
    for copy in data.aug:
        if len(copy.utt_ids):
            C = np.asarray(copy.X, dtype=np.float64)
            for i, u in enumerate(copy.utt_ids):
                mean, std = stats[group[u]]
                C[i] = (C[i] - mean) / std
            copy.X = C.astype(np.float32)
    data.entry = data.entry + f"~norm-{column}"
    for copy in data.aug:
        copy.entry = data.entry
    data.normalize = column


def group_statistics(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of a group's pooled vectors; a constant dimension gets std 1 (it is only centred)."""
    X = np.asarray(X, dtype=np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0)
    return mean, np.where(std > 1e-8, std, 1.0)


# --------------------------------------------------------------------------------------- preparing a view
@dataclass
class PreparedView:
    """A feature view ready for fitting: its models and their input.

    Attributes
    ----------
    spec : str
        The view as asked for (``whisper-base@all+text-minilm``).
    label : str
        Its leaderboard name before normalisation.
    models : list of ModelSpec
        The models this view feeds.
    data : dict
        ``{"pooled": ViewData, "frames": ViewData}`` (the kinds the models read).
    skipped : list of (model name, reason)
        Models asked for that this view cannot feed.
    extraction : list of ExtractionReport
    extractors : list of Extractor
        The configured extractor of each part of the view.
    """

    spec: str
    label: str
    models: list[Any]
    data: dict[str, ViewData]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extraction: list[Any] = field(default_factory=list)
    extractors: list[Any] = field(default_factory=list)


def _choose_models(
    models: Any, parts: Sequence[Any], kinds: list[str], spec: str, task: str = "classification"
) -> tuple[list, list]:
    """(models the view feeds, [(name, reason)] of named models it cannot feed); group words (``all``, a
    family) select the models of the run's ``task``."""
    from sertool.models.registry import resolve_models

    requested = resolve_models(models, task=task)
    tokens = models.split(",") if isinstance(models, str) else list(models)
    named = {t.strip().lower() for t in tokens}
    # a model designed for other features (cnn_transformer: MFCCs) runs on these only when named
    chosen = [
        m
        for m in requested
        if m.input in kinds and (m.name in named or all(m.designed_for(v.extractor) for v in parts))
    ]
    explicit = not (isinstance(models, str) and models in ("all", "classic", "neural"))
    skipped = []
    for m in requested:
        if m.input not in kinds and explicit:
            log.warning("%s needs %s features, which %s does not provide; skipped", m.name, m.input, spec)
            skipped.append((m.name, f"needs {m.input}"))
    return chosen, skipped


def _load_fused(store: Any, manifest: pd.DataFrame, views: Sequence[Any], extractors: Sequence[Any]) -> tuple:
    """Pooled vectors of several views side by side (``whisper-base@all+text-minilm``: audio and text), for
    the utterances every view has, in manifest order; the key names every part's cache key."""
    sets = [
        store.load(manifest, v, output="pooled", allow_missing=True, key=ex)
        for v, ex in zip(views, extractors, strict=True)
    ]
    common = set.intersection(*(set(fs.utt_ids) for fs in sets))
    ids = [u for u in manifest["utt_id"] if u in common]
    blocks = []
    for fs in sets:
        pos = {u: i for i, u in enumerate(fs.utt_ids)}
        blocks.append(fs.X[[pos[u] for u in ids]])
    X = np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)
    return X, ids, "+".join(fs.key for fs in sets)


def _load_kinds(
    store: Any, manifest: pd.DataFrame, prep: PreparedView, parts: Sequence[Any], extractors: Sequence[Any]
) -> None:
    """Fill ``prep.data`` with the input kinds its models read; models whose kind is not stored are skipped."""
    pre = [s for ex in extractors for s in getattr(ex, "preprocess", [])]
    if len(parts) > 1:
        if prep.models:
            X, ids, key = _load_fused(store, manifest, parts, extractors)
            prep.data["pooled"] = ViewData(X, ids, key, prep.label, preprocess=pre)
        return
    for kind in sorted({m.input for m in prep.models}):
        try:
            fs = store.load(manifest, parts[0], output=kind, allow_missing=True, key=extractors[0])
        except ParameterError as exc:  # e.g. a layer view whose frames were not stored
            log.warning(
                "%s: no %s features for this view (%s); models that need them are skipped",
                prep.spec,
                kind,
                exc,
            )
            prep.skipped += [(m.name, str(exc)) for m in prep.models if m.input == kind]
            prep.models = [m for m in prep.models if m.input != kind]
            continue
        prep.data[kind] = ViewData(fs.X, list(fs.utt_ids), fs.key, prep.label, preprocess=list(pre))


def _attach_augmented(
    store: Any,
    manifest: pd.DataFrame,
    prep: PreparedView,
    view: Any,
    extractor: Any,
    aug: Any,
    fit_sets: Sequence[tuple[int, list[str]]],
    labels: dict[str, str],
    seed: int,
    extract: bool,
    jobs: int,
) -> None:
    """Extract and load exactly the augmented copies some fit will use (never of a clip only tested on;
    with balancing, only copies of the clips that fill a smaller class)."""
    from sertool.features.extract import extract_features
    from sertool.features.transforms import augmented_extractors

    avail = next(iter(prep.data.values())).index
    wanted: list[set[str]] = [set() for _ in range(aug.copies)]
    for fold, ids in fit_sets:
        for u, c in augmented_rows([u for u in ids if u in avail], labels, aug, seed, fold):
            wanted[c].add(u)
    for copy, ids in zip(augmented_extractors(extractor, aug), wanted, strict=True):
        sub = manifest[manifest["utt_id"].isin(ids)]
        if extract and len(sub):
            prep.extraction.append(extract_features(sub, copy, cache=store, jobs=jobs))
        for kind, data in prep.data.items():
            cs = (
                store.load(sub, replace(view, extractor=copy.name), output=kind, allow_missing=True, key=copy)
                if len(sub)
                else None
            )
            ids_c = list(cs.utt_ids) if cs is not None else []
            data.aug.append(ViewData(cs.X if cs is not None else [], ids_c, copy.key, data.entry))


def prepare_view(
    spec: str,
    manifest: pd.DataFrame,
    *,
    models: Any,
    store: Any,
    folds: Sequence[Any],
    seed: int = 0,
    device: str = "cpu",
    extractor_params: dict[str, dict[str, Any]] | None = None,
    augment: Any = None,
    normalize: str | None = None,
    extract: bool = True,
    jobs: int = -1,
    scheduler: str | None = None,
    calibrate: str | None = None,
) -> PreparedView:
    """Everything a view needs before fitting (step 1 of the module docstring).

    Parameters
    ----------
    spec : str
        The feature view (``"handcrafted94"``, ``"whisper-base@all"``, ``"a+b"`` fuses pooled vectors).
    manifest : pandas.DataFrame
        Utterances (label scheme applied).
    models : str or sequence of str
        ``"all"``, a family or names; only models whose input the view provides are kept.
    store : FeatureStore
    folds : sequence of Fold
        The folds that will be fitted (their training parts decide which augmented copies are made).
    seed, device, extractor_params, augment, normalize, extract, jobs, scheduler
        As :func:`sertool.bench.runner.run_bench`.
    calibrate : {"temperature"}, optional
        The run's calibration: the entry of every input kind is named ``<view>...~cal-temp``.
    """
    from sertool.features import configured_extractor, parse_view
    from sertool.features.extract import extract_features

    parts = [parse_view(p) for p in spec.split("+")]
    if len(parts) > 1 and augment is not None:
        raise ParameterError(f"{spec}: augmentation of fused views is not supported; augment one view")
    extractor_params = extractor_params or {}
    extractors, reports = [], []
    for part in parts:  # converted Whisper weights live beside the features
        ex = configured_extractor(
            part.extractor, extractor_params.get(part.extractor), device=device, cache=store.root
        )
        if extract:
            reports.append(extract_features(manifest, ex, cache=store, jobs=jobs, scheduler=scheduler))
        extractors.append(ex)
    label = "+".join(feature_label(v.name, ex, augment) for v, ex in zip(parts, extractors, strict=True))
    kinds = ["pooled"] + (["frames"] if len(parts) == 1 and "frames" in extractors[0].outputs() else [])
    from sertool.data.targets import task_of

    chosen, skipped = _choose_models(models, parts, kinds, spec, task_of(manifest))
    prep = PreparedView(spec, label, chosen, {}, skipped, reports, extractors)
    _load_kinds(store, manifest, prep, parts, extractors)
    for data in prep.data.values():
        data.augment = augment
    if augment is not None and prep.data:
        labels = dict(zip(manifest["utt_id"], manifest["label"], strict=True))
        fit_sets = [(f.index, ids) for f in folds for ids in (list(f.train), list(f.train) + list(f.valid))]
        _attach_augmented(
            store, manifest, prep, parts[0], extractors[0], augment, fit_sets, labels, seed, extract, jobs
        )
    if normalize is not None and "pooled" in prep.data:
        normalize_groups(prep.data["pooled"], manifest, normalize)
    tag = calibration_tag(calibrate)
    if tag:
        for data in prep.data.values():
            data.entry += tag
            for copy in data.aug:
                copy.entry = data.entry
    return prep


def calibration_tag(calibrate: str | None) -> str:
    """What a calibrated entry's name ends with: ``~cal-temp`` for ``"temperature"``, ``""`` without one."""
    from sertool.calibration import check_calibrate

    method = check_calibrate(calibrate)
    return {None: "", "temperature": "~cal-temp"}[method]


def check_calibration_folds(folds: Sequence[Any], calibrate: str | None) -> str | None:
    """Refuse, before anything is fitted, to calibrate on folds that have no validation part.

    Returns
    -------
    str or None
        The calibration method (:func:`sertool.calibration.check_calibrate`), None without one.

    Raises
    ------
    ParameterError
        An unknown method, or folds without a validation part (every one named).
    """
    from sertool.calibration import check_calibrate

    method = check_calibrate(calibrate)
    if method is None:
        return None
    empty = [int(f.index) for f in folds if not len(f.valid)]
    if empty:
        raise ParameterError(
            f"calibrate={calibrate!r} fits the temperature on each fold's validation part, but fold(s) "
            f"{', '.join(map(str, empty))} have none (valid_fraction 0, or too few speakers); give the split "
            "a validation part or run without calibration"
        )
    return method


def calibration_params(
    calibrate: str | None, mspec: Any, params: dict[str, Any] | None = None, *, seed: int = 0
) -> dict[str, Any]:
    """The model parameter overrides a calibrated fit uses: ``params``, plus ``refit=False`` for a model that
    would otherwise refit on training + validation (neural heads), whose temperature then comes from clips it
    trained on. Without calibration, ``params`` unchanged.

    Raises
    ------
    ParameterError
        ``refit=True`` asked for explicitly together with calibration.
    """
    from sertool.calibration import check_calibrate
    from sertool.models.registry import make_estimator

    params = dict(params or {})
    if check_calibrate(calibrate) is None or mspec.family != "neural":
        return params
    if "refit" not in make_estimator(mspec.name, seed=seed).get_params(deep=False):
        return params
    if params.get("refit", False):
        raise ParameterError(
            f"{mspec.name}: refit=True retrains on the validation part the temperature is fitted on; "
            "calibration needs refit=False (the default when calibrating)"
        )
    return {**params, "refit": False}


def calibration_overrides(
    calibrate: str | None,
    models: Sequence[Any],
    model_params: dict[str, dict[str, Any]] | None,
    *,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per-model overrides of a run (``{"svm": {...}}``) with :func:`calibration_params` applied to each of
    ``models``, so a unit's stored parameters (``refit=False`` of a calibrated head) are those it is planned,
    compared and fitted with. Without calibration, a copy of ``model_params``."""
    out = {k: dict(v) for k, v in (model_params or {}).items()}
    if calibrate is None:
        return out
    for m in models:
        params = calibration_params(calibrate, m, out.get(m.name), seed=seed)
        if params:
            out[m.name] = params
    return out


# ------------------------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class FitContext:
    """What every fit of one run shares: classes, labels, speakers and the run's settings."""

    classes: list[str]
    labels: dict[str, str]
    speakers: dict[str, str]
    genders: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    tune: bool = False
    threads: int = 1
    speaker_independent: bool = True
    calibrate: str | None = None
    task: str = "classification"
    values: dict[str, Any] = field(default_factory=dict)
    dimensions: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, manifest: pd.DataFrame, **settings: Any) -> FitContext:
        """Classes in canonical order and the label / speaker of every utterance of ``manifest``; for a
        regression target (:func:`sertool.data.targets.task_of`) also every utterance's value, and ``classes``
        are the value's quantile bins (stratification only)."""
        from sertool.data.targets import DIM_PREFIX, VALUE_COLUMN, dimension_columns, task_of

        task = task_of(manifest)
        dims = tuple(dimension_columns(manifest)) if task == "multitask" else ()
        values: dict[str, Any] = {}
        if task == "regression":
            values = dict(zip(manifest["utt_id"], manifest[VALUE_COLUMN].astype(float), strict=True))
        elif dims:
            block = manifest[[f"{DIM_PREFIX}{d}" for d in dims]].to_numpy(dtype=np.float64)
            values = dict(zip(manifest["utt_id"], block, strict=True))
        return cls(
            classes=class_order(manifest["label"].tolist()),
            labels=dict(zip(manifest["utt_id"], manifest["label"], strict=True)),
            speakers=dict(zip(manifest["utt_id"], manifest["speaker"].astype(str), strict=True)),
            genders=dict(zip(manifest["utt_id"], manifest["gender"].fillna("").astype(str), strict=True))
            if "gender" in manifest
            else {},
            task=task,
            values=values,
            dimensions=dims,
            **settings,
        )

    @property
    def regression(self) -> bool:
        """Whether the target is continuous (models fit :meth:`target` values, not label codes)."""
        return self.task == "regression"

    def target(self, ids: Sequence[str]) -> np.ndarray:
        """What a model is fitted on for ``ids``: label codes, or the regression target's values (float64)."""
        if self.regression:
            return np.asarray([self.values[u] for u in ids], dtype=np.float64)
        if self.task == "multitask":  # (n, 1 + k): the label code, then the dimensions (NaN: no rating)
            codes = self.encode(ids).astype(np.float64)[:, None]
            dims = np.asarray([self.values[u] for u in ids], dtype=np.float64).reshape(len(ids), -1)
            return np.hstack([codes, dims])
        return self.encode(ids)

    def dimension_values(self, ids: Sequence[str]) -> np.ndarray:
        """A multi-task run's dimensions of ``ids``, ``(n, k)`` (NaN: no rating)."""
        return np.asarray([self.values[u] for u in ids], dtype=np.float64).reshape(
            len(ids), len(self.dimensions)
        )

    @property
    def encoder(self) -> Any:
        """The label encoder over :attr:`classes` (codes = positions in the sorted class names)."""
        from sertool.models.registry import encode_labels

        return encode_labels(self.classes)[0]

    def encode(self, ids: Sequence[str]) -> np.ndarray:
        """Label codes of ``ids``."""
        return self.encoder.transform([self.labels[u] for u in ids])


@dataclass
class FittedUnit:
    """A fitted model and what the record of its unit states about the fit.

    Attributes
    ----------
    estimator : estimator
        What predicts: the fitted model, or, calibrated, a
        :class:`~sertool.calibration.TemperatureScaled` wrapping it.
    fit_ids, valid_ids : list of str
        The utterances fitted on, and the validation part used (early stopping and/or calibration).
    temperature : float, optional
        The fold's temperature, when calibrated.
    calibration_nll : (float, float), optional
        Mean NLL of the validation part before and after the temperature.
    """

    estimator: Any
    fit_ids: list[str]
    valid_ids: list[str]
    n_augmented: int
    best_params: dict[str, Any] | None
    fit_seconds: float
    device: str
    temperature: float | None = None
    calibration_nll: tuple[float, float] | None = None

    @property
    def base_estimator(self) -> Any:
        """The fitted model itself (without a calibration wrapper): its parameters are the unit's."""
        from sertool.calibration import TemperatureScaled

        est = self.estimator
        return est.estimator if isinstance(est, TemperatureScaled) else est

    @property
    def calibration(self) -> dict[str, Any] | None:
        """What a unit record and ``model.json`` state about calibration (None when not calibrated)."""
        if self.temperature is None:
            return None
        out: dict[str, Any] = {
            "method": "temperature",
            "temperature": float(self.temperature),
            "fitted_on": "valid",
            "n_valid": len(self.valid_ids),
        }
        if self.calibration_nll is not None:
            out["nll_valid_before"], out["nll_valid_after"] = map(float, self.calibration_nll)
        return out


def fit_unit(
    ctx: FitContext,
    data: ViewData,
    mspec: Any,
    *,
    train: Sequence[str],
    valid: Sequence[str],
    fold: int,
    params: dict[str, Any] | None = None,
) -> FittedUnit:
    """Fit ``mspec`` on one fold's training data (step 2 of the module docstring).

    Parameters
    ----------
    ctx : FitContext
    data : ViewData
        The view's input (utterances without features are left out of every part).
    mspec : ModelSpec
    train, valid : sequence of str
        The fold's training and validation parts.
    fold : int
        Fold index (seeds the augmentation order of balanced copies).
    params : dict, optional
        Model parameter overrides.

    Returns
    -------
    FittedUnit
        Calibrated (``ctx.calibrate``): the estimator is wrapped in a
        :class:`~sertool.calibration.TemperatureScaled` whose temperature was fitted on ``valid``; classical
        models were fitted on ``train`` only and neural heads without refitting (module docstring).

    Raises
    ------
    ParameterError
        Calibration asked for on a fold whose validation part is empty (the message names the fold), or for a
        model without ``predict_proba``.
    """
    from sertool.models.registry import make_estimator, params_for_view

    params = params_for_view(mspec, data.entry, params)
    train, valid = data.present(train), data.present(valid)
    holds_valid = mspec.family == "neural" or getattr(mspec, "uses_validation", False)  # reads the valid part
    calibrate = _check_fit_request(ctx, data, mspec, valid, fold)
    params = calibration_params(calibrate, mspec, params, seed=ctx.seed)
    fit_ids = train if holds_valid or calibrate is not None else train + valid
    est = make_estimator(mspec.name, seed=ctx.seed, **params)
    has_device = "device" in est.get_params(deep=False)
    if has_device:
        est.set_params(device=ctx.device)
    est = clone(est)
    X_fit, fit_rows = _with_augmented(data, fit_ids, ctx.labels, ctx.seed, fold)
    y_fit = ctx.target(fit_rows)
    fit_params: dict[str, Any] = {}
    if holds_valid and valid:
        fit_params = {"X_valid": data.rows(valid), "y_valid": ctx.target(valid)}
    t0 = time.perf_counter()
    est, best_params = _fit_or_tune(ctx, data, mspec, est, X_fit, y_fit, fit_rows, fit_params)
    fitted = FittedUnit(
        est,
        fit_ids,
        valid if holds_valid or calibrate is not None else [],
        len(fit_rows) - len(fit_ids),
        best_params,
        time.perf_counter() - t0,
        ctx.device if has_device else "cpu",
    )
    if calibrate == "temperature":
        _calibrate_temperature(fitted, data, ctx, mspec, valid)
        fitted.fit_seconds = time.perf_counter() - t0
    return fitted


def _fit_or_tune(
    ctx: FitContext,
    data: ViewData,
    mspec: Any,
    est: Any,
    X_fit: Any,
    y_fit: np.ndarray,
    fit_rows: list[str],
    fit_params: dict[str, Any],
) -> tuple[Any, dict[str, Any] | None]:
    """Fit ``est`` on the unit's rows (balanced sample weights for a classifier), or with ``ctx.tune`` grid-
    search a classical model inside them; returns the fitted estimator and the chosen parameters (or None)."""
    from sertool.models.registry import fit_estimator

    if ctx.tune and mspec.param_grid and mspec.family != "neural":
        # inner folds keep a speaker's (or, speaker-dependent, a clip's) augmented copies together
        groups = [ctx.speakers[u] for u in fit_rows] if ctx.speaker_independent else fit_rows
        grouped = ctx.speaker_independent or data.augment is not None
        strata = ctx.encode(fit_rows) if ctx.regression else None  # the value's bins stratify inner folds
        return _tune(est, mspec, X_fit, y_fit, groups, grouped, ctx.seed, ctx.threads, strata=strata)
    fit_estimator(
        est,
        X_fit,
        y_fit,
        sample_weight=None
        if ctx.regression
        else _balanced(y_fit[:, 0].astype(int) if y_fit.ndim == 2 else y_fit, mspec),
        fit_params=fit_params,
        threads=ctx.threads,
    )
    return est, None


def _check_fit_request(
    ctx: FitContext, data: ViewData, mspec: Any, valid: list[str], fold: int
) -> str | None:
    """The unit's calibration method, after checking that the model, the run's task and calibration agree.

    Raises
    ------
    ParameterError
        A model of another task than the run's target, calibration of a non-classifier, or calibration on a
        fold without a validation part.
    """
    from sertool.calibration import check_calibrate

    if getattr(mspec, "task", "classification") != ctx.task:
        raise ParameterError(
            f"{mspec.name} is a {getattr(mspec, 'task', 'classification')} model; this run's target asks for "
            f"{ctx.task}"
        )
    if ctx.task != "classification" and ctx.calibrate is not None:
        raise ParameterError(
            f"calibrate={ctx.calibrate!r} applies to a classifier's probabilities, not to a {ctx.task} model "
            "(a regression target)"
        )
    calibrate = check_calibrate(ctx.calibrate)
    if calibrate is not None and not valid:
        raise ParameterError(
            f"{data.entry} / {mspec.name} fold {fold}: calibrate={calibrate!r} needs a validation part to fit "
            "the temperature on, and this fold has none"
        )
    return calibrate


def _calibrate_temperature(
    fitted: FittedUnit, data: ViewData, ctx: FitContext, mspec: Any, valid: list[str]
) -> None:
    """Fit the fold's temperature on its validation part and wrap the estimator with it (in place).

    Validation clips of a class the model never saw (no probability column) are left out of the fit, logged.
    """
    from sertool.calibration import TemperatureScaled, fit_temperature, temperature_nll

    est = fitted.estimator
    if not hasattr(est, "predict_proba"):
        raise ParameterError(f"{mspec.name} gives no probabilities (predict_proba): nothing to calibrate")
    codes = np.asarray(est.classes_, dtype=int)
    col = {int(c): i for i, c in enumerate(codes)}
    y = ctx.encode(valid)
    keep = np.array([int(c) in col for c in y], dtype=bool)
    if not keep.all():
        log.warning(
            "%s / %s: %d validation clips of classes the model never saw are left out of the temperature fit",
            data.entry,
            mspec.name,
            int((~keep).sum()),
        )
    if not keep.any():
        raise ParameterError(f"{data.entry} / {mspec.name}: no validation clip of a class the model knows")
    ids = [u for u, k in zip(valid, keep, strict=True) if k]
    proba = np.asarray(est.predict_proba(data.rows(ids)), dtype=np.float64)
    y_col = np.array([col[int(c)] for c in y[keep]])
    temperature = fit_temperature(proba, y_col)
    fitted.estimator = TemperatureScaled(est, temperature)
    fitted.temperature = temperature
    fitted.calibration_nll = (temperature_nll(proba, y_col, 1.0), temperature_nll(proba, y_col, temperature))
    log.info(
        "%s / %s: temperature %.3f (validation NLL %.4f -> %.4f, %d clips)",
        data.entry,
        mspec.name,
        temperature,
        *fitted.calibration_nll,
        len(ids),
    )


def _tune(
    est: Any,
    mspec: Any,
    X: Any,
    y: np.ndarray,
    groups: list[str],
    grouped: bool,
    seed: int,
    threads: int,
    *,
    strata: np.ndarray | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Grid search inside the training data only; inner folds are grouped by ``groups`` when ``grouped``
    (speakers under speaker-independent splits; origin clips when augmented copies must stay together) and
    stratified by ``strata`` (default ``y``; a regression target's bins). Classifiers are scored by UA,
    regressors by CCC."""
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold

    from sertool.models.registry import fit_estimator

    strata = y if strata is None else strata
    n_groups = len(set(groups))
    if grouped and n_groups >= 3:
        cv = StratifiedGroupKFold(n_splits=min(3, n_groups), shuffle=True, random_state=seed)
        cv_splits = list(cv.split(X, strata, groups))
    else:
        cv_splits = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=seed).split(X, strata))
    grid = {
        f"clf__{k}" if hasattr(est, "steps") and not k.startswith("clf__") else k: v
        for k, v in mspec.param_grid.items()
    }
    scoring: Any = "balanced_accuracy"
    if getattr(mspec, "task", "classification") == "regression":
        from sertool.metrics_regression import ccc

        scoring = make_scorer(ccc)
    search = GridSearchCV(est, grid, scoring=scoring, cv=cv_splits, n_jobs=1, refit=False)
    search.fit(X, y)
    best = search.best_params_
    tuned = clone(est).set_params(**best)
    fit_estimator(tuned, X, y, sample_weight=_balanced(y, mspec), threads=threads)
    return tuned, best


def _balanced(y: np.ndarray, mspec: Any) -> np.ndarray | None:
    """Balanced per-sample weights (n_samples / (n_classes * count of the sample's class)), if accepted."""
    from sertool.models.registry import balanced_sample_weight

    return balanced_sample_weight(y) if mspec.sample_weight else None
