"""The benchmark runner: feature views x models x folds of ONE saved split, resumable, with provenance.

The run is four named steps, each reading only what the previous one produced (mteb's ``evaluate`` and
HEAR's two-stage runner have this shape):

1. :func:`sertool.bench.fitting.prepare_view` - extract (cached), load, augment, normalise one view;
2. :func:`plan_units` - the (view, model, fold) units of that view (pure);
3. :func:`run_units` - run them one after another, in ``unit_jobs`` local worker processes, or on a Dask
   cluster (``scheduler``); each unit fits through :func:`sertool.bench.fitting.fit_unit` (the function
   ``sertool train`` uses too), scores its test part once and writes its :class:`~sertool.bench.records.UnitRecord`;
4. the leaderboard is rendered from the stored records.

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
  run loses at most the units in flight. A per-unit file lock keeps concurrent runs (or workers) from doing
  one unit twice. Units are independent and seeded, so a parallel or distributed run stores the same
  predictions as a run of one unit at a time.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from sertool.bench.fitting import (
    FitContext,
    PreparedView,
    ViewData,
    calibration_overrides,
    check_calibration_folds,
    class_order,
    entry_name,
    feature_label,
    fit_unit,
    fold_threads,
    predict_classes,
    prepare_view,
)
from sertool.bench.fitting import augmented_rows as _augmented_rows
from sertool.bench.records import ResultsLayout, UnitRecord, corpus_name
from sertool.data.manifest import manifest_hash
from sertool.exceptions import ParameterError, SertoolError
from sertool.provenance import environment, json_safe
from sertool.util import atomic_parquet, resolve_device

__all__ = [
    "BenchReport",
    "Unit",
    "UnitResult",
    "class_order",
    "corpus_name",
    "feature_label",
    "plan_units",
    "run_bench",
    "run_units",
    "split_dir",
    "unit_paths",
]

log = logging.getLogger(__name__)

_ = _augmented_rows  # re-exported for callers of the first version


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


def split_dir(results_dir: str | Path, manifest: pd.DataFrame, split: Any) -> Path:
    """``<results>/<corpus>/<split-id>``."""
    return ResultsLayout(Path(results_dir)).split_dir(corpus_name(manifest), split.id)


def unit_paths(base: Path, view: str, model: str, fold: int) -> tuple[Path, Path]:
    """(json, predictions parquet) paths of a unit inside a split folder."""
    return ResultsLayout.unit_paths(base, view, model, fold)


def split_protocol(split: Any) -> str:
    """The protocol name boards print: the split strategy's own (:attr:`sertool.splits.Split.protocol`); a
    unit record adds ", transductive" when its features were normalised with test-group statistics."""
    return str(split.protocol)


@dataclass(frozen=True)
class _RunContext:
    """What every unit of one bench run shares (picklable: workers receive it)."""

    base: Path
    split: Any
    corpus: str
    fit: FitContext
    force: bool
    env: dict[str, Any]
    mhash: str


@dataclass(frozen=True)
class Unit:
    """One planned (view, model, fold) unit."""

    data: ViewData
    mspec: Any
    fold: Any
    params: dict[str, Any]


def plan_units(
    prep: PreparedView, folds: Sequence[Any], model_params: dict[str, dict[str, Any]] | None = None
) -> list[Unit]:
    """Every (model, fold) unit of a prepared view, model by model (pure). A model's parameters include
    what it derives from the view (:func:`~sertool.models.registry.params_for_view`), so a model that cannot
    read the view is refused here, before anything is fitted."""
    from sertool.models.registry import params_for_view

    model_params = model_params or {}
    params = {
        m.name: params_for_view(m, prep.data[m.input].entry, model_params.get(m.name)) for m in prep.models
    }
    return [Unit(prep.data[m.input], m, fold, dict(params[m.name])) for m in prep.models for fold in folds]


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
    unit_jobs: int = 1,
    scheduler: str | None = None,
    calibrate: str | None = None,
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
        Feature cache (default :func:`sertool.util.cache_dir`).
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
    unit_jobs : int
        Units fitted at once in local worker processes (``-1``: one per core); BLAS threads are divided among
        them. 1 runs them in this process.
    scheduler : str, optional
        Address of a Dask scheduler: units (and feature extraction) run on that cluster instead. Workers must
        see the results and cache folders at the same paths.
    calibrate : {"temperature"}, optional
        Fit one temperature per fold on the fold's validation part only (:mod:`sertool.calibration`) and
        score the rescaled probabilities; entries are named ``<view>~cal-temp`` and records state the
        temperature (``calibration``). The model must not see that part: classical models then fit on the
        training part only, neural heads are not refitted on training + validation. Every fold must have a
        validation part (:class:`ParameterError` otherwise, before anything is fitted).

    Returns
    -------
    BenchReport
    """
    from sertool.features.transforms import parse_augment
    from sertool.models.registry import resolve_models

    requested = resolve_models(models)  # unknown names fail here, before any extraction or training
    aug = parse_augment(augment)
    _check_run_args(features, normalize)
    calibrate = check_calibration_folds(split.folds, calibrate)
    model_params = calibration_overrides(calibrate, requested, model_params, seed=seed)
    ctx, store = _start(manifest, split, results_dir, cache, seed, device, tune, force, unit_jobs, calibrate)
    report = BenchReport(split_id=split.id, results_dir=ctx.base)
    for spec in features:
        prep = prepare_view(
            spec, manifest, models=models, store=store, folds=split.folds, seed=seed, device=ctx.fit.device,
            extractor_params=extractor_params, augment=aug, normalize=normalize, extract=extract, jobs=jobs,
            scheduler=scheduler, calibrate=calibrate,
        )  # fmt: skip
        report.extraction += prep.extraction
        report.units += [
            UnitResult(prep.label, name, -1, "skipped", reason=why) for name, why in prep.skipped
        ]
        for result in run_units(ctx, plan_units(prep, split.folds, model_params), unit_jobs, scheduler):
            report.units.append(result)
            if progress is not None:
                progress(result)
    if render:
        report.leaderboard = _render(ctx, report, results_dir)
    return report


