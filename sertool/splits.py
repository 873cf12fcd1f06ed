"""Saved, checked train/valid/test splits.

A :class:`Split` is made once from a manifest (:func:`make_split`), saved as JSON (:meth:`Split.save`) and
reused by every model, so all results on a corpus are comparable. Every :class:`Fold` has ``train``,
``valid`` and ``test`` lists of ``utt_id``; the validation part is always carved out of the training part,
never out of the test part.

Strategies (the names the CLI accepts). Each is one :class:`SplitStrategy` subclass that declares its
parameters, the manifest column whose values never straddle two parts, whether it is speaker-independent and
the protocol name the leaderboards print (:attr:`Split.protocol`):

``random-holdout``
    One stratified train/test split over utterances (``test_fraction``, default 0.2). Speaker-DEPENDENT.
    ``make_split(m, "random-holdout", test_fraction=0.1, valid_fraction=1/9)`` is the 80/10/10 protocol.
``random-<k>fold``
    Stratified k-fold over utterances (``StratifiedKFold``). Speaker-DEPENDENT.
``speaker-<k>fold``
    k folds of whole speakers; each test fold gets ``n_speakers // k`` or one more speakers (RAVDESS, k=6:
    exactly 4 actors per fold). Speaker-independent.
``loso``
    Leave one speaker out: one fold per speaker. Speaker-independent.
``loso-session``
    Leave one session out (manifest column ``session``, IEMOCAP). Speaker-independent.
``cross-corpus``
    One fold: train on the rows of ``train_corpus``, test on the rows of ``test_corpus`` (both required).
    Protocol ``cross-corpus``.
``leave-one-corpus-out``
    For a merged manifest of at least two corpora: one fold per corpus (sorted by name), whose test part is
    all of that corpus and whose training part is all the other corpora. Protocol ``leave-one-corpus-out``.
``file:PATH``
    Predefined folds: a CSV with columns ``utt_id,fold`` (the rows of a fold are its test part, the rows of
    the other folds its training part) or ``utt_id,fold,role`` (role ``train``/``valid``/``test`` given
    per fold), a JSON ``{"folds": [{"train": [...], "valid": [...], "test": [...]}]}`` (``valid``
    optional), or a split file written by :meth:`Split.save`. Whether it is speaker-independent is
    inferred from the folds unless ``speaker_independent=`` is given (then it is checked).

A new strategy is one class: subclass :class:`SplitStrategy`, set its class attributes, write
:meth:`SplitStrategy.folds`, and :func:`register_strategy` it, or ship it in a package as an entry point of
the group ``sertool.splits`` (see :mod:`sertool.plugins`); :func:`get_strategy` finds the built-ins first,
then the plugins. Every split it makes is checked for leakage like the built-ins'.

Design decisions:

* **Speaker folds are assigned by sertool, not by ``StratifiedGroupKFold``.** That class balances label
  proportions but not the number of groups per fold, so with speakers of unequal size a fold can get 3
  actors and another 5. Here speakers are taken gender by gender (larger gender first) in a seeded random
  order, and each goes to the fold, among those below their speaker quota, that (1) holds the fewest
  speakers of its gender, then (2) keeps label proportions across folds most even (the criterion of
  ``StratifiedGroupKFold``), then (3) has the lowest index. Quotas are ``n // k`` plus one for the first
  ``n % k`` folds, so the speaker counts per fold are balanced by construction.
* **Validation part.** ``valid_fraction`` (default 0.1) of the training part: whole speakers for
  speaker-independent strategies (``max(1, round(fraction * n_train_speakers))`` speakers, picked in a
  seeded order that alternates genders), stratified random otherwise. ``valid_fraction=0`` means no
  validation part.
* **Duplicate audio.** Rows sharing a non-empty ``dup_group`` are one unit: random strategies split units,
  not rows; speaker (session) strategies merge speakers (sessions) that share a duplicate group (and, for
  sessions, a speaker) into one group, with a warning, so no group ever straddles two parts.
* **Determinism.** Rows are sorted by ``utt_id`` first; every random choice comes from
  ``numpy.random.default_rng([seed, fold, ...])``; part lists are sorted. The same manifest, strategy,
  parameters and seed give the same :attr:`Split.id` on any machine (paths are never used).
* **Manifest changes.** A split records the :func:`~sertool.data.manifest.manifest_hash` of the manifest it
  was made from and ``rows_hash``, a hash of ``(utt_id, speaker, label)`` of the rows it uses. Checking
  against a manifest with a different hash is accepted (with an INFO log) when every ``utt_id`` of the split
  is present and the rows hash matches: the split's rows are unchanged (e.g. the manifest was merged with
  another corpus, or rebuilt on another machine). Otherwise :class:`~sertool.exceptions.SplitError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from sertool.data.manifest import manifest_hash, validate_manifest
from sertool.exceptions import LeakageError, ParameterError, SplitError

__all__ = [
    "PLUGIN_GROUP",
    "REQUIRED",
    "ROLES",
    "STRATEGIES",
    "CrossCorpus",
    "FileSplit",
    "Fold",
    "LeaveOneCorpusOut",
    "LeaveOneSessionOut",
    "LeaveOneSpeakerOut",
    "RandomHoldout",
    "RandomKFold",
    "SpeakerKFold",
    "Split",
    "SplitStrategy",
    "check_split",
    "get_strategy",
    "list_strategies",
    "make_split",
    "register_strategy",
    "rows_hash",
    "split_summary",
    "strategy_class",
    "unregister_strategy",
]

log = logging.getLogger(__name__)

FORMAT = "sertool-split"
FORMAT_VERSION = 1
ROLES: tuple[str, ...] = ("train", "valid", "test")
#: The entry-point group of split-strategy plugins (:mod:`sertool.plugins`).
PLUGIN_GROUP = "sertool.splits"


# ----------------------------------------------------------------------------------------------------------
# data classes


@dataclass(frozen=True)
class Fold:
    """One fold: three disjoint, sorted tuples of ``utt_id``.

    Attributes
    ----------
    index : int
        Position of the fold in its split (0-based).
    train, valid, test : tuple of str
        The utterances of each part; ``valid`` is carved from the training data and may be empty.
    """

    index: int
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    def part(self, role: str) -> tuple[str, ...]:
        """The ``utt_id`` tuple of ``role`` (``"train"``, ``"valid"`` or ``"test"``)."""
        if role not in ROLES:
            raise ParameterError(f"unknown fold part {role!r}; known: {', '.join(ROLES)}")
        return getattr(self, role)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "index": self.index,
            "train": list(self.train),
            "valid": list(self.valid),
            "test": list(self.test),
        }


@dataclass(frozen=True)
class Split:
    """A saved split: strategy, parameters, seed and folds, with the provenance needed to check it.

    Attributes
    ----------
    strategy : str
        Strategy name as given (``"speaker-6fold"``, ``"loso"``, ``"file"``, ...).
    params : dict
        The parameters that shaped the folds (defaults filled in), JSON-serialisable.
    seed : int
        Seed of every random choice.
    group_column : str or None
        Manifest column whose values never straddle test and train/valid (``"speaker"``, ``"session"``,
        ``"corpus"``), or ``None`` for speaker-dependent splits.
    speaker_independent : bool
        True when no speaker may appear in two parts of a fold; :meth:`check` enforces it.
    manifest_hash : str
        :func:`sertool.data.manifest.manifest_hash` of the manifest the split was made from.
    rows_hash : str
        :func:`rows_hash` of the rows the split uses (utt_id, speaker, label).
    label_scheme : str
        Label-scheme id of that manifest (``attrs["label_scheme"]``, default ``"native-v1"``).
    folds : tuple of Fold
    """

    strategy: str
    params: dict[str, Any] = field(hash=False)
    seed: int
    group_column: str | None
    speaker_independent: bool
    manifest_hash: str
    rows_hash: str
    label_scheme: str
    folds: tuple[Fold, ...]

    @property
    def target(self) -> str:
        """What the split's labels are: ``"emotion"``, or the target recorded in :attr:`label_scheme`
        (:func:`sertool.data.targets.target_of`)."""
        from sertool.data.targets import target_of

        return target_of(self.label_scheme)

    @functools.cached_property
    def id(self) -> str:
        """``<strategy>-<10 hex digits>``; the digest covers strategy, params, seed, grouping and folds.

        A split of another target than the emotion is ``<strategy>-<target>-<10 hex digits>``, and the target
        is part of the digest (the same folds for two targets are two splits, two results folders).
        """
        content = {
            "strategy": self.strategy,
            "params": self.params,
            "seed": self.seed,
            "group_column": self.group_column,
            "speaker_independent": self.speaker_independent,
            "folds": [[list(f.train), list(f.valid), list(f.test)] for f in self.folds],
        }
        target = self.target
        if target != "emotion":
            content["target"] = target
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return (
            f"{self.strategy}-{digest}"
            if target == "emotion"
            else f"{self.strategy}-{_safe(target)}-{digest}"
        )

    @property
    def n_folds(self) -> int:
        """Number of folds."""
        return len(self.folds)

    @property
    def protocol(self) -> str:
        """The protocol name the leaderboards print (``"speaker-independent"``, ``"cross-corpus"``, ...).

        The :attr:`SplitStrategy.protocol` of the class that makes :attr:`strategy` (found by
        :func:`strategy_class`, so a split read from a file gets it too); for a strategy that declares none
        (predefined ``file`` folds) or that no installed class knows any more, ``"speaker-independent"`` or
        ``"speaker-dependent"`` after :attr:`speaker_independent`.
        """
        cls = strategy_class(self.strategy)
        if cls is not None and cls.protocol:
            return cls.protocol
        return _default_protocol(self.speaker_independent)

    def utt_ids(self) -> list[str]:
        """Sorted ``utt_id`` of every utterance used by any fold."""
        return sorted({u for f in self.folds for r in ROLES for u in f.part(r)})

    # -- serialisation ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, including ``format``, ``version`` and ``id``."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "id": self.id,
            "strategy": self.strategy,
            "params": self.params,
            "seed": self.seed,
            "group_column": self.group_column,
            "speaker_independent": self.speaker_independent,
            "manifest_hash": self.manifest_hash,
            "rows_hash": self.rows_hash,
            "label_scheme": self.label_scheme,
            "folds": [f.to_dict() for f in self.folds],
        }

    def to_json(self) -> str:
        """The split as indented JSON text (what :meth:`save` writes)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "split") -> Split:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        SplitError
            Not a sertool split, unsupported version, missing keys, or an ``id`` that does not match the
            content (the file was edited).
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SplitError(f'{source}: not a sertool split (no "format": "{FORMAT}")')
        if data.get("version") != FORMAT_VERSION:
            raise SplitError(f"{source}: split format version {data.get('version')!r} is not supported")
        keys = ("strategy", "params", "seed", "group_column", "speaker_independent", "manifest_hash")
        missing = [k for k in (*keys, "rows_hash", "label_scheme", "folds") if k not in data]
        if missing:
            raise SplitError(f"{source}: split lacks {', '.join(missing)}")
        try:
            folds = tuple(
                Fold(int(f["index"]), *(tuple(str(u) for u in f.get(r, ())) for r in ROLES))
                for f in data["folds"]
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SplitError(f"{source}: malformed folds ({exc!r})") from None
        split = cls(
            strategy=str(data["strategy"]),
            params=dict(data["params"]),
            seed=int(data["seed"]),
            group_column=data["group_column"],
            speaker_independent=bool(data["speaker_independent"]),
            manifest_hash=str(data["manifest_hash"]),
            rows_hash=str(data["rows_hash"]),
            label_scheme=str(data["label_scheme"]),
            folds=folds,
        )
        if "id" in data and data["id"] != split.id:
            raise SplitError(
                f"{source}: recorded id {data['id']!r} does not match the content ({split.id!r}); "
                "the split was edited after it was made"
            )
        return split

    @classmethod
    def from_json(cls, text: str, *, source: str = "split") -> Split:
        """Parse :meth:`to_json` output (see :meth:`from_dict` for the errors)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SplitError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as JSON atomically (temporary file + rename); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, manifest: pd.DataFrame | None = None) -> Split:
        """Read a split written by :meth:`save`; with ``manifest``, :meth:`check` it too.

        Raises
        ------
        SplitError
            Missing or malformed file, or (with ``manifest``) a failed check; :class:`LeakageError` for leaks.
        """
        path = Path(path)
        if not path.is_file():
            raise SplitError(f"no split file at {str(path)!r}")
        split = cls.from_json(path.read_text(encoding="utf-8"), source=str(path))
        if manifest is not None:
            split.check(manifest)
        return split

    # -- checks and views ------------------------------------------------------------------------------

    def check(self, manifest: pd.DataFrame) -> None:
        """Check the split against a manifest; every consumer calls this before using a split.

        Checks: every ``utt_id`` exists; the manifest's rows are those the split was made from (see the
        module docstring); each fold has non-empty train and test parts and no ``utt_id`` in two parts; no
        duplicate-audio group in two parts; for speaker-independent splits no speaker (and no value of
        :attr:`group_column`) shared by test and train/valid, and no speaker shared by train and valid.

        Raises
        ------
        SplitError
            Unknown ``utt_id``, changed rows, empty parts.
        LeakageError
            An utterance, speaker, group or duplicate-audio group on two sides of a fold.
        """
        df = _prepare(manifest)
        used = self.utt_ids()
        missing = sorted(set(used) - set(df["utt_id"]))
        if missing:
            raise SplitError(
                f"split {self.id}: {len(missing)} utt_id(s) not in the manifest, e.g. {missing[0]!r}"
            )
        mh = manifest_hash(df)
        if mh != self.manifest_hash:
            rh = rows_hash(df, used)
            if rh != self.rows_hash:
                raise SplitError(
                    f"split {self.id}: manifest hash {mh} differs from the split's {self.manifest_hash} "
                    "and the speaker or label of at least one of its utterances changed; remake the split"
                )
            log.info(
                "split %s: manifest hash %s differs from the split's %s, but its %d utterances are unchanged",
                self.id,
                mh,
                self.manifest_hash,
                len(used),
            )
        ids = df["utt_id"].to_numpy(dtype=object)
        index = {u: i for i, u in enumerate(ids)}
        columns = ["speaker", "dup_group"]
        if self.speaker_independent and self.group_column not in (None, "speaker"):
            if self.group_column not in df.columns:
                raise SplitError(
                    f"split {self.id}: the manifest has no {self.group_column!r} column to check"
                )
            columns.append(str(self.group_column))
        arrays = {c: df[c].astype(str).to_numpy(dtype=object) for c in columns}
        for fold in self.folds:
            self._check_fold(fold, ids, index, arrays)

    def _check_fold(
        self, fold: Fold, ids: np.ndarray, index: dict[str, int], arrays: dict[str, np.ndarray]
    ) -> None:
        where = f"split {self.id}, fold {fold.index}"
        for name in ("train", "test"):
            if not fold.part(name):
                raise SplitError(f"{where}: the {name} part is empty")
        role = np.full(len(ids), -1)
        for r, name in enumerate(ROLES):
            part = fold.part(name)
            pos = np.fromiter((index[u] for u in part), dtype=np.int64, count=len(part))
            if np.unique(pos).size != pos.size:
                raise SplitError(f"{where}: the {name} part lists an utterance twice")
            clash = pos[role[pos] >= 0]
            if clash.size:
                raise LeakageError(
                    f"{where}: utterance {ids[clash[0]]!r} is in both {ROLES[role[clash[0]]]} and {name}"
                )
            role[pos] = r
        # duplicate-audio groups: never in two parts
        dup = arrays["dup_group"]
        roles_of: dict[str, set[int]] = defaultdict(set)
        for i in np.flatnonzero((dup != "") & (role >= 0)):
            roles_of[dup[i]].add(int(role[i]))
        for group in sorted(roles_of):
            if len(roles_of[group]) > 1:
                r1, r2 = sorted(roles_of[group])[:2]
                example = ids[np.flatnonzero((dup == group) & (role == r2))[0]]
                raise LeakageError(
                    f"{where}: duplicate-audio group {group[:12]} is in both {ROLES[r1]} and {ROLES[r2]} "
                    f"(e.g. {example!r})"
                )
        if not self.speaker_independent:
            return
        for col in [c for c in arrays if c != "dup_group"]:
            values = arrays[col]
            test_vals = set(values[role == 2])
            for r in (0, 1):
                shared = sorted(test_vals & set(values[role == r]))
                if shared:
                    raise LeakageError(
                        f"{where}: {col} {shared[0]!r} is in both test and {ROLES[r]}"
                        + (f" ({len(shared)} {col} values in all)" if len(shared) > 1 else "")
                    )
        speakers = arrays["speaker"]
        shared = sorted(set(speakers[role == 0]) & set(speakers[role == 1]))
        if shared:
            raise LeakageError(f"{where}: speaker {shared[0]!r} is in both train and valid")

    def fold_frame(self) -> pd.DataFrame:
        """Long table of the assignments.

        Returns
        -------
        pd.DataFrame
            Columns ``fold`` (int), ``utt_id``, ``role`` (``train``/``valid``/``test``); one row per utterance
            and fold it takes part in, ordered by fold, role, utt_id.
        """
        records = [(f.index, u, r) for f in self.folds for r in ROLES for u in f.part(r)]
        return pd.DataFrame.from_records(records, columns=["fold", "utt_id", "role"])


def _safe(name: str) -> str:
    """A target name as a path component of a split id (letters, digits, ``_``; the rest ``_``)."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "target"


