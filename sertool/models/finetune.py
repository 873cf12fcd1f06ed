"""Fine-tuning the top of the Whisper encoder under the benchmark's splits (``whisper_ft``).

:class:`WhisperFineTune` is a frame head whose first part is a copy of the pretrained Whisper encoder's
layers *above* the layer its input frames come from, followed by the encoder's final layer norm and the
attentive pooling head of ``attn_pool``. The layers below are not recomputed: their output is what the
feature cache already holds (``whisper-tiny.en@2`` frames are the output of layer 2, cached with
``frame_layers`` including 2), so one epoch costs the top layers only, and the encoder part is exact up to
the float16 in which frames are cached. What trains in the copied layers (``tune``):

``"lora"`` (default)
    Low-rank adapters (``peft``'s LoRA, rank ``lora_r``, scale ``lora_alpha / lora_r``) on every attention
    projection (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) and on the feed-forward layers (``fc1``,
    ``fc2``); the pretrained weights stay frozen. LoRA's ``B`` matrices start at zero, so before the first
    step the network computes exactly the pretrained encoder.
``"full"``
    Every weight of the copied layers and of the final layer norm, at ``lr * encoder_lr_scale``.
``"frozen"``
    Nothing in the copied layers: the same network as a frozen probe, the control that fine-tuning is
    compared with on the same folds.

The head (pooling and classifier) always trains, at ``lr``. Early stopping on the fold's validation part
(never its test part) as for every head; ``refit`` is off by default (a second fine-tuning run on training
+ validation data doubles the cost).

Which layer the frames come from is not visible in the frames (every layer has the same width), so it is not
left to the user to repeat: the model's registry entry derives ``size`` and ``from_layer`` from the feature
view it is given (:attr:`~sertool.models.registry.ModelSpec.view_params`), and refuses a view that is not
one layer of a built-in Whisper encoder. Standalone, pass them yourself.

Cost on the 2-core CPU (``benchmarks/whisper_ft.toml``; tiny.en, frames of layer 2, two layers tuned):
see the definition's header for the measured wall time. The GPU schedule for whisper-base is there too.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sertool.exceptions import ParameterError
from sertool.models.neural import _AttnPoolBody, _check_common, _is_dropout, _is_int, _is_sizes
from sertool.models.torch_base import TorchClassifier

__all__ = ["TUNE_MODES", "VARIANTS", "WhisperFineTune", "whisper_view_params"]

log = logging.getLogger(__name__)

#: What trains in the copied encoder layers.
TUNE_MODES: tuple[str, ...] = ("lora", "full", "frozen")
#: The Linear modules of a Whisper encoder layer that get LoRA adapters.
LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@functools.lru_cache(maxsize=2)
def _pretrained(weights: str) -> Any:
    """The pretrained encoder (CPU, float32, eval), loaded once per process; callers copy what they train."""
    from sertool.features.weights import load_whisper_encoder, resolve

    return load_whisper_encoder(resolve(weights).path)


class _TopEncoder(nn.Module):
    """Encoder layers above the input frames -> final layer norm -> pooling head; with ``weighted`` the head
    reads a learned softmax-weighted sum of the input and every copied layer's output, each layer-normalised
    without parameters first (s3prl's featurizer), instead of the last output alone."""

    def __init__(self, layers: nn.ModuleList, norm: nn.Module, head: nn.Module, *, weighted: bool) -> None:
        super().__init__()
        self.layers = layers
        self.norm = norm
        self.head = head
        self.layer_logits = nn.Parameter(torch.zeros(len(layers) + 1)) if weighted else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn = mask[:, None, None, :]  # keys beyond a clip's frames are masked out of attention
        states = [x]
        for layer in self.layers:
            out = layer(x, attn)
            x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        last = self.norm(x)
        if self.layer_logits is None:
            return self.head(last, mask)
        states[-1] = last
        w = torch.softmax(self.layer_logits, dim=0)
        h = sum(wi * F.layer_norm(s, s.shape[-1:]) for wi, s in zip(w, states, strict=True))
        return self.head(h, mask)


class WhisperFineTune(TorchClassifier):
    """Whisper encoder layers above the cached frames, fine-tuned with an attentive pooling head.

    Parameters
    ----------
    size : str
        The Whisper size of the view (``whisper-<size>``): the built-in weights ``"tiny.en"`` or ``"base"``.
        Derived from the view by the runner and ``sertool train``.
    weights : str or path-like, optional
        The encoder weights when the frames' extractor was given ``weights=`` (a folder or name
        :func:`sertool.features.weights.resolve` accepts); ``None``: the built-in ``size``. They must be the
        weights the frames were computed with.
    from_layer : int
        The encoder layer the input frames are the output of (0: the embeddings; the last layer's output,
        after the final layer norm, leaves nothing to tune and is refused). Derived from the view by the
        benchmark runner and ``sertool train``.
    tune : {"lora", "full", "frozen"}
        What trains in the copied layers (module docstring).
    lora_r, lora_alpha : int, float
        LoRA rank and scale numerator (``tune="lora"``).
    lora_dropout : float
        Dropout on the LoRA branch's input (default 0: on the 2-core CPU 0.1 made an epoch ~35% slower).
    encoder_lr_scale : float
        Learning rate of the copied layers relative to ``lr`` (``tune="full"``).
    weighted_layers : bool
        ``False`` (default): the head reads the last layer's output. ``True``: a learned softmax weighting of
        the input frames and every copied layer's output (each layer-normalised without parameters; the SUPERB
        weighted sum, uniform start), so the head starts from the input layer as much as from the top; the
        weights are ``layer_weights_`` (input layer first).
    n_heads, attn_hidden, proj_dim, hidden, dropout
        The attentive pooling head (see :class:`sertool.models.neural.AttnPoolClassifier`).
    max_epochs, batch_size, lr, lr_decay, weight_decay, optimizer, max_grad_norm, patience, monitor, refit,
    class_weight, bucket_by_length, frame_pool, device, seed, n_threads, deterministic
        See :class:`sertool.models.neural.MLPHead` and the frame heads. Frames are not standardised: the
        encoder layers read them on the scale they were trained on. ``frame_pool > 1`` averages frames before
        the copied layers (faster, but they then see a frame rate they were not trained on).
    """

    _input_kind = "frames"

    def __init__(
        self,
        *,
        size: str = "tiny.en",
        weights: str | None = None,
        from_layer: int = 2,
        tune: str = "lora",
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        encoder_lr_scale: float = 0.1,
        weighted_layers: bool = False,
        n_heads: int = 4,
        attn_hidden: int = 128,
        proj_dim: int = 256,
        hidden: tuple[int, ...] = (128,),
        dropout: float = 0.3,
        max_epochs: int = 15,
        batch_size: int = 16,
        lr: float = 5e-4,
        lr_decay: float = 0.95,
        weight_decay: float = 1e-2,
        optimizer: str = "adamw",
        max_grad_norm: float | None = 5.0,
        patience: int | None = 4,
        monitor: str = "ua",
        refit: bool = False,
        class_weight: str | dict | None = None,
        bucket_by_length: bool = True,
        frame_pool: int = 1,
        device: str = "auto",
        seed: int = 0,
        n_threads: int | None = None,
        deterministic: bool = True,
    ) -> None:
        self.size = size
        self.weights = weights
        self.from_layer = from_layer
        self.tune = tune
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.encoder_lr_scale = encoder_lr_scale
        self.weighted_layers = weighted_layers
        self.n_heads = n_heads
        self.attn_hidden = attn_hidden
        self.proj_dim = proj_dim
        self.hidden = hidden
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.patience = patience
        self.monitor = monitor
        self.refit = refit
        self.class_weight = class_weight
        self.bucket_by_length = bucket_by_length
        self.frame_pool = frame_pool
        self.device = device
        self.seed = seed
        self.n_threads = n_threads
        self.deterministic = deterministic

    # standardisation would move the frames off the scale the pretrained layers expect
    standardize = False

    def _check_head_params(self) -> None:
        _check_common(
            self,
            size=(isinstance(self.size, str) and bool(self.size), "expected a Whisper size"),
            weights=(
                self.weights is None or bool(str(self.weights)),
                "expected None or a weights folder / name",
            ),
            from_layer=(_is_int(self.from_layer, 0), "expected the index of an encoder layer (>= 0)"),
            tune=(self.tune in TUNE_MODES, f"expected one of {', '.join(TUNE_MODES)}"),
            lora_r=(_is_int(self.lora_r), "expected a positive integer"),
            lora_alpha=(isinstance(self.lora_alpha, int | float) and self.lora_alpha > 0, "expected > 0"),
            lora_dropout=(_is_dropout(self.lora_dropout), "expected 0 <= lora_dropout < 1"),
            weighted_layers=(isinstance(self.weighted_layers, bool), "expected True or False"),
            encoder_lr_scale=(
                isinstance(self.encoder_lr_scale, int | float) and self.encoder_lr_scale > 0,
                "expected > 0",
            ),
            n_heads=(_is_int(self.n_heads), "expected a positive integer"),
            attn_hidden=(_is_int(self.attn_hidden), "expected a positive integer"),
            proj_dim=(_is_int(self.proj_dim), "expected a positive integer"),
            hidden=(_is_sizes(self.hidden), "expected a tuple of positive integers"),
            dropout=(_is_dropout(self.dropout), "expected 0 <= dropout < 1"),
        )

    def _standardizer(self, data: Any, n_features: int) -> nn.Module:
        return nn.Identity()

    def _build_body(self, n_features: int, n_classes: int) -> nn.Module:
        encoder = _pretrained(str(self.size if self.weights is None else self.weights))
        n_layers = len(encoder.layers)  # states 0..n_layers: embeddings, then one per layer
        d_model = int(encoder.config.d_model)
        if n_features != d_model:
            raise ParameterError(
                f"whisper_ft: frames of width {n_features}, but the whisper-{self.size} encoder's layers are "
                f"{d_model} wide: give it frames of one layer of that encoder (e.g. whisper-{self.size}@2)"
            )
        if self.from_layer >= n_layers:
            raise ParameterError(
                f"whisper_ft: from_layer={self.from_layer} is whisper-{self.size}'s output (its layers are "
                f"0..{n_layers}, the last after the final layer norm): nothing above it to fine-tune; read the "
                f"frames of a lower layer, e.g. whisper-{self.size}@{max(0, n_layers - 2)}"
            )
        layers = copy.deepcopy(encoder.layers[self.from_layer :])
        norm = copy.deepcopy(encoder.layer_norm)
        for p in [*layers.parameters(), *norm.parameters()]:
            p.requires_grad_(self.tune == "full")
        if self.tune == "lora":
            try:
                from peft import LoraConfig, inject_adapter_in_model
            except ImportError as exc:
                raise ParameterError(
                    f"whisper_ft: tune='lora' needs peft ({exc}): pip install 'sertool[finetune]', or use "
                    "tune='full' / 'frozen'"
                ) from None

            config = LoraConfig(
                r=int(self.lora_r),
                lora_alpha=float(self.lora_alpha),
                lora_dropout=float(self.lora_dropout),
                target_modules=list(LORA_TARGETS),
                bias="none",
            )
            layers = inject_adapter_in_model(config, layers)
            for name, p in layers.named_parameters():
                p.requires_grad_("lora_" in name)
        head = _AttnPoolBody(
            d_model,
            self.n_heads,
            self.attn_hidden,
            self.proj_dim,
            tuple(self.hidden),
            self.dropout,
            n_classes,
        )
        return _TopEncoder(layers, norm, head, weighted=bool(self.weighted_layers))

    def _param_groups(self, module: nn.Module) -> list[dict[str, Any]]:
        """The head at ``lr``; the copied layers' trainable weights at ``lr * encoder_lr_scale`` when the
        whole layers train (LoRA adapters are new weights and train at ``lr``)."""
        body = module.body
        head = [p for p in module.parameters() if p.requires_grad and not _in(p, body.layers, body.norm)]
        enc = [p for p in [*body.layers.parameters(), *body.norm.parameters()] if p.requires_grad]
        scale = float(self.encoder_lr_scale) if self.tune == "full" else 1.0
        groups = [{"params": head}]
        if enc:
            groups.append({"params": enc, "lr": self.lr * scale})
        return groups

    @property
    def layer_weights_(self) -> np.ndarray | None:
        """The learned layer weights (``weighted_layers=True``: the input layer, then each copied layer), else
        None."""
        logits = getattr(getattr(getattr(self, "module_", None), "body", None), "layer_logits", None)
        if logits is None:
            return None
        return torch.softmax(logits.detach().cpu(), dim=0).numpy().astype(np.float64)

    @property
    def n_trainable_(self) -> int:
        """Trainable parameters of the fitted network (adapters + head for LoRA)."""
        return int(sum(p.numel() for p in self.module_.parameters() if p.requires_grad))


def _in(p: nn.Parameter, *modules: nn.Module) -> bool:
    return any(p is q for m in modules for q in m.parameters())


def whisper_view_params(view: str) -> dict[str, Any]:
    """``size`` and ``from_layer`` of :class:`WhisperFineTune` for a feature view (``whisper-tiny.en@2``).

    Raises
    ------
    ParameterError
        The view is not exactly one layer of a Whisper extractor (fused views, several layers, other
        extractors, no layer named).
    """
    from sertool.features.store import parse_view

    base = view.split("~", 1)[0]
    parsed = parse_view(base)
    name = parsed.extractor
    layers = getattr(parsed, "layers", None)
    if not name.startswith("whisper-") or "+" in base or not layers or len(layers) != 1:
        raise ParameterError(
            f"whisper_ft reads the frames of one Whisper encoder layer, e.g. whisper-tiny.en@2; got view {view!r}"
        )
    return {"size": name.removeprefix("whisper-"), "from_layer": int(layers[0])}


#: Registered names: the model and its two controls (the same network, other parts trained).
VARIANTS: dict[str, tuple[str, str]] = {
    "whisper_ft": ("lora", "LoRA adapters in the Whisper layers above the cached frames + attentive pooling"),
    "whisper_ft_full": (
        "full",
        "the Whisper layers above the cached frames fully fine-tuned + attentive pooling",
    ),
    "whisper_ft_frozen": (
        "frozen",
        "the same network with the Whisper layers frozen (the probe to compare with)",
    ),
}


def _register() -> None:
    from sertool.models.registry import MODELS, ModelSpec, register_model

    for name, (tune, description) in VARIANTS.items():
        if name in MODELS:
            continue  # module re-imported
        register_model(
            ModelSpec(
                name=name,
                family="neural",
                factory=functools.partial(WhisperFineTune, tune=tune),
                input="frames",
                sample_weight=True,
                gpu=True,
                description=description,
                features=(),  # costly: runs only when named (never in --models all / neural)
                view_params=whisper_view_params,
            )
        )


_register()
