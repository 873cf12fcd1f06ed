"""The extraction runner: compute the features a cache lacks, in resumable shards.

:func:`extract_features` asks the :class:`~sertool.features.store.FeatureStore` which manifest rows are
missing, sorts them by duration, cuts them into shards of ``shard_size`` clips (per corpus) and computes each
shard as one task:

- extractors with ``parallel_processes = True`` (CPU, numpy): shards run ``jobs`` wide, longest clips first,
  on one of three backends:

  * ``"fork"``: ``jobs`` worker processes forked from this one (POSIX; for ``fork_safe`` extractors). A
    fork takes milliseconds and the child inherits the imported modules and the extractor, so nothing is
    started, imported or pickled but the shard's paths and its features (see :func:`_forked`);
  * ``"threads"``: ``jobs`` threads of this process (for ``thread_safe`` extractors, whose numpy/BLAS/FFT
    work releases the GIL);
  * ``"processes"``: ``jobs - 1`` joblib (loky) worker processes, started fresh (they import sertool), plus
    this process, which computes shards itself while the workers start (see :func:`_pool`). Works
    everywhere, for any picklable extractor.

  ``backend="auto"`` takes fork on Linux for fork-safe extractors when this process runs no other Python
  thread, else threads for thread-safe extractors up to :data:`THREADS_UP_TO` jobs, else processes. On the
  2-core development machine handcrafted94 ran ~1.8x one process on two forked workers and ~1.3x on two
  threads (the GIL is taken and released around every numpy call; ``benchmarks/bench_handcrafted.py``);
- other extractors (torch models that thread or use a GPU inside): shards run in this process, one after the
  other, through :meth:`Extractor.extract_batch` on length-sorted clips, while a background thread reads
  the next shard's audio;
- ``scheduler="tcp://host:port"``: the same shard tasks run on a Dask distributed cluster.

The parent process writes each shard to the cache as soon as it returns (see the store's crash-safety
rules), so a killed run loses at most the shards in flight and a rerun resumes where it stopped. A clip
that cannot be loaded, or whose features contain NaN/inf, is reported in
:attr:`ExtractionReport.skipped` and left out; the others go on.

Warnings that libraries raise while a clip is read or computed (librosa's ``n_fft=2048 is too large for input
signal of length=...``) are recorded with that clip, in whatever process or thread computes it
(:mod:`sertool.library_warnings`), sent back with the shard's result, and reported once per run in sertool's
words (:attr:`ExtractionReport.warnings`, and one log line per kind). Worker processes end with the run or,
for the reusable pools, at :func:`wait_for_workers` (the CLI calls it before it exits).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pandas as pd

from sertool import library_warnings
from sertool.data.audio import load_audio
from sertool.exceptions import AudioError, ParameterError
from sertool.features.base import Extractor
from sertool.features.store import FeatureStore
from sertool.library_warnings import WarningRecord

__all__ = ["THREADS_UP_TO", "ExtractionReport", "extract_features", "wait_for_workers"]

log = logging.getLogger(__name__)

#: Where ``backend="auto"`` cannot fork, it runs thread-safe CPU extractors on threads up to this many
#: jobs and on loky processes beyond: on the 2-core development machine, handcrafted94 on 2 threads ran 200
#: RAVDESS clips ~2x faster than a freshly started 2-process loky pool (worker start-up, pickling,
#: per-process filter caches); with more cores the GIL-held share of a clip caps threads.
THREADS_UP_TO = 4


@dataclass
class ExtractionReport:
    """What :func:`extract_features` did.

    Attributes
    ----------
    key : str
        Extractor key.
    n_total : int
        Manifest rows.
    n_cached : int
        Rows already cached before the run.
    n_computed : int
        Rows computed and written by this run.
    skipped : list of (path, reason)
        Clips left out (unreadable, empty, all-zero, too short, non-finite features, ...).
    seconds : float
        Wall time of the run.
    clips_per_second : float
        ``n_computed / seconds`` (0 when nothing was computed).
    warnings : list of dict
        The library warnings raised while clips were read and computed, one entry per kind (see
        :func:`sertool.library_warnings.summarize`: what it means, how many clips, which ones).
    """

    key: str
    n_total: int
    n_cached: int
    n_computed: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    clips_per_second: float = 0.0
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{self.key}: {self.n_total} clips, {self.n_cached} cached, {self.n_computed} computed, "
            f"{len(self.skipped)} skipped in {self.seconds:.1f} s ({self.clips_per_second:.1f} clips/s)"
        )


@dataclass
class _Task:
    corpus: str
    utt_ids: list[str]
    paths: list[str]
    sha1s: list[str]


@dataclass
class _Result:
    corpus: str
    utt_ids: list[str]
    sha1s: list[str]
    outputs: list[dict[str, np.ndarray]]
    skipped: list[tuple[str, str]]
    n_clips: int
    pid: int = field(default_factory=os.getpid)  # the process that computed it
    warnings: list[WarningRecord] = field(default_factory=list)  # library warnings, with their clips


def _load(
    task: _Task, sr: int, min_duration: float, records: list[WarningRecord]
) -> tuple[list[tuple[int, np.ndarray]], list[tuple[str, str]]]:
    """Read the task's clips; unreadable ones are skipped, library warnings recorded per clip."""
    loaded, skipped = [], []
    for i, path in enumerate(task.paths):
        with library_warnings.clip(path, records):
            try:
                loaded.append((i, load_audio(path, sr=sr, min_duration=min_duration)))
            except AudioError as err:
                skipped.append((err.path, err.reason))
    return loaded, skipped


