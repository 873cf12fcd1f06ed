"""Regression metrics: CCC, the score dict, the speaker-bootstrap CI and the paired randomisation test."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, mean_squared_error

from sertool.exceptions import ParameterError
from sertool.metrics_regression import ccc, ccc_speaker_ci, paired_ccc_test, regression_scores


def _ccc_reference(t: np.ndarray, p: np.ndarray) -> float:
    """The formula written out independently, with numpy's biased (population) covariance matrix."""
    cov = np.cov(t, p, bias=True)
    return 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (t.mean() - p.mean()) ** 2)


@pytest.fixture(scope="module")
def speakers_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """30 speakers x 50 clips, a speaker offset in the target, predictions = target + noise."""
    rng = np.random.default_rng(0)
    spk = np.repeat(np.arange(30), 50)
    t = rng.normal(size=spk.size) + 0.5 * rng.normal(size=30)[spk]
    p = 0.8 * t + 0.6 * rng.normal(size=spk.size) + 0.1
    return t, p, spk


# ---------------------------------------------------------------------------------------------------- CCC


def test_ccc_hand_worked():
    # t = [1, 2, 3, 4], p = [2, 2, 3, 5]
    # mean_t = 2.5, mean_p = 3
    # var_t = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
    # var_p = (1 + 1 + 0 + 4) / 4 = 1.5
    # cov = ((-1.5)(-1) + (-0.5)(-1) + (0.5)(0) + (1.5)(2)) / 4 = 5 / 4 = 1.25
    # CCC = 2 * 1.25 / (1.25 + 1.5 + (2.5 - 3)^2) = 2.5 / 3 = 5 / 6
    assert ccc([1, 2, 3, 4], [2, 2, 3, 5]) == pytest.approx(5 / 6, abs=1e-12)


def test_ccc_matches_independent_formula():
    rng = np.random.default_rng(1)
    for _ in range(5):
        t = rng.normal(3.0, 2.0, size=200)
        p = 0.5 * t + rng.normal(1.0, 1.5, size=200)
        assert ccc(t, p) == pytest.approx(_ccc_reference(t, p), abs=1e-12)
    assert ccc(t, p) == pytest.approx(ccc(p, t), abs=1e-12)  # symmetric


def test_ccc_identical_shifted_and_scaled():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(t, t) == 1.0
    # shift by 1: pearson 1, CCC = 2 var / (2 var + 1) = 2.5 / 3.5 = 5 / 7 (var_t = 1.25)
    scores = regression_scores(t, t + 1)
    assert scores["pearson"] == pytest.approx(1.0)
    assert scores["ccc"] == pytest.approx(5 / 7, abs=1e-12) and scores["ccc"] < scores["pearson"]
    # not invariant to rescaling the predictions alone: CCC(t, 2t) = 2*2v / (v + 4v + mean_t^2) = 5 / 12.5
    assert ccc(t, 2 * t) == pytest.approx(5.0 / (1.25 + 5.0 + 6.25), abs=1e-12)
    assert ccc(t, 2 * t) < 1.0
    # ... but invariant to one affine map applied to both sides
    p = np.array([2.0, 2.0, 3.0, 5.0])
    assert ccc(3 * t - 7, 3 * p - 7) == pytest.approx(ccc(t, p), abs=1e-12)
    assert ccc(t, -t) == pytest.approx(-1.0 * 2 * 1.25 / (2 * 1.25 + 25), abs=1e-12)


def test_ccc_constant_edge_cases():
    assert ccc([0.1, 0.1, 0.1], [0.1, 0.1, 0.1]) == 1.0  # both constant and equal: perfect agreement
    assert ccc([0.1, 0.1, 0.1], [0.3, 0.3, 0.3]) == 0.0  # both constant, different: no covariance
    assert ccc([0.1, 0.1, 0.1], [0.0, 1.0, 2.0]) == 0.0  # one side constant
    assert ccc([2.0], [2.0]) == 1.0 and ccc([2.0], [3.0]) == 0.0
    assert math.isnan(regression_scores([1.0, 1.0], [1.0, 2.0])["pearson"])


