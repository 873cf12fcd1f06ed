"""A multi-task torch head predicting the emotion category and continuous dimensions together
(registry name ``mtl_head``, ``task="multitask"``).

:class:`MultiTaskHead` is a shared MLP trunk on standardised pooled vectors with two outputs: the class
logits and ``k`` regression values (e.g. arousal, valence, dominance). It is fitted on a float array ``y`` of
shape ``(n, 1 + k)``: column 0 holds the integer label code (``0..K-1`` of :func:`~sertool.models.registry.
encode_labels`, as floats), columns ``1..k`` the dimension values, NaN where a clip has no rating::

    est = MultiTaskHead(max_epochs=50)
    est.fit(X, y, X_valid=Xv, y_valid=yv, sample_weight=w)   # y: (n, 1 + k)
    est.predict_proba(X)                                      # (n, len(classes_))
    est.predict(X)                                            # label codes, from classes_
    est.predict_values(X)                                     # (n, k), on each dimension's own scale

Loss of a mini-batch: the cross-entropy weighted per clip by ``sample_weight`` (e.g. balanced class
weights), plus ``reg_weight`` times the mean over dimensions of ``1 - CCC``, each dimension's CCC computed
on the batch's rated (non-NaN) clips only, on the targets z-scored with the training mean and standard
deviation of that dimension. Sample weights act on the cross-entropy only: class-balancing weights are
about the label distribution, and the dimensions' CCC is scored unweighted.

Conventions of the torch heads (:mod:`sertool.models.torch_base`, :class:`~sertool.models.regression.
CCCHead`): ``__init__`` only stores parameters (``clone`` works); the fold's speaker-disjoint validation
part, when given, is used only for early stopping on validation UA + mean validation CCC with best-epoch
restore; without it the head trains ``max_epochs`` epochs. ``seed`` seeds torch (inside
``torch.random.fork_rng``) and the batch order: two CPU fits with the same seed and thread count predict the
same.

This module imports without torch: ``mtl_head`` is then recorded as unavailable.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from sertool.exceptions import ParameterError
from sertool.metrics_regression import ccc
from sertool.models import registry
from sertool.models.registry import ModelSpec, register_model, register_unavailable
from sertool.models.regression import (
    _STAT_PREFIX,
    _feature_names,
    _load_module,
    _set_feature_names,
    _split_tensors,
    _stat_array,
)

try:
    import torch
    from torch import nn
    from torch.nn import functional as F

    from sertool.models.torch_base import _torch_context, _unweighted_accuracy, resolve_device
except ModuleNotFoundError as _exc:  # torch absent: the model is recorded as unavailable
    if (_exc.name or "").split(".")[0] != "torch":
        raise
    torch = None  # type: ignore[assignment]
    _TORCH_MISSING = str(_exc)
else:
    _TORCH_MISSING = ""

__all__ = ["MultiTaskHead", "make_mtl_head"]

log = logging.getLogger(__name__)

#: Rows per forward pass when predicting (no gradients).
_PREDICT_BATCH = 1024
#: Fitted arrays exported as tensors: float32 of shape (n_features,), then float64 of shape (k,).
_X_STATS = ("x_mean_", "x_scale_")
_Y_STATS = ("y_mean_", "y_scale_")


def _is_int(v: Any, lo: int = 1) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= lo


def _masked_ccc_loss(pred: torch.Tensor, target: torch.Tensor, rated: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of ``1 - CCC`` on the rated entries of one batch.

    Parameters
    ----------
    pred, target : torch.Tensor of shape (B, k)
        Predictions and (z-scored) targets; ``target`` is 0 where not rated.
    rated : torch.Tensor of shape (B, k), bool
        Which entries carry a rating.

    Returns
    -------
    torch.Tensor
        A scalar; dimensions with fewer than 2 rated clips in the batch are left out (0 when none is left).
    """
    m = rated.to(pred.dtype)
    count = m.sum(dim=0)
    use = count >= 2
    if not bool(use.any()):
        return pred.sum() * 0.0  # keeps the graph (and the device) without contributing
    c = count.clamp_min(1.0)
    mp = (m * pred).sum(dim=0) / c
    mt = (m * target).sum(dim=0) / c
    dp, dt = (pred - mp) * m, (target - mt) * m
    var_p, var_t, cov = (dp * dp).sum(dim=0) / c, (dt * dt).sum(dim=0) / c, (dp * dt).sum(dim=0) / c
    loss = 1.0 - 2.0 * cov / (var_p + var_t + (mp - mt) ** 2 + 1e-8)
    return loss[use].mean()


