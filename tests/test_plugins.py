"""Plugins: extractors, models and corpora from installed packages' entry points (sertool.plugins).

The unit tests replace the entry points sertool sees; the integration test installs the example plugin
package (examples/sertool-plugin-example) and runs ``sertool bench`` on it through the CLI.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sertool import plugins
from sertool.data.corpora.base import CorpusAdapter, UtteranceRow, available_corpora, get_adapter
from sertool.exceptions import ParameterError
from sertool.features.base import (
    Extractor,
    ProtocolExtractor,
    available_extractors,
    get_extractor,
    parse_view,
)
from sertool.models.classic import make_gnb
from sertool.models.registry import MODELS, ModelSpec, get_model, list_models, make_estimator, resolve_models

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "sertool-plugin-example"


# ------------------------------------------------------------------------------------------ fake plugins


class FakeEntryPoint:
    """Stands in for :class:`importlib.metadata.EntryPoint`: a name, a value string and ``load()``."""

    def __init__(self, name: str, obj: Any = None, error: BaseException | None = None) -> None:
        self.name = name
        self.value = f"fake_pkg:{name.replace('-', '_')}"
        self.dist = None
        self._obj, self._error = obj, error

    def load(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._obj


class ToyEmbed(Extractor):
    """A plugin extractor: the signal's RMS and peak, scaled."""

    name = "toy-embed"
    version = 3

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @property
    def dim(self) -> int:
        return 2

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        rms = float(np.sqrt(np.mean(y**2)))
        return {"pooled": np.array([rms, np.abs(y).max()], dtype=np.float32) * self.scale}


def toy_factory(name: str, **params: Any) -> ToyEmbed:
    return ToyEmbed(**params)


class DuckEmbed:
    """Follows the extractor protocol without subclassing Extractor."""

    name = "duck-embed"
    version = 2
    dim = 3

    def params(self) -> dict[str, Any]:
        return {"k": 1}

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return {"pooled": np.array([y.mean(), y.std(), y.max()], dtype=np.float32)}


class NotAnExtractor:
    """Has a name and nothing else."""

    name = "half-embed"


class ToyAdapter(CorpusAdapter):
    """A plugin corpus adapter: every audio file is a 'neutral' clip of speaker 'toy-1'."""

    name = "toycorpus"

    def parse_file(self, path: Path) -> UtteranceRow | str:
        return UtteranceRow(path.stem, str(path), "toycorpus-1", "neutral", "n")


TOY_GNB = ModelSpec(name="toy-gnb", family="classic", factory=make_gnb, description="a plugin model")


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[FakeEntryPoint]]]:
    """``{group: [FakeEntryPoint, ...]}`` that sertool.plugins sees instead of the installed packages."""
    groups: dict[str, list[FakeEntryPoint]] = {g: [] for g in plugins.GROUPS}
    monkeypatch.setattr(plugins, "entry_points", lambda group: list(groups[group]))
    plugins.clear_cache()
    yield groups
    plugins.clear_cache()


# --------------------------------------------------------------------------------------------- loader


def test_load_group_loads_caches_and_reports_broken_plugins(entry_points, caplog):
    entry_points["sertool.extractors"] += [
        FakeEntryPoint("Toy-Embed", toy_factory),
        FakeEntryPoint("broken-embed", error=ImportError("No module named 'fake_pkg'")),
    ]
    with caplog.at_level(logging.WARNING, logger="sertool.plugins"):
        found = plugins.load_group("sertool.extractors")
    assert found == {"toy-embed": toy_factory}  # names lower-cased, the broken one left out
    assert plugins.load_group("sertool.extractors") is found  # read once per process
    assert plugins.plugin_errors() == {
        ("sertool.extractors", "broken-embed"): "ImportError: No module named 'fake_pkg'"
    }
    assert "'broken-embed'" in caplog.text and "No module named 'fake_pkg'" in caplog.text
    with pytest.raises(ValueError, match="unknown plugin group"):
        plugins.load_group("sertool.nothing")


# ----------------------------------------------------------------------------------------- extractors


def test_a_plugin_extractor_works_like_a_built_in(entry_points):
    entry_points["sertool.extractors"].append(FakeEntryPoint("toy-embed", toy_factory))
    ex = get_extractor("toy-embed", scale=2.0)
    assert isinstance(ex, ToyEmbed) and ex.params() == {"scale": 2.0}
    # the cache key holds name, version and params, as for built-ins; other params, other key
    assert ex.key.startswith("toy-embed/v3-") and ex.key != get_extractor("toy-embed").key
    assert ex.identity()["name"] == "toy-embed" and ex.identity()["dim"] == 2
    assert get_extractor("toy-embed@all").key == get_extractor("toy-embed").key  # views parse
    assert parse_view("toy-embed@all").all_layers
    assert "toy-embed" in available_extractors()
    assert get_extractor("mfcc40").name == "mfcc40"  # built-ins unaffected


