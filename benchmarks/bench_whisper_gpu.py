"""Whisper on a GPU: end-to-end clips/s from FLAC files, encoder-only clips/s, and pooled features for probes.

Subcommands:

``throughput``
    Writes ``--n`` synthetic 4 s 16 kHz clips as FLAC files (voiced harmonic tones with vibrato, amplitude
    envelope and noise; seeded), checks on the device that the batched GPU log-mel equals the per-clip CPU
    reference, then times per mode and batch size:

    - *encoder only*: encoder + layer pooling on log-mel batches already on the GPU (the extractor's batch
      API: :meth:`WhisperExtractor.encode`);
    - *end to end*: :func:`sertool.features.extract.extract_features` on a manifest of the files into a fresh
      :class:`~sertool.features.store.FeatureStore`, the path ``sertool features`` runs: decoding (in
      ``decode_workers`` processes on CUDA), GPU log-mel, encoder, pooled + the default frames output copied
      back, shards written to the cache. Each timed run gets an empty cache folder (deleted afterwards); a
      warm-up run over the first ``--warmup`` files pays kernels and allocator first. The files were just
      written, so they are read from the page cache; with ``--drop-page-cache`` (root), one run after
      dropping it says what the disk adds.
    - for the same-run ratio (unless ``--no-references``): ``extract_batch`` on clips decoded beforehand (no
      decoding, no cache), no frames output, ``--decode-processes`` decoding processes, one decoding thread
      instead of processes, and the former per-clip numpy log-mel on the CPU.

``features``
    Pooled all-layer features (float16) of every audio file under ``--root`` in each ``--modes``, extracted
    with ``extract_features`` into ``<out>_cache`` and saved as ``<out>_<mode>.npz`` (``pooled``
    (n, n_layers, dim), ``rel_path`` (n,)).

``probe``
    Linear probes on saved TESS features (run on the CPU, here): StandardScaler + LogisticRegression
    (max_iter=2000) per layer, layers 3-5 and all layers concatenated; UA = balanced accuracy (%), under a
    stratified 5-fold over utterances (speaker-dependent: TESS has two speakers) and train-on-one-speaker /
    test-on-the-other (both directions averaged).

Usage (device commands as recorded in ``benchmarks/results/whisper_gpu.md`` and ``whisper_modes.md``)::

    python benchmarks/bench_whisper_gpu.py throughput --weights .gpu/weights --n 4096 --out gpu.json
    python benchmarks/bench_whisper_gpu.py throughput --weights <folder> --device cpu --n 8 --modes trimmed \
        --batch-sizes 4 --reps 1 --warmup 4 --no-references --out /tmp/smoke.json   # CPU smoke run
    python benchmarks/bench_whisper_gpu.py features --root /tmp/tess --weights .gpu/weights --out out/tess
    nice .venv/bin/python benchmarks/bench_whisper_gpu.py probe --features out/tess_*.npz --out res.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sertool.data.audio import audio_info, file_sha1, load_audio  # noqa: E402
from sertool.features.extract import ExtractionReport, extract_features  # noqa: E402
from sertool.features.store import FeatureStore  # noqa: E402
from sertool.features.whisper import (  # noqa: E402
    WhisperExtractor,
    autocast_for,
    masked_mean,
    whisper_log_mel,
    whisper_log_mel_batch,
)

log = logging.getLogger("bench_whisper_gpu")
SR = 16000


# ------------------------------------------------------------------------------------------ throughput
def synth_clip(i: int, seconds: float = 4.0) -> np.ndarray:
    """A seeded voiced-like clip: harmonics of a gliding f0 with vibrato, syllable envelope, noise; float32."""
    rng = np.random.default_rng(i)
    t = np.arange(int(seconds * SR)) / SR
    f0 = (
        rng.uniform(90, 280) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)) * (1 + 0.2 * t / seconds)
    )
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 9))
    env = np.clip(np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6)), 0, None) ** 0.5
    y = 0.2 * env * y + rng.normal(0, 0.003, t.size)
    return (y / max(1.0, np.abs(y).max() * 1.05)).astype(np.float32)


def write_clips(folder: Path, n: int, threads: int) -> list[str]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"clip{i:05d}.flac") for i in range(n)]

    def one(i: int) -> None:
        if not os.path.exists(paths[i]):
            sf.write(paths[i], synth_clip(i), SR, subtype="PCM_16")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return paths


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def parity(paths: list[str], ex: WhisperExtractor) -> dict:
    """GPU batch log-mel vs the per-clip CPU reference; pooled outputs of both mel paths (same precision)."""
    import torch

    clips = [load_audio(p)[: int(SR * (0.3 + 0.25 * k))] for k, p in enumerate(paths[:16])]
    n = [len(y) for y in clips]
    audio = torch.zeros(len(clips), max(n))
    for j, y in enumerate(clips):
        audio[j, : n[j]] = torch.from_numpy(y)
    out: dict = {}
    for mode, wanted in {
        "padded30": [3000] * len(n),
        "trimmed": [2 * ((k + 159) // 160 // 2 + 1) for k in n],
    }.items():
        wanted = [min(w, 3000) for w in wanted]
        mel = whisper_log_mel_batch(audio.to(ex._device), n, wanted).cpu().numpy()
        diff = max(
            float(np.abs(mel[j, :, : wanted[j]] - whisper_log_mel(y, wanted[j])).max())
            for j, y in enumerate(clips)
        )
        out[f"log_mel_max_abs_diff_{mode}"] = diff
    gpu = ex.extract_batch(clips)
    ex._mel_on_cpu = True
    cpu = ex.extract_batch(clips)
    ex._mel_on_cpu = False
    a = np.stack([o["pooled"] for o in gpu])
    b = np.stack([o["pooled"] for o in cpu])
    out["pooled_max_abs_diff_gpu_vs_cpu_mel"] = float(np.abs(a - b).max())
    out["pooled_max_abs"] = float(np.abs(b).max())
    return out


def encoder_only(ex: WhisperExtractor, clip: np.ndarray, bs: int, reps: int) -> float:
    """Clips/s of encoder + pooling on a batch of log-mels already on the device."""
    import torch

    ex._load()
    t_in, valid = ex._frames_for(len(clip))
    if ex.mode == "trimmed" and ex._bucket:
        t_in = -(-t_in // ex._bucket) * ex._bucket
    mel = torch.from_numpy(whisper_log_mel(clip, t_in)).to(ex._device)[None].expand(bs, -1, -1).contiguous()
    lengths = torch.full((bs,), valid, device=ex._device)
    masked = ex.mode == "trimmed"

    def step() -> None:
        with torch.inference_mode(), autocast_for(ex._device, ex.precision):
            states = ex.encode(mel, lengths if masked else None)
            torch.stack([masked_mean(h, lengths) for h in states], dim=1)

    step()
    step()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    sync()
    return bs * reps / (time.perf_counter() - t0)


def timed(fn: Callable[[], object]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def files_manifest(paths: Sequence[str | os.PathLike], root: Path | None = None) -> pd.DataFrame:
    """A manifest of audio files, as ``extract_features`` reads it: ``utt_id`` (the path relative to ``root``,
    else the file name), ``path``, ``corpus`` (``"bench"``), ``sha1`` of the bytes and ``duration_s``."""
    with ThreadPoolExecutor(8) as pool:
        sha1s = list(pool.map(file_sha1, paths))
        durations = [i.duration_s for i in pool.map(audio_info, paths)]
    return pd.DataFrame(
        {
            "utt_id": [str(Path(p).relative_to(root)) if root else Path(p).name for p in paths],
            "path": [str(p) for p in paths],
            "corpus": "bench",
            "sha1": sha1s,
            "duration_s": durations,
        }
    )


def run_extraction(
    manifest: pd.DataFrame, ex: WhisperExtractor, cache: Path, jobs: int
) -> tuple[float, ExtractionReport]:
    """Wall seconds of one ``extract_features`` run into an empty cache folder (deleted afterwards), and its
    report: the path ``sertool features`` runs, from the manifest's files to shards on disk."""
    shutil.rmtree(cache, ignore_errors=True)
    try:
        sync()
        t0 = time.perf_counter()
        report = extract_features(manifest, ex, cache=FeatureStore(cache), jobs=jobs)
        sync()
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if report.skipped or report.n_computed != len(manifest):
        raise SystemExit(f"{len(report.skipped)} clips skipped, e.g. {report.skipped[:1]}")
    return wall, report


