"""The out-of-distribution guard: its distance against a hand computation, its threshold's held-in flag rate,
speaker calibration, the constant-output check on a real RBF SVM, and its JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from sertool.bench.fitting import predict_classes
from sertool.guard import CONSTANT_TOL, Guard, fit_guard, pooled_input
from sertool.models.registry import make_estimator


def _reference_distance(train: np.ndarray, X: np.ndarray, full: bool) -> np.ndarray:
    """The documented score, computed independently: log of the positive dimensions spanning two decades,
    standardised with the training mean/std, Mahalanobis with a Ledoit-Wolf covariance (or identity)."""
    pos = (train > 0).all(axis=0) & (train.max(axis=0) >= 100 * np.where(train > 0, train, 1).min(axis=0))

    def tf(A: np.ndarray) -> np.ndarray:
        A = A.astype(np.float64).copy()
        A[:, pos] = np.log(np.maximum(A[:, pos], train[:, pos].min(axis=0) / 1000))
        return A

    T = tf(train)
    mu, sd = T.mean(axis=0), T.std(axis=0)
    Z = (tf(X) - mu) / sd
    if not full:
        return np.sqrt((Z**2).mean(axis=1))
    P = np.linalg.inv(LedoitWolf(assume_centered=True).fit((T - mu) / sd).covariance_)
    return np.sqrt(np.einsum("ij,jk,ik->i", Z, P, Z) / X.shape[1])


def _data(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Gaussian dims beside log-normal, power-like ones (spanning decades)."""
    X = rng.standard_normal((n, d))
    X[:, : d // 3] = np.exp(2.0 * X[:, : d // 3])
    return X


@pytest.mark.parametrize("d", [12, 200])
def test_distance_is_the_documented_mahalanobis(d):
    rng = np.random.default_rng(0)
    train, new = _data(rng, 400, d), _data(rng, 50, d)
    guard = fit_guard(train)
    assert guard.log_dims.sum() == d // 3  # the power-like dims, and only them
    assert (guard.precision is None) == (d > 128)
    ref = _reference_distance(train, new, full=d <= 128)
    np.testing.assert_allclose(guard.distance(new), ref, rtol=1e-6)
    res = guard.assess(new)
    np.testing.assert_allclose(res.ood_score, ref / guard.threshold, rtol=1e-6)
    np.testing.assert_array_equal(res.in_distribution, ref <= guard.threshold)


def test_threshold_flags_about_one_percent_of_new_draws_and_most_shifted_ones():
    rng = np.random.default_rng(1)
    guard = fit_guard(_data(rng, 1000, 20))
    fresh = guard.assess(_data(rng, 4000, 20))
    assert fresh.n_flagged / 4000 < 0.03  # a 99% quantile of out-of-sample scores: ~1%
    shifted = _data(rng, 500, 20)
    shifted[:, 10:14] += 3.0  # four Gaussian dims three standard deviations off
    assert (~guard.assess(shifted).in_distribution).mean() > 0.9
    bad = _data(rng, 3, 20)
    bad[0, 12], bad[1, 0], bad[2, 0] = np.nan, -1.0, np.inf  # NaN, a power-like dim at <= 0, infinity
    res = guard.assess(bad)
    assert not res.in_distribution.any() and (res.ood_score > 1).all()


def test_calibration_on_whole_speakers_accepts_new_speakers():
    """Speakers differ (an offset per speaker): thresholds calibrated on held-out speakers accept new speakers;
    calibrated on random clips (every speaker seen) they reject most of them."""
    rng = np.random.default_rng(2)

    def speakers(n_spk: int, start: int) -> tuple[np.ndarray, list[str]]:
        X = np.concatenate(
            [rng.standard_normal((40, 10)) + 3 * rng.standard_normal(10) for _ in range(n_spk)]
        )
        return X, [f"s{start + i}" for i in range(n_spk) for _ in range(40)]

    X, groups = speakers(20, 0)
    new, _ = speakers(30, 100)
    by_speaker = fit_guard(X, groups=groups)
    by_clip = fit_guard(X)
    assert "whole speakers (20 speakers)" in by_speaker.info["calibration"]
    assert "random parts of clips" in by_clip.info["calibration"]
    assert (~by_speaker.assess(new).in_distribution).mean() < 0.05
    assert (~by_clip.assess(new).in_distribution).mean() > 0.2
    # fewer than 5 speakers: clip parts
    assert "random parts of clips" in fit_guard(X[:160], groups=groups[:160]).info["calibration"]


def test_an_rbf_svm_far_from_its_data_is_caught_by_its_constant_answer():
    """The issue's case: one feature hundreds of standard deviations off makes every RBF kernel value 0, so the
    SVM answers its intercept. The guard records that answer and flags inputs that get it, even where their
    distance alone would not (the guard is handed a huge threshold here)."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 60)
    X = rng.standard_normal((180, 8)) + y[:, None]
    svm = make_estimator("svm", seed=0).fit(X, y)
    classes = ["a", "b", "c"]

    def predict(rows: np.ndarray) -> np.ndarray:
        return predict_classes(svm, rows, classes)[0]

    guard = fit_guard(X, predict=predict)
    assert (
        guard.far_proba is not None and guard.info["constant_output"] == "constant far-away answer recorded"
    )
    far = X[:5].copy()
    far[:, 0] += 700 * X[:, 0].std()
    p_far = predict(far)
    # independent reference: with every kernel value 0, any far point gets the same answer
    np.testing.assert_allclose(p_far, np.repeat(predict(X[:1] + 1e4)[:1], 5, axis=0), atol=1e-9)
    np.testing.assert_allclose(p_far[0], guard.far_proba, atol=CONSTANT_TOL)
    guard.threshold = 1e12  # the distance accepts everything now: only the constant answer flags
    res = guard.assess(far, p_far)
    assert res.constant.all() and not res.in_distribution.any()
    near = guard.assess(X[:50], predict(X[:50]))
    assert not near.constant.any() and near.in_distribution.all()
    # a model whose far answers differ (logistic regression saturates by direction) records none
    lr = make_estimator("logreg", seed=0).fit(X, y)
    g2 = fit_guard(X, predict=lambda rows: predict_classes(lr, rows, classes)[0])
    assert g2.far_proba is None and "varies" in g2.info["constant_output"]


def test_round_trips_through_plain_json():
    rng = np.random.default_rng(4)
    X = _data(rng, 200, 30)
    guard = fit_guard(X, predict=lambda rows: np.tile([0.25, 0.75], (len(rows), 1)))
    # a model that answers the same everywhere, training clips included, gets no constant check
    assert guard.far_proba is None and "training clips" in guard.info["constant_output"]
    text = json.dumps(guard.to_dict())
    back = Guard.from_dict(json.loads(text))
    new = _data(rng, 20, 30)
    np.testing.assert_array_equal(back.distance(new), guard.distance(new))
    assert back.threshold == guard.threshold and back.info == guard.info


def test_frame_sequences_are_scored_by_their_mean_over_time():
    rng = np.random.default_rng(5)
    frames = [rng.standard_normal((int(rng.integers(5, 30)), 6)) for _ in range(60)]
    np.testing.assert_allclose(pooled_input(frames), np.stack([f.mean(axis=0) for f in frames]))
    guard = fit_guard(frames)
    assert guard.info["input"] == "mean over time of the frames"
    np.testing.assert_allclose(guard.distance(frames[:4]), guard.distance(pooled_input(frames[:4])))
    assert fit_guard(frames[:5]) is None  # too few rows: no guard, logged
