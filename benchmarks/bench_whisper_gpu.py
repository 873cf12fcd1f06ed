"""Whisper on a GPU: end-to-end clips/s from FLAC files, encoder-only clips/s, and pooled features for probes.

Subcommands:

``throughput``
    Writes ``--n`` synthetic 4 s 16 kHz clips as FLAC files (voiced harmonic tones with vibrato, amplitude
    envelope and noise; seeded), checks on the device that the batched GPU log-mel equals the per-clip CPU
    reference, then times per mode and batch size:

    - *encoder only*: encoder + layer pooling on log-mel batches already on the GPU;
    - *end to end*: :meth:`WhisperExtractor.extract_files` from paths to per-clip outputs (decoding in a
      thread pool, GPU log-mel, encoder, pooled + the default frames output copied back), after a warm-up
      pass over the first 512 files. The files were just written, so they are read from the page cache; one
      run after dropping the page cache (when allowed) says what the disk adds.
    - for the same-run ratio: the former path (per-clip numpy log-mel on the CPU) and, to separate decoding,
      ``extract_batch`` on clips decoded beforehand.

``features``
    Pooled all-layer features (float16) of every audio file under ``--root`` in each ``--modes``, saved as
    ``<out>_<mode>.npz`` (``pooled`` (n, n_layers, dim), ``rel_path`` (n,)).

``probe``
    Linear probes on saved TESS features (run on the CPU, here): StandardScaler + LogisticRegression
    (max_iter=2000) per layer, layers 3-5 and all layers concatenated; UA = balanced accuracy (%), under a
    stratified 5-fold over utterances (speaker-dependent: TESS has two speakers) and train-on-one-speaker /
    test-on-the-other (both directions averaged).

Usage (device commands as recorded in ``benchmarks/results/whisper_gpu.md`` and ``whisper_modes.md``)::

    python benchmarks/bench_whisper_gpu.py throughput --weights .gpu/weights --n 4096 --out gpu.json
    python benchmarks/bench_whisper_gpu.py features --root /tmp/tess --weights .gpu/weights --out out/tess
    nice .venv/bin/python benchmarks/bench_whisper_gpu.py probe --features out/tess_*.npz --out res.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sertool.data.audio import load_audio  # noqa: E402
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


def throughput(args: argparse.Namespace) -> dict:
    import torch

    t0 = time.perf_counter()
    paths = write_clips(args.dir, args.n, args.threads)
    res: dict = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "n_clips": len(paths),
        "clip_s": 4.0,
        "threads": args.threads,
        "write_s": time.perf_counter() - t0,
        "encoder_only": {},
        "end_to_end": {},
    }
    print(json.dumps({k: res[k] for k in ("device", "torch", "n_clips", "write_s")}), flush=True)
    modes = args.modes.split(",")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    clip = load_audio(paths[0])
    for mode in modes:
        for bs in sizes:
            ex = WhisperExtractor("base", weights=args.weights, mode=mode, batch_size=bs, device=args.device)
            if mode == modes[0] and bs == sizes[0]:
                res["parity"] = parity(paths, ex)
                print(json.dumps(res["parity"]), flush=True)
            enc = encoder_only(ex, clip, bs, args.reps)
            io = {"threads": args.threads, "processes": args.processes}
            ex.extract_files(paths[:512], **io)  # warm-up: kernels, allocator, pinned buffers, workers
            wall = timed(lambda ex=ex, io=io: ex.extract_files(paths, **io))
            res["encoder_only"][f"{mode}/b{bs}"] = enc
            res["end_to_end"][f"{mode}/b{bs}"] = len(paths) / wall
            print(
                f"{mode:<9} batch {bs:>4}: encoder only {enc:8.0f} clips/s, end to end {len(paths) / wall:7.0f} clips/s",
                flush=True,
            )
    if args.no_references:
        return res
    # same-run references, trimmed at the first batch size
    ex = WhisperExtractor(
        "base", weights=args.weights, mode="trimmed", batch_size=sizes[0], device=args.device
    )
    ex.extract_files(paths[:512], threads=args.threads)
    extra = {}
    decoded = [load_audio(p) for p in paths]
    extra["trimmed_in_memory_extract_batch"] = len(paths) / timed(lambda: ex.extract_batch(decoded))
    decoded.clear()
    nf = WhisperExtractor(
        "base", weights=args.weights, frame_layers=None, batch_size=sizes[0], device=args.device
    )
    nf.extract_files(paths[:512], threads=args.threads)
    extra["trimmed_no_frames_output"] = len(paths) / timed(
        lambda: nf.extract_files(paths, threads=args.threads)
    )
    for procs in (8, 14):
        ex.extract_files(paths[:512], processes=procs)  # start the worker processes
        extra[f"trimmed_{procs}_processes"] = len(paths) / timed(
            lambda p=procs: ex.extract_files(paths, processes=p)
        )
    for threads in (4, 8):
        extra[f"trimmed_{threads}_threads"] = len(paths) / timed(
            lambda t=threads: ex.extract_files(paths, threads=t)
        )
    ex._mel_on_cpu = True
    extra["trimmed_cpu_log_mel_former_path"] = len(paths) / timed(
        lambda: ex.extract_files(paths, threads=args.threads)
    )
    ex._mel_on_cpu = False
    if drop_page_cache():
        extra["trimmed_after_dropping_page_cache"] = len(paths) / timed(
            lambda: ex.extract_files(paths, threads=args.threads)
        )
    res["references"] = extra
    for k, v in extra.items():
        print(f"{k}: {v:.0f} clips/s", flush=True)
    return res


# -------------------------------------------------------------------------------------------- features
def features(args: argparse.Namespace) -> dict:
    root = Path(args.root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".flac", ".wav"))
    files.sort(key=lambda p: p.stat().st_size)  # ~ duration: tight batches
    rel = np.array([str(p.relative_to(root)) for p in files])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    res: dict = {"n": len(files)}
    for mode in args.modes.split(","):
        ex = WhisperExtractor("base", weights=args.weights, mode=mode, frame_layers=None, device=args.device)
        t0 = time.perf_counter()
        outs, errors = ex.extract_files(files, threads=args.threads)
        took = time.perf_counter() - t0
        if errors:
            raise SystemExit(f"{len(errors)} unreadable files, e.g. {errors[0]}")
        pooled = np.stack([o["pooled"] for o in outs]).astype(np.float16)
        np.savez(f"{args.out}_{mode}.npz", pooled=pooled, rel_path=rel)
        res[mode] = {"seconds": took, "clips_per_s": len(files) / took, "shape": list(pooled.shape)}
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
    t.add_argument("--dir", type=Path, default=Path("/tmp/whisper_clips"))
    t.add_argument("--n", type=int, default=4096)
    t.add_argument("--modes", default="trimmed,window8,padded30")
    t.add_argument("--batch-sizes", default="128,256")
    t.add_argument("--reps", type=int, default=20)
    t.add_argument("--processes", type=int, default=0, help="decoding processes (0: threads)")
    t.add_argument("--no-references", action="store_true", help="skip the same-run reference variants")
    f = sub.add_parser("features")
    f.add_argument("--root", type=Path, required=True)
    f.add_argument("--modes", default="trimmed,padded30")
    for p in (t, f):
        p.add_argument("--weights", default="base")
        p.add_argument("--device", default="auto")
        p.add_argument("--threads", type=int, default=16)
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
