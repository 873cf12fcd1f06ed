"""Benchmark definitions: the typed object, its TOML round trip, its checks, and ``sertool bench`` over it."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sertool.bench import Benchmark, SplitSpec, run_benchmark
from sertool.cli import EXIT_ERROR, EXIT_OK, main
from sertool.exceptions import ParameterError

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.toml"))


# ----------------------------------------------------------------------------------- the committed definitions
@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_every_committed_definition_loads_validates_and_round_trips(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SERTOOL_CORPORA", str(tmp_path))
    bench = Benchmark.from_toml(path)
    assert bench.validate() is bench
    raw = tomllib.loads(path.read_text())
    assert bench.corpora and len(bench.roots) == len(bench.corpora)
    assert all(root.parent == tmp_path for root in bench.roots), bench.roots  # $SERTOOL_CORPORA expanded
    assert bench.name == raw["name"] and bench.paper == raw.get("paper")
    assert bench.splits and all(isinstance(s, SplitSpec) for s in bench.splits)
    text = bench.to_toml()
    assert Benchmark.from_toml(text) == bench
    assert Benchmark.from_dict(bench.to_dict()) == bench
    assert "${" not in text


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_every_committed_definition_names_things_that_exist(path, tmp_path, monkeypatch):
    """Models, feature views, extractor and model parameters, augmentation and split strategies of each
    ``benchmarks/*.toml`` all exist, so no definition rots unseen (running one takes a corpus and hours)."""
    from sertool.features import configured_extractor, parse_view
    from sertool.features.transforms import parse_augment
    from sertool.models.registry import make_estimator, resolve_models

    monkeypatch.setenv("SERTOOL_CORPORA", str(tmp_path))
    bench = Benchmark.from_toml(path)
    names = {m.name for m in resolve_models(bench.models)}
    for view in bench.features:
        for part in view.split("+"):
            name = parse_view(part).extractor
            configured_extractor(name, bench.extractor_params.get(name), device="cpu", cache=tmp_path)
    for model, params in bench.model_params.items():
        assert model in names, f"{path.name}: model_params for {model!r}, which the definition does not run"
        unknown = set(params) - set(make_estimator(model, seed=0).get_params(deep=True))
        assert not unknown, f"{path.name}: {model} has no parameters {sorted(unknown)}"
    parse_augment(bench.augment)
    known = {"random-holdout", "loso", "loso-session", "cross-corpus", "leave-one-corpus-out"}
    for spec in bench.splits:
        assert spec.strategy in known or re.fullmatch(r"(random|speaker)-\d+fold", spec.strategy), spec


def test_the_forms_the_committed_definitions_use(tmp_path, monkeypatch):
    monkeypatch.setenv("CORP", str(tmp_path))
    bench = Benchmark.from_toml(
        'corpus = "ravdess, tess"\nroot = "$CORP/ravdess,${CORP}/tess"\nfeatures = "handcrafted94,mfcc40"\n'
        'models = "logreg,svm"\nsplit = ["loso", { strategy = "cross-corpus", params = { train_corpus = '
        '"ravdess", test_corpus = "tess" } }, "random-holdout"]\nsplit_params = { test_fraction = 0.1 }\n'
        'valid-fraction = 0\n[model-params.svm]\nC = 2.0\n[augment]\ntransforms = ["awgn"]\ncopies = 2\n'
    )
    assert bench.corpora == ("ravdess", "tess")
    assert bench.roots == (tmp_path / "ravdess", tmp_path / "tess")
    assert bench.features == ("handcrafted94", "mfcc40") and bench.models == ("logreg", "svm")
    assert bench.splits == (
        SplitSpec("loso", {"test_fraction": 0.1}),  # split_params go to every split given as a plain strategy
        SplitSpec("cross-corpus", {"train_corpus": "ravdess", "test_corpus": "tess"}),
        SplitSpec("random-holdout", {"test_fraction": 0.1}),
    )
    assert bench.valid_fraction == 0.0 and bench.model_params == {"svm": {"C": 2.0}}
    assert bench.augment == {"transforms": ["awgn"], "copies": 2}
    assert Benchmark.from_toml('split = "speaker-4fold"\nmodels = "Classic"').splits == (
        SplitSpec("speaker-4fold"),
    )
    assert Benchmark.from_toml('models = "Classic"').models == "classic"
    assert Benchmark.from_toml('augment = "none"\nnormalize = "none"').augment is None


def test_a_full_definition_round_trips(tmp_path):
    bench = Benchmark(
        corpora=["csv"],
        roots=[tmp_path / "c"],
        csv=tmp_path / "c" / "t.csv",
        label_map={"ang": "angry"},
        scheme="ser4",
        target="intensity",
        corpus_params={"split": "train"},
        features=["whisper-base@2-4", "handcrafted94+text-minilm"],
        models=["svm", "mlp_head"],
        model_params={"svm": {"C": 0.5, "kernel": "rbf"}, "mlp_head": {"hidden": [64, 32]}},
        extractor_params={"handcrafted94": {"preprocess": ["trim", {"name": "denoise"}]}},
        splits=[SplitSpec("random-holdout", {"test_fraction": 0.25}), "loso"],
        seed=7,
        valid_fraction=0.2,
        normalize="speaker",
        augment="awgn",
        tune=True,
        min_duration=0.5,
        results=tmp_path / "res",
        cache=tmp_path / "cache",
        device="cuda:1",
        jobs=3,
        unit_jobs=2,
        scheduler="tcp://127.0.0.1:8786",
        force=True,
        name="full",
        description="every field set",
        paper="A paper",
        published="WA 0.9",
    )
    assert bench.splits[1] == SplitSpec("loso") and bench.model_params["mlp_head"]["hidden"] == [64, 32]
    assert Benchmark.from_toml(bench.to_toml()) == bench
    assert Benchmark.from_dict(json.loads(json.dumps(bench.to_dict()))) == bench
    path = tmp_path / "full.toml"
    path.write_text(bench.to_toml())
    assert Benchmark.from_toml(path) == Benchmark.from_toml(str(path)) == bench
    assert Benchmark().to_dict() == {
        "scheme": "native",
        "target": "emotion",
        "features": ["handcrafted94"],
        "models": "all",
        "split": ["speaker-6fold"],
        "seed": 0,
        "valid_fraction": 0.1,
        "tune": False,
        "min_duration": 0.0,
        "results": "results",
        "device": "auto",
        "jobs": -1,
        "unit_jobs": -1,
        "force": False,
    }


def test_replace_checks_again_and_does_not_share_dicts():
    params = {"svm": {"C": 1.0}}
    bench = Benchmark(corpora="demo", roots="/d", models="svm", model_params=params)
    params["svm"]["C"] = 9.0
    assert bench.model_params == {"svm": {"C": 1.0}}
    assert dataclasses.replace(bench, models="gnb,knn").models == ("gnb", "knn")
    with pytest.raises(ParameterError, match=r"seed .* -1"):
        dataclasses.replace(bench, seed=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        bench.seed = 2  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------- refusals
def test_an_unknown_key_is_refused_naming_it(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('corpus = "demo"\nroot = "/d"\nmodles = ["svm"]\nfeature = "mfcc40"\n')
    with pytest.raises(ParameterError, match=r"typo\.toml: unknown keys \['feature', 'modles'\]"):
        Benchmark.from_toml(path)
    with pytest.raises(ParameterError, match="model_params is given twice"):
        Benchmark.from_dict({"model-params": {}, "model_params": {}})


def test_an_unset_variable_in_root_is_refused(monkeypatch):
    monkeypatch.delenv("SERTOOL_NO_SUCH_VAR", raising=False)
    with pytest.raises(ParameterError, match=r"root: .*SERTOOL_NO_SUCH_VAR.* unset environment variable"):
        Benchmark.from_toml('corpus = "tess"\nroot = "${SERTOOL_NO_SUCH_VAR}/tess"\n')
    with pytest.raises(ParameterError, match=r"results: .*unset"):
        Benchmark(results="$SERTOOL_NO_SUCH_VAR/res")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 1.5}, r"seed must be an integer, got 1\.5"),
        ({"seed": True}, "seed must be an integer"),
        ({"valid_fraction": 1.0}, r"valid_fraction must be in \[0, 1\), got 1\.0"),
        ({"normalize": "utterance"}, "normalize must be one of .* got 'utterance'"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"min_duration": -1}, "min_duration must be >= 0"),
        ({"features": []}, "features: name at least one"),
        ({"models": ""}, "models: name at least one"),
        ({"features": ["mfcc40", 3]}, r"features: 3 is not a name"),
        ({"model_params": {"svm": 1}}, r"model_params\['svm'\] must be a table"),
        ({"splits": []}, "split: name at least one"),
        ({"splits": [{"strategy": "loso", "param": {}}]}, r"unknown keys \['param'\]"),
        ({"splits": [{"params": {}}]}, "expected {strategy = NAME"),
        ({"tune": "yes"}, "tune must be true or false, got 'yes'"),
        ({"augment": 3}, "augment must be"),
        ({"corpora": "ravdess,tess", "roots": "/r"}, "corpus names 2 corpora .* but root gives 1 folders"),
        ({"unit_jobs": 0}, "unit_jobs must be"),
        ({"name": 5}, "name must be a string"),
    ],
)
def test_bad_values_are_refused_naming_the_field_and_value(change, message):
    with pytest.raises(ParameterError, match=message):
        Benchmark(**change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, "no corpus given"),
        ({"corpora": "demo"}, "corpus names 1 corpora .* root gives 0 folders"),
        ({"corpora": "demo", "roots": "/d", "models": "svm,nosuchmodel"}, "nosuchmodel"),
        ({"corpora": "demo", "roots": "/d", "scheme": "ser99"}, "ser99"),
        ({"corpora": "demo", "roots": "/d", "features": ["whisper-base@x"]}, "malformed feature view"),
        ({"corpora": "demo", "roots": "/d", "model_params": {"nosuch": {}}}, "nosuch"),
        ({"corpora": "demo", "roots": "/d", "augment": "wobble"}, "wobble"),
    ],
)
def test_validate_checks_names_before_any_corpus_is_read(change, message):
    with pytest.raises(ParameterError, match=message):
        Benchmark(**change).validate()


def test_unreadable_definitions_name_the_file(tmp_path):
    with pytest.raises(ParameterError, match=r"cannot read benchmark definition .*missing\.toml"):
        Benchmark.from_toml(tmp_path / "missing.toml")
    with pytest.raises(ParameterError, match="cannot read benchmark definition"):
        Benchmark.from_toml("corpus = [unclosed\n")
    with pytest.raises(ParameterError, match="cannot be written as TOML"):
        Benchmark(model_params={"svm": {"class_weight": None}}).to_toml()


# ----------------------------------------------------------------------------------------------- running
def test_load_manifest_merges_corpora_applies_the_scheme_and_min_duration(demo_root: Path, tmp_path: Path):
    table = tmp_path / "extra"
    table.mkdir()
    t = np.arange(16000) / 16000
    for i, seconds in enumerate((0.5, 2.0)):
        y = (0.1 * np.sin(2 * np.pi * 200 * t[: int(16000 * seconds)] * (1 + i))).astype(np.float32)
        sf.write(table / f"c{i}.wav", y, 16000)
    (tmp_path / "t.csv").write_text("path,label,speaker\nc0.wav,mad,x1\nc1.wav,mad,x2\n")
    bench = Benchmark(
        corpora="demo,csv",
        roots=[demo_root, table],
        csv=tmp_path / "t.csv",
        label_map={"mad": "angry"},  # reaches the csv adapter only
        scheme="ser4",
        min_duration=1.0,
    )
    manifest = bench.load_manifest(jobs=1)
    assert len(manifest) == 96 + 1  # the 0.5 s clip left out
    assert set(manifest["corpus"]) == {"demo", "csv"} and manifest.attrs["label_scheme"].startswith("ser4")
    assert manifest.loc[manifest["corpus"] == "csv", "label"].tolist() == ["angry"]


def test_run_benchmark_returns_one_report_per_split(demo_root: Path, tmp_path: Path):
    bench = Benchmark(
        corpora="demo",
        roots=[demo_root],
        features="handcrafted94",
        models="gnb",
        splits=["speaker-2fold", {"strategy": "random-holdout", "params": {"test_fraction": 0.25}}],
        seed=1,
        results=tmp_path / "res",
        cache=tmp_path / "cache",
        jobs=1,
    )
    reports = run_benchmark(bench)
    assert [r.split_id.split("-")[0] for r in reports] == ["speaker", "random"]
    assert [r.counts for r in reports] == [{"done": 2}, {"done": 1}]
    for report in reports:
        board = pd.read_csv(report.leaderboard["csv"])
        assert board["model"].tolist() == ["gnb"] and (board["seed"] == 1).all()
        assert Path(report.leaderboard["md"]).exists()


def test_flags_on_the_command_line_beat_the_definition(demo_root: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("DEMO_ROOT", str(demo_root))
    cfg = tmp_path / "def.toml"
    cfg.write_text(
        Benchmark(
            corpora="demo",
            roots="${DEMO_ROOT}",
            features="handcrafted94",
            models="logreg",
            splits="random-holdout",
            seed=3,
            results=tmp_path / "from-definition",
            cache=tmp_path / "cache",
            augment="gain",
            name="override-check",
        ).to_toml()
    )
    argv = ["bench", "--config", str(cfg), "--models", "gnb", "--seed", "1", "--split", "speaker-2fold"]
    argv += ["--results", str(tmp_path / "res"), "--augment", "none", "--jobs", "1", "--json"]
    assert main(argv) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["split_id"].startswith("speaker-2fold-") and summary["units"] == {"done": 2}
    board = pd.read_csv(summary["leaderboard"]["csv"])
    assert board["model"].tolist() == ["gnb"] and (board["seed"] == 1).all()
    assert board["features"].tolist() == ["handcrafted94"]  # --augment none beat augment = "gain"
    assert Path(summary["results"]).is_relative_to(tmp_path / "res")
    assert not (tmp_path / "from-definition").exists()
    # --split-params alone adds to the definition's splits
    assert main(["bench", "--config", str(cfg), "--split-params", '{"test_fraction": 0.5}', "--json",
                 "--models", "gnb", "--augment", "none", "--results", str(tmp_path / "res2")]) == EXIT_OK  # fmt: skip
    split = json.loads((Path(json.loads(capsys.readouterr().out)["results"]) / "split.json").read_text())
    assert split["strategy"] == "random-holdout" and split["params"]["test_fraction"] == 0.5


def test_bench_without_a_corpus_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--models", "gnb"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("sertool bench: error: no corpus given") and len(err.splitlines()) == 1
    (tmp_path / "bad.toml").write_text('corpus = "demo"\nroot = "/d"\nmodles = "svm"\n')
    assert main(["bench", "--config", "bad.toml"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "bad.toml: unknown keys ['modles']" in err and len(err.splitlines()) == 1
