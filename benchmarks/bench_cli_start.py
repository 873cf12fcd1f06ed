"""Start-up cost of the ``sertool`` command: whole-process times beside the in-process prediction time.

Issue targets on the 2-core development machine: ``sertool --help`` <= 0.5 s, ``sertool predict one.wav
--model M`` (a classical model on handcrafted94) <= 1.5 s, both as a whole process.

In one run (so every figure sees the same machine load):

(a) a handcrafted94 + SVM model is trained on the built-in synthetic demo corpus, in a temporary folder with
    its own feature cache (nothing is written to ``~/.cache/sertool``);
(b) ``sertool --help``: median (and min) of ``--repeat`` whole-process wall times, and the median CPU time
    (user + system) of those processes, which a loaded machine distorts less;
(c) ``sertool predict CLIP --model M``: the same figures, with the default engine (the model's checked
    ``model.onnx`` graph, :mod:`sertool.engine`: no scikit-learn import) and, on the next line, with
    ``--engine estimator`` (the fitted scikit-learn pipeline loaded from ``estimator.skops``), alternated run
    by run so both see the same load; their ratio is printed. CLIP is a RAVDESS clip when ``--clip`` or
    ``--ravdess`` names one (a ~4 s utterance), else a demo clip;
(d) in-process: ``load_model`` once, then ``predict_files`` on CLIP, median of 20 warm calls; the start-up
    share of (c) is (c) minus that;
(e) which heavy packages (torch, sklearn, librosa, numba, pandas, skops) ``import sertool.cli`` plus
    ``--help``, and a predict run, leave in ``sys.modules`` (each in a fresh process).

Usage::

    .venv/bin/python benchmarks/bench_cli_start.py [--repeat 5] [--clip one.wav | --ravdess DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "librosa", "numba", "scipy", "pandas", "skops", "onnxruntime")

#: Runs ``sertool.cli.main`` with the given arguments, then prints which heavy packages were imported.
_PROBE = """
import contextlib, io, json, sys
from sertool.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _sertool() -> str:
    """The ``sertool`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("sertool")
    return str(script) if script.exists() else "sertool"


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one whole-process run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _report(label: str, runs: list[tuple[float, float]], target: float) -> float:
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    med = statistics.median(walls)
    print(
        f"{label}: median {med:.2f} s (min {min(walls):.2f}, max {max(walls):.2f}; CPU median "
        f"{statistics.median(cpus):.2f} s) over {len(runs)} runs; target <= {target} s: {med / target:.2f}x target"
    )
    return med


def _measure(label: str, cmd: list[str], env: dict[str, str], repeat: int, target: float) -> float:
    _timed(cmd, env)  # one unmeasured run: the OS file cache, numba's on-disk cache, __pycache__
    return _report(label, [_timed(cmd, env) for _ in range(repeat)], target)


def _measure_pair(
    label: str, cmd: list[str], label2: str, cmd2: list[str], env: dict[str, str], repeat: int, target: float
) -> tuple[float, float]:
    """:func:`_measure` of two commands, alternated run by run (both see the same machine load)."""
    _timed(cmd, env), _timed(cmd2, env)
    runs: tuple[list[tuple[float, float]], list[tuple[float, float]]] = ([], [])
    for _ in range(repeat):
        runs[0].append(_timed(cmd, env))
        runs[1].append(_timed(cmd2, env))
    return _report(label, runs[0], target), _report(label2, runs[1], target)


def _imported(args: list[str], env: dict[str, str]) -> list[str]:
    probe = _PROBE.format(heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", probe, *args], env=env, check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def _clip(args: argparse.Namespace, demo: Path) -> Path:
    if args.clip is not None:
        return args.clip
    if args.ravdess is not None and args.ravdess.is_dir():
        # a ~4 s utterance of a held-out actor, the clip benchmarks/bench_predict.py times
        clips = sorted(args.ravdess.glob("Actor_21/*.*"))
        if clips:
            return clips[0]
    return sorted(demo.rglob("*.wav"))[0]


def main() -> None:
    """Run the benchmark and print its figures (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="whole-process runs per command (default 5)")
    ap.add_argument("--clip", type=Path, default=None, help="the audio file to predict")
    ap.add_argument(
        "--ravdess",
        type=Path,
        default=REPO.parent / "shared" / "corpora" / "ravdess",
        help="RAVDESS folder: its Actor_21 first clip is predicted when --clip is not given",
    )
    args = ap.parse_args()

    from sertool.data.corpora.demo import generate_demo_corpus

    with tempfile.TemporaryDirectory(prefix="sertool-bench-cli-") as tmp:
        env = {**os.environ, "SERTOOL_CACHE": str(Path(tmp) / "cache"), "PYTHONWARNINGS": "ignore"}
        os.environ["SERTOOL_CACHE"] = env["SERTOOL_CACHE"]
        demo = generate_demo_corpus(Path(tmp) / "demo", n_speakers=4, clips_per_class=6)
        model = Path(tmp) / "svm"
        t0 = time.perf_counter()
        train = [_sertool(), "train", "--corpus", "demo", "--root", str(demo), "--features", "handcrafted94"]
        train += ["--model", "svm", "--out", str(model), "--results", str(Path(tmp) / "results")]
        subprocess.run(train, env=env, check=True, stdout=subprocess.DEVNULL)
        print(f"(a) trained svm on handcrafted94 of the demo corpus in {time.perf_counter() - t0:.1f} s")
        clip = _clip(args, demo)
        print(f"    clip: {clip}")

        helps = _measure("(b) sertool --help", [_sertool(), "--help"], env, args.repeat, 0.5)
        predict = [_sertool(), "predict", str(clip), "--model", str(model)]
        pred, slow = _measure_pair(
            "(c) sertool predict CLIP --model M",
            predict,
            "    ... --engine estimator",
            [*predict, "--engine", "estimator"],
            env,
            args.repeat,
            1.5,
        )
        print(f"    --engine estimator / default engine (wall medians): {slow / pred:.2f}x")

        from sertool.deploy import load_model, predict_files

        logging.getLogger("sertool").setLevel(logging.ERROR)  # a notice per call would flood the figures
        t0 = time.perf_counter()
        loaded = load_model(model)
        predict_files(loaded, [str(clip)], jobs=1)
        first = time.perf_counter() - t0
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            predict_files(loaded, [str(clip)], jobs=1)
            lat.append(time.perf_counter() - t)
        warm = statistics.median(lat)
        print(
            f"(d) in-process: load_model + first predict_files {first:.2f} s; warm predict_files median "
            f"{warm * 1000:.1f} ms (20 calls)"
        )
        print(
            f"    whole process / warm in-process prediction: --help {helps / warm:.0f}x, predict "
            f"{pred / warm:.0f}x; start-up share of predict: {pred - warm:.2f} s"
        )
        print(
            f"(e) heavy packages after `import sertool.cli` + --help: {_imported(['--help'], env) or 'none'}"
        )
        print(f"    after predict: {_imported(predict[1:], env)}")


if __name__ == "__main__":
    main()
