"""The benchmark runner: feature views x models x folds of ONE saved split, resumable, with provenance.

Protocol decisions (written here because they decide what the numbers mean):

- The split is checked for leakage before anything is trained (:class:`~sertool.exceptions.LeakageError`).
- Labels are encoded once, centrally, from the manifest's class list (canonical order), so every fold and
  model sees the same class indices; balanced sample weights reach every model that accepts them the same
  way (:func:`sertool.models.registry.fit_estimator`).
- Neural heads train on the fold's training part and early-stop on its validation part (speaker-disjoint
  for speaker-independent splits). Classical models have no early stopping, so they fit on training +
  validation parts; with ``tune=True`` their hyper-parameters are searched by cross-validation inside that
  data only (grouped by speaker when the split is speaker-independent). The test part is used once, to score.
- A unit (view, model, fold) is stored the moment it finishes: predictions first, then the JSON that marks
  it done, each written atomically. Rerunning skips finished units (``force=True`` redoes them), so a killed
  run loses at most the unit in flight. A per-unit file lock keeps concurrent runs from doing one unit twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from sklearn.base import clone

from sertool.data.labels import CANONICAL_LABELS
from sertool.data.manifest import manifest_hash
from sertool.exceptions import ParameterError, SertoolError
from sertool.provenance import environment, json_safe

__all__ = ["BenchReport", "UnitResult", "class_order", "run_bench", "split_dir", "unit_paths"]

log = logging.getLogger(__name__)


@dataclass
class UnitResult:
    """Outcome of one (view, model, fold) unit."""

    features: str
    model: str
    fold: int
    status: str  # "done", "cached", "skipped", "failed"
    ua: float | None = None
    wa: float | None = None
    seconds: float = 0.0
    reason: str = ""


@dataclass
class BenchReport:
    """What :func:`run_bench` returns."""

    split_id: str
    results_dir: Path
    units: list[UnitResult] = field(default_factory=list)
    extraction: list[Any] = field(default_factory=list)
    leaderboard: dict[str, Path] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Number of units per status."""
        out: dict[str, int] = {}
        for u in self.units:
            out[u.status] = out.get(u.status, 0) + 1
        return out


def class_order(labels: Sequence[str]) -> list[str]:
    """Classes present in ``labels``, in canonical order (unknown labels last, alphabetically)."""
    order = {lab: i for i, lab in enumerate(CANONICAL_LABELS)}
    return sorted(set(labels), key=lambda c: (order.get(c, len(order)), c))


def corpus_name(manifest: pd.DataFrame) -> str:
    """``ravdess``, or ``ravdess+tess`` for a merged manifest."""
    return "+".join(sorted(manifest["corpus"].unique()))


def split_dir(results_dir: str | Path, manifest: pd.DataFrame, split: Any) -> Path:
    """``<results>/<corpus>/<split-id>``."""
    return Path(results_dir) / corpus_name(manifest) / split.id


def unit_paths(base: Path, view: str, model: str, fold: int) -> tuple[Path, Path]:
    """(json, predictions parquet) paths of a unit."""
    d = base / "runs" / view.replace("/", "_") / model
    return d / f"fold-{fold}.json", d / f"fold-{fold}.predictions.parquet"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _model_params(est: Any) -> dict[str, Any]:
    try:
        return json_safe(est.get_params(deep=False))
    except Exception:  # pragma: no cover - estimators without get_params are not registered
        return {}


def _protocol(split: Any) -> str:
    if split.strategy.startswith("cross-corpus"):
        return "cross-corpus"
    return "speaker-independent" if split.speaker_independent else "speaker-dependent"


def _select(features: Any, ids: Sequence[str]) -> Any:
    """Rows of a loaded FeatureSet for ``ids`` (array rows or list items)."""
    pos = features.index
    idx = [pos[i] for i in ids]
    if isinstance(features.X, np.ndarray):
        return features.X[idx]
    return [features.X[i] for i in idx]


@dataclass
class _Loaded:
    X: Any
    utt_ids: list[str]
    key: str
    view: str
    index: dict[str, int]
    #: augmented copies (one loaded set per copy), added to training parts only
    aug: list[_Loaded] = field(default_factory=list)
    augment: Any = None
    preprocess: list[dict[str, Any]] = field(default_factory=list)
    normalize: str | None = None


