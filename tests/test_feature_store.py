"""The parquet feature cache: layout, keying by (utt_id, sha1), done markers, corruption, views, speed."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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


def test_loading_1440_x_7_x_512_from_23_shards(tmp_path):
    """The size of whisper-base@all on RAVDESS (its load time is measured in benchmarks/bench_cache_load.py,
    never asserted here: a loaded CI machine would fail a wall-clock bound)."""
    store, ex = FeatureStore(tmp_path), Wide()
    m = fake_manifest(1440)
    rng = np.random.default_rng(0)
    for s in range(0, 1440, 64):
        rows = m.iloc[s : s + 64]
        outs = [{"pooled": rng.standard_normal((7, 512)).astype(np.float32)} for _ in range(len(rows))]
        store.write_shard("c1", ex, rows["utt_id"].tolist(), rows["sha1"].tolist(), outs)
    fresh = FeatureStore(tmp_path)  # cold: verifies and indexes every shard
    fs = fresh.load(m, "wide@all", key=ex)
    assert fs.X.shape == (1440, 7 * 512)
    np.testing.assert_array_equal(fs.X[-1], outs[-1]["pooled"].ravel())


# ------------------------------------------------------------------ format 2, and caches of format 1

FORMAT1_NAME = re.compile(r"^part-(\d{4,})-([0-9a-f]{10})\.parquet$")  # what sertool 0.1.0 reads


def write_format1(
    store: FeatureStore, ex: Extractor, index: int, rows: pd.DataFrame, outs: list[dict]
) -> Path:
    """A shard exactly as sertool 0.1.0's store wrote it (format 1): each array as little-endian bytes with
    its dtype in the field metadata plus a ``<output>.shape`` column, a marker without ``format``."""
    entry = store.entry_dir("c1", ex)
    entry.mkdir(parents=True, exist_ok=True)
    ids, sha1s = rows["utt_id"].tolist(), rows["sha1"].tolist()
    cols: dict[str, pa.Array] = {"utt_id": pa.array(ids), "sha1": pa.array(sha1s)}
    fields = [pa.field("utt_id", pa.string()), pa.field("sha1", pa.string())]
    for name in sorted(outs[0]):
        arrays = [np.asarray(o[name]) for o in outs]
        arrays = [a.astype("<f2" if a.dtype == np.float16 else "<f4") for a in arrays]
        cols[name] = pa.array([a.tobytes() for a in arrays], pa.large_binary())
        cols[f"{name}.shape"] = pa.array([list(a.shape) for a in arrays], pa.list_(pa.int32()))
        fields += [
            pa.field(name, pa.large_binary(), metadata={"dtype": arrays[0].dtype.str}),
            pa.field(f"{name}.shape", pa.list_(pa.int32())),
        ]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(cols, schema=pa.schema(fields)), sink, compression="none", use_dictionary=False)
    data = sink.getvalue().to_pybytes()
    digest = hashlib.sha1("\n".join(f"{u}\x1f{s}" for u, s in zip(ids, sha1s, strict=True)).encode())
    path = entry / f"part-{index:04d}-{digest.hexdigest()[:10]}.parquet"
    path.write_bytes(data)
    marker = {"rows": len(ids), "bytes": len(data), "sha1": hashlib.sha1(data).hexdigest(), "key": ex.key}
    (entry / (path.name + ".done")).write_text(json.dumps(marker))
    return path


def format1_entry(store: FeatureStore, ex: Extractor, m: pd.DataFrame, shard: int = 4) -> list[Path]:
    paths = []
    for i, s in enumerate(range(0, len(m), shard)):
        rows = m.iloc[s : s + shard]
        outs = [ex.extract(np.array([int(u[-4:])], dtype=np.float32)) for u in rows["utt_id"]]
        paths.append(write_format1(store, ex, i, rows, outs))
    store.mark_complete("c1", ex, n_expected=len(m), skipped=0)
    return paths


def same_loads(a: FeatureStore, b: FeatureStore, m: pd.DataFrame) -> None:
    for view in ("fakelayers", "fakelayers@all"):
        np.testing.assert_array_equal(a.load(m, view).X, b.load(m, view).X)
    for view in ("fakelayers@1", "fakelayers@1-2"):
        fa, fb = a.load(m, view, output="frames").X, b.load(m, view, output="frames").X
        assert len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


def store_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sertool.features.store"]


def test_a_format1_entry_is_converted_in_place_with_one_line(tmp_path, caplog):
    ex, m = Layered(), fake_manifest(10)
    old = format1_entry(FeatureStore(tmp_path / "old"), ex, m)
    fill(reference := FeatureStore(tmp_path / "new"), m, ex)
    store = FeatureStore(tmp_path / "old")
    with caplog.at_level(logging.INFO):
        same_loads(store, reference, m)
        same_loads(FeatureStore(tmp_path / "old"), reference, m)  # a second store: nothing left to convert
    (line,) = store_lines(caplog)
    assert "converted 3 format-1 shards (10 rows) to format 2 in place, values unchanged" in line
    assert str(store.entry_dir("c1", ex)) in line
    assert not any(p.exists() or p.with_name(p.name + ".done").exists() for p in old)
    new = shards(store, ex)
    assert [p.name for p in new] == [p.name.replace(".parquet", ".fmt2.parquet") for p in old]
    marker = json.loads((new[0].parent / (new[0].name + ".done")).read_text())
    assert marker["format"] == 2 and marker["converted_from"] == 1 and marker["key"] == ex.key
    assert pq.read_schema(new[0]).metadata[b"sertool.format"] == b"2"
    st = store.status()
    assert (
        st["n_rows"].tolist() == [10] and st["n_shards"].tolist() == [3] and st["complete"].tolist() == [True]
    )
    fill(store, fake_manifest(12), ex)  # writing on goes on from the converted shards' numbers
    assert shards(store, ex)[-1].name.startswith("part-0003-")


def test_format1_shards_that_cannot_be_converted_are_deleted_and_recomputed(tmp_path, caplog):
    ex, m = Layered(), fake_manifest(6)
    store = FeatureStore(tmp_path)
    good = [ex.extract(np.array([i], dtype=np.float32)) for i in range(4)]
    write_format1(store, ex, 0, m.iloc[:4], good)
    bad = [ex.extract(np.array([i], dtype=np.float32)) for i in (4, 5)]
    bad[1]["pooled"] = bad[1]["pooled"][:2]  # format 1 stored rows of differing shapes; format 2 cannot
    write_format1(store, ex, 1, m.iloc[4:], bad)
    with caplog.at_level(logging.INFO):
        missing = FeatureStore(tmp_path).missing(m, ex)
    assert missing["utt_id"].tolist() == m["utt_id"].tolist()[4:]
    (line,) = store_lines(caplog)
    assert "converted 1 format-1 shards (4 rows)" in line
    assert "deleted 1 format-1 shards (2 rows) that cannot be converted" in line
    assert "rows of differing shapes" in line and "will be recomputed" in line
    fill(store, m.iloc[4:], ex)
    np.testing.assert_allclose(FeatureStore(tmp_path).load(m, "fakelayers@0").X[:, 0], np.arange(6))


def test_a_cache_that_cannot_be_written_reads_format1_through_memory(tmp_path, caplog, monkeypatch):
    ex, m = Layered(), fake_manifest(9)
    old = format1_entry(FeatureStore(tmp_path / "old"), ex, m, shard=5)
    fill(reference := FeatureStore(tmp_path / "new"), m, ex)

    def read_only(self, entry):
        raise PermissionError(30, "Read-only file system", str(entry / ".lock"))

    monkeypatch.setattr(FeatureStore, "_lock", read_only)
    store = FeatureStore(tmp_path / "old")
    with caplog.at_level(logging.INFO):
        same_loads(store, reference, m)
        assert store.missing(m, ex).empty
    (line,) = store_lines(caplog)
    assert "could not convert its format-1 shards in place (PermissionError" in line
    assert "reading them through a conversion in memory" in line
    assert all(p.exists() for p in old)  # untouched


def test_format2_shards_are_invisible_to_format1_readers(tmp_path):
    """An older sertool sharing the cache must neither misread nor delete (as 'corrupt') a format-2 shard:
    it lists shards by the format-1 file name pattern, which format-2 names do not match."""
    store, ex = FeatureStore(tmp_path), Layered()
    fill(store, fake_manifest(8), ex)
    names = [p.name for p in entry(store, ex).iterdir()]
    assert names and not any(FORMAT1_NAME.match(n) for n in names)
    assert not any(FORMAT1_NAME.match(n[: -len(".done")]) for n in names if n.endswith(".done"))


def test_shards_of_a_newer_format_are_left_alone(tmp_path, caplog):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(8)
    fill(store, m, ex)
    first = shards(store, ex)[0]
    future = first.with_name(first.name.replace(".fmt2.", ".fmt3."))
    marker = json.loads((first.parent / (first.name + ".done")).read_text())
    first.rename(future)
    (first.parent / (first.name + ".done")).unlink()
    (future.parent / (future.name + ".done")).write_text(json.dumps({**marker, "format": 3}))
    fresh = FeatureStore(tmp_path)
    with caplog.at_level(logging.INFO):
        assert fresh.missing(m, ex)["utt_id"].tolist() == m["utt_id"].tolist()[:4]
        fresh.missing(m, ex)
    (line,) = store_lines(caplog)
    assert "1 shards of format 3, newer than this sertool's 2, are ignored" in line
    assert future.exists()


@pytest.mark.parametrize("damage", ["marker of format 1", "metadata of format 1"])
def test_a_shard_inconsistent_with_its_format_is_never_misread(tmp_path, caplog, damage):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(8)
    fill(store, m, ex)
    victim = shards(store, ex)[0]
    done = victim.parent / (victim.name + ".done")
    marker = json.loads(done.read_text())
    if damage == "marker of format 1":
        del marker["format"]
    else:  # a file of another layout under a format-2 name, with a marker that matches its bytes
        table = pq.read_table(victim)
        sink = pa.BufferOutputStream()
        pq.write_table(table.replace_schema_metadata({}), sink)
        data = sink.getvalue().to_pybytes()
        victim.write_bytes(data)
        marker.update(bytes=len(data), sha1=hashlib.sha1(data).hexdigest())
    done.write_text(json.dumps(marker))
    fresh = FeatureStore(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert fresh.missing(m, ex)["utt_id"].tolist() == m["utt_id"].tolist()[:4]
    assert "corrupt shard" in caplog.text and "format" in caplog.text and not victim.exists()


def test_values_are_taken_from_the_page_and_equal_pyarrows_decoding(tmp_path, monkeypatch):
    """Shards as written are read straight from their single data page; shards split into many pages (as
    another writer might) fall back to pyarrow's decoding, with equal results."""
    import sertool.features.store as store_mod

    ex, m = Layered(), fake_manifest(11)
    fill(one := FeatureStore(tmp_path / "one"), m, ex, shard=6)
    monkeypatch.setattr(store_mod, "_PAGE_BYTES", 64)
    fill(many := FeatureStore(tmp_path / "many"), m, ex, shard=6)
    monkeypatch.undo()
    for store, direct in ((one, True), (many, False)):
        for path in shards(store, ex):
            pf = pq.ParquetFile(path)
            for output in ("pooled", "frames"):
                lengths = (
                    pf.read(columns=["frames.length"]).column(0).to_numpy() if output == "frames" else None
                )
                fast = store_mod._page_values(pf, output, lengths, path)
                assert (fast is not None) == direct
                slow = store_mod._Values.of_table(pf.read(), output)
                if fast is not None:
                    np.testing.assert_array_equal(fast.values, slow.values)
                    np.testing.assert_array_equal(fast.bounds, slow.bounds)
                    assert fast.shapes == slow.shapes
    same_loads(FeatureStore(tmp_path / "one"), FeatureStore(tmp_path / "many"), m)


