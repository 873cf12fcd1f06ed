"""Temperature scaling: the fit against analytic and brute-force optima, labels unchanged, and --calibrate
through bench, train, definitions and the suite (the validation part is the only data the temperature sees,
and the model never sees it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from sertool.bench.definition import Benchmark
from sertool.bench.records import read_unit
from sertool.bench.runner import run_bench, split_dir, unit_paths
from sertool.bench.suite import evaluate
from sertool.calibration import TemperatureScaled, fit_temperature, scaled_proba
from sertool.cli import main
from sertool.data.manifest import build_manifest
from sertool.deploy import load_model
from sertool.exceptions import ParameterError
from sertool.features.store import FeatureStore
from sertool.splits import make_split

FOLD = 2


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    s = z / t - (z / t).max(axis=1, keepdims=True)
    log_p = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def _grid_temperature(z: np.ndarray, y: np.ndarray, n: int = 20001) -> tuple[float, float]:
    """Brute force: the NLL-minimising T on a log grid over [0.01, 100] (and the grid's step in log T)."""
    grid = np.exp(np.linspace(np.log(0.01), np.log(100.0), n))
    losses = [_nll(z, y, t) for t in grid]
    return float(grid[int(np.argmin(losses))]), float(np.log(grid[1] / grid[0]))


# --------------------------------------------------------------------------------------------- the fit
def test_over_confident_binary_case_has_the_analytic_temperature():
    # every row says 0.99 for its top class, which is right 80% of the time: the NLL-optimal confidence is
    # 0.8, reached when 0.99^(1/T) / (0.99^(1/T) + 0.01^(1/T)) = 0.8, i.e. T = log(99) / log(4)
    p = np.tile([[0.99, 0.01]], (100, 1))
    y = np.r_[np.zeros(80, dtype=int), np.ones(20, dtype=int)]
    t = fit_temperature(p, y)
    assert t == pytest.approx(np.log(99) / np.log(4), rel=1e-5)
    assert scaled_proba(p, t)[0, 0] == pytest.approx(0.8, abs=1e-6)


def test_the_fit_matches_a_brute_force_grid_and_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    n, k, true_t = 4000, 5, 2.5
    z = rng.normal(0.0, 3.0, size=(n, k))
    y = np.array([rng.choice(k, p=row) for row in _softmax(z / true_t)])
    grid_t, step = _grid_temperature(z, y)
    t = fit_temperature(z, y, logits=True)
    assert abs(np.log(t) - np.log(grid_t)) <= step
    assert _nll(z, y, t) <= _nll(z, y, grid_t) + 1e-9  # at least as good as the best grid point
    assert t == pytest.approx(true_t, rel=0.1)  # the logits were 2.5x over-confident
    # probabilities instead of logits: log p differs from z by a per-row constant, the same temperature
    assert fit_temperature(_softmax(z), y) == pytest.approx(t, rel=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ParameterError, match="at least one"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ParameterError, match="column indices"):
        fit_temperature(np.full((2, 2), 0.5), np.array([0, 2]))
    with pytest.raises(ParameterError, match="one label per row"):
        fit_temperature(np.full((2, 2), 0.5), np.array([0]))
    with pytest.raises(ParameterError, match="> 0"):
        scaled_proba(np.full((2, 2), 0.5), 0.0)


def test_the_wrapper_never_changes_a_label():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6))
    y = np.array(["b", "a", "c"])[rng.integers(0, 3, 300)]
    X[y == "a", 0] += 1.5
    base = LogisticRegression(max_iter=500).fit(X[:200], y[:200])
    base_proba = base.predict_proba(X[200:])
    for t in (0.05, 0.5, 1.0, 3.0, 50.0):
        wrapped = TemperatureScaled(base, t)
        proba = wrapped.predict_proba(X[200:])
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
        assert (proba.argmax(axis=1) == base_proba.argmax(axis=1)).all()
        assert (wrapped.predict(X[200:]) == base.predict(X[200:])).all()
        np.testing.assert_array_equal(wrapped.classes_, base.classes_)
    np.testing.assert_allclose(TemperatureScaled(base, 1.0).predict_proba(X[200:]), base_proba, atol=1e-12)
    fitted = TemperatureScaled(base).fit(X[200:], y[200:])  # labels as the estimator's classes
    codes = np.searchsorted(base.classes_, y[200:])
    grid_t, step = _grid_temperature(np.log(base_proba), codes, n=4001)
    assert abs(np.log(fitted.temperature) - np.log(grid_t)) <= step
    assert clone(fitted).get_params()["temperature"] == fitted.temperature
    with pytest.raises(ParameterError, match="not classes"):
        TemperatureScaled(base).fit(X[:2], ["a", "zzz"])