def _check_run_args(features: Sequence[str], normalize: str | None) -> None:
    from sertool.features import parse_view

    if normalize not in (None, "speaker", "corpus"):
        raise ParameterError(f"normalize must be None, 'speaker' or 'corpus', got {normalize!r}")
    views = [parse_view(part) for spec in features for part in spec.split("+")]
    if not views:
        raise ParameterError("features must name at least one feature view")


def _start(
    manifest: pd.DataFrame,
    split: Any,
    results_dir: str | Path,
    cache: Any,
    seed: int,
    device: str,
    tune: bool,
    force: bool,
    unit_jobs: int,
    calibrate: str | None = None,
) -> tuple[_RunContext, Any]:
    """Check the split, save it beside the results, and build what every unit shares."""
    from sertool.features.store import FeatureStore
    from sertool.splits import check_split
    from sertool.util import cache_dir

    check_split(split, manifest)
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache_dir(cache))
    base = split_dir(results_dir, manifest, split)
    base.mkdir(parents=True, exist_ok=True)
    split_file = ResultsLayout.split_file(base)
    if not split_file.exists():
        split.save(split_file)
    fit = FitContext.from_manifest(
        manifest,
        seed=seed,
        device=resolve_device(device),
        tune=tune,
        threads=fold_threads(_n_workers(unit_jobs)),
        speaker_independent=bool(split.speaker_independent),
        calibrate=calibrate,
    )
    env = environment()
    return _RunContext(base, split, corpus_name(manifest), fit, force, env, manifest_hash(manifest)), store


def _n_workers(unit_jobs: int) -> int:
    if unit_jobs == 0 or unit_jobs < -1:
        raise ParameterError(f"unit_jobs must be a positive count or -1 (one per core), got {unit_jobs}")
    return os.cpu_count() or 1 if unit_jobs == -1 else unit_jobs


