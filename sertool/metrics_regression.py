"""Metrics and statistics for dimensional SER (arousal / valence / dominance regression).

The headline metric of dimensional SER (AVEC, MSP-Podcast, Odyssey challenges) is Lin's **concordance
correlation coefficient** (CCC),

.. math::

    \\mathrm{CCC} = \\frac{2\\,\\mathrm{cov}(t, p)}{\\sigma_t^2 + \\sigma_p^2 + (\\mu_t - \\mu_p)^2},

with population moments (``ddof=0``). Unlike Pearson's r it penalises a shift or a rescaling of the
predictions: ``p = t + 1`` has r = 1 but CCC < 1. CCC is invariant under the *same* affine map
``x -> a x + b`` (``a > 0``) applied to both sides, so it does not matter whether it is computed on the
raw or on a jointly standardised scale.

Conventions of this module:

- Inputs are 1-D, of equal non-zero length and finite; anything else raises
  :class:`~sertool.exceptions.ParameterError`.
- The denominator of CCC is zero only when both sides are constant *and equal* (the prediction reproduces a
  constant target exactly): CCC is then 1.0 (perfect agreement, as :func:`sklearn.metrics.r2_score` scores
  a perfect constant prediction). One constant side alone gives a covariance of 0, so CCC = 0; constancy
  is tested exactly (``ptp == 0``), so rounding in the mean of a constant array cannot produce spurious
  values.
- Pearson's r is NaN when either side is constant.

Statistics (both vectorised through per-group sufficient statistics ``n, sum t, sum p, sum t^2, sum p^2,
sum t p``, so 1000 resamples of a few thousand clips take milliseconds; both deterministic for a seed):

- :func:`ccc_speaker_ci`: percentile cluster bootstrap interval of the pooled CCC, resampling whole speakers
  with replacement (clips of one speaker are not independent; resampling clips gives intervals that are too
  narrow).
- :func:`paired_ccc_test`: approximate-randomisation (Noreen) test of ``CCC(a) - CCC(b)`` on the same clips,
  swapping the two systems' predictions per clip or per speaker.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sertool.exceptions import ParameterError

__all__ = ["ccc", "ccc_speaker_ci", "paired_ccc_test", "regression_scores"]

#: Largest number of (resample x group) cells held in memory at once by the resampling procedures.
_CHUNK_CELLS = 2_000_000


# --------------------------------------------------------------------------------------------- validation


def _values_1d(name: str, values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise ParameterError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ParameterError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name} contains NaN or infinite values")
    return arr


def _check_pair(y_true: Any, y_pred: Any, pred_name: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    t = _values_1d("y_true", y_true)
    p = _values_1d(pred_name, y_pred)
    if t.shape != p.shape:
        raise ParameterError(f"y_true has shape {t.shape} but {pred_name} has shape {p.shape}")
    return t, p


def _check_groups(name: str, groups: Any, n: int) -> np.ndarray:
    """Integer codes ``0..G-1`` of ``groups`` (any hashable labels), shape ``(n,)``."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.size != n:
        raise ParameterError(f"{name} must have shape ({n},) to match y_true, got {g.shape}")
    if g.dtype.kind == "f" and not np.all(np.isfinite(g)):
        raise ParameterError(f"{name} contains NaN or infinite values")
    try:
        _, codes = np.unique(g, return_inverse=True)
    except TypeError as exc:  # mixed, unorderable types
        raise ParameterError(f"{name}: labels cannot be compared: {exc}") from None
    return codes.ravel().astype(np.intp)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _is_constant(x: np.ndarray) -> bool:
    return bool(x[0] == x[-1] and np.ptp(x) == 0)


# ------------------------------------------------------------------------------------------------ metrics


