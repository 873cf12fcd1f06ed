"""A category and its dimensions together: ``--target emotion+arousal+valence`` with the multi-task head, scored
on both (UA on the board, CCC per dimension beside it), trained and predicted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tone, write_audio

from sertool.bench.leaderboard import collect_results
from sertool.cli import EXIT_OK, main
from sertool.data.labels import apply_scheme
from sertool.data.manifest import build_manifest
from sertool.data.targets import apply_target, dimension_columns, task_of
from sertool.deploy import load_model, predict_files
from sertool.exceptions import ParameterError
from sertool.metrics_regression import ccc

pytest.importorskip("torch")

N_SPEAKERS, N_CLIPS = 6, 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Tones whose pitch sets both the class (above 220 Hz: angry) and the arousal rating (octaves above
    110 Hz), and whose loudness sets the valence rating (missing for every 7th clip)."""
    root = tmp_path_factory.mktemp("mtl")
    rng = np.random.default_rng(11)
    rows = []
    for s in range(N_SPEAKERS):
        for c in range(N_CLIPS):
            freq = float(110.0 * 2 ** rng.uniform(0.0, 2.0))
            amp = float(rng.uniform(0.05, 0.3))
            path = write_audio(
                root / f"s{s}" / f"s{s}_{c:02d}.wav", tone(1.0, freq=freq, amp=amp, seed=s * 50 + c)
            )
            rows.append(
                {
                    "path": str(path),
                    "label": "angry" if freq > 220.0 else "sad",
                    "speaker": f"s{s}",
                    "arousal": float(np.log2(freq / 110.0)),
                    "valence": np.nan if (s * N_CLIPS + c) % 7 == 0 else 10.0 * amp,
                }
            )
    table = pd.DataFrame(rows)
    csv = root / "corpus.csv"
    table.to_csv(csv, index=False)
    return csv, table


def test_a_multitask_target_keeps_the_category_and_the_dimensions(corpus):
    csv, table = corpus
    manifest = apply_scheme(build_manifest("csv", csv.parent, csv=csv).manifest, "native")
    out = apply_target(manifest, "emotion+arousal+valence")
    assert task_of(out) == "multitask" and dimension_columns(out) == ["arousal", "valence"]
    assert out.attrs["label_scheme"] == "native-v1:emotion+arousal+valence"
    assert sorted(set(out["label"])) == ["angry", "sad"]  # the category stays the label
    assert int(out["target_value__valence"].isna().sum()) == int(table["valence"].isna().sum())
    with pytest.raises(ParameterError, match="'loudness' is not a numeric column"):
        apply_target(manifest, "emotion+loudness")


def test_the_multitask_head_is_scored_on_the_category_and_each_dimension(corpus, tmp_path):
    csv, _ = corpus
    results, cache = tmp_path / "results", tmp_path / "cache"
    common = [
        "--corpus",
        "csv",
        "--csv",
        str(csv),
        "--root",
        str(csv.parent),
        "--target",
        "emotion+arousal+valence",
    ]
    common += ["--features", "handcrafted94", "--cache", str(cache), "--jobs", "1"]
    params = json.dumps({"mtl_head": {"max_epochs": 60, "patience": 15}})
    code = main(
        ["bench", *common, "--models", "all", "--split", "speaker-3fold", "--results", str(results),
         "--unit-jobs", "1", "--model-params", params]
    )  # fmt: skip
    assert code == EXIT_OK
    units = collect_results(results).units
    assert (
        set(units["model"]) == {"mtl_head"} and (units["task"] == "multitask").all()
    )  # group words: its task
    board = pd.read_csv(next(results.glob("csv/*/leaderboard.csv")))
    row = board.iloc[0]
    assert row["ua_mean"] > 0.85  # the class is a function of the pitch
    assert row["dim__ccc__arousal_mean"] > 0.7 and row["dim__ccc__valence_mean"] > 0.3
    # the board's CCC per dimension is the fold mean of CCC over the rated clips of the stored predictions
    folds = []
    for path in units["predictions_path"]:
        pred = pd.read_parquet(path)
        rated = pred["true__valence"].notna()
        folds.append(ccc(pred.loc[rated, "true__valence"], pred.loc[rated, "pred__valence"]))
    assert row["dim__ccc__valence_mean"] == pytest.approx(np.mean(folds), abs=1e-5)
    md = next(results.glob("csv/*/leaderboard.md")).read_text()
    assert "## Dimensions (multi-task entries" in md and "CCC arousal" in md
    # train the same head and predict new audio: the category and both dimensions
    out = tmp_path / "mtl"
    params_own = json.dumps({"max_epochs": 60, "patience": 15})
    assert (
        main(["train", *common, "--model", "mtl_head", "--out", str(out), "--model-params", params_own]) == 0
    )
    card = json.loads((out / "model.json").read_text())
    assert card["task"] == "multitask" and card["dimensions"] == ["arousal", "valence"]
    model = load_model(out, cache=cache)
    freqs = [130.0, 160.0, 300.0, 400.0]
    paths = [
        write_audio(tmp_path / "new" / f"n{i}.wav", tone(1.0, freq=f, amp=0.2, seed=700 + i))
        for i, f in enumerate(freqs)
    ]
    df, _ = predict_files(model, paths, jobs=1)
    cols = list(df.columns)
    assert cols[3] == "label" and cols.index("arousal") > cols.index("proba__angry") and "valence" in cols
    assert df["label"].tolist() == ["sad", "sad", "angry", "angry"]
    assert np.corrcoef(np.log2(np.asarray(freqs) / 110.0), df["arousal"])[0, 1] > 0.8