def _render(ctx: _RunContext, report: BenchReport, results_dir: str | Path) -> dict[str, Path]:
    """Render the split's board once every unit of this run is stored (units another process was running
    are waited for: their lock is released when they are stored, so whichever process renders last renders
    the complete board)."""
    from sertool.bench.leaderboard import build_leaderboard, collect_results, write_leaderboard

    for u in report.units:
        if u.status == "skipped" and u.reason == _BUSY:
            with FileLock(str(unit_paths(ctx.base, u.features, u.model, u.fold)[0]) + ".lock"):
                pass
    results = collect_results(results_dir, corpus=ctx.corpus, split_id=ctx.split.id)
    if ctx.fit.regression:
        from sertool.bench.regression_board import build_regression_board, write_regression_board

        board = build_regression_board(results, seed=ctx.fit.seed)
        return write_regression_board(board, results, ctx.base, title=f"{ctx.corpus} / {ctx.split.id}")
    board = build_leaderboard(results, seed=ctx.fit.seed)
    return write_leaderboard(board, results, ctx.base, title=f"{ctx.corpus} / {ctx.split.id}")


# ------------------------------------------------------------------------------------------ running units
def run_units(
    ctx: _RunContext, units: Sequence[Unit], unit_jobs: int = 1, scheduler: str | None = None
) -> Iterator[UnitResult]:
    """Run units and yield their results in plan order (each is stored before it is yielded).

    One at a time in this process (``unit_jobs=1``), in local worker processes (joblib's loky pool; a view's
    arrays reach the workers memory-mapped, not copied per unit), or on a Dask cluster (the view's data is
    scattered once). Neural heads on a GPU run here, one at a time: several processes would contend for it.
    """
    if not units:
        return
    n = _n_workers(unit_jobs)
    on_gpu = ctx.fit.device.startswith("cuda") and any(u.mspec.family == "neural" for u in units)
    if scheduler is not None:
        yield from _run_on_dask(ctx, units, scheduler)
    elif n > 1 and len(units) > 1 and not on_gpu:
        from joblib import Parallel, delayed

        packed = _packed_inputs(units)
        # as a context manager, the pool deletes (and unregisters) its memory-mapped copies when it is done
        with Parallel(
            n_jobs=min(n, len(units)), backend="loky", return_as="generator", max_nbytes="1M"
        ) as pool:
            yield from pool(
                delayed(_run_packed)(ctx, packed[id(u.data)], u.mspec, u.fold, u.params) for u in units
            )
    else:
        for u in units:
            yield _run_unit(ctx, u.data, u.mspec, u.fold, u.params)


def _run_on_dask(ctx: _RunContext, units: Sequence[Unit], scheduler: str) -> Iterator[UnitResult]:
    from distributed import Client

    with Client(scheduler) as client:
        scattered = {key: client.scatter(p, broadcast=True) for key, p in _packed_inputs(units).items()}
        futures = [
            client.submit(_run_packed, ctx, scattered[id(u.data)], u.mspec, u.fold, u.params, pure=False)
            for u in units
        ]
        for fut in futures:
            yield fut.result()


def _packed_inputs(units: Sequence[Unit]) -> dict[int, _Packed]:
    """Each distinct input of the units (a view's pooled vectors, its frames), packed once: ``id(data)`` ->
    packed. Units of frame heads and of pooled-vector models of one view read different inputs."""
    out: dict[int, _Packed] = {}
    for u in units:
        if id(u.data) not in out:
            out[id(u.data)] = _packed(u.data)
    return out


@dataclass
class _Packed:
    """A view's data with frame sequences packed into one array (memory-mapped or scattered once)."""

    data: ViewData
    flat: np.ndarray | None = None
    offsets: np.ndarray | None = None
    aug_flat: list[tuple[np.ndarray, np.ndarray] | None] = field(default_factory=list)


