"""An out-of-distribution guard: how far a new input lies from a model's training data, and whether the
model's answer depends on the input at all.

A model answers every input, including inputs unlike anything it was trained on (another corpus, another
microphone, noise). An RBF SVM on ``handcrafted94`` trained on four RAVDESS actors gave every clip of another
corpus, and noise, the identical probability vector: the lowest mel bands lay 700 standard deviations from its
training data, every kernel value was ~0, and the output was the SVM's intercept. :class:`Guard` records, from
the training data itself, what it needs to notice this:

Space
    The model's input (pooled vectors; for frame-sequence models the mean over time of the frames), each
    dimension whose training values are all positive and span at least two decades (power-like features:
    mel band energies) taken on a log scale, then standardised with the training mean and standard deviation
    (for the other dimensions this is the model's own ``StandardScaler``). Euclidean distances between raw
    band energies are ruled by the few loudest clips; on the log scale a quiet corpus and a loud one lie
    apart (measured: held-out RAVDESS actors against TESS clips, AUROC 0.994 against 0.932 without the log).
Score
    The Mahalanobis distance from the training mean, per dimension (``sqrt(z' P z / d)``), with a Ledoit-Wolf
    shrinkage covariance for ``d <= 128`` dimensions and the diagonal one above (Whisper's 3,584-dim
    all-layer view: the diagonal distance already separates corpora perfectly, and the card stays small).
    Non-finite features score infinity.
Threshold
    The 99th percentile of *held-in, out-of-sample* distances: the training data is cut into 5 parts of whole
    speakers (with at least 5 speakers; else 5 random parts of clips), each part is scored by a guard fitted
    on the other four, and the threshold is the 99th percentile of those scores. A new speaker of the training
    corpus is therefore flagged about 1% of the time, not accepted by construction. ``ood_score`` is the
    distance divided by the threshold: above 1 is out of distribution.
Constant output
    Four probes far from the data (100 standard deviations per dimension, in random directions) are passed
    through the model. When they all get the same probabilities (within 1e-4: a model with a constant
    answer far away, like the RBF SVM's intercept) and fewer than 1% of the training clips do, that vector is
    recorded, and any input whose probabilities equal it (max abs difference < 1e-4) is flagged whatever its
    distance: its answer does not depend on it.

Everything is stored as plain JSON numbers (:meth:`Guard.to_dict`, in the model card); nothing is pickled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sertool.exceptions import ParameterError

__all__ = ["GUARD_FORMAT", "Guard", "GuardResult", "fit_guard", "pooled_input", "unit_guard"]

log = logging.getLogger(__name__)

#: Version of the guard's stored form (``model.json`` ``guard.format``).
GUARD_FORMAT = 1
#: Quantile of the held-in, out-of-sample distances that sets the threshold.
QUANTILE = 0.99
#: Largest dimension with a full (shrinkage) covariance; above it the diagonal one.
FULL_COVARIANCE_MAX_DIM = 128
#: Parts the training data is cut into for the out-of-sample held-in scores.
N_PARTS = 5
#: Fewest training rows a guard is fitted from.
MIN_ROWS = 10
#: Two probability vectors closer than this (max abs difference) count as the same answer.
CONSTANT_TOL = 1e-4
#: Per-dimension distance (standard deviations) of the far probes, and their number.
_FAR = 100.0
_N_PROBES = 4


def pooled_input(X: Any) -> np.ndarray:
    """The guard's view of a model input: ``(n, d)`` pooled vectors as they are, a list of ``(T_i, F)`` frame
    sequences as the mean over time of each (``(n, F)``)."""
    if isinstance(X, np.ndarray) and X.ndim == 2:
        return np.asarray(X, dtype=np.float64)
    rows = [np.asarray(x, dtype=np.float64) for x in X]
    if not rows:
        return np.zeros((0, 0))
    if rows[0].ndim == 1:
        return np.stack(rows)
    return np.stack([r.reshape(-1, r.shape[-1]).mean(axis=0) for r in rows])


@dataclass
class GuardResult:
    """The guard's verdict on a batch of inputs.

    Attributes
    ----------
    ood_score : ndarray of shape (n,)
        Distance from the training data divided by the threshold (above 1: out of distribution).
    in_distribution : ndarray of bool, shape (n,)
        ``ood_score <= 1`` and the model's answer is not its constant far-away answer.
    constant : ndarray of bool, shape (n,)
        The model's probabilities equal its answer far from all data (the input made no difference).
    """

    ood_score: np.ndarray
    in_distribution: np.ndarray
    constant: np.ndarray

    @property
    def n_flagged(self) -> int:
        """Inputs flagged (``in_distribution`` false)."""
        return int((~self.in_distribution).sum())


@dataclass
class Guard:
    """What a model needs to score how far an input lies from its training data (see the module docstring).

    Attributes
    ----------
    log_dims : ndarray of bool, shape (d,)
        Dimensions compared on a log scale.
    floor : ndarray, shape (d,)
        Values of log dimensions are clipped below to this (a thousandth of the training minimum).
    mean, scale : ndarray, shape (d,)
        Training mean and standard deviation after the log step (a constant dimension gets scale 1).
    precision : ndarray of shape (d, d), optional
        Inverse shrinkage covariance of the standardised data; None: diagonal (identity).
    threshold : float
        The held-in 99th-percentile distance.
    far_proba : ndarray, optional
        The model's probabilities far from the data when they are one constant vector, else None.
    info : dict
        How it was fitted (rows, calibration scheme, held-in flag rate, input kind).
    """

    log_dims: np.ndarray
    floor: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray | None
    threshold: float
    far_proba: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------- scoring
    def _standardise(self, X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise ParameterError(
                f"the guard scores {self.mean.shape[0]}-dim inputs, got shape {tuple(X.shape)}"
            )
        if self.log_dims.any():
            X[:, self.log_dims] = np.log(np.maximum(X[:, self.log_dims], self.floor[self.log_dims]))
        return (X - self.mean) / self.scale

    def distance(self, X: Any) -> np.ndarray:
        """Per-dimension Mahalanobis distance of each row of ``X`` (model input) from the training mean."""
        Z = self._standardise(pooled_input(X))
        if self.precision is None:
            d2 = np.einsum("ij,ij->i", Z, Z)
        else:
            d2 = np.einsum("ij,jk,ik->i", Z, self.precision, Z)
        out = np.sqrt(np.maximum(d2, 0.0) / Z.shape[1])
        out[~np.isfinite(out)] = np.inf
        return out

    def assess(self, X: Any, proba: np.ndarray | None = None) -> GuardResult:
        """``ood_score`` and ``in_distribution`` of each row of ``X``.

        Parameters
        ----------
        X : ndarray or list of ndarray
            The model's input (after any normalisation the model applies), as the estimator reads it.
        proba : ndarray of shape (n, n_classes), optional
            The model's probabilities for ``X`` (classes in card order): rows equal to the model's constant
            far-away answer are flagged too.
        """
        score = self.distance(X) / self.threshold
        constant = np.zeros(score.shape[0], dtype=bool)
        if self.far_proba is not None and proba is not None and len(proba):
            diff = np.abs(np.asarray(proba, dtype=np.float64) - self.far_proba[None, :]).max(axis=1)
            constant = diff < CONSTANT_TOL
        return GuardResult(score, (score <= 1.0) & ~constant, constant)

    # --------------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """The guard as plain JSON numbers (for ``model.json``)."""
        return {
            "format": GUARD_FORMAT,
            "score": "per-dimension Mahalanobis distance from the training mean / threshold; > 1 is out of "
            "distribution",
            "log_dims": [int(i) for i in np.flatnonzero(self.log_dims)],
            "floor": [float(v) for v in self.floor[self.log_dims]],
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "precision": None if self.precision is None else self.precision.tolist(),
            "threshold": float(self.threshold),
            "far_proba": None if self.far_proba is None else self.far_proba.tolist(),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Guard:
        """The guard stored by :meth:`to_dict`."""
        if data.get("format") != GUARD_FORMAT:
            raise ParameterError(f"guard format {data.get('format')!r}; this sertool reads {GUARD_FORMAT}")
        mean = np.asarray(data["mean"], dtype=np.float64)
        log_dims = np.zeros(mean.shape[0], dtype=bool)
        idx = np.asarray(data["log_dims"], dtype=int)
        log_dims[idx] = True
        floor = np.zeros(mean.shape[0])
        floor[idx] = np.asarray(data["floor"], dtype=np.float64)
        prec = data.get("precision")
        far = data.get("far_proba")
        return cls(
            log_dims=log_dims,
            floor=floor,
            mean=mean,
            scale=np.asarray(data["scale"], dtype=np.float64),
            precision=None if prec is None else np.asarray(prec, dtype=np.float64),
            threshold=float(data["threshold"]),
            far_proba=None if far is None else np.asarray(far, dtype=np.float64),
            info=dict(data.get("info", {})),
        )


# ----------------------------------------------------------------------------------------------- fitting
def _fit_space(X: np.ndarray) -> Guard:
    """A guard without threshold: the log step, the standardisation and the covariance of ``X``."""
    from sklearn.covariance import ledoit_wolf

    positive = (X > 0).all(axis=0)
    lo = np.where(positive, X.min(axis=0), 1.0)
    hi = np.where(positive, X.max(axis=0), 1.0)
    log_dims = positive & (hi >= 100.0 * lo)
    floor = np.where(log_dims, lo / 1000.0, 0.0)
    Y = X.copy()
    Y[:, log_dims] = np.log(X[:, log_dims])
    mean = Y.mean(axis=0)
    std = Y.std(axis=0)
    scale = np.where(std > 1e-8, std, 1.0)
    precision = None
    if X.shape[1] <= FULL_COVARIANCE_MAX_DIM:
        cov, _ = ledoit_wolf((Y - mean) / scale, assume_centered=True)
        precision = np.linalg.pinv(cov, hermitian=True)
    return Guard(log_dims, floor, mean, scale, precision, 1.0)


def _parts(n: int, groups: Sequence[str] | None, seed: int) -> tuple[list[np.ndarray], str]:
    """Index sets of the calibration parts: whole groups when there are at least :data:`N_PARTS`, else
    random rows."""
    rng = np.random.default_rng([seed, 2718])
    if groups is not None:
        g = np.asarray([str(v) for v in groups])
        uniq = np.unique(g)
        if len(uniq) >= N_PARTS:
            order = uniq[rng.permutation(len(uniq))]
            sets = [np.flatnonzero(np.isin(g, order[i::N_PARTS])) for i in range(N_PARTS)]
            return sets, f"{N_PARTS} parts of whole speakers ({len(uniq)} speakers)"
    perm = rng.permutation(n)
    return [np.sort(perm[i::N_PARTS]) for i in range(N_PARTS)], f"{N_PARTS} random parts of clips"


def _far_answer(
    guard: Guard, X: np.ndarray, predict: Callable[[Any], np.ndarray], seed: int
) -> tuple[np.ndarray | None, str]:
    """The model's constant answer far from the data, or None (with the reason)."""
    d = X.shape[1]
    rng = np.random.default_rng([seed, 3141])
    u = rng.standard_normal((_N_PROBES, d))
    u *= _FAR * np.sqrt(d) / np.linalg.norm(u, axis=1, keepdims=True)
    raw_mean, raw_std = X.mean(axis=0), X.std(axis=0)
    probes = (raw_mean + u * np.where(raw_std > 0, raw_std, 1.0)).astype(np.float32)
    try:
        p = np.asarray(predict(probes), dtype=np.float64)
    except Exception as exc:  # a model that cannot even answer far away: no constant to compare with
        return None, f"far probes failed: {type(exc).__name__}"
    if not np.isfinite(p).all() or np.abs(p - p[0]).max() >= CONSTANT_TOL:
        return None, "the model's answer far from the data varies"
    far = p.mean(axis=0)
    held = np.asarray(predict(X.astype(np.float32)), dtype=np.float64)
    share = float((np.abs(held - far).max(axis=1) < CONSTANT_TOL).mean())
    if share > 0.01:
        return None, f"{share:.1%} of training clips get the far-away answer too"
    return far, "constant far-away answer recorded"