_BLAS_CONTROLLER: dict[int, Any] = {}  # per process (a forked or loky worker builds its own)


def _one_blas_thread() -> Any:
    """A context that limits BLAS to one thread (:mod:`threadpoolctl`), with the library scan done once.

    ``threadpool_limits()`` scans the loaded libraries on every call: 3 ms here, 20-30 ms in a fresh
    worker process, per shard. A :class:`threadpoolctl.ThreadpoolController` made once per process
    limits in microseconds.
    """
    from threadpoolctl import ThreadpoolController

    controller = _BLAS_CONTROLLER.get(os.getpid())
    if controller is None:
        controller = _BLAS_CONTROLLER[os.getpid()] = ThreadpoolController()
    return controller.limit(limits=1, user_api="blas")


def _check_outputs(out: dict[str, np.ndarray], path: str) -> None:
    if "pooled" not in out:
        raise ParameterError(f"extractor returned no 'pooled' output for {path} (got {sorted(out)})")
    for name, arr in out.items():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise AudioError(path, f"non-finite features: {bad} NaN/inf values in output {name!r}")


def _extract(
    extractor: Extractor,
    task: _Task,
    loaded: list[tuple[int, np.ndarray]],
    skipped: list[tuple[str, str]],
    records: list[WarningRecord],
    *,
    limit_blas: bool = True,
) -> _Result:
    """Features of the loaded clips of one task; AudioErrors from the extractor skip that clip only.

    CPU extractors (``parallel_processes``) run with single-threaded BLAS, as in joblib's workers: their
    matrix products are small, threads only add contention, and the result bits depend on the BLAS thread
    count, so this makes in-process, process-pool and Dask runs write identical caches.
    """
    if extractor.parallel_processes:
        with _one_blas_thread():
            return _extract_all(extractor, task, loaded, skipped, records)
    return _extract_all(extractor, task, loaded, skipped, records)


def _batch_is_per_clip(extractor: Extractor) -> bool:
    """Whether ``extract_batch`` is ``extract`` clip by clip (the base class's, possibly under preprocessing):
    then each clip is computed on its own, so that a library warning names its clip."""
    from sertool.features.transforms import TransformedExtractor

    while isinstance(extractor, TransformedExtractor):
        extractor = extractor.base
    return type(extractor).extract_batch is Extractor.extract_batch


def _extract_one(
    extractor: Extractor, task: _Task, i: int, y: np.ndarray, skipped: list[tuple[str, str]]
) -> dict[str, np.ndarray] | None:
    try:
        return extractor.extract(y)
    except AudioError as err:
        skipped.append((task.paths[i], err.reason))
        return None


