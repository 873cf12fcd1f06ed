"""The ONNX engine of saved models: written and checked at training, used by default, refused when altered."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sertool.cli import main
from sertool.data.audio import load_audio
from sertool.data.manifest import build_manifest
from sertool.deploy import ModelError, load_model, predict_files, train_model
from sertool.engine import ENGINE_FILE, _compare, add_onnx_engine
from sertool.exceptions import ParameterError
from sertool.features.store import FeatureStore

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> pd.DataFrame:
    return build_manifest("demo", demo_root).manifest


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def logreg_dir(demo, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "logreg"
    return train_model(demo, features="handcrafted94", model="logreg", out=out, cache=cache, jobs=1)


def test_compare_counts_moved_labels_only_where_the_reference_is_clear():
    reference = np.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    other = np.array([[0.4, 0.6], [0.49, 0.51], [0.2, 0.8]])
    diff, moved = _compare(reference, other, tolerance=0.05)
    # row 0: margin 0.2 > 0.1 and the label moved; row 1: a tie in the reference, its label may move
    assert diff == pytest.approx(0.2) and moved == 1


def test_the_graph_gives_the_estimators_probabilities_and_the_same_guard_verdicts(logreg_dir, cache, demo):
    card = json.loads((logreg_dir / "model.json").read_text())
    record = card["engine"]["onnx"]
    assert record["file"] == ENGINE_FILE and record["max_abs_diff"] <= record["tolerance"] == 1e-4
    assert record["rows"] == len(demo) + record["far_probes"]
    fitted, fast = (
        load_model(logreg_dir, cache=cache, engine="estimator"),
        load_model(logreg_dir, cache=cache),
    )
    assert (fitted.engine, fast.engine) == ("estimator", "onnx")
    assert "- Prediction engine: `model.onnx`" in (logreg_dir / "MODEL_CARD.md").read_text()
    # the reference: scikit-learn's pipeline itself on the cached features, columns mapped by name
    X = FeatureStore(cache).load(demo, "handcrafted94").X
    codes = sorted(fitted.classes)
    direct = fitted.estimator.predict_proba(X)[:, [codes.index(c) for c in fitted.classes]]
    a, b = fitted.predict(X), fast.predict(X)
    np.testing.assert_allclose(a.proba, direct, atol=1e-12)
    np.testing.assert_allclose(b.proba, direct, atol=1e-5)
    assert b.labels == a.labels
    np.testing.assert_allclose(b.ood_score, a.ood_score, rtol=1e-6)
    assert (b.in_distribution == a.in_distribution).all()
    # far from the data (noise at 100x the training spread) both engines give the same answer and verdict
    rng = np.random.default_rng(0)
    far = X.mean(axis=0) + 100 * X.std(axis=0) * rng.normal(size=(4, X.shape[1]))
    fa, fb = fitted.predict(far), fast.predict(far)
    np.testing.assert_allclose(fb.proba, fa.proba, atol=1e-5)
    assert not fa.in_distribution.any() and not fb.in_distribution.any()


def test_predict_with_the_graph_imports_no_scikit_learn(logreg_dir, cache, demo):
    probe = (
        "import json, sys\n"
        "from sertool.deploy import load_model, predict_files\n"
        f"model = load_model({str(logreg_dir)!r}, cache={str(cache)!r})\n"
        f"df, _ = predict_files(model, {demo['path'].tolist()[:3]!r}, jobs=1)\n"
        "print(json.dumps([model.engine, df['label'].tolist(),"
        " sorted(m for m in ('sklearn', 'skops', 'torch') if m in sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    engine, labels, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert engine == "onnx" and heavy == []
    expected, _ = predict_files(load_model(logreg_dir, cache=cache, engine="estimator"), demo["path"][:3])
    assert labels == expected["label"].tolist()


def test_altered_or_missing_graphs_are_refused(logreg_dir, cache, tmp_path):
    altered = shutil.copytree(logreg_dir, tmp_path / "altered")
    with open(altered / ENGINE_FILE, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelError, match="checksum"):
        load_model(altered, cache=cache)
    assert load_model(altered, cache=cache, engine="estimator").engine == "estimator"
    missing = shutil.copytree(logreg_dir, tmp_path / "missing")
    (missing / ENGINE_FILE).unlink()
    with pytest.raises(ModelError, match=r"model\.onnx' missing"):
        load_model(missing, cache=cache)
    with pytest.raises(ParameterError, match="engine must be one of"):
        load_model(logreg_dir, cache=cache, engine="fast")


def test_without_a_graph_auto_uses_the_estimator_and_onnx_says_why(demo, cache, tmp_path):
    out = train_model(
        demo, features="handcrafted94", model="gnb", out=tmp_path / "plain", cache=cache, jobs=1, onnx=False
    )
    assert not (out / ENGINE_FILE).exists() and "engine" not in json.loads((out / "model.json").read_text())
    assert load_model(out, cache=cache).engine == "estimator"
    with pytest.raises(ParameterError, match="no ONNX graph"):
        load_model(out, cache=cache, engine="onnx")
    # a normalised model needs each group's statistics before its classifier: no graph, and the card says so
    norm = train_model(
        demo, features="handcrafted94", model="gnb", out=tmp_path / "norm", cache=cache, jobs=1,
        normalize="speaker",
    )  # fmt: skip
    engine = json.loads((norm / "model.json").read_text())["engine"]
    assert engine["onnx"] is None and "--normalize speaker" in engine["why"]
    assert not (norm / ENGINE_FILE).exists()
    with pytest.raises(ParameterError, match="--normalize speaker"):
        load_model(norm, cache=cache, engine="onnx")


def test_a_graph_outside_the_tolerance_is_not_kept(logreg_dir, cache, demo, tmp_path):
    copy = shutil.copytree(logreg_dir, tmp_path / "strict")
    (copy / ENGINE_FILE).unlink()
    X = FeatureStore(cache).load(demo, "handcrafted94").X
    # float32 arithmetic against scikit-learn's float64: never exactly equal, so a zero tolerance refuses it
    record = add_onnx_engine(copy, X, tolerance=0.0, cache=cache)
    assert record["onnx"] is None and "differ from the estimator's" in record["why"]
    assert not (copy / ENGINE_FILE).exists() and not list(copy.glob(".*onnx*"))
    assert json.loads((copy / "model.json").read_text())["engine"] == record
    assert load_model(copy, cache=cache).engine == "estimator"


def test_cli_train_no_onnx_and_predict_engine(demo_root, demo, cache, logreg_dir, tmp_path, capsys):
    out = tmp_path / "cli-model"
    code = main(
        [
            "train", "--corpus", "demo", "--root", str(demo_root), "--features", "handcrafted94", "--model",
            "gnb", "--out", str(out), "--cache", str(cache), "--jobs", "1", "--no-onnx",
        ]
    )  # fmt: skip
    assert code == 0 and not (out / ENGINE_FILE).exists()
    capsys.readouterr()
    clip = demo["path"].iloc[0]
    rows = {}
    for engine in ("onnx", "estimator"):
        assert (
            main(["predict", clip, "--model", str(logreg_dir), "--cache", str(cache), "--engine", engine])
            == 0
        )
        rows[engine] = capsys.readouterr().out.splitlines()[1].split(",")
    assert rows["onnx"][3] == rows["estimator"][3]  # label
    np.testing.assert_allclose(
        np.asarray(rows["onnx"][4:-2], dtype=float),
        np.asarray(rows["estimator"][4:-2], dtype=float),
        atol=1e-5,
    )
    signals = [load_audio(clip)]
    assert load_model(logreg_dir, cache=cache).predict_proba_signals(signals).shape == (
        1,
        len(demo["label"].unique()),
    )


def test_a_boosted_tree_graph_matches_the_estimator_on_its_training_rows(demo, cache, tmp_path):
    """Training rows lie on the trees' split thresholds: the graph's scaler must divide as scikit-learn does
    (a reciprocal multiply moved them across: 1e-2 probability differences before)."""
    pytest.importorskip("xgboost")
    out = train_model(
        demo, features="handcrafted94", model="xgb", out=tmp_path / "xgb", cache=cache, jobs=1,
        model_params={"n_estimators": 40},
    )  # fmt: skip
    record = json.loads((out / "model.json").read_text())["engine"]["onnx"]
    assert record is not None and record["max_abs_diff"] < 1e-5
    X = FeatureStore(cache).load(demo, "handcrafted94").X
    a = load_model(out, cache=cache, engine="estimator").predict(X)
    b = load_model(out, cache=cache).predict(X)
    np.testing.assert_allclose(b.proba, a.proba, atol=1e-5)
    assert b.labels == a.labels
