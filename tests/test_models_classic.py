"""The model registry and the classic models: selection, construction, weights, fitting, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import make_classification
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from sertool.exceptions import ParameterError
from sertool.models import registry
from sertool.models.classic import GMMClassifier, n_jobs_from_env
from sertool.models.registry import (
    MODELS,
    ModelSpec,
    accepts_sample_weight,
    balanced_sample_weight,
    encode_labels,
    fit_estimator,
    get_model,
    list_models,
    make_estimator,
    register_model,
    resolve_models,
)

CLASSIC = ["knn", "gnb", "dtree", "logreg", "gmm", "svm", "mlp", "rf", "xgb", "lgbm"]
WEIGHTED = {"gnb", "dtree", "logreg", "svm", "mlp", "rf", "xgb", "lgbm"}


@pytest.fixture(autouse=True)
def one_thread():
    """BLAS/OpenMP on 1 thread: the test machines are small and shared (the MLP is 20x slower otherwise)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4 classes, 30 dims: 300 training and 100 held-out rows."""
    X, y = make_classification(
        n_samples=400,
        n_features=30,
        n_informative=12,
        n_classes=4,
        n_clusters_per_class=1,
        class_sep=1.5,
        random_state=0,
    )
    return X[:300], y[:300], X[300:], y[300:]


# ------------------------------------------------------------------------------------------- GMM classifier


@parametrize_with_checks([GMMClassifier(seed=0)])
def test_gmm_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_gmm_two_blobs_posteriors_and_priors(rng):
    X = np.vstack([rng.normal(-2, 1, (60, 2)), rng.normal(2, 1, (20, 2))])
    y = np.array(["sad"] * 60 + ["happy"] * 20)
    gmm = GMMClassifier(n_components=1, covariance_type="full", seed=0).fit(X, y)
    assert list(gmm.classes_) == ["happy", "sad"]
    np.testing.assert_allclose(gmm.class_log_prior_, np.log([0.25, 0.75]))
    assert gmm.predict([[-2.0, -2.0], [2.0, 2.0]]).tolist() == ["sad", "happy"]
    # Posterior = softmax of per-class log-likelihood + log prior.
    x = np.array([[0.3, -0.1]])
    jll = np.array([g.score_samples(x)[0] for g in gmm.gmms_]) + gmm.class_log_prior_
    np.testing.assert_allclose(gmm.predict_proba(x)[0], np.exp(jll) / np.exp(jll).sum())
    # Uniform priors, same densities: with r = L_happy / L_sad, p_emp = r / (r + 3) and p_uni = r / (r + 1),
    # so p_uni = 3 p_emp / (1 + 2 p_emp): the minority class gains at every point.
    mid = np.array([[0.0, 0.0]])
    p_emp = gmm.predict_proba(mid)[0, 0]
    uniform = GMMClassifier(n_components=1, covariance_type="full", priors="uniform", seed=0).fit(X, y)
    p_uni = uniform.predict_proba(mid)[0, 0]
    assert p_uni == pytest.approx(3 * p_emp / (1 + 2 * p_emp), rel=1e-9) and p_uni > p_emp


def test_gmm_small_class_and_bad_params(rng):
    X = rng.normal(size=(23, 3))
    y = np.array([0] * 20 + [1] * 3)
    gmm = GMMClassifier(n_components=4, seed=0).fit(X, y)
    assert gmm.n_components_.tolist() == [4, 3]
    with pytest.raises(ParameterError, match=r"covariance_type must be one of .* got 'diagonal'"):
        GMMClassifier(covariance_type="diagonal").fit(X, y)
    with pytest.raises(ParameterError, match="n_components must be a positive integer, got 0"):
        GMMClassifier(n_components=0).fit(X, y)
    with pytest.raises(ParameterError, match="priors"):
        GMMClassifier(priors="flat").fit(X, y)


# ------------------------------------------------------------------------------------------------ registry


def test_list_and_resolve_models():
    classifiers = [s for s in list_models(family="classic") if s.task == "classification"]
    assert [s.name for s in classifiers] == [*CLASSIC, "soft_vote"]  # soft_vote: when named
    assert all(s.input == "pooled" and s.family == "classic" for s in list_models(family="classic"))
    assert [s.name for s in resolve_models("svm, knn,svm")] == ["svm", "knn"]
    assert [s.name for s in resolve_models(["knn", "classic"], input_kind="pooled")][:2] == ["knn", "gnb"]
    pooled = [s.name for s in resolve_models("all", input_kind="pooled")]
    assert pooled[: len(CLASSIC)] == CLASSIC
    assert all(get_model(n).input == "pooled" for n in pooled)
    with pytest.raises(ParameterError, match=r"unknown model\(s\) 'svn'; known: knn, gnb.*\(or all, classic"):
        resolve_models("knn,svn")
    with pytest.raises(ParameterError, match="no model selected"):
        resolve_models(" , ")
    with pytest.raises(ParameterError, match="input_kind"):
        resolve_models("all", input_kind="pooledd")


def test_registering_a_frames_model(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", dict(MODELS))
    spec = ModelSpec(
        name="toy-seq",
        family="neural",
        factory=lambda *, seed, **kw: GMMClassifier(seed=seed, **kw),
        input="frames",
        gpu=True,
    )
    assert register_model(spec) is spec
    frames = resolve_models("all", input_kind="frames")
    assert frames[-1] is spec and {s.input for s in frames} == {"frames"}  # neural.py may add its own first
    assert "toy-seq" not in [s.name for s in resolve_models("all", input_kind="pooled")]
    neural = [s.name for s in list_models(family="neural") if s.task == "classification"]
    assert [s.name for s in resolve_models("neural")] == neural
    with pytest.raises(
        ParameterError, match="'toy-seq' reads 'frames' features, but the features are 'pooled'"
    ):
        resolve_models("knn,toy-seq", input_kind="pooled")
    with pytest.raises(ParameterError, match="already registered"):
        register_model(ModelSpec(name="toy-seq", family="neural", factory=GMMClassifier))
    assert make_estimator("toy-seq", seed=3, n_components=2).get_params()["n_components"] == 2


def test_modelspec_validation():
    with pytest.raises(ParameterError, match="reserved"):
        ModelSpec(name="all", family="classic", factory=GMMClassifier)
    with pytest.raises(ParameterError, match="family must be one of"):
        ModelSpec(name="x", family="deep", factory=GMMClassifier)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="must match"):
        ModelSpec(name="Has Space", family="classic", factory=GMMClassifier)
    with pytest.raises(ParameterError, match=r"param_grid\['k'\] must be a non-empty list"):
        ModelSpec(name="x", family="classic", factory=GMMClassifier, param_grid={"k": []})


def test_unavailable_model_says_why(monkeypatch):
    monkeypatch.setitem(registry.UNAVAILABLE, "catboost", "needs the catboost package")
    with pytest.raises(ParameterError, match="'catboost' is unavailable: needs the catboost package"):
        get_model("catboost")


def test_make_estimator_overrides_and_seed():
    est = make_estimator("knn", seed=0, n_neighbors=7)
    assert isinstance(est, Pipeline) and est.get_params()["clf__n_neighbors"] == 7
    assert make_estimator("svm", seed=0, C=3.0).get_params()["clf__estimator__C"] == 3.0
    assert make_estimator("svm", seed=0, scale__with_mean=False).get_params()["scale__with_mean"] is False
    assert make_estimator("xgb", seed=5).get_params()["clf__random_state"] == 5
    with pytest.raises(ParameterError, match="KNeighborsClassifier has no parameter 'n_neighbours'; valid: "):
        make_estimator("knn", seed=0, n_neighbours=7)
    with pytest.raises(ParameterError, match="seed must be an integer"):
        make_estimator("knn", seed=None)  # type: ignore[arg-type]


def test_n_jobs_from_env(monkeypatch):
    monkeypatch.delenv("SERTOOL_N_JOBS", raising=False)
    assert n_jobs_from_env() == 1 and make_estimator("rf", seed=0).get_params()["clf__n_jobs"] == 1
    monkeypatch.setenv("SERTOOL_N_JOBS", "-1")
    assert make_estimator("lgbm", seed=0).get_params()["clf__n_jobs"] == -1
    monkeypatch.setenv("SERTOOL_N_JOBS", "two")
    with pytest.raises(ParameterError, match="SERTOOL_N_JOBS='two' is not an integer"):
        make_estimator("xgb", seed=0)


def test_encode_labels():
    enc, y = encode_labels(["sad", "angry", "sad", "happy"])
    assert enc.classes_.tolist() == ["angry", "happy", "sad"] and y.tolist() == [2, 0, 2, 1]
    enc, y = encode_labels(["sad", "sad"], classes=["sad", "neutral", "angry"])
    assert enc.classes_.tolist() == ["angry", "neutral", "sad"] and y.tolist() == [2, 2]
    with pytest.raises(ParameterError, match=r"labels not in classes \['angry', 'sad'\]: \['calm'\]"):
        encode_labels(["calm", "sad"], classes=["sad", "angry"])


# ----------------------------------------------------------------------------------- every classic model


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, BaseEstimator]:
    """Every classic model, cloned from the registry's estimator and fitted once on the training part."""
    Xtr, ytr, _, _ = data
    out = {}
    with threadpool_limits(limits=1):
        for name in CLASSIC:
            est = clone(make_estimator(name, seed=0))
            out[name] = fit_estimator(est, Xtr, ytr)
    return out


