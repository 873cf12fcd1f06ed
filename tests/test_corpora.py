"""Corpus adapters on fixture folders copying each real layout, plus the real corpora (when present)."""

from __future__ import annotations

import logging
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tone, write_audio

from sertool.data.audio import load_audio
from sertool.data.corpora import ADAPTERS, get_adapter
from sertool.data.corpora.csv import CsvAdapter
from sertool.data.manifest import MANIFEST_COLUMNS, build_manifest, load_manifest, save_manifest
from sertool.exceptions import CorpusError, ParameterError


def clip(root: Path, rel: str, *, sr: int = 16000, dur: float = 0.25, channels: int = 1, **kw) -> Path:
    """Write a short tone at ``root/rel``, seeded by ``rel`` so that no two files are byte-identical."""
    seed = zlib.crc32(rel.encode())
    y = tone(dur, sr=sr, freq=150 + seed % 200, seed=seed)
    if channels > 1:
        y = np.stack([y * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return write_audio(root / rel, y, sr, **kw)


def skipped_map(build, root: Path) -> dict[str, str]:
    """Skipped files as {path relative to root: reason}."""
    out = {}
    for s in build.skipped:
        p = Path(s.path)
        out[p.relative_to(root).as_posix() if p.is_relative_to(root) else s.path] = s.reason
    return out


def by_id(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index("utt_id")


def test_registry_lists_every_adapter():
    assert {"ravdess", "tess", "cremad", "savee", "emodb", "iemocap", "shemo", "csv", "demo"} <= set(ADAPTERS)
    with pytest.raises(ParameterError, match=r"unknown corpus 'nope'.*ravdess"):
        get_adapter("nope")


def test_missing_root_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        build_manifest("emodb", tmp_path / "absent")
    with pytest.raises(CorpusError, match="no usable utterance"):
        build_manifest("emodb", tmp_path)


# --------------------------------------------------------------------------------------------- RAVDESS


def test_ravdess_fixture(tmp_path):
    root = tmp_path / "ravdess"
    clip(root, "Actor_01/03-01-01-01-01-01-01.wav", sr=48000, channels=2)  # original: 48 kHz stereo
    clip(root, "Actor_01/03-01-05-02-01-01-01.flac")
    clip(root, "Actor_02/03-01-08-02-02-02-02.ogg")
    clip(root, "Actor_02/03-02-06-01-01-02-02.wav")  # song
    first = clip(root, "Actor_07/03-01-03-01-02-01-07.wav", sr=48000)
    shutil.copyfile(first, root / "Actor_07/03-01-03-01-02-02-07.wav")  # the byte-identical release pair
    clip(root, "Actor_01/03-01-09-01-01-01-01.wav")  # unknown emotion code
    clip(root, "Actor_01/take1.wav")  # no naming rule
    clip(root, "Actor_02/03-01-01-01-01-01-03.wav")  # actor code vs folder
    (root / "Actor_02/03-01-02-01-01-01-02.wav").write_bytes(b"")  # empty
    (root / "Actor_02/03-01-04-01-01-01-02.wav").write_text("not audio\n")  # text named .wav
    clip(root, "Actor_01/._03-01-01-01-01-01-01.wav")  # macOS resource fork: hidden
    clip(root, ".trash/03-01-01-01-01-02-01.wav")  # hidden folder
    (root / "Actor_01/README.txt").write_text("not audio")

    b = build_manifest("ravdess", root)
    df = by_id(b.manifest)
    assert list(b.manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert list(df.index) == [
        "ravdess/03-01-01-01-01-01-01",
        "ravdess/03-01-03-01-02-01-07",
        "ravdess/03-01-03-01-02-02-07",
        "ravdess/03-01-05-02-01-01-01",
        "ravdess/03-01-08-02-02-02-02",
        "ravdess/03-02-06-01-01-02-02",
    ]
    assert list(df["label"]) == ["neutral", "happy", "happy", "angry", "surprised", "fearful"]
    assert list(df["speaker"]) == [
        "ravdess-01",
        "ravdess-07",
        "ravdess-07",
        "ravdess-01",
        "ravdess-02",
        "ravdess-02",
    ]
    assert list(df["gender"]) == ["male", "male", "male", "male", "female", "female"]
    assert list(df["intensity"]) == ["normal", "normal", "normal", "strong", "strong", "normal"]
    assert list(df["vocal_channel"]) == ["speech"] * 5 + ["song"]
    assert list(df["sample_rate"]) == [48000, 48000, 48000, 16000, 16000, 16000]
    assert list(df["channels"]) == [2, 1, 1, 1, 1, 1]
    assert df.loc["ravdess/03-01-05-02-01-01-01", "rel_path"] == "Actor_01/03-01-05-02-01-01-01.flac"
    assert df.loc["ravdess/03-01-08-02-02-02-02", "rel_path"].endswith(".ogg")
    # duplicate pair: both rows carry the same group, nobody else does
    dups = df[df["dup_group"] != ""]
    assert list(dups.index) == ["ravdess/03-01-03-01-02-01-07", "ravdess/03-01-03-01-02-02-07"]
    assert dups["dup_group"].nunique() == 1 and dups["dup_group"].iloc[0] == dups["sha1"].iloc[0]
    summary = b.summary()
    assert summary["duplicate_groups"] == 1
    assert summary["utterances"] == 6 and summary["speakers"] == 3
    assert summary["sample_rates"] == [16000, 48000]

    skipped = skipped_map(b, root)
    assert set(skipped) == {
        "Actor_01/03-01-09-01-01-01-01.wav",
        "Actor_01/take1.wav",
        "Actor_02/03-01-01-01-01-01-03.wav",
        "Actor_02/03-01-02-01-01-01-02.wav",
        "Actor_02/03-01-04-01-01-01-02.wav",
    }
    assert skipped["Actor_01/03-01-09-01-01-01-01.wav"] == "unknown emotion code 09"
    assert "does not match" in skipped["Actor_01/take1.wav"]
    assert skipped["Actor_02/03-01-01-01-01-01-03.wav"] == "actor code 03 disagrees with folder Actor_02"
    assert skipped["Actor_02/03-01-02-01-01-01-02.wav"] == "empty file (0 bytes)"
    assert skipped["Actor_02/03-01-04-01-01-01-02.wav"].startswith("unreadable:")
    assert "Format not recognised" in skipped["Actor_02/03-01-04-01-01-01-02.wav"]

    # loading: mono float32 at 16 kHz with the manifest's duration
    for row in b.manifest.itertuples():
        y = load_audio(row.path)
        assert y.ndim == 1 and y.dtype == np.float32
        assert abs(y.size - row.duration_s * 16000) <= 1


# --------------------------------------------------------------------------------------------- TESS


def test_tess_fixture_rates_and_quirks(tmp_path):
    root = tmp_path / "tess"
    clip(root, "OAF_neutral/OA_bite_neutral.wav", sr=24414)  # the official prefix typo
    clip(root, "OAF_neutral/OAF_back_neutral.wav", sr=24414)
    clip(root, "OAF_Fear/OAF_food_fear.wav", sr=96000, dur=0.3)  # 96 kHz in the original
    clip(root, "YAF_pleasant_surprised/YAF_dog_ps.wav", sr=48000, channels=2)
    clip(root, "YAF_sad/YAF_dog_sad.flac", sr=24414)
    clip(root, "YAF_happy/YAF_dog_joy.wav", sr=24414)  # unknown emotion
    clip(root, "XAF_angry/XAF_dog_angry.wav", sr=24414)  # unknown speaker
    clip(root, "YAF_sad/OAF_dog_sad.wav", sr=24414)  # speaker disagrees with folder
    clip(root, "YAF_sad/OA_dog_sad.wav", sr=24414)  # OA is only accepted inside OAF_*

    b = build_manifest("tess", root)
    df = by_id(b.manifest)
    assert list(df.index) == [
        "tess/OAF_back_neutral",
        "tess/OAF_food_fear",
        "tess/OA_bite_neutral",
        "tess/YAF_dog_ps",
        "tess/YAF_dog_sad",
    ]
    assert df.loc["tess/OA_bite_neutral", "speaker"] == "tess-OAF"
    assert df.loc["tess/OA_bite_neutral", "name_quirk"].startswith("prefix OA")
    assert list(df["label"]) == ["neutral", "fearful", "neutral", "surprised", "sad"]
    assert list(df["speaker"]) == ["tess-OAF"] * 3 + ["tess-YAF"] * 2
    assert set(df["gender"]) == {"female"}
    assert list(df["age"]) == [64, 64, 64, 26, 26]
    assert list(df["sample_rate"]) == [24414, 96000, 24414, 48000, 24414]
    assert list(df["channels"]) == [1, 1, 1, 2, 1]
    assert (df["dup_group"] == "").all()
    skipped = skipped_map(b, root)
    assert skipped == {
        "XAF_angry/XAF_dog_angry.wav": "unknown speaker prefix 'XAF'",
        "YAF_happy/YAF_dog_joy.wav": "unknown emotion code 'joy'",
        "YAF_sad/OAF_dog_sad.wav": "speaker OAF disagrees with folder YAF_sad",
        "YAF_sad/OA_dog_sad.wav": "unknown speaker prefix 'OA'",
    }
    for row in b.manifest.itertuples():
        y = load_audio(row.path)
        assert y.ndim == 1 and y.dtype == np.float32
        assert abs(y.size - row.duration_s * 16000) <= 1
    assert load_audio(df.loc["tess/OAF_food_fear", "path"]).size == 4800  # 0.3 s at 96 kHz -> 16 kHz


# --------------------------------------------------------------------------------------------- CREMA-D


def _cremad(root: Path, demographics: bool) -> None:
    for name in (
        "1001_DFA_ANG_XX",
        "1001_IEO_HAP_HI",
        "1002_TIE_SAD_LO",
        "1091_WSI_NEU_MD",
        "1040_ITH_SAD_X",  # the release's single-X level
        "1001_DFA_JOY_XX",  # unknown emotion
        "1001_ABC_ANG_XX",  # unknown sentence
        "1092_DFA_ANG_XX",  # actor out of range
        "1001_DFA_ANG",  # no level: no naming rule
    ):
        clip(root, f"AudioWAV/{name}.wav")
    (root / "AudioWAV/1076_MTI_SAD_XX.wav").write_bytes(b"")  # empty in the official release
    clip(root, "AudioOGG/1001_DFA_ANG_XX.ogg")  # the same utterance in another format
    if demographics:
        (root / "VideoDemographics.csv").write_text(
            "ActorID,Age,Sex,Race,Ethnicity\n"
            "1001,51,Male,Caucasian,Not Hispanic\n"
            "1002,21,Female,Caucasian,Not Hispanic\n"
            "1040,32,Male,Caucasian,Not Hispanic\n"
            "1076,25,Female,African American,Not Hispanic\n"
            "1091,29,Female,Asian,Not Hispanic\n"
        )


def test_cremad_fixture(tmp_path):
    root = tmp_path / "CREMA-D"
    _cremad(root, demographics=True)
    b = build_manifest("cremad", root)
    df = by_id(b.manifest)
    assert list(df.index) == [
        "cremad/1001_DFA_ANG_XX",
        "cremad/1001_IEO_HAP_HI",
        "cremad/1002_TIE_SAD_LO",
        "cremad/1040_ITH_SAD_X",
        "cremad/1091_WSI_NEU_MD",
    ]
    assert list(df["label"]) == ["angry", "happy", "sad", "sad", "neutral"]
    assert list(df["raw_label"]) == ["ANG", "HAP", "SAD", "SAD", "NEU"]
    assert list(df["speaker"]) == ["cremad-1001", "cremad-1001", "cremad-1002", "cremad-1040", "cremad-1091"]
    assert list(df["gender"]) == ["male", "male", "female", "male", "female"]
    assert list(df["age"]) == [51, 51, 21, 32, 29]
    assert list(df["level"]) == ["unspecified", "high", "low", "unspecified", "medium"]
    assert list(df["sentence"]) == ["DFA", "IEO", "TIE", "ITH", "WSI"]
    assert df.loc["cremad/1040_ITH_SAD_X", "name_quirk"].startswith("level X")
    assert df.loc["cremad/1001_DFA_ANG_XX", "rel_path"] == "AudioWAV/1001_DFA_ANG_XX.wav"
    skipped = skipped_map(b, root)
    assert skipped == {
        "AudioWAV/1076_MTI_SAD_XX.wav": "empty file (0 bytes)",
        "AudioWAV/1001_DFA_JOY_XX.wav": "unknown emotion code JOY",
        "AudioWAV/1001_ABC_ANG_XX.wav": "unknown sentence code ABC",
        "AudioWAV/1092_DFA_ANG_XX.wav": "unknown actor code 1092 (expected 1001..1091)",
        "AudioWAV/1001_DFA_ANG.wav": "name does not match CREMA-D <actor>_<sentence>_<emotion>_<level>",
        "AudioOGG/1001_DFA_ANG_XX.ogg": (
            "duplicate of utterance cremad/1001_DFA_ANG_XX already read from AudioWAV/1001_DFA_ANG_XX.wav"
        ),
    }
    assert b.summary()["skipped"][0]["reason"]  # the summary carries the reasons too


def test_cremad_without_demographics_leaves_gender_unknown(tmp_path):
    root = tmp_path / "CREMA-D"
    _cremad(root, demographics=False)
    df = build_manifest("cremad", root).manifest
    assert len(df) == 5
    assert df["gender"].isna().all() and df["age"].isna().all()
    back = load_manifest(save_manifest(df, tmp_path / "m.parquet"))  # all-None columns survive parquet
    assert back["gender"].isna().all() and list(back["utt_id"]) == list(df["utt_id"])


def test_cremad_bad_demographics(tmp_path):
    root = tmp_path / "CREMA-D"
    clip(root, "AudioWAV/1001_DFA_ANG_XX.wav")
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex\n1001,51,Unknown\n")
    with pytest.raises(CorpusError, match="actor '1001' has unknown Sex value 'Unknown'"):
        build_manifest("cremad", root)


# --------------------------------------------------------------------------------------------- SAVEE


def test_savee_nested_and_flat_layouts_agree(tmp_path):
    nested, flat = tmp_path / "savee", tmp_path / "kaggle"
    names = [
        ("DC", "a01"),
        ("DC", "sa15"),
        ("JE", "su03"),
        ("JK", "n30"),
        ("KL", "d07"),
        ("KL", "f01"),
        ("KL", "h02"),
    ]
    for spk, code in names:
        clip(nested, f"AudioData/{spk}/{code}.wav", sr=44100)
        clip(flat, f"ALL/{spk}_{code}.wav", sr=44100)
    clip(nested, "AudioData/DC/a16.wav")  # anger numbers run 01..15
    clip(nested, "AudioData/DC/x01.wav")  # unknown code
    clip(nested, "AudioData/XY/a01.wav")  # not a speaker folder
    clip(nested, "AudioData/DC/a1.wav")  # no naming rule
    clip(flat, "ALL/AB_a01.wav")  # unknown speaker
    clip(flat, "JE/DC_a02.wav")  # prefix disagrees with a speaker folder

    bn, bf = build_manifest("savee", nested), build_manifest("savee", flat)
    dn, dfl = by_id(bn.manifest), by_id(bf.manifest)
    expected_ids = sorted(f"savee/{spk}_{code}" for spk, code in names)
    assert list(dn.index) == list(dfl.index) == expected_ids
    for d in (dn, dfl):
        assert list(d["label"]) == ["angry", "sad", "surprised", "neutral", "disgust", "fearful", "happy"]
        assert list(d["speaker"]) == [
            "savee-DC",
            "savee-DC",
            "savee-JE",
            "savee-JK",
            "savee-KL",
            "savee-KL",
            "savee-KL",
        ]
        assert set(d["gender"]) == {"male"}
        assert list(d["utterance"]) == [1, 15, 3, 30, 7, 1, 2]
        assert set(d["sample_rate"]) == {44100}
    assert set(dn["layout"]) == {"nested"} and set(dfl["layout"]) == {"flat"}
    assert skipped_map(bn, nested) == {
        "AudioData/DC/a16.wav": "utterance number 16 out of range 01..15 for code 'a'",
        "AudioData/DC/x01.wav": "unknown emotion code 'x'",
        "AudioData/XY/a01.wav": "folder 'XY' is not a SAVEE speaker (DC, JE, JK, KL)",
        "AudioData/DC/a1.wav": (
            "name matches neither SAVEE <code><nn> (in a speaker folder) nor <SPK>_<code><nn>"
        ),
    }
    assert skipped_map(bf, flat) == {
        "ALL/AB_a01.wav": "unknown speaker 'AB' (expected DC, JE, JK, KL)",
        "JE/DC_a02.wav": "speaker prefix DC disagrees with folder JE",
    }


# --------------------------------------------------------------------------------------------- EmoDB


def test_emodb_fixture(tmp_path):
    root = tmp_path / "emodb"
    good = ["03a01Fa", "08b10Wb", "09a07La", "10b01Ea", "13a02Ac", "15b03Ta", "16a04Nb"]
    for name in good:
        clip(root, f"wav/{name}.wav")
    clip(root, "wav/04a01Fa.wav")  # no speaker 04
    clip(root, "wav/03a08Fa.wav")  # no text a08
    clip(root, "wav/03a01Xa.wav")  # no emotion X
    clip(root, "wav/03a01fa.wav")  # lower-case emotion letter: no naming rule
    (root / "lablaut").mkdir()
    (root / "lablaut/03a01Fa.lab").write_text("labels")
    b = build_manifest("emodb", root)
    df = by_id(b.manifest)
    assert list(df.index) == [f"emodb/{n}" for n in good]
    assert list(df["label"]) == ["happy", "angry", "boredom", "disgust", "fearful", "sad", "neutral"]
    assert list(df["speaker"]) == [f"emodb-{n[:2]}" for n in good]
    assert list(df["gender"]) == ["male", "female", "female", "male", "female", "male", "female"]
    assert list(df["text"]) == ["a01", "b10", "a07", "b01", "a02", "b03", "a04"]
    assert list(df["version"]) == ["a", "b", "a", "a", "c", "a", "b"]
    skipped = skipped_map(b, root)
    assert skipped["wav/04a01Fa.wav"].startswith("unknown speaker code 04")
    assert skipped["wav/03a08Fa.wav"] == "unknown text code a08 (expected a01..a07, b01..b10)"
    assert skipped["wav/03a01Xa.wav"] == "unknown emotion letter 'X'"
    assert "does not match EmoDB" in skipped["wav/03a01fa.wav"]
    assert len(skipped) == 4


# --------------------------------------------------------------------------------------------- IEMOCAP

_IEMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _iemo_block(start: float, end: float, utt: str, code: str, vad: tuple[float, float, float]) -> str:
    v, a, d = vad
    return (
        f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]\n"
        "C-E2:\tNeutral;\t()\nC-E3:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
    )


def test_iemocap_fixture(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    s1 = root / "Session1"
    (s1 / "dialog/EmoEvaluation/Categorical").mkdir(parents=True)
    (s1 / "dialog/EmoEvaluation/Categorical/Ses01F_impro01_e2_cat.txt").write_text(
        "Ses01F_impro01_F000 :Neutral;"
    )
    (s1 / "dialog/EmoEvaluation/Ses01F_impro01.txt").write_text(
        _IEMO_HEADER
        + _iemo_block(6.2901, 8.2357, "Ses01F_impro01_F000", "neu", (2.5, 2.5, 2.5))
        + _iemo_block(10.01, 11.3925, "Ses01F_impro01_F001", "xxx", (2.5, 2.5, 2.5))
        + _iemo_block(14.8872, 18.0175, "Ses01F_impro01_M003", "fru", (2.0, 3.5, 3.5))
        + _iemo_block(20.0, 21.5, "Ses01F_impro01_M004", "oth", (3.0, 3.0, 3.0))
        + _iemo_block(22.0, 23.5, "Ses01F_impro01_M005", "hap", (4.0, 3.0, 3.0))  # audio missing
        + _iemo_block(24.0, 25.0, "Ses01F_impro01_M006", "bor", (3.0, 3.0, 3.0))  # unknown code
    )
    (s1 / "dialog/EmoEvaluation/Ses01M_script01_1.txt").write_text(
        _IEMO_HEADER + _iemo_block(1.0, 3.25, "Ses01M_script01_1_F000", "ang", (1.5, 4.5, 4.0))
    )
    for utt in ("Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M003", "Ses01F_impro01_M004"):
        clip(s1, f"sentences/wav/Ses01F_impro01/{utt}.wav")
    clip(s1, "sentences/wav/Ses01F_impro01/Ses01F_impro01_M099.wav")  # audio without label
    clip(s1, "sentences/wav/Ses01M_script01_1/Ses01M_script01_1_F000.flac")
    s5 = root / "Session5"
    (s5 / "dialog/EmoEvaluation").mkdir(parents=True)
    (s5 / "dialog/EmoEvaluation/Ses05M_impro03.txt").write_text(
        _IEMO_HEADER
        + _iemo_block(0.5, 2.0, "Ses05M_impro03_M010", "exc", (4.0, 4.0, 3.0))
        + _iemo_block(2.5, 4.0, "Ses01M_impro03_M011", "sad", (1.0, 2.0, 2.0))  # session 1 name in Session5
    )
    clip(s5, "sentences/wav/Ses05M_impro03/Ses05M_impro03_M010.wav")
    clip(s5, "sentences/wav/Ses05M_impro03/Ses01M_impro03_M011.wav")

    b = build_manifest("iemocap", root)
    df = by_id(b.manifest)
    assert list(df.index) == [
        "iemocap/Ses01F_impro01_F000",
        "iemocap/Ses01F_impro01_M003",
        "iemocap/Ses01F_impro01_M004",
        "iemocap/Ses01M_script01_1_F000",
        "iemocap/Ses05M_impro03_M010",
    ]
    assert list(df["label"]) == ["neutral", "frustrated", "other", "angry", "excited"]
    assert list(df["raw_label"]) == ["neu", "fru", "oth", "ang", "exc"]
    # the speaker is the utterance's suffix letter, not the dialog's
    assert list(df["speaker"]) == [
        "iemocap-Ses01F",
        "iemocap-Ses01M",
        "iemocap-Ses01M",
        "iemocap-Ses01F",
        "iemocap-Ses05M",
    ]
    assert list(df["gender"]) == ["female", "male", "male", "female", "male"]
    assert list(df["session"]) == [1, 1, 1, 1, 5]
    assert list(df["dialog"]) == [
        "Ses01F_impro01",
        "Ses01F_impro01",
        "Ses01F_impro01",
        "Ses01M_script01_1",
        "Ses05M_impro03",
    ]
    assert list(df["improvised"]) == [True, True, True, False, True]
    assert df.loc["iemocap/Ses01F_impro01_M003", ["valence", "arousal", "dominance"]].tolist() == [
        2.0,
        3.5,
        3.5,
    ]
    assert df.loc["iemocap/Ses01M_script01_1_F000", ["valence", "arousal", "dominance"]].tolist() == [
        1.5,
        4.5,
        4.0,
    ]
    assert df.loc["iemocap/Ses01F_impro01_F000", "start_s"] == pytest.approx(6.2901)
    assert df.loc["iemocap/Ses01M_script01_1_F000", "rel_path"].endswith(".flac")
    skipped = skipped_map(b, root)
    lf = "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    assert skipped == {
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F001.wav": (
            f"no majority label (xxx) for Ses01F_impro01_F001 in {lf}"
        ),
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M005.wav": (
            f"no audio file for utterance Ses01F_impro01_M005 labelled in {lf}"
        ),
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M006.wav": (
            f"unknown emotion code 'bor' for Ses01F_impro01_M006 in {lf}"
        ),
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M099.wav": (
            "no label for utterance Ses01F_impro01_M099 in Session1/dialog/EmoEvaluation"
        ),
        "Session5/sentences/wav/Ses05M_impro03/Ses01M_impro03_M011.wav": (
            "utterance Ses01M_impro03_M011 in Session5/dialog/EmoEvaluation/Ses05M_impro03.txt names "
            "session 1, folder is Session5"
        ),
    }


