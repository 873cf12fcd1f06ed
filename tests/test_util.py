"""sertool.util: one cache folder (``~`` and ``$VARS`` expanded) for features, weights and manifests, device
resolution, atomic writes; and the package versions the feature cache records."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from sertool.exceptions import ParameterError
from sertool.util import (
    atomic_parquet,
    atomic_write_bytes,
    atomic_write_text,
    cache_dir,
    check_device,
    expand_path,
    resolve_device,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home folder; ``SERTOOL_CACHE`` unset."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("SERTOOL_CACHE", raising=False)
    return folder


# ---------------------------------------------------------------------------------------------- cache folder
def test_cache_dir_expands_a_tilde_in_the_environment(home, monkeypatch):
    monkeypatch.setenv("SERTOOL_CACHE", "~/c")
    assert cache_dir() == home / "c"


def test_cache_dir_defaults_to_the_home_cache(home):
    assert cache_dir() == home / ".cache" / "sertool"


def test_cache_dir_expands_variables_and_prefers_an_explicit_path(home, monkeypatch, tmp_path):
    monkeypatch.setenv("SERTOOL_CACHE", "~/c")
    monkeypatch.setenv("SER_TEST_ROOT", str(tmp_path / "root"))
    assert cache_dir("$SER_TEST_ROOT/x") == tmp_path / "root" / "x"
    assert cache_dir(Path("~") / "y") == home / "y"
    assert cache_dir("") == home / "c"  # an empty --cache is no choice: the environment decides


def test_an_unset_variable_is_an_error_not_a_folder(home, monkeypatch):
    monkeypatch.delenv("SER_TEST_UNSET", raising=False)
    with pytest.raises(ParameterError, match="SER_TEST_UNSET"):
        cache_dir("$SER_TEST_UNSET/cache")
    monkeypatch.setenv("SERTOOL_CACHE", "$SER_TEST_UNSET/cache")
    with pytest.raises(ParameterError, match="unset environment variable"):
        cache_dir()
    with pytest.raises(ParameterError):
        expand_path("${SER_TEST_UNSET}")


def test_store_weights_and_manifest_share_one_expanded_folder(home, monkeypatch):
    """``SERTOOL_CACHE='~/c'`` once sent features to ``$HOME/c`` but manifests and weights to ``./~/c``."""
    from sertool.data.manifest import default_manifest_path
    from sertool.features import store, weights
    from sertool.features.store import FeatureStore

    monkeypatch.chdir(home)
    monkeypatch.setenv("SERTOOL_CACHE", "~/c")
    expected = home / "c"
    assert FeatureStore().root == expected
    assert store.default_cache_dir() == weights.default_cache_dir() == expected
    assert default_manifest_path("ravdess") == expected / "ravdess" / "manifest.parquet"
    assert weights.list_weights() is not None and not (home / "~").exists()  # nothing made in ./~
    # explicit folders are expanded the same way everywhere
    assert FeatureStore("~/d").root == home / "d"
    assert default_manifest_path("tess", "~/d") == home / "d" / "tess" / "manifest.parquet"


def test_weights_cache_root_is_expanded(home, monkeypatch, tmp_path):
    """A converted folder lands under the expanded cache (checked with a fake built-in so nothing converts)."""
    from sertool.features import weights

    seen: list[Path] = []
    monkeypatch.setitem(weights.BUILTIN_WEIGHTS, "fake", weights.BUILTIN_WEIGHTS["tiny.en"])
    monkeypatch.setattr(weights, "_builtin_parts", lambda name: [tmp_path / "model.bin"])
    monkeypatch.setattr(weights, "_builtin_source", lambda name: "fake")
    monkeypatch.setattr(
        weights, "_convert_ct2", lambda parts, label, source, cache: seen.append(cache) or "converted"
    )
    monkeypatch.setenv("SERTOOL_CACHE", "~/c")
    assert weights.resolve("fake") == "converted"
    assert weights.resolve("fake", cache="~/w") == "converted"
    assert seen == [home / "c", home / "w"]


# ---------------------------------------------------------------------------------------------------- device
def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    check_device("cuda:1")  # well-formed, whether or not this machine has it


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", "", None, 0])
def test_bad_device_strings_raise(bad):
    with pytest.raises(ParameterError, match="device"):
        resolve_device(bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="device"):
        check_device(bad)  # type: ignore[arg-type]


def test_cuda_without_a_gpu_is_an_error(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ParameterError, match="CUDA is not available"):
        resolve_device("cuda")


def test_torch_callers_get_a_torch_device_from_the_same_helper(monkeypatch):
    torch = pytest.importorskip("torch")
    from sertool.features.whisper import pick_device
    from sertool.models.torch_base import resolve_device as torch_resolve

    assert pick_device("cpu") == torch_resolve("cpu") == torch.device("cpu")
    with pytest.raises(ParameterError, match="device"):
        pick_device("tpu")
    with pytest.raises(ParameterError, match="device"):
        torch_resolve("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch_resolve("auto") == torch.device("cpu")


# ------------------------------------------------------------------------------------------- atomic writes
def test_atomic_writes_replace_content_and_leave_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    assert atomic_write_bytes(target, b"one") == target  # creates the parent folder
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    text = tmp_path / "t.txt"
    atomic_write_text(text, "héllo")
    atomic_write_text(text, "wörld")
    assert text.read_text(encoding="utf-8") == "wörld"
    df = pd.DataFrame({"a": [1, 2]})
    pq = tmp_path / "d.parquet"
    atomic_parquet(df, pq)
    atomic_parquet(df.assign(a=[3, 4]), pq)
    assert pd.read_parquet(pq)["a"].tolist() == [3, 4]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d.parquet", "f.bin", "sub", "t.txt"]


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    with pytest.raises(OSError, match="disk full"):
        atomic_parquet(pd.DataFrame({"a": [1]}), tmp_path / "d.parquet")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


# ------------------------------------------------------------------------------------------ package versions
def test_feature_cache_records_python_then_base_then_imported_optional_packages(monkeypatch):
    from sertool.features import store
    from sertool.provenance import package_versions

    monkeypatch.delitem(sys.modules, "opensmile", raising=False)
    versions = store._package_versions()
    assert next(iter(versions)) == "python" and versions["python"] == sys.version.split()[0]
    assert {"numpy", "pandas", "pyarrow"} <= set(versions)
    assert "opensmile" not in versions  # optional packages only once this process imported them
    assert list(versions)[1:] == [n for n in store._VERSIONED + store._OPTIONAL if n in versions]
    assert package_versions(["numpy", "no-such-distribution-xyz"]) == {"numpy": versions["numpy"]}
