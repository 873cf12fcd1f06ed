"""From leaderboard to use: train a final model, save it without pickle, predict new audio.

A saved model is a folder::

    model.json          the model card: format version, model name and parameters, feature view and the
                        extractor's identity (name, version, output-changing parameters, cache key) and the
                        parameters it was built with, classes, label scheme, training data (corpus, manifest
                        hash, split id and fold, utterance count), seed, package versions, file checksums,
                        and the leaderboard of the run it came from (when known)
    estimator.skops     scikit-learn / XGBoost / LightGBM pipelines (skops format), or
    weights.safetensors torch heads: the network's tensors; the card holds the estimator's parameters

Loading never unpickles: ``skops`` files are opened only when every type they name is in
:data:`TRUSTED_TYPES` (plain scikit-learn estimators, numpy and the few library types the registered models
use), and torch heads are rebuilt from their parameters and ``safetensors`` tensors. A model whose file
checksums, feature extractor or package versions do not match is refused with a message that says what
differs (:class:`ModelError`).

Training data: all utterances of the manifest, or the training part of one fold of a saved split (classic
models also fit on its validation part, as the benchmark runner does, so a model trained from fold ``k``
is the one the leaderboard scored on that fold). Neural heads early-stop on a validation part: the fold's,
or, on all data, whole speakers held out (about 10%, seeded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sertool.data.audio import load_audio
from sertool.exceptions import AudioError, ParameterError, SertoolError
from sertool.provenance import json_safe, package_versions

__all__ = [
    "MODEL_FORMAT",
    "TRUSTED_TYPES",
    "ModelError",
    "TrainedModel",
    "load_model",
    "predict_files",
    "train_model",
]

log = logging.getLogger(__name__)

#: Version of the saved-model folder layout (``model.json`` ``format``).
MODEL_FORMAT = 1
CARD = "model.json"
SKOPS_FILE = "estimator.skops"
TORCH_FILE = "weights.safetensors"

#: The only non-default types a ``estimator.skops`` file may contain (skops trusts plain scikit-learn
#: estimators and numpy types by itself). Anything else is refused before loading.
TRUSTED_TYPES = frozenset(
    {
        "collections.OrderedDict",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "sertool.models.classic.GMMClassifier",
        "sertool.models.ensemble.SoftVote",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._TemperatureScaling",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.tree._tree.Tree",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
    }
)

#: Fewest clips (or segments) of one group a normalised model computes that group's statistics from.
MIN_STATISTICS_CLIPS = 5

#: Packages whose version must match between training and prediction (those present at training).
_CHECKED_PACKAGES = ("sertool", "numpy", "scikit-learn", "librosa", "xgboost", "lightgbm", "torch")


class ModelError(SertoolError):
    """A saved model cannot be used here: missing or altered files, untrusted content, mismatched versions
    or feature extractor."""


def _skops_io() -> Any:
    """``skops.io`` (:func:`sertool.skops_import.skops_io`: the same trusted types at a fraction of the import
    cost)."""
    from sertool.skops_import import skops_io

    return skops_io()


# ------------------------------------------------------------------------------------------------ helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    return package_versions(_CHECKED_PACKAGES)


def _plain_params(est: Any) -> dict[str, Any]:
    """An estimator's own parameters, JSON-safe (tuples become lists; restored by :func:`_restore_params`)."""
    return {k: json_safe(v) for k, v in est.get_params(deep=False).items()}