def feature_label(view: str, extractor: Any, augment: Any = None) -> str:
    """The leaderboard name of a view: ``handcrafted94``, ``handcrafted94~denoise-trim`` (preprocessed),
    ``mfcc40~aug-awgn`` (training parts augmented): what follows ``~`` are the run's signal transforms."""
    label = view
    pre = getattr(extractor, "preprocess", None)
    if pre:
        label += "~" + "-".join(step["name"] for step in pre)
    if augment is not None:
        label += "~" + augment.tag
    return label


def _augmented_rows(
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
    feats: _Loaded, X: Any, ids: list[str], labels: dict[str, str], seed: int, fold: int
) -> tuple[Any, list[str]]:
    """``X`` (rows of ``ids``) followed by the augmented copies for them; returns (X, origin id per row)."""
    if feats.augment is None:
        return X, ids
    rows = _augmented_rows(ids, labels, feats.augment, seed, fold)
    parts, origin = [X], list(ids)
    for c, copy in enumerate(feats.aug):
        take = [u for u, cc in rows if cc == c and u in copy.index]
        if take:
            parts.append(_select(copy, take))
            origin += take
    if isinstance(X, np.ndarray):
        return np.concatenate(parts), origin
    return [x for part in parts for x in part], origin


@dataclass(frozen=True)
class _RunContext:
    """What every unit of one bench run shares."""

    base: Path
    split: Any
    manifest: pd.DataFrame
    classes: list[str]
    encoder: Any
    labels: dict[str, str]
    speakers: dict[str, str]
    seed: int
    device: str
    tune: bool
    force: bool
    env: dict[str, Any]
    mhash: str
    make_estimator: Any
    fit_estimator: Any


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def run_bench(
    manifest: pd.DataFrame,
    split: Any,
    *,
    features: Sequence[str],
    models: str | Sequence[str] = "all",
    results_dir: str | Path = "results",
    cache: Any = None,
    seed: int = 0,
    device: str = "auto",
    tune: bool = False,
    force: bool = False,
    extract: bool = True,
    jobs: int = -1,
    model_params: dict[str, dict[str, Any]] | None = None,
    extractor_params: dict[str, dict[str, Any]] | None = None,
    augment: Any = None,
    normalize: str | None = None,
    progress: Callable[[UnitResult], None] | None = None,
    render: bool = True,
) -> BenchReport:
    """Train and score every (feature view, model, fold) of a saved split; store each unit as it finishes.

    Parameters
    ----------
    manifest : pd.DataFrame
        The manifest, already mapped through the split's label scheme.
    split : sertool.splits.Split
        The saved split (checked for leakage here).
    features : sequence of str
        Feature views (``"handcrafted94"``, ``"whisper-base@all"``, ...); ``"a+b"`` fuses views by
        concatenating their pooled vectors (``"whisper-base@all+text-minilm"``: speech and its transcript).
    models : str or sequence of str
        ``"all"``, a family (``"classic"``, ``"neural"``) or names; ``all`` keeps the models whose input kind
        (pooled vectors / frame sequences) the view provides.
    results_dir : str or Path
        Results root; units go to ``<results>/<corpus>/<split-id>/runs/``.
    cache : FeatureStore, str or Path, optional
        Feature cache (default :func:`sertool.features.store.default_cache_dir`).
    seed : int
        Seed given to every model.
    device : {"auto", "cpu", "cuda"}
        Device for torch heads and GPU-capable extractors.
    tune : bool
        Search hyper-parameters (the model's ``param_grid``) inside the training data of each fold.
    force : bool
        Redo finished units.
    extract : bool
        Extract features that are not cached yet (through the same cache as ``sertool features``).
    jobs : int
        Processes for CPU feature extraction.
    model_params : dict, optional
        Per-model parameter overrides ``{"svm": {"C": 1.0}}``.
    extractor_params : dict, optional
        Per-extractor parameters ``{"whisper-base": {"frame_layers": [4]}}``; ``"preprocess"`` in them
        preprocesses every clip (:mod:`sertool.features.transforms`) and names the entry ``<view>~<steps>``.
    augment : str, dict or AugmentSpec, optional
        Augment training data (``"awgn"``, ``{"transforms": ["stretch", "pitch"], "copies": 3, "balance":
        true}``): augmented copies of each fold's training utterances (training + validation parts for
        classical models, training part only for neural heads) are added to that fold's fit; test parts and
        validation parts used for early stopping are never augmented. Entries are named ``<view>~aug-...``.
    normalize : {"speaker", "corpus"}, optional
        Standardise pooled vectors per speaker (or per corpus) with that group's own mean and standard
        deviation, computed on its clips without labels (speaker / corpus normalisation, the usual remedy
        for cross-corpus shift). Transductive: a test group's statistics come from its own unlabelled clips.
        Entries are named ``<view>~norm-speaker``; frame sequences are not normalised.
    progress : callable, optional
        Called with each :class:`UnitResult` as it finishes (the CLI draws a bar).
    render : bool
        Render the leaderboard at the end.

    Returns
    -------
    BenchReport
    """
    from sertool.features import configured_extractor, parse_view
    from sertool.features.store import FeatureStore, default_cache_dir
    from sertool.features.transforms import augmented_extractors, parse_augment
    from sertool.models.registry import (
        encode_labels,
        fit_estimator,
        make_estimator,
        resolve_models,
    )
    from sertool.splits import check_split

    resolve_models(models)  # unknown names fail here, before any extraction or training
    aug = parse_augment(augment)
    if normalize not in (None, "speaker", "corpus"):
        raise ParameterError(f"normalize must be None, 'speaker' or 'corpus', got {normalize!r}")
    views = [parse_view(part) for spec in features for part in spec.split("+")]
    if not views:
        raise ParameterError("features must name at least one feature view")
    check_split(split, manifest)
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache or default_cache_dir())
    base = split_dir(results_dir, manifest, split)
    base.mkdir(parents=True, exist_ok=True)
    split_file = base / "split.json"
    if not split_file.exists():
        split.save(split_file)
    report = BenchReport(split_id=split.id, results_dir=base)
    classes = class_order(manifest["label"].tolist())
    encoder, _ = encode_labels(classes)
    labels = dict(zip(manifest["utt_id"], manifest["label"], strict=True))
    speakers = dict(zip(manifest["utt_id"], manifest["speaker"], strict=True))
    dev = _resolve_device(device)
    env = environment()
    mhash = manifest_hash(manifest)
    model_params = model_params or {}
    extractor_params = extractor_params or {}

    ctx = _RunContext(
        base=base,
        split=split,
        manifest=manifest,
        classes=classes,
        encoder=encoder,
        labels=labels,
        speakers=speakers,
        seed=seed,
        device=dev,
        tune=tune,
        force=force,
        env=env,
        mhash=mhash,
        make_estimator=make_estimator,
        fit_estimator=fit_estimator,
    )
    for spec in features:
        parts = [parse_view(p) for p in spec.split("+")]
        view = parts[0]
        if len(parts) > 1 and aug is not None:
            raise ParameterError(f"{spec}: augmentation of fused views is not supported; augment one view")
        extractors = []
        for part in parts:
            # converted Whisper weights live beside the features
            ex = configured_extractor(
                part.extractor, extractor_params.get(part.extractor), device=dev, cache=store.root
            )
            if extract:
                from sertool.features.extract import extract_features

                report.extraction.append(extract_features(manifest, ex, cache=store, jobs=jobs))
            extractors.append(ex)
        extractor = extractors[0]
        label = "+".join(feature_label(v.name, ex, aug) for v, ex in zip(parts, extractors, strict=True))
        # a fused view (``a+b``) concatenates pooled vectors: frame models need one view
        fused = len(parts) > 1
        kinds = ["pooled"] + (["frames"] if not fused and "frames" in extractor.outputs() else [])
        requested = resolve_models(models)
        tokens = models.split(",") if isinstance(models, str) else list(models)
        named = {t.strip().lower() for t in tokens}
        # a model designed for other features (cnn_transformer: MFCCs) runs on these only when named
        specs = [
            m
            for m in requested
            if m.input in kinds and (m.name in named or all(m.designed_for(v.extractor) for v in parts))
        ]
        explicit = not (isinstance(models, str) and models in ("all", "classic", "neural"))
        for m in requested:
            if m.input not in kinds and explicit:
                log.warning("%s needs %s features, which %s does not provide; skipped", m.name, m.input, spec)
                report.units.append(UnitResult(label, m.name, -1, "skipped", reason=f"needs {m.input}"))
        loaded: dict[str, _Loaded] = {}
        if fused and specs:
            loaded["pooled"] = _load_fused(store, manifest, parts, extractors, label)
            loaded["pooled"].preprocess = [s for ex in extractors for s in getattr(ex, "preprocess", [])]
        for kind in sorted({m.input for m in specs}) if not fused else []:
            try:
                fs = store.load(manifest, view, output=kind, allow_missing=True, key=extractor)
            except ParameterError as exc:  # e.g. a layer view whose frames were not stored
                log.warning(
                    "%s: no %s features for this view (%s); models that need them are skipped",
                    spec,
                    kind,
                    exc,
                )
                for m in [m for m in specs if m.input == kind]:
                    report.units.append(UnitResult(label, m.name, -1, "skipped", reason=str(exc)))
                specs = [m for m in specs if m.input != kind]
                continue
            loaded[kind] = _Loaded(
                fs.X,
                list(fs.utt_ids),
                fs.key,
                label,
                {u: i for i, u in enumerate(fs.utt_ids)},
                augment=aug,
                preprocess=list(getattr(extractor, "preprocess", [])),
            )
        if aug is not None and loaded:
            # extract exactly the augmented copies some fold's fit will use (never of a clip only tested on;
            # with balancing, only copies of the clips that fill a smaller class)
            avail = next(iter(loaded.values())).index
            wanted: list[set[str]] = [set() for _ in range(aug.copies)]
            for f in split.folds:
                train = [u for u in f.train if u in avail]
                for fit_ids in (train, train + [u for u in f.valid if u in avail]):
                    for u, c in _augmented_rows(fit_ids, labels, aug, seed, f.index):
                        wanted[c].add(u)
            for copy, ids in zip(augmented_extractors(extractor, aug), wanted, strict=True):
                sub = manifest[manifest["utt_id"].isin(ids)]
                if extract and len(sub):
                    from sertool.features.extract import extract_features

                    report.extraction.append(extract_features(sub, copy, cache=store, jobs=jobs))
                for kind, feats in loaded.items():
                    cs = (
                        store.load(
                            sub, replace(view, extractor=copy.name), output=kind, allow_missing=True, key=copy
                        )
                        if len(sub)
                        else None
                    )
                    ids_c = list(cs.utt_ids) if cs is not None else []
                    feats.aug.append(
                        _Loaded(
                            cs.X if cs is not None else [],
                            ids_c,
                            copy.key,
                            feats.view,
                            {u: i for i, u in enumerate(ids_c)},
                        )
                    )
        if normalize is not None and "pooled" in loaded:
            _normalize_groups(loaded["pooled"], manifest, "speaker" if normalize == "speaker" else "corpus")
        for mspec in specs:
            feats = loaded[mspec.input]
            for fold in split.folds:
                unit = _run_unit(ctx, feats, mspec, fold, model_params.get(mspec.name, {}))
                report.units.append(unit)
                if progress is not None:
                    progress(unit)
    if render:
        from sertool.bench.leaderboard import build_leaderboard, collect_results, write_leaderboard

        # units another process was running: wait until it has stored them (its lock is released), so the
        # board rendered here is the complete one, whichever process renders last
        for u in report.units:
            if u.status == "skipped" and u.reason == _BUSY:
                with FileLock(str(unit_paths(base, u.features, u.model, u.fold)[0]) + ".lock"):
                    pass

        results = collect_results(results_dir, corpus=corpus_name(manifest), split_id=split.id)
        board = build_leaderboard(results, seed=seed)
        report.leaderboard = write_leaderboard(
            board, results, base, title=f"{corpus_name(manifest)} / {split.id}"
        )
    return report


