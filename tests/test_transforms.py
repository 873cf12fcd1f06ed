"""Preprocessing and augmentation in front of extractors, and training-only augmentation in the bench runner."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from conftest import tone

from sertool.bench.runner import _augmented_rows, run_bench, unit_paths
from sertool.data.manifest import build_manifest
from sertool.exceptions import ParameterError
from sertool.features import configured_extractor, get_extractor
from sertool.features.extract import extract_features
from sertool.features.store import FeatureStore
from sertool.features.transforms import (
    AugmentSpec,
    TransformedExtractor,
    augmented_extractors,
    parse_augment,
    parse_preprocess,
)
from sertool.splits import make_split

SR = 16000


def test_specs_fill_defaults_and_refuse_unknown_names_and_parameters():
    assert parse_preprocess("denoise,trim") == [
        {"name": "denoise", "stationary": False, "prop_decrease": 1.0},
        {"name": "trim", "top_db": 30.0},
    ]
    assert parse_preprocess([{"name": "trim", "top_db": 40}])[0]["top_db"] == 40
    aug = parse_augment({"transforms": ["awgn", {"name": "gain", "max_gain_db": 6}], "copies": 2})
    assert aug.transforms[1] == {"name": "gain", "min_gain_db": -12.0, "max_gain_db": 6}
    assert aug.tag == "aug-awgn-gain-x2" and parse_augment("awgn").tag == "aug-awgn"
    assert parse_augment({"transforms": "pitch", "balance": True}).tag == "aug-pitch-bal"
    for bad, match in [
        ("reverb", "unknown augmentation 'reverb'"),
        ({"transforms": ["awgn"], "copies": 0}, "copies must be"),
        ({"transforms": [{"name": "awgn", "snr": 3}]}, r"unknown parameters \['snr'\]"),
        ({"transforms": []}, "at least one transform"),
        ({"transforms": ["awgn"], "shuffle": True}, r"unknown keys \['shuffle'\]"),
    ]:
        with pytest.raises(ParameterError, match=match):
            parse_augment(bad)
    with pytest.raises(ParameterError, match="unknown preprocessing step 'denoize'"):
        parse_preprocess(["denoize"])


def test_keys_change_exactly_with_preprocessing_and_augmentation(tmp_path):
    plain = get_extractor("handcrafted94")
    pre = configured_extractor("handcrafted94", {"preprocess": ["trim"]})
    assert isinstance(pre, TransformedExtractor) and pre.name == "handcrafted94"
    assert (
        pre.key != plain.key and pre.key == configured_extractor("handcrafted94", {"preprocess": "trim"}).key
    )
    assert (
        configured_extractor("handcrafted94", {"preprocess": [{"name": "trim", "top_db": 40}]}).key != pre.key
    )
    assert configured_extractor("handcrafted94", {}).key == plain.key  # no preprocessing: the plain extractor
    copies = augmented_extractors(pre, parse_augment({"transforms": ["awgn"], "copies": 2}))
    assert [c.name for c in copies] == ["handcrafted94.aug"] * 2
    assert len({c.key for c in copies} | {pre.key, plain.key}) == 4
    assert copies[0].params()["preprocess"] == pre.preprocess  # the copy is of the preprocessed clip
    assert (pre.dim, pre.thread_safe, pre.fork_safe) == (94, plain.thread_safe, plain.fork_safe)


def test_augmentation_is_seeded_by_the_clip_and_copy_and_leaves_global_rngs_alone():
    y = tone(1.0)
    ex = augmented_extractors(
        get_extractor("handcrafted94"), parse_augment({"transforms": ["awgn"], "copies": 2})
    )
    random.seed(5)
    np.random.seed(5)
    before = (random.random(), np.random.random())
    random.seed(5)
    np.random.seed(5)
    a0, a0_again, a1 = ex[0].transform(y), ex[0].transform(y), ex[1].transform(y)
    assert (random.random(), np.random.random()) == before  # the caller's random streams are untouched
    np.testing.assert_array_equal(a0, a0_again)
    assert not np.array_equal(a0, a1) and not np.array_equal(a0, y)
    # AWGN at an SNR drawn from 15..30 dB (audiomentations' AddGaussianSNR)
    for a in (a0, a1):
        snr = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean((a - y).astype(np.float64) ** 2))
        assert 14.5 < snr < 30.5, snr
    other = AugmentSpec(ex[0].augment.transforms, copies=2, seed=1)
    assert not np.array_equal(augmented_extractors(get_extractor("handcrafted94"), other)[0].transform(y), a0)


def test_preprocessing_trims_silence_and_denoises():
    voiced = tone(1.0, amp=0.3)
    padded = np.concatenate([np.zeros(8000, np.float32), voiced, np.zeros(8000, np.float32)])
    trimmed = TransformedExtractor(get_extractor("handcrafted94"), preprocess=parse_preprocess("trim"))
    out = trimmed.transform(padded)
    assert abs(out.size - voiced.size) < 0.15 * SR  # 2 s -> ~1 s (librosa trims whole 512-sample frames)
    gap = np.concatenate([voiced, np.zeros(SR, np.float32), voiced])
    assert (
        abs(
            TransformedExtractor(get_extractor("mfcc40"), preprocess=parse_preprocess("silence"))
            .transform(gap)
            .size
            - 2 * SR
        )
        < 0.2 * SR
    )
    # three voiced bursts in stationary noise: the gaps lose the noise, the bursts keep their shape
    clean, voiced_mask = np.zeros(3 * SR, np.float32), np.zeros(3 * SR, bool)
    for a, b in [(0.5, 1.0), (1.5, 2.0), (2.3, 2.6)]:
        i, j = int(a * SR), int(b * SR)
        clean[i:j], voiced_mask[i:j] = tone(b - a)[: j - i], True
    noisy = clean + np.random.default_rng(0).normal(0, 0.02, clean.size).astype(np.float32)
    den = TransformedExtractor(
        get_extractor("handcrafted94"), preprocess=parse_preprocess("denoise")
    ).transform(noisy)
    assert den.dtype == np.float32 and den.shape == noisy.shape
    assert np.mean(noisy[~voiced_mask] ** 2) > 10 * np.mean(den[~voiced_mask] ** 2)
    assert np.corrcoef(den[voiced_mask], clean[voiced_mask])[0, 1] > 0.9  # 0.947 measured


def test_preprocessed_features_equal_the_base_on_preprocessed_audio_through_the_cache(tmp_path, demo_root):
    m = build_manifest("demo", demo_root).manifest.head(8)
    pre = configured_extractor("handcrafted94", {"preprocess": ["trim"]})
    extract_features(m, pre, cache=tmp_path, jobs=2)  # forked workers
    fs = FeatureStore(tmp_path).load(m, "handcrafted94", key=pre)
    from sertool.data.audio import load_audio

    y = load_audio(m["path"].iloc[3])
    expect = get_extractor("handcrafted94").extract(pre.transform(y))["pooled"]
    np.testing.assert_allclose(fs.X[3], expect, rtol=1e-6)
    assert (tmp_path / "demo" / "handcrafted94" / pre.key.split("/")[1]).is_dir()


def test_balanced_rows_fill_every_class_to_the_largest():
    labels = (
        {f"a{i}": "a" for i in range(10)}
        | {f"b{i}": "b" for i in range(4)}
        | {f"c{i}": "c" for i in range(1)}
    )
    ids = list(labels)
    rows = _augmented_rows(
        ids, labels, parse_augment({"transforms": ["awgn"], "copies": 3, "balance": True}), 0, 0
    )
    counts = pd.Series([labels[u] for u in ids] + [labels[u] for u, _ in rows]).value_counts().to_dict()
    assert counts == {"a": 10, "b": 10, "c": 4}  # c: one clip, at most 3 copies
    assert max(c for _, c in rows) == 2 and len(set(rows)) == len(rows)
    plain = _augmented_rows(ids, labels, parse_augment({"transforms": ["awgn"], "copies": 2}), 0, 0)
    assert len(plain) == 2 * len(ids)


def test_bench_adds_augmented_copies_to_training_parts_only(tmp_path, demo_root):
    m = build_manifest("demo", demo_root).manifest
    split = make_split(m, "random-holdout", seed=0)
    test_ids = set(split.folds[0].test)
    rep = run_bench(
        m, split, features=["handcrafted94"], models="logreg,knn", results_dir=tmp_path / "r",
        cache=tmp_path / "c", jobs=1, augment="awgn",
    )  # fmt: skip
    assert rep.counts == {"done": 2}
    base = rep.results_dir
    meta = json.loads(unit_paths(base, "handcrafted94~aug-awgn", "logreg", 0)[0].read_text())
    fold = split.folds[0]
    assert meta["n_augmented"] == meta["n_train"] == len(fold.train) + len(fold.valid)
    assert meta["augment"]["transforms"][0]["name"] == "awgn" and len(meta["augment"]["copy_keys"]) == 1
    # the augmented cache holds training utterances only: no test clip was ever augmented
    copy = augmented_extractors(get_extractor("handcrafted94"), parse_augment("awgn"))[0]
    aug = FeatureStore(tmp_path / "c").load(m, "handcrafted94.aug", key=copy, allow_missing=True)
    assert set(aug.utt_ids) == set(fold.train) | set(fold.valid) and not set(aug.utt_ids) & test_ids
    # the plain run is another entry of the same board; both are scored on the same test clips
    run_bench(
        m,
        split,
        features=["handcrafted94"],
        models="logreg",
        results_dir=tmp_path / "r",
        cache=tmp_path / "c",
        jobs=1,
    )
    board = pd.read_csv(base / "leaderboard.csv")
    assert set(board["features"]) == {"handcrafted94", "handcrafted94~aug-awgn"}
    plain = pd.read_parquet(unit_paths(base, "handcrafted94", "logreg", 0)[1])
    augd = pd.read_parquet(unit_paths(base, "handcrafted94~aug-awgn", "logreg", 0)[1])
    assert plain["utt_id"].tolist() == augd["utt_id"].tolist() == list(fold.test)


def test_a_unit_of_other_features_is_redone_not_reused(tmp_path, demo_root, caplog):
    m = build_manifest("demo", demo_root).manifest
    split = make_split(m, "speaker-4fold", seed=0)
    kw = dict(
        features=["handcrafted94"], models="gnb", results_dir=tmp_path / "r", cache=tmp_path / "c", jobs=1
    )
    run_bench(m, split, **kw)
    path = unit_paths(tmp_path / "r" / "demo" / split.id, "handcrafted94", "gnb", 1)[0]
    meta = json.loads(path.read_text())
    meta["feature_key"] = "handcrafted94/v0-0000000000"  # as if an extractor parameter had changed since
    path.write_text(json.dumps(meta))
    rep = run_bench(m, split, **kw)
    assert [u.status for u in rep.units] == ["cached", "done", "cached", "cached"]
    assert "computed from other features" in caplog.text
    assert json.loads(path.read_text())["feature_key"] != "handcrafted94/v0-0000000000"


def test_balancing_extracts_and_adds_copies_of_the_smaller_class_only(tmp_path, demo_root):
    m = build_manifest("demo", demo_root).manifest
    small = sorted(m["label"].unique())[0]
    drop = m.index[(m["label"] == small)][::2]  # half of one class gone: it is the only one to fill
    m = m.drop(drop).reset_index(drop=True)
    split = make_split(m, "speaker-4fold", seed=0)
    spec = {"transforms": ["gain"], "copies": 2, "balance": True}
    rep = run_bench(
        m, split, features=["handcrafted94"], models="gnb", results_dir=tmp_path / "r", cache=tmp_path / "c",
        jobs=1, augment=spec,
    )  # fmt: skip
    assert rep.counts == {"done": 4}
    copies = augmented_extractors(get_extractor("handcrafted94"), parse_augment(spec))
    store = FeatureStore(tmp_path / "c")
    got = [store.load(m, "handcrafted94.aug", key=c, allow_missing=True).utt_ids for c in copies]
    labels = dict(zip(m["utt_id"], m["label"], strict=True))
    assert got[0] and {labels[u] for u in got[0] + got[1]} == {small}
    for fold in split.folds:
        meta = json.loads(
            unit_paths(rep.results_dir, "handcrafted94~aug-gain-x2-bal", "gnb", fold.index)[0].read_text()
        )
        fit = [labels[u] for u in (*fold.train, *fold.valid)]
        counts = pd.Series(fit).value_counts()
        assert meta["n_augmented"] == min(counts.max() - counts[small], 2 * counts[small])


def test_speaker_normalisation_standardises_each_speaker_with_its_own_statistics(tmp_path, demo_root):
    from sertool.bench.fitting import ViewData, normalize_groups

    m = build_manifest("demo", demo_root).manifest
    rng = np.random.default_rng(0)
    offsets = {s: rng.normal(0, 5, 3) for s in m["speaker"].unique()}
    X = np.stack([offsets[s] + rng.normal(0, 1, 3) for s in m["speaker"]]).astype(np.float32)
    ids = m["utt_id"].tolist()
    feats = ViewData(X.copy(), ids, "k", "v")
    normalize_groups(feats, m, "speaker")
    assert feats.entry == "v~norm-speaker" and feats.normalize == "speaker"
    for s in m["speaker"].unique():
        part = feats.X[(m["speaker"] == s).to_numpy()]
        np.testing.assert_allclose(part.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(part.std(axis=0), 1, atol=1e-4)
    # through the runner: the entry is named, recorded, and scored on the same test clips
    split = make_split(m, "speaker-4fold", seed=0)
    rep = run_bench(
        m, split, features=["handcrafted94"], models="logreg", results_dir=tmp_path / "r", cache=tmp_path / "c",
        jobs=1, normalize="speaker",
    )  # fmt: skip
    meta = json.loads(unit_paths(rep.results_dir, "handcrafted94~norm-speaker", "logreg", 0)[0].read_text())
    assert meta["normalize"] == "speaker" and meta["features"] == "handcrafted94~norm-speaker"
    with pytest.raises(ParameterError, match="normalize must be"):
        run_bench(
            m, split, features=["handcrafted94"], models="logreg", results_dir=tmp_path, normalize="clip"
        )


def test_inner_grid_search_keeps_a_clips_augmented_copies_in_one_fold(monkeypatch):
    """Speaker-dependent split + augmentation: a copy in the inner training part and its clip in the inner
    validation part would reward memorising (k=1 neighbours); the inner folds are grouped by origin clip."""
    import sklearn.model_selection as ms
    from sklearn.neighbors import KNeighborsClassifier

    from sertool.bench.fitting import _tune

    seen = {}
    real = ms.GridSearchCV

    def spy(est, grid, **kw):
        seen["cv"] = kw["cv"]
        return real(est, grid, **kw)

    monkeypatch.setattr(ms, "GridSearchCV", spy)
    rng = np.random.default_rng(0)
    n = 60
    X = rng.normal(size=(n, 4))
    y = rng.integers(0, 3, n)
    origin = [f"u{i}" for i in range(n)]
    Xa, ya, groups = np.vstack([X, X + 1e-3]), np.concatenate([y, y]), origin + origin  # one copy each
    spec = type("Spec", (), {"param_grid": {"n_neighbors": [1, 15]}, "sample_weight": False})()
    _tune(KNeighborsClassifier(), spec, Xa, ya, groups, True, 0, 1)
    for train, valid in seen["cv"]:
        assert not {groups[i] for i in train} & {groups[i] for i in valid}


def test_a_normalised_entry_is_named_transductive_beside_plain_ones_on_one_board(tmp_path, demo_root):
    m = build_manifest("demo", demo_root).manifest
    split = make_split(m, "speaker-4fold", seed=0)
    kw = dict(
        features=["handcrafted94"], models="logreg", results_dir=tmp_path / "r", cache=tmp_path / "c", jobs=1
    )
    run_bench(m, split, **kw)
    rep = run_bench(m, split, normalize="speaker", **kw)
    board = pd.read_csv(rep.leaderboard["csv"]).set_index("features")
    assert board.loc["handcrafted94~norm-speaker", "protocol"] == "speaker-independent, transductive"
    assert board.loc["handcrafted94", "protocol"] == "speaker-independent"
