"""handcrafted94 equals its five-librosa-call definition; mfcc40's crop/pad policy, shapes and identity."""

from __future__ import annotations

import pickle
import sys

import librosa
import numpy as np
import pytest
from conftest import tone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sertool.data.audio import load_audio
from sertool.exceptions import AudioError, ParameterError
from sertool.features import get_extractor
from sertool.features.handcrafted import (
    HANDCRAFTED94_LAYOUT,
    Handcrafted94,
    Mfcc40,
    estimate_tuning,
    handcrafted94_reference,
    zero_crossing_rate,
)

SR = 16000


def max_rel(a: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-dimension relative difference."""
    return float(
        np.max(np.abs(a.astype(np.float64) - ref) / np.maximum(np.abs(ref.astype(np.float64)), 1e-30))
    )


def synthetic_signals(rng: np.random.Generator) -> list[np.ndarray]:
    """Voiced tones at several pitches, noise, a clip shorter than one FFT frame, and one with silence."""
    sig = [tone(1.3, freq=f, seed=i) for i, f in enumerate((110.0, 196.0, 233.1, 440.0))]
    sig.append((0.1 * rng.standard_normal(20000)).astype(np.float32))
    sig.append(tone(0.1, freq=300.0))  # 1600 samples < n_fft
    gap = tone(1.0, freq=180.0)
    gap[4000:9000] = 0.0
    sig.append(gap)
    return sig


def test_layout_sums_to_94():
    assert sum(w for _, w in HANDCRAFTED94_LAYOUT) == 94
    assert [n for n, _ in HANDCRAFTED94_LAYOUT][:3] == ["chroma_stft", "melspectrogram", "mfcc"]


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")
def test_handcrafted94_matches_five_librosa_calls_on_synthetic(rng):
    ex = get_extractor("handcrafted94")
    assert isinstance(ex, Handcrafted94) and ex.dim == 94 and ex.sr == SR
    for y in synthetic_signals(rng):
        out = ex.extract(y)
        assert set(out) == {"pooled"}
        assert out["pooled"].shape == (94,) and out["pooled"].dtype == np.float32
        assert max_rel(out["pooled"], handcrafted94_reference(y, SR)) <= 1e-4


def test_reference_is_the_five_calls_in_order():
    y = tone(1.0, freq=150.0)
    ref = handcrafted94_reference(y, SR)
    assert np.allclose(ref[:12], librosa.feature.chroma_stft(y=y, sr=SR).mean(axis=1))
    assert np.allclose(ref[72:92], librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20).mean(axis=1))
    assert ref[93] == pytest.approx(float(librosa.feature.spectral_centroid(y=y, sr=SR).mean()), rel=1e-6)


def test_chroma_filters_are_librosas_exactly_for_every_tuning():
    from sertool.features.handcrafted import chroma_filters

    for tuning in np.linspace(-0.5, 0.5, 101):  # every value librosa's 0.01-resolution estimate can return
        ref = librosa.filters.chroma(sr=SR, n_fft=2048, tuning=float(tuning), n_chroma=12)
        got = chroma_filters(float(tuning))
        assert got.dtype == ref.dtype and got.shape == ref.shape == (12, 1025)
        np.testing.assert_array_equal(got, ref)


def test_pitch_tuning_is_librosas_exactly(rng):
    from sertool.features.handcrafted import _pitch_tuning

    for k in range(400):
        f = rng.uniform(20, 4000, int(rng.integers(1, 300))).astype(np.float32)
        if k % 2:  # near-equal-tempered pitches, so residuals pile up on and near histogram edges
            steps = rng.integers(-30, 30, 50) + rng.choice([0.0, 0.005, -0.005, 0.01, 0.5], 50)
            f = (440.0 * 2 ** (steps / 12)).astype(np.float32)
        assert _pitch_tuning(f) == librosa.pitch_tuning(f, resolution=0.01, bins_per_octave=12)


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")
def test_estimate_tuning_is_librosas_exactly(rng):
    for k, y in enumerate(synthetic_signals(rng)):
        # detune some tones so many tuning values are exercised
        if k < 4:
            y = tone(1.0, freq=110.0 * 2 ** (k * 0.23), seed=k)
        power = np.abs(librosa.stft(y)) ** 2
        assert estimate_tuning(power) == librosa.estimate_tuning(S=power, sr=SR, bins_per_octave=12)


@pytest.mark.parametrize("n", [1, 100, 2047, 2048, 2049, 5000, 33333])
def test_zero_crossing_rate_is_librosas_exactly(rng, n):
    y = rng.standard_normal(n).astype(np.float32)
    y[::7] = 0.0
    y[::11] = 1e-11  # below librosa's threshold: counts as zero
    y[::13] = -1e-11
    np.testing.assert_array_equal(zero_crossing_rate(y), librosa.feature.zero_crossing_rate(y)[0])


def test_max_normalize_is_librosas_exactly(rng):
    from sertool.features.handcrafted import _max_normalize

    S = (rng.standard_normal((12, 300)) ** 2).astype(np.float32)
    S[:, 7] = 0.0  # silent frame: left as it is
    S[:, 9] = 1e-39  # below float32 tiny: left as it is (librosa's threshold)
    S[:, 11] *= 1e-30
    got = _max_normalize(S)
    ref = librosa.util.normalize(S, norm=np.inf, axis=-2)
    assert got.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_extractor_survives_pickling(rng):
    ex = Handcrafted94()
    y = tone(1.2, freq=210.0)
    first = ex.extract(y)["pooled"]
    clone = pickle.loads(pickle.dumps(ex))
    np.testing.assert_array_equal(clone.extract(y)["pooled"], first)


@pytest.mark.corpora
def test_handcrafted94_matches_definition_on_real_ravdess(ravdess_root):
    files = sorted(ravdess_root.glob("Actor_*/*.flac"))
    assert len(files) >= 20
    # 20 clips spread over actors and emotions
    picked = [files[i] for i in np.linspace(0, len(files) - 1, 20).astype(int)]
    # a clip whose tuning flips a histogram bin when piptrack's pitches are kept in float64 (regression)
    picked.append(ravdess_root / "Actor_02" / "03-01-05-01-01-01-02.flac")
    ex = Handcrafted94()
    worst = 0.0
    for path in picked:
        y = load_audio(path, sr=SR)
        power = np.abs(librosa.stft(y)) ** 2
        assert estimate_tuning(power) == librosa.estimate_tuning(S=power, sr=SR, bins_per_octave=12), path
        worst = max(worst, max_rel(ex.extract(y)["pooled"], handcrafted94_reference(y, SR)))
    assert worst <= 1e-4


# ---------------------------------------------------------------------------------------------- mfcc40


def test_mfcc40_defaults_and_shapes():
    ex = get_extractor("mfcc40")
    assert isinstance(ex, Mfcc40)
    assert ex.params() == {"offset": 0.5, "crop": 3.0, "n_mfcc": 40, "sr": SR}
    y = tone(4.2, freq=180.0)
    out = ex.extract(y)
    assert out["frames"].shape == (94, 40) and out["frames"].dtype == np.float32
    assert out["pooled"].shape == (80,) and ex.dim == 80 and set(ex.outputs()) == set(out)
    np.testing.assert_allclose(out["pooled"][:40], out["frames"].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out["pooled"][40:], out["frames"].std(axis=0), rtol=1e-5)
    # frames are librosa's mfcc of the segment [0.5 s, 3.5 s)
    seg = y[8000 : 8000 + 48000]
    np.testing.assert_allclose(
        out["frames"], librosa.feature.mfcc(y=seg, sr=SR, n_mfcc=40).T, rtol=1e-5, atol=1e-4
    )


def test_mfcc40_pads_short_clips_and_crop_none_keeps_all():
    ex = Mfcc40()
    short = tone(1.5, freq=200.0)  # 1.0 s left after the offset: zero-padded to 3.0 s
    seg = ex.segment(short)
    assert seg.shape == (48000,)
    np.testing.assert_array_equal(seg[:16000], short[8000:])
    assert not seg[16000:].any()
    assert ex.extract(short)["frames"].shape == (94, 40)
    # a clip no longer than the offset is read from its start, not emptied
    tiny = tone(0.3, freq=200.0)
    np.testing.assert_array_equal(ex.segment(tiny)[:4800], tiny)
    whole = Mfcc40(crop=None, offset=0.0)
    y = tone(2.0, freq=200.0)
    assert whole.extract(y)["frames"].shape == (1 + 32000 // 512, 40)


def test_mfcc40_key_changes_with_output_params_only():
    base = get_extractor("mfcc40")
    assert base.key.startswith("mfcc40/v1-")
    assert get_extractor("mfcc40", crop=2.0).key != base.key
    assert get_extractor("mfcc40", offset=0.0).key != base.key
    assert get_extractor("mfcc40", crop=3.0, offset=0.5).key == base.key
    assert get_extractor("handcrafted94").key == Handcrafted94().key


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"crop": 0}, "crop"), ({"offset": -1}, "offset"), ({"n_mfcc": 0}, "n_mfcc"), ({"jobs": 2}, "unknown")],
)
def test_mfcc40_rejects_bad_params(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        get_extractor("mfcc40", **kwargs)


def test_handcrafted94_takes_no_params():
    with pytest.raises(ParameterError, match="no parameters"):
        get_extractor("handcrafted94", n_mels=40)


# ---------------------------------------------------------------------------------------------- egemaps


def test_egemaps_without_opensmile_raises_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "opensmile", None)  # makes `import opensmile` fail
    with pytest.raises(ParameterError, match="pip install opensmile"):
        get_extractor("egemaps")


def test_egemaps_matches_opensmile_and_survives_pickling():
    opensmile = pytest.importorskip("opensmile")
    ex = get_extractor("egemaps")
    assert ex.dim == 88 and ex.key.startswith("egemaps/v1-") and len(ex.feature_names) == 88
    y = tone(1.5, freq=180.0)
    out = ex.extract(y)["pooled"]
    assert out.shape == (88,) and out.dtype == np.float32 and np.isfinite(out).all()
    direct = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    ).process_signal(y, SR)
    np.testing.assert_allclose(out, direct.to_numpy()[0].astype(np.float32), rtol=1e-6)
    assert ex.feature_names[0] == direct.columns[0]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ex)).extract(y)["pooled"], out)


def test_egemaps_nan_is_an_audio_error_not_a_zero():
    pytest.importorskip("opensmile")
    ex = get_extractor("egemaps")
    names = ex.feature_names

    class NanSmile:
        feature_names = names

        def process_signal(self, y, sr):
            v = np.ones((1, 88))
            v[0, 5] = np.nan
            return v

    ex._smile = NanSmile()
    with pytest.raises(AudioError, match=r"NaN/inf for 1 functionals"):
        ex.extract(tone(1.0))


@pytest.mark.parametrize(
    "n", [500, 1024, 1025, 2049, 16000, 40000, 59001, 512 * 512, 700_001]
)  # last two: blocks
def test_lean_stft_equals_librosa(n: int) -> None:
    """The extractor's own STFT is bit-identical to librosa.stft(n_fft=2048, hop_length=512)."""
    import librosa

    from sertool.features.handcrafted import Handcrafted94

    y = np.random.default_rng(n).normal(0, 0.1, n).astype(np.float32)
    ref = librosa.stft(y, n_fft=2048, hop_length=512)
    got = Handcrafted94()._stft(y)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


# ----------------------------------------------------------------------------------- generated inputs


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(800, 64000),
    amp=st.floats(1e-3, 1.0),
    kind=st.sampled_from(["noise", "tone", "tone+silence", "clicks"]),
    seed=st.integers(0, 2**16),
)
def test_extractors_on_generated_signals(n, amp, kind, seed):
    """Any signal the loader can return: handcrafted94 equals its definition (max rel. diff <= 1e-4, the
    tuning estimate exactly), mfcc40 has its fixed shape, and every output is finite."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        y = rng.normal(0, amp / 3, n)
    elif kind == "clicks":
        y = np.zeros(n)
        y[rng.integers(0, n, size=max(1, n // 4000))] = amp
    else:
        y = amp * np.sin(2 * np.pi * rng.uniform(80, 4000) * np.arange(n) / 16000)
        if kind == "tone+silence":
            y[n // 3 : 2 * n // 3] = 0.0
    y = np.clip(y, -1, 1).astype(np.float32)
    got = get_extractor("handcrafted94").extract(y)["pooled"]
    ref = handcrafted94_reference(y)
    assert got.shape == (94,) and np.isfinite(got).all()
    assert max_rel(got, ref) <= 1e-4
    m = get_extractor("mfcc40").extract(y)
    assert m["frames"].shape == (94, 40) and m["pooled"].shape == (80,)
    assert np.isfinite(m["frames"]).all() and np.isfinite(m["pooled"]).all()
