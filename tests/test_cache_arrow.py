"""The feature cache is plain Arrow numbers: pyarrow alone, DuckDB and pandas read what sertool loads.

Each reader here decodes the shards its own way (Python lists, SQL arrays, pandas cells) and is compared
with :meth:`FeatureStore.load`, so neither side checks itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sertool.data.manifest import build_manifest
from sertool.features import get_extractor
from sertool.features.extract import extract_features
from sertool.features.store import FORMAT, FeatureStore

#: extractor -> (pooled shape, frames feature size, frames dtype as stored)
EXTRACTORS = {
    "handcrafted94": ((94,), None, None),
    "mfcc40": ((80,), 40, pa.float32()),
    "spectrogram": ((256,), 128, pa.float16()),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> tuple[Path, pd.DataFrame]:
    """12 demo clips extracted by each of :data:`EXTRACTORS` into a fresh cache (shards of 5)."""
    manifest = build_manifest("demo", demo_root).manifest.iloc[:12].reset_index(drop=True)
    root = tmp_path_factory.mktemp("cache")
    for name in EXTRACTORS:
        extract_features(manifest, get_extractor(name), cache=root, jobs=1, shard_size=5)
    return root, manifest


def entry_of(root: Path, name: str) -> Path:
    (entry,) = (root / "demo" / name).iterdir()
    return entry


def loaded(root: Path, manifest: pd.DataFrame, name: str, output: str) -> dict[str, np.ndarray]:
    """utt_id -> array, as sertool loads it."""
    fs = FeatureStore(root).load(manifest, name, output=output)
    return dict(zip(fs.utt_ids, fs.X, strict=True))


@pytest.mark.parametrize("name", list(EXTRACTORS))
def test_pyarrow_alone_reads_the_numbers_sertool_loads(cache, name):
    root, manifest = cache
    pooled_shape, n_feat, frame_type = EXTRACTORS[name]
    shards = sorted(entry_of(root, name).glob("part-*.parquet"))
    assert len(shards) == 3 and all(f.name.endswith(f".fmt{FORMAT}.parquet") for f in shards)
    table = pa.concat_tables(pq.read_table(f) for f in shards)
    schema = table.schema
    assert schema.metadata[b"sertool.format"] == str(FORMAT).encode()
    assert schema.field("pooled").type == pa.list_(
        pa.field("element", pa.float32(), nullable=False), pooled_shape[0]
    )
    assert json.loads(schema.field("pooled").metadata[b"shape"]) == list(pooled_shape)
    want = loaded(root, manifest, name, "pooled")
    got = {
        u: np.asarray(v, dtype=np.float32)
        for u, v in zip(table["utt_id"].to_pylist(), table["pooled"].to_pylist(), strict=True)
    }
    assert got.keys() == want.keys()
    for u, v in got.items():
        np.testing.assert_array_equal(v, want[u])
    if n_feat is None:
        assert "frames" not in schema.names
        return
    frame = pa.list_(pa.field("element", frame_type, nullable=False), n_feat)
    assert schema.field("frames").type == pa.list_(pa.field("element", frame, nullable=False))
    assert json.loads(schema.field("frames").metadata[b"shape"]) == [None, n_feat]
    want = loaded(root, manifest, name, "frames")
    lengths = table["frames.length"].to_pylist()
    for u, rows, t in zip(table["utt_id"].to_pylist(), table["frames"].to_pylist(), lengths, strict=True):
        arr = np.asarray(rows, dtype=np.float32)  # float16 values are exact in float32
        assert arr.shape == (t, n_feat) == want[u].shape
        np.testing.assert_array_equal(arr, want[u])


def test_duckdb_reads_the_numbers_sertool_loads(cache):
    duckdb = pytest.importorskip("duckdb")
    root, manifest = cache
    for name in ("mfcc40", "spectrogram"):
        glob = entry_of(root, name) / "*.parquet"
        types = duckdb.sql(
            f"select typeof(pooled), typeof(frames) from read_parquet('{glob}') limit 1"
        ).fetchall()[0]
        assert types == ("FLOAT[]", "FLOAT[][]")  # halffloat frames are read as FLOAT
        rows = duckdb.sql(
            f"select utt_id, pooled, frames, \"frames.length\", len(frames) from read_parquet('{glob}')"
        ).fetchall()
        assert len(rows) == len(manifest)
        pooled = loaded(root, manifest, name, "pooled")
        frames = loaded(root, manifest, name, "frames")
        for utt, vec, seq, length, n in rows:
            np.testing.assert_array_equal(np.asarray(vec, dtype=np.float32), pooled[utt])
            np.testing.assert_array_equal(np.asarray(seq, dtype=np.float32), frames[utt])
            assert length == n == len(frames[utt])
        # a query on the numbers, no sertool: the mean of the first MFCC mean over the clips
        mean = duckdb.sql(f"select avg(pooled[1]) from read_parquet('{glob}')").fetchall()[0][0]
        assert mean == pytest.approx(np.mean([v[0] for v in pooled.values()]), rel=1e-6)


def test_pandas_reads_numeric_arrays(cache):
    root, manifest = cache
    entry = entry_of(root, "spectrogram")
    df = pd.concat([pd.read_parquet(f) for f in sorted(entry.glob("*.parquet"))], ignore_index=True)
    assert isinstance(df["pooled"].iloc[0], np.ndarray) and df["pooled"].iloc[0].dtype == np.float32
    X = np.stack(df["pooled"].to_list())
    fs = FeatureStore(root).load(manifest.set_index("utt_id").loc[df["utt_id"]].reset_index(), "spectrogram")
    np.testing.assert_array_equal(X, fs.X)
    first = np.stack(df["frames"].iloc[0])  # one clip: (T, 128) of float16 numbers
    assert first.dtype == np.float16 and first.shape == (df["frames.length"].iloc[0], 128)
    want = loaded(root, manifest, "spectrogram", "frames")[df["utt_id"].iloc[0]]
    np.testing.assert_array_equal(first.astype(np.float32), want)