@pytest.mark.parametrize("name", CLASSIC)
def test_classic_model_learns_and_predicts_probabilities(name, data, fitted):
    _, _, Xte, yte = data
    est = fitted[name]
    assert est.classes_.tolist() == [0, 1, 2, 3]
    pred = est.predict(Xte)
    assert balanced_accuracy_score(yte, pred) > 0.65, name  # chance 0.25; these models get 0.75-0.9
    proba = est.predict_proba(Xte)
    assert proba.shape == (100, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    # Columns follow classes_: the most probable column is the predicted class.
    assert np.mean(est.classes_[proba.argmax(axis=1)] == pred) >= 0.99
    # Declared weight support matches what fit_estimator will do.
    assert get_model(name).sample_weight == accepts_sample_weight(est) == (name in WEIGHTED)


#: Smaller settings for tests that fit a model several times (the seed still drives every random part).
CHEAP = {
    "rf": {"n_estimators": 40},
    "xgb": {"n_estimators": 40},
    "lgbm": {"n_estimators": 40},
    "mlp": {"max_iter": 60},
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", CLASSIC)
def test_classic_model_is_deterministic_and_clonable(name, data, fitted):
    Xtr, ytr, Xte, _ = data
    probas = [
        fit_estimator(make_estimator(name, seed=s, **CHEAP.get(name, {})), Xtr, ytr).predict_proba(Xte)
        for s in (7, 7, 8)
    ]
    np.testing.assert_array_equal(probas[0], probas[1])
    if name in {"mlp", "rf", "xgb", "lgbm", "gmm"}:  # models with random parts: another seed, other numbers
        assert np.abs(probas[0] - probas[2]).max() > 1e-6
    fresh = clone(fitted[name])
    assert not hasattr(fresh[-1], "classes_")
    assert fresh.get_params(deep=False).keys() == fitted[name].get_params(deep=False).keys()


@pytest.mark.parametrize("name", CLASSIC)
def test_param_grid_names_are_valid(name):
    est = make_estimator(name, seed=0)
    grid = get_model(name).param_grid
    assert grid, f"{name} has no param_grid"
    est.set_params(**{k: v[0] for k, v in grid.items()})  # raises on an invalid name


def test_knn_grid_search_runs(data):
    Xtr, ytr, _, _ = data
    search = GridSearchCV(make_estimator("knn", seed=0), get_model("knn").param_grid, cv=2).fit(Xtr, ytr)
    assert search.best_score_ > 0.6 and "clf__metric" in search.best_params_


# ------------------------------------------------------------------------------------------ sample weights


class _Spy(ClassifierMixin, BaseEstimator):
    def fit(self, X, y, sample_weight=None):
        self.seen_ = sample_weight
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_fit_estimator_routes_weights_to_pipelines_and_bare_estimators(caplog):
    X, y = np.zeros((4, 2)), np.array([0, 0, 0, 1])
    w = balanced_sample_weight(y)
    np.testing.assert_allclose(w, [4 / 6, 4 / 6, 4 / 6, 2.0])  # n / (K * count)
    bare = fit_estimator(_Spy(), X, y, sample_weight=w)
    np.testing.assert_array_equal(bare.seen_, w)
    pipe = fit_estimator(Pipeline([("clf", _Spy())]), X, y, sample_weight=w)
    np.testing.assert_array_equal(pipe[-1].seen_, w)
    with caplog.at_level(logging.DEBUG, logger="sertool.models.registry"):
        fit_estimator(make_estimator("knn", seed=0), X, y, sample_weight=w)
    assert "KNeighborsClassifier does not accept sample weights" in caplog.text
    with pytest.raises(ParameterError, match=r"sample_weight has shape \(3,\), expected \(4,\)"):
        fit_estimator(_Spy(), X, y, sample_weight=w[:3])
    with pytest.raises(ParameterError, match="threads"):
        fit_estimator(_Spy(), X, y, threads=0)


@pytest.fixture(scope="module")
def imbalanced() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=240,
        n_features=30,
        n_informative=6,
        n_classes=4,
        weights=[0.7, 0.1, 0.1, 0.1],
        random_state=1,
    )
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", CLASSIC)
def test_balanced_weights_change_weighted_models_only(name, imbalanced):
    X, y = imbalanced
    overrides = CHEAP.get(name, {})
    w = balanced_sample_weight(y)
    plain = fit_estimator(make_estimator(name, seed=0, **overrides), X, y).predict_proba(X)
    weighted = fit_estimator(make_estimator(name, seed=0, **overrides), X, y, sample_weight=w).predict_proba(
        X
    )
    if name in WEIGHTED:
        assert np.abs(plain - weighted).max() > 1e-3
    else:
        np.testing.assert_array_equal(plain, weighted)


def test_balanced_weights_raise_minority_recall(imbalanced):
    X, y = imbalanced
    w = balanced_sample_weight(y)
    plain = fit_estimator(make_estimator("logreg", seed=0, C=0.05), X, y).predict(X)
    weighted = fit_estimator(make_estimator("logreg", seed=0, C=0.05), X, y, sample_weight=w).predict(X)
    assert balanced_accuracy_score(y, weighted) > balanced_accuracy_score(y, plain) + 0.03
