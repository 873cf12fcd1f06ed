"""The main job on the built-in synthetic demo corpus: corpus -> manifest -> split -> features -> bench.

Everything it writes says it is synthetic: the numbers demonstrate that the pipeline runs, not findings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sertool.data.corpora.demo import generate_demo_corpus
from sertool.data.manifest import build_manifest, save_manifest, summarize, summary_text

__all__ = ["run_demo"]

log = logging.getLogger(__name__)

DEMO_BANNER = "SYNTHETIC DEMO: generated audio, not speech. These numbers only show that the pipeline runs."


DEMO_FEATURES = ("handcrafted94", "mfcc40")
DEMO_MODELS = "knn,logreg,svm,rf,xgb,lgbm,gmm,mlp_head,cnn_transformer"


def run_demo(
    out: str | Path = "demo",
    *,
    jobs: int = -1,
    seed: int = 0,
    bench: bool = True,
    features: tuple[str, ...] = DEMO_FEATURES,
    models: str = DEMO_MODELS,
) -> dict[str, Any]:
    """Run the demo pipeline into ``out``.

    Parameters
    ----------
    out : str or Path
        Output folder: ``corpus/`` (generated audio), ``cache/`` (manifest, features), ``results/``.
    jobs : int, optional
        Worker processes for feature extraction (-1: all cores).
    seed : int, optional
        Seed of the split and the models.
    bench : bool, optional
        Also extract features, train and score the models, and write the leaderboard (default).
    features, models
        What the bench part runs (models that cannot read a feature set are skipped for it).

    Returns
    -------
    dict
        ``manifest`` (summary), ``split`` (summary), ``text`` (printable report) and what later stages add.
    """
    from sertool.splits import make_split, split_summary

    out = Path(out)
    root = generate_demo_corpus(out / "corpus")
    built = build_manifest("demo", root, jobs=4)
    manifest = built.manifest
    save_manifest(manifest, out / "cache" / "demo" / "manifest.parquet")
    msum = summarize(manifest, built.skipped)
    split = make_split(manifest, "speaker-4fold", seed=seed)
    split_path = out / "results" / "demo" / split.id / "split.json"
    split.save(split_path)
    ssum = split_summary(split, manifest)
    text = [
        DEMO_BANNER,
        "",
        "== manifest",
        summary_text(msum),
        "",
        "== split",
        f"id {split.id} ({split.strategy}, seed {seed}), saved to {split_path}",
    ]
    for fold in ssum.get("folds", []):
        text.append("  " + ", ".join(f"{k}={v}" for k, v in fold.items() if not isinstance(v, list | dict)))
    result: dict[str, Any] = {"synthetic": True, "manifest": msum, "split": {"id": split.id, **ssum}}
    if bench:
        from sertool.bench.runner import run_bench

        report = run_bench(
            manifest,
            split,
            features=list(features),
            models=models,
            results_dir=out / "results",
            cache=out / "cache",
            seed=seed,
            jobs=jobs,
            device="cpu",
        )
        text += ["", "== features"]
        for ext in report.extraction:
            text.append(
                f"{ext.key}: {ext.n_total} clips ({ext.n_computed} computed, {ext.n_cached} cached, "
                f"{len(ext.skipped)} skipped) at {ext.clips_per_second:.1f} clips/s"
            )
        text += ["", "== bench", f"units: {report.counts}", ""]
        md = report.leaderboard.get("md")
        if md is not None:
            text.append(Path(md).read_text())
        files = [str(p) for k, p in report.leaderboard.items() if "/" not in k]
        text.append("leaderboard files: " + ", ".join(files))
        result["bench"] = {
            "units": report.counts,
            "leaderboard": {k: str(v) for k, v in report.leaderboard.items()},
        }
    result["text"] = "\n".join(text)
    return result
