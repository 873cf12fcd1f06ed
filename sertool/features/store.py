"""The parquet feature cache.

Layout::

    <root>/<corpus>/<extractor name>/v<version>-<params hash>/     one *entry* per corpus and Extractor.key
        meta.json                       extractor identity, package versions, creation time
        state.json                      written by the runner when a pass over a manifest finished
        part-0000-<hash>.fmt2.parquet   a shard: rows of (utt_id, sha1, outputs ...)
        part-0000-<hash>.fmt2.parquet.done   its done marker: format, rows, bytes and SHA-1 of the shard file
        .lock                           filelock guarding writers of this entry

Rules (the cache's contract; tests exercise each):

- A shard is written to a temporary name, fsynced, renamed, and only then given its ``.done`` marker (itself
  written atomically). A shard without a marker is never read; writers delete such leftovers (a killed
  writer's) under the entry lock. Writers hold the lock only while writing one shard, so concurrent runs on
  one entry interleave safely; rows another process wrote meanwhile are dropped from the shard, not stored
  twice.
- A shard whose bytes do not match its marker (size or SHA-1), or that parquet cannot read, is reported with
  ``logging.error`` and deleted, so its rows count as missing and the runner recomputes them.
- The first time a :class:`FeatureStore` instance reads a shard it checks the file's size and SHA-1 against
  the marker (one full read); later reads in the same instance skip the hash and read only the columns
  they need.
- A row is valid only if both its ``utt_id`` and its audio ``sha1`` match the manifest: changing a clip's
  audio invalidates exactly that row; changing an extractor parameter changes the key, hence the entry.

Storage, format 2 (:data:`FORMAT`; in each shard's file name, done marker and parquet metadata
``sertool.format``): each output is one column of Arrow *numbers*, so pandas, polars, DuckDB or pyarrow read
the cache without sertool. An axis of fixed length is a ``fixed_size_list``, the time axis of a sequence
output a variable ``list``; values are float32, or float16 (``halffloat``) when the extractor emits float16;
no level is nullable. Whisper-base's ``pooled`` of shape ``(7, 512)`` is
``fixed_size_list<fixed_size_list<float, 512>, 7>``, its frames ``(1, T, 512)`` are
``fixed_size_list<list<fixed_size_list<halffloat, 512>>, 1>`` (DuckDB: ``FLOAT[][]`` and ``FLOAT[][][]``).
Each output field's metadata ``shape`` repeats the shape with ``null`` for the time axis (``[1, null,
512]``). ``pooled`` has no time axis (every row of an entry has one shape); in any other output it is the
second-last axis (the only one of a 1-D output), its length per row is also the column ``<output>.length``
(int32), and all other axes must agree within a shard. Shards are written without compression, dictionary
or statistics and with one data page per column chunk, so :meth:`FeatureStore.load` takes the values
straight from the page (checked; see :func:`_page_values`) instead of having pyarrow rebuild the nested
lists from their levels, which costs ~8 ns a value (a second for the frames of 1440 whisper-base clips).

Format 1 (sertool 0.1.0 and earlier, ``part-0000-<hash>.parquet``) stored each array as raw bytes
(``large_binary``, dtype in the field metadata, plus an ``<output>.shape`` column). A store that finds
format-1 shards in an entry converts them in place, under the entry lock, before reading: each is verified,
decoded and written again as a format-2 shard of the same number and rows (the values are bit for bit the
same), then deleted; a shard that cannot be converted (rows of differing shapes) is deleted so its rows are
recomputed. One warning line per entry says which. Where the entry cannot be written (a read-only cache),
format-1 shards are converted in memory at each read instead, and a line says so. An older sertool sharing
the cache does not match format-2 file names, so it never reads (nor deletes) them: it sees their rows as
missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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

__all__ = ["FORMAT", "FeatureSet", "FeatureStore", "default_cache_dir", "select_frames"]

log = logging.getLogger(__name__)

META = "meta.json"
STATE = "state.json"
LOCK = ".lock"
DONE = ".done"
#: On-disk format of the shards this version writes (see the module docstring); 1 had no number anywhere.
FORMAT = 2
#: A shard's file name: format 1 ``part-0003-<hash>.parquet``, format N >= 2 ``part-0003-<hash>.fmtN.parquet``.
_SHARD = re.compile(r"^part-(\d{4,})-([0-9a-f]{10})(?:\.fmt(\d+))?\.parquet$")
#: Parquet key-value metadata of a shard that names its format.
_FORMAT_KEY = b"sertool.format"
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
    digest: str = ""
    format: int = FORMAT

    @classmethod
    def of(cls, path: Path) -> _Shard | None:
        """The shard named by ``path`` (``None`` if the name is not a shard's)."""
        m = _SHARD.match(path.name)
        if m is None:
            return None
        return cls(path, int(m.group(1)), m.group(2), int(m.group(3)) if m.group(3) else 1)

    @property
    def marker(self) -> Path:
        return self.path.with_name(self.path.name + DONE)


def _shard_name(index: int, digest: str) -> str:
    return f"part-{index:04d}-{digest}.fmt{FORMAT}.parquet"


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
    n_t, n_f = frames.shape[1:]
    out = np.empty((n_t, len(want) * n_f), dtype=np.float32)
    for j, w in enumerate(want):  # one pass: each layer cast straight into its place, (T, L_sel * F)
        out[:, j * n_f : (j + 1) * n_f] = frames[labels.index(w)]
    return out


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
    threads : int, optional
        Shards read (verified, decoded) at once; default one per core, at most 8.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        lock_timeout: float = 600.0,
        threads: int | None = None,
    ) -> None:
        self.root = cache_dir(root)
        self.lock_timeout = lock_timeout
        self.threads = max(1, int(threads)) if threads is not None else min(8, os.cpu_count() or 1)
        # shard path -> ((size, mtime_ns), index frame with utt_id, sha1, row)
        self._index_cache: dict[Path, tuple[tuple[int, int], pd.DataFrame, frozenset[tuple[str, str]]]] = {}
        # shards whose bytes were checked against their marker by this instance: (path, sha1, size)
        self._verified: set[tuple[Path, str, int]] = set()
        # one FileLock per entry, reused: building one costs ~1.5 ms (filelock's state set-up), ~5 per run
        self._locks: dict[Path, FileLock] = {}
        # entries whose format-1 shards could not be converted in place (read through a conversion in memory)
        self._legacy: set[Path] = set()
        # entries holding shards of a newer format (warned about once)
        self._newer: set[Path] = set()

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
        out = [s for name in names if name + DONE in names and (s := _Shard.of(entry / name)) is not None]
        return sorted(out, key=lambda s: (s.index, s.path.name))

    # ------------------------------------------------------------------ reading

    def _discard(self, shard: _Shard, reason: str) -> None:
        log.error(
            "feature cache: discarding corrupt shard %s (%s); its rows will be recomputed", shard.path, reason
        )
        self._delete(shard)

    def _open(
        self, shard: _Shard, columns: Sequence[str] | None
    ) -> tuple[pq.ParquetFile, bytes | None] | None:
        """Open a shard after checking it against its marker; ``None`` (and the shard deleted) if corrupt or
        inconsistent with its own format. The first open in this instance reads the whole file and checks its
        SHA-1 (its bytes are returned); later ones open the file, to read only what they need.

        Raises
        ------
        CacheError
            A requested column is not stored (nothing is deleted).
        """
        try:
            marker = json.loads(shard.marker.read_text())
            size = shard.path.stat().st_size
        except FileNotFoundError:
            return None  # removed by another process meanwhile
        except (OSError, ValueError) as exc:
            self._discard(shard, f"unreadable marker or shard: {exc}")
            return None
        if not isinstance(marker, dict) or marker.get("format", 1) != shard.format:
            what = marker.get("format", 1) if isinstance(marker, dict) else marker
            self._discard(shard, f"done marker of format {what}, file name of format {shard.format}")
            return None
        data: bytes | None = None
        if (shard.path, marker.get("sha1"), size) not in self._verified:
            try:
                data = shard.path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                self._discard(shard, f"unreadable shard: {exc}")
                return None
            if len(data) != marker.get("bytes") or hashlib.sha1(data).hexdigest() != marker.get("sha1"):
                self._discard(shard, f"{len(data)} bytes / SHA-1 do not match the done marker")
                return None
            self._verified.add((shard.path, marker.get("sha1"), len(data)))
        try:
            pf = pq.ParquetFile(pa.BufferReader(data) if data is not None else str(shard.path))
            stored = pf.schema_arrow
            fmt = int((stored.metadata or {}).get(_FORMAT_KEY, b"1"))
            rows = pf.metadata.num_rows
        except FileNotFoundError:
            return None
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, KeyError ... on damaged files
            self._discard(shard, f"parquet unreadable: {exc}")
            return None
        if fmt != shard.format:
            self._discard(shard, f"parquet metadata says format {fmt}, file name format {shard.format}")
            return None
        if rows != marker.get("rows"):
            self._discard(shard, f"{rows} rows, marker says {marker.get('rows')}")
            return None
        absent = [c for c in columns or () if c not in stored.names]
        if absent:
            raise CacheError(f"{shard.path}: no column {absent} (stored: {stored.names})")
        return pf, data

    def _read_raw(self, shard: _Shard, columns: Sequence[str] | None = None) -> pa.Table | None:
        """A shard's ``columns`` (all when ``None``) as stored, checked as :meth:`_open` does."""
        want = None if columns is None else list(columns)
        if want is not None and shard.format == 1:  # an output's shape column travels with it
            want += [f"{c}.shape" for c in want if c not in ("utt_id", "sha1")]
        opened = self._open(shard, want)
        if opened is None:
            return None
        try:
            return opened[0].read(columns=want, use_threads=True)
        except FileNotFoundError:
            return None
        except Exception as exc:
            self._discard(shard, f"parquet unreadable: {exc}")
            return None

    def _read_shard(self, shard: _Shard, columns: Sequence[str] | None = None) -> pa.Table | None:
        """:meth:`_read_raw`, as a format-2 table (a format-1 shard is converted in memory)."""
        table = self._read_raw(shard, columns)
        return _from_format1(table, shard.path) if table is not None and shard.format == 1 else table

    def _read_output(self, shard: _Shard, output: str) -> _Values | None:
        """One output of every row of a shard, decoded (``None`` if the shard was corrupt: discarded).

        A format-2 column is taken straight from its page when the shard is laid out as this module writes
        it (:func:`_page_values`), else decoded by pyarrow.
        """
        if shard.format != FORMAT:
            table = self._read_shard(shard, [output])
            return None if table is None else _Values.of_table(table, output)
        opened = self._open(shard, [output])
        if opened is None:
            return None
        pf, data = opened
        length = f"{output}.length"
        extra = [length] if length in pf.schema_arrow.names else []
        try:
            lengths = pf.read(columns=extra).column(length).to_numpy() if extra else None
            try:
                values = _page_values(pf, output, lengths, data if data is not None else shard.path)
            except (ValueError, IndexError, OSError) as exc:  # not laid out as expected: pyarrow decodes it
                log.debug("feature cache: %s read through pyarrow (%s)", shard.path, exc)
                values = None
            if values is None:
                values = _Values.of_table(pf.read(columns=[output, *extra], use_threads=True), output)
            return values
        except FileNotFoundError:
            return None
        except CacheError as exc:
            self._discard(shard, str(exc))
            return None
        except (pa.ArrowException, OSError, ValueError) as exc:  # damaged, as far as parquet can tell
            self._discard(shard, f"parquet unreadable: {exc}")
            return None

    def _write_file(self, path: Path, table: pa.Table, key: str, **extra: Any) -> dict[str, Any]:
        """Write a format-2 shard and then its done marker, each atomically; caller holds the entry lock.

        Returns
        -------
        dict
            The marker written.
        """
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            compression="none",
            use_dictionary=False,
            write_statistics=False,
            data_page_size=_PAGE_BYTES,
        )
        data = sink.getvalue().to_pybytes()
        marker = {
            "format": FORMAT,
            "rows": table.num_rows,
            "bytes": len(data),
            "sha1": hashlib.sha1(data).hexdigest(),
            "key": key,
            **extra,
        }
        atomic_write_bytes(path, data)
        atomic_write_bytes(path.with_name(path.name + DONE), json.dumps(marker).encode())
        self._verified.add((path, marker["sha1"], len(data)))
        return marker

    def _upgrade(self, entry: Path) -> None:
        """Convert the entry's format-1 shards to format 2 in place (see the module docstring).

        Logs one warning line for the entry: how many shards were converted, deleted for recomputation, or
        left for a conversion in memory at each read (an entry that cannot be written).
        """
        converted: list[int] = []  # rows of each shard converted
        dropped: list[tuple[int, str]] = []  # rows, reason
        failure = ""
        try:
            with self._lock(entry):
                self._clean_leftovers(entry)
                for shard in [s for s in self._shards(entry) if s.format == 1]:
                    table = self._read_raw(shard)  # verified (a corrupt shard is discarded and logged)
                    if table is None:
                        continue
                    try:
                        new = _from_format1(table, shard.path)
                    except (CacheError, ParameterError) as exc:
                        dropped.append((table.num_rows, str(exc)))
                        self._delete(shard)
                        continue
                    target = _Shard(entry / _shard_name(shard.index, shard.digest), shard.index, shard.digest)
                    if not (target.path.is_file() and target.marker.is_file()):  # else converted already
                        key = f"{entry.parent.name}/{entry.name}"
                        self._write_file(target.path, new, key, converted_from=1)
                    self._delete(shard)
                    converted.append(new.num_rows)
        except (OSError, TimeoutError) as exc:  # a read-only cache, a full disk, a lock held too long
            self._legacy.add(entry)
            failure = f"{type(exc).__name__}: {exc}"
        parts = []
        if converted:
            parts.append(
                f"converted {len(converted)} format-1 shards ({sum(converted)} rows) to format {FORMAT} "
                f"in place, values unchanged"
            )
        if dropped:
            parts.append(
                f"deleted {len(dropped)} format-1 shards ({sum(n for n, _ in dropped)} rows) that cannot be "
                f"converted ({dropped[0][1]}): their rows will be recomputed"
            )
        if failure:
            parts.append(
                f"could not convert {'the other' if parts else 'its'} format-1 shards in place ({failure}): "
                f"reading them through a conversion in memory"
            )
        if parts:
            log.warning("feature cache %s: %s", entry, "; ".join(parts))

    def _delete(self, shard: _Shard) -> None:
        """Delete a shard, its marker first; caller holds the entry lock."""
        self._index_cache.pop(shard.path, None)
        shard.marker.unlink(missing_ok=True)
        shard.path.unlink(missing_ok=True)

    def _current_shards(self, entry: Path) -> list[_Shard]:
        """The entry's shards this version reads: format-1 ones converted first (:meth:`_upgrade`), shards of a
        newer format left out (one warning per entry and instance)."""
        shards = self._shards(entry)
        if entry not in self._legacy and any(s.format == 1 for s in shards):
            self._upgrade(entry)
            shards = self._shards(entry)
        newer = [s for s in shards if s.format > FORMAT]
        if newer and entry not in self._newer:
            self._newer.add(entry)
            log.warning(
                "feature cache %s: %d shards of format %d, newer than this sertool's %d, are ignored (left as "
                "they are; their rows count as missing)",
                entry,
                len(newer),
                max(s.format for s in newer),
                FORMAT,
            )
        return [s for s in shards if s.format <= FORMAT]

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(i) for i in items]``, on up to :attr:`threads` threads (pyarrow, hashlib and numpy's casts
        release the GIL); the first exception propagates."""
        n = min(self.threads, len(items))
        if n <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(n, thread_name_prefix="sertool-cache") as pool:
            return list(pool.map(fn, items))

    def _shard_indexes(self, entry: Path) -> list[tuple[Path, pd.DataFrame, frozenset[tuple[str, str]]]]:
        """Per valid shard: its path, its rows (``utt_id, sha1, row``) and its set of (utt_id, sha1) keys.

        Cached per shard and revalidated by size and mtime, so repeated calls read only new shards.
        """

        def index(shard: _Shard) -> tuple[Path, pd.DataFrame, frozenset[tuple[str, str]]] | None:
            try:
                st = shard.path.stat()
            except FileNotFoundError:
                return None
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._index_cache.get(shard.path)
            if cached is None or cached[0] != stamp:
                table = self._read_raw(shard, ["utt_id", "sha1"])
                if table is None:
                    return None
                idx = table.to_pandas()
                idx["row"] = np.arange(len(idx))
                keys = frozenset(zip(idx["utt_id"].tolist(), idx["sha1"].tolist(), strict=True))
                cached = self._index_cache[shard.path] = (stamp, idx, keys)
            return shard.path, cached[1], cached[2]

        shards = self._current_shards(entry)
        fresh = [s for s in shards if s.path not in self._index_cache]
        if len(fresh) > 1:  # a cold start: verify and index new shards at once
            self._map(index, fresh)
        return [got for s in shards if (got := index(s)) is not None]

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
        tasks: list[tuple[_Shard | None, pd.DataFrame]] = []
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
            tasks += [(_Shard.of(Path(p)), rows) for p, rows in found.groupby("shard", sort=False)]
        layers, default = meta.get("frame_layers"), meta.get("default_layers")

        def read(task: tuple[_Shard | None, pd.DataFrame]) -> Any:
            shard, rows = task
            values = self._read_output(shard, output) if shard is not None else None
            if values is None:
                return None
            got = values.take(rows["row"].to_numpy(dtype=np.int64), output)
            if output == "pooled":
                return got
            what = f"cached {key} {output!r}"
            return [select_frames(a, view, layers, default, what=what) for a in got]

        for (_, rows), got in zip(tasks, self._map(read, tasks), strict=True):
            if got is None:  # corrupt: discarded; its rows are missing now
                missing_ids += rows["utt_id"].tolist()
                continue
            chunks.append(got)
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
            items = [a for chunk in chunks for a in chunk]
            X = [items[i] for i in perm]
        return FeatureSet(utt_ids, X, key, view.name, output, sorted(missing_ids))

    @staticmethod
    def _assemble_pooled(
        chunks: list[Any], perm: np.ndarray, view: FeatureView, meta: dict, key: str
    ) -> np.ndarray:
        shapes = {c.shape[1:] for c in chunks}
        if len(shapes) > 1:
            raise CacheError(f"cached {key} pooled outputs have differing shapes {sorted(shapes)}")
        if not shapes:
            return np.zeros((0, 0), dtype=np.float32)
        arr = (np.concatenate(chunks) if len(chunks) > 1 else chunks[0])[perm]
        default = meta.get("default_layers")
        X = view.select(arr, tuple(default) if default is not None else None)
        return np.ascontiguousarray(X, dtype=np.float32)

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
                shards = self._shards(entry)  # every format: numbers keep growing
                number = shards[-1].index + 1 if shards else 0
                ids = table.column("utt_id").to_pylist()
                sh = table.column("sha1").to_pylist()
                digest = hashlib.sha1("\n".join(f"{u}\x1f{s}" for u, s in zip(ids, sh, strict=True)).encode())
                path = entry / _shard_name(number, digest.hexdigest()[:10])
                self._write_file(path, table, extractor.key)
                # index the shard just written from memory: the next write's duplicate check (and load)
                # need not read it back; any later change of the file changes its stamp and re-reads it
                st = path.stat()
                written = pd.DataFrame({"utt_id": ids, "sha1": sh, "row": np.arange(len(ids))})
                keys = frozenset(zip(ids, sh, strict=True))
                self._index_cache[path] = ((st.st_size, st.st_mtime_ns), written, keys)
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


def _time_axis(name: str, ndim: int) -> int | None:
    """The axis of output ``name`` whose length varies between clips: none for ``pooled`` (nor a scalar),
    else the second-last axis (the only axis of a 1-D output)."""
    return None if name == "pooled" or ndim == 0 else max(ndim - 2, 0)


def _arrow_types(leaf: pa.DataType, shape: Sequence[int | None]) -> list[pa.DataType]:
    """Arrow types of the sub-arrays from each axis of ``shape`` down (``None``: a variable axis), then the
    leaf: ``[type of the whole array, type of one item of axis 0, ..., leaf]``; no level is nullable."""
    types = [leaf]
    for d in reversed(shape):
        item = pa.field("element", types[0], nullable=False)
        types.insert(0, pa.list_(item) if d is None else pa.list_(item, d))
    return types


def _shape_of(t: pa.DataType) -> tuple[int | None, ...]:
    """The array shape an output column's type stores (``None`` for the variable axis)."""
    shape: list[int | None] = []
    while pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        shape.append(t.list_size if pa.types.is_fixed_size_list(t) else None)
        t = t.value_type
    return tuple(shape)


