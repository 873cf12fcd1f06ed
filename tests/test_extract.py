"""The extraction runner: only missing rows, shards, bad clips, resume after a kill, concurrency, Dask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import REPO, tone
from threadpoolctl import threadpool_limits

from sertool.data.audio import load_audio
from sertool.data.manifest import build_manifest
from sertool.exceptions import AudioError, ParameterError
from sertool.features import get_extractor
from sertool.features.base import Extractor
from sertool.features.extract import ExtractionReport, extract_features
from sertool.features.store import FeatureStore


def small_corpus(dst: Path, demo_root: Path, n: int = 16) -> pd.DataFrame:
    """Copy ``n`` demo clips (4 per speaker) to ``dst`` and return their manifest."""
    (dst / "SYNTHETIC.txt").parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo_root / "SYNTHETIC.txt", dst / "SYNTHETIC.txt")
    files = sorted(demo_root.glob("spk*/*.wav"))
    picked = [f for spk in sorted({f.parent.name for f in files}) for f in files if f.parent.name == spk][:n]
    for f in picked:
        (dst / f.parent.name).mkdir(exist_ok=True)
        shutil.copy(f, dst / f.parent.name / f.name)
    return build_manifest("demo", dst).manifest


@pytest.fixture
def corpus(tmp_path, demo_root) -> pd.DataFrame:
    return small_corpus(tmp_path / "corpus", demo_root)


def reference(manifest: pd.DataFrame, name: str = "handcrafted94") -> np.ndarray:
    """Features computed directly, with single-threaded BLAS as the runner uses for CPU extractors."""
    ex = get_extractor(name)
    with threadpool_limits(limits=1, user_api="blas"):
        return np.stack([ex.extract(load_audio(p))["pooled"] for p in manifest["path"]])


def shards_of(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*/*/part-*.parquet"))


def test_extract_computes_missing_then_hits_cache(tmp_path, corpus):
    ex = get_extractor("handcrafted94")
    calls: list[int] = []
    rep = extract_features(corpus, ex, cache=tmp_path / "cache", jobs=1, shard_size=5, progress=calls.append)
    assert isinstance(rep, ExtractionReport) and rep.key == ex.key
    assert (rep.n_total, rep.n_cached, rep.n_computed, rep.skipped) == (16, 0, 16, [])
    assert calls == [5, 5, 5, 1] and rep.seconds > 0 and rep.clips_per_second > 0
    assert len(shards_of(tmp_path / "cache")) == 4
    fs = FeatureStore(tmp_path / "cache").load(corpus, "handcrafted94")
    assert fs.utt_ids == corpus["utt_id"].tolist()
    np.testing.assert_array_equal(fs.X, reference(corpus))
    again = extract_features(corpus, ex, cache=tmp_path / "cache", jobs=1, progress=calls.append)
    assert (again.n_cached, again.n_computed) == (16, 0) and calls == [5, 5, 5, 1, 16]
    st = FeatureStore(tmp_path / "cache").status()
    assert st[["corpus", "key", "n_rows", "complete"]].values.tolist() == [["demo", ex.key, 16, True]]


def test_processes_and_in_process_fill_identical_caches(tmp_path, corpus, monkeypatch):
    from joblib.executor import get_memmapping_executor

    import sertool.features.extract as extract_mod

    get_memmapping_executor(1).submit(extract_mod._ping).result()  # a worker is up
    pids: set[int] = set()
    real_pool = extract_mod._pool

    def spy_pool(*args):
        for res in real_pool(*args):
            pids.add(res.pid)
            yield res

    monkeypatch.setattr(extract_mod, "_pool", spy_pool)
    ex = get_extractor("handcrafted94")
    a = extract_features(corpus, ex, cache=tmp_path / "a", jobs=2, shard_size=2, backend="processes")
    b = extract_features(corpus, get_extractor("handcrafted94"), cache=tmp_path / "b", jobs=1, shard_size=16)
    assert a.key == b.key and a.n_computed == b.n_computed == 16
    assert os.getpid() in pids and len(pids) == 2  # this process and the worker both computed shards
    entries = {
        d.parent.relative_to(d.parents[3]) for d in shards_of(tmp_path / "a") + shards_of(tmp_path / "b")
    }
    assert entries == {Path("demo") / ex.key}  # jobs and shard size are not part of the key
    xa = FeatureStore(tmp_path / "a").load(corpus, "handcrafted94").X
    np.testing.assert_array_equal(xa, FeatureStore(tmp_path / "b").load(corpus, "handcrafted94").X)


@pytest.mark.parametrize("name", ["handcrafted94", "mfcc40"])
def test_thread_backend_fills_an_identical_cache(tmp_path, corpus, monkeypatch, name):
    import threading

    import sertool.features.extract as extract_mod

    threads: set[str] = set()
    real_run = extract_mod._run_task

    def spy_run(*args):
        threads.add(threading.current_thread().name)
        return real_run(*args)

    monkeypatch.setattr(extract_mod, "_run_task", spy_run)
    a = extract_features(
        corpus, get_extractor(name), cache=tmp_path / "a", jobs=2, shard_size=2, backend="threads"
    )
    assert len(threads) == 2 and all(t.startswith("sertool-extract") for t in threads), threads
    b = extract_features(corpus, get_extractor(name), cache=tmp_path / "b", jobs=1, shard_size=16)
    assert a.n_computed == b.n_computed == 16
    sa, sb = FeatureStore(tmp_path / "a"), FeatureStore(tmp_path / "b")
    np.testing.assert_array_equal(sa.load(corpus, name).X, sb.load(corpus, name).X)
    if name == "mfcc40":
        fa, fb = (st.load(corpus, name, output="frames").X for st in (sa, sb))
        assert len(fa) == 16 and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork backend is auto on Linux only")
@pytest.mark.parametrize("name", ["handcrafted94", "mfcc40"])
def test_fork_backend_is_auto_when_single_threaded_and_fills_an_identical_cache(tmp_path, corpus, name):
    import threading

    import sertool.features.extract as extract_mod

    if threading.active_count() > 1:  # another test left a thread (loky, Dask): auto takes threads then
        extract_mod._reap_fork_pool()
    auto = None
    if threading.active_count() == 1:
        extract_mod._LAST_FORK_POOL = None
        auto = extract_features(corpus, get_extractor(name), cache=tmp_path / "auto", jobs=2, shard_size=2)
        assert extract_mod._LAST_FORK_POOL is not None  # auto forked
    forked = extract_features(
        corpus, get_extractor(name), cache=tmp_path / "fork", jobs=2, shard_size=2, backend="fork"
    )
    ref = extract_features(corpus, get_extractor(name), cache=tmp_path / "ref", jobs=1, shard_size=16)
    assert forked.n_computed == ref.n_computed == 16
    stores = [FeatureStore(tmp_path / d) for d in (["fork", "ref"] + (["auto"] if auto else []))]
    xs = [st.load(corpus, name).X for st in stores]
    for x in xs[1:]:
        np.testing.assert_array_equal(xs[0], x)
    if name == "mfcc40":
        frames = [st.load(corpus, name, output="frames").X for st in stores]
        assert all(np.array_equal(a, b) for f in frames[1:] for a, b in zip(frames[0], f, strict=True))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork() is used on Linux only")
def test_a_finished_fork_pool_leaves_no_thread_behind(tmp_path, corpus):
    """Reaping the last fork pool joins its manager thread: ``backend="auto"`` forks only while this process
    runs one thread, and ``shutdown(wait=False)`` forgets that thread, so before this was kept aside a second
    extraction started right after a first found it alive and ran on threads instead."""
    import threading

    import sertool.features.extract as extract_mod

    extract_mod._reap_fork_pool()
    before = set(threading.enumerate())
    for k in range(3):
        rep = extract_features(
            corpus, get_extractor("handcrafted94"), cache=tmp_path / str(k), jobs=2, backend="fork"
        )
        assert rep.n_computed == 16
        extract_mod._reap_fork_pool()  # what the next extraction does first
        left = [t for t in threading.enumerate() if t not in before]
        assert left == [], left


def test_fork_workers_compute_in_other_processes(tmp_path, corpus, monkeypatch):
    """Every shard of a fork run comes from a forked worker, which inherited the warmed-up extractor."""
    import sertool.features.extract as extract_mod

    results = []
    real = extract_mod._forked

    def spy(*args):
        for res in real(*args):
            results.append(res)
            yield res

    monkeypatch.setattr(extract_mod, "_forked", spy)
    ex = get_extractor("handcrafted94")
    calls = []
    real_warm = ex.warm_up
    monkeypatch.setattr(ex, "warm_up", lambda: (calls.append(os.getpid()), real_warm()))
    rep = extract_features(corpus, ex, cache=tmp_path, jobs=2, shard_size=3, backend="fork")
    assert rep.n_computed == 16 and len(results) == 6
    pids = {r.pid for r in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert calls == [os.getpid()]  # warmed up once, in this process, before forking


def test_backend_is_validated(tmp_path, corpus):
    with pytest.raises(ParameterError, match="backend"):
        extract_features(corpus, get_extractor("mfcc40"), cache=tmp_path, backend="gpu")
    unsafe = get_extractor("mfcc40")
    unsafe.fork_safe = False
    with pytest.raises(ParameterError, match="fork-safe"):
        extract_features(corpus, unsafe, cache=tmp_path, backend="fork")


def test_egemaps_in_forked_workers_equals_one_process(tmp_path, corpus):
    """Forked workers each build their own openSMILE instance (the parent built one before forking) and give
    the features that one process computes clip by clip."""
    pytest.importorskip("opensmile")
    ex = get_extractor("egemaps")
    assert len(ex.feature_names) == 88  # the parent's own Smile exists now
    rep = extract_features(corpus, ex, cache=tmp_path / "fork", jobs=2, shard_size=3, backend="fork")
    assert rep.n_computed == 16 and rep.skipped == []
    forked = FeatureStore(tmp_path / "fork").load(corpus, "egemaps")
    by_hand = np.stack([get_extractor("egemaps").extract(load_audio(p))["pooled"] for p in corpus["path"]])
    order = [list(corpus["utt_id"]).index(u) for u in forked.utt_ids]
    np.testing.assert_array_equal(forked.X, by_hand[order])


def test_dask_cluster_gives_identical_output(tmp_path, corpus):
    distributed = pytest.importorskip("distributed")
    ex = get_extractor("mfcc40")
    local = extract_features(corpus, ex, cache=tmp_path / "local", jobs=1, shard_size=6)
    with distributed.LocalCluster(
        n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        rep = extract_features(
            corpus, ex, cache=tmp_path / "dask", scheduler=cluster.scheduler_address, shard_size=6
        )
    assert rep.n_computed == local.n_computed == 16 and rep.skipped == []
    for output in ("pooled", "frames"):
        xa = FeatureStore(tmp_path / "local").load(corpus, "mfcc40", output=output).X
        xb = FeatureStore(tmp_path / "dask").load(corpus, "mfcc40", output=output).X
        assert all(np.array_equal(u, v) for u, v in zip(xa, xb, strict=True))


def test_audio_change_recomputes_exactly_that_clip(tmp_path, corpus):
    ex = get_extractor("handcrafted94")
    extract_features(corpus, ex, cache=tmp_path / "cache", jobs=1)
    before = FeatureStore(tmp_path / "cache").load(corpus, "handcrafted94").X
    victim = Path(corpus["path"].iloc[5])
    sf.write(victim, tone(1.4, freq=333.0), 16000, subtype="PCM_16")
    changed = build_manifest("demo", tmp_path / "corpus").manifest
    rep = extract_features(changed, ex, cache=tmp_path / "cache", jobs=1)
    assert (rep.n_cached, rep.n_computed) == (15, 1)
    after = FeatureStore(tmp_path / "cache").load(changed, "handcrafted94").X
    assert not np.allclose(after[5], before[5])
    np.testing.assert_array_equal(np.delete(after, 5, axis=0), np.delete(before, 5, axis=0))
    np.testing.assert_array_equal(after[5], reference(changed.iloc[[5]])[0])


def test_unfinished_and_corrupt_shards_are_recomputed(tmp_path, corpus):
    ex = get_extractor("handcrafted94")
    extract_features(corpus, ex, cache=tmp_path / "cache", jobs=1, shard_size=4)
    first, second = shards_of(tmp_path / "cache")[:2]
    (first.parent / (first.name + ".done")).unlink()  # a writer killed before its marker
    data = bytearray(second.read_bytes())
    data[len(data) // 3] ^= 0x5A  # bit rot in a finished shard
    second.write_bytes(bytes(data))
    rep = extract_features(corpus, ex, cache=tmp_path / "cache", jobs=1, shard_size=4)
    assert (rep.n_cached, rep.n_computed) == (8, 8)
    np.testing.assert_array_equal(
        FeatureStore(tmp_path / "cache").load(corpus, "handcrafted94").X, reference(corpus)
    )


def test_bad_clips_are_reported_and_the_others_cached(tmp_path, corpus):
    bad = tmp_path / "bad"
    bad.mkdir()
    sf.write(bad / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(bad / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    (bad / "text.wav").write_text("this is not audio\n")
    extra = corpus.iloc[[0, 0, 0]].copy()
    extra["utt_id"] = ["demo/bad_empty", "demo/bad_silent", "demo/bad_text"]
    extra["path"] = [str(bad / n) for n in ("empty.wav", "silent.wav", "text.wav")]
    extra["sha1"] = ["1" * 40, "2" * 40, "3" * 40]
    manifest = pd.concat([corpus, extra], ignore_index=True)
    rep = extract_features(manifest, get_extractor("handcrafted94"), cache=tmp_path / "cache", jobs=1)
    assert rep.n_computed == 16
    reasons = dict(rep.skipped)
    assert set(reasons) == set(extra["path"])
    assert "empty" in reasons[str(bad / "empty.wav")]
    assert "all-zero" in reasons[str(bad / "silent.wav")]
    assert "unreadable" in reasons[str(bad / "text.wav")]
    fs = FeatureStore(tmp_path / "cache").load(manifest, "handcrafted94", allow_missing=True)
    assert fs.utt_ids == corpus["utt_id"].tolist() and fs.missing == sorted(extra["utt_id"])


def test_min_duration_skips_short_clips(tmp_path, corpus):
    limit = float(np.median(corpus["duration_s"]))
    rep = extract_features(
        corpus, get_extractor("handcrafted94"), cache=tmp_path / "c", jobs=1, min_duration=limit
    )
    short = corpus.loc[corpus["duration_s"] < limit, "path"].tolist()
    assert sorted(p for p, _ in rep.skipped) == sorted(short) and rep.n_computed == 16 - len(short)
    assert all("too short" in r for _, r in rep.skipped)


class Recorder(Extractor):
    """In-process extractor that records its batches and returns NaN for one chosen length."""

    name = "recorder"
    parallel_processes = False
    nan_length = -1

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def params(self) -> dict[str, Any]:
        return {}

    @property
    def dim(self) -> int:
        return 2

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        v = np.nan if y.shape[0] == self.nan_length else float(y.shape[0])
        return {"pooled": np.array([v, y.std()], dtype=np.float32)}

    def extract_batch(self, signals):
        self.batches.append([y.shape[0] for y in signals])
        return [self.extract(y) for y in signals]


def test_in_process_batches_are_length_sorted_and_nan_clips_skipped(tmp_path, corpus):
    ex = Recorder()
    lengths = [load_audio(p).shape[0] for p in corpus["path"]]
    ex.nan_length = lengths[3]
    rep = extract_features(corpus, ex, cache=tmp_path / "cache", jobs=4, shard_size=6)
    assert [len(b) for b in ex.batches] == [6, 6, 4]
    flat = [n for b in ex.batches for n in b]
    assert flat == sorted(lengths)
    assert rep.n_computed == 15 and rep.skipped[0][0] == corpus["path"].iloc[3]
    assert "non-finite" in rep.skipped[0][1]


def test_run_resumes_after_an_interrupted_progress_callback(tmp_path, corpus):
    ex = get_extractor("handcrafted94")
    seen: list[int] = []

    def stop_after_two(n: int) -> None:
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(corpus, ex, cache=tmp_path / "cache", jobs=1, shard_size=4, progress=stop_after_two)
    assert len(shards_of(tmp_path / "cache")) == 2
    seen.clear()
    rep = extract_features(corpus, ex, cache=tmp_path / "cache", jobs=1, shard_size=4, progress=seen.append)
    assert (rep.n_cached, rep.n_computed) == (8, 8) and seen == [8, 4, 4]


RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    import pandas as pd
    from sertool.features import get_extractor
    from sertool.features.extract import extract_features
    manifest = pd.read_parquet(sys.argv[1])
    kill_after = int(sys.argv[3])
    done = []
    def progress(n):
        done.append(n)
        if len(done) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    rep = extract_features(manifest, get_extractor("handcrafted94"), cache=sys.argv[2], jobs=1, shard_size=2,
                           progress=progress)
    print(rep.n_computed)
    """
)


