"""The ONNX engine of saved models (``model.onnx``, :mod:`sertool.engine`) against their fitted estimator on
real held-out clips: what ``sertool predict`` gives by default against ``--engine estimator``.

A model per (features, model) pair is trained on RAVDESS actors 1-20 (cached features); every 4th clip of
actors 21-24 (``--n`` at most) is predicted through ``predict_files`` with both engines. Printed per model: the
difference the training-time check recorded, then on the held-out clips the largest absolute probability
difference, whether every label and every guard verdict is equal.

Usage::

    .venv/bin/python benchmarks/bench_engine_parity.py [--ravdess DIR] [--n 60]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from sertool.data.manifest import build_manifest
from sertool.deploy import load_model, predict_files, train_model

REPO = Path(__file__).resolve().parents[1]
PAIRS = (("handcrafted94", "svm"), ("handcrafted94", "xgb"), ("whisper-base@all", "logreg"))


def main() -> None:
    """Run the comparison and print one line per model (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ravdess", type=Path, default=REPO.parent / "shared" / "corpora" / "ravdess")
    ap.add_argument("--n", type=int, default=60, help="held-out clips predicted (default 60)")
    args = ap.parse_args()
    logging.getLogger("sertool").setLevel(logging.ERROR)
    manifest = build_manifest("ravdess", args.ravdess).manifest
    held = manifest["speaker"].astype(str).str[-2:].astype(int) > 20
    train = manifest[~held].reset_index(drop=True)
    paths = manifest[held]["path"].tolist()[::4][: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        for features, model in PAIRS:
            out = train_model(train, features=features, model=model, out=Path(tmp) / model, jobs=2)
            record = json.loads((out / "model.json").read_text())["engine"]
            if not record["onnx"]:
                print(f"{features} + {model}: no ONNX engine ({record['why']})")
                continue
            a, _ = predict_files(load_model(out, engine="estimator"), paths, jobs=2)
            b, _ = predict_files(load_model(out), paths, jobs=2)
            cols = [c for c in a.columns if c.startswith("proba__")]
            diff = float(np.abs(a[cols].to_numpy() - b[cols].to_numpy()).max())
            print(
                f"{features} + {model}: training-time check max |dp| {record['onnx']['max_abs_diff']:.2g} on "
                f"{record['onnx']['rows']} rows; {len(paths)} held-out clips (actors 21-24): max |dp| {diff:.2g}, "
                f"labels equal {bool((a['label'] == b['label']).all())}, guard verdicts equal "
                f"{bool((a['in_distribution'] == b['in_distribution']).all())}"
            )


if __name__ == "__main__":
    main()