def check_split(split: Split, manifest: pd.DataFrame) -> None:
    """Same as :meth:`Split.check`."""
    split.check(manifest)


def rows_hash(manifest: pd.DataFrame, utt_ids: Sequence[str] | None = None) -> str:
    """Hash of ``(utt_id, speaker, label)`` of the given rows (all rows by default), order-independent.

    Returns
    -------
    str
        16 hex digits.
    """
    cols = [manifest[c].astype(str).to_numpy(dtype=object) for c in ("utt_id", "speaker", "label")]
    rows = zip(*cols, strict=True)
    if utt_ids is not None:
        wanted = set(utt_ids)
        rows = (r for r in rows if r[0] in wanted)
    text = "".join(f"{u}\x1f{s}\x1f{lab}\n" for u, s, lab in sorted(rows))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_summary(split: Split, manifest: pd.DataFrame) -> dict[str, Any]:
    """Per-fold counts of a split on a manifest.

    Returns
    -------
    dict
        ``id, strategy, protocol, params, seed, speaker_independent, group_column, n_folds`` and ``folds``,
        one dict per fold:
        ``{index, n_train, n_valid, n_test, speakers: {role: [speaker, ...]}, labels: {role: {label: n}}}``.
    """
    rows = _prepare(manifest).set_index("utt_id")
    folds = []
    for fold in split.folds:
        entry: dict[str, Any] = {"index": fold.index}
        entry.update({f"n_{r}": len(fold.part(r)) for r in ROLES})
        speakers, labels = {}, {}
        for r in ROLES:
            sub = rows.loc[list(fold.part(r))]
            speakers[r] = sorted(sub["speaker"].unique().tolist())
            counts = sub["label"].value_counts()
            labels[r] = {str(k): int(counts[k]) for k in sorted(counts.index)}
        entry["speakers"] = speakers
        entry["labels"] = labels
        folds.append(entry)
    return {
        "id": split.id,
        "strategy": split.strategy,
        "protocol": split.protocol,
        "params": split.params,
        "seed": split.seed,
        "speaker_independent": split.speaker_independent,
        "group_column": split.group_column,
        "n_folds": split.n_folds,
        "folds": folds,
    }


