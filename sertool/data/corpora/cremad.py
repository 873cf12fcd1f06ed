"""CREMA-D (Cao et al. 2014): ``AudioWAV/AAAA_SSS_EEE_LL.<ext>``.

Fields: actor (1001..1091), sentence (12 codes, see :data:`SENTENCES`), emotion (ANG DIS FEA HAP NEU SAD),
level (LO low, MD medium, HI high, XX unspecified; the release also has ``X`` for unspecified, recorded as a
``name_quirk``). Gender and age come from ``VideoDemographics.csv`` (``ActorID,Age,Sex,Race,Ethnicity``) when
that file lies in the corpus root; otherwise ``gender`` and ``age`` are ``None`` (never guessed).

Known quirk of the official release: ``1076_MTI_SAD_XX.wav`` is an empty (0-byte) file; the manifest builder
skips it with the reason ``empty file (0 bytes)``. The GitHub release also ships the same clips as
``AudioMP3/*.mp3``: when one utterance exists in several files, the copy in ``AudioWAV`` (else the first by
extension preference wav, flac, ogg, others) is kept and the others are skipped as duplicates.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from sertool.data.corpora.base import CorpusAdapter, SkippedFile, UtteranceRow, register
from sertool.exceptions import CorpusError

__all__ = ["EMOTIONS", "LEVELS", "SENTENCES", "CremadAdapter"]

log = logging.getLogger(__name__)

EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified", "X": "unspecified"}
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
DEMOGRAPHICS = "VideoDemographics.csv"
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")
_EXT_ORDER = (".wav", ".flac", ".ogg")


def read_demographics(path: Path) -> dict[str, dict[str, object]]:
    """Read ``VideoDemographics.csv`` into ``{actor id: {"gender", "age"}}``.

    Raises
    ------
    CorpusError
        The file lacks the ``ActorID`` or ``Sex`` column, or a row has an unknown sex value.
    """
    out: dict[str, dict[str, object]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip() for f in reader.fieldnames or []}
        if not {"ActorID", "Sex"} <= fields:
            raise CorpusError(
                f"{path}: expected columns ActorID,Age,Sex,Race,Ethnicity, found {sorted(fields)}"
            )
        for rec in reader:
            rec = {k.strip(): (v or "").strip() for k, v in rec.items() if k}
            sex = rec["Sex"].lower()
            if sex not in ("male", "female"):
                raise CorpusError(f"{path}: actor {rec['ActorID']!r} has unknown Sex value {rec['Sex']!r}")
            age = rec.get("Age", "")
            out[rec["ActorID"]] = {"gender": sex, "age": int(age) if age.isdigit() else None}
    return out


@register
class CremadAdapter(CorpusAdapter):
    """Crowd-sourced Emotional Multimodal Actors Dataset, audio only."""

    name = "cremad"
    description = (
        "CREMA-D, 91 actors, 6 emotions, 12 sentences, 4 intensity levels; gender from VideoDemographics.csv."
    )

    def __init__(self) -> None:
        self._demo: dict[str, dict[str, object]] | None = None

    def scan(self, root: Path) -> tuple[list[UtteranceRow], list[SkippedFile]]:
        """Read demographics (if present), parse every audio file, keep one file per utterance."""
        demo_path = root / DEMOGRAPHICS
        if demo_path.is_file():
            self._demo = read_demographics(demo_path)
        else:
            self._demo = None
            log.info("cremad: %s not in %s; gender and age left unknown", DEMOGRAPHICS, root)
        rows, skipped = super().scan(root)
        return _keep_one_per_utterance(rows, skipped, root)

    def parse_file(self, path: Path) -> UtteranceRow | str:
        """See :meth:`CorpusAdapter.parse_file`."""
        m = _NAME.match(path.stem)
        if not m:
            return "name does not match CREMA-D <actor>_<sentence>_<emotion>_<level>"
        actor, sentence, emo, level = m.groups()
        if not 1001 <= int(actor) <= 1091:
            return f"unknown actor code {actor} (expected 1001..1091)"
        if sentence not in SENTENCES:
            return f"unknown sentence code {sentence}"
        if emo not in EMOTIONS:
            return f"unknown emotion code {emo}"
        if level not in LEVELS:
            return f"unknown level code {level}"
        info = (self._demo or {}).get(actor)
        if self._demo is not None and info is None:
            log.warning("cremad: actor %s missing from %s; gender unknown", actor, DEMOGRAPHICS)
        return UtteranceRow(
            utt_id=f"cremad/{path.stem}",
            path=str(path),
            speaker=f"cremad-{actor}",
            label=EMOTIONS[emo],
            raw_label=emo,
            gender=info["gender"] if info else None,  # type: ignore[arg-type]
            extra={
                "sentence": sentence,
                "level": LEVELS[level],
                "age": info["age"] if info else None,
                "name_quirk": "level X (unspecified, written XX elsewhere)" if level == "X" else "",
            },
        )


def _keep_one_per_utterance(
    rows: list[UtteranceRow], skipped: list[SkippedFile], root: Path
) -> tuple[list[UtteranceRow], list[SkippedFile]]:
    """Keep one file per utt_id (AudioWAV first, then by extension); skip the others with the reason."""

    def rank(row: UtteranceRow) -> tuple[int, int, str]:
        p = Path(row.path)
        ext = p.suffix.lower()
        return (
            0 if "AudioWAV" in p.relative_to(root).parts[:-1] else 1,
            _EXT_ORDER.index(ext) if ext in _EXT_ORDER else len(_EXT_ORDER),
            row.path,
        )

    best: dict[str, UtteranceRow] = {}
    for row in sorted(rows, key=rank):
        kept = best.setdefault(row.utt_id, row)
        if kept is not row:
            rel = Path(kept.path).relative_to(root).as_posix()
            skipped.append(
                SkippedFile(row.path, f"duplicate of utterance {row.utt_id} already read from {rel}")
            )
    return sorted(best.values(), key=lambda r: r.path), skipped
