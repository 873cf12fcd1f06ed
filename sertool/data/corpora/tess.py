"""TESS (Dupuis & Pichora-Fuller 2010): ``<SPK>_<emotion>/<SPK>_<word>_<emotion>.<ext>``.

Speakers OAF (aged 64) and YAF (aged 26), both female. Emotion codes in file names: angry, disgust, fear,
happy, neutral, ps (pleasant surprise), sad. Quirk of the official release: ``OAF_neutral/OA_bite_neutral``
uses the prefix ``OA``; it is accepted as OAF only inside an ``OAF_*`` folder (``name_quirk`` records it).
Folder names vary between releases (``OAF_Fear``, ``YAF_pleasant_surprised``), so the file name is
authoritative and the folder only cross-checks the speaker.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.data.corpora.base import CorpusAdapter, UtteranceRow, register

EMOTIONS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "surprised",
    "sad": "sad",
}
AGES = {"OAF": 64, "YAF": 26}
_NAME = re.compile(r"^(?P<spk>[A-Za-z]+)_(?P<word>.+)_(?P<emo>[A-Za-z]+)$")


@register
class TessAdapter(CorpusAdapter):
    """Toronto Emotional Speech Set."""

    name = "tess"
    description = "TESS, 2 female speakers, 7 emotions, 200 words each."

    def parse_file(self, path: Path) -> UtteranceRow | str:
        """See :meth:`CorpusAdapter.parse_file`."""
        m = _NAME.match(path.stem)
        if not m:
            return "name does not match TESS <SPK>_<word>_<emotion>"
        spk, word, emo = m.group("spk").upper(), m.group("word"), m.group("emo").lower()
        folder_spk = path.parent.name.split("_", 1)[0].upper()
        quirk = ""
        if spk == "OA" and folder_spk == "OAF":
            spk, quirk = "OAF", "prefix OA (official release typo)"
        if spk not in AGES:
            return f"unknown speaker prefix {m.group('spk')!r}"
        if folder_spk in AGES and folder_spk != spk:
            return f"speaker {spk} disagrees with folder {path.parent.name}"
        if emo not in EMOTIONS:
            return f"unknown emotion code {m.group('emo')!r}"
        return UtteranceRow(
            utt_id=f"tess/{path.stem}",
            path=str(path),
            speaker=f"tess-{spk}",
            label=EMOTIONS[emo],
            raw_label=emo,
            gender="female",
            extra={"word": word.lower(), "age": AGES[spk], "name_quirk": quirk},
        )