def run_script(tmp_path: Path, manifest: pd.DataFrame, kill_after: int) -> subprocess.Popen:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    mpath = tmp_path / "manifest.parquet"
    if not mpath.exists():
        manifest.to_parquet(mpath)
    return subprocess.Popen(
        [sys.executable, str(script), str(mpath), str(tmp_path / "cache"), str(kill_after)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_resume_after_sigkill(tmp_path, corpus):
    proc = run_script(tmp_path, corpus, kill_after=3)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    assert len(shards_of(tmp_path / "cache")) == 3
    rep = extract_features(
        corpus, get_extractor("handcrafted94"), cache=tmp_path / "cache", jobs=1, shard_size=2
    )
    assert (rep.n_cached, rep.n_computed) == (6, 10)
    np.testing.assert_array_equal(
        FeatureStore(tmp_path / "cache").load(corpus, "handcrafted94").X, reference(corpus)
    )


def test_two_processes_writing_one_cache_leave_it_valid(tmp_path, corpus):
    procs = [run_script(tmp_path, corpus, kill_after=-1) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    files = shards_of(tmp_path / "cache")
    markers = [json.loads((f.parent / (f.name + ".done")).read_text()) for f in files]
    assert sum(m["rows"] for m in markers) == 16  # rows one process wrote first were not stored twice
    assert not list((tmp_path / "cache").glob("*/*/*/.*tmp*"))
    store = FeatureStore(tmp_path / "cache")
    assert store.status()["n_rows"].tolist() == [16]
    np.testing.assert_array_equal(store.load(corpus, "handcrafted94").X, reference(corpus))


@pytest.mark.parametrize(("kwargs", "match"), [({"jobs": 0}, "jobs"), ({"shard_size": 0}, "shard_size")])
def test_bad_arguments(tmp_path, corpus, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        extract_features(corpus, get_extractor("handcrafted94"), cache=tmp_path, **kwargs)


def test_extractor_audio_errors_skip_only_that_clip(tmp_path, corpus):
    class Picky(Recorder):
        name = "picky"

        def extract(self, y):
            if y.shape[0] == self.nan_length:
                raise AudioError("<signal>", "extractor refused it")
            return super().extract(y)

        def extract_batch(self, signals):
            return [self.extract(y) for y in signals]

    ex = Picky()
    ex.nan_length = load_audio(corpus["path"].iloc[7]).shape[0]
    rep = extract_features(corpus, ex, cache=tmp_path / "cache", shard_size=8)
    assert rep.n_computed == 15 and rep.skipped == [(corpus["path"].iloc[7], "extractor refused it")]


class _DecodedElsewhere(Extractor):
    """An in-process extractor that asks for decoding processes (as Whisper does on CUDA)."""

    name = "test-decoded"
    parallel_processes = False

    def params(self) -> dict[str, Any]:
        return {}

    @property
    def dim(self) -> int:
        return 2

    def decode_workers(self, jobs: int) -> int:
        return 2

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return {"pooled": np.array([y.mean(), y.std()], dtype=np.float32)}


def test_decoding_pool_path_equals_plain_path(tmp_path, corpus, demo_root):
    bad = tmp_path / "bad"
    bad.mkdir()
    manifest = corpus.copy()
    manifest.loc[0, "path"] = str(bad / "missing.wav")  # vanished since the manifest was built
    pooled = extract_features(manifest, _DecodedElsewhere(), cache=tmp_path / "a", jobs=2, shard_size=4)
    assert pooled.n_computed == len(manifest) - 1
    assert [p for p, _ in pooled.skipped] == [str(bad / "missing.wav")]
    plain = _DecodedElsewhere()
    plain.decode_workers = lambda jobs: 0  # type: ignore[method-assign]
    extract_features(manifest, plain, cache=tmp_path / "b", jobs=2, shard_size=4)
    a = FeatureStore(tmp_path / "a").load(manifest, "test-decoded", allow_missing=True)
    b = FeatureStore(tmp_path / "b").load(manifest, "test-decoded", allow_missing=True)
    assert a.utt_ids == b.utt_ids and len(a.utt_ids) == len(manifest) - 1
    np.testing.assert_array_equal(a.X, b.X)


FORK_RUNNER = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys
    import pandas as pd
    from sertool.features import get_extractor
    from sertool.features.extract import extract_features
    manifest = pd.read_parquet(sys.argv[1])
    def progress(n):
        with open(sys.argv[3], "w") as fh:
            fh.write(" ".join(str(p.pid) for p in multiprocessing.active_children()))
        os.kill(os.getpid(), signal.SIGKILL)
    extract_features(manifest, get_extractor("handcrafted94"), cache=sys.argv[2], jobs=2, shard_size=2,
                     backend="fork", progress=progress)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_forked_workers_die_with_a_killed_parent(tmp_path, corpus):
    """kill -9 of the parent ends its forked workers too (they would otherwise wait on a pipe forever)."""
    import time

    script, mpath, pid_file = tmp_path / "fork_runner.py", tmp_path / "m.parquet", tmp_path / "pids"
    script.write_text(FORK_RUNNER)
    corpus.to_parquet(mpath)
    with open(tmp_path / "log", "w") as log:  # a file, not a pipe: orphans holding it cannot stall the test
        proc = subprocess.run(
            [sys.executable, str(script), str(mpath), str(tmp_path / "cache"), str(pid_file)],
            cwd=REPO,
            stdout=log,
            stderr=log,
            timeout=300,
        )
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "log").read_text()
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(") ")[-1][0] != "Z"  # a zombie has ended
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(alive, pids)), pids


@pytest.mark.parametrize("longest_first", [True, False])
@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_shards_follow_corpus_then_duration_then_utt_id(longest_first, size):
    """Shards hold one corpus each (corpora in order of first appearance), rows sorted by duration (longest or
    shortest first, unknown durations last) then utt_id, as the pandas groupby/sort it replaced did."""
    from sertool.features.extract import _tasks

    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "corpus": rng.choice(["b", "a", "c"], n),
            "utt_id": [f"u{i:04d}" for i in rng.permutation(n)],
            "path": [f"/p/{i}" for i in range(n)],
            "sha1": [f"s{i}" for i in range(n)],
            "duration_s": rng.choice([1.0, 2.0, 2.5, np.nan, 3.0], n),
        }
    )
    expected = []
    for corpus, part in df.groupby("corpus", sort=False):
        part = part.sort_values(["duration_s", "utt_id"], ascending=[not longest_first, True], kind="stable")
        for start in range(0, len(part), size):
            c = part.iloc[start : start + size]
            expected.append((corpus, c["utt_id"].tolist(), c["path"].tolist(), c["sha1"].tolist()))
    got = [(t.corpus, t.utt_ids, t.paths, t.sha1s) for t in _tasks(df, size, longest_first=longest_first)]
    assert got == expected
    assert [c for c, *_ in got][:1] == [df["corpus"].iloc[0]]