def _encode(name: str, arrays: Sequence[np.ndarray]) -> list[tuple[pa.Field, pa.Array]]:
    """One output of a shard's rows as a column of nested Arrow lists (see the module docstring), and for
    an output with a time axis the column ``<name>.length`` of each row's length on that axis.

    Parameters
    ----------
    name : str
        Output name (``"pooled"`` has no time axis).
    arrays : sequence of np.ndarray
        One array per row: float16 stays float16 when every row is float16, all else becomes float32.

    Returns
    -------
    list of (pyarrow.Field, pyarrow.Array)

    Raises
    ------
    ParameterError
        Rows differ in dimensions, or in the length of an axis other than the time axis.
    """
    ndims = {a.ndim for a in arrays}
    if len(ndims) > 1:
        raise ParameterError(f"output {name!r}: rows of differing dimensions {sorted(ndims)}")
    ndim = ndims.pop()
    axis = _time_axis(name, ndim)
    fixed = {tuple(d for i, d in enumerate(a.shape) if i != axis) for a in arrays}
    if len(fixed) > 1:
        what = "shapes" if axis is None else f"shapes beyond axis {axis}"
        raise ParameterError(f"output {name!r}: rows of differing {what} {sorted(fixed)}")
    half = all(a.dtype == np.float16 for a in arrays)
    dtype = np.dtype("<f2" if half else "<f4")
    shape = [None if i == axis else int(d) for i, d in enumerate(arrays[0].shape)]
    types = _arrow_types(pa.float16() if half else pa.float32(), shape)
    values = np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])
    arr: pa.Array = pa.array(values, type=types[-1])
    for i in range(ndim - 1, -1, -1):
        if i == axis:
            per_row = int(np.prod(shape[:i], dtype=np.int64))  # lists of this axis in one row
            lengths = np.repeat(np.array([a.shape[i] for a in arrays], dtype=np.int64), per_row)
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            if offsets[-1] > np.iinfo(np.int32).max:
                raise ParameterError(f"output {name!r}: {offsets[-1]} items of axis {i} in one shard")
            arr = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), arr, type=types[i])
        else:
            arr = pa.FixedSizeListArray.from_arrays(arr, type=types[i])
    out = [(pa.field(name, types[0], nullable=False, metadata={"shape": json.dumps(shape)}), arr)]
    if axis is not None:
        lengths = pa.array([a.shape[axis] for a in arrays], pa.int32())
        out.append((pa.field(f"{name}.length", pa.int32(), nullable=False), lengths))
    return out


