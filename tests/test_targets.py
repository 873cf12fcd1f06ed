"""Targets other than the emotion: ``--target intensity`` / ``gender`` through manifests, splits, bench and
train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_audio

from sertool.cli import EXIT_OK, main
from sertool.data.labels import apply_scheme
from sertool.data.manifest import build_manifest
from sertool.data.targets import VALUE_COLUMN, apply_target, candidate_targets, target_of, task_of
from sertool.exceptions import ParameterError
from sertool.splits import make_split


def _ravdess(root: Path) -> dict[str, str]:
    """Two actors x two emotions x both intensities, .wav names; the intensity each file name encodes."""
    want = {}
    for actor in ("01", "02", "03", "04"):
        for emo in ("03", "05"):  # happy, angry: both have a strong intensity
            for code, name in (("01", "normal"), ("02", "strong")):
                stem = f"03-01-{emo}-{code}-01-01-{actor}"
                write_audio(root / f"Actor_{actor}" / f"{stem}.wav", freq=180 + 40 * int(code))
                want[f"ravdess/{stem}"] = name
    return want


def test_intensity_of_ravdess_file_names(tmp_path: Path) -> None:
    want = _ravdess(tmp_path / "ravdess")
    manifest = apply_scheme(build_manifest("ravdess", tmp_path / "ravdess").manifest, "native")
    out = apply_target(manifest, "intensity")
    assert dict(zip(out["utt_id"], out["label"], strict=True)) == want
    assert sorted(set(out["emotion"])) == ["angry", "happy"]  # the emotion is kept beside the target
    assert (
        out.attrs["label_scheme"] == "native-v1:intensity"
        and target_of(out.attrs["label_scheme"]) == "intensity"
    )
    assert "intensity" in candidate_targets(manifest) and "gender" in candidate_targets(manifest)
    assert apply_target(manifest, "emotion") is manifest


def test_target_errors_name_the_column_and_the_choices(demo_root: Path) -> None:
    manifest = apply_scheme(build_manifest("demo", demo_root).manifest, "native")
    with pytest.raises(ParameterError, match=r"'loudness' is not a column.*gender"):
        apply_target(manifest, "loudness")
    words = manifest.assign(arousal=np.where(manifest.index % 2, "high", "low"))
    with pytest.raises(ParameterError, match="regression target, but 96 value"):
        apply_target(words, "arousal:regression")
    with pytest.raises(ParameterError, match="1 distinct value"):
        apply_target(manifest.assign(room="studio"), "room")
    with pytest.raises(ParameterError, match="already the target"):
        apply_target(apply_target(manifest, "gender"), "gender")


def test_missing_target_values_are_left_out(demo_root: Path) -> None:
    manifest = apply_scheme(build_manifest("demo", demo_root).manifest, "native")
    level = pd.Series(np.where(np.arange(len(manifest)) % 2 == 0, 1.0, 2.0)).where(manifest.index % 5 != 0)
    out = apply_target(manifest.assign(level=level), "level")
    assert len(out) == int(level.notna().sum())
    assert sorted(set(out["label"])) == ["1", "2"]  # levels read as floats are printed as integers
    words = pd.Series(
        np.where(manifest.index % 3 == 0, "Unspecified", np.where(manifest.index % 2, "high", "low"))
    )
    out = apply_target(manifest.assign(level=words), "level")  # CREMA-D's unspecified level is no class
    assert sorted(set(out["label"])) == ["high", "low"] and len(out) == int((manifest.index % 3 != 0).sum())


def test_the_target_is_part_of_the_split_id(demo_root: Path) -> None:
    manifest = apply_scheme(build_manifest("demo", demo_root).manifest, "native")
    emotion = make_split(manifest, "speaker-2fold", seed=0)
    gender = make_split(apply_target(manifest, "gender"), "speaker-2fold", seed=0)
    assert emotion.target == "emotion" and gender.target == "gender"
    assert gender.id.startswith("speaker-2fold-gender-") and "-gender-" not in emotion.id
    assert gender.id.rsplit("-", 1)[1] != emotion.id.rsplit("-", 1)[1]


def test_bench_and_train_on_another_target(demo_root: Path, tmp_path: Path) -> None:
    common = [
        "--corpus",
        "demo",
        "--root",
        str(demo_root),
        "--cache",
        str(tmp_path / "c"),
        "--target",
        "gender",
    ]
    results = tmp_path / "r"
    bench = ["--features", "handcrafted94", "--models", "logreg", "--split", "speaker-2fold", "--jobs", "1"]
    assert main(["bench", *common, *bench, "--results", str(results)]) == EXIT_OK
    (split_dir,) = (results / "demo").iterdir()
    assert split_dir.name.startswith("speaker-2fold-gender-")
    assert "target: gender" in (split_dir / "leaderboard.md").read_text()
    preds = pd.concat(pd.read_parquet(p) for p in split_dir.rglob("fold-*.predictions.parquet"))
    truth = build_manifest("demo", demo_root).manifest.set_index("utt_id")["gender"]
    assert (preds["y_true"].to_numpy() == truth.loc[preds["utt_id"]].to_numpy()).all()
    assert set(preds["y_pred"]) <= {"female", "male"}

    out = tmp_path / "m"
    assert (
        main(["train", *common, "--features", "handcrafted94", "--model", "logreg", "--out", str(out)]) == 0
    )
    card = json.loads((out / "model.json").read_text())
    assert sorted(card["classes"]) == ["female", "male"] and card["label_scheme"] == "native-v1:gender"
    assert "--target gender" in (out / "MODEL_CARD.md").read_text()


def test_a_continuous_column_is_a_regression_target_binned_for_stratification(demo_root: Path) -> None:
    manifest = apply_scheme(build_manifest("demo", demo_root).manifest, "native")
    rng = np.random.default_rng(0)
    arousal = pd.Series(rng.uniform(1.0, 5.0, len(manifest))).where(manifest.index % 7 != 0)
    out = apply_target(manifest.assign(arousal=arousal), "arousal")
    assert task_of(out) == "regression" and task_of(manifest) == "classification"
    assert len(out) == int(arousal.notna().sum())  # clips without a rating are left out
    np.testing.assert_array_equal(out[VALUE_COLUMN].to_numpy(), arousal.dropna().to_numpy())
    assert (
        out.attrs["label_scheme"] == "native-v1:arousal" and target_of(out.attrs["label_scheme"]) == "arousal"
    )
    # five equal-count bins, in order of the value: every value of bin k lies below every value of bin k+1
    counts = out["label"].value_counts()
    assert sorted(counts.index) == ["b1", "b2", "b3", "b4", "b5"] and counts.max() - counts.min() <= 1
    ranges = out.groupby("label")[VALUE_COLUMN].agg(["min", "max"]).sort_index()
    assert (ranges["max"].to_numpy()[:-1] < ranges["min"].to_numpy()[1:]).all()
    assert "arousal" in candidate_targets(manifest.assign(arousal=arousal))
    # a numeric column with few levels is categorical unless asked for as a regression target
    level = manifest.assign(level=np.where(manifest.index % 2, 1.0, 2.0))
    assert task_of(apply_target(level, "level")) == "classification"
    forced = apply_target(level, "level:regression")
    assert task_of(forced) == "regression" and forced.attrs["label_scheme"] == "native-v1:level:regression"
    assert sorted(set(forced["label"])) == ["b1", "b2"]  # ties: as many bins as distinct values
