"""Validation-UA sweep of the torch heads on cached RAVDESS features (CPU), the evidence behind their defaults.

For each head configuration it fits every requested fold of the saved ``speaker-6fold`` split on
``fold.train`` with early stopping on ``fold.valid`` (speaker-disjoint) and prints the mean validation UA at
the restored epoch, the epochs run and the seconds per fold. Configurations are compared by validation UA
only; the test parts are scored only with ``--test`` (for the final defaults, never to choose them).

Needs the feature cache made by ``sertool features`` (whisper-base with frames, whisper-base@all, mfcc40).

Examples
--------
::

    nice .venv/bin/python benchmarks/bench_neural_heads.py --head mlp_head --view pooled
    nice .venv/bin/python benchmarks/bench_neural_heads.py --head ser_whisper --view frames --folds 0 2 4 \\
        --params '{"lr": 2e-4}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_sample_weight

from sertool.features.store import default_cache_dir
from sertool.models.neural import HEADS

REPO = Path(__file__).resolve().parents[1]


def load(root: str, cache: str, view: str) -> tuple[list, np.ndarray, list[dict[str, np.ndarray]]]:
    """Features of one view, encoded labels and fold index arrays (train / valid / test)."""
    from sertool.data.manifest import build_manifest
    from sertool.features import get_extractor
    from sertool.features.store import FeatureStore
    from sertool.splits import make_split

    m = build_manifest("ravdess", root).manifest
    split = make_split(m, "speaker-6fold", seed=0)
    store = FeatureStore(cache)
    if view == "mfcc":
        fs = store.load(m, "mfcc40", output="frames", key=get_extractor("mfcc40"))
    else:
        ext = get_extractor("whisper-base", device="cpu", cache=cache)
        fs = (
            store.load(m, "whisper-base@all", key=ext)
            if view == "pooled"
            else store.load(m, "whisper-base", output="frames", key=ext)
        )
    ids = list(fs.utt_ids)
    pos = {u: i for i, u in enumerate(ids)}
    labels = m.set_index("utt_id").loc[ids, "label"].to_numpy()
    y = LabelEncoder().fit_transform(labels)
    folds = [
        {k: np.array([pos[u] for u in getattr(f, k)]) for k in ("train", "valid", "test")}
        for f in split.folds
    ]
    X = np.asarray(fs.X) if view == "pooled" else list(fs.X)
    return X, y, folds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--head", required=True, choices=sorted(HEADS))
    ap.add_argument("--view", required=True, choices=["pooled", "frames", "mfcc"])
    ap.add_argument("--params", default="{}", help="JSON dict of head parameters")
    ap.add_argument("--folds", type=int, nargs="*", default=list(range(6)))
    ap.add_argument("--test", action="store_true", help="also score the test parts (final defaults only)")
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "corpora" / "ravdess"))
    ap.add_argument(
        "--cache", default=None, help="feature cache (default $SERTOOL_CACHE or ~/.cache/sertool)"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    X, y, folds = load(args.root, args.cache or str(default_cache_dir()), args.view)
    params = {"device": "cpu", "n_threads": args.threads, **json.loads(args.params)}
    rows = []
    for k in args.folds:
        f = folds[k]

        def sel(ix: np.ndarray) -> object:
            return X[ix] if isinstance(X, np.ndarray) else [X[i] for i in ix]

        est = HEADS[args.head][0](**params)
        t0 = time.perf_counter()
        est.fit(
            sel(f["train"]),
            y[f["train"]],
            X_valid=sel(f["valid"]),
            y_valid=y[f["valid"]],
            sample_weight=compute_sample_weight("balanced", y[f["train"]]),
        )
        row = {
            "fold": k,
            "valid_ua": est.history_[est.best_epoch_ - 1]["valid_ua"],
            "best_epoch": est.best_epoch_,
            "epochs": est.n_iter_,
            "fit_s": time.perf_counter() - t0,
        }
        if args.test:
            row["test_ua"] = balanced_accuracy_score(y[f["test"]], est.predict(sel(f["test"])))
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "head": args.head,
        "view": args.view,
        "params": json.loads(args.params),
        "valid_ua": round(float(np.mean([r["valid_ua"] for r in rows])), 4),
        "fit_s_per_fold": round(float(np.mean([r["fit_s"] for r in rows])), 1),
    }
    if args.test:
        summary["test_ua"] = round(float(np.mean([r["test_ua"] for r in rows])), 4)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
