"""RAVDESS (Livingstone & Russo 2018): ``Actor_XX/MM-VV-EE-II-SS-RR-AA.<ext>``.

Fields: modality (01 AV, 02 video, 03 audio), vocal channel (01 speech, 02 song), emotion (01 neutral,
02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity (01 normal,
02 strong; neutral has no strong), statement (01/02), repetition (01/02), actor (01..24; odd male, even
female). Song has no disgust or surprised. Speech and song are both read; ``vocal_channel`` tells them
apart. The official release has a byte-identical pair in Actor_07, which the manifest flags via
``dup_group``.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.data.corpora.base import CorpusAdapter, UtteranceRow, register

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


@register
class RavdessAdapter(CorpusAdapter):
    """RAVDESS speech and song audio."""

    name = "ravdess"
    description = "RAVDESS, 24 actors, 8 emotions (speech) / 6 (song); file names carry every code."

    def parse_file(self, path: Path) -> UtteranceRow | str:
        """See :meth:`CorpusAdapter.parse_file`."""
        m = _NAME.match(path.stem)
        if not m:
            return "name does not match RAVDESS MM-VV-EE-II-SS-RR-AA"
        modality, channel, emo, intensity, statement, repetition, actor = m.groups()
        if modality != "03":
            return f"modality {modality} is not audio-only (03)"
        if channel not in ("01", "02"):
            return f"unknown vocal channel code {channel}"
        if emo not in EMOTIONS:
            return f"unknown emotion code {emo}"
        if channel == "02" and emo in ("07", "08"):
            return f"emotion code {emo} does not exist for song"
        if intensity not in ("01", "02"):
            return f"unknown intensity code {intensity}"
        if emo == "01" and intensity == "02":
            return "neutral has no strong intensity (code 02)"
        if statement not in _STATEMENTS:
            return f"unknown statement code {statement}"
        if repetition not in ("01", "02"):
            return f"unknown repetition code {repetition}"
        a = int(actor)
        if not 1 <= a <= 24:
            return f"unknown actor code {actor}"
        folder = re.match(r"^Actor_(\d\d)$", path.parent.name)
        if folder and int(folder.group(1)) != a:
            return f"actor code {actor} disagrees with folder {path.parent.name}"
        return UtteranceRow(
            utt_id=f"ravdess/{path.stem}",
            path=str(path),
            speaker=f"ravdess-{actor}",
            label=EMOTIONS[emo],
            raw_label=emo,
            gender="male" if a % 2 else "female",
            extra={
                "vocal_channel": "speech" if channel == "01" else "song",
                "intensity": "normal" if intensity == "01" else "strong",
                "statement": int(statement),
                "repetition": int(repetition),
            },
        )