def test_loading_an_output_that_is_not_stored_raises_and_deletes_nothing(tmp_path):
    store, ex = FeatureStore(tmp_path), Wide()
    m = fake_manifest(3)
    store.write_shard("c1", ex, m["utt_id"].tolist(), m["sha1"].tolist(), [ex.extract(np.ones(1))] * 3)
    before = sorted(p.name for p in entry(store, ex).iterdir())
    with pytest.raises(CacheError, match="no column"):
        FeatureStore(tmp_path).load(m, "wide", output="frames", key=ex)
    assert sorted(p.name for p in entry(store, ex).iterdir()) == before


def test_rows_of_differing_shapes_are_refused_when_written(tmp_path):
    store, ex = FeatureStore(tmp_path), Layered()
    m = fake_manifest(2)
    outs = [ex.extract(np.array([i], dtype=np.float32)) for i in range(2)]
    outs[1]["pooled"] = outs[1]["pooled"][:2]
    with pytest.raises(ParameterError, match="'pooled': rows of differing shapes"):
        store.write_shard("c1", ex, m["utt_id"].tolist(), m["sha1"].tolist(), outs)
    outs[1]["pooled"] = outs[0]["pooled"]
    outs[1]["frames"] = outs[1]["frames"][:, :, :3]  # frames may differ in length (axis 1), not in width
    with pytest.raises(ParameterError, match="'frames': rows of differing shapes beyond axis 1"):
        store.write_shard("c1", ex, m["utt_id"].tolist(), m["sha1"].tolist(), outs)
