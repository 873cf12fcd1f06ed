"""``soft_vote``: a soft vote whose weights come from the fold's validation part, never from test labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from sertool.bench.runner import run_bench, unit_paths
from sertool.data.manifest import build_manifest
from sertool.models.ensemble import SoftVote, vote_weights
from sertool.splits import make_split


def test_weights_of_two_members_match_a_bounded_1d_search(rng: np.random.Generator) -> None:
    """Two members: the NLL is a function of one weight w in [0, 1], minimised here by a scalar search."""
    n, k = 300, 4
    y = rng.integers(0, k, n)
    a = rng.dirichlet(np.ones(k), n)
    b = rng.dirichlet(np.ones(k), n)
    b[np.arange(n), y] += 1.0  # b puts more mass on the truth: it should weigh more
    b /= b.sum(axis=1, keepdims=True)
    pa, pb = a[np.arange(n), y], b[np.arange(n), y]
    best = minimize_scalar(lambda w: -np.log(w * pa + (1 - w) * pb).mean(), bounds=(0, 1), method="bounded")
    w = vote_weights([a, b], y)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] == pytest.approx(best.x, abs=1e-3) and w[1] > w[0]


def test_a_perfect_member_takes_the_weight_and_twins_share_it() -> None:
    y = np.array([0, 1, 2, 1, 0])
    perfect = np.eye(3)[y] * 0.98 + 0.01
    uniform = np.full((5, 3), 1 / 3)
    assert vote_weights([perfect, uniform], y)[0] > 0.99
    assert vote_weights([uniform, uniform], y) == pytest.approx([0.5, 0.5])


def test_the_vote_is_the_weighted_mixture_of_its_members(rng: np.random.Generator) -> None:
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    Xv, yv = X[:40], y[:40]
    vote = SoftVote(members=("logreg", "gnb"), seed=0).fit(X[40:], y[40:], X_valid=Xv, y_valid=yv)
    mixture = sum(w * e.predict_proba(X) for w, e in zip(vote.weights_, vote.estimators_, strict=True))
    np.testing.assert_allclose(vote.predict_proba(X), mixture)
    assert (vote.predict(X) == vote.classes_[np.argmax(mixture, axis=1)]).all()
    equal = SoftVote(members=("logreg", "gnb"), weights="equal").fit(X[40:], y[40:], X_valid=Xv, y_valid=yv)
    assert equal.weights_ == pytest.approx([0.5, 0.5])


def test_the_bench_fits_weights_without_test_labels(demo_root: Path, tmp_path: Path) -> None:
    """Shuffling the labels of fold 0's test clips leaves fold 0's stored predictions unchanged (its members
    and weights never saw them), while soft_vote is scored as its own board entry."""
    manifest = build_manifest("demo", demo_root).manifest
    split = make_split(manifest, "speaker-4fold", seed=0)
    test0 = set(split.folds[0].test)
    shuffled = manifest.copy()
    rng = np.random.default_rng(1)
    for _, idx in shuffled[shuffled["utt_id"].isin(test0)].groupby("speaker").groups.items():
        shuffled.loc[idx, "label"] = rng.permutation(
            shuffled.loc[idx, "label"].to_numpy()
        )  # within a speaker
    split_b = make_split(shuffled, "speaker-4fold", seed=0)  # the split checks labels: its own, same folds
    assert split_b.folds == split.folds
    kw = dict(features=["handcrafted94"], models="soft_vote", cache=tmp_path / "c", jobs=1)
    a = run_bench(manifest, split, results_dir=tmp_path / "a", **kw)
    b = run_bench(shuffled, split_b, results_dir=tmp_path / "b", render=False, **kw)
    assert {u.status for u in a.units} == {"done"} == {u.status for u in b.units}
    pa = pd.read_parquet(unit_paths(a.results_dir, "handcrafted94", "soft_vote", 0)[1])
    pb = pd.read_parquet(unit_paths(b.results_dir, "handcrafted94", "soft_vote", 0)[1])
    proba = [c for c in pa.columns if c.startswith("proba__")]
    pd.testing.assert_frame_equal(pa[["utt_id", "y_pred", *proba]], pb[["utt_id", "y_pred", *proba]])
    assert (pa["y_true"] != pb["y_true"]).any()  # the shuffle did change the test labels
    board = pd.read_csv(a.results_dir / "leaderboard.csv")
    assert board["model"].tolist() == ["soft_vote"]


def test_a_trained_soft_vote_saves_loads_and_predicts_as_fitted(demo_root: Path, tmp_path: Path) -> None:
    from sertool.cli import main
    from sertool.deploy import load_model, predict_files

    out = tmp_path / "vote"
    args = ["train", "--corpus", "demo", "--root", str(demo_root), "--features", "handcrafted94"]
    args += ["--model", "soft_vote", "--out", str(out), "--cache", str(tmp_path / "c")]
    args += ["--split", "speaker-4fold", "--fold", "0", "--results", str(tmp_path / "r")]
    assert main(["bench", "--corpus", "demo", "--root", str(demo_root), "--features", "handcrafted94",
                 "--models", "soft_vote", "--split", "speaker-4fold", "--results", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "c"), "--jobs", "1"]) == 0  # fmt: skip
    assert main(args) == 0
    model = load_model(out)  # skops refuses any type it is not told to trust
    (split_dir,) = (tmp_path / "r" / "demo").iterdir()
    stored = pd.read_parquet(unit_paths(split_dir, "handcrafted94", "soft_vote", 0)[1])
    manifest = build_manifest("demo", demo_root).manifest.set_index("utt_id")
    paths = manifest.loc[stored["utt_id"], "path"].tolist()
    preds, skipped = predict_files(model, paths)
    assert not skipped
    assert preds["label"].tolist() == stored["y_pred"].tolist()  # the fold's model, as the bench stored it


def test_group_selections_leave_soft_vote_out() -> None:
    from sertool.bench.fitting import _choose_models
    from sertool.features import parse_view

    parts = [parse_view("handcrafted94")]
    for group in ("all", "classic"):
        chosen, _ = _choose_models(group, parts, ["pooled"], "handcrafted94")
        assert "soft_vote" not in [m.name for m in chosen] and "logreg" in [m.name for m in chosen]
    chosen, _ = _choose_models("soft_vote,logreg", parts, ["pooled"], "handcrafted94")
    assert [m.name for m in chosen] == ["soft_vote", "logreg"]