# ----------------------------------------------------------------------------------------------------------
# making splits


def make_split(
    manifest: pd.DataFrame,
    strategy: str,
    *,
    seed: int = 0,
    valid_fraction: float = 0.1,
    **params: Any,
) -> Split:
    """Make a split of a manifest (see the module docstring for the strategies).

    Parameters
    ----------
    manifest : pd.DataFrame
        A manifest (:data:`sertool.data.manifest.MANIFEST_COLUMNS`; ``session`` for ``loso-session``). Only
        its columns are used, never the audio.
    strategy : str
        ``random-holdout``, ``random-<k>fold``, ``speaker-<k>fold``, ``loso``, ``loso-session``,
        ``cross-corpus``, ``leave-one-corpus-out``, ``file:PATH``, or the name of a registered or plugin
        :class:`SplitStrategy` (:func:`get_strategy`).
    seed : int, optional
        Seed of every random choice (non-negative).
    valid_fraction : float, optional
        Share of the training part moved to the validation part, in ``[0, 1)``; 0 disables it.
    **params
        The strategy's own parameters (its :attr:`SplitStrategy.params`): ``test_fraction``
        (random-holdout, default 0.2); ``train_corpus`` and ``test_corpus`` (cross-corpus, required);
        ``speaker_independent`` (file, default: inferred).

    Returns
    -------
    Split
        Already checked against ``manifest``.

    Raises
    ------
    ParameterError
        Unknown strategy or parameter, out-of-range value, more folds than speakers, or a fold with too
        few training speakers (utterances) for a validation part (use ``valid_fraction=0``).
    SplitError
        A predefined split file that does not fit the manifest; :class:`LeakageError` if it leaks.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if not 0.0 <= float(valid_fraction) < 1.0:
        raise ParameterError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    df = _prepare(manifest)
    split = get_strategy(strategy).make(df, seed=seed, valid_fraction=float(valid_fraction), params=params)
    split.check(df)
    log.info("made split %s: %d fold(s)", split.id, split.n_folds)
    return split


# ----------------------------------------------------------------------------------------------------------
# strategies: the base class and the registry


class _Required:
    """Type of :data:`REQUIRED`."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a :attr:`SplitStrategy.params` entry that has none: the caller must give it.
REQUIRED: Any = _Required()

_Parts = tuple[np.ndarray, np.ndarray, np.ndarray]  # row positions of train, valid, test
_PLACEHOLDER = re.compile(r"<([a-z_][a-z0-9_]*)>")


def _default_protocol(speaker_independent: bool) -> str:
    return "speaker-independent" if speaker_independent else "speaker-dependent"


