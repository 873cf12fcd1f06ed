"""whisper-<size> with ``pooling="meanstd"``: each layer's mean and standard deviation over the valid frames."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_whisper, tone
from transformers import WhisperConfig, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from sertool.bench.fitting import feature_label
from sertool.exceptions import ParameterError
from sertool.features.whisper import WhisperExtractor, whisper_log_mel


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper_meanstd"))


def _extractor(folder: Path, cache: Path, **kw) -> WhisperExtractor:
    return WhisperExtractor("tiny-test", weights=folder, cache=cache, device="cpu", frame_layers=None, **kw)


def _reference(folder: Path, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """transformers' WhisperEncoder on the clip alone (positions sliced to its frames): per layer, the mean
    and the population std over its encoder frames, (n_layers, dim) each."""
    hf = WhisperForConditionalGeneration.from_pretrained(folder).model.encoder.eval()
    n = (int(np.ceil(len(y) / 160)) + 1) // 2
    cfg = WhisperConfig.from_dict({**hf.config.to_dict(), "max_source_positions": n})
    enc = WhisperEncoder(cfg).eval()
    state = dict(hf.state_dict())
    state["embed_positions.weight"] = state["embed_positions.weight"][:n]
    enc.load_state_dict(state)
    with torch.no_grad():
        out = enc(torch.from_numpy(whisper_log_mel(y)[:, : 2 * n])[None], output_hidden_states=True)
    states = [h[0, :n].double().numpy() for h in out.hidden_states]
    return np.stack([h.mean(0) for h in states]), np.stack([h.std(0) for h in states])


def test_meanstd_is_the_mean_then_the_std_of_each_layer(tiny_dir, tmp_path):
    clips = [tone(d, freq=f, seed=i) for i, (d, f) in enumerate([(0.4, 300.0), (1.1, 200.0), (1.7, 150.0)])]
    stats = _extractor(tiny_dir, tmp_path, pooling="meanstd")
    mean_only = _extractor(tiny_dir, tmp_path)
    assert stats.dim == 2 * mean_only.dim
    batched = stats.extract_batch(clips)  # clips of three lengths in one batch: padding must not leak in
    for y, out in zip(clips, batched, strict=True):
        pooled = out["pooled"]
        assert pooled.shape == (stats.n_layers, stats.dim) and pooled.dtype == np.float32
        d = mean_only.dim
        np.testing.assert_allclose(pooled[:, :d], mean_only.extract(y)["pooled"], atol=1e-6)
        ref_mean, ref_std = _reference(tiny_dir, y)
        np.testing.assert_allclose(pooled[:, :d], ref_mean, atol=2e-5)
        np.testing.assert_allclose(pooled[:, d:], ref_std, rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(stats.extract(y)["pooled"], pooled, atol=1e-6)  # alone = in a batch


def test_pooling_is_part_of_the_key_and_the_entry_name(tiny_dir, tmp_path):
    mean_only, stats = _extractor(tiny_dir, tmp_path), _extractor(tiny_dir, tmp_path, pooling="meanstd")
    assert "pooling" not in mean_only.params() and stats.params()["pooling"] == "meanstd"
    assert stats.key != mean_only.key
    assert feature_label("whisper-tiny-test@all", stats) == "whisper-tiny-test@all~meanstd"
    assert feature_label("whisper-tiny-test@all", mean_only) == "whisper-tiny-test@all"
    with pytest.raises(ParameterError, match="pooling must be one of mean, meanstd"):
        _extractor(tiny_dir, tmp_path, pooling="max")
    # the ONNX export's Whisper front end pools the mean: a meanstd model gets the classifier graph only
    from sertool.export import _waveform_unsupported

    model = SimpleNamespace(
        card={"features": "whisper-tiny-test@all", "extractor": {"name": "whisper-tiny-test"}}
    )
    assert _waveform_unsupported(SimpleNamespace(**vars(model), extractor=mean_only), 17) == ""
    assert "meanstd" in _waveform_unsupported(SimpleNamespace(**vars(model), extractor=stats), 17)


def test_frames_of_every_layer_are_opt_in_and_their_size_is_announced(tiny_dir, tmp_path, caplog):
    import logging

    import pandas as pd

    from sertool.features.extract import _announce_frames

    every = WhisperExtractor("tiny-test", weights=tiny_dir, cache=tmp_path, device="cpu", frame_layers="all")
    assert every.frame_layers == tuple(range(every.n_layers))
    clips = [tone(d, freq=200.0, seed=i) for i, d in enumerate([0.5, 1.3, 2.0])]
    outs = every.extract_batch(clips)
    for out in outs:
        assert out["frames"].shape[0] == every.n_layers and out["frames"].dtype == np.float16
        np.testing.assert_allclose(out["frames"].astype(np.float32).mean(axis=1), out["pooled"], atol=2e-3)
    # the announced size is what the frames weigh
    durations = [len(y) / 16000 for y in clips]
    assert every.frames_bytes(durations) == sum(o["frames"].nbytes for o in outs)
    assert (
        WhisperExtractor("tiny-test", weights=tiny_dir, cache=tmp_path, frame_layers=None).frames_bytes([1.0])
        == 0
    )
    with caplog.at_level(logging.WARNING, logger="sertool.features.extract"):
        _announce_frames(every, pd.DataFrame({"duration_s": durations}))
    assert f"frames of {every.n_layers} layer(s)" in caplog.text and "GiB in the cache" in caplog.text