def _normalize_groups(feats: _Loaded, manifest: pd.DataFrame, column: str) -> None:
    """Z-score ``feats.X`` (and its augmented copies) per ``column`` group with the group's own clean-clip
    mean and standard deviation (no labels involved); renames the entry ``<view>~norm-<column>``."""
    group = dict(zip(manifest["utt_id"], manifest[column].astype(str), strict=True))
    X = np.asarray(feats.X, dtype=np.float64)
    rows = pd.Series([group[u] for u in feats.utt_ids])
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for g, idx in rows.groupby(rows).groups.items():
        idx = np.asarray(idx)
        mean, std = X[idx].mean(axis=0), X[idx].std(axis=0)
        stats[g] = (mean, np.where(std > 1e-8, std, 1.0))
        X[idx] = (X[idx] - mean) / stats[g][1]
    feats.X = X.astype(np.float32)
    for copy in feats.aug:
        if len(copy.utt_ids):
            C = np.asarray(copy.X, dtype=np.float64)
            for i, u in enumerate(copy.utt_ids):
                mean, std = stats[group[u]]
                C[i] = (C[i] - mean) / std
            copy.X = C.astype(np.float32)
    feats.view = feats.view + f"~norm-{column}"
    for copy in feats.aug:
        copy.view = feats.view
    feats.normalize = column


