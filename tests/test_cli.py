"""The command line: thin commands over the library, clear one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sertool.cli import EXIT_ERROR, EXIT_OK, EXIT_SKIPPED, main


def test_manifest_json_summary(demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "m.parquet"
    assert (
        main(["manifest", "--corpus", "demo", "--root", str(demo_root), "--out", str(out), "--json"])
        == EXIT_OK
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["utterances"] == 4 * 4 * 6
    assert summary["speakers"] == 4
    assert summary["labels"] == {"neutral": 24, "happy": 24, "sad": 24, "angry": 24}
    assert summary["synthetic"] is True
    assert len(pd.read_parquet(out)) == 96


def test_manifest_reports_skipped_files_with_exit_3(demo_root: Path, tmp_path: Path, capsys):
    import shutil

    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    (root / "spk01" / "spk01_bored_01.wav").write_bytes((root / "spk01" / "spk01_sad_01.wav").read_bytes())
    (root / "spk01" / "spk01_sad_02.wav").write_bytes(b"not audio")
    code = main(["manifest", "--corpus", "demo", "--root", str(root), "--out", str(tmp_path / "m.parquet")])
    text = capsys.readouterr().out
    assert code == EXIT_SKIPPED
    assert "spk01_bored_01.wav: unknown label 'bored'" in text
    assert "spk01_sad_02.wav: unreadable" in text
    assert "utterances:    95" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["manifest", "--corpus", "nosuch", "--root", "."], "unknown corpus 'nosuch'"),
        (["manifest", "--corpus", "ravdess", "--root", "/no/such/folder"], "does not exist"),
        (["split", "--corpus", "demo", "--root", "{demo}", "--strategy", "speaker-99fold"], "speaker"),
        (
            [
                "bench",
                "--corpus",
                "demo",
                "--root",
                "{demo}",
                "--split",
                "speaker-2fold",
                "--models",
                "nosuchmodel",
            ],
            "nosuchmodel",
        ),
        (["manifest", "--corpus", "demo", "--root", "{demo}", "--scheme", "ser99"], "unknown label scheme"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, demo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{demo}", str(demo_root)) for a in argv]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


def test_split_then_bench_from_a_definition_file(demo_root: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("DEMO_ROOT", str(demo_root))
    cfg = tmp_path / "def.toml"
    cfg.write_text(
        'name = "demo"\ncorpus = "demo"\nroot = "${DEMO_ROOT}"\nfeatures = ["handcrafted94"]\n'
        'models = ["logreg", "gnb"]\nsplit = "speaker-2fold"\nseed = 3\n'
    )
    args = ["--results", str(tmp_path / "res"), "--cache", str(tmp_path / "cache"), "--jobs", "1"]
    assert main(["bench", "--config", str(cfg), *args]) == EXIT_OK
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "| logreg |" in out and "| gnb |" in out
    board = next((tmp_path / "res" / "demo").glob("speaker-2fold-*/leaderboard.csv"))
    df = pd.read_csv(board)
    assert set(df["model"]) == {"logreg", "gnb"} and (df["seed"] == 3).all() and (df["folds"] == 2).all()
    # the split command makes the same split (same id) from the same arguments
    assert (
        main(
            [
                "split",
                "--corpus",
                "demo",
                "--root",
                str(demo_root),
                "--strategy",
                "speaker-2fold",
                "--seed",
                "3",
                "--results",
                str(tmp_path / "res"),
                "--json",
            ]
        )
        == EXIT_OK
    )
    assert json.loads(capsys.readouterr().out)["split_id"] == board.parent.name
    # a flag on the command line overrides the definition
    assert main(["bench", "--config", str(cfg), *args, "--models", "knn"]) == EXIT_OK
    assert "| knn |" in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(tmp_path / "res")]) == EXIT_OK
    assert "leaderboard" in capsys.readouterr().out


def test_a_definition_runs_one_study_under_several_splits_with_augmentation(
    demo_root: Path, tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.setenv("DEMO_ROOT", str(demo_root))
    cfg = tmp_path / "def.toml"
    cfg.write_text(
        'corpus = "demo"\nroot = "${DEMO_ROOT}"\nfeatures = ["handcrafted94"]\nmodels = ["gnb"]\n'
        'split = ["speaker-2fold", { strategy = "random-holdout", params = { test_fraction = 0.25 } }]\n'
        'min_duration = 0.5\n[augment]\ntransforms = ["gain"]\n'
    )
    args = ["--results", str(tmp_path / "res"), "--cache", str(tmp_path / "cache"), "--jobs", "1", "--json"]
    assert main(["bench", "--config", str(cfg), *args]) == EXIT_OK
    summaries = json.loads(capsys.readouterr().out)
    assert [s["split_id"].split("-")[0] for s in summaries] == ["speaker", "random"]
    assert [s["units"] for s in summaries] == [{"done": 2}, {"done": 1}]
    holdout = pd.read_csv(Path(summaries[1]["leaderboard"]["csv"]))
    assert holdout["features"].tolist() == ["handcrafted94~aug-gain"]
    split = json.loads((Path(summaries[1]["results"]) / "split.json").read_text())
    assert split["params"]["test_fraction"] == 0.25
    # --augment none on the command line runs the control into the same boards
    assert main(["bench", "--config", str(cfg), *args, "--augment", "none"]) == EXIT_OK
    capsys.readouterr()
    assert set(pd.read_csv(Path(summaries[1]["leaderboard"]["csv"]))["features"]) == {
        "handcrafted94",
        "handcrafted94~aug-gain",
    }


def test_features_status(demo_root: Path, tmp_path: Path, capsys):
    cache = tmp_path / "cache"
    assert (
        main(
            [
                "features",
                "--corpus",
                "demo",
                "--root",
                str(demo_root),
                "--extractors",
                "mfcc40",
                "--cache",
                str(cache),
                "--jobs",
                "1",
            ]
        )
        == EXIT_OK
    )
    assert "mfcc40: 96 clips (0 cached, 96 computed, 0 skipped)" in capsys.readouterr().out
    assert main(["features", "--status", "--cache", str(cache), "--json"]) == EXIT_OK
    (row,) = json.loads(capsys.readouterr().out)
    assert row["extractor"] == "mfcc40" and row["n_rows"] == 96 and row["complete"]


def test_more_bad_inputs_give_one_line_and_exit_2(demo_root: Path, tmp_path: Path, capsys, monkeypatch):
    """An empty corpus folder, a table whose labels are all outside the label set, and a saved split made from
    another manifest: each one clear line, exit 2, no traceback."""
    import numpy as np
    import soundfile as sf

    from sertool.data.manifest import build_manifest
    from sertool.splits import make_split

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    table = tmp_path / "bored"
    table.mkdir()
    for i in range(4):
        sf.write(table / f"c{i}.wav", (0.1 * np.sin(np.arange(16000) / (3 + i))).astype(np.float32), 16000)
    (table / "labels.csv").write_text(
        "path,label,speaker\n" + "".join(f"c{i}.wav,bored,s{i}\n" for i in range(4))
    )
    other = build_manifest("demo", demo_root).manifest
    other.loc[other.index[0], "label"] = "sad" if other["label"].iloc[0] != "sad" else "happy"  # relabelled
    make_split(other, "speaker-2fold", seed=0).save(tmp_path / "foreign.json")
    cases = [
        (["manifest", "--corpus", "ravdess", "--root", str(tmp_path / "empty")], "no usable utterance"),
        (["manifest", "--corpus", "csv", "--root", str(table)], "no usable utterance"),
        (
            ["bench", "--corpus", "demo", "--root", str(demo_root), "--split", f"file:{tmp_path / 'foreign.json'}",
             "--models", "logreg", "--cache", str(tmp_path / "c")],
            "manifest",
        ),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == EXIT_ERROR, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