def test_an_extractor_class_is_accepted_as_the_entry_point(entry_points):
    entry_points["sertool.extractors"].append(FakeEntryPoint("toy-embed", ToyEmbed))
    assert get_extractor("toy-embed", scale=3).params() == {"scale": 3.0}


def test_a_protocol_object_is_wrapped_with_a_cache_key(entry_points):
    entry_points["sertool.extractors"].append(FakeEntryPoint("duck-embed", lambda name, **kw: DuckEmbed()))
    ex = get_extractor("duck-embed")
    assert isinstance(ex, ProtocolExtractor) and isinstance(ex, Extractor)
    assert ex.name == "duck-embed" and ex.version == 2 and ex.dim == 3 and ex.key.startswith("duck-embed/v2-")
    out = ex.extract(np.linspace(-1, 1, 1600, dtype=np.float32))["pooled"]
    assert out.shape == (3,) and ex.outputs() == ("pooled",)
    copy = pickle.loads(pickle.dumps(ex))  # process workers receive it pickled
    assert copy.key == ex.key and copy.extract(np.ones(160, dtype=np.float32))["pooled"].shape == (3,)


def test_a_plugin_object_missing_protocol_attributes_gets_a_clear_error(entry_points):
    entry_points["sertool.extractors"] += [
        FakeEntryPoint("half-embed", lambda name, **kw: NotAnExtractor()),
        FakeEntryPoint("misnamed", toy_factory),
        FakeEntryPoint("crashing", lambda name, **kw: 1 / 0),
        FakeEntryPoint("toy-embed", toy_factory),
    ]
    with pytest.raises(
        ParameterError, match=r"'half-embed'.*without version, params, dim, extract.*Extractor"
    ):
        get_extractor("half-embed")
    with pytest.raises(ParameterError, match=r"'misnamed'.*named 'toy-embed', not 'misnamed'"):
        get_extractor("misnamed")
    with pytest.raises(ParameterError, match=r"'crashing'.*ZeroDivisionError"):
        get_extractor("crashing")
    with pytest.raises(ParameterError, match=r"'toy-embed'.*no_such_param.*TypeError"):
        get_extractor("toy-embed", no_such_param=1)


def test_a_broken_extractor_plugin_is_named_and_built_ins_still_resolve(entry_points, caplog):
    entry_points["sertool.extractors"].append(FakeEntryPoint("my-embed", error=ImportError("no my_pkg")))
    with caplog.at_level(logging.WARNING):
        assert get_extractor("handcrafted94").name == "handcrafted94"
        with pytest.raises(
            ParameterError, match=r"unknown feature extractor 'my-embed'.*failed to load.*no my_pkg"
        ):
            get_extractor("my-embed")
    assert ("sertool.extractors", "my-embed") in plugins.plugin_errors()
    assert "'my-embed'" in caplog.text and "no my_pkg" in caplog.text


def test_a_built_in_name_wins_over_a_plugin(entry_points, caplog):
    entry_points["sertool.extractors"] += [
        FakeEntryPoint("mfcc40", toy_factory),
        FakeEntryPoint("whisper-huge", toy_factory),  # matched by the built-in whisper-* pattern
    ]
    with caplog.at_level(logging.WARNING, logger="sertool.plugins"):
        assert get_extractor("mfcc40").name == "mfcc40"
        get_extractor("mfcc40")
    assert caplog.text.count("'mfcc40'") == 1 and "built-in" in caplog.text  # said once
    assert "whisper-huge" not in available_extractors()


# --------------------------------------------------------------------------------------------- models


def test_a_plugin_model_resolves_by_name_and_under_all(entry_points):
    entry_points["sertool.models"] += [
        FakeEntryPoint("toy-gnb", TOY_GNB),
        FakeEntryPoint(
            "two",
            lambda: [
                ModelSpec(name="toy-a", family="classic", factory=make_gnb),
                ModelSpec(name="toy-b", family="classic", factory=make_gnb),
            ],
        ),
    ]
    assert [s.name for s in resolve_models("toy-gnb,logreg")] == ["toy-gnb", "logreg"]
    everything = [s.name for s in resolve_models("all", input_kind="pooled")]
    assert everything[-3:] == ["toy-gnb", "toy-a", "toy-b"] and "logreg" in everything  # plugins last
    assert "toy-b" in [s.name for s in list_models(family="classic")]
    assert get_model("toy-a").family == "classic"
    assert hasattr(make_estimator("toy-gnb", seed=0), "predict_proba")
    assert "toy-gnb" not in MODELS  # the registry of built-ins is not modified


