"""The audio loader on generated files: formats, resampling, channels, slicing, validation errors."""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_audio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sertool.data.audio import (
    audio_info,
    file_sha1,
    is_audio_file,
    load_audio,
    load_many,
    validate_signal,
)
from sertool.exceptions import AudioError, ParameterError


def sine(freq: float, sr: int, dur: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(dur * sr)) / sr)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.fft.rfftfreq(y.size, 1 / sr)[np.argmax(spec)])


# ------------------------------------------------------------------------------------------------ resampling


@pytest.mark.parametrize("native", [48000, 44100, 24414, 96000, 8000])
def test_resampling_keeps_length_and_frequency(tmp_path, native):
    path = write_audio(tmp_path / "s.wav", sine(440.0, native, 1.5), native, subtype="FLOAT")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 1.5 * 16000) <= 1
    assert peak_hz(y, 16000) == pytest.approx(440.0, abs=1.0)
    # amplitude kept away from the edges (VHQ resampler: passband flat)
    assert np.max(np.abs(y[2000:-2000])) == pytest.approx(0.5, abs=0.01)


def test_native_rate_when_sr_is_none(tmp_path):
    path = write_audio(tmp_path / "s.flac", sine(300.0, 48000, 0.5), 48000)
    y = load_audio(path, sr=None)
    assert y.size == 24000
    assert peak_hz(y, 48000) == pytest.approx(300.0, abs=2.0)


def test_no_resampling_at_16k_is_exact(tmp_path):
    x = sine(1000.0, 16000, 0.5)
    path = write_audio(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), x)


# ---------------------------------------------------------------------------------------- channels & formats


def test_stereo_is_averaged(tmp_path):
    left = sine(200.0, 16000, 0.5)
    right = sine(700.0, 16000, 0.5, amp=0.2)
    path = write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    y = load_audio(path)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)
    both = load_audio(path, mono=False)
    assert both.shape == (2, 8000)
    np.testing.assert_allclose(both[0], left, atol=1e-7)
    np.testing.assert_allclose(both[1], right, atol=1e-7)


def test_multichannel_resampled_and_min_duration(tmp_path):
    y = np.random.default_rng(0).uniform(-0.5, 0.5, (48000, 3)).astype(np.float32)
    path = write_audio(tmp_path / "three.wav", y, 48000, subtype="FLOAT")
    out = load_audio(path, mono=False, min_duration=0.9)
    assert out.shape == (3, 16000) and out.dtype == np.float32
    with pytest.raises(AudioError, match=r"too short: 1\.000 s < minimum 2\.000 s"):
        load_audio(path, mono=False, min_duration=2.0)


