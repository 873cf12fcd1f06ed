"""Speed and parity of handcrafted94 extraction against the five-librosa-call reference loop.

On the first N RAVDESS clips (manifest sorted by utt_id), in one run:

(a) reference: for each clip, ``load_audio`` + ``handcrafted94_reference`` (five separate librosa calls),
    one process; one extra clip is computed first so import/JIT costs are not counted (likewise, before
    (b), ``extract_features`` runs once on 4 other clips into a throwaway cache). It runs before and
    after (b, c) and the mean is the baseline (the machine is shared: load changes within a minute);
(b) ``extract_features(..., jobs=J)`` with ``handcrafted94`` into a fresh temporary cache, with the
    default backend (``auto``: J threads of this process on a machine of up to ``THREADS_UP_TO`` jobs),
    shards written to parquet: what ``sertool features`` does;
(c) the same with ``backend="processes"``, cold: worker processes start (and import librosa) inside the
    timing;
(c') the same again into a third fresh cache, with the worker pool already started (steady state);
(d) per clip, the reference and the shared-STFT extractor back to back in one process (no cache): the
    per-process speed-up, robust to load changes.

(a) and (d) run with single-threaded BLAS, like joblib's workers and the runner: on a shared 2-core machine
multi-threaded OpenBLAS made both loops about 4x slower (spin-waiting threads), which would flatter the
ratio.

Prints clips/s of each, the ratios to the baseline, and the largest per-dimension relative difference between the
cached vectors and the reference.

Usage::

    nice .venv/bin/python benchmarks/bench_handcrafted.py [--root ../shared/corpora/ravdess] [--n 200] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sertool.data.audio import load_audio
from sertool.data.manifest import build_manifest
from sertool.features import get_extractor
from sertool.features.extract import extract_features
from sertool.features.handcrafted import handcrafted94_reference
from sertool.features.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "corpora" / "ravdess")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()

    full = build_manifest("ravdess", args.root, jobs=2).manifest.sort_values("utt_id")
    manifest = full.head(args.n).reset_index(drop=True)
    others = full.tail(4).reset_index(drop=True)  # warm-up clips, not among the timed ones
    n = len(manifest)
    paths = manifest["path"].tolist()
    print(f"{n} RAVDESS clips, {manifest['duration_s'].sum():.0f} s of audio, jobs={args.jobs}")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    ex = get_extractor("handcrafted94")
    # warm-up, not timed, on both sides: one-time costs of the process (imports, numba JIT, package
    # metadata for the cache's meta file) are not per-clip throughput
    handcrafted94_reference(load_audio(paths[0]))
    with tempfile.TemporaryDirectory() as d:
        extract_features(others, ex, cache=d, jobs=args.jobs)

    def reference_loop() -> tuple[np.ndarray, float]:
        with threadpool_limits(limits=1, user_api="blas"):
            t0 = time.perf_counter()
            ref = np.stack([handcrafted94_reference(load_audio(p)) for p in paths])
            return ref, time.perf_counter() - t0

    ref, t_ref1 = reference_loop()
    with (
        tempfile.TemporaryDirectory() as d0,
        tempfile.TemporaryDirectory() as d1,
        tempfile.TemporaryDirectory() as d2,
    ):
        auto = extract_features(manifest, ex, cache=d0, jobs=args.jobs)
        cold = extract_features(manifest, ex, cache=d1, jobs=args.jobs, backend="processes")
        warm = extract_features(manifest, ex, cache=d2, jobs=args.jobs, backend="processes")
        assert auto.n_computed == cold.n_computed == warm.n_computed == n, (auto, cold, warm)
        X = FeatureStore(d0).load(manifest, "handcrafted94").X
        X2 = FeatureStore(d2).load(manifest, "handcrafted94").X
        assert np.array_equal(X, X2), "thread and process backends wrote different caches"
    _, t_ref2 = reference_loop()
    t_ref = (t_ref1 + t_ref2) / 2

    # (d) per clip, reference and shared-STFT back to back, so load changes on a shared machine hit both
    t_a = t_d = 0.0
    with threadpool_limits(limits=1, user_api="blas"):
        for p in paths:
            t0 = time.perf_counter()
            handcrafted94_reference(load_audio(p))
            t1 = time.perf_counter()
            ex.extract(load_audio(p))
            t_a, t_d = t_a + t1 - t0, t_d + time.perf_counter() - t1

    print("load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    rel = np.abs(X.astype(np.float64) - ref) / np.maximum(np.abs(ref.astype(np.float64)), 1e-30)
    print(f"(a) reference loop, 1 process: {n / t_ref1:.1f} clips/s before (b, c), {n / t_ref2:.1f} after")
    print(f"{'target: (b) >= 6x (a)':<44} {'met' if t_ref / auto.seconds >= 6 else 'NOT met'}")
    rows = [
        ("(a) reference loop, 1 process (mean of 2)", t_ref, t_ref),
        (f"(b) extract_features jobs={args.jobs} (auto: threads)", auto.seconds, t_ref),
        (f"(c) jobs={args.jobs} processes, cold pool", cold.seconds, t_ref),
        (f"(c') jobs={args.jobs} processes, warm pool", warm.seconds, t_ref),
        ("(d) interleaved: reference, 1 process", t_a, t_a),
        ("(d) interleaved: shared-STFT, 1 process", t_d, t_a),
    ]
    for label, sec, base in rows:
        print(f"{label:<44} {n / sec:8.1f} clips/s  {sec:7.2f} s  x{base / sec:5.2f}")
    print(
        f"parity: max relative difference per dimension {rel.max():.2e} (dimension {int(rel.max(0).argmax())})"
    )


if __name__ == "__main__":
    main()
