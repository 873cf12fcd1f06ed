"""eGeMAPS extraction as a whole process: ``sertool features --extractors egemaps`` against opensmile's own
parallel ``process_files`` on the same files (the reference), alternated run by run in one invocation.

Each round runs, in fresh processes and with a fresh cache:

* ``sertool features --corpus ravdess --root R --extractors egemaps --jobs J`` with the default backend (forked
  workers for eGeMAPS since it is marked fork-safe) and with ``--backend processes`` (loky workers plus the
  calling process: what ran before);
* the reference: ``opensmile.Smile(eGeMAPSv02, Functionals, num_workers=J, multiprocessing=True)
  .process_files(paths)`` in a plain Python process (openSMILE reads the files itself, at their own rate).

Printed: wall seconds and CPU seconds (children included) per run, medians, cores busy (CPU / wall), and the
ratios of the reference's median wall time to each sertool variant's (> 1: sertool is faster). Run it on a
quiet machine; timings of a loaded one say little.

    .venv/bin/python benchmarks/bench_egemaps.py --root /path/to/corpora/ravdess --repeat 2
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time

log = logging.getLogger("bench_egemaps")

REFERENCE = """
import sys, opensmile
paths = sys.argv[2:]
smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals,
                        num_workers=int(sys.argv[1]), multiprocessing=True)
df = smile.process_files(paths)
assert df.shape == (len(paths), 88), df.shape
"""


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the children) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="the RAVDESS folder")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from sertool.data.manifest import build_manifest

    paths = build_manifest("ravdess", args.root).manifest["path"].astype(str).tolist()
    sertool = [sys.executable, "-c", "import sys; from sertool.cli import main; sys.exit(main())"]
    runs: dict[str, list[tuple[float, float]]] = {"sertool (default backend)": [], "sertool --backend processes": [],
                                                  "opensmile process_files": []}  # fmt: skip
    for r in range(args.repeat):
        for name in runs:
            with tempfile.TemporaryDirectory() as cache:
                if name.startswith("sertool"):
                    cmd = [*sertool, "features", "--corpus", "ravdess", "--root", args.root, "--extractors",
                           "egemaps", "--jobs", str(args.jobs), "--cache", cache]  # fmt: skip
                    if "processes" in name:
                        cmd += ["--backend", "processes"]
                else:
                    cmd = [sys.executable, "-c", REFERENCE, str(args.jobs), *paths]
                wall, cpu = _timed(cmd)
            runs[name].append((wall, cpu))
            log.info(
                "round %d  %-28s wall %6.1f s  CPU %6.1f s  cores busy %.2f",
                r + 1,
                name,
                wall,
                cpu,
                cpu / wall,
            )
    log.info("\n%d clips, %d jobs, medians of %d:", len(paths), args.jobs, args.repeat)
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()
    }
    for name, (wall, cpu) in med.items():
        log.info("  %-28s wall %6.1f s  CPU %6.1f s  cores busy %.2f", name, wall, cpu, cpu / wall)
    ref = med["opensmile process_files"][0]
    for name in ("sertool (default backend)", "sertool --backend processes"):
        log.info("  reference wall / %s wall = %.2f", name, ref / med[name][0])


if __name__ == "__main__":
    main()