def end_to_end(manifest: pd.DataFrame, ex: WhisperExtractor, args: argparse.Namespace, jobs: int) -> float:
    """Clips/s of ``extract_features`` over the whole manifest, after a warm-up run over its first files."""
    run_extraction(manifest.iloc[: args.warmup], ex, args.dir / "cache-warmup", jobs)
    wall, _ = run_extraction(manifest, ex, args.dir / "cache-timed", jobs)
    return len(manifest) / wall


def throughput(args: argparse.Namespace) -> dict:
    import torch

    t0 = time.perf_counter()
    paths = write_clips(args.dir / "clips", args.n, args.threads)
    manifest = files_manifest(paths)
    jobs = args.jobs
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "path": "sertool.features.extract.extract_features (as `sertool features`)",
        "n_clips": len(paths),
        "clip_s": 4.0,
        "jobs": jobs,
        "write_s": time.perf_counter() - t0,
        "encoder_only": {},
        "end_to_end": {},
    }
    print(json.dumps({k: res[k] for k in ("device", "torch", "n_clips", "write_s")}), flush=True)
    modes = args.modes.split(",")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    clip = load_audio(paths[0])

    def extractor(mode: str, bs: int, **kw: Any) -> WhisperExtractor:
        return WhisperExtractor(
            "base", weights=args.weights, mode=mode, batch_size=bs, device=args.device, **kw
        )

    for mode in modes:
        for bs in sizes:
            ex = extractor(mode, bs)
            if mode == modes[0] and bs == sizes[0]:
                res["parity"] = parity(paths, ex)
                res["decode_workers"] = ex.decode_workers(jobs if jobs > 0 else joblib.cpu_count())
                print(json.dumps(res["parity"]), flush=True)
            enc = encoder_only(ex, clip, bs, args.reps)
            e2e = end_to_end(manifest, ex, args, jobs)
            res["encoder_only"][f"{mode}/b{bs}"] = enc
            res["end_to_end"][f"{mode}/b{bs}"] = e2e
            print(
                f"{mode:<9} batch {bs:>4}: encoder only {enc:8.0f} clips/s, end to end {e2e:7.0f} clips/s",
                flush=True,
            )
    if not args.no_references:
        res["references"] = references(manifest, extractor(modes[0], sizes[0]), args, extractor)
    return res