@pytest.mark.parametrize(
    ("t", "p", "match"),
    [
        ([1.0, 2.0], [1.0, 2.0, 3.0], "shape"),
        ([], [], "empty"),
        ([1.0, np.nan], [1.0, 2.0], "NaN or infinite"),
        ([1.0, 2.0], [1.0, np.inf], "NaN or infinite"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "one-dimensional"),
        (["a", "b"], [1.0, 2.0], "numeric"),
    ],
)
def test_ccc_rejects_bad_input(t, p, match):
    with pytest.raises(ParameterError, match=match):
        ccc(t, p)
    with pytest.raises(ParameterError, match=match):
        regression_scores(t, p)


def test_regression_scores_against_scipy_and_sklearn():
    rng = np.random.default_rng(2)
    t = rng.normal(size=300)
    p = 0.7 * t + rng.normal(0.2, 0.5, size=300)
    s = regression_scores(t, p)
    assert set(s) == {"ccc", "pearson", "mae", "rmse", "n", "mean_true", "mean_pred", "std_true", "std_pred"}
    assert s["pearson"] == pytest.approx(pearsonr(t, p).statistic, abs=1e-12)
    assert s["mae"] == pytest.approx(mean_absolute_error(t, p), abs=1e-12)
    assert s["rmse"] == pytest.approx(math.sqrt(mean_squared_error(t, p)), abs=1e-12)
    assert s["ccc"] == pytest.approx(_ccc_reference(t, p), abs=1e-12)
    assert s["n"] == 300 and isinstance(s["n"], int)
    assert s["std_true"] == pytest.approx(t.std(ddof=0)) and s["mean_pred"] == pytest.approx(p.mean())
    assert all(isinstance(v, float) for k, v in s.items() if k != "n")


# ---------------------------------------------------------------------------------------------------- CI


def test_speaker_ci_contains_estimate_and_is_reproducible(speakers_case):
    t, p, spk = speakers_case
    point = ccc(t, p)
    low, high, n_spk = ccc_speaker_ci(t, p, spk, seed=3)
    assert n_spk == 30
    assert 0.0 < low < point < high < 1.0
    assert high - low < 0.2
    assert ccc_speaker_ci(t, p, spk, seed=3) == (low, high, 30)
    assert ccc_speaker_ci(t, p, spk, seed=4) != (low, high, 30)
    # string speaker ids work the same
    assert ccc_speaker_ci(t, p, np.array([f"s{k:02d}" for k in spk]), seed=3) == (low, high, 30)
    # a narrower coverage gives a narrower interval
    low90, high90, _ = ccc_speaker_ci(t, p, spk, seed=3, alpha=0.1)
    assert low <= low90 and high90 <= high


def test_speaker_ci_matches_a_naive_cluster_bootstrap():
    """White-box: the same speaker draws (same generator calls), resampled by concatenating clips."""
    rng = np.random.default_rng(5)
    spk = rng.integers(0, 12, size=200)
    t = rng.normal(size=200) + 3
    p = t + rng.normal(size=200)
    draws = np.random.default_rng(7).integers(0, 12, size=(300, 12))
    naive = [
        ccc(np.concatenate([t[spk == g] for g in d]), np.concatenate([p[spk == g] for g in d])) for d in draws
    ]
    low, high, _ = ccc_speaker_ci(t, p, spk, n_boot=300, seed=7)
    np.testing.assert_allclose([low, high], np.quantile(naive, [0.025, 0.975]), atol=1e-9)


def test_speaker_ci_needs_enough_speakers():
    rng = np.random.default_rng(0)
    t = rng.normal(size=40)
    low, high, n_spk = ccc_speaker_ci(t, t + 0.1, np.repeat([0, 1, 2, 3], 10))
    assert math.isnan(low) and math.isnan(high) and n_spk == 4
    low, high, n_spk = ccc_speaker_ci(t, t + 0.1, np.repeat([0, 1, 2, 3], 10), min_speakers=4)
    assert not math.isnan(low) and n_spk == 4
    with pytest.raises(ParameterError, match="speakers"):
        ccc_speaker_ci(t, t, np.zeros(39))
    with pytest.raises(ParameterError, match="alpha"):
        ccc_speaker_ci(t, t, np.arange(40), alpha=1.5)
    with pytest.raises(ParameterError, match="n_boot"):
        ccc_speaker_ci(t, t, np.arange(40), n_boot=0)