def _load_fused(
    store: Any, manifest: pd.DataFrame, views: Sequence[Any], extractors: Sequence[Any], label: str
) -> _Loaded:
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
    return _Loaded(X, ids, "+".join(fs.key for fs in sets), label, {u: i for i, u in enumerate(ids)})


def _run_unit(
    ctx: _RunContext, feats: _Loaded, mspec: Any, fold: Any, overrides: dict[str, Any]
) -> UnitResult:
    view, name, k = feats.view, _entry_name(mspec, ctx.tune), fold.index
    jpath, ppath = unit_paths(ctx.base, view, name, k)
    cached = _stored_unit(ctx, feats, mspec, overrides, k, jpath)
    if cached is not None:
        return cached
    jpath.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(jpath) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return UnitResult(view, name, k, "skipped", reason=_BUSY)
    try:
        # temporary files of this unit can only be a killed writer's now that we hold its lock
        for stale in [*jpath.parent.glob(f".{jpath.name}.*.tmp"), *jpath.parent.glob(f".{ppath.name}.*.tmp")]:
            log.warning("removing %s, left by a killed run", stale)
            stale.unlink(missing_ok=True)
        cached = _stored_unit(ctx, feats, mspec, overrides, k, jpath)  # another process may have finished it
        if cached is not None:
            return cached
        return _fit_score(ctx, feats, mspec, fold, overrides, jpath, ppath)
    finally:
        lock.release()