def references(
    manifest: pd.DataFrame,
    ex: WhisperExtractor,
    args: argparse.Namespace,
    extractor: Callable[..., WhisperExtractor],
) -> dict[str, float]:
    """Same-run variants of the first mode and batch size (clips/s), to see where end-to-end time goes."""
    mode, bs, jobs = ex.mode, ex.batch_size or 0, args.jobs
    extra: dict[str, float] = {}
    decoded = [load_audio(p) for p in manifest["path"]]
    ex.extract_batch(decoded[: args.warmup])
    extra[f"{mode}_in_memory_extract_batch"] = len(decoded) / timed(lambda: ex.extract_batch(decoded))
    decoded.clear()
    extra[f"{mode}_no_frames_output"] = end_to_end(
        manifest, extractor(mode, bs, frame_layers=None), args, jobs
    )
    for procs in [int(p) for p in args.decode_processes.split(",") if p] + [0]:
        ex.decode_workers = lambda jobs, n=procs: n  # type: ignore[method-assign]  (0: one decoding thread)
        label = f"{procs}_decode_processes" if procs else "one_decoding_thread"
        extra[f"{mode}_{label}"] = end_to_end(manifest, ex, args, jobs)
        del ex.decode_workers  # back to the class's choice
    ex._mel_on_cpu = True
    extra[f"{mode}_cpu_log_mel_former_path"] = end_to_end(manifest, ex, args, jobs)
    ex._mel_on_cpu = False
    if args.drop_page_cache and drop_page_cache():
        wall, _ = run_extraction(manifest, ex, args.dir / "cache-cold", jobs)
        extra[f"{mode}_after_dropping_page_cache"] = len(manifest) / wall
    for k, v in extra.items():
        print(f"{k}: {v:.0f} clips/s", flush=True)
    return extra


