"""Metrics and statistics for SER benchmarks: WA, UA, macro-F1, per-class recall, confusion, CIs, tests.

Conventions (those of EmoBox and most SER papers):

- **WA** (weighted accuracy) is plain accuracy: every utterance counts once.
- **UA** (unweighted accuracy) is balanced accuracy: the mean of the per-class recalls over the classes that
  occur in ``y_true`` (identical to :func:`sklearn.metrics.balanced_accuracy_score`).
- **macro-F1** averages the per-class F1 over the classes that occur in ``y_true`` or ``y_pred``.

Statistics:

- :func:`bootstrap_ua_ci` gives a percentile confidence interval of UA. With ``groups`` (speakers) it is a
  *cluster* bootstrap that resamples whole speakers with all their clips; clips of one speaker are not
  independent, so resampling clips gives intervals that are too narrow.
- :func:`paired_test` is a paired permutation (sign-flip) test of the UA difference of two systems on the
  same utterances; it swaps the two systems' predictions per speaker (or per clip).
- :func:`correct_pvalues` corrects a family of p-values for multiple comparisons (Holm by default).

Calibration (how far the class probabilities can be taken at their word), from a probability matrix whose
columns are ``classes``:

- :func:`expected_calibration_error` (ECE): equal-width bins of the top probability (15 by default), the sum
  over bins of ``|bin| / n * |accuracy(bin) - mean confidence(bin)|``; :func:`reliability_bins` gives the
  per-bin table behind it (the reliability diagram).
- :func:`brier_score`: the multi-class Brier score, mean over clips of ``sum_k (p_k - 1[y = k])^2``, in
  [0, 2].
- :func:`negative_log_likelihood`: mean ``-log p(true class)``, with ``p`` clipped below at ``1e-12``.
- :func:`ua_by_group`: UA within each group (speaker, gender): the slices of a board.

Both resampling procedures are vectorised through per-group, per-class count tables, so 10 000 resamples of
a few thousand clips take milliseconds, and both are deterministic for a given ``seed``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from sertool.exceptions import ParameterError

__all__ = [
    "aggregate_folds",
    "bootstrap_ua_ci",
    "brier_score",
    "confusion",
    "correct_pvalues",
    "ece_sampling_floor",
    "expected_calibration_error",
    "macro_f1",
    "negative_log_likelihood",
    "paired_test",
    "per_class_recall",
    "reliability_bins",
    "score_all",
    "ua_by_group",
    "unweighted_accuracy",
    "weighted_accuracy",
]

#: Metrics :func:`aggregate_folds` summarises by default.
FOLD_METRICS: tuple[str, ...] = ("wa", "ua", "macro_f1")

#: Number of equal-width confidence bins of :func:`expected_calibration_error` (that of Guo et al., 2017).
ECE_BINS = 15
#: Smallest probability :func:`negative_log_likelihood` takes the log of.
NLL_EPS = 1e-12

#: Largest number of (resample x group) cells held in memory at once by the resampling procedures.
_CHUNK_CELLS = 2_000_000


# --------------------------------------------------------------------------------------------- validation


def _labels_1d(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ParameterError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_pair(y_true: Any, y_pred: Any, pred_name: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    """Validate two label vectors: 1-D, same non-zero length."""
    t = _labels_1d("y_true", y_true)
    p = _labels_1d(pred_name, y_pred)
    if t.size == 0:
        raise ParameterError("y_true is empty: no utterances to score")
    if t.shape != p.shape:
        raise ParameterError(f"y_true has {t.size} labels but {pred_name} has {p.size}")
    return t, p


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Any] | None) -> np.ndarray:
    """The class list: ``labels`` (checked to cover both vectors) or the sorted union of both vectors."""
    if labels is None:
        return np.unique(np.concatenate([y_true, y_pred]))
    lab = _labels_1d("labels", labels)
    if lab.size == 0:
        raise ParameterError("labels is empty")
    if np.unique(lab).size != lab.size:
        raise ParameterError(f"labels has duplicates: {lab.tolist()}")
    for name, vec in (("y_true", y_true), ("y_pred", y_pred)):
        extra = np.setdiff1d(np.unique(vec), lab)
        if extra.size:
            raise ParameterError(f"{name} contains labels not in labels {lab.tolist()}: {extra.tolist()}")
    return lab


def _py(value: Any) -> Any:
    """A numpy scalar as the matching Python scalar (for JSON-friendly dict keys and values)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_groups(groups: Any, n: int) -> np.ndarray:
    g = _labels_1d("groups", groups)
    if g.size != n:
        raise ParameterError(f"groups has {g.size} entries but there are {n} utterances")
    return g


