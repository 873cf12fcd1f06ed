"""Leaderboard: results contract -> ranked table, statistics, files, comparison across splits.

The fake results folder follows docs/RESULTS_FORMAT.md exactly: 2 feature views x 3 models x 3 folds, with
predictions drawn so that ``svm`` is clearly best, ``logreg`` middling and ``knn`` near chance.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

from sertool.bench.leaderboard import (
    BOARD_COLUMNS,
    ResultsError,
    build_leaderboard,
    collect_results,
    compare_leaderboards,
    render_leaderboards,
    write_leaderboard,
)
from sertool.bench.records import ResultsLayout, UnitRecord
from sertool.exceptions import ParameterError
from sertool.metrics import bootstrap_ua_ci, paired_test, score_all

CLASSES = ["neutral", "happy", "sad", "angry"]
FEATURES = ("mfcc40", "whisper-base@all")
MODELS = ("knn", "logreg", "svm")
#: Probability that a prediction is right, per model (+0.05 for the whisper view).
SKILL = {"svm": 0.85, "logreg": 0.6, "knn": 0.3}
N_FOLDS, SPK_PER_FOLD, CLIPS = 3, 3, 5  # 3 speakers x 4 classes x 5 clips = 60 test clips per fold
SI_SPLIT, SD_SPLIT = "speaker-3fold-aaaa", "random-3fold-bbbb"
N_BOOT = 200


def _predictions(rng: np.random.Generator, y_true: np.ndarray, skill: float) -> np.ndarray:
    idx = np.array([CLASSES.index(t) for t in y_true])
    shift = np.where(rng.random(y_true.size) < skill, 0, rng.integers(1, len(CLASSES), y_true.size))
    return np.array(CLASSES)[(idx + shift) % len(CLASSES)]


def write_fake_results(
    root: Path,
    *,
    corpus: str = "ravdess",
    split_id: str = SI_SPLIT,
    protocol: str = "speaker-independent",
    bonus: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write a results folder per the contract; returns the split folder."""
    base = root / corpus / split_id
    base.mkdir(parents=True)
    si = protocol == "speaker-independent"
    for f_i, feat in enumerate(FEATURES):
        for m_i, model in enumerate(MODELS):
            rng = np.random.default_rng([seed, f_i, m_i])
            for k in range(N_FOLDS):
                spk = [f"spk{k * SPK_PER_FOLD + s:02d}" for s in range(SPK_PER_FOLD)]
                rows = [(f"{s}_{c}_{j}", s, c) for s in spk for c in CLASSES for j in range(CLIPS)]
                utt, speaker, y_true = (np.array(x) for x in zip(*rows, strict=True))
                y_pred = _predictions(rng, y_true, SKILL[model] + 0.05 * f_i + bonus)
                proba = rng.dirichlet(np.ones(len(CLASSES)), size=y_true.size).astype(np.float32)
                pred = pd.DataFrame({"utt_id": utt, "speaker": speaker, "y_true": y_true, "y_pred": y_pred})
                for j, c in enumerate(CLASSES):
                    pred[f"proba__{c}"] = proba[:, j]
                d = base / "runs" / feat / model
                d.mkdir(parents=True, exist_ok=True)
                pred.to_parquet(d / f"fold-{k}.predictions.parquet", index=False)
                record = {
                    "schema": 1,
                    "corpus": corpus,
                    "manifest_hash": "b69c062fbbc8c752",
                    "split_id": split_id,
                    "split_strategy": split_id.rsplit("-", 1)[0],
                    "speaker_independent": si,
                    "protocol": protocol,
                    "label_scheme": "native-v1",
                    "fold": k,
                    "features": feat,
                    "feature_key": f"{feat.split('@')[0]}/v1-abcdef1234",
                    "model": model,
                    "model_params": {"C": 1.0},
                    "seed": seed,
                    "classes": CLASSES,
                    "n_train": 120,
                    "n_valid": 0,
                    "n_test": len(pred),
                    "metrics": score_all(y_true, y_pred, CLASSES),
                    "fit_seconds": 1.0 + m_i + 0.1 * k,
                    "predict_seconds": 0.01,
                    "device": "cpu",
                    "tuned": False,
                    "best_params": None,
                    "provenance": {"sertool": "0.1.0", "git_commit": None, "python": "3.11", "packages": {}},
                    "created": f"2026-11-22T21:30:0{k}Z",
                }
                (d / f"fold-{k}.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    return base


@pytest.fixture(scope="module")
def results_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    write_fake_results(root)
    return root


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speaker-independent and (easier) speaker-dependent results of the same corpus."""
    root = tmp_path_factory.mktemp("two")
    write_fake_results(root)
    write_fake_results(root, split_id=SD_SPLIT, protocol="speaker-dependent", bonus=0.1, seed=1)
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst / "ravdess" / SI_SPLIT


@pytest.fixture(scope="module")
def board(results_root: Path) -> pd.DataFrame:
    return build_leaderboard(collect_results(results_root), n_boot=N_BOOT, seed=0)


def _pooled(base: Path, feat: str, model: str) -> pd.DataFrame:
    """Pooled predictions of one entry, in the leaderboard's documented order (fold, then utt_id)."""
    files = [base / "runs" / feat / model / f"fold-{k}.predictions.parquet" for k in range(N_FOLDS)]
    frames = [pd.read_parquet(f).assign(fold=k) for k, f in enumerate(files) if f.exists()]
    return pd.concat(frames).sort_values(["fold", "utt_id"]).reset_index(drop=True)


def test_collect_results_reads_every_unit(results_root: Path) -> None:
    res = collect_results(results_root)
    assert len(res.units) == len(FEATURES) * len(MODELS) * N_FOLDS == 18
    assert res.splits() == [("ravdess", SI_SPLIT)]
    assert res.entries() == sorted((f, m) for f in FEATURES for m in MODELS)
    assert set(res.units["fold"]) == {0, 1, 2}
    assert {"wa", "ua", "macro_f1", "recall__sad", "fit_seconds", "split_dir"} <= set(res.units.columns)
    # filters, and a split folder given directly
    assert len(collect_results(results_root, corpus="tess").units) == 0
    assert len(collect_results(results_root / "ravdess" / SI_SPLIT).units) == 18
    preds = res.predictions("mfcc40", "svm")
    assert len(preds) == N_FOLDS * SPK_PER_FOLD * len(CLASSES) * CLIPS
    assert list(preds["fold"].unique()) == [0, 1, 2]


def _hand_record(**changes: object) -> UnitRecord:
    """One unit record with values chosen by hand (none of them a field's default)."""
    fields = {
        "corpus": "tess",
        "split_id": "speaker-2fold-cccc",
        "protocol": "speaker-independent",
        "label_scheme": "4class-v1",
        "fold": 1,
        "features": "whisper-base@3~aug-awgn",
        "model": "logreg",
        "seed": 7,
        "classes": ["neutral", "happy", "sad", "angry"],
        "metrics": {
            "wa": 0.625,
            "ua": 0.6,
            "macro_f1": 0.55,
            "n": 8,
            "per_class_recall": {"neutral": 1.0, "happy": 0.5, "sad": 0.5, "angry": 0.4},
            "confusion": [[2, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]],
        },
        "manifest_hash": "0123456789abcdef",
        "split_strategy": "speaker-2fold",
        "speaker_independent": True,
        "feature_key": "whisper-base/v1-0011223344",
        "model_params": {"max_iter": 500, "C": 0.5},
        "n_train": 40,
        "n_valid": 12,
        "n_test": 8,
        "fit_seconds": 2.5,
        "predict_seconds": 0.25,
        "device": "cuda:0",
        "tuned": True,
        "best_params": {"C": 0.5},
        "provenance": {"sertool": "0.2.0", "git_commit": "abc1234", "python": "3.11.7", "platform": "Linux-x",
                       "packages": {"numpy": "2.4.6"}},
        "created": "2026-12-01T10:00:00Z",
    }  # fmt: skip
    return UnitRecord(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_written_unit_record_is_read_back_with_its_values(tmp_path: Path) -> None:
    layout = ResultsLayout(tmp_path)
    split_dir = layout.split_dir("tess", "speaker-2fold-cccc")
    json_path, pred_path = layout.unit_paths(split_dir, "whisper-base@3~aug-awgn", "logreg", 1)
    json_path.parent.mkdir(parents=True)
    pd.DataFrame(
        {"utt_id": [f"u{i}" for i in range(8)], "speaker": ["s1"] * 4 + ["s2"] * 4,
         "y_true": ["neutral", "neutral", "happy", "happy", "sad", "sad", "angry", "angry"],
         "y_pred": ["neutral", "neutral", "neutral", "happy", "happy", "sad", "sad", "angry"]}
    ).to_parquet(pred_path, index=False)  # fmt: skip
    _hand_record().write(json_path)

    units = collect_results(tmp_path).units
    assert len(units) == 1
    row = units.iloc[0].to_dict()
    expected = {
        "corpus": "tess",
        "split_id": "speaker-2fold-cccc",
        "split_strategy": "speaker-2fold",
        "speaker_independent": True,
        "protocol": "speaker-independent",
        "label_scheme": "4class-v1",
        "fold": 1,
        "features": "whisper-base@3~aug-awgn",
        "feature_key": "whisper-base/v1-0011223344",
        "model": "logreg",
        "model_params": '{"C": 0.5, "max_iter": 500}',
        "seed": 7,
        "classes": ("neutral", "happy", "sad", "angry"),
        "n_train": 40,
        "n_valid": 12,
        "n_test": 8,
        "n": 8,
        "task": "classification",
        "wa": 0.625,
        "ua": 0.6,
        "macro_f1": 0.55,
        "fit_seconds": 2.5,
        "predict_seconds": 0.25,
        "device": "cuda:0",
        "tuned": True,
        "confusion": [[2, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]],
        "layer_weights": None,
        "provenance": '{"git_commit": "abc1234", "packages": {"numpy": "2.4.6"}, "platform": "Linux-x", '
        '"python": "3.11.7", "sertool": "0.2.0"}',
        "created": "2026-12-01T10:00:00Z",
        "split_dir": str(tmp_path / "tess" / "speaker-2fold-cccc"),
        "json_path": str(json_path),
        "predictions_path": str(pred_path),
        "recall__neutral": 1.0,
        "recall__happy": 0.5,
        "recall__sad": 0.5,
        "recall__angry": 0.4,
    }
    assert row == expected
    # the same unit found from its split folder, and its predictions beside it
    assert collect_results(split_dir).units.iloc[0].to_dict() == expected
    preds = collect_results(tmp_path).predictions("whisper-base@3~aug-awgn", "logreg")
    assert list(preds["utt_id"]) == [f"u{i}" for i in range(8)] and set(preds["fold"]) == {1}

    # a record of another schema, at its right place, is refused and the message names its file
    other, _ = layout.unit_paths(split_dir, "whisper-base@3~aug-awgn", "logreg", 0)
    _hand_record(fold=0, schema=2).write(other)
    with pytest.raises(ResultsError, match=re.escape(str(other)) + r".*schema 2"):
        collect_results(tmp_path)


def test_ranking_and_columns(board: pd.DataFrame) -> None:
    assert list(board.columns[: len(BOARD_COLUMNS)]) == list(BOARD_COLUMNS)
    assert [c for c in board.columns if c.startswith("recall__")] == [f"recall__{c}" for c in CLASSES]
    assert len(board) == 6
    assert list(board["rank"]) == [1, 2, 3, 4, 5, 6]
    assert list(board["model"][:2]) == ["svm", "svm"]
    assert list(board["model"][-2:]) == ["knn", "knn"]
    assert board["ua_mean"].is_monotonic_decreasing
    assert (board["folds"] == 3).all() and board["complete"].all()
    assert set(board["corpus"]) == {"ravdess"} and set(board["split_id"]) == {SI_SPLIT}
    assert set(board["protocol"]) == {"speaker-independent"} and set(board["label_scheme"]) == {"native-v1"}
    assert set(board["seed"]) == {0}


def test_numbers_match_numpy(board: pd.DataFrame, results_root: Path) -> None:
    base = results_root / "ravdess" / SI_SPLIT
    for r in board.itertuples(index=False):
        ua, wa = [], []
        for k in range(N_FOLDS):
            p = pd.read_parquet(base / "runs" / r.features / r.model / f"fold-{k}.predictions.parquet")
            ua.append(balanced_accuracy_score(p["y_true"], p["y_pred"]))
            wa.append(accuracy_score(p["y_true"], p["y_pred"]))
        assert r.ua_mean == pytest.approx(np.mean(ua), abs=1e-12)
        assert r.ua_std == pytest.approx(np.std(ua, ddof=1), abs=1e-12)
        assert r.wa_mean == pytest.approx(np.mean(wa), abs=1e-12)
        assert r.wa_std == pytest.approx(np.std(wa, ddof=1), abs=1e-12)
        pooled = _pooled(base, r.features, r.model)
        ua_pooled = balanced_accuracy_score(pooled["y_true"], pooled["y_pred"])
        assert r.ua_pooled == pytest.approx(ua_pooled, abs=1e-12)
        assert r.ua_ci_low < ua_pooled < r.ua_ci_high
        assert r.ua_ci_high - r.ua_ci_low < 0.4
        groups = pooled["speaker"]  # speaker-independent split: speakers are resampled / swapped
        ci = bootstrap_ua_ci(pooled["y_true"], pooled["y_pred"], groups, n_boot=N_BOOT, seed=0)
        assert (r.ua_ci_low, r.ua_ci_high) == pytest.approx(ci, abs=1e-12)
        if r.rank > 1:
            best = _pooled(base, board.at[0, "features"], board.at[0, "model"])
            assert (best["utt_id"] == pooled["utt_id"]).all()
            p = paired_test(best["y_true"], best["y_pred"], pooled["y_pred"], groups, seed=0)
            assert r.p_vs_best == pytest.approx(p, abs=1e-12)
        rec = recall_score(pooled["y_true"], pooled["y_pred"], labels=CLASSES, average=None)
        np.testing.assert_allclose([getattr(r, f"recall__{c}") for c in CLASSES], rec, atol=1e-12)
        assert r.n_test == 180
    fit = board.set_index(["features", "model"])["fit_seconds"]
    assert fit[("mfcc40", "svm")] == pytest.approx(3.1)  # mean of 3.0, 3.1, 3.2


def test_p_values(board: pd.DataFrame) -> None:
    assert np.isnan(board.at[0, "p_vs_best"]) and np.isnan(board.at[0, "p_vs_best_holm"])
    others = board.iloc[1:]
    assert others["p_vs_best"].notna().all()
    knn = board[board["model"] == "knn"]
    assert (knn["p_vs_best"] < 0.01).all()  # 9 speakers, exact sign-flip test: min p = 2/512
    assert (knn["p_vs_best_holm"] < 0.05).all()
    assert (others["p_vs_best_holm"] >= others["p_vs_best"] - 1e-15).all()
    assert (others["p_vs_best_holm"] <= 1).all()


def test_files_html_and_markdown(board: pd.DataFrame, results_root: Path, tmp_path: Path) -> None:
    files = write_leaderboard(board, collect_results(results_root), tmp_path, title="Test board")
    assert {"csv", "md", "html", "ua_ci", "reliability", "provenance"} <= set(files)
    cms = sorted(k for k in files if k.startswith("confusion/"))
    assert len(cms) == 6 and "confusion/whisper-base@all__svm" in cms
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
    for key in ["ua_ci", "reliability", *cms]:
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = files["html"].read_text()
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "<script" not in html
    assert html.count('src="data:image/png;base64,') == 1 + 1 + 6  # UA CI, reliability, confusions
    # the reliability diagram is that of the best three entries
    assert "Reliability (pooled test predictions): #1 whisper-base@all / svm" in html
    assert "#3 whisper-base@all / logreg" in html and "#4 " not in html.split("Reliability")[-1]
    assert "Calibration (test probabilities" in html and "Slices (UA within speakers" in html
    assert "whisper-base@all" in html and "SYNTHETIC" not in html
    md = files["md"].read_text()
    header = md.splitlines()[2]
    for part in ("ravdess", "speaker-independent", SI_SPLIT, "native-v1"):
        assert part in header
    assert "SYNTHETIC" not in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| 1 | whisper-base@all | svm | 3 |")
    assert "## Calibration (test probabilities; mean ± std over folds)" in md
    assert "| features | model | ECE (folds) | ECE (pooled) | Brier | NLL |" in md
    assert (
        "| features | model | speakers | worst speaker | median speaker | spread | 3 worst speakers |" in md
    )
    assert "| UA accepted |" not in md  # no entry carries the out-of-distribution guard's decision
    csv = pd.read_csv(files["csv"])
    assert list(csv.columns[: len(BOARD_COLUMNS)]) == list(BOARD_COLUMNS)
    np.testing.assert_allclose(csv["ua_mean"], board["ua_mean"], rtol=1e-5)
    assert np.isnan(csv.at[0, "p_vs_best"])


def test_csv_byte_identical_across_renders(results_root: Path, tmp_path: Path) -> None:
    a = write_leaderboard(
        build_leaderboard(collect_results(results_root), n_boot=N_BOOT), collect_results(results_root),
        tmp_path / "a", plots=False,
    )  # fmt: skip
    b = write_leaderboard(
        build_leaderboard(collect_results(results_root), n_boot=N_BOOT), collect_results(results_root),
        tmp_path / "b", plots=False,
    )  # fmt: skip
    assert a["csv"].read_bytes() == b["csv"].read_bytes()
    assert a["html"].read_bytes() == b["html"].read_bytes()
    assert "ua_ci" not in a and not (tmp_path / "a" / "confusion").exists()
    # a different bootstrap seed changes the interval (the seed is really used)
    other = build_leaderboard(collect_results(results_root), n_boot=N_BOOT, seed=1)
    first = build_leaderboard(collect_results(results_root), n_boot=N_BOOT, seed=0)
    assert not np.allclose(other["ua_ci_low"], first["ua_ci_low"])


def test_incomplete_entry_is_flagged(results_root: Path, tmp_path: Path) -> None:
    base = _copy(results_root, tmp_path)
    (base / "runs" / "whisper-base@all" / "svm" / "fold-2.json").unlink()  # run interrupted before fold 2
    board = build_leaderboard(collect_results(tmp_path), n_boot=N_BOOT)
    row = board[(board["features"] == "whisper-base@all") & (board["model"] == "svm")].iloc[0]
    assert row["folds"] == 2 and not row["complete"]
    assert row["n_test"] == 120
    assert board["complete"].sum() == 5
    # the p-values are against the best COMPLETE entry; the incomplete one is tested on shared utterances
    best = board[board["p_vs_best"].isna()]
    assert len(best) == 1 and best.iloc[0]["complete"] and best.iloc[0]["model"] == "svm"
    assert not np.isnan(row["p_vs_best"])
    md = write_leaderboard(board, collect_results(tmp_path), tmp_path / "out", plots=False)["md"].read_text()
    assert "2 (incomplete)" in md


def test_split_json_sets_the_expected_folds(results_root: Path, tmp_path: Path) -> None:
    base = _copy(results_root, tmp_path)
    from sertool.splits import Fold, Split

    folds = tuple(Fold(i, (), (), ()) for i in range(4))
    split = Split("speaker-4fold", {}, 0, "speaker", True, "m", "r", "native-v1", folds)
    split.save(base / "split.json")
    board = build_leaderboard(collect_results(tmp_path), n_boot=N_BOOT)
    assert not board["complete"].any()  # every entry lacks fold 3


def test_demo_corpus_gets_the_synthetic_banner(tmp_path: Path) -> None:
    base = write_fake_results(tmp_path, corpus="demo")
    res = collect_results(tmp_path)
    files = write_leaderboard(build_leaderboard(res, n_boot=N_BOOT), res, base, plots=False)
    assert "SYNTHETIC" in files["md"].read_text().splitlines()[4]
    assert "SYNTHETIC" in files["html"].read_text()


def test_render_and_compare(two_splits: Path, tmp_path: Path) -> None:
    _copy(two_splits, tmp_path)
    written = render_leaderboards(tmp_path, compare=True, n_boot=N_BOOT, plots=False)
    for split in (SI_SPLIT, SD_SPLIT):
        assert tmp_path / "ravdess" / split / "leaderboard.csv" in written
    for ext in ("csv", "md", "html"):
        assert tmp_path / f"comparison.{ext}" in written
    comp = pd.read_csv(tmp_path / "comparison.csv")
    assert len(comp) == 6 and (comp["n_splits"] == 2).all()
    si = pd.read_csv(tmp_path / "ravdess" / SI_SPLIT / "leaderboard.csv").set_index(["features", "model"])
    sd = pd.read_csv(tmp_path / "ravdess" / SD_SPLIT / "leaderboard.csv").set_index(["features", "model"])
    comp = comp.set_index(["features", "model"])
    gap = sd["ua_mean"] - si["ua_mean"]
    np.testing.assert_allclose(comp["gap@ravdess"], gap.loc[comp.index], atol=1e-5)
    assert (comp["gap@ravdess"] > 0).all()  # the speaker-dependent split was made easier
    np.testing.assert_allclose(comp[f"ua_mean@ravdess/{SI_SPLIT}"], si.loc[comp.index, "ua_mean"], atol=1e-5)
    # speaker-dependent split: the interval resamples clips, not speakers
    pooled = _pooled(tmp_path / "ravdess" / SD_SPLIT, "mfcc40", "svm")
    ci = bootstrap_ua_ci(pooled["y_true"], pooled["y_pred"], None, n_boot=N_BOOT, seed=0)
    assert sd.loc[("mfcc40", "svm"), ["ua_ci_low", "ua_ci_high"]].tolist() == pytest.approx(ci, abs=1e-6)
    html = (tmp_path / "comparison.html").read_text()
    assert "https://" not in html and "speaker-dependent" in html and SD_SPLIT in html
    # compare_leaderboards refuses the same split twice
    board = build_leaderboard(collect_results(tmp_path, split_id=SI_SPLIT), n_boot=N_BOOT)
    with pytest.raises(ParameterError, match="same split twice"):
        compare_leaderboards([board, board])


def test_errors_name_the_file(two_splits: Path, tmp_path: Path) -> None:
    base = _copy(two_splits, tmp_path)
    with pytest.raises(ParameterError, match="one split"):
        build_leaderboard(collect_results(tmp_path), n_boot=N_BOOT)
    with pytest.raises(ResultsError, match="not found"):
        collect_results(tmp_path / "nope")
    # a unit whose JSON disagrees with its path
    unit = base / "runs" / "mfcc40" / "knn" / "fold-0.json"
    record = json.loads(unit.read_text())
    shutil.copy(unit, unit.with_name("fold-7.json"))
    with pytest.raises(ResultsError, match=r"fold-7\.json.*fold"):
        collect_results(tmp_path)
    unit.with_name("fold-7.json").unlink()
    # a unit JSON whose predictions vanished
    (base / "runs" / "mfcc40" / "knn" / "fold-1.predictions.parquet").unlink()
    res = collect_results(tmp_path, split_id=SI_SPLIT)
    with pytest.raises(ResultsError, match=r"fold-1\.predictions\.parquet.*missing"):
        build_leaderboard(res, n_boot=N_BOOT)
    # another schema
    unit.write_text(json.dumps({**record, "schema": 2}))
    with pytest.raises(ResultsError, match="schema 2"):
        collect_results(tmp_path)


def test_layerwise_table_and_plot_from_single_layer_views(tmp_path: Path, monkeypatch) -> None:
    import sys

    from sertool.bench.leaderboard import layerwise, layerwise_markdown

    monkeypatch.setattr(
        sys.modules[__name__], "FEATURES", ("whisper-tiny.en@0", "whisper-tiny.en@2", "whisper-tiny.en@all")
    )
    write_fake_results(tmp_path / "r")
    results = collect_results(tmp_path / "r")
    board = build_leaderboard(results, n_boot=N_BOOT, seed=0)
    table = layerwise(board)
    # @all is no single layer; 2 layers x 3 models, the fake skill grows with the feature index
    assert table[["encoder", "layer"]].drop_duplicates().values.tolist() == [
        ["whisper-tiny.en", 0],
        ["whisper-tiny.en", 2],
    ]
    assert len(table) == 6 and set(table["model"]) == set(MODELS)
    svm = table[table["model"] == "svm"].set_index("layer")["ua_mean"]
    row = board[(board["features"] == "whisper-tiny.en@2") & (board["model"] == "svm")]
    assert svm[2] == pytest.approx(float(row["ua_mean"].iloc[0]))
    md = layerwise_markdown(table)
    assert "| encoder | model | L0 | L2 |" in md and md.count("**") == 2 * 3  # one best layer per line
    assert "†" not in md and table["complete"].all()
    partial = table.assign(complete=[True] * 5 + [False])
    assert layerwise_markdown(partial).count(" †") == 1 and "† incomplete" in layerwise_markdown(partial)
    files = write_leaderboard(board, results, tmp_path / "out")
    assert files["layerwise"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Layer-wise UA" in files["md"].read_text()
    # views with transforms keep them in the encoder name; boards without layer views give an empty table
    other = pd.DataFrame(
        {"features": ["whisper-base@3~aug-awgn", "whisper-base@5~aug-awgn", "whisper-base@3", "handcrafted94"],
         "model": ["logreg"] * 4, "ua_mean": [0.5, 0.6, 0.4, 0.3], "ua_std": [0.1] * 4, "wa_mean": [0.5] * 4,
         "folds": [6] * 4}
    )  # fmt: skip
    # (an encoder seen at one layer only, like plain whisper-base@3 here, makes no curve)
    assert layerwise(other)[["encoder", "layer"]].values.tolist() == [
        ["whisper-base~aug-awgn", 3],
        ["whisper-base~aug-awgn", 5],
    ]
    assert layerwise(other.iloc[2:]).empty


def test_a_stale_layerwise_plot_is_removed(board: pd.DataFrame, results_root: Path, tmp_path: Path) -> None:
    (tmp_path / "layerwise.png").write_bytes(b"old")
    files = write_leaderboard(board, collect_results(results_root), tmp_path)  # no single-layer views
    assert "layerwise" not in files and not (tmp_path / "layerwise.png").exists()


def _ece_reference(y_true: np.ndarray, proba: np.ndarray, y_pred: np.ndarray) -> float:
    """ECE written out as in Guo et al. (2017): 15 bins (lo, hi] of the top probability, a plain loop."""
    conf = proba.max(axis=1)
    correct = (y_pred == y_true).astype(float)
    total = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


def test_calibration_columns_match_references(board: pd.DataFrame, results_root: Path) -> None:
    from sklearn.metrics import brier_score_loss, log_loss

    base = results_root / "ravdess" / SI_SPLIT
    by_name = sorted(CLASSES)  # scikit-learn reads probability columns in sorted label order
    for r in board.itertuples(index=False):
        folds: dict[str, list[float]] = {"ece": [], "brier": [], "nll": []}
        for k in range(N_FOLDS):
            p = pd.read_parquet(base / "runs" / r.features / r.model / f"fold-{k}.predictions.parquet")
            y = p["y_true"].to_numpy()
            proba = p[[f"proba__{c}" for c in by_name]].to_numpy(dtype=float)
            folds["ece"].append(_ece_reference(y, proba, p["y_pred"].to_numpy()))
            # scikit-learn's multi-class Brier score is the unscaled sum over classes, as here
            rows = proba / proba.sum(axis=1, keepdims=True)  # float32 rows: sum to 1 within 1e-7
            folds["brier"].append(brier_score_loss(y, rows, labels=by_name))
            folds["nll"].append(log_loss(y, rows, labels=by_name))
        for name, values in folds.items():
            assert getattr(r, f"{name}_mean") == pytest.approx(np.mean(values), abs=1e-6), name
            assert getattr(r, f"{name}_std") == pytest.approx(np.std(values, ddof=1), abs=1e-6), name
        # no in_distribution column in these predictions: no accepted-clip figures
        assert np.isnan(r.ua_accepted) and np.isnan(r.accepted_fraction)


def test_speaker_slices_match_sklearn(board: pd.DataFrame, results_root: Path) -> None:
    base = results_root / "ravdess" / SI_SPLIT
    for r in board.itertuples(index=False):
        pooled = _pooled(base, r.features, r.model)
        per = {
            spk: balanced_accuracy_score(part["y_true"], part["y_pred"])
            for spk, part in pooled.groupby("speaker")
        }
        ua = np.array(list(per.values()))
        assert r.n_test_speakers == 9
        assert r.ua_speaker_worst == pytest.approx(ua.min(), abs=1e-12)
        assert r.ua_speaker_median == pytest.approx(np.median(ua), abs=1e-12)
        assert r.ua_speaker_spread == pytest.approx(ua.max() - ua.min(), abs=1e-12)
        worst = sorted(per, key=lambda s: (round(per[s], 12), s))[:3]  # ties by name
        assert r.worst_speakers == "; ".join(f"{s} {per[s]:.3f}" for s in worst)
    assert not [c for c in board.columns if c.startswith("ua_gender_")]  # no gender column here


def test_provenance_json_beside_the_board(board: pd.DataFrame, results_root: Path, tmp_path: Path) -> None:
    a = write_leaderboard(board, collect_results(results_root), tmp_path / "a", plots=False)
    b = write_leaderboard(board, collect_results(results_root), tmp_path / "b", plots=False)
    assert a["provenance"] == tmp_path / "a" / "provenance.json"
    assert a["provenance"].read_bytes() == b["provenance"].read_bytes()  # deterministic
    prov = json.loads(a["provenance"].read_text())
    # write_fake_results: 18 units, seed 0, cpu, sertool 0.1.0, no git commit, created 21:30:00..02
    assert prov["corpus"] == "ravdess" and prov["split_id"] == SI_SPLIT
    assert prov["n_units"] == 18 and prov["folds"] == [0, 1, 2]
    assert prov["git_commits"] == [None] and prov["sertool_versions"] == ["0.1.0"]
    assert prov["devices"] == ["cpu"] and prov["seeds"] == [0]
    assert prov["split_ids"] == [SI_SPLIT] and prov["label_schemes"] == ["native-v1"]
    assert prov["feature_keys"] == ["mfcc40/v1-abcdef1234", "whisper-base/v1-abcdef1234"]
    assert prov["created"] == {"first": "2026-11-22T21:30:00Z", "last": "2026-11-22T21:30:02Z"}
    assert prov["python_versions"] == ["3.11"] and prov["platforms"] == [None] and prov["packages"] == {}
    assert sorted(prov["entries"]) == sorted(f"{f} / {m}" for f in FEATURES for m in MODELS)
    assert prov["entries"]["mfcc40 / svm"]["n_units"] == 3
    assert prov["entries"]["mfcc40 / svm"]["feature_keys"] == ["mfcc40/v1-abcdef1234"]


def test_learned_layer_weights_are_drawn_from_the_unit_records(tmp_path):
    """Frame heads over stacked layers store their learned weights per fold; the board draws them."""
    from sertool.bench.leaderboard import ResultSet, learned_layer_weights, plot_layer_weights

    units = pd.DataFrame(
        {
            "features": ["whisper-base@all"] * 2 + ["handcrafted94"],
            "model": ["attn_pool"] * 2 + ["svm"],
            "fold": [1, 0, 0],
            "layer_weights": [[0.1, 0.2, 0.7], [0.2, 0.2, 0.6], None],
        }
    )
    learned = learned_layer_weights(ResultSet(tmp_path, units))
    assert list(learned) == ["whisper-base@all / attn_pool"]
    np.testing.assert_allclose(learned["whisper-base@all / attn_pool"], [[0.2, 0.2, 0.6], [0.1, 0.2, 0.7]])
    assert plot_layer_weights(learned)[:8] == b"\x89PNG\r\n\x1a\n"
