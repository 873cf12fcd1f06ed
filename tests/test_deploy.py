"""train / load / predict: the saved format (no pickle), the refusals, segmentation, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import make_tiny_whisper

from sertool.bench.runner import class_order, run_bench, split_dir, unit_paths
from sertool.cli import main
from sertool.data.audio import load_audio
from sertool.data.manifest import build_manifest
from sertool.deploy import ModelError, load_model, predict_files, train_model
from sertool.exceptions import ParameterError
from sertool.features.store import FeatureStore
from sertool.splits import make_split


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> pd.DataFrame:
    return build_manifest("demo", demo_root).manifest


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def svm_dir(demo, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "svm"
    return train_model(demo, features="handcrafted94", model="svm", out=out, cache=cache, jobs=1)


def test_saved_model_predicts_like_the_fitted_pipeline(demo, cache, svm_dir, demo_root):
    files = sorted(svm_dir.iterdir())
    assert [f.name for f in files] == ["MODEL_CARD.md", "estimator.skops", "model.json", "model.onnx"]
    card = json.loads((svm_dir / "model.json").read_text())
    assert card["format"] == 1 and card["model"] == "svm" and card["features"] == "handcrafted94"
    assert card["extractor"]["key"].startswith("handcrafted94/v1-")
    assert card["classes"] == class_order(demo["label"].tolist())  # canonical order, as the leaderboard
    assert card["trained_on"]["n_train"] == len(demo) and card["trained_on"]["part"] == "all"
    assert {"sertool", "numpy", "scikit-learn", "librosa"} <= set(card["versions"])
    model = load_model(svm_dir, cache=cache, engine="estimator")
    assert model.engine == "estimator"
    # the same features through the cache and through the model's own extractor give the same probabilities
    X = FeatureStore(cache).load(demo, "handcrafted94").X
    order = [sorted(model.classes).index(c) for c in model.classes]  # estimator columns: sorted codes
    direct = model.estimator.predict_proba(X[:8])[:, order]
    signals = [load_audio(p) for p in demo["path"][:8]]
    np.testing.assert_allclose(model.predict_proba_signals(signals), direct, atol=1e-6)
    # the default engine runs the checked ONNX graph: the fitted pipeline's probabilities to float32 precision
    fast = load_model(svm_dir, cache=cache)
    assert fast.engine == "onnx" and card["engine"]["onnx"]["max_abs_diff"] < 1e-4
    np.testing.assert_allclose(fast.predict_proba_signals(signals), direct, atol=1e-5)
    # the synthetic classes are learnable: training accuracy far above chance
    df, skipped = predict_files(model, demo["path"].tolist(), jobs=2)
    assert not skipped and len(df) == len(demo)
    assert (df["label"].to_numpy() == demo["label"].to_numpy()).mean() > 0.8
    proba = df[[f"proba__{c}" for c in model.classes]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert df["path"].tolist() == demo["path"].tolist()  # input order, also with threads


def test_long_recordings_are_segmented(svm_dir, cache, demo, tmp_path):
    model = load_model(svm_dir, cache=cache)
    ys = [load_audio(p) for p in demo["path"][:4]]
    long = np.concatenate(ys)
    path = tmp_path / "long.wav"
    sf.write(path, long, 16000)
    total = long.shape[0] / 16000
    df, _ = predict_files(model, [path], window=1.0, hop=0.5)
    assert len(df) == int((total - 1.0) / 0.5) + 1 + (1 if (total - 1.0) % 0.5 > 1e-9 else 0)
    assert df["start_s"].iloc[0] == 0.0 and df["end_s"].iloc[-1] == pytest.approx(total, abs=1e-3)
    assert (np.diff(df["start_s"].to_numpy()[:-1]) == 0.5).all()
    assert (df["end_s"] - df["start_s"]).round(3).eq(1.0).all()
    one, _ = predict_files(model, [path])
    assert len(one) == 1 and one["end_s"].iloc[0] == pytest.approx(total, abs=1e-3)
    with pytest.raises(ParameterError, match="window"):
        predict_files(model, [path], window=0)


def test_bad_files_are_reported_and_the_rest_predicted(svm_dir, cache, demo, tmp_path):
    model = load_model(svm_dir, cache=cache)
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    df, skipped = predict_files(model, [demo["path"][0], bad, silent], jobs=2)
    assert df["path"].tolist() == [demo["path"][0]]
    reasons = dict(skipped)
    assert set(reasons) == {str(bad), str(silent)} and "all-zero" in reasons[str(silent)]


def test_refuses_altered_untrusted_and_mismatched_models(svm_dir, cache, tmp_path):
    # an altered estimator file
    altered = shutil.copytree(svm_dir, tmp_path / "altered")
    with open(altered / "estimator.skops", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelError, match="checksum"):
        load_model(altered, cache=cache)
    # other package versions at training
    old = shutil.copytree(svm_dir, tmp_path / "old")
    card = json.loads((old / "model.json").read_text())
    card["versions"]["scikit-learn"] = "0.1.0"
    (old / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"scikit-learn 0\.1\.0 \(here "):
        load_model(old, cache=cache)
    # a feature extractor of another version
    other = shutil.copytree(svm_dir, tmp_path / "other")
    card = json.loads((other / "model.json").read_text())
    card["extractor"]["key"] = "handcrafted94/v0-0000000000"
    card["extractor"]["version"] = 0
    (other / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="trained on handcrafted94/v0-0000000000"):
        load_model(other, cache=cache)
    # a skops file naming a type outside the allow list is refused before anything is loaded
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    evil = shutil.copytree(svm_dir, tmp_path / "evil")
    sio.dump(FunctionTransformer(func=shutil.rmtree), evil / "estimator.skops")
    card = json.loads((evil / "model.json").read_text())
    from sertool.deploy import _sha256

    card["artifact"]["sha256"] = _sha256(evil / "estimator.skops")
    (evil / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"allow list: .*rmtree"):
        load_model(evil, cache=cache, engine="estimator")  # the ONNX engine would not open the file
    with pytest.raises(ModelError, match=r"no model\.json"):
        load_model(tmp_path, cache=cache)


def test_out_is_never_half_written_or_overwritten(demo, cache, svm_dir, tmp_path):
    with pytest.raises(ParameterError, match="exists"):
        train_model(demo, features="handcrafted94", model="svm", out=svm_dir, cache=cache, jobs=1)
    with pytest.raises(ParameterError, match="reads frame sequences"):
        train_model(demo, features="handcrafted94", model="ser_whisper", out=tmp_path / "m", cache=cache)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.tmp-*"))


@pytest.mark.parametrize("name", ["mlp_head", "xgb"])
def test_torch_heads_and_boosters_round_trip(demo, cache, tmp_path, name):
    params = {"max_epochs": 5, "hidden": [32]} if name == "mlp_head" else {"n_estimators": 20}
    out = train_model(
        demo,
        features="handcrafted94",
        model=name,
        out=tmp_path / name,
        cache=cache,
        jobs=1,
        model_params=params,
    )
    expected = (
        {"weights.safetensors", "model.json"} if name == "mlp_head" else {"estimator.skops", "model.json"}
    ) | {"MODEL_CARD.md"}
    engine = json.loads((out / "model.json").read_text())["engine"]
    assert bool(engine["onnx"]) or engine["why"]  # a checked graph, or the reason there is none
    expected |= {"model.onnx"} if engine["onnx"] else set()
    assert {p.name for p in out.iterdir()} == expected
    card = json.loads((out / "model.json").read_text())
    if name == "mlp_head":  # neural heads early-stop on whole held-out speakers
        assert card["trained_on"]["n_valid"] > 0
        assert card["trained_on"]["n_train"] + card["trained_on"]["n_valid"] == len(demo)
    model = load_model(out, cache=cache)
    X = FeatureStore(cache).load(demo, "handcrafted94").X[:6]
    a = model.estimator.predict_proba(X)
    b = load_model(out, cache=cache).estimator.predict_proba(X)
    np.testing.assert_allclose(a, b, atol=1e-7)  # torch CPU kernels round alike to ~1e-8 across calls
    assert a.shape == (6, len(model.classes))


def test_split_training_part_and_leaderboard_link(demo, cache, tmp_path):
    split = make_split(demo, "speaker-4fold", seed=0)
    results = tmp_path / "results"
    run_bench(
        demo, split, features=["handcrafted94"], models="logreg", results_dir=results, cache=cache, jobs=1
    )
    out = train_model(
        demo,
        features="handcrafted94",
        model="logreg",
        out=tmp_path / "lr",
        split=split,
        fold=1,
        cache=cache,
        results_dir=results,
    )
    card = json.loads((out / "model.json").read_text())
    f = split.folds[1]
    assert card["trained_on"]["split_id"] == split.id and card["trained_on"]["fold"] == 1
    assert card["trained_on"]["n_train"] == len(f.train) + len(
        f.valid
    )  # classic: train + valid, as the runner
    assert card["leaderboard"] == str((split_dir(results, demo, split) / "leaderboard.html").resolve())
    # the fold-1 model predicts the fold-1 test part exactly as the benchmark unit did
    stored = pd.read_parquet(unit_paths(split_dir(results, demo, split), "handcrafted94", "logreg", 1)[1])
    model = load_model(out, cache=cache)
    paths = demo.set_index("utt_id").loc[list(stored["utt_id"]), "path"].tolist()
    df, _ = predict_files(model, paths, jobs=1)
    assert df["label"].tolist() == stored["y_pred"].tolist()


def test_frame_head_on_whisper_frames_round_trips(demo, tmp_path):
    folder = make_tiny_whisper(tmp_path / "tiny")
    params = {"whisper-x": {"weights": str(folder), "frame_layers": [1]}}
    cache = tmp_path / "cache"
    out = train_model(
        demo,
        features="whisper-x@1",
        model="attn_pool",
        out=tmp_path / "ap",
        cache=cache,
        jobs=1,
        model_params={"max_epochs": 2},
        extractor_params=params["whisper-x"],
    )
    model = load_model(out, cache=cache)
    assert model.uses_whisper and model.card["input"] == "frames"
    p = model.predict_proba_signals([load_audio(demo["path"][0])])
    assert p.shape == (1, len(model.classes)) and abs(p.sum() - 1) < 1e-6


def test_cli_train_and_predict(demo_root, cache, tmp_path, capsys):
    out = tmp_path / "cli-model"
    assert main(["train", "--corpus", "demo", "--root", str(demo_root), "--features", "handcrafted94",
                 "--model", "logreg", "--out", str(out), "--cache", str(cache), "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["features"] == "handcrafted94"
    one = sorted(demo_root.rglob("*.wav"))[0]
    assert main(["predict", str(one), "--model", str(out), "--cache", str(cache), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got["predictions"]) == 1 and got["predictions"][0]["path"] == str(one)
    folder = tmp_path / "clips"
    folder.mkdir()
    for p in sorted(demo_root.rglob("*.wav"))[:5]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVE")
    csv = tmp_path / "pred.csv"
    assert main(["predict", str(folder), "--model", str(out), "--cache", str(cache), "--out", str(csv)]) == 3
    df = pd.read_csv(csv)
    assert len(df) == 5 and "broken.wav" in capsys.readouterr().err
    assert main(["predict", str(one), "--model", str(tmp_path / "nowhere")]) == 2
    assert "no model.json" in capsys.readouterr().err


def test_a_model_on_preprocessed_features_preprocesses_what_it_predicts(demo, cache, tmp_path):
    """Preprocessing is part of the extractor: the saved model rebuilds it, and its probabilities are those of
    the estimator on features of the *trimmed* audio (not of the raw audio)."""
    eparams = {"handcrafted94": {"preprocess": ["trim"]}}
    out = train_model(
        demo, features="handcrafted94", model="logreg", out=tmp_path / "m", cache=cache, jobs=1,
        extractor_params=eparams["handcrafted94"],
    )  # fmt: skip
    card = json.loads((out / "model.json").read_text())
    assert card["extractor"]["params"]["preprocess"] == [{"name": "trim", "top_db": 30.0}]
    model = load_model(out, cache=cache)
    assert model.extractor.preprocess == card["extractor"]["params"]["preprocess"]
    signals = [np.concatenate([np.zeros(8000, np.float32), load_audio(p)]) for p in demo["path"][:6]]
    from sertool.features import get_extractor

    plain = get_extractor("handcrafted94")
    X = np.stack([plain.extract(model.extractor.transform(y))["pooled"] for y in signals])
    order = [sorted(model.classes).index(c) for c in model.classes]
    np.testing.assert_allclose(
        model.predict_proba_signals(signals), model.estimator.predict_proba(X)[:, order], atol=1e-6
    )


@pytest.mark.parametrize(
    ("options", "entry", "model"),
    [
        ({}, "handcrafted94", "svm"),
        ({"normalize": "speaker"}, "handcrafted94~norm-speaker", "logreg"),
        ({"augment": "gain"}, "handcrafted94~aug-gain", "logreg"),
    ],
)
def test_train_reproduces_the_stored_fold_predictions_label_for_label(
    demo, cache, tmp_path, options, entry, model
):
    """`train --split S --fold K` fits through the bench's own fit path: the saved model, given the fold's test
    clips, returns the labels and probabilities the leaderboard stored for that fold."""
    split = make_split(demo, "speaker-4fold", seed=0)
    results = tmp_path / "results"
    run_bench(
        demo, split, features=["handcrafted94"], models=model, results_dir=results, cache=cache, jobs=1,
        render=False, **options,
    )  # fmt: skip
    stored = pd.read_parquet(unit_paths(split_dir(results, demo, split), entry, model, 2)[1])
    out = train_model(
        demo, features="handcrafted94", model=model, out=tmp_path / "m", split=split, fold=2, cache=cache, jobs=1,
        **options,
    )  # fmt: skip
    trained = load_model(out, cache=cache)
    assert trained.card["entry"] == entry
    # the model's input for the test clips: raw cached features (the model normalises them itself)
    fs = FeatureStore(cache).load(demo, "handcrafted94")
    pos = {u: i for i, u in enumerate(fs.utt_ids)}
    X = fs.X[[pos[u] for u in stored["utt_id"]]]
    if "normalize" in options:
        with pytest.raises(ParameterError, match="--normalize speaker"):
            trained.predict_features(X)
        # statistics of each test speaker from all of that speaker's clips, as the bench computed them
        spk = demo.set_index("utt_id")["speaker"]
        everyone = fs.X
        groups = spk.loc[fs.utt_ids].tolist()
        proba_all, labels_all = trained.predict_features(everyone, groups=groups)
        labels = [labels_all[pos[u]] for u in stored["utt_id"]]
        proba = proba_all[[pos[u] for u in stored["utt_id"]]]
        with pytest.raises(ParameterError, match="normalize"):
            predict_files(trained, demo["path"].tolist()[:2])
        assert trained.card["normalize"]["column"] == "speaker"
    else:
        proba, labels = trained.predict_features(X)
    assert labels == stored["y_pred"].tolist()
    cols = [f"proba__{c}" for c in trained.classes]
    np.testing.assert_allclose(proba, stored[cols].to_numpy(), atol=1e-5)


def test_cli_train_takes_every_option_a_bench_unit_has(demo_root, cache, tmp_path):
    out = tmp_path / "m"
    code = main(
        [
            "train", "--corpus", "demo", "--root", str(demo_root), "--features", "handcrafted94",
            "--model", "logreg", "--out", str(out), "--cache", str(cache), "--split", "speaker-4fold",
            "--fold", "1", "--normalize", "speaker", "--augment", "gain", "--tune", "--min-duration", "0.5",
            "--model-params", '{"logreg": {"C": 0.5}}', "--jobs", "1",
        ]
    )  # fmt: skip
    assert code == 0
    card = json.loads((out / "model.json").read_text())
    assert card["entry"] == "handcrafted94~aug-gain~norm-speaker"
    assert card["fit"] == {"tune": True, "min_duration": 0.5, "model_params": {"C": 0.5}}
    assert [t["name"] for t in card["augment"]["transforms"]] == ["gain"]
    assert card["normalize"]["column"] == "speaker"
    assert card["best_params"]  # the grid search ran inside the training data


# ------------------------------------------------------------------------------- the out-of-distribution guard
def test_predictions_carry_the_guards_verdict_with_one_warning(svm_dir, cache, demo, tmp_path, caplog):
    from sertool.guard import Guard

    model = load_model(svm_dir, cache=cache)
    card = json.loads((svm_dir / "model.json").read_text())
    assert card["guard"]["info"]["n_rows"] == len(demo) and card["guard"]["threshold"] > 0
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.3 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32), 16000)
    paths = demo["path"].tolist()[:12]
    with caplog.at_level("WARNING", logger="sertool.deploy"):
        df, skipped = predict_files(model, [*paths, noise], jobs=1)
    assert not skipped and list(df.columns[-2:]) == ["ood_score", "in_distribution"]
    # reference: the stored guard on the cached features of the same clips (not the extractor's run here)
    guard = Guard.from_dict(card["guard"])
    fs = FeatureStore(cache).load(demo, "handcrafted94")
    pos = {u: i for i, u in enumerate(fs.utt_ids)}
    X = fs.X[[pos[u] for u in demo["utt_id"][:12]]]
    np.testing.assert_allclose(
        df["ood_score"][:12], guard.distance(X) / guard.threshold, rtol=1e-3, atol=1e-4
    )
    assert df["in_distribution"][:12].all()  # clips it was trained on
    assert not df["in_distribution"].iloc[-1] and df["ood_score"].iloc[-1] > 1  # white noise
    warnings = [r.getMessage() for r in caplog.records if "outside the data" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("1 of 13 input(s)")


def test_the_bench_stores_the_verdict_a_trained_fold_model_gives(demo, cache, tmp_path):
    split = make_split(demo, "speaker-4fold", seed=0)
    results = tmp_path / "results"
    run_bench(
        demo, split, features=["handcrafted94"], models="svm", results_dir=results, cache=cache, jobs=1,
        render=False,
    )  # fmt: skip
    stored = pd.read_parquet(unit_paths(split_dir(results, demo, split), "handcrafted94", "svm", 1)[1])
    assert stored["in_distribution"].dtype == bool and np.isfinite(stored["ood_score"]).all()
    out = train_model(
        demo, features="handcrafted94", model="svm", out=tmp_path / "m", split=split, fold=1, cache=cache, jobs=1
    )  # fmt: skip
    paths = demo.set_index("utt_id").loc[list(stored["utt_id"]), "path"].tolist()
    df, _ = predict_files(load_model(out, cache=cache), paths, jobs=1)
    np.testing.assert_allclose(df["ood_score"], stored["ood_score"], rtol=1e-3, atol=1e-4)
    assert df["in_distribution"].tolist() == stored["in_distribution"].tolist()


@pytest.fixture(scope="module")
def normalised(demo, cache, tmp_path_factory):
    """A speaker-normalised bench run, its fold-2 model, and the stored fold-2 predictions."""
    tmp = tmp_path_factory.mktemp("normalised")
    split = make_split(demo, "speaker-4fold", seed=0)
    run_bench(
        demo, split, features=["handcrafted94"], models="logreg", results_dir=tmp / "r", cache=cache, jobs=1,
        normalize="speaker", render=False,
    )  # fmt: skip
    stored = pd.read_parquet(
        unit_paths(split_dir(tmp / "r", demo, split), "handcrafted94~norm-speaker", "logreg", 2)[1]
    )
    out = train_model(
        demo, features="handcrafted94", model="logreg", out=tmp / "m", split=split, fold=2, cache=cache,
        jobs=1, normalize="speaker",
    )  # fmt: skip
    return out, stored


def test_normalised_prediction_per_speaker_equals_the_bench(normalised, demo, cache, tmp_path, capsys):
    out, stored = normalised
    model = load_model(out, cache=cache)
    by_utt = demo.set_index("utt_id")
    paths = by_utt.loc[list(stored["utt_id"]), "path"].tolist()
    cols = [f"proba__{c}" for c in model.classes]
    # through the library: the speaker of each file
    df, _ = predict_files(model, paths, groups=stored["speaker"].tolist(), jobs=1)
    assert df["label"].tolist() == stored["y_pred"].tolist()
    np.testing.assert_allclose(df[cols].to_numpy(), stored[cols].to_numpy(), atol=1e-4)
    # through the CLI: one folder per speaker
    inputs = tmp_path / "inputs"
    for p, spk in zip(paths, stored["speaker"], strict=True):
        (inputs / spk).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, inputs / spk / Path(p).name)
    csv = tmp_path / "pred.csv"
    args = ["predict", str(inputs), "--model", str(out), "--cache", str(cache), "--out", str(csv)]
    assert main([*args, "--normalize-by", "folder"]) == 0
    got = pd.read_csv(csv).assign(name=lambda d: d["path"].map(lambda p: Path(p).name)).set_index("name")
    want = stored.assign(name=[Path(p).name for p in paths]).set_index("name")
    assert got.loc[want.index, "label"].tolist() == want["y_pred"].tolist()
    assert set(got["group"]) == set(stored["speaker"])
    # a CSV of inputs with a speaker column
    table = tmp_path / "inputs.csv"
    pd.DataFrame({"path": paths, "who": stored["speaker"]}).to_csv(table, index=False)
    assert main(["predict", str(table), "--model", str(out), "--cache", str(cache), "--out", str(csv),
                 "--speaker-column", "who"]) == 0  # fmt: skip
    assert pd.read_csv(csv)["label"].tolist() == stored["y_pred"].tolist()
    capsys.readouterr()
    # one clip, no statistics: refused in one line that names the options
    assert main(["predict", paths[0], "--model", str(out), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--normalize-by folder" in err and "--enroll" in err
    assert (
        main(["predict", paths[0], "--model", str(out), "--cache", str(cache), "--normalize-by", "folder"])
        == 2
    )
    assert "1 clip(s)" in capsys.readouterr().err


def test_enrolment_clips_give_the_statistics_of_a_single_clip(normalised, demo, cache, tmp_path, capsys):
    out, stored = normalised
    model = load_model(out, cache=cache)
    by_utt = demo.set_index("utt_id")
    clip, *others = by_utt.loc[list(stored["utt_id"]), "path"].tolist()
    enrol = tmp_path / "enrol"
    enrol.mkdir()
    for p in others:
        shutil.copy(p, enrol / Path(p).name)
    assert main(["predict", clip, "--model", str(out), "--cache", str(cache), "--enroll", str(enrol),
                 "--json"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)["predictions"][0]
    # reference: statistics of the enrolment clips' cached features, z-score the clip, the estimator itself
    fs = FeatureStore(cache).load(demo, "handcrafted94")
    pos = {u: i for i, u in enumerate(fs.utt_ids)}
    feats = fs.X[[pos[u] for u in stored["utt_id"]]].astype(np.float64)
    mean, std = feats[1:].mean(axis=0), feats[1:].std(axis=0)
    z = ((feats[:1] - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)
    order = [sorted(model.classes).index(c) for c in model.classes]
    want = model.estimator.predict_proba(z)[0, order]
    np.testing.assert_allclose([got[f"proba__{c}"] for c in model.classes], want, atol=1e-4)
    assert isinstance(got["in_distribution"], bool) and got["ood_score"] >= 0
    # groups or enrolment for a model trained without normalisation: refused, not ignored
    plain = train_model(demo, features="handcrafted94", model="gnb", out=tmp_path / "g", cache=cache, jobs=1)
    assert main(["predict", clip, "--model", str(plain), "--cache", str(cache), "--enroll", str(enrol)]) == 2
    assert "without --normalize" in capsys.readouterr().err
