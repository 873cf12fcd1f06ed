"""Metrics against hand-computed values; bootstrap CIs and paired tests on simulated speakers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from sertool.exceptions import ParameterError
from sertool.metrics import (
    aggregate_folds,
    bootstrap_ua_ci,
    brier_score,
    confusion,
    correct_pvalues,
    ece_sampling_floor,
    expected_calibration_error,
    macro_f1,
    negative_log_likelihood,
    paired_test,
    per_class_recall,
    reliability_bins,
    score_all,
    ua_by_group,
    unweighted_accuracy,
    weighted_accuracy,
)

# 10 clips, classes ang (4), hap (2), sad (4).
Y_TRUE = ["ang", "ang", "ang", "ang", "hap", "hap", "sad", "sad", "sad", "sad"]
Y_PRED = ["ang", "ang", "ang", "hap", "hap", "sad", "sad", "sad", "ang", "ang"]
# Correct: ang 3/4, hap 1/2, sad 2/4 -> WA = 6/10, UA = (3/4 + 1/2 + 2/4) / 3 = 7/12.
# Confusion (rows true ang/hap/sad, cols predicted): [[3, 1, 0], [0, 1, 1], [2, 0, 2]].
# F1 = 2TP / (2TP + FP + FN): ang 6/9, hap 2/4, sad 4/7 -> macro (2/3 + 1/2 + 4/7) / 3 = 73/126.
CM = [[3, 1, 0], [0, 1, 1], [2, 0, 2]]


def test_point_metrics_hand_computed():
    assert weighted_accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    assert unweighted_accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 12)
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx(73 / 126)
    assert per_class_recall(Y_TRUE, Y_PRED, ["ang", "hap", "sad"]) == pytest.approx(
        {"ang": 0.75, "hap": 0.5, "sad": 0.5}
    )
    np.testing.assert_array_equal(confusion(Y_TRUE, Y_PRED, ["ang", "hap", "sad"]), CM)
    np.testing.assert_allclose(
        confusion(Y_TRUE, Y_PRED, ["ang", "hap", "sad"], normalize="true"),
        [[0.75, 0.25, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]],
    )


def test_ua_matches_sklearn_balanced_accuracy(rng):
    y = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 5, 300))
    assert unweighted_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))
    # UA differs from WA on imbalanced data: a majority-class predictor has WA 0.9 but UA 0.5.
    y2 = np.array([0] * 90 + [1] * 10)
    assert weighted_accuracy(y2, np.zeros(100)) == pytest.approx(0.9)
    assert unweighted_accuracy(y2, np.zeros(100)) == pytest.approx(0.5)


def test_scheme_labels_absent_from_fold():
    labels = ["ang", "hap", "neu", "sad"]  # "neu" absent from both vectors
    assert macro_f1(Y_TRUE, Y_PRED, labels) == pytest.approx(73 / 126)
    rec = per_class_recall(Y_TRUE, Y_PRED, labels)
    assert list(rec) == labels and math.isnan(rec["neu"]) and rec["ang"] == pytest.approx(0.75)
    cm = confusion(Y_TRUE, Y_PRED, labels, normalize="true")
    assert np.isnan(cm[2]).all() and cm[0, 0] == pytest.approx(0.75)


def test_score_all_hand_computed():
    out = score_all(Y_TRUE, Y_PRED, ["ang", "hap", "sad"])
    assert out["n"] == 10
    assert out["wa"] == pytest.approx(0.6)
    assert out["ua"] == pytest.approx(7 / 12)
    assert out["macro_f1"] == pytest.approx(73 / 126)
    assert out["labels"] == ["ang", "hap", "sad"]
    assert out["per_class_recall"] == pytest.approx({"ang": 0.75, "hap": 0.5, "sad": 0.5})
    assert out["confusion"] == CM and isinstance(out["confusion"][0][0], int)
    # Integer labels come back as Python ints (JSON keys).
    out_int = score_all([0, 1, 1], [0, 1, 0])
    assert out_int["labels"] == [0, 1] and type(next(iter(out_int["per_class_recall"]))) is int


def test_metric_input_errors():
    with pytest.raises(ParameterError, match="y_true has 3 labels but y_pred has 2"):
        weighted_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ParameterError, match="empty"):
        unweighted_accuracy([], [])
    with pytest.raises(ParameterError, match=r"y_pred contains labels not in labels.*'neu'"):
        confusion(["ang"], ["neu"], ["ang", "sad"])
    with pytest.raises(ParameterError, match="normalize"):
        confusion(Y_TRUE, Y_PRED, normalize="all")
    with pytest.raises(ParameterError, match="groups has 2 entries"):
        bootstrap_ua_ci(Y_TRUE, Y_PRED, groups=[0, 1])


def test_aggregate_folds_mean_std():
    folds = [
        {"wa": 0.6, "ua": 0.5, "macro_f1": 0.4, "n": 10},
        {"wa": 0.7, "ua": 0.6, "macro_f1": 0.5, "n": 12},
        {"wa": 0.8, "ua": 0.7, "macro_f1": 0.9, "n": 8},
    ]
    out = aggregate_folds(folds)
    assert out["n_folds"] == 3 and out["n"] == 30
    assert out["ua_mean"] == pytest.approx(0.6) and out["ua_std"] == pytest.approx(0.1)  # ddof=1
    assert out["wa_mean"] == pytest.approx(0.7) and out["wa_std"] == pytest.approx(0.1)
    assert out["macro_f1_mean"] == pytest.approx(0.6)
    assert out["macro_f1_std"] == pytest.approx(math.sqrt(0.07))  # deviations -0.2, -0.1, 0.3
    assert aggregate_folds(folds, ddof=0)["ua_std"] == pytest.approx(math.sqrt(0.02 / 3))
    assert math.isnan(aggregate_folds(folds[:1])["ua_std"])
    with pytest.raises(ParameterError, match="fold 1 has no metric 'ua'"):
        aggregate_folds([folds[0], {"wa": 0.5}])
    with pytest.raises(ParameterError, match="at least one fold"):
        aggregate_folds([])


# ---------------------------------------------------------------------------------- simulated speakers


def simulate(
    n_speakers: int,
    clips: int = 40,
    *,
    acc: float | tuple[float, float] = 0.6,
    n_classes: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, predictions and speakers; ``acc`` is a fixed accuracy or a (low, high) range per speaker."""
    r = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_speakers), clips)
    y = r.integers(0, n_classes, groups.size)
    speaker_acc = np.full(n_speakers, acc) if np.isscalar(acc) else r.uniform(*acc, n_speakers)
    correct = r.random(groups.size) < speaker_acc[groups]
    wrong = (y + r.integers(1, n_classes, groups.size)) % n_classes
    return y, np.where(correct, y, wrong), groups


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    y, p, g = simulate(20)
    ua = unweighted_accuracy(y, p)
    lo, hi = bootstrap_ua_ci(y, p, g, n_boot=500, seed=1)
    assert lo < ua < hi and 0.05 < hi - lo < 0.25
    assert bootstrap_ua_ci(y, p, g, n_boot=500, seed=1) == (lo, hi)
    assert bootstrap_ua_ci(y, p, g, n_boot=500, seed=2) != (lo, hi)
    assert bootstrap_ua_ci(y, y, g, n_boot=50) == (1.0, 1.0)