def test_speaker_ci_is_fast():
    rng = np.random.default_rng(0)
    spk = rng.integers(0, 40, size=1500)
    t = rng.normal(size=1500)
    p = t + rng.normal(size=1500)
    start = time.perf_counter()
    ccc_speaker_ci(t, p, spk, n_boot=1000)
    assert time.perf_counter() - start < 0.5


# -------------------------------------------------------------------------------------------- paired test


def test_paired_test_separates_a_good_from_a_useless_system():
    rng = np.random.default_rng(10)
    t = rng.normal(size=400)
    good = t + 0.3 * rng.normal(size=400)  # CCC ~ 0.95
    noise = rng.normal(size=400)  # CCC ~ 0
    p = paired_ccc_test(t, good, noise, seed=0)
    assert p == pytest.approx(1 / 2001)  # no permutation comes near the observed difference
    assert paired_ccc_test(t, noise, good, seed=0) == p  # two-sided


def test_paired_test_equal_systems_is_not_significant():
    rng = np.random.default_rng(11)
    t = rng.normal(size=400)
    a = t + rng.normal(size=400)
    b = t + rng.normal(size=400)  # same quality, independent errors
    assert paired_ccc_test(t, a, b, seed=0) > 0.2
    # calibration under the null: p-values of independent equal-quality pairs are roughly uniform
    ps = []
    for _ in range(20):
        a = t + rng.normal(size=400)
        b = t + rng.normal(size=400)
        ps.append(paired_ccc_test(t, a, b, n_perm=300, seed=1))
    assert 0.3 < np.mean(ps) < 0.7


def test_paired_test_identical_predictions():
    t = np.linspace(0, 1, 50)
    p = t + 0.1
    assert paired_ccc_test(t, p, p) == 1.0
    assert paired_ccc_test(t, p, p.copy(), groups=np.repeat(np.arange(5), 10)) == 1.0


def test_paired_test_groups_swap_whole_speakers():
    rng = np.random.default_rng(12)
    t = rng.normal(size=400)
    good = t + 0.3 * rng.normal(size=400)
    noise = rng.normal(size=400)
    assert paired_ccc_test(t, good, noise) < 0.01
    # two speakers: only 4 swap patterns, half of which reproduce |observed| -> no significance possible
    two = np.repeat(["spk-a", "spk-b"], 200)
    assert paired_ccc_test(t, good, noise, groups=two) > 0.3
    many = np.repeat(np.arange(40), 10)
    p = paired_ccc_test(t, good, noise, groups=many, n_perm=999)
    assert p == pytest.approx(1 / 1000)
    with pytest.raises(ParameterError, match="groups"):
        paired_ccc_test(t, good, noise, groups=many[:-1])


def test_paired_test_matches_a_naive_implementation():
    """White-box: the same swap draws (same generator calls), applied by swapping clip values."""
    rng = np.random.default_rng(1)
    spk = rng.integers(0, 12, size=200)
    t = rng.normal(size=200) + 3
    a = t + rng.normal(size=200)
    b = 0.5 * t + rng.normal(size=200) + 0.4
    _, codes = np.unique(spk, return_inverse=True)
    for groups, g_codes in ((None, np.arange(200)), (spk, codes)):
        swaps = np.random.default_rng(3).integers(0, 2, size=(400, g_codes.max() + 1)).astype(bool)
        observed = abs(ccc(t, a) - ccc(t, b))
        hits = 0
        for s in swaps:
            m = s[g_codes]
            hits += abs(ccc(t, np.where(m, b, a)) - ccc(t, np.where(m, a, b))) >= observed - 1e-12
        expected = (1 + hits) / 401
        assert paired_ccc_test(t, a, b, n_perm=400, seed=3, groups=groups) == pytest.approx(expected)


def test_paired_test_validates():
    t = np.arange(5.0)
    with pytest.raises(ParameterError, match="pred_b"):
        paired_ccc_test(t, t, t[:4])
    with pytest.raises(ParameterError, match="n_perm"):
        paired_ccc_test(t, t, t + 1, n_perm=0)
