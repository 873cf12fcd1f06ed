"""Speed of ``sertool predict`` with a saved handcrafted94 + SVM model (issue: 1 clip < 0.2 s, folders on all cores).

In one run, on RAVDESS (``../shared/corpora/ravdess``, original layout):

(a) train an SVM on handcrafted94 of actors 1-20 (``train_model``; the features come from the cache);
(b) latency of ``predict_files`` on one 4 s clip (actor 21..24), after start-up (model loaded, one warm call):
    the median of 20 calls, and the slowest;
(c) a folder of N clips (default 1000; the held-out actors first, then others) with ``jobs=1``: the
    reference, then with every core: clips/s of each and the ratio, plus agreement of the two outputs.

Usage::

    .venv/bin/python benchmarks/bench_predict.py [--root ../shared/corpora/ravdess] [--n 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sertool.data.manifest import build_manifest
from sertool.deploy import load_model, predict_files, train_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "corpora" / "ravdess")
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()

    manifest = build_manifest("ravdess", args.root, jobs=2).manifest
    held = manifest["speaker"].astype(str).str[-2:].astype(int) > 20
    train = manifest[~held].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = train_model(train, features="handcrafted94", model="svm", out=Path(tmp) / "svm")
        print(f"(a) trained svm on {len(train)} clips in {time.perf_counter() - t0:.1f} s (cached features)")
        model = load_model(out)
        test = manifest[held]
        four = test.iloc[(test["duration_s"] - 4.0).abs().argmin()]
        predict_files(model, [four["path"]])  # start-up: first calls (numba, filter banks)
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            predict_files(model, [four["path"]])
            lat.append(time.perf_counter() - t)
        print(
            f"(b) one {four['duration_s']:.2f} s clip: median {statistics.median(lat) * 1000:.1f} ms, "
            f"slowest {max(lat) * 1000:.1f} ms (target < 200 ms)"
        )
        order = list(test["path"]) + list(manifest[~held]["path"])
        paths = order[: args.n]
        t = time.perf_counter()
        one, _ = predict_files(model, paths, jobs=1)
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        allc, _ = predict_files(model, paths, jobs=-1)
        t2 = time.perf_counter() - t
        same = bool(np.array_equal(one["label"].to_numpy(), allc["label"].to_numpy()))
        print(f"(c) {len(paths)} clips, jobs=1 (reference): {len(paths) / t1:.1f} clips/s")
        print(
            f"(c) {len(paths)} clips, jobs={os.cpu_count()}: {len(paths) / t2:.1f} clips/s  x{t1 / t2:.2f}; "
            f"identical labels: {same}"
        )
        acc = (one["label"].to_numpy()[: int(held.sum())] == test["label"].to_numpy()).mean()
        print(f"    held-out actors 21-24: WA {acc:.3f} ({int(held.sum())} clips)")


if __name__ == "__main__":
    main()
