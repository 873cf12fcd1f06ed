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
