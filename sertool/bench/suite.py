"""The suite: every corpus present, each under its standard speaker-independent protocol, one summary.

A corpora folder holds corpus folders named after their adapters (``ravdess/``, ``cremad/``, ``tess/``,
``savee/``, ``emodb/``, ``iemocap/``, ``shemo/``: the layout of ``../shared/corpora``). :func:`evaluate` runs
:func:`~sertool.bench.runner.run_bench` on every corpus present under the protocol fixed for it in
:data:`PROTOCOLS`, then, when two corpora or more are present, once more on their merged manifest under
``leave-one-corpus-out`` with a label scheme they share, and writes::

    <results>/<corpus>/<split-id>/...                 each corpus's units and leaderboard (as ``bench`` writes)
    <results>/<corpus-a+corpus-b>/<split-id>/...      the leave-one-corpus-out run
    <results>/suite/<suite-id>/summary.{csv,md,html}  one row per (features, model)
    <results>/suite/<suite-id>/suite.json             protocols, corpora, split ids, features, models, seed

Protocol decisions (written here because they decide what the numbers mean):

- The protocols are fixed in code, never chosen per run: a suite number always means the same folds. RAVDESS
  6 folds of 4 actors and IEMOCAP leave-one-session-out follow EmoBox; IEMOCAP is scored on its usual four
  classes (``ser4``: happy includes excited), every other corpus on its own (native) classes.
- TESS has two speakers: leave-one-speaker-out trains on one speaker and has no validation part.
- Summary ``ua_<corpus>`` is the corpus leaderboard's ``ua_mean`` (mean of fold UAs); ``ua_ci_low_<corpus>``
  and ``ua_ci_high_<corpus>`` its speaker-cluster bootstrap interval of the pooled UA. With fewer than
  :data:`MIN_CI_SPEAKERS` test speakers the interval says little, and the Markdown and HTML say so instead of
  printing it. ``rank_<corpus>`` ranks the suite's entries within that corpus by ``ua_mean`` (ties broken by
  feature view then model, as the leaderboard does); ``mean_ua`` and ``mean_rank`` average over every corpus
  of the suite, and are left empty for an entry that lacks results on one (``n_corpora`` says how many it
  has): a mean over the corpora it happens to have would not be comparable.
- Leave-one-corpus-out: ``loco_ua_<corpus>`` is the UA of the fold whose test part is that corpus (trained on
  every other corpus), computed from the stored per-utterance predictions; rows whose label the shared scheme
  drops, or whose class not every corpus has, are left out of that run.
- Resumable: each corpus run is ``bench``, so a rerun skips every finished unit.
- ``calibrate="temperature"`` calibrates every entry on each fold's validation part (as ``bench
  --calibrate``); a corpus whose protocol has no validation part (TESS) cannot be calibrated, and the suite
  refuses to start, naming it, rather than leave that corpus out or report it uncalibrated.

The suite id is a content hash of the corpora (names and manifest hashes), features, models, seed,
protocols, the cross-corpus scheme, the model and extractor parameters and the calibration: the same inputs
give the same folder, on any machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sertool.bench.leaderboard import MIN_CI_SPEAKERS as _BOARD_MIN_CI_SPEAKERS
from sertool.bench.leaderboard import PAGE_CSS
from sertool.data.labels import LabelScheme, apply_scheme, get_scheme
from sertool.data.manifest import build_manifest, manifest_hash, merge_manifests
from sertool.exceptions import ParameterError, ResultsError
from sertool.util import atomic_write_text

__all__ = [
    "CROSS_SCHEMES",
    "LOCO_STRATEGY",
    "MIN_CI_SPEAKERS",
    "PROTOCOLS",
    "CorpusRun",
    "Protocol",
    "SuiteReport",
    "build_summary",
    "choose_scheme",
    "evaluate",
    "find_corpora",
    "summary_markdown",
    "write_summary",
]

log = logging.getLogger(__name__)

#: The split strategy of the cross-corpus part (one fold per corpus: test = that corpus, train = the others).
LOCO_STRATEGY = "leave-one-corpus-out"
#: Below this many test speakers a corpus's speaker-cluster interval is not shown (it would mislead).
MIN_CI_SPEAKERS = _BOARD_MIN_CI_SPEAKERS  # the leaderboard's own limit
#: Shared label schemes tried by ``scheme="auto"``, in order of preference when they keep as many classes.
CROSS_SCHEMES: tuple[str, ...] = ("ser6", "ser7", "ser4")
#: printf format of every float in ``summary.csv`` (fixed, so identical inputs give identical bytes).
FLOAT_FORMAT = "%.6g"


@dataclass(frozen=True)
class Protocol:
    """The standard evaluation protocol of one corpus.

    Attributes
    ----------
    corpus : str
        Adapter name (``"ravdess"``).
    strategy : str
        Split strategy given to :func:`sertool.splits.make_split` (``"speaker-6fold"``).
    description : str
        What it is, in words (printed with every suite run).
    scheme : str
        Label scheme the corpus is scored under (``"native"``: its own classes).
    valid_fraction : float
        Validation share of each training part (whole speakers).
    """

    corpus: str
    strategy: str
    description: str
    scheme: str = "native"
    valid_fraction: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what the suite id and ``suite.json`` record)."""
        return {
            "corpus": self.corpus,
            "strategy": self.strategy,
            "description": self.description,
            "scheme": self.scheme,
            "valid_fraction": self.valid_fraction,
        }

    def text(self) -> str:
        """One line: ``ravdess: 6 folds of 4 actors [speaker-6fold, native labels]``."""
        return f"{self.corpus}: {self.description} [{self.strategy}, {self.scheme} labels]"