def _restore_params(est: Any, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with lists turned back into tuples where the estimator's default is a tuple."""
    defaults = est.get_params(deep=False)
    return {
        k: tuple(v) if isinstance(defaults.get(k), tuple) and isinstance(v, list) else v
        for k, v in params.items()
    }


# ------------------------------------------------------------------------------------------------ training
def train_model(
    manifest: pd.DataFrame,
    *,
    features: str,
    model: str,
    out: str | os.PathLike,
    split: Any = None,
    fold: int = 0,
    seed: int = 0,
    cache: Any = None,
    device: str = "cpu",
    model_params: dict[str, Any] | None = None,
    extractor_params: dict[str, Any] | None = None,
    results_dir: str | os.PathLike | None = None,
    jobs: int = -1,
    overwrite: bool = False,
    tune: bool = False,
    augment: Any = None,
    normalize: str | None = None,
    min_duration: float = 0.0,
    calibrate: str | None = None,
    onnx: bool = True,
) -> Path:
    """Fit one model on one feature view, exactly as a benchmark unit does, and save it.

    The fit goes through :mod:`sertool.bench.fitting` (the functions the benchmark runner calls), so a model
    trained with ``split`` and ``fold`` is the one the leaderboard scored on that fold, for plain, tuned,
    augmented and normalised entries alike.

    Parameters
    ----------
    manifest : pandas.DataFrame
        The corpus manifest (or several merged), already mapped to its label scheme.
    features : str
        Feature view, e.g. ``"handcrafted94"`` or ``"whisper-base@all"``. Features not yet cached are
        extracted first, through the same cache as ``sertool features``.
    model : str
        Registered model name (``"svm"``, ``"mlp_head"``, ...).
    out : path
        Folder to write; must not exist unless ``overwrite``. Written to a temporary sibling and renamed,
        so a killed run leaves no half-written model.
    split : sertool.splits.Split, optional
        Train on the training part of fold ``fold`` of this saved split (checked for leakage) instead of
        on all utterances.
    fold : int, optional
        Fold of ``split`` (default 0).
    seed : int, optional
        Model seed.
    cache : FeatureStore or path, optional
        Feature cache (default :func:`sertool.util.cache_dir`).
    device : str, optional
        Device for torch heads and model-based extractors.
    model_params, extractor_params : dict, optional
        Overrides for the model, and the extractor's parameters (recorded, reused by :func:`load_model`).
    results_dir : path, optional
        Results root of the benchmark run: with ``split``, the card links that split's leaderboard.
    jobs : int, optional
        Parallel jobs for feature extraction.
    overwrite : bool, optional
        Replace an existing ``out``.
    tune, augment, normalize : optional
        As :func:`sertool.bench.runner.run_bench` (grid search inside the training data; augmented copies of
        training clips; per-speaker / per-corpus z-scoring, recorded in the card: predicting then needs the
        statistics of the audio's own group).
    min_duration : float, optional
        Leave out clips shorter than this many seconds (as ``bench --min-duration``).
    calibrate : {"temperature"}, optional
        As :func:`~sertool.bench.runner.run_bench`: one temperature fitted on the validation part (the fold's;
        on all data, the held-out speakers), which the model is then not fitted on; the entry is
        ``<view>~cal-temp``. The file holds the uncalibrated estimator; ``model.json`` records
        ``calibration`` (``{"method": "temperature", "temperature": T, ...}``) and :func:`load_model` wraps
        the estimator with it again (:class:`~sertool.calibration.TemperatureScaled`).
    onnx : bool, optional
        Also write ``model.onnx``, the classifier as an ONNX graph checked against the estimator on the
        training rows, which ``predict`` then runs without scikit-learn (default; needs the ``onnx`` extra,
        else the card records why there is none). See :mod:`sertool.engine`.

    Returns
    -------
    Path
        ``out``.
    """
    from sertool.bench.fitting import (
        FitContext,
        check_calibration_folds,
        fit_unit,
        fold_threads,
        prepare_view,
    )
    from sertool.features import parse_view
    from sertool.features.store import FeatureStore
    from sertool.features.transforms import parse_augment
    from sertool.guard import unit_guard
    from sertool.models.registry import get_model
    from sertool.util import cache_dir, resolve_device

    out = Path(out)
    if out.exists() and not overwrite:
        raise ParameterError(f"{out} exists; choose another --out or pass overwrite")
    spec = get_model(model)
    manifest = drop_short(manifest, min_duration)
    part, source = _training_part(manifest, split, fold, seed)
    calibrate = check_calibration_folds([part], calibrate)
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache_dir(cache))
    aug = parse_augment(augment)
    eparams = dict(extractor_params or {})
    prep = prepare_view(
        features, manifest, models=[model], store=store, folds=[part], seed=seed, device=device,
        extractor_params={parse_view(features).extractor: eparams}, augment=aug,
        normalize=normalize, jobs=jobs, calibrate=calibrate,
    )  # fmt: skip
    if not prep.models:
        raise ParameterError(_no_input(model, spec.input, features))
    si = bool(split.speaker_independent) if split is not None else True
    ctx = FitContext.from_manifest(
        manifest, seed=seed, device=resolve_device(device), tune=tune, threads=fold_threads(1),
        speaker_independent=si, calibrate=calibrate,
    )  # fmt: skip
    data = prep.data[spec.input]
    if not data.present(part.train):
        raise ParameterError("no training utterances with cached features")
    fitted = fit_unit(
        ctx, data, spec, train=part.train, valid=part.valid, fold=part.index, params=model_params
    )
    source.update(n_train=len(fitted.fit_ids), n_valid=len(fitted.valid_ids), n_augmented=fitted.n_augmented)
    card = _card(manifest, spec, features, prep, data, ctx, fitted, source, eparams, split, results_dir)
    card["fit"] = {"tune": tune, "min_duration": min_duration, "model_params": json_safe(model_params or {})}
    guard = unit_guard(ctx, data, fitted)
    card["guard"] = None if guard is None else guard.to_dict()
    _save(out, fitted.base_estimator, card, neural=spec.family == "neural")
    if onnx:
        from sertool.engine import add_onnx_engine

        rows = data.rows(fitted.fit_ids)
        card["engine"] = add_onnx_engine(
            out, rows if isinstance(rows, np.ndarray) else None, seed=seed, cache=store.root
        )
    _write_model_card(out, card, manifest)
    log.info("saved %s on %s (%d training utterances) to %s", model, features, len(fitted.fit_ids), out)
    return out


def _no_input(model: str, kind: str, features: str) -> str:
    if kind == "frames":
        return f"{model} reads frame sequences, which {features} does not store"
    return f"{model} reads {kind}, which {features} does not provide"