class MultiTaskHead(ClassifierMixin, BaseEstimator):
    """A torch MLP with a shared trunk, a class output and ``k`` dimension outputs (registry ``mtl_head``).

    ``X`` is standardised with the training data's per-feature mean and standard deviation; each dimension
    is z-scored with its training (rated) mean and standard deviation, and predictions are mapped back. The
    network is ``[Linear -> GELU -> Dropout] * len(hidden) -> Linear(K + k)``: the first ``K`` outputs are
    the class logits, the last ``k`` the dimension values. It is trained with AdamW on the weighted
    cross-entropy plus ``reg_weight`` times the mean ``1 - CCC`` over the dimensions (see the module
    docstring).

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer sizes of the shared trunk.
    dropout : float
        Dropout after each hidden layer, ``0 <= dropout < 1``.
    lr : float
        AdamW learning rate.
    weight_decay : float
        AdamW (decoupled) weight decay.
    max_epochs : int
        Upper bound on epochs (exactly this many without validation data).
    patience : int or None
        Stop after this many epochs without a better validation score (UA + mean CCC); ``None``: run
        ``max_epochs`` and still restore the best epoch.
    batch_size : int
        Training mini-batch size, >= 2 (CCC needs a spread within the batch). The permuted clips are cut into
        ``ceil(n / batch_size)`` near-equal batches.
    seed : int
        Seed of the initialisation, dropout and batch order.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
    n_threads : int or None
        torch intra-op threads during fit / predict (restored afterwards); ``None`` leaves torch's setting.
    reg_weight : float
        Weight of the regression loss (mean ``1 - CCC``) relative to the cross-entropy, >= 0 (0: the
        dimension outputs are not trained).

    Attributes
    ----------
    classes_ : np.ndarray of shape (K,), int64
        Sorted label codes seen in training; ``predict_proba`` columns follow it.
    n_dims_ : int
        Number of dimensions ``k``.
    n_features_in_ : int
    module_ : torch.nn.Module
        Fitted network (eval mode), on standardised inputs.
    x_mean_, x_scale_ : np.ndarray of shape (n_features,)
        Training feature means and standard deviations (1 where a feature is constant).
    y_mean_, y_scale_ : np.ndarray of shape (k,)
        Training means and standard deviations of the dimensions over their rated clips (scale 1 when a
        dimension is constant).
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss`` (mean over batches, weighted by batch size), ``valid_ua`` and
        ``valid_ccc`` (mean over the dimensions with >= 2 rated validation clips; NaN without validation
        data).
    best_epoch_ : int
        1-based epoch whose weights were kept.
    n_iter_ : int
        Epochs run.
    device_ : str
    """

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (256,),
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 100,
        patience: int | None = 10,
        batch_size: int = 64,
        seed: int = 0,
        device: str = "cpu",
        n_threads: int | None = None,
        reg_weight: float = 1.0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.n_threads = n_threads
        self.reg_weight = reg_weight

    # -- validation ---------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        def need(cond: bool, pname: str, what: str) -> None:
            if not cond:
                raise ParameterError(f"{type(self).__name__}: {pname}={getattr(self, pname)!r}: {what}")

        def is_number(v: Any) -> bool:
            return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)

        need(
            isinstance(self.hidden, tuple | list) and all(_is_int(h) for h in self.hidden),
            "hidden",
            "expected a tuple of positive integers",
        )
        need(is_number(self.dropout) and 0 <= self.dropout < 1, "dropout", "expected 0 <= dropout < 1")
        need(is_number(self.lr) and self.lr > 0, "lr", "expected a number > 0")
        need(is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "expected >= 0")
        need(_is_int(self.max_epochs), "max_epochs", "expected an integer >= 1")
        need(self.patience is None or _is_int(self.patience), "patience", "expected None or an integer >= 1")
        need(_is_int(self.batch_size, 2), "batch_size", "expected an integer >= 2")
        need(_is_int(self.seed, 0), "seed", "expected an integer >= 0")
        need(self.n_threads is None or _is_int(self.n_threads), "n_threads", "expected None or >= 1")
        need(
            is_number(self.reg_weight) and math.isfinite(self.reg_weight) and self.reg_weight >= 0,
            "reg_weight",
            "expected a finite number >= 0",
        )

    def _targets(
        self, y: Any, n: int, *, x_name: str, name: str, n_dims: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Split ``y`` of shape (n, 1 + k) into integer label codes (n,) and dimension values (n, k)."""
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{name} must be a numeric array of shape (n, 1 + k): {exc}") from None
        if y.ndim != 2 or y.shape[1] < 2:
            raise ParameterError(
                f"{name} must have shape (n, 1 + k) with k >= 1 (label code, then the dimensions); "
                f"got shape {y.shape}"
            )
        if len(y) != n:
            raise ParameterError(f"{x_name} has {n} samples but {name} has {len(y)}")
        if n_dims is not None and y.shape[1] - 1 != n_dims:
            raise ParameterError(f"{name} has {y.shape[1] - 1} dimensions, but the head was fit on {n_dims}")
        codes = y[:, 0]
        if not np.all(np.isfinite(codes)):
            raise ParameterError(f"{name}: the label column (column 0) contains NaN or infinite values")
        if np.any(codes != np.round(codes)) or np.any(codes < 0):
            bad = codes[(codes != np.round(codes)) | (codes < 0)][:5].tolist()
            raise ParameterError(
                f"{name}: the label column (column 0) must hold integer label codes >= 0; got e.g. {bad}"
            )
        values = y[:, 1:]
        if np.any(np.isinf(values)):
            raise ParameterError(f"{name}: the dimension columns contain infinite values (NaN = no rating)")
        return codes.astype(np.int64), values

    # -- network ------------------------------------------------------------------------------------------
    def _build(self, n_features: int, n_out: int) -> nn.Module:
        """Shared trunk and one linear output layer of ``K + k`` units (logits, then dimension values)."""
        layers: list[nn.Module] = []
        n_in = n_features
        for h in self.hidden:
            layers += [nn.Linear(n_in, int(h)), nn.GELU(), nn.Dropout(float(self.dropout))]
            n_in = int(h)
        layers.append(nn.Linear(n_in, n_out))
        return nn.Sequential(*layers)

    def _forward_all(self, module: nn.Module, Xs: np.ndarray, device: torch.device) -> np.ndarray:
        """Raw outputs (logits, then standardised dimension values) of standardised rows ``Xs``, float64."""
        module.eval()
        n_out = len(self.classes_) + self.n_dims_
        out = np.empty((len(Xs), n_out), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(Xs), _PREDICT_BATCH):
                xb = torch.from_numpy(np.ascontiguousarray(Xs[start : start + _PREDICT_BATCH])).to(device)
                out[start : start + len(xb)] = module(xb).double().cpu().numpy()
        return out

    def _valid_scores(self, raw: np.ndarray, y_idx: np.ndarray, values: np.ndarray) -> tuple[float, float]:
        """Validation UA and mean CCC over the dimensions with >= 2 rated clips (NaN when none has)."""
        n_classes = len(self.classes_)
        ua = _unweighted_accuracy(y_idx, raw[:, :n_classes].argmax(axis=1))
        pred = raw[:, n_classes:] * self.y_scale_ + self.y_mean_
        cccs = []
        for j in range(self.n_dims_):
            rated = ~np.isnan(values[:, j])
            if rated.sum() >= 2 and np.all(np.isfinite(pred[rated, j])):
                cccs.append(ccc(values[rated, j], pred[rated, j]))
        return ua, float(np.mean(cccs)) if cccs else math.nan

    # -- fit / predict ------------------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        X_valid: Any = None,
        y_valid: Any = None,
        sample_weight: Any = None,
    ) -> MultiTaskHead:
        """Train the head.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Pooled training features (float16 accepted).
        y : array-like of shape (n, 1 + k)
            Column 0: integer label codes (as floats); columns ``1..k``: the dimension values, NaN where a
            clip has no rating (left out of that dimension's loss).
        X_valid, y_valid : array-like of shape (m, d) and (m, 1 + k), optional
            The fold's validation part, only for early stopping and best-epoch selection on validation UA +
            mean validation CCC. Its label codes must occur in ``y``.
        sample_weight : array-like of shape (n,), optional
            Per-clip weights of the cross-entropy (normalised to mean 1), e.g. balanced class weights.

        Returns
        -------
        self

        Raises
        ------
        ParameterError
            Invalid parameters; ``y`` not of shape (n, 1 + k); NaN or non-integer label codes; fewer than 2
            classes; a dimension with fewer than 2 rated clips (e.g. all NaN); validation labels unseen in
            training; invalid sample weights.
        """
        if torch is None:
            raise ParameterError(
                f"{type(self).__name__} needs torch, which is not installed ({_TORCH_MISSING})"
            )
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X = validate_data(self, X, reset=True, dtype=np.float32)
        codes, values = self._targets(y, len(X), x_name="X", name="y", n_dims=None)
        n_dims = values.shape[1]
        rated = ~np.isnan(values)
        for j in range(n_dims):
            if rated[:, j].sum() < 2:
                raise ParameterError(
                    f"y: dimension {j + 1} (column {j + 1}) has {int(rated[:, j].sum())} rated clips "
                    "(non-NaN values); need at least 2"
                )
        classes = np.unique(codes)
        if len(classes) < 2:
            raise ParameterError(
                f"{type(self).__name__}: y has only one class ({int(classes[0])}); need >= 2 classes"
            )
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
            raise ParameterError("sample_weight: weights must be finite and >= 0 with a positive sum")
        weights = weights / weights.mean()

        self.classes_ = classes
        self.n_dims_ = n_dims
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        self.x_mean_ = mean.astype(np.float32)
        self.x_scale_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        y_std = np.nanstd(values, axis=0)
        self.y_mean_ = np.nanmean(values, axis=0)
        self.y_scale_ = np.where(y_std > 1e-12, y_std, 1.0)
        Xs = (X - self.x_mean_) / self.x_scale_
        ys = np.where(rated, (values - self.y_mean_) / self.y_scale_, 0.0)
        y_idx = np.searchsorted(classes, codes)

        valid = None
        if (X_valid is None) != (y_valid is None):
            raise ParameterError("X_valid and y_valid must be given together")
        if X_valid is not None:
            Xv = validate_data(self, X_valid, reset=False, dtype=np.float32)
            v_codes, v_values = self._targets(
                y_valid, len(Xv), x_name="X_valid", name="y_valid", n_dims=n_dims
            )
            unknown = sorted(set(v_codes.tolist()) - set(classes.tolist()))
            if unknown:
                raise ParameterError(f"y_valid has label codes not in the training labels: {unknown}")
            valid = ((Xv - self.x_mean_) / self.x_scale_, np.searchsorted(classes, v_codes), v_values)

        device = resolve_device(self.device)
        self.device_ = str(device)
        with _torch_context(seed=int(self.seed), n_threads=self.n_threads, deterministic=True, device=device):
            module, history, best_epoch = self._train(Xs, y_idx, ys, rated, weights, valid, device)
        self.module_ = module
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.n_iter_ = len(history)
        if valid is not None:
            best = history[best_epoch - 1]
            log.info(
                "%s: %d epochs, best epoch %d (valid UA %.3f, valid CCC %.3f)",
                type(self).__name__,
                len(history),
                best_epoch,
                best["valid_ua"],
                best["valid_ccc"],
            )
        else:
            log.info("%s: %d epochs", type(self).__name__, len(history))
        return self

    def _train(
        self,
        Xs: np.ndarray,
        y_idx: np.ndarray,
        ys: np.ndarray,
        rated: np.ndarray,
        weights: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
        device: torch.device,
    ) -> tuple[nn.Module, list[dict[str, float]], int]:
        """Train a fresh, seeded module; returns (module at its best epoch, history, best epoch)."""
        n = len(Xs)
        n_classes = len(self.classes_)
        rng = np.random.default_rng(int(self.seed))
        module = self._build(Xs.shape[1], n_classes + self.n_dims_).to(device)
        opt = torch.optim.AdamW(module.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        x_t = torch.from_numpy(np.ascontiguousarray(Xs, dtype=np.float32)).to(device)
        c_t = torch.from_numpy(y_idx.astype(np.int64)).to(device)
        y_t = torch.from_numpy(ys.astype(np.float32)).to(device)
        m_t = torch.from_numpy(rated).to(device)
        w_t = torch.from_numpy(weights.astype(np.float32)).to(device)
        reg_weight = float(self.reg_weight)
        n_batches = max(1, math.ceil(n / int(self.batch_size)))
        history: list[dict[str, float]] = []
        best_score, best_state, best_epoch, bad = -math.inf, None, int(self.max_epochs), 0
        for epoch in range(1, int(self.max_epochs) + 1):
            module.train()
            total = 0.0
            for idx in np.array_split(rng.permutation(n), n_batches):
                t_idx = torch.from_numpy(idx).to(device)
                out = module(x_t[t_idx])
                wb = w_t[t_idx]
                ce = F.cross_entropy(out[:, :n_classes], c_t[t_idx], reduction="none")
                loss = (ce * wb).sum() / wb.sum()
                if reg_weight > 0:
                    loss = loss + reg_weight * _masked_ccc_loss(out[:, n_classes:], y_t[t_idx], m_t[t_idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            row = {"epoch": epoch, "train_loss": total / n, "valid_ua": math.nan, "valid_ccc": math.nan}
            if not math.isfinite(row["train_loss"]):
                raise ParameterError(
                    f"{type(self).__name__}: training diverged at epoch {epoch} (loss {row['train_loss']}); "
                    f"lower lr={self.lr!r}"
                )
            if valid is not None:
                raw = self._forward_all(module, valid[0], device)
                row["valid_ua"], row["valid_ccc"] = self._valid_scores(raw, valid[1], valid[2])
                # UA + mean CCC; without a usable CCC (no dimension rated twice in valid) UA alone
                score = row["valid_ua"] + (row["valid_ccc"] if math.isfinite(row["valid_ccc"]) else 0.0)
                if best_state is None or score > best_score:
                    best_score, best_epoch, bad = score, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    bad += 1
            history.append(row)
            log.debug("%s epoch %d: %s", type(self).__name__, epoch, row)
            if valid is not None and self.patience is not None and bad >= self.patience:
                break
        if best_state is not None:
            module.load_state_dict(best_state)
        else:
            best_epoch = len(history)
        module.eval()
        return module, history, best_epoch

    def _raw(self, X: Any) -> np.ndarray:
        """Raw network outputs for ``X``: (n, K + k), float64."""
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        Xs = (X - self.x_mean_) / self.x_scale_
        device = next(self.module_.parameters()).device
        with _torch_context(seed=int(self.seed), n_threads=self.n_threads, deterministic=True, device=device):
            return self._forward_all(self.module_, Xs, device)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n, d)

        Returns
        -------
        np.ndarray of shape (n, len(classes_)), float64
            Columns in ``classes_`` order; rows sum to 1.
        """
        logits = self._raw(X)[:, : len(self.classes_)]
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted label codes.

        Parameters
        ----------
        X : array-like of shape (n, d)

        Returns
        -------
        np.ndarray of shape (n,), int64
            Values from ``classes_``.
        """
        proba = self.predict_proba(X)  # first: raises NotFittedError before classes_ is looked up
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_values(self, X: Any) -> np.ndarray:
        """Predicted dimension values on the scale of each training dimension.

        Parameters
        ----------
        X : array-like of shape (n, d)

        Returns
        -------
        np.ndarray of shape (n, k), float64
            Column ``j`` predicts column ``j + 1`` of the training ``y``.
        """
        z = self._raw(X)[:, len(self.classes_) :]
        return z * self.y_scale_ + self.y_mean_

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of :meth:`predict` on the label codes (column 0 of a 2-D ``y``, or a 1-D ``y``).

        Parameters
        ----------
        X : array-like of shape (n, d)
        y : array-like of shape (n, 1 + k) or (n,)
        sample_weight : array-like of shape (n,), optional

        Returns
        -------
        float
        """
        y = np.asarray(y)
        return super().score(X, y[:, 0] if y.ndim == 2 else y, sample_weight=sample_weight)

    # -- saving without pickle ----------------------------------------------------------------------------
    def export_weights(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The fitted head as tensors and JSON-safe attributes, for saving without pickle.

        Returns
        -------
        tensors : dict of str to torch.Tensor
            The module's state dict (CPU, contiguous copies, under its own keys such as ``"0.weight"``), the
            feature standardisation under ``"fitted.x_mean_"`` / ``"fitted.x_scale_"`` (float32) and the
            dimensions' under ``"fitted.y_mean_"`` / ``"fitted.y_scale_"`` (float64), as fitted: what
            ``safetensors`` stores.
        fitted : dict
            ``classes`` (list of int label codes), ``n_dims``, ``n_features_in``, ``best_epoch``, ``n_iter``
            and, when fitted on named columns, ``feature_names_in``: what :meth:`import_weights` needs besides
            the estimator's parameters.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        """
        check_is_fitted(self, "module_")
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in self.module_.state_dict().items()}
        for names, dtype in ((_X_STATS, np.float32), (_Y_STATS, np.float64)):
            for name in names:
                tensors[_STAT_PREFIX + name] = torch.tensor(np.asarray(getattr(self, name), dtype=dtype))
        fitted: dict[str, Any] = {
            "classes": [int(c) for c in self.classes_],
            "n_dims": int(self.n_dims_),
            "n_features_in": int(self.n_features_in_),
            "best_epoch": int(getattr(self, "best_epoch_", 0)),
            "n_iter": int(getattr(self, "n_iter_", 0)),
        }
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in"] = [str(c) for c in self.feature_names_in_]
        return tensors, fitted

    def import_weights(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any]) -> MultiTaskHead:
        """Rebuild a fitted head from :meth:`export_weights` output, on the CPU and in eval mode.

        The estimator must carry the parameters it was trained with (the trunk's shape comes from
        ``hidden``); ``history_`` is not restored.

        Parameters
        ----------
        tensors : dict of str to torch.Tensor
            As returned by :meth:`export_weights` (e.g. read back with ``safetensors.torch.load_file``).
        fitted : dict
            As returned by :meth:`export_weights` (e.g. after a JSON round trip).

        Returns
        -------
        self

        Raises
        ------
        ParameterError
            torch missing, invalid parameters, or a stored state that does not fit them (layer shapes,
            missing or unexpected tensors or attributes, fewer than 2 classes, no dimension).
        """
        if torch is None:
            raise ParameterError(
                f"{type(self).__name__} needs torch, which is not installed ({_TORCH_MISSING})"
            )
        self._check_params()
        name = type(self).__name__
        state, stats = _split_tensors(tensors, _X_STATS + _Y_STATS, name)
        try:
            n, n_dims = int(fitted["n_features_in"]), int(fitted["n_dims"])
            classes = np.asarray(fitted["classes"])
            best_epoch, n_iter = int(fitted.get("best_epoch", 0)), int(fitted.get("n_iter", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"{name}: stored attributes are incomplete or invalid: {exc!r}") from None
        if (
            classes.ndim != 1
            or len(classes) < 2
            or not np.issubdtype(classes.dtype, np.integer)
            or np.any(np.diff(classes) <= 0)
        ):
            raise ParameterError(
                f"{name}: stored classes must be >= 2 increasing integer label codes, got {classes.tolist()}"
            )
        if n < 1 or n_dims < 1:
            raise ParameterError(
                f"{name}: stored attributes are invalid (n_features_in={n}, n_dims={n_dims})"
            )
        x_stats = [_stat_array(stats[s], (n,), np.float32, s, name) for s in _X_STATS]
        y_stats = [_stat_array(stats[s], (n_dims,), np.float64, s, name) for s in _Y_STATS]
        if np.any(y_stats[1] <= 0):
            raise ParameterError(f"{name}: stored y_scale_ must be > 0")
        names = _feature_names(fitted, n, name)
        module = _load_module(self._build(n, len(classes) + n_dims), state, name)
        self.classes_, self.n_dims_ = classes.astype(np.int64), n_dims
        self.n_features_in_, self.module_, self.device_ = n, module, "cpu"
        self.x_mean_, self.x_scale_ = x_stats
        self.y_mean_, self.y_scale_ = y_stats
        self.best_epoch_, self.n_iter_ = best_epoch, n_iter
        _set_feature_names(self, names)
        self.__dict__.pop("history_", None)  # a previous fit's history does not describe these weights
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        return tags

    def __getstate__(self) -> dict[str, Any]:
        # Fitted modules are pickled on CPU so a model trained on a GPU loads anywhere.
        state = dict(super().__getstate__())
        if "module_" in state:
            state["module_"] = copy.deepcopy(state["module_"]).cpu()
        return state


def make_mtl_head(*, seed: int, **overrides: Any) -> MultiTaskHead:
    """:class:`MultiTaskHead` with its defaults; ``overrides`` are its parameters (``reg_weight=0.5``)."""
    return MultiTaskHead(seed=seed, **overrides)


# --------------------------------------------------------------------------------------------- registration

_MTL_HEAD = ModelSpec(
    name="mtl_head",
    family="neural",
    factory=make_mtl_head,
    task="multitask",
    input="pooled",
    sample_weight=True,
    uses_validation=True,
    description=(
        "torch MLP (256, GELU, dropout) with class and dimension outputs: weighted cross-entropy + "
        "1 - CCC, early stopping on validation UA + CCC"
    ),
    param_grid={"lr": [1e-3, 3e-4], "dropout": [0.1, 0.2, 0.4], "reg_weight": [0.5, 1.0, 2.0]},
)


def _register() -> None:
    """Register ``mtl_head`` (idempotent), or record it as unavailable without torch."""
    if torch is None:
        register_unavailable(_MTL_HEAD.name, f"needs the torch package (pip install torch): {_TORCH_MISSING}")
        log.debug("model %s not registered: %s", _MTL_HEAD.name, _TORCH_MISSING)
        return
    existing = registry.MODELS.get(_MTL_HEAD.name)
    if existing is not None and existing.factory is _MTL_HEAD.factory:
        return  # module re-imported
    register_model(_MTL_HEAD)


_register()