# ------------------------------------------------------------------------------------- bench and train
@pytest.fixture(scope="module")
def demo(demo_root: Path) -> pd.DataFrame:
    return build_manifest("demo", demo_root).manifest


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def split(demo):
    return make_split(demo, "speaker-4fold", seed=0)


@pytest.fixture(scope="module")
def bench_dir(demo, split, cache, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    for calibrate in (None, "temperature"):
        report = run_bench(
            demo, split, features=["handcrafted94"], models="logreg", results_dir=results, cache=cache, jobs=1,
            render=False, calibrate=calibrate,
        )  # fmt: skip
        assert report.counts == {"done": 4}
    return results


def _reference_logreg(X: np.ndarray, y: list[str]) -> Pipeline:
    """The registered logreg (StandardScaler + LogisticRegression C=1), balanced weights, built here."""
    pipe = Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=2000, random_state=0))]
    )
    return pipe.fit(X, y, clf__sample_weight=compute_sample_weight("balanced", np.asarray(y)))


def test_calibrated_units_fit_on_the_training_part_and_take_the_temperature_from_the_validation_part(
    demo, split, cache, bench_dir
):
    base = split_dir(bench_dir, demo, split)
    fs = FeatureStore(cache).load(demo, "handcrafted94")
    pos = {u: i for i, u in enumerate(fs.utt_ids)}
    label = dict(zip(demo["utt_id"], demo["label"], strict=True))
    for fold in split.folds:
        plain = read_unit(unit_paths(base, "handcrafted94", "logreg", fold.index)[0])
        rec = read_unit(unit_paths(base, "handcrafted94~cal-temp", "logreg", fold.index)[0])
        assert plain.calibration is None and plain.n_train == len(fold.train) + len(fold.valid)
        assert rec.features == "handcrafted94~cal-temp" and rec.model == "logreg"
        assert rec.n_train == len(fold.train) and rec.n_valid == len(fold.valid)  # valid never fitted on
        assert rec.model_params == plain.model_params  # the logreg's own parameters, not the wrapper's
        cal = rec.calibration
        assert cal["method"] == "temperature" and cal["n_valid"] == len(fold.valid)
        assert cal["nll_valid_after"] <= cal["nll_valid_before"]
        # independent reference: the model on the training part only, T by brute force on the validation part
        ref = _reference_logreg(fs.X[[pos[u] for u in fold.train]], [label[u] for u in fold.train])
        p_valid = ref.predict_proba(fs.X[[pos[u] for u in fold.valid]])
        y_valid = np.searchsorted(ref.classes_, [label[u] for u in fold.valid])
        grid_t, step = _grid_temperature(np.log(np.clip(p_valid, 1e-12, 1)), y_valid, n=8001)
        assert abs(np.log(cal["temperature"]) - np.log(grid_t)) <= step
        stored = pd.read_parquet(unit_paths(base, "handcrafted94~cal-temp", "logreg", fold.index)[1])
        p_test = ref.predict_proba(fs.X[[pos[u] for u in stored["utt_id"]]])
        expected = _softmax(np.log(np.clip(p_test, 1e-12, 1)) / cal["temperature"])
        cols = [f"proba__{c}" for c in ref.classes_]
        np.testing.assert_allclose(stored[cols].to_numpy(), expected, atol=1e-5)
        # the temperature never changes a label: the reference model's own argmax
        assert stored["y_pred"].tolist() == ref.classes_[p_test.argmax(axis=1)].tolist()
        assert rec.metrics["ua"] == pytest.approx(
            np.mean([(stored["y_pred"][stored["y_true"] == c] == c).mean() for c in set(stored["y_true"])])
        )


def test_a_calibrated_run_resumes_and_a_fold_without_validation_part_is_refused(
    demo, split, cache, bench_dir
):
    again = run_bench(
        demo, split, features=["handcrafted94"], models="logreg", results_dir=bench_dir, cache=cache, jobs=1,
        render=False, calibrate="temperature",
    )  # fmt: skip
    assert again.counts == {"cached": 4}
    no_valid = make_split(demo, "speaker-4fold", seed=0, valid_fraction=0.0)
    with pytest.raises(ParameterError, match=r"fold\(s\) 0, 1, 2, 3 have none"):
        run_bench(
            demo, no_valid, features=["handcrafted94"], models="logreg", results_dir=bench_dir, cache=cache,
            jobs=1, render=False, calibrate="temperature",
        )  # fmt: skip
    with pytest.raises(ParameterError, match="calibrate must be one of"):
        run_bench(demo, split, features=["handcrafted94"], models="logreg", cache=cache, calibrate="platt")