def test_bootstrap_ci_narrows_with_more_speakers():
    widths = {}
    for n in (8, 64):
        y, p, g = simulate(n, acc=(0.3, 0.9), seed=n)
        lo, hi = bootstrap_ua_ci(y, p, g, n_boot=1000)
        widths[n] = hi - lo
    # 8x the speakers: the width shrinks about sqrt(8) ~ 2.8-fold.
    assert widths[64] < 0.55 * widths[8]


def test_cluster_bootstrap_wider_than_clip_bootstrap_for_correlated_speakers():
    # Speaker accuracy ranges from 0.2 to 0.95: clips of one speaker are correlated.
    y, p, g = simulate(16, clips=60, acc=(0.2, 0.95), seed=3)
    lo_c, hi_c = bootstrap_ua_ci(y, p, g, n_boot=1000)
    lo_i, hi_i = bootstrap_ua_ci(y, p, None, n_boot=1000)
    assert hi_c - lo_c > 2.0 * (hi_i - lo_i)
    # Without correlation the two agree roughly.
    y, p, g = simulate(16, clips=60, acc=0.6, seed=4)
    w_c = np.subtract(*bootstrap_ua_ci(y, p, g, n_boot=1000)[::-1])
    w_i = np.subtract(*bootstrap_ua_ci(y, p, None, n_boot=1000)[::-1])
    assert 0.7 < w_c / w_i < 1.4


