"""Whisper encoder embeddings: layer-wise mean-pooled hidden states (``whisper-<size>``).

Output ``"pooled"``: shape ``(n_layers, dim)`` float32 with ``n_layers = encoder_layers + 1``: index 0 is the
input embedding (conv stem + positional embedding), index ``i`` the output of encoder layer ``i``, and the last
index the last layer *after* the encoder's final layer norm (the Hugging Face ``output_hidden_states``
convention; it equals ``last_hidden_state`` and CTranslate2's ``encode`` output). Each is the mean over the
clip's valid encoder frames only (one frame per 20 ms; padding and silence beyond the clip are never pooled).
Optional ``"frames"`` (``frame_layers=(...)``): float16, shape ``(n_selected_layers, T, dim)``.

Pooling (``pooling``, part of the identity when not the default): ``"mean"`` (default) as above;
``"meanstd"``: statistics pooling, each layer's mean over the valid frames followed by its standard deviation
over them (population, float32), so ``"pooled"`` is ``(n_layers, 2 * dim)`` and :attr:`WhisperExtractor.dim` is
``2 * d_model``; views select layers as before (``whisper-base@all``: 7 x 1024). Leaderboard entries of it are
named ``<view>~meanstd``.

Input modes (``mode``, part of the identity):

``"trimmed"`` (default)
    The encoder runs on the clip's own length: log-mel frames ``ceil(n / 160)`` rounded up to even, positional
    embeddings sliced to the ``T/2`` encoder frames. Clips in one batch are zero-padded and padded keys are
    masked out of attention, so a clip's output does not depend on its batch. Fast (cost ~ clip length).
``"padded30"``
    Whisper's native input: 30 s window (zero padding, longer clips cropped to 30 s), 1500 encoder frames.
``"window<S>"`` (e.g. ``"window8"``)
    A fixed ``S``-second window (pad with silence / crop), positional embeddings sliced; no masking (the
    model sees the silence, as in ``padded30``, but over a shorter context).

In every mode the log-mel spectrogram is exactly Whisper's (``WhisperFeatureExtractor``: 25 ms Hann STFT,
10 ms hop, Slaney mel filters, ``log10``, clamp to ``max - 8``, ``(x + 4) / 4``) of the clip padded with
zeros, so the trimmed and window inputs equal the first frames of the ``padded30`` input. The extractor
computes it for a whole batch on the model's device (:func:`whisper_log_mel_batch`, one ``torch.stft``; equal
to the per-clip :func:`whisper_log_mel` to float rounding): on a GPU the per-clip numpy log-mel was the limit
(~1000 clips/s). Files are decoded by :func:`sertool.features.extract.extract_features` (worker processes
on CUDA, see :meth:`WhisperExtractor.decode_workers`) while the encoder runs; timed end to end, on that path,
by ``benchmarks/bench_whisper_gpu.py`` (``benchmarks/results/whisper_gpu.md``).

Precision (``precision``): ``"auto"`` (bf16/fp16 autocast on CUDA, float32 on CPU), ``"float32"``,
``"bfloat16"``, ``"float16"`` (autocast) or ``"int8"`` (CPU only): every ``Linear`` of the encoder layers
dynamically quantised to int8 (:func:`torch.ao.quantization.quantize_dynamic`: int8 weights, one
per-tensor weight scale; activations quantised on the fly per call, with one scale per tensor), everything
else (conv stem, attention softmax, layer norms, GELU, pooling) in float32. The activation scale is taken
over the whole input of a call, so under int8 each clip is encoded on its own (its own frames only, no batch
padding): a clip's features never depend on which clips share its batch, as in float32. int8 features
differ from float32 ones by far more than float rounding, mostly in layers 4-6 of base, yet RAVDESS probe UA
held (whisper-base@all, logreg, speaker-6fold, 3 seeds: 74.44 vs 74.15); on a 2-core Sapphire Rapids CPU with
one thread int8 ran 1.6x float32 and ``"bfloat16"`` (CPU autocast, AMX) 2.7x at float32's UA (74.24)
(``benchmarks/bench_whisper_int8.py``). Any precision other than float32 is part of the identity.

Weights: ``tiny.en`` and ``base`` ship offline (see :mod:`sertool.features.weights`); other sizes need
``weights=<local folder or hub id>``. The weights' label and SHA-256 are part of :meth:`params`, and so is
the effective precision when it is not float32 (a float32 extractor keeps the key it had before precisions
existed). Device (``"auto"`` / ``"cpu"`` / ``"cuda"``) and batch size are not.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from sertool.exceptions import ParameterError
from sertool.features.base import Extractor, register_extractor
from sertool.features.weights import BUILTIN_WEIGHTS, ResolvedWeights, load_whisper_encoder, resolve
from sertool.util import check_device, resolve_device

__all__ = [
    "DEFAULT_LAYERS",
    "MODES",
    "PRECISIONS",
    "WhisperExtractor",
    "autocast_for",
    "check_device",
    "masked_mean",
    "pick_device",
    "quantize_int8",
    "whisper_log_mel",
    "whisper_log_mel_batch",
]

log = logging.getLogger(__name__)

SR = 16000
N_FFT = 400
HOP = 160
#: Whisper's native window in samples (30 s) and mel frames (3000).
N_SAMPLES = 30 * SR
N_FRAMES = N_SAMPLES // HOP

MODES = ("trimmed", "padded30", "window<seconds>")
#: Accepted ``precision`` values (``"int8"``: CPU only).
PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")
#: Clips per forward pass on CUDA when ``batch_size`` is not given.
DEFAULT_CUDA_BATCH = 128
#: ``pooling`` choices: the mean over valid frames, or the mean and the standard deviation.
POOLINGS = ("mean", "meanstd")

#: Layers a plain ``whisper-<size>`` view uses (``None``: all layers concatenated). To be set from
#: RAVDESS/TESS measurements. RAVDESS, whisper-base, trimmed, linear probe, speaker-independent 6-fold, mean
#: of 3 fold permutations (benchmarks/bench_whisper.py --probe): UA 72.7 (layer 3), 72.6 (5), 75.0 (3-5),
#: 75.3 (2-6), 75.5 (all 7); padded30: 72.9, 73.3, 74.7, 75.8, 75.2. TESS, train on one speaker / test on
#: the other (benchmarks/results/whisper_modes.md): trimmed L2 70.1, L4 66.9, 3-5 69.8, all 67.7; padded30
#: L4 72.6, 3-5 72.2, all 68.6 (speaker-dependent 5-fold: ~100 for every layer from L1, both modes).
DEFAULT_LAYERS: dict[str, tuple[int, ...] | None] = {"tiny.en": None, "base": None}


# ------------------------------------------------------------------------------------------- runtime
def pick_device(device: str) -> Any:
    """:func:`sertool.util.resolve_device` as a :class:`torch.device` (what torch code needs).

    Raises
    ------
    ParameterError
        Unknown device, or CUDA asked for but unavailable.
    """
    import torch

    return torch.device(resolve_device(device))


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def autocast_for(device: Any, precision: str) -> Any:
    """Autocast context: ``"auto"`` is bf16 (fp16 where bf16 is unsupported) on CUDA, float32 on CPU.

    ``"int8"`` (dynamically quantised ``Linear`` layers, which take and return float32) gets no autocast.
    """
    import torch

    _check_precision(precision)
    if precision in ("float32", "int8") or (precision == "auto" and device.type != "cuda"):
        return nullcontext()
    if precision == "auto":
        precision = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return torch.autocast(device_type=device.type, dtype=getattr(torch, precision))


def masked_std(h: Any, lengths: Any, mean: Any) -> Any:
    """Population standard deviation over the first ``lengths[b]`` frames, given their ``mean`` (B, D).

    Computed as ``sqrt(mean((h - mean)^2))`` over the valid frames in float32 (not ``E[h^2] - mean^2``, which
    cancels badly for states with a large mean).
    """
    import torch

    valid = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]).to(torch.float32)
    with torch.autocast(device_type=h.device.type, enabled=False):
        dev = (h.float() - mean[:, None, :]) * valid[:, :, None]
        var = (dev * dev).sum(dim=1) / lengths.clamp(min=1).to(torch.float32)[:, None]
        return var.sqrt()


def masked_mean(h: Any, lengths: Any) -> Any:
    """Mean over the first ``lengths[b]`` frames of each sequence.

    Parameters
    ----------
    h : torch.Tensor, shape (B, T, D)
    lengths : torch.Tensor of int, shape (B,)

    Returns
    -------
    torch.Tensor, float32, shape (B, D)
    """
    import torch

    weights = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]).to(torch.float32)
    weights = weights / lengths.clamp(min=1).to(torch.float32)[:, None]
    with torch.autocast(device_type=h.device.type, enabled=False):  # one float32 GEMV per clip
        return torch.bmm(weights[:, None, :], h.float()).squeeze(1)


# ------------------------------------------------------------------------------------------- log-mel
_FILTERS: dict[int, np.ndarray] = {}


def _mel_filters(n_mels: int) -> np.ndarray:
    """Whisper's mel filter bank, shape (n_freq=201, n_mels), from transformers' WhisperFeatureExtractor."""
    if n_mels not in _FILTERS:
        from transformers import WhisperFeatureExtractor

        _FILTERS[n_mels] = np.asarray(
            WhisperFeatureExtractor(feature_size=n_mels).mel_filters, dtype=np.float32
        )
    return _FILTERS[n_mels]


def whisper_log_mel(y: np.ndarray, n_frames: int = N_FRAMES, *, n_mels: int = 80) -> np.ndarray:
    """Whisper's normalised log-mel spectrogram of ``y`` padded with zeros, first ``n_frames`` frames.

    With ``n_frames=3000`` this is ``WhisperFeatureExtractor()(y).input_features[0]``; a smaller ``n_frames``
    gives exactly the first frames of that (the clamp-to-max-minus-8 uses the same maximum), computed on the
    clip and a little padding only.

    Parameters
    ----------
    y : np.ndarray, float32, shape (n,)
        16 kHz mono signal (cropped to 30 s).
    n_frames : int, optional
        Number of 10 ms frames to return (at most 3000).
    n_mels : int, optional
        80, or 128 for large-v3.

    Returns
    -------
    np.ndarray, float32, shape (n_mels, n_frames)
    """
    import torch

    y = np.asarray(y, dtype=np.float32)[:N_SAMPLES]
    n = y.shape[0]
    # Pad with >= n_fft zeros so every frame that overlaps the clip is computed and the STFT's reflect padding
    # at the end only sees zeros: frames equal those of the 30 s zero-padded input.
    length = N_SAMPLES if n + N_FFT > N_SAMPLES else -(-(n + N_FFT) // HOP) * HOP
    x = torch.from_numpy(np.pad(y, (0, length - n)))
    stft = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = (stft[..., :-1].abs() ** 2).contiguous()
    mel = torch.from_numpy(_mel_filters(n_mels)).T @ power
    logm = torch.clamp(mel, min=1e-10).log10()
    top = logm.max()
    logm = (torch.maximum(logm, top - 8.0) + 4.0) / 4.0
    out = logm[:, :n_frames].numpy()
    if out.shape[1] < n_frames:  # silence frames of the zero padding
        fill = (max(-10.0, float(top) - 8.0) + 4.0) / 4.0
        out = np.pad(out, ((0, 0), (0, n_frames - out.shape[1])), constant_values=fill)
    return np.ascontiguousarray(out, dtype=np.float32)


def whisper_log_mel_batch(
    audio: Any, lengths: Sequence[int], n_frames: Sequence[int], *, n_mels: int = 80
) -> Any:
    """:func:`whisper_log_mel` of a batch of clips in one ``torch.stft`` on the audio's device (GPU or CPU).

    Each clip gets exactly the reference's frames: its audio is zero-padded to the reference's length
    ``L = ceil((n + 400) / 160) * 160`` (30 s for long clips) and reflect-padded by ``n_fft / 2`` at both ends
    (``torch.stft(center=True)``) before the batch is zero-padded, and the clamp maximum is taken over that
    clip's ``L / 160`` frames only. Frames past them are the silence value, as in the reference.

    Parameters
    ----------
    audio : torch.Tensor, float32, shape (B, n_max)
        Clips padded to a common length (samples past ``lengths[b]`` are ignored).
    lengths : sequence of int, shape (B,)
        Samples per clip (clips are cropped to 30 s).
    n_frames : sequence of int, shape (B,)
        Frames wanted per clip; the output has ``T = max(n_frames)`` frames and frames past ``n_frames[b]``
        are zeros (batch padding for the encoder).
    n_mels : int, optional
        80, or 128 for large-v3.

    Returns
    -------
    torch.Tensor, float32, shape (B, n_mels, T), on ``audio.device``
    """
    import torch

    dev = audio.device
    n = [min(int(k), N_SAMPLES) for k in lengths]
    ref_len = [N_SAMPLES if k + N_FFT > N_SAMPLES else -(-(k + N_FFT) // HOP) * HOP for k in n]
    n_valid = torch.tensor([k // HOP for k in ref_len], device=dev)
    fc = max(ref_len) // HOP  # frames computed: every frame of the longest reference input
    width = (fc - 1) * HOP + N_FFT  # padded samples those frames read (center=False)
    half = N_FFT // 2
    x = audio[:, : width - half].float()
    x = torch.nn.functional.pad(x, (0, width - half - x.shape[1]))
    inside = torch.arange(x.shape[1], device=dev)[None, :] < torch.tensor(n, device=dev)[:, None]
    x = x.masked_fill(~inside, 0.0)  # zeros past each clip (and past 30 s), whatever the caller padded with
    z = torch.cat([x[:, 1 : half + 1].flip(-1), x], dim=1)  # reflect padding at the start
    for b, length in enumerate(ref_len):  # reflect padding at the end of a 30 s input reads the clip itself
        extra = width - (length + half)
        if extra > 0 and length == N_SAMPLES:
            z[b, length + half :] = x[b, length - 1 - extra : length - 1].flip(-1)
    window = torch.hann_window(N_FFT, device=dev)
    stft = torch.stft(z, N_FFT, HOP, window=window, center=False, return_complex=True)
    power = stft.abs() ** 2
    filters = _mel_filters_torch(n_mels, dev)
    logm = torch.clamp(filters @ power, min=1e-10).log10()  # (B, n_mels, fc)
    valid = torch.arange(fc, device=dev)[None, :] < n_valid[:, None]
    top = logm.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2))
    logm = (torch.maximum(logm, (top - 8.0)[:, None, None]) + 4.0) / 4.0
    t_out = max(int(f) for f in n_frames)
    if fc < t_out:  # silence frames of the zero padding
        fill = (torch.clamp(top - 8.0, min=-10.0) + 4.0) / 4.0
        logm = torch.cat([logm, fill[:, None, None].expand(-1, logm.shape[1], t_out - fc)], dim=2)
    logm = logm[:, :, :t_out]
    wanted = torch.tensor([int(f) for f in n_frames], device=dev)
    keep = torch.arange(t_out, device=dev)[None, :] < wanted[:, None]
    return logm.masked_fill(~keep[:, None, :], 0.0)


_FILTERS_T: dict[tuple[int, str], Any] = {}


def _mel_filters_torch(n_mels: int, device: Any) -> Any:
    """Whisper's mel filters as a torch tensor on ``device``, shape (n_mels, 201)."""
    import torch

    key = (n_mels, str(device))
    if key not in _FILTERS_T:
        _FILTERS_T[key] = torch.from_numpy(_mel_filters(n_mels).T.copy()).to(device)
    return _FILTERS_T[key]


