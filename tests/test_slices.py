"""Honest on new audio, the board side: speaker and gender slices, UA on clips the out-of-distribution guard
accepts, calibration and provenance of a hand-made results folder, the withheld CI of too few speakers, and
the ``ser7-gender`` label scheme.

Every expected number is worked out by hand in the comments (2 speakers, 4 clips each, classes a and b).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sertool.bench.leaderboard import (
    build_leaderboard,
    collect_results,
    compare_leaderboards,
    write_comparison,
    write_leaderboard,
)
from sertool.bench.records import ResultsLayout, UnitRecord
from sertool.data.labels import apply_scheme, get_scheme
from sertool.data.manifest import validate_manifest
from sertool.exceptions import ParameterError
from sertool.metrics import score_all

CLASSES = ["a", "b"]
SPLIT = "speaker-2fold-hand"

# Fold 0 tests speaker s1 (female), fold 1 speaker s2 (male); the predicted class is the more probable one.
#   s1: true a a b b, predicted a a b a -> recall a 2/2, b 1/2 -> UA 0.75
#   s2: true a a b b, predicted b b b b -> recall a 0/2, b 2/2 -> UA 0.5
#   pooled: a 2/4, b 3/4 -> UA 0.625; per speaker: worst 0.5, median 0.625, spread 0.25
#   in_distribution: s1 T T F T, s2 F F T T -> accepted: true a a b b b, predicted a a a b b
#   -> recall a 2/2, b 2/3 -> UA 5/6; accepted fraction 5/8
FOLDS = {
    0: {
        "speaker": "s1",
        "gender": "female",
        "y_true": ["a", "a", "b", "b"],
        "y_pred": ["a", "a", "b", "a"],
        "proba_a": [0.9, 0.7, 0.35, 0.75],
        "in_distribution": [True, True, False, True],
    },
    1: {
        "speaker": "s2",
        "gender": "male",
        "y_true": ["a", "a", "b", "b"],
        "y_pred": ["b", "b", "b", "b"],
        "proba_a": [0.45, 0.15, 0.05, 0.3],
        "in_distribution": [False, False, True, True],
    },
}
# Calibration per fold (top probabilities lie inside bins of width 1/15, none on an edge, one clip per bin):
#   fold 0: confidences .9 .7 .65 .75, correct T T T F -> ECE = (.1 + .3 + .35 + .75) / 4 = 0.375
#           Brier = (.02 + .18 + .245 + 1.125) / 4 = 0.3925   (2-class: 2 (1 - p_true)^2 per clip)
#           NLL = -(ln .9 + ln .7 + ln .65 + ln .25) / 4
#   fold 1: confidences .55 .85 .95 .7, correct F F T T -> ECE = (.55 + .85 + .05 + .3) / 4 = 0.4375
#           Brier = (.605 + 1.445 + .005 + .18) / 4 = 0.55875
#           NLL = -(ln .45 + ln .15 + ln .95 + ln .7) / 4
ECE = (0.375, 0.4375)
BRIER = (0.3925, 0.55875)
NLL = (
    -(math.log(0.9) + math.log(0.7) + math.log(0.65) + math.log(0.25)) / 4,
    -(math.log(0.45) + math.log(0.15) + math.log(0.95) + math.log(0.7)) / 4,
)
PROVENANCE = {
    0: {"git_commit": "bbb222", "packages": {"numpy": "2.4.7", "torch": "2.9.0"}, "device": "cuda:0",
        "created": "2026-12-02T08:00:00Z"},
    1: {"git_commit": "aaa111", "packages": {"numpy": "2.4.6"}, "device": "cpu",
        "created": "2026-12-01T09:30:00Z"},
}  # fmt: skip


def write_hand_results(
    root: Path,
    *,
    protocol: str = "speaker-independent",
    model: str = "logreg",
    guard: tuple[bool, ...] = (True, True),
    gender: bool = True,
) -> Path:
    """Write the hand-made entry (mfcc40 / ``model``) per the results contract; returns the split folder."""
    layout = ResultsLayout(root)
    split_dir = layout.split_dir("hand", SPLIT)
    for k, f in FOLDS.items():
        p_a = np.array(f["proba_a"], dtype=np.float32)
        pred = pd.DataFrame(
            {
                "utt_id": [f"{f['speaker']}_{i}" for i in range(4)],
                "speaker": [f["speaker"]] * 4,
                "y_true": f["y_true"],
                "y_pred": f["y_pred"],
                "proba__a": p_a,
                "proba__b": (1 - p_a).astype(np.float32),
            }
        )
        if gender:
            pred.insert(2, "gender", [f["gender"]] * 4)
        if guard[k]:
            pred["ood_score"] = np.linspace(0.0, 1.0, 4)
            pred["in_distribution"] = f["in_distribution"]
        json_path, pred_path = layout.unit_paths(split_dir, "mfcc40", model, k)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        pred.to_parquet(pred_path, index=False)
        prov = PROVENANCE[k]
        UnitRecord(
            corpus="hand",
            split_id=SPLIT,
            protocol=protocol,
            label_scheme="native-v1",
            fold=k,
            features="mfcc40",
            model=model,
            seed=3,
            classes=CLASSES,
            metrics=score_all(f["y_true"], f["y_pred"], CLASSES),
            speaker_independent=protocol.startswith("speaker-independent"),
            feature_key="mfcc40/v1-0123456789",
            n_test=4,
            device=str(prov["device"]),
            provenance={
                "sertool": "0.2.0",
                "git_commit": prov["git_commit"],
                "python": "3.11.7",
                "platform": "Linux-test",
                "packages": prov["packages"],
            },
            created=str(prov["created"]),
        ).write(json_path)
    return split_dir


@pytest.fixture
def hand(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    root = tmp_path / "results"
    write_hand_results(root)
    return build_leaderboard(collect_results(root), n_boot=100, seed=0), root


def test_slices_and_accepted_ua_hand_computed(hand: tuple[pd.DataFrame, Path]) -> None:
    board, _ = hand
    row = board.iloc[0]
    assert row["ua_pooled"] == pytest.approx(0.625)
    assert row["n_test_speakers"] == 2
    assert row["ua_speaker_worst"] == pytest.approx(0.5)
    assert row["ua_speaker_median"] == pytest.approx(0.625)
    assert row["ua_speaker_spread"] == pytest.approx(0.25)
    assert row["worst_speakers"] == "s2 0.500; s1 0.750"
    assert row["ua_gender_female"] == pytest.approx(0.75) and row["ua_gender_male"] == pytest.approx(0.5)
    assert row["ua_accepted"] == pytest.approx(5 / 6)
    assert row["accepted_fraction"] == pytest.approx(5 / 8)
    # gender columns sit between the extra columns and the per-class recalls
    cols = list(board.columns)
    assert cols.index("accepted_fraction") < cols.index("ua_gender_female") < cols.index("recall__a")


def test_calibration_hand_computed(hand: tuple[pd.DataFrame, Path]) -> None:
    row = hand[0].iloc[0]
    for name, folds in (("ece", ECE), ("brier", BRIER), ("nll", NLL)):
        assert row[f"{name}_mean"] == pytest.approx(np.mean(folds), abs=1e-6), name
        # sample std of two values: |x0 - x1| / sqrt(2)
        assert row[f"{name}_std"] == pytest.approx(abs(folds[0] - folds[1]) / math.sqrt(2), abs=1e-6), name


def test_too_few_speakers_give_no_interval(hand: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    board, root = hand
    assert math.isnan(board.at[0, "ua_ci_low"]) and math.isnan(board.at[0, "ua_ci_high"])
    files = write_leaderboard(board, collect_results(root), tmp_path / "out")
    csv = pd.read_csv(files["csv"])
    assert csv["ua_ci_low"].isna().all() and csv["ua_ci_high"].isna().all()
    assert csv.at[0, "n_test_speakers"] == 2
    text = files["csv"].read_text().splitlines()
    header = text[0].split(",")
    cells = text[1].split(",")
    assert cells[header.index("ua_ci_low")] == "" and cells[header.index("ua_ci_high")] == ""
    md, html = files["md"].read_text(), files["html"].read_text()
    for page in (md, html):
        assert "n/a: 2 speakers" in page
        assert "[, ]" not in page
    assert "| UA female | UA male | UA accepted | accepted |" in md
    assert "s2 0.500; s1 0.750" in md and "s2 0.500; s1 0.750" in html
    # the comparison says the same
    comp = compare_leaderboards([board])
    assert comp.at[0, f"n_test_speakers@hand/{SPLIT}"] == 2
    out = write_comparison(comp, tmp_path / "cmp")
    assert "n/a: 2 speakers" in out["md"].read_text()
    # a speaker-dependent split resamples clips: its interval stands whatever the speaker count
    sd_root = tmp_path / "sd"
    write_hand_results(sd_root, protocol="speaker-dependent")
    sd = build_leaderboard(collect_results(sd_root), n_boot=100, seed=0)
    assert sd.at[0, "ua_ci_low"] <= sd.at[0, "ua_pooled"] <= sd.at[0, "ua_ci_high"]
    assert "n/a" not in write_leaderboard(sd, collect_results(sd_root), tmp_path / "sd-out")["md"].read_text()


def test_partial_or_absent_guard_and_gender(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "results"
    write_hand_results(root, model="logreg", guard=(True, False), gender=False)  # fold 1 ran without guard
    write_hand_results(root, model="knn", guard=(False, False), gender=False)
    with caplog.at_level(logging.WARNING, logger="sertool.bench.leaderboard"):
        board = build_leaderboard(collect_results(root), n_boot=50)
    assert board["ua_accepted"].isna().all() and board["accepted_fraction"].isna().all()
    assert "4 of 8 predictions lack in_distribution" in caplog.text and "mfcc40/logreg" in caplog.text
    assert not [c for c in board.columns if c.startswith("ua_gender_")]
    md = write_leaderboard(board, collect_results(root), tmp_path / "out", plots=False)["md"].read_text()
    assert "| UA accepted |" not in md


def test_provenance_is_the_union_of_the_records(hand: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    board, root = hand
    path = write_leaderboard(board, collect_results(root), tmp_path / "out", plots=False)["provenance"]
    assert path.name == "provenance.json" and path.parent == tmp_path / "out"
    prov = json.loads(path.read_text())
    assert prov["git_commits"] == ["aaa111", "bbb222"]
    assert prov["devices"] == ["cpu", "cuda:0"]
    # fold 1 recorded no torch: null says some unit did not record it
    assert prov["packages"] == {"numpy": ["2.4.6", "2.4.7"], "torch": ["2.9.0", None]}
    assert prov["created"] == {"first": "2026-12-01T09:30:00Z", "last": "2026-12-02T08:00:00Z"}
    assert prov["seeds"] == [3] and prov["split_ids"] == [SPLIT] and prov["label_schemes"] == ["native-v1"]
    assert prov["feature_keys"] == ["mfcc40/v1-0123456789"] and prov["platforms"] == ["Linux-test"]
    assert prov["entries"]["mfcc40 / logreg"]["git_commits"] == ["aaa111", "bbb222"]
    # deterministic: sorted keys, the same bytes on a second render
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"
    again = write_leaderboard(board, collect_results(root), tmp_path / "again", plots=False)["provenance"]
    assert again.read_bytes() == path.read_bytes()


# ------------------------------------------------------------------------------------ ser7-gender scheme


def _manifest(rows: list[tuple[str, object]]) -> pd.DataFrame:
    """A hand-made manifest: (canonical label, gender) per clip."""
    n = len(rows)
    return pd.DataFrame(
        {
            "utt_id": [f"x/u{i}" for i in range(n)],
            "path": [f"/data/x/u{i}.wav" for i in range(n)],
            "rel_path": [f"u{i}.wav" for i in range(n)],
            "corpus": ["x"] * n,
            "speaker": [f"x-s{i % 3}" for i in range(n)],
            "gender": [g for _, g in rows],
            "label": [lab for lab, _ in rows],
            "raw_label": [lab for lab, _ in rows],
            "duration_s": [1.0] * n,
            "sample_rate": [16000] * n,
            "channels": [1] * n,
            "sha1": [f"{i:040x}" for i in range(n)],
            "dup_group": [""] * n,
        }
    )


def test_ser7_gender_crosses_emotion_with_gender(caplog: pytest.LogCaptureFixture) -> None:
    df = _manifest(
        [
            ("angry", "female"),  # u0 -> female_angry
            ("angry", "male"),  # u1 -> male_angry
            ("neutral", "female"),  # u2: ser7 drops neutral (not counted as unknown gender)
            ("happy", None),  # u3: unknown gender, dropped and counted
            ("sad", ""),  # u4: unknown gender, dropped and counted
            ("calm", " Male"),  # u5 -> male_calm (case and spaces do not matter)
            ("excited", "male"),  # u6: ser7 drops excited
            ("surprised", "other"),  # u7: not female/male, dropped and counted
        ]
    )
    with caplog.at_level(logging.WARNING, logger="sertool.data.labels"):
        out = apply_scheme(df, "ser7-gender")
    assert list(out["utt_id"]) == ["x/u0", "x/u1", "x/u5"]
    assert list(out["label"]) == ["female_angry", "male_angry", "male_calm"]
    assert list(out["label_canonical"]) == ["angry", "angry", "calm"]
    assert out.attrs["label_scheme"] == "ser7-gender-v1"
    assert "ser7-gender-v1: 3 clip(s) without a known gender" in caplog.text
    validate_manifest(out)
    assert df.loc[0, "label"] == "angry"  # input untouched


def test_ser7_gender_classes_and_lookup() -> None:
    scheme = get_scheme("ser7-gender-v1")
    assert scheme is get_scheme("ser7-gender")
    classes = scheme.classes()
    # the 7 ser7 classes in canonical order, each female then male
    assert len(classes) == 14
    assert classes[:4] == ["female_calm", "male_calm", "female_happy", "male_happy"]
    assert classes[-2:] == ["female_surprised", "male_surprised"]
    assert scheme.classes(["angry", "neutral"]) == ["female_angry", "male_angry"]
    assert scheme.cross_class("angry", "female") == "female_angry"
    assert scheme.cross_class("neutral", "female") is None and scheme.cross_class("angry", None) is None
    assert get_scheme("ser7").cross_class("angry", "female") == "angry"
    with pytest.raises(ParameterError, match="no 'gender' column"):
        apply_scheme(_manifest([("angry", "female")]).drop(columns="gender"), "ser7-gender")
