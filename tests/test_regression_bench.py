"""Regression targets end to end: a CSV corpus whose target is a known function of the signal (the pitch of a
tone), benchmarked speaker-independently, ranked by CCC, trained, and predicted on new audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tone, write_audio

from sertool.bench.leaderboard import collect_results
from sertool.bench.regression_board import build_regression_board
from sertool.cli import EXIT_OK, main
from sertool.deploy import load_model, predict_files
from sertool.exceptions import ParameterError
from sertool.metrics_regression import ccc

N_SPEAKERS, N_CLIPS = 6, 12


def _pitch_level(freq: float) -> float:
    """The target: octaves above 110 Hz (what the features must recover)."""
    return float(np.log2(freq / 110.0))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Tones of random pitch (110-440 Hz); each speaker has its own loudness, so the pitch is the only thing
    the target depends on. The CSV carries the target as a numeric column ``pitch_level``."""
    root = tmp_path_factory.mktemp("pitch")
    rng = np.random.default_rng(7)
    rows = []
    for s in range(N_SPEAKERS):
        amp = 0.1 + 0.05 * s
        for c in range(N_CLIPS):
            freq = float(110.0 * 2 ** rng.uniform(0.0, 2.0))
            path = write_audio(
                root / f"spk{s}" / f"spk{s}_clip{c:02d}.wav", tone(1.0, freq=freq, amp=amp, seed=s * 100 + c)
            )
            rows.append(
                {
                    "path": str(path),
                    "label": "neutral",
                    "speaker": f"spk{s}",
                    "pitch_level": _pitch_level(freq),
                }
            )
    table = pd.DataFrame(rows)
    csv = root / "corpus.csv"
    table.to_csv(csv, index=False)
    return csv, table


@pytest.fixture(scope="module")
def bench(corpus, tmp_path_factory) -> tuple[Path, Path]:
    csv, _ = corpus
    results, cache = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("cache")
    code = main(
        [
            "bench", "--corpus", "csv", "--csv", str(csv), "--root", str(csv.parent), "--target", "pitch_level", "--features",
            "handcrafted94", "--models", "all", "--split", "speaker-3fold", "--results", str(results),
            "--cache", str(cache), "--jobs", "1", "--unit-jobs", "1",
        ]
    )  # fmt: skip
    assert code == EXIT_OK
    return results, cache


def test_a_regression_bench_ranks_regressors_by_ccc(bench, corpus):
    results, _ = bench
    _, table = corpus
    (split_dir,) = [p for p in (results / "csv").iterdir() if p.is_dir()]
    assert split_dir.name.startswith("speaker-3fold-pitch_level-")  # the target is part of the split id
    board = pd.read_csv(split_dir / "leaderboard.csv")
    # group words select the regression models only: no classifier ran on a continuous target
    assert {"ridge", "svr", "knn_reg"} <= set(board["model"]) and "svm" not in set(board["model"])
    assert (board["folds"] == 3).all() and board["complete"].all()
    assert list(board["ccc_mean"]) == sorted(board["ccc_mean"], reverse=True)  # ranked by CCC
    # the pitch is a known function of the signal: the best regressor recovers it
    assert board["ccc_mean"].iloc[0] > 0.85
    # the board's pooled CCC is CCC of the stored predictions, which hold the CSV's values as truth
    units = collect_results(results).units
    assert (units["task"] == "regression").all()
    best = board.iloc[0]
    ppaths = units[(units["features"] == best["features"]) & (units["model"] == best["model"])][
        "predictions_path"
    ]
    pred = pd.concat([pd.read_parquet(p) for p in ppaths])
    truth = dict(zip(table["path"].map(lambda p: Path(p).name), table["pitch_level"], strict=True))
    names = pred["utt_id"].map(lambda u: u.rsplit("/", 1)[-1] + ".wav")
    np.testing.assert_allclose(pred["y_true"].to_numpy(), names.map(truth).to_numpy(), rtol=1e-9)
    assert best["ccc_pooled"] == pytest.approx(ccc(pred["y_true"], pred["y_pred"]), abs=1e-5)  # CSV: 6 digits
    assert best["ccc_ci_low"] <= best["ccc_pooled"] <= best["ccc_ci_high"]
    assert pd.isna(best["p_vs_best"]) and board["p_vs_best"].iloc[1:].between(0, 1).all()
    md = (split_dir / "leaderboard.md").read_text()
    assert "target: pitch_level (regression)" in md and "CCC" in md
    assert (split_dir / "scatter.png").stat().st_size > 1000
    prov = json.loads((split_dir / "provenance.json").read_text())
    assert prov["split_id"] == split_dir.name and prov["label_schemes"] == ["native-v1:pitch_level"]