def _pack_list(X: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if isinstance(X, np.ndarray) or not len(X):
        return None
    lengths = np.array([len(x) for x in X])
    return np.concatenate(X), np.concatenate([[0], np.cumsum(lengths)])


def _packed(data: ViewData) -> _Packed:
    """``data`` ready to ship: a list of frame arrays becomes one array and offsets (one memory map instead
    of thousands of pickled arrays per unit)."""
    from copy import copy

    out = copy(data)
    packed = _pack_list(data.X)
    out.aug = [copy(a) for a in data.aug]
    aug_flat = []
    for a in out.aug:
        aug_flat.append(_pack_list(a.X))
        if aug_flat[-1] is not None:
            a.X = None
    if packed is None:
        return _Packed(out, aug_flat=aug_flat)
    out.X = None
    return _Packed(out, packed[0], packed[1], aug_flat)


def _unpack(p: _Packed) -> ViewData:
    def split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]

    data = p.data
    if p.flat is not None:
        data.X = split(p.flat, p.offsets)
    for a, packed in zip(data.aug, p.aug_flat, strict=True):
        if packed is not None:
            a.X = split(*packed)
    return data


def _run_packed(
    ctx: _RunContext, packed: _Packed, mspec: Any, fold: Any, params: dict[str, Any]
) -> UnitResult:
    return _run_unit(ctx, _unpack(packed), mspec, fold, params)


_BUSY = "another process is running this unit"


def _run_unit(ctx: _RunContext, data: ViewData, mspec: Any, fold: Any, params: dict[str, Any]) -> UnitResult:
    """One unit: reuse its stored record when current, else take its lock, fit, score and store it."""
    view, name, k = data.entry, entry_name(mspec, ctx.fit.tune), fold.index
    jpath, ppath = unit_paths(ctx.base, view, name, k)
    cached = _stored_unit(ctx, data, mspec, params, k, jpath)
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
        cached = _stored_unit(ctx, data, mspec, params, k, jpath)  # another process may have finished it
        if cached is not None:
            return cached
        return _fit_score(ctx, data, mspec, fold, params, jpath, ppath)
    finally:
        lock.release()


def _stored_unit(
    ctx: _RunContext, data: ViewData, mspec: Any, overrides: dict[str, Any], k: int, jpath: Path
) -> UnitResult | None:
    """The stored result of this unit when it exists and is current (same features and model), else None."""
    if not jpath.exists() or ctx.force:
        return None
    meta = json.loads(jpath.read_text())
    if not _same_inputs(meta, data, jpath, _defining_params(ctx, mspec, overrides, meta.get("best_params"))):
        return None
    name = entry_name(mspec, ctx.fit.tune)
    return UnitResult(data.entry, name, k, "cached", meta["metrics"].get("ua"), meta["metrics"].get("wa"))


#: Estimator parameters that say where or how fast a model runs, not what it is: a unit stored with other
#: values of these is still the same experiment (a CPU run is not redone because a GPU is now present).
_RUNTIME_PARAMS = frozenset({"device", "n_threads", "n_jobs", "verbose"})


def _model_params(est: Any) -> dict[str, Any]:
    try:
        return json_safe(est.get_params(deep=False))
    except Exception:  # pragma: no cover - estimators without get_params are not registered
        return {}