# ----------------------------------------------------------------------------------------- point metrics


def weighted_accuracy(y_true: Any, y_pred: Any) -> float:
    """Weighted accuracy (WA): the fraction of utterances classified correctly (plain accuracy).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels (strings or integers).

    Returns
    -------
    float
        In [0, 1].
    """
    t, p = _check_pair(y_true, y_pred)
    return float(accuracy_score(t, p))


def unweighted_accuracy(y_true: Any, y_pred: Any) -> float:
    """Unweighted accuracy (UA): the mean per-class recall over the classes present in ``y_true``.

    Identical to :func:`sklearn.metrics.balanced_accuracy_score`; chance level is ``1 / n_classes`` whatever
    the class balance.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.

    Returns
    -------
    float
        In [0, 1].
    """
    t, p = _check_pair(y_true, y_pred)
    return float(recall_score(t, p, labels=np.unique(t), average="macro", zero_division=0))


def macro_f1(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> float:
    """Macro-averaged F1 over the classes that occur in ``y_true`` or ``y_pred``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.
    labels : sequence, optional
        The class list (e.g. the label scheme's classes). Classes that occur in neither vector are left out
        of the average (their F1 is undefined), so passing the full scheme does not change the value; labels
        outside the list raise :class:`~sertool.exceptions.ParameterError`.

    Returns
    -------
    float
        In [0, 1].
    """
    t, p = _check_pair(y_true, y_pred)
    lab = _check_labels(t, p, labels)
    return float(f1_score(t, p, labels=lab, average="macro", zero_division=np.nan))


def per_class_recall(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> dict[Any, float]:
    """Recall of each class.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.
    labels : sequence, optional
        Classes to report, in this order (default: the sorted union of both vectors). A class with no true
        utterance has recall ``nan``.

    Returns
    -------
    dict
        ``{label: recall}`` in the order of ``labels``; numpy scalars are converted to Python ones.
    """
    t, p = _check_pair(y_true, y_pred)
    lab = _check_labels(t, p, labels)
    rec = recall_score(t, p, labels=lab, average=None, zero_division=np.nan)
    return {_py(c): float(r) for c, r in zip(lab, rec, strict=True)}


def confusion(
    y_true: Any,
    y_pred: Any,
    labels: Sequence[Any] | None = None,
    *,
    normalize: Literal["true"] | None = None,
) -> np.ndarray:
    """Confusion matrix; rows are true classes, columns predicted classes, both in ``labels`` order.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.
    labels : sequence, optional
        Class order (default: the sorted union of both vectors).
    normalize : {None, "true"}
        ``None``: counts (int64). ``"true"``: each row divided by its total, so row ``i`` holds the
        distribution of predictions for class ``i`` (the diagonal is the per-class recall); a class with no
        true utterance gets a row of ``nan`` rather than a misleading row of zeros.

    Returns
    -------
    ndarray of shape (n_classes, n_classes)
    """
    if normalize not in (None, "true"):
        raise ParameterError(f"normalize must be None or 'true', got {normalize!r}")
    t, p = _check_pair(y_true, y_pred)
    lab = _check_labels(t, p, labels)
    cm = confusion_matrix(t, p, labels=lab).astype(np.int64)
    if normalize is None:
        return cm
    support = cm.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, cm / support, np.nan)


def score_all(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """Every point metric of one evaluation (one fold), JSON-serialisable.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.
    labels : sequence, optional
        Class order for ``per_class_recall`` and ``confusion`` (default: sorted union of both vectors).

    Returns
    -------
    dict
        ``n`` (int), ``wa``, ``ua``, ``macro_f1`` (floats), ``labels`` (list), ``per_class_recall``
        (``{label: recall}``, ``nan`` for classes absent from ``y_true``) and ``confusion`` (counts as nested
        lists, rows true / columns predicted, in ``labels`` order).
    """
    t, p = _check_pair(y_true, y_pred)
    lab = _check_labels(t, p, labels)
    return {
        "n": int(t.size),
        "wa": weighted_accuracy(t, p),
        "ua": unweighted_accuracy(t, p),
        "macro_f1": macro_f1(t, p, lab),
        "labels": [_py(c) for c in lab],
        "per_class_recall": per_class_recall(t, p, lab),
        "confusion": confusion(t, p, lab).tolist(),
    }


def aggregate_folds(
    folds: Sequence[Mapping[str, Any]],
    *,
    metrics: Sequence[str] = FOLD_METRICS,
    ddof: int = 1,
) -> dict[str, Any]:
    """Mean and standard deviation of fold-level metrics.

    The standard deviation is the *sample* standard deviation (``ddof=1``) by default: the folds are a sample
    of the ways the speakers could have been grouped, and ``ddof=1`` is what "mean ± sd over k folds" means
    in most papers. It is ``nan`` for a single fold (there is no spread to estimate). Pass ``ddof=0`` for the
    population formula (HEAR's ``np.std``) when comparing with numbers computed that way.

    Parameters
    ----------
    folds : sequence of mappings
        One dict per fold, e.g. from :func:`score_all`; each must hold every name in ``metrics`` and may hold
        ``n`` (number of test utterances).
    metrics : sequence of str
        Keys to summarise (default ``("wa", "ua", "macro_f1")``).
    ddof : int
        Delta degrees of freedom of the standard deviation.

    Returns
    -------
    dict
        ``n_folds``, ``<metric>_mean`` and ``<metric>_std`` for each metric, and ``n`` (total test
        utterances) when every fold has ``n``. Flat keys, ready to be a leaderboard row.
    """
    if len(folds) == 0:
        raise ParameterError("aggregate_folds needs at least one fold, got none")
    if ddof < 0:
        raise ParameterError(f"ddof must be >= 0, got {ddof}")
    out: dict[str, Any] = {"n_folds": len(folds)}
    for name in metrics:
        values = []
        for i, fold in enumerate(folds):
            if name not in fold:
                raise ParameterError(f"fold {i} has no metric {name!r}; it has {sorted(fold)}")
            values.append(float(fold[name]))
        arr = np.asarray(values)
        out[f"{name}_mean"] = float(arr.mean())
        out[f"{name}_std"] = float(arr.std(ddof=ddof)) if arr.size > ddof else math.nan
    if all("n" in fold for fold in folds):
        out["n"] = int(sum(int(fold["n"]) for fold in folds))
    return out


# ----------------------------------------------------------------------------------------- calibration


def _check_proba(y_true: Any, proba: Any, classes: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a probability matrix against its labels.

    Returns
    -------
    (P, idx) : tuple of ndarray
        ``P`` as float64 of shape (n, K); ``idx`` the column of each clip's true class, ``-1`` for a true
        label that is not among ``classes`` (the model gave it probability 0).
    """
    t = _labels_1d("y_true", y_true)
    if t.size == 0:
        raise ParameterError("y_true is empty: no utterances to score")
    P = np.asarray(proba, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] == 0:
        raise ParameterError(f"proba must have shape (n, n_classes), got {P.shape}")
    if P.shape[0] != t.size:
        raise ParameterError(f"y_true has {t.size} labels but proba has {P.shape[0]} rows")
    if not np.isfinite(P).all() or (P < 0).any():
        raise ParameterError("proba must hold finite, non-negative probabilities")
    sums = P.sum(axis=1)
    if np.abs(sums - 1.0).max() > 1e-3:
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise ParameterError(f"proba rows must sum to 1; row {bad} sums to {sums[bad]:.6g}")
    if classes is None:
        if not np.issubdtype(t.dtype, np.integer):
            raise ParameterError("without classes, y_true must hold column indices (integers)")
        idx = t.astype(np.int64)
        if idx.min() < 0 or idx.max() >= P.shape[1]:
            raise ParameterError(
                f"y_true indices must lie in [0, {P.shape[1]}), got {idx.min()}..{idx.max()}"
            )
        return P, idx
    lab = _labels_1d("classes", classes)
    if lab.size != P.shape[1]:
        raise ParameterError(f"classes names {lab.size} columns but proba has {P.shape[1]}")
    if np.unique(lab).size != lab.size:
        raise ParameterError(f"classes has duplicates: {lab.tolist()}")
    column = {_py(c): j for j, c in enumerate(lab)}
    return P, np.array([column.get(_py(y), -1) for y in t], dtype=np.int64)


def reliability_bins(
    y_true: Any,
    proba: Any,
    classes: Sequence[Any] | None = None,
    *,
    y_pred: Any = None,
    n_bins: int = ECE_BINS,
) -> dict[str, np.ndarray]:
    """The reliability table: per equal-width bin of the top probability, its count, mean confidence and
    accuracy.

    Bin ``b`` holds the clips whose top probability ``c`` satisfies ``b / n_bins < c <= (b + 1) / n_bins``
    (the first bin also takes ``c = 0``).

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True labels (column indices when ``classes`` is None).
    proba : array-like of shape (n, K)
        Class probabilities, rows summing to 1, columns in ``classes`` order.
    classes : sequence, optional
        The label of each column.
    y_pred : array-like of shape (n,), optional
        The predicted labels whose correctness is binned (default: the column of the top probability). Pass
        the stored prediction when ties of the top probability were broken another way.
    n_bins : int
        Number of bins of [0, 1].

    Returns
    -------
    dict of str to ndarray
        ``lower``, ``upper`` (bin edges), ``count`` (int), ``confidence`` and ``accuracy`` (means over the
        bin; ``nan`` for an empty bin), each of length ``n_bins``.
    """
    n_bins = _check_seed_count("n_bins", n_bins)
    P, idx = _check_proba(y_true, proba, classes)
    conf = P.max(axis=1)
    if y_pred is None:
        correct = P.argmax(axis=1) == idx
    else:
        t = _labels_1d("y_true", y_true)
        _, p = _check_pair(t, y_pred)
        correct = p == t
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # the first inner edge >= c: c in (edges[b], edges[b + 1]] lands in bin b
    b = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(b, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(b, weights=correct.astype(np.float64), minlength=n_bins) / count
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "count": count.astype(np.int64),
        "confidence": np.where(count > 0, confidence, np.nan),
        "accuracy": np.where(count > 0, accuracy, np.nan),
    }


def expected_calibration_error(
    y_true: Any,
    proba: Any,
    classes: Sequence[Any] | None = None,
    *,
    y_pred: Any = None,
    n_bins: int = ECE_BINS,
) -> float:
    """Expected calibration error: ``sum_b |b| / n * |accuracy(b) - mean confidence(b)|``.

    The bins are equal-width bins of the top probability (:func:`reliability_bins`); 0 means that, among the
    clips given confidence ``c``, a fraction ``c`` is classified correctly.

    Parameters
    ----------
    y_true, proba, classes, y_pred, n_bins
        As in :func:`reliability_bins` (default 15 bins).

    Returns
    -------
    float
        In [0, 1].
    """
    table = reliability_bins(y_true, proba, classes, y_pred=y_pred, n_bins=n_bins)
    count = table["count"]
    used = count > 0
    gap = np.abs(table["accuracy"][used] - table["confidence"][used])
    return float((count[used] * gap).sum() / count.sum())


def ece_sampling_floor(
    proba: Any,
    *,
    n_bins: int = ECE_BINS,
    n_draws: int = 200,
    seed: int = 0,
) -> float:
    """The ECE a perfectly calibrated model with these probabilities would show on this many clips.

    ECE is biased upward on small test sets: even when every clip's label is drawn from the model's own
    probabilities (so the model is calibrated by construction), the accuracy of a bin of a few dozen clips
    scatters around its mean confidence. This floor is the mean ECE over ``n_draws`` such draws; a measured
    ECE near it cannot be told apart from a calibrated model at this sample size.

    Parameters
    ----------
    proba : array-like of shape (n, K)
        Class probabilities, rows summing to 1.
    n_bins : int
        Number of confidence bins (as :func:`expected_calibration_error`).
    n_draws : int
        Number of simulated label draws.
    seed : int
        Seed of the draws.

    Returns
    -------
    float
        Mean simulated ECE, in [0, 1].
    """
    P = np.asarray(proba, dtype=np.float64)
    n_draws = _check_seed_count("n_draws", n_draws)
    _check_proba(np.zeros(P.shape[0] if P.ndim == 2 else 0, dtype=np.int64), P, None)
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(P / P.sum(axis=1, keepdims=True), axis=1)
    total = 0.0
    for _ in range(n_draws):
        u = rng.random((P.shape[0], 1))
        labels = np.minimum((cumulative < u).sum(axis=1), P.shape[1] - 1)
        total += expected_calibration_error(labels, P, n_bins=n_bins)
    return total / n_draws


def brier_score(y_true: Any, proba: Any, classes: Sequence[Any] | None = None) -> float:
    """Multi-class Brier score: the mean over clips of ``sum_k (p_k - 1[y = k])^2``.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True labels (column indices when ``classes`` is None).
    proba : array-like of shape (n, K)
        Class probabilities, columns in ``classes`` order.
    classes : sequence, optional
        The label of each column. A true label outside it adds 1 (its indicator, with probability 0).

    Returns
    -------
    float
        In [0, 2]; 0 for certain, correct predictions.
    """
    P, idx = _check_proba(y_true, proba, classes)
    onehot = np.zeros_like(P)
    known = idx >= 0
    onehot[np.flatnonzero(known), idx[known]] = 1.0
    per_clip = ((P - onehot) ** 2).sum(axis=1) + (~known)
    return float(per_clip.mean())


def negative_log_likelihood(
    y_true: Any, proba: Any, classes: Sequence[Any] | None = None, *, eps: float = NLL_EPS
) -> float:
    """Mean negative log-likelihood of the true class, ``mean(-log max(p_true, eps))`` (natural log).

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True labels (column indices when ``classes`` is None).
    proba : array-like of shape (n, K)
        Class probabilities, columns in ``classes`` order.
    classes : sequence, optional
        The label of each column; a true label outside it has probability 0 (so ``-log eps``).
    eps : float
        Lower clip of ``p_true`` (default ``1e-12``: one confidently wrong clip costs ``27.6``).

    Returns
    -------
    float
        >= 0.
    """
    if not 0.0 < eps < 1.0:
        raise ParameterError(f"eps must be in (0, 1), got {eps!r}")
    P, idx = _check_proba(y_true, proba, classes)
    p_true = np.where(idx >= 0, P[np.arange(idx.size), np.maximum(idx, 0)], 0.0)
    return float(-np.log(np.maximum(p_true, eps)).mean())


def ua_by_group(y_true: Any, y_pred: Any, groups: Any) -> dict[Any, float]:
    """UA within each group (speaker, gender, corpus), over the classes that group has in ``y_true``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.
    groups : array-like of shape (n,)
        The group of each utterance.

    Returns
    -------
    dict
        ``{group: UA}``, groups sorted; numpy scalars converted to Python ones.
    """
    t, p = _check_pair(y_true, y_pred)
    g = _check_groups(groups, t.size)
    names = np.unique(g)
    totals, (correct,) = _count_tables(t, [p], g)  # rows: groups in np.unique order
    ua = _ua_from_counts(totals, correct)
    return {_py(name): float(u) for name, u in zip(names, ua, strict=True)}


# ------------------------------------------------------------------------------------------- resampling


def _count_tables(
    y_true: np.ndarray, preds: Sequence[np.ndarray], groups: np.ndarray | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-group, per-class tables: true counts ``(G, C)`` and, for each prediction vector, correct counts.

    Classes are those present in ``y_true``; without ``groups`` every clip is its own group.
    """
    _, c_idx = np.unique(y_true, return_inverse=True)
    n_classes = int(c_idx.max()) + 1
    if groups is None:
        g_idx = np.arange(y_true.size)
    else:
        _, g_idx = np.unique(groups, return_inverse=True)
    n_groups = int(g_idx.max()) + 1
    cell = g_idx * n_classes + c_idx
    size = n_groups * n_classes
    shape = (n_groups, n_classes)
    totals = np.bincount(cell, minlength=size).reshape(shape).astype(np.float64)
    corrects = [np.bincount(cell, weights=(p == y_true).astype(np.float64), minlength=size) for p in preds]
    return totals, [c.reshape(shape) for c in corrects]


def _ua_from_counts(totals: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """UA of each row of ``(B, C)`` count tables: mean recall over classes with a non-zero total."""
    present = totals > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, correct / np.where(present, totals, 1.0), 0.0)
    return recall.sum(axis=1) / present.sum(axis=1)


def _check_seed_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def bootstrap_ua_ci(
    y_true: Any,
    y_pred: Any,
    groups: Any = None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of UA.

    With ``groups`` (speaker ids) this is a cluster bootstrap: each resample draws as many speakers as
    there are, with replacement, and keeps all clips of every drawn speaker. Without ``groups`` it resamples
    clips. Classes missing from a resample are left out of that resample's UA (as UA itself does).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.
    groups : array-like of shape (n,), optional
        Cluster (speaker) of each utterance.
    n_boot : int
        Number of bootstrap resamples.
    alpha : float
        ``1 - alpha`` is the coverage (default 0.05: a 95 % interval).
    seed : int
        Seed of the resampling (same inputs and seed, same interval).

    Returns
    -------
    (low, high) : tuple of float
        The ``alpha/2`` and ``1 - alpha/2`` quantiles of the bootstrap UA distribution.
    """
    t, p = _check_pair(y_true, y_pred)
    g = None if groups is None else _check_groups(groups, t.size)
    n_boot = _check_seed_count("n_boot", n_boot)
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"alpha must be in (0, 1), got {alpha!r}")
    totals, (correct,) = _count_tables(t, [p], g)
    n_groups = totals.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n_groups)
    uas = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups))
        flat = (draws + (np.arange(b) * n_groups)[:, None]).ravel()
        weights = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups).astype(np.float64)
        uas.append(_ua_from_counts(weights @ totals, weights @ correct))
    dist = np.concatenate(uas)
    low, high = np.quantile(dist, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def paired_test(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    groups: Any = None,
    *,
    n_permutations: int = 10000,
    seed: int = 0,
) -> float:
    """Two-sided paired permutation test of ``UA(pred_a) - UA(pred_b)`` on the same utterances.

    Under the null hypothesis the two systems are exchangeable, so swapping their predictions for all clips
    of a speaker (``groups``) or for single clips (no ``groups``) leaves the distribution of the difference
    unchanged. Because the class totals do not change under a swap, the UA difference is a sum of
    per-group contributions ``e_g`` and a swap flips the sign of ``e_g``: the test is a sign-flip test on
    those contributions. Groups where the systems agree contribute nothing and are left out.

    When ``2**(groups that differ) <= n_permutations`` every sign pattern is enumerated (an exact test);
    otherwise ``n_permutations`` random patterns are drawn and ``p = (1 + hits) / (1 + n_permutations)``,
    which is never 0.

    Parameters
    ----------
    y_true, pred_a, pred_b : array-like of shape (n,)
        True labels and the two systems' predictions.
    groups : array-like of shape (n,), optional
        Speaker of each utterance; swap whole speakers (recommended: clips of a speaker are correlated).
    n_permutations : int
        Number of random sign patterns (upper bound on the enumeration size of the exact test).
    seed : int
        Seed of the random patterns.

    Returns
    -------
    float
        Two-sided p-value in (0, 1]; 1.0 when the systems' predictions are identical.
    """
    t, a = _check_pair(y_true, pred_a, "pred_a")
    _, b = _check_pair(t, pred_b, "pred_b")
    g = None if groups is None else _check_groups(groups, t.size)
    n_permutations = _check_seed_count("n_permutations", n_permutations)
    totals, (corr_a, corr_b) = _count_tables(t, [a, b], g)
    class_totals = totals.sum(axis=0)
    n_classes = class_totals.size
    contrib = ((corr_a - corr_b) / class_totals).sum(axis=1) / n_classes
    contrib = contrib[contrib != 0.0]
    if contrib.size == 0:
        return 1.0
    observed = abs(contrib.sum())
    tol = 1e-12 * max(1.0, float(np.abs(contrib).sum()))
    n_eff = contrib.size
    if 2**n_eff <= n_permutations:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n_eff)))
        hits = int(np.count_nonzero(np.abs(signs @ contrib) >= observed - tol))
        return hits / signs.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n_eff)
    hits = 0
    for start in range(0, n_permutations, chunk):
        m = min(chunk, n_permutations - start)
        signs = rng.choice(np.array([1.0, -1.0]), size=(m, n_eff))
        hits += int(np.count_nonzero(np.abs(signs @ contrib) >= observed - tol))
    return (1 + hits) / (1 + n_permutations)


def correct_pvalues(pvals: Sequence[float], method: str = "holm") -> list[float]:
    """Adjust a family of p-values for multiple comparisons.

    Parameters
    ----------
    pvals : sequence of float
        Raw p-values, each in [0, 1].
    method : str
        Any method of :func:`statsmodels.stats.multitest.multipletests`: ``"holm"`` (default; controls the
        family-wise error rate without assumptions), ``"bonferroni"``, ``"fdr_bh"`` (Benjamini-Hochberg), ...

    Returns
    -------
    list of float
        Adjusted p-values, in the input order.
    """
    from statsmodels.stats.multitest import multipletests

    arr = np.asarray(pvals, dtype=np.float64)
    if arr.ndim != 1:
        raise ParameterError(f"pvals must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return []
    if not np.all((arr >= 0.0) & (arr <= 1.0)):
        raise ParameterError(f"p-values must lie in [0, 1] (no nan), got {arr.tolist()}")
    try:
        adjusted = multipletests(arr, method=method)[1]
    except ValueError as exc:
        raise ParameterError(f"unknown p-value correction method {method!r}: {exc}") from exc
    return [float(x) for x in adjusted]