# -------------------------------------------------------------------------------------------- features
def features(args: argparse.Namespace) -> dict:
    root = Path(args.root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".flac", ".wav"))
    manifest = files_manifest(files, root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(f"{args.out}_cache")
    res: dict = {"n": len(files)}
    for mode in args.modes.split(","):
        ex = WhisperExtractor("base", weights=args.weights, mode=mode, frame_layers=None, device=args.device)
        report = extract_features(manifest, ex, cache=store, jobs=args.jobs)
        if report.skipped:
            raise SystemExit(f"{len(report.skipped)} unreadable files, e.g. {report.skipped[0]}")
        X = store.load(manifest, f"{ex.name}@all", key=ex).X
        pooled = X.reshape(len(manifest), ex.n_layers, ex.dim).astype(np.float16)
        np.savez(f"{args.out}_{mode}.npz", pooled=pooled, rel_path=manifest["utt_id"].to_numpy(dtype=str))
        res[mode] = {
            "seconds": report.seconds,
            "clips_per_s": report.clips_per_second,
            "cached": report.n_cached,
            "shape": list(pooled.shape),
        }
        print(mode, res[mode], flush=True)
    return res


# ----------------------------------------------------------------------------------------------- probe
def _ua(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x[train], y[train])
    return 100 * float(balanced_accuracy_score(y[test], model.predict(x[test])))


def probe(args: argparse.Namespace) -> dict:
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedKFold

    from sertool.data.manifest import build_manifest

    manifest = build_manifest("tess", args.tess_root).manifest
    by_rel = {str(r).replace(os.sep, "/"): i for i, r in enumerate(manifest["rel_path"])}
    modes: dict[str, np.ndarray] = {}
    for path in sorted(args.features):
        mode = Path(path).stem.split("_", 1)[1]
        with np.load(path) as f:
            rows = np.array([by_rel[r] for r in f["rel_path"]])
            part = f["pooled"].astype(np.float32)
        full = np.full((len(manifest), *part.shape[1:]), np.nan, dtype=np.float32)
        if mode in modes:
            full = modes[mode]
        full[rows] = part
        modes[mode] = full
    y = manifest["label"].to_numpy()
    spk = manifest["speaker"].to_numpy()
    for mode, x in modes.items():
        if np.isnan(x).any():
            raise SystemExit(f"{mode}: features missing for {int(np.isnan(x[:, 0, 0]).sum())} clips")
    n_layers = next(iter(modes.values())).shape[1]
    views = {f"L{i}": [i] for i in range(n_layers)} | {"3-5": [3, 4, 5], "all": list(range(n_layers))}
    skf = StratifiedKFold(5, shuffle=True, random_state=0)
    folds = [(tr, te) for tr, te in skf.split(np.zeros(len(y)), y)]
    speakers = sorted(set(spk))
    cross = [(spk == a, spk != a) for a in speakers]
    jobs, keys = [], []
    for mode, x in modes.items():
        for view, layers in views.items():
            xv = x[:, layers, :].reshape(len(x), -1)
            for k, (tr, te) in enumerate(folds):
                jobs.append(delayed(_ua)(xv, y, tr, te))
                keys.append((mode, view, "5fold", k))
            for k, (tr, te) in enumerate(cross):
                jobs.append(delayed(_ua)(xv, y, tr, te))
                keys.append((mode, view, "cross_speaker", k))
    t0 = time.perf_counter()
    scores = Parallel(n_jobs=args.jobs)(jobs)
    res: dict = {
        "n": len(y),
        "speakers": speakers,
        "classes": sorted(set(y)),
        "probe_s": time.perf_counter() - t0,
    }
    table: dict = {}
    for (mode, view, proto, _), s in zip(keys, scores, strict=True):
        table.setdefault(proto, {}).setdefault(mode, {}).setdefault(view, []).append(s)
    res["ua"] = {
        p: {m: {v: float(np.mean(s)) for v, s in d.items()} for m, d in t.items()} for p, t in table.items()
    }
    res["ua_folds"] = table
    for proto, t in res["ua"].items():
        print(f"\n{proto}: UA %")
        print(f"{'mode':<10}" + "".join(f"{v:>7}" for v in views))
        for mode, d in t.items():
            print(f"{mode:<10}" + "".join(f"{d[v]:>7.1f}" for v in views))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--dir", type=Path, default=Path("/tmp/whisper_clips"), help="clips and scratch caches")
    t.add_argument("--n", type=int, default=4096)
    t.add_argument("--modes", default="trimmed,window8,padded30")
    t.add_argument("--batch-sizes", default="128,256")
    t.add_argument("--reps", type=int, default=20, help="encoder-only timing repetitions")
    t.add_argument("--warmup", type=int, default=512, help="files of the warm-up run before each timing")
    t.add_argument("--threads", type=int, default=16, help="threads writing the clips")
    t.add_argument(
        "--decode-processes", default="4,14", help="reference runs with these numbers of decoding processes"
    )
    t.add_argument("--no-references", action="store_true", help="skip the same-run reference variants")
    t.add_argument(
        "--drop-page-cache",
        action="store_true",
        help="one more reference run after dropping the page cache (needs root; slows the whole machine)",
    )
    f = sub.add_parser("features")
    f.add_argument("--root", type=Path, required=True)
    f.add_argument("--modes", default="trimmed,padded30")
    for p in (t, f):
        p.add_argument("--weights", default="base")
        p.add_argument("--device", default="auto")
        p.add_argument(
            "--jobs",
            type=int,
            default=-1,
            help="extract_features jobs, as `sertool features --jobs` (-1: all cores)",
        )
        p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("probe")
    p.add_argument("--features", nargs="+", required=True, help="<name>_<mode>.npz files from 'features'")
    p.add_argument("--tess-root", type=Path, default=REPO.parent / "shared" / "corpora" / "tess")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    res = {"throughput": throughput, "features": features, "probe": probe}[args.cmd](args)
    out = args.out if args.cmd != "features" else Path(f"{args.out}_run.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