#: The canonical speaker-independent protocol of every supported corpus, in the order suites run them.
PROTOCOLS: dict[str, Protocol] = {
    p.corpus: p
    for p in (
        Protocol("ravdess", "speaker-6fold", "6 folds of 4 actors (EmoBox)"),
        Protocol("cremad", "speaker-5fold", "speaker 5-fold (91 actors, 18-19 per fold)"),
        Protocol(
            "tess",
            "loso",
            "leave-one-speaker-out, 2 speakers (one training speaker per fold, no validation part)",
            valid_fraction=0.0,
        ),
        Protocol("savee", "loso", "leave-one-speaker-out, 4 speakers"),
        Protocol("emodb", "loso", "leave-one-speaker-out, 10 speakers"),
        Protocol(
            "iemocap",
            "loso-session",
            "leave-one-session-out, 5 sessions, 4 classes (happy includes excited)",
            scheme="ser4",
        ),
        Protocol("shemo", "speaker-5fold", "speaker 5-fold (87 speakers)"),
    )
}


@dataclass
class CorpusRun:
    """One corpus of a suite: where it was read, how it was split, what the bench run did.

    Attributes
    ----------
    corpus : str
        Adapter name, or ``"a+b"`` for the leave-one-corpus-out run.
    root : Path or None
        The corpus folder (None for the merged run).
    protocol : Protocol
    split_id : str
    manifest_hash : str
        Of the corpus's manifest as built (before its label scheme).
    n_folds, n_utterances, n_speakers, n_test_speakers : int
        Of the split and the manifest it was made from.
    classes : list of str
        The classes scored.
    skipped : int
        Files the manifest builder left out (with reasons in its log).
    report : BenchReport
        What :func:`~sertool.bench.runner.run_bench` returned.
    utt_corpus : dict of str to str
        Corpus of each utterance (leave-one-corpus-out run only: which corpus a fold tests).
    """

    corpus: str
    root: Path | None
    protocol: Protocol
    split_id: str
    manifest_hash: str
    n_folds: int
    n_utterances: int
    n_speakers: int
    n_test_speakers: int
    classes: list[str]
    skipped: int
    report: Any
    utt_corpus: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def split_dir(self) -> Path:
        """``<results>/<corpus>/<split-id>``: its units and leaderboard."""
        return Path(self.report.results_dir)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``suite.json``)."""
        return {
            "corpus": self.corpus,
            "root": None if self.root is None else str(self.root),
            "protocol": self.protocol.to_dict(),
            "split_id": self.split_id,
            "manifest_hash": self.manifest_hash,
            "folds": self.n_folds,
            "utterances": self.n_utterances,
            "speakers": self.n_speakers,
            "test_speakers": self.n_test_speakers,
            "classes": list(self.classes),
            "skipped_files": self.skipped,
            "results": str(self.split_dir),
        }


@dataclass
class SuiteReport:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    suite_id : str
    out_dir : Path
        ``<results>/suite/<suite-id>``.
    corpora : list of CorpusRun
        One per corpus present, in :data:`PROTOCOLS` order.
    loco : CorpusRun or None
        The leave-one-corpus-out run (None with fewer than two corpora or when it could not run).
    loco_note : str
        Why there is no leave-one-corpus-out run, when there is none.
    scheme : str
        Id of the shared label scheme of the leave-one-corpus-out run (``""`` without one).
    ignored : list of str
        Entries of the corpora folder that name no supported corpus.
    summary : pandas.DataFrame
        :func:`build_summary`'s table.
    files : dict of str to Path
        ``csv``, ``md``, ``html``, ``json``.
    """

    suite_id: str
    out_dir: Path
    corpora: list[CorpusRun] = field(default_factory=list)
    loco: CorpusRun | None = None
    loco_note: str = ""
    scheme: str = ""
    ignored: list[str] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def bench_reports(self) -> dict[str, Any]:
        """Every bench run's report by corpus name (``"ravdess+tess"`` for leave-one-corpus-out)."""
        runs = [*self.corpora, *([self.loco] if self.loco is not None else [])]
        return {r.corpus: r.report for r in runs}

    @property
    def counts(self) -> dict[str, int]:
        """Number of units per status over every bench run."""
        out: dict[str, int] = {}
        for report in self.bench_reports.values():
            for status, n in report.counts.items():
                out[status] = out.get(status, 0) + n
        return out

    @property
    def failed(self) -> list[Any]:
        """Units that failed, over every bench run."""
        return [u for r in self.bench_reports.values() for u in r.units if u.status == "failed"]


