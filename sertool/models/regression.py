"""Regression models for dimensional SER targets (arousal, valence, dominance), registered with
``task="regression"``.

Classical regressors (same pipeline shape, thread and override conventions as :mod:`.classic`:
``Pipeline([("scale", StandardScaler()), ("clf", <regressor>)])``, parameter paths ``clf__...``, ``n_jobs``
from ``$SERTOOL_N_JOBS``):

=============  ==========================================================================================
name           model
=============  ==========================================================================================
``ridge``      ridge regression, alpha 1
``svr``        RBF support-vector regression, C 1, epsilon 0.1
``knn_reg``    k-NN regression, k 9, distance-weighted (no sample weights)
``mlp_reg``    scikit-learn MLP regressor, one hidden layer of 256 units
``xgb_reg``    XGBoost, 300 trees of depth 4 (needs ``xgboost``)
``lgbm_reg``   LightGBM, 300 trees of 15 leaves (needs ``lightgbm``)
``ccc_head``   torch MLP trained on 1 - CCC (or MSE), early stopping on validation CCC (needs ``torch``)
=============  ==========================================================================================

The classical regressors see ``y`` as given: SVR's ``epsilon`` (0.1) and MLP's initial scale suit targets
on a scale of about 1 (e.g. ``[-1, 1]`` or ``[1, 5]`` ratings); :class:`CCCHead` standardises ``y`` itself.

``mlp_reg``, like the classifier ``mlp``, uses no internal random validation split (its clips would share
speakers with the rest of the training part): it trains a fixed number of epochs. ``ccc_head`` stops early on
the fold's speaker-disjoint validation part (``uses_validation``).

This module imports without torch: then ``ccc_head`` is recorded as unavailable and the classical models
are registered all the same.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.svm import SVR
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from sertool.exceptions import ParameterError
from sertool.metrics_regression import ccc
from sertool.models import registry
from sertool.models.classic import n_jobs_from_env, scaled_pipeline
from sertool.models.registry import ModelSpec, accepts_sample_weight, register_model, register_unavailable

try:
    import torch
    from torch import nn

    from sertool.models.torch_base import _torch_context, resolve_device
except ModuleNotFoundError as _exc:  # torch absent: the classical regressors still register
    if (_exc.name or "").split(".")[0] != "torch":
        raise
    torch = None  # type: ignore[assignment]
    _TORCH_MISSING = str(_exc)
else:
    _TORCH_MISSING = ""

__all__ = [
    "CCCHead",
    "make_ccc_head",
    "make_knn_reg",
    "make_lgbm_reg",
    "make_mlp_reg",
    "make_ridge",
    "make_svr",
    "make_xgb_reg",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- factories


def make_ridge(*, seed: int, **overrides: Any) -> Pipeline:
    """Ridge regression, alpha 1 (``seed`` unused: the solution is unique)."""
    del seed
    return scaled_pipeline(Ridge(alpha=1.0), **overrides)


def make_svr(*, seed: int, **overrides: Any) -> Pipeline:
    """RBF support-vector regression, C 1, epsilon 0.1, gamma "scale" (``seed`` unused)."""
    del seed
    return scaled_pipeline(SVR(C=1.0, epsilon=0.1, kernel="rbf", gamma="scale"), **overrides)


def make_knn_reg(*, seed: int, **overrides: Any) -> Pipeline:
    """k-NN regression, k 9, distance-weighted (``seed`` unused: k-NN is deterministic)."""
    del seed
    clf = KNeighborsRegressor(n_neighbors=9, weights="distance", n_jobs=n_jobs_from_env())
    return scaled_pipeline(clf, **overrides)


def make_mlp_reg(*, seed: int, **overrides: Any) -> Pipeline:
    """One hidden layer of 256 ReLU units, L2 1e-3, Adam, up to 300 epochs, no internal validation split."""
    clf = MLPRegressor(
        hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=False, max_iter=300, random_state=seed
    )
    return scaled_pipeline(clf, **overrides)


def make_xgb_reg(*, seed: int, **overrides: Any) -> Pipeline:
    """XGBoost regressor, 300 trees of depth 4, learning rate 0.05, row 0.8 / column 0.5 subsampling."""
    from xgboost import XGBRegressor

    clf = XGBRegressor(
        n_estimators=300,
        max_depth=4,
        learning_rate=0.05,
        subsample=0.8,
        colsample_bytree=0.5,
        tree_method="hist",
        random_state=seed,
        n_jobs=n_jobs_from_env(),
        verbosity=0,
    )
    return scaled_pipeline(clf, **overrides)


def make_lgbm_reg(*, seed: int, **overrides: Any) -> Pipeline:
    """LightGBM regressor, 300 trees of 15 leaves, learning rate 0.05, subsampling, deterministic, quiet."""
    from lightgbm import LGBMRegressor

    clf = LGBMRegressor(
        n_estimators=300,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=10,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.5,
        random_state=seed,
        n_jobs=n_jobs_from_env(),
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    return scaled_pipeline(clf, **overrides)


# ------------------------------------------------------------------------------------------------ CCC head

_LOSSES = ("ccc", "mse")


def _is_int(v: Any, lo: int = 1) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= lo


def _weighted_ccc_loss(pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``1 - CCC`` of one batch, with sample weights (normalised to sum 1 within the batch)."""
    w = w / w.sum()
    mp, mt = (w * pred).sum(), (w * target).sum()
    dp, dt = pred - mp, target - mt
    var_p, var_t, cov = (w * dp * dp).sum(), (w * dt * dt).sum(), (w * dp * dt).sum()
    return 1.0 - 2.0 * cov / (var_p + var_t + (mp - mt) ** 2 + 1e-8)


