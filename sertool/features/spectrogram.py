"""``spectrogram``: log-magnitude STFT frames, the input of the combined-corpus study's MobileNetV2 model.

The study cut each clip into 1-second blocks and fed their STFT magnitudes, as images, to a MobileNetV2
(:mod:`sertool.models.mobilenet`, registry name ``mobilenet_spec``). This extractor stores the whole clip's
frames; the model cuts them into blocks, so the block length is a model parameter, not part of the cache key.
"""

from __future__ import annotations

import logging
from typing import Any

import librosa
import numpy as np

from sertool.exceptions import ParameterError
from sertool.features.base import Extractor, register_extractor

__all__ = ["Spectrogram"]

log = logging.getLogger(__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


class Spectrogram(Extractor):
    """Log-magnitude STFT frames ``log(1 + |STFT|)`` of the lowest ``n_bins`` frequency bins.

    Parameters
    ----------
    n_fft : int, optional
        FFT size (default 512: 257 bins, 31.25 Hz apart at 16 kHz).
    hop_length : int, optional
        Hop in samples (default 160: 100 frames per second at 16 kHz).
    n_bins : int, optional
        Number of bins kept, from 0 Hz up (default 128 of 257: 0 to 3.97 kHz).

    Outputs
    -------
    ``"frames"`` : float16, shape (T, n_bins)
        ``log1p(abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length)))[:n_bins].T`` with librosa 0.11
        defaults otherwise (Hann window of ``n_fft`` samples, centred frames, zero padding):
        ``T = 1 + len(y) // hop_length``. A signal shorter than ``n_fft`` samples is zero-padded to ``n_fft``
        first (librosa would warn), so it has ``1 + n_fft // hop_length`` frames.
    ``"pooled"`` : float32, shape (2 * n_bins,)
        Mean over time, then standard deviation over time, of the frames (computed in float32, before the
        float16 rounding of ``"frames"``).
    """

    name = "spectrogram"
    version = 1
    sr = 16000
    thread_safe = True
    fork_safe = True

    def __init__(self, *, n_fft: int = 512, hop_length: int = 160, n_bins: int = 128) -> None:
        if not _is_int(n_fft) or n_fft < 16:
            raise ParameterError(f"spectrogram: n_fft must be an integer >= 16, got {n_fft!r}")
        if not _is_int(hop_length) or not 1 <= hop_length <= n_fft:
            raise ParameterError(
                f"spectrogram: hop_length must be an integer in 1..n_fft, got {hop_length!r}"
            )
        n_max = n_fft // 2 + 1
        if not _is_int(n_bins) or not 1 <= n_bins <= n_max:
            raise ParameterError(f"spectrogram: n_bins must be an integer in 1..{n_max}, got {n_bins!r}")
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_bins = int(n_bins)

    def params(self) -> dict[str, Any]:
        """See :meth:`Extractor.params`."""
        return {"n_fft": self.n_fft, "hop_length": self.hop_length, "n_bins": self.n_bins, "sr": self.sr}

    def outputs(self) -> tuple[str, ...]:
        """``("pooled", "frames")``."""
        return ("pooled", "frames")

    @property
    def dim(self) -> int:
        """Pooled dimension: ``2 * n_bins``."""
        return 2 * self.n_bins

    def log_magnitude(self, y: np.ndarray) -> np.ndarray:
        """``log(1 + |STFT|)`` of the kept bins, float32, shape (T, n_bins).

        Parameters
        ----------
        y : np.ndarray, float32, shape (n,)

        Returns
        -------
        np.ndarray, float32, shape (T, n_bins)
        """
        y = np.asarray(y, dtype=np.float32)
        if y.shape[0] < self.n_fft:
            y = np.pad(y, (0, self.n_fft - y.shape[0]))
        mag = np.abs(librosa.stft(y, n_fft=self.n_fft, hop_length=self.hop_length)[: self.n_bins])
        return np.ascontiguousarray(np.log1p(mag).T, dtype=np.float32)

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """See :meth:`Extractor.extract`: ``"frames"`` (T, n_bins) float16, ``"pooled"`` (2 n_bins,)."""
        frames = self.log_magnitude(y)
        pooled = np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)
        return {"frames": frames.astype(np.float16), "pooled": pooled}


@register_extractor("spectrogram")
def _make_spectrogram(name: str, **params: Any) -> Spectrogram:
    unknown = sorted(set(params) - {"n_fft", "hop_length", "n_bins"})
    if unknown:
        raise ParameterError(f"spectrogram: unknown parameters {unknown}; known: n_fft, hop_length, n_bins")
    return Spectrogram(**params)
