"""Speed-up of fitting units in worker processes: a benchmark definition run with one job, then with N.

In one run (so both sides see the same machine load):

(a) the reference: the definition (default ``benchmarks/ravdess_classic.toml``) with ``unit_jobs=1`` into a
    fresh results folder (features come from the cache; extract them first with ``sertool features``);
(b) the same definition with ``unit_jobs=N`` (default: one per core) into another fresh folder;
(c) the wall-time ratio (a)/(b), and a check that every stored prediction file of (b) equals (a)'s (the
    parallel run must be the same experiment).

Usage::

    SERTOOL_CORPORA=../shared/corpora .venv/bin/python benchmarks/bench_unit_jobs.py \
        [--config benchmarks/ravdess_classic.toml] [--jobs -1] [--features handcrafted94,mfcc40]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from sertool.bench.definition import Benchmark, run_benchmark
from sertool.bench.records import ResultsLayout

REPO = Path(__file__).resolve().parents[1]


def _timed_run(bench: Benchmark) -> float:
    t0 = time.perf_counter()
    run_benchmark(bench)
    return time.perf_counter() - t0


def _same_predictions(a: Path, b: Path) -> int:
    """Number of prediction files compared; raises if any differs or is missing."""
    n = 0
    for record in ResultsLayout(a).unit_files():
        pa = ResultsLayout.predictions_of(record)
        pb = b / pa.relative_to(a)
        pd.testing.assert_frame_equal(pd.read_parquet(pa), pd.read_parquet(pb))
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "benchmarks" / "ravdess_classic.toml")
    ap.add_argument("--jobs", type=int, default=-1, help="unit_jobs of the parallel run (-1: one per core)")
    ap.add_argument("--features", default=None, help="comma-separated views replacing the definition's")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bench = Benchmark.from_toml(args.config)
    if args.features:
        bench = dataclasses.replace(bench, features=tuple(args.features.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        one = dataclasses.replace(bench, results=Path(tmp) / "one", unit_jobs=1)
        many = dataclasses.replace(bench, results=Path(tmp) / "many", unit_jobs=args.jobs)
        t_one = _timed_run(one)
        t_many = _timed_run(many)
        n = _same_predictions(Path(tmp) / "one", Path(tmp) / "many")
    jobs = os.cpu_count() if args.jobs == -1 else args.jobs
    print(f"definition: {args.config.name}; features {list(bench.features)}; models {bench.models}")
    print(f"reference (unit_jobs=1): {t_one:.1f} s")
    print(f"unit_jobs={jobs}: {t_many:.1f} s")
    print(f"speed-up: {t_one / t_many:.2f}x; identical predictions in {n} of {n} unit files")


if __name__ == "__main__":
    main()