# ------------------------------------------------------------------------------------------- planning


def find_corpora(corpora_dir: str | os.PathLike[str]) -> tuple[dict[str, Path], list[str]]:
    """The corpus folders of a corpora folder.

    Parameters
    ----------
    corpora_dir : str or path-like
        A folder holding corpus folders named after their adapters (``ravdess/``, ``tess/``, ...).

    Returns
    -------
    present : dict of str to Path
        Adapter name -> folder, in :data:`PROTOCOLS` order (folder names match case-insensitively).
    ignored : list of str
        Other entries (hidden ones excepted), sorted.

    Raises
    ------
    ParameterError
        The folder does not exist or holds no supported corpus folder.
    """
    root = Path(corpora_dir).expanduser()
    if not root.is_dir():
        raise ParameterError(f"corpora folder {str(root)!r} does not exist or is not a folder")
    found: dict[str, Path] = {}
    ignored: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        name = entry.name.lower()
        if entry.is_dir() and name in PROTOCOLS and name not in found:
            found[name] = entry
        else:
            ignored.append(entry.name)
    if not found:
        raise ParameterError(
            f"{root}: no corpus folder found; expected folders named {', '.join(PROTOCOLS)}"
            + (f" (found: {', '.join(ignored)})" if ignored else "")
        )
    return {name: found[name] for name in PROTOCOLS if name in found}, ignored


def choose_scheme(
    manifests: Mapping[str, pd.DataFrame], scheme: str | LabelScheme = "auto"
) -> tuple[LabelScheme, list[str]]:
    """The shared label scheme of a cross-corpus run and the classes every corpus has under it.

    Parameters
    ----------
    manifests : mapping of str to pandas.DataFrame
        Corpus -> its manifest with canonical labels (as built, before any scheme).
    scheme : str or LabelScheme
        ``"auto"``: of :data:`CROSS_SCHEMES`, the one that keeps the most classes present in every corpus
        (ties: the first listed; RAVDESS + TESS get ``ser6``); or a scheme name.

    Returns
    -------
    scheme : LabelScheme
    classes : list of str
        Its classes present in every corpus, in canonical order.
    """
    candidates = list(CROSS_SCHEMES) if scheme == "auto" else [scheme]
    best: tuple[LabelScheme, list[str]] | None = None
    for name in candidates:
        s = get_scheme(name)
        shared: set[str] | None = None
        for m in manifests.values():
            mapped = {s.map(lab) for lab in set(m["label"].astype(str))} - {None}
            shared = mapped if shared is None else shared & mapped  # type: ignore[operator]
        classes = s.classes(sorted(shared or set()))
        if best is None or len(classes) > len(best[1]):
            best = (s, classes)
    assert best is not None  # at least one candidate
    return best


def _suite_id(
    corpora: Mapping[str, str],
    features: Sequence[str],
    models: Any,
    seed: int,
    protocols: Sequence[Protocol],
    scheme: str,
    extra: Mapping[str, Any],
) -> str:
    """``<corpus+corpus>-<10 hex digits>`` over everything that decides the suite's numbers."""
    content = {
        "corpora": sorted(corpora.items()),
        # order does not change a number: the same views and models in another order are the same suite
        "features": sorted(features),
        "models": models if isinstance(models, str) else sorted(models),
        "seed": seed,
        "protocols": [p.to_dict() for p in protocols],
        "cross_scheme": scheme,
        **extra,
    }
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return f"{'+'.join(sorted(corpora))}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _models_arg(models: str | Sequence[str]) -> str | list[str]:
    """``"all"``/``"classic"``/``"neural"`` as given, else a list of stripped names."""
    if isinstance(models, str):
        if models in ("all", "classic", "neural"):
            return models
        return [m.strip() for m in models.split(",") if m.strip()]
    return [str(m).strip() for m in models]


def _test_speakers(split: Any, manifest: pd.DataFrame) -> int:
    tested = {u for f in split.folds for u in f.test}
    return int(manifest.loc[manifest["utt_id"].isin(tested), "speaker"].nunique())


# ------------------------------------------------------------------------------------------- running


