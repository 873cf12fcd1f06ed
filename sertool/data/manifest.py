"""The manifest: one row per utterance, validated, hashed, saved as parquet.

Columns (always present, in this order): ``utt_id, path, rel_path, corpus, speaker, gender, label,
raw_label, duration_s, sample_rate, channels, sha1, dup_group``, then corpus-specific columns.
``dup_group`` is the audio SHA-1 for utterances whose bytes are identical to another's, else ``""``;
splits keep each group on one side.

The manifest hash ignores absolute paths, so the same corpus on another machine has the same hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from joblib import Parallel, delayed

from sertool.data.audio import audio_info, file_sha1
from sertool.data.corpora.base import SkippedFile, UtteranceRow, get_adapter
from sertool.data.labels import CANONICAL_LABELS
from sertool.exceptions import AudioError, CorpusError, ManifestError
from sertool.util import atomic_parquet, atomic_write_text, cache_dir

__all__ = [
    "MANIFEST_COLUMNS",
    "SKIPPED_LISTED",
    "ManifestBuild",
    "build_manifest",
    "default_manifest_path",
    "load_manifest",
    "manifest_hash",
    "merge_manifests",
    "save_manifest",
    "skipped_lines",
    "summarize",
    "validate_manifest",
    "write_skipped_csv",
]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "utt_id",
    "path",
    "rel_path",
    "corpus",
    "speaker",
    "gender",
    "label",
    "raw_label",
    "duration_s",
    "sample_rate",
    "channels",
    "sha1",
    "dup_group",
)


@dataclass
class ManifestBuild:
    """What :func:`build_manifest` returns: the table and the files it left out."""

    manifest: pd.DataFrame
    skipped: list[SkippedFile] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """See :func:`summarize`."""
        return summarize(self.manifest, self.skipped)


def _probe(row: UtteranceRow) -> tuple[UtteranceRow, dict[str, Any] | None, str | None]:
    try:
        info = audio_info(row.path)
        if info.frames == 0:
            raise AudioError(row.path, "empty: no samples")
        return (
            row,
            {
                "duration_s": info.duration_s,
                "sample_rate": info.sample_rate,
                "channels": info.channels,
                "sha1": file_sha1(row.path),
            },
            None,
        )
    except AudioError as err:
        return row, None, err.reason


def build_manifest(
    corpus: str,
    root: str | os.PathLike,
    *,
    jobs: int = 1,
    **adapter_kwargs: Any,
) -> ManifestBuild:
    """Scan a corpus folder and build its manifest.

    Parameters
    ----------
    corpus : str
        Adapter name (``"ravdess"``, ``"tess"``, ``"csv"``, ``"demo"``, ...).
    root : str or path-like
        The corpus folder in its original layout.
    jobs : int, optional
        Threads used to read headers and hash files.
    **adapter_kwargs
        Passed to the adapter (e.g. ``csv=`` for the generic CSV adapter).

    Returns
    -------
    ManifestBuild
        The validated manifest (sorted by ``utt_id``) and the skipped files with reasons.

    Raises
    ------
    CorpusError
        The root does not exist or holds no usable utterance.
    """
    adapter = get_adapter(corpus, **adapter_kwargs)
    root_path = adapter.check_root(root)
    rows, skipped = adapter.scan(root_path)
    skipped = list(skipped)
    probed = Parallel(n_jobs=max(1, jobs), prefer="threads")(delayed(_probe)(r) for r in rows)
    records: list[dict[str, Any]] = []
    for row, info, reason in probed:
        if info is None:
            skipped.append(SkippedFile(row.path, reason or "unreadable"))
            continue
        rec = {
            "utt_id": row.utt_id,
            "path": str(Path(row.path).resolve()),
            "rel_path": Path(row.path).resolve().relative_to(root_path).as_posix()
            if Path(row.path).resolve().is_relative_to(root_path)
            else str(row.path),
            "corpus": adapter.name,
            "speaker": row.speaker,
            "gender": row.gender,
            "label": row.label,
            "raw_label": row.raw_label,
            **info,
            **row.extra,
        }
        records.append(rec)
    if skipped:
        log.warning(
            "%s: skipped %d file(s) (ManifestBuild.skipped lists each with its reason; `sertool manifest` "
            "prints them), e.g. %s: %s",
            adapter.name,
            len(skipped),
            skipped[0].path,
            skipped[0].reason,
        )
    if not records:
        raise CorpusError(
            f"{adapter.name}: no usable utterance under {str(root_path)!r}"
            + (
                f" ({len(skipped)} files skipped; first: {skipped[0].path}: {skipped[0].reason})"
                if skipped
                else ""
            )
        )
    df = pd.DataFrame.from_records(records)
    counts = df["sha1"].map(df["sha1"].value_counts())
    df["dup_group"] = df["sha1"].where(counts > 1, "")
    extra_cols = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    df = df[list(MANIFEST_COLUMNS) + extra_cols].sort_values("utt_id", kind="stable").reset_index(drop=True)
    df["gender"] = df["gender"].astype("object")
    df.attrs = {"corpus": adapter.name, "root": str(root_path)}
    validate_manifest(df)
    return ManifestBuild(df, sorted(skipped, key=lambda s: s.path))


def merge_manifests(manifests: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate manifests of several corpora (utt_ids and speakers are corpus-prefixed, so unique).

    Columns one corpus lacks are filled with missing values; the result is validated and sorted.
    """
    df = pd.concat(manifests, ignore_index=True, sort=False)
    df = df.sort_values("utt_id", kind="stable").reset_index(drop=True)
    df.attrs = {
        "corpus": "+".join(sorted({m.attrs.get("corpus", "") for m in manifests})),
        "root": [m.attrs.get("root") for m in manifests],
    }
    validate_manifest(df)
    return df