class SplitStrategy(ABC):
    """One way of cutting a manifest into folds; subclass it to add a strategy (one class).

    Class attributes declare the strategy; :meth:`folds` computes it. :meth:`make` (called by
    :func:`make_split`) checks and completes the parameters, calls :meth:`folds` and wraps the result in a
    :class:`Split`, which :func:`make_split` then checks for leakage.

    Attributes
    ----------
    name : str
        The name the CLI accepts, or a pattern with integer placeholders (``"speaker-<k>fold"``): an instance
        made from ``"speaker-6fold"`` has ``args == {"k": 6}``, and the values are recorded in
        :attr:`Split.params`.
    description : str
        One line for listings.
    params : Mapping
        The parameters the strategy takes (names the caller may pass to :func:`make_split`) with their
        defaults, :data:`REQUIRED` where there is none.
    group_column : str or None
        Manifest column whose values never straddle test and train/valid (``"speaker"``, ``"session"``,
        ``"corpus"``); ``None`` for utterance-level strategies. :meth:`Split.check` enforces it.
    speaker_independent : bool
        Whether no speaker may be in two parts of a fold (then :meth:`Split.check` enforces it).
    protocol : str or None
        What the leaderboards print for splits of this strategy (``"speaker-independent"``,
        ``"speaker-dependent"``, ``"cross-corpus"``, ...); ``None`` for one decided per split (from
        :attr:`Split.speaker_independent`).
    required_columns : tuple of str
        Manifest columns beyond the standard ones the strategy reads.
    strategy : str
        (Instance) the concrete name the instance was made from, recorded as :attr:`Split.strategy`.
    args : dict
        (Instance) the placeholder values parsed from :attr:`strategy`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Any]] = {}
    group_column: ClassVar[str | None] = None
    speaker_independent: ClassVar[bool] = False
    protocol: ClassVar[str | None] = None
    required_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, strategy: str | None = None, **args: Any) -> None:
        self.strategy = strategy if strategy is not None else self.name
        self.args = args

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.strategy!r})"

    # -- names -------------------------------------------------------------------------------------------

    @classmethod
    def match(cls, text: str) -> dict[str, Any] | None:
        """The placeholder values of ``text`` if it names this strategy (``{}`` for a plain name), else None.

        Placeholders of :attr:`name` (``<k>``) match digits and give ints; override for other name shapes.
        """
        parts = _PLACEHOLDER.split(cls.name)
        regex = "".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>\d+)" for i, p in enumerate(parts))
        m = re.fullmatch(regex, text)
        return None if m is None else {k: int(v) for k, v in m.groupdict().items()}

    @classmethod
    def from_name(cls, text: str) -> SplitStrategy | None:
        """An instance for ``text`` if it names this strategy, else None."""
        args = cls.match(text)
        return None if args is None else cls(text, **args)

    # -- making a split ----------------------------------------------------------------------------------

    def resolve_params(self, params: Mapping[str, Any], df: pd.DataFrame) -> dict[str, Any]:
        """The caller's parameters checked and completed with the defaults of :attr:`params`.

        Parameters
        ----------
        params : Mapping
            What the caller gave (``**params`` of :func:`make_split`).
        df : pd.DataFrame
            The prepared manifest (for messages that list what it holds).

        Raises
        ------
        ParameterError
            A parameter the strategy does not take (the message lists those it takes), or a required one
            missing.
        """
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            takes = ", ".join(self.params) if self.params else "none"
            raise ParameterError(
                f"split strategy {self.strategy!r} takes no parameter {unknown[0]!r} (it takes: {takes})"
            )
        out = {k: params.get(k, default) for k, default in self.params.items()}
        missing = [k for k, v in out.items() if v is REQUIRED]
        if missing:
            col = self.group_column
            held = (
                f" ({col} values in the manifest: {', '.join(sorted(set(df[col].astype(str))))})"
                if col and col in df.columns
                else ""
            )
            raise ParameterError(f"{self.strategy} needs {', '.join(f'{k}=' for k in missing)}{held}")
        return out

    def check_manifest(self, df: pd.DataFrame) -> None:
        """Raise :class:`ParameterError` if the manifest lacks a column in :attr:`required_columns`."""
        for col in (*self.required_columns, *([self.group_column] if self.group_column else [])):
            if col not in df.columns:
                raise ParameterError(f"{self.strategy} needs a {col!r} column in the manifest")

    @abstractmethod
    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """The folds of a prepared manifest, as row positions.

        Parameters
        ----------
        df : pd.DataFrame
            The manifest, validated and sorted by ``utt_id`` (row positions index it).
        params : dict
            :meth:`resolve_params` output.
        valid_fraction : float
            Share of each training part for validation, in ``[0, 1)``; carve it with
            :func:`_carve_valid_by_speaker` (speaker-independent) or :func:`_carve_valid_random`.
        seed : int
            Seed; draw every random choice from ``_rng(seed, fold, ...)`` so splits are reproducible.

        Returns
        -------
        list of tuple
            Per fold, ``(train, valid, test)`` arrays of row positions of ``df``.
        """

    def carve_valid(
        self, df: pd.DataFrame, train_rows: np.ndarray, valid_fraction: float, *, seed: int, fold: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Move part of a fold's training rows to its validation part, as the built-in strategies do.

        Whole speakers (``max(1, round(valid_fraction * n))`` of the ``n`` training speakers, genders
        alternating) when the strategy is :attr:`speaker_independent`, else a stratified random share of
        the utterances (duplicate-audio groups kept whole).

        Parameters
        ----------
        df : pd.DataFrame
            The prepared manifest :meth:`folds` received.
        train_rows : np.ndarray
            Row positions of the fold's training part.
        valid_fraction : float
            Share to move; 0 gives an empty validation part.
        seed, fold : int
            The split's seed and the fold's index (the random choices depend on both).

        Returns
        -------
        tuple of np.ndarray
            ``(train, valid)`` row positions.
        """
        if self.speaker_independent:
            return _carve_valid_by_speaker(
                train_rows, _speaker_groups(df), valid_fraction, _rng(seed, fold, 2)
            )
        return _carve_valid_random(df, train_rows, valid_fraction, _state(seed, fold, 2))

    def recorded_params(self, params: dict[str, Any], valid_fraction: float) -> dict[str, Any]:
        """:attr:`Split.params` of a split: name arguments, then parameters, then ``valid_fraction``."""
        return {**self.args, **params, "valid_fraction": valid_fraction}

    def make(self, df: pd.DataFrame, *, seed: int, valid_fraction: float, params: Mapping[str, Any]) -> Split:
        """The (not yet checked) split of a prepared manifest; :func:`make_split` is the public entry."""
        resolved = self.resolve_params(params, df)
        self.check_manifest(df)
        parts = self.folds(df, resolved, valid_fraction=valid_fraction, seed=seed)
        return _build(
            df,
            self.strategy,
            self.recorded_params(resolved, valid_fraction),
            seed,
            self.group_column,
            bool(self.speaker_independent),
            parts,
        )


_REGISTRY: dict[str, type[SplitStrategy]] = {}
_BAD_PLUGINS: dict[str, str] = {}


