"""How often the out-of-distribution guard flags new speakers of the training corpus, and another corpus.

Issue targets (printed as rates; features must be cached, ``sertool features``):

(i)   RAVDESS speaker-6fold (seed 0): each fold's model (trained on the other folds, through ``run_bench``,
      which stores ``in_distribution`` per test clip) flags at most 5% of its held-out actors' clips (mean
      over folds; the worst fold is printed too), with UA on all held-out clips beside UA on the accepted ones;
(ii)  a RAVDESS model (``train_model`` on all utterances, guard read back from ``model.json``) flags the
      majority of TESS clips;
(iii) a TESS model flags the majority of RAVDESS clips;

for whisper-base@all + logreg and handcrafted94 + svm.

``--deploy-normalised`` measures instead what a speaker-normalised model gives in use: for each fold K of
RAVDESS speaker-6fold, ``sertool train --split speaker-6fold --fold K --normalize speaker`` (whisper-base@all +
logreg), then ``sertool predict DIR --normalize-by folder`` on a folder holding one sub-folder per held-out
actor (links to the original clips; features computed from the audio by the saved model, not read from the
cache), and UA over all held-out actors' clips (the bench's figure: 0.831 ± 0.054, fold mean).

Usage::

    .venv/bin/python benchmarks/bench_ood.py [--corpora ../shared/corpora] [--cache ~/.cache/sertool]
    .venv/bin/python benchmarks/bench_ood.py --deploy-normalised [--folds 0,1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sertool.bench.runner import run_bench, split_dir, unit_paths
from sertool.data.manifest import build_manifest
from sertool.deploy import load_model, train_model
from sertool.features.store import FeatureStore
from sertool.metrics import unweighted_accuracy
from sertool.splits import make_split
from sertool.util import cache_dir

REPO = Path(__file__).resolve().parents[1]
PAIRS = [("whisper-base@all", "logreg"), ("handcrafted94", "svm")]
log = logging.getLogger("bench_ood")


def _held_out_rates(
    manifest: pd.DataFrame, split: object, features: str, model: str, cache: Path, tmp: Path
) -> tuple[list[float], float, float, float]:
    """(flag rate per fold, UA on all held-out clips, UA on the accepted ones, their share), pooled over
    folds."""
    run_bench(
        manifest, split, features=[features], models=model, results_dir=tmp, cache=cache, render=False,
        extract=False, unit_jobs=1,
    )  # fmt: skip
    base = split_dir(tmp, manifest, split)
    preds = [pd.read_parquet(unit_paths(base, features, model, k)[1]) for k in range(len(split.folds))]
    rates = [float((~p["in_distribution"]).mean()) for p in preds]
    allp = pd.concat(preds)
    acc = allp["in_distribution"].to_numpy()
    ua_all = unweighted_accuracy(allp["y_true"].to_numpy(), allp["y_pred"].to_numpy())
    ua_acc = unweighted_accuracy(allp["y_true"].to_numpy()[acc], allp["y_pred"].to_numpy()[acc])
    return rates, ua_all, ua_acc, float(acc.mean())


def _cross_rate(
    train: pd.DataFrame, other: pd.DataFrame, features: str, model: str, cache: Path, tmp: Path
) -> tuple[float, int]:
    """Share of ``other``'s clips that a model trained on all of ``train`` flags (and the clips that get its
    constant far-away answer)."""
    out = train_model(train, features=features, model=model, out=tmp / f"{model}-{features}", cache=cache)
    trained = load_model(out, cache=cache)
    X = FeatureStore(cache).load(other, features).X
    pred = trained.predict(X)
    n_const = int(pred.constant.sum()) if pred.constant is not None else 0
    return float((~pred.in_distribution).mean()), n_const


def flag_rates(corpora: Path, cache: Path) -> None:
    """Print the three flag rates of each (features, model) pair."""
    ravdess = build_manifest("ravdess", corpora / "ravdess").manifest
    tess = build_manifest("tess", corpora / "tess").manifest
    split = make_split(ravdess, "speaker-6fold", seed=0)
    print(f"RAVDESS {len(ravdess)} clips, split {split.id}; TESS {len(tess)} clips")
    header = (
        f"{'features + model':30s} {'(i) held-out actors':>22s} {'(ii) RAVDESS->TESS':>19s} "
        f"{'(iii) TESS->RAVDESS':>20s}  UA all / accepted (share)   s"
    )
    print(header)
    for features, model in PAIRS:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            rates, ua_all, ua_acc, share = _held_out_rates(ravdess, split, features, model, cache, tmp)
            r_t, c_t = _cross_rate(ravdess, tess, features, model, cache, tmp / "r")
            t_r, c_r = _cross_rate(tess, ravdess, features, model, cache, tmp / "t")
        held = f"{np.mean(rates):.3f} (max {max(rates):.3f})"
        const = f" [{c_t}/{c_r} constant]" if c_t or c_r else ""
        print(
            f"{features + ' + ' + model:30s} {held:>22s} {r_t:>19.3f} {t_r:>20.3f}  "
            f"{ua_all:.3f} / {ua_acc:.3f} ({share:.3f}){const}  {time.perf_counter() - t0:5.0f}"
        )
        print(f"  per fold: {', '.join(f'{r:.3f}' for r in rates)}")


def deploy_normalised(corpora: Path, cache: Path, folds: list[int]) -> None:
    """Train a speaker-normalised model per fold and predict its held-out actors folder by folder (CLI)."""
    from sertool.cli import main as cli

    root = corpora / "ravdess"
    manifest = build_manifest("ravdess", root).manifest
    split = make_split(manifest, "speaker-6fold", seed=0)
    truth = dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["label"], strict=True))
    by_utt = manifest.set_index("utt_id")
    print(f"RAVDESS speaker-6fold {split.id}: whisper-base@all + logreg, --normalize speaker")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # the bench's own units (cached features) for the same folds: the reference, fold by fold
        run_bench(
            manifest, split, features=["whisper-base@all"], models="logreg", results_dir=tmp / "bench",
            cache=cache, render=False, extract=False, normalize="speaker", unit_jobs=1,
        )  # fmt: skip
        base = split_dir(tmp / "bench", manifest, split)
        for k in folds:
            t0 = time.perf_counter()
            model_dir, inputs, out = tmp / f"m{k}", tmp / f"in{k}", tmp / f"pred{k}.csv"
            train = ["train", "--corpus", "ravdess", "--root", str(root), "--features", "whisper-base@all",
                     "--model", "logreg", "--split", "speaker-6fold", "--seed", "0", "--fold", str(k),
                     "--normalize", "speaker", "--out", str(model_dir), "--cache", str(cache)]  # fmt: skip
            assert cli(train) == 0
            for u in split.folds[k].test:
                path = Path(by_utt.loc[u, "path"])
                (inputs / path.parent.name).mkdir(parents=True, exist_ok=True)
                (inputs / path.parent.name / path.name).symlink_to(path)
            predict = ["predict", str(inputs), "--model", str(model_dir), "--normalize-by", "folder",
                       "--out", str(out), "--cache", str(cache)]  # fmt: skip
            assert cli(predict) == 0
            df = pd.read_csv(out)
            df["y_true"] = df["path"].map(lambda p: truth[Path(p).name])
            ua = unweighted_accuracy(df["y_true"].to_numpy(), df["label"].to_numpy())
            stored = pd.read_parquet(unit_paths(base, "whisper-base@all~norm-speaker", "logreg", k)[1])
            names = [Path(by_utt.loc[u, "path"]).name for u in stored["utt_id"]]
            bench = pd.Series(stored["y_pred"].to_numpy(), index=names)
            same = float((bench.loc[[Path(p).name for p in df["path"]]].to_numpy() == df["label"]).mean())
            ua_bench = unweighted_accuracy(stored["y_true"].to_numpy(), stored["y_pred"].to_numpy())
            print(
                f"  fold {k}: {df['group'].nunique()} actor folders, {len(df)} clips, UA {ua:.3f} (bench unit "
                f"{ua_bench:.3f}, same label {same:.3f}), flagged {(~df['in_distribution']).mean():.3f}, "
                f"{time.perf_counter() - t0:.0f} s"
            )
            rows.append(df.assign(fold=k))
    allp = pd.concat(rows)
    per_fold = [
        unweighted_accuracy(d["y_true"].to_numpy(), d["label"].to_numpy()) for _, d in allp.groupby("fold")
    ]
    pooled = unweighted_accuracy(allp["y_true"].to_numpy(), allp["label"].to_numpy())
    print(f"UA over all held-out actors: {pooled:.3f} pooled; fold mean {np.mean(per_fold):.3f} ± "
          f"{np.std(per_fold, ddof=1) if len(per_fold) > 1 else 0:.3f} (bench: 0.831 ± 0.054)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", type=Path, default=REPO.parent / "shared" / "corpora")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache (default $SERTOOL_CACHE)")
    ap.add_argument("--deploy-normalised", action="store_true")
    ap.add_argument("--folds", default="0,1,2,3,4,5")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    cache = cache_dir(args.cache)
    if args.deploy_normalised:
        deploy_normalised(args.corpora, cache, [int(k) for k in args.folds.split(",")])
    else:
        flag_rates(args.corpora, cache)


if __name__ == "__main__":
    main()