def validate_manifest(df: pd.DataFrame) -> None:
    """Check a manifest's columns, ids and labels.

    Raises
    ------
    ManifestError
        Missing columns, empty table, duplicate or empty ``utt_id``, missing speakers or labels, or labels
        outside the canonical set.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest lacks columns: {', '.join(missing)}")
    if df.empty:
        raise ManifestError("manifest is empty")
    dup = df["utt_id"][df["utt_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"duplicate utt_id values, e.g. {dup.iloc[0]!r} ({len(dup)} in all)")
    for col in ("utt_id", "speaker", "label", "path"):
        bad = df[col].isna() | (df[col].astype(str) == "")
        if bad.any():
            raise ManifestError(f"{int(bad.sum())} rows have no {col} (first: row {int(bad.idxmax())})")
    unknown = sorted(set(df["label"]) - set(CANONICAL_LABELS))
    if unknown and df.attrs.get("label_scheme") in (None, "native-v1"):
        raise ManifestError(f"labels outside the canonical set: {unknown}")


def manifest_hash(df: pd.DataFrame) -> str:
    """Content hash of a manifest (utt_id, rel_path, corpus, speaker, label, sha1), machine-independent.

    Returns
    -------
    str
        16 hex digits.
    """
    cols = ["utt_id", "rel_path", "corpus", "speaker", "label", "sha1"]
    part = df[cols].sort_values("utt_id").astype(str)
    h = hashlib.sha256()
    for row in part.itertuples(index=False):
        h.update("\x1f".join(row).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def default_manifest_path(corpus: str, cache: str | os.PathLike | None = None) -> Path:
    """Where a corpus's manifest is kept by default: ``<cache>/<corpus>/manifest.parquet``.

    Parameters
    ----------
    corpus : str
        Corpus name.
    cache : path-like, optional
        Cache folder; default :func:`sertool.util.cache_dir` (``$SERTOOL_CACHE`` or ``~/.cache/sertool``,
        ``~`` and ``$VARS`` expanded), the folder features and converted weights go to.

    Returns
    -------
    Path
    """
    return cache_dir(cache) / str(corpus) / "manifest.parquet"


def save_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest to parquet atomically (:func:`sertool.util.atomic_parquet`: a failed write leaves
    neither a partial manifest nor a temporary file); attrs go into the file's metadata."""
    validate_manifest(df)
    out = df.copy()
    out.attrs = {**df.attrs, "manifest_hash": manifest_hash(df)}
    return atomic_parquet(out, path)


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a manifest written by :func:`save_manifest`."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no manifest at {str(path)!r}")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise ManifestError(f"{path}: not a readable parquet manifest ({exc})") from None
    validate_manifest(df)
    return df


def summarize(df: pd.DataFrame, skipped: list[SkippedFile] | None = None) -> dict[str, Any]:
    """Summary of a manifest: counts, hours, duplicates, skipped files.

    Returns
    -------
    dict
        ``corpus, utterances, speakers, labels (label -> count), total_hours, total_seconds,
        duration_s (min/mean/max), sample_rates, duplicate_groups, skipped (list of {path, reason}),
        manifest_hash`` and ``synthetic`` (True for the demo corpus).
    """
    skipped = skipped or []
    order = {lab: i for i, lab in enumerate(CANONICAL_LABELS)}
    labels = df["label"].value_counts()
    labels = {str(k): int(labels[k]) for k in sorted(labels.index, key=lambda k: (order.get(k, 99), k))}
    total = float(df["duration_s"].sum())
    dup_groups = int(df.loc[df["dup_group"] != "", "dup_group"].nunique())
    corpora = sorted(df["corpus"].unique())
    return {
        "corpus": corpora[0] if len(corpora) == 1 else corpora,
        "utterances": len(df),
        "speakers": int(df["speaker"].nunique()),
        "labels": labels,
        "total_seconds": round(total, 2),
        "total_hours": round(total / 3600, 4),
        "duration_s": {
            "min": round(float(df["duration_s"].min()), 3),
            "mean": round(float(df["duration_s"].mean()), 3),
            "max": round(float(df["duration_s"].max()), 3),
        },
        "sample_rates": sorted(int(s) for s in df["sample_rate"].unique()),
        "duplicate_groups": dup_groups,
        "skipped": [s.to_dict() for s in skipped],
        "manifest_hash": manifest_hash(df),
        "synthetic": bool((df["corpus"] == "demo").all()),
    }