def test_paired_test_exact_hand_computed():
    # 3 speakers x 2 clips (one "a", one "b"); class totals 3 and 3, 2 classes.
    y = np.array(["a", "b"] * 3)
    g = np.repeat([1, 2, 3], 2)
    a = y.copy()
    # B misses every "a": each speaker contributes (1/3) / 2 = 1/6 to UA(A) - UA(B).
    b = np.array(["b", "b"] * 3)
    # Sign patterns over 3 speakers: |sum| = 1/2 only when all signs agree (2 of 8) -> p = 0.25.
    assert paired_test(y, a, b, g) == pytest.approx(0.25)
    # Flip speaker 3 so A is worse there: contributions (1/6, 1/6, -1/6); every pattern has |sum| >= 1/6.
    a3, b3 = a.copy(), b.copy()
    a3[4], b3[4] = "b", "a"
    assert paired_test(y, a3, b3, g) == pytest.approx(1.0)
    assert paired_test(y, a, a.copy(), g) == 1.0


def test_paired_test_detects_a_clearly_better_system():
    y, good, g = simulate(24, acc=0.85, seed=5)
    bad = np.where(np.random.default_rng(7).random(y.size) < 0.55, y, (y + 1) % 4)
    p = paired_test(y, good, bad, g, n_permutations=5000)
    assert p < 0.001
    assert p == paired_test(y, good, bad, g, n_permutations=5000)  # deterministic
    assert p == pytest.approx(paired_test(y, bad, good, g, n_permutations=5000))  # two-sided


def test_paired_test_is_calibrated_for_equally_good_systems():
    r = np.random.default_rng(8)
    pvals = []
    for i in range(200):
        y, _, g = simulate(12, clips=20, seed=100 + i)
        a, b = ((np.where(r.random(y.size) < 0.6, y, (y + 1) % 4)) for _ in range(2))
        pvals.append(paired_test(y, a, b, g, n_permutations=1000, seed=i))
    pvals = np.array(pvals)
    assert 0.4 < pvals.mean() < 0.6
    assert np.mean(pvals < 0.05) < 0.1
    assert np.mean(pvals < 0.5) == pytest.approx(0.5, abs=0.12)


def test_paired_test_groups_matter():
    # A beats B by a lot, but only on 2 of 20 speakers: per clip that looks significant; per speaker it is
    # 2 sign flips (exact p = 2/4 = 0.5).
    y, a, g = simulate(20, acc=0.7, seed=9)
    b = a.copy()
    on_two = np.isin(g, [0, 1]) & (a == y)
    b[on_two] = (y[on_two] + 1) % 4
    assert paired_test(y, a, b) < 0.001
    assert paired_test(y, a, b, g) == pytest.approx(0.5)