def _parse_mode(mode: str) -> tuple[str, float | None]:
    """``"trimmed"`` / ``"padded30"`` / ``"window8"`` (also ``"window=8"``, ``"window8.5"``) -> (canonical, s)."""
    text = str(mode).strip().lower()
    if text in ("trimmed", "padded30"):
        return text, None
    m = re.fullmatch(r"window[=_]?(\d+(?:\.\d+)?)s?", text)
    if m:
        seconds = float(m.group(1))
        if not 0.04 <= seconds <= 30:
            raise ParameterError(f"mode {mode!r}: window must be between 0.04 and 30 seconds")
        return f"window{seconds:g}", seconds
    raise ParameterError(
        f"mode must be 'trimmed', 'padded30' or 'window<seconds>' (e.g. 'window8'), got {mode!r}"
    )


# ----------------------------------------------------------------------------------------- extractor
class WhisperExtractor(Extractor):
    """Layer-wise mean-pooled Whisper encoder states (see the module docstring).

    Parameters
    ----------
    size : str
        Model size label: ``"tiny.en"``, ``"base"`` (offline), or any label when ``weights`` is given.
    weights : str or path-like, optional
        Built-in name, CTranslate2 folder, Hugging Face folder or hub id (default: the built-in ``size``).
    mode : str, optional
        ``"trimmed"`` (default), ``"padded30"`` or ``"window<seconds>"``.
    frame_layers : sequence of int, "auto", "all" or None, optional
        Layers whose frame sequences are returned as ``"frames"`` (float16). ``"auto"`` (default) keeps the
        middle layer ``n_layers // 2 + 1`` (layer 4 of base's 0..6, 3 of tiny.en's 0..4): the sequence heads
        (ser_whisper, attn_pool, qkv_pool) read it, and intermediate layers matched or beat the last one in
        the attentive-pooling study and in our pooled probes. ``"all"``: every layer (opt-in: 7x the cache of
        one layer for base; :meth:`frames_bytes` says how much, and ``sertool features`` prints it before
        extracting). ``None`` stores no frames.
    device : str, optional
        ``"auto"`` (default), ``"cpu"``, ``"cuda"``.
    precision : str, optional
        ``"auto"`` (bf16/fp16 autocast on CUDA, float32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``,
        or ``"int8"``: dynamic int8 quantisation of the encoder layers' ``Linear`` modules, on the CPU only
        (with ``device="auto"`` int8 runs on the CPU even where a GPU is present; ``device="cuda"`` raises
        :class:`ParameterError`). Part of the identity unless float32.
    batch_size : int, optional
        Clips per forward pass (default 8 on CPU, ``DEFAULT_CUDA_BATCH`` = 128 on CUDA).
    pooling : {"mean", "meanstd"}, optional
        ``"mean"`` (default): each layer's mean over the valid frames; ``"meanstd"``: the mean followed by the
        standard deviation (statistics pooling; ``dim`` doubles). Part of the identity when ``"meanstd"``.
    cache : path-like, optional
        Cache root for converted weights (default ``$SERTOOL_CACHE`` or ``~/.cache/sertool``).
    """

    name = "whisper"
    version = 1
    sr = SR
    parallel_processes = False

    def __init__(
        self,
        size: str = "base",
        *,
        weights: str | os.PathLike | None = None,
        mode: str = "trimmed",
        frame_layers: Sequence[int] | str | None = "auto",
        device: str = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        pooling: str = "mean",
        cache: str | os.PathLike | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ParameterError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        if weights is None and size not in BUILTIN_WEIGHTS:
            raise ParameterError(
                f"whisper-{size}: no offline weights for size {size!r} (offline: "
                f"{', '.join(BUILTIN_WEIGHTS)}); pass weights=<local folder or hub id>"
            )
        self.size = size
        self.name = f"whisper-{size}"  # type: ignore[misc]  (per-instance name: the registry pattern whisper-*)
        self.mode, self._window_s = _parse_mode(mode)
        check_device(device)
        _check_precision(precision)
        if precision == "int8":
            if device.startswith("cuda"):
                raise ParameterError(
                    f"precision='int8' runs on the CPU only (dynamic int8 quantisation has no CUDA kernels), "
                    f"got device={device!r}; use device='cpu' (or 'auto'), or precision 'auto'/'bfloat16'/"
                    "'float16' on the GPU"
                )
            device = "cpu"  # "auto" means the CPU for int8, also on a machine with a GPU
        self.device = device
        self.precision = precision
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.weights: ResolvedWeights = resolve(size if weights is None else weights, cache=cache)
        from transformers import WhisperConfig

        cfg = WhisperConfig.from_pretrained(str(self.weights.path))
        self._d_model = int(cfg.d_model)
        self._n_mels = int(cfg.num_mel_bins)
        self._max_positions = int(cfg.max_source_positions)
        self.n_layers = int(cfg.encoder_layers) + 1
        self.default_layers = DEFAULT_LAYERS.get(size) if weights is None else None
        if isinstance(frame_layers, str):
            if frame_layers not in ("auto", "all"):
                raise ParameterError(
                    f"frame_layers must be 'auto', 'all', None or layer indices, got {frame_layers!r}"
                )
            frame_layers = (
                (self.n_layers // 2 + 1,) if frame_layers == "auto" else tuple(range(self.n_layers))
            )
        if frame_layers is not None:
            frame_layers = tuple(int(i) for i in frame_layers)
            bad = [i for i in frame_layers if not 0 <= i < self.n_layers]
            if bad or not frame_layers:
                raise ParameterError(
                    f"frame_layers {list(frame_layers)}: layers must be in 0..{self.n_layers - 1}"
                )
        self.frame_layers: tuple[int, ...] | None = frame_layers
        self._encoder: Any = None
        self._device: Any = None
        self._bucket = 0
        self._mel_on_cpu = False

    # ---- identity
    def params(self) -> dict[str, Any]:
        """Size, weights label and hash, input mode, frame layers, and the arithmetic precision if not fp32.

        Half-precision GPU outputs differ from float32 ones by up to a few percent of a layer's range, so a
        bf16/fp16 run gets its own cache entry instead of silently mixing with float32 rows.
        """
        out: dict[str, Any] = {
            "size": self.size,
            **self.weights.identity(),
            "mode": self.mode,
            "frame_layers": list(self.frame_layers) if self.frame_layers else None,
        }
        precision = self.effective_precision()
        if precision != "float32":
            out["precision"] = precision
        if self.pooling != "mean":  # mean-pooled keys stay what they were
            out["pooling"] = self.pooling
        return out

    @property
    def entry_tag(self) -> str:
        """What a leaderboard entry name adds for this extractor's output (``~meanstd``; ``""`` for the mean)."""
        return "" if self.pooling == "mean" else f"~{self.pooling}"

    def frames_bytes(self, duration_s: Any) -> int:
        """Bytes the float16 ``"frames"`` of clips of these durations take in the cache (0 without frames):
        one frame per 20 ms (at most 30 s; ``padded30`` and ``window<S>`` store the clip's valid frames too),
        ``len(frame_layers) x d_model`` values each."""
        if not self.frame_layers:
            return 0
        seconds = np.minimum(np.asarray(duration_s, dtype=np.float64), N_SAMPLES / SR)
        frames = np.ceil(np.ceil(seconds * SR / HOP) / 2).sum()
        return int(frames * len(self.frame_layers) * self._d_model * 2)

    def decode_workers(self, jobs: int) -> int:
        """On CUDA, decode in ``jobs - 1`` processes (min 1, max 8): the GPU outruns one decoding thread
        (H100, whisper-base trimmed, in the removed ``extract_files`` pipeline: 2,350 clips/s end to end with
        8 decoding processes vs ~1,500 with threads; ``benchmarks/results/whisper_gpu.md``). On CPU the
        encoder is the bottleneck: 0."""
        if pick_device(self.device).type != "cuda":
            return 0
        return max(1, min(8, jobs - 1))

    def effective_precision(self) -> str:
        """``"float32"`` on CPU or when asked; on CUDA with ``"auto"``, bfloat16 where supported, else
        float16; ``"int8"`` when asked (always on the CPU)."""
        if self.precision != "auto":
            return self.precision
        device = pick_device(self.device)
        if device.type != "cuda":
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    @property
    def dim(self) -> int:
        """Width of one pooled layer: the encoder width (384 tiny, 512 base, ...), doubled by ``meanstd``."""
        return self._d_model * (2 if self.pooling == "meanstd" else 1)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the loaded model (it is reloaded lazily)."""
        state = self.__dict__.copy()
        state["_encoder"] = state["_device"] = None
        return state

    # ---- model
    def _load(self) -> Any:
        if self._encoder is None:
            self._device = pick_device(self.device)
            encoder = load_whisper_encoder(self.weights.path).to(self._device)
            self._encoder = quantize_int8(encoder) if self.precision == "int8" else encoder
            # Trimmed batches on a GPU are padded to whole seconds of mel frames: a GPU pays a warm-up per new
            # input shape (measured on RAVDESS: first pass 58 clips/s, second 812). Zero mel padding + key
            # masking leave the outputs unchanged. On CPU every padded frame costs time, so none is added.
            self._bucket = 100 if self._device.type == "cuda" else 0
            log.info("loaded %s encoder (%s) on %s", self.name, self.weights.source, self._device)
        return self._encoder

    def _frames_for(self, n: int) -> tuple[int, int]:
        """(mel frames fed to the encoder, valid encoder frames) for a clip of ``n`` samples."""
        max_mel = 2 * self._max_positions
        valid_mel = min(max(1, math.ceil(n / HOP)), max_mel)
        valid_enc = (valid_mel + 1) // 2
        if self.mode == "padded30":
            return max_mel, valid_enc
        if self.mode == "trimmed":
            return valid_mel + valid_mel % 2, valid_enc
        win_mel = min(max_mel, 2 * math.ceil(self._window_s * SR / HOP / 2))
        return win_mel, min(valid_enc, win_mel // 2)

    def encode(self, mel: Any, lengths: Any | None = None) -> Any:
        """Run the encoder and return every hidden state.

        Parameters
        ----------
        mel : torch.Tensor, shape (B, n_mels, T)
            Log-mel input, ``T`` even and at most ``2 * max_source_positions``; batch padding must be zeros.
        lengths : torch.Tensor of int, shape (B,), optional
            Valid encoder frames per clip; keys beyond them are masked out of attention (``None``: no mask).

        Returns
        -------
        list of torch.Tensor, each (B, T // 2, dim)
            ``n_layers`` states: embedding, layer outputs, last one after the final layer norm.
        """
        import torch
        import torch.nn.functional as F

        enc = self._load()
        if self.precision == "int8" and mel.shape[0] > 1:
            return self._encode_each(mel, lengths)
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        mask = None
        if lengths is not None and bool((lengths < x.shape[1]).any()):
            mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[:, None, None, :]
        states = [x]
        for layer in enc.layers:
            out = layer(x, mask)
            x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        states[-1] = enc.layer_norm(x)
        return states

    def _encode_each(self, mel: Any, lengths: Any | None) -> Any:
        """:meth:`encode` one clip at a time (int8: the dynamic activation scale is per call, so per clip).

        Clip ``b`` gets its own ``2 * lengths[b]`` mel frames (all ``T`` without ``lengths``); states past its
        valid frames are zeros.
        """
        import torch

        n_enc = mel.shape[-1] // 2
        valid = [n_enc] * mel.shape[0] if lengths is None else [min(int(k), n_enc) for k in lengths.tolist()]
        states: list[Any] = []
        for b, k in enumerate(valid):
            one = self.encode(mel[b : b + 1, :, : 2 * k])
            if not states:
                states = [torch.zeros((mel.shape[0], n_enc, h.shape[-1]), dtype=h.dtype) for h in one]
            for out, h in zip(states, one, strict=True):
                out[b, :k] = h[0]
        return states

    def _batch_mel(self, clips: Sequence[np.ndarray], n_frames: Sequence[int], t_in: int) -> Any:
        """Encoder input of one batch: (B, n_mels, t_in) float32 on the model's device, zeros past each clip.

        The log-mel is computed on the model's device (:func:`whisper_log_mel_batch`); only the raw audio
        crosses the bus (from pinned memory on CUDA). ``_mel_on_cpu = True`` restores the per-clip numpy
        path (kept for the benchmark's same-run comparison).
        """
        import torch

        dev = self._device
        if self._mel_on_cpu:
            mel = np.zeros((len(clips), self._n_mels, t_in), dtype=np.float32)
            for j, y in enumerate(clips):
                mel[j, :, : n_frames[j]] = whisper_log_mel(y, n_frames[j], n_mels=self._n_mels)
            return torch.from_numpy(mel).to(dev)
        n = [min(len(y), N_SAMPLES) for y in clips]
        buf = torch.empty((len(clips), max(n)), dtype=torch.float32, pin_memory=dev.type == "cuda")
        arr = buf.numpy()
        for j, y in enumerate(clips):
            arr[j, : n[j]] = y[: n[j]]
            arr[j, n[j] :] = 0.0
        mel = whisper_log_mel_batch(buf.to(dev, non_blocking=True), n, n_frames, n_mels=self._n_mels)
        if mel.shape[-1] < t_in:  # GPU length bucket: zero frames, masked out of attention
            mel = torch.nn.functional.pad(mel, (0, t_in - mel.shape[-1]))
        return mel

    # ---- extraction
    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Features of one clip: ``"pooled"`` (n_layers, dim) float32 [+ ``"frames"``]."""
        return self.extract_batch([y])[0]

    def extract_batch(self, signals: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Features of several clips, batched internally by length.

        Parameters
        ----------
        signals : sequence of np.ndarray, float32, shape (n_i,)
            16 kHz mono clips (any order; length-sorted input batches best).

        Returns
        -------
        list of dict
            Per clip, in input order: ``"pooled"`` float32 ``(n_layers, dim)`` and, with ``frame_layers``,
            ``"frames"`` float16 ``(n_selected_layers, T_i, dim)`` with ``T_i`` the clip's valid frames.
        """
        import torch

        for i, y in enumerate(signals):
            if np.ndim(y) != 1 or len(y) == 0:
                raise ParameterError(f"signal {i}: expected a non-empty 1-D array, got shape {np.shape(y)}")
            if len(y) > N_SAMPLES:
                log.warning("signal %d is %.1f s long: Whisper sees its first 30 s only", i, len(y) / SR)
        self._load()
        cuda = self._device.type == "cuda"
        bs = self.batch_size or (DEFAULT_CUDA_BATCH if cuda else 8)
        order = sorted(range(len(signals)), key=lambda i: len(signals[i]))
        results: list[dict[str, np.ndarray] | None] = [None] * len(signals)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            frames = [self._frames_for(len(signals[i])) for i in idx]
            t_in = max(f[0] for f in frames)
            if self.mode == "trimmed" and self._bucket:
                t_in = min(2 * self._max_positions, -(-t_in // self._bucket) * self._bucket)
            with torch.inference_mode():
                mel = self._batch_mel([signals[i] for i in idx], [f[0] for f in frames], t_in)
                valid = torch.tensor([f[1] for f in frames], device=self._device)
                masked = self.mode == "trimmed"
                with autocast_for(self._device, self.precision):
                    states = self.encode(mel, valid if masked else None)
                    means = [masked_mean(h, valid) for h in states]
                    if self.pooling == "meanstd":
                        means = [
                            torch.cat([m, masked_std(h, valid, m)], dim=-1)
                            for m, h in zip(means, states, strict=True)
                        ]
                    pooled = torch.stack(means, dim=1).cpu().numpy()
                    sel = None
                    if self.frame_layers:
                        t_valid = max(f[1] for f in frames)  # copy back the clips' frames, not the padding
                        sel = (
                            torch.stack([states[k][:, :t_valid] for k in self.frame_layers], dim=1)
                            .to(torch.float16)
                            .cpu()
                            .numpy()
                        )
            for j, i in enumerate(idx):
                out = {"pooled": np.ascontiguousarray(pooled[j], dtype=np.float32)}
                if sel is not None:
                    out["frames"] = np.ascontiguousarray(sel[j, :, : frames[j][1]])
                results[i] = out
        return [r for r in results if r is not None]


def quantize_int8(encoder: Any) -> Any:
    """``encoder`` (on the CPU) with every ``Linear`` dynamically quantised to int8, in place.

    :func:`torch.ao.quantization.quantize_dynamic` with ``dtype=torch.qint8`` and the default dynamic qconfig
    (per-tensor symmetric int8 weights; activations quantised per call with one scale per tensor), on the
    process's quantised engine (``torch.backends.quantized.engine``: ``x86`` / ``fbgemm`` on x86 CPUs). Its
    deprecation warnings (``torch.ao.quantization`` is to move to ``torchao``) are silenced here.

    Raises
    ------
    ParameterError
        This torch build has no dynamic quantisation (no quantised engine, or the API was removed).
    """
    import torch

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:  # pragma: no cover - a torch without torch.ao.quantization
        raise ParameterError(f"precision='int8' needs torch.ao.quantization.quantize_dynamic: {exc}") from exc
    if torch.backends.quantized.engine == "none":
        raise ParameterError("precision='int8': this torch build has no quantised CPU engine")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated")
        return quantize_dynamic(encoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


@register_extractor("whisper-*")
def _make_whisper(name: str, **params: Any) -> WhisperExtractor:
    """Factory for ``whisper-<size>`` (``whisper-base``, ``whisper-tiny.en``, ``whisper-small`` + weights=...)."""
    size = name.removeprefix("whisper-")
    if not size:
        raise ParameterError(f"extractor name {name!r}: expected whisper-<size>, e.g. whisper-base")
    return WhisperExtractor(size, **params)
