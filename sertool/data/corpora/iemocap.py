"""IEMOCAP (Busso et al. 2008): labels in ``SessionN/dialog/EmoEvaluation/<dialog>.txt``, audio in
``SessionN/sentences/wav/<dialog>/<utterance>.<ext>``.

A label line reads ``[START - END]<TAB>UTTERANCE<TAB>CODE<TAB>[V, A, D]``, e.g.
``[6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]``: the majority category and the mean
valence, arousal (activation) and dominance ratings on a 1-5 scale. Codes: neu hap sad ang exc fru fea sur dis
oth xxx. ``xxx`` (annotators reached no majority) is skipped, ``oth`` becomes ``other``.

Speakers: a session has one female and one male actor. The letter after ``SesNN`` in the dialog name says who
wore the motion-capture markers, NOT who speaks; the speaker of an utterance is the letter that starts its
suffix (``Ses01F_impro01_M003`` is spoken by the male actor of session 1, speaker ``iemocap-Ses01M``).
Leave-one-session-out is the usual protocol (``session`` column).

Labelled utterances without an audio file and audio files without a label are both reported as skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.data.corpora.base import CorpusAdapter, SkippedFile, UtteranceRow, iter_audio_files, register
from sertool.exceptions import CorpusError

__all__ = ["EMOTIONS", "IemocapAdapter", "parse_label_file"]

EMOTIONS = {
    "neu": "neutral",
    "hap": "happy",
    "sad": "sad",
    "ang": "angry",
    "exc": "excited",
    "fru": "frustrated",
    "fea": "fearful",
    "sur": "surprised",
    "dis": "disgust",
    "oth": "other",
}
NO_AGREEMENT = "xxx"
_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s+(?P<utt>\S+)\s+(?P<code>\S+)\s+"
    r"\[\s*(?P<v>-?\d+(?:\.\d*)?)\s*,\s*(?P<a>-?\d+(?:\.\d*)?)\s*,\s*(?P<d>-?\d+(?:\.\d*)?)\s*\]\s*$"
)
_UTT = re.compile(r"^Ses(?P<session>\d\d)(?P<marker>[FM])_(?P<kind>[A-Za-z]+)\S*_(?P<gender>[FM])\d{3}$")
_SESSION_DIR = re.compile(r"^Session([1-5])$")
_EXT_ORDER = (".wav", ".flac", ".ogg")


def parse_label_file(path: Path) -> list[dict[str, str | float]]:
    """Read the utterance lines of one ``EmoEvaluation/*.txt`` file.

    Parameters
    ----------
    path : Path
        The label file.

    Returns
    -------
    list of dict
        One dict per utterance line with keys ``utt, code, start_s, end_s, valence, arousal, dominance``.
        Header lines (``%``), per-annotator lines (``C-E1:`` ...) and blank lines are ignored.
    """
    out: list[dict[str, str | float]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if m:
            out.append(
                {
                    "utt": m["utt"],
                    "code": m["code"],
                    "start_s": float(m["start"]),
                    "end_s": float(m["end"]),
                    "valence": float(m["v"]),
                    "arousal": float(m["a"]),
                    "dominance": float(m["d"]),
                }
            )
    return out


@register
class IemocapAdapter(CorpusAdapter):
    """Interactive Emotional Dyadic Motion Capture database, utterance-level categorical labels."""

    name = "iemocap"
    description = "IEMOCAP, 5 sessions x 2 actors, majority categorical labels and mean V/A/D ratings."

    def scan(self, root: Path) -> tuple[list[UtteranceRow], list[SkippedFile]]:
        """Read every session's label files and match them to the sentence audio.

        Raises
        ------
        CorpusError
            No ``Session1..5/dialog/EmoEvaluation/*.txt`` label file under ``root``.
        """
        sessions = sorted(
            (int(m.group(1)), d) for d in root.iterdir() if d.is_dir() and (m := _SESSION_DIR.match(d.name))
        )
        rows: list[UtteranceRow] = []
        skipped: list[SkippedFile] = []
        n_label_files = 0
        for session, sdir in sessions:
            audio = _audio_index(sdir / "sentences" / "wav", skipped)
            seen: dict[str, str] = {}
            label_dir = sdir / "dialog" / "EmoEvaluation"
            label_files = sorted(
                p for p in label_dir.glob("*.txt") if p.is_file() and not p.name.startswith(".")
            )
            n_label_files += len(label_files)
            for lf in label_files:
                lf_rel = lf.relative_to(root).as_posix()
                for rec in parse_label_file(lf):
                    utt = str(rec["utt"])
                    expected = sdir / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"
                    apath = audio.get(utt, expected)
                    if utt in seen:
                        skipped.append(SkippedFile(str(apath), f"utterance {utt} labelled again in {lf_rel}"))
                        continue
                    seen[utt] = lf_rel
                    parsed = self._row(utt, rec, session, apath, lf_rel, exists=utt in audio)
                    if isinstance(parsed, str):
                        skipped.append(SkippedFile(str(apath), parsed))
                    else:
                        rows.append(parsed)
            for utt, apath in sorted(audio.items()):
                if utt not in seen:
                    skipped.append(
                        SkippedFile(
                            str(apath), f"no label for utterance {utt} in {label_dir.relative_to(root)}"
                        )
                    )
        if n_label_files == 0:
            raise CorpusError(
                f"iemocap: no label files Session1..5/dialog/EmoEvaluation/*.txt under {str(root)!r}"
            )
        return rows, skipped

    def _row(
        self, utt: str, rec: dict[str, str | float], session: int, apath: Path, lf_rel: str, *, exists: bool
    ) -> UtteranceRow | str:
        m = _UTT.match(utt)
        if not m:
            return f"utterance name {utt!r} in {lf_rel} does not match Ses<NN><F|M>_<dialog>_<F|M><nnn>"
        if int(m["session"]) != session:
            return (
                f"utterance {utt} in {lf_rel} names session {int(m['session'])}, folder is Session{session}"
            )
        kind = m["kind"].lower()
        if not kind.startswith(("impro", "script")):
            return f"utterance {utt} in {lf_rel}: dialog type {m['kind']!r} is neither impro nor script"
        code = str(rec["code"])
        if code == NO_AGREEMENT:
            return f"no majority label (xxx) for {utt} in {lf_rel}"
        if code not in EMOTIONS:
            return f"unknown emotion code {code!r} for {utt} in {lf_rel}"
        if not exists:
            return f"no audio file for utterance {utt} labelled in {lf_rel}"
        spk_letter = m["gender"]
        return UtteranceRow(
            utt_id=f"iemocap/{utt}",
            path=str(apath),
            speaker=f"iemocap-Ses{m['session']}{spk_letter}",
            label=EMOTIONS[code],
            raw_label=code,
            gender="female" if spk_letter == "F" else "male",
            extra={
                "session": session,
                "dialog": utt.rsplit("_", 1)[0],
                "improvised": kind.startswith("impro"),
                "valence": rec["valence"],
                "arousal": rec["arousal"],
                "dominance": rec["dominance"],
                "start_s": rec["start_s"],
                "end_s": rec["end_s"],
            },
        )


def _audio_index(wav_dir: Path, skipped: list[SkippedFile]) -> dict[str, Path]:
    """Utterance name -> audio file under ``sentences/wav`` (wav preferred over flac, ogg, others).

    Further files with the same name (another format) are appended to ``skipped``.
    """
    if not wav_dir.is_dir():
        return {}

    def rank(p: Path) -> tuple[int, str]:
        ext = p.suffix.lower()
        return (_EXT_ORDER.index(ext) if ext in _EXT_ORDER else len(_EXT_ORDER), str(p))

    index: dict[str, Path] = {}
    for p in sorted(iter_audio_files(wav_dir), key=rank):
        kept = index.setdefault(p.stem, p)
        if kept != p:
            skipped.append(
                SkippedFile(str(p), f"duplicate of utterance {p.stem} already read from {kept.name}")
            )
    return index