def test_rendering_again_gives_the_same_board(bench):
    results, _ = bench
    (split_dir,) = [p for p in (results / "csv").iterdir() if p.is_dir()]
    before = (split_dir / "leaderboard.csv").read_text()
    board = build_regression_board(collect_results(split_dir))
    assert board.attrs["task"] == "regression" and board.attrs["target"] == "pitch_level"
    assert main(["leaderboard", "--results", str(results)]) == EXIT_OK
    assert (split_dir / "leaderboard.csv").read_text() == before


def test_train_and_predict_a_regression_model(corpus, bench, tmp_path, capsys):
    csv, table = corpus
    results, cache = bench
    out = tmp_path / "ridge"
    code = main(
        [
            "train", "--corpus", "csv", "--csv", str(csv), "--root", str(csv.parent), "--target",
            "pitch_level", "--features", "handcrafted94", "--model", "ridge", "--out", str(out), "--cache",
            str(cache), "--jobs", "1", "--split", "speaker-3fold", "--fold", "0", "--results", str(results),
        ]
    )  # fmt: skip
    assert code == EXIT_OK
    card = json.loads((out / "model.json").read_text())
    assert card["task"] == "regression" and card["target"] == "pitch_level" and card["classes"] == []
    assert card["engine"]["onnx"] is None  # regression models predict with their estimator
    values = table["pitch_level"]
    assert card["target_values"]["min"] >= values.min() and card["target_values"]["max"] <= values.max()
    card_md = (out / "MODEL_CARD.md").read_text()
    assert "predicts pitch_level as a number" in card_md and "| CCC (mean ± std over folds) |" in card_md
    model = load_model(out, cache=cache)
    assert model.task == "regression" and model.target == "pitch_level"
    # new audio: tones of known pitch the model never saw (another loudness)
    fresh = [110.0 * 2**k for k in np.linspace(0.1, 1.9, 12)]
    paths = [
        write_audio(tmp_path / "new" / f"t{i}.wav", tone(1.0, freq=f, amp=0.22, seed=900 + i))
        for i, f in enumerate(fresh)
    ]
    df, skipped = predict_files(model, paths, jobs=1)
    assert not skipped and list(df.columns[:4]) == ["path", "start_s", "end_s", "pitch_level"]
    assert ccc([_pitch_level(f) for f in fresh], df["pitch_level"]) > 0.8
    capsys.readouterr()
    assert main(["predict", str(paths[0]), "--model", str(out), "--cache", str(cache), "--json"]) == EXIT_OK
    got = json.loads(capsys.readouterr().out)["predictions"][0]
    assert got["pitch_level"] == pytest.approx(df["pitch_level"].iloc[0], rel=1e-5)


def test_regression_refuses_what_only_applies_to_classes(corpus, bench, tmp_path):
    csv, _ = corpus
    _, cache = bench
    base = [
        "bench",
        "--corpus",
        "csv",
        "--csv",
        str(csv),
        "--target",
        "pitch_level",
        "--features",
        "handcrafted94",
    ]
    base += [
        "--root",
        str(csv.parent),
        "--split",
        "speaker-3fold",
        "--results",
        str(tmp_path),
        "--cache",
        str(cache),
        "--jobs",
        "1",
    ]
    with pytest.raises(ParameterError, match="'svm' is a classification model"):
        main(["--debug", *base, "--models", "svm", "--unit-jobs", "1"])
    with pytest.raises(ParameterError, match="regression target"):
        main(["--debug", *base, "--models", "ridge", "--calibrate", "temperature", "--unit-jobs", "1"])


