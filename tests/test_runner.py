"""The bench runner: end to end on the demo corpus, resumable, deterministic, leakage-guarded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sertool.bench.runner import run_bench, unit_paths
from sertool.data.manifest import build_manifest
from sertool.exceptions import LeakageError
from sertool.splits import Fold, Split, make_split

MODELS = "logreg,knn,gnb"


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> pd.DataFrame:
    return build_manifest("demo", demo_root).manifest


@pytest.fixture(scope="module")
def split(demo: pd.DataFrame) -> Split:
    return make_split(demo, "speaker-4fold", seed=0)


def _run(manifest, split, tmp: Path, **kw):
    return run_bench(
        manifest,
        split,
        features=["handcrafted94"],
        models=kw.pop("models", MODELS),
        results_dir=tmp / "results",
        cache=tmp / "cache",
        jobs=1,
        **kw,
    )


def _without_timing(csv: Path) -> str:
    """The leaderboard CSV minus its wall-clock column (the only one that differs between fresh runs)."""
    return pd.read_csv(csv).drop(columns=["fit_seconds"]).to_csv(index=False)


def test_bench_end_to_end_writes_units_and_leaderboard(demo, split, tmp_path):
    report = _run(demo, split, tmp_path)
    assert report.counts == {"done": 3 * 4}
    base = tmp_path / "results" / "demo" / split.id
    assert (base / "split.json").exists()
    meta = json.loads(unit_paths(base, "handcrafted94", "logreg", 0)[0].read_text())
    # provenance and protocol are recorded with every unit
    for key in ("manifest_hash", "split_id", "feature_key", "label_scheme", "seed", "device", "fit_seconds"):
        assert key in meta
    assert meta["protocol"] == "speaker-independent"
    assert meta["provenance"]["packages"]["scikit-learn"]
    assert meta["classes"] == ["neutral", "happy", "sad", "angry"]
    pred = pd.read_parquet(unit_paths(base, "handcrafted94", "logreg", 0)[1])
    assert set(pred["utt_id"]) == set(split.folds[0].test)
    proba = pred.filter(like="proba__")
    assert abs(proba.sum(axis=1) - 1).max() < 1e-5
    # each probability column is its class's: the most probable column is the prediction (the codes are the
    # sorted class names, the columns are in canonical order: they once disagreed)
    assert list(proba.columns) == [f"proba__{c}" for c in meta["classes"]]
    assert (proba.idxmax(axis=1).str.removeprefix("proba__") == pred["y_pred"]).all()
    # the fold metrics equal a recomputation from the stored predictions
    assert meta["metrics"]["wa"] == pytest.approx((pred["y_true"] == pred["y_pred"]).mean())
    board = pd.read_csv(report.leaderboard["csv"])
    assert list(board["model"])[:1] and set(board["model"]) == set(MODELS.split(","))
    assert (board["folds"] == 4).all()
    # the synthetic corpus is learnable: the best entry is far above chance (0.25)
    assert board["ua_mean"].max() > 0.6


def test_rerun_skips_done_units_and_is_byte_identical(demo, split, tmp_path):
    first = _run(demo, split, tmp_path)
    csv1 = Path(first.leaderboard["csv"]).read_bytes()
    second = _run(demo, split, tmp_path)
    assert second.counts == {"cached": 12}
    assert Path(second.leaderboard["csv"]).read_bytes() == csv1
    # a fresh run in another folder (same seed) gives the same leaderboard, wall-clock timings aside
    third = _run(demo, split, tmp_path / "again")
    assert _without_timing(third.leaderboard["csv"]) == _without_timing(first.leaderboard["csv"])
    forced = _run(demo, split, tmp_path, force=True, models="gnb")
    assert forced.counts == {"done": 4}


def test_resume_after_kill_equals_uninterrupted(demo, split, tmp_path):
    """Kill -9 a bench process mid-run; the rerun completes and equals an uninterrupted run."""
    ref = _run(demo, split, tmp_path / "ref")
    work = tmp_path / "killed"
    script = f"""
import sys
from sertool.bench.runner import run_bench
from sertool.data.manifest import build_manifest
from sertool.splits import Split
m = build_manifest("demo", {str(demo.attrs["root"])!r}).manifest
s = Split.from_json(open({str(tmp_path / "split.json")!r}).read())
run_bench(m, s, features=["handcrafted94"], models={MODELS!r}, results_dir={str(work / "results")!r},
          cache={str(work / "cache")!r}, jobs=1, render=False)