def test_calibrated_neural_heads_are_not_refitted_on_the_validation_part(demo, split, cache, tmp_path):
    params = {"mlp_head": {"max_epochs": 3, "patience": None}}
    kw = dict(
        features=["handcrafted94"], models="mlp_head", results_dir=tmp_path, cache=cache, jobs=1, render=False
    )
    report = run_bench(demo, split, model_params=params, calibrate="temperature", **kw)
    assert report.counts == {"done": 4}
    rec = read_unit(unit_paths(split_dir(tmp_path, demo, split), "handcrafted94~cal-temp", "mlp_head", 0)[0])
    assert rec.model_params["refit"] is False and rec.calibration["temperature"] > 0
    assert rec.n_train == len(split.folds[0].train) and rec.n_valid == len(split.folds[0].valid)
    assert run_bench(demo, split, model_params=params, calibrate="temperature", **kw).counts == {"cached": 4}
    with pytest.raises(ParameterError, match="refit=True"):
        run_bench(demo, split, model_params={"mlp_head": {"refit": True}}, calibrate="temperature", **kw)


def test_train_with_calibration_returns_the_stored_fold_probabilities(
    demo_root, demo, split, cache, bench_dir
):
    """``sertool train --split S --fold K --calibrate temperature``: the saved model, given the fold's test clips,
    returns the calibrated probabilities and labels the bench stored for that fold."""
    out = bench_dir.parent / "cal-model"
    code = main(
        [
            "train", "--corpus", "demo", "--root", str(demo_root), "--features", "handcrafted94",
            "--model", "logreg", "--out", str(out), "--cache", str(cache), "--split", "speaker-4fold",
            "--fold", str(FOLD), "--calibrate", "temperature", "--jobs", "1", "--results", str(bench_dir),
        ]
    )  # fmt: skip
    assert code == 0
    base = split_dir(bench_dir, demo, split)
    jpath, ppath = unit_paths(base, "handcrafted94~cal-temp", "logreg", FOLD)
    stored, rec = pd.read_parquet(ppath), read_unit(jpath)
    card = json.loads((out / "model.json").read_text())
    assert card["entry"] == "handcrafted94~cal-temp"
    assert card["calibration"]["temperature"] == pytest.approx(rec.calibration["temperature"], rel=1e-9)
    assert card["trained_on"]["n_train"] == len(split.folds[FOLD].train)
    fs = FeatureStore(cache).load(demo, "handcrafted94")
    pos = {u: i for i, u in enumerate(fs.utt_ids)}
    # the estimator with its temperature, and the ONNX graph with the temperature in it, both give the fold's
    # stored test probabilities
    assert card["engine"]["onnx"] is not None
    for engine in ("estimator", "onnx"):
        trained = load_model(out, cache=cache, engine=engine)
        assert isinstance(trained.estimator, TemperatureScaled) == (engine == "estimator")
        proba, labels = trained.predict_features(fs.X[[pos[u] for u in stored["utt_id"]]])
        assert labels == stored["y_pred"].tolist()
        expected = stored[[f"proba__{c}" for c in trained.classes]].to_numpy()
        np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_cli_bench_takes_calibrate(demo_root, cache, tmp_path, capsys):
    code = main(
        [
            "bench", "--corpus", "demo", "--root", str(demo_root), "--features", "handcrafted94", "--models",
            "gnb", "--split", "speaker-4fold", "--cache", str(cache), "--results", str(tmp_path), "--jobs", "1",
            "--unit-jobs", "1", "--calibrate", "temperature", "--json",
        ]
    )  # fmt: skip
    assert code == 0
    records = sorted(tmp_path.glob("demo/*/runs/*/gnb/fold-*.json"))
    assert len(records) == 4 and {p.parents[1].name for p in records} == {"handcrafted94~cal-temp"}
    assert all(read_unit(p).calibration["method"] == "temperature" for p in records)


# ------------------------------------------------------------------------------------- definition, suite
def test_the_definition_round_trips_calibrate(tmp_path):
    bench = Benchmark(corpora="demo", roots=str(tmp_path), calibrate="temperature")
    assert bench.to_dict()["calibrate"] == "temperature"
    assert Benchmark.from_toml(bench.to_toml()) == bench
    assert Benchmark.from_toml('calibrate = "temperature"\n').calibrate == "temperature"
    assert Benchmark(calibrate="none").calibrate is None and "calibrate" not in Benchmark().to_dict()
    with pytest.raises(ParameterError, match="calibrate must be one of"):
        Benchmark(calibrate="isotonic")


def test_the_suite_refuses_to_calibrate_a_protocol_without_validation_part(tmp_path):
    (tmp_path / "tess").mkdir()
    with pytest.raises(ParameterError, match="tess"):
        evaluate(
            tmp_path,
            features="handcrafted94",
            models="logreg",
            results=tmp_path / "r",
            calibrate="temperature",
        )