def test_iemocap_dimensions_are_regression_targets_with_the_rated_values(tmp_path):
    """An IEMOCAP tree (EmoEvaluation files): ``--target arousal`` regresses the rated activation of every
    turn. The audio of each turn is a tone whose pitch follows its rating, so the values are learnable."""
    from test_corpora import _IEMO_HEADER, _iemo_block

    root = tmp_path / "IEMOCAP_full_release"
    rng = np.random.default_rng(3)
    rated: dict[str, float] = {}
    for session in (1, 2, 3):
        for sex in "FM":
            dialog = f"Ses0{session}{sex}_impro01"
            blocks = []
            for turn in range(8):
                utt = f"{dialog}_{sex}{turn:03d}"
                arousal = float(np.round(rng.uniform(1.0, 5.0) * 3) / 3)  # averages of three raters
                rated[f"iemocap/{utt}"] = arousal
                blocks.append(_iemo_block(turn * 2.0, turn * 2.0 + 1.0, utt, "neu", (3.0, arousal, 2.5)))
                y = tone(1.0, freq=110.0 * 2 ** ((arousal - 1.0) / 2.0), amp=0.15, seed=session * 100 + turn)
                write_audio(root / f"Session{session}" / "sentences/wav" / dialog / f"{utt}.wav", y)
            (root / f"Session{session}" / "dialog/EmoEvaluation").mkdir(parents=True, exist_ok=True)
            (root / f"Session{session}" / "dialog/EmoEvaluation" / f"{dialog}.txt").write_text(
                _IEMO_HEADER + "".join(blocks)
            )
    results, cache = tmp_path / "results", tmp_path / "cache"
    code = main(
        [
            "bench", "--corpus", "iemocap", "--root", str(root), "--target", "arousal", "--features",
            "handcrafted94", "--models", "ridge,knn_reg", "--split", "speaker-3fold", "--results", str(results),
            "--cache", str(cache), "--jobs", "1", "--unit-jobs", "1",
        ]
    )  # fmt: skip
    assert code == EXIT_OK
    units = collect_results(results).units
    assert len(units) == 6 and (units["task"] == "regression").all()
    pred = pd.concat([pd.read_parquet(p) for p in units["predictions_path"] if "/ridge/" in p])
    # every test clip's truth is the rating of its turn in the EmoEvaluation file
    assert sorted(pred["utt_id"]) == sorted(rated)
    np.testing.assert_allclose(pred["y_true"].to_numpy(), pred["utt_id"].map(rated).to_numpy(), atol=1e-4)
    board = pd.read_csv(next(results.glob("iemocap/*/leaderboard.csv")))
    assert board["ccc_mean"].max() > 0.8


def test_the_ccc_head_is_saved_without_pickle_and_predicts_as_fitted(corpus, bench, tmp_path):
    csv, _ = corpus
    _, cache = bench
    out = tmp_path / "ccc"
    code = main(
        [
            "train", "--corpus", "csv", "--csv", str(csv), "--root", str(csv.parent), "--target", "pitch_level",
            "--features", "handcrafted94", "--model", "ccc_head", "--out", str(out), "--cache", str(cache),
            "--jobs", "1", "--model-params", json.dumps({"max_epochs": 40, "hidden": [32]}),
        ]
    )  # fmt: skip
    assert (
        code == EXIT_OK and (out / "weights.safetensors").is_file() and not (out / "estimator.skops").exists()
    )
    model = load_model(out, cache=cache)
    fresh = [110.0 * 2**k for k in np.linspace(0.1, 1.9, 10)]
    paths = [
        write_audio(tmp_path / f"t{i}.wav", tone(1.0, freq=f, amp=0.2, seed=300 + i))
        for i, f in enumerate(fresh)
    ]
    df, _ = predict_files(model, paths, jobs=1)
    # the reloaded head is the fitted one: its answers equal the head's own on the same features
    from sertool.data.audio import load_audio

    X = model.features([load_audio(p) for p in paths])
    np.testing.assert_allclose(df["pitch_level"].to_numpy(), model.estimator.predict(X), rtol=1e-5)
    assert ccc([_pitch_level(f) for f in fresh], df["pitch_level"]) > 0.6


def test_a_speaker_normalised_regression_entry_is_named_transductive(corpus, bench, tmp_path):
    csv, _ = corpus
    _, cache = bench
    code = main(
        [
            "bench", "--corpus", "csv", "--csv", str(csv), "--root", str(csv.parent), "--target", "pitch_level",
            "--features", "handcrafted94", "--models", "ridge", "--split", "speaker-3fold", "--normalize",
            "speaker", "--results", str(tmp_path), "--cache", str(cache), "--jobs", "1", "--unit-jobs", "1",
        ]
    )  # fmt: skip
    assert code == EXIT_OK
    board = pd.read_csv(next(tmp_path.glob("csv/*/leaderboard.csv")))
    assert board["protocol"].tolist() == ["speaker-independent, transductive"]
    assert (
        "handcrafted94~norm-speaker (transductive)" in next(tmp_path.glob("csv/*/leaderboard.md")).read_text()
    )
