"""The one audio loader: any file soundfile reads -> mono float32 at the requested rate.

Resampling uses soxr's ``"VHQ"`` quality. Validation raises :class:`~sertool.exceptions.AudioError` naming
the file and the reason; batch callers collect those into a report (see :func:`load_many`).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sertool.exceptions import AudioError, ParameterError

__all__ = [
    "DEFAULT_SR",
    "AudioInfo",
    "audio_info",
    "file_sha1",
    "load_audio",
    "load_many",
    "missing_file_reason",
    "validate_signal",
]

DEFAULT_SR = 16000
#: Audio file extensions every corpus adapter accepts.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".mp3", ".opus"})


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file.

    Attributes
    ----------
    sample_rate : int
        Native sample rate in Hz.
    frames : int
        Number of samples per channel.
    channels : int
        Number of channels.
    """

    sample_rate: int
    frames: int
    channels: int

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read an audio file's header.

    Parameters
    ----------
    path : str or path-like
        Audio file.

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioError
        If the file cannot be opened as audio.
    """
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, OSError)
        raise AudioError(path, _unreadable_reason(path, exc)) from None
    return AudioInfo(sample_rate=int(info.samplerate), frames=int(info.frames), channels=int(info.channels))


def file_sha1(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes (the audio identity used by caches and duplicate detection).

    Parameters
    ----------
    path : str or path-like
        Any file.
    chunk : int, optional
        Read size in bytes.

    Returns
    -------
    str
        40 hex digits.
    """
    h = hashlib.sha1()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    except OSError as exc:
        raise AudioError(path, f"unreadable: {_short(exc)}") from None
    return h.hexdigest()


def validate_signal(
    y: np.ndarray, sr: int, *, path: str | os.PathLike = "<array>", min_duration: float = 0.0
) -> None:
    """Check a decoded signal and raise :class:`AudioError` if it is unusable.

    Parameters
    ----------
    y : np.ndarray, shape (n,) or (n, channels)
        Signal.
    sr : int
        Its sample rate.
    path : str or path-like, optional
        Name used in the error message.
    min_duration : float, optional
        Minimum duration in seconds.

    Raises
    ------
    AudioError
        Empty, non-finite, all-zero, or shorter than ``min_duration``.
    """
    if y.size == 0:
        raise AudioError(path, "empty: no samples")
    if not np.all(np.isfinite(y)):
        raise AudioError(path, "contains NaN or infinite samples")
    if not np.any(y):
        raise AudioError(path, "all-zero signal (digital silence)")
    dur = y.shape[0] / sr
    if dur < min_duration:
        raise AudioError(path, f"too short: {dur:.3f} s < minimum {min_duration:.3f} s")


def load_audio(
    path: str | os.PathLike,
    *,
    sr: int | None = DEFAULT_SR,
    mono: bool = True,
    min_duration: float = 0.0,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Load an audio file as float32, mono, at ``sr`` Hz.

    Parameters
    ----------
    path : str or path-like
        Any file libsndfile reads (WAV, FLAC, OGG, AIFF, ...).
    sr : int or None, optional
        Target rate in Hz (default 16000); ``None`` keeps the native rate.
    mono : bool, optional
        Average channels to one (default). If False the result has shape ``(channels, n)``.
    min_duration : float, optional
        Minimum duration in seconds after loading; shorter files raise :class:`AudioError`.
    offset, duration : float, optional
        Read only ``duration`` seconds starting at ``offset`` seconds.

    Returns
    -------
    np.ndarray, dtype float32, shape (n,) or (channels, n)
        The signal in [-1, 1] for integer formats (float files are returned as stored).

    Raises
    ------
    AudioError
        Unreadable, empty, all-zero, NaN/inf, or too short.
    ParameterError
        ``sr`` is not a positive integer, ``offset`` is negative or ``duration`` is not positive.
    """
    if sr is not None and (not isinstance(sr, int | np.integer) or sr <= 0):
        raise ParameterError(f"sr must be a positive integer or None, got {sr!r}")
    if offset < 0 or (duration is not None and duration <= 0):
        raise ParameterError(
            f"offset must be >= 0 and duration > 0 or None, got offset={offset!r}, duration={duration!r}"
        )
    try:
        with sf.SoundFile(str(path)) as fh:
            native = int(fh.samplerate)
            if offset:
                fh.seek(min(round(offset * native), fh.frames))
            frames = -1 if duration is None else round(duration * native)
            y = fh.read(frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(path, _unreadable_reason(path, exc)) from None
    resample = sr is not None and sr != native
    # a single mono channel read at the target rate is checked once; mixed (channels can cancel) or
    # resampled signals are checked again after that step
    once = not resample and (y.shape[1] == 1 or not mono)
    validate_signal(y, native, path=path, min_duration=min_duration if once else 0.0)
    if mono:  # the mean of one channel is that channel, bit for bit
        y = y[:, 0] if y.shape[1] == 1 else y.mean(axis=1, dtype=np.float32)
    else:
        y = np.ascontiguousarray(y.T)
    if resample:
        y = soxr.resample(y.T if not mono else y, native, sr, quality="VHQ")
        y = np.asarray(y.T if not mono else y, dtype=np.float32)
    if not once:
        # validate_signal wants samples on axis 0; the multi-channel result is (channels, n)
        validate_signal(y if mono else y.T, sr or native, path=path, min_duration=min_duration)
    return np.ascontiguousarray(y, dtype=np.float32)


def load_many(
    paths: Iterable[str | os.PathLike], *, sr: int | None = DEFAULT_SR, min_duration: float = 0.0
) -> Iterator[tuple[str, np.ndarray | None, AudioError | None]]:
    """Load several files, collecting errors instead of stopping.

    Parameters
    ----------
    paths : iterable of path-like
        Files to load.
    sr, min_duration
        As in :func:`load_audio`.

    Yields
    ------
    (path, signal or None, AudioError or None)
        Exactly one of signal and error is set.
    """
    for p in paths:
        try:
            yield str(p), load_audio(p, sr=sr, min_duration=min_duration), None
        except AudioError as err:
            yield str(p), None, err


def is_audio_file(path: str | os.PathLike) -> bool:
    """Whether a path has an audio extension sertool adapters accept (case-insensitive)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def missing_file_reason(path: str | os.PathLike) -> str:
    """Why ``path`` is not a readable regular file: missing, a folder, a broken or looping symbolic link."""
    p = os.fspath(path)
    if os.path.islink(p):
        try:
            os.stat(p)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symbolic link loop (too many levels of symbolic links)"
            return f"broken symbolic link (target {os.readlink(p)!r} missing)"
    if os.path.isdir(p):
        return "is a folder, not a file"
    return "file does not exist"


def _unreadable_reason(path: str | os.PathLike, exc: BaseException) -> str:
    """Reason for a file libsndfile cannot open; a 0-byte file (a known CREMA-D quirk) says so plainly."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    return f"unreadable: {_short(exc)}"


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return (msg[-1] if msg else type(exc).__name__)[:200]
