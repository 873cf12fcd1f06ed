"""Post-hoc probability calibration: temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural
Networks").

A fitted classifier's probabilities ``p`` are turned into logits ``z = log p`` and rescaled by one positive
temperature ``T``: ``softmax(z / T)``. ``T`` is chosen to minimise the negative log-likelihood (NLL) of held-out
labels, on data the classifier was not fitted on (the fold's validation part; see
:func:`sertool.bench.fitting.fit_unit`). ``T > 1`` softens an over-confident model, ``T < 1`` sharpens an
under-confident one. Dividing every logit of a row by the same ``T > 0`` keeps their order, so the most probable
class - the predicted label, and with it every accuracy - never changes; only the confidence does.

:func:`fit_temperature` finds ``T``; :class:`TemperatureScaled` wraps a fitted scikit-learn-compatible
classifier with it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from sertool.exceptions import ParameterError

__all__ = [
    "CALIBRATION_METHODS",
    "PROBA_FLOOR",
    "TemperatureScaled",
    "check_calibrate",
    "fit_temperature",
    "scaled_proba",
    "temperature_nll",
]

log = logging.getLogger(__name__)

#: Calibration methods ``--calibrate`` accepts.
CALIBRATION_METHODS: tuple[str, ...] = ("temperature",)
#: Probabilities are clipped to at least this before their log is taken (a model that gives a class exactly 0,
#: a k-NN or a tree, still gets a finite logit).
PROBA_FLOOR = 1e-12
#: Search interval of ``T`` (the optimiser works on ``log T``).
TEMPERATURE_BOUNDS: tuple[float, float] = (1e-2, 1e2)


def check_calibrate(calibrate: str | None) -> str | None:
    """``calibrate`` checked: ``None`` or one of :data:`CALIBRATION_METHODS` (``"none"`` is ``None``).

    Raises
    ------
    ParameterError
        Any other value.
    """
    if calibrate is None or (isinstance(calibrate, str) and calibrate.strip().lower() in ("", "none")):
        return None
    if not isinstance(calibrate, str) or calibrate.strip().lower() not in CALIBRATION_METHODS:
        raise ParameterError(f"calibrate must be one of {CALIBRATION_METHODS} or none, got {calibrate!r}")
    return calibrate.strip().lower()


def _logits(scores: Any, logits: bool) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ParameterError(f"expected scores of shape (n_samples, n_classes >= 2), got {z.shape}")
    if logits:
        return z
    return np.log(np.clip(z, PROBA_FLOOR, 1.0))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def scaled_proba(scores: Any, temperature: float, *, logits: bool = False) -> np.ndarray:
    """``softmax(z / T)`` row-wise, with ``z = log(max(p, PROBA_FLOOR))`` (or ``z = scores`` when ``logits``).

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Class probabilities (or logits).
    temperature : float
        ``T > 0``.
    logits : bool, optional
        ``scores`` are logits, not probabilities.

    Returns
    -------
    ndarray of shape (n_samples, n_classes)
        Rows sum to 1.
    """
    if not temperature > 0:
        raise ParameterError(f"temperature must be > 0, got {temperature!r}")
    return np.exp(_log_softmax(_logits(scores, logits) / float(temperature)))


def temperature_nll(scores: Any, y: Any, temperature: float, *, logits: bool = False) -> float:
    """Mean negative log-likelihood of labels ``y`` (column indices) under ``softmax(z / T)``."""
    z = _logits(scores, logits)
    yy = np.asarray(y, dtype=int)
    return float(-_log_softmax(z / float(temperature))[np.arange(len(yy)), yy].mean())


def fit_temperature(
    scores: Any,
    y: Any,
    *,
    logits: bool = False,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> float:
    """The temperature ``T`` that minimises the NLL of ``y`` under ``softmax(log p / T)``.

    The NLL is convex in ``1 / T`` (a log-sum-exp of functions linear in it, minus a linear term), so it has one
    minimum on ``T > 0``; it is found by a bounded scalar search (:func:`scipy.optimize.minimize_scalar`) over
    ``log T`` in ``bounds``. Data on which the model makes no mistake with margin pull ``T`` towards the lower
    bound (sharper is always better there); that is the optimum the data support, not an error.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Probabilities (rows summing to 1; zeros are clipped to :data:`PROBA_FLOOR`) or, with ``logits``, logits
        of held-out samples: samples the model was not fitted on.
    y : array-like of shape (n_samples,)
        The true class of each row, as a column index of ``scores``.
    logits : bool, optional
        ``scores`` are logits.
    bounds : (float, float), optional
        Search interval of ``T``.

    Returns
    -------
    float
        ``T``.

    Raises
    ------
    ParameterError
        No samples, scores not 2-D, labels out of range or not one per row, or bad bounds.
    """
    from scipy.optimize import minimize_scalar

    z = _logits(scores, logits)
    yy = np.asarray(y)
    if z.shape[0] == 0:
        raise ParameterError("fit_temperature needs at least one held-out sample")
    if yy.shape != (z.shape[0],):
        raise ParameterError(f"y must give one label per row: {yy.shape} labels for {z.shape[0]} rows")
    if not np.issubdtype(yy.dtype, np.integer) or yy.min() < 0 or yy.max() >= z.shape[1]:
        raise ParameterError(f"y must hold column indices in [0, {z.shape[1]}), got {np.unique(yy)[:10]}")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ParameterError(f"bounds must satisfy 0 < low < high, got {bounds!r}")
    rows = np.arange(len(yy))

    def nll(log_t: float) -> float:
        return float(-_log_softmax(z * np.exp(-log_t))[rows, yy].mean())

    res = minimize_scalar(nll, bounds=(np.log(lo), np.log(hi)), method="bounded", options={"xatol": 1e-7})
    temperature = float(np.exp(res.x))
    log.debug("temperature %.4f: NLL %.4f -> %.4f on %d samples", temperature, nll(0.0), res.fun, len(yy))
    return temperature


class TemperatureScaled(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose probabilities are rescaled by one temperature.

    ``predict_proba(X) = softmax(log(max(p, PROBA_FLOOR)) / temperature)`` with ``p`` the wrapped estimator's
    probabilities; ``predict`` is the wrapped estimator's most probable class, which the temperature never
    changes. ``classes_`` are the wrapped estimator's.

    Parameters
    ----------
    estimator : classifier
        A fitted classifier with ``predict_proba`` and ``classes_``.
    temperature : float, optional
        ``T > 0``; :meth:`fit` sets it from held-out data (the estimator itself is never refitted).
    """

    def __init__(self, estimator: Any, temperature: float = 1.0) -> None:
        self.estimator = estimator
        self.temperature = temperature

    @property
    def classes_(self) -> np.ndarray:
        """The wrapped estimator's classes (column order of :meth:`predict_proba`)."""
        return self.estimator.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self.estimator, "classes_")

    def fit(self, X: Any, y: Any) -> TemperatureScaled:
        """Set :attr:`temperature` from held-out samples ``X`` with labels ``y`` (labels the estimator knows:
        values of its ``classes_``); the wrapped estimator is left as it is.

        Raises
        ------
        ParameterError
            A label the wrapped estimator never saw (its probability column does not exist).
        """
        classes = list(np.asarray(self.classes_).tolist())
        pos = {c: i for i, c in enumerate(classes)}
        labels = np.asarray(y).tolist()
        unknown = sorted({lab for lab in labels if lab not in pos}, key=str)
        if unknown:
            raise ParameterError(f"labels {unknown} are not classes of the wrapped estimator {classes}")
        self.temperature = fit_temperature(self.estimator.predict_proba(X), [pos[lab] for lab in labels])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Temperature-scaled class probabilities, columns in :attr:`classes_` order."""
        return scaled_proba(self.estimator.predict_proba(X), self.temperature)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of the wrapped estimator's probabilities (unchanged by the temperature)."""
        proba = np.asarray(self.estimator.predict_proba(X))
        return np.asarray(self.classes_)[proba.argmax(axis=1)]
