"""``soft_vote``: a weighted soft vote over registered models of one feature view, the weights fitted on the
fold's validation part only.

Each member (by default ``logreg``, ``svm`` and ``mlp``, each with its own scaler) is fitted on the fold's
training part; the weights ``w`` (non-negative, summing to 1) minimise the negative log-likelihood of the
validation clips under ``sum_k w_k P_k(x)``; the vote is that mixture. The test part is never seen: the bench
passes the validation part as ``X_valid`` / ``y_valid`` (:attr:`ModelSpec.uses_validation`), exactly as it
does for the neural heads' early stopping. Without a validation part the weights are equal. It runs only
when named (``--models soft_vote``): group selections (``all``, ``classic``) leave it out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from sertool.exceptions import ParameterError

__all__ = ["SoftVote", "vote_weights"]

log = logging.getLogger(__name__)

#: Probabilities are clipped to at least this before their log is taken.
_FLOOR = 1e-12


def vote_weights(probas: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Mixture weights on the simplex that minimise the NLL of ``y`` under ``sum_k w_k probas[k]``.

    Parameters
    ----------
    probas : sequence of ndarray, each (n, K)
        Each member's class probabilities of the same clips, columns in one order.
    y : ndarray of int, shape (n,)
        The column of each clip's true class.

    Returns
    -------
    ndarray, shape (len(probas),)
        Non-negative weights summing to 1 (a softmax of the optimised parameters).
    """
    # the probability each member gives each clip's true class: the NLL only needs these
    p_true = np.stack([np.asarray(p, dtype=np.float64)[np.arange(len(y)), y] for p in probas], axis=1)

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        mix = np.maximum(p_true @ w, _FLOOR)
        value = -np.log(mix).mean()
        # d/dw_k of the mean NLL, then through the softmax: dw_j/dtheta_k = w_j (delta_jk - w_k)
        grad_w = -(p_true / mix[:, None]).mean(axis=0)
        return float(value), w * (grad_w - w @ grad_w)

    res = minimize(nll, np.zeros(len(probas)), jac=True, method="L-BFGS-B")
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


class SoftVote(ClassifierMixin, BaseEstimator):
    """Weighted soft vote over registered models, weights fitted on held-out validation clips.

    Parameters
    ----------
    members : tuple of str
        Registered models that output probabilities (each built by :func:`make_estimator` with ``seed``).
    weights : {"valid", "equal"}
        ``"valid"``: fitted on ``X_valid`` / ``y_valid`` (equal when none is given); ``"equal"``: ``1/k``.
    seed : int
        Seed of every member.
    """

    def __init__(
        self, members: Sequence[str] = ("logreg", "svm", "mlp"), weights: str = "valid", seed: int = 0
    ):
        self.members = members
        self.weights = weights
        self.seed = seed

    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        X_valid: Any = None,
        y_valid: Any = None,
    ) -> SoftVote:
        """Fit every member on ``(X, y)``, then the weights on ``(X_valid, y_valid)``.

        Returns
        -------
        SoftVote
            ``self``.
        """
        from sertool.models.registry import fit_estimator, make_estimator

        names = [self.members] if isinstance(self.members, str) else list(self.members)
        if not names or self.weights not in ("valid", "equal"):
            raise ParameterError(
                f"soft_vote needs members and weights 'valid' or 'equal', got {self.members!r}, {self.weights!r}"
            )
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.estimators_ = []
        for name in names:
            est = clone(make_estimator(name, seed=self.seed))
            if not hasattr(est, "predict_proba"):
                raise ParameterError(f"soft_vote member {name!r} gives no probabilities")
            self.estimators_.append(fit_estimator(est, X, y, sample_weight=sample_weight))
        self.member_names_ = names
        self.weights_ = np.full(len(names), 1.0 / len(names))
        if self.weights == "valid" and X_valid is not None and y_valid is not None and len(y_valid):
            y_valid = np.asarray(y_valid)
            known = np.isin(y_valid, self.classes_)
            if known.any():
                col = np.searchsorted(self.classes_, y_valid[known])
                probas = [self._member_proba(e, X_valid)[known] for e in self.estimators_]
                self.weights_ = vote_weights(probas, col)
        log.debug("soft_vote weights %s", dict(zip(names, np.round(self.weights_, 3), strict=True)))
        return self

    def _member_proba(self, est: Any, X: Any) -> np.ndarray:
        """A member's probabilities in ``classes_`` order (a class it never saw gets 0)."""
        proba = np.zeros((len(X), len(self.classes_)))
        cols = np.searchsorted(self.classes_, est.classes_)
        proba[:, cols] = est.predict_proba(X)
        return proba

    def predict_proba(self, X: Any) -> np.ndarray:
        """The weighted mixture of the members' probabilities, shape ``(n, len(classes_))``."""
        return sum(w * self._member_proba(e, X) for w, e in zip(self.weights_, self.estimators_, strict=True))

    def predict(self, X: Any) -> np.ndarray:
        """The class of the largest mixture probability."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _register() -> None:
    from sertool.models.registry import MODELS, ModelSpec, register_model

    if "soft_vote" in MODELS and MODELS["soft_vote"].factory is _make:
        return
    register_model(
        ModelSpec(
            name="soft_vote",
            family="classic",
            factory=_make,
            sample_weight=True,
            uses_validation=True,
            description="weighted soft vote of logreg, svm and mlp; weights fitted on the validation part",
            features=(),  # runs only when named: `--models all` / `classic` boards keep their members' cost
        )
    )


def _make(*, seed: int, **overrides: Any) -> SoftVote:
    return SoftVote(seed=seed, **overrides)


_register()