"""
    split.save(tmp_path / "split.json")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": "0"})
    runs = work / "results" / "demo" / split.id / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(runs.glob("*/*/fold-*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(runs.glob("*/*/fold-*.json")))
    assert done_before < 12, "the run finished before it could be killed; the test proves nothing"
    resumed = _run(demo, split, work)
    assert resumed.counts.get("cached", 0) == done_before
    assert resumed.counts.get("done", 0) == 12 - done_before
    assert _without_timing(resumed.leaderboard["csv"]) == _without_timing(ref.leaderboard["csv"])
    assert not list(runs.rglob("*.tmp"))


def test_temporary_files_of_a_killed_writer_are_removed(demo, split, tmp_path):
    """A kill during a unit's atomic write leaves ``.fold-K.json.<pid>.tmp``; the run that redoes the unit
    removes it (it holds the unit's lock, so no live writer owns it)."""
    base = tmp_path / "results" / "demo" / split.id
    jpath, ppath = unit_paths(base, "handcrafted94", "gnb", 1)
    jpath.parent.mkdir(parents=True)
    stale = [jpath.with_name(f".{jpath.name}.999999.tmp"), ppath.with_name(f".{ppath.name}.999999.tmp")]
    for f in stale:
        f.write_bytes(b"half a file")
    report = _run(demo, split, tmp_path, models="gnb")
    assert report.counts == {"done": 4}
    assert not any(f.exists() for f in stale) and not list(base.rglob("*.tmp"))
    assert json.loads(jpath.read_text())["fold"] == 1


def test_leaky_split_is_refused_before_training(demo, split, tmp_path):
    fold = split.folds[0]
    leaky_train = (*fold.train, fold.test[0])
    bad = Split(
        strategy=split.strategy,
        params=split.params,
        seed=split.seed,
        group_column=split.group_column,
        speaker_independent=True,
        manifest_hash=split.manifest_hash,
        rows_hash=split.rows_hash,
        label_scheme=split.label_scheme,
        folds=(Fold(0, tuple(sorted(set(leaky_train))), fold.valid, fold.test), *split.folds[1:]),
    )
    with pytest.raises(LeakageError):
        _run(demo, bad, tmp_path)
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("fold-*.json"))


def test_frame_models_skipped_on_pooled_only_features(demo, split, tmp_path):
    report = _run(demo, split, tmp_path, models="logreg,cnn_transformer", render=False)
    statuses = {(u.model, u.status) for u in report.units}
    assert ("cnn_transformer", "skipped") in statuses
    assert report.counts["done"] == 4


def test_tuned_entries_are_named_apart(demo, split, tmp_path):
    plain = _run(demo, split, tmp_path, models="logreg", render=False)
    tuned = _run(demo, split, tmp_path, models="logreg", tune=True)
    assert {u.model for u in plain.units} == {"logreg"}
    assert {u.model for u in tuned.units} == {"logreg+tuned"} and tuned.counts == {"done": 4}
    base = tmp_path / "results" / "demo" / split.id
    meta = json.loads(unit_paths(base, "handcrafted94", "logreg+tuned", 0)[0].read_text())
    assert meta["tuned"] is True and "clf__C" in meta["best_params"]
    board = pd.read_csv(tuned.leaderboard["csv"])
    assert set(board["model"]) == {"logreg", "logreg+tuned"}


def test_group_selections_run_a_model_only_on_the_features_it_is_designed_for(
    demo, split, tmp_path, monkeypatch
):
    import dataclasses

    from sertool.models import registry

    registry.resolve_models("all")  # built-ins registered
    assert registry.MODELS["cnn_transformer"].features == ("mfcc40",)  # the MFCC design
    assert not registry.MODELS["cnn_transformer"].designed_for("whisper-base")
    assert registry.MODELS["ser_whisper"].designed_for("whisper-base")
    # pretend gnb were designed for Whisper features only
    monkeypatch.setitem(
        registry.MODELS, "gnb", dataclasses.replace(registry.MODELS["gnb"], features=("whisper-base",))
    )
    grouped = _run(demo, split, tmp_path / "a", models="classic", render=False)
    assert "gnb" not in {u.model for u in grouped.units} and "logreg" in {u.model for u in grouped.units}
    named = _run(demo, split, tmp_path / "b", models="logreg,gnb", render=False)
    assert {u.model for u in named.units if u.status == "done"} == {"logreg", "gnb"}  # named: it runs