def evaluate(
    corpora_dir: str | os.PathLike[str],
    *,
    features: str | Sequence[str],
    models: str | Sequence[str] = "all",
    results: str | os.PathLike[str] = "results",
    seed: int = 0,
    cache: Any = None,
    device: str = "auto",
    scheme: str = "auto",
    jobs: int = -1,
    tune: bool = False,
    force: bool = False,
    model_params: dict[str, dict[str, Any]] | None = None,
    extractor_params: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[Any], None] | None = None,
    unit_jobs: int = -1,
    scheduler: str | None = None,
    calibrate: str | None = None,
) -> SuiteReport:
    """Benchmark every corpus of a folder under its standard protocol and write one summary.

    Parameters
    ----------
    corpora_dir : str or path-like
        Folder of corpus folders named after their adapters (``ravdess/``, ``tess/``, ...); other entries are
        ignored (and logged).
    features : str or sequence of str
        Feature views (``"handcrafted94,whisper-base@all"`` or a list), as for ``bench``.
    models : str or sequence of str
        ``"all"``, a family, or model names (comma-separated or a list).
    results : str or path-like
        Results root: corpus runs go to ``<results>/<corpus>/<split-id>/``, the summary to
        ``<results>/suite/<suite-id>/``.
    seed : int
        Seed of the splits, the models and the bootstrap.
    cache : FeatureStore, str or path-like, optional
        Feature cache (default ``$SERTOOL_CACHE`` or ``~/.cache/sertool``).
    device : {"auto", "cpu", "cuda"}
        Device of torch heads and GPU-capable extractors.
    scheme : str
        Shared label scheme of the leave-one-corpus-out run: ``"auto"`` (see :func:`choose_scheme`) or a
        scheme name (``"ser6"``, ``"ser7"``, ``"ser4"``).
    jobs : int
        Processes for feature extraction (-1: all cores); also threads for reading corpus headers.
    unit_jobs : int
        Units fitted at once in worker processes (-1: one per core; 1: in this process), as ``bench``.
    scheduler : str, optional
        Dask scheduler address: units and extraction run on that cluster, as ``bench --scheduler``.
    tune : bool
        Grid-search hyper-parameters inside training data (as ``bench --tune``).
    force : bool
        Redo finished units.
    model_params, extractor_params : dict, optional
        Per-model / per-extractor parameters, as for ``bench``.
    progress : callable, optional
        Called with each finished unit (:class:`~sertool.bench.runner.UnitResult`).
    calibrate : {"temperature"}, optional
        Temperature scaling fitted on each fold's validation part, as ``bench --calibrate``; entries are
        named ``<view>~cal-temp``.

    Returns
    -------
    SuiteReport

    Raises
    ------
    ParameterError
        No corpus folder, an unknown model or feature view, a corpus too small for its protocol, or
        calibration asked for with a corpus whose protocol has no validation part (TESS).
    """
    from sertool.calibration import check_calibrate
    from sertool.models.registry import resolve_models

    calibrate = check_calibrate(calibrate)
    feature_list = [f.strip() for f in features.split(",")] if isinstance(features, str) else list(features)
    feature_list = [f for f in feature_list if f]
    if not feature_list:
        raise ParameterError("features must name at least one feature view")
    models_arg = _models_arg(models)
    resolve_models(models_arg)  # a misspelt model fails before any corpus is scanned
    present, ignored = find_corpora(corpora_dir)
    for name in ignored:
        log.info("%s: not a supported corpus folder; ignored", Path(corpora_dir) / name)
    _check_calibration(present, calibrate)
    built = {c: _scan(c, root, jobs) for c, root in present.items()}
    hashes = {c: manifest_hash(b.manifest) for c, b in built.items()}
    extra = {"tune": tune, "model_params": model_params or {}, "extractor_params": extractor_params or {}}
    if calibrate is not None:  # only when set: the ids of uncalibrated suites stay what they were
        extra["calibrate"] = calibrate
    suite_id = _suite_id(
        hashes, feature_list, models_arg, seed, [PROTOCOLS[c] for c in present], scheme, extra
    )
    report = SuiteReport(suite_id, Path(results) / "suite" / suite_id, ignored=ignored)
    bench_kw: dict[str, Any] = {
        "features": feature_list, "models": models_arg, "results_dir": Path(results), "cache": cache,
        "seed": seed, "device": device, "tune": tune, "force": force, "jobs": jobs,
        "model_params": model_params, "extractor_params": extractor_params, "progress": progress,
        "unit_jobs": unit_jobs, "scheduler": scheduler, "calibrate": calibrate,
    }  # fmt: skip
    report.corpora = [_run_corpus(c, present[c], b, hashes[c], seed, bench_kw) for c, b in built.items()]
    if len(built) < 2:
        report.loco_note = "one corpus: no leave-one-corpus-out run"
    else:
        _run_loco(report, built, hashes, scheme, seed, bench_kw)
    report.summary = build_summary(report, seed=seed)
    report.files = write_summary(report, feature_list, models_arg, seed)
    log.info("suite %s: summary written to %s", suite_id, report.out_dir)
    return report


