"""A local Hugging Face ``datasets`` folder (the layout ``Dataset.save_to_disk`` writes) as a corpus.

The folder holds a ``Dataset`` or a ``DatasetDict`` (every split is read; the split name goes into the
``hf_split`` column and the utterance id). Columns, named by the adapter's arguments:

``audio`` (``audio_column``)
    An ``Audio`` column (or plain file paths). Audio is never decoded by ``datasets`` (no torchcodec needed):
    a row whose ``path`` names an existing file is used as it is; otherwise its embedded ``bytes`` are
    decoded with soundfile and written once to ``<root>/.sertool_audio/<split>/<index>-<sha1>.wav``, so the
    rest of sertool reads ordinary files.
``label`` (``label_column``)
    A canonical label (case-insensitive), a key of ``label_map``, or a ``ClassLabel`` integer (its name is
    used).
``speaker`` (``speaker_column``)
    Speaker id (prefixed ``hf-``). Without it every row gets ``hf-unknown`` and a warning says that
    speaker-independent splits are impossible.
``gender`` (optional, ``female``/``male``/``f``/``m``), ``utt_id`` (optional)
    As in the CSV adapter. Other scalar columns are carried into the manifest.

``datasets`` is imported only when a folder is scanned.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sertool.data.corpora.base import CorpusAdapter, SkippedFile, UtteranceRow, register
from sertool.data.labels import CANONICAL_LABELS
from sertool.exceptions import CorpusError, ParameterError

__all__ = ["AUDIO_CACHE", "HfAdapter"]

log = logging.getLogger(__name__)

#: Folder (under the dataset root) of the audio written from embedded bytes.
AUDIO_CACHE = ".sertool_audio"
UNKNOWN_SPEAKER = "hf-unknown"
_GENDERS = {"female": "female", "f": "female", "male": "male", "m": "male", "": None}
#: Columns build_manifest computes; a dataset's own values for them are not carried.
_COMPUTED = ("path", "rel_path", "corpus", "duration_s", "sample_rate", "channels", "sha1", "dup_group")


@register
class HfAdapter(CorpusAdapter):
    """Corpus saved with ``datasets.Dataset.save_to_disk`` (``--corpus hf --root DIR``).

    Parameters
    ----------
    audio_column, label_column, speaker_column : str, optional
        Column names (defaults ``"audio"``, ``"label"``, ``"speaker"``).
    label_map : mapping of str to str, optional
        Maps the dataset's label values (or ``ClassLabel`` names) to canonical labels.

    Raises
    ------
    ParameterError
        A ``label_map`` value is not a canonical label.
    """

    name = "hf"
    description = "A local Hugging Face datasets folder (save_to_disk) with audio, label[, speaker] columns."

    def __init__(
        self,
        *,
        audio_column: str = "audio",
        label_column: str = "label",
        speaker_column: str = "speaker",
        label_map: Mapping[str, str] | None = None,
    ) -> None:
        self.audio_column = audio_column
        self.label_column = label_column
        self.speaker_column = speaker_column
        self.label_map = {str(k): v for k, v in dict(label_map or {}).items()}
        bad = {k: v for k, v in self.label_map.items() if v not in CANONICAL_LABELS}
        if bad:
            raise ParameterError(
                f"label_map maps to non-canonical labels {bad}; canonical: {', '.join(CANONICAL_LABELS)}"
            )

    def scan(self, root: Path) -> tuple[list[UtteranceRow], list[SkippedFile]]:
        """Read every split of the saved dataset and turn each row into an utterance or a skipped one.

        Raises
        ------
        CorpusError
            ``datasets`` is not installed, the folder is no saved dataset, or a named column is missing.
        """
        try:
            import datasets
        except ImportError:
            raise CorpusError("hf: reading a Hugging Face dataset needs `pip install datasets`") from None
        try:
            loaded = datasets.load_from_disk(str(root))
        except Exception as exc:
            raise CorpusError(f"hf: {str(root)!r} is not a saved datasets folder: {exc}") from None
        splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}
        rows: list[UtteranceRow] = []
        skipped: list[SkippedFile] = []
        seen: set[str] = set()
        for split_name, ds in sorted(splits.items()):
            for parsed in self._scan_split(datasets, ds, split_name, root):
                if isinstance(parsed, UtteranceRow) and parsed.utt_id in seen:
                    parsed = SkippedFile(parsed.path, f"duplicate utt_id {parsed.utt_id!r}")
                if isinstance(parsed, SkippedFile):
                    skipped.append(parsed)
                else:
                    seen.add(parsed.utt_id)
                    rows.append(parsed)
        return rows, skipped

    def _scan_split(
        self, datasets: Any, ds: Any, split_name: str, root: Path
    ) -> list[UtteranceRow | SkippedFile]:
        where = f"split {split_name!r}" if split_name else "dataset"
        missing = [c for c in (self.audio_column, self.label_column) if c not in ds.column_names]
        if missing:
            raise CorpusError(
                f"hf: {where} lacks column(s) {', '.join(missing)}; found {ds.column_names} "
                "(name them with audio_column= / label_column=)"
            )
        has_speaker = self.speaker_column in ds.column_names
        if not has_speaker:
            log.warning(
                "hf: %s has no %r column; every utterance gets speaker %r, so speaker-independent splits "
                "are impossible",
                where,
                self.speaker_column,
                UNKNOWN_SPEAKER,
            )
        if isinstance(ds.features[self.audio_column], datasets.Audio):
            ds = ds.cast_column(self.audio_column, datasets.Audio(decode=False))
        label_feature = ds.features[self.label_column]
        names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
        keys = {self.audio_column, self.label_column, self.speaker_column, "gender", "utt_id"}
        extras = [
            c
            for c, f in ds.features.items()
            if c not in keys and c not in _COMPUTED and isinstance(f, datasets.Value)
        ]
        out: list[UtteranceRow | SkippedFile] = []
        for i, rec in enumerate(ds):
            out.append(self._parse_row(rec, i, split_name, root, names, has_speaker, extras))
        return out

    def _parse_row(
        self,
        rec: dict[str, Any],
        index: int,
        split_name: str,
        root: Path,
        names: list[str] | None,
        has_speaker: bool,
        extras: list[str],
    ) -> UtteranceRow | SkippedFile:
        where = f"{split_name or 'dataset'} row {index}"
        path = self._audio_path(rec.get(self.audio_column), index, split_name, root)
        if isinstance(path, str):
            return SkippedFile(f"{root}:{where}", f"{where}: {path}")
        value = rec.get(self.label_column)
        raw = (
            names[value]
            if names is not None and isinstance(value, int) and 0 <= value < len(names)
            else value
        )
        raw = "" if raw is None else str(raw).strip()
        label = self.label_map.get(raw, raw.lower())
        if label not in CANONICAL_LABELS:
            return SkippedFile(
                str(path), f"{where}: label {raw!r} is not a canonical label and not in label_map"
            )
        if has_speaker:
            spk = rec.get(self.speaker_column)
            spk = "" if spk is None else str(spk).strip()
            if not spk:
                return SkippedFile(str(path), f"{where}: empty speaker")
            speaker = f"hf-{spk}"
        else:
            speaker = UNKNOWN_SPEAKER
        g = str(rec.get("gender") or "").strip().lower()
        if g not in _GENDERS:
            return SkippedFile(
                str(path), f"{where}: unknown gender {g!r} (expected female, male, f, m or empty)"
            )
        own = str(rec.get("utt_id") or "").strip()
        utt = own or (f"{split_name}/{index:06d}" if split_name else f"{index:06d}")
        extra = {c: rec.get(c) for c in extras}
        if split_name:
            extra["hf_split"] = split_name
        return UtteranceRow(
            utt_id=utt if utt.startswith("hf/") else f"hf/{utt}",
            path=str(path),
            speaker=speaker,
            label=label,
            raw_label=raw,
            gender=_GENDERS[g],
            extra=extra,
        )

    @staticmethod
    def _audio_path(cell: Any, index: int, split_name: str, root: Path) -> Path | str:
        """The file of one audio cell (an existing ``path``, else its bytes written once as WAV), or the
        reason there is none."""
        if isinstance(cell, str | os.PathLike):
            cell = {"path": os.fspath(cell), "bytes": None}
        if not isinstance(cell, Mapping):
            return f"audio cell is a {type(cell).__name__}, not an Audio value or a path"
        src = cell.get("path")
        if src:
            cand = Path(src).expanduser()
            cand = cand if cand.is_absolute() else root / cand  # relative: to the dataset, never the cwd
            if cand.is_file():
                return cand.resolve()
        data = cell.get("bytes")
        if not data:
            return f"audio file {src!r} does not exist and the row embeds no audio bytes"
        digest = hashlib.sha1(data).hexdigest()[:12]
        dest = root / AUDIO_CACHE / (split_name or "_") / f"{index:06d}-{digest}.wav"
        if dest.is_file():
            return dest
        import soundfile as sf

        try:
            signal, sr = sf.read(io.BytesIO(data), always_2d=False)
        except Exception as exc:
            return f"embedded audio cannot be decoded by soundfile: {exc}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        sf.write(tmp, signal, sr, format="WAV")
        os.replace(tmp, dest)
        return dest