def register_strategy(cls: type[SplitStrategy], *, replace: bool = False) -> type[SplitStrategy]:
    """Add a strategy class to the registry under its :attr:`~SplitStrategy.name` (usable as a decorator).

    Parameters
    ----------
    cls : type
        A concrete :class:`SplitStrategy` subclass.
    replace : bool, optional
        Replace a class already registered under that name (otherwise an error).

    Returns
    -------
    type
        ``cls``.

    Raises
    ------
    ParameterError
        Not a concrete subclass, no name, or a name taken (without ``replace``).
    """
    problem = _class_problem(cls)
    if problem:
        raise ParameterError(f"cannot register split strategy {cls!r}: {problem}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls and not replace:
        raise ParameterError(
            f"split strategy {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__}); "
            "pass replace=True to replace it"
        )
    _REGISTRY[cls.name] = cls
    return cls


def unregister_strategy(name: str) -> None:
    """Remove the strategy registered under ``name`` (a no-op if there is none)."""
    _REGISTRY.pop(name, None)


def _class_problem(obj: Any) -> str | None:
    """Why ``obj`` cannot serve as a strategy class, or None."""
    if not (isinstance(obj, type) and issubclass(obj, SplitStrategy)):
        return f"a {type(obj).__name__}, not a sertool.splits.SplitStrategy subclass"
    if getattr(obj, "__abstractmethods__", None):
        return f"{obj.__name__} does not implement {', '.join(sorted(obj.__abstractmethods__))}"
    if not isinstance(obj.name, str) or not obj.name:
        return f"{obj.__name__} has no name"
    if obj.protocol is not None and not (isinstance(obj.protocol, str) and obj.protocol):
        return f"{obj.__name__}.protocol must be a non-empty str or None"
    if not isinstance(obj.params, Mapping):
        return f"{obj.__name__}.params must be a mapping of parameter names to defaults"
    return None


def _plugin_strategies() -> dict[str, type[SplitStrategy]]:
    """Usable strategy classes of the ``sertool.splits`` plugins, by entry-point name.

    Plugins whose object is not a strategy class, or that reuse a built-in name, are left out with one
    warning each; a plugin that failed to import was already reported by :func:`sertool.plugins.load_group`.
    """
    from sertool import plugins

    out: dict[str, type[SplitStrategy]] = {}
    for entry, obj in plugins.load_group(PLUGIN_GROUP).items():
        problem = _class_problem(obj)
        if problem is None and obj.name in _REGISTRY and _REGISTRY[obj.name] is not obj:
            problem = f"it reuses the name {obj.name!r} of a registered strategy, which wins"
        if problem is not None:
            if _BAD_PLUGINS.get(entry) != problem:
                _BAD_PLUGINS[entry] = problem
                log.warning("split-strategy plugin %r is left out: %s", entry, problem)
            continue
        out[entry] = obj
    return out


def _find(name: str) -> SplitStrategy | None:
    """The strategy that ``name`` names: registered classes first (in order), then plugins."""
    for cls in _REGISTRY.values():
        found = cls.from_name(name)
        if found is not None:
            return found
    for entry, cls in _plugin_strategies().items():
        try:
            found = cls.from_name(name)
        except Exception as exc:  # a plugin's bug must not hide the other strategies
            log.warning(
                "split-strategy plugin %r failed on name %r: %s: %s", entry, name, type(exc).__name__, exc
            )
            continue
        if found is not None:
            return found
    return None


def get_strategy(name: str) -> SplitStrategy:
    """The strategy instance a name asks for (``"loso"``, ``"speaker-6fold"`` with ``args == {"k": 6}``).

    Registered strategies (the built-ins, and any :func:`register_strategy` added) are looked up first,
    then the classes of the installed ``sertool.splits`` plugins.

    Raises
    ------
    ParameterError
        No strategy has that name (the message lists the known ones).
    """
    text = str(name).strip()
    found = _find(text)
    if found is None:
        from sertool import plugins

        broken = plugins.plugin_errors().get((PLUGIN_GROUP, text.lower()))
        raise ParameterError(
            f"unknown split strategy {text!r}; known: {', '.join(list_strategies())}"
            + (f"; the plugin {text.lower()!r} failed to load: {broken}" if broken else "")
        )
    return found


def strategy_class(name: str) -> type[SplitStrategy] | None:
    """The class of strategy ``name`` (as :attr:`Split.strategy` records it), or None if none knows it."""
    found = _find(str(name).strip())
    return None if found is None else type(found)


def list_strategies() -> dict[str, type[SplitStrategy]]:
    """Every strategy by name (or name pattern): the registered ones, then the plugins' classes."""
    out = dict(_REGISTRY)
    for cls in _plugin_strategies().values():
        out.setdefault(cls.name, cls)
    return out


def _build(
    df: pd.DataFrame,
    strategy: str,
    params: dict[str, Any],
    seed: int,
    group: str | None,
    si: bool,
    parts: list[_Parts],
) -> Split:
    ids = df["utt_id"].to_numpy()
    folds = tuple(Fold(i, *(tuple(sorted(ids[p].tolist())) for p in part)) for i, part in enumerate(parts))
    used = sorted({u for f in folds for r in ROLES for u in f.part(r)})
    return Split(
        strategy=strategy,
        params=params,
        seed=seed,
        group_column=group,
        speaker_independent=si,
        manifest_hash=manifest_hash(df),
        rows_hash=rows_hash(df, used),
        label_scheme=str(df.attrs.get("label_scheme", "native-v1")),
        folds=folds,
    )


def _prepare(manifest: pd.DataFrame) -> pd.DataFrame:
    """Validated copy sorted by utt_id with string speaker/label/dup_group columns; attrs kept."""
    validate_manifest(manifest)
    df = manifest.sort_values("utt_id", kind="stable").reset_index(drop=True)
    df = df.assign(
        utt_id=df["utt_id"].astype(str),
        speaker=df["speaker"].astype(str),
        label=df["label"].astype(str),
        dup_group=df["dup_group"].fillna("").astype(str),
    )
    df.attrs = dict(manifest.attrs)
    return df


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _state(seed: int, *keys: int) -> int:
    """An int ``random_state`` for scikit-learn derived from the seed and keys."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def _round(x: float) -> int:
    return math.floor(x + 0.5)


# -- random (speaker-dependent) strategies ----------------------------------------------------------------


def _units(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Duplicate-aware units: (unit keys, unit labels, row positions per unit), sorted by key.

    A unit is one utterance, or all utterances of one duplicate-audio group; its label is that of its first
    member (by utt_id).
    """
    keys = np.where(df["dup_group"] != "", "dup:" + df["dup_group"], "utt:" + df["utt_id"])
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    members = np.split(order, starts[1:])
    labels = df["label"].to_numpy()[[m[0] for m in members]]
    return sorted_keys[starts], labels, members


def _stratified_pick(labels: np.ndarray, n_pick: int, random_state: int, what: str) -> np.ndarray:
    """Positions of ``n_pick`` of ``labels`` chosen stratified (plain random if stratifying is impossible)."""
    idx = np.arange(len(labels))
    try:
        _, picked = train_test_split(idx, test_size=n_pick, stratify=labels, random_state=random_state)
    except ValueError as exc:
        log.info("%s: cannot stratify (%s); picking at random", what, exc)
        _, picked = train_test_split(idx, test_size=n_pick, random_state=random_state)
    return np.sort(picked)


def _carve_valid_random(
    df: pd.DataFrame, train_rows: np.ndarray, vf: float, state: int
) -> tuple[np.ndarray, np.ndarray]:
    if vf == 0.0:
        return train_rows, train_rows[:0]
    sub = df.iloc[train_rows]
    _, labels, members = _units(sub)
    if len(members) < 2:
        raise ParameterError(
            f"valid_fraction={vf}: a fold has {len(members)} training utterance(s), too few for a validation "
            "part; use valid_fraction=0"
        )
    n_valid = min(len(members) - 1, max(1, _round(vf * len(members))))
    picked = _stratified_pick(labels, n_valid, state, "validation part")
    is_valid = np.zeros(len(members), bool)
    is_valid[picked] = True
    valid = np.concatenate([members[i] for i in np.flatnonzero(is_valid)])
    train = np.concatenate([members[i] for i in np.flatnonzero(~is_valid)])
    return np.sort(train_rows[train]), np.sort(train_rows[valid])


def _random_holdout(df: pd.DataFrame, tf: float, vf: float, seed: int) -> list[_Parts]:
    _, labels, members = _units(df)
    if len(members) < 2:
        raise ParameterError(f"random-holdout needs at least 2 utterances, the manifest has {len(members)}")
    n_test = min(len(members) - 1, max(1, _round(tf * len(members))))
    picked = _stratified_pick(labels, n_test, _state(seed, 0, 1), "random-holdout test part")
    is_test = np.zeros(len(members), bool)
    is_test[picked] = True
    test = np.sort(np.concatenate([members[i] for i in np.flatnonzero(is_test)]))
    rest = np.sort(np.concatenate([members[i] for i in np.flatnonzero(~is_test)]))
    train, valid = _carve_valid_random(df, rest, vf, _state(seed, 0, 2))
    return [(train, valid, test)]


def _random_kfold(df: pd.DataFrame, k: int, vf: float, seed: int) -> list[_Parts]:
    _, labels, members = _units(df)
    if not 2 <= k <= len(members):
        raise ParameterError(
            f"random-{k}fold: k must be in [2, {len(members)}] (the number of units), got {k}"
        )
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=_state(seed, 0, 0))
    try:
        unit_splits = list(skf.split(np.zeros(len(labels)), labels))
    except ValueError as exc:
        raise ParameterError(f"random-{k}fold: {exc}") from None
    out = []
    for i, (tr_u, te_u) in enumerate(unit_splits):
        test = np.sort(np.concatenate([members[j] for j in te_u]))
        rest = np.sort(np.concatenate([members[j] for j in tr_u]))
        train, valid = _carve_valid_random(df, rest, vf, _state(seed, i, 2))
        out.append((train, valid, test))
    return out