def test_a_broken_model_plugin_is_named_and_built_ins_still_resolve(entry_points, caplog):
    entry_points["sertool.models"] += [
        FakeEntryPoint("lda", error=ImportError("cannot import name 'lda_spec'")),
        FakeEntryPoint("not-a-spec", lambda: "nonsense"),
        FakeEntryPoint("knn", ModelSpec(name="knn", family="classic", factory=make_gnb)),  # shadowed
    ]
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in resolve_models("logreg,knn")] == ["logreg", "knn"]
        assert get_model("knn").factory is not make_gnb  # the built-in wins
        with pytest.raises(
            ParameterError, match=r"unknown model\(s\) 'lda'.*plugin 'lda' failed to load.*lda_spec"
        ):
            resolve_models("lda")
    errors = plugins.plugin_errors()
    assert "ImportError" in errors[("sertool.models", "lda")]
    assert "expected a ModelSpec" in errors[("sertool.models", "not-a-spec")]
    assert "'lda'" in caplog.text and "'not-a-spec'" in caplog.text and "'knn'" in caplog.text


# -------------------------------------------------------------------------------------------- corpora


def test_a_plugin_corpus_adapter_is_found_by_name(entry_points, tmp_path, caplog):
    entry_points["sertool.corpora"] += [
        FakeEntryPoint("toycorpus", ToyAdapter),
        FakeEntryPoint("ravdess", ToyAdapter),  # shadowed by the built-in
        FakeEntryPoint("badcorpus", error=ImportError("no bad_pkg")),
    ]
    (tmp_path / "a.wav").write_bytes(b"")
    adapter = get_adapter("ToyCorpus")
    assert isinstance(adapter, ToyAdapter)
    rows, skipped = adapter.scan(tmp_path)
    assert [r.utt_id for r in rows] == ["a"] and skipped == []
    with caplog.at_level(logging.WARNING, logger="sertool.plugins"):
        assert type(get_adapter("ravdess")).__name__ != "ToyAdapter"
    assert "'ravdess'" in caplog.text
    assert "toycorpus" in available_corpora() and available_corpora().count("ravdess") == 1
    with pytest.raises(ParameterError, match=r"unknown corpus 'badcorpus'.*failed to load.*no bad_pkg"):
        get_adapter("badcorpus")


# ------------------------------------------------------------------------- the example plugin, installed


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example plugin package installed (pip, no network, no build isolation) into a private folder.

    The folder goes on the CLI subprocess's PYTHONPATH, where ``importlib.metadata`` finds its entry points
    like those of any installed package, so the package is installed for the commands under test and for
    nothing else: this test process, other tests and other users of the environment never see its models
    (an interrupted run leaves nothing installed). The source is copied first, so the build writes nothing
    into the checkout.
    """
    base = tmp_path_factory.mktemp("plugin")
    src, target = base / "src", base / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    cmd += ["--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(target.glob("sertool_plugin_example-*.dist-info/entry_points.txt"))
    yield target
    shutil.rmtree(base, ignore_errors=True)


def _sertool(args: list[str], site: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SERTOOL_CACHE": str(cache), "SERTOOL_N_JOBS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "sertool.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_the_installed_example_plugin_runs_in_sertool_bench(installed_example, demo_root, tmp_path):
    results, cache = tmp_path / "results", tmp_path / "cache"
    bench = ["bench", "--corpus", "demo", "--root", str(demo_root), "--features", "logmel-stats"]
    bench += ["--models", "lda,logreg", "--split", "speaker-2fold", "--seed", "0", "--jobs", "1"]
    bench += ["--results", str(results), "--cache", str(cache)]
    done = _sertool(bench, installed_example, cache)
    assert done.returncode == 0, done.stdout + done.stderr
    board = pd.read_csv(next((results / "demo").glob("speaker-2fold-*/leaderboard.csv")))
    rows = board[board["features"] == "logmel-stats"]
    assert set(rows["model"]) == {"lda", "logreg"}
    assert rows["ua_mean"].between(0, 1).all() and rows["wa_mean"].between(0, 1).all()
    assert (rows["folds"] == 2).all() and rows["complete"].all()
    # the features were cached under the plugin's name, version and parameter hash
    entries = list((cache / "demo" / "logmel-stats").glob("v1-*"))
    assert len(entries) == 1
    # without the package the names are unknown (exit 2, one line), and this process never saw them
    missing = _sertool(bench, tmp_path / "nowhere", cache)
    assert missing.returncode == 2 and "unknown model(s) 'lda'" in missing.stderr
    assert "lda" not in [s.name for s in resolve_models("all")]