def _check_calibration(present: dict[str, Path], calibrate: str | None) -> None:
    """Refuse calibration when a present corpus's protocol has no validation part to fit it on."""
    no_valid = [c for c in present if PROTOCOLS[c].valid_fraction <= 0]
    if calibrate is not None and no_valid:
        raise ParameterError(
            f"calibrate={calibrate!r} fits each fold's temperature on its validation part, which the "
            f"protocol of {', '.join(no_valid)} does not have "
            f"({'; '.join(PROTOCOLS[c].text() for c in no_valid)}); run the suite without calibration or "
            "without that corpus"
        )


def _scan(corpus: str, root: Path, jobs: int) -> Any:
    """The corpus folder's manifest (its protocol logged first)."""
    log.info("suite: %s", PROTOCOLS[corpus].text())
    return build_manifest(corpus, root, jobs=max(1, jobs if jobs > 0 else os.cpu_count() or 1))


def _run_corpus(
    corpus: str, root: Path, built: Any, mhash: str, seed: int, bench_kw: dict[str, Any]
) -> CorpusRun:
    """One corpus under its canonical protocol: the split, then bench (resumable)."""
    from sertool.bench.runner import class_order, run_bench
    from sertool.splits import make_split

    protocol = PROTOCOLS[corpus]
    manifest = apply_scheme(built.manifest, protocol.scheme)
    try:
        split = make_split(manifest, protocol.strategy, seed=seed, valid_fraction=protocol.valid_fraction)
    except ParameterError as exc:
        raise ParameterError(f"{corpus} ({protocol.strategy}): {exc}") from exc
    bench = run_bench(manifest, split, **bench_kw)
    return CorpusRun(
        corpus=corpus,
        root=root,
        protocol=protocol,
        split_id=split.id,
        manifest_hash=mhash,
        n_folds=split.n_folds,
        n_utterances=len(manifest),
        n_speakers=int(manifest["speaker"].nunique()),
        n_test_speakers=_test_speakers(split, manifest),
        classes=class_order(manifest["label"].astype(str).tolist()),
        skipped=len(built.skipped),
        report=bench,
    )


def _run_loco(
    report: SuiteReport,
    built: Mapping[str, Any],
    hashes: Mapping[str, str],
    scheme: str,
    seed: int,
    bench_kw: dict[str, Any],
) -> None:
    """Leave-one-corpus-out on the merged manifests under the shared scheme; fills ``report.loco``."""
    from sertool.bench.runner import class_order, run_bench
    from sertool.splits import make_split

    raw = {c: b.manifest for c, b in built.items()}
    shared, classes = choose_scheme(raw, scheme)
    name = "+".join(sorted(raw))
    report.scheme = shared.id
    if len(classes) < 2:
        report.loco_note = (
            f"{shared.id} leaves {len(classes)} class(es) shared by {name}: no cross-corpus run"
        )
        log.warning("suite: %s", report.loco_note)
        return
    merged = apply_scheme(merge_manifests(list(raw.values())), shared)
    keep = merged["label"].isin(classes)
    if not keep.all():
        log.info(
            "suite: leave-one-corpus-out keeps the %d classes every corpus has (%s); %d clips of other classes "
            "left out",
            len(classes),
            ", ".join(classes),
            int((~keep).sum()),
        )
    attrs = dict(merged.attrs)
    merged = merged[keep].reset_index(drop=True)
    merged.attrs = attrs
    protocol = Protocol(
        name,
        LOCO_STRATEGY,
        f"leave-one-corpus-out: train on the other corpora, test on each; {shared.id}, "
        f"{len(classes)} shared classes",
        scheme=shared.name,
    )
    log.info("suite: %s", protocol.text())
    try:
        split = make_split(merged, LOCO_STRATEGY, seed=seed, valid_fraction=protocol.valid_fraction)
    except ParameterError as exc:
        report.loco_note = f"leave-one-corpus-out not run: {exc}"
        log.warning("suite: %s", report.loco_note)
        return
    bench = run_bench(merged, split, **bench_kw)
    report.loco = CorpusRun(
        corpus=name,
        root=None,
        protocol=protocol,
        split_id=split.id,
        manifest_hash=manifest_hash(merged),
        n_folds=split.n_folds,
        n_utterances=len(merged),
        n_speakers=int(merged["speaker"].nunique()),
        n_test_speakers=_test_speakers(split, merged),
        classes=class_order(merged["label"].astype(str).tolist()),
        skipped=0,
        report=bench,
        # which corpus each utterance belongs to, for the matrix (fold k tests one corpus)
        utt_corpus=dict(zip(merged["utt_id"].astype(str), merged["corpus"].astype(str), strict=True)),
    )