def test_a_unit_of_other_model_parameters_is_redone_runtime_ones_are_not(demo, split, tmp_path, caplog):
    """A stored unit is reused only for the model it was computed with: other --model-params (fewer epochs,
    another width) redo it with a warning; device / thread settings and a grid search's choices do not."""
    few = {"mlp_head": {"max_epochs": 2}}
    first = _run(demo, split, tmp_path, models="mlp_head", model_params=few, render=False)
    assert first.counts == {"done": 4}
    again = _run(
        demo,
        split,
        tmp_path,
        models="mlp_head",
        model_params={"mlp_head": {"max_epochs": 2, "n_threads": 1}},
        render=False,
    )
    assert again.counts == {"cached": 4}
    caplog.clear()
    more = _run(
        demo, split, tmp_path, models="mlp_head", model_params={"mlp_head": {"max_epochs": 3}}, render=False
    )
    assert more.counts == {"done": 4}
    assert "computed with other model parameters (max_epochs=2 now 3)" in caplog.text
    base = tmp_path / "results" / "demo" / split.id
    assert (
        json.loads(unit_paths(base, "handcrafted94", "mlp_head", 0)[0].read_text())["model_params"][
            "max_epochs"
        ]
        == 3
    )
    # a tuned pipeline: its stored parameters hold the grid's choice, which is not a change of model; a
    # parameter outside the grid is
    assert _run(demo, split, tmp_path, models="knn", tune=True, render=False).counts == {"done": 4}
    assert _run(demo, split, tmp_path, models="knn", tune=True, render=False).counts == {"cached": 4}
    assert _run(
        demo,
        split,
        tmp_path,
        models="knn",
        tune=True,
        model_params={"knn": {"clf__leaf_size": 10}},
        render=False,
    ).counts == {"done": 4}


def _stored_predictions(base: Path, entries: list[tuple[str, str]], folds: int) -> dict:
    return {
        (v, m, k): pd.read_parquet(unit_paths(base, v, m, k)[1]) for v, m in entries for k in range(folds)
    }


def test_units_in_worker_processes_store_what_one_process_stores(demo, split, tmp_path):
    """unit_jobs=2 fits units in two worker processes; every stored prediction and probability equals the
    one-job run's. mfcc40 feeds pooled-vector models and a frame head (attn_pool) in one run: each unit must
    get its own input kind."""
    kw = dict(features=["handcrafted94", "mfcc40"], models="logreg,gnb,mlp_head,attn_pool", cache=tmp_path / "c",
              jobs=1, model_params={"mlp_head": {"max_epochs": 3}, "attn_pool": {"max_epochs": 2}},
              render=False)  # fmt: skip
    one = run_bench(demo, split, results_dir=tmp_path / "one", **kw)
    two = run_bench(demo, split, results_dir=tmp_path / "two", unit_jobs=2, **kw)
    assert [(u.features, u.model, u.fold, u.status) for u in two.units] == [
        (u.features, u.model, u.fold, u.status) for u in one.units
    ]
    assert {u.status for u in two.units if u.features == "mfcc40"} == {"done"}  # handcrafted94: no frames
    entries = [("handcrafted94", m) for m in ("logreg", "gnb", "mlp_head")] + [("mfcc40", "logreg")]
    entries.append(("mfcc40", "attn_pool"))
    a = _stored_predictions(one.results_dir, entries, split.n_folds)
    b = _stored_predictions(two.results_dir, entries, split.n_folds)
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key])


@pytest.mark.slow
def test_units_on_a_dask_cluster_of_two_processes_store_what_a_local_run_stores(demo, split, tmp_path):
    distributed = pytest.importorskip("distributed")
    kw = dict(features=["handcrafted94"], models="logreg,gnb", cache=tmp_path / "c", jobs=1, render=False)
    local = run_bench(demo, split, results_dir=tmp_path / "local", **kw)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as lc:
        remote = run_bench(demo, split, results_dir=tmp_path / "dask", scheduler=lc.scheduler_address, **kw)
    assert {u.status for u in remote.units} == {"done"}
    entries = [("handcrafted94", "logreg"), ("handcrafted94", "gnb")]
    a = _stored_predictions(local.results_dir, entries, split.n_folds)
    b = _stored_predictions(remote.results_dir, entries, split.n_folds)
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key])


def test_unit_workers_start_after_extraction_workers_used_the_shared_pool(demo, split, tmp_path):
    """Extraction on loky processes, then units on joblib workers: both use joblib's reusable executor, so
    the second neither breaks nor leaves the first's workers in a state it cannot use."""
    from sertool.features import get_extractor
    from sertool.features.extract import extract_features

    extract_features(demo, get_extractor("mfcc40"), cache=tmp_path / "c", jobs=2, backend="processes")
    rep = run_bench(
        demo, split, features=["mfcc40"], models="logreg,gnb", results_dir=tmp_path / "r", cache=tmp_path / "c",
        jobs=2, unit_jobs=2, render=False,
    )  # fmt: skip
    assert {u.status for u in rep.units} == {"done"}
