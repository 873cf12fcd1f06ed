"""Generic CSV corpus: any folder of audio files plus a table ``path,label[,speaker][,gender][,...]``.

``path`` is relative to the corpus root (or absolute). ``label`` must be a canonical label
(:data:`~sertool.data.labels.CANONICAL_LABELS`, case-insensitive) or a key of ``label_map``. Optional columns:
``speaker`` (prefixed ``csv-``), ``gender`` (``female``/``male``/``f``/``m``, empty = unknown), ``utt_id``
(default: the path without its extension) and ``raw_label`` (default: the ``label`` cell). Every other column
is carried into the manifest, except those :func:`~sertool.data.manifest.build_manifest` computes itself
(``rel_path, corpus, duration_s, sample_rate, channels, sha1, dup_group``), which are ignored, so a saved
manifest exported to CSV can be read back.

A row whose file is missing, whose label is unknown, or whose speaker/gender cell is unusable is skipped
with a reason naming the CSV line. Without a ``speaker`` column every row gets speaker ``csv-unknown`` and a
warning says that speaker-independent splits are impossible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from sertool.data.audio import missing_file_reason
from sertool.data.corpora.base import CorpusAdapter, SkippedFile, UtteranceRow, register
from sertool.data.labels import CANONICAL_LABELS
from sertool.exceptions import CorpusError, ParameterError

__all__ = ["DEFAULT_CSV", "CsvAdapter"]

log = logging.getLogger(__name__)

#: The table read when no ``csv`` argument is given, relative to the corpus root.
DEFAULT_CSV = "labels.csv"
UNKNOWN_SPEAKER = "csv-unknown"
_KEY_COLUMNS = ("path", "label", "speaker", "gender", "utt_id", "raw_label")
#: Columns build_manifest computes; a CSV's own values for them are ignored.
_COMPUTED = ("rel_path", "corpus", "duration_s", "sample_rate", "channels", "sha1", "dup_group")
_GENDERS = {"female": "female", "f": "female", "male": "male", "m": "male", "": None}


@register
class CsvAdapter(CorpusAdapter):
    """Corpus described by a CSV table.

    Parameters
    ----------
    csv : str or path-like, optional
        The table. A relative path that does not exist from the working directory is looked up in the corpus
        root. Default: ``<root>/labels.csv``.
    label_map : mapping of str to str, optional
        Maps the table's label values to canonical labels (applied before the canonical check).
    sep : str, optional
        Field separator (default ``","``).

    Raises
    ------
    ParameterError
        A ``label_map`` value is not a canonical label.
    """

    name = "csv"
    description = "Any audio folder with a CSV table path,label[,speaker][,gender][,...]."

    def __init__(
        self,
        *,
        csv: str | os.PathLike | None = None,
        label_map: Mapping[str, str] | None = None,
        sep: str = ",",
    ) -> None:
        self.csv = csv
        self.label_map = dict(label_map or {})
        self.sep = sep
        bad = {k: v for k, v in self.label_map.items() if v not in CANONICAL_LABELS}
        if bad:
            raise ParameterError(
                f"label_map maps to non-canonical labels {bad}; canonical: {', '.join(CANONICAL_LABELS)}"
            )

    def table_path(self, root: Path) -> Path:
        """Where the table is for corpus ``root``.

        Raises
        ------
        CorpusError
            The table does not exist.
        """
        if self.csv is None:
            path = root / DEFAULT_CSV
        else:
            path = Path(self.csv).expanduser()
            if not path.is_absolute() and not path.exists() and (root / path).exists():
                path = root / path
        if not path.is_file():
            hint = "" if self.csv is not None else " (pass csv=PATH to name the table)"
            raise CorpusError(f"csv: label table {str(path)!r} does not exist{hint}")
        return path.resolve()

    def scan(self, root: Path) -> tuple[list[UtteranceRow], list[SkippedFile]]:
        """Read the table and turn each row into an utterance or a skipped file.

        Raises
        ------
        CorpusError
            The table is missing, unreadable, or lacks the ``path`` or ``label`` column.
        """
        table = self.table_path(root)
        try:
            df = pd.read_csv(table, sep=self.sep, dtype={c: str for c in _KEY_COLUMNS}, skipinitialspace=True)
        except Exception as exc:
            raise CorpusError(f"csv: cannot read label table {str(table)!r}: {exc}") from None
        df.columns = [str(c).strip() for c in df.columns]
        missing = [c for c in ("path", "label") if c not in df.columns]
        if missing:
            raise CorpusError(
                f"csv: label table {str(table)!r} lacks column(s) {', '.join(missing)}; "
                f"found {list(df.columns)}"
            )
        ignored = [c for c in df.columns if c in _COMPUTED]
        if ignored:
            log.info(
                "csv: %s: ignoring columns computed by the manifest builder: %s", table, ", ".join(ignored)
            )
        extras = [c for c in df.columns if c not in _KEY_COLUMNS and c not in _COMPUTED]
        has_speaker = "speaker" in df.columns
        if not has_speaker:
            log.warning(
                "csv: %s has no speaker column; every utterance gets speaker %r, so speaker-independent "
                "splits are impossible",
                table,
                UNKNOWN_SPEAKER,
            )
        for col in _KEY_COLUMNS:
            if col in df.columns:
                df[col] = df[col].fillna("").str.strip()

        rows: list[UtteranceRow] = []
        skipped: list[SkippedFile] = []
        first_line: dict[str, int] = {}
        for i, rec in enumerate(df.to_dict("records")):
            line = i + 2  # 1-based, after the header
            parsed = self._parse_row(rec, root, line, table.name, extras, has_speaker)
            if isinstance(parsed, SkippedFile):
                skipped.append(parsed)
                continue
            if parsed.utt_id in first_line:
                skipped.append(
                    SkippedFile(
                        parsed.path,
                        f"{table.name} line {line}: duplicate utt_id {parsed.utt_id!r} "
                        f"(first on line {first_line[parsed.utt_id]})",
                    )
                )
                continue
            first_line[parsed.utt_id] = line
            rows.append(parsed)
        return rows, skipped

    def _parse_row(
        self, rec: dict[str, Any], root: Path, line: int, table: str, extras: list[str], has_speaker: bool
    ) -> UtteranceRow | SkippedFile:
        where = f"{table} line {line}"
        rel = rec["path"]
        if not rel:
            return SkippedFile(f"{table}:{line}", f"{where}: empty path")
        path = Path(rel).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            return SkippedFile(str(path), f"{where}: {missing_file_reason(path)}")
        raw = rec["label"]
        label = self.label_map.get(raw, raw.lower())
        if label not in CANONICAL_LABELS:
            return SkippedFile(
                str(path), f"{where}: label {raw!r} is not a canonical label and not in label_map"
            )
        if has_speaker:
            if not rec["speaker"]:
                return SkippedFile(str(path), f"{where}: empty speaker")
            speaker = f"csv-{rec['speaker']}"
        else:
            speaker = UNKNOWN_SPEAKER
        g = rec.get("gender", "")
        if g.lower() not in _GENDERS:
            return SkippedFile(
                str(path), f"{where}: unknown gender {g!r} (expected female, male, f, m or empty)"
            )
        utt = rec.get("utt_id", "") or _default_utt_id(path, root)
        return UtteranceRow(
            utt_id=utt if utt.startswith("csv/") else f"csv/{utt}",
            path=str(path),
            speaker=speaker,
            label=label,
            raw_label=rec.get("raw_label", "") or raw,
            gender=_GENDERS[g.lower()],
            extra={c: _native(rec[c]) for c in extras},
        )


def _default_utt_id(path: Path, root: Path) -> str:
    """The path relative to the root (posix, without extension); outside the root, the absolute path."""
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        rel = path.resolve()
    return rel.with_suffix("").as_posix().lstrip("/")


def _native(value: Any) -> Any:
    """NaN cells become None; numpy scalars become Python scalars."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value
