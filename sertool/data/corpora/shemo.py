"""ShEMO, Sharif Emotional Speech Database (Mohamad Nezami et al. 2019): ``female/F01A01.<ext>``,
``male/M12N05.<ext>``.

Name fields: gender letter (F, M), speaker number (2 digits, numbered per gender), emotion letter (A anger,
H happiness, N neutral, S sadness, W surprise, F fear) and utterance number (2 or 3 digits). Semi-natural
Persian speech from radio plays, 87 speakers. A ``female``/``male`` folder, when present, must agree with the
gender letter. Speakers are ``shemo-F01``, ``shemo-M12``.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.data.corpora.base import CorpusAdapter, UtteranceRow, register

__all__ = ["EMOTIONS", "ShemoAdapter"]

EMOTIONS = {
    "A": "angry",
    "H": "happy",
    "N": "neutral",
    "S": "sad",
    "W": "surprised",
    "F": "fearful",
}
_GENDER = {"F": "female", "M": "male"}
_NAME = re.compile(r"^([A-Z])(\d\d)([A-Z])(\d{2,3})$")


@register
class ShemoAdapter(CorpusAdapter):
    """Sharif Emotional Speech Database (Persian)."""

    name = "shemo"
    description = "ShEMO (Persian), 87 speakers, 6 emotions, 3000 semi-natural utterances."

    def parse_file(self, path: Path) -> UtteranceRow | str:
        """See :meth:`CorpusAdapter.parse_file`."""
        m = _NAME.match(path.stem)
        if not m:
            return "name does not match ShEMO <F|M><speaker nn><emotion letter><utterance nn>"
        g, num, emo, utt = m.groups()
        if g not in _GENDER:
            return f"unknown gender letter {g!r} (expected F or M)"
        if emo not in EMOTIONS:
            return f"unknown emotion letter {emo!r}"
        folder = path.parent.name.lower()
        if folder in ("female", "male") and folder != _GENDER[g]:
            return f"gender letter {g} disagrees with folder {path.parent.name}"
        return UtteranceRow(
            utt_id=f"shemo/{path.stem}",
            path=str(path),
            speaker=f"shemo-{g}{num}",
            label=EMOTIONS[emo],
            raw_label=emo,
            gender=_GENDER[g],
            extra={"utterance": int(utt)},
        )
