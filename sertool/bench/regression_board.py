"""The leaderboard of a regression target (arousal, valence, dominance, ...): CCC first, then Pearson r, MAE, RMSE.

A split whose target is continuous (:func:`sertool.data.targets.task_of`) stores regression units: the unit
record holds ``task: "regression"`` and the metrics ``ccc, pearson, mae, rmse`` of its fold; the predictions
parquet holds ``y_true`` and ``y_pred`` as numbers. This module ranks its (features, model) entries:

Per entry
    ``ccc_mean ± ccc_std`` (and the same for ``pearson``, ``mae``, ``rmse``): mean and sample standard deviation
    over folds; entries are ranked by ``ccc_mean``. ``ccc_pooled``: CCC of all test predictions pooled over the
    folds, with a ``1 - alpha`` percentile bootstrap interval resampling whole test speakers
    (:func:`sertool.metrics_regression.ccc_speaker_ci`; "n/a" under 5 speakers).
Against the best entry
    ``p_vs_best``: a two-sided approximate-randomisation test of the difference in pooled CCC on the clips
    both entries predicted (:func:`sertool.metrics_regression.paired_ccc_test`; whole speakers swap together
    under speaker-independent protocols), ``p_vs_best_holm`` Holm-corrected over the entries.
Guard
    ``flagged``: the share of test clips the out-of-distribution guard flags; ``ccc_accepted``: pooled CCC on
    the others.

The files: ``leaderboard.csv``, ``leaderboard.md``, ``leaderboard.html`` (the table and a predicted-vs-true
scatter of the best entries, ``scatter.png``) and ``provenance.json``, beside the unit records, as for a
classification board (:mod:`sertool.bench.leaderboard`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sertool.exceptions import ParameterError, ResultsError

__all__ = ["REGRESSION_COLUMNS", "build_regression_board", "regression_predictions", "write_regression_board"]

log = logging.getLogger(__name__)

#: Columns of a regression board, in order.
REGRESSION_COLUMNS = [
    "rank", "features", "model", "folds", "complete",
    "ccc_mean", "ccc_std", "ccc_pooled", "ccc_ci_low", "ccc_ci_high", "n_speakers",
    "pearson_mean", "pearson_std", "mae_mean", "mae_std", "rmse_mean", "rmse_std",
    "p_vs_best", "p_vs_best_holm", "flagged", "ccc_accepted", "n",
    "fit_seconds", "corpus", "split_id", "protocol", "label_scheme",
]  # fmt: skip
#: Entries drawn in the scatter plot (every entry of a board up to this many, best first).
N_SCATTER = 24
_METRICS = ("ccc", "pearson", "mae", "rmse")


def regression_predictions(units: pd.DataFrame) -> pd.DataFrame:
    """The test predictions of one entry's units pooled over folds: ``utt_id, speaker, y_true, y_pred, fold``
    (and ``in_distribution`` when stored), sorted by fold then utt_id.

    Raises
    ------
    ResultsError
        A predictions file missing or without numeric ``y_true`` / ``y_pred``, or a clip tested twice.
    """
    from sertool.bench.leaderboard import _load_predictions

    return _load_predictions(units, numeric_targets=True)


def _fold_part(units: pd.DataFrame, expected: frozenset[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"folds": len(units), "complete": set(units["fold"].astype(int)) >= set(expected)}
    for key in _METRICS:
        values = units[key].astype(float)
        out[f"{key}_mean"] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    out["fit_seconds"] = float(units["fit_seconds"].sum())
    return out


def _pooled_part(pred: pd.DataFrame, *, n_boot: int, alpha: float, seed: int) -> dict[str, Any]:
    from sertool.metrics_regression import ccc, ccc_speaker_ci

    y, p = pred["y_true"].to_numpy(float), pred["y_pred"].to_numpy(float)
    low, high, n_spk = ccc_speaker_ci(y, p, pred["speaker"].to_numpy(), n_boot=n_boot, seed=seed, alpha=alpha)
    out: dict[str, Any] = {
        "ccc_pooled": ccc(y, p),
        "ccc_ci_low": low,
        "ccc_ci_high": high,
        "n_speakers": int(n_spk),
        "n": len(pred),
        "flagged": math.nan,
        "ccc_accepted": math.nan,
    }
    if "in_distribution" in pred.columns:
        ok = pred["in_distribution"].astype(bool).to_numpy()
        out["flagged"] = float(1.0 - ok.mean())
        if ok.sum() >= 3:
            out["ccc_accepted"] = ccc(y[ok], p[ok])
    return out


def _fill_p_vs_best(
    board: pd.DataFrame, pooled: dict[tuple[str, str], pd.DataFrame], split: Any, *, seed: int
) -> tuple[str, str]:
    """Set ``p_vs_best`` (paired randomisation test of each entry's pooled CCC against the first row's, on the
    clips both predicted) and ``p_vs_best_holm`` in place; returns the best entry."""
    from sertool.metrics import correct_pvalues
    from sertool.metrics_regression import paired_ccc_test

    board["p_vs_best"] = math.nan
    board["p_vs_best_holm"] = math.nan
    best = (board["features"].iloc[0], board["model"].iloc[0])
    raw: dict[int, float] = {}
    for i, (feat, model) in enumerate(zip(board["features"], board["model"], strict=True)):
        if i == 0:
            continue
        both = pooled[best].merge(
            pooled[(feat, model)], on="utt_id", suffixes=("_b", "_o"), validate="one_to_one"
        )
        if both.empty:
            continue
        if not np.allclose(both["y_true_b"], both["y_true_o"]):
            raise ResultsError(
                f"{split.where}: {best} and {(feat, model)} disagree on the true value of a clip"
            )
        raw[i] = paired_ccc_test(
            both["y_true_b"].to_numpy(float),
            both["y_pred_b"].to_numpy(float),
            both["y_pred_o"].to_numpy(float),
            seed=seed,
            groups=both["speaker_b"].to_numpy() if split.speaker_independent else None,
        )
    if raw:
        keys = sorted(raw)
        board.loc[keys, "p_vs_best"] = [raw[k] for k in keys]
        board.loc[keys, "p_vs_best_holm"] = correct_pvalues([raw[k] for k in keys], method="holm")
    return best


def build_regression_board(
    results: Any, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> pd.DataFrame:
    """Rank the entries of one regression split (see the module docstring).

    Parameters
    ----------
    results : sertool.bench.leaderboard.ResultSet
        Results of exactly one ``(corpus, split_id)`` whose units are regression units.
    n_boot : int
        Bootstrap resamples of the CCC interval.
    seed : int
        Seed of the bootstrap and of the randomisation tests.
    alpha : float
        ``1 - alpha`` is the coverage of the interval.

    Returns
    -------
    pandas.DataFrame
        :data:`REGRESSION_COLUMNS`, ranked by ``ccc_mean``; ``attrs`` holds ``corpus, split_id, protocol,
        label_scheme, target, speaker_independent, n_folds, n_boot, alpha, seed, best, task``.

    Raises
    ------
    ResultsError
        No units, units that are not regression units, or units of one split that disagree.
    """
    from sertool.bench.leaderboard import _split_facts
    from sertool.data.targets import target_of

    split = _split_facts(results)
    units = results.units
    if "task" not in units or (units["task"] != "regression").any():
        raise ResultsError(f"{split.where}: not a regression split (its units hold class labels)")
    pooled = {
        entry: regression_predictions(part) for entry, part in units.groupby(["features", "model"], sort=True)
    }
    rows = []
    for (feat, model), part in units.groupby(["features", "model"], sort=True):
        rows.append(
            {
                "features": feat,
                "model": model,
                **_fold_part(part, split.expected_folds),
                **_pooled_part(pooled[(feat, model)], n_boot=n_boot, alpha=alpha, seed=seed),
                "corpus": split.corpus,
                "split_id": split.split_id,
                # the split's protocol; an entry normalised with its test speakers' statistics says so
                "protocol": str(part["protocol"].iloc[0]),
                "label_scheme": split.label_scheme,
            }
        )
    board = pd.DataFrame(rows)
    board = board.sort_values(
        ["complete", "ccc_mean", "features", "model"], ascending=[False, False, True, True], kind="mergesort"
    ).reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    best = _fill_p_vs_best(board, pooled, split, seed=seed)
    board = board[REGRESSION_COLUMNS]
    board.attrs.update(
        corpus=split.corpus,
        split_id=split.split_id,
        protocol=split.protocol,
        label_scheme=split.label_scheme,
        target=target_of(split.label_scheme),
        speaker_independent=split.speaker_independent,
        n_folds=len(split.expected_folds),
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        best=f"{best[0]} / {best[1]}",
        task="regression",
    )
    return board


def _display(board: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    from sertool.bench.leaderboard import MIN_CI_SPEAKERS, _num, _pm, _pval

    header = ["#", "features", "model", "folds", "CCC", "CCC pooled [CI]", "Pearson r", "MAE", "RMSE",
              "p vs best (Holm)", "flagged", "CCC accepted"]  # fmt: skip
    rows = []
    for r in board.itertuples(index=False):
        if _num(r.ccc_ci_low) == "" and r.n_speakers < MIN_CI_SPEAKERS:
            ci = f"n/a: {r.n_speakers} speaker{'' if r.n_speakers == 1 else 's'}"
        else:
            ci = f"[{_num(r.ccc_ci_low)}, {_num(r.ccc_ci_high)}]"
        rows.append(
            [
                str(r.rank), r.features + (" (transductive)" if "transductive" in str(r.protocol) else ""),
                r.model, f"{r.folds}" + ("" if r.complete else " (incomplete)"),
                _pm(r.ccc_mean, r.ccc_std), f"{_num(r.ccc_pooled)} {ci}", _pm(r.pearson_mean, r.pearson_std),
                _pm(r.mae_mean, r.mae_std), _pm(r.rmse_mean, r.rmse_std), _pval(r.p_vs_best_holm),
                "" if math.isnan(r.flagged) else f"{100 * r.flagged:.1f}%", _num(r.ccc_accepted),
            ]
        )  # fmt: skip
    right = [True, False, False, True, True, True, True, True, True, True, True, True]
    return header, rows, right


def _header(board: pd.DataFrame) -> str:
    a = board.attrs
    return (
        f"corpus: {a['corpus']} | target: {a['target']} (regression) | protocol: {a['protocol']} | "
        f"split: {a['split_id']} | folds: {a['n_folds']} | seed: {a['seed']}"
    )


def _notes(board: pd.DataFrame) -> list[str]:
    a = board.attrs
    level = round(100 * (1 - float(a["alpha"])))
    swap = "whole test speakers" if a["speaker_independent"] else "single clips"
    return [
        "CCC: Lin's concordance correlation coefficient (the primary metric; 1 = predictions equal the truth, "
        "0 = no agreement); entries are ranked by its mean over folds (± sample std).",
        f"CCC pooled: over all test clips of all folds, with a {level}% percentile bootstrap interval "
        f"resampling whole test speakers ({a['n_boot']} resamples; n/a under 5 speakers).",
        f"p vs best: two-sided approximate-randomisation test of the pooled CCC difference against the best "
        f"entry ({a['best']}), swapping the two entries' predictions of {swap}; Holm-corrected over the "
        "entries.",
        "flagged: share of test clips the out-of-distribution guard (fitted on each fold's training data) "
        "flags; CCC accepted: pooled CCC on the other clips.",
    ]


def _scatter(board: pd.DataFrame, pooled: dict[tuple[str, str], pd.DataFrame]) -> bytes:
    from sertool.bench.leaderboard import _new_figure, _num, _png_bytes

    top = board.head(N_SCATTER)
    n = len(top)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _new_figure(4.0 * cols, 3.8 * rows)
    values = np.concatenate(
        [pooled[(r.features, r.model)][["y_true", "y_pred"]].to_numpy().ravel() for r in top.itertuples()]
    )
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    for i, r in enumerate(top.itertuples(index=False)):
        ax = fig.add_subplot(rows, cols, i + 1)
        pred = pooled[(r.features, r.model)]
        ax.scatter(pred["y_true"], pred["y_pred"], s=6, alpha=0.35, color="#1f77b4", linewidths=0)
        ax.plot([lo, hi], [lo, hi], color="#888888", linewidth=1, linestyle="--")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"true {board.attrs['target']}")
        ax.set_ylabel("predicted")
        ax.set_title(f"#{r.rank} {r.features} / {r.model}\nCCC {_num(r.ccc_pooled)}", fontsize=9)
    fig.tight_layout()
    return _png_bytes(fig)


def write_regression_board(
    board: pd.DataFrame, results: Any, out_dir: str | Path, *, title: str = "", plots: bool = True
) -> dict[str, Path]:
    """Write a regression board's files (``leaderboard.{csv,md,html}``, ``provenance.json``, with plots
    ``scatter.png``) into ``out_dir``; returns them by kind."""
    from sertool.bench.leaderboard import (
        _banner,
        _csv_text,
        _is_synthetic,
        _md_table,
        _render_html,
        _table,
        board_provenance,
    )

    if board.empty:
        raise ParameterError("the leaderboard is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = board.attrs
    title = title or f"Leaderboard: {a['corpus']} / {a['split_id']}"
    written = {
        "csv": out / "leaderboard.csv",
        "md": out / "leaderboard.md",
        "html": out / "leaderboard.html",
        "provenance": out / "provenance.json",
    }
    written["csv"].write_bytes(_csv_text(board).encode("utf-8"))
    written["provenance"].write_text(
        json.dumps(board_provenance(board, results), indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    banner = _banner() if _is_synthetic(a["corpus"]) else ""
    md = [f"# {title}", "", _header(board), ""]
    if banner:
        md += [banner, ""]
    md += [_md_table(*_display(board)), *[f"- {n}" for n in _notes(board)], ""]
    written["md"].write_text("\n".join(md), encoding="utf-8")
    images: list[tuple[str, bytes]] = []
    if plots:
        pooled = {
            (f, m): regression_predictions(results.select(features=f, model=m).units)
            for f, m in zip(board["features"].head(N_SCATTER), board["model"].head(N_SCATTER), strict=True)
        }
        png = _scatter(board, pooled)
        written["scatter"] = out / "scatter.png"
        written["scatter"].write_bytes(png)
        images.append(("predicted against true value, best entries", png))
    written["html"].write_text(
        _render_html(
            title=title,
            header_line=_header(board),
            banner=banner,
            tables=[_table("", _display(board))],
            images=images,
            notes=_notes(board),
        ),
        encoding="utf-8",
    )
    log.info("regression leaderboard of %s/%s written to %s", a["corpus"], a["split_id"], out)
    return written
