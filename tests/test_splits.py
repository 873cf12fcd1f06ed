"""Tests of sertool.splits: strategies, validation parts, duplicates, determinism, checks, storage."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from sertool.data.manifest import MANIFEST_COLUMNS
from sertool.exceptions import LeakageError, ParameterError, SplitError
from sertool.splits import (
    PLUGIN_GROUP,
    STRATEGIES,
    Fold,
    Split,
    SplitStrategy,
    check_split,
    get_strategy,
    list_strategies,
    make_split,
    register_strategy,
    rows_hash,
    split_summary,
    strategy_class,
    unregister_strategy,
)

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def _row(
    utt_id: str, speaker: str, label: str, *, corpus: str = "ravdess", gender: str | None = None, **extra
):
    return {
        "utt_id": utt_id,
        "path": f"/data/{utt_id}.flac",
        "rel_path": f"{utt_id}.flac",
        "corpus": corpus,
        "speaker": speaker,
        "gender": gender,
        "label": label,
        "raw_label": label,
        "duration_s": 3.0,
        "sample_rate": 16000,
        "channels": 1,
        "sha1": f"sha-{utt_id}",
        "dup_group": "",
        **extra,
    }


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    return df[list(MANIFEST_COLUMNS) + [c for c in df.columns if c not in MANIFEST_COLUMNS]]


def ravdess_like(n_speakers: int = 24, dup: bool = True) -> pd.DataFrame:
    """RAVDESS-shaped manifest: 24 actors x 60 utterances (neutral 4, other 7 labels 8 each), odd = male.

    With ``dup``, two utterances of actor 07 are byte-identical (same sha1, one dup_group), as in RAVDESS.
    """
    rows = []
    for a in range(1, n_speakers + 1):
        for lab in LABELS:
            for j in range(4 if lab == "neutral" else 8):
                rows.append(
                    _row(
                        f"ravdess/{a:02d}-{lab}-{j}",
                        f"ravdess-{a:02d}",
                        lab,
                        gender="male" if a % 2 else "female",
                    )
                )
    df = _frame(rows)
    if dup:
        pair = df["utt_id"].isin(["ravdess/07-angry-0", "ravdess/07-sad-3"])
        df.loc[pair, "sha1"] = "d" * 40
        df.loc[pair, "dup_group"] = "d" * 40
    return df


@pytest.fixture(scope="module")
def rav() -> pd.DataFrame:
    return ravdess_like()


def _speakers(df: pd.DataFrame, ids) -> set[str]:
    return set(df.set_index("utt_id").loc[list(ids), "speaker"])


def _dup_sides(split: Split) -> list[set[str]]:
    pair = {"ravdess/07-angry-0", "ravdess/07-sad-3"}
    return [{r for r in ("train", "valid", "test") if pair & set(f.part(r))} for f in split.folds]


# -- speaker-independent strategies --------------------------------------------------------------------------


def test_speaker_6fold_gives_4_actors_per_fold_with_balanced_gender(rav):
    split = make_split(rav, "speaker-6fold", seed=0)
    assert split.n_folds == 6 and split.speaker_independent and split.group_column == "speaker"
    test_speakers = [_speakers(rav, f.test) for f in split.folds]
    assert [len(s) for s in test_speakers] == [4] * 6
    assert sorted(s for ss in test_speakers for s in ss) == sorted(rav["speaker"].unique())  # each once
    for f, ts in zip(split.folds, test_speakers, strict=True):
        males = sum(int(s[-2:]) % 2 for s in ts)
        assert males == 2  # 12 male + 12 female actors -> 2 + 2 per fold
        vs, trs = _speakers(rav, f.valid), _speakers(rav, f.train)
        assert len(vs) == 2  # round(0.1 * 20 training actors)
        assert not vs & ts and not vs & trs and not trs & ts
        assert len(f.train) + len(f.valid) + len(f.test) == len(rav)
        assert len(f.test) == 240
    assert all(len(sides) == 1 for sides in _dup_sides(split))


def test_speaker_kfold_balances_speaker_counts_with_unequal_speaker_sizes():
    # speakers of very different sizes: StratifiedGroupKFold(4) gives [1, 1, 3, 5] speakers per fold here
    rows = []
    for s in range(10):
        n = 5 + 20 * (s % 3)
        rows += [_row(f"c/{s}-{i}", f"c-{s}", LABELS[i % 4], corpus="c") for i in range(n)]
    df = _frame(rows)
    split = make_split(df, "speaker-4fold", seed=3, valid_fraction=0.0)
    assert sorted(len(_speakers(df, f.test)) for f in split.folds) == [2, 2, 3, 3]
    assert all(f.valid == () for f in split.folds)


def test_loso_one_fold_per_speaker(rav):
    split = make_split(rav, "loso", seed=1)
    assert split.n_folds == 24
    for f in split.folds:
        (spk,) = _speakers(rav, f.test)
        assert spk == f"ravdess-{f.index + 1:02d}" and len(f.test) == 60
        assert spk not in _speakers(rav, f.train) | _speakers(rav, f.valid)
        assert len(_speakers(rav, f.valid)) == 2  # round(0.1 * 23)


def test_loso_session():
    rows = []
    for sess in range(1, 6):
        for g, sex in (("F", "female"), ("M", "male")):
            spk = f"iemocap-Ses0{sess}{g}"
            rows += [
                _row(
                    f"iemocap/Ses0{sess}{g}_{i:03d}",
                    spk,
                    LABELS[i % 4],
                    corpus="iemocap",
                    gender=sex,
                    session=sess,
                )
                for i in range(40)
            ]
    df = _frame(rows)
    split = make_split(df, "loso-session", seed=0)
    assert split.n_folds == 5 and split.group_column == "session"
    for f in split.folds:
        sessions = set(df.set_index("utt_id").loc[list(f.test), "session"])
        assert sessions == {f.index + 1} and len(f.test) == 80
        assert len(_speakers(df, f.valid)) == 1  # round(0.1 * 8) -> at least one speaker
        assert not _speakers(df, f.test) & (_speakers(df, f.train) | _speakers(df, f.valid))
    with pytest.raises(ParameterError, match="session"):
        make_split(df.drop(columns="session"), "loso-session")


def test_cross_corpus(rav):
    tess = _frame(
        [
            _row(f"tess/{spk}_{i}", f"tess-{spk}", LABELS[i % 8], corpus="tess", gender="female")
            for spk in ("OAF", "YAF")
            for i in range(50)
        ]
    )
    both = pd.concat([rav, tess], ignore_index=True)
    split = make_split(both, "cross-corpus", train_corpus="ravdess", test_corpus="tess", seed=0)
    (f,) = split.folds
    assert set(f.test) == set(tess["utt_id"])
    assert set(f.train) | set(f.valid) == set(rav["utt_id"])
    assert len(_speakers(both, f.valid)) == 2 and not _speakers(both, f.valid) & _speakers(both, f.train)
    assert split.params == {"train_corpus": "ravdess", "test_corpus": "tess", "valid_fraction": 0.1}
    with pytest.raises(ParameterError, match="crema"):
        make_split(both, "cross-corpus", train_corpus="ravdess", test_corpus="crema")
    with pytest.raises(ParameterError, match="test_corpus"):
        make_split(both, "cross-corpus", train_corpus="ravdess")


def test_two_speaker_corpus_loso_needs_valid_fraction_zero():
    tess = _frame(
        [
            _row(f"tess/{spk}_{i}", f"tess-{spk}", LABELS[i % 7], corpus="tess")
            for spk in ("OAF", "YAF")
            for i in range(70)
        ]
    )
    with pytest.raises(ParameterError, match=r"1 training speaker\(s\) \(tess-YAF\).*valid_fraction=0"):
        make_split(tess, "loso")
    split = make_split(tess, "loso", valid_fraction=0.0)
    assert [len(f.test) for f in split.folds] == [70, 70] and all(not f.valid for f in split.folds)


def test_duplicates_across_speakers_merge_the_speakers():
    df = ravdess_like(dup=False)
    pair = df["utt_id"].isin(["ravdess/03-angry-0", "ravdess/04-angry-0"])  # same audio under two actors
    df.loc[pair, "dup_group"] = "e" * 40
    for strategy in ("speaker-6fold", "loso"):
        split = make_split(df, strategy, seed=2)  # make_split checks: would raise LeakageError otherwise
        for f in split.folds:
            assert ("ravdess-03" in _speakers(df, f.test)) == ("ravdess-04" in _speakers(df, f.test))
    assert make_split(df, "loso").n_folds == 23


# -- speaker-dependent strategies ----------------------------------------------------------------------------


def test_random_5fold_is_stratified_and_keeps_duplicates_together(rav):
    split = make_split(rav, "random-5fold", seed=0)
    assert split.n_folds == 5 and not split.speaker_independent and split.group_column is None
    totals = rav["label"].value_counts()
    labels = rav.set_index("utt_id")["label"]
    all_test = [u for f in split.folds for u in f.test]
    assert sorted(all_test) == sorted(rav["utt_id"])  # test folds partition the corpus
    for f in split.folds:
        counts = labels[list(f.test)].value_counts()
        for lab, n in totals.items():
            assert abs(counts[lab] - n / 5) <= 1, (lab, counts[lab])
        assert abs(len(f.valid) - 0.1 * (len(f.train) + len(f.valid))) <= 1
    assert all(len(sides) == 1 for sides in _dup_sides(split))


def test_random_holdout_and_80_10_10(rav):
    pair = {"ravdess/07-angry-0", "ravdess/07-sad-3"}

    def units(part):  # the duplicate pair counts as one unit
        return len(part) - (len(pair & set(part)) == 2)

    split = make_split(rav, "random-holdout", seed=0)
    (f,) = split.folds
    # 1439 units: test round(0.2 * 1439) = 288, valid round(0.1 * 1151) = 115
    assert (units(f.train), units(f.valid), units(f.test)) == (1036, 115, 288)
    split = make_split(rav, "random-holdout", seed=0, test_fraction=0.1, valid_fraction=1 / 9)
    (f,) = split.folds
    assert (units(f.train), units(f.valid), units(f.test)) == (1151, 144, 144)
    labels = rav.set_index("utt_id")["label"]
    assert labels[list(f.test)].value_counts()["neutral"] in (9, 10)  # 96 neutral of 1440 -> 9.6


# -- determinism ---------------------------------------------------------------------------------------------


def test_same_inputs_same_id_regardless_of_row_order_and_paths(rav):
    a = make_split(rav, "speaker-6fold", seed=5)
    moved = rav.sample(frac=1.0, random_state=1).reset_index(drop=True)
    moved["path"] = "/elsewhere/" + moved["rel_path"]
    b = make_split(moved, "speaker-6fold", seed=5)
    assert a.id == b.id and a.folds == b.folds
    assert a.id.startswith("speaker-6fold-") and len(a.id) == len("speaker-6fold-") + 10


@pytest.mark.parametrize("strategy", ["speaker-6fold", "random-5fold", "random-holdout", "loso"])
def test_different_seed_different_folds(rav, strategy):
    a, b = make_split(rav, strategy, seed=0), make_split(rav, strategy, seed=1)
    assert a.id != b.id and a.folds != b.folds


# -- predefined folds ----------------------------------------------------------------------------------------


def test_file_csv_folds(rav, tmp_path):
    fold_of = {f"ravdess-{a:02d}": (a - 1) // 8 for a in range(1, 25)}  # 3 folds of 8 actors
    table = pd.DataFrame({"utt_id": rav["utt_id"], "fold": rav["speaker"].map(fold_of)})
    path = tmp_path / "folds.csv"
    table.to_csv(path, index=False)
    split = make_split(rav, f"file:{path}", seed=0)
    assert split.strategy == "file" and split.n_folds == 3 and split.speaker_independent
    assert split.params["file"] == "folds.csv" and split.params["fold_labels"] == ["0", "1", "2"]
    for f in split.folds:
        assert _speakers(rav, f.test) == {s for s, k in fold_of.items() if k == f.index}
        assert len(_speakers(rav, f.valid)) == 2  # round(0.1 * 16)
    # the same file elsewhere gives the same id (paths are not hashed)
    other = tmp_path / "sub" / "folds.csv"
    other.parent.mkdir()
    other.write_bytes(path.read_bytes())
    assert make_split(rav, f"file:{other}").id == split.id


def test_file_csv_with_roles_and_json(rav, tmp_path):
    ids = sorted(rav["utt_id"])
    roles = ["train"] * 1000 + ["valid"] * 190 + ["test"] * 250  # 60 per actor: 17, 20 straddle
    csv = tmp_path / "roles.csv"
    pd.DataFrame({"utt_id": ids, "fold": "a", "role": roles}).to_csv(csv, index=False)
    split = make_split(rav, f"file:{csv}")
    (f,) = split.folds
    assert (len(f.train), len(f.valid), len(f.test)) == (1000, 190, 250) and f.test == tuple(ids[1190:])
    assert not split.speaker_independent  # inferred
    js = tmp_path / "folds.json"
    js.write_text(json.dumps({"folds": [{"train": ids[:1200], "test": ids[1200:]}]}))
    split = make_split(rav, f"file:{js}", valid_fraction=0.25)
    assert len(split.folds[0].valid) == 300 and split.folds[0].test == tuple(ids[1200:])
    # a file that names unknown utterances is refused
    js.write_text(json.dumps({"folds": [{"train": [*ids[:10], "ravdess/nope"], "test": ids[10:20]}]}))
    with pytest.raises(SplitError, match="ravdess/nope"):
        make_split(rav, f"file:{js}")
    # declaring a leaky file speaker-independent is refused
    with pytest.raises(LeakageError, match="speaker 'ravdess-20' is in both test and valid"):
        make_split(rav, f"file:{csv}", speaker_independent=True)


# -- checks --------------------------------------------------------------------------------------------------


def _hand_made(df: pd.DataFrame, train, valid, test, *, si: bool) -> Split:
    ids = sorted(set(train) | set(valid) | set(test))
    return Split(
        strategy="hand",
        params={},
        seed=0,
        group_column="speaker" if si else None,
        speaker_independent=si,
        manifest_hash="0" * 16,
        rows_hash=rows_hash(df, ids),
        label_scheme="native-v1",
        folds=(Fold(0, tuple(sorted(train)), tuple(sorted(valid)), tuple(sorted(test))),),
    )


def test_leaky_speaker_split_raises(rav):
    spk = rav.set_index("utt_id")["speaker"]
    a01 = spk.index[spk == "ravdess-01"]
    a02 = spk.index[spk == "ravdess-02"]
    a03 = spk.index[spk == "ravdess-03"]
    ok = _hand_made(rav, a01, a02, a03, si=True)
    check_split(ok, rav)  # disjoint speakers: fine (manifest hash differs, rows unchanged)
    leaky = _hand_made(rav, list(a01) + list(a03[:1]), a02, a03[1:], si=True)
    with pytest.raises(LeakageError, match=r"fold 0: speaker 'ravdess-03' is in both test and train"):
        leaky.check(rav)
    leaky_valid = _hand_made(rav, a01[1:], list(a02) + list(a01[:1]), a03, si=True)
    with pytest.raises(LeakageError, match="ravdess-01' is in both train and valid"):
        leaky_valid.check(rav)
    # the same assignment without the speaker-independence claim passes
    _hand_made(rav, list(a01) + list(a03[:1]), a02, a03[1:], si=False).check(rav)


def test_duplicate_straddling_raises(rav):
    ids = sorted(rav["utt_id"])
    pair = ["ravdess/07-angry-0", "ravdess/07-sad-3"]
    rest = [u for u in ids if u not in pair]
    split = _hand_made(rav, [*rest[:1000], pair[0]], rest[1000:1100], [*rest[1100:], pair[1]], si=False)
    with pytest.raises(LeakageError, match="duplicate-audio group dddddddddddd is in both train and test"):
        split.check(rav)
    same = _hand_made(rav, [*rest[:1000], *pair], rest[1000:1100], rest[1100:], si=False)
    same.check(rav)


def test_utterance_in_two_parts_raises(rav):
    ids = sorted(rav["utt_id"])
    split = _hand_made(rav, ids[:100], [], ids[99:200], si=False)
    with pytest.raises(LeakageError, match=f"{ids[99]!r} is in both train and test"):
        split.check(rav)


def test_mismatched_manifest(rav):
    split = make_split(rav, "speaker-6fold", seed=0)
    missing = rav[~rav["utt_id"].isin(["ravdess/05-calm-1", "ravdess/09-sad-2"])]
    with pytest.raises(SplitError, match=r"2 utt_id\(s\) not in the manifest, e.g. 'ravdess/05-calm-1'"):
        split.check(missing)
    relabelled = rav.copy()
    relabelled.loc[relabelled["utt_id"] == "ravdess/05-calm-1", "label"] = "happy"
    with pytest.raises(SplitError, match=r"manifest hash \w+ differs"):
        split.check(relabelled)
    # extra rows (another corpus merged in) change the hash but not the split's rows: accepted
    extra = pd.concat([rav, _frame([_row("tess/x", "tess-OAF", "sad", corpus="tess")])], ignore_index=True)
    split.check(extra)


def test_json_round_trip_and_tampering(rav, tmp_path):
    split = make_split(rav, "speaker-6fold", seed=4)
    path = split.save(tmp_path / "splits" / "rav.json")
    loaded = Split.load(path, rav)
    assert loaded == split and loaded.id == split.id
    assert Split.from_json(split.to_json()).folds == split.folds
    # a split file is also a valid file: source
    assert make_split(rav, f"file:{path}").id == split.id
    data = json.loads(path.read_text())
    data["folds"][0]["test"], data["folds"][1]["test"] = data["folds"][1]["test"], data["folds"][0]["test"]
    path.write_text(json.dumps(data))
    with pytest.raises(SplitError, match="does not match the content"):
        Split.load(path)
    with pytest.raises(SplitError, match="no split file"):
        Split.load(tmp_path / "none.json")
    assert not list((tmp_path / "splits").glob(".*.tmp"))


def test_summary_and_fold_frame(rav):
    split = make_split(rav, "speaker-6fold", seed=0)
    summary = split_summary(split, rav)
    f0 = summary["folds"][0]
    assert (f0["n_train"], f0["n_valid"], f0["n_test"]) == (1080, 120, 240)
    assert len(f0["speakers"]["test"]) == 4 and f0["labels"]["test"]["neutral"] == 16
    frame = split.fold_frame()
    assert len(frame) == 6 * 1440
    assert Counter(frame.loc[frame["fold"] == 0, "role"]) == {"train": 1080, "valid": 120, "test": 240}


@pytest.mark.parametrize(
    ("strategy", "kwargs", "match"),
    [
        ("speaker-25fold", {}, "k must be in"),
        ("random-1fold", {}, "k must be in"),
        ("kfold", {}, "unknown split strategy"),
        ("loso", {"test_fraction": 0.3}, "takes no parameter 'test_fraction'"),
        ("random-holdout", {"test_fraction": 1.5}, "test_fraction must be in"),
        ("loso", {"valid_fraction": 1.0}, "valid_fraction must be in"),
        ("loso", {"seed": -1}, "seed must be"),
        ("file:/no/such/file.csv", {}, "no file at"),
    ],
)
def test_bad_parameters(rav, strategy, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        make_split(rav, strategy, **kwargs)


# -- strategy classes, registry, protocol -------------------------------------------------------------------


def _tess() -> pd.DataFrame:
    return _frame(
        [
            _row(f"tess/{spk}_{i}", f"tess-{spk}", LABELS[i % 8], corpus="tess", gender="female")
            for spk in ("OAF", "YAF")
            for i in range(50)
        ]
    )


def _iemocap_like() -> pd.DataFrame:
    rows = []
    for sess in range(1, 6):
        for g, sex in (("F", "female"), ("M", "male")):
            rows += [
                _row(
                    f"iemocap/Ses0{sess}{g}_{i:03d}",
                    f"iemocap-Ses0{sess}{g}",
                    LABELS[i % 4],
                    corpus="iemocap",
                    gender=sex,
                    session=sess,
                )
                for i in range(40)
            ]
    return _frame(rows)


# ids made by the string-branch make_split before strategies became classes (commit c7b69a6); results on disk
# are keyed by them, so these must never change
IDS_BEFORE_CLASSES = [
    ("rav", "speaker-6fold", 0, 0.1, {}, "speaker-6fold-54361d241a"),
    ("rav", "random-5fold", 0, 0.1, {}, "random-5fold-c7f86c4c45"),
    ("rav", "random-holdout", 0, 0.1, {}, "random-holdout-c997467634"),
    ("rav", "random-holdout", 3, 0.0, {"test_fraction": 0.1}, "random-holdout-87a2cc2960"),
    ("rav", "loso", 0, 0.1, {}, "loso-1b240d8275"),
    ("iemocap", "loso-session", 0, 0.1, {}, "loso-session-8f5ad2f39b"),
    (
        "both",
        "cross-corpus",
        0,
        0.1,
        {"train_corpus": "ravdess", "test_corpus": "tess"},
        "cross-corpus-77764b7d56",
    ),
    (
        "both",
        "cross-corpus",
        0,
        0.0,
        {"train_corpus": "tess", "test_corpus": "ravdess"},
        "cross-corpus-7bb7986e72",
    ),
]


@pytest.mark.parametrize(("data", "strategy", "seed", "vf", "params", "expected"), IDS_BEFORE_CLASSES)
def test_split_ids_are_those_of_the_string_branch_version(rav, data, strategy, seed, vf, params, expected):
    df = {"rav": rav, "iemocap": _iemocap_like(), "both": pd.concat([rav, _tess()], ignore_index=True)}[data]
    assert make_split(df, strategy, seed=seed, valid_fraction=vf, **params).id == expected


BUILT_IN = {  # name: (group_column, speaker_independent, protocol, params)
    "random-holdout": (None, False, "speaker-dependent", {"test_fraction": 0.2}),
    "random-<k>fold": (None, False, "speaker-dependent", {}),
    "speaker-<k>fold": ("speaker", True, "speaker-independent", {}),
    "loso": ("speaker", True, "speaker-independent", {}),
    "loso-session": ("session", True, "speaker-independent", {}),
    "cross-corpus": ("corpus", True, "cross-corpus", {"train_corpus", "test_corpus"}),
    "leave-one-corpus-out": ("corpus", True, "leave-one-corpus-out", {}),
    "file:PATH": (None, False, None, {"speaker_independent": None}),
}


def test_built_in_strategies_declare_grouping_protocol_and_parameters():
    registered = list_strategies()
    assert list(registered)[: len(BUILT_IN)] == list(BUILT_IN) == list(STRATEGIES)
    for name, (group, si, protocol, params) in BUILT_IN.items():
        cls = registered[name]
        assert issubclass(cls, SplitStrategy) and cls.description == STRATEGIES[name]
        assert (cls.group_column, cls.speaker_independent, cls.protocol) == (group, si, protocol), name
        assert (set(cls.params) if isinstance(params, set) else dict(cls.params)) == params, name
    assert get_strategy("speaker-6fold").args == {"k": 6} and get_strategy("random-10fold").args == {"k": 10}
    assert get_strategy(" loso ").strategy == "loso" and get_strategy("loso-session").args == {}
    assert get_strategy("file:/x/folds.csv").args == {"path": "/x/folds.csv"}
    assert strategy_class("speaker-3fold").__name__ == "SpeakerKFold" and strategy_class("hand") is None
    with pytest.raises(
        ParameterError, match=r"unknown split strategy 'speaker-fold'; known: random-holdout, "
    ):
        get_strategy("speaker-fold")


def test_split_protocol_comes_from_the_strategy_also_after_loading(rav, tmp_path):
    both = pd.concat([rav, _tess()], ignore_index=True)
    cases = {
        "speaker-6fold": (rav, {}, "speaker-independent"),
        "random-5fold": (rav, {}, "speaker-dependent"),
        "random-holdout": (rav, {}, "speaker-dependent"),
        "cross-corpus": (both, {"train_corpus": "tess", "test_corpus": "ravdess"}, "cross-corpus"),
        "leave-one-corpus-out": (both, {}, "leave-one-corpus-out"),
    }
    for strategy, (df, params, protocol) in cases.items():
        split = make_split(
            df, strategy, seed=0, valid_fraction=0.0 if "corpus" in strategy else 0.1, **params
        )
        loaded = Split.load(split.save(tmp_path / f"{strategy}.json"))
        assert split.protocol == loaded.protocol == protocol, strategy
        assert split_summary(split, df)["protocol"] == protocol
        assert "protocol" not in split.to_dict()  # not part of the stored (hashed) content
    # no class declares a protocol (predefined folds, or a strategy no installed class knows): from the flag
    spk = rav.set_index("utt_id")["speaker"]
    a01, a02, a03 = (spk.index[spk == f"ravdess-0{i}"] for i in (1, 2, 3))
    assert _hand_made(rav, a01, a02, a03, si=True).protocol == "speaker-independent"
    assert _hand_made(rav, a01, a02, a03, si=False).protocol == "speaker-dependent"
    fold_of = {f"ravdess-{a:02d}": (a - 1) // 8 for a in range(1, 25)}
    path = tmp_path / "folds.csv"
    pd.DataFrame({"utt_id": rav["utt_id"], "fold": rav["speaker"].map(fold_of)}).to_csv(path, index=False)
    assert make_split(rav, f"file:{path}").protocol == "speaker-independent"


def test_unknown_parameters_are_named_with_the_allowed_ones(rav):
    with pytest.raises(
        ParameterError, match=r"'random-holdout' takes no parameter 'k' \(it takes: test_fraction\)"
    ):
        make_split(rav, "random-holdout", k=3)
    with pytest.raises(ParameterError, match=r"'loso' takes no parameter 'train_corpus' \(it takes: none\)"):
        make_split(rav, "loso", train_corpus="ravdess")
    with pytest.raises(ParameterError, match=r"test_fraction must be in \(0, 1\), got 'a lot'"):
        make_split(rav, "random-holdout", test_fraction="a lot")
    with pytest.raises(
        ParameterError, match=r"cross-corpus needs train_corpus=, test_corpus= \(corpus values"
    ):
        make_split(rav, "cross-corpus")


# -- leave-one-corpus-out ----------------------------------------------------------------------------------


def _three_corpora() -> pd.DataFrame:
    """alpha: 2 speakers x 10, beta: 3 x 6, gamma: 2 x 4; alpha/1-0 and gamma/2-0 are the same audio."""
    rows = []
    for corpus, n_spk, n_utt in (("alpha", 2, 10), ("beta", 3, 6), ("gamma", 2, 4)):
        for s in range(1, n_spk + 1):
            rows += [
                _row(f"{corpus}/{s}-{i}", f"{corpus}-{s}", LABELS[i % 4], corpus=corpus, gender="mf"[s % 2])
                for i in range(n_utt)
            ]
    df = _frame(rows)
    df.loc[df["utt_id"].isin(["alpha/1-0", "gamma/2-0"]), "dup_group"] = "x" * 40
    return df


def test_leave_one_corpus_out_hand_worked():
    df = _three_corpora()
    ids = {c: set(df.loc[df["corpus"] == c, "utt_id"]) for c in ("alpha", "beta", "gamma")}
    split = make_split(df, "leave-one-corpus-out", seed=0)
    assert (split.n_folds, split.group_column, split.speaker_independent) == (3, "corpus", True)
    assert split.params == {"corpora": ["alpha", "beta", "gamma"], "valid_fraction": 0.1}
    assert split.protocol == "leave-one-corpus-out" and split.id.startswith("leave-one-corpus-out-")
    expected_rest = {  # everything of the other corpora, less training clips that duplicate test audio
        "alpha": (ids["beta"] | ids["gamma"]) - {"gamma/2-0"},
        "beta": ids["alpha"] | ids["gamma"],
        "gamma": (ids["alpha"] | ids["beta"]) - {"alpha/1-0"},
    }
    for f, corpus in zip(split.folds, ("alpha", "beta", "gamma"), strict=True):
        assert set(f.test) == ids[corpus]
        assert set(f.train) | set(f.valid) == expected_rest[corpus] and not set(f.train) & set(f.valid)
        # one whole speaker to validation: max(1, round(0.1 * 5)), max(1, round(0.1 * 3)) groups
        tr, va, te = (_speakers(df, p) for p in (f.train, f.valid, f.test))
        assert not (tr & va or tr & te or va & te)
        assert len(va) == 1 or va == {"alpha-1", "gamma-2"}  # these two share audio: one speaker group
    no_valid = make_split(df, "leave-one-corpus-out", seed=0, valid_fraction=0.0)
    assert [set(f.train) for f in no_valid.folds] == list(expected_rest.values())
    assert all(f.valid == () for f in no_valid.folds)
    assert make_split(df, "leave-one-corpus-out", seed=1).id != split.id


def test_leave_one_corpus_out_needs_two_corpora(rav):
    with pytest.raises(ParameterError, match=r"at least 2 corpora.*only 'ravdess'"):
        make_split(rav, "leave-one-corpus-out")
    with pytest.raises(ParameterError, match="takes no parameter 'test_corpus'"):
        make_split(pd.concat([rav, _tess()]), "leave-one-corpus-out", test_corpus="tess")


# -- a new strategy is one class ----------------------------------------------------------------------------


class OddEvenSpeakers(SplitStrategy):
    """Two folds: odd-numbered speakers against even-numbered ones (test odd first unless ``even_first``)."""

    name = "odd-even"
    description = "odd against even speaker numbers"
    params: ClassVar[Mapping[str, Any]] = {"even_first": False}
    group_column = "speaker"
    speaker_independent = True
    protocol = "odd-vs-even"

    def folds(self, df, params, *, valid_fraction, seed):
        odd = df["speaker"].str[-2:].astype(int).to_numpy() % 2 == 1
        rows = np.arange(len(df))
        order = (~odd, odd) if params["even_first"] else (odd, ~odd)
        return [
            (*self.carve_valid(df, rows[~is_test], valid_fraction, seed=seed, fold=i), rows[is_test])
            for i, is_test in enumerate(order)
        ]


class LeakyOddEven(OddEvenSpeakers):
    """OddEvenSpeakers with one test utterance moved to the training part: its speaker is on both sides."""

    name = "leaky-odd-even"

    def folds(self, df, params, *, valid_fraction, seed):
        parts = super().folds(df, params, valid_fraction=valid_fraction, seed=seed)
        return [(np.r_[train, test[:1]], valid, test[1:]) for train, valid, test in parts]


@pytest.fixture
def odd_even():
    register_strategy(OddEvenSpeakers)
    register_strategy(LeakyOddEven)
    yield
    unregister_strategy("odd-even")
    unregister_strategy("leaky-odd-even")


def test_a_new_strategy_is_one_registered_class(rav, odd_even, tmp_path):
    split = make_split(rav, "odd-even", seed=0)
    odd = {f"ravdess-{a:02d}" for a in range(1, 25, 2)}
    assert split.n_folds == 2 and split.protocol == "odd-vs-even" and split.group_column == "speaker"
    assert split.params == {"even_first": False, "valid_fraction": 0.1}
    assert _speakers(rav, split.folds[0].test) == odd and not _speakers(rav, split.folds[1].test) & odd
    for f in split.folds:
        assert len(_speakers(rav, f.valid)) == 1  # round(0.1 * 12) whole speakers
        assert not _speakers(rav, f.valid) & (_speakers(rav, f.train) | _speakers(rav, f.test))
    flipped = make_split(rav, "odd-even", even_first=True)
    assert flipped.folds[0].test == split.folds[1].test and flipped.id != split.id
    assert Split.load(split.save(tmp_path / "s.json")).protocol == "odd-vs-even"
    assert "odd-even" in list_strategies()
    with pytest.raises(ParameterError, match=r"takes no parameter 'k' \(it takes: even_first\)"):
        make_split(rav, "odd-even", k=2)
    with pytest.raises(LeakageError, match=r"fold 0: speaker 'ravdess-01' is in both test and train"):
        make_split(rav, "leaky-odd-even")
    with pytest.raises(ParameterError, match="already registered"):
        register_strategy(type("Other", (OddEvenSpeakers,), {}))
    with pytest.raises(ParameterError, match="does not implement folds"):
        register_strategy(type("NoFolds", (SplitStrategy,), {"name": "no-folds"}))


def test_strategies_from_plugins(rav, monkeypatch, caplog):
    import sertool.plugins

    class Shadow(OddEvenSpeakers):
        name = "loso"

    found = {"odd-even": OddEvenSpeakers, "junk": 42, "shadow": Shadow}
    real = sertool.plugins.load_group
    monkeypatch.setattr(sertool.plugins, "load_group", lambda g: found if g == PLUGIN_GROUP else real(g))
    assert "odd-even" not in STRATEGIES  # not registered: found through the plugin group
    split = make_split(rav, "odd-even", seed=0, valid_fraction=0.0)
    assert split.protocol == "odd-vs-even" and split.n_folds == 2
    assert list(list_strategies())[-1] == "odd-even" and "junk" not in list_strategies()
    assert "junk" in caplog.text and "not a sertool.splits.SplitStrategy subclass" in caplog.text
    assert "shadow" in caplog.text  # reuses a built-in name: left out, the built-in wins
    assert (
        make_split(rav, "loso").n_folds == 24
        and get_strategy("loso").__class__.__name__ == "LeaveOneSpeakerOut"
    )
    found["leaky"] = LeakyOddEven
    with pytest.raises(LeakageError, match="is in both test and train"):  # checked like the built-ins
        make_split(rav, "leaky-odd-even")
    with pytest.raises(ParameterError, match=r"unknown split strategy 'nope'.*odd-even"):
        make_split(rav, "nope")


def test_split_command_takes_split_params_for_merged_corpora(demo_root, tmp_path, capsys):
    """``sertool split --corpus demo,csv`` with cross-corpus parameters, and leave-one-corpus-out."""
    from sertool.cli import main
    from sertool.data.corpora.demo import generate_demo_corpus

    other = generate_demo_corpus(tmp_path / "other", n_speakers=2, clips_per_class=3, seed=1)
    wavs = sorted(other.rglob("*.wav"))
    (other / "labels.csv").write_text(
        "path,label,speaker\n"
        + "".join(f"{w.relative_to(other)},{w.stem.split('_')[1]},{w.stem.split('_')[0]}\n" for w in wavs)
    )
    base = [
        "split",
        "--corpus",
        "demo,csv",
        "--root",
        f"{demo_root},{other}",
        "--results",
        str(tmp_path / "r"),
    ]
    argv = [
        *base,
        "--strategy",
        "cross-corpus",
        "--split-params",
        '{"train_corpus": "demo", "test_corpus": "csv"}',
    ]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["protocol"], out["strategy"], out["n_folds"]) == ("cross-corpus", "cross-corpus", 1)
    assert out["params"] == {"train_corpus": "demo", "test_corpus": "csv", "valid_fraction": 0.1}
    (fold,) = out["folds"]
    # demo_root: 4 speakers x 4 labels x 6 clips = 96 training clips, 1 speaker (24) of them for validation;
    # csv: 2 speakers x 4 x 3 = 24 test clips
    assert (fold["n_train"], fold["n_valid"], fold["n_test"]) == (72, 24, 24)
    assert fold["speakers"]["test"] == ["csv-spk01", "csv-spk02"] and len(fold["speakers"]["valid"]) == 1
    assert all(s.startswith("demo-") for s in fold["speakers"]["train"] + fold["speakers"]["valid"])
    assert (tmp_path / "r" / "csv+demo" / out["split_id"] / "split.json").is_file()
    assert main([*base, "--strategy", "leave-one-corpus-out", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == "leave-one-corpus-out" and out["params"]["corpora"] == ["csv", "demo"]
    assert [(f["n_train"] + f["n_valid"], f["n_test"]) for f in out["folds"]] == [(96, 24), (24, 96)]
    for params, message in (
        ('{"train_corpus": "demo"}', "cross-corpus needs test_corpus="),
        ('{"train_corpus": "demo", "test_corpus": "csv", "k": 2}', "takes no parameter 'k'"),
        ('{"valid_fraction": 0.2}', "give valid_fraction as --valid-fraction"),
        ("[1]", "--split-params must be a JSON object"),
    ):
        assert main([*base, "--strategy", "cross-corpus", "--split-params", params]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


# -- real corpus ---------------------------------------------------------------------------------------------


@pytest.mark.corpora
def test_ravdess_speaker_6fold_real(ravdess_root):
    from sertool.data.manifest import build_manifest

    manifest = build_manifest("ravdess", ravdess_root, jobs=2).manifest
    dups = manifest.loc[manifest["dup_group"] != ""]
    assert len(dups) >= 2 and set(dups["speaker"]) == {"ravdess-07"}
    split = make_split(manifest, "speaker-6fold", seed=0)
    for f in split.folds:
        assert len(_speakers(manifest, f.test)) == 4
        for _, group in dups.groupby("dup_group"):
            sides = {r for r in ("train", "valid", "test") if set(group["utt_id"]) & set(f.part(r))}
            assert len(sides) == 1
    assert np.unique([u for f in split.folds for u in f.test]).size == len(manifest)