@pytest.mark.parametrize(
    ("ext", "subtype", "tol"),
    [
        (".wav", "PCM_16", 1 / 32768),
        (".wav", "PCM_24", 1 / 2**23),
        (".wav", "PCM_32", 1 / 2**31),
        (".wav", "FLOAT", 0.0),
        (".wav", "PCM_U8", 1 / 128),
        (".flac", "PCM_16", 1 / 32768),
        (".flac", "PCM_24", 1 / 2**23),
        (".flac", "PCM_S8", 1 / 128),
        (".aiff", "PCM_16", 1 / 32768),
    ],
)
def test_sample_formats_scale_to_unit_range(tmp_path, ext, subtype, tol):
    x = sine(250.0, 16000, 0.25, amp=0.8)
    path = write_audio(tmp_path / f"f{ext}", x, 16000, subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    y = load_audio(path)
    assert y.dtype == np.float32 and y.size == x.size
    np.testing.assert_allclose(y, x, atol=tol + 1e-7)


def test_ogg_vorbis_is_lossy_but_close(tmp_path):
    x = sine(440.0, 16000, 1.0)
    path = write_audio(tmp_path / "v.ogg", x, 16000)
    y = load_audio(path)
    assert y.size == x.size
    assert peak_hz(y, 16000) == pytest.approx(440.0, abs=1.0)
    assert np.sqrt(np.mean((y - x) ** 2)) < 0.05


def test_float_files_are_returned_as_stored(tmp_path):
    x = np.linspace(-2.0, 2.0, 1600, dtype=np.float32)
    path = write_audio(tmp_path / "loud.wav", x, 16000, subtype="FLOAT")
    y = load_audio(path)
    assert y.max() == pytest.approx(2.0) and y.min() == pytest.approx(-2.0)


# ----------------------------------------------------------------------------------------- offset / duration


def test_offset_and_duration_slice_exactly(tmp_path):
    x = np.arange(1, 16001, dtype=np.float32) / 16001  # ramp: the value tells the position
    path = write_audio(tmp_path / "ramp.wav", x, 16000, subtype="FLOAT")
    y = load_audio(path, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(y, x[8000:12000])
    np.testing.assert_array_equal(load_audio(path, offset=0.75), x[12000:])
    np.testing.assert_array_equal(load_audio(path, duration=0.1), x[:1600])
    assert load_audio(path, offset=0.9, duration=5.0).size == 1600  # clipped at the end


def test_offset_duration_with_resampling(tmp_path):
    path = write_audio(tmp_path / "s.wav", sine(440.0, 48000, 2.0), 48000)
    y = load_audio(path, offset=0.5, duration=1.0)
    assert abs(y.size - 16000) <= 1
    assert peak_hz(y, 16000) == pytest.approx(440.0, abs=1.0)


def test_offset_past_the_end_is_empty(tmp_path):
    path = write_audio(tmp_path / "s.wav", sine(440.0, 16000, 0.5), 16000)
    with pytest.raises(AudioError, match="empty: no samples"):
        load_audio(path, offset=3.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"sr": 0}, "sr must be a positive integer"),
        ({"sr": 16000.0}, "sr must be a positive integer"),
        ({"offset": -1.0}, "offset must be >= 0"),
        ({"duration": 0.0}, "duration > 0"),
    ],
)
def test_bad_parameters(tmp_path, kw, match):
    path = write_audio(tmp_path / "s.wav", sine(440.0, 16000, 0.5), 16000)
    with pytest.raises(ParameterError, match=match):
        load_audio(path, **kw)


