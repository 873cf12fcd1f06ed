"""An example sertool plugin: one feature extractor and one model, found by sertool through entry points.

- ``logmel-stats`` (entry-point group ``sertool.extractors``): the mean and standard deviation over time of
  64 log-mel bands of the 16 kHz signal, a 128-dim vector per clip.
- ``lda`` (entry-point group ``sertool.models``): linear discriminant analysis with shrinkage on
  standardised features.

Installed (``pip install -e examples/sertool-plugin-example``), both work in every sertool command::

    sertool bench --corpus demo --root demo/corpus --features logmel-stats --models lda,logreg
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import Pipeline

from sertool.features.base import Extractor
from sertool.models.classic import scaled_pipeline
from sertool.models.registry import ModelSpec

__all__ = ["LogMelStats", "lda_spec", "make_extractor", "make_lda"]

__version__ = "0.1.0"


class LogMelStats(Extractor):
    """Mean and standard deviation over time of the log-mel spectrogram: ``2 * n_mels`` values per clip.

    Parameters
    ----------
    n_mels : int
        Mel bands (64: a 128-dim vector).
    n_fft : int
        FFT size in samples (400: 25 ms at 16 kHz).
    hop_length : int
        Hop in samples (160: 10 ms).
    fmax : float
        Highest band edge in Hz (8000: Nyquist at 16 kHz).
    """

    name = "logmel-stats"
    #: Bump when the code changes the output for the same parameters (it is part of the cache key).
    version = 1
    sr = 16000
    thread_safe = True  # numpy / FFT code that releases the GIL
    fork_safe = True  # plain numpy and librosa: workers may be forked

    def __init__(
        self, n_mels: int = 64, n_fft: int = 400, hop_length: int = 160, fmax: float = 8000.0
    ) -> None:
        if n_mels < 1 or n_fft < 16 or hop_length < 1 or not 0 < fmax <= self.sr / 2:
            raise ValueError(
                f"bad parameters: n_mels={n_mels}, n_fft={n_fft}, hop_length={hop_length}, fmax={fmax}"
            )
        self.n_mels = int(n_mels)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.fmax = float(fmax)

    def params(self) -> dict[str, Any]:
        """Every parameter changes the output, so all are part of the cache key."""
        return {"n_mels": self.n_mels, "n_fft": self.n_fft, "hop_length": self.hop_length, "fmax": self.fmax}

    @property
    def dim(self) -> int:
        """``2 * n_mels``: the means, then the standard deviations."""
        return 2 * self.n_mels

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """``{"pooled": [mean of each band, std of each band]}`` of the log-mel spectrogram (dB)."""
        import librosa

        if y.size < self.n_fft:  # a clip shorter than one window: pad it to one frame
            y = np.pad(y, (0, self.n_fft - y.size))
        mel = librosa.feature.melspectrogram(
            y=y, sr=self.sr, n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels, fmax=self.fmax
        )
        logmel = librosa.power_to_db(mel, ref=1.0, top_db=None)
        pooled = np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)]).astype(np.float32)
        return {"pooled": pooled}


def make_extractor(name: str, **params: Any) -> LogMelStats:
    """The ``sertool.extractors`` entry point: ``factory(name, **params)`` -> an :class:`Extractor`.

    ``params`` come from ``--extractor-params '{"logmel-stats": {"n_mels": 40}}'``.
    """
    del name  # one extractor per entry point; sertool checks that the returned name matches
    return LogMelStats(**params)


def make_lda(*, seed: int, **overrides: Any) -> Pipeline:
    """Standardise, then linear discriminant analysis with Ledoit-Wolf shrinkage (``seed`` unused)."""
    del seed  # deterministic
    return scaled_pipeline(LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"), **overrides)


def lda_spec() -> ModelSpec:
    """The ``sertool.models`` entry point: the :class:`ModelSpec` of ``lda``."""
    return ModelSpec(
        name="lda",
        family="classic",
        factory=make_lda,
        input="pooled",
        sample_weight=False,  # LinearDiscriminantAnalysis.fit takes no sample weights
        description="linear discriminant analysis, Ledoit-Wolf shrinkage, on standardised features",
        param_grid={"clf__shrinkage": ["auto", 0.1, 0.5]},
    )