#: Skipped inputs a report lists one per line; beyond this many it prints their count, the commonest reasons
#: and the CSV file where all are written (:func:`skipped_lines`).
SKIPPED_LISTED = 20


def _reason_kind(reason: str) -> str:
    """The general part of a skip reason (``"unreadable: Error opening ..."`` -> ``"unreadable"``)."""
    return reason.split(":", 1)[0].strip() or reason


def skipped_lines(
    skipped: Sequence[tuple[str, str]],
    csv_path: str | os.PathLike | None = None,
    *,
    limit: int = SKIPPED_LISTED,
    indent: str = "  ",
    label: str = "skipped ",
) -> list[str]:
    """Lines that report skipped inputs: each with its reason, or, beyond ``limit``, how many, why, and where
    the full list is.

    Parameters
    ----------
    skipped : sequence of (path, reason)
        The inputs left out.
    csv_path : path, optional
        The CSV that lists every one (:func:`write_skipped_csv`; the caller writes it). Without it, all are
        listed whatever their number.
    limit : int, optional
        Most inputs listed one per line (default :data:`SKIPPED_LISTED`).
    indent : str, optional
        Prefix of each line.
    label : str, optional
        Word before each listed path.

    Returns
    -------
    list of str
    """
    if csv_path is None or len(skipped) <= limit:
        return [f"{indent}{label}{path}: {reason}" for path, reason in skipped]
    kinds = Counter(_reason_kind(reason) for _, reason in skipped).most_common()
    why = ", ".join(f"{kind} {n}" for kind, n in kinds[:5]) + (", ..." if len(kinds) > 5 else "")
    return [
        f"{indent}{len(skipped)} skipped ({why}); every one, with its reason, in {csv_path}",
        *(f"{indent}  e.g. {path}: {reason}" for path, reason in skipped[:3]),
    ]


def write_skipped_csv(rows: Sequence[tuple[str, str, str]], path: str | os.PathLike) -> Path:
    """Write skipped inputs as CSV (``stage,path,reason``; the stage is what skipped it: ``manifest`` or an
    extractor), atomically.

    Parameters
    ----------
    rows : sequence of (stage, path, reason)
        The skipped inputs.
    path : path
        The CSV file (its folder is created).

    Returns
    -------
    Path
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["stage", "path", "reason"])
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def summary_text(summary: dict[str, Any], skipped_csv: str | os.PathLike | None = None) -> str:
    """Human-readable multi-line form of :func:`summarize`'s output.

    Parameters
    ----------
    summary : dict
        From :func:`summarize`.
    skipped_csv : path, optional
        Where every skipped file is listed (:func:`write_skipped_csv`): more than :data:`SKIPPED_LISTED` are
        then given as a count and that path (else all are listed).

    Returns
    -------
    str
    """
    lines = []
    if summary.get("synthetic"):
        lines.append("NOTE: synthetic demo corpus (generated audio, not speech)")
    lines += [
        f"corpus:        {summary['corpus']}",
        f"utterances:    {summary['utterances']}",
        f"speakers:      {summary['speakers']}",
        f"total:         {summary['total_hours']:.3f} h ({summary['total_seconds']:.1f} s)",
        f"duration (s):  min {summary['duration_s']['min']}, mean {summary['duration_s']['mean']}, "
        f"max {summary['duration_s']['max']}",
        f"sample rates:  {', '.join(map(str, summary['sample_rates']))}",
        f"duplicates:    {summary['duplicate_groups']} group(s) of byte-identical audio",
        "labels:",
    ]
    lines += [f"  {k:<11} {v}" for k, v in summary["labels"].items()]
    lines.append(f"skipped:       {len(summary['skipped'])} file(s)")
    skipped = [(s["path"], s["reason"]) for s in summary["skipped"]]
    lines += skipped_lines(skipped, skipped_csv, label="")
    lines.append(f"manifest hash: {summary['manifest_hash']}")
    return "\n".join(lines)


def summary_json(summary: dict[str, Any]) -> str:
    """JSON form of :func:`summarize`'s output."""
    return json.dumps(summary, indent=2)