def _table(
    utt_ids: Sequence[str], sha1s: Sequence[str] | None, columns: dict[str, list[np.ndarray]]
) -> pa.Table:
    """A format-2 shard table: ``utt_id``, ``sha1`` (when given), then one column per output, by name."""
    fields = [pa.field("utt_id", pa.string(), nullable=False)]
    arrays = [pa.array(list(map(str, utt_ids)), pa.string())]
    if sha1s is not None:
        fields.append(pa.field("sha1", pa.string(), nullable=False))
        arrays.append(pa.array(list(map(str, sha1s)), pa.string()))
    for name in sorted(columns):
        for fld, arr in _encode(name, columns[name]):
            fields.append(fld)
            arrays.append(arr)
    schema = pa.schema(fields, metadata={_FORMAT_KEY: str(FORMAT).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def _to_table(
    utt_ids: Sequence[str], sha1s: Sequence[str], outputs: Sequence[dict[str, np.ndarray]]
) -> pa.Table:
    names = sorted(outputs[0])
    if "pooled" not in names:
        raise ParameterError(f"extractor outputs lack 'pooled' (got {names})")
    for i, out in enumerate(outputs):
        if sorted(out) != names:
            raise ParameterError(f"row {utt_ids[i]!r}: outputs {sorted(out)} differ from the shard's {names}")
    return _table(utt_ids, sha1s, {name: [np.asarray(out[name]) for out in outputs] for name in names})


def _from_format1(table: pa.Table, path: Path) -> pa.Table:
    """A format-1 table (each output as raw bytes plus ``<output>.shape``) as the format-2 table of the
    same rows and columns; the values are bit for bit the same.

    Raises
    ------
    CacheError
        The table is not of format 1, or its rows cannot be stored in format 2 (differing shapes).
    """
    names = [c for c in table.column_names if c not in ("utt_id", "sha1") and not c.endswith(".shape")]
    columns: dict[str, list[np.ndarray]] = {}
    for name in names:
        field = table.schema.field(name)
        dtype = np.dtype((field.metadata or {}).get(b"dtype", b"<f4").decode())
        if not pa.types.is_large_binary(field.type) or f"{name}.shape" not in table.column_names:
            raise CacheError(f"{path}: column {name!r} ({field.type}) is not a format-1 output")
        if dtype not in (np.dtype("<f2"), np.dtype("<f4")):
            raise CacheError(f"{path}: column {name!r} of dtype {dtype}, not float32 or float16")
        col = table.column(name).combine_chunks()
        _, off_buf, data_buf = col.buffers()
        offsets = np.frombuffer(off_buf, dtype=np.int64)[col.offset : col.offset + len(col) + 1]
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        rows = []
        for r, shape in enumerate(table.column(f"{name}.shape").to_pylist()):
            raw = data[offsets[r] : offsets[r + 1]]
            if raw.size != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
                raise CacheError(f"{path}: row {r} of {name!r} holds {raw.size} bytes, not shape {shape}")
            rows.append(raw.view(dtype).reshape(shape))
        columns[name] = rows
    ids = table.column("utt_id").to_pylist() if "utt_id" in table.column_names else None
    sha1s = table.column("sha1").to_pylist() if "sha1" in table.column_names else None
    try:
        out = _table(ids if ids is not None else [""] * table.num_rows, sha1s, columns)
    except ParameterError as exc:
        raise CacheError(f"{path}: {exc}") from exc
    return out if ids is not None else out.drop_columns(["utt_id"])


@dataclass
class _Values:
    """One output of a shard's rows, decoded: row ``r`` is ``values[bounds[r]:bounds[r + 1]]``, of shape
    ``shapes[r]`` (``shape`` for every row when ``shapes`` is None: an output without time axis)."""

    values: np.ndarray
    bounds: np.ndarray
    shape: tuple[int | None, ...]
    shapes: list[tuple[int, ...]] | None

    @classmethod
    def of_lengths(
        cls, values: np.ndarray, shape: tuple[int | None, ...], lengths: np.ndarray | None, n_rows: int
    ) -> _Values:
        """``n_rows`` rows of ``shape`` back to back, whose time axis (``None`` in ``shape``) has the given
        lengths."""
        if lengths is None:
            size = int(np.prod(shape, dtype=np.int64))
            return cls(values, np.arange(n_rows + 1, dtype=np.int64) * size, shape, None)
        other = int(np.prod([d for d in shape if d is not None], dtype=np.int64))
        bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64) * other, out=bounds[1:])
        axis = shape.index(None)
        shapes = [(*shape[:axis], int(t), *shape[axis + 1 :]) for t in lengths]
        return cls(values, bounds, shape, shapes)  # type: ignore[arg-type]

    @classmethod
    def of_table(cls, table: pa.Table, output: str) -> _Values:
        """Decode column ``output`` of a format-2 table through pyarrow (checking ``<output>.length``)."""
        column = table.column(output)
        shape = _shape_of(column.type)
        parts = [_rows(chunk, shape) for chunk in column.chunks]
        values = np.concatenate([v for v, _ in parts]) if len(parts) != 1 else parts[0][0]
        lengths = np.concatenate([t for _, t in parts]) if None in shape else None
        length = f"{output}.length"
        stored = table.column(length).to_numpy() if length in table.column_names else lengths
        if lengths is not None and not np.array_equal(stored, lengths):
            raise CacheError(f"column {length!r} disagrees with the lengths of {output!r}")
        out = cls.of_lengths(values, shape, lengths, table.num_rows)
        if out.bounds[-1] != values.size or len(out.bounds) != table.num_rows + 1:
            raise CacheError(f"column {output!r}: {values.size} values do not fill {table.num_rows} rows")
        return out

    def take(self, rows: np.ndarray, output: str) -> np.ndarray | list[np.ndarray]:
        """The selected rows: one ``(len(rows), *shape)`` array for ``pooled``, else a list of per-row
        arrays (views of :attr:`values`)."""
        if output == "pooled":
            if self.shapes is not None:
                raise CacheError(f"pooled column of shape {self.shape} has a time axis")
            block = self.values.reshape(len(self.bounds) - 1, *self.shape)  # type: ignore[misc]
            return block if np.array_equal(rows, np.arange(len(block))) else block[rows]
        shapes = self.shapes
        return [
            self.values[self.bounds[r] : self.bounds[r + 1]].reshape(shapes[r] if shapes else self.shape)
            for r in rows.tolist()
        ]


