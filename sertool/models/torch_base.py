"""A small base class that turns a torch module into a scikit-learn classifier.

Why hand-written and not skorch
-------------------------------
skorch was considered (see ARCHITECTURE.md). It was not used because, for this project, the parts we need
are exactly the parts where skorch has to be bent:

* validation data: skorch takes its validation set from ``train_split`` (an *init* parameter, by default a
  random internal split). The benchmark runner must pass the fold's speaker-disjoint validation part *at fit
  time*; with skorch this means ``train_split=predefined_split(ds)`` set per fold on a clone, which couples
  the estimator's parameters to data and breaks ``clone``/``get_params`` hygiene. Here it is simply
  ``fit(X, y, *, X_valid=..., y_valid=...)``, and without it nothing is carved out.
* early stopping on unweighted accuracy (UA) with best-weight restore needs three callbacks
  (``EpochScoring``, ``EarlyStopping``, ``Checkpoint``/``LoadInitState``) configured together.
* variable-length frame sequences need a custom dataset and collate function with masks anyway.
* one less dependency, and the whole training loop fits on one screen.

What the base class provides
----------------------------
``__init__`` only stores parameters (each head lists all of its parameters explicitly, so ``clone`` and
``get_params`` work); the torch module is built inside :meth:`TorchClassifier.fit`. Fitted attributes end in
``_``: ``classes_``, ``n_features_in_``, ``module_``, ``device_``, ``history_``, ``best_epoch_``,
``n_iter_``.

* **Inputs.** Pooled heads (``_input_kind = "pooled"``) take ``X`` of shape ``(n, d)``. Sequence heads
  (``"frames"``) take a 3-D array ``(n, T, F)`` or a list / object array of 2-D arrays ``(T_i, F)`` of varying
  length; batches are zero-padded to the longest item in the batch and a boolean mask ``(B, T)`` (``True`` =
  valid frame) is passed to the module. float16 input is accepted and cast to float32 per batch (frames are
  not copied as a whole). A head with a ``frame_pool`` parameter > 1 averages every ``frame_pool``
  consecutive frames once, when the input is validated (in ``fit`` and ``predict``; :func:`pool_frames`):
  Whisper frames come at 50 per second, and the attention / transformer cost falls with ``T`` (``T**2``).
* **Standardisation** (``standardize=True``): per-feature mean and standard deviation of the *training*
  data only (over samples for pooled input, over all valid frames for sequences), stored as buffers in the
  first layer of ``module_`` so the fitted module is self-contained.
* **Class weighting.** The loss of each sample is multiplied by its weight. ``sample_weight`` (what the
  runner passes, e.g. balanced weights computed once centrally) and ``class_weight="balanced"`` (weights
  ``n / (k * n_c)`` computed here; a dict label -> weight also works) multiply; use one of the two, not both. Weights are normalised to mean 1
  over the training set, so the learning rate means the same with and without weights.
* **Early stopping.** Only when ``X_valid``/``y_valid`` are given (the fold's speaker-disjoint validation
  part; never the test part, and nothing is ever carved out of ``X``). After each epoch the validation UA
  (balanced accuracy; ties broken by lower validation loss) or loss (``monitor="loss"``) is computed; the best
  weights are kept and restored at the end; training stops after ``patience`` epochs without improvement
  (``patience=None``: train ``max_epochs`` and still restore the best epoch). Without validation data the
  model trains exactly ``max_epochs`` epochs and ``best_epoch_ == max_epochs``.
* **Refit** (``refit=True``, with validation data): after the best epoch count is found as above, a fresh
  module (same seed, standardisation re-estimated) trains that many epochs on training + validation data,
  the data a classical model of the runner is fit on; validation samples get the mean training weight of
  their class. ``history_`` keeps the selection run.
* **Optimisation.** Adam or AdamW, exponential learning-rate decay ``lr_decay`` per epoch, gradient-norm
  clipping ``max_grad_norm``.
* **Reproducibility.** ``seed`` seeds torch (inside ``torch.random.fork_rng``, so the caller's global torch
  RNG state is left untouched) and a numpy generator for batch order. On CPU the ops used here are
  deterministic for a fixed thread count, so two fits with the same seed give identical predictions (tested).
  ``torch.use_deterministic_algorithms`` is *not* switched on: in torch 2.13 its first call imports
  ``torch._inductor`` (about 5 s per process) and it changes nothing for these CPU ops. On CUDA
  (``deterministic=True``) cuDNN is put in deterministic mode, without benchmark autotuning; bit-exact
  GPU results are still not guaranteed.
* **Threads / device.** ``n_threads`` sets torch's intra-op threads during fit/predict and restores the
  previous value afterwards; ``device="auto"`` picks CUDA when available.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data
from torch import nn
from torch.nn import functional as F

from sertool import util
from sertool.exceptions import ParameterError

__all__ = [
    "Standardize",
    "TorchClassifier",
    "as_sequences",
    "masked_mean",
    "pad_sequences",
    "pool_frames",
    "resolve_device",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- helpers
def resolve_device(device: str) -> torch.device:
    """:func:`sertool.util.resolve_device` as a :class:`torch.device`: ``"auto"``, ``"cpu"``, ``"cuda"`` or
    ``"cuda:N"``.

    Raises
    ------
    ParameterError
        Unknown value, or CUDA requested but not available.
    """
    return torch.device(util.resolve_device(device))


def as_sequences(X: Any, *, name: str = "X", n_features: int | None = None) -> list[np.ndarray]:
    """Validate frame-sequence input and return it as a list of 2-D float arrays.

    Parameters
    ----------
    X : np.ndarray of shape (n, T, F), or sequence of np.ndarray of shape (T_i, F)
        Frame sequences; a list, tuple, object array or pandas Series of 2-D arrays may have varying ``T_i``.
    name : str
        Name used in error messages.
    n_features : int, optional
        Expected ``F`` (the value seen in ``fit``).

    Returns
    -------
    list of np.ndarray, each of shape (T_i, F), dtype float16 or float32
        float16 items are kept (cast per batch); other dtypes become float32.

    Raises
    ------
    ParameterError
        Wrong dimensionality, empty input or sequence, mismatched ``F``, or non-finite values.
    """
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim != 3:
            raise ParameterError(
                f"{name}: expected a 3-D array (n, T, F) or a list of 2-D arrays (T_i, F); got shape {X.shape}"
            )
        items: Sequence[Any] = list(X)
    else:
        if hasattr(X, "to_numpy"):  # pandas Series of arrays
            X = X.to_numpy()
        try:
            items = list(X)
        except TypeError as exc:
            raise ParameterError(
                f"{name}: expected a sequence of 2-D arrays (T_i, F); got {type(X).__name__}"
            ) from exc
    if not items:
        raise ParameterError(f"{name}: no sequences (0 samples)")
    out: list[np.ndarray] = []
    for i, item in enumerate(items):
        a = np.asarray(item)
        if a.ndim != 2:
            raise ParameterError(f"{name}[{i}]: expected a 2-D array (T, F); got shape {a.shape}")
        if a.shape[0] < 1:
            raise ParameterError(f"{name}[{i}]: empty sequence (T = 0)")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ParameterError(f"{name}[{i}]: expected numbers; got dtype {a.dtype}")
        if a.dtype not in (np.float16, np.float32):
            a = a.astype(np.float32)
        if n_features is None:
            n_features = a.shape[1]
        elif a.shape[1] != n_features:
            raise ParameterError(f"{name}[{i}]: has {a.shape[1]} features per frame, expected {n_features}")
        if not np.isfinite(a).all():
            raise ParameterError(f"{name}[{i}]: contains NaN or infinite values")
        out.append(a)
    return out


def pool_frames(seqs: Sequence[np.ndarray], factor: int) -> list[np.ndarray]:
    """Average every ``factor`` consecutive frames (the last group may be shorter).

    Parameters
    ----------
    seqs : sequence of np.ndarray, each of shape (T_i, F)
    factor : int
        Pooling factor (1 returns the input unchanged).

    Returns
    -------
    list of np.ndarray, each of shape (ceil(T_i / factor), F), float32 (or the input items when ``factor == 1``)
    """
    if factor == 1:
        return list(seqs)
    out = []
    for a in seqs:
        starts = np.arange(0, len(a), factor)
        counts = np.diff(np.append(starts, len(a))).astype(np.float32)
        out.append(np.add.reduceat(a.astype(np.float32, copy=False), starts, axis=0) / counts[:, None])
    return out


def pad_sequences(seqs: Sequence[np.ndarray], *, min_len: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad sequences to a common length.

    Parameters
    ----------
    seqs : sequence of np.ndarray, each of shape (T_i, F)
    min_len : int
        Pad to at least this many frames (for heads that downsample in time).

    Returns
    -------
    x : np.ndarray, float32, shape (B, T_max, F)
    mask : np.ndarray, bool, shape (B, T_max)
        ``True`` on valid frames.
    """
    t_max = max(max(len(s) for s in seqs), min_len)
    x = np.zeros((len(seqs), t_max, seqs[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(seqs), t_max), dtype=bool)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
        mask[i, : len(s)] = True
    return x, mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of valid frames.

    Parameters
    ----------
    x : torch.Tensor, shape (B, T, D)
    mask : torch.Tensor, bool, shape (B, T), or None (all valid)

    Returns
    -------
    torch.Tensor, shape (B, D)
    """
    if mask is None:
        return x.mean(dim=1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class Standardize(nn.Module):
    """``(x - mean) / scale`` over the last axis, with statistics stored as buffers.

    Parameters
    ----------
    mean, scale : np.ndarray, shape (F,)
    """

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class _Net(nn.Module):
    """Standardisation (or identity) followed by the head's body; ``forward(x, mask)`` for sequence heads."""

    def __init__(self, pre: nn.Module, body: nn.Module, *, frames: bool) -> None:
        super().__init__()
        self.pre = pre
        self.body = body
        self.frames = frames

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre(x)
        if self.frames:
            x = x * mask.unsqueeze(-1).to(x.dtype)  # keep padded frames at exactly zero after standardising
            return self.body(x, mask)
        return self.body(x)


def _scale_from_std(std: np.ndarray) -> np.ndarray:
    return np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _unweighted_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (balanced accuracy, no warnings)."""
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls))


@contextmanager
def _torch_context(
    *, seed: int, n_threads: int | None, deterministic: bool, device: torch.device
) -> Iterator[None]:
    """Seeded, thread-limited, deterministic torch state; everything is restored on exit."""
    prev_threads = torch.get_num_threads()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cuda_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=cuda_devices):
        try:
            if n_threads is not None:
                torch.set_num_threads(n_threads)
            if deterministic and device.type == "cuda":
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            torch.manual_seed(seed)
            yield
        finally:
            torch.set_num_threads(prev_threads)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


# ------------------------------------------------------------------------------------------------ base class
class TorchClassifier(ClassifierMixin, BaseEstimator):
    """Base of the torch heads. Subclasses define ``__init__`` (storing every parameter) and
    :meth:`_build_body`.

    Common parameters (every head has them; see the module docstring for their semantics): ``max_epochs``,
    ``batch_size``, ``lr``, ``lr_decay``, ``weight_decay``, ``optimizer`` (``"adam"`` | ``"adamw"``),
    ``max_grad_norm``, ``patience``, ``monitor`` (``"ua"`` | ``"loss"``), ``class_weight`` (``None`` |
    ``"balanced"``), ``standardize``, ``device``, ``seed``, ``n_threads``, ``deterministic``.
    """

    #: "pooled": X is (n, d); "frames": X is (n, T, F) or a list of (T_i, F).
    _input_kind: ClassVar[str] = "pooled"
    #: Sequence batches are padded to at least this many frames.
    _min_len: ClassVar[int] = 1
    #: Batch size used for prediction (no gradients, so larger than training batches).
    _predict_batch_size: ClassVar[int] = 256

    # -- to implement -------------------------------------------------------------------------------------
    def _build_body(self, n_features: int, n_classes: int) -> nn.Module:
        """The trainable network: ``(B, d) -> (B, k)`` or ``((B, T, F), mask (B, T)) -> (B, k)`` logits."""
        raise NotImplementedError

    def _check_head_params(self) -> None:
        """Validate the head's own parameters (raise :class:`ParameterError`)."""

    def _param_groups(self, module: nn.Module) -> Any:
        """What the optimiser updates: every parameter at ``lr`` (heads with parts trained at other rates, or
        frozen parts, override this with torch parameter groups)."""
        return [p for p in module.parameters() if p.requires_grad]

    # -- parameter validation -----------------------------------------------------------------------------
    def _check_params(self) -> None:
        def need(cond: bool, pname: str, what: str) -> None:
            if not cond:
                raise ParameterError(f"{type(self).__name__}: {pname}={getattr(self, pname)!r}: {what}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        need(is_int(self.max_epochs) and self.max_epochs >= 1, "max_epochs", "expected an integer >= 1")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "expected an integer >= 1")
        need(isinstance(self.lr, int | float) and self.lr > 0, "lr", "expected a number > 0")
        need(
            isinstance(self.lr_decay, int | float) and 0 < self.lr_decay <= 1,
            "lr_decay",
            "expected 0 < lr_decay <= 1",
        )
        need(
            isinstance(self.weight_decay, int | float) and self.weight_decay >= 0,
            "weight_decay",
            "expected >= 0",
        )
        need(self.optimizer in ("adam", "adamw"), "optimizer", "expected 'adam' or 'adamw'")
        need(
            self.max_grad_norm is None
            or (isinstance(self.max_grad_norm, int | float) and self.max_grad_norm > 0),
            "max_grad_norm",
            "expected None or a number > 0",
        )
        need(
            self.patience is None or (is_int(self.patience) and self.patience >= 1),
            "patience",
            "expected None or >= 1",
        )
        need(self.monitor in ("ua", "loss"), "monitor", "expected 'ua' or 'loss'")
        need(isinstance(getattr(self, "refit", False), bool), "refit", "expected True or False")
        need(
            self.class_weight is None
            or self.class_weight == "balanced"
            or isinstance(self.class_weight, dict),
            "class_weight",
            "expected None, 'balanced' or a dict label -> weight",
        )
        need(is_int(self.seed), "seed", "expected an integer")
        if hasattr(self, "frame_pool"):
            need(is_int(self.frame_pool) and self.frame_pool >= 1, "frame_pool", "expected an integer >= 1")
        need(
            self.n_threads is None or (is_int(self.n_threads) and self.n_threads >= 1),
            "n_threads",
            "expected None or >= 1",
        )
        self._check_head_params()

    # -- input handling -----------------------------------------------------------------------------------
    def _validate_X(self, X: Any, *, reset: bool, name: str = "X") -> np.ndarray | list[np.ndarray]:
        if self._input_kind == "pooled":
            return validate_data(self, X, reset=reset, dtype=np.float32)  # checks n_features_in_ unless reset
        seqs = as_sequences(X, name=name, n_features=None if reset else self.n_features_in_)
        if reset:
            self.n_features_in_ = seqs[0].shape[1]
        return pool_frames(seqs, getattr(self, "frame_pool", 1))

    def _standardizer(self, data: np.ndarray | list[np.ndarray], n_features: int) -> nn.Module:
        if not self.standardize:
            return nn.Identity()
        if isinstance(data, np.ndarray):
            mean = data.mean(axis=0, dtype=np.float64)
            std = data.std(axis=0, dtype=np.float64)
        else:
            s = np.zeros(n_features)
            s2 = np.zeros(n_features)
            count = 0
            for a in data:
                a64 = a.astype(np.float64)
                s += a64.sum(axis=0)
                s2 += (a64 * a64).sum(axis=0)
                count += len(a)
            mean = s / count
            std = np.sqrt(np.maximum(s2 / count - mean * mean, 0.0))
        return Standardize(mean.astype(np.float32), _scale_from_std(std))

    def _batch(
        self, data: np.ndarray | list[np.ndarray], idx: np.ndarray, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(data, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(data[idx], dtype=np.float32)).to(device), None
        x, mask = pad_sequences([data[i] for i in idx], min_len=self._min_len)
        return torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)

    @staticmethod
    def _chunks(order: np.ndarray, size: int) -> list[np.ndarray]:
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        if len(batches) > 1 and len(batches[-1]) == 1:  # batch norm cannot train on a batch of one
            batches[-2] = np.concatenate([batches[-2], batches.pop()])
        return batches

    def _train_batches(
        self, data: np.ndarray | list[np.ndarray], rng: np.random.Generator
    ) -> list[np.ndarray]:
        n = len(data)
        if isinstance(data, list) and getattr(self, "bucket_by_length", False):
            # shuffle, then sort stably by length: equal lengths stay shuffled; batch order is shuffled.
            lengths = np.array([len(a) for a in data])
            order = rng.permutation(n)
            order = order[np.argsort(lengths[order], kind="stable")]
            batches = self._chunks(order, self.batch_size)
            return [batches[i] for i in rng.permutation(len(batches))]
        return self._chunks(rng.permutation(n), self.batch_size)

    def _logits(
        self, module: nn.Module, data: np.ndarray | list[np.ndarray], device: torch.device
    ) -> torch.Tensor:
        """Logits of all samples in input order, shape (n, k), float32 on CPU (module in eval mode)."""
        n = len(data)
        # sequences: predict in length order (less padding); outputs are written back in input order
        order = np.argsort([len(a) for a in data], kind="stable") if isinstance(data, list) else np.arange(n)
        out = torch.empty((n, len(self.classes_)), dtype=torch.float32)
        module.eval()
        with torch.inference_mode():
            for start in range(0, n, self._predict_batch_size):
                idx = order[start : start + self._predict_batch_size]
                x, mask = self._batch(data, idx, device)
                out[torch.from_numpy(idx)] = module(x, mask).float().cpu()
        return out

    # -- fit / predict ------------------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        X_valid: Any = None,
        y_valid: Any = None,
        sample_weight: Any = None,
    ) -> TorchClassifier:
        """Train the head.

        Parameters
        ----------
        X : np.ndarray of shape (n, d) (pooled heads), or (n, T, F) / list of (T_i, F) arrays (sequence heads)
            Training inputs; float16 is accepted.
        y : array-like of shape (n,)
            Class labels (any hashable type; ``classes_`` is their sorted unique set).
        X_valid, y_valid : same kinds as ``X``, ``y``, optional
            The fold's validation part (speaker-disjoint from ``X`` and from the test part), used only for
            early stopping and best-epoch selection. Labels must occur in ``y``.
        sample_weight : array-like of shape (n,), optional
            Per-sample loss weights (e.g. balanced class weights computed by the runner).

        Returns
        -------
        self
        """
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        data = self._validate_X(X, reset=True)
        y = column_or_1d(y, warn=True)
        if len(y) != len(data):
            raise ParameterError(f"X has {len(data)} samples but y has {len(y)}")
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ParameterError(
                f"{type(self).__name__}: y has only one class ({self.classes_[0]!r}); need >= 2 classes"
            )
        y_enc = encoder.transform(y)

        weights = _check_sample_weight(
            sample_weight, np.zeros(len(y_enc)) if not isinstance(data, np.ndarray) else data
        )
        if self.class_weight is not None:
            # sklearn's helper: "balanced" -> n / (k * n_c); a dict maps labels to weights (missing: 1)
            weights = weights * compute_sample_weight(self.class_weight, y)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ParameterError("sample_weight: weights must be >= 0 with a positive sum")
        weights = weights / weights.mean()

        valid = None
        if (X_valid is None) != (y_valid is None):
            raise ParameterError("X_valid and y_valid must be given together")
        if X_valid is not None:
            v_data = self._validate_X(X_valid, reset=False, name="X_valid")
            yv = column_or_1d(y_valid)
            if len(yv) != len(v_data):
                raise ParameterError(f"X_valid has {len(v_data)} samples but y_valid has {len(yv)}")
            unknown = sorted(set(np.unique(yv).tolist()) - set(self.classes_.tolist()))
            if unknown:
                raise ParameterError(f"y_valid has labels not in the training labels: {unknown}")
            valid = (v_data, encoder.transform(yv))

        device = resolve_device(self.device)
        self.device_ = str(device)
        module, history, best_epoch = self._train(data, y_enc, weights, valid, self.max_epochs, device)
        if getattr(self, "refit", False) and valid is not None:
            v_data, v_enc = valid
            class_w = np.array(
                [weights[y_enc == c].mean() if (y_enc == c).any() else 1.0 for c in range(n_classes)]
            )
            all_w = np.concatenate([weights, class_w[v_enc]])
            joined = np.concatenate([data, v_data]) if isinstance(data, np.ndarray) else [*data, *v_data]
            module, _, _ = self._train(
                joined, np.concatenate([y_enc, v_enc]), all_w / all_w.mean(), None, best_epoch, device
            )
        self.module_ = module
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.n_iter_ = len(history)
        log.info(
            "%s: %d epochs, best epoch %d%s",
            type(self).__name__,
            len(history),
            best_epoch,
            f" (valid UA {history[best_epoch - 1]['valid_ua']:.3f})" if valid is not None else "",
        )
        return self

    def _train(
        self,
        data: np.ndarray | list[np.ndarray],
        y_enc: np.ndarray,
        weights: np.ndarray,
        valid: tuple[Any, np.ndarray] | None,
        max_epochs: int,
        device: torch.device,
    ) -> tuple[nn.Module, list[dict[str, float]], int]:
        """One training run from a fresh, seeded module; returns (module at its best epoch, history, best)."""
        n_classes = len(self.classes_)
        rng = np.random.default_rng(self.seed)
        history: list[dict[str, float]] = []
        with _torch_context(
            seed=self.seed, n_threads=self.n_threads, deterministic=self.deterministic, device=device
        ):
            n_features = self.n_features_in_
            module = _Net(
                self._standardizer(data, n_features),
                self._build_body(n_features, n_classes),
                frames=self._input_kind == "frames",
            ).to(device)
            opt_cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
            opt = opt_cls(self._param_groups(module), lr=self.lr, weight_decay=self.weight_decay)
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.lr_decay)
            y_t = torch.from_numpy(y_enc.astype(np.int64))
            w_t = torch.from_numpy(weights.astype(np.float32))
            best_score: tuple[float, ...] | None = None
            best_state: dict[str, torch.Tensor] | None = None
            best_epoch, bad = max_epochs, 0
            for epoch in range(1, max_epochs + 1):
                module.train()
                total, n_seen = 0.0, 0
                lr_now = opt.param_groups[0]["lr"]
                for idx in self._train_batches(data, rng):
                    x, mask = self._batch(data, idx, device)
                    t_idx = torch.from_numpy(idx)
                    yb, wb = y_t[t_idx].to(device), w_t[t_idx].to(device)
                    loss = (F.cross_entropy(module(x, mask), yb, reduction="none") * wb).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.max_grad_norm is not None:
                        nn.utils.clip_grad_norm_(module.parameters(), self.max_grad_norm)
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    n_seen += len(idx)
                sched.step()
                row = {
                    "epoch": epoch,
                    "lr": lr_now,
                    "train_loss": total / n_seen,
                    "valid_loss": math.nan,
                    "valid_ua": math.nan,
                }
                if valid is not None:
                    logits = self._logits(module, valid[0], device)
                    yv_t = torch.from_numpy(valid[1].astype(np.int64))
                    row["valid_loss"] = float(F.cross_entropy(logits, yv_t))
                    row["valid_ua"] = _unweighted_accuracy(valid[1], logits.argmax(1).numpy())
                    score = (
                        (row["valid_ua"], -row["valid_loss"])
                        if self.monitor == "ua"
                        else (-row["valid_loss"],)
                    )
                    if best_score is None or score > best_score:
                        best_score, best_epoch, bad = score, epoch, 0
                        best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                    else:
                        bad += 1
                history.append(row)
                log.debug("%s epoch %d: %s", type(self).__name__, epoch, row)
                if not math.isfinite(row["train_loss"]):
                    raise ParameterError(
                        f"{type(self).__name__}: training diverged at epoch {epoch} (loss {row['train_loss']}); "
                        f"lower lr={self.lr!r}"
                    )
                if valid is not None and self.patience is not None and bad >= self.patience:
                    break
            if best_state is not None:
                module.load_state_dict(best_state)
            else:
                best_epoch = len(history)
            module.eval()
        return module, history, best_epoch

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        X : same kind as in :meth:`fit`

        Returns
        -------
        np.ndarray, float64, shape (n, k)
            Columns in ``classes_`` order; rows sum to 1.
        """
        check_is_fitted(self, "module_")
        data = self._validate_X(X, reset=False)
        device = next(self.module_.parameters()).device
        with _torch_context(
            seed=self.seed, n_threads=self.n_threads, deterministic=self.deterministic, device=device
        ):
            logits = self._logits(self.module_, data, device)
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, shape (n,), values from ``classes_``."""
        proba = self.predict_proba(X)  # first: raises NotFittedError before classes_ is looked up
        return self.classes_[np.argmax(proba, axis=1)]

    def export_weights(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The fitted head as tensors and JSON-safe attributes, for saving without pickle.

        Returns
        -------
        tensors : dict of str to torch.Tensor
            The module's state (CPU, contiguous): what ``safetensors`` stores.
        fitted : dict
            ``classes``, ``n_features_in``, ``standardized``, ``best_epoch``: what :meth:`import_weights`
            needs besides the estimator's parameters.
        """
        check_is_fitted(self, "module_")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        fitted = {
            "classes": np.asarray(self.classes_).tolist(),
            "n_features_in": int(self.n_features_in_),
            "standardized": isinstance(self.module_.pre, Standardize),
            "best_epoch": int(getattr(self, "best_epoch_", 0)),
        }
        return tensors, fitted

    def import_weights(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any]) -> TorchClassifier:
        """Rebuild a fitted head from :meth:`export_weights` output (on the CPU).

        The estimator must carry the parameters it was trained with (the network's shape comes from them);
        a state that does not fit that shape raises ``ParameterError``.
        """
        self._check_params()
        classes = np.asarray(fitted["classes"])
        n = int(fitted["n_features_in"])
        pre: nn.Module = (
            Standardize(np.zeros(n, np.float32), np.ones(n, np.float32))
            if fitted["standardized"]
            else nn.Identity()
        )
        module = _Net(pre, self._build_body(n, len(classes)), frames=self._input_kind == "frames")
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ParameterError(
                f"{type(self).__name__}: stored weights do not fit its parameters: {exc}"
            ) from None
        module.eval()
        self.classes_, self.n_features_in_, self.module_ = classes, n, module
        self.best_epoch_ = int(fitted.get("best_epoch", 0))
        self.device_ = "cpu"
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self._input_kind == "frames":
            tags.input_tags.two_d_array = False
            tags.input_tags.three_d_array = True
        return tags

    def __getstate__(self) -> dict[str, Any]:
        # Fitted modules are pickled on CPU so a model trained on a GPU loads anywhere.
        state = dict(super().__getstate__())  # object.__getstate__ may return __dict__ itself
        if "module_" in state:
            state["module_"] = copy.deepcopy(state["module_"]).cpu()
        return state
