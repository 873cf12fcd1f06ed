"""Reliability guarantees end to end (docs/RELIABILITY.md): a hostile corpus, concurrent runs, repeated
kill -9, determinism across seeds, and no code loaded from data files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import REPO, tone

from sertool.cli import EXIT_SKIPPED, main
from sertool.data.manifest import build_manifest
from sertool.features.store import FeatureStore

SR = 16000


def _speech_like(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    return tone(seconds, sr=sr, freq=150 + 40 * seed, seed=seed)


def _hostile_corpus(root: Path) -> tuple[dict[str, str], list[str]]:
    """Write the issue's list of hostile files; return {file: expected reason} for the ones that must be
    skipped, and the files that must work."""
    root.mkdir(parents=True)
    bad: dict[str, str] = {}
    good: list[str] = []

    def w(name: str, y: np.ndarray, sr: int = SR, subtype: str | None = None) -> None:
        sf.write(root / name, y, sr, subtype=subtype)
        good.append(name)

    (root / "empty.wav").write_bytes(b"")
    bad["empty.wav"] = "empty file (0 bytes)"
    sf.write(root / "_tmp.wav", _speech_like(1.0), SR, subtype="PCM_16")
    whole = (root / "_tmp.wav").read_bytes()
    (root / "_tmp.wav").unlink()
    (root / "trunc_header.wav").write_bytes(whole[:20])
    bad["trunc_header.wav"] = "unreadable"
    (root / "trunc_data.wav").write_bytes(whole[: len(whole) // 2])  # header promises twice the data
    good.append("trunc_data.wav")  # libsndfile reads what is there: a shorter clip, not an error
    (root / "not_audio.wav").write_text("this is a text file, not audio\n" * 20)
    bad["not_audio.wav"] = "unreadable"
    w("zeros.wav", np.zeros(SR, dtype=np.float32), subtype="PCM_16")
    good.remove("zeros.wav")
    bad["zeros.wav"] = "all-zero"
    nan = _speech_like(1.0, seed=1)
    nan[100] = np.nan
    w("nan.wav", nan, subtype="FLOAT")
    good.remove("nan.wav")
    bad["nan.wav"] = "NaN or infinite"
    inf = _speech_like(1.0, seed=2)
    inf[200] = np.inf
    w("inf.wav", inf, subtype="FLOAT")
    good.remove("inf.wav")
    bad["inf.wav"] = "NaN or infinite"
    w("clipped.wav", np.clip(4 * _speech_like(1.0, seed=3), -1, 1), subtype="PCM_16")
    w("pcm_u8.wav", _speech_like(1.0, seed=4), subtype="PCM_U8")
    w("pcm_24.wav", _speech_like(1.0, seed=5), subtype="PCM_24")
    w("float32.wav", _speech_like(1.0, seed=6), subtype="FLOAT")
    stereo = np.stack([_speech_like(1.0, seed=7), np.random.default_rng(0).normal(0, 0.05, SR)], axis=1)
    w("stereo_different.wav", stereo.astype(np.float32), subtype="PCM_16")
    w("rate_8k.wav", _speech_like(1.0, sr=8000, seed=8), sr=8000)
    w("rate_96k.wav", _speech_like(1.0, sr=96000, seed=9), sr=96000)
    w("tiny_0.05s.wav", _speech_like(0.05, seed=10))
    w("long_10min.flac", np.tile(_speech_like(2.0, seed=11), 300))
    w("näme with spaces é.wav", _speech_like(1.0, seed=12))
    os.symlink(root / "loop_b.wav", root / "loop_a.wav")
    os.symlink(root / "loop_a.wav", root / "loop_b.wav")
    bad["loop_a.wav"] = "symbolic link loop"
    w("unreadable.wav", _speech_like(1.0, seed=13))
    os.chmod(root / "unreadable.wav", 0)
    if not os.access(root / "unreadable.wav", os.R_OK):  # as root (CI) every file is readable: then it works
        good.remove("unreadable.wav")
        bad["unreadable.wav"] = "Permission denied"
    labels = ["angry", "happy", "sad", "neutral"]
    rows = [(name, labels[i % 4], f"s{i % 3}") for i, name in enumerate(sorted([*bad, *good]))]
    pd.DataFrame(rows, columns=["path", "label", "speaker"]).to_csv(root / "labels.csv", index=False)
    return bad, good


def test_hostile_corpus_every_file_works_or_is_reported(tmp_path, capsys):
    root = tmp_path / "hostile"
    bad, good = _hostile_corpus(root)
    cache = tmp_path / "cache"
    argv = ["--corpus", "csv", "--root", str(root), "--cache", str(cache)]
    code = main(["features", *argv, "--extractors", "handcrafted94,mfcc40", "--jobs", "2", "--json"])
    out = capsys.readouterr()
    assert code == EXIT_SKIPPED, out.err
    reports = json.loads(out.out)
    # every bad file is named with its reason, once, by the manifest (headers) or the extraction (samples)
    manifest = build_manifest("csv", root)
    reasons: dict[str, str] = {Path(s.path).name: s.reason for s in manifest.skipped}
    for rep in reports:
        for path, reason in rep["skipped"]:
            reasons.setdefault(Path(path).name, reason)
    assert set(reasons) == set(bad), reasons
    for name, expected in bad.items():
        assert expected in reasons[name], (name, reasons[name])
    # the manifest holds the files whose headers read (bad samples are found at extraction); every good file
    # is cached with finite features, in both extractors, and no bad one
    m = manifest.manifest
    names = m["path"].map(lambda p: Path(p).name)
    header_bad = {Path(s.path).name for s in manifest.skipped}
    assert set(names) == (set(good) | set(bad)) - header_bad
    store = FeatureStore(cache)
    for view in ("handcrafted94", "mfcc40"):
        fs = store.load(m, view, allow_missing=True)
        present = set(m.set_index("utt_id").loc[fs.utt_ids, "path"].map(lambda p: Path(p).name))
        assert present == set(good), view
        assert np.isfinite(fs.X).all()
    # the 10-minute clip really is 10 minutes and the 0.05 s clip 0.05 s (no silent truncation)
    dur = dict(zip(names, m["duration_s"], strict=True))
    assert dur["long_10min.flac"] == pytest.approx(600.0, abs=0.01)
    assert dur["tiny_0.05s.wav"] == pytest.approx(0.05, abs=1e-3)
    assert dur["trunc_data.wav"] < 1.0
    # a rerun computes nothing and reports the same skipped clips (exit status stays 3)
    assert main(["features", *argv, "--extractors", "handcrafted94,mfcc40", "--json"]) == EXIT_SKIPPED
    again = json.loads(capsys.readouterr().out)
    assert [r["n_computed"] for r in again] == [0, 0]


def test_no_code_is_loaded_from_data_files():
    """Nothing in sertool unpickles: no pickle/joblib/torch.load of files, no allow_pickle, skops only with
    an explicit allow list (checked in tests/test_deploy.py)."""
    patterns = {
        r"\bpickle\.loads?\(": "pickle.load",
        r"\bjoblib\.load\(": "joblib.load",
        r"\bcloudpickle\.loads?\(": "cloudpickle.load",
        r"allow_pickle\s*=\s*True": "allow_pickle=True",
        r"\bdill\.loads?\(": "dill.load",
        r"\bpd\.read_pickle\(": "pandas.read_pickle",
    }
    hits = []
    for path in sorted((REPO / "sertool").rglob("*.py")):
        text = path.read_text()
        for pat, what in patterns.items():
            hits += [f"{path.name}: {what}" for _ in re.finditer(pat, text)]
        for line in text.splitlines():
            if "torch.load(" in line and "weights_only=True" not in line:
                hits.append(f"{path.name}: torch.load without weights_only=True: {line.strip()}")
            if re.search(r"\bsio\.load\(", line) and "trusted=" not in line:
                hits.append(f"{path.name}: skops load without a trusted list: {line.strip()}")
    assert hits == []


def _bench_cmd(
    demo_root: Path, results: Path, cache: Path, seed: int = 0, models: str = "logreg,gnb,knn"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sertool.cli",
        "bench",
        "--corpus",
        "demo",
        "--root",
        str(demo_root),
        "--features",
        "handcrafted94",
        "--models",
        models,
        "--split",
        "speaker-4fold",
        "--seed",
        str(seed),
        "--results",
        str(results),
        "--cache",
        str(cache),
        "--jobs",
        "1",
        "--json",
    ]


def test_concurrent_benches_on_one_results_folder(demo_root, tmp_path):
    """Two bench processes at once on one cache and one results folder: every unit done exactly once, the
    leaderboard equals a lone run's, no temporary or corrupt file left."""
    lone = subprocess.run(
        _bench_cmd(demo_root, tmp_path / "lone", tmp_path / "c1"), capture_output=True, text=True
    )
    assert lone.returncode == 0, lone.stderr
    cmd = _bench_cmd(demo_root, tmp_path / "shared", tmp_path / "c2")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    units = [json.loads(o[0])["units"] for o in outs]
    done = sum(u.get("done", 0) for u in units)
    assert done == 12 and all(sum(u.values()) == 12 for u in units), units  # each unit trained once
    runs = next((tmp_path / "shared").rglob("runs"))
    assert len(list(runs.rglob("fold-*.json"))) == 12 and not list(runs.rglob("*.tmp*"))
    board = lambda root: pd.read_csv(next(root.rglob("leaderboard.csv"))).drop(columns=["fit_seconds"])  # noqa: E731
    pd.testing.assert_frame_equal(board(tmp_path / "shared"), board(tmp_path / "lone"))


