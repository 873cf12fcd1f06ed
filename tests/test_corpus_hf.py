"""The ``hf`` adapter: a local Hugging Face ``datasets`` folder as a corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from sertool.cli import EXIT_OK, main
from sertool.data.corpora.hf import AUDIO_CACHE
from sertool.data.manifest import build_manifest

datasets = pytest.importorskip("datasets")


def _save(demo_root: Path, out: Path, *, keep_paths: bool) -> list[dict[str, str]]:
    """A dataset of the demo corpus's clips saved to ``out``; the expected (label, speaker) per clip."""
    demo = build_manifest("demo", demo_root).manifest
    rows = [{"path": r.path, "label": r.label, "speaker": r.speaker} for r in demo.itertuples()]
    ds = datasets.Dataset.from_dict(
        {
            "audio": [r["path"] for r in rows],
            "label": [r["label"].upper() for r in rows],  # case-insensitive canonical labels
            "speaker": [r["speaker"] for r in rows],
            "take": list(range(len(rows))),
        }
    )
    if not keep_paths:
        ds = ds.cast_column("audio", datasets.Audio(sampling_rate=16000))  # save_to_disk embeds the bytes
    ds.save_to_disk(str(out))
    return rows


def test_embedded_audio_is_written_once_and_labelled(demo_root: Path, tmp_path: Path):
    root = tmp_path / "ds"
    rows = _save(demo_root, root, keep_paths=False)
    built = build_manifest("hf", root)
    m = built.manifest
    assert not built.skipped and len(m) == len(rows)
    assert sorted(zip(m["label"], m["speaker"], strict=True)) == sorted(
        (r["label"], f"hf-{r['speaker']}") for r in rows
    )
    assert m["path"].map(lambda p: f"/{AUDIO_CACHE}/" in p).all()
    assert sorted(m["take"]) == list(range(len(rows)))  # scalar columns are carried
    written = {p.name: p.stat().st_mtime_ns for p in (root / AUDIO_CACHE).rglob("*.wav")}
    assert len(written) == len(rows)
    again = build_manifest("hf", root).manifest
    assert again["sha1"].tolist() == m["sha1"].tolist()
    assert {p.name: p.stat().st_mtime_ns for p in (root / AUDIO_CACHE).rglob("*.wav")} == written


def test_paths_label_map_and_missing_columns(demo_root: Path, tmp_path: Path):
    root = tmp_path / "ds"
    rows = _save(demo_root, root, keep_paths=True)  # plain path strings: the files are used in place
    m = build_manifest("hf", root, label_map={"ANGRY": "sad"}).manifest
    assert set(m["path"]) == {r["path"] for r in rows}
    assert "angry" not in set(m["label"]) and not (root / AUDIO_CACHE).exists()
    from sertool.exceptions import CorpusError

    with pytest.raises(CorpusError, match="lacks column"):
        build_manifest("hf", root, label_column="emotion")


def test_bench_runs_on_an_hf_corpus(demo_root: Path, tmp_path: Path, capsys):
    root = tmp_path / "ds"
    _save(demo_root, root, keep_paths=False)
    args = ["--features", "handcrafted94", "--models", "logreg", "--split", "speaker-2fold"]
    code = main(
        ["bench", "--corpus", "hf", "--root", str(root), *args, "--results", str(tmp_path / "r"),
         "--cache", str(tmp_path / "c"), "--jobs", "1"]
    )  # fmt: skip
    assert code == EXIT_OK
    assert list((tmp_path / "r").rglob("leaderboard.csv"))


def _save_renamed(demo_root: Path, out: Path) -> list[dict[str, str]]:
    """The demo clips under other column names: ``file``, ``emotion``, ``actor``."""
    demo = build_manifest("demo", demo_root).manifest
    rows = [{"path": r.path, "label": r.label, "speaker": r.speaker} for r in demo.itertuples()]
    datasets.Dataset.from_dict(
        {
            "file": [r["path"] for r in rows],
            "emotion": [r["label"] for r in rows],
            "actor": [r["speaker"] for r in rows],
        }
    ).save_to_disk(str(out))
    return rows


def test_column_flags_name_the_dataset_columns(demo_root: Path, tmp_path: Path):
    root = tmp_path / "ds"
    rows = _save_renamed(demo_root, root)
    common = ["--corpus", "hf", "--root", str(root), "--cache", str(tmp_path / "c")]
    assert main(["manifest", *common]) != EXIT_OK  # the default column names are not there
    columns = ["--audio-column", "file", "--label-column", "emotion", "--speaker-column", "actor"]
    out = tmp_path / "m.parquet"
    assert main(["manifest", *common, *columns, "--out", str(out)]) == EXIT_OK
    import pandas as pd

    m = pd.read_parquet(out)
    assert sorted(zip(m["path"], m["label"], m["speaker"], strict=True)) == sorted(
        (r["path"], r["label"], f"hf-{r['speaker']}") for r in rows
    )
    bench = ["--features", "handcrafted94", "--models", "logreg", "--split", "speaker-2fold", "--jobs", "1"]
    assert main(["bench", *common, *columns, *bench, "--results", str(tmp_path / "r")]) == EXIT_OK
    board = next((tmp_path / "r").rglob("leaderboard.csv"))
    assert pd.read_csv(board)["folds"].tolist() == [2]


def test_corpus_params_in_a_benchmark_definition(demo_root: Path, tmp_path: Path):
    from sertool.bench.definition import Benchmark
    from sertool.exceptions import ParameterError

    root = tmp_path / "ds"
    rows = _save_renamed(demo_root, root)
    params = {"audio_column": "file", "label_column": "emotion", "speaker_column": "actor"}
    bench = Benchmark(corpora=("hf",), roots=(root,), corpus_params=params)
    assert Benchmark.from_toml(bench.to_toml()) == bench
    assert len(bench.load_manifest(jobs=1)) == len(rows)
    with pytest.raises(ParameterError, match="does not accept"):
        Benchmark(corpora=("hf",), roots=(root,), corpus_params={"label_col": "emotion"}).load_manifest()
    with pytest.raises(ParameterError, match="a table per corpus"):
        Benchmark(corpora=("hf", "demo"), roots=(root, demo_root), corpus_params=params).load_manifest()
