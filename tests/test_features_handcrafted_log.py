"""handcrafted94log: handcrafted94 with the mean of librosa's power_to_db of the 60-band mel spectrogram."""

from __future__ import annotations

import json
import pickle
import warnings

import librosa
import numpy as np
import pandas as pd
import pytest
from conftest import tone

from sertool.data.audio import load_audio
from sertool.exceptions import ParameterError
from sertool.features import available_extractors, get_extractor, parse_view
from sertool.features.handcrafted import HANDCRAFTED94_LAYOUT, handcrafted94_reference
from sertool.features.handcrafted_log import Handcrafted94Log, handcrafted94log_reference, log_mel

SR = 16000
MEL = slice(12, 72)  # the melspectrogram block of HANDCRAFTED94_LAYOUT
OTHER = np.r_[0:12, 72:94]


def librosa_log_mel_mean(y: np.ndarray) -> np.ndarray:
    """The mel block's definition, written out with librosa: mel power -> dB (defaults) -> mean over frames."""
    mel = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=2048, hop_length=512, n_mels=60, power=2.0, center=True, htk=False, norm="slaney"
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0).mean(axis=1)


def signals(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tones, noise, a clip shorter than half an FFT frame, silences and silence-padded speech stand-ins."""
    gap = tone(1.0, freq=180.0)
    gap[4000:9000] = 0.0
    return {
        "tone110": tone(1.3, freq=110.0),
        "tone440": tone(1.3, freq=440.0, seed=3),
        "noise": (0.1 * rng.standard_normal(20000)).astype(np.float32),
        "short": tone(0.05, freq=300.0),  # 800 samples < n_fft / 2
        "frame": tone(2048 / SR, freq=250.0),  # exactly one FFT window
        "gap": gap,
        "padded": np.concatenate([np.zeros(SR, np.float32), tone(0.5, freq=200.0), np.zeros(SR, np.float32)]),
        "silence": np.zeros(SR, np.float32),
        "short_silence": np.zeros(500, np.float32),
        "quiet": (1e-6 * rng.standard_normal(SR)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def outputs() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per signal: (signal, handcrafted94log's vector, handcrafted94's vector)."""
    log_ex, raw_ex = get_extractor("handcrafted94log"), get_extractor("handcrafted94")
    with warnings.catch_warnings():  # librosa warns on short and pitchless clips
        warnings.simplefilter("ignore")
        out = {
            k: (y, log_ex.extract(y)["pooled"], raw_ex.extract(y)["pooled"])
            for k, y in signals(np.random.default_rng(0)).items()
        }
    return out


def test_layout_places_the_mel_block_at_12_to_72():
    widths = dict(HANDCRAFTED94_LAYOUT)
    assert widths["chroma_stft"] == MEL.start and widths["melspectrogram"] == MEL.stop - MEL.start == 60


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mel_block_is_the_mean_of_librosas_power_to_db(outputs):
    for name, (y, got, _) in outputs.items():
        assert got.shape == (94,) and got.dtype == np.float32, name
        ref = librosa_log_mel_mean(y)
        # dB, float32 rounding of the filterbank product (in practice bit-identical)
        np.testing.assert_allclose(got[MEL], ref, rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_other_dims_are_handcrafted94s_and_its_definition(outputs):
    for name, (y, got, raw) in outputs.items():
        np.testing.assert_array_equal(got[OTHER], raw[OTHER], err_msg=name)
        ref = handcrafted94_reference(y, SR)[OTHER].astype(np.float64)
        np.testing.assert_allclose(got[OTHER], ref, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_vector_is_finite_and_silence_sits_at_the_db_floor(outputs):
    for name, (_, got, _) in outputs.items():
        assert np.isfinite(got).all(), name
    # all zeros: every band is amin = 1e-10 -> -100 dB (the top_db floor is relative, so also -100)
    for name in ("silence", "short_silence"):
        np.testing.assert_allclose(outputs[name][1][MEL], -100.0, rtol=1e-6)
    # padding with silence lowers the mean dB but keeps it >= 80 dB below the clip's loudest band/frame
    y, padded, _ = outputs["padded"]
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_mels=60)
    assert padded[MEL].min() >= 10 * np.log10(mel.max()) - 80.0 - 1e-3


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_raw_and_log_mel_blocks_differ_as_jensen_says(outputs):
    """Mean of dB <= dB of the mean power (per band; no floor reached on a tone with noise)."""
    y, got, raw = outputs["tone110"]
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_mels=60)
    assert mel.min() > mel.max() * 1e-8  # the floor is not reached
    np.testing.assert_allclose(raw[MEL], mel.mean(axis=1), rtol=1e-4)
    assert (got[MEL] <= 10 * np.log10(raw[MEL].astype(np.float64)) + 1e-3).all()
    assert not np.allclose(got[MEL], 10 * np.log10(raw[MEL].astype(np.float64)), atol=0.5)


def test_log_mel_is_librosas_power_to_db_exactly(rng):
    S = (rng.standard_normal((60, 200)) ** 2).astype(np.float32) * np.logspace(-14, 2, 200, dtype=np.float32)
    S[:, 5] = 0.0
    S[3, 7] = 1e-39
    got = log_mel(S)
    ref = librosa.power_to_db(S)
    assert got.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_reference_is_the_librosa_definition():
    y = tone(1.0, freq=150.0)
    ref = handcrafted94log_reference(y, SR)
    np.testing.assert_array_equal(ref[MEL], librosa_log_mel_mean(y).astype(np.float32))
    np.testing.assert_array_equal(ref[OTHER], handcrafted94_reference(y, SR)[OTHER])


def test_identity_differs_from_handcrafted94():
    log_ex, raw_ex = get_extractor("handcrafted94log"), get_extractor("handcrafted94")
    assert isinstance(log_ex, Handcrafted94Log) and "handcrafted94log" in available_extractors()
    assert log_ex.name == "handcrafted94log" != raw_ex.name
    assert log_ex.dim == raw_ex.dim == 94 and log_ex.sr == SR
    assert log_ex.key.startswith("handcrafted94log/v1-") and log_ex.key != raw_ex.key
    assert log_ex.params() == {
        "sr": SR,
        "mel": {"log": "power_to_db", "ref": 1.0, "amin": 1e-10, "top_db": 80.0},
    }
    assert log_ex.key.split("-")[-1] != raw_ex.key.split("-")[-1]  # the params hash alone differs too
    assert log_ex.thread_safe and log_ex.fork_safe


def test_takes_no_params():
    with pytest.raises(ParameterError, match="no parameters"):
        get_extractor("handcrafted94log", top_db=60.0)


def test_survives_pickling():
    ex = get_extractor("handcrafted94log")
    y = tone(1.2, freq=210.0)
    first = ex.extract(y)["pooled"]
    clone = pickle.loads(pickle.dumps(ex))
    np.testing.assert_array_equal(clone.extract(y)["pooled"], first)
    np.testing.assert_allclose(first[MEL], librosa_log_mel_mean(y), rtol=1e-5, atol=1e-4)


def test_fused_with_egemaps_parses():
    spec = "handcrafted94log+egemaps"
    parts = [parse_view(p) for p in spec.split("+")]  # as the bench runner reads a fused view
    assert [p.extractor for p in parts] == ["handcrafted94log", "egemaps"]


def test_fused_view_with_egemaps_runs_in_the_bench(tmp_path, demo_root):
    pytest.importorskip("opensmile")
    from sertool.bench.runner import run_bench, unit_paths
    from sertool.data.manifest import build_manifest
    from sertool.splits import make_split

    m = build_manifest("demo", demo_root).manifest
    rep = run_bench(
        m, make_split(m, "speaker-4fold", seed=0), features=["handcrafted94log+egemaps"], models="logreg",
        results_dir=tmp_path / "r", cache=tmp_path / "c", jobs=1,
    )  # fmt: skip
    assert [u.status for u in rep.units] == ["done"] * 4
    meta = json.loads(unit_paths(rep.results_dir, "handcrafted94log+egemaps", "logreg", 0)[0].read_text())
    assert meta["feature_key"] == "+".join(get_extractor(n).key for n in ("handcrafted94log", "egemaps"))
    board = pd.read_csv(rep.results_dir / "leaderboard.csv")
    assert board["features"].tolist() == ["handcrafted94log+egemaps"]


@pytest.mark.corpora
def test_mel_block_matches_librosa_on_real_ravdess(ravdess_root):
    files = sorted(ravdess_root.glob("Actor_*/*.flac"))
    assert len(files) >= 10
    ex = get_extractor("handcrafted94log")
    for path in [files[i] for i in np.linspace(0, len(files) - 1, 10).astype(int)]:
        y = load_audio(path, sr=SR)
        got = ex.extract(y)["pooled"]
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got[MEL], librosa_log_mel_mean(y), rtol=1e-5, atol=1e-4, err_msg=str(path))
