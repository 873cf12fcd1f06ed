"""Measured ECE beside the ECE a perfectly calibrated model would show on the same test folds.

ECE (15 equal-width bins) is biased upward on small folds: RAVDESS speaker-6fold tests 240 clips per fold, so
even labels drawn from the model's own probabilities leave bins whose accuracy scatters around their
confidence. For every entry of a run's stored predictions this prints, per fold and as the fold mean, the
measured ECE and :func:`sertool.metrics.ece_sampling_floor` (mean ECE of 200 label draws from the stored
probabilities), and the ECE of all folds' predictions pooled (1440 clips) with its floor.

Usage (the calibration study of ``results/RESULTS.md``, whose predictions a bench run stores)::

    sertool bench --corpus ravdess --root $SERTOOL_CORPORA/ravdess --features whisper-base@all,handcrafted94 \\
        --models logreg --split speaker-6fold --seed 0 --calibrate temperature --results R
    sertool bench ... (the same without --calibrate, into the same R)
    .venv/bin/python benchmarks/bench_ece_floor.py R/ravdess/speaker-6fold-d3799134b1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sertool.metrics import ece_sampling_floor, expected_calibration_error

log = logging.getLogger("bench_ece_floor")


def _fold_frames(split_dir: Path) -> dict[str, list[pd.DataFrame]]:
    """``view / model`` -> that entry's per-fold prediction tables, in fold order."""
    entries: dict[str, list[pd.DataFrame]] = {}
    for path in sorted((split_dir / "runs").glob("*/*/fold-*.predictions.parquet")):
        entries.setdefault(f"{path.parent.parent.name} / {path.parent.name}", []).append(
            pd.read_parquet(path)
        )
    return entries


def _ece_pair(frame: pd.DataFrame) -> tuple[float, float, int]:
    """(measured ECE, sampling floor, clips) of one prediction table."""
    columns = [c for c in frame.columns if c.startswith("proba__")]
    proba = frame[columns].to_numpy(np.float64)
    classes = [c.removeprefix("proba__") for c in columns]
    measured = expected_calibration_error(frame["y_true"].to_numpy(), proba, classes, y_pred=frame["y_pred"])
    return measured, ece_sampling_floor(proba), len(frame)


def main() -> None:
    """Print the table for the split folder given on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split_dir", type=Path, help="<results>/<corpus>/<split-id> of a bench run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    entries = _fold_frames(args.split_dir)
    if not entries:
        raise SystemExit(
            f"{args.split_dir}: no runs/*/*/fold-*.predictions.parquet (not a bench split folder?)"
        )
    log.info("# .venv/bin/python benchmarks/bench_ece_floor.py %s", args.split_dir)
    log.info("%-34s %-30s %-13s %-22s", "entry", "fold ECE (floor)", "mean (floor)", "pooled ECE (floor), n")
    for entry, frames in entries.items():
        folds = [_ece_pair(f) for f in frames]
        pooled = _ece_pair(pd.concat(frames, ignore_index=True))
        per_fold = " ".join(f"{m:.3f}" for m, _, _ in folds)
        log.info(
            "%-34s %-30s %.3f (%.3f)  %.3f (%.3f), %d\n%-34s floors %s",
            entry,
            per_fold,
            np.mean([m for m, _, _ in folds]),
            np.mean([f for _, f, _ in folds]),
            pooled[0],
            pooled[1],
            pooled[2],
            "",
            " ".join(f"{f:.3f}" for _, f, _ in folds),
        )


if __name__ == "__main__":
    main()