def test_iemocap_without_label_files(tmp_path):
    clip(tmp_path, "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    with pytest.raises(CorpusError, match=r"no label files Session1\.\.5/dialog/EmoEvaluation"):
        build_manifest("iemocap", tmp_path)


# --------------------------------------------------------------------------------------------- ShEMO


def test_shemo_fixture(tmp_path):
    root = tmp_path / "shemo"
    good = ["female/F01A01", "female/F01F02", "female/F23W100", "male/M12N05", "male/M01H03", "male/M02S07"]
    for rel in good:
        clip(root, f"{rel}.wav", sr=44100)
    clip(root, "female/F01X01.wav")  # unknown emotion letter
    clip(root, "male/F02A01.wav")  # gender letter vs folder
    clip(root, "female/F1A01.wav")  # one-digit speaker: no naming rule
    clip(root, "male/Q03A01.wav")  # unknown gender letter
    b = build_manifest("shemo", root)
    df = by_id(b.manifest)
    assert list(df.index) == sorted(f"shemo/{rel.split('/')[1]}" for rel in good)
    assert list(df.index) == [
        "shemo/F01A01",
        "shemo/F01F02",
        "shemo/F23W100",
        "shemo/M01H03",
        "shemo/M02S07",
        "shemo/M12N05",
    ]
    assert list(df["label"]) == ["angry", "fearful", "surprised", "happy", "sad", "neutral"]
    assert list(df["speaker"]) == [
        "shemo-F01",
        "shemo-F01",
        "shemo-F23",
        "shemo-M01",
        "shemo-M02",
        "shemo-M12",
    ]
    assert list(df["gender"]) == ["female"] * 3 + ["male"] * 3
    assert list(df["utterance"]) == [1, 2, 100, 3, 7, 5]
    assert skipped_map(b, root) == {
        "female/F01X01.wav": "unknown emotion letter 'X'",
        "male/F02A01.wav": "gender letter F disagrees with folder male",
        "female/F1A01.wav": "name does not match ShEMO <F|M><speaker nn><emotion letter><utterance nn>",
        "male/Q03A01.wav": "unknown gender letter 'Q' (expected F or M)",
    }


# --------------------------------------------------------------------------------------------- CSV


def test_csv_adapter(tmp_path):
    root = tmp_path / "mycorpus"
    clip(root, "a/one.wav")
    clip(root, "a/two.flac", sr=22050)
    clip(root, "b/three.ogg")
    clip(root, "b/four.wav")
    clip(root, "b/five.wav")
    outside = clip(tmp_path, "elsewhere/six.wav")
    (root / "meta.csv").write_text(
        "path,label,speaker,gender,session,note\n"
        "a/one.wav,angry,s1,F,1,first\n"
        "a/two.flac,Joy,s1,female,1,\n"  # mapped by label_map
        "b/three.ogg,Sad,s2,m,2,third\n"  # case-insensitive canonical
        "b/four.wav,bored,s2,male,2,x\n"  # unknown label
        "b/missing.wav,angry,s2,male,2,x\n"  # no such file
        "b/five.wav,neutral,,male,2,x\n"  # empty speaker
        f"{outside},neutral,s3,,3,abs\n"  # absolute path outside the root
        "a/one.wav,sad,s1,f,1,again\n"  # duplicate path
        "b/five.wav,neutral,s2,robot,2,x\n"  # unknown gender
    )
    b = build_manifest("csv", root, csv="meta.csv", label_map={"Joy": "happy"})
    df = by_id(b.manifest)
    assert list(df.index) == [
        "csv/a/one",
        "csv/a/two",
        "csv/b/three",
        f"csv/{outside.with_suffix('').as_posix()[1:]}",
    ]
    assert list(df["corpus"]) == ["csv"] * 4
    assert list(df["label"]) == ["angry", "happy", "sad", "neutral"]
    assert list(df["raw_label"]) == ["angry", "Joy", "Sad", "neutral"]
    assert list(df["speaker"]) == ["csv-s1", "csv-s1", "csv-s2", "csv-s3"]
    assert list(df["gender"].where(df["gender"].notna(), None)) == ["female", "female", "male", None]
    assert list(df["session"]) == [1, 1, 2, 3]
    assert df["note"].tolist()[0] == "first" and df["note"].tolist()[2] == "third"
    assert list(df["sample_rate"]) == [16000, 22050, 16000, 16000]
    assert df.loc["csv/a/two", "rel_path"] == "a/two.flac"
    assert sorted((Path(s.path).name, s.reason) for s in b.skipped) == [
        ("five.wav", "meta.csv line 10: unknown gender 'robot' (expected female, male, f, m or empty)"),
        ("five.wav", "meta.csv line 7: empty speaker"),
        ("four.wav", "meta.csv line 5: label 'bored' is not a canonical label and not in label_map"),
        ("missing.wav", "meta.csv line 6: file does not exist"),
        ("one.wav", "meta.csv line 9: duplicate utt_id 'csv/a/one' (first on line 2)"),
    ]


def test_csv_without_speaker_column_warns(tmp_path, caplog):
    root = tmp_path / "c"
    clip(root, "x.wav")
    clip(root, "y.wav")
    (root / "labels.csv").write_text("path,label,utt_id\nx.wav,calm,ux\ny.wav,other,uy\n")
    with caplog.at_level(logging.WARNING, logger="sertool.data.corpora.csv"):
        df = build_manifest("csv", root).manifest  # default table name labels.csv
    assert list(df["utt_id"]) == ["csv/ux", "csv/uy"]
    assert set(df["speaker"]) == {"csv-unknown"}
    assert df["gender"].isna().all()
    assert any("speaker-independent splits are impossible" in r.getMessage() for r in caplog.records)


def test_csv_reads_back_an_exported_manifest(tmp_path, demo_root):
    demo = build_manifest("demo", demo_root).manifest
    demo.to_csv(tmp_path / "export.csv", index=False)
    again = build_manifest("csv", demo_root, csv=tmp_path / "export.csv").manifest
    assert len(again) == len(demo)
    assert list(again["utt_id"]) == ["csv/" + u for u in demo["utt_id"]]
    assert list(again["label"]) == list(demo["label"])
    assert list(again["speaker"]) == ["csv-" + s for s in demo["speaker"]]
    assert list(again["sha1"]) == list(demo["sha1"])


def test_csv_errors(tmp_path):
    clip(tmp_path, "x.wav")
    with pytest.raises(CorpusError, match=r"labels\.csv' does not exist"):
        build_manifest("csv", tmp_path)
    (tmp_path / "t.csv").write_text("file,emotion\nx.wav,angry\n")
    with pytest.raises(CorpusError, match=r"lacks column\(s\) path, label"):
        build_manifest("csv", tmp_path, csv=tmp_path / "t.csv")
    with pytest.raises(ParameterError, match=r"non-canonical labels .*'joy': 'joyful'"):
        CsvAdapter(label_map={"joy": "joyful"})


# --------------------------------------------------------------------------------------------- real corpora


@pytest.mark.corpora
def test_real_ravdess(ravdess_root):
    b = build_manifest("ravdess", ravdess_root, jobs=2)
    s = b.summary()
    assert s["utterances"] == 1440 and s["speakers"] == 24
    assert s["labels"]["neutral"] == 96
    assert {k: v for k, v in s["labels"].items() if k != "neutral"} == {
        lab: 192 for lab in ("calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    }
    assert s["duplicate_groups"] == 1
    dups = b.manifest.loc[b.manifest["dup_group"] != "", "utt_id"].tolist()
    assert dups == ["ravdess/03-01-03-01-02-01-07", "ravdess/03-01-03-01-02-02-07"]
    assert b.skipped == []
    assert s["total_seconds"] == pytest.approx(5328.96, abs=0.5)


@pytest.mark.corpora
def test_real_tess(tess_root):
    b = build_manifest("tess", tess_root, jobs=2)
    s = b.summary()
    assert s["utterances"] == 2798 and s["speakers"] == 2
    assert len(s["labels"]) == 7
    assert s["labels"] == {
        "neutral": 400,
        "happy": 400,
        "sad": 399,
        "angry": 399,
        "fearful": 400,
        "disgust": 400,
        "surprised": 400,
    }
    df = by_id(b.manifest)
    assert df.loc["tess/OA_bite_neutral", "speaker"] == "tess-OAF"
    assert b.skipped == []
