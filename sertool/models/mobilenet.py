"""MobileNetV2 over 1-second spectrogram blocks (registry name ``mobilenet_spec``).

The combined-corpus SER study fed the STFT magnitudes of 1-second blocks of each clip, as images, to a
MobileNetV2. torchvision is not a dependency, so :class:`MobileNetV2` is written here in plain torch,
following Sandler et al. (2018) and torchvision's layout: a 3x3 stride-2 stem, 17 inverted residual blocks
(1x1 expansion by ``t`` -> depthwise 3x3 -> linear 1x1 bottleneck, BatchNorm after every conv, ReLU6 after
the first two, a residual connection when the shape is kept) from the ``(t, c, n, s)`` table
:data:`INVERTED_RESIDUAL_SETTING`, a 1x1 conv to 1280 channels, global average pooling, dropout and a linear
classifier. Widths are scaled by ``width_mult`` and rounded to multiples of 8 (the last conv keeps 1280
channels for ``width_mult <= 1``). The module and parameter names match torchvision's ``mobilenet_v2``, so
its ``state_dict`` (saved with ``safetensors``) loads as pretrained ``weights``: with ``width_mult=1.0``
everything but the classifier fits, and the RGB stem is summed over its colour channels (exactly what the
network computes on a grey image repeated in R, G and B).

The head (:class:`MobileNetSpecClassifier`) reads ``"frames"`` of the ``spectrogram`` extractor, shape
``(T, n_bins)`` at 100 frames per second. Each clip is cut from its start into blocks of ``block_frames``
frames (default 100 = 1 s); the last, partial block is zero-padded (padding is zero after standardisation).
Every block is one ``(1, n_bins, block_frames)`` image; blocks that hold only batch padding are not run at
all, so neither the batch-norm statistics nor a clip's output depend on the other clips in its batch. The
clip's logits are the mean of its blocks' logits weighted by their number of valid frames (a 0.1 s tail block
counts a tenth of a full one); a clip shorter than one block is one zero-padded block.

Defaults are sized for a 2-core CPU (``width_mult=0.5``: 0.70 M parameters for 7 classes, versus 2.2 M at
1.0); see :class:`MobileNetSpecClassifier`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from sertool.exceptions import ParameterError
from sertool.models.torch_base import TorchClassifier, _torch_context

__all__ = [
    "INVERTED_RESIDUAL_SETTING",
    "InvertedResidual",
    "MobileNetSpecClassifier",
    "MobileNetV2",
    "load_pretrained",
]

log = logging.getLogger(__name__)

#: MobileNetV2's body (Sandler et al. 2018, table 2): expansion t, channels c, repeats n, first stride s.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (>= ``divisor``), never more than 10 % down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn_relu6(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """``Conv2d (no bias) -> BatchNorm2d -> ReLU6``, "same" padding (torchvision: Conv2dNormActivation)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (if ``expand_ratio > 1``) -> depthwise 3x3 -> linear 1x1 bottleneck.

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    stride : {1, 2}
        Stride of the depthwise convolution.
    expand_ratio : int
        Hidden channels are ``round(c_in * expand_ratio)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(c_in * expand_ratio)
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(c_in, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, c_out, 1, 1, 0, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (plain torch; module names as in torchvision, so its state dicts load).

    Parameters
    ----------
    num_classes : int
        Output logits.
    in_channels : int
        Image channels (1 for spectrograms; 3 reproduces the ImageNet network: 3,504,872 parameters at
        ``width_mult=1.0`` with 1000 classes).
    width_mult : float
        Channel multiplier of every layer (rounded to multiples of 8; the last conv keeps 1280 channels for
        ``width_mult <= 1``).
    dropout : float
        Dropout before the classifier.

    Notes
    -----
    Input ``(N, in_channels, H, W)``; the network downsamples by 32 (ceil), so any ``H, W >= 1`` work.
    """

    def __init__(
        self, num_classes: int = 1000, *, in_channels: int = 3, width_mult: float = 1.0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        c_in = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(in_channels, c_in, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            c_out = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        features.append(_conv_bn_relu6(c_in, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.classifier(h.mean(dim=(2, 3)))


def load_pretrained(net: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Load a safetensors state dict into ``net`` where names and shapes fit (``strict=False``).

    Tensors whose shape does not fit are skipped (typically the classifier, and the stem for another width),
    except an RGB stem for a 1-channel network with the same number of filters, which is summed over its
    input channels.

    Parameters
    ----------
    net : torch.nn.Module
        The network (e.g. :class:`MobileNetV2`); changed in place.
    path : str or path-like
        A ``.safetensors`` state dict with the same parameter names (torchvision's ``mobilenet_v2``).

    Returns
    -------
    dict
        ``loaded``, ``adapted`` (stem summed over RGB), ``skipped`` (shape mismatch), ``unexpected`` (not in
        ``net``) and ``missing`` (in ``net``, not in the file) tensor names.

    Raises
    ------
    ParameterError
        The file does not exist or cannot be read, or nothing in it fits ``net``.
    """
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise ParameterError(f"weights={str(path)!r}: no such file")
    try:
        state = load_file(os.fspath(path))
    except Exception as exc:
        raise ParameterError(f"weights={str(path)!r}: not a readable safetensors file ({exc})") from None
    own = net.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "adapted": [], "skipped": [], "unexpected": []}
    usable: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name not in own:
            report["unexpected"].append(name)
        elif tensor.shape == own[name].shape:
            usable[name] = tensor
            report["loaded"].append(name)
        elif (
            tensor.ndim == 4
            and own[name].ndim == 4
            and own[name].shape[1] == 1
            and tensor.shape[0] == own[name].shape[0]
            and tensor.shape[2:] == own[name].shape[2:]
        ):
            usable[name] = tensor.sum(dim=1, keepdim=True)
            report["adapted"].append(name)
        else:
            report["skipped"].append(name)
    if not usable:
        raise ParameterError(
            f"weights={str(path)!r}: no tensor fits the network (names or shapes differ; "
            f"{len(report['unexpected'])} unexpected, {len(report['skipped'])} of another shape)"
        )
    result = net.load_state_dict(usable, strict=False)
    report["missing"] = list(result.missing_keys)
    log.info(
        "weights %s: loaded %d tensors, adapted %s, skipped (shape) %s, unexpected %d, left random %s",
        path,
        len(report["loaded"]),
        report["adapted"] or "none",
        report["skipped"] or "none",
        len(report["unexpected"]),
        report["missing"] or "none",
    )
    return report