# -- group (speaker-independent) strategies ---------------------------------------------------------------


def _linked_groups(df: pd.DataFrame, col: str, links: Sequence[str]) -> pd.Series:
    """Values of ``col`` per row, with values that share a value of a ``links`` column merged (union-find).

    The merged group is named by its smallest member. Empty link values (no duplicate) link nothing.
    """
    values = df[col].astype(str)
    parent = {v: v for v in sorted(set(values))}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for link in links:
        linked = df[link].astype(str)
        mask = linked != ""
        for _, members in values[mask].groupby(linked[mask], sort=True):
            uniq = sorted(set(members))
            for other in uniq[1:]:
                a, b = find(uniq[0]), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    merged = {v: find(v) for v in parent}
    joined = sorted({v for v, r in merged.items() if v != r})
    if joined:
        log.warning(
            "%s values joined into one group because they share %s: %s",
            col,
            "/".join(links),
            ", ".join(f"{v}->{merged[v]}" for v in joined[:10]),
        )
    return values.map(merged)


def _group_genders(df: pd.DataFrame, groups: pd.Series) -> dict[str, str]:
    """Gender of each group: the single known gender of its rows, else ``"unknown"``/``"mixed"``."""
    known: dict[str, set[str]] = {}
    for g, x in zip(groups.to_numpy(dtype=object), df["gender"].to_numpy(dtype=object), strict=True):
        text = "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)
        seen = known.setdefault(str(g), set())
        if text and text not in ("nan", "None", "<NA>"):
            seen.add(text)
    return {g: next(iter(v)) if len(v) == 1 else ("mixed" if v else "unknown") for g, v in known.items()}


def _gender_order(names: list[str], genders: dict[str, str], rng: np.random.Generator) -> list[list[str]]:
    """Names split by gender (largest gender first, then by name), each list in seeded random order."""
    by: dict[str, list[str]] = defaultdict(list)
    for n in sorted(names):
        by[genders[n]].append(n)
    out = []
    for g in sorted(by, key=lambda g: (-len(by[g]), g)):
        members = by[g]
        out.append([members[i] for i in rng.permutation(len(members))])
    return out


def _speaker_groups(df: pd.DataFrame) -> tuple[np.ndarray, dict[str, str]]:
    """Speaker group per row (speakers sharing duplicate audio merged) and the gender of each group."""
    speakers = _linked_groups(df, "speaker", ["dup_group"])
    return speakers.to_numpy(dtype=object), _group_genders(df, speakers)


