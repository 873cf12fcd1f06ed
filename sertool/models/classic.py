"""Classical models on pooled features: scikit-learn, XGBoost and LightGBM pipelines, and a GMM classifier.

Every model is ``Pipeline([("scale", StandardScaler()), ("clf", <classifier>)])`` with SER-sized defaults
(a few hundred to a few thousand utterances, 40-1500 dimensions), seeded through ``seed``. The tree models
do not need scaling, but one pipeline shape for all keeps parameter paths (``clf__...``) uniform.

Threads: models that can use several cores (k-NN, random forest, XGBoost, LightGBM) take ``n_jobs`` from
the environment variable ``SERTOOL_N_JOBS`` (default 1), read when the estimator is built. Folds run one
after the other, and the benchmark machines are shared, so one thread per model is the polite default; set
``SERTOOL_N_JOBS=-1`` on a machine of your own. The tree boosters are configured to give identical results
for a given seed whatever the thread count.

Overrides: each factory takes ``seed`` and keyword overrides. An override named like a parameter of the
classifier (``n_neighbors=7``) is applied to it; full pipeline paths (``clf__n_neighbors=7``,
``scale__with_std=False``) are applied as they are.

Not here on purpose: no model uses an internal random validation split (MLP ``early_stopping`` is off),
because in SER such a split would put clips of one speaker on both sides; model selection belongs to a
speaker-disjoint validation part of the saved split.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from sertool.exceptions import ParameterError
from sertool.models.registry import ModelSpec, register_model, register_unavailable

__all__ = ["GMMClassifier", "n_jobs_from_env", "scaled_pipeline"]

log = logging.getLogger(__name__)

N_JOBS_ENV = "SERTOOL_N_JOBS"


def n_jobs_from_env() -> int:
    """Thread count for multi-core models: ``$SERTOOL_N_JOBS`` (an integer, ``-1`` = all cores), default 1."""
    raw = os.environ.get(N_JOBS_ENV, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        raise ParameterError(f"{N_JOBS_ENV}={raw!r} is not an integer") from None
    if value == 0 or value < -1:
        raise ParameterError(f"{N_JOBS_ENV}={raw!r}: use a positive thread count or -1 (all cores)")
    return value


def scaled_pipeline(clf: BaseEstimator, **overrides: Any) -> Pipeline:
    """``Pipeline([("scale", StandardScaler()), ("clf", clf)])`` with ``overrides`` applied.

    Parameters
    ----------
    clf : estimator
        The classifier.
    **overrides
        Classifier parameter names (``C=1``), or names of the estimator a meta-classifier wraps
        (``C`` for ``CalibratedClassifierCV(SVC())``), or full pipeline paths (``clf__C=1``).

    Raises
    ------
    ParameterError
        For a name that matches nothing; the message lists the classifier's parameters.
    """
    pipe = Pipeline([("scale", StandardScaler()), ("clf", clf)])
    if not overrides:
        return pipe
    valid = pipe.get_params(deep=True)
    routed: dict[str, Any] = {}
    for key, value in overrides.items():
        for candidate in (key, f"clf__{key}", f"clf__estimator__{key}"):
            if "__" in candidate and candidate in valid:
                routed[candidate] = value
                break
        else:
            names = sorted(k.removeprefix("clf__") for k in valid if k.startswith("clf__"))
            raise ParameterError(
                f"{type(clf).__name__} has no parameter {key!r}; valid: {', '.join(names)} "
                "(or a pipeline path such as scale__with_mean)"
            )
    return pipe.set_params(**routed)


# ------------------------------------------------------------------------------------------ GMM classifier

_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_PRIORS = ("empirical", "uniform")


class GMMClassifier(ClassifierMixin, BaseEstimator):
    """One Gaussian mixture per class; predict the class of highest log-likelihood + log prior.

    (Mixins come before :class:`~sklearn.base.BaseEstimator`, the order scikit-learn requires.)

    Parameters
    ----------
    n_components : int
        Mixture components per class. A class with fewer training samples gets as many components as it
        has samples (recorded in ``n_components_``).
    covariance_type : {"full", "tied", "diag", "spherical"}
        As in :class:`~sklearn.mixture.GaussianMixture`; ``"diag"`` suits standardised SER features of a
        few hundred dimensions with ~100 clips per class.
    reg_covar : float
        Added to covariance diagonals; larger than scikit-learn's 1e-6 default because per-class SER data
        are small.
    max_iter, n_init : int
        EM iterations and restarts per class.
    priors : {"empirical", "uniform"}
        Class priors: training frequencies, or equal (the generative counterpart of balanced sample
        weights: the class-conditional densities do not change, only the priors).
    seed : int, RandomState or None
        Seeds the per-class mixtures.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    gmms_ : list of GaussianMixture
        One per class, in ``classes_`` order.
    n_components_ : ndarray of shape (n_classes,)
    n_iter_ : ndarray of shape (n_classes,)
        EM iterations of the best initialisation of each class's mixture.
    class_log_prior_ : ndarray of shape (n_classes,)
    n_features_in_ : int

    Notes
    -----
    ``fit`` takes no ``sample_weight`` (EM in scikit-learn has none); use ``priors="uniform"`` for a
    class-balanced model.
    """

    def __init__(
        self,
        n_components: int = 4,
        *,
        covariance_type: str = "diag",
        reg_covar: float = 1e-3,
        max_iter: int = 200,
        n_init: int = 1,
        priors: str = "empirical",
        seed: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.priors = priors
        self.seed = seed

    def _check_params(self) -> None:
        for name in ("n_components", "max_iter", "n_init"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ParameterError(f"GMMClassifier: {name} must be a positive integer, got {value!r}")
        if self.covariance_type not in _COVARIANCE_TYPES:
            raise ParameterError(
                f"GMMClassifier: covariance_type must be one of {_COVARIANCE_TYPES}, "
                f"got {self.covariance_type!r}"
            )
        if not isinstance(self.reg_covar, int | float | np.floating) or not self.reg_covar >= 0:
            raise ParameterError(f"GMMClassifier: reg_covar must be a number >= 0, got {self.reg_covar!r}")
        if self.priors not in _PRIORS:
            raise ParameterError(f"GMMClassifier: priors must be one of {_PRIORS}, got {self.priors!r}")

    def fit(self, X: Any, y: Any) -> GMMClassifier:
        """Fit one mixture per class.

        Parameters
        ----------
        X : array-like of shape (n, dim)
        y : array-like of shape (n,)

        Returns
        -------
        self
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        counts = np.bincount(y_idx, minlength=self.classes_.size)
        rs = check_random_state(self.seed)
        self.gmms_ = []
        for k in range(self.classes_.size):
            Xk = X[y_idx == k]
            gm = GaussianMixture(
                n_components=min(int(self.n_components), Xk.shape[0]),
                covariance_type=self.covariance_type,
                reg_covar=float(self.reg_covar),
                max_iter=int(self.max_iter),
                n_init=int(self.n_init),
                random_state=int(rs.randint(np.iinfo(np.int32).max)),
            )
            self.gmms_.append(gm.fit(Xk))
        self.n_components_ = np.array([gm.n_components for gm in self.gmms_])
        self.n_iter_ = np.array([gm.n_iter_ for gm in self.gmms_])
        prior = counts / counts.sum() if self.priors == "empirical" else np.full(counts.size, 1 / counts.size)
        self.class_log_prior_ = np.log(prior)
        return self

    def _joint_log_likelihood(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return np.column_stack([gm.score_samples(X) for gm in self.gmms_]) + self.class_log_prior_

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log posterior of each class, shape ``(n, n_classes)``, columns in ``classes_`` order."""
        jll = self._joint_log_likelihood(X)
        return jll - logsumexp(jll, axis=1, keepdims=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior of each class (softmax of the joint log-likelihoods), shape ``(n, n_classes)``."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row, shape ``(n,)``."""
        jll = self._joint_log_likelihood(X)
        return self.classes_[np.argmax(jll, axis=1)]


# ---------------------------------------------------------------------------------------------- factories


def make_knn(*, seed: int, **overrides: Any) -> Pipeline:
    """k-NN, distance-weighted, k=5 (``seed`` unused: k-NN is deterministic)."""
    del seed
    clf = KNeighborsClassifier(
        n_neighbors=5, weights="distance", metric="euclidean", n_jobs=n_jobs_from_env()
    )
    return scaled_pipeline(clf, **overrides)


def make_mlp(*, seed: int, **overrides: Any) -> Pipeline:
    """One hidden layer of 256 ReLU units, L2 1e-3, Adam, up to 500 epochs, no internal validation split."""
    clf = MLPClassifier(
        hidden_layer_sizes=(256,),
        alpha=1e-3,
        learning_rate_init=1e-3,
        max_iter=500,
        early_stopping=False,
        random_state=seed,
    )
    return scaled_pipeline(clf, **overrides)


def make_xgb(*, seed: int, **overrides: Any) -> Pipeline:
    """XGBoost, 300 trees of depth 6, learning rate 0.1, row/column subsampling 0.8, ``hist``."""
    from xgboost import XGBClassifier

    clf = XGBClassifier(
        n_estimators=300,
        learning_rate=0.1,
        max_depth=6,
        subsample=0.8,
        colsample_bytree=0.8,
        tree_method="hist",
        random_state=seed,
        n_jobs=n_jobs_from_env(),
        verbosity=0,
    )
    return scaled_pipeline(clf, **overrides)


def make_lgbm(*, seed: int, **overrides: Any) -> Pipeline:
    """LightGBM, 300 trees of 31 leaves, learning rate 0.05, subsampling 0.8, deterministic, quiet."""
    from lightgbm import LGBMClassifier

    clf = LGBMClassifier(
        n_estimators=300,
        learning_rate=0.05,
        num_leaves=31,
        min_child_samples=10,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=seed,
        n_jobs=n_jobs_from_env(),
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    return scaled_pipeline(clf, **overrides)


def make_svm(*, seed: int, **overrides: Any) -> Pipeline:
    """RBF SVM (C=10, gamma="scale") with temperature-scaled probabilities.

    ``SVC(probability=True)`` is deprecated in scikit-learn 1.9; its replacement is
    ``CalibratedClassifierCV(SVC(), ensemble=False)``: the SVM is fitted on all the data and a temperature
    is fitted on 3-fold cross-validated decision values. Temperature scaling keeps the SVM's own ranking of
    classes, so ``predict`` is the SVM's one-vs-rest decision. The 3 calibration folds are stratified by
    class but not by speaker; they shape only the probabilities' sharpness, never the test fold. ``seed``
    is unused (the SVM is deterministic).
    """
    del seed
    clf = CalibratedClassifierCV(
        SVC(C=10.0, kernel="rbf", gamma="scale"), method="temperature", cv=3, ensemble=False
    )
    return scaled_pipeline(clf, **overrides)


def make_gmm(*, seed: int, **overrides: Any) -> Pipeline:
    """:class:`GMMClassifier` with 4 diagonal components per class."""
    return scaled_pipeline(GMMClassifier(n_components=4, covariance_type="diag", seed=seed), **overrides)


def make_logreg(*, seed: int, **overrides: Any) -> Pipeline:
    """Multinomial logistic regression, C=1, lbfgs, up to 2000 iterations."""
    return scaled_pipeline(LogisticRegression(C=1.0, max_iter=2000, random_state=seed), **overrides)


def make_rf(*, seed: int, **overrides: Any) -> Pipeline:
    """Random forest of 300 trees, sqrt features per split."""
    clf = RandomForestClassifier(
        n_estimators=300, max_features="sqrt", random_state=seed, n_jobs=n_jobs_from_env()
    )
    return scaled_pipeline(clf, **overrides)


def make_gnb(*, seed: int, **overrides: Any) -> Pipeline:
    """Gaussian naive Bayes (``seed`` unused)."""
    del seed
    return scaled_pipeline(GaussianNB(), **overrides)


def make_dtree(*, seed: int, **overrides: Any) -> Pipeline:
    """A single decision tree (a weak baseline), at least 2 samples per leaf."""
    return scaled_pipeline(DecisionTreeClassifier(min_samples_leaf=2, random_state=seed), **overrides)


# --------------------------------------------------------------------------------------------- registration

_BUILTINS: list[tuple[ModelSpec, str | None]] = [
    (
        ModelSpec(
            name="knn",
            family="classic",
            factory=make_knn,
            sample_weight=False,
            description="k-nearest neighbours (k=5, distance-weighted) on standardised features",
            param_grid={
                "clf__n_neighbors": [3, 5, 7, 9, 11, 15],
                "clf__weights": ["uniform", "distance"],
                "clf__metric": ["euclidean", "manhattan", "cosine"],
            },
        ),
        None,
    ),
    (
        ModelSpec(
            name="gnb",
            family="classic",
            factory=make_gnb,
            description="Gaussian naive Bayes",
            param_grid={"clf__var_smoothing": [1e-9, 1e-6, 1e-3]},
        ),
        None,
    ),
    (
        ModelSpec(
            name="dtree",
            family="classic",
            factory=make_dtree,
            description="decision tree (weak baseline)",
            param_grid={"clf__max_depth": [None, 8, 16], "clf__min_samples_leaf": [2, 5, 10]},
        ),
        None,
    ),
    (
        ModelSpec(
            name="logreg",
            family="classic",
            factory=make_logreg,
            description="multinomial logistic regression (C=1)",
            param_grid={"clf__C": [0.01, 0.1, 1.0, 10.0]},
        ),
        None,
    ),
    (
        ModelSpec(
            name="gmm",
            family="classic",
            factory=make_gmm,
            sample_weight=False,
            description="one Gaussian mixture per class (4 diagonal components), max log-likelihood + prior",
            param_grid={
                "clf__n_components": [1, 2, 4, 8],
                "clf__covariance_type": ["diag", "full"],
                "clf__priors": ["empirical", "uniform"],
            },
        ),
        None,
    ),
    (
        ModelSpec(
            name="svm",
            family="classic",
            factory=make_svm,
            description="RBF SVM (C=10, gamma=scale), temperature-calibrated probabilities",
            param_grid={
                "clf__estimator__C": [1.0, 10.0, 100.0],
                "clf__estimator__gamma": ["scale", 1e-3, 1e-2],
            },
        ),
        None,
    ),
    (
        ModelSpec(
            name="mlp",
            family="classic",
            factory=make_mlp,
            description="scikit-learn MLP, one hidden layer of 256 units",
            param_grid={
                "clf__hidden_layer_sizes": [(128,), (256,), (256, 128)],
                "clf__alpha": [1e-4, 1e-3, 1e-2],
            },
        ),
        None,
    ),
    (
        ModelSpec(
            name="rf",
            family="classic",
            factory=make_rf,
            description="random forest, 300 trees",
            param_grid={"clf__max_depth": [None, 20], "clf__max_features": ["sqrt", 0.3]},
        ),
        None,
    ),
    (
        ModelSpec(
            name="xgb",
            family="classic",
            factory=make_xgb,
            description="XGBoost, 300 trees of depth 6",
            param_grid={
                "clf__max_depth": [3, 6],
                "clf__learning_rate": [0.05, 0.1],
                "clf__n_estimators": [300, 600],
            },
        ),
        "xgboost",
    ),
    (
        ModelSpec(
            name="lgbm",
            family="classic",
            factory=make_lgbm,
            description="LightGBM, 300 trees of 31 leaves",
            param_grid={
                "clf__num_leaves": [15, 31],
                "clf__learning_rate": [0.05, 0.1],
                "clf__n_estimators": [300, 600],
            },
        ),
        "lightgbm",
    ),
]

for _spec, _package in _BUILTINS:
    if _package is not None and importlib.util.find_spec(_package) is None:
        register_unavailable(_spec.name, f"needs the {_package} package (pip install 'sertool[boost]')")
        log.debug("model %s not registered: %s is not installed", _spec.name, _package)
        continue
    register_model(_spec)