def test_same_seed_same_bytes_other_seed_changes_only_what_it_should(demo_root, tmp_path):
    """Same seed: leaderboards identical in every byte but the wall-clock column. Another seed: another split
    (and so other results), but the same feature cache (features do not depend on the seed)."""
    from sertool.bench.runner import run_bench
    from sertool.splits import make_split

    demo = build_manifest("demo", demo_root).manifest
    cache = tmp_path / "cache"
    reports = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        split = make_split(demo, "speaker-4fold", seed=seed)
        reports[name] = run_bench(
            demo, split, features=["handcrafted94"], models="logreg,rf", results_dir=tmp_path / name,
            cache=cache, seed=seed, jobs=1,
        )  # fmt: skip

    def strip(r):
        return pd.read_csv(r.leaderboard["csv"]).drop(columns=["fit_seconds"]).to_csv(index=False).encode()

    assert strip(reports["a"]) == strip(reports["b"])
    assert reports["a"].split_id == reports["b"].split_id != reports["c"].split_id
    assert strip(reports["a"]) != strip(reports["c"])
    # the unit records differ only in timing and creation time
    ua = json.loads(next((tmp_path / "a").rglob("rf/fold-0.json")).read_text())
    ub = json.loads(next((tmp_path / "b").rglob("rf/fold-0.json")).read_text())
    volatile = {"fit_seconds", "predict_seconds", "created"}
    assert {k: v for k, v in ua.items() if k not in volatile} == {
        k: v for k, v in ub.items() if k not in volatile
    }
    # one feature entry served all three runs: the seed is not part of the features' identity
    assert len([p for p in cache.rglob("handcrafted94/*") if p.is_dir()]) == 1


def test_repeated_kill_9_of_features_and_bench(demo_root, tmp_path):
    """benchmarks/kill_resume.py with a few kills: the script itself asserts equality with an uninterrupted
    run; here it must report every kill survived."""
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kill_resume.py"), "--kills", "2", "--root", str(demo_root),
         "--work", str(tmp_path), "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"features: 2 kills, 2 survived", r.stdout), r.stdout
    assert re.search(r"bench: 2 kills, 2 survived", r.stdout), r.stdout