def fit_guard(
    X: Any,
    *,
    groups: Sequence[str] | None = None,
    predict: Callable[[Any], np.ndarray] | None = None,
    seed: int = 0,
) -> Guard | None:
    """Fit a :class:`Guard` from the model's fit-time input.

    Parameters
    ----------
    X : ndarray or list of ndarray
        The rows the model was fitted on, as the estimator read them (after any group normalisation; no
        augmented copies): pooled vectors ``(n, d)`` or frame sequences (scored by their mean over time).
    groups : sequence of str, optional
        The speaker of each row: calibration parts are whole speakers (with at least 5 speakers).
    predict : callable, optional
        ``predict(X) -> probabilities`` for pooled input; enables the constant-output check.
    seed : int, optional
        Seeds the calibration parts and the far probes.

    Returns
    -------
    Guard or None
        None when there are fewer than :data:`MIN_ROWS` rows (logged).
    """
    frames = not (isinstance(X, np.ndarray) and X.ndim == 2)
    P = pooled_input(X)
    if P.shape[0] < MIN_ROWS:
        log.warning("no out-of-distribution guard: %d training rows (needs %d)", P.shape[0], MIN_ROWS)
        return None
    if groups is not None and len(groups) != P.shape[0]:
        raise ParameterError(f"groups has {len(groups)} entries for {P.shape[0]} rows")
    sets, scheme = _parts(P.shape[0], groups, seed)
    held = np.empty(P.shape[0])
    for idx in sets:
        rest = np.setdiff1d(np.arange(P.shape[0]), idx)
        held[idx] = _fit_space(P[rest]).distance(P[idx])
    finite = held[np.isfinite(held)]
    threshold = float(np.quantile(finite, QUANTILE)) if len(finite) else 1.0
    guard = _fit_space(P)
    guard.threshold = max(threshold, 1e-12)
    note = "frame-sequence model: no constant-output check" if frames else "no model answers given"
    if predict is not None and not frames:
        guard.far_proba, note = _far_answer(guard, P, predict, seed)
    guard.info = {
        "input": "mean over time of the frames" if frames else "pooled vectors",
        "n_rows": int(P.shape[0]),
        "dims": int(P.shape[1]),
        "log_dims": int(guard.log_dims.sum()),
        "covariance": "diagonal" if guard.precision is None else "Ledoit-Wolf shrinkage",
        "calibration": f"{QUANTILE:.0%} quantile of out-of-sample held-in distances, {scheme}",
        "held_in_flagged": round(float((held > guard.threshold).mean()), 4),
        "constant_output": note,
    }
    return guard


def unit_guard(ctx: Any, data: Any, fitted: Any) -> Guard | None:
    """The guard of one fitted unit: :func:`fit_guard` on the rows ``fit_unit`` fitted on (no augmented
    copies), calibrated on whole speakers, with the fitted model's answers for the constant-output check.

    ``sertool train`` stores it in ``model.json`` and the benchmark runner scores each test clip with it, from
    the same call, so a trained fold model flags exactly the clips the stored predictions flag.

    Parameters
    ----------
    ctx : sertool.bench.fitting.FitContext
    data : sertool.bench.fitting.ViewData
    fitted : sertool.bench.fitting.FittedUnit
    """
    from sertool.engine import predict_classes

    X = data.rows(fitted.fit_ids)
    predict = None
    if isinstance(X, np.ndarray):

        def predict(rows: Any) -> np.ndarray:
            if getattr(ctx, "regression", False):  # the predicted value is the model's answer
                return np.asarray(fitted.estimator.predict(rows), dtype=np.float64).reshape(-1, 1)
            return predict_classes(fitted.estimator, rows, ctx.classes)[0]

    groups = [ctx.speakers[u] for u in fitted.fit_ids]
    return fit_guard(X, groups=groups, predict=predict, seed=ctx.seed)