def _rows(chunk: pa.Array, shape: tuple[int | None, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(leaf values, lengths of the time axis per row, empty when none) of one chunk, without copying."""
    n = len(chunk)
    arr = chunk
    per_row = 1  # items of the current level in one row
    lengths = np.zeros(0, dtype=np.int64)
    for d in shape:
        if d is None:
            offsets = arr.offsets.to_numpy().astype(np.int64)
            counts = np.diff(offsets).reshape(n, per_row)
            lengths = counts[:, 0] if per_row else np.zeros(n, dtype=np.int64)
            if per_row and not (counts == lengths[:, None]).all():
                raise CacheError(f"column of type {chunk.type}: a row's lists differ in length")
        else:
            per_row *= d
        arr = arr.flatten()
    if arr.null_count:
        raise CacheError(f"column of type {chunk.type} holds nulls")
    return arr.to_numpy(zero_copy_only=True), lengths


# ----------------------------------------------------------------------------- reading a page directly
# A format-2 shard is written without compression, dictionary or statistics and with pages of up to 1 GiB,
# so each column chunk is one PLAIN data page: levels, then the column's values back to back. Taking them
# from the page skips pyarrow's reassembly of nested lists from their levels (~8 ns a value: 1 s for the
# frames of 1440 whisper-base clips, where reading the bytes takes a few ms). Every property this relies on
# is checked (one page filling the chunk, PLAIN, uncompressed, the value bytes = the rows' sizes); a shard
# that fails any check is decoded by pyarrow instead.

#: ``data_page_size`` of the writer: one page per column chunk up to this size.
_PAGE_BYTES = 1 << 30


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7
        if shift > 63:
            raise ValueError("thrift varint too long")


def _thrift_skip(buf: bytes, pos: int, kind: int) -> int:
    """Skip one value of compact-protocol type ``kind`` at ``pos``."""
    if kind in (1, 2):  # booleans live in the field header
        return pos
    if kind == 3:
        return pos + 1
    if kind in (4, 5, 6):
        return _varint(buf, pos)[1]
    if kind == 7:
        return pos + 8
    if kind == 8:
        n, pos = _varint(buf, pos)
        return pos + n
    if kind in (9, 10):
        head = buf[pos]
        pos += 1
        n, elem = head >> 4, head & 0x0F
        if n == 15:
            n, pos = _varint(buf, pos)
        for _ in range(n):
            pos = pos + 1 if elem in (1, 2) else _thrift_skip(buf, pos, elem)
        return pos
    if kind == 11:
        n, pos = _varint(buf, pos)
        if n:
            types = buf[pos]
            pos += 1
            for _ in range(n):
                pos = _thrift_skip(buf, _thrift_skip(buf, pos, types >> 4), types & 0x0F)
        return pos
    if kind == 12:
        return _thrift_struct(buf, pos)[1]
    raise ValueError(f"thrift type {kind}")


def _thrift_struct(buf: bytes, pos: int, nested: Sequence[int] = ()) -> tuple[dict[int, Any], int]:
    """A compact-protocol struct at ``pos``: its integer and boolean fields by id (the structs of ``nested``
    ids parsed too, others skipped), and the position after it."""
    out: dict[int, Any] = {}
    fid = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return out, pos
        kind, delta = head & 0x0F, head >> 4
        if delta:
            fid += delta
        else:
            v, pos = _varint(buf, pos)
            fid = (v >> 1) ^ -(v & 1)
        if kind in (4, 5, 6):
            v, pos = _varint(buf, pos)
            out[fid] = (v >> 1) ^ -(v & 1)
        elif kind in (1, 2):
            out[fid] = kind == 1
        elif kind == 12 and fid in nested:
            out[fid], pos = _thrift_struct(buf, pos)
        else:
            pos = _thrift_skip(buf, pos, kind)


def _page_values(
    pf: pq.ParquetFile, output: str, lengths: np.ndarray | None, source: bytes | Path
) -> _Values | None:
    """Column ``output`` taken from its pages (see above), or ``None`` where the file is not laid out so."""
    field = pf.schema_arrow.field(output)
    shape = _shape_of(field.type)
    leaf = field.type
    while pa.types.is_list(leaf) or pa.types.is_fixed_size_list(leaf):
        leaf = leaf.value_type
    dtype = {pa.float32(): np.dtype("<f4"), pa.float16(): np.dtype("<f2")}.get(leaf)
    meta = pf.metadata
    if dtype is None or meta.num_columns != len(pf.schema_arrow) or (None in shape) != (lengths is not None):
        return None
    j = pf.schema_arrow.get_field_index(output)  # one leaf column per field: leaf j is field j
    column = pf.schema.column(j)
    parts, rows = [], 0
    for r in range(meta.num_row_groups):
        chunk = meta.row_group(r).column(j)
        if chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page:
            return None
        start, size = chunk.data_page_offset, chunk.total_compressed_size
        if isinstance(source, bytes):
            buf = memoryview(source)[start : start + size]
        else:
            with open(source, "rb") as fh:
                fh.seek(start)
                buf = memoryview(fh.read(size))
        try:
            header, pos = _thrift_struct(buf, 0, nested=(5,))
        except (IndexError, ValueError):
            return None
        page = header.get(5)
        if header.get(1) != 0 or not isinstance(page, dict) or page.get(2) != 0:  # a DATA_PAGE, PLAIN
            return None
        if header.get(3) != header.get(2) or pos + header.get(3, -1) != size or len(buf) != size:
            return None  # compressed, or not exactly one page
        for present in (column.max_repetition_level > 0, column.max_definition_level > 0):
            if present:  # levels: 4-byte length, then the RLE runs
                pos += 4 + int.from_bytes(buf[pos : pos + 4], "little")
        n_rows = meta.row_group(r).num_rows
        if lengths is None:
            expect = n_rows * int(np.prod(shape, dtype=np.int64))
        else:
            other = int(np.prod([d for d in shape if d is not None], dtype=np.int64))
            expect = int(np.sum(lengths[rows : rows + n_rows], dtype=np.int64)) * other
        if size - pos != expect * dtype.itemsize:
            return None
        parts.append(np.frombuffer(buf, dtype=dtype, count=expect, offset=pos))
        rows += n_rows
    values = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, dtype)
    return _Values.of_lengths(values, shape, lengths, rows)