def _stored_unit(
    ctx: _RunContext, feats: _Loaded, mspec: Any, overrides: dict[str, Any], k: int, jpath: Path
) -> UnitResult | None:
    """The stored result of this unit when it exists and is current (same features and model), else None."""
    if not jpath.exists() or ctx.force:
        return None
    meta = json.loads(jpath.read_text())
    if not _same_inputs(meta, feats, jpath, _defining_params(ctx, mspec, overrides, meta.get("best_params"))):
        return None
    name = _entry_name(mspec, ctx.tune)
    return UnitResult(feats.view, name, k, "cached", meta["metrics"]["ua"], meta["metrics"]["wa"])


def _augment_record(feats: _Loaded) -> dict[str, Any] | None:
    if feats.augment is None:
        return None
    return {**feats.augment.to_dict(), "copy_keys": [c.key for c in feats.aug]}


#: Estimator parameters that say where or how fast a model runs, not what it is: a unit stored with other
#: values of these is still the same experiment (a CPU run is not redone because a GPU is now present).
_RUNTIME_PARAMS = frozenset({"device", "n_threads", "n_jobs", "verbose"})


def _defining_params(
    ctx: _RunContext, mspec: Any, overrides: dict[str, Any], best_params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters this unit's model would be recorded with (as in its record), without the runtime ones.

    ``best_params``: what a grid search chose for a stored unit; applied here, so a tuned unit compares equal
    when the model and its grid are unchanged.
    """
    est = ctx.make_estimator(mspec.name, seed=ctx.seed, **overrides)
    if best_params:
        try:
            est.set_params(**best_params)
        except ValueError:  # the grid names parameters the model no longer has: stale
            return {"best_params": best_params}
    return {k: v for k, v in _model_params(est).items() if k not in _RUNTIME_PARAMS}


def _same_inputs(meta: dict[str, Any], feats: _Loaded, path: Path, params: dict[str, Any]) -> bool:
    """Whether a stored unit was computed from these features (cache key and augmentation) by this model.

    The model is compared by its recorded parameters, apart from runtime ones (``params`` from
    :func:`_defining_params`). A unit of other inputs under the same name (an extractor parameter changed,
    ``--model-params`` gave other epochs) is stale: it is redone, with a warning, never reported as if it were
    the experiment asked for.
    """
    if meta.get("feature_key", feats.key) != feats.key or meta.get("augment") != _augment_record(feats):
        log.warning("%s was computed from other features (%s); redoing it", path, meta.get("feature_key"))
        return False
    stored = meta.get("model_params")
    if stored is None:  # records older than this check
        return True
    differ = sorted(
        key
        for key in (set(stored) | set(params)) - _RUNTIME_PARAMS
        if json.dumps(stored.get(key), sort_keys=True, default=str)
        != json.dumps(params.get(key), sort_keys=True, default=str)
    )
    if differ:
        log.warning(
            "%s was computed with other model parameters (%s); redoing it",
            path,
            ", ".join(f"{key}={stored.get(key)!r} now {params.get(key)!r}" for key in differ),
        )
        return False
    return True


def _fit_score(
    ctx: _RunContext,
    feats: _Loaded,
    mspec: Any,
    fold: Any,
    overrides: dict[str, Any],
    jpath: Path,
    ppath: Path,
) -> UnitResult:
    from sertool.metrics import score_all

    split, classes, encoder, labels, speakers = ctx.split, ctx.classes, ctx.encoder, ctx.labels, ctx.speakers
    seed, device, tune, manifest, fit_estimator = (
        ctx.seed,
        ctx.device,
        ctx.tune,
        ctx.manifest,
        ctx.fit_estimator,
    )
    view, name, k = feats.view, _entry_name(mspec, tune), fold.index
    avail = feats.index

    def present(ids: Sequence[str]) -> list[str]:
        return [u for u in ids if u in avail]

    train, valid, test = present(fold.train), present(fold.valid), present(fold.test)
    missing = len(fold.train) + len(fold.valid) + len(fold.test) - len(train) - len(valid) - len(test)
    if missing:
        log.warning(
            "%s fold %d: %d utterances have no cached %s features (skipped clips)", view, k, missing, view
        )
    if not train or not test:
        return UnitResult(view, name, k, "skipped", reason="empty train or test part")
    neural = mspec.family == "neural"
    fit_ids = train if neural else train + valid
    params = dict(overrides)
    est = ctx.make_estimator(mspec.name, seed=seed, **params)
    if "device" in est.get_params(deep=False):
        est.set_params(device=device)
    est = clone(est)
    # augmented copies join the fit data only (never validation parts used for early stopping, never tests)
    X_fit, fit_rows = _with_augmented(feats, _select(feats, fit_ids), fit_ids, labels, seed, k)
    y_fit = encoder.transform([labels[u] for u in fit_rows])
    fit_params: dict[str, Any] = {}
    if neural and valid:
        fit_params = {
            "X_valid": _select(feats, valid),
            "y_valid": encoder.transform([labels[u] for u in valid]),
        }
    best_params = None
    t0 = time.perf_counter()
    try:
        if tune and mspec.param_grid and not neural:
            est, best_params = _tune(
                est,
                mspec,
                X_fit,
                y_fit,
                # inner folds keep a speaker's (or, speaker-dependent, a clip's) augmented copies together
                [speakers[u] for u in fit_rows] if split.speaker_independent else fit_rows,
                split.speaker_independent or feats.augment is not None,
                seed,
                fit_estimator,
            )
        else:
            fit_estimator(
                est,
                X_fit,
                y_fit,
                sample_weight=_balanced(y_fit, mspec),
                fit_params=fit_params,
                threads=_threads(),
            )
    except SertoolError:
        raise
    except Exception as exc:  # one failing model must not lose the rest of the run
        log.error("%s / %s fold %d failed: %s", view, name, k, exc)
        return UnitResult(view, name, k, "failed", reason=f"{type(exc).__name__}: {exc}")
    fit_s = time.perf_counter() - t0
    X_test = _select(feats, test)
    t1 = time.perf_counter()
    proba = np.asarray(est.predict_proba(X_test), dtype=np.float64)
    pred_s = time.perf_counter() - t1
    full = np.zeros((len(test), len(classes)))
    full[:, np.asarray(est.classes_, dtype=int)] = proba
    y_pred = encoder.inverse_transform(full.argmax(axis=1))
    y_true = [labels[u] for u in test]
    metrics = score_all(y_true, list(y_pred), classes)
    pred = pd.DataFrame(
        {"utt_id": test, "speaker": [speakers[u] for u in test], "y_true": y_true, "y_pred": list(y_pred)}
    )
    # ``full``'s columns are the encoder's codes (sorted class names); the stored columns follow ``classes``
    for c, j in zip(classes, encoder.transform(classes), strict=True):
        pred[f"proba__{c}"] = full[:, j].astype(np.float32)
    _atomic_parquet(pred, ppath)
    record = {
        "schema": 1,
        "corpus": corpus_name(manifest),
        "manifest_hash": ctx.mhash,
        "split_id": split.id,
        "split_strategy": split.strategy,
        "speaker_independent": bool(split.speaker_independent),
        "protocol": _protocol(split),
        "label_scheme": split.label_scheme,
        "fold": k,
        "features": view,
        "feature_key": feats.key,
        "model": name,
        "model_params": _model_params(est),
        "seed": seed,
        "classes": classes,
        "n_train": len(fit_ids),
        "n_augmented": len(fit_rows) - len(fit_ids),
        "augment": _augment_record(feats),
        "preprocess": feats.preprocess or None,
        "normalize": feats.normalize,
        "n_valid": len(valid) if neural else 0,
        "n_test": len(test),
        "metrics": json_safe(metrics),
        "fit_seconds": round(fit_s, 4),
        "predict_seconds": round(pred_s, 4),
        "device": device if "device" in est.get_params(deep=False) else "cpu",
        "tuned": best_params is not None,
        "best_params": json_safe(best_params),
        "provenance": ctx.env,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _atomic_write_bytes(jpath, json.dumps(record, indent=1, sort_keys=True).encode())
    return UnitResult(view, name, k, "done", metrics["ua"], metrics["wa"], fit_s + pred_s)


def _tune(
    est: Any,
    mspec: Any,
    X: Any,
    y: np.ndarray,
    groups: list[str],
    grouped: bool,
    seed: int,
    fit_estimator: Any,
) -> tuple[Any, dict[str, Any]]:
    """Grid search inside the training data only; inner folds are grouped by ``groups`` when ``grouped``
    (speakers under speaker-independent splits; origin clips when augmented copies must stay together)."""
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold

    n_groups = len(set(groups))
    if grouped and n_groups >= 3:
        cv = StratifiedGroupKFold(n_splits=min(3, n_groups), shuffle=True, random_state=seed)
        cv_splits = list(cv.split(X, y, groups))
    else:
        cv_splits = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=seed).split(X, y))
    grid = {
        f"clf__{k}" if hasattr(est, "steps") and not k.startswith("clf__") else k: v
        for k, v in mspec.param_grid.items()
    }
    search = GridSearchCV(est, grid, scoring="balanced_accuracy", cv=cv_splits, n_jobs=1, refit=False)
    search.fit(X, y)
    best = search.best_params_
    tuned = clone(est).set_params(**best)
    fit_estimator(tuned, X, y, sample_weight=_balanced(y, mspec), threads=_threads())
    return tuned, best


def _entry_name(mspec: Any, tune: bool) -> str:
    """The model's leaderboard name: ``svm``, or ``svm+tuned`` when its grid is searched in this run, so
    tuned and untuned runs of one model never overwrite each other's units."""
    return f"{mspec.name}+tuned" if tune and mspec.param_grid and mspec.family != "neural" else mspec.name


_BUSY = "another process is running this unit"


def _threads() -> int:
    """BLAS/OpenMP threads per fit: ``$SERTOOL_N_JOBS`` or 1 (units run one after another; measured: an
    unbounded BLAS pool made sklearn's MLP 20x slower on 2 busy cores)."""
    from sertool.models.classic import n_jobs_from_env

    n = n_jobs_from_env()
    return os.cpu_count() or 1 if n < 0 else max(1, n)


def _balanced(y: np.ndarray, mspec: Any) -> np.ndarray | None:
    """Balanced per-sample weights (n_samples / (n_classes * count of the sample's class)), if accepted."""
    from sklearn.utils.class_weight import compute_sample_weight

    return compute_sample_weight("balanced", y) if mspec.sample_weight else None