def _extract_all(
    extractor: Extractor,
    task: _Task,
    loaded: list[tuple[int, np.ndarray]],
    skipped: list[tuple[str, str]],
    records: list[WarningRecord],
) -> _Result:
    outs: list[dict[str, np.ndarray] | None] = []
    if _batch_is_per_clip(extractor):
        for i, y in loaded:
            with library_warnings.clip(task.paths[i], records):
                outs.append(_extract_one(extractor, task, i, y, skipped))
    else:
        try:
            with library_warnings.clip("", records):  # a batch: the warning's clip is not known
                outs = list(extractor.extract_batch([y for _, y in loaded]))
        except AudioError:  # isolate the offending clip
            outs = []
            for i, y in loaded:
                with library_warnings.clip(task.paths[i], records):
                    outs.append(_extract_one(extractor, task, i, y, skipped))
    res = _Result(task.corpus, [], [], [], skipped, len(task.paths), warnings=records)
    for (i, _), out in zip(loaded, outs, strict=True):
        if out is None:
            continue
        try:
            _check_outputs(out, task.paths[i])
        except AudioError as err:
            skipped.append((err.path, err.reason))
            continue
        res.utt_ids.append(task.utt_ids[i])
        res.sha1s.append(task.sha1s[i])
        res.outputs.append(out)
    return res


def _run_task(extractor: Extractor, task: _Task, min_duration: float, limit_blas: bool = True) -> _Result:
    """One shard, start to end (the unit a worker process, thread or Dask worker runs)."""
    records: list[WarningRecord] = []
    with library_warnings.capturing():  # a worker process's own warnings module (a no-op nesting here)
        loaded, skipped = _load(task, extractor.sr, min_duration, records)
        return _extract(extractor, task, loaded, skipped, records, limit_blas=limit_blas)


def _tasks(missing: pd.DataFrame, shard_size: int, *, longest_first: bool) -> list[_Task]:
    """Cut the missing rows into shards of ``shard_size``, per corpus, ordered by duration (then ``utt_id``).

    Plain numpy (one sort, list slices): the pandas groupby / sort / slice version cost ~7 ms per call,
    ~2% of a 200-clip run.
    """
    if missing.empty:
        return []
    utt = missing["utt_id"].astype(str).to_numpy()
    paths = missing["path"].astype(str).to_numpy()
    sha1 = missing["sha1"].astype(str).to_numpy()
    dur = missing["duration_s"].to_numpy(dtype=float)
    codes, names = pd.factorize(missing["corpus"].astype(str))  # corpora in order of first appearance
    order = np.lexsort((utt, -dur if longest_first else dur, codes))  # stable, last key first
    tasks = []
    for code, name in enumerate(names):
        rows = order[codes[order] == code]
        for start in range(0, len(rows), shard_size):
            idx = rows[start : start + shard_size]
            tasks.append(_Task(str(name), utt[idx].tolist(), paths[idx].tolist(), sha1[idx].tolist()))
    return tasks


def _load_one(
    path: str, sr: int, min_duration: float
) -> tuple[np.ndarray | None, tuple[str, str] | None, list[WarningRecord]]:
    records: list[WarningRecord] = []
    with library_warnings.clip(path, records):
        try:
            return load_audio(path, sr=sr, min_duration=min_duration), None, records
        except AudioError as err:
            return None, (err.path, err.reason), records


def _in_process_decoding_pool(
    extractor: Extractor, tasks: Sequence[_Task], min_duration: float, workers: int
) -> Iterator[_Result]:
    """Shards one after the other while ``workers`` processes decode the next shards' audio.

    For a fast accelerator, decoding in one thread is the bottleneck (and threads contend for the GIL with
    the thread feeding the GPU), so files are decoded in worker processes, up to two shards ahead.
    """
    from concurrent.futures import ProcessPoolExecutor

    def submit(task: _Task) -> list[Any]:
        return [pool.submit(_load_one, p, extractor.sr, min_duration) for p in task.paths]

    def collect(
        futures: list[Any], records: list[WarningRecord]
    ) -> tuple[list[tuple[int, np.ndarray]], list[tuple[str, str]]]:
        loaded, skipped = [], []
        for i, fut in enumerate(futures):
            y, err, warned = fut.result()
            records += warned
            if err is None:
                loaded.append((i, y))
            else:
                skipped.append(err)
        return loaded, skipped

    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = [submit(t) for t in tasks[:2]]
        for k, task in enumerate(tasks):
            records: list[WarningRecord] = []
            loaded, skipped = collect(pending.pop(0), records)
            if k + 2 < len(tasks):
                pending.append(submit(tasks[k + 2]))
            yield _extract(extractor, task, loaded, skipped, records)


