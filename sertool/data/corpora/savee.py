"""SAVEE (Haq & Jackson 2009): ``AudioData/<SPK>/<code><nn>.<ext>``, or the flat ``ALL/<SPK>_<code><nn>``.

Four male speakers (DC, JE, JK, KL), 120 utterances each: neutral ``n01..n30`` and 15 of each other emotion,
codes ``a`` anger, ``d`` disgust, ``f`` fear, ``h`` happiness, ``sa`` sadness, ``su`` surprise. In the
original layout the speaker is the folder name; in the flat layout (Kaggle copy) it is the file-name prefix,
which must agree with a speaker-named folder when there is one. The ``utt_id`` is ``savee/<SPK>_<code><nn>``
in both layouts, so the same corpus gives the same ids whichever copy is read.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.data.corpora.base import CorpusAdapter, UtteranceRow, register

__all__ = ["EMOTIONS", "SPEAKERS", "SaveeAdapter"]

EMOTIONS = {
    "a": "angry",
    "d": "disgust",
    "f": "fearful",
    "h": "happy",
    "n": "neutral",
    "sa": "sad",
    "su": "surprised",
}
SPEAKERS = ("DC", "JE", "JK", "KL")
#: Utterances per speaker and emotion code (numbers run 01..N).
_PER_CODE = {code: (30 if code == "n" else 15) for code in EMOTIONS}
_NESTED = re.compile(r"^([a-z]{1,2})(\d\d)$")
_FLAT = re.compile(r"^([A-Z]{2})_([a-z]{1,2})(\d\d)$")


@register
class SaveeAdapter(CorpusAdapter):
    """Surrey Audio-Visual Expressed Emotion, audio only."""

    name = "savee"
    description = "SAVEE, 4 male speakers, 7 emotions, 480 utterances."

    def parse_file(self, path: Path) -> UtteranceRow | str:
        """See :meth:`CorpusAdapter.parse_file`."""
        folder = path.parent.name
        if m := _FLAT.match(path.stem):
            spk, code, num = m.groups()
            if folder in SPEAKERS and folder != spk:
                return f"speaker prefix {spk} disagrees with folder {folder}"
            layout = "flat"
        elif m := _NESTED.match(path.stem):
            code, num = m.groups()
            spk = folder
            if spk not in SPEAKERS:
                return f"folder {folder!r} is not a SAVEE speaker ({', '.join(SPEAKERS)})"
            layout = "nested"
        else:
            return "name matches neither SAVEE <code><nn> (in a speaker folder) nor <SPK>_<code><nn>"
        if spk not in SPEAKERS:
            return f"unknown speaker {spk!r} (expected {', '.join(SPEAKERS)})"
        if code not in EMOTIONS:
            return f"unknown emotion code {code!r}"
        if not 1 <= int(num) <= _PER_CODE[code]:
            return f"utterance number {num} out of range 01..{_PER_CODE[code]:02d} for code {code!r}"
        return UtteranceRow(
            utt_id=f"savee/{spk}_{code}{num}",
            path=str(path),
            speaker=f"savee-{spk}",
            label=EMOTIONS[code],
            raw_label=code,
            gender="male",
            extra={"utterance": int(num), "layout": layout},
        )
