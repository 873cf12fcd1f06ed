"""Self-supervised speech encoders (HuBERT, wav2vec 2.0, WavLM, ...): layer-wise mean-pooled states (``ssl-<name>``).

Any Hugging Face speech encoder that ``transformers.AutoModel`` loads from raw 16 kHz audio works: a local folder
or a hub id (``model=...``; hub ids need internet, once, into the Hugging Face cache). A few well-known names
resolve to hub ids by themselves (:data:`KNOWN_MODELS`), e.g. ``ssl-wavlm-base-plus``.

Output ``"pooled"``: shape ``(n_layers, dim)`` float32, ``n_layers = num_hidden_layers + 1`` (the
``output_hidden_states`` convention: index 0 is the CNN feature projection + positional convolution input,
the last is the top layer), each the mean over the clip's valid frames (``_conv_output_length`` of the
clip's samples; padding is never pooled). Optional ``"frames"`` (``frame_layers``) float16
``(n_selected_layers, T, dim)``.

Input: the model's own feature extractor (``preprocessor_config.json``; zero-mean / unit-variance per clip when
``do_normalize``). Batching never changes a clip's output: models trained with attention masks
(``feat_extract_norm == "layer"`` and ``return_attention_mask``, e.g. wav2vec2-large-lv60, WavLM, HuBERT-large)
are batched with padding and a mask; the others (group-norm CNN, e.g. wav2vec2-base, HuBERT-base), whose
output would change with zero padding, run one clip at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sertool.exceptions import ParameterError
from sertool.features.base import Extractor, register_extractor
from sertool.features.weights import folder_sha256
from sertool.features.whisper import autocast_for, masked_mean, pick_device
from sertool.util import check_device

__all__ = ["KNOWN_MODELS", "SSLExtractor"]

log = logging.getLogger(__name__)

#: ``ssl-<name>`` -> hub id used when no ``model=`` is given (needs internet the first time).
KNOWN_MODELS: dict[str, str] = {
    "hubert-base": "facebook/hubert-base-ls960",
    "hubert-large": "facebook/hubert-large-ll60k",
    "wav2vec2-base": "facebook/wav2vec2-base",
    "wav2vec2-large-robust": "facebook/wav2vec2-large-robust",
    "wav2vec2-large-lv60": "facebook/wav2vec2-large-lv60",
    "wavlm-base-plus": "microsoft/wavlm-base-plus",
    "wavlm-large": "microsoft/wavlm-large",
}


def _local_folder(model: str | os.PathLike) -> tuple[Path, str]:
    """(local folder, identity label) of a model folder or hub id."""
    path = Path(str(model)).expanduser()
    if path.is_dir():
        return path.resolve(), "local"
    text = str(model)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ParameterError(f"SSL model folder {text!r} does not exist")
    try:  # pragma: no cover - needs internet (or a warm Hugging Face cache)
        from huggingface_hub import snapshot_download

        folder = snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "pytorch_model*.bin"])
    except Exception as exc:  # pragma: no cover
        raise ParameterError(f"SSL model {text!r}: not a local folder and not downloadable ({exc})") from None
    return Path(folder), f"hub:{text}"  # pragma: no cover


def _conv_output_length(n: Any, kernels: Sequence[int], strides: Sequence[int]) -> Any:
    """Frames the CNN feature encoder makes of ``n`` samples (valid convolutions)."""
    for k, s in zip(kernels, strides, strict=True):
        n = (n - k) // s + 1
    return n


class SSLExtractor(Extractor):
    """Layer-wise mean-pooled hidden states of a Hugging Face speech encoder (see the module docstring).

    Parameters
    ----------
    name : str
        Label after ``ssl-`` (a :data:`KNOWN_MODELS` key, or any label when ``model`` is given).
    model : str or path-like, optional
        Local folder or hub id (default: ``KNOWN_MODELS[name]``).
    frame_layers : sequence of int, optional
        Layers whose frame sequences are returned as ``"frames"`` (float16).
    device : str, optional
        ``"auto"`` (default), ``"cpu"``, ``"cuda"``.
    precision : str, optional
        ``"auto"`` (bf16/fp16 autocast on CUDA, float32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    batch_size : int, optional
        Clips per forward pass for mask-trained models (default 8 on CPU, 32 on CUDA).
    """

    name = "ssl"
    version = 1
    sr = 16000
    parallel_processes = False

    def __init__(
        self,
        name: str,
        *,
        model: str | os.PathLike | None = None,
        frame_layers: Sequence[int] | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
    ) -> None:
        if model is None:
            if name not in KNOWN_MODELS:
                raise ParameterError(
                    f"ssl-{name}: unknown model name (known: {', '.join(sorted(KNOWN_MODELS))}); "
                    "pass model=<local folder or hub id>"
                )
            model = KNOWN_MODELS[name]
        check_device(device)
        if precision not in ("auto", "float32", "bfloat16", "float16"):
            raise ParameterError(f"precision must be auto, float32, bfloat16 or float16, got {precision!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.label = name
        self.name = f"ssl-{name}"  # type: ignore[misc]  (per-instance name: the registry pattern ssl-*)
        self.device, self.precision, self.batch_size = device, precision, batch_size
        self.folder, self.source = _local_folder(model)
        self.sha256 = folder_sha256(self.folder)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(self.folder))
        if not hasattr(cfg, "conv_kernel") or not hasattr(cfg, "num_hidden_layers"):
            raise ParameterError(f"{self.folder}: {cfg.model_type!r} is not a raw-waveform speech encoder")
        self._kernels, self._strides = tuple(cfg.conv_kernel), tuple(cfg.conv_stride)
        self._dim = int(cfg.hidden_size)
        self.n_layers = int(cfg.num_hidden_layers) + 1
        self._feature_extractor = self._load_feature_extractor()
        self._batchable = getattr(cfg, "feat_extract_norm", "group") == "layer" and bool(
            getattr(self._feature_extractor, "return_attention_mask", False)
        )
        if frame_layers is not None:
            frame_layers = tuple(int(i) for i in frame_layers)
            if not frame_layers or any(not 0 <= i < self.n_layers for i in frame_layers):
                raise ParameterError(
                    f"frame_layers {list(frame_layers)}: layers must be in 0..{self.n_layers - 1}"
                )
        self.frame_layers: tuple[int, ...] | None = frame_layers
        self._model: Any = None
        self._device: Any = None

    def _load_feature_extractor(self) -> Any:
        from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

        if (self.folder / "preprocessor_config.json").is_file():
            return AutoFeatureExtractor.from_pretrained(str(self.folder))
        log.warning("%s: no preprocessor_config.json; using Wav2Vec2FeatureExtractor defaults", self.folder)
        return Wav2Vec2FeatureExtractor()

    # ---- identity
    def params(self) -> dict[str, Any]:
        """Model label, weights hash, input normalisation, frame layers."""
        return {
            "model": self.source,
            "weights_sha256": self.sha256[:16],
            "normalize": bool(getattr(self._feature_extractor, "do_normalize", False)),
            "frame_layers": list(self.frame_layers) if self.frame_layers else None,
        }

    @property
    def dim(self) -> int:
        """Hidden size."""
        return self._dim

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the loaded model (it is reloaded lazily)."""
        state = self.__dict__.copy()
        state["_model"] = state["_device"] = None
        return state

    def _load(self) -> Any:
        if self._model is None:
            from transformers import AutoModel

            self._device = pick_device(self.device)
            self._model = AutoModel.from_pretrained(str(self.folder)).eval().to(self._device)
            log.info("loaded %s (%s) on %s", self.name, self.source, self._device)
        return self._model

    # ---- extraction
    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Features of one clip: ``"pooled"`` (n_layers, dim) float32 [+ ``"frames"``]."""
        return self.extract_batch([y])[0]

    def extract_batch(self, signals: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Features of several clips (batched with masks where the model allows, else one by one).

        Parameters
        ----------
        signals : sequence of np.ndarray, float32, shape (n_i,)
            16 kHz mono clips.

        Returns
        -------
        list of dict
            Per clip, in input order: ``"pooled"`` float32 ``(n_layers, dim)`` and, with ``frame_layers``,
            ``"frames"`` float16 ``(n_selected_layers, T_i, dim)``.
        """
        import torch

        need = 1  # samples for one output frame (the CNN's receptive field); shorter clips are zero-padded
        for k, s in zip(reversed(self._kernels), reversed(self._strides), strict=True):
            need = (need - 1) * s + k
        clips = []
        for i, y in enumerate(signals):
            if np.ndim(y) != 1 or len(y) == 0:
                raise ParameterError(f"signal {i}: expected a non-empty 1-D array, got shape {np.shape(y)}")
            y = np.asarray(y, dtype=np.float32)
            clips.append(np.pad(y, (0, need - len(y))) if len(y) < need else y)
        model = self._load()
        bs = (self.batch_size or (32 if self._device.type == "cuda" else 8)) if self._batchable else 1
        order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
        results: list[dict[str, np.ndarray] | None] = [None] * len(clips)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            batch = self._feature_extractor(
                [clips[i] for i in idx],
                sampling_rate=self.sr,
                padding=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            values = batch["input_values"].to(self._device)
            lengths = torch.tensor([len(clips[i]) for i in idx])
            valid = _conv_output_length(lengths, self._kernels, self._strides).to(self._device)
            mask = batch["attention_mask"].to(self._device) if self._batchable and len(idx) > 1 else None
            with torch.inference_mode(), autocast_for(self._device, self.precision):
                states = model(values, attention_mask=mask, output_hidden_states=True).hidden_states
                pooled = torch.stack([masked_mean(h, valid) for h in states], dim=1).cpu().numpy()
                sel = None
                if self.frame_layers:
                    sel = torch.stack([states[k] for k in self.frame_layers], dim=1).to(torch.float16).cpu()
            for j, i in enumerate(idx):
                out = {"pooled": np.ascontiguousarray(pooled[j], dtype=np.float32)}
                if sel is not None:
                    out["frames"] = np.ascontiguousarray(sel[j, :, : int(valid[j])].numpy())
                results[i] = out
        return [r for r in results if r is not None]


@register_extractor("ssl-*")
def _make_ssl(name: str, **params: Any) -> SSLExtractor:
    """Factory for ``ssl-<name>`` (``ssl-wavlm-base-plus``, ``ssl-mymodel`` + ``model=PATH``)."""
    label = name.removeprefix("ssl-")
    if not label:
        raise ParameterError(f"extractor name {name!r}: expected ssl-<name>, e.g. ssl-wavlm-base-plus")
    return SSLExtractor(label, **params)
