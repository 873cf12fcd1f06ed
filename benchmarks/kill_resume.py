"""kill -9 ``sertool features`` and ``sertool bench`` at random moments, again and again, then finish the runs.

Reference: one uninterrupted ``features`` (handcrafted94, mfcc40) and one uninterrupted ``bench`` (4 models,
speaker-4fold) on the demo corpus. Then, for each of ``--kills`` rounds, a fresh process is started on the
*same* (partial) cache or results folder and killed with SIGKILL at a random point of its work (once a random
number of new shards or units is on disk, plus 0-0.2 s: between or during writes; seeded); a round counts only if
the process was still running when killed, and a complete state is wiped so the next round has work to
interrupt. After every kill the partial state is checked: every row the cache returns equals the reference
row, and every stored bench unit is complete JSON with readable predictions (a kill "survived" when that
holds). Finally the
runs are completed without interruption and compared with the references: the same cached rows (no
duplicates, none missing) and the same leaderboard CSV apart from the wall-clock ``fit_seconds`` column, with
no temporary files left.

Prints one line per phase, e.g. ``features: 20 kills, 20 survived (shards on disk at the kills: 0-7)``, and
exits non-zero if anything differs.

Usage::

    .venv/bin/python benchmarks/kill_resume.py [--kills 20] [--root DEMO_ROOT] [--work DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sertool.data.manifest import build_manifest
from sertool.features.store import FeatureStore

EXTRACTORS = ("handcrafted94", "mfcc40")
MODELS = "logreg,gnb,knn,rf"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sertool.cli", *args]


def _features(root: Path, cache: Path) -> list[str]:
    return _cli("features", "--corpus", "demo", "--root", str(root), "--cache", str(cache),
                "--extractors", ",".join(EXTRACTORS), "--jobs", "2")  # fmt: skip


def _bench(root: Path, cache: Path, results: Path) -> list[str]:
    return _cli("bench", "--corpus", "demo", "--root", str(root), "--cache", str(cache), "--results",
                str(results), "--features", "handcrafted94", "--models", MODELS, "--split", "speaker-4fold",
                "--jobs", "1", "--json")  # fmt: skip


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_rounds(
    cmd: list[str], n: int, total: int, progress, rng: random.Random, check, reset
) -> tuple[int, int, list]:
    """Start ``cmd`` on the same state again and again and SIGKILL it at a random point of its work: after it
    has written a random number k >= 1 of the shards or units still missing (``progress()`` counts those on
    disk), plus a random 0-0.2 s (mid-write or between writes). A process that finished first is no kill; when the state is
    complete it is ``reset`` so that the next process has work to be interrupted in."""
    kills = survived = 0
    notes = []
    while kills < n:
        if progress() >= total:
            reset()
        base = progress()
        target = base + rng.randint(1, total - base)  # this process's k-th new shard/unit, k >= 1
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while proc.poll() is None and progress() < target and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))
        if proc.poll() is not None:  # finished first: not a kill
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        ok, note = check()
        survived += ok
        notes.append(note)
    return kills, survived, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--root", type=Path, default=None, help="demo corpus (generated when absent)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger("sertool").setLevel(logging.ERROR)  # partial caches warn about missing rows: expected
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="sertool-kill-"))
    root = args.root
    if root is None:
        from sertool.data.corpora.demo import generate_demo_corpus

        root = generate_demo_corpus(work / "demo")
    manifest = build_manifest("demo", root).manifest
    failures = []

    # ---------------------------------------------------------------- features
    ref_cache, cache = work / "ref-cache", work / "cache"
    _run(_features(root, ref_cache))
    ref = {e: FeatureStore(ref_cache).load(manifest, e) for e in EXTRACTORS}
    ref_rows = {e: dict(zip(ref[e].utt_ids, ref[e].X, strict=True)) for e in EXTRACTORS}

    def check_cache() -> tuple[bool, int]:
        store = FeatureStore(cache)  # a fresh reader, as a rerun would open it
        shards = len(list(cache.rglob("part-*.parquet.done"))) if cache.exists() else 0
        try:
            for e in EXTRACTORS:
                fs = store.load(manifest, e, allow_missing=True)
                if len(set(fs.utt_ids)) != len(fs.utt_ids):
                    return False, shards
                if not all(np.array_equal(x, ref_rows[e][u]) for u, x in zip(fs.utt_ids, fs.X, strict=True)):
                    return False, shards
        except Exception as exc:
            print(f"  partial cache unreadable: {exc}")
            return False, shards
        return True, shards

    def shards_done() -> int:
        return len(list(cache.rglob("part-*.parquet.done"))) if cache.exists() else 0

    n_shards = len(list(ref_cache.rglob("part-*.parquet.done")))
    kills, ok, shards = _kill_rounds(
        _features(root, cache), args.kills, n_shards, shards_done, rng, check_cache,
        lambda: shutil.rmtree(cache, ignore_errors=True),
    )  # fmt: skip
    _run(_features(root, cache))
    for e in EXTRACTORS:
        got = FeatureStore(cache).load(manifest, e)
        if got.utt_ids != ref[e].utt_ids or not np.array_equal(got.X, ref[e].X):
            failures.append(f"features {e}: final cache differs from the uninterrupted run")
    if list(cache.rglob("*.tmp-*")):
        failures.append("features: temporary files left in the cache")
    print(
        f"features: {kills} kills, {ok} survived (shards on disk at the kills: {min(shards)}-{max(shards)})"
    )
    failures += [] if ok == kills else [f"features: {kills - ok} kills left an invalid cache"]

    # ---------------------------------------------------------------- bench (warm feature cache)
    ref_res, res = work / "ref-results", work / "results"
    _run(_bench(root, ref_cache, ref_res))

    def check_units() -> tuple[bool, int]:
        units = list(res.rglob("runs/*/*/fold-*.json")) if res.exists() else []
        try:
            for u in units:
                meta = json.loads(u.read_text())
                pred = pd.read_parquet(u.with_name(u.name.replace(".json", ".predictions.parquet")))
                if len(pred) != meta["n_test"]:
                    return False, len(units)
        except Exception as exc:
            print(f"  partial results unreadable: {exc}")
            return False, len(units)
        return True, len(units)

    def units_done() -> int:
        return len(list(res.rglob("runs/*/*/fold-*.json"))) if res.exists() else 0

    n_units = len(list(ref_res.rglob("runs/*/*/fold-*.json")))
    kills_b, ok_b, units = _kill_rounds(
        _bench(root, ref_cache, res), args.kills, n_units, units_done, rng, check_units,
        lambda: shutil.rmtree(res, ignore_errors=True),
    )  # fmt: skip
    _run(_bench(root, ref_cache, res))

    def board(base: Path) -> pd.DataFrame:
        return pd.read_csv(next(base.rglob("leaderboard.csv"))).drop(columns=["fit_seconds"])

    if not board(res).equals(board(ref_res)):
        failures.append("bench: final leaderboard differs from the uninterrupted run")
    if units_done() != n_units:
        failures.append(f"bench: {units_done()} units stored, {n_units} expected")
    if list(res.rglob("*.tmp*")):
        failures.append("bench: temporary files left in the results")
    print(f"bench: {kills_b} kills, {ok_b} survived (units on disk at the kills: {min(units)}-{max(units)})")
    failures += [] if ok_b == kills_b else [f"bench: {kills_b - ok_b} kills left invalid results"]
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