def test_correct_pvalues_known_numbers():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06.
    assert correct_pvalues(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert correct_pvalues(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    # Benjamini-Hochberg: p*m/rank = 0.02, 0.02, 0.04, 0.04 (already monotone).
    assert correct_pvalues(p, "fdr_bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert correct_pvalues([]) == []
    with pytest.raises(ParameterError, match="in \\[0, 1\\]"):
        correct_pvalues([0.5, 1.5])
    with pytest.raises(ParameterError, match="'nope'"):
        correct_pvalues([0.5], "nope")


# ------------------------------------------------------------------------------------------ calibration

# 4 clips, 2 classes (a, b); probabilities (p_a, p_b):
#   1: y=a, (0.90, 0.10) -> predicts a, right, confidence 0.90
#   2: y=b, (0.91, 0.09) -> predicts a, wrong, confidence 0.91
#   3: y=a, (0.38, 0.62) -> predicts b, wrong, confidence 0.62
#   4: y=b, (0.28, 0.72) -> predicts b, right, confidence 0.72
# 15 bins of width 1/15: 0.90 and 0.91 both fall in bin 13 = (0.8667, 0.9333], 0.62 in bin 9 = (0.6, 0.6667],
# 0.72 in bin 10 = (0.6667, 0.7333].
#   ECE = 2/4 |0.5 - 0.905| + 1/4 |0 - 0.62| + 1/4 |1 - 0.72| = 0.2025 + 0.155 + 0.07 = 0.4275
#   Brier: 1: 0.1^2 + 0.1^2 = 0.02; 2: 0.91^2 + 0.91^2 = 1.6562; 3: 0.62^2 * 2 = 0.7688; 4: 0.28^2 * 2 = 0.1568
#          mean = 2.6018 / 4 = 0.65045
#   NLL = -(ln 0.9 + ln 0.09 + ln 0.38 + ln 0.72) / 4 = (0.105361 + 2.407946 + 0.967584 + 0.328504) / 4
#       = 0.952349
CAL_Y = ["a", "b", "a", "b"]
CAL_P = [[0.90, 0.10], [0.91, 0.09], [0.38, 0.62], [0.28, 0.72]]


def test_calibration_metrics_hand_computed():
    assert expected_calibration_error(CAL_Y, CAL_P, ["a", "b"]) == pytest.approx(0.4275)
    assert brier_score(CAL_Y, CAL_P, ["a", "b"]) == pytest.approx(0.65045)
    assert negative_log_likelihood(CAL_Y, CAL_P, ["a", "b"]) == pytest.approx(0.952349, abs=1e-6)
    table = reliability_bins(CAL_Y, CAL_P, ["a", "b"])
    assert table["count"].tolist() == [0] * 9 + [1, 1, 0, 0, 2, 0]
    assert table["accuracy"][13] == pytest.approx(0.5) and table["confidence"][13] == pytest.approx(0.905)
    assert table["accuracy"][9] == 0.0 and table["accuracy"][10] == 1.0
    assert np.isnan(table["accuracy"][0]) and np.isnan(table["confidence"][14])
    np.testing.assert_allclose(table["lower"][[0, 14]], [0.0, 14 / 15])
    # integer labels index the columns directly; columns named in another order give the same numbers
    assert brier_score([0, 1, 0, 1], CAL_P) == pytest.approx(0.65045)
    swapped = np.asarray(CAL_P)[:, ::-1]
    assert expected_calibration_error(CAL_Y, swapped, ["b", "a"]) == pytest.approx(0.4275)
    assert negative_log_likelihood(CAL_Y, swapped, ["b", "a"]) == pytest.approx(0.952349, abs=1e-6)


def test_calibration_edge_cases():
    # perfectly confident and right: everything 0
    assert expected_calibration_error(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], ["a", "b"]) == 0.0
    assert brier_score(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], ["a", "b"]) == 0.0
    # confidently wrong: Brier 1^2 + 1^2 = 2 per clip; NLL -ln(1e-12) = 27.631
    assert brier_score(["a"], [[0.0, 1.0]], ["a", "b"]) == pytest.approx(2.0)
    assert negative_log_likelihood(["a"], [[0.0, 1.0]], ["a", "b"]) == pytest.approx(12 * math.log(10))
    # a true class the model has no column for: probability 0 (Brier adds its indicator, 1)
    assert brier_score(["c"], [[0.5, 0.5]], ["a", "b"]) == pytest.approx(0.25 + 0.25 + 1.0)
    assert negative_log_likelihood(["c"], [[0.5, 0.5]], ["a", "b"]) == pytest.approx(12 * math.log(10))
    # y_pred decides correctness when given (ties of the top probability broken another way)
    tie = [[0.5, 0.5]]
    assert expected_calibration_error(["b"], tie, ["a", "b"]) == pytest.approx(0.5)  # argmax: a, wrong
    assert expected_calibration_error(["b"], tie, ["a", "b"], y_pred=["b"]) == pytest.approx(0.5)  # right
    assert reliability_bins(["b"], tie, ["a", "b"], y_pred=["b"])["accuracy"][7] == 1.0
    with pytest.raises(ParameterError, match="sum to 1"):
        brier_score(["a"], [[0.5, 0.2]], ["a", "b"])
    with pytest.raises(ParameterError, match="2 labels but proba has 1 rows"):
        negative_log_likelihood(["a", "b"], [[0.5, 0.5]], ["a", "b"])
    with pytest.raises(ParameterError, match="classes names 3 columns"):
        expected_calibration_error(["a"], [[0.5, 0.5]], ["a", "b", "c"])
    with pytest.raises(ParameterError, match="column indices"):
        brier_score(["a"], [[0.5, 0.5]])


def test_calibration_matches_sklearn_on_random_probabilities(rng):
    from sklearn.metrics import brier_score_loss, log_loss

    proba = rng.dirichlet(np.ones(5) * 0.7, size=400)
    y = rng.integers(0, 5, 400)
    assert brier_score(y, proba) == pytest.approx(brier_score_loss(y, proba, labels=range(5)), rel=1e-12)
    assert negative_log_likelihood(y, proba) == pytest.approx(log_loss(y, proba, labels=range(5)), rel=1e-9)
    # ECE: the same as a plain loop over the 15 bins (lo, hi]
    conf, correct = proba.max(axis=1), (proba.argmax(axis=1) == y)
    ece = sum(
        np.mean(m) * abs(correct[m].mean() - conf[m].mean())
        for b in range(15)
        if (m := (conf > b / 15) & (conf <= (b + 1) / 15)).any()
    )
    assert expected_calibration_error(y, proba) == pytest.approx(ece, abs=1e-12)


def test_ua_by_group_matches_per_group_balanced_accuracy(rng):
    y, p, g = simulate(6, clips=30, acc=(0.3, 0.9), seed=11)
    out = ua_by_group(y, p, g)
    assert list(out) == list(range(6))
    for group, ua in out.items():
        assert ua == pytest.approx(balanced_accuracy_score(y[g == group], p[g == group]), abs=1e-12)
    # a group that has one class only: UA is the recall of that class
    assert ua_by_group(["a", "a", "b"], ["a", "b", "b"], ["s1", "s1", "s2"]) == {"s1": 0.5, "s2": 1.0}


# ------------------------------------------------------------------------------------- ECE sampling floor


def test_ece_floor_is_zero_for_certain_predictions() -> None:
    """One-hot probabilities: every drawn label is the predicted one, so every bin is exact."""
    P = np.eye(3)[[0, 1, 2, 1, 0]]
    assert ece_sampling_floor(P, n_draws=20) == 0.0


def test_ece_floor_of_one_coin_flip_is_one_half() -> None:
    """One clip at confidence 0.5: its bin is either all right or all wrong, |1 - 0.5| = |0 - 0.5| = 0.5."""
    assert ece_sampling_floor([[0.5, 0.5]], n_draws=50) == pytest.approx(0.5)


def test_ece_floor_matches_the_binomial_mean_absolute_deviation() -> None:
    """n clips all at confidence 0.7 fall in one bin: ECE = |K / n - 0.7| with K ~ Binomial(n, 0.7)."""
    from scipy.stats import binom

    n = 400
    k = np.arange(n + 1)
    expected = float((binom.pmf(k, n, 0.7) * np.abs(k / n - 0.7)).sum())
    P = np.tile([0.7, 0.3], (n, 1))
    assert ece_sampling_floor(P, n_draws=3000, seed=1) == pytest.approx(expected, rel=0.05)


def test_ece_floor_rejects_rows_that_are_not_probabilities() -> None:
    with pytest.raises(ParameterError, match="sum to 1"):
        ece_sampling_floor([[0.5, 0.6]])