# ------------------------------------------------------------------------------------------- summary


def _entries(runs: Sequence[CorpusRun]) -> set[tuple[str, str]]:
    """(features, model) of the units a suite ran (finished now or before)."""
    return {(u.features, u.model) for r in runs for u in r.report.units if u.status in ("done", "cached")}


def _board(run: CorpusRun, entries: set[tuple[str, str]], seed: int) -> tuple[pd.DataFrame, Any] | None:
    """The leaderboard of one run restricted to the suite's entries (None when none has a result)."""
    from sertool.bench.leaderboard import ResultSet, build_leaderboard, collect_results

    results = collect_results(run.split_dir).select(corpus=run.corpus, split_id=run.split_id)
    units = results.units
    if units.empty:
        return None
    mask = [(f, m) in entries for f, m in zip(units["features"], units["model"], strict=True)]
    sub = ResultSet(results.root, units[np.asarray(mask, dtype=bool)].reset_index(drop=True))
    if sub.units.empty:
        return None
    return build_leaderboard(sub, seed=seed), sub


def _loco_matrix(run: CorpusRun, results: Any, corpora: Sequence[str]) -> pd.DataFrame:
    """UA per (entry, held-out corpus) from the pooled per-fold predictions of the leave-one-corpus-out run."""
    from sertool.metrics import unweighted_accuracy

    rows = []
    for features, model in results.entries():
        preds = results.predictions(features, model, corpus=run.corpus, split_id=run.split_id)
        row: dict[str, Any] = {"features": features, "model": model}
        for fold, part in preds.groupby("fold", sort=True):
            held = {run.utt_corpus.get(u, u.split("/", 1)[0]) for u in part["utt_id"]}
            if len(held) != 1:
                raise ResultsError(
                    f"{run.split_dir}: leave-one-corpus-out fold {fold} tests {len(held)} corpora "
                    f"({', '.join(sorted(held))}); expected one"
                )
            row[f"loco_ua_{held.pop()}"] = unweighted_accuracy(part["y_true"], part["y_pred"])
        rows.append(row)
    cols = [f"loco_ua_{c}" for c in corpora]
    out = pd.DataFrame(rows, columns=["features", "model", *cols]) if rows else pd.DataFrame(columns=cols)
    if rows:
        out["loco_mean_ua"] = out[cols].mean(axis=1, skipna=False)
    return out


def build_summary(report: SuiteReport, *, seed: int = 0) -> pd.DataFrame:
    """The suite's table: one row per (features, model).

    Parameters
    ----------
    report : SuiteReport
        With its corpus runs (and leave-one-corpus-out run) done.
    seed : int
        Seed of the leaderboards' bootstrap and permutation tests (that of the runs).

    Returns
    -------
    pandas.DataFrame
        ``features, model``, per corpus ``ua_<c>, ua_ci_low_<c>, ua_ci_high_<c>, rank_<c>``, then ``mean_ua,
        mean_rank`` (empty unless the entry has a result on every corpus), ``n_corpora, complete`` (every
        corpus, every fold), then (with a leave-one-corpus-out run) ``loco_ua_<c>`` per held-out
        corpus and ``loco_mean_ua``. Sorted by ``mean_ua`` descending, ties by features then model. ``attrs``
        holds ``boards`` (corpus -> its restricted leaderboard).
    """
    corpora = [r.corpus for r in report.corpora]
    entries = _entries(report.corpora)
    table = pd.DataFrame(sorted(entries), columns=["features", "model"])
    complete = pd.Series(True, index=table.index)
    boards: dict[str, pd.DataFrame] = {}
    for run in report.corpora:
        built = _board(run, entries, seed)
        cols = [f"ua_{run.corpus}", f"ua_ci_low_{run.corpus}", f"ua_ci_high_{run.corpus}"]
        if built is None:
            for c in [*cols, f"rank_{run.corpus}"]:
                table[c] = math.nan
            complete[:] = False
            continue
        board = built[0]
        boards[run.corpus] = board
        part = board[["features", "model", "ua_mean", "ua_ci_low", "ua_ci_high", "complete"]].copy()
        part["rank"] = np.arange(1, len(part) + 1)  # the board's order: ua_mean desc, features, model
        part = part.rename(
            columns={
                "ua_mean": cols[0],
                "ua_ci_low": cols[1],
                "ua_ci_high": cols[2],
                "rank": f"rank_{run.corpus}",
                "complete": "_complete",
            }
        )
        table = table.merge(part, on=["features", "model"], how="left", validate="one_to_one")
        complete &= table["_complete"].eq(True)
        table = table.drop(columns="_complete")
    ua_cols = [f"ua_{c}" for c in corpora]
    rank_cols = [f"rank_{c}" for c in corpora]
    # an entry without a result on some corpus gets no mean: it would not be comparable with the others
    table["mean_ua"] = table[ua_cols].mean(axis=1, skipna=False)
    table["mean_rank"] = table[rank_cols].astype(float).mean(axis=1, skipna=False)
    table["n_corpora"] = table[ua_cols].notna().sum(axis=1).astype(int)
    table["complete"] = complete & (table["n_corpora"] == len(corpora))
    for c in rank_cols:
        table[c] = table[c].astype("Int64")
    if report.loco is not None:
        built = _board(report.loco, entries, seed)
        if built is not None:
            boards[report.loco.corpus] = built[0]
            matrix = _loco_matrix(report.loco, built[1], corpora)
            table = table.merge(matrix, on=["features", "model"], how="left", validate="one_to_one")
        else:
            for c in corpora:
                table[f"loco_ua_{c}"] = math.nan
            table["loco_mean_ua"] = math.nan
    table = table.sort_values(
        ["mean_ua", "features", "model"], ascending=[False, True, True], na_position="last", kind="mergesort"
    ).reset_index(drop=True)
    table.attrs["boards"] = boards
    return table