def _carve_valid_by_speaker(
    train_rows: np.ndarray,
    speakers: tuple[np.ndarray, dict[str, str]],
    vf: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Move whole speakers (``max(1, round(vf * n))`` of the ``n`` training speakers) to the valid part.

    Parameters
    ----------
    train_rows : np.ndarray
        Row positions of the training part, shape ``(n_rows,)``.
    speakers : tuple
        :func:`_speaker_groups` of the manifest.
    vf : float
        Validation fraction; 0 returns an empty validation part.
    rng : np.random.Generator
        Source of the seeded order (genders alternate).
    """
    if vf == 0.0:
        return train_rows, train_rows[:0]
    spk = speakers[0][train_rows]
    names = sorted(set(spk))
    if len(names) < 2:
        raise ParameterError(
            f"valid_fraction={vf}: a fold has {len(names)} training speaker(s) ({', '.join(names)}), too few "
            "to move whole speakers to a validation part; use valid_fraction=0"
        )
    n_valid = min(len(names) - 1, max(1, _round(vf * len(names))))
    lists = _gender_order(names, speakers[1], rng)
    interleaved = [lst[i] for i in range(max(map(len, lists))) for lst in lists if i < len(lst)]
    chosen = set(interleaved[:n_valid])
    is_valid = np.isin(spk, sorted(chosen))
    return train_rows[~is_valid], train_rows[is_valid]


def _balanced_assign(
    names: list[str], counts: np.ndarray, genders: dict[str, str], k: int, rng: np.random.Generator
) -> list[list[str]]:
    """Assign groups to ``k`` folds with balanced group counts, genders and label proportions.

    Parameters
    ----------
    names : list of str
        Group names (sorted), length G.
    counts : np.ndarray
        Label counts per group, shape ``(G, n_labels)``.
    genders : dict
        Group -> gender.
    k : int
        Number of folds.
    rng : np.random.Generator
        Source of the order in which groups are placed.

    Returns
    -------
    list of list of str
        The groups of each fold, sorted.
    """
    n = len(names)
    quotas = [n // k + (1 if i < n % k else 0) for i in range(k)]
    pos = {name: i for i, name in enumerate(names)}
    totals = counts.sum(axis=0).astype(float)
    totals[totals == 0] = 1.0
    fold_counts = np.zeros((k, counts.shape[1]))
    members: list[list[str]] = [[] for _ in range(k)]
    per_gender = [defaultdict(int) for _ in range(k)]
    for name in [x for lst in _gender_order(names, genders, rng) for x in lst]:
        c, g = counts[pos[name]], genders[name]
        best: tuple[Any, ...] | None = None
        for f in range(k):
            if len(members[f]) >= quotas[f]:
                continue
            fold_counts[f] += c
            cost = round(float(np.mean(np.std(fold_counts / totals, axis=0))), 12)
            fold_counts[f] -= c
            key = (per_gender[f][g], cost, len(members[f]), f)
            if best is None or key < best:
                best = key
        assert best is not None  # quotas sum to n
        f = best[-1]
        members[f].append(name)
        per_gender[f][g] += 1
        fold_counts[f] += c
    return [sorted(m) for m in members]


def _speaker_kfold(df: pd.DataFrame, k: int, vf: float, seed: int) -> list[_Parts]:
    speakers = _speaker_groups(df)
    names = sorted(set(speakers[0]))
    if not 2 <= k <= len(names):
        raise ParameterError(
            f"speaker-{k}fold: k must be in [2, {len(names)}] (the number of speakers), got {k}"
        )
    labels = sorted(set(df["label"]))
    counts = (
        pd.crosstab(speakers[0], df["label"].to_numpy(dtype=object))
        .reindex(index=names, columns=labels, fill_value=0)
        .to_numpy()
    )
    assignment = _balanced_assign(names, counts, speakers[1], k, _rng(seed, 0, 0))
    out = []
    rows = np.arange(len(df))
    for i, test_groups in enumerate(assignment):
        is_test = np.isin(speakers[0], test_groups)
        train, valid = _carve_valid_by_speaker(rows[~is_test], speakers, vf, _rng(seed, i, 2))
        out.append((train, valid, rows[is_test]))
    return out


def _leave_one_group_out(df: pd.DataFrame, col: str, vf: float, seed: int) -> list[_Parts]:
    links = ["dup_group"] if col == "speaker" else ["dup_group", "speaker"]
    groups = _linked_groups(df, col, links).to_numpy(dtype=object)
    speakers = _speaker_groups(df)
    names = sorted(set(groups))
    if len(names) < 2:
        raise ParameterError(
            f"leave-one-{col}-out needs at least 2 {col} values, the manifest has {len(names)}"
        )
    rows = np.arange(len(df))
    out = []
    for i, name in enumerate(names):
        is_test = groups == name
        train, valid = _carve_valid_by_speaker(rows[~is_test], speakers, vf, _rng(seed, i, 2))
        out.append((train, valid, rows[is_test]))
    return out


# -- predefined folds ---------------------------------------------------------------------------------------


def _from_file(
    df: pd.DataFrame,
    path_str: str,
    *,
    seed: int,
    valid_fraction: float,
    speaker_independent: bool | None = None,
) -> Split:
    path = Path(path_str).expanduser()
    if not path_str or not path.is_file():
        raise ParameterError(f"file split: no file at {path_str!r}")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    explicit: list[tuple[str, list[str], list[str] | None, list[str] | None]]  # label, test, train, valid
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SplitError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and data.get("format") == FORMAT:
            log.info("%s: a saved sertool split; used as is (seed and valid_fraction ignored)", path)
            return Split.from_dict(data, source=str(path))
        if not isinstance(data, dict) or not isinstance(data.get("folds"), list) or not data["folds"]:
            raise SplitError(f'{path}: expected a sertool split or {{"folds": [{{"train", "test"}}, ...]}}')
        explicit = []
        for i, f in enumerate(data["folds"]):
            if not isinstance(f, dict) or "train" not in f or "test" not in f:
                raise SplitError(f"{path}: fold {i} lacks 'train' or 'test'")
            valid = [str(u) for u in f["valid"]] if "valid" in f else None
            explicit.append((str(i), [str(u) for u in f["test"]], [str(u) for u in f["train"]], valid))
    else:
        explicit = _read_fold_csv(path)
    known = set(df["utt_id"])
    listed = sorted({u for _, te, tr, va in explicit for u in (*te, *(tr or ()), *(va or ()))})
    missing = [u for u in listed if u not in known]
    if missing:
        raise SplitError(f"{path}: {len(missing)} utt_id(s) not in the manifest, e.g. {missing[0]!r}")
    if len(listed) < len(df):
        log.info("%s: %d manifest utterance(s) are in no fold", path, len(df) - len(listed))
    pos = pd.Series(np.arange(len(df)), index=df["utt_id"])
    all_rows = np.sort(pos[listed].to_numpy())
    folds_rows = []
    for _, test_ids, train_ids, valid_ids in explicit:
        test = np.sort(pos[test_ids].to_numpy())
        # utt_id,fold CSV (no train list): everything listed outside the test fold trains
        rest = np.setdiff1d(all_rows, test) if train_ids is None else np.sort(pos[train_ids].to_numpy())
        folds_rows.append((rest, None if valid_ids is None else np.sort(pos[valid_ids].to_numpy()), test))
    speakers = _speaker_groups(df)
    spk = df["speaker"].to_numpy(dtype=object)
    if speaker_independent is None:
        si = all(
            not (set(spk[a]) & set(spk[b]))
            for tr, va, te in folds_rows
            for a, b in ((te, tr), (te, va), (tr, va))
            if a is not None and b is not None
        )
        log.info("%s: folds are %sspeaker-independent", path, "" if si else "NOT ")
    else:
        si = bool(speaker_independent)
    parts: list[_Parts] = []
    for i, (rest, valid, test) in enumerate(folds_rows):
        if valid is not None:
            parts.append((rest, valid, test))
        elif si:
            parts.append((*_carve_valid_by_speaker(rest, speakers, valid_fraction, _rng(seed, i, 2)), test))
        else:
            parts.append((*_carve_valid_random(df, rest, valid_fraction, _state(seed, i, 2)), test))
    params = {
        "file": path.name,
        "sha256": digest,
        "fold_labels": [label for label, *_ in explicit],
        "valid_fraction": valid_fraction,
    }
    return _build(df, "file", params, seed, "speaker" if si else None, si, parts)


def _read_fold_csv(path: Path) -> list[tuple[str, list[str], list[str] | None, list[str] | None]]:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise SplitError(f"{path}: not a readable CSV ({exc})") from None
    table.columns = [c.strip() for c in table.columns]
    if "utt_id" not in table.columns or "fold" not in table.columns:
        raise SplitError(
            f"{path}: a fold CSV needs columns utt_id,fold[,role]; found {', '.join(table.columns)}"
        )
    if table.empty:
        raise SplitError(f"{path}: no rows")
    labels = sorted(
        set(table["fold"]), key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s)
    )
    has_role = "role" in table.columns
    key = ["utt_id", "fold"] if has_role else ["utt_id"]
    dup = table[table.duplicated(key)]
    if len(dup):
        raise SplitError(
            f"{path}: utt_id {dup['utt_id'].iloc[0]!r} is listed twice"
            + (f" in fold {dup['fold'].iloc[0]!r}" if has_role else "")
        )
    if has_role:
        bad = sorted(set(table["role"]) - set(ROLES))
        if bad:
            raise SplitError(f"{path}: unknown role {bad[0]!r} (known: {', '.join(ROLES)})")
    out = []
    for label in labels:
        sub = table[table["fold"] == label]
        if has_role:
            by_role = {r: sub.loc[sub["role"] == r, "utt_id"].tolist() for r in ROLES}
            out.append((label, by_role["test"], by_role["train"], by_role["valid"] or None))
        else:
            out.append((label, sub["utt_id"].tolist(), None, None))
    return out


# ----------------------------------------------------------------------------------------------------------
# the built-in strategies


def _corpus_fold(
    df: pd.DataFrame,
    test: np.ndarray,
    train_rows: np.ndarray,
    speakers: tuple[np.ndarray, dict[str, str]],
    vf: float,
    rng: np.random.Generator,
    what: str,
) -> _Parts:
    """One corpus-level fold: training rows that duplicate test audio are left out, validation by speaker."""
    test_dups = set(df["dup_group"].iloc[test]) - {""}
    dup_in_train = df["dup_group"].iloc[train_rows].isin(test_dups).to_numpy()
    if dup_in_train.any():
        log.warning(
            "%s: %d training utterance(s) duplicate test audio and are left out",
            what,
            int(dup_in_train.sum()),
        )
        train_rows = train_rows[~dup_in_train]
    train, valid = _carve_valid_by_speaker(train_rows, speakers, vf, rng)
    return train, valid, test


class RandomHoldout(SplitStrategy):
    """One stratified train/test split over utterances; speaker-dependent."""

    name = "random-holdout"
    description = "stratified train/test over utterances (test_fraction=0.2); speaker-dependent"
    params: ClassVar[Mapping[str, Any]] = {"test_fraction": 0.2}
    protocol = "speaker-dependent"

    def resolve_params(self, params: Mapping[str, Any], df: pd.DataFrame) -> dict[str, Any]:
        """See :meth:`SplitStrategy.resolve_params`; ``test_fraction`` must be in (0, 1)."""
        value = super().resolve_params(params, df)["test_fraction"]
        try:
            tf = float(value)
        except (TypeError, ValueError):
            tf = math.nan
        if not 0.0 < tf < 1.0:
            raise ParameterError(f"test_fraction must be in (0, 1), got {value!r}")
        return {"test_fraction": tf}

    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """See :meth:`SplitStrategy.folds`."""
        return _random_holdout(df, params["test_fraction"], valid_fraction, seed)


class RandomKFold(SplitStrategy):
    """Stratified k-fold over utterances (duplicate-audio groups kept whole); speaker-dependent."""

    name = "random-<k>fold"
    description = "stratified k-fold over utterances; speaker-dependent"
    protocol = "speaker-dependent"

    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """See :meth:`SplitStrategy.folds`."""
        return _random_kfold(df, self.args["k"], valid_fraction, seed)


class SpeakerKFold(SplitStrategy):
    """k folds of whole speakers with balanced speaker counts, genders and labels."""

    name = "speaker-<k>fold"
    description = "k folds of whole speakers, balanced speaker counts and genders; speaker-independent"
    group_column = "speaker"
    speaker_independent = True
    protocol = "speaker-independent"

    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """See :meth:`SplitStrategy.folds`."""
        return _speaker_kfold(df, self.args["k"], valid_fraction, seed)


class LeaveOneSpeakerOut(SplitStrategy):
    """One fold per speaker."""

    name = "loso"
    description = "leave one speaker out; speaker-independent"
    group_column = "speaker"
    speaker_independent = True
    protocol = "speaker-independent"

    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """See :meth:`SplitStrategy.folds`."""
        return _leave_one_group_out(df, "speaker", valid_fraction, seed)


class LeaveOneSessionOut(SplitStrategy):
    """One fold per value of the ``session`` column (IEMOCAP)."""

    name = "loso-session"
    description = "leave one session out (column 'session', IEMOCAP); speaker-independent"
    group_column = "session"
    speaker_independent = True
    protocol = "speaker-independent"

    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """See :meth:`SplitStrategy.folds`."""
        return _leave_one_group_out(df, "session", valid_fraction, seed)


class CrossCorpus(SplitStrategy):
    """One fold: train on one corpus of a merged manifest, test on another."""

    name = "cross-corpus"
    description = "train on train_corpus, test on test_corpus (one fold)"
    params: ClassVar[Mapping[str, Any]] = {"train_corpus": REQUIRED, "test_corpus": REQUIRED}
    group_column = "corpus"
    speaker_independent = True
    protocol = "cross-corpus"

    def resolve_params(self, params: Mapping[str, Any], df: pd.DataFrame) -> dict[str, Any]:
        """See :meth:`SplitStrategy.resolve_params`; both corpora must be in the manifest and differ."""
        out = super().resolve_params(params, df)
        present = sorted(set(df["corpus"].astype(str)))
        for key, value in out.items():
            if str(value) not in present:
                raise ParameterError(
                    f"{self.strategy}: {key}={value!r} is not in the manifest ({', '.join(present)})"
                )
        chosen = {k: str(v) for k, v in out.items()}
        if chosen["train_corpus"] == chosen["test_corpus"]:
            raise ParameterError(
                f"{self.strategy}: train_corpus and test_corpus are both {chosen['train_corpus']!r}"
            )
        return chosen

    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """See :meth:`SplitStrategy.folds`."""
        corpus = df["corpus"].astype(str).to_numpy()
        rows = np.arange(len(df))
        test, train = rows[corpus == params["test_corpus"]], rows[corpus == params["train_corpus"]]
        speakers = _speaker_groups(df)
        return [_corpus_fold(df, test, train, speakers, valid_fraction, _rng(seed, 0, 2), self.strategy)]


class LeaveOneCorpusOut(SplitStrategy):
    """One fold per corpus of a merged manifest: test on all of it, train on all the other corpora.

    Folds follow the sorted corpus names, which :attr:`Split.params` records as ``corpora``. Training rows
    that duplicate a test clip's audio are left out (with a warning); the validation part is whole speakers of
    the training corpora. Speakers are corpus-prefixed, so the split is speaker-independent.
    """

    name = "leave-one-corpus-out"
    description = "one fold per corpus of a merged manifest: test on it, train on the others"
    group_column = "corpus"
    speaker_independent = True
    protocol = "leave-one-corpus-out"

    def resolve_params(self, params: Mapping[str, Any], df: pd.DataFrame) -> dict[str, Any]:
        """See :meth:`SplitStrategy.resolve_params`; adds ``corpora`` (sorted), at least two of them."""
        out = super().resolve_params(params, df)
        corpora = sorted(set(df["corpus"].astype(str)))
        if len(corpora) < 2:
            raise ParameterError(
                f"{self.strategy} needs a merged manifest of at least 2 corpora (column 'corpus'); this one "
                f"holds only {corpora[0]!r} (merge corpora: --corpus a,b --root A,B; or use loso)"
            )
        return {**out, "corpora": corpora}

    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """See :meth:`SplitStrategy.folds`."""
        corpus = df["corpus"].astype(str).to_numpy()
        rows = np.arange(len(df))
        speakers = _speaker_groups(df)
        return [
            _corpus_fold(
                df,
                rows[corpus == name],
                rows[corpus != name],
                speakers,
                valid_fraction,
                _rng(seed, i, 2),
                f"{self.strategy}, fold {i} ({name})",
            )
            for i, name in enumerate(params["corpora"])
        ]


class FileSplit(SplitStrategy):
    """Predefined folds from a file (``file:PATH``); see the module docstring for the formats.

    Whether its splits are speaker-independent is decided per file, so it declares no protocol: a split's
    :attr:`Split.protocol` follows its :attr:`Split.speaker_independent`.
    """

    name = "file:PATH"
    description = "predefined folds from a CSV (utt_id,fold[,role]) or a JSON split file"
    params: ClassVar[Mapping[str, Any]] = {"speaker_independent": None}
    protocol = None

    @classmethod
    def match(cls, text: str) -> dict[str, Any] | None:
        """``file:PATH`` (and ``file``, the strategy recorded in the splits it makes)."""
        if text.startswith("file:"):
            return {"path": text[5:]}
        return {"path": ""} if text == "file" else None

    def folds(
        self, df: pd.DataFrame, params: dict[str, Any], *, valid_fraction: float, seed: int
    ) -> list[_Parts]:
        """Not used: :meth:`make` reads the file (which may hold a whole saved split)."""
        raise NotImplementedError("FileSplit makes its split in make()")

    def make(self, df: pd.DataFrame, *, seed: int, valid_fraction: float, params: Mapping[str, Any]) -> Split:
        """See :meth:`SplitStrategy.make`."""
        resolved = self.resolve_params(params, df)
        return _from_file(df, self.args["path"], seed=seed, valid_fraction=valid_fraction, **resolved)


for _cls in (
    RandomHoldout,
    RandomKFold,
    SpeakerKFold,
    LeaveOneSpeakerOut,
    LeaveOneSessionOut,
    CrossCorpus,
    LeaveOneCorpusOut,
    FileSplit,
):
    register_strategy(_cls)

#: The built-in strategy names (as the CLI spells them) and one-line descriptions.
STRATEGIES: dict[str, str] = {name: cls.description for name, cls in _REGISTRY.items()}
