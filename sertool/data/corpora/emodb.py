"""EmoDB, Berlin Database of Emotional Speech (Burkhardt et al. 2005): ``wav/SSTTTEV.<ext>``.

Name fields: speaker (03 08 09 10 11 12 13 14 15 16), text (``a01..a07``, ``b01..b10``), emotion letter
(German initials: W Wut/anger, L Langeweile/boredom, E Ekel/disgust, A Angst/fear, F Freude/happiness,
T Trauer/sadness, N neutral) and a version letter (``a``, ``b``, ... for repeated takes). Speakers 03 10 11
12 15 are male, 08 09 13 14 16 female. Only the audio files are read; the label/phoneme folders of the
release (``lablaut``, ``silb``, ...) hold no audio and are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.data.corpora.base import CorpusAdapter, UtteranceRow, register

__all__ = ["EMOTIONS", "SPEAKER_GENDER", "EmodbAdapter"]

EMOTIONS = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fearful",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}
SPEAKER_GENDER = {
    "03": "male",
    "08": "female",
    "09": "female",
    "10": "male",
    "11": "male",
    "12": "male",
    "13": "female",
    "14": "female",
    "15": "male",
    "16": "female",
}
TEXTS = frozenset([f"a{i:02d}" for i in range(1, 8)] + [f"b{i:02d}" for i in range(1, 11)])
_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")


@register
class EmodbAdapter(CorpusAdapter):
    """Berlin Database of Emotional Speech."""

    name = "emodb"
    description = "EmoDB (Berlin), 10 German speakers, 7 emotions incl. boredom, 535 utterances."

    def parse_file(self, path: Path) -> UtteranceRow | str:
        """See :meth:`CorpusAdapter.parse_file`."""
        m = _NAME.match(path.stem)
        if not m:
            return (
                "name does not match EmoDB <speaker 2 digits><text a01..b10><emotion letter><version letter>"
            )
        spk, text, emo, version = m.groups()
        if spk not in SPEAKER_GENDER:
            return f"unknown speaker code {spk} (expected {', '.join(SPEAKER_GENDER)})"
        if text not in TEXTS:
            return f"unknown text code {text} (expected a01..a07, b01..b10)"
        if emo not in EMOTIONS:
            return f"unknown emotion letter {emo!r}"
        return UtteranceRow(
            utt_id=f"emodb/{path.stem}",
            path=str(path),
            speaker=f"emodb-{spk}",
            label=EMOTIONS[emo],
            raw_label=emo,
            gender=SPEAKER_GENDER[spk],
            extra={"text": text, "version": version},
        )