# ---------------------------------------------------------------------------------------------------- errors


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected reason pattern)."""
    out = {}
    p = tmp / "text.wav"
    p.write_text("this is not audio\n")
    out["text"] = (p, r"^unreadable: .*Format not recognised")
    p = tmp / "empty.wav"
    p.write_bytes(b"")
    out["zero_bytes"] = (p, r"^empty file \(0 bytes\)$")
    p = tmp / "header_only.wav"
    sf.write(p, np.zeros(0, dtype=np.float32), 16000)
    out["no_samples"] = (p, r"^empty: no samples$")
    p = write_audio(tmp / "silence.wav", np.zeros(8000, dtype=np.float32), 16000)
    out["all_zero"] = (p, r"^all-zero signal \(digital silence\)$")
    y = sine(300, 16000, 0.2)
    y[100] = np.nan
    p = write_audio(tmp / "nan.wav", y, 16000, subtype="FLOAT")
    out["nan"] = (p, r"^contains NaN or infinite samples$")
    y = sine(300, 16000, 0.2)
    y[5] = np.inf
    p = write_audio(tmp / "inf.wav", y, 16000, subtype="FLOAT")
    out["inf"] = (p, r"^contains NaN or infinite samples$")
    out["missing"] = (tmp / "absent.wav", r"^unreadable: ")
    return out


@pytest.mark.parametrize("kind", ["text", "zero_bytes", "no_samples", "all_zero", "nan", "inf", "missing"])
def test_unusable_files_raise_audio_error_with_path_and_reason(tmp_path, kind):
    path, pattern = _bad_files(tmp_path)[kind]
    with pytest.raises(AudioError, match=r"^" + re.escape(str(path)) + ": ") as ei:
        load_audio(path)
    assert ei.value.path == str(path)
    assert re.search(pattern, ei.value.reason), ei.value.reason


@pytest.mark.parametrize("sr", [16000, 48000])
def test_stereo_channels_that_cancel_are_digital_silence(tmp_path, sr):
    left = sine(300.0, sr, 0.5)
    path = write_audio(tmp_path / "anti.wav", np.stack([left, -left], axis=1), sr, subtype="FLOAT")
    assert load_audio(path, mono=False).shape == (2, 8000)  # each channel is fine on its own
    with pytest.raises(AudioError, match="all-zero"):
        load_audio(path)


def test_mono_at_the_target_rate_is_the_stored_channel(tmp_path):
    y = sine(250.0, 16000, 0.3)
    path = write_audio(tmp_path / "m.wav", y, 16000, subtype="FLOAT")
    out = load_audio(path, min_duration=0.3)
    assert out.dtype == np.float32 and out.flags.c_contiguous and np.array_equal(out, y.astype(np.float32))
    with pytest.raises(AudioError, match="too short"):
        load_audio(path, min_duration=0.31)


def test_too_short(tmp_path):
    path = write_audio(tmp_path / "short.wav", sine(440.0, 48000, 0.2), 48000)
    with pytest.raises(AudioError, match=r"too short: 0\.200 s < minimum 0\.500 s"):
        load_audio(path, min_duration=0.5)
    assert abs(load_audio(path, min_duration=0.2).size - 3200) <= 1


def test_audio_info_and_sha1(tmp_path):
    path = write_audio(tmp_path / "i.wav", np.zeros((2400, 2), dtype=np.float32) + 0.1, 24000)
    info = audio_info(path)
    assert (info.sample_rate, info.frames, info.channels) == (24000, 2400, 2)
    assert info.duration_s == pytest.approx(0.1)
    assert file_sha1(path) == hashlib.sha1(path.read_bytes()).hexdigest()
    empty = tmp_path / "e.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty file \(0 bytes\)"):
        audio_info(empty)
    with pytest.raises(AudioError, match="unreadable"):
        file_sha1(tmp_path / "absent.wav")


def test_validate_signal_on_arrays():
    validate_signal(np.ones(16000, dtype=np.float32), 16000, min_duration=1.0)
    with pytest.raises(AudioError, match=r"^<array>: too short"):
        validate_signal(np.ones(15999, dtype=np.float32), 16000, min_duration=1.0)
    with pytest.raises(AudioError, match="all-zero"):
        validate_signal(np.zeros((10, 2)), 16000)


def test_is_audio_file():
    assert is_audio_file("a/B.WAV") and is_audio_file("x.flac") and is_audio_file("x.ogg")
    assert not is_audio_file("x.txt") and not is_audio_file("wav")


# ------------------------------------------------------------------------------------------------- load_many


def test_load_many_collects_errors_and_continues(tmp_path):
    bad = _bad_files(tmp_path)
    good1 = write_audio(tmp_path / "g1.wav", sine(440.0, 48000, 0.5), 48000)
    good2 = write_audio(tmp_path / "g2.flac", sine(220.0, 16000, 0.25), 16000)
    paths = [good1, bad["text"][0], bad["all_zero"][0], good2, bad["missing"][0]]
    out = list(load_many(paths))
    assert [p for p, _, _ in out] == [str(p) for p in paths]
    assert [y is None for _, y, _ in out] == [False, True, True, False, True]
    assert [e is None for _, _, e in out] == [True, False, False, True, False]
    assert out[0][1].size == 8000 and out[3][1].size == 4000
    assert out[2][2].reason == "all-zero signal (digital silence)"
    assert out[1][2].path == str(bad["text"][0])


def test_load_many_min_duration(tmp_path):
    a = write_audio(tmp_path / "a.wav", sine(440.0, 16000, 0.2), 16000)
    b = write_audio(tmp_path / "b.wav", sine(440.0, 16000, 1.0), 16000)
    out = list(load_many([a, b], min_duration=0.5))
    assert out[0][1] is None and "too short" in out[0][2].reason
    assert out[1][1].size == 16000 and out[1][2] is None


# ------------------------------------------------------------------------------------------------ properties


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sr=st.one_of(
        st.sampled_from([8000, 11025, 16000, 22050, 24414, 44100, 48000, 96000]), st.integers(4000, 96000)
    ),
    channels=st.integers(1, 4),
    duration=st.floats(0.05, 1.0),
    subtype=st.sampled_from(["PCM_16", "PCM_24", "FLOAT"]),
    seed=st.integers(0, 2**16),
)
def test_loader_output_contract(sr, channels, duration, subtype, seed):
    n = max(1, int(duration * sr))
    y = np.random.default_rng(seed).uniform(-0.9, 0.9, (n, channels)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.wav"
        sf.write(path, y, sr, subtype=subtype)
        out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert np.all(np.isfinite(out))
    assert abs(out.size - n * 16000 / sr) <= 1
    if sr == 16000:
        np.testing.assert_allclose(out, y.mean(axis=1), atol=2e-4)