def _write_model_card(out: Path, card: dict[str, Any], manifest: pd.DataFrame) -> None:
    """``MODEL_CARD.md`` beside ``model.json`` (not checksummed: loading never reads it); a failure is logged
    and the saved model stays usable."""
    try:
        from sertool.model_card import write_model_card

        write_model_card(out, card, manifest=manifest)
    except Exception as exc:
        log.warning("could not write the model card MODEL_CARD.md in %s: %s", out, exc)


def drop_short(manifest: pd.DataFrame, min_duration: float) -> pd.DataFrame:
    """``manifest`` without clips shorter than ``min_duration`` seconds (``--min-duration``)."""
    if not min_duration:
        return manifest
    short = manifest["duration_s"] < min_duration
    if short.any():
        log.info("%d clips shorter than %.2f s left out (min_duration)", int(short.sum()), min_duration)
    kept = manifest[~short].reset_index(drop=True)
    kept.attrs.update(manifest.attrs)
    return kept


def _training_part(manifest: pd.DataFrame, split: Any, fold: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """The fold to train on, and where it came from: fold ``fold`` of ``split``, or all utterances (neural
    heads then early-stop on about 10% of the speakers, held out whole, seeded)."""
    from sklearn.model_selection import GroupShuffleSplit

    from sertool.splits import Fold, check_split

    if split is not None:
        check_split(split, manifest)
        if not 0 <= fold < len(split.folds):
            raise ParameterError(f"fold {fold} out of range: split {split.id} has {len(split.folds)} folds")
        source = {"split_id": split.id, "split_strategy": split.strategy, "fold": fold, "part": "train"}
        return split.folds[fold], source
    ids = manifest["utt_id"].tolist()
    train, valid = ids, []
    if manifest["speaker"].nunique() >= 3:
        groups = manifest["speaker"].astype(str).to_numpy()
        tr, va = next(
            GroupShuffleSplit(n_splits=1, test_size=0.1, random_state=seed).split(ids, groups=groups)
        )
        train, valid = [ids[i] for i in tr], [ids[i] for i in va]
    return Fold(0, tuple(train), tuple(valid), ()), {"split_id": None, "fold": None, "part": "all"}


def _card(
    manifest: pd.DataFrame,
    spec: Any,
    features: str,
    prep: Any,
    data: Any,
    ctx: Any,
    fitted: Any,
    source: dict[str, Any],
    eparams: dict[str, Any],
    split: Any,
    results_dir: Any,
) -> dict[str, Any]:
    """``model.json`` without its artifact entry."""
    from sertool.bench.records import corpus_name
    from sertool.bench.runner import split_dir
    from sertool.data.manifest import manifest_hash
    from sertool.features import parse_view

    view = parse_view(features)
    extractor = prep.extractors[0]
    leaderboard = None
    if split is not None and results_dir is not None:
        html = split_dir(results_dir, manifest, split) / "leaderboard.html"
        leaderboard = str(html.resolve()) if html.exists() else None
    return {
        "format": MODEL_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": spec.name,
        "family": spec.family,
        "input": spec.input,
        "seed": ctx.seed,
        "features": view.name,
        "entry": data.entry,
        "extractor": {
            **json_safe(extractor.identity()),
            "default_layers": json_safe(extractor.default_layers),
            "frame_layers": json_safe(getattr(extractor, "frame_layers", None)),
            "build_params": json_safe({k: v for k, v in eparams.items() if k not in ("device", "cache")}),
        },
        "classes": [] if ctx.regression else list(ctx.classes),
        "task": ctx.task,
        **(_regression_card(ctx, fitted, manifest.attrs.get("label_scheme")) if ctx.regression else {}),
        **({"dimensions": list(ctx.dimensions)} if ctx.task == "multitask" else {}),
        "label_scheme": manifest.attrs.get("label_scheme", "native-v1"),
        "trained_on": {"corpus": corpus_name(manifest), "manifest_hash": manifest_hash(manifest), **source},
        "augment": data.augment_record(),
        "normalize": _normalize_card(data.normalize),
        "best_params": json_safe(fitted.best_params),
        "calibration": json_safe(fitted.calibration),
        "leaderboard": leaderboard,
        "versions": _versions(),
    }


def _regression_card(ctx: Any, fitted: Any, label_scheme: str | None) -> dict[str, Any]:
    """What ``model.json`` says of a regression target: its name and the range and spread of the values the
    model was fitted on (the page draws predictions on that scale)."""
    from sertool.data.targets import target_of

    values = ctx.target(fitted.fit_ids)
    return {
        "target": target_of(label_scheme).removesuffix(":regression"),
        "target_values": {
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": float(values.mean()),
            "std": float(values.std()),
        },
    }


def _normalize_card(column: str | None) -> dict[str, Any] | None:
    """What a normalised model needs at prediction time (recorded in ``model.json``)."""
    if column is None:
        return None
    return {
        "column": column,
        "statistics": "per group, from the group's own unlabelled clips: mean and standard deviation of each "
        "pooled dimension (a constant dimension is only centred)",
        "needs": f"the {column} of every input, with enough clips of each {column} to estimate its statistics",
    }


def _save(out: Path, est: Any, card: dict[str, Any], *, neural: bool) -> None:
    """Write the model folder through a temporary sibling, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if neural:
            from safetensors.torch import save_file

            tensors, fitted = est.export_weights()
            save_file(tensors, str(tmp / TORCH_FILE))
            card["artifact"] = {
                "kind": "torch",
                "file": TORCH_FILE,
                "params": _plain_params(est),
                "fitted": fitted,
            }
        else:
            sio = _skops_io()

            sio.dump(est, tmp / SKOPS_FILE)
            card["artifact"] = {"kind": "skops", "file": SKOPS_FILE}
        card["artifact"]["sha256"] = _sha256(tmp / card["artifact"]["file"])
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class TrainedModel:
    """A loaded model: the estimator, the extractor that feeds it, and its card.

    Attributes
    ----------
    card : dict
        ``model.json``.
    estimator : estimator
        The fitted classifier (its ``classes_`` are indices into :attr:`classes`).
    extractor : Extractor
        Built from the card; its cache key equals the one recorded at training.
    view : FeatureView
        The feature view the model reads.
    path : Path
        The model folder.
    engine : str
        What computes the probabilities: ``"estimator"`` (the fitted estimator) or ``"onnx"`` (the checked
        ``model.onnx`` graph in onnxruntime; see :mod:`sertool.engine`).
    """

    card: dict[str, Any]
    estimator: Any
    extractor: Any
    view: Any
    path: Path
    engine: str = "estimator"

    @property
    def classes(self) -> list[str]:
        """Class names, in probability-column order."""
        return list(self.card["classes"])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"`` (a continuous target: :attr:`target`)."""
        return str(self.card.get("task", "classification"))

    @property
    def target(self) -> str:
        """What the model predicts: ``emotion``, or the target recorded at training (``arousal``)."""
        from sertool.data.targets import target_of

        return str(self.card.get("target") or target_of(self.card.get("label_scheme")))

    @property
    def uses_whisper(self) -> bool:
        """Whether the features come from a Whisper encoder (the web app then shows a transcript)."""
        return str(self.card["extractor"]["name"]).startswith("whisper-")

    def features(self, signals: Sequence[np.ndarray]) -> Any:
        """The model's input for 16 kHz mono signals: ``(n, d)`` pooled vectors or a list of frame arrays."""
        from sertool.features.store import select_frames

        outs = self.extractor.extract_batch(list(signals))
        ex = self.card["extractor"]
        if self.card["input"] == "frames":
            return [
                select_frames(
                    np.asarray(o["frames"]), self.view, ex.get("frame_layers"), ex.get("default_layers")
                )
                for o in outs
            ]
        pooled = np.stack([np.asarray(o["pooled"], dtype=np.float32) for o in outs])
        default = tuple(ex["default_layers"]) if ex.get("default_layers") is not None else None
        return self.view.select(pooled, default)

    @property
    def normalize(self) -> str | None:
        """The manifest column whose groups were z-scored at training (``speaker`` / ``corpus``), or None."""
        norm = self.card.get("normalize")
        return norm["column"] if norm else None

    @property
    def guard(self) -> Any:
        """The out-of-distribution guard (:class:`sertool.guard.Guard`) recorded at training, or None (a model
        saved before the guard existed, or with too few training rows)."""
        from sertool.guard import Guard

        if "_guard" not in self.__dict__:
            data = self.card.get("guard")
            self.__dict__["_guard"] = Guard.from_dict(data) if data else None
        return self.__dict__["_guard"]

    def statistics(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Normalisation statistics (mean, std) of one group from its unlabelled clips' model input ``X`` (an
        enrolment set), as the benchmark computed each speaker's; see :meth:`predict`."""
        from sertool.bench.fitting import group_statistics

        X = np.asarray(X, dtype=np.float64)
        if len(X) < MIN_STATISTICS_CLIPS:
            raise ParameterError(self._needs_statistics(f"{len(X)} clip(s) given for the statistics"))
        return group_statistics(X)

    def _needs_statistics(self, what: str) -> str:
        return (
            f"{self.path}: trained with --normalize {self.normalize}, it needs the statistics of each "
            f"{self.normalize}'s own clips (at least {MIN_STATISTICS_CLIPS}); {what}. Add --normalize-by folder "
            f"(one folder per {self.normalize}), --speaker-column COLUMN (a CSV of inputs) or --enroll DIR "
            "(unlabelled clips for the statistics); in Python groups= or enroll="
        )

    def model_input(
        self,
        X: Any,
        groups: Sequence[str] | None = None,
        statistics: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> Any:
        """``X`` as the estimator reads it: a normalised model z-scores each group's rows with the group's
        statistics (from ``statistics`` when given for it, else from the group's own rows), as the benchmark
        did; other models take ``X`` as it is.

        Raises
        ------
        ParameterError
            A normalised model without ``groups``, or a group with fewer than
            :data:`MIN_STATISTICS_CLIPS` rows and no ``statistics``; ``groups`` or ``statistics`` given to a
            model trained without normalisation (nothing would use them).
        """
        if self.normalize is None:
            if groups is not None or statistics:
                raise ParameterError(
                    f"{self.path}: this model was trained without --normalize: speaker groups and enrolment "
                    "statistics do not apply"
                )
            return X
        if groups is None or len(groups) != len(X):
            raise ParameterError(self._needs_statistics(f"the {self.normalize} of the inputs is not given"))
        statistics = statistics or {}
        X = np.asarray(X, dtype=np.float64).copy()
        keys = np.asarray([str(g) for g in groups])
        for g in np.unique(keys):
            rows = keys == g
            mean, std = statistics[g] if g in statistics else self.statistics(X[rows])
            X[rows] = (X[rows] - mean) / std
        return X.astype(np.float32)

    def predict(
        self,
        X: Any,
        groups: Sequence[str] | None = None,
        statistics: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> Prediction:
        """Probabilities, labels and the guard's verdict for model input ``X``.

        Parameters
        ----------
        X : ndarray or list of ndarray
            What :meth:`features` returns (for a normalised model: before normalisation).
        groups : sequence of str, optional
            The group (speaker, or corpus) of every row; required by a model trained with ``normalize``:
            each group is z-scored with its own statistics, as the benchmark did.
        statistics : dict, optional
            ``{group: (mean, std)}`` from enrolment clips (:meth:`statistics`), used instead of the group's
            own rows.

        Raises
        ------
        ParameterError
            See :meth:`model_input`.
        """
        from sertool.engine import predict_classes

        Xm = self.model_input(X, groups, statistics)
        dims = None
        if self.task == "regression":
            values = np.asarray(self.estimator.predict(Xm), dtype=np.float64).reshape(-1)
            proba, labels = values[:, None], [f"{v:.4g}" for v in values]
        else:
            proba, labels = predict_classes(self.estimator, Xm, self.classes)
            if self.task == "multitask":  # the dimensions beside the category
                dims = np.asarray(self.estimator.predict_values(Xm), dtype=np.float64)
        values = proba[:, 0] if self.task == "regression" else dims
        if self.guard is None:
            n = len(labels)
            return Prediction(
                proba, labels, np.full(n, np.nan), np.ones(n, dtype=bool), guarded=False, values=values
            )
        verdict = self.guard.assess(Xm, proba)
        return Prediction(
            proba,
            labels,
            verdict.ood_score,
            verdict.in_distribution,
            constant=verdict.constant,
            values=values,
        )

    def predict_features(
        self,
        X: Any,
        groups: Sequence[str] | None = None,
        statistics: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Probabilities (columns in :attr:`classes` order) and labels for model input ``X`` (as
        :meth:`predict`, without the guard's verdict)."""
        from sertool.engine import predict_classes

        return predict_classes(self.estimator, self.model_input(X, groups, statistics), self.classes)

    def predict_signals(
        self, signals: Sequence[np.ndarray], statistics: tuple[np.ndarray, np.ndarray] | None = None
    ) -> Prediction:
        """:meth:`predict` for 16 kHz mono signals; a normalised model needs enrolment ``statistics`` (mean,
        std) for them, or at least :data:`MIN_STATISTICS_CLIPS` signals of one speaker."""
        X = self.features(signals)
        if self.normalize is None:
            return self.predict(X)
        return self.predict(X, ["input"] * len(X), {"input": statistics} if statistics is not None else None)

    def predict_proba_signals(self, signals: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities, shape ``(n, len(classes))``, columns in :attr:`classes` order."""
        if not signals:
            return np.zeros((0, len(self.classes)))
        return self.predict_features(self.features(signals))[0]


@dataclass
class Prediction:
    """What :meth:`TrainedModel.predict` returns.

    Attributes
    ----------
    proba : ndarray of shape (n, n_classes)
        Columns in the model's class order.
    labels : list of str
    ood_score : ndarray of shape (n,)
        Distance from the training data in units of the guard's threshold (above 1: out of distribution);
        NaN for a model without a guard.
    in_distribution : ndarray of bool
        The guard accepts the input (distance within the threshold, and an answer that depends on it).
    guarded : bool
        Whether the model has a guard (else ``in_distribution`` is all true and says nothing).
    constant : ndarray of bool, optional
        The model's answer equals its constant answer far from all data.
    values : ndarray of shape (n,) or (n, k), optional
        A regression model's predicted values (then ``proba`` is the same numbers as one column and
        ``labels`` their text), or a multi-task model's ``k`` dimensions (in the card's ``dimensions`` order).
    """

    proba: np.ndarray
    labels: list[str]
    ood_score: np.ndarray
    in_distribution: np.ndarray
    guarded: bool = True
    constant: np.ndarray | None = None
    values: np.ndarray | None = None


def load_model(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    cache: Any = None,
    check_versions: bool = True,
    engine: str = "auto",
) -> TrainedModel:
    """Load a model saved by :func:`train_model`, refusing anything that does not match.

    Parameters
    ----------
    path : path
        The model folder.
    device : str, optional
        Device for a model-based extractor (Whisper); torch heads predict on the CPU.
    cache : path, optional
        Where converted Whisper weights live (default ``$SERTOOL_CACHE``).
    check_versions : bool, optional
        Refuse a model trained with other versions of sertool, numpy, scikit-learn, librosa, XGBoost,
        LightGBM or torch (default). Turn off only to inspect an old model.
    engine : {"auto", "onnx", "estimator"}, optional
        What computes the probabilities (:mod:`sertool.engine`): ``"auto"`` (default) the checked
        ``model.onnx`` graph when the card records one and onnxruntime is installed (scikit-learn, skops and
        torch are then not imported), else the estimator; ``"onnx"`` the graph or an error; ``"estimator"``
        the fitted estimator.

    Raises
    ------
    ModelError
        Missing or altered files, a format from a newer sertool, untrusted types in the skops file, other
        package versions, or an extractor whose identity (name, version, parameters) is not the recorded one.
    ParameterError
        An unknown ``engine``, or ``engine="onnx"`` for a model without a graph.
    """
    from sertool.engine import ENGINES
    from sertool.features import configured_extractor, parse_view
    from sertool.util import cache_dir

    if engine not in ENGINES:
        raise ParameterError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    root = Path(path)
    card_path = root / CARD
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{root}: not a sertool model folder (no {CARD})") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{card_path}: unreadable model card: {exc}") from None
    if card.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{root}: model format {card.get('format')!r}; this sertool reads format {MODEL_FORMAT}"
        )
    if check_versions:
        here = _versions()
        diff = [
            f"{name} {want} (here {here.get(name, 'not installed')})"
            for name, want in sorted(card.get("versions", {}).items())
            if here.get(name) != want
        ]
        if diff:
            raise ModelError(
                f"{root}: trained with other package versions: {'; '.join(diff)}. Retrain it here, or install "
                "those versions"
            )
    art = card.get("artifact", {})
    file = root / str(art.get("file", ""))
    if art.get("file") not in (SKOPS_FILE, TORCH_FILE) or not file.is_file():
        raise ModelError(f"{root}: model file {art.get('file')!r} missing")
    if _sha256(file) != art.get("sha256"):
        raise ModelError(f"{file}: checksum does not match the model card (altered or truncated file)")
    ex = card["extractor"]
    extractor = configured_extractor(
        ex["name"], ex.get("build_params") or {}, device=device, cache=cache_dir(cache)
    )
    if extractor.key != ex["key"]:
        raise ModelError(
            f"{root}: the model was trained on {ex['key']} (version {ex['version']}, parameters {ex['params']}); "
            f"this sertool builds {extractor.key} (version {extractor.version}, parameters {extractor.params()}). "
            "Retrain the model with this sertool"
        )
    view = parse_view(card["features"])
    if _use_onnx(card, engine):
        from sertool.engine import open_onnx_engine

        return TrainedModel(card, open_onnx_engine(root, card), extractor, view, root, engine="onnx")
    if art["kind"] == "skops":
        sio = _skops_io()

        untrusted = sio.get_untrusted_types(file=file)
        bad = sorted(set(untrusted) - TRUSTED_TYPES)
        if bad:
            raise ModelError(f"{file}: refusing to load types outside the allow list: {', '.join(bad)}")
        estimator = sio.load(file, trusted=list(untrusted))
    elif art["kind"] == "torch":
        from safetensors.torch import load_file

        from sertool.models.registry import make_estimator

        base = make_estimator(card["model"], seed=int(card.get("seed", 0)))
        params = _restore_params(base, dict(art.get("params", {})))
        params["device"] = "cpu"
        try:
            estimator = base.set_params(**params)
        except ValueError as exc:
            raise ModelError(f"{root}: stored parameters do not fit {card['model']}: {exc}") from None
        estimator.import_weights(load_file(str(file)), art["fitted"])
    else:
        raise ModelError(f"{root}: unknown model kind {art['kind']!r}")
    estimator = _calibrated(estimator, card.get("calibration"), root)
    return TrainedModel(card, estimator, extractor, view, root)


def _use_onnx(card: dict[str, Any], engine: str) -> bool:
    """Whether :func:`load_model` runs the model's ONNX graph (``engine="onnx"`` without one raises later, in
    :func:`sertool.engine.open_onnx_engine`, with the card's reason)."""
    from sertool.engine import onnx_available

    if engine == "onnx":
        return True
    return engine == "auto" and bool((card.get("engine") or {}).get("onnx")) and onnx_available()


def _calibrated(estimator: Any, calibration: dict[str, Any] | None, root: Path) -> Any:
    """``estimator`` wrapped with the calibration ``model.json`` records (itself when there is none)."""
    from sertool.calibration import TemperatureScaled

    if not calibration:
        return estimator
    temperature = calibration.get("temperature")
    if (
        calibration.get("method") != "temperature"
        or not isinstance(temperature, int | float)
        or temperature <= 0
    ):
        raise ModelError(f"{root}: unreadable calibration in the model card: {calibration!r}")
    return TemperatureScaled(estimator, float(temperature))


# ------------------------------------------------------------------------------------------------ prediction
def _segments(
    y: np.ndarray, sr: int, window: float | None, hop: float | None
) -> list[tuple[float, float, np.ndarray]]:
    """(start s, end s, samples) of each segment; the whole clip when ``window`` is None. A last segment
    shorter than half a window is merged into the previous one's span only if nothing else covers it."""
    n = y.shape[0]
    if window is None or n <= round(window * sr):
        return [(0.0, n / sr, y)]
    w, h = round(window * sr), round((hop or window) * sr)
    starts = list(range(0, n - w + 1, h))
    if starts[-1] + w < n:  # the tail: a final window flush with the end
        starts.append(n - w)
    return [(s / sr, (s + w) / sr, y[s : s + w]) for s in starts]


def _label(p: np.ndarray, classes: Sequence[str]) -> str:
    """The most probable class, ties broken in sorted-name order (as :func:`~sertool.bench.fitting.predict_classes`)."""
    codes = sorted(classes)
    return codes[int(np.argmax([p[list(classes).index(c)] for c in codes]))]


def predict_files(
    model: TrainedModel,
    paths: Sequence[str | os.PathLike],
    *,
    window: float | None = None,
    hop: float | None = None,
    jobs: int = -1,
    progress: Callable[[int], None] | None = None,
    groups: Sequence[str] | None = None,
    enroll: Sequence[str | os.PathLike] | Mapping[str, Sequence[str | os.PathLike]] | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Label each file (or each segment of it) with the model, and say whether the model knows such input.

    Parameters
    ----------
    model : TrainedModel
        From :func:`load_model`.
    paths : sequence of path
        Audio files (any format the loader reads; resampled to 16 kHz mono).
    window, hop : float, optional
        Segment long recordings into ``window``-second windows every ``hop`` seconds (default: ``hop =
        window``); clips no longer than a window are one segment. ``None``: one prediction per file.
    jobs : int, optional
        Threads decoding and extracting at once for thread-safe extractors (-1: every core); model-based
        extractors batch in this thread.
    progress : callable, optional
        Called with the number of files finished.
    groups : sequence of str, optional
        The speaker (or recording condition) of each path, for a model trained with ``normalize``: each
        group is z-scored with the statistics of its own clips (all their segments), as the benchmark did.
        Needs at least :data:`MIN_STATISTICS_CLIPS` rows per group unless ``enroll`` covers it.
    enroll : sequence of path, or dict of group -> sequence of path, optional
        Unlabelled clips used only for a normalised model's statistics (never predicted): one list for all
        inputs (then ``groups`` must be None), or one list per group.

    Returns
    -------
    predictions : pandas.DataFrame
        ``path, start_s, end_s, label, proba__<class>..., ood_score, in_distribution`` (and ``group`` when
        given), one row per segment, in input order; a regression model gives its predicted value in a
        column named after its target (``path, start_s, end_s, arousal, ood_score, ...``). ``ood_score`` is the distance from the training data in
        units of the guard's threshold; ``in_distribution`` is false beyond it, or when the model's answer
        does not depend on the input (one warning per call gives the count). A model saved without a guard
        gives NaN and empty values.
    skipped : list of (path, reason)
        Files that could not be read (the others are predicted); enrolment files are marked so.

    Raises
    ------
    ParameterError
        A normalised model without groups or enrolment clips, a group with too few clips for statistics, or
        groups / enrolment given to a model trained without normalisation.
    """
    if window is not None and not window > 0:
        raise ParameterError(f"window must be > 0 seconds, got {window!r}")
    if hop is not None and (window is None or not hop > 0):
        raise ParameterError("hop needs a window and must be > 0 seconds")
    files = [str(p) for p in paths]
    file_groups, enroll_sets = _prediction_groups(model, files, groups, enroll)
    sr = model.extractor.sr
    n_jobs = os.cpu_count() or 1 if jobs == -1 else max(1, int(jobs))

    def one(path: str) -> tuple[list[tuple[float, float]], Any, tuple[str, str] | None]:
        try:
            y = load_audio(path, sr=sr)
        except AudioError as err:
            return [], None, (err.path, err.reason)
        segs = _segments(y, sr, window, hop)
        try:
            X = model.features([s for _, _, s in segs])
        except AudioError as err:
            return [], None, (path, err.reason)
        return [(start, end) for start, end, _ in segs], X, None

    results = _map_files(model, one, files, n_jobs, progress)
    statistics, skipped_enrol = _enrol_statistics(model, enroll_sets, one, n_jobs)
    spans = [
        (f, span, g) for f, g, (sp, _, _) in zip(files, file_groups, results, strict=True) for span in sp
    ]
    parts = [X for _, X, _ in results if X is not None]
    regression = model.task == "regression"
    dims = list(model.card.get("dimensions") or []) if model.task == "multitask" else []
    outputs = [model.target] if regression else ["label"] + [f"proba__{c}" for c in model.classes] + dims
    columns = ["path", "start_s", "end_s", *outputs]
    columns += ["ood_score", "in_distribution"] + (["group"] if groups is not None or enroll else [])
    skipped = [s for _, _, s in results if s is not None] + skipped_enrol
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    if not parts:
        return pd.DataFrame([], columns=columns), skipped
    X: Any = (
        np.concatenate(parts) if isinstance(parts[0], np.ndarray) else [x for part in parts for x in part]
    )
    row_groups = [g for _, _, g in spans] if model.normalize is not None else None
    pred = model.predict(X, row_groups, statistics)
    rows = []
    for i, (path, (start, end), g) in enumerate(spans):
        row: dict[str, Any] = {"path": path, "start_s": round(start, 3), "end_s": round(end, 3)}
        if regression:
            row[model.target] = float(pred.values[i])  # type: ignore[index]
        else:
            row["label"] = pred.labels[i]
            row.update({f"proba__{c}": float(v) for c, v in zip(model.classes, pred.proba[i], strict=True)})
            row.update({d: float(pred.values[i, j]) for j, d in enumerate(dims)})  # type: ignore[index]
        row["ood_score"] = round(float(pred.ood_score[i]), 4)
        row["in_distribution"] = bool(pred.in_distribution[i]) if pred.guarded else None
        if "group" in columns:
            row["group"] = g
        rows.append(row)
    _warn_flagged(model, pred)
    return pd.DataFrame(rows, columns=columns), skipped


def _prediction_groups(
    model: TrainedModel,
    files: list[str],
    groups: Sequence[str] | None,
    enroll: Sequence[str | os.PathLike] | Mapping[str, Sequence[str | os.PathLike]] | None,
) -> tuple[list[str | None], dict[str, list[str]]]:
    """(group of each file, enrolment files per group), checked against the model's normalisation."""
    if model.normalize is None:
        if groups is not None or enroll:
            raise ParameterError(
                f"{model.path}: this model was trained without --normalize: speaker groups and enrolment "
                "clips do not apply (nothing would use them)"
            )
        return [None] * len(files), {}
    if groups is not None and len(groups) != len(files):
        raise ParameterError(f"groups has {len(groups)} entries for {len(files)} paths")
    if isinstance(enroll, Mapping):
        if groups is None:
            raise ParameterError("enrolment clips per group need the group of every path (groups=)")
        sets = {str(g): [str(p) for p in ps] for g, ps in enroll.items()}
    elif enroll:
        if groups is not None:
            raise ParameterError(
                "one enrolment set is for inputs of one speaker: give groups or enroll, not both"
            )
        sets = {"enrolled": [str(p) for p in enroll]}
        groups = ["enrolled"] * len(files)
    else:
        sets = {}
    if groups is None:
        raise ParameterError(
            model._needs_statistics(f"{len(files)} file(s) given without their {model.normalize}")
        )
    return [str(g) for g in groups], sets


def _map_files(
    model: TrainedModel, one: Callable[[str], Any], files: list[str], n_jobs: int, progress: Any
) -> list[Any]:
    """``one`` of every file, in order: on threads for thread-safe extractors, else here."""
    results: list[Any] = []
    if getattr(model.extractor, "thread_safe", False) and n_jobs > 1 and len(files) > 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(n_jobs) as pool:
            for res in pool.map(one, files):
                results.append(res)
                if progress is not None:
                    progress(1)
    else:
        for f in files:
            results.append(one(f))
            if progress is not None:
                progress(1)
    return results


def _enrol_statistics(
    model: TrainedModel, sets: dict[str, list[str]], one: Callable[[str], Any], n_jobs: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[tuple[str, str]]]:
    """Normalisation statistics of each enrolled group (from all segments of its readable enrolment clips),
    and the enrolment files that could not be read."""
    statistics, skipped = {}, []
    for g, paths in sets.items():
        res = _map_files(model, one, paths, n_jobs, None)
        skipped += [(p, f"enrolment clip: {r}") for p, r in (s for _, _, s in res if s is not None)]
        parts = [X for _, X, _ in res if X is not None]
        if not parts:
            raise ParameterError(model._needs_statistics(f"no readable enrolment clip for {g!r}"))
        statistics[g] = model.statistics(np.concatenate(parts))
    return statistics, skipped


def _warn_flagged(model: TrainedModel, pred: Prediction) -> None:
    """One warning per prediction run: how many inputs the guard flagged (or that the model has none)."""
    n = len(pred.labels)
    if not pred.guarded:
        log.warning(
            "%s has no out-of-distribution guard (saved before it existed): retrain it to get one", model.path
        )
        return
    flagged = int((~pred.in_distribution).sum())
    if flagged:
        constant = int(pred.constant.sum()) if pred.constant is not None else 0
        log.warning(
            "%d of %d input(s) lie outside the data %s was trained on (in_distribution false%s): their labels "
            "are not reliable",
            flagged,
            n,
            model.card.get("model"),
            f"; {constant} get the model's constant answer, whatever the input" if constant else "",
        )