def _defining_params(
    ctx: _RunContext, mspec: Any, overrides: dict[str, Any], best_params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters this unit's model would be recorded with (as in its record), without the runtime ones.

    ``best_params``: what a grid search chose for a stored unit; applied here, so a tuned unit compares equal
    when the model and its grid are unchanged.
    """
    from sertool.models.registry import make_estimator

    est = make_estimator(mspec.name, seed=ctx.fit.seed, **overrides)
    if best_params:
        try:
            est.set_params(**best_params)
        except ValueError:  # the grid names parameters the model no longer has: stale
            return {"best_params": best_params}
    return {k: v for k, v in _model_params(est).items() if k not in _RUNTIME_PARAMS}


def _same_inputs(meta: dict[str, Any], data: ViewData, path: Path, params: dict[str, Any]) -> bool:
    """Whether a stored unit was computed from these features (cache key and augmentation) by this model.

    The model is compared by its recorded parameters, apart from runtime ones (``params`` from
    :func:`_defining_params`). A unit of other inputs under the same name (an extractor parameter changed,
    ``--model-params`` gave other epochs) is stale: it is redone, with a warning, never reported as if it were
    the experiment asked for.
    """
    if meta.get("feature_key", data.key) != data.key or meta.get("augment") != data.augment_record():
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
    ctx: _RunContext, data: ViewData, mspec: Any, fold: Any, params: dict[str, Any], jpath: Path, ppath: Path
) -> UnitResult:
    """Fit through the shared fit path, score the test part once, store predictions then the record."""
    import time

    from sertool.metrics import score_all

    view, name, k = data.entry, entry_name(mspec, ctx.fit.tune), fold.index
    test = data.present(fold.test)
    missing = len(fold.train) + len(fold.valid) + len(fold.test) - len(data.present(fold.train))
    missing -= len(data.present(fold.valid)) + len(test)
    if missing:
        log.warning(
            "%s fold %d: %d utterances have no cached %s features (skipped clips)", view, k, missing, view
        )
    if not data.present(fold.train) or not test:
        return UnitResult(view, name, k, "skipped", reason="empty train or test part")
    try:
        fitted = fit_unit(ctx.fit, data, mspec, train=fold.train, valid=fold.valid, fold=k, params=params)
    except SertoolError:
        raise
    except Exception as exc:  # one failing model must not lose the rest of the run
        log.error("%s / %s fold %d failed: %s", view, name, k, exc)
        return UnitResult(view, name, k, "failed", reason=f"{type(exc).__name__}: {exc}")
    if ctx.fit.regression:
        return _score_regression(ctx, data, name, k, fitted, test, jpath, ppath)
    t1 = time.perf_counter()
    proba, y_pred = predict_classes(fitted.estimator, data.rows(test), ctx.fit.classes)
    pred_s = time.perf_counter() - t1
    y_true = [ctx.fit.labels[u] for u in test]
    metrics = score_all(y_true, y_pred, ctx.fit.classes)
    speakers = [ctx.fit.speakers[u] for u in test]
    pred = pd.DataFrame({"utt_id": test, "speaker": speakers, "y_true": y_true, "y_pred": y_pred})
    if ctx.fit.genders:
        pred.insert(2, "gender", [ctx.fit.genders.get(u, "") for u in test])
    for j, c in enumerate(ctx.fit.classes):
        pred[f"proba__{c}"] = proba[:, j].astype(np.float32)
    if ctx.fit.task == "multitask":
        metrics.update(_score_dimensions(ctx, fitted, data.rows(test), test, pred))
    verdict = _guard_test(ctx, data, fitted, test, proba, f"{view} / {name} fold {k}")
    if verdict is not None:
        pred["ood_score"] = verdict.ood_score.astype(np.float32)
        pred["in_distribution"] = verdict.in_distribution
    atomic_parquet(pred, ppath)
    _record(ctx, data, name, k, fitted, metrics, len(test), pred_s).write(jpath)
    return UnitResult(view, name, k, "done", metrics["ua"], metrics["wa"], fitted.fit_seconds + pred_s)


def _score_dimensions(
    ctx: _RunContext, fitted: Any, X: Any, test: list[str], pred: pd.DataFrame
) -> dict[str, Any]:
    """A multi-task unit's dimensions: each one's CCC, Pearson r, MAE and RMSE on the test clips that have
    a rating (``ccc__<dim>``, ...); the true and predicted values join ``pred`` (``true__<dim>``,
    ``pred__<dim>``)."""
    from sertool.metrics_regression import regression_scores

    truth = ctx.fit.dimension_values(test)
    guess = np.asarray(fitted.estimator.predict_values(X), dtype=np.float64).reshape(truth.shape)
    out: dict[str, Any] = {"dimensions": list(ctx.fit.dimensions)}
    for j, dim in enumerate(ctx.fit.dimensions):
        pred[f"true__{dim}"] = truth[:, j]
        pred[f"pred__{dim}"] = guess[:, j]
        rated = ~np.isnan(truth[:, j])
        if rated.sum() < 2:
            continue
        scores = regression_scores(truth[rated, j], guess[rated, j])
        out.update({f"{key}__{dim}": scores[key] for key in ("ccc", "pearson", "mae", "rmse")})
    return out


def _score_regression(
    ctx: _RunContext,
    data: ViewData,
    name: str,
    k: int,
    fitted: Any,
    test: list[str],
    jpath: Path,
    ppath: Path,
) -> UnitResult:
    """Score a regression unit: predicted values of the test part, CCC / Pearson / MAE / RMSE, the guard's
    verdict (on the predicted value), stored like a classification unit (``y_true`` / ``y_pred`` are floats
    and ``bin`` is the stratification bin of the true value)."""
    import time

    from sertool.metrics_regression import regression_scores

    view = data.entry
    t1 = time.perf_counter()
    y_pred = np.asarray(fitted.estimator.predict(data.rows(test)), dtype=np.float64).reshape(-1)
    pred_s = time.perf_counter() - t1
    y_true = ctx.fit.target(test)
    metrics = {**regression_scores(y_true, y_pred), "target": ctx.split.target}
    pred = pd.DataFrame(
        {
            "utt_id": test,
            "speaker": [ctx.fit.speakers[u] for u in test],
            "y_true": y_true,
            "y_pred": y_pred,
            "bin": [ctx.fit.labels[u] for u in test],
        }
    )
    if ctx.fit.genders:
        pred.insert(2, "gender", [ctx.fit.genders.get(u, "") for u in test])
    verdict = _guard_test(ctx, data, fitted, test, y_pred[:, None], f"{view} / {name} fold {k}")
    if verdict is not None:
        pred["ood_score"] = verdict.ood_score.astype(np.float32)
        pred["in_distribution"] = verdict.in_distribution
    atomic_parquet(pred, ppath)
    _record(ctx, data, name, k, fitted, metrics, len(test), pred_s).write(jpath)
    return UnitResult(view, name, k, "done", None, None, fitted.fit_seconds + pred_s)


def _guard_test(
    ctx: _RunContext, data: ViewData, fitted: Any, test: list[str], proba: np.ndarray, unit: str
) -> Any:
    """The out-of-distribution guard's verdict on the test clips (:func:`sertool.guard.unit_guard`, the one
    ``sertool train`` stores), or None when it cannot be fitted (the unit is stored without its columns)."""
    from sertool.guard import unit_guard

    try:
        guard = unit_guard(ctx.fit, data, fitted)
    except Exception as exc:  # the guard is a bonus to the unit: never lose the unit over it
        log.warning("%s: no out-of-distribution guard (%s: %s)", unit, type(exc).__name__, exc)
        return None
    return None if guard is None else guard.assess(data.rows(test), proba)


def _learned_layer_weights(est: Any) -> list[float] | None:
    """A frame head's learned weighting of stacked layers (``stacked_layers > 1``), for the unit record."""
    weights = getattr(est, "layer_weights_", None)
    return None if weights is None else [round(float(w), 6) for w in weights]


