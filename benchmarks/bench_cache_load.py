"""Load time of the feature cache: format 2 (Arrow numbers) against format 1 (raw bytes, the previous store).

A whisper-base-like entry is synthesised (default 1440 clips: ``pooled`` float32 (7, 512), ``frames`` float16
(1, T, 512) with T uniform in 100..200, shards of 64 clips as extraction writes them) and written twice into a
temporary folder: through the format-1 store (``sertool/features/store.py`` at ``--old-ref``, imported from a
copy) and through this checkout's store. Then, alternating the two so both see the same machine load,
``FeatureStore.load`` of the pooled vectors (view ``@all``) and of the frames, each *cold* (a new store
instance: every shard's SHA-1 is checked, as on the first load of a run) and *warm* (the same instance
again), ``--repeats`` times; the medians and the ratio new/old are printed. Format 2 is timed with its default
threads and with ``threads=1`` (the format's own cost, without reading shards in parallel). The loaded arrays
of both formats are checked equal first. Nothing outside the temporary folder is touched.

Usage::

    .venv/bin/python benchmarks/bench_cache_load.py [--clips 1440] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from sertool.features.base import Extractor
from sertool.features.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
#: The last commit whose store wrote format 1.
FORMAT1_COMMIT = "750869ad47366844b87fe652bbb9bfb2740cc934"
SHARD = 64


class WhisperLike(Extractor):
    """Stands for whisper-base in the cache: pooled (7, 512), frames of model layer 4 (1, T, 512) float16."""

    name = "whisperlike"
    n_layers = 7
    frame_layers = (4,)

    def params(self) -> dict[str, Any]:
        return {}

    @property
    def dim(self) -> int:
        return 512

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - never called
        raise NotImplementedError


def _old_store(ref: str, folder: Path, copy: Path | None = None) -> ModuleType:
    """The store module as of commit ``ref`` (or the file ``copy``), imported from a copy in ``folder``."""
    if copy is not None:
        src = copy.read_bytes()
    else:
        cmd = ["git", "show", f"{ref}:sertool/features/store.py"]
        src = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True).stdout
    path = folder / "store_format1.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("store_format1", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["store_format1"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _fill(store: Any, ex: Extractor, manifest: pd.DataFrame, pooled: np.ndarray, frames: list) -> None:
    for s in range(0, len(manifest), SHARD):
        rows = manifest.iloc[s : s + SHARD]
        outs = [{"pooled": pooled[i], "frames": frames[i]} for i in range(s, s + len(rows))]
        store.write_shard("c1", ex, rows["utt_id"].tolist(), rows["sha1"].tolist(), outs)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return len(a) == len(b) and all(
        x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=1440)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--old-ref", default=FORMAT1_COMMIT, help="commit whose store.py writes format 1")
    ap.add_argument("--old-store", type=Path, default=None, help="a format-1 store.py instead of --old-ref")
    ap.add_argument("--out", type=Path, default=None, help="also write the report here, command on top")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    n = args.clips
    manifest = pd.DataFrame(
        {
            "utt_id": [f"c1/u{i:05d}" for i in range(n)],
            "corpus": "c1",
            "sha1": [f"{i:040x}" for i in range(n)],
        }
    )
    pooled = rng.standard_normal((n, 7, 512), dtype=np.float32)
    lengths = rng.integers(100, 201, n)
    frames = [rng.standard_normal((1, int(t), 512), dtype=np.float32).astype(np.float16) for t in lengths]
    ex = WhisperLike()
    lines = [
        f"# {' '.join(['.venv/bin/python', 'benchmarks/bench_cache_load.py', *sys.argv[1:]])}",
        f"# {date.today().isoformat()}, {os.cpu_count()} cores, load average before "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"entry: {n} clips, pooled float32 (7, 512), frames float16 (1, T, 512), T mean {lengths.mean():.0f}, "
        f"shards of {SHARD}; medians of {args.repeats}",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        old = _old_store(args.old_ref, Path(tmp), args.old_store)
        roots = {"format 1": Path(tmp) / "old", "format 2": Path(tmp) / "new"}
        _fill(old.FeatureStore(roots["format 1"]), ex, manifest, pooled, frames)
        _fill(FeatureStore(roots["format 2"]), ex, manifest, pooled, frames)
        for name, root in roots.items():
            size = sum(p.stat().st_size for p in root.rglob("part-*.parquet"))
            lines.append(f"{name}: {size / 2**20:.1f} MiB of shards")
        makers = {
            "format 1": lambda: old.FeatureStore(roots["format 1"]),
            "format 2": lambda: FeatureStore(roots["format 2"]),
            "format 2, threads=1": lambda: FeatureStore(roots["format 2"], threads=1),
        }
        cases = {"pooled": "whisperlike@all", "frames": "whisperlike"}
        for output, view in cases.items():
            a = makers["format 1"]().load(manifest, view, output=output, key=ex).X
            b = makers["format 2"]().load(manifest, view, output=output, key=ex).X
            if not _same(a, b):
                raise SystemExit(f"{output}: the two formats load different arrays")
            del a, b
        times: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(args.repeats):
            for output, view in cases.items():
                for label, make in makers.items():
                    store = make()
                    for state in ("cold", "warm"):
                        t0 = time.perf_counter()
                        store.load(manifest, view, output=output, key=ex)
                        times.setdefault((output, state, label), []).append(time.perf_counter() - t0)
    lines.append("arrays loaded by both formats: equal (pooled and frames)")
    lines.append(f"{'load':<16}{'format 1':>10}{'format 2':>10}{'ratio':>8}{'2, 1 thread':>13}{'ratio':>8}")
    for output in cases:
        for state in ("cold", "warm"):
            med = {label: float(np.median(times[(output, state, label)])) for label in makers}
            one, two, single = med["format 1"], med["format 2"], med["format 2, threads=1"]
            lines.append(
                f"{output + ' ' + state:<16}{one:>9.3f}s{two:>9.3f}s{two / one:>7.2f}x"
                f"{single:>12.3f}s{single / one:>7.2f}x"
            )
    lines.append("load average after " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
