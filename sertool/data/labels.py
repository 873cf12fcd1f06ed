"""Canonical emotion labels and named, versioned label schemes.

Every corpus adapter maps its raw codes to *canonical* labels (:data:`CANONICAL_LABELS`). A
:class:`LabelScheme` then maps canonical labels to the classes of an experiment, dropping what it does not
use. The scheme's ``id`` (``name-vN``) is recorded with every result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from sertool.exceptions import ParameterError

__all__ = ["CANONICAL_LABELS", "SCHEMES", "LabelScheme", "apply_scheme", "get_scheme"]

#: Canonical labels, the union of what the supported corpora annotate.
CANONICAL_LABELS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
    "excited",
    "frustrated",
    "other",
)


@dataclass(frozen=True)
class LabelScheme:
    """A named mapping from canonical labels to experiment classes.

    Attributes
    ----------
    name : str
        Registry name (``"native"``, ``"ser7"``, ``"ser4"``).
    version : int
        Bumped whenever the mapping changes.
    mapping : Mapping[str, str | None]
        Canonical label -> class; ``None`` drops the utterance. Labels absent from the mapping are dropped
        too unless ``keep_unmapped`` is set.
    keep_unmapped : bool
        Keep canonical labels not in ``mapping`` unchanged (the ``native`` scheme).
    description : str
        What the scheme is and where it comes from.
    """

    name: str
    version: int
    mapping: Mapping[str, str | None] = field(default_factory=dict)
    keep_unmapped: bool = False
    description: str = ""

    @property
    def id(self) -> str:
        """``name-vVERSION``, the string recorded in results."""
        return f"{self.name}-v{self.version}"

    def map(self, label: str) -> str | None:
        """Class for a canonical label, or ``None`` if the scheme drops it."""
        if label in self.mapping:
            return self.mapping[label]
        return label if self.keep_unmapped else None

    def classes(self, labels: list[str] | None = None) -> list[str]:
        """Ordered class list (canonical order) of the scheme, restricted to ``labels`` when given."""
        targets = {self.map(lab) for lab in (labels if labels is not None else CANONICAL_LABELS)}
        targets.discard(None)
        order = {lab: i for i, lab in enumerate(CANONICAL_LABELS)}
        return sorted(targets, key=lambda c: (order.get(c, len(order)), c))


SCHEMES: dict[str, LabelScheme] = {
    s.name: s
    for s in [
        LabelScheme(
            "native",
            1,
            keep_unmapped=True,
            description="Each corpus's own emotion categories under their canonical names; nothing merged.",
        ),
        LabelScheme(
            "ser7",
            1,
            mapping={
                "calm": "calm",
                "happy": "happy",
                "sad": "sad",
                "angry": "angry",
                "fearful": "fearful",
                "disgust": "disgust",
                "surprised": "surprised",
                "neutral": None,
                "boredom": None,
                "excited": None,
                "frustrated": None,
                "other": None,
            },
            description=(
                "7-class scheme of the combined-corpus protocol: calm, happy, sad, angry, fearful, disgust, "
                "surprised. Neutral is dropped; TESS's pleasant surprise is already canonical 'surprised'; "
                "EmoDB boredom and IEMOCAP excited/frustrated/other are dropped (not in the study's classes)."
            ),
        ),
        LabelScheme(
            "ser4",
            1,
            mapping={
                "angry": "angry",
                "happy": "happy",
                "excited": "happy",
                "sad": "sad",
                "neutral": "neutral",
            },
            description="Common 4-class scheme (IEMOCAP convention): angry, happy (incl. excited), sad, neutral.",
        ),
        LabelScheme(
            "ser6",
            1,
            mapping={
                "angry": "angry",
                "happy": "happy",
                "sad": "sad",
                "neutral": "neutral",
                "fearful": "fearful",
                "disgust": "disgust",
            },
            description="The six classes shared by RAVDESS, CREMA-D, TESS and SAVEE (cross-corpus experiments).",
        ),
    ]
}


def get_scheme(name: str | LabelScheme) -> LabelScheme:
    """Look a scheme up by name (``"ser7"`` or its id ``"ser7-v1"``).

    Raises
    ------
    ParameterError
        Unknown name; the message lists the known ones.
    """
    if isinstance(name, LabelScheme):
        return name
    base = name.rsplit("-v", 1)[0] if "-v" in name else name
    scheme = SCHEMES.get(base)
    if scheme is None or (base != name and scheme.id != name):
        raise ParameterError(
            f"unknown label scheme {name!r}; known: {', '.join(s.id for s in SCHEMES.values())}"
        )
    return scheme


def apply_scheme(manifest: pd.DataFrame, scheme: str | LabelScheme) -> pd.DataFrame:
    """Map a manifest's canonical ``label`` column through a scheme, dropping unmapped utterances.

    Parameters
    ----------
    manifest : pd.DataFrame
        A manifest with a ``label`` column of canonical labels.
    scheme : str or LabelScheme
        The scheme.

    Returns
    -------
    pd.DataFrame
        A copy with ``label`` mapped, the canonical label kept in ``label_canonical``, dropped rows removed,
        and ``attrs["label_scheme"]`` set to the scheme id.
    """
    scheme = get_scheme(scheme)
    out = manifest.copy()
    out["label_canonical"] = out["label"]
    out["label"] = out["label"].map(scheme.map)
    out = out[out["label"].notna()].reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    out.attrs["label_scheme"] = scheme.id
    return out