# ------------------------------------------------------------------------------------------- writing


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    return f"{float(x):.{digits}f}"


def _link(out_dir: Path, target: Path) -> str:
    return Path(os.path.relpath(target, out_dir)).as_posix()


def _ua_cell(row: pd.Series, run: CorpusRun) -> str:
    """``0.512 [0.431, 0.598]``, or ``0.512 (2 test speakers: no CI)``; empty without a result."""
    c = run.corpus
    ua = row.get(f"ua_{c}")
    if ua is None or pd.isna(ua):
        return ""
    if run.n_test_speakers < MIN_CI_SPEAKERS:
        return f"{_num(ua)} ({run.n_test_speakers} test speakers: no CI)"
    return f"{_num(ua)} [{_num(row[f'ua_ci_low_{c}'])}, {_num(row[f'ua_ci_high_{c}'])}]"


@dataclass
class _Cell:
    text: str
    href: str = ""


def _tables(report: SuiteReport, fmt: str) -> list[dict[str, Any]]:
    """The summary's tables as ``{caption, header, right, rows: [[_Cell]]}``; links point at ``leaderboard.<fmt>``."""
    out_dir, table = report.out_dir, report.summary
    runs = report.corpora
    protocols = {
        "caption": "Protocols",
        "header": ["corpus", "protocol", "split", "labels", "classes", "folds", "test speakers", "clips"],
        "right": [False] * 5 + [True] * 3,
        "rows": [],
    }
    for run in [*runs, *([report.loco] if report.loco else [])]:
        protocols["rows"].append(
            [
                _Cell(run.corpus, _link(out_dir, run.split_dir / f"leaderboard.{fmt}")),
                _Cell(run.protocol.description),
                _Cell(run.split_id),
                _Cell(run.protocol.scheme),
                _Cell(str(len(run.classes))),
                _Cell(str(run.n_folds)),
                _Cell(str(run.n_test_speakers)),
                _Cell(str(run.n_utterances)),
            ]
        )
    main: dict[str, Any] = {
        "caption": "UA per corpus (mean over folds [95% speaker-cluster bootstrap CI of the pooled UA])",
        "header": ["#", "features", "model", *(r.corpus for r in runs), "mean UA", "mean rank"],
        "right": [True, False, False, *([True] * len(runs)), True, True],
        "rows": [],
    }
    for i, row in table.iterrows():
        cells = [_Cell(str(i + 1)), _Cell(str(row["features"])), _Cell(str(row["model"]))]
        for run in runs:
            cells.append(_Cell(_ua_cell(row, run), _link(out_dir, run.split_dir / f"leaderboard.{fmt}")))
        mean = _num(row["mean_ua"])
        if row["n_corpora"] < len(runs):
            mean = f"({row['n_corpora']} of {len(runs)} corpora)"
        elif not row["complete"]:
            mean += " (incomplete)"
        cells += [_Cell(mean), _Cell(_num(row["mean_rank"], 2))]
        main["rows"].append(cells)
    tables = [protocols, main]
    if report.loco is not None:
        loco = report.loco
        href = _link(out_dir, loco.split_dir / f"leaderboard.{fmt}")
        matrix: dict[str, Any] = {
            "caption": f"Leave-one-corpus-out UA ({loco.protocol.scheme}: {', '.join(loco.classes)}); "
            "column = held-out test corpus, trained on the others",
            "header": ["features", "model", *(f"test {r.corpus}" for r in runs), "mean"],
            "right": [False, False, *([True] * len(runs)), True],
            "rows": [],
        }
        for _, row in table.iterrows():
            cells = [_Cell(str(row["features"])), _Cell(str(row["model"]))]
            cells += [_Cell(_num(row.get(f"loco_ua_{r.corpus}")), href) for r in runs]
            cells.append(_Cell(_num(row.get("loco_mean_ua"))))
            matrix["rows"].append(cells)
        tables.append(matrix)
    return tables


