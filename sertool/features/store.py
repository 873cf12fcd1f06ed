"""The parquet feature cache.

Layout::

    <root>/<corpus>/<extractor name>/v<version>-<params hash>/     one *entry* per corpus and Extractor.key
        meta.json                    extractor identity, package versions, creation time
        state.json                   written by the runner when a pass over a manifest finished
        part-0000-<hash>.parquet     a shard: rows of (utt_id, sha1, outputs ...)
        part-0000-<hash>.parquet.done   its done marker: rows, bytes and SHA-1 of the shard file
        .lock                        filelock guarding writers of this entry

Rules (the cache's contract; tests exercise each):

- A shard is written to a temporary name, fsynced, renamed, and only then given its ``.done`` marker (itself
  written atomically). A shard without a marker is never read; writers delete such leftovers (a killed
  writer's) under the entry lock. Writers hold the lock only while writing one shard, so concurrent runs on
  one entry interleave safely; rows another process wrote meanwhile are dropped from the shard, not stored
  twice.
- A shard whose bytes do not match its marker (size or SHA-1), or that parquet cannot read, is reported with
  ``logging.error`` and deleted, so its rows count as missing and the runner recomputes them.
- The first time a :class:`FeatureStore` instance reads a shard it checks the file's size and SHA-1 against
  the marker (one full read); later reads in the same instance skip the hash.
- A row is valid only if both its ``utt_id`` and its audio ``sha1`` match the manifest: changing a clip's
  audio invalidates exactly that row; changing an extractor parameter changes the key, hence the entry.
- Each output ``o`` is stored as two columns: ``o`` (``large_binary``: the row's array as little-endian
  float32, or float16 when the extractor emits float16; the dtype is in the field metadata) and ``o.shape``
  (``list<int32>``). Raw bytes decode about 3x faster than a parquet ``list<float>`` column (no
  per-value repetition levels) and the whole column is viewed as one numpy buffer, so 1440 x 7 x 512
  pooled vectors load in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from sertool.exceptions import CacheError, ParameterError
from sertool.features.base import Extractor, FeatureView, get_extractor, parse_view
from sertool.provenance import package_versions
from sertool.util import atomic_write_bytes, cache_dir

__all__ = ["FeatureSet", "FeatureStore", "default_cache_dir", "select_frames"]

log = logging.getLogger(__name__)

META = "meta.json"
STATE = "state.json"
LOCK = ".lock"
DONE = ".done"
_SHARD = re.compile(r"^part-(\d{4,})-([0-9a-f]{10})\.parquet$")
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: Packages whose versions go into meta.json (optional ones only when already imported).
_VERSIONED = ("sertool", "numpy", "scipy", "pandas", "pyarrow", "librosa", "soundfile", "soxr")
_OPTIONAL = ("torch", "transformers", "ctranslate2", "opensmile")

#: The cache folder (:func:`sertool.util.cache_dir`), under the name callers have imported from here.
default_cache_dir = cache_dir


@dataclass
class FeatureSet:
    """Features of the utterances of a manifest, in manifest order.

    Attributes
    ----------
    utt_ids : list of str
        Utterance ids, in manifest order (only those found when loaded with ``allow_missing=True``).
    X : np.ndarray or list of np.ndarray
        ``output="pooled"``: float32 array of shape ``(n, d)`` (the view applied). ``output="frames"`` (or any
        sequence output): a list of ``n`` float32 arrays of shape ``(T_i, F)``.
    key : str
        Extractor key (``<name>/v<version>-<hash>``).
    view : str
        Canonical view name (``"whisper-base@3"``).
    output : str
        Output read.
    missing : list of str
        Utterance ids of the manifest that were not in the cache (empty unless ``allow_missing=True``).
    """

    utt_ids: list[str]
    X: np.ndarray | list[np.ndarray]
    key: str
    view: str
    output: str = "pooled"
    missing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utt_ids)


@dataclass(frozen=True)
class _Shard:
    path: Path
    index: int

    @property
    def marker(self) -> Path:
        return self.path.with_name(self.path.name + DONE)


def _package_versions() -> dict[str, str]:
    """What ``meta.json`` records: the Python version, then the installed versions of :data:`_VERSIONED` and of
    those :data:`_OPTIONAL` packages this process has imported (absent ones left out)."""
    names = _VERSIONED + tuple(n for n in _OPTIONAL if n in sys.modules)
    return {"python": sys.version.split()[0], **package_versions(names)}


def select_frames(
    frames: np.ndarray,
    view: FeatureView,
    frame_layers: Sequence[int] | None,
    default_layers: Sequence[int] | None,
    *,
    what: str = "frames",
) -> np.ndarray:
    """Apply a view to one clip's frame output.

    Parameters
    ----------
    frames : np.ndarray, shape (T, F) or (L, T, F)
        One clip's ``"frames"`` output (layered for Whisper/SSL extractors).
    view : FeatureView
        The view (``@all``, chosen layers, or plain: the default layers when they were stored, else all).
    frame_layers : sequence of int, optional
        The model layers the layer axis holds (``None``: positions on that axis).
    default_layers : sequence of int, optional
        The extractor's default layers.
    what : str, optional
        Names the data in error messages.

    Returns
    -------
    np.ndarray, float32, shape (T, F) or (T, n_selected * F)
    """
    if frames.ndim == 2:
        if view.layers is not None:
            raise ParameterError(f"view {view.name!r}: {what} has no layer axis")
        return frames.astype(np.float32)
    labels = list(frame_layers) if frame_layers is not None else list(range(frames.shape[0]))
    if view.all_layers:
        want = labels
    elif view.layers is not None:
        want = list(view.layers)
    else:
        want = (
            list(default_layers)
            if default_layers is not None and set(default_layers) <= set(labels)
            else labels
        )
    bad = [w for w in want if w not in labels]
    if bad:
        raise ParameterError(f"view {view.name!r}: layers {bad} not among the stored frame layers {labels}")
    sel = frames[[labels.index(w) for w in want]]  # (L_sel, T, F)
    return np.ascontiguousarray(sel.transpose(1, 0, 2).reshape(frames.shape[1], -1), dtype=np.float32)


def _check_name(value: str, what: str) -> str:
    if not value or not _SAFE.match(value) or value in {".", ".."}:
        raise ParameterError(f"{what} {value!r} cannot be used as a cache folder name")
    return value


class FeatureStore:
    """A feature cache rooted at a folder (see the module docstring for the layout and rules).

    Parameters
    ----------
    root : str or path-like, optional
        Cache folder (``~`` and ``$VARS`` expanded); default :func:`sertool.util.cache_dir`: ``$SERTOOL_CACHE``,
        else ``~/.cache/sertool``.
    lock_timeout : float, optional
        Seconds a writer waits for an entry lock before raising :class:`CacheError`.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, lock_timeout: float = 600.0) -> None:
        self.root = cache_dir(root)
        self.lock_timeout = lock_timeout
        # shard path -> ((size, mtime_ns), index frame with utt_id, sha1, row)
        self._index_cache: dict[Path, tuple[tuple[int, int], pd.DataFrame, frozenset[tuple[str, str]]]] = {}
        # shards whose bytes were checked against their marker by this instance: (path, sha1, size)
        self._verified: set[tuple[Path, str, int]] = set()
        # one FileLock per entry, reused: building one costs ~1.5 ms (filelock's state set-up), ~5 per run
        self._locks: dict[Path, FileLock] = {}

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    # ------------------------------------------------------------------ layout

    def entry_dir(self, corpus: str, key: str | Extractor) -> Path:
        """Folder of one entry: ``<root>/<corpus>/<name>/v<version>-<hash>``."""
        key = key.key if isinstance(key, Extractor) else key
        name, _, ver = key.partition("/")
        return (
            self.root
            / _check_name(corpus, "corpus")
            / _check_name(name, "extractor")
            / _check_name(ver, "key")
        )

    def _lock(self, entry: Path) -> FileLock:
        entry.mkdir(parents=True, exist_ok=True)
        lock = self._locks.get(entry)
        if lock is None or lock.timeout != self.lock_timeout:
            lock = self._locks[entry] = FileLock(str(entry / LOCK), timeout=self.lock_timeout)
        return lock

    @staticmethod
    def _shards(entry: Path) -> list[_Shard]:
        """Shards with a done marker, by index."""
        if not entry.is_dir():
            return []
        names = {p.name for p in entry.iterdir()}
        out = []
        for name in names:
            m = _SHARD.match(name)
            if m and name + DONE in names:
                out.append(_Shard(entry / name, int(m.group(1))))
        return sorted(out, key=lambda s: (s.index, s.path.name))

    # ------------------------------------------------------------------ reading

    def _discard(self, shard: _Shard, reason: str) -> None:
        log.error(
            "feature cache: discarding corrupt shard %s (%s); its rows will be recomputed", shard.path, reason
        )
        self._index_cache.pop(shard.path, None)
        shard.marker.unlink(missing_ok=True)
        shard.path.unlink(missing_ok=True)

    def _read_shard(self, shard: _Shard, columns: Sequence[str] | None = None) -> pa.Table | None:
        """Read a shard after checking it against its marker; ``None`` (and the shard deleted) if corrupt."""
        try:
            marker = json.loads(shard.marker.read_text())
            data = shard.path.read_bytes()
        except FileNotFoundError:
            return None  # removed by another process meanwhile
        except (OSError, ValueError) as exc:
            self._discard(shard, f"unreadable marker or shard: {exc}")
            return None
        stamp = (shard.path, marker.get("sha1"), len(data))
        if stamp not in self._verified:
            if len(data) != marker.get("bytes") or hashlib.sha1(data).hexdigest() != marker.get("sha1"):
                self._discard(shard, f"{len(data)} bytes / SHA-1 do not match the done marker")
                return None
            self._verified.add(stamp)
        try:
            table = pq.read_table(pa.BufferReader(data), columns=list(columns) if columns else None)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, KeyError ... on damaged files
            self._discard(shard, f"parquet unreadable: {exc}")
            return None
        if table.num_rows != marker.get("rows"):
            self._discard(shard, f"{table.num_rows} rows, marker says {marker.get('rows')}")
            return None
        return table

    def _shard_indexes(self, entry: Path) -> list[tuple[Path, pd.DataFrame, frozenset[tuple[str, str]]]]:
        """Per valid shard: its path, its rows (``utt_id, sha1, row``) and its set of (utt_id, sha1) keys.

        Cached per shard and revalidated by size and mtime, so repeated calls read only new shards.
        """
        out = []
        for shard in self._shards(entry):
            try:
                st = shard.path.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._index_cache.get(shard.path)
            if cached is None or cached[0] != stamp:
                table = self._read_shard(shard, ["utt_id", "sha1"])
                if table is None:
                    continue
                idx = table.to_pandas()
                idx["row"] = np.arange(len(idx))
                keys = frozenset(zip(idx["utt_id"].tolist(), idx["sha1"].tolist(), strict=True))
                cached = self._index_cache[shard.path] = (stamp, idx, keys)
            out.append((shard.path, cached[1], cached[2]))
        return out

    def _index(self, entry: Path) -> pd.DataFrame:
        """Valid rows of an entry: columns ``utt_id, sha1, shard (Path), row`` (one per (utt_id, sha1))."""
        frames = [idx.assign(shard=path) for path, idx, _ in self._shard_indexes(entry)]
        if not frames:
            return pd.DataFrame({"utt_id": [], "sha1": [], "row": [], "shard": []})
        # identical rows written twice (e.g. by racing processes): keep the last shard's copy
        return pd.concat(frames, ignore_index=True).drop_duplicates(["utt_id", "sha1"], keep="last")

    @staticmethod
    def _by_corpus(manifest: pd.DataFrame) -> list[tuple[str, pd.DataFrame, np.ndarray]]:
        """(corpus, its rows, their positions in the manifest), in order of first appearance."""
        for col in ("utt_id", "sha1", "corpus"):
            if col not in manifest.columns:
                raise ParameterError(f"manifest lacks column {col!r} needed by the feature cache")
        corpora = manifest["corpus"].astype(str).to_numpy()
        out = []
        for corpus in dict.fromkeys(corpora):
            positions = np.flatnonzero(corpora == corpus)
            out.append((corpus, manifest.iloc[positions], positions))
        return out

    def missing(self, manifest: pd.DataFrame, extractor: Extractor | str) -> pd.DataFrame:
        """Rows of ``manifest`` with no valid cached features for ``extractor``.

        Parameters
        ----------
        manifest : pandas.DataFrame
            Needs ``utt_id``, ``sha1`` and ``corpus``.
        extractor : Extractor or str
            The extractor, or its key.

        Returns
        -------
        pandas.DataFrame
            The missing rows (same columns and index as ``manifest``).
        """
        key = extractor.key if isinstance(extractor, Extractor) else extractor
        present = np.zeros(len(manifest), dtype=bool)
        for corpus, part, positions in self._by_corpus(manifest):
            idx = self._index(self.entry_dir(str(corpus), key))
            if idx.empty:
                continue
            hit = pd.MultiIndex.from_frame(part[["utt_id", "sha1"]]).isin(
                pd.MultiIndex.from_frame(idx[["utt_id", "sha1"]])
            )
            present[positions[hit]] = True
        return manifest[~present]

    def meta(self, corpus: str, key: str | Extractor) -> dict[str, Any]:
        """The entry's ``meta.json`` (empty dict if absent)."""
        path = self.entry_dir(corpus, key) / META
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _resolve_key(self, corpora: Sequence[str], view: FeatureView, key: str | Extractor | None) -> str:
        if isinstance(key, Extractor):
            return key.key
        if key is not None:
            return key
        found: set[str] = set()
        for corpus in corpora:
            base = self.root / corpus / view.extractor
            if base.is_dir():
                found |= {f"{view.extractor}/{d.name}" for d in base.iterdir() if (d / META).is_file()}
        if len(found) == 1:
            return found.pop()
        try:
            default: str | None = get_extractor(view.extractor).key
        except ParameterError:  # not a registered extractor (or it needs parameters)
            default = None
        if default is not None and (not found or default in found):
            return default
        if not found:
            raise CacheError(
                f"nothing cached for {view.extractor!r} in {', '.join(corpora)} under {self.root}"
            )
        raise CacheError(
            f"several cached variants of {view.extractor!r} for {', '.join(corpora)}: {sorted(found)}; "
            f"pass key= (an extractor or its key) to choose"
        )

    def load(
        self,
        manifest: pd.DataFrame,
        view: str | FeatureView,
        *,
        output: str = "pooled",
        allow_missing: bool = False,
        key: str | Extractor | None = None,
    ) -> FeatureSet:
        """Load cached features of the manifest's utterances, in manifest order.

        Parameters
        ----------
        manifest : pandas.DataFrame
            Needs ``utt_id``, ``sha1`` and ``corpus``; may span several corpora.
        view : str or FeatureView
            ``"handcrafted94"``, ``"whisper-base@3"``, ``"whisper-base@2-4"``, ``"whisper-base@all"``.
        output : str, optional
            ``"pooled"`` (default): ``X`` of shape ``(n, d)`` with the view's layers concatenated. Any other
            stored output (``"frames"``): a list of ``(T_i, F)`` float32 arrays; for layered frames of shape
            ``(L, T, F)`` the view's layers are selected and concatenated on the feature axis,
            ``(T, n_selected * F)``. Layer numbers refer to the model's layers when the entry's metadata
            lists ``frame_layers`` (the layers the frames hold), else to positions on the stored axis.
        allow_missing : bool, optional
            Return what exists (logging a warning) instead of raising when some utterances are not cached.
        key : Extractor or str, optional
            Which cached variant of the extractor to read (its key). Default: the only variant cached, or the
            default-parameter variant.

        Returns
        -------
        FeatureSet

        Raises
        ------
        CacheError
            Utterances missing (count and first ids in the message), several variants and no ``key``, or
            stored shapes that disagree.
        """
        view = parse_view(view) if isinstance(view, str) else view
        groups = list(self._by_corpus(manifest))
        key = self._resolve_key([c for c, _, _ in groups], view, key)
        if key.partition("/")[0] != view.extractor:
            raise ParameterError(f"key {key!r} is not a variant of extractor {view.extractor!r}")
        order: list[np.ndarray] = []
        chunks: list[Any] = []
        missing_ids: list[str] = []
        meta: dict[str, Any] = {}
        for corpus, part, positions in groups:
            entry = self.entry_dir(str(corpus), key)
            meta = meta or self.meta(str(corpus), key)
            idx = self._index(entry)
            found = (
                part[["utt_id", "sha1"]].assign(pos=positions).merge(idx, on=["utt_id", "sha1"], how="left")
            )
            absent = found["row"].isna().to_numpy()
            missing_ids += found.loc[absent, "utt_id"].tolist()
            found = found[~absent]
            for shard_path, rows in found.groupby("shard", sort=False):
                shard = _Shard(Path(shard_path), int(_SHARD.match(Path(shard_path).name).group(1)))
                table = self._read_shard(shard, [output, f"{output}.shape"])
                if table is None:  # corrupt: discarded; its rows are missing now
                    missing_ids += rows["utt_id"].tolist()
                    continue
                chunks.append(self._take(table, output, rows["row"].to_numpy(dtype=np.int64), shard.path))
                order.append(rows["pos"].to_numpy())
        if missing_ids:
            msg = (
                f"{len(missing_ids)} of {len(manifest)} utterances have no cached {key} features "
                f"(first: {', '.join(missing_ids[:5])}); run the extraction first"
            )
            if not allow_missing:
                raise CacheError(msg)
            log.warning("%s; loading the %d present", msg, len(manifest) - len(missing_ids))
        perm = np.argsort(np.concatenate(order)) if order else np.zeros(0, dtype=np.int64)
        ids_all = manifest["utt_id"].to_numpy()
        utt_ids = [str(u) for u in ids_all[np.sort(np.concatenate(order))]] if order else []
        if output == "pooled":
            X = self._assemble_pooled(chunks, perm, view, meta, key)
        else:
            X = self._assemble_frames(chunks, perm, view, meta, key, output)
        return FeatureSet(utt_ids, X, key, view.name, output, sorted(missing_ids))

    @staticmethod
    def _take(table: pa.Table, output: str, rows: np.ndarray, path: Path) -> tuple[np.ndarray, list[tuple]]:
        """(flat values of the selected rows' arrays, concatenated; their shapes)."""
        if output not in table.column_names:
            raise CacheError(f"{path}: no output {output!r} (stored: {table.column_names})")
        meta = table.schema.field(output).metadata or {}
        dtype = np.dtype(meta.get(b"dtype", b"<f4").decode())
        col = table.column(output).combine_chunks()
        shapes = table.column(f"{output}.shape").to_pylist()
        _, off_buf, data_buf = col.buffers()
        offsets = np.frombuffer(off_buf, dtype=np.int64)[col.offset : col.offset + len(col) + 1]
        data = np.frombuffer(data_buf, dtype=np.uint8)
        if len(rows) == len(shapes) and np.array_equal(rows, np.arange(len(shapes))):
            flat = data[offsets[0] : offsets[-1]]
        elif len(rows):
            flat = np.concatenate([data[offsets[r] : offsets[r + 1]] for r in rows])
        else:
            flat = data[:0]
        return flat.view(dtype), [tuple(shapes[r]) for r in rows]

    @staticmethod
    def _assemble_pooled(chunks, perm, view: FeatureView, meta: dict, key: str) -> np.ndarray:
        shapes = {s for _, sh in chunks for s in sh}
        if len(shapes) > 1:
            raise CacheError(f"cached {key} pooled outputs have differing shapes {sorted(shapes)}")
        if not shapes:
            return np.zeros((0, 0), dtype=np.float32)
        shape = shapes.pop()
        flat = np.concatenate([c for c, _ in chunks]) if len(chunks) > 1 else chunks[0][0]
        arr = flat.reshape((-1, *shape))[perm]
        default = meta.get("default_layers")
        X = view.select(arr, tuple(default) if default is not None else None)
        return np.ascontiguousarray(X, dtype=np.float32)

    @staticmethod
    def _assemble_frames(
        chunks, perm, view: FeatureView, meta: dict, key: str, output: str
    ) -> list[np.ndarray]:
        items: list[np.ndarray] = []
        for flat, shapes in chunks:
            start = 0
            for shape in shapes:
                n = int(np.prod(shape))
                items.append(flat[start : start + n].reshape(shape))
                start += n
        items = [items[i] for i in perm]
        layers, default = meta.get("frame_layers"), meta.get("default_layers")
        return [select_frames(a, view, layers, default, what=f"cached {key} {output!r}") for a in items]

    # ------------------------------------------------------------------ writing

    def _ensure_meta(self, entry: Path, corpus: str, extractor: Extractor) -> None:
        if (entry / META).is_file():
            return
        meta = {
            **extractor.identity(),
            "default_layers": list(extractor.default_layers)
            if extractor.default_layers is not None
            else None,
            "frame_layers": _list_or_none(getattr(extractor, "frame_layers", None)),
            "corpus": corpus,
            "versions": _package_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_bytes(entry / META, json.dumps(meta, indent=2, default=str).encode())

    @staticmethod
    def _clean_leftovers(entry: Path) -> None:
        """Delete shards without marker and temporary files (a killed writer's); caller holds the lock."""
        names = {p.name for p in entry.iterdir()}
        for name in names:
            orphan = _SHARD.match(name) and name + DONE not in names
            stray_marker = name.endswith(DONE) and name[: -len(DONE)] not in names
            temporary = name.endswith(".tmp") or ".tmp-" in name  # util's atomic writes; older versions'
            if orphan or stray_marker or temporary:
                log.warning("feature cache: removing unfinished %s", entry / name)
                (entry / name).unlink(missing_ok=True)

    def write_shard(
        self,
        corpus: str,
        extractor: Extractor,
        utt_ids: Sequence[str],
        sha1s: Sequence[str],
        outputs: Sequence[dict[str, np.ndarray]],
    ) -> Path | None:
        """Append one shard of rows to the entry of ``(corpus, extractor)``, crash-safely.

        Parameters
        ----------
        corpus : str
            Corpus name (entry folder).
        extractor : Extractor
            The extractor that produced ``outputs`` (its key names the entry).
        utt_ids, sha1s : sequence of str, length n
            Row identities.
        outputs : sequence of dict, length n
            Each row's outputs (same names in every row); floats are stored as float32 (float16 kept).

        Returns
        -------
        Path or None
            The shard written, or None when every row was already cached (written by another process).
        """
        if not (len(utt_ids) == len(sha1s) == len(outputs)):
            raise ParameterError("write_shard: utt_ids, sha1s and outputs differ in length")
        if not outputs:
            return None
        entry = self.entry_dir(corpus, extractor)
        table = _to_table(utt_ids, sha1s, outputs)
        try:
            with self._lock(entry):
                self._ensure_meta(entry, corpus, extractor)
                self._clean_leftovers(entry)
                have = [keys for _, _, keys in self._shard_indexes(entry)]
                if have:
                    new = np.array(
                        [not any(k in h for h in have) for k in zip(utt_ids, sha1s, strict=True)], dtype=bool
                    )
                    if not new.any():
                        return None
                    if not new.all():
                        table = table.filter(pa.array(new))
                shards = self._shards(entry)
                number = shards[-1].index + 1 if shards else 0
                ids = table.column("utt_id").to_pylist()
                sh = table.column("sha1").to_pylist()
                digest = hashlib.sha1("\n".join(f"{u}\x1f{s}" for u, s in zip(ids, sh, strict=True)).encode())
                path = entry / f"part-{number:04d}-{digest.hexdigest()[:10]}.parquet"
                sink = pa.BufferOutputStream()
                pq.write_table(table, sink, compression="none", use_dictionary=False, write_statistics=False)
                data = sink.getvalue().to_pybytes()
                data_len = len(data)
                marker = {
                    "rows": table.num_rows,
                    "bytes": data_len,
                    "sha1": hashlib.sha1(data).hexdigest(),
                    "key": extractor.key,
                }
                atomic_write_bytes(path, data)
                atomic_write_bytes(path.with_name(path.name + DONE), json.dumps(marker).encode())
                # index the shard just written from memory: the next write's duplicate check (and load)
                # need not read it back; any later change of the file changes its stamp and re-reads it
                st = path.stat()
                written = pd.DataFrame({"utt_id": ids, "sha1": sh, "row": np.arange(len(ids))})
                keys = frozenset(zip(ids, sh, strict=True))
                self._index_cache[path] = ((st.st_size, st.st_mtime_ns), written, keys)
                self._verified.add((path, marker["sha1"], data_len))
                return path
        except TimeoutError as exc:
            raise CacheError(f"{entry}: could not lock the cache entry within {self.lock_timeout} s") from exc

    def mark_complete(self, corpus: str, extractor: Extractor, *, n_expected: int, skipped: int) -> None:
        """Record that a pass over ``n_expected`` utterances finished (``skipped`` of them unusable)."""
        entry = self.entry_dir(corpus, extractor)
        with self._lock(entry):
            self._ensure_meta(entry, corpus, extractor)
            # a pass that computed nothing wrote no shard, so write_shard never cleaned up after a writer
            # killed mid-way through its last state/meta write: clean here too (the lock is held)
            self._clean_leftovers(entry)
            state = {
                "n_expected": int(n_expected),
                "n_skipped": int(skipped),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            atomic_write_bytes(entry / STATE, json.dumps(state).encode())

    # ------------------------------------------------------------------ overview

    def status(self) -> pd.DataFrame:
        """One row per cache entry.

        Returns
        -------
        pandas.DataFrame
            Columns ``corpus, extractor, key, n_rows, n_shards, size_mb, complete``. ``n_rows`` counts distinct
            valid (utt_id, sha1) rows; ``complete`` is True when the last extraction pass finished with every
            usable utterance stored and no unfinished shard is left.
        """
        rows = []
        for meta_path in sorted(self.root.glob(f"*/*/*/{META}")):
            entry = meta_path.parent
            corpus, name, ver = entry.parts[-3:]
            idx = self._index(entry)
            shards = self._shards(entry)
            size = sum(p.stat().st_size for p in entry.iterdir() if p.is_file())
            names = {p.name for p in entry.iterdir()}
            unfinished = any(_SHARD.match(n) and n + DONE not in names for n in names)
            try:
                state = json.loads((entry / STATE).read_text())
                complete = not unfinished and len(idx) >= state["n_expected"] - state["n_skipped"]
            except (OSError, ValueError, KeyError):
                complete = False
            rows.append(
                {
                    "corpus": corpus,
                    "extractor": name,
                    "key": f"{name}/{ver}",
                    "n_rows": len(idx),
                    "n_shards": len(shards),
                    "size_mb": round(size / 2**20, 3),
                    "complete": bool(complete),
                }
            )
        cols = ["corpus", "extractor", "key", "n_rows", "n_shards", "size_mb", "complete"]
        return pd.DataFrame(rows, columns=cols)


def _list_or_none(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in value]


def _to_table(
    utt_ids: Sequence[str], sha1s: Sequence[str], outputs: Sequence[dict[str, np.ndarray]]
) -> pa.Table:
    names = sorted(outputs[0])
    if "pooled" not in names:
        raise ParameterError(f"extractor outputs lack 'pooled' (got {names})")
    cols: dict[str, pa.Array] = {
        "utt_id": pa.array(list(map(str, utt_ids))),
        "sha1": pa.array(list(map(str, sha1s))),
    }
    fields = [pa.field("utt_id", pa.string()), pa.field("sha1", pa.string())]
    for name in names:
        arrays = []
        for i, out in enumerate(outputs):
            if sorted(out) != names:
                raise ParameterError(
                    f"row {utt_ids[i]!r}: outputs {sorted(out)} differ from the shard's {names}"
                )
            a = np.asarray(out[name])
            arrays.append(a.astype("<f2" if a.dtype == np.float16 else "<f4", copy=False))
        if len({a.dtype for a in arrays}) > 1:
            arrays = [a.astype("<f4", copy=False) for a in arrays]
        dtype = arrays[0].dtype.str
        cols[name] = pa.array([np.ascontiguousarray(a).tobytes() for a in arrays], pa.large_binary())
        cols[f"{name}.shape"] = pa.array([list(a.shape) for a in arrays], pa.list_(pa.int32()))
        fields += [
            pa.field(name, pa.large_binary(), metadata={"dtype": dtype}),
            pa.field(f"{name}.shape", pa.list_(pa.int32())),
        ]
    return pa.table(cols, schema=pa.schema(fields))
