"""The parquet feature cache: layout, keying by (utt_id, sha1), done markers, corruption, views, speed."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sertool.exceptions import CacheError, ParameterError
from sertool.features.base import Extractor
from sertool.features.store import FeatureStore, default_cache_dir


class Layered(Extractor):
    """A fake layered extractor: pooled (3, 4) = utt number + layer, frames (2, T, 4) float16 of layers 1, 2."""

    name = "fakelayers"
    version = 1
    n_layers = 3
    default_layers = (2,)
    frame_layers = (1, 2)

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @property
    def dim(self) -> int:
        return 4

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        v = float(y[0])
        pooled = (v + np.arange(3)[:, None] * 100 + np.arange(4)[None, :] / 10) * self.scale
        T = 1 + int(v) % 5
        frames = np.stack([np.full((T, 4), v + layer * 100, dtype=np.float16) for layer in self.frame_layers])
        return {"pooled": pooled.astype(np.float32), "frames": frames}


def fake_manifest(n: int, corpus: str = "c1", prefix: str = "u") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "utt_id": [f"{corpus}/{prefix}{i:04d}" for i in range(n)],
            "corpus": corpus,
            "sha1": [f"{i:040x}" for i in range(n)],
            "path": [f"/nowhere/{i}.wav" for i in range(n)],
        }
    )


def fill(store: FeatureStore, manifest: pd.DataFrame, ex: Extractor, shard: int = 4) -> None:
    """Write every manifest row in shards, with signal value = row number (as the fake extractor reads it)."""
    for corpus, part in manifest.groupby("corpus", sort=False):
        for s in range(0, len(part), shard):
            rows = part.iloc[s : s + shard]
            outs = [ex.extract(np.array([int(u[-4:])], dtype=np.float32)) for u in rows["utt_id"]]
            store.write_shard(str(corpus), ex, rows["utt_id"].tolist(), rows["sha1"].tolist(), outs)


def entry(store: FeatureStore, ex: Extractor, corpus: str = "c1"):
    return store.entry_dir(corpus, ex)


def shards(store, ex, corpus="c1"):
    return sorted(entry(store, ex, corpus).glob("part-*.parquet"))


def test_layout_meta_and_pooled_round_trip(tmp_path):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(10)
    fill(store, m, ex)
    e = entry(store, ex)
    assert e == tmp_path / "c1" / "fakelayers" / ex.key.split("/")[1]
    files = shards(store, ex)
    assert len(files) == 3 and all((f.parent / (f.name + ".done")).is_file() for f in files)
    assert all(f.name.startswith(f"part-{i:04d}-") for i, f in enumerate(files))
    meta = json.loads((e / "meta.json").read_text())
    assert meta["key"] == ex.key and meta["params"] == {"scale": 1.0} and meta["default_layers"] == [2]
    assert meta["frame_layers"] == [1, 2] and {"sertool", "numpy", "pyarrow"} <= set(meta["versions"])
    fs = store.load(m, "fakelayers")  # plain view: default layer 2
    assert fs.X.shape == (10, 4) and fs.X.dtype == np.float32 and fs.key == ex.key
    assert fs.utt_ids == m["utt_id"].tolist()
    np.testing.assert_allclose(fs.X[:, 0], np.arange(10) + 200)
    assert store.load(m, "fakelayers@all").X.shape == (10, 12)
    both = store.load(m, "fakelayers@0-1").X
    np.testing.assert_allclose(both[3], np.r_[3 + np.arange(4) / 10, 103 + np.arange(4) / 10], rtol=1e-6)


def test_frames_are_float32_and_layers_map_to_model_layers(tmp_path):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(7)
    fill(store, m, ex)
    fs = store.load(m, "fakelayers@2", output="frames")
    assert [x.shape for x in fs.X] == [(1 + i % 5, 4) for i in range(7)]
    assert all(x.dtype == np.float32 for x in fs.X)
    assert fs.X[3][0, 0] == 203.0  # model layer 2 = second stored layer
    both = store.load(m, "fakelayers@1-2", output="frames").X[3]
    assert both.shape == (4, 8) and both[0, 0] == 103.0 and both[0, 4] == 203.0
    with pytest.raises(ParameterError, match="not among the stored frame layers"):
        store.load(m, "fakelayers@0", output="frames")


def test_load_follows_manifest_order_across_corpora(tmp_path):
    store, ex = FeatureStore(tmp_path), Layered()
    m = pd.concat([fake_manifest(6, "c1"), fake_manifest(5, "c2", prefix="v")])  # index labels repeat
    fill(store, m, ex, shard=3)
    assert len(shards(store, ex, "c1")) == 2 and len(shards(store, ex, "c2")) == 2
    shuffled = m.sample(frac=1.0, random_state=3)
    assert store.missing(shuffled, ex).empty and len(store.missing(shuffled, Layered(scale=2.0))) == 11
    fs = store.load(shuffled, "fakelayers@0")
    assert fs.utt_ids == shuffled["utt_id"].tolist()
    np.testing.assert_allclose(fs.X[:, 0], [int(u[-4:]) for u in shuffled["utt_id"]])


def test_missing_and_audio_change_invalidate_exactly_that_row(tmp_path):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(8)
    assert len(store.missing(m, ex)) == 8
    fill(store, m.iloc[:6], ex)
    assert store.missing(m, ex)["utt_id"].tolist() == m["utt_id"].tolist()[6:]
    changed = m.copy()
    changed.loc[2, "sha1"] = "f" * 40  # the audio of one clip changed
    assert store.missing(changed, ex)["utt_id"].tolist() == [m.utt_id[2], m.utt_id[6], m.utt_id[7]]
    assert store.missing(m, Layered(scale=2.0)).shape[0] == 8  # another parameter: another entry


def test_load_missing_raises_or_returns_present(tmp_path, caplog):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(9)
    fill(store, m.iloc[:5], ex)
    with pytest.raises(CacheError, match=r"4 of 9 utterances .* c1/u0005, c1/u0006"):
        store.load(m, "fakelayers")
    with caplog.at_level(logging.WARNING):
        fs = store.load(m, "fakelayers", allow_missing=True)
    assert fs.utt_ids == m["utt_id"].tolist()[:5] and fs.X.shape == (5, 4)
    assert fs.missing == m["utt_id"].tolist()[5:]
    assert "4 of 9" in caplog.text


def test_shard_without_marker_is_never_read_and_cleaned_by_next_writer(tmp_path):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(8)
    fill(store, m, ex)
    victim = shards(store, ex)[1]
    (victim.parent / (victim.name + ".done")).unlink()  # as if killed between rename and marker
    tmp = victim.parent / ".part-0009-0000000000.parquet.tmp-123"
    tmp.write_bytes(b"half written")
    assert store.missing(m, ex)["utt_id"].tolist() == m["utt_id"].tolist()[4:]
    with pytest.raises(CacheError, match="4 of 8"):
        store.load(m, "fakelayers")
    stale = victim.stat().st_mtime_ns
    fill(store, m.iloc[4:], ex)  # a writer removes the leftovers and recomputes the rows
    assert not tmp.exists()
    assert all((f.parent / (f.name + ".done")).is_file() for f in shards(store, ex))
    assert not victim.exists() or victim.stat().st_mtime_ns != stale  # rewritten, never adopted
    assert store.load(m, "fakelayers").X.shape == (8, 4)


def test_a_pass_with_nothing_to_compute_still_removes_a_killed_writers_temporary_files(tmp_path):
    """A writer killed inside its last atomic write (the state file, after every shard was on disk) leaves a
    temporary file; the rerun writes no shard, so marking the pass complete must clean it (CI caught this)."""
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(8)
    fill(store, m, ex)
    entry = shards(store, ex)[0].parent
    tmp = entry / ".state.json.4242.tmp"  # sertool.util's atomic writes
    old = entry / ".state.json.tmp-4242"  # the name an earlier version used
    for leftover in (tmp, old):
        leftover.write_bytes(b'{"n_exp')
    assert store.missing(m, ex).empty  # nothing to compute: no write_shard will run
    store.mark_complete("c1", ex, n_expected=8, skipped=0)
    assert not tmp.exists() and not old.exists()
    assert json.loads((entry / "state.json").read_text())["n_expected"] == 8
    assert store.load(m, "fakelayers").X.shape == (8, 4)


@pytest.mark.parametrize("damage", ["flip", "truncate", "marker"])
def test_corrupt_shard_is_reported_and_dropped(tmp_path, caplog, damage):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(8)
    fill(store, m, ex)
    victim = shards(store, ex)[0]
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[:-100]))
    else:
        (victim.parent / (victim.name + ".done")).write_text("{not json")
    fresh = FeatureStore(tmp_path)  # no in-memory index from the writes
    with caplog.at_level(logging.ERROR):
        missing = fresh.missing(m, ex)
    assert missing["utt_id"].tolist() == m["utt_id"].tolist()[:4]
    assert "corrupt shard" in caplog.text and str(victim) in caplog.text
    assert not victim.exists()
    fill(fresh, m.iloc[:4], ex)
    np.testing.assert_allclose(fresh.load(m, "fakelayers@0").X[:, 0], np.arange(8))


def test_rows_already_cached_are_not_written_twice(tmp_path):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(6)
    fill(store, m.iloc[:4], ex)
    other = FeatureStore(tmp_path)  # a second process would see the same files
    fill(other, m, ex, shard=6)  # 4 of its 6 rows exist already
    assert FeatureStore(tmp_path).status()["n_rows"].tolist() == [6]
    last = shards(store, ex)[-1]
    assert json.loads((last.parent / (last.name + ".done")).read_text())["rows"] == 2
    assert (
        store.write_shard("c1", ex, m.utt_id[:2].tolist(), m.sha1[:2].tolist(), [ex.extract(np.ones(1))] * 2)
        is None
    )


def test_status_reports_entries(tmp_path):
    store = FeatureStore(tmp_path)
    assert store.status().empty and list(store.status().columns) == [
        "corpus",
        "extractor",
        "key",
        "n_rows",
        "n_shards",
        "size_mb",
        "complete",
    ]
    m = fake_manifest(5)
    fill(store, m, Layered())
    fill(store, m.iloc[:2], Layered(scale=3.0))
    store.mark_complete("c1", Layered(), n_expected=5, skipped=0)
    st = store.status().set_index("key")
    assert st.loc[Layered().key, "n_rows"] == 5 and st.loc[Layered().key, "n_shards"] == 2
    assert bool(st.loc[Layered().key, "complete"]) and not bool(st.loc[Layered(scale=3.0).key, "complete"])
    assert (st["size_mb"] > 0).all() and set(st["corpus"]) == {"c1"}


def test_several_variants_need_a_key(tmp_path):
    store = FeatureStore(tmp_path)
    m = fake_manifest(3)
    fill(store, m, Layered())
    fill(store, m, Layered(scale=2.0))
    with pytest.raises(CacheError, match="several cached variants"):
        store.load(m, "fakelayers@0")
    fs = store.load(m, "fakelayers@0", key=Layered(scale=2.0))
    np.testing.assert_allclose(fs.X[:, 0], 2 * np.arange(3))
    assert store.load(m, "fakelayers@0", key=Layered().key).X[1, 0] == 1.0


def test_default_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SERTOOL_CACHE", str(tmp_path / "cc"))
    assert default_cache_dir() == tmp_path / "cc" and FeatureStore().root == tmp_path / "cc"
    monkeypatch.delenv("SERTOOL_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "sertool")


def test_bad_corpus_names_are_rejected(tmp_path):
    with pytest.raises(ParameterError, match="corpus"):
        FeatureStore(tmp_path).entry_dir("../x", Layered())


class Wide(Extractor):
    """Whisper-base-sized layered pooled output: (7, 512)."""

    name = "wide"
    n_layers = 7

    def params(self) -> dict[str, Any]:
        return {}

    @property
    def dim(self) -> int:
        return 512

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return {"pooled": np.full((7, 512), y[0], dtype=np.float32)}


def test_loading_1440_x_7_x_512_is_fast(tmp_path):
    store, ex = FeatureStore(tmp_path), Wide()
    m = fake_manifest(1440)
    rng = np.random.default_rng(0)
    for s in range(0, 1440, 64):
        rows = m.iloc[s : s + 64]
        outs = [{"pooled": rng.standard_normal((7, 512)).astype(np.float32)} for _ in range(len(rows))]
        store.write_shard("c1", ex, rows["utt_id"].tolist(), rows["sha1"].tolist(), outs)
    fresh = FeatureStore(tmp_path)  # cold: verifies and indexes every shard
    t0 = time.perf_counter()
    fs = fresh.load(m, "wide@all", key=ex)
    cold = time.perf_counter() - t0
    assert fs.X.shape == (1440, 7 * 512)
    np.testing.assert_array_equal(fs.X[-1], outs[-1]["pooled"].ravel())
    # generous bound for a loaded shared machine; on an idle core this takes ~0.1-0.2 s
    assert cold < 2.0, f"cold load took {cold:.2f} s"
