"""``sertool`` command line: a thin layer over the library.

Every subcommand parses arguments, calls one public function, and prints its result. Logging is set up here
only; progress bars are drawn here only. Expected failures (:class:`~sertool.exceptions.SertoolError`) print
one line and exit 2 (traceback with ``--debug``). Exit status 3 means the command finished but skipped some
inputs (listed in its report).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sertool.exceptions import SertoolError

log = logging.getLogger("sertool")

EXIT_OK, EXIT_ERROR, EXIT_SKIPPED = 0, 2, 3


# --------------------------------------------------------------------------------------------- helpers
def _add_corpus_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "--corpus",
        required=required,
        help="corpus adapter: ravdess, tess, cremad, savee, emodb, iemocap, shemo, csv, demo",
    )
    p.add_argument("--root", required=required, type=Path, help="corpus folder in its original layout")
    p.add_argument("--csv", type=Path, default=None, help="CSV (path,label[,speaker]) for --corpus csv")
    p.add_argument(
        "--label-map",
        default=None,
        help='JSON object mapping CSV labels to canonical ones, e.g. \'{"ang": "angry"}\' (--corpus csv)',
    )
    p.add_argument(
        "--corpus-params",
        default=None,
        help='JSON object of corpus-adapter arguments, e.g. \'{"split": "train"}\' (with several corpora: '
        "a table per corpus name)",
    )
    for column, default in (("audio", "audio"), ("label", "label"), ("speaker", "speaker")):
        p.add_argument(
            f"--{column}-column",
            default=None,
            help=f"--corpus hf: the dataset column holding the {column} (default {default!r})",
        )
    p.add_argument(
        "--scheme", default="native", help="label scheme: native, ser7, ser4, ser6 (default native)"
    )
    p.add_argument(
        "--target",
        default="emotion",
        help="what to predict: emotion (default) or a categorical manifest column, e.g. intensity (RAVDESS, "
        "CREMA-D) or gender",
    )


def _add_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="feature/manifest cache folder (default $SERTOOL_CACHE or ~/.cache/sertool)",
    )


def _manifest_from_args(args: argparse.Namespace, *, jobs: int = 4) -> Any:
    """Build the manifest of ``--corpus/--root``; comma-separated lists merge several corpora."""
    from sertool.bench.definition import build_corpora

    corpora = [c.strip() for c in str(args.corpus).split(",") if c.strip()]
    roots = [Path(r.strip()) for r in str(args.root).split(",") if r.strip()]
    if len(corpora) != len(roots):
        raise SertoolError(f"--corpus names {len(corpora)} corpora but --root gives {len(roots)} folders")
    label_map = getattr(args, "label_map", None)
    return build_corpora(
        corpora,
        roots,
        csv=getattr(args, "csv", None) or None,
        label_map=_json_arg(label_map, "--label-map") if label_map else None,
        corpus_params=_corpus_params(args, str(args.corpus)),
        jobs=jobs,
    )


def _corpus_params(args: argparse.Namespace, corpora: str) -> dict[str, Any] | None:
    """``--corpus-params`` with the ``--audio-column``/``--label-column``/``--speaker-column`` flags over it
    (the hf adapter's arguments; with several corpora they go to the ``hf`` one). None when none is given."""
    params = _json_arg(getattr(args, "corpus_params", None), "--corpus-params")
    columns = {
        f"{c}_column": getattr(args, f"{c}_column")
        for c in ("audio", "label", "speaker")
        if getattr(args, f"{c}_column", None) is not None
    }
    if columns:
        names = [c.strip().lower() for c in corpora.split(",") if c.strip()]
        if len(names) > 1:
            params["hf"] = {**params.get("hf", {}), **columns}
        else:
            params.update(columns)
    return params or None


def _schemed(manifest: Any, scheme: str, target: str | None = None) -> Any:
    """The manifest through its label scheme, then with ``label`` = ``target`` (:mod:`sertool.data.targets`)."""
    from sertool.data.labels import apply_scheme
    from sertool.data.targets import apply_target

    return apply_target(apply_scheme(manifest, scheme), target)


def _json_arg(text: str | None, flag: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SertoolError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SertoolError(f"{flag} must be a JSON object")
    return value


def _augment_arg(value: Any) -> Any:
    """``--augment``: a JSON object, comma-separated transform names, or ``none`` (``None``)."""
    if isinstance(value, str) and value.strip().lower() in ("", "none"):
        return None
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return _json_arg(value, "--augment")
    return value


def _split_from_args(args: argparse.Namespace, manifest: Any) -> Any:
    """The split of ``--split`` / ``--split-params`` / ``--seed`` / ``--valid-fraction`` (bench and train)."""
    from sertool.splits import make_split

    params = _json_arg(args.split_params, "--split-params")
    return make_split(manifest, args.split, seed=args.seed, valid_fraction=args.valid_fraction, **params)


def _progress(total: int, desc: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A tqdm bar on stderr (hidden when not a terminal); returns (update, close)."""
    from tqdm import tqdm

    # no monitor thread: extraction forks its workers only from a process without other Python threads
    tqdm.monitor_interval = 0
    bar = tqdm(total=total, desc=desc, unit="clip", disable=not sys.stderr.isatty(), leave=True)
    return bar.update, bar.close


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(str(obj).rstrip() + "\n")


# --------------------------------------------------------------------------------------------- commands
def cmd_manifest(args: argparse.Namespace) -> int:
    """Build, save and summarise a corpus manifest (every skipped file is listed, or, when there are many,
    written to ``<manifest>.skipped.csv``)."""
    from sertool.data.manifest import (
        SKIPPED_LISTED,
        default_manifest_path,
        save_manifest,
        summarize,
        summary_text,
        write_skipped_csv,
    )

    built = _manifest_from_args(args, jobs=args.jobs)
    manifest = _schemed(built.manifest, args.scheme) if args.scheme != "native" else built.manifest
    out = Path(args.out or default_manifest_path(built.manifest.attrs["corpus"], args.cache))
    save_manifest(manifest, out)
    summary = summarize(manifest, built.skipped)
    summary["label_scheme"] = manifest.attrs.get("label_scheme", "native-v1")
    summary["manifest_path"] = str(out)
    skipped_csv = None
    if len(built.skipped) > SKIPPED_LISTED:
        skipped_csv = out.with_name(f"{out.stem}.skipped.csv")
        write_skipped_csv([("manifest", s.path, s.reason) for s in built.skipped], skipped_csv)
        summary["skipped_csv"] = str(skipped_csv)
    text = summary_text(summary, skipped_csv) + f"\nwritten:       {out}"
    _print(summary if args.json else text, args.json)
    return EXIT_SKIPPED if built.skipped else EXIT_OK


def cmd_split(args: argparse.Namespace) -> int:
    """Create (or show) a saved split."""
    from sertool.splits import Split, make_split, split_summary

    built = _manifest_from_args(args)
    manifest = _schemed(built.manifest, args.scheme, args.target)
    params = _json_arg(args.split_params, "--split-params")
    taken = sorted({"seed", "valid_fraction"} & set(params))
    if taken:
        raise SertoolError(
            f"--split-params: give {taken[0]} as --{taken[0].replace('_', '-')}, not in the JSON"
        )
    if args.strategy.startswith("file:") and args.strategy.endswith(".json") and not params:
        split = Split.load(args.strategy[5:], manifest=manifest)
    else:
        split = make_split(
            manifest, args.strategy, seed=args.seed, valid_fraction=args.valid_fraction, **params
        )
    out = args.results / built.manifest.attrs["corpus"] / split.id / "split.json"
    if not out.exists():
        split.save(out)
    summary = {"split_id": split.id, "path": str(out), **split_summary(split, manifest)}
    _print(summary if args.json else _split_text(summary), args.json)
    return EXIT_OK


def _split_text(summary: dict[str, Any]) -> str:
    lines = [f"split id: {summary['split_id']}", f"saved:    {summary['path']}"]
    for k, v in summary.items():
        if k in ("split_id", "path", "folds"):
            continue
        lines.append(f"{k}: {v}")
    for fold in summary.get("folds", []):
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in fold.items() if not isinstance(v, list | dict)))
    return "\n".join(lines)


def cmd_features(args: argparse.Namespace) -> int:
    """Extract (or show the status of) cached features.

    Every skipped input (by the manifest scan or an extractor) is listed with its reason, on stdout (stderr
    with ``--json``); beyond :data:`~sertool.data.manifest.SKIPPED_LISTED` per stage, their count and the
    CSV listing all of them, ``<cache>/<corpus>/skipped-features.csv``. The command returns only after the
    worker processes it started have exited.
    """
    from sertool.features.extract import wait_for_workers

    try:
        return _extract_features(args)
    finally:
        wait_for_workers()


def _extract_features(args: argparse.Namespace) -> int:
    """:func:`cmd_features` without its clean-up."""
    from sertool.data.manifest import SKIPPED_LISTED, skipped_lines, write_skipped_csv
    from sertool.features import configured_extractor
    from sertool.features.extract import extract_features
    from sertool.features.store import FeatureStore

    store = FeatureStore(args.cache)
    if args.status:
        status = store.status()
        _print(status.to_dict(orient="records") if args.json else status.to_string(index=False), args.json)
        return EXIT_OK
    if not (args.corpus and args.root):
        raise SertoolError("features: --corpus and --root are required (or use --status)")
    built = _manifest_from_args(args)
    manifest = built.manifest
    eparams = _json_arg(args.extractor_params, "--extractor-params")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows: list[tuple[str, str, str]] = []  # (stage, path, reason) of every skipped input
    skipped_csv = store.root / str(manifest.attrs["corpus"]) / "skipped-features.csv"
    to_csv = False

    def say(line: str) -> None:
        if args.json:  # stdout carries the JSON only
            sys.stderr.write(line + "\n")
        else:
            _print(line, False)

    def report_skipped(stage: str, skipped: list[tuple[str, str]]) -> None:
        nonlocal to_csv
        rows.extend((stage, path, reason) for path, reason in skipped)
        to_csv |= len(skipped) > SKIPPED_LISTED
        if to_csv:  # rewritten after each stage, so a line never names a file not written yet
            write_skipped_csv(rows, skipped_csv)
        for line in skipped_lines(skipped, skipped_csv):
            say(line)

    if built.skipped:
        say(f"manifest: {len(built.skipped)} file(s) skipped")
        report_skipped("manifest", [(s.path, s.reason) for s in built.skipped])
    skipped_any = bool(built.skipped)
    reports = []
    for name in [e.strip() for e in args.extractors.split(",") if e.strip()]:
        extractor = configured_extractor(name, eparams.get(name), device=args.device, cache=store.root)
        update, close = _progress(len(manifest), name)
        try:
            report = extract_features(
                manifest,
                extractor,
                cache=store,
                jobs=args.jobs,
                scheduler=args.scheduler,
                progress=update,
                backend=args.backend,
            )
        finally:
            close()
        skipped_any |= bool(report.skipped)
        reports.append(report)
        if not args.json:
            _print(
                f"{name}: {report.n_total} clips ({report.n_cached} cached, {report.n_computed} computed, "
                f"{len(report.skipped)} skipped) in {report.seconds:.1f} s "
                f"({report.clips_per_second:.1f} clips/s); key {report.key}",
                False,
            )
        report_skipped(name, report.skipped)
    if args.json:
        _print([r.__dict__ for r in reports], True)
    return EXIT_SKIPPED if skipped_any else EXIT_OK


#: ``sertool bench`` flag (argparse dest) -> :class:`~sertool.bench.definition.Benchmark` field, for the flags
#: whose value maps over unchanged; the others are converted in :func:`_bench_definition`.
_BENCH_FLAGS: dict[str, str] = {
    "corpus": "corpora",
    "csv": "csv",
    "scheme": "scheme",
    "target": "target",
    "features": "features",
    "models": "models",
    "seed": "seed",
    "valid_fraction": "valid_fraction",
    "results": "results",
    "cache": "cache",
    "device": "device",
    "jobs": "jobs",
    "unit_jobs": "unit_jobs",
    "scheduler": "scheduler",
    "tune": "tune",
    "force": "force",
    "normalize": "normalize",
    "min_duration": "min_duration",
    "calibrate": "calibrate",
}


def _bench_definition(args: argparse.Namespace) -> Any:
    """The :class:`~sertool.bench.definition.Benchmark` of a ``bench`` command line: ``--config`` (or the
    defaults), with every flag given on the command line (not ``None``) over it."""
    from dataclasses import replace

    from sertool.bench.definition import Benchmark, SplitSpec

    bench = Benchmark.from_toml(args.config) if args.config is not None else Benchmark()
    changes: dict[str, Any] = {
        name: getattr(args, flag) for flag, name in _BENCH_FLAGS.items() if getattr(args, flag) is not None
    }
    if args.root is not None:
        changes["roots"] = str(args.root)  # comma-separated folders, one per corpus
    corpus_params = _corpus_params(args, args.corpus if args.corpus is not None else ",".join(bench.corpora))
    if corpus_params is not None:
        changes["corpus_params"] = {**bench.corpus_params, **corpus_params}
    for flag in ("label_map", "model_params", "extractor_params"):  # JSON objects
        if getattr(args, flag) is not None:
            changes[flag] = _json_arg(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.augment is not None:
        changes["augment"] = _augment_arg(args.augment)  # "none" given: no augmentation (the control)
    if args.split is not None:
        changes["splits"] = [SplitSpec(args.split, _json_arg(args.split_params, "--split-params"))]
    elif args.split_params is not None:  # the definition's splits, with these parameters added
        extra = _json_arg(args.split_params, "--split-params")
        changes["splits"] = [SplitSpec(s.strategy, {**s.params, **extra}) for s in bench.splits]
    return replace(bench, **changes) if changes else bench


def cmd_bench(args: argparse.Namespace) -> int:
    """Train and score every model on every feature view and fold of one saved split (or of each split a
    benchmark definition lists)."""
    from tqdm import tqdm

    from sertool.bench.definition import run_benchmark

    bench = _bench_definition(args)
    bar = tqdm(desc="bench", unit="unit", disable=not sys.stderr.isatty())

    def tick(unit: Any) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{unit.features} {unit.model} f{unit.fold} {unit.status}")

    try:
        reports = run_benchmark(bench, progress=tick)
    finally:
        bar.close()
    status = EXIT_OK
    summaries = []
    for report in reports:
        summaries.append(
            {
                "split_id": report.split_id,
                "results": str(report.results_dir),
                "units": report.counts,
                "leaderboard": {k: str(v) for k, v in report.leaderboard.items()},
            }
        )
        failed = [u for u in report.units if u.status == "failed"]
        if not args.json:
            md = report.leaderboard.get("md")
            _print(
                Path(md).read_text() if md and Path(md).exists() else json.dumps(summaries[-1], indent=2),
                False,
            )
            _print(f"units: {report.counts}; results in {report.results_dir}", False)
            for u in failed:
                _print(f"  FAILED {u.features} {u.model} fold {u.fold}: {u.reason}", False)
        summaries[-1]["skipped"] = _bench_skipped(report, args.json)
        if failed or any(r.skipped for r in report.extraction):
            status = EXIT_SKIPPED
    if args.json:
        _print(summaries[0] if len(summaries) == 1 else summaries, True)
    return status


def _bench_skipped(report: Any, as_json: bool) -> list[dict[str, str]]:
    """Print the clips a bench run's feature extraction skipped, each with its reason (on stderr with
    ``--json``), or, when there are many, their count and ``<results>/<corpus>/<split-id>/skipped.csv``,
    which lists them all; returns them as JSON rows."""
    from sertool.data.manifest import SKIPPED_LISTED, skipped_lines, write_skipped_csv

    rows = [(e.key, path, reason) for e in report.extraction for path, reason in e.skipped]
    csv_path = Path(report.results_dir) / "skipped.csv"
    if len(rows) > SKIPPED_LISTED:
        write_skipped_csv(rows, csv_path)
    out = sys.stderr if as_json else sys.stdout
    for e in report.extraction:
        if e.skipped:
            out.write(f"  {e.key}: {len(e.skipped)} clip(s) skipped\n")
            lines = skipped_lines(e.skipped, csv_path if len(rows) > SKIPPED_LISTED else None, indent="    ")
            out.write("".join(line + "\n" for line in lines))
    return [{"stage": stage, "path": path, "reason": reason} for stage, path, reason in rows]


def cmd_train(args: argparse.Namespace) -> int:
    """Fit one model on one feature view (all data, or a split's training part) and save it: every option
    that changes what a bench unit fits is accepted, so the saved model is the one a board measured."""
    from sertool.deploy import train_model
    from sertool.features import parse_view
    from sertool.models.registry import get_model

    get_model(args.model)  # a misspelt model fails before the corpus is scanned
    built = _manifest_from_args(args)
    manifest = _schemed(built.manifest, args.scheme, args.target)
    # the split exactly as `sertool bench` makes it, so the model links that run's leaderboard
    split = _split_from_args(args, manifest) if args.split else None
    out = train_model(
        manifest,
        features=args.features,
        model=args.model,
        out=args.out,
        split=split,
        fold=args.fold,
        seed=args.seed,
        cache=args.cache,
        device=args.device,
        # the bench's per-model / per-extractor JSON ({"svm": {...}}) or this model's / extractor's own
        model_params=_own_params(_json_arg(args.model_params, "--model-params"), args.model),
        extractor_params=_own_params(
            _json_arg(args.extractor_params, "--extractor-params"), parse_view(args.features).extractor
        ),
        results_dir=args.results,
        jobs=args.jobs,
        overwrite=args.overwrite,
        tune=args.tune,
        augment=_augment_arg(args.augment),
        normalize=args.normalize,
        min_duration=args.min_duration,
        calibrate=args.calibrate,
        onnx=not args.no_onnx,
    )
    card = json.loads((out / "model.json").read_text())
    summary = {"model": str(out), "trained_on": card["trained_on"], "features": card["features"]}
    _print(summary if args.json else f"saved {card['model']} on {card['entry']} to {out}", args.json)
    return EXIT_OK


def _own_params(params: dict[str, Any], name: str) -> dict[str, Any]:
    """``{"svm": {"C": 1}}`` (the bench's form, keyed by name) -> ``{"C": 1}``; a flat dict is kept."""
    if len(params) == 1 and name in params and isinstance(params[name], dict):
        return dict(params[name])
    return params


def cmd_predict(args: argparse.Namespace) -> int:
    """Label audio files (a folder of them, or a CSV listing them) with a saved model; every row says whether
    the model's out-of-distribution guard accepts it (``ood_score``, ``in_distribution``)."""
    import math

    from sertool.deploy import load_model, predict_files

    model = load_model(args.model, device=args.device, cache=args.cache, engine=args.engine)
    paths, groups = _predict_inputs(args)
    enroll = _audio_paths(Path(args.enroll), "--enroll") if args.enroll is not None else None
    update, close = _progress(len(paths), "predict")
    try:
        df, skipped = predict_files(
            model, paths, window=args.window, hop=args.hop, jobs=args.jobs, progress=update, groups=groups,
            enroll=enroll,
        )  # fmt: skip
    finally:
        close()
    if args.out is not None:
        df.to_csv(args.out, index=False)
    if args.json:
        records = [
            {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
            for r in df.to_dict(orient="records")
        ]
        _print({"predictions": records, "skipped": skipped}, True)
    elif args.out is None:
        sys.stdout.write(df.to_csv(index=False))
    for path, reason in skipped:
        sys.stderr.write(f"skipped {path}: {reason}\n")
    return EXIT_SKIPPED if skipped else EXIT_OK


def _audio_paths(target: Path, what: str) -> list[str]:
    """The audio file ``target``, or every audio file under the folder ``target`` (sorted)."""
    from sertool.data.audio import is_audio_file

    if target.is_dir():
        paths = sorted(str(p) for p in target.rglob("*") if p.is_file() and is_audio_file(p))
        if not paths:
            raise SertoolError(f"{what} {target}: no audio files found")
        return paths
    if target.exists():
        return [str(target)]
    raise SertoolError(f"{what} {target}: no such file or folder")


def _predict_inputs(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """The files ``sertool predict`` labels and, for a normalised model, the group of each: the folder a
    file lies in (``--normalize-by folder``) or a CSV column (``--speaker-column``)."""
    import pandas as pd

    target = Path(args.input)
    if target.suffix.lower() == ".csv" and target.is_file():
        table = pd.read_csv(target, dtype=str)
        if "path" not in table.columns:
            raise SertoolError(f"{target}: a CSV of inputs needs a 'path' column")
        paths = [str(p if Path(p).is_absolute() else target.parent / p) for p in table["path"]]
        if args.speaker_column is None:
            return paths, None
        if args.speaker_column not in table.columns:
            raise SertoolError(f"{target}: no column {args.speaker_column!r} (--speaker-column)")
        return paths, table[args.speaker_column].fillna("").astype(str).tolist()
    if args.speaker_column is not None:
        raise SertoolError(
            f"--speaker-column reads a CSV of inputs (path,{args.speaker_column}); {target} is not one"
        )
    paths = _audio_paths(target, "input")
    if args.normalize_by != "folder":
        return paths, None
    root = target if target.is_dir() else target.parent
    return paths, [Path(p).parent.relative_to(root).as_posix() for p in paths]


def cmd_export(args: argparse.Namespace) -> int:
    """Write a saved model as one ONNX graph (from the waveform where possible, else from its features)."""
    from sertool.export import export_onnx, load_onnx

    out = export_onnx(args.model, args.onnx, graph=args.graph, opset=args.opset, cache=args.cache)
    graph = load_onnx(out)
    info = {
        "onnx": str(out),
        "input": graph.input_kind,
        "classes": graph.classes,
        "feature_step": graph.metadata.get("sertool.feature_step", ""),
        "size_mb": round(out.stat().st_size / 1e6, 2),
    }
    text = f"wrote {out} ({info['size_mb']} MB): {info['input']} -> {', '.join(graph.classes)}"
    if graph.input_kind != "waveform":
        text += f"\ninput computed by sertool: {info['feature_step']}"
    _print(info if args.json else text, args.json)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a small local web page to try a saved model on uploaded or recorded audio."""
    from sertool.serve import serve

    serve(
        args.model, host=args.host, port=args.port, device=args.device, max_mb=args.max_mb, engine=args.engine
    )
    return EXIT_OK


def cmd_suite(args: argparse.Namespace) -> int:
    """Benchmark every corpus of a folder under its standard protocol (+ leave-one-corpus-out); one summary."""
    from sertool.bench.suite import LOCO_STRATEGY, PROTOCOLS, evaluate, find_corpora

    present, _ = find_corpora(args.corpora)
    lines = ["protocols (fixed in code):"] + [f"  {PROTOCOLS[c].text()}" for c in present]
    if len(present) > 1:
        lines.append(f"  {'+'.join(present)}: {LOCO_STRATEGY} on a shared label scheme ({args.scheme})")
    if not args.json:
        _print("\n".join(lines), False)
    from tqdm import tqdm

    bar = tqdm(desc="suite", unit="unit", disable=not sys.stderr.isatty())

    def tick(unit: Any) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{unit.features} {unit.model} f{unit.fold} {unit.status}")

    try:
        report = evaluate(
            args.corpora,
            features=args.features,
            models=args.models,
            results=args.results,
            seed=args.seed,
            cache=args.cache,
            device=args.device,
            scheme=args.scheme,
            jobs=args.jobs,
            force=args.force,
            model_params=_json_arg(args.model_params, "--model-params"),
            extractor_params=_json_arg(args.extractor_params, "--extractor-params"),
            progress=tick,
            unit_jobs=args.unit_jobs,
            scheduler=args.scheduler,
            calibrate=args.calibrate,
        )
    finally:
        bar.close()
    skipped = sum(r.skipped for r in report.corpora) + sum(
        len(e.skipped) for b in report.bench_reports.values() for e in b.extraction
    )
    if args.json:
        _print(
            {
                "suite_id": report.suite_id,
                "summary": {k: str(v) for k, v in report.files.items()},
                "units": report.counts,
                "corpora": {r.corpus: r.split_id for r in report.corpora},
                "leave_one_corpus_out": report.loco.split_id if report.loco else report.loco_note,
            },
            True,
        )
    else:
        _print(report.files["md"].read_text(), False)
        _print(f"units: {report.counts}; summary: {report.files['md']}", False)
        for u in report.failed:
            _print(f"  FAILED {u.features} {u.model} fold {u.fold}: {u.reason}", False)
    return EXIT_SKIPPED if report.failed or skipped else EXIT_OK


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Re-render leaderboards from stored results."""
    from sertool.bench.leaderboard import render_leaderboards

    paths = render_leaderboards(args.results, compare=args.compare)
    _print([str(p) for p in paths] if args.json else "\n".join(map(str, paths)), args.json)
    return EXIT_OK


def cmd_weights(args: argparse.Namespace) -> int:
    """List the Whisper weights available offline and where they come from."""
    from sertool.features.weights import list_weights

    infos = list_weights()
    rows = [i.__dict__ if hasattr(i, "__dict__") else dict(i) for i in infos]
    if args.json:
        _print(rows, True)
    else:
        for r in rows:
            _print("  ".join(f"{k}={v}" for k, v in r.items()), False)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the built-in synthetic demo corpus."""
    from sertool.demo import run_demo

    summary = run_demo(args.out, jobs=args.jobs)
    _print(summary if args.json else summary["text"], args.json)
    return EXIT_OK


# --------------------------------------------------------------------------------------------- parser
def _parser_manifest(sub: Any) -> None:
    """``sertool manifest``."""
    p = sub.add_parser("manifest", help="scan a corpus folder into a manifest and print its summary")
    _add_corpus_args(p)
    _add_cache_arg(p)
    p.add_argument(
        "--out", type=Path, default=None, help="manifest parquet (default <cache>/<corpus>/manifest.parquet)"
    )
    p.add_argument("--jobs", type=int, default=4, help="threads for header reading and hashing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_manifest)


def _parser_split(sub: Any) -> None:
    """``sertool split``."""
    p = sub.add_parser("split", help="create or show a saved split")
    _add_corpus_args(p)
    p.add_argument(
        "--strategy",
        default="speaker-6fold",
        help="random-holdout, random-<k>fold, speaker-<k>fold, loso, loso-session, cross-corpus, "
        "leave-one-corpus-out, file:PATH, or a plugin's strategy (default speaker-6fold)",
    )
    p.add_argument(
        "--split-params",
        default=None,
        help='JSON object of the strategy\'s parameters, e.g. \'{"train_corpus": "ravdess", "test_corpus": '
        '"tess"}\' (cross-corpus) or \'{"test_fraction": 0.1}\' (random-holdout)',
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="share of each training part kept for validation (by speaker where speaker-independent)",
    )
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_split)


def _parser_features(sub: Any) -> None:
    """``sertool features``."""
    p = sub.add_parser("features", help="extract features once and cache them")
    _add_corpus_args(p, required=False)
    _add_cache_arg(p)
    p.add_argument(
        "--extractors",
        default="handcrafted94",
        help="comma-separated, e.g. handcrafted94,mfcc40,whisper-base",
    )
    p.add_argument(
        "--jobs", type=int, default=-1, help="parallel jobs for CPU extractors (default: all cores)"
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "fork", "threads", "processes"],
        help="how --jobs runs CPU extractors (auto: forked workers on Linux where safe, else threads or processes)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--scheduler", default=None, help="Dask scheduler address to run extraction on a cluster")
    p.add_argument(
        "--extractor-params",
        default=None,
        help="JSON: per-extractor parameters, e.g. "
        '\'{"whisper-base": {"mode": "padded30", "frame_layers": [4, 6]}}\'',
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads for whisper/ssl extraction")
    p.add_argument("--status", action="store_true", help="show what is cached and exit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_features)


def _parser_bench(sub: Any) -> None:
    """``sertool bench``."""
    p = sub.add_parser("bench", help="train every model on every feature view and fold of a saved split")
    # every flag defaults to None (not given): the definition (--config) or Benchmark's default then holds
    _add_corpus_args(p, required=False)
    p.set_defaults(scheme=None, target=None)
    _add_cache_arg(p)
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="benchmark definition (TOML) giving any of these options; flags on the command line override it",
    )
    p.add_argument(
        "--features",
        default=None,
        help="comma-separated feature views, e.g. handcrafted94,whisper-base@all (default handcrafted94)",
    )
    p.add_argument(
        "--models", default=None, help="all, classic, neural, or comma-separated model names (default all)"
    )
    p.add_argument("--split", default=None, help="split strategy or file:PATH (default speaker-6fold)")
    p.add_argument(
        "--split-params", default=None, help="JSON of extra split parameters, e.g. '{\"test_fraction\": 0.1}'"
    )
    p.add_argument("--valid-fraction", type=float, default=None, help="(default 0.1)")
    p.add_argument("--seed", type=int, default=None, help="(default 0)")
    p.add_argument("--results", type=Path, default=None, help="results folder (default ./results)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="(default auto)")
    p.add_argument(
        "--jobs", type=int, default=None, help="processes for feature extraction (default: all cores)"
    )
    p.add_argument(
        "--unit-jobs",
        type=int,
        default=None,
        help="units fitted at once in worker processes (default -1: one per core; 1: in this process)",
    )
    p.add_argument("--scheduler", default=None, help="Dask scheduler address: fit the units on that cluster")
    p.add_argument(
        "--tune", action="store_true", default=None, help="grid-search hyper-parameters inside training folds"
    )
    p.add_argument("--force", action="store_true", default=None, help="redo finished units")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--model-params",
        default=None,
        help='JSON: per-model parameter overrides, e.g. \'{"svm": {"C": 1.0}}\'',
    )
    p.add_argument("--extractor-params", default=None, help="JSON: per-extractor parameters (see features)")
    p.add_argument(
        "--normalize",
        default=None,
        choices=["speaker", "corpus", "none"],
        help="z-score pooled features per speaker or per corpus with the group's own (label-free) statistics",
    )
    p.add_argument(
        "--min-duration",
        type=float,
        default=None,
        help="leave out clips shorter than this many seconds (the combined-corpus study: 1.0)",
    )
    p.add_argument(
        "--augment",
        default=None,
        help="augment training parts only: transform names (awgn, stretch, pitch, gain, noise) or JSON, e.g. "
        '\'{"transforms": ["stretch", "pitch", "gain", "noise"], "copies": 3, "balance": true}\'; none: off',
    )
    p.add_argument(
        "--calibrate",
        default=None,
        choices=["temperature", "none"],
        help="fit one temperature per fold on its validation part (classical models then fit on the training "
        "part only); entries <view>~cal-temp",
    )
    p.set_defaults(func=cmd_bench)


def _parser_train(sub: Any) -> None:
    """``sertool train``."""
    p = sub.add_parser("train", help="fit one model on one feature view and save it (no pickle)")
    _add_corpus_args(p)
    _add_cache_arg(p)
    p.add_argument("--features", required=True, help="feature view, e.g. handcrafted94 or whisper-base@all")
    p.add_argument("--model", required=True, help="registered model name, e.g. svm")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument(
        "--split", default=None, help="train on a split's training part: strategy or file:PATH (default: all)"
    )
    p.add_argument("--fold", type=int, default=0, help="fold of --split whose training part is used")
    p.add_argument("--split-params", default=None)
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=Path("results"), help="results root (leaderboard link)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--jobs", type=int, default=-1)
    p.add_argument("--model-params", default=None, help="JSON of model parameter overrides")
    p.add_argument("--extractor-params", default=None, help="JSON of the extractor's parameters")
    p.add_argument(
        "--tune", action="store_true", help="grid-search hyper-parameters inside the training data"
    )
    p.add_argument("--augment", default=None, help="augment the training data, as bench --augment")
    p.add_argument(
        "--normalize", default=None, choices=["speaker", "corpus"], help="as bench --normalize (recorded)"
    )
    p.add_argument("--min-duration", type=float, default=0.0, help="leave out shorter clips (seconds)")
    p.add_argument(
        "--calibrate",
        default=None,
        choices=["temperature"],
        help="as bench --calibrate: a temperature fitted on the validation part, recorded in model.json",
    )
    p.add_argument(
        "--no-onnx",
        action="store_true",
        help="do not write model.onnx (the classifier as an ONNX graph, checked against the estimator, that "
        "predict runs without scikit-learn; written by default when the onnx extra is installed)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)


def _parser_predict(sub: Any) -> None:
    """``sertool predict``."""
    p = sub.add_parser("predict", help="label audio files or a folder with a saved model")
    p.add_argument("input", help="an audio file, a folder of them, or a CSV with a 'path' column")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument(
        "--normalize-by",
        choices=["folder"],
        default=None,
        help="for a model trained with --normalize: each folder of inputs is one speaker (or recording "
        "condition), normalised with the statistics of its own clips",
    )
    norm.add_argument(
        "--speaker-column",
        default=None,
        help="for a model trained with --normalize: the column of the input CSV naming each clip's speaker",
    )
    norm.add_argument(
        "--enroll",
        default=None,
        help="for a model trained with --normalize: a folder of unlabelled clips of the inputs' speaker, used "
        "only for its statistics",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder from sertool train")
    p.add_argument("--window", type=float, default=None, help="segment long recordings: window seconds")
    p.add_argument("--hop", type=float, default=None, help="segment hop seconds (default: the window)")
    p.add_argument("--out", type=Path, default=None, help="write the predictions CSV here")
    p.add_argument("--jobs", type=int, default=-1)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    _add_engine_arg(p)
    _add_cache_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def _add_engine_arg(p: Any) -> None:
    p.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "onnx", "estimator"],
        help="what computes the probabilities: the model's checked model.onnx graph (no scikit-learn import), "
        "the fitted estimator, or auto (default: the graph when the model has one and onnxruntime is installed)",
    )


def _parser_export(sub: Any) -> None:
    """``sertool export``."""
    p = sub.add_parser("export", help="write a saved model as one ONNX graph (audio -> class probabilities)")
    p.add_argument("--model", required=True, type=Path, help="model folder from sertool train")
    p.add_argument("--onnx", required=True, type=Path, help="the .onnx file to write")
    p.add_argument(
        "--graph",
        default="auto",
        choices=["auto", "waveform", "features"],
        help="waveform: from 16 kHz samples (Whisper, mfcc40); features: the classifier from the model's "
        "input; auto (default): waveform where possible",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    _add_cache_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)


def _parser_serve(sub: Any) -> None:
    """``sertool serve``."""
    p = sub.add_parser("serve", help="a local web page to try a saved model")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--max-mb", type=float, default=20.0, help="largest upload accepted, in MB")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    _add_engine_arg(p)
    p.set_defaults(func=cmd_serve)


def _parser_suite(sub: Any) -> None:
    """``sertool suite``."""
    p = sub.add_parser(
        "suite", help="every corpus of a folder under its standard protocol, plus leave-one-corpus-out"
    )
    p.add_argument(
        "--corpora",
        required=True,
        type=Path,
        help="folder of corpus folders named after the adapters (ravdess/, tess/, cremad/, ...)",
    )
    _add_cache_arg(p)
    p.add_argument("--features", default="handcrafted94", help="comma-separated feature views")
    p.add_argument("--models", default="all", help="all, classic, neural, or comma-separated model names")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scheme",
        default="auto",
        help="shared label scheme of leave-one-corpus-out: auto (most shared classes of ser6, ser7, ser4) "
        "or a scheme name",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--unit-jobs", type=int, default=-1, help="units fitted at once (default -1: one per core)"
    )
    p.add_argument("--scheduler", default=None, help="Dask scheduler address: units run on that cluster")
    p.add_argument("--jobs", type=int, default=-1, help="processes for feature extraction")
    p.add_argument("--force", action="store_true", help="redo finished units")
    p.add_argument("--model-params", default=None, help="JSON: per-model parameter overrides")
    p.add_argument("--extractor-params", default=None, help="JSON: per-extractor parameters")
    p.add_argument(
        "--calibrate",
        default=None,
        choices=["temperature"],
        help="as bench --calibrate (every protocol must have a validation part: not TESS)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_suite)


def _parser_leaderboard(sub: Any) -> None:
    """``sertool leaderboard``."""
    p = sub.add_parser("leaderboard", help="re-render leaderboards from stored results")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--compare", action="store_true", help="also compare splits/corpora side by side")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_leaderboard)


def _parser_weights(sub: Any) -> None:
    """``sertool weights``."""
    p = sub.add_parser("weights", help="list Whisper weights available offline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_weights)


def _parser_demo(sub: Any) -> None:
    """``sertool demo``."""
    p = sub.add_parser("demo", help="run the main job on the built-in synthetic demo corpus")
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default ./demo)")
    p.add_argument("--jobs", type=int, default=-1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)


#: one function per subcommand, in the order ``sertool --help`` lists them
_PARSERS = (
    _parser_manifest,
    _parser_split,
    _parser_features,
    _parser_bench,
    _parser_train,
    _parser_predict,
    _parser_export,
    _parser_serve,
    _parser_suite,
    _parser_leaderboard,
    _parser_weights,
    _parser_demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``sertool`` argument parser."""
    from sertool import __version__

    parser = argparse.ArgumentParser(
        prog="sertool", description="Honest, fast speech emotion recognition benchmarks."
    )
    parser.add_argument("--version", action="version", version=f"sertool {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    for add in _PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sertool`` console script.

    Heavy packages (numpy, pandas, scikit-learn, librosa, torch) are imported by the commands that use them,
    not here. Library warnings raised while a command runs are reported once, when it ends, in sertool's
    words (:mod:`sertool.library_warnings`; extraction reports its own, per clip); ``serve`` leaves them to
    Python. Worker processes a command started for feature extraction or unit fitting have exited when
    this returns (resource trackers exit by themselves just after the process).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (
        logging.DEBUG if args.debug or args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from contextlib import nullcontext

    from sertool import library_warnings

    collect = args.command != "serve"
    try:
        with library_warnings.collecting() if collect else nullcontext([]) as warned:
            try:
                return int(args.func(args))
            finally:
                library_warnings.log_summary(warned, f"sertool {args.command}", log)
                _wait_for_workers()
    except SertoolError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"sertool {args.command}: error: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("sertool: interrupted\n")
        return 130


def _wait_for_workers() -> None:
    """Wait for the worker processes feature extraction (and unit fitting) left, if it ran. Resource-tracker
    processes are not workers: they exit by themselves when this process does, after cleaning up what it
    registered (stopping them earlier made joblib report its memory-mapped folders as leaked)."""
    extract = sys.modules.get("sertool.features.extract")
    if extract is not None:
        extract.wait_for_workers()


if __name__ == "__main__":
    sys.exit(main())