def _notes(report: SuiteReport) -> list[str]:
    notes = [
        "UA = balanced accuracy (mean per-class recall). Each corpus is scored on its own classes under the "
        "protocol above; every cell links to that corpus's leaderboard.",
        "mean UA: mean of the corpus UAs; mean rank: mean of the entry's rank among this suite's entries within "
        "each corpus (1 = best).",
    ]
    few = [r for r in report.corpora if r.n_test_speakers < MIN_CI_SPEAKERS]
    for r in few:
        notes.append(
            f"{r.corpus}: {r.n_test_speakers} test speakers, too few for a speaker-cluster confidence interval "
            "(not computed: the leaderboard leaves it empty)."
        )
    if report.loco is None:
        notes.append(report.loco_note or "no leave-one-corpus-out run")
    return notes


def _md_table(tab: dict[str, Any]) -> str:
    def cell(c: _Cell) -> str:
        text = c.text.replace("|", "\\|").replace("\n", " ")
        return f"[{text}]({c.href})" if c.href and text else text

    lines = [
        "| " + " | ".join(str(h).replace("|", "\\|") for h in tab["header"]) + " |",
        "|" + "|".join("---:" if r else "---" for r in tab["right"]) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in tab["rows"]]
    return "\n".join(lines) + "\n"


def _header_line(report: SuiteReport, features: Sequence[str], models: Any, seed: int) -> str:
    names = ", ".join(r.corpus for r in report.corpora)
    mods = models if isinstance(models, str) else ",".join(models)
    return f"corpora: {names} | features: {', '.join(features)} | models: {mods} | seed: {seed}"


def summary_markdown(report: SuiteReport, features: Sequence[str], models: Any, seed: int) -> str:
    """The summary as Markdown (links to each corpus's ``leaderboard.md``)."""
    parts = [f"# Suite {report.suite_id}\n", f"{_header_line(report, features, models, seed)}\n"]
    for tab in _tables(report, "md"):
        parts += [f"## {tab['caption']}\n", _md_table(tab)]
    parts += ["## Notes\n", "".join(f"- {n}\n" for n in _notes(report))]
    return "\n".join(parts)


_HTML = (
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
"""
    + PAGE_CSS
    + """a { color: #0645ad; text-decoration: none; }
.meta { color: #555; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">{{ header_line }}</p>
{% for table in tables %}
<h2>{{ table.caption }}</h2>
<table>
<thead><tr>{% for h in table.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}<tr>
{% for c in row %}<td{% if table.right[loop.index0] %} class="num"{% endif %}>{% if c.href and c.text %}<a href="{{ c.href }}">{{ c.text }}</a>{% else %}{{ c.text }}{% endif %}</td>{% endfor %}
</tr>
{% endfor %}</tbody>
</table>
{% endfor %}
<h2>Notes</h2>
<ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>
</body>
</html>
"""
)


def _html(report: SuiteReport, features: Sequence[str], models: Any, seed: int) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(_HTML).render(
        title=f"Suite {report.suite_id}",
        header_line=_header_line(report, features, models, seed),
        tables=_tables(report, "html"),
        notes=_notes(report),
    )


def write_summary(report: SuiteReport, features: Sequence[str], models: Any, seed: int) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md``, ``summary.html`` and ``suite.json`` into ``report.out_dir``.

    Parameters
    ----------
    report : SuiteReport
        With ``summary`` built (:func:`build_summary`).
    features : sequence of str
        The feature views asked for.
    models : str or list of str
        The models asked for.
    seed : int
        The suite's seed.

    Returns
    -------
    dict of str to Path
        ``csv``, ``md``, ``html``, ``json``.
    """
    from sertool import __version__

    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / f"summary.{k}" for k in ("csv", "md", "html")}
    files["json"] = out / "suite.json"
    csv = report.summary.to_csv(index=False, float_format=FLOAT_FORMAT, na_rep="", lineterminator="\n")
    atomic_write_text(files["csv"], csv)
    atomic_write_text(files["md"], summary_markdown(report, features, models, seed))
    atomic_write_text(files["html"], _html(report, features, models, seed))
    meta = {
        "suite_id": report.suite_id,
        "sertool": __version__,
        "features": list(features),
        "models": models,
        "seed": seed,
        "corpora": [r.to_dict() for r in report.corpora],
        "protocols": {r.corpus: r.protocol.to_dict() for r in report.corpora},
        "leave_one_corpus_out": report.loco.to_dict() if report.loco is not None else None,
        "leave_one_corpus_out_note": report.loco_note,
        "cross_scheme": report.scheme,
        "ignored": report.ignored,
    }
    atomic_write_text(files["json"], json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    return files
