"""Canonical emotion labels and named, versioned label schemes.

Every corpus adapter maps its raw codes to *canonical* labels (:data:`CANONICAL_LABELS`). A
:class:`LabelScheme` then maps canonical labels to the classes of an experiment, dropping what it does not
use. The scheme's ``id`` (``name-vN``) is recorded with every result.

A *crossed* scheme (``ser7-gender``) also reads a manifest column (``cross``, here ``gender``) and names each
class ``<value>_<class>`` (``female_angry``, ``male_angry``, ...); clips whose value is not one of
``cross_values`` (an unknown gender) are dropped, and :func:`apply_scheme` logs how many.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sertool.exceptions import ParameterError

__all__ = ["CANONICAL_LABELS", "SCHEMES", "LabelScheme", "apply_scheme", "get_scheme"]

log = logging.getLogger(__name__)

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
    cross : str or None
        A manifest column crossed with the mapped class (``"gender"``): the class of a clip becomes
        ``<value>_<class>``. ``None`` (default): classes are the mapped labels.
    cross_values : tuple of str
        The values of ``cross`` that are kept, in class order (``("female", "male")``); a clip with another
        value, or none, is dropped.
    """

    name: str
    version: int
    mapping: Mapping[str, str | None] = field(default_factory=dict)
    keep_unmapped: bool = False
    description: str = ""
    cross: str | None = None
    cross_values: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """``name-vVERSION``, the string recorded in results."""
        return f"{self.name}-v{self.version}"

    def map(self, label: str) -> str | None:
        """Class for a canonical label, or ``None`` if the scheme drops it (for a crossed scheme: the
        emotion part of the class, before the ``cross`` value is prefixed)."""
        if label in self.mapping:
            return self.mapping[label]
        return label if self.keep_unmapped else None

    def cross_class(self, label: str, value: Any) -> str | None:
        """Class of a clip with canonical ``label`` and ``cross`` column ``value``; ``None`` if dropped.

        For a scheme without ``cross`` this is :meth:`map` (``value`` is ignored).
        """
        base = self.map(label)
        if base is None or self.cross is None:
            return base
        v = _cross_value(value)
        return f"{v}_{base}" if v in self.cross_values else None

    def classes(self, labels: list[str] | None = None) -> list[str]:
        """Ordered class list (canonical order) of the scheme, restricted to ``labels`` when given; a crossed
        scheme lists ``<value>_<class>`` for each class, then each value in ``cross_values`` order."""
        mapped = (self.map(lab) for lab in (labels if labels is not None else CANONICAL_LABELS))
        targets = {c for c in mapped if c is not None}
        order = {lab: i for i, lab in enumerate(CANONICAL_LABELS)}
        base = sorted(targets, key=lambda c: (order.get(c, len(order)), c))
        if self.cross is None:
            return base
        return [f"{v}_{c}" for c in base for v in self.cross_values]


def _cross_value(value: Any) -> str | None:
    """A manifest cell as a crossed-scheme value: stripped, lower case; ``None`` when missing or empty."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip().lower()
    return text or None


_SER7_MAPPING: dict[str, str | None] = {
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
}


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
            mapping=_SER7_MAPPING,
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
        LabelScheme(
            "ser7-gender",
            1,
            mapping=_SER7_MAPPING,
            cross="gender",
            cross_values=("female", "male"),
            description=(
                "14 classes of the combined-corpus study: the ser7 emotions crossed with the speaker's gender "
                "(female_calm, male_calm, female_happy, ...). Clips ser7 drops, and clips whose gender is "
                "unknown, are dropped."
            ),
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
        and ``attrs["label_scheme"]`` set to the scheme id. A crossed scheme's labels are
        ``<value>_<class>`` (``female_angry``); the clips it keeps but whose ``cross`` value is unknown are
        dropped too, and their count is logged.

    Raises
    ------
    ParameterError
        A crossed scheme and a manifest without its ``cross`` column.
    """
    scheme = get_scheme(scheme)
    out = manifest.copy()
    out["label_canonical"] = out["label"]
    mapped = out["label"].map(scheme.map)
    if scheme.cross is not None:
        if scheme.cross not in out.columns:
            raise ParameterError(
                f"label scheme {scheme.id} crosses emotion with {scheme.cross!r}, but the manifest has no "
                f"{scheme.cross!r} column"
            )
        value = out[scheme.cross].map(_cross_value)
        known = value.isin(scheme.cross_values)
        unknown = int((mapped.notna() & ~known).sum())
        if unknown:
            log.warning(
                "%s: %d clip(s) without a known %s (%s) dropped",
                scheme.id,
                unknown,
                scheme.cross,
                "/".join(scheme.cross_values),
            )
        mapped = (value + "_" + mapped).where(known & mapped.notna())
    out["label"] = mapped
    out = out[out["label"].notna()].reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    out.attrs["label_scheme"] = scheme.id
    return out