def _in_process(extractor: Extractor, tasks: Sequence[_Task], min_duration: float) -> Iterator[_Result]:
    """Shards one after the other; the next shard's audio is read in a thread while this one is computed."""
    if not tasks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sertool-audio") as pool:
        records: list[WarningRecord] = []
        pending = pool.submit(_load, tasks[0], extractor.sr, min_duration, records)
        for k, task in enumerate(tasks):
            loaded, skipped = pending.result()
            task_records, records = records, []
            if k + 1 < len(tasks):
                pending = pool.submit(_load, tasks[k + 1], extractor.sr, min_duration, records)
            yield _extract(extractor, task, loaded, skipped, task_records)


def _threads(
    extractor: Extractor, tasks: Sequence[_Task], min_duration: float, n_jobs: int
) -> Iterator[_Result]:
    """Shards on ``n_jobs`` threads of this process, yielded as they finish (longest first).

    At most ``2 * n_jobs`` shards are in flight, so memory stays bounded and a kill loses only those. BLAS is
    limited to one thread for the whole run (see :func:`_extract`).
    """
    queue = deque(tasks)
    running: set[Future] = set()
    with (
        _one_blas_thread(),
        ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="sertool-extract") as pool,
    ):
        try:
            while queue or running:
                while queue and len(running) < 2 * n_jobs:
                    running.add(pool.submit(_run_task, extractor, queue.popleft(), min_duration, False))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            for fut in running:
                fut.cancel()


_FORKED: tuple[Extractor, float] | None = None  # a forked worker's extractor and min_duration


