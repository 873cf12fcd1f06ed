"""CPU handcrafted extractors: ``handcrafted94`` (the combined-corpus study's vector) and ``mfcc40``.

``handcrafted94`` is, by definition, the time average of five librosa 0.11 features with their defaults at
16 kHz, concatenated in this order::

    chroma_stft (12) | melspectrogram(n_mels=60) (60) | mfcc (20) | zero_crossing_rate (1) | spectral_centroid (1)

Calling those five functions recomputes the same 2048-point STFT four times and rebuilds three filterbanks per
call. :class:`Handcrafted94` computes the STFT once and derives every feature from it exactly as librosa does:

- chroma_stft: power spectrogram; tuning as :func:`librosa.estimate_tuning` computes it on that power
  spectrogram (see :func:`estimate_tuning`); a chroma filterbank for that tuning (cached per tuning value,
  which is quantised to 0.01 bins); per-frame max-normalisation.
- melspectrogram(n_mels=60): a 60-band Slaney mel filterbank (built once) on the power spectrogram.
- mfcc: librosa's default is 128 mel bands of the power spectrogram -> ``power_to_db`` (ref 1, top_db 80,
  relative to the clip's maximum) -> orthonormal DCT-II, first 20 coefficients. Built once, same steps.
- zero_crossing_rate: on the waveform (edge-padded, 2048-sample frames, hop 512, |y| <= 1e-10 counts as 0,
  zero counts as positive); crossings are counted once for the whole signal and summed per frame with a
  cumulative sum (integer counts, so identical to librosa's per-frame count).
- spectral_centroid: on the MAGNITUDE spectrogram: ``sum_f f * |S|`` over ``sum_f |S|`` per frame (frames
  whose L1 norm is below float32 ``tiny`` are left unnormalised, as :func:`librosa.util.normalize` does).

The result equals the five separate calls to float32 rounding (verified in tests on synthetic and real
clips and by ``benchmarks/bench_handcrafted.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import librosa
import numpy as np
import scipy.fft

from sertool.exceptions import ParameterError
from sertool.features.base import Extractor, register_extractor

__all__ = [
    "HANDCRAFTED94_LAYOUT",
    "Handcrafted94",
    "Mfcc40",
    "chroma_filters",
    "estimate_tuning",
    "handcrafted94_reference",
    "hann_window",
    "mel_filters",
    "zero_crossing_rate",
]

log = logging.getLogger(__name__)

#: (feature, width) in output order.
HANDCRAFTED94_LAYOUT: tuple[tuple[str, int], ...] = (
    ("chroma_stft", 12),
    ("melspectrogram", 60),
    ("mfcc", 20),
    ("zero_crossing_rate", 1),
    ("spectral_centroid", 1),
)

_N_FFT = 2048
_HOP = 512
#: Frames per block of the STFT (~1 s of audio). A block's float64 frames and complex128 transform (~0.5 MB
#: each) stay in a core's L2 cache between the window, the FFT and the complex64 copy; blocks of 512 frames
#: (~8 MB) ran the STFT ~20% slower on the development machine, and bound long clips' temporaries all the same.
_STFT_BLOCK = 32
#: Clips of up to this many frames (~65 s) reuse a per-thread workspace; longer ones allocate their own.
_WORKSPACE_FRAMES = 2048


_FREQS = np.fft.rfftfreq(n=_N_FFT, d=1.0 / 16000)  # librosa.fft_frequencies(sr=16000, n_fft=2048)
# piptrack's default feasible range (fmin=150, fmax=4000) as a bin slice
_PIP_BINS = np.flatnonzero((_FREQS >= 150.0) & (_FREQS < 4000.0))
_PIP_LO, _PIP_HI = int(_PIP_BINS[0]), int(_PIP_BINS[-1]) + 1


class _Workspace:
    """Per-thread buffers of the spectrogram stages, reused from clip to clip.

    Every clip of a few seconds otherwise allocates ~6 MB of fresh temporaries (float64 frames, complex128
    transform, complex64 STFT, magnitude, power). Fresh pages fault in on first touch, and the threads of one
    process fault through one shared address-space lock, so on a 2-core machine two extraction threads ran at
    ~1.3x one thread; with the buffers reused they scale like processes. Values are unchanged (same
    operations, written into existing arrays).
    """

    def __init__(self) -> None:
        self.frames = 0
        self.block64 = np.empty((0, _N_FFT))
        self.spec128 = np.empty((0, _N_FFT // 2 + 1), dtype=np.complex128)
        self.stft = np.empty((0, _N_FFT // 2 + 1), dtype=np.complex64)
        self.mag = np.empty((0, _N_FFT // 2 + 1), dtype=np.float32)
        self.power = np.empty((0, _N_FFT // 2 + 1), dtype=np.float32)
        self.padded = np.empty(0, dtype=np.float32)
        self.peaks = np.empty((0, _PIP_HI - _PIP_LO + 2), dtype=np.float32)  # tuning: pitches, magnitudes

    def padded_signal(self, y: np.ndarray) -> np.ndarray:
        """``y`` zero-padded by ``n_fft // 2`` on both sides (librosa's centring), in a reused buffer."""
        n = y.shape[0] + _N_FFT
        if n > self.padded.shape[0]:
            if n > _WORKSPACE_FRAMES * _HOP + _N_FFT:
                buf = np.zeros(n, dtype=np.float32)
                buf[_N_FFT // 2 : -(_N_FFT // 2)] = y
                return buf
            self.padded = np.empty(max(n, 160 * _HOP), dtype=np.float32)
        buf = self.padded[:n]
        buf[: _N_FFT // 2] = 0.0
        buf[_N_FFT // 2 : n - _N_FFT // 2] = y
        buf[n - _N_FFT // 2 :] = 0.0
        return buf

    def reserve(self, n_frames: int) -> _Workspace:
        """Buffers for ``n_frames`` frames: this workspace, grown if needed, or a one-off for long clips."""
        if n_frames > _WORKSPACE_FRAMES:
            ws = _Workspace()
            ws._allocate(n_frames)
            return ws
        if n_frames > self.frames:
            self._allocate(max(n_frames, 160))
        return self

    def _allocate(self, n_frames: int) -> None:
        bins = _N_FFT // 2 + 1
        block = min(n_frames, _STFT_BLOCK)
        self.frames = n_frames
        self.block64 = np.empty((block, _N_FFT))
        self.spec128 = np.empty((block, bins), dtype=np.complex128)
        self.stft = np.empty((n_frames, bins), dtype=np.complex64)
        self.mag = np.empty((n_frames, bins), dtype=np.float32)
        self.power = np.empty((n_frames, bins), dtype=np.float32)
        self.peaks = np.empty((n_frames, _PIP_HI - _PIP_LO + 2), dtype=np.float32)


def _pip_peaks(
    pt: np.ndarray, ref: np.ndarray, lo: int, hi: int, pitch: np.ndarray, mag: np.ndarray
) -> int:  # pragma: no cover - compiled by numba (the tests compare its results with librosa's)
    """piptrack's peaks of bins ``lo..hi-1`` of each frame of ``pt`` (T, 1025) float32: pitch and magnitude.

    A bin is a peak when it exceeds ``ref`` of its frame and is a local maximum (``>`` the bin below, ``>=``
    the one above): the same bins as :func:`librosa.util.localmax` of the thresholded spectrogram, since a
    neighbour at or under the threshold is below such a bin either way. Writes into ``pitch`` / ``mag``
    (float32, frame-major) and returns how many peaks there are. The arithmetic is piptrack's, typed as
    numba types it there: ``_pi_stencil`` in float64 from float32 sums, stored as float32; ``np.gradient``'s
    interior difference in float32; the pitch in float64 stored as float32.
    """
    k = 0
    for t in range(pt.shape[0]):
        r = ref[t]
        row = pt[t]
        for i in range(lo, hi):
            x0 = row[i]
            xm = row[i - 1]
            xp = row[i + 1]
            if x0 > r and x0 > xm and x0 >= xp:
                a = np.float64(xp + xm) - 2.0 * np.float64(x0)
                b = np.float64(xp - xm) / 2.0
                shift = np.float32(0.0) if abs(b) >= abs(a) else np.float32(-b / a)
                avg = np.float32(xp - xm) / np.float32(2.0)
                pitch[k] = np.float32((np.float64(i) + np.float64(shift)) * 16000.0 / 2048.0)
                mag[k] = x0 + np.float32(0.5) * avg * shift
                k += 1
    return k


def _pip_peaks_numpy(pt: np.ndarray, ref: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_pip_peaks` as numpy array operations: the same peaks in the same (frame-major) order, and the
    same float32 / float64 steps, so the same bits (``tests/test_cli_fast.py`` compares the two).

    ~0.3 ms per 4 s clip slower than the compiled kernel, but needs no numba: loading the kernel (import,
    typing, reading the on-disk cache) costs a process ~0.35 s, more than a one-clip ``sertool predict``
    spends on everything else of the extractor. See :func:`_peaks`.

    Returns
    -------
    (pitch, mag) : np.ndarray, float32
    """
    x0, xm, xp = pt[:, lo:hi], pt[:, lo - 1 : hi - 1], pt[:, lo + 1 : hi + 1]
    t, j = np.nonzero((x0 > ref[:, None]) & (x0 > xm) & (x0 >= xp))
    i = j + lo
    x0, xm, xp = pt[t, i], pt[t, i - 1], pt[t, i + 1]
    a = (xp + xm).astype(np.float64) - 2.0 * x0.astype(np.float64)
    b = (xp - xm).astype(np.float64) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):  # the quotient is used only where |b| < |a|
        shift = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a).astype(np.float32)
    avg = (xp - xm) / np.float32(2.0)
    pitch = ((i.astype(np.float64) + shift.astype(np.float64)) * 16000.0 / 2048.0).astype(np.float32)
    return pitch, x0 + np.float32(0.5) * avg * shift


#: Clips a process tunes with :func:`_pip_peaks_numpy` before it loads the compiled :func:`_pip_peaks`: a
#: one-clip prediction never pays for numba; bulk extraction switches after a few clips (or at once in
#: :meth:`Handcrafted94.warm_up`, which the fork backend runs before forking its workers).
COMPILE_AFTER = 8
_KERNEL: list[Callable[..., int]] = []  # the compiled kernel, once loaded
_KERNEL_LOCK = threading.Lock()
_CALLS = [0]  # clips tuned in this process (a trigger only: a lost update under threads does not matter)


def compiled_pip_peaks() -> Callable[..., int]:
    """The numba-compiled :func:`_pip_peaks` (``cache=True``: later processes read it from the disk cache).

    Returns
    -------
    callable
        ``kernel(pt, ref, lo, hi, pitch, mag) -> n`` (see :func:`_pip_peaks`).
    """
    if not _KERNEL:
        with _KERNEL_LOCK:
            if not _KERNEL:
                import numba

                _KERNEL.append(numba.njit(nogil=True, cache=True)(_pip_peaks))
    return _KERNEL[0]


def _peaks(pt: np.ndarray, ref: np.ndarray, scratch: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """piptrack's peaks of the feasible bins (pitch, magnitude): by numpy for the first
    :data:`COMPILE_AFTER` clips of a process, then by the compiled kernel (same bits either way)."""
    if not _KERNEL:
        _CALLS[0] += 1
        if _CALLS[0] <= COMPILE_AFTER:
            return _pip_peaks_numpy(pt, ref, _PIP_LO, _PIP_HI)
    kernel = compiled_pip_peaks()
    # at most every other feasible bin of a frame is a peak
    most = pt.shape[0] * ((_PIP_HI - _PIP_LO + 1) // 2)
    if scratch is not None and scratch.size >= 2 * most and scratch.dtype == np.float32:
        flat = scratch.reshape(-1)
        pitch, mag = flat[:most], flat[most : 2 * most]
    else:
        pitch, mag = np.empty(most, dtype=np.float32), np.empty(most, dtype=np.float32)
    n = kernel(pt, ref, _PIP_LO, _PIP_HI, pitch, mag)
    return pitch[:n], mag[:n]


def estimate_tuning(power: np.ndarray, *, sr: int = 16000, scratch: np.ndarray | None = None) -> float:
    """``librosa.estimate_tuning(S=power, sr=sr, bins_per_octave=12)``, computed only where it matters.

    :func:`librosa.piptrack` (inside ``estimate_tuning``) computes gradients, parabolic shifts and local maxima
    over all 1025 bins and then keeps the local maxima in 150-4000 Hz. Each of those quantities at a bin
    depends only on that bin and its two neighbours, plus the per-frame maximum over all bins. So this finds
    the local maxima of the feasible bins only and evaluates the gradient and librosa's parabolic-interpolation
    stencil at those peaks, in one compiled pass (:func:`_pip_peaks`, ~0.15-0.3 ms less per clip than the same
    steps as numpy array operations, :func:`_pip_peaks_numpy`, which a process uses for its first
    :data:`COMPILE_AFTER` clips so that a one-clip run never loads numba). The peaks, pitches and magnitudes
    are bit-identical to piptrack's
    (checked against librosa in the tests); the median threshold and :func:`librosa.pitch_tuning`'s histogram
    follow in numpy. The peaks come out frame-major instead of bin-major, which changes neither.

    Parameters
    ----------
    power : np.ndarray, float32, shape (1025, T)
        Power spectrogram (n_fft 2048) at 16 kHz. Other rates, sizes or dtypes go to librosa itself.
    sr : int, optional
        Sample rate (the bin range is precomputed for 16000).
    scratch : np.ndarray or None, optional
        A float32 buffer of at least (T, 496) to compute in (the extractor's workspace); None allocates.

    Returns
    -------
    float
        Tuning deviation in fractions of a chroma bin, in [-0.5, 0.5), resolution 0.01.
    """
    if sr != 16000 or power.shape[0] != _N_FFT // 2 + 1 or power.dtype != np.float32:
        return float(librosa.estimate_tuning(S=power, sr=sr, bins_per_octave=12))
    # frames as rows: the extractor's spectrogram is stored that way (power.T is contiguous, no copy)
    pt = np.ascontiguousarray(power.T)  # (T, 1025)
    ref = 0.1 * pt.max(axis=1)  # float32, as piptrack's threshold * max
    pitch, mag = _peaks(pt, ref, scratch)
    voiced = pitch > 0
    threshold = np.median(mag[voiced]) if voiced.any() else 0.0
    return _pitch_tuning(pitch[(mag >= threshold) & voiced])


_TUNING_EDGES = np.linspace(-0.5, 0.5, 101)  # librosa.pitch_tuning's histogram bins at resolution 0.01


def _pitch_tuning(frequencies: np.ndarray) -> float:
    """``librosa.pitch_tuning(frequencies, resolution=0.01, bins_per_octave=12)``, same arithmetic.

    librosa's histogram is :func:`numpy.histogram` with explicit edges: it sorts the residuals and counts
    ``edges[k] <= r < edges[k + 1]`` by binary search; a binary search per residual and a bincount count the
    same bins (every residual lies in [-0.5, 0.5)).
    """
    frequencies = frequencies[frequencies > 0]
    if not frequencies.size:
        return float(librosa.pitch_tuning(frequencies, resolution=0.01, bins_per_octave=12))  # its warning
    residual = np.mod(12 * np.log2(frequencies / (440.0 / 16)), 1.0)  # librosa.hz_to_octs, tuning 0
    residual[residual >= 0.5] -= 1.0
    counts = np.bincount(np.searchsorted(_TUNING_EDGES, residual, side="right") - 1, minlength=100)
    return float(_TUNING_EDGES[np.argmax(counts[:100])])


# chroma_filters: the FFT bin frequencies of librosa.filters.chroma (bins 1..2047), of which the 1025 kept
# columns need bins 1..1025 (column k's bump width looks one bin ahead)
_CHROMA_FREQS = np.linspace(0, 16000, _N_FFT, endpoint=False)[1 : _N_FFT // 2 + 2]
_CHROMA_ROWS = np.arange(0, 12, dtype="d")


def chroma_filters(tuning: float) -> np.ndarray:
    """``librosa.filters.chroma(sr=16000, n_fft=2048, tuning=tuning, n_chroma=12)``, bit for bit.

    librosa builds all 2048 columns and then drops the 1023 above Nyquist; every step is per column (the
    bump widths look one column ahead, the normalisation is over the 12 rows of a column), so this runs the
    same floating-point operations, in the same order, on the kept columns only, in place and broadcast
    instead of tiled (~0.2 vs ~0.5 ms for librosa's; a worker builds one per tuning value it meets, ~80 in
    200 RAVDESS clips). Checked against librosa for every tuning value in the tests.

    Parameters
    ----------
    tuning : float
        Tuning deviation in fractions of a chroma bin.

    Returns
    -------
    np.ndarray, float32, shape (12, 1025)
    """
    n_chroma = 12
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)  # librosa.hz_to_octs
    frqbins = np.empty(_CHROMA_FREQS.shape[0] + 1)
    np.multiply(n_chroma, np.log2(_CHROMA_FREQS / (float(a440) / 16)), out=frqbins[1:])
    frqbins[0] = frqbins[1] - 1.5 * n_chroma  # the made-up 0 Hz bin
    binwidthbins = np.maximum(frqbins[1:] - frqbins[:-1], 1.0)  # (1025,)
    frqbins = frqbins[:-1]
    D = np.subtract(frqbins, _CHROMA_ROWS[:, None])  # np.subtract.outer(frqbins, rows).T
    # D = np.remainder(D + n_chroma2 + 10 * n_chroma, n_chroma) - n_chroma2, one operation at a time
    D += 6.0
    D += 10 * n_chroma
    np.remainder(D, n_chroma, out=D)
    D -= 6.0
    # wts = np.exp(-0.5 * (2 * D / binwidthbins) ** 2)
    D *= 2
    D /= binwidthbins
    np.square(D, out=D)
    D *= -0.5
    wts = np.exp(D, out=D)
    wts /= np.sum(wts**2, axis=0, keepdims=True) ** 0.5  # librosa.util.normalize(norm=2, axis=0)
    wts *= np.exp(-0.5 * (((frqbins / n_chroma - 5.0) / 2) ** 2))  # ctroct 5, octwidth 2
    return np.roll(wts, -3, axis=0).astype(np.float32)  # base_c


def mel_filters(n_mels: int) -> np.ndarray:
    """``librosa.filters.mel(sr=16000, n_fft=2048, n_mels=n_mels)`` (Slaney mel scale and norm), bit for bit.

    librosa's own module imports numba and scipy.signal (~0.2 s of a process that needs neither); this is
    its arithmetic, step for step, for the defaults handcrafted94 uses (compared with librosa in
    ``tests/test_cli_fast.py``).

    Parameters
    ----------
    n_mels : int
        Number of bands.

    Returns
    -------
    np.ndarray, float32, shape (n_mels, 1025)
    """
    f_sp, min_log_hz = 200.0 / 3, 1000.0  # librosa.hz_to_mel / mel_to_hz (Slaney): linear below 1 kHz
    min_log_mel = (min_log_hz - 0.0) / f_sp
    logstep = np.log(6.4) / 27.0
    max_mel = min_log_mel + np.log(np.asanyarray(8000.0) / min_log_hz) / logstep  # hz_to_mel(fmax 8 kHz)
    mels = np.linspace(np.asanyarray(0.0) / f_sp, max_mel, n_mels + 2)  # hz_to_mel(fmin 0)
    mel_f = 0.0 + f_sp * mels
    log_t = mels >= min_log_mel
    mel_f[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    weights = np.zeros((n_mels, _N_FFT // 2 + 1), dtype=np.float32)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, _FREQS)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def hann_window() -> np.ndarray:
    """``librosa.filters.get_window("hann", 2048, fftbins=True)``: scipy's periodic Hann window, bit for bit.

    scipy computes ``0.5 * cos(0 * f) + 0.5 * cos(f)`` over ``f = linspace(-pi, pi, 2049)`` (the first term is
    exactly 0.5) and drops the last point.

    Returns
    -------
    np.ndarray, float64, shape (2048,)
    """
    w = np.full(_N_FFT + 1, 0.5)
    w += 0.5 * np.cos(np.linspace(-np.pi, np.pi, _N_FFT + 1))
    return w[:-1]


def zero_crossing_rate(y: np.ndarray, *, frame_length: int = _N_FFT, hop_length: int = _HOP) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate(y)[0]`` (defaults), computed with one pass over the signal.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Signal.
    frame_length, hop_length : int, optional
        Frame and hop in samples (librosa defaults 2048 and 512).

    Returns
    -------
    np.ndarray, float64, shape (T,)
        Fraction of sign changes inside each centred frame.
    """
    # Equivalent to librosa's edge-padded framing without building the padded copy: edge padding repeats
    # the end samples, which adds no crossings, so the crossing count of a padded position is that of the
    # nearest real sample.
    half = frame_length // 2
    n = y.shape[0]
    neg = y < -1e-10  # sign bit set and |y| > 1e-10: zero (and |y| <= 1e-10) counts as positive
    # int32 counts unless the clip could overflow them (~37 h at 16 kHz): numpy's cumsum of booleans into
    # int32 ran ~10x faster than into int64 here (0.04 vs 0.4 ms for 3.6 s)
    count = np.int32 if n < np.iinfo(np.int32).max else np.int64
    change = np.zeros(n, dtype=count)
    np.cumsum(neg[1:] != neg[:-1], dtype=count, out=change[1:])
    n_frames = 1 + (n + 2 * half - frame_length) // hop_length
    starts = np.arange(n_frames) * hop_length - half  # frame starts in unpadded sample positions
    # crossings between samples (i-1, i) with both inside the frame [s, s + frame_length)
    counts = change[np.clip(starts + frame_length - 1, 0, n - 1)] - change[np.clip(starts, 0, n - 1)]
    return counts / frame_length


def _max_normalize(S: np.ndarray) -> np.ndarray:
    """``librosa.util.normalize(S, norm=np.inf, axis=-2)`` for a non-negative float32 ``S``, same arithmetic.

    Columns are divided by their maximum taken in float64 (as librosa does), except columns whose maximum
    is below float32 ``tiny``, which are left as they are. librosa's own function adds an input check and
    float64 copies of the whole array (~0.1 ms per clip); a non-finite value here reaches the extractor's
    output and the clip is reported as skipped.
    """
    length = S.max(axis=-2, keepdims=True).astype(np.float64)
    length[length < np.finfo(S.dtype).tiny] = 1.0
    return (S / length).astype(S.dtype)


def _power_to_db(S: np.ndarray) -> np.ndarray:
    """``librosa.power_to_db(S)`` with its defaults (ref 1.0, amin 1e-10, top_db 80), the same operations.

    librosa's lives in a module that imports its audio I/O (~0.3 s for a process that uses neither).
    """
    log_spec = 10.0 * np.log10(np.maximum(1e-10, S))
    log_spec -= 10.0 * np.log10(np.maximum(1e-10, np.abs(1.0)))
    return np.maximum(log_spec, log_spec.max() - 80.0)


def handcrafted94_reference(y: np.ndarray, sr: int = 16000) -> np.ndarray:
    """The definition of ``handcrafted94``: five separate librosa calls, each averaged over time.

    Slow (four STFTs); used as the reference in tests and benchmarks.

    Parameters
    ----------
    y : np.ndarray, float32, shape (n,)
        Mono signal.
    sr : int, optional
        Its sample rate.

    Returns
    -------
    np.ndarray, float32, shape (94,)
    """
    parts = [
        librosa.feature.chroma_stft(y=y, sr=sr),
        librosa.feature.melspectrogram(y=y, sr=sr, n_mels=60),
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20),
        librosa.feature.zero_crossing_rate(y),
        librosa.feature.spectral_centroid(y=y, sr=sr),
    ]
    return np.concatenate([p.mean(axis=1) for p in parts]).astype(np.float32)


class Handcrafted94(Extractor):
    """The 94-dim handcrafted vector (see the module docstring), with one shared STFT.

    Outputs
    -------
    ``"pooled"`` : float32, shape (94,)
    """

    name = "handcrafted94"
    version = 1
    sr = 16000
    thread_safe = True  # numpy/scipy.fft/BLAS release the GIL; the chroma cache is a plain dict
    fork_safe = True  # numpy, scipy.fft, OpenBLAS (pthreads, fork handlers), soundfile, soxr

    def __init__(self) -> None:
        # librosa's filterbank and window, computed here (their librosa modules import numba and scipy.signal)
        self._mel60 = mel_filters(60)
        self._mel128 = mel_filters(128)
        self._freq = _FREQS.astype(np.float32)
        self._window = hann_window()  # float64, as librosa uses it
        self._chroma_fb: dict[float, np.ndarray] = {}
        self._local = threading.local()

    def _workspace(self) -> _Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = _Workspace()
        return ws

    def params(self) -> dict[str, Any]:
        """See :meth:`Extractor.params` (the definition is fixed; only the rate is recorded)."""
        return {"sr": self.sr}

    def warm_up(self) -> None:
        """See :meth:`Extractor.warm_up`; also loads the compiled peak finder (a run of many clips)."""
        compiled_pip_peaks()
        super().warm_up()

    @property
    def dim(self) -> int:
        """94."""
        return 94

    def _stft(self, y: np.ndarray, ws: _Workspace | None = None) -> np.ndarray:
        """``librosa.stft(y, n_fft=2048, hop_length=512)`` (centred, zero padding, periodic Hann).

        The same framing, window, float64 transform and complex64 result as librosa, without its
        general-purpose block loop and copies (``test_lean_stft_equals_librosa``).

        Parameters
        ----------
        y : np.ndarray, shape (n,)
            Signal.
        ws : _Workspace or None, optional
            Buffers to compute in; the result is then a view of ``ws.stft``, valid until the next call
            with the same workspace. None allocates.

        Returns
        -------
        np.ndarray, complex64, shape (1025, T)
        """
        y = np.asarray(y, dtype=np.float32)
        if y.shape[0] <= _N_FFT // 2:  # librosa's own path handles clips shorter than half a window
            return librosa.stft(y, n_fft=_N_FFT, hop_length=_HOP)
        if ws is None:
            ws = _Workspace()
        padded = ws.padded_signal(y)
        frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]  # (T, n_fft) view
        n_frames = frames.shape[0]
        ws = ws.reserve(n_frames)
        # librosa multiplies float32 frames by its float64 window, transforms in float64 along axis -2 with
        # numpy.fft, and stores complex64. The same pocketfft transform along the contiguous last axis is
        # bit for bit the same per frame and ~2.8x faster. Long clips go in blocks of frames (each frame's
        # transform is independent) so the float64 temporaries stay small: a 10-minute clip would otherwise
        # hold ~0.8 GB at once.
        out = ws.stft[:n_frames]
        for start in range(0, n_frames, _STFT_BLOCK):
            block = frames[start : start + _STFT_BLOCK]
            rows = block.shape[0]
            windowed = np.multiply(self._window, block, out=ws.block64[:rows])
            np.copyto(out[start : start + rows], np.fft.rfft(windowed, axis=-1, out=ws.spec128[:rows]))
        return out.T

    def _chroma_filters(self, tuning: float) -> np.ndarray:
        fb = self._chroma_fb.get(tuning)
        if fb is None:
            fb = chroma_filters(tuning)
            if len(self._chroma_fb) < 256:  # tuning has 101 possible values at librosa's 0.01 resolution
                self._chroma_fb[tuning] = fb
        return fb

    def _mel_part(self, power: np.ndarray) -> np.ndarray:
        """Dimensions 12..71: the time average of the 60-band mel power spectrogram (see :meth:`extract`).

        A subclass may define this part differently (``handcrafted94log``: the average of its log).

        Parameters
        ----------
        power : np.ndarray, float32, shape (1025, T)
            Power spectrogram.

        Returns
        -------
        np.ndarray, shape (60,)
        """
        return self._mel60 @ power.mean(axis=1)

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """See :meth:`Extractor.extract`; returns ``{"pooled": (94,) float32}``.

        The mel-spectrogram part is a linear map of the power spectrogram, so its time average is the
        filterbank applied to the mean power (one matrix-vector product instead of a matrix product; equal
        up to float32 summation order, ~5e-7). The MFCCs are not averaged that way: the DCT of the mean
        log-mel cancels to coefficients near zero whose float32 rounding then differs by 1e-3 relative.
        """
        ws = self._workspace()
        D = self._stft(y, ws)  # (1025, T)
        n_frames = D.shape[1]
        if n_frames <= ws.frames:
            mag = np.abs(D, out=ws.mag[:n_frames].T)
            power = np.square(mag, out=ws.power[:n_frames].T)
        else:  # a clip too long for the workspace
            mag = np.abs(D)
            power = np.square(mag)
        tuning = estimate_tuning(power, sr=self.sr, scratch=ws.peaks)
        chroma = _max_normalize(self._chroma_filters(tuning) @ power)
        mel60 = self._mel_part(power)
        logmel = _power_to_db(self._mel128 @ power)
        mfcc = scipy.fft.dct(logmel, axis=-2, type=2, norm="ortho")[:20]
        zcr = zero_crossing_rate(y).mean()
        l1 = mag.sum(axis=0)
        l1[l1 < np.finfo(mag.dtype).tiny] = 1.0
        centroid = ((self._freq @ mag) / l1).mean()
        return {
            "pooled": np.concatenate([chroma.mean(axis=1), mel60, mfcc.mean(axis=1), [zcr, centroid]]).astype(
                np.float32
            )
        }

    def __getstate__(self) -> dict[str, Any]:
        # The chroma cache is rebuilt lazily in worker processes; the fixed filterbanks travel (small).
        state = self.__dict__.copy()
        state["_chroma_fb"] = {}
        del state["_local"]  # per-thread workspaces are not shared
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


class Mfcc40(Extractor):
    """40 MFCCs per frame with a fixed-length crop/pad policy, plus their mean and std.

    Parameters
    ----------
    offset : float, optional
        Seconds skipped at the start (default 0.5). A clip no longer than ``offset`` is read from its start
        instead of yielding an empty segment.
    crop : float or None, optional
        Seconds kept after ``offset`` (default 3.0); shorter segments are zero-padded at the end so every clip
        has the same number of frames. ``None`` keeps the whole clip after ``offset`` (variable length).
    n_mfcc : int, optional
        Number of coefficients (default 40).

    Outputs
    -------
    ``"frames"`` : float32, shape (T, n_mfcc)
        librosa 0.11 ``mfcc`` defaults (n_fft 2048, hop 512, 128 Slaney mel bands, ortho DCT-II), transposed.
        With the default crop, T = 1 + floor(3.0 * 16000 / 512) = 94.
    ``"pooled"`` : float32, shape (2 * n_mfcc,)
        Mean over time, then standard deviation over time, of ``"frames"``.
    """

    name = "mfcc40"
    version = 1
    sr = 16000
    thread_safe = True
    fork_safe = True

    def __init__(self, *, offset: float = 0.5, crop: float | None = 3.0, n_mfcc: int = 40) -> None:
        if not offset >= 0:
            raise ParameterError(f"mfcc40: offset must be >= 0 seconds, got {offset!r}")
        if crop is not None and not crop > 0:
            raise ParameterError(f"mfcc40: crop must be > 0 seconds or None, got {crop!r}")
        if not isinstance(n_mfcc, int | np.integer) or not 1 <= n_mfcc <= 128:
            raise ParameterError(f"mfcc40: n_mfcc must be an integer in 1..128, got {n_mfcc!r}")
        self.offset = float(offset)
        self.crop = None if crop is None else float(crop)
        self.n_mfcc = int(n_mfcc)
        self._mel128 = librosa.filters.mel(sr=self.sr, n_fft=_N_FFT, n_mels=128)

    def params(self) -> dict[str, Any]:
        """See :meth:`Extractor.params`."""
        return {"offset": self.offset, "crop": self.crop, "n_mfcc": self.n_mfcc, "sr": self.sr}

    def outputs(self) -> tuple[str, ...]:
        """``("pooled", "frames")``."""
        return ("pooled", "frames")

    @property
    def dim(self) -> int:
        """Pooled dimension: ``2 * n_mfcc``."""
        return 2 * self.n_mfcc

    def segment(self, y: np.ndarray) -> np.ndarray:
        """Apply the crop/pad policy.

        Parameters
        ----------
        y : np.ndarray, float32, shape (n,)

        Returns
        -------
        np.ndarray, float32, shape (round(crop * sr),) or (n - offset samples,) when ``crop`` is None
        """
        start = round(self.offset * self.sr)
        if start >= y.shape[0]:
            start = 0
        seg = y[start:]
        if self.crop is not None:
            n = round(self.crop * self.sr)
            seg = seg[:n]
            if seg.shape[0] < n:
                seg = np.pad(seg, (0, n - seg.shape[0]))
        return np.ascontiguousarray(seg, dtype=np.float32)

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """See :meth:`Extractor.extract`; returns ``"frames"`` (T, n_mfcc) and ``"pooled"`` (2 n_mfcc,)."""
        seg = self.segment(y)
        power = np.abs(librosa.stft(seg, n_fft=_N_FFT, hop_length=_HOP)) ** 2
        logmel = librosa.power_to_db(self._mel128 @ power)
        mfcc = librosa.get_fftlib().dct(logmel, axis=-2, type=2, norm="ortho")[: self.n_mfcc]
        frames = np.ascontiguousarray(mfcc.T, dtype=np.float32)
        pooled = np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)
        return {"frames": frames, "pooled": pooled}


@register_extractor("handcrafted94")
def _make_handcrafted94(name: str, **params: Any) -> Handcrafted94:
    if params:
        raise ParameterError(f"handcrafted94 takes no parameters, got {sorted(params)}")
    return Handcrafted94()


@register_extractor("mfcc40")
def _make_mfcc40(name: str, **params: Any) -> Mfcc40:
    unknown = sorted(set(params) - {"offset", "crop", "n_mfcc"})
    if unknown:
        raise ParameterError(f"mfcc40: unknown parameters {unknown}; known: offset, crop, n_mfcc")
    return Mfcc40(**params)
