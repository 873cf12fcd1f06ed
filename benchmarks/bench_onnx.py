"""ONNX export on real clips: parity with ``sertool predict`` and throughput of onnxruntime (CPU) against it.

In one run, on RAVDESS (``../shared/corpora/ravdess``, original layout), for each of whisper-base@all +
logistic regression and mfcc40 + SVM (one graph each: waveform -> probabilities) and handcrafted94 + SVM
(graph: feature vector -> probabilities; the features come from sertool):

(a) train on the clips of actors 1..``--train-actors`` (``train_model``; features from the cache) and export
    (``export_onnx``);
(b) parity on ``--n`` clips of the held-out actors 21-24: ``predict_files`` (what ``sertool predict`` runs)
    against the graph in onnxruntime on the same decoded clips: max absolute probability difference, label
    agreement, and each one's accuracy;
(c) throughput, one clip at a time on decoded audio (what ``predict_files`` does per file, and a server per
    request): ``TrainedModel.predict_proba_signals`` against the graph (for handcrafted94: sertool's features,
    then the graph), with one thread each (torch, BLAS, onnxruntime: the comparison that load from other
    processes disturbs least) and with every core, in alternating rounds: clips/s of the best and of the
    median round, and their ratios. Decoding is the same for both and left out. For the feature-vector graph,
    the classifier alone is timed as well.

Usage::

    .venv/bin/python benchmarks/bench_onnx.py [--root ../shared/corpora/ravdess] [--cache DIR] [--n 200]
        [--n-time 25] [--rounds 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from sertool.data.audio import load_audio
from sertool.data.manifest import build_manifest
from sertool.deploy import load_model, predict_files, train_model
from sertool.export import export_onnx, load_onnx

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_onnx")

CONFIGS = (("whisper-base@all", "logreg"), ("mfcc40", "svm"), ("handcrafted94", "svm"))


def _rate(fn: Callable[[], Any], n: int) -> tuple[float, Any]:
    """(clips per second, result) of one call of ``fn`` over ``n`` clips."""
    t = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - t), out


def bench(features: str, model_name: str, train: Any, test: Any, args: argparse.Namespace, tmp: Path) -> None:
    """Train, export, compare and time one (features, model) pair; prints its lines."""
    t = time.perf_counter()
    folder = train_model(
        train, features=features, model=model_name, out=tmp / f"{features}-{model_name}", cache=args.cache
    )
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    path = export_onnx(folder, folder.with_suffix(".onnx"), cache=args.cache)
    t_export = time.perf_counter() - t
    model = load_model(folder, cache=args.cache, engine="estimator")  # the reference: the fitted estimator
    graph = load_onnx(path, spinning=False)  # idle onnxruntime threads must not spin through sertool's rounds
    graph1 = load_onnx(path, threads=1)
    print(
        f"\n== {features} + {model_name}: {graph.input_kind} -> probabilities ({len(graph.classes)} classes)"
    )
    print(
        f"(a) trained on {len(train)} clips in {t_train:.1f} s; exported in {t_export:.1f} s, "
        f"{path.stat().st_size / 1e6:.1f} MB"
    )
    paths = test["path"].tolist()[: args.n]
    truth = test["label"].tolist()[: args.n]
    signals = [load_audio(p) for p in paths]

    def graph_one(y: np.ndarray) -> tuple[np.ndarray, list[str]]:
        x = y[None, :] if graph.input_kind == "waveform" else model.features([y])
        return graph.run(x)

    predict_files(model, paths[:2], jobs=1)  # warm-up: first calls (numba, filter banks, thread pools)
    graph_one(signals[0])
    # (b) parity with sertool predict
    df, skipped = predict_files(model, paths, jobs=1)
    assert not skipped
    ref = df[[f"proba__{c}" for c in model.classes]].to_numpy()
    outs = [graph_one(y) for y in signals]
    got = np.concatenate([p for p, _ in outs])
    labels = [lab for _, ls in outs for lab in ls]
    agree = sum(a == b for a, b in zip(labels, df["label"], strict=True))
    acc_ref = np.mean(np.asarray(df["label"]) == np.asarray(truth))
    acc_onnx = np.mean(np.asarray(labels) == np.asarray(truth))
    print(
        f"(b) {len(paths)} held-out clips (actors 21-24): max |p_onnx - p_sertool| = {np.abs(got - ref).max():.2e} "
        f"(mean {np.abs(got - ref).mean():.1e}); same label {agree}/{len(paths)}; "
        f"accuracy sertool {acc_ref:.3f}, onnx {acc_onnx:.3f}"
    )
    # (c) throughput, one setting after the other; inside each, rounds alternate between the two systems
    timed = signals[: args.n_time]
    what = "whole graph" if graph.input_kind == "waveform" else "sertool features + graph"
    print(
        f"(c) {len(timed)} decoded clips, one at a time, {args.rounds} alternating rounds; onnxruntime: {what}"
    )
    for label, threads, g in (("1 thread each", 1, graph1), (f"all {os.cpu_count()} cores", None, graph)):
        rates = _rounds(model, g, timed, args.rounds, threads)
        best = {k: max(v) for k, v in rates.items()}
        med = {k: float(np.median(v)) for k, v in rates.items()}
        print(
            f"    {label}: best round sertool {best['sertool']:.1f} clips/s, onnxruntime {best['onnx']:.1f} "
            f"clips/s: x{best['onnx'] / best['sertool']:.2f}; median round {med['sertool']:.1f} vs "
            f"{med['onnx']:.1f}: x{med['onnx'] / med['sertool']:.2f}"
        )
    if graph.input_kind != "waveform":
        X = model.features(timed)
        with threadpool_limits(limits=1):
            c_ref = max(
                _rate(lambda: [model.predict_features(X[i : i + 1]) for i in range(len(X))], len(X))[0]
                for _ in range(3)
            )
            c_onnx = max(
                _rate(lambda: [graph1.run(X[i : i + 1]) for i in range(len(X))], len(X))[0] for _ in range(3)
            )
        print(
            f"    classifier alone, one vector at a time, 1 thread: scikit-learn {c_ref:.0f}/s, onnxruntime "
            f"{c_onnx:.0f}/s: x{c_onnx / c_ref:.2f} (best of 3; the feature step is the cost)"
        )


def _rounds(
    model: Any, graph: Any, signals: list[np.ndarray], rounds: int, threads: int | None
) -> dict[str, list[float]]:
    """Clips/s of ``rounds`` alternating rounds of sertool and the graph over ``signals`` (``threads``: torch and
    BLAS threads for sertool; the graph's session was opened with as many)."""
    import torch

    def one(y: np.ndarray) -> Any:
        return graph.run(y[None, :] if graph.input_kind == "waveform" else model.features([y]))

    saved = torch.get_num_threads()
    rates: dict[str, list[float]] = {"sertool": [], "onnx": []}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            for _ in range(rounds):
                rates["sertool"].append(
                    _rate(lambda: [model.predict_proba_signals([y]) for y in signals], len(signals))[0]
                )
                rates["onnx"].append(_rate(lambda: [one(y) for y in signals], len(signals))[0])
    finally:
        torch.set_num_threads(saved)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "corpora" / "ravdess")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache (default $SERTOOL_CACHE)")
    ap.add_argument("--train-actors", type=int, default=8, help="train on actors 1..N (default 8)")
    ap.add_argument("--n", type=int, default=200, help="held-out clips compared (default 200)")
    ap.add_argument("--n-time", type=int, default=25, help="of which timed (default 25)")
    ap.add_argument("--rounds", type=int, default=8, help="alternating timing rounds (default 8)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime

    manifest = build_manifest("ravdess", args.root, jobs=2).manifest
    actor = manifest["speaker"].astype(str).str[-2:].astype(int)
    train = manifest[actor <= args.train_actors].reset_index(drop=True)
    test = manifest[actor > 20].sample(frac=1.0, random_state=0).reset_index(drop=True)
    print(
        f"RAVDESS: train actors 1-{args.train_actors} ({len(train)} clips), test actors 21-24; "
        f"onnxruntime {onnxruntime.__version__} CPU, {os.cpu_count()} cores (load average "
        f"{os.getloadavg()[0]:.1f} at the start)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for features, model_name in CONFIGS:
            bench(features, model_name, train, test, args, Path(tmp))


if __name__ == "__main__":
    main()
