"""The multi-task head (``mtl_head``): registration by task, learning both outputs, NaN masking, the contract."""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import balanced_accuracy_score
from threadpoolctl import threadpool_limits

from sertool.exceptions import ParameterError
from sertool.metrics_regression import ccc
from sertool.models import registry
from sertool.models.registry import (
    accepts_sample_weight,
    balanced_sample_weight,
    get_model,
    make_estimator,
    resolve_models,
)

torch_missing = importlib.util.find_spec("torch") is None
needs_torch = pytest.mark.skipif(torch_missing, reason="torch is not installed")

#: Fast settings: one torch thread (the test machines are small and shared).
FAST = {"n_threads": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """BLAS/OpenMP on 1 thread."""
    with threadpool_limits(limits=1):
        yield


def _problem(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """16 columns; 4 classes = the quadrant of columns 0-1 (pushed 0.5 away from the axes, a margin);
    dimension 1 = x2 + 0.5 sin(2 x3) + noise; dimension 2 = tanh(x3) - 0.5 x2 + noise, rescaled to mean 50 /
    std 10, with 10% NaN (unrated clips). ``y`` has shape (n, 3): label code, dimension 1, dimension 2."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 16))
    X[:, :2] += 0.5 * np.sign(X[:, :2])
    labels = 2 * (X[:, 0] > 0) + (X[:, 1] > 0)
    d1 = X[:, 2] + 0.5 * np.sin(2 * X[:, 3]) + 0.1 * rng.normal(size=n)
    raw = np.tanh(X[:, 3]) - 0.5 * X[:, 2] + 0.1 * rng.normal(size=n)
    d2 = 50 + 10 * (raw - raw.mean()) / raw.std()
    d2[rng.random(n) < 0.1] = np.nan
    return X, np.column_stack([labels.astype(np.float64), d1, d2])


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X, y = _problem()
    return {
        "Xtr": X[:240],
        "ytr": y[:240],
        "Xva": X[240:320],
        "yva": y[240:320],
        "Xte": X[320:],
        "yte": y[320:],
    }


@pytest.fixture(scope="module")
def fitted(data):
    """``mtl_head`` fit as the runner does: training part, early stopping on the validation part."""
    with threadpool_limits(limits=1):
        est = make_estimator("mtl_head", seed=0, **FAST)
        w = balanced_sample_weight(data["ytr"][:, 0].astype(int))
        return est.fit(data["Xtr"], data["ytr"], X_valid=data["Xva"], y_valid=data["yva"], sample_weight=w)


# ------------------------------------------------------------------------------------------------ registry


@needs_torch
def test_mtl_head_is_registered_as_multitask():
    spec = get_model("mtl_head")
    assert (spec.task, spec.family, spec.input) == ("multitask", "neural", "pooled")
    assert spec.uses_validation and spec.sample_weight and spec.description
    assert spec.sample_weight == accepts_sample_weight(make_estimator("mtl_head", seed=0))
    assert "mtl_head" in [s.name for s in resolve_models("all", task="multitask")]
    assert [s.name for s in resolve_models("neural", task="multitask")] == ["mtl_head"]
    assert "mtl_head" not in [s.name for s in resolve_models("all")]  # classification by default
    assert "mtl_head" not in [s.name for s in resolve_models("all", task="regression")]
    with pytest.raises(ParameterError, match="'mtl_head' is a multitask model"):
        resolve_models("mtl_head", task="classification")
    est = make_estimator("mtl_head", seed=3, reg_weight=0.5)
    assert (est.seed, est.reg_weight) == (3, 0.5)
    est.set_params(**{k: v[0] for k, v in spec.param_grid.items()})  # raises on an invalid name


def test_module_imports_and_registers_without_torch(monkeypatch):
    """A fresh copy of the module, with torch unimportable, records mtl_head as unavailable."""
    monkeypatch.setattr(registry, "MODELS", {})
    monkeypatch.setattr(registry, "UNAVAILABLE", {})
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ModuleNotFoundError
    spec = importlib.util.spec_from_file_location(
        "_sertool_multitask_copy", registry.__file__.replace("registry.py", "multitask.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "mtl_head" in registry.UNAVAILABLE and "torch" in registry.UNAVAILABLE["mtl_head"]
    assert "mtl_head" not in registry.MODELS
    with pytest.raises(ParameterError, match="needs torch"):
        module.MultiTaskHead().fit(np.zeros((4, 2)), np.zeros((4, 2)))


# ------------------------------------------------------------------------------------------------ learning


@needs_torch
def test_learns_the_class_and_the_dimensions(fitted, data):
    Xte, yte = data["Xte"], data["yte"]
    assert fitted.classes_.tolist() == [0, 1, 2, 3] and fitted.n_dims_ == 2
    proba = fitted.predict_proba(Xte)
    assert proba.shape == (len(Xte), 4) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    pred = fitted.predict(Xte)
    np.testing.assert_array_equal(pred, fitted.classes_[proba.argmax(axis=1)])
    # observed on data seeds 0-11: UA 0.95-1.0, CCC 0.92-0.96 (dim 1) and 0.95-0.98 (dim 2)
    assert balanced_accuracy_score(yte[:, 0].astype(int), pred) > 0.8
    values = fitted.predict_values(Xte)
    assert values.shape == (len(Xte), 2) and values.dtype == np.float64
    for j in range(2):
        rated = ~np.isnan(yte[:, j + 1])
        assert ccc(yte[rated, j + 1], values[rated, j]) > 0.7, j
    assert fitted.score(Xte, yte) == pytest.approx(float(np.mean(pred == yte[:, 0])))


@needs_torch
def test_values_come_back_on_the_original_scale(fitted, data):
    ytr = data["ytr"]
    np.testing.assert_allclose(fitted.y_mean_, np.nanmean(ytr[:, 1:], axis=0))
    np.testing.assert_allclose(fitted.y_scale_, np.nanstd(ytr[:, 1:], axis=0))
    assert abs(fitted.y_mean_[1] - 50) < 2 and abs(fitted.y_scale_[1] - 10) < 2
    values = fitted.predict_values(data["Xte"])
    assert abs(values[:, 1].mean() - 50) < 4 and 5 < values[:, 1].std() < 15  # observed: |mean - 50| < 2.3
    assert abs(values[:, 0].mean()) < 0.5  # dimension 1 lives around 0


@needs_torch
def test_label_codes_need_not_be_contiguous(data):
    y = data["ytr"].copy()
    y[:, 0] = np.array([0, 2, 3, 7])[y[:, 0].astype(int)]
    est = make_estimator("mtl_head", seed=0, max_epochs=3, **FAST).fit(data["Xtr"], y)
    assert est.classes_.tolist() == [0, 2, 3, 7]
    assert set(est.predict(data["Xte"]).tolist()) <= {0, 2, 3, 7}
    assert est.predict_proba(data["Xte"]).shape == (len(data["Xte"]), 4)


# ------------------------------------------------------------------------------------------- NaN targets


@needs_torch
def test_masked_ccc_loss_ignores_unrated_entries():
    import torch

    from sertool.models.multitask import _masked_ccc_loss

    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(12, 2, generator=gen), torch.randn(12, 2, generator=gen)
    rated = torch.ones(12, 2, dtype=torch.bool)
    rated[[1, 4, 7], 1] = False
    garbage = target.clone()
    garbage[[1, 4, 7], 1] = 1e6  # whatever stands in an unrated entry must not matter
    loss = _masked_ccc_loss(pred, garbage, rated)
    assert torch.isfinite(loss)
    keep = rated[:, 1]
    dim0 = _masked_ccc_loss(pred[:, :1], target[:, :1], rated[:, :1])
    dim1 = _masked_ccc_loss(pred[keep, 1:], target[keep, 1:], rated[keep, 1:])
    assert float(loss) == pytest.approx(float((dim0 + dim1) / 2), abs=1e-6)
    none = torch.zeros(12, 2, dtype=torch.bool)
    assert float(_masked_ccc_loss(pred, target, none)) == 0.0


@needs_torch
def test_nan_targets(data):
    Xtr, ytr = data["Xtr"], data["ytr"]
    assert np.isnan(ytr[:, 2]).any()  # the fixture has unrated clips in dimension 2
    est = make_estimator("mtl_head", seed=0, max_epochs=3, **FAST).fit(Xtr, ytr)
    assert all(np.isfinite(row["train_loss"]) for row in est.history_)
    assert np.all(np.isfinite(est.predict_values(data["Xte"])))
    y = ytr.copy()
    y[:, 2] = np.nan
    with pytest.raises(ParameterError, match="dimension 2"):
        make_estimator("mtl_head", seed=0, max_epochs=1).fit(Xtr, y)
    y = ytr.copy()
    y[5, 0] = 1.5
    with pytest.raises(ParameterError, match="integer label codes"):
        make_estimator("mtl_head", seed=0, max_epochs=1).fit(Xtr, y)
    y = ytr.copy()
    y[5, 0] = np.nan
    with pytest.raises(ParameterError, match="label column"):
        make_estimator("mtl_head", seed=0, max_epochs=1).fit(Xtr, y)
    with pytest.raises(ParameterError, match=r"shape \(n, 1 \+ k\)"):
        make_estimator("mtl_head", seed=0, max_epochs=1).fit(Xtr, ytr[:, 0])
    y_valid = data["yva"].copy()
    y_valid[0, 0] = 9
    with pytest.raises(ParameterError, match="not in the training labels"):
        make_estimator("mtl_head", seed=0, max_epochs=1).fit(Xtr, ytr, X_valid=data["Xva"], y_valid=y_valid)


# ---------------------------------------------------------------------------------------------- contract


@needs_torch
def test_early_stopping_restores_the_best_epoch(fitted, data):
    history = fitted.history_
    assert 1 <= fitted.best_epoch_ <= len(history) == fitted.n_iter_ <= fitted.max_epochs
    assert {"epoch", "train_loss", "valid_ua", "valid_ccc"} <= set(history[0])
    scores = [row["valid_ua"] + row["valid_ccc"] for row in history]
    assert fitted.best_epoch_ == int(np.argmax(scores)) + 1
    if len(history) < fitted.max_epochs:  # stopped early: exactly `patience` epochs after the best one
        assert len(history) == fitted.best_epoch_ + fitted.patience
    # the kept weights are the best epoch's: they reproduce its validation scores
    best = history[fitted.best_epoch_ - 1]
    Xva, yva = data["Xva"], data["yva"]
    ua = balanced_accuracy_score(yva[:, 0].astype(int), fitted.predict(Xva))
    values = fitted.predict_values(Xva)
    cccs = [ccc(yva[~np.isnan(yva[:, j + 1]), j + 1], values[~np.isnan(yva[:, j + 1]), j]) for j in range(2)]
    assert ua == pytest.approx(best["valid_ua"], abs=1e-9)
    assert float(np.mean(cccs)) == pytest.approx(best["valid_ccc"], abs=1e-6)


@needs_torch
def test_without_validation_trains_max_epochs(data):
    est = make_estimator("mtl_head", seed=0, max_epochs=4, **FAST).fit(data["Xtr"], data["ytr"])
    assert len(est.history_) == 4 == est.best_epoch_
    assert all(np.isnan(row["valid_ua"]) and np.isnan(row["valid_ccc"]) for row in est.history_)
    assert est.history_[-1]["train_loss"] < est.history_[0]["train_loss"]


@needs_torch
def test_deterministic_given_the_seed(data):
    Xtr, ytr, Xte = data["Xtr"], data["ytr"], data["Xte"]
    fits = [make_estimator("mtl_head", seed=s, max_epochs=4, **FAST).fit(Xtr, ytr) for s in (7, 7, 8)]
    np.testing.assert_array_equal(fits[0].predict_proba(Xte), fits[1].predict_proba(Xte))
    np.testing.assert_array_equal(fits[0].predict_values(Xte), fits[1].predict_values(Xte))
    assert np.abs(fits[0].predict_values(Xte) - fits[2].predict_values(Xte)).max() > 1e-6


@needs_torch
def test_sklearn_contract(fitted, data):
    est = make_estimator("mtl_head", seed=0, max_epochs=2, **FAST)
    with pytest.raises(NotFittedError):
        est.predict_values(data["Xte"])
    fresh = clone(fitted)
    assert fresh.get_params() == fitted.get_params()
    assert not hasattr(fresh, "module_") and not hasattr(fresh, "n_features_in_")
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_values(data["Xte"]), fitted.predict_values(data["Xte"]))
    with pytest.raises(ParameterError, match="reg_weight"):
        make_estimator("mtl_head", seed=0, reg_weight=-1.0).fit(data["Xtr"], data["ytr"])
    with pytest.raises(ValueError, match="features"):
        fitted.predict_proba(data["Xte"][:, :5])


@needs_torch
def test_weights_round_trip_without_pickle(data, tmp_path):
    """export_weights -> safetensors file + JSON attributes -> a fresh estimator predicts the same."""
    import torch
    from safetensors.torch import load_file, save_file

    Xtr, ytr, Xte = data["Xtr"], data["ytr"].copy(), data["Xte"]
    ytr[:, 0] = np.array([0, 2, 3, 7])[ytr[:, 0].astype(int)]  # non-contiguous label codes
    params = {"hidden": (16, 8), "max_epochs": 6, "patience": 3, "reg_weight": 0.5, **FAST}
    with pytest.raises(NotFittedError):
        make_estimator("mtl_head", seed=0, **params).export_weights()
    yva = data["yva"].copy()
    yva[:, 0] = np.array([0, 2, 3, 7])[yva[:, 0].astype(int)]
    est = make_estimator("mtl_head", seed=0, **params).fit(Xtr, ytr, X_valid=data["Xva"], y_valid=yva)
    tensors, fitted = est.export_weights()
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in tensors.values())
    assert (
        tensors["fitted.x_mean_"].dtype == torch.float32 and tensors["fitted.y_mean_"].dtype == torch.float64
    )
    save_file(tensors, str(tmp_path / "model.safetensors"))
    fitted = json.loads(json.dumps(fitted, allow_nan=False))  # plain JSON
    assert fitted["classes"] == [0, 2, 3, 7] and fitted["n_dims"] == 2
    loaded = load_file(str(tmp_path / "model.safetensors"))

    back = make_estimator("mtl_head", seed=0, **params).import_weights(loaded, fitted)
    assert not back.module_.training and back.device_ == "cpu"
    np.testing.assert_array_equal(back.classes_, est.classes_)
    assert back.classes_.dtype == est.classes_.dtype and back.n_dims_ == est.n_dims_ == 2
    np.testing.assert_array_equal(back.predict_proba(Xte), est.predict_proba(Xte))
    np.testing.assert_array_equal(back.predict(Xte), est.predict(Xte))
    np.testing.assert_array_equal(back.predict_values(Xte), est.predict_values(Xte))
    for name in ("x_mean_", "x_scale_", "y_mean_", "y_scale_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(est, name))
        assert getattr(back, name).dtype == getattr(est, name).dtype, name
    assert (back.n_features_in_, back.best_epoch_, back.n_iter_) == (16, est.best_epoch_, est.n_iter_)
    assert back.score(Xte, data["yte"]) == est.score(Xte, data["yte"])

    for hidden in [(32, 8), (16,), (16, 8, 4)]:  # other widths or depth: the state does not fit
        with pytest.raises(ParameterError, match="do not fit"):
            make_estimator("mtl_head", seed=0, **{**params, "hidden": hidden}).import_weights(loaded, fitted)
    with pytest.raises(ParameterError, match="do not fit"):  # one class fewer: the output layer is too wide
        make_estimator("mtl_head", seed=0, **params).import_weights(loaded, {**fitted, "classes": [0, 2, 3]})
    with pytest.raises(ParameterError, match="y_scale_"):
        make_estimator("mtl_head", seed=0, **params).import_weights(
            {k: v for k, v in loaded.items() if k != "fitted.y_scale_"}, fitted
        )
