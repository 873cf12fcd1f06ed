"""Manifest validation, parquet round trip, machine-independent hash, summaries and label schemes."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from sertool.data.labels import CANONICAL_LABELS, SCHEMES, apply_scheme, get_scheme
from sertool.data.manifest import (
    MANIFEST_COLUMNS,
    build_manifest,
    load_manifest,
    manifest_hash,
    save_manifest,
    summarize,
    summary_json,
    summary_text,
    validate_manifest,
)
from sertool.exceptions import ManifestError, ParameterError


@pytest.fixture(scope="module")
def demo(demo_root) -> pd.DataFrame:
    """Manifest of the session's demo corpus (4 speakers x 4 labels x 6 clips)."""
    return build_manifest("demo", demo_root).manifest


def tiny(labels: list[str] | None = None) -> pd.DataFrame:
    """A hand-made valid manifest (no files needed for validation and hashing)."""
    labels = labels or ["neutral", "happy", "excited", "sad", "angry", "frustrated"]
    n = len(labels)
    return pd.DataFrame(
        {
            "utt_id": [f"x/u{i}" for i in range(n)],
            "path": [f"/data/x/u{i}.wav" for i in range(n)],
            "rel_path": [f"u{i}.wav" for i in range(n)],
            "corpus": ["x"] * n,
            "speaker": [f"x-s{i % 2}" for i in range(n)],
            "gender": ["female", "male"] * (n // 2) + ["female"] * (n % 2),
            "label": labels,
            "raw_label": labels,
            "duration_s": np.linspace(1.0, 2.0, n),
            "sample_rate": [16000] * n,
            "channels": [1] * n,
            "sha1": [f"{i:040x}" for i in range(n)],
            "dup_group": [""] * n,
        }
    )


# --------------------------------------------------------------------------------------------- validation


def test_tiny_is_valid():
    validate_manifest(tiny())


def test_missing_columns():
    with pytest.raises(ManifestError, match="manifest lacks columns: sha1, dup_group"):
        validate_manifest(tiny().drop(columns=["sha1", "dup_group"]))


def test_empty_manifest():
    with pytest.raises(ManifestError, match="manifest is empty"):
        validate_manifest(tiny().iloc[:0])


def test_duplicate_utt_ids():
    df = tiny()
    df.loc[3, "utt_id"] = "x/u0"
    df.loc[5, "utt_id"] = "x/u1"
    with pytest.raises(ManifestError, match=r"duplicate utt_id values, e\.g\. 'x/u0' \(2 in all\)"):
        validate_manifest(df)


@pytest.mark.parametrize("col", ["utt_id", "speaker", "label", "path"])
@pytest.mark.parametrize("blank", ["", None])
def test_blank_required_cells(col, blank):
    df = tiny()
    df[col] = df[col].astype(object)
    df.loc[2, col] = blank
    with pytest.raises(ManifestError, match=rf"1 rows have no {col} \(first: row 2\)"):
        validate_manifest(df)


def test_labels_outside_canonical_set():
    df = tiny(["neutral", "joy", "angry", "rage"])
    with pytest.raises(ManifestError, match=r"labels outside the canonical set: \['joy', 'rage'\]"):
        validate_manifest(df)
    df.attrs["label_scheme"] = "native-v1"
    with pytest.raises(ManifestError, match="outside the canonical set"):
        validate_manifest(df)
    df.attrs["label_scheme"] = "custom-v1"  # a scheme may define its own class names
    validate_manifest(df)


def test_gender_may_be_unknown():
    df = tiny()
    df["gender"] = None
    validate_manifest(df)


# --------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path, demo):
    path = save_manifest(demo, tmp_path / "out" / "manifest.parquet")
    assert path == tmp_path / "out" / "manifest.parquet"
    assert sorted(os.listdir(path.parent)) == ["manifest.parquet"]  # no temporary file left
    back = load_manifest(path)
    pd.testing.assert_frame_equal(back, demo, check_dtype=False)
    assert back.attrs["corpus"] == "demo"
    assert back.attrs["manifest_hash"] == manifest_hash(demo)
    assert list(back.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert manifest_hash(back) == manifest_hash(demo)


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "m.parquet"
    save_manifest(tiny(), path)
    smaller = tiny(["sad", "angry"])
    save_manifest(smaller, path)
    assert list(load_manifest(path)["label"]) == ["sad", "angry"]
    assert os.listdir(tmp_path) == ["m.parquet"]


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.parquet"
    save_manifest(tiny(), path)
    before = path.read_bytes()

    def broken(self, target, **kw):
        with open(target, "wb") as fh:
            fh.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        save_manifest(tiny(["sad", "angry"]), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.parquet"]


def test_save_refuses_an_invalid_manifest(tmp_path):
    with pytest.raises(ManifestError, match="lacks columns"):
        save_manifest(tiny().drop(columns=["label"]), tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_load_errors(tmp_path):
    with pytest.raises(ManifestError, match="no manifest at"):
        load_manifest(tmp_path / "absent.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("utt_id,label\n")
    with pytest.raises(ManifestError, match="not a readable parquet manifest"):
        load_manifest(bad)
    partial = tmp_path / "partial.parquet"
    tiny().drop(columns=["dup_group"]).to_parquet(partial)
    with pytest.raises(ManifestError, match="lacks columns: dup_group"):
        load_manifest(partial)


# --------------------------------------------------------------------------------------------- hash


def test_hash_is_machine_independent(tmp_path, demo_root, demo):
    copy = shutil.copytree(demo_root, tmp_path / "elsewhere" / "demo_copy")
    other = build_manifest("demo", copy).manifest
    assert (other["path"] != demo["path"]).all()  # absolute paths differ ...
    assert manifest_hash(other) == manifest_hash(demo)  # ... the hash does not
    assert len(manifest_hash(demo)) == 16 and int(manifest_hash(demo), 16) >= 0


def test_hash_ignores_row_order_but_not_content(demo):
    h = manifest_hash(demo)
    assert manifest_hash(demo.sample(frac=1.0, random_state=0)) == h
    relabelled = demo.copy()
    relabelled.loc[0, "label"] = "sad" if relabelled.loc[0, "label"] != "sad" else "happy"
    assert manifest_hash(relabelled) != h
    respoken = demo.copy()
    respoken.loc[3, "speaker"] = "demo-other"
    assert manifest_hash(respoken) != h
    changed_audio = demo.copy()
    changed_audio.loc[5, "sha1"] = "0" * 40
    assert manifest_hash(changed_audio) != h
    assert manifest_hash(demo.iloc[1:]) != h


def test_hash_changes_when_a_file_changes(tmp_path, demo_root, demo):
    copy = shutil.copytree(demo_root, tmp_path / "c")
    target = copy / "spk01" / "spk01_sad_01.wav"
    data = bytearray(target.read_bytes())
    data[-2:] = b"\x01\x00"  # flip the last sample
    target.write_bytes(bytes(data))
    assert manifest_hash(build_manifest("demo", copy).manifest) != manifest_hash(demo)


# --------------------------------------------------------------------------------------------- summary


def test_summary_of_demo(demo):
    s = summarize(demo)
    assert s["corpus"] == "demo" and s["synthetic"] is True
    assert s["utterances"] == 96 and s["speakers"] == 4
    assert s["labels"] == {"neutral": 24, "happy": 24, "sad": 24, "angry": 24}
    assert list(s["labels"]) == ["neutral", "happy", "sad", "angry"]  # canonical order
    assert s["sample_rates"] == [16000]
    assert s["duplicate_groups"] == 0
    assert s["total_seconds"] == pytest.approx(demo["duration_s"].sum(), abs=0.01)
    assert 1.0 <= s["duration_s"]["min"] <= s["duration_s"]["mean"] <= s["duration_s"]["max"] <= 1.8
    assert s["manifest_hash"] == manifest_hash(demo)
    text = summary_text(s)
    assert "synthetic demo corpus" in text and "utterances:    96" in text
    assert '"utterances": 96' in summary_json(s)


# --------------------------------------------------------------------------------------------- label schemes


def test_ser7_drops_neutral_and_non_study_classes():
    df = tiny(["neutral", "calm", "happy", "excited", "boredom", "disgust", "surprised", "other"])
    df.attrs["corpus"] = "x"
    out = apply_scheme(df, "ser7")
    assert list(out["label"]) == ["calm", "happy", "disgust", "surprised"]
    assert list(out["label_canonical"]) == ["calm", "happy", "disgust", "surprised"]
    assert list(out["utt_id"]) == ["x/u1", "x/u2", "x/u5", "x/u6"]
    assert out.attrs == {"corpus": "x", "label_scheme": "ser7-v1"}
    assert df.loc[0, "label"] == "neutral"  # input untouched
    validate_manifest(out)


def test_ser4_maps_excited_to_happy():
    out = apply_scheme(tiny(), "ser4-v1")
    assert list(out["label"]) == ["neutral", "happy", "happy", "sad", "angry"]
    assert list(out["label_canonical"]) == ["neutral", "happy", "excited", "sad", "angry"]
    assert "frustrated" not in set(out["label"])
    assert out.attrs["label_scheme"] == "ser4-v1"


def test_native_keeps_everything():
    df = tiny(list(CANONICAL_LABELS))
    out = apply_scheme(df, "native")
    assert list(out["label"]) == list(CANONICAL_LABELS)
    assert out.attrs["label_scheme"] == "native-v1"


def test_scheme_classes_and_lookup():
    assert get_scheme("ser4").classes() == ["neutral", "happy", "sad", "angry"]
    assert get_scheme("ser7").classes(["neutral", "sad", "calm"]) == ["calm", "sad"]
    assert get_scheme("ser6-v1").classes() == ["neutral", "happy", "sad", "angry", "fearful", "disgust"]
    assert get_scheme(SCHEMES["ser7"]) is SCHEMES["ser7"]
    with pytest.raises(ParameterError, match=r"unknown label scheme 'ser9'; known: native-v1, ser7-v1"):
        get_scheme("ser9")
    with pytest.raises(ParameterError, match="unknown label scheme 'ser7-v2'"):
        get_scheme("ser7-v2")


def test_every_scheme_maps_into_canonical_labels():
    for scheme in SCHEMES.values():
        assert set(scheme.mapping) <= set(CANONICAL_LABELS), scheme.name
        assert {v for v in scheme.mapping.values() if v is not None} <= set(CANONICAL_LABELS), scheme.name