def ccc(y_true: Any, y_pred: Any) -> float:
    """Lin's concordance correlation coefficient of ``y_pred`` with ``y_true``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Finite numbers, ``n >= 1``.

    Returns
    -------
    float
        In [-1, 1]. 1.0 when both sides are the same constant (see the module notes); 0.0 when exactly one
        side is constant.

    Raises
    ------
    ParameterError
        Shapes differ, an input is empty or not 1-D, or contains NaN / infinity.
    """
    t, p = _check_pair(y_true, y_pred)
    const_t, const_p = _is_constant(t), _is_constant(p)
    mt = float(t[0]) if const_t else float(t.mean())
    mp = float(p[0]) if const_p else float(p.mean())
    dt, dp = t - mt, p - mp
    var_t = 0.0 if const_t else float(np.mean(dt * dt))
    var_p = 0.0 if const_p else float(np.mean(dp * dp))
    cov = 0.0 if (const_t or const_p) else float(np.mean(dt * dp))
    den = var_t + var_p + (mt - mp) ** 2
    if den == 0.0:  # both constant and equal: the prediction reproduces the target exactly
        return 1.0
    return float(np.clip(2.0 * cov / den, -1.0, 1.0))


def _pearson(t: np.ndarray, p: np.ndarray) -> float:
    if _is_constant(t) or _is_constant(p):
        return math.nan
    dt, dp = t - t.mean(), p - p.mean()
    den = math.sqrt(float(np.dot(dt, dt)) * float(np.dot(dp, dp)))
    if den == 0.0:
        return math.nan
    return float(np.clip(float(np.dot(dt, dp)) / den, -1.0, 1.0))


def regression_scores(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """Every regression score of one prediction vector.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)

    Returns
    -------
    dict
        ``ccc`` (:func:`ccc`), ``pearson`` (NaN when a side is constant), ``mae``, ``rmse``, ``n`` (int),
        ``mean_true``, ``mean_pred``, ``std_true``, ``std_pred`` (population standard deviations, ``ddof=0``,
        the moments CCC uses). All values but ``n`` are Python floats.
    """
    t, p = _check_pair(y_true, y_pred)
    err = p - t
    return {
        "ccc": ccc(t, p),
        "pearson": _pearson(t, p),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "n": int(t.size),
        "mean_true": float(t.mean()),
        "mean_pred": float(p.mean()),
        "std_true": float(t.std()),
        "std_pred": float(p.std()),
    }


# ---------------------------------------------------------------------------------- sufficient statistics


def _ccc_from_sums(sums: np.ndarray) -> np.ndarray:
    """CCC of each row of ``(..., 6)`` sums ``[n, st, sp, stt, spp, stp]`` (NaN where ``n == 0``)."""
    n, st, sp, stt, spp, stp = np.moveaxis(sums, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mt, mp = st / n, sp / n
        var_t = np.maximum(stt / n - mt * mt, 0.0)
        var_p = np.maximum(spp / n - mp * mp, 0.0)
        cov = stp / n - mt * mp
        den = var_t + var_p + (mt - mp) ** 2
        out = np.where(den > 0, 2.0 * cov / np.where(den > 0, den, 1.0), 1.0)
    return np.where(n > 0, np.clip(out, -1.0, 1.0), np.nan)


def _group_sums(codes: np.ndarray, n_groups: int, columns: list[np.ndarray]) -> np.ndarray:
    """``(n_groups, len(columns))`` per-group sums of each column."""
    return np.column_stack([np.bincount(codes, weights=c, minlength=n_groups) for c in columns])


# ------------------------------------------------------------------------------------------------- the CI


def ccc_speaker_ci(
    y_true: Any,
    y_pred: Any,
    speakers: Any,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    min_speakers: int = 5,
) -> tuple[float, float, int]:
    """Percentile cluster-bootstrap confidence interval of the pooled CCC, resampling whole speakers.

    Each resample draws as many speakers as there are, with replacement, keeps all clips of every drawn
    speaker, and computes CCC over the pooled clips of the resample.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Targets and predictions.
    speakers : array-like of shape (n,)
        Speaker (cluster) of each clip; any hashable, orderable labels.
    n_boot : int
        Number of bootstrap resamples.
    seed : int
        Seed of the resampling (same inputs and seed, same interval).
    alpha : float
        ``1 - alpha`` is the coverage (default 0.05: a 95 % interval).
    min_speakers : int
        Below this many distinct speakers a speaker bootstrap says little: ``(nan, nan, n_speakers)``.

    Returns
    -------
    (low, high, n_speakers) : tuple of (float, float, int)
        The ``alpha/2`` and ``1 - alpha/2`` quantiles of the bootstrap CCC distribution, and the number of
        distinct speakers.
    """
    t, p = _check_pair(y_true, y_pred)
    codes = _check_groups("speakers", speakers, t.size)
    n_boot = _check_count("n_boot", n_boot)
    min_speakers = _check_count("min_speakers", min_speakers)
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"alpha must be in (0, 1), got {alpha!r}")
    n_groups = int(codes.max()) + 1
    if n_groups < min_speakers:
        return math.nan, math.nan, n_groups
    c = t.mean()  # CCC is invariant under a common shift; centring keeps the sums well conditioned
    tc, pc = t - c, p - c
    stats = _group_sums(codes, n_groups, [np.ones_like(tc), tc, pc, tc * tc, pc * pc, tc * pc])
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n_groups)
    dist = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups))
        flat = (draws + (np.arange(b) * n_groups)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups).astype(np.float64)
        dist.append(_ccc_from_sums(counts @ stats))
    low, high = np.quantile(np.concatenate(dist), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), n_groups