#: Key prefix of the fitted standardisation arrays among the exported tensors (module keys never carry it).
_STAT_PREFIX = "fitted."
#: Fitted arrays :class:`CCCHead` exports as tensors (float32, shape (n_features,)).
_CCC_STATS = ("x_mean_", "x_scale_")


def _split_tensors(
    tensors: dict[str, Any], stat_names: tuple[str, ...], name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``tensors`` split into the module's state dict and the fitted arrays (``"fitted."`` keys)."""
    if not isinstance(tensors, dict):
        raise ParameterError(f"{name}: expected a dict of tensors, got {type(tensors).__name__}")
    state = {k: v for k, v in tensors.items() if not k.startswith(_STAT_PREFIX)}
    stats = {k[len(_STAT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_STAT_PREFIX)}
    missing, unexpected = sorted(set(stat_names) - set(stats)), sorted(set(stats) - set(stat_names))
    if missing or unexpected:
        raise ParameterError(
            f"{name}: stored fitted arrays do not fit: missing {missing}, unexpected {unexpected}"
        )
    return state, stats


def _stat_array(t: Any, shape: tuple[int, ...], dtype: Any, what: str, name: str) -> np.ndarray:
    """A stored fitted array as a numpy copy of ``dtype``, checked against ``shape`` and for finiteness."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != shape:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ParameterError(f"{name}: stored {what} has shape/type {got}, expected float {shape}")
    arr = t.detach().cpu().numpy().astype(dtype, copy=True)
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name}: stored {what} contains NaN or infinite values")
    return arr


def _feature_names(fitted: dict[str, Any], n: int, name: str) -> np.ndarray | None:
    """The stored ``feature_names_in`` (None when fitted without column names)."""
    names = fitted.get("feature_names_in")
    if names is None:
        return None
    if not isinstance(names, list | tuple) or len(names) != n or not all(isinstance(c, str) for c in names):
        raise ParameterError(f"{name}: stored feature_names_in is not a list of {n} strings")
    return np.asarray(names, dtype=object)


def _set_feature_names(est: Any, names: np.ndarray | None) -> None:
    if names is None:
        est.__dict__.pop("feature_names_in_", None)
    else:
        est.feature_names_in_ = names


def _load_module(module: nn.Module, state: dict[str, Any], name: str) -> nn.Module:
    """``module`` with ``state`` loaded (strict), in eval mode; a state that does not fit: ParameterError."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ParameterError(f"{name}: stored weights do not fit its parameters: {exc}") from None
    return module.eval()


class CCCHead(RegressorMixin, BaseEstimator):
    """A small torch MLP regressor on standardised pooled embeddings (registry name ``ccc_head``).

    ``X`` is standardised with the training data's per-feature mean and standard deviation, ``y`` is
    z-scored with the training targets' mean and standard deviation (predictions are mapped back), and the
    network ``[Linear -> GELU -> Dropout] * len(hidden) -> Linear(1)`` is trained with AdamW on
    ``1 - CCC`` of each mini-batch (``loss="ccc"``) or on the mean squared error (``loss="mse"``).

    Conventions of the torch heads (:mod:`sertool.models.torch_base`): ``__init__`` only stores parameters;
    ``fit(X, y, *, X_valid=, y_valid=, sample_weight=)`` uses the validation part (speaker-disjoint, never
    the test part) only for early stopping on validation CCC with best-weight restore; without it the head
    trains ``max_epochs`` epochs. ``seed`` seeds torch (inside ``torch.random.fork_rng``, the caller's RNG is
    untouched) and the batch order, so two CPU fits with the same seed and thread count predict the same.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer sizes.
    dropout : float
        Dropout after each hidden layer, ``0 <= dropout < 1``.
    lr : float
        AdamW learning rate.
    weight_decay : float
        AdamW (decoupled) weight decay.
    max_epochs : int
        Upper bound on epochs (exactly this many without validation data).
    patience : int or None
        Stop after this many epochs without a better validation CCC; ``None``: run ``max_epochs`` and still
        restore the best epoch.
    batch_size : int
        Training mini-batch size, >= 2 (CCC needs a spread within the batch). The permuted clips are cut into
        ``ceil(n / batch_size)`` near-equal batches, so no trailing batch of one clip occurs.
    seed : int
        Seed of the initialisation, dropout and batch order.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
    loss : {"ccc", "mse"}
        Training loss on the standardised target.
    n_threads : int or None
        torch intra-op threads during fit / predict (restored afterwards); ``None`` leaves torch's setting.

    Attributes
    ----------
    n_features_in_ : int
    module_ : torch.nn.Module
        Fitted network (eval mode), on standardised inputs, predicting the standardised target.
    x_mean_, x_scale_ : np.ndarray of shape (n_features,)
        Training feature means and standard deviations (1 where a feature is constant).
    y_mean_, y_scale_ : float
        Training target mean and standard deviation (1 when the target is constant).
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss`` (mean over batches, weighted by batch size), ``valid_ccc`` (NaN
        without validation data).
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
        loss: str = "ccc",
        n_threads: int | None = None,
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
        self.loss = loss
        self.n_threads = n_threads

    # -- validation ---------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        def need(cond: bool, pname: str, what: str) -> None:
            if not cond:
                raise ParameterError(f"{type(self).__name__}: {pname}={getattr(self, pname)!r}: {what}")

        need(
            isinstance(self.hidden, tuple | list) and all(_is_int(h) for h in self.hidden),
            "hidden",
            "expected a tuple of positive integers",
        )
        need(
            isinstance(self.dropout, int | float) and 0 <= self.dropout < 1,
            "dropout",
            "expected 0 <= dropout < 1",
        )
        need(isinstance(self.lr, int | float) and self.lr > 0, "lr", "expected a number > 0")
        need(
            isinstance(self.weight_decay, int | float) and self.weight_decay >= 0,
            "weight_decay",
            "expected >= 0",
        )
        need(_is_int(self.max_epochs), "max_epochs", "expected an integer >= 1")
        need(self.patience is None or _is_int(self.patience), "patience", "expected None or an integer >= 1")
        need(_is_int(self.batch_size, 2), "batch_size", "expected an integer >= 2")
        need(_is_int(self.seed, 0), "seed", "expected an integer >= 0")
        need(self.loss in _LOSSES, "loss", f"expected one of {_LOSSES}")
        need(self.n_threads is None or _is_int(self.n_threads), "n_threads", "expected None or >= 1")

    def _target(self, y: Any, n: int, *, x_name: str, name: str) -> np.ndarray:
        y = column_or_1d(y, warn=True).astype(np.float64)
        if len(y) != n:
            raise ParameterError(f"{x_name} has {n} samples but {name} has {len(y)}")
        if not np.all(np.isfinite(y)):
            raise ParameterError(f"{name} contains NaN or infinite values")
        return y

    # -- network ------------------------------------------------------------------------------------------
    def _build(self, n_features: int) -> nn.Module:
        layers: list[nn.Module] = []
        n_in = n_features
        for h in self.hidden:
            layers += [nn.Linear(n_in, int(h)), nn.GELU(), nn.Dropout(float(self.dropout))]
            n_in = int(h)
        layers.append(nn.Linear(n_in, 1))
        return nn.Sequential(*layers)

    def _forward_all(self, module: nn.Module, Xs: np.ndarray, device: torch.device) -> np.ndarray:
        """Standardised-scale predictions of standardised rows ``Xs``, float64 (module in eval mode)."""
        module.eval()
        out = np.empty(len(Xs), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(Xs), 1024):
                xb = torch.from_numpy(Xs[start : start + 1024]).to(device)
                out[start : start + len(xb)] = module(xb).squeeze(1).double().cpu().numpy()
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
    ) -> CCCHead:
        """Train the head.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Pooled training features (float16 accepted).
        y : array-like of shape (n,)
            Continuous training target.
        X_valid, y_valid : array-like of shape (m, d) and (m,), optional
            The fold's validation part, only for early stopping and best-epoch selection on CCC.
        sample_weight : array-like of shape (n,), optional
            Per-clip loss weights (normalised to mean 1; in the CCC loss they weight the batch moments).

        Returns
        -------
        self
        """
        if torch is None:
            raise ParameterError(
                f"{type(self).__name__} needs torch, which is not installed ({_TORCH_MISSING})"
            )
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X = validate_data(self, X, reset=True, dtype=np.float32)
        y = self._target(y, len(X), x_name="X", name="y")
        if len(y) < 2:
            raise ParameterError(
                f"{type(self).__name__}: need at least 2 training samples, got n_samples={len(y)}"
            )
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
            raise ParameterError("sample_weight: weights must be finite and >= 0 with a positive sum")
        weights = weights / weights.mean()

        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        self.x_mean_ = mean.astype(np.float32)
        self.x_scale_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        y_std = float(y.std())
        self.y_mean_ = float(y.mean())
        self.y_scale_ = y_std if y_std > 1e-12 else 1.0
        Xs = (X - self.x_mean_) / self.x_scale_
        ys = (y - self.y_mean_) / self.y_scale_

        valid = None
        if (X_valid is None) != (y_valid is None):
            raise ParameterError("X_valid and y_valid must be given together")
        if X_valid is not None:
            Xv = validate_data(self, X_valid, reset=False, dtype=np.float32)
            yv = self._target(y_valid, len(Xv), x_name="X_valid", name="y_valid")
            valid = ((Xv - self.x_mean_) / self.x_scale_, yv)

        device = resolve_device(self.device)
        self.device_ = str(device)
        with _torch_context(seed=int(self.seed), n_threads=self.n_threads, deterministic=True, device=device):
            module, history, best_epoch = self._train(Xs, ys, weights, valid, device)
        self.module_ = module
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.n_iter_ = len(history)
        log.info(
            "%s: %d epochs, best epoch %d%s",
            type(self).__name__,
            len(history),
            best_epoch,
            f" (valid CCC {history[best_epoch - 1]['valid_ccc']:.3f})" if valid is not None else "",
        )
        return self

    def _train(
        self,
        Xs: np.ndarray,
        ys: np.ndarray,
        weights: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray] | None,
        device: torch.device,
    ) -> tuple[nn.Module, list[dict[str, float]], int]:
        """Train a fresh, seeded module; returns (module at its best epoch, history, best epoch)."""
        n = len(Xs)
        rng = np.random.default_rng(int(self.seed))
        module = self._build(Xs.shape[1]).to(device)
        opt = torch.optim.AdamW(module.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        x_t = torch.from_numpy(np.ascontiguousarray(Xs, dtype=np.float32)).to(device)
        y_t = torch.from_numpy(ys.astype(np.float32)).to(device)
        w_t = torch.from_numpy(weights.astype(np.float32)).to(device)
        n_batches = max(1, math.ceil(n / int(self.batch_size)))
        history: list[dict[str, float]] = []
        best_score, best_state, best_epoch, bad = -math.inf, None, int(self.max_epochs), 0
        for epoch in range(1, int(self.max_epochs) + 1):
            module.train()
            total = 0.0
            for idx in np.array_split(rng.permutation(n), n_batches):
                t_idx = torch.from_numpy(idx).to(device)
                pred = module(x_t[t_idx]).squeeze(1)
                yb, wb = y_t[t_idx], w_t[t_idx]
                if self.loss == "ccc":
                    loss = _weighted_ccc_loss(pred, yb, wb)
                else:
                    loss = (wb * (pred - yb) ** 2).sum() / wb.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            row = {"epoch": epoch, "train_loss": total / n, "valid_ccc": math.nan}
            if not math.isfinite(row["train_loss"]):
                raise ParameterError(
                    f"{type(self).__name__}: training diverged at epoch {epoch} (loss {row['train_loss']}); "
                    f"lower lr={self.lr!r}"
                )
            if valid is not None:
                pv = self._forward_all(module, valid[0], device) * self.y_scale_ + self.y_mean_
                row["valid_ccc"] = ccc(valid[1], pv) if np.all(np.isfinite(pv)) else math.nan
                score = row["valid_ccc"] if math.isfinite(row["valid_ccc"]) else -math.inf
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

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets on the scale of the training ``y``.

        Parameters
        ----------
        X : array-like of shape (n, d)

        Returns
        -------
        np.ndarray of shape (n,), float64
        """
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        Xs = (X - self.x_mean_) / self.x_scale_
        device = next(self.module_.parameters()).device
        with _torch_context(seed=int(self.seed), n_threads=self.n_threads, deterministic=True, device=device):
            z = self._forward_all(self.module_, Xs, device)
        return z * self.y_scale_ + self.y_mean_

    # -- saving without pickle ----------------------------------------------------------------------------
    def export_weights(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The fitted head as tensors and JSON-safe attributes, for saving without pickle.

        Returns
        -------
        tensors : dict of str to torch.Tensor
            The module's state dict (CPU, contiguous copies, under its own keys such as ``"0.weight"``) and
            the feature standardisation under ``"fitted.x_mean_"`` and ``"fitted.x_scale_"`` (float32, as
            fitted): what ``safetensors`` stores.
        fitted : dict
            ``n_features_in``, ``y_mean``, ``y_scale`` (floats; JSON keeps a float exactly), ``best_epoch``,
            ``n_iter`` and, when fitted on named columns, ``feature_names_in``: what :meth:`import_weights`
            needs besides the estimator's parameters.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        """
        check_is_fitted(self, "module_")
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in self.module_.state_dict().items()}
        for name in _CCC_STATS:
            tensors[_STAT_PREFIX + name] = torch.tensor(np.asarray(getattr(self, name), dtype=np.float32))
        fitted: dict[str, Any] = {
            "n_features_in": int(self.n_features_in_),
            "y_mean": float(self.y_mean_),
            "y_scale": float(self.y_scale_),
            "best_epoch": int(getattr(self, "best_epoch_", 0)),
            "n_iter": int(getattr(self, "n_iter_", 0)),
        }
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in"] = [str(c) for c in self.feature_names_in_]
        return tensors, fitted

    def import_weights(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any]) -> CCCHead:
        """Rebuild a fitted head from :meth:`export_weights` output, on the CPU and in eval mode.

        The estimator must carry the parameters it was trained with (the network's shape comes from
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
            missing or unexpected tensors or attributes).
        """
        if torch is None:
            raise ParameterError(
                f"{type(self).__name__} needs torch, which is not installed ({_TORCH_MISSING})"
            )
        self._check_params()
        name = type(self).__name__
        state, stats = _split_tensors(tensors, _CCC_STATS, name)
        try:
            n = int(fitted["n_features_in"])
            y_mean, y_scale = float(fitted["y_mean"]), float(fitted["y_scale"])
            best_epoch, n_iter = int(fitted.get("best_epoch", 0)), int(fitted.get("n_iter", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"{name}: stored attributes are incomplete or invalid: {exc!r}") from None
        if n < 1 or not (math.isfinite(y_mean) and math.isfinite(y_scale) and y_scale > 0):
            raise ParameterError(
                f"{name}: stored attributes are invalid (n_features_in={n}, y_mean={y_mean}, y_scale={y_scale})"
            )
        x_mean = _stat_array(stats["x_mean_"], (n,), np.float32, "x_mean_", name)
        x_scale = _stat_array(stats["x_scale_"], (n,), np.float32, "x_scale_", name)
        names = _feature_names(fitted, n, name)
        module = _load_module(self._build(n), state, name)
        self.n_features_in_, self.module_, self.device_ = n, module, "cpu"
        self.x_mean_, self.x_scale_, self.y_mean_, self.y_scale_ = x_mean, x_scale, y_mean, y_scale
        self.best_epoch_, self.n_iter_ = best_epoch, n_iter
        _set_feature_names(self, names)
        self.__dict__.pop("history_", None)  # a previous fit's history does not describe these weights
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Fitted modules are pickled on CPU so a model trained on a GPU loads anywhere.
        state = dict(super().__getstate__())
        if "module_" in state:
            state["module_"] = copy.deepcopy(state["module_"]).cpu()
        return state


def make_ccc_head(*, seed: int, **overrides: Any) -> CCCHead:
    """:class:`CCCHead` with its defaults; ``overrides`` are its parameters (``lr=3e-4``, ``loss="mse"``)."""
    return CCCHead(seed=seed, **overrides)


# --------------------------------------------------------------------------------------------- registration

_CLASSIC: list[tuple[ModelSpec, str | None]] = [
    (
        ModelSpec(
            name="ridge",
            family="classic",
            factory=make_ridge,
            task="regression",
            description="ridge regression (alpha=1) on standardised features",
            param_grid={"clf__alpha": [0.1, 1.0, 10.0, 100.0]},
        ),
        None,
    ),
    (
        ModelSpec(
            name="svr",
            family="classic",
            factory=make_svr,
            task="regression",
            description="RBF support-vector regression (C=1, epsilon=0.1, gamma=scale)",
            param_grid={"clf__C": [0.1, 1.0, 10.0]},
        ),
        None,
    ),
    (
        ModelSpec(
            name="knn_reg",
            family="classic",
            factory=make_knn_reg,
            task="regression",
            sample_weight=False,
            description="k-nearest-neighbour regression (k=9, distance-weighted) on standardised features",
            param_grid={"clf__n_neighbors": [5, 9, 15]},
        ),
        None,
    ),
    (
        ModelSpec(
            name="mlp_reg",
            family="classic",
            factory=make_mlp_reg,
            task="regression",
            # scikit-learn's MLPRegressor takes sample_weight since 1.7; ask the estimator, not the version
            sample_weight=accepts_sample_weight(make_mlp_reg(seed=0)),
            description="scikit-learn MLP regressor, one hidden layer of 256 units, internal early stopping",
            param_grid={"clf__alpha": [1e-4, 1e-3, 1e-2], "clf__hidden_layer_sizes": [(128,), (256,)]},
        ),
        None,
    ),
    (
        ModelSpec(
            name="xgb_reg",
            family="classic",
            factory=make_xgb_reg,
            task="regression",
            description="XGBoost regressor, 300 trees of depth 4",
            param_grid={"clf__max_depth": [3, 4, 6], "clf__learning_rate": [0.05, 0.1]},
        ),
        "xgboost",
    ),
    (
        ModelSpec(
            name="lgbm_reg",
            family="classic",
            factory=make_lgbm_reg,
            task="regression",
            description="LightGBM regressor, 300 trees of 15 leaves",
            param_grid={"clf__num_leaves": [7, 15, 31], "clf__learning_rate": [0.05, 0.1]},
        ),
        "lightgbm",
    ),
]

_CCC_HEAD = ModelSpec(
    name="ccc_head",
    family="neural",
    factory=make_ccc_head,
    task="regression",
    sample_weight=True,
    uses_validation=True,
    description="torch MLP (256, GELU, dropout) trained on 1 - CCC, early stopping on validation CCC",
    param_grid={"lr": [1e-3, 3e-4], "dropout": [0.1, 0.2, 0.4], "loss": ["ccc", "mse"]},
)


def _register() -> None:
    """Register the regressors (idempotent: a re-import leaves entries of the same factories alone)."""
    specs: list[ModelSpec] = []
    for spec, package in _CLASSIC:
        if package is not None and importlib.util.find_spec(package) is None:
            register_unavailable(spec.name, f"needs the {package} package (pip install {package})")
            log.debug("model %s not registered: %s is not installed", spec.name, package)
        else:
            specs.append(spec)
    if torch is None:
        register_unavailable(_CCC_HEAD.name, f"needs the torch package (pip install torch): {_TORCH_MISSING}")
        log.debug("model %s not registered: %s", _CCC_HEAD.name, _TORCH_MISSING)
    else:
        specs.append(_CCC_HEAD)
    for spec in specs:
        if spec.name in registry.MODELS and registry.MODELS[spec.name].factory is spec.factory:
            continue  # module re-imported
        register_model(spec)


_register()