class _MobileNetSpecBody(nn.Module):
    """``(B, T, F)`` frames + mask ``(B, T)`` -> ``(B, k)``: 1 s blocks through MobileNetV2, weighted mean."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        block_frames: int,
        width_mult: float,
        dropout: float,
        weights: str | os.PathLike | None,
    ) -> None:
        super().__init__()
        self.block_frames = block_frames
        self.net = MobileNetV2(n_classes, in_channels=1, width_mult=width_mult, dropout=dropout)
        if weights is not None:
            load_pretrained(self.net, weights)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, f = x.shape
        L = self.block_frames
        n_blocks = -(-t // L)
        pad = n_blocks * L - t
        if pad:
            x = nn.functional.pad(x, (0, 0, 0, pad))
            mask = nn.functional.pad(mask, (0, pad), value=False)
        counts = (
            mask.reshape(b, n_blocks, L).sum(dim=2).reshape(-1)
        )  # valid frames per block, (B * n_blocks,)
        keep = (counts > 0).nonzero(as_tuple=True)[0]
        imgs = x.reshape(b * n_blocks, L, f)[keep].transpose(1, 2).unsqueeze(1)  # (N, 1, F, L)
        block_logits = self.net(imgs)
        logits = block_logits.new_zeros((b * n_blocks, block_logits.shape[1]))
        logits[keep] = block_logits
        w = counts.to(logits.dtype).reshape(b, n_blocks, 1)
        return (logits.reshape(b, n_blocks, -1) * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


class MobileNetSpecClassifier(TorchClassifier):
    """MobileNetV2 on 1 s spectrogram blocks, block logits averaged per clip (``mobilenet_spec``).

    Parameters
    ----------
    block_frames : int
        Frames per block (default 100: 1 s of ``spectrogram`` frames at 100 frames/s). Each block is an
        image of ``F x block_frames`` (``F = n_bins``, 128 by default).
    width_mult : float
        MobileNetV2 width multiplier (default 0.5, for a CPU; 1.0 is the original network).
    dropout : float
        Dropout before the classifier.
    weights : str or path-like, optional
        A safetensors state dict (torchvision ``mobilenet_v2`` names) to start from; tensors that do not fit
        (classifier, stem of another width) stay randomly initialised, an RGB stem is summed to one channel
        (:func:`load_pretrained`). Read whenever a network is built for training. ``None`` (default): trained
        from scratch. Nothing is ever downloaded.
    max_epochs, batch_size, lr, lr_decay, weight_decay, optimizer, max_grad_norm, patience, monitor,
    class_weight, standardize, device, seed, n_threads, deterministic
        See :class:`sertool.models.neural.MLPHead`. ``batch_size`` counts clips (each is several blocks).
    refit : bool
        See :mod:`sertool.models.torch_base`.
    bucket_by_length : bool
        Build training batches from clips of similar length (batch order shuffled).
    precise_bn : bool
        Recompute the batch-norm running statistics for the current weights before each validation and at the
        end of training (see Notes). Default True.

    Notes
    -----
    ``X``: ``spectrogram`` frames, (n, T, F) or a list of (T_i, F). Standardisation is per frequency bin over
    all valid training frames.

    Precise batch norm: MobileNetV2 has 52 batch-norm layers, whose running statistics (momentum 0.1) trail
    the weights while they change. With few optimiser steps the evaluation-mode network then disagrees with
    the trained one: on a trivially separable 2-class toy (40 clips of 64 bins, 4 epochs of 5 steps) it
    predicted a single class (held-out UA 0.5, 3 seeds of 3); with ``precise_bn``, UA 1.0 (3 of 3). With
    ``precise_bn`` the statistics are re-estimated, without gradients and in batch-norm training mode (dropout
    off), as the plain average over batches of up to 1024 training clips (evenly spaced, in order,
    ``batch_size`` clips per batch): before every validation pass (so the validation UA and the restored best
    epoch describe the network that is kept) and after training without validation data. It costs one forward
    pass over those clips (about a third of an epoch) per epoch.

    Defaults (at most 30 epochs, patience 6, AdamW lr 1e-3, weight decay 1e-2, batch 32 clips) follow the
    other frame heads and are not tuned. Cost: one epoch took ~0.24 s per 3.2 s clip on one CPU thread of
    the shared 2-core machine (~4 min per epoch for 1000 clips), so full runs want a GPU.
    """

    _input_kind = "frames"
    _predict_batch_size = 64  # clips; each is ~3-5 block images

    def __init__(
        self,
        *,
        block_frames: int = 100,
        width_mult: float = 0.5,
        dropout: float = 0.2,
        weights: str | os.PathLike | None = None,
        max_epochs: int = 30,
        batch_size: int = 32,
        lr: float = 1e-3,
        lr_decay: float = 0.98,
        weight_decay: float = 1e-2,
        optimizer: str = "adamw",
        max_grad_norm: float | None = 5.0,
        patience: int | None = 6,
        monitor: str = "ua",
        refit: bool = True,
        class_weight: str | dict | None = None,
        standardize: bool = True,
        bucket_by_length: bool = True,
        precise_bn: bool = True,
        device: str = "auto",
        seed: int = 0,
        n_threads: int | None = None,
        deterministic: bool = True,
    ) -> None:
        self.block_frames = block_frames
        self.width_mult = width_mult
        self.dropout = dropout
        self.weights = weights
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
        self.standardize = standardize
        self.bucket_by_length = bucket_by_length
        self.precise_bn = precise_bn
        self.device = device
        self.seed = seed
        self.n_threads = n_threads
        self.deterministic = deterministic

    def _check_head_params(self) -> None:
        checks: dict[str, tuple[bool, str]] = {
            "block_frames": (
                isinstance(self.block_frames, int)
                and not isinstance(self.block_frames, bool)
                and self.block_frames >= 1,
                "expected an integer >= 1",
            ),
            "width_mult": (
                isinstance(self.width_mult, int | float)
                and not isinstance(self.width_mult, bool)
                and 0 < self.width_mult <= 4,
                "expected a number in (0, 4]",
            ),
            "dropout": (
                isinstance(self.dropout, int | float) and 0 <= self.dropout < 1,
                "expected 0 <= dropout < 1",
            ),
            "weights": (
                self.weights is None or isinstance(self.weights, str | os.PathLike),
                "expected None or the path of a .safetensors file",
            ),
            "bucket_by_length": (isinstance(self.bucket_by_length, bool), "expected True or False"),
            "precise_bn": (isinstance(self.precise_bn, bool), "expected True or False"),
        }
        for pname, (ok, what) in checks.items():
            if not ok:
                raise ParameterError(f"{type(self).__name__}: {pname}={getattr(self, pname)!r}: {what}")
        # a restored model (import_weights) does not need its starting weights again
        if (
            self.weights is not None
            and not getattr(self, "_restoring", False)
            and not os.path.isfile(self.weights)
        ):
            raise ParameterError(f"{type(self).__name__}: weights={str(self.weights)!r}: no such file")

    def _build_body(self, n_features: int, n_classes: int) -> nn.Module:
        weights = None if getattr(self, "_restoring", False) else self.weights
        return _MobileNetSpecBody(
            n_features, n_classes, self.block_frames, float(self.width_mult), self.dropout, weights
        )

    #: At most this many training clips re-estimate the batch-norm statistics (``precise_bn``).
    _bn_calibration_clips = 1024

    @torch.no_grad()
    def _recalibrate_bn(self, module: nn.Module, data: list[np.ndarray], device: torch.device) -> None:
        """Re-estimate every batch-norm layer's running statistics for the current weights."""
        bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [bn.momentum for bn in bns]
        was_training = module.training
        module.eval()  # dropout off
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative: the plain average over the calibration batches
            bn.train()
        try:
            step = math.ceil(len(data) / self._bn_calibration_clips)
            for idx in self._chunks(np.arange(0, len(data), step), self.batch_size):
                x, mask = self._batch(data, idx, device)
                module(x, mask)
        finally:
            for bn, momentum in zip(bns, momenta, strict=True):
                bn.momentum = momentum
            module.train(was_training)

    def _train(
        self,
        data: np.ndarray | list[np.ndarray],
        y_enc: np.ndarray,
        weights: np.ndarray,
        valid: tuple[Any, np.ndarray] | None,
        max_epochs: int,
        device: torch.device,
    ) -> tuple[nn.Module, list[dict[str, float]], int]:
        """:meth:`TorchClassifier._train`, with the batch-norm statistics recalibrated (``precise_bn``)."""
        self._calibration = data if self.precise_bn else None  # read by _logits during validation
        try:
            module, history, best_epoch = super()._train(data, y_enc, weights, valid, max_epochs, device)
        finally:
            del self._calibration
        if self.precise_bn and valid is None:  # with validation data the kept epoch was recalibrated already
            with _torch_context(
                seed=self.seed, n_threads=self.n_threads, deterministic=self.deterministic, device=device
            ):
                self._recalibrate_bn(module, data, device)
            module.eval()
        return module, history, best_epoch

    def _logits(
        self, module: nn.Module, data: np.ndarray | list[np.ndarray], device: torch.device
    ) -> torch.Tensor:
        calibration = getattr(self, "_calibration", None)
        if calibration is not None:  # a validation pass inside _train: statistics for the current weights
            self._recalibrate_bn(module, calibration, device)
        return super()._logits(module, data, device)

    def import_weights(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any]) -> TorchClassifier:
        """See :meth:`TorchClassifier.import_weights`; the ``weights`` file is not needed (nor read) here."""
        self._restoring = True
        try:
            return super().import_weights(tensors, fitted)
        finally:
            del self._restoring


# ======================================================================================== registry
def _register() -> None:
    """Register ``mobilenet_spec`` (family neural, frames input, designed for ``spectrogram`` features)."""
    try:
        from sertool.models.registry import MODELS, ModelSpec, register_model
    except ImportError:  # registry not available: the estimator still works on its own
        log.debug("sertool.models.registry not importable; mobilenet_spec not registered")
        return
    if "mobilenet_spec" in MODELS and MODELS["mobilenet_spec"].factory is MobileNetSpecClassifier:
        return  # module re-imported
    register_model(
        ModelSpec(
            name="mobilenet_spec",
            family="neural",
            factory=MobileNetSpecClassifier,
            input="frames",
            sample_weight=True,
            gpu=True,
            description="MobileNetV2 (width 0.5) on 1 s STFT-magnitude blocks, block logits averaged",
            param_grid={"lr": [1e-3, 3e-4], "width_mult": [0.5, 1.0]},
            features=("spectrogram",),
        )
    )


_register()