def _forked_init(extractor: Extractor, min_duration: float, parent: int) -> None:
    """Worker start-up: die with the parent, keep the inherited extractor (nothing was pickled).

    The parent limited BLAS to one thread before forking (see :func:`_extract`); the child inherits that.
    """
    global _FORKED
    _die_with_parent(parent)
    _FORKED = (extractor, min_duration)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    A forked worker waits on a pipe whose write end it inherited itself, so it would never see the end of
    input: after ``kill -9`` of the parent it would wait forever. (loky workers watch their parent.)
    """
    import contextlib
    import ctypes
    import signal

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # every Linux libc has prctl
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _forked_task(task: _Task) -> _Result:
    assert _FORKED is not None
    extractor, min_duration = _FORKED
    records: list[WarningRecord] = []
    with library_warnings.capturing():
        loaded, skipped = _load(task, extractor.sr, min_duration, records)
        return _extract_all(extractor, task, loaded, skipped, records)


#: The last fork pool, shut down without waiting for its workers to exit (they exit on their own), and the
#: thread that manages it until they have.
_LAST_FORK_POOL: Any = None
_LAST_FORK_MANAGER: threading.Thread | None = None


def _reap_fork_pool() -> None:
    """Wait for the previous fork pool's workers and manager thread (long done by the next call).

    ``shutdown(wait=False)`` forgets the pool's manager thread, so a second ``shutdown(wait=True)`` joins
    nothing: the thread is kept aside when the pool is shut down and joined here. (Without that, a second
    extraction started within ~10 ms of the first found that thread still running and took threads instead
    of forking: every other extractor of one ``sertool features`` call.)
    """
    global _LAST_FORK_POOL, _LAST_FORK_MANAGER
    if _LAST_FORK_MANAGER is not None:
        _LAST_FORK_MANAGER.join()
        _LAST_FORK_MANAGER = None
    if _LAST_FORK_POOL is not None:
        _LAST_FORK_POOL.shutdown(wait=True)
        _LAST_FORK_POOL = None


def wait_for_workers() -> None:
    """End the worker processes extraction leaves for reuse, and wait until they have exited.

    The last fork pool's workers exit on their own after a run (this joins them), and the reusable loky
    executor of ``backend="processes"`` (joblib's, which ``joblib.Parallel`` shares: the benchmark runner's
    unit workers) keeps its workers for the next call, which then pays their start-up again. A program calls
    this before it exits, so that no worker outlives it (the ``sertool`` command does).
    """
    _reap_fork_pool()
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None) if loky is not None else None
    if executor is not None:
        executor.shutdown(wait=True)
        # joblib's memory-mapped arrays (the unit workers' inputs) are deleted and unregistered now, while
        # the resource tracker still runs: stopping it later with them registered prints "leaked" warnings
        manager = getattr(executor, "_temp_folder_manager", None)
        if manager is not None:
            with contextlib.suppress(Exception):  # a private joblib method: best effort
                manager._clean_temporary_resources(force=True, allow_non_empty=True)


def _can_fork(extractor: Extractor) -> bool:
    """Whether ``backend="auto"`` may fork workers for this extractor from this process now."""
    _reap_fork_pool()
    return (
        extractor.fork_safe
        and sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1  # a fork copies only the calling thread (and not others' locks)
    )


def _forked(
    extractor: Extractor, tasks: Sequence[_Task], min_duration: float, n_jobs: int
) -> Iterator[_Result]:
    """Shards on ``n_jobs`` worker processes forked from this one, yielded as they finish (longest first).

    The workers are forked before any other thread of the pool exists and inherit the extractor (its
    filterbanks and caches) through the fork; a task carries only paths, a result only features. At most
    ``2 * n_jobs`` shards are in flight, so a kill loses only those; the workers end with the run.
    """
    from concurrent.futures import ProcessPoolExecutor

    _reap_fork_pool()
    queue = deque(tasks)
    running: set[Future] = set()
    with _one_blas_thread():  # inherited by the workers
        extractor.warm_up()  # lazy imports and first-call costs once here, inherited by the workers
        pool = ProcessPoolExecutor(
            max_workers=n_jobs,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_forked_init,
            initargs=(extractor, min_duration, os.getpid()),
        )
        try:
            while queue or running:
                while queue and len(running) < 2 * n_jobs:
                    running.add(pool.submit(_forked_task, queue.popleft()))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            global _LAST_FORK_POOL, _LAST_FORK_MANAGER
            for fut in running:
                fut.cancel()
            # every result is in; the workers' exit (~10 ms) need not be waited for here. The manager thread
            # is a private attribute of ProcessPoolExecutor (3.9+); without it, shut down and wait now.
            manager = getattr(pool, "_executor_manager_thread", None)
            if isinstance(manager, threading.Thread):
                pool.shutdown(wait=False, cancel_futures=True)
                _LAST_FORK_POOL, _LAST_FORK_MANAGER = pool, manager
            else:  # pragma: no cover - another Python's executor
                pool.shutdown(wait=True, cancel_futures=True)


def _loky(
    extractor: Extractor, tasks: Sequence[_Task], min_duration: float, n_jobs: int
) -> Iterator[_Result]:
    """Shards on ``n_jobs - 1`` joblib (loky) worker processes plus this process (see :func:`_pool`).

    Starting a loky worker costs seconds (it imports sertool, librosa, numba ...), as much as computing a few
    hundred clips; the executor is reused across calls. It is joblib's memory-mapping flavour of loky's
    reusable executor, the one ``joblib.Parallel`` reuses too (the benchmark runner's unit workers): a plain
    loky executor left in that shared slot breaks the next ``Parallel`` call.
    """
    from joblib.executor import get_memmapping_executor

    executor = get_memmapping_executor(n_jobs - 1)
    yield from _pool(
        extractor,
        tasks,
        min_duration,
        n_jobs,
        executor,
        lambda task: executor.submit(_run_task, extractor, task, min_duration),
    )


def _ping() -> int:
    return os.getpid()


def _pool(
    extractor: Extractor,
    tasks: Sequence[_Task],
    min_duration: float,
    n_jobs: int,
    executor: Any,
    submit: Callable[[_Task], Future],
) -> Iterator[_Result]:
    """Shards on an executor's ``n_jobs - 1`` worker processes plus this process.

    A worker gets a shard only once it has answered a ping (it is up), and meanwhile, or whenever no result is
    waiting to be written, this process computes shards itself. Workers take the longest shards from the
    front of the queue, this process the shortest from the back. Small jobs finish before a slow-starting
    worker is up, large ones run ``n_jobs`` wide.
    """
    queue = deque(tasks)  # longest first
    pings: set[Future] = {executor.submit(_ping) for _ in range(n_jobs - 1)}
    running: set[Future] = set()
    # a worker that is already up answers within milliseconds: give it that long before this process starts
    # on the queue itself (a cold worker takes seconds; this process does not wait for that)
    wait(pings, timeout=0.2, return_when=FIRST_COMPLETED)

    def feed(n: int) -> None:
        for _ in range(n):
            if queue:
                running.add(submit(queue.popleft()))

    try:
        while queue or running:
            up = {f for f in pings if f.done()}
            pings -= up
            feed(len(up))
            done = {f for f in running if f.done()}
            running -= done
            for fut in done:
                yield fut.result()
                feed(1)
            if up or done:
                continue
            if queue:
                yield _run_task(extractor, queue.pop(), min_duration)
            else:
                wait(running | pings, return_when=FIRST_COMPLETED)
    finally:
        for fut in running | pings:
            fut.cancel()


def _dask(
    extractor: Extractor, tasks: Sequence[_Task], min_duration: float, scheduler: Any
) -> Iterator[_Result]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ParameterError("scheduler= needs the 'distributed' package (pip install distributed)") from exc
    own = not hasattr(scheduler, "submit")
    client = Client(scheduler) if own else scheduler
    try:
        [ext] = client.scatter([extractor], broadcast=True)
        futures = [client.submit(_run_task, ext, t, min_duration, pure=False) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            client.cancel(futures)
    finally:
        if own:
            client.close()


@dataclass
class _Plan:
    """How one run computes its shards: the shard tasks and the backend that runs them.

    ``backend`` is ``"dask"``, ``"threads"``, ``"fork"`` or ``"processes"`` (shards ``n_jobs`` wide),
    ``"decoding-pool"`` (shards in this process, audio decoded by ``decode_workers`` processes) or
    ``"in-process"`` (shards in this process, audio read by one background thread).
    """

    tasks: list[_Task]
    backend: str
    n_jobs: int
    decode_workers: int = 0
    scheduler: Any = None

    def describe(self) -> str:
        """The log line's tail: where the shards run."""
        if self.backend == "dask":
            return f" on {self.scheduler}"
        wide = {"threads": "threads", "fork": "forked processes", "processes": "processes"}
        return f" with {self.n_jobs} {wide[self.backend]}" if self.backend in wide else ""


def _check_arguments(
    manifest: pd.DataFrame, extractor: Extractor, *, jobs: int, shard_size: int, backend: str
) -> None:
    """Raise :class:`ParameterError` for bad ``jobs`` / ``shard_size`` / ``backend`` or missing columns."""
    if not isinstance(shard_size, int | np.integer) or shard_size < 1:
        raise ParameterError(f"shard_size must be a positive integer, got {shard_size!r}")
    if not isinstance(jobs, int | np.integer) or jobs == 0 or jobs < -1:
        raise ParameterError(f"jobs must be -1 (all cores) or a positive integer, got {jobs!r}")
    if backend not in ("auto", "fork", "threads", "processes"):
        raise ParameterError(f"backend must be 'auto', 'fork', 'threads' or 'processes', got {backend!r}")
    if backend == "threads" and not extractor.thread_safe:
        raise ParameterError(f"{extractor.name} is not thread-safe: use backend='processes' or 'auto'")
    if backend == "fork" and not extractor.fork_safe:
        raise ParameterError(f"{extractor.name} is not fork-safe: use backend='processes' or 'auto'")
    if backend == "fork" and "fork" not in multiprocessing.get_all_start_methods():
        raise ParameterError("backend='fork' needs a POSIX system with fork(); use 'processes' or 'auto'")
    needed = [c for c in ("utt_id", "path", "corpus", "sha1", "duration_s") if c not in manifest.columns]
    if needed:
        raise ParameterError(f"manifest lacks columns {needed} needed for feature extraction")


def _plan(
    missing: pd.DataFrame,
    extractor: Extractor,
    *,
    jobs: int,
    shard_size: int,
    scheduler: Any,
    backend: str,
) -> _Plan:
    """Choose the backend (see the module docstring) and cut the missing rows into shard tasks.

    Shards run ``n_jobs`` wide (``parallel_processes`` extractors with ``jobs > 1``) are made small enough
    to keep every job busy and start with the longest clips, as do shards sent to a Dask cluster.
    """
    n_jobs = joblib.cpu_count() if jobs == -1 else int(jobs)  # joblib's count honours cgroup CPU quotas
    wide = scheduler is None and extractor.parallel_processes and n_jobs > 1
    forked = wide and (backend == "fork" or (backend == "auto" and _can_fork(extractor)))
    threads = (
        wide
        and not forked
        and (
            backend == "threads" or (backend == "auto" and extractor.thread_safe and n_jobs <= THREADS_UP_TO)
        )
    )
    size = int(shard_size)
    if wide:
        # enough shards that the last ones do not leave a job idle: ~4 per process (static start-up order),
        # ~2 per thread (threads pick up work as they free; fewer shards, fewer writes: 200 RAVDESS clips ran
        # at 238 vs 211 clips/s, medians of 5, with 2 vs 4 per thread)
        per_job = 2 if threads or forked else 4
        size = max(1, min(size, -(-len(missing) // (per_job * n_jobs))))
    tasks = _tasks(missing, size, longest_first=scheduler is not None or wide)
    if scheduler is not None:
        return _Plan(tasks, "dask", n_jobs, scheduler=scheduler)
    if wide:
        return _Plan(tasks, "threads" if threads else "fork" if forked else "processes", n_jobs)
    return _Plan(tasks, "in-process", n_jobs)


def _run(extractor: Extractor, plan: _Plan, min_duration: float) -> Iterator[_Result]:
    """Start the plan's backend: an iterator of shard results, in the order they finish."""
    tasks = plan.tasks
    if plan.backend == "dask":
        return _dask(extractor, tasks, min_duration, plan.scheduler)
    if plan.backend in ("threads", "fork", "processes") and len(tasks) > 1:
        run = {"threads": _threads, "fork": _forked, "processes": _loky}[plan.backend]
        return run(extractor, tasks, min_duration, min(plan.n_jobs, len(tasks)))
    workers = extractor.decode_workers(plan.n_jobs)
    if workers > 0 and len(tasks) > 1:
        return _in_process_decoding_pool(extractor, tasks, min_duration, workers)
    return _in_process(extractor, tasks, min_duration)


def _write_shards(
    store: FeatureStore,
    extractor: Extractor,
    results: Iterator[_Result],
    report: ExtractionReport,
    progress: Callable[[int], None] | None,
    records: list[WarningRecord],
) -> None:
    """Write each shard result to the cache as it arrives, counting it in ``report`` and ``progress`` and
    its library warnings in ``records``.

    The backend is closed however this ends (an exception from ``progress`` stops the run; shards written so
    far stay cached).
    """
    try:
        for res in results:
            store.write_shard(res.corpus, extractor, res.utt_ids, res.sha1s, res.outputs)
            report.n_computed += len(res.utt_ids)
            report.skipped += res.skipped
            records += res.warnings
            for path, reason in res.skipped:
                log.info("skipped %s: %s", path, reason)
            if progress is not None:
                progress(res.n_clips)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _mark_complete(
    store: FeatureStore, extractor: Extractor, manifest: pd.DataFrame, skipped: Sequence[tuple[str, str]]
) -> None:
    """Record in each corpus's entry that the pass finished: its clips, and how many were skipped."""
    skipped_paths = {p for p, _ in skipped}
    corpora = manifest["corpus"].astype(str).to_numpy()
    was_skipped = (
        manifest["path"].astype(str).isin(skipped_paths).to_numpy()
        if skipped_paths
        else np.zeros(len(corpora), bool)
    )
    codes, names = pd.factorize(corpora)  # no groupby: ~12 ms of pandas per run
    n_expected = np.bincount(codes, minlength=len(names))
    n_skipped = np.bincount(codes, weights=was_skipped, minlength=len(names))
    for k, corpus in enumerate(names):
        store.mark_complete(str(corpus), extractor, n_expected=int(n_expected[k]), skipped=int(n_skipped[k]))


def _finish(
    report: ExtractionReport, t0: float, extractor: Extractor, records: list[WarningRecord]
) -> ExtractionReport:
    """Fill in the report's wall time, rate and library warnings, and log its summary: one line, one per kind
    of library warning, and one for the skipped clips (each is logged at INFO level and listed in
    :attr:`ExtractionReport.skipped`)."""
    report.seconds = time.perf_counter() - t0
    report.clips_per_second = report.n_computed / report.seconds if report.n_computed else 0.0
    report.warnings = library_warnings.summarize(records)
    log.info("%s", report.summary())
    library_warnings.log_summary(report.warnings, extractor.name, log)
    if report.skipped:
        path, reason = report.skipped[0]
        log.warning(
            "%s: %d clip(s) skipped (ExtractionReport.skipped lists each with its reason), e.g. %s: %s",
            extractor.name,
            len(report.skipped),
            path,
            reason,
        )
    return report


def _announce_frames(extractor: Extractor, missing: pd.DataFrame) -> None:
    """Say what the frame sequences about to be cached will cost on disk (extractors that store frames of
    several layers: ``frame_layers="all"`` multiplies one layer's size by the layer count)."""
    size = getattr(extractor, "frames_bytes", None)
    if size is None or missing.empty or "duration_s" not in missing:
        return
    n_bytes = size(missing["duration_s"].to_numpy())
    if n_bytes:
        layers = getattr(extractor, "frame_layers", None) or ()
        (log.warning if len(layers) > 1 else log.info)(
            "%s: frames of %d layer(s) %s for %d clips: about %.2f GiB in the cache (float16)",
            extractor.key, len(layers), list(layers), len(missing), n_bytes / 2**30,
        )  # fmt: skip


def extract_features(
    manifest: pd.DataFrame,
    extractor: Extractor,
    *,
    cache: FeatureStore | str | os.PathLike,
    jobs: int = -1,
    shard_size: int = 64,
    scheduler: str | Any | None = None,
    progress: Callable[[int], None] | None = None,
    min_duration: float = 0.0,
    backend: str = "auto",
) -> ExtractionReport:
    """Compute and cache the features of the manifest's clips that the cache lacks.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Needs ``utt_id, path, corpus, sha1, duration_s``; may span several corpora (stored per corpus).
    extractor : Extractor
        E.g. ``get_extractor("handcrafted94")``.
    cache : FeatureStore or path
        The cache (a folder is opened as a :class:`FeatureStore`).
    jobs : int, optional
        Shards computed at once (threads or processes, see ``backend``) for extractors with
        ``parallel_processes = True``; -1 (default) uses every core, 1 runs in this process only. Ignored by
        in-process extractors and with ``scheduler``.
    shard_size : int, optional
        Most clips per shard (the unit of work, of writing, and of what a kill can lose). With several
        processes, shards are made smaller when needed to give each process at least about four.
    scheduler : str or dask.distributed.Client, optional
        A Dask scheduler address (``"tcp://10.0.0.1:8786"``) or client: shards run on that cluster.
    progress : callable, optional
        Called in this process with a number of clips, like ``tqdm.update``: first with the number already
        cached (when there are any), then after each shard is written with the clips it finished (computed or
        skipped); the calls sum to ``n_total``. An exception raised by it stops the run (shards written so
        far stay cached).
    min_duration : float, optional
        Clips shorter than this many seconds are skipped.
    backend : {"auto", "fork", "threads", "processes"}, optional
        How ``jobs > 1`` runs a ``parallel_processes`` extractor: processes forked from this one (POSIX,
        extractors marked ``fork_safe``), threads of this process (extractors marked ``thread_safe``),
        freshly started worker processes (loky; any extractor), or ``"auto"`` (see the module docstring).
        The cache is identical either way.

    Returns
    -------
    ExtractionReport

    Raises
    ------
    ParameterError
        Bad ``jobs`` / ``shard_size``, or a manifest without the needed columns.
    CacheError
        An entry lock could not be taken.
    """
    _check_arguments(manifest, extractor, jobs=jobs, shard_size=shard_size, backend=backend)
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache)
    t0 = time.perf_counter()
    missing = store.missing(manifest, extractor)
    plan = _plan(missing, extractor, jobs=jobs, shard_size=shard_size, scheduler=scheduler, backend=backend)
    report = ExtractionReport(extractor.key, len(manifest), len(manifest) - len(missing), 0)
    log.info(
        "%s: %d of %d clips to compute in %d shard(s)%s",
        extractor.key,
        len(missing),
        len(manifest),
        len(plan.tasks),
        plan.describe(),
    )
    _announce_frames(extractor, missing)
    records: list[WarningRecord] = []
    with library_warnings.capturing():  # library warnings are recorded with their clips, in every backend
        results = _run(extractor, plan, min_duration)
        if progress is not None and report.n_cached:
            progress(report.n_cached)
        _write_shards(store, extractor, results, report, progress, records)
    _mark_complete(store, extractor, manifest, report.skipped)
    return _finish(report, t0, extractor, records)
