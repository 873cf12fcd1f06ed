"""ssl-<name>: layer-wise pooled states of tiny random HuBERT / wav2vec2 models equal a direct transformers run;
batching never changes a clip's output; identity and errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tone
from transformers import (
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from sertool.exceptions import ParameterError
from sertool.features import get_extractor
from sertool.features.ssl import SSLExtractor

SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16, 16, 16),
    "conv_kernel": (10, 3, 3),
    "conv_stride": (5, 2, 2),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def save_model(folder: Path, kind: str, seed: int = 0) -> Path:
    """A tiny randomly initialised HuBERT (group-norm CNN, no masks) or wav2vec2 (layer norm, masks) folder."""
    torch.manual_seed(seed)
    if kind == "hubert":
        model = HubertModel(HubertConfig(**SMALL, feat_extract_norm="group"))
        fe = Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False)
    else:
        model = Wav2Vec2Model(Wav2Vec2Config(**SMALL, feat_extract_norm="layer", do_stable_layer_norm=True))
        fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    model.eval().save_pretrained(folder)
    fe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("hubert"), "hubert")


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("w2v"), "wav2vec2")


@pytest.fixture(scope="module")
def signals() -> list[np.ndarray]:
    return [tone(d, freq=f, seed=i) for i, (d, f) in enumerate([(0.41, 300.0), (1.0, 220.0), (0.73, 150.0)])]


def reference(folder: Path, y: np.ndarray, cls: type) -> np.ndarray:
    """Direct transformers run on one clip: mean over all frames of every hidden state, (n_layers, dim)."""
    fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    x = fe(y, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        states = cls.from_pretrained(folder).eval()(x, output_hidden_states=True).hidden_states
    return np.stack([h[0].mean(0).numpy() for h in states])


@pytest.mark.parametrize(("kind", "cls"), [("hubert", HubertModel), ("wav2vec2", Wav2Vec2Model)])
def test_pooled_equals_direct_run(hubert_dir, w2v_dir, signals, kind, cls) -> None:
    folder = hubert_dir if kind == "hubert" else w2v_dir
    ex = SSLExtractor("tiny", model=folder, device="cpu")
    assert (ex.n_layers, ex.dim) == (3, 32)
    for y in signals:
        out = ex.extract(y)
        assert out["pooled"].shape == (3, 32) and out["pooled"].dtype == np.float32
        np.testing.assert_allclose(out["pooled"], reference(folder, y, cls), atol=1e-5)


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_batching_does_not_change_outputs(hubert_dir, w2v_dir, signals, kind) -> None:
    ex = SSLExtractor("tiny", model=hubert_dir if kind == "hubert" else w2v_dir, device="cpu", batch_size=3)
    assert ex._batchable is (kind == "wav2vec2")
    batched = ex.extract_batch(signals)
    for y, out in zip(signals, batched, strict=True):
        np.testing.assert_allclose(out["pooled"], ex.extract(y)["pooled"], atol=1e-4)


def test_frames_and_short_clip(w2v_dir, signals) -> None:
    ex = SSLExtractor("tiny", model=w2v_dir, device="cpu", frame_layers=[0, 2])
    assert ex.outputs() == ("pooled", "frames")
    out = ex.extract_batch(signals)
    for y, o in zip(signals, out, strict=True):
        t = ((len(y) - 10) // 5 + 1 - 3) // 2 + 1
        t = (t - 3) // 2 + 1
        assert o["frames"].shape == (2, t, 32) and o["frames"].dtype == np.float16
        np.testing.assert_allclose(o["frames"].astype(np.float32).mean(1), o["pooled"][[0, 2]], atol=2e-3)
    tiny = ex.extract(tone(0.001))  # 16 samples: padded to the CNN's receptive field (30 samples), one frame
    assert tiny["frames"].shape == (2, 1, 32)


def test_identity_and_registry(hubert_dir, w2v_dir, tmp_path) -> None:
    ex = get_extractor("ssl-tiny", model=str(hubert_dir), device="cpu")
    assert isinstance(ex, SSLExtractor) and ex.name == "ssl-tiny" and ex.key.startswith("ssl-tiny/v1-")
    p = ex.params()
    assert p["model"] == "local" and len(p["weights_sha256"]) == 16 and p["normalize"] is False
    assert SSLExtractor("tiny", model=hubert_dir, batch_size=4, device="cpu").key == ex.key
    assert SSLExtractor("tiny", model=w2v_dir).key != ex.key
    assert SSLExtractor("tiny", model=save_model(tmp_path / "h2", "hubert", seed=1)).key != ex.key
    assert SSLExtractor("tiny", model=hubert_dir, frame_layers=[1]).key != ex.key
    assert pickle.loads(pickle.dumps(ex)).key == ex.key


def test_errors(hubert_dir, tmp_path) -> None:
    with pytest.raises(ParameterError, match="unknown model name"):
        get_extractor("ssl-nonexistent")
    with pytest.raises(ParameterError, match="does not exist"):
        SSLExtractor("x", model=tmp_path / "missing")
    with pytest.raises(ParameterError, match="frame_layers"):
        SSLExtractor("x", model=hubert_dir, frame_layers=[5])
    with pytest.raises(ParameterError, match="device"):
        SSLExtractor("x", model=hubert_dir, device="gpu")
    with pytest.raises(ParameterError, match="1-D"):
        SSLExtractor("x", model=hubert_dir, device="cpu").extract(np.zeros((3, 100), dtype=np.float32))