# ------------------------------------------------------------------------------------------ the paired test


def paired_ccc_test(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    *,
    n_perm: int = 2000,
    seed: int = 0,
    groups: Any = None,
) -> float:
    """Two-sided approximate-randomisation (Noreen) test of ``CCC(pred_a) - CCC(pred_b)``.

    Under the null hypothesis the two systems are exchangeable. Each permutation swaps ``a``'s and ``b``'s
    prediction of every clip (or, with ``groups``, of all clips of a group together) with probability 1/2
    and recomputes the CCC difference; CCC is not a sum over clips, so (unlike the UA test of
    :func:`sertool.metrics.paired_test`) this is not a sign flip of per-group terms, but the permuted
    CCCs follow from per-group sufficient statistics by one matrix product per chunk of permutations.

    Parameters
    ----------
    y_true, pred_a, pred_b : array-like of shape (n,)
        Targets and the two systems' predictions of the same clips.
    n_perm : int
        Number of random permutations.
    seed : int
        Seed of the permutations.
    groups : array-like of shape (n,), optional
        Speaker of each clip: swap whole speakers (recommended, clips of a speaker are correlated). With few
        groups few distinct permutations exist and small p-values are impossible, as they should be.

    Returns
    -------
    float
        ``p = (1 + #{|diff_perm| >= |diff_obs|}) / (1 + n_perm)`` in (0, 1]; 1.0 when the predictions are
        identical.
    """
    t, a = _check_pair(y_true, pred_a, "pred_a")
    _, b = _check_pair(t, pred_b, "pred_b")
    n_perm = _check_count("n_perm", n_perm)
    codes = np.arange(t.size) if groups is None else _check_groups("groups", groups, t.size)
    if np.array_equal(a, b):
        return 1.0
    n_groups = int(codes.max()) + 1
    c = t.mean()
    tc, ac, bc = t - c, a - c, b - c
    # sums of a system's statistics [n, st, sp, stt, spp, stp], and what swapping a group changes in them
    base_a = np.array([t.size, tc.sum(), ac.sum(), (tc * tc).sum(), (ac * ac).sum(), (tc * ac).sum()])
    base_b = np.array([t.size, tc.sum(), bc.sum(), (tc * tc).sum(), (bc * bc).sum(), (tc * bc).sum()])
    zero = np.zeros_like(tc)
    delta = _group_sums(codes, n_groups, [zero, zero, bc - ac, zero, bc * bc - ac * ac, tc * (bc - ac)])
    observed = _ccc_from_sums(base_a) - _ccc_from_sums(base_b)
    abs_obs = abs(float(observed))
    tol = 1e-12 * max(1.0, abs_obs)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n_groups)
    hits = 0
    for start in range(0, n_perm, chunk):
        m = min(chunk, n_perm - start)
        swap = rng.integers(0, 2, size=(m, n_groups)).astype(np.float64)
        shift = swap @ delta  # (m, 6): b's statistics replace a's on the swapped groups
        diff = _ccc_from_sums(base_a + shift) - _ccc_from_sums(base_b - shift)
        hits += int(np.count_nonzero(np.abs(diff) >= abs_obs - tol))
    return (1 + hits) / (1 + n_perm)