def _record(
    ctx: _RunContext,
    data: ViewData,
    name: str,
    k: int,
    fitted: Any,
    metrics: dict,
    n_test: int,
    pred_s: float,
) -> UnitRecord:
    split = ctx.split
    return UnitRecord(
        corpus=ctx.corpus,
        manifest_hash=ctx.mhash,
        split_id=split.id,
        split_strategy=split.strategy,
        speaker_independent=bool(split.speaker_independent),
        protocol=split_protocol(split) + (", transductive" if data.normalize else ""),
        label_scheme=split.label_scheme,
        fold=k,
        features=data.entry,
        feature_key=data.key,
        model=name,
        model_params=_model_params(fitted.base_estimator),
        seed=ctx.fit.seed,
        classes=[] if ctx.fit.regression else list(ctx.fit.classes),
        task=ctx.fit.task,
        layer_weights=_learned_layer_weights(fitted.base_estimator),
        n_train=len(fitted.fit_ids),
        n_augmented=fitted.n_augmented,
        augment=data.augment_record(),
        preprocess=data.preprocess or None,
        normalize=data.normalize,
        n_valid=len(fitted.valid_ids),
        n_test=n_test,
        metrics=json_safe(metrics),
        fit_seconds=round(fitted.fit_seconds, 4),
        predict_seconds=round(pred_s, 4),
        device=fitted.device,
        tuned=fitted.best_params is not None,
        best_params=json_safe(fitted.best_params),
        calibration=json_safe(fitted.calibration),
        provenance=ctx.env,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
