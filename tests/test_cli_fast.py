"""A CLI that starts fast and speaks clearly: what is imported, library warnings in sertool's words, every
skipped input listed, no worker left behind.

Behaviour only: no wall-clock thresholds (``benchmarks/bench_cli_start.py`` measures the times).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import REPO, tone

from sertool import library_warnings
from sertool.cli import EXIT_SKIPPED, main
from sertool.data.manifest import skipped_lines
from sertool.features import get_extractor
from sertool.features.extract import extract_features

HEAVY = ("torch", "sklearn", "librosa", "numba", "pandas", "scipy")


def _modules_after(code: str) -> list[str]:
    """Every module in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _imported_by(code: str) -> list[str]:
    """The HEAVY packages imported by ``code`` in a fresh interpreter."""
    return [m for m in HEAVY if m in _modules_after(code)]


def test_import_and_help_load_no_heavy_package():
    assert _imported_by("import sertool.cli") == []
    help_run = textwrap.dedent(
        """
        import contextlib, io
        from sertool.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["--help"])
            except SystemExit:
                pass
        """
    )
    assert _imported_by(help_run) == []
    assert _imported_by("import sertool; sertool.SertoolError, sertool.__version__") == []


def test_lazy_package_names_still_resolve():
    import sertool

    assert sertool.load_audio.__module__ == "sertool.data.audio"
    assert sertool.make_split.__module__ == "sertool.splits"
    assert sertool.build_manifest is sertool.data.manifest.build_manifest
    assert set(sertool.__all__) <= set(dir(sertool))
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        _ = sertool.nosuch  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def svm_model(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sertool.data.manifest import build_manifest
    from sertool.deploy import train_model

    tmp = tmp_path_factory.mktemp("fast-model")
    manifest = build_manifest("demo", demo_root).manifest
    return train_model(
        manifest, features="handcrafted94", model="svm", out=tmp / "svm", cache=tmp / "c", jobs=1
    )


def _predict_probe(model: Path, clip: Path) -> str:
    return textwrap.dedent(
        f"""
        import contextlib, io
        from sertool.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(["predict", {str(clip)!r}, "--model", {str(model)!r}])
        assert code == 0 and "proba__" in out.getvalue(), (code, out.getvalue())
        """
    )


def test_predict_with_a_classical_model_loads_neither_numba_nor_librosas_modules(svm_model, demo_root):
    clip = sorted(demo_root.rglob("*.wav"))[0]
    modules = _modules_after(_predict_probe(svm_model, clip))
    # scikit-learn, scipy and pandas it needs; of librosa only the (lazy) package root is imported
    assert "numba" not in modules
    assert [m for m in modules if m.startswith("librosa.") and m != "librosa.version"] == []


def test_predict_with_a_classical_model_imports_no_torch(svm_model, demo_root):
    clip = sorted(demo_root.rglob("*.wav"))[0]
    assert "torch" not in _imported_by(_predict_probe(svm_model, clip))


# ------------------------------------------------------------------------------------------ handcrafted94
def test_numpy_peak_finder_gives_the_compiled_kernels_bits(rng):
    from sertool.features import handcrafted as hc

    kernel = hc.compiled_pip_peaks()
    ex = hc.Handcrafted94()
    signals = [tone(2.0, freq=f, seed=k) for k, f in enumerate((110.0, 220.0, 440.0, 97.0))]
    signals += [rng.normal(0, 0.1, 16000).astype(np.float32), np.zeros(4000, np.float32)]
    signals += [rng.normal(0, 1, 3000).astype(np.float32) ** 3]  # heavy-tailed: shifts near the edges
    for y in signals:
        power = np.square(np.abs(ex._stft(y)))
        pt = np.ascontiguousarray(power.T)
        ref = 0.1 * pt.max(axis=1)
        most = pt.shape[0] * ((hc._PIP_HI - hc._PIP_LO + 1) // 2)
        pitch, mag = np.empty(most, np.float32), np.empty(most, np.float32)
        n = kernel(pt, ref, hc._PIP_LO, hc._PIP_HI, pitch, mag)
        p2, m2 = hc._pip_peaks_numpy(pt, ref, hc._PIP_LO, hc._PIP_HI)
        assert p2.dtype == m2.dtype == np.float32
        assert np.array_equal(pitch[:n].view(np.uint32), p2.view(np.uint32))
        assert np.array_equal(mag[:n].view(np.uint32), m2.view(np.uint32))


def test_filterbanks_and_window_are_librosas_bit_for_bit():
    import librosa

    from sertool.features.handcrafted import hann_window, mel_filters

    for n_mels in (20, 60, 128):
        ours, theirs = mel_filters(n_mels), librosa.filters.mel(sr=16000, n_fft=2048, n_mels=n_mels)
        assert ours.dtype == theirs.dtype and np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    window = librosa.filters.get_window("hann", 2048, fftbins=True)
    assert np.array_equal(hann_window().view(np.uint64), window.view(np.uint64))


# ------------------------------------------------------------------------------------------ warnings
def _warning_corpus(tmp_path: Path, demo_root: Path) -> pd.DataFrame:
    """Eight demo clips, two too short for librosa's FFT window and two without a pitched peak."""
    from sertool.data.manifest import build_manifest

    root = tmp_path / "corpus"
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns("spk03", "spk04"))
    clips = sorted(root.glob("spk*/*.wav"))
    for path in clips[8:]:
        path.unlink()
    rng = np.random.default_rng(0)
    for path in clips[:2]:  # 50 ms: librosa's 2048-sample STFT of it warns
        sf.write(path, rng.normal(0, 0.1, 800).astype(np.float32), 16000)
    t = np.arange(16000) / 16000
    for path in clips[2:4]:  # a pure 100 Hz tone: no peak between 150 and 4000 Hz, tuning from nothing
        sf.write(path, (0.5 * np.sin(2 * np.pi * 100 * t)).astype(np.float32), 16000)
    return build_manifest("demo", root).manifest


@pytest.mark.parametrize(("jobs", "backend"), [(1, "auto"), (2, "threads"), (2, "fork"), (2, "processes")])
def test_extraction_reports_library_warnings_once_per_kind_with_their_clips(
    tmp_path, demo_root, capfd, caplog, jobs, backend
):
    manifest = _warning_corpus(tmp_path, demo_root)
    paths = sorted(manifest["path"])
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("default")  # what a plain Python process does
        rep = extract_features(
            manifest,
            get_extractor("handcrafted94"),
            cache=tmp_path / "c",
            jobs=jobs,
            shard_size=2,
            backend=backend,
        )
    assert rep.n_computed == 8 and rep.skipped == []
    kinds = {k["what"].split(" (")[0]: k for k in rep.warnings}
    short = kinds["shorter than the 2048-sample FFT window"]
    assert short["clips"] == 2 and short["library"] == "librosa" and set(short["examples"]) == set(paths[:2])
    flat = kinds["without a pitched peak between 150 and 4000 Hz"]
    assert flat["clips"] >= 2 and set(paths[2:4]) <= set(flat["examples"]) | set(paths[:2])
    assert leaked == [] and "UserWarning" not in capfd.readouterr().err  # none escaped in librosa's words
    lines = [r.getMessage() for r in caplog.records if r.name == "sertool.features.extract"]
    assert any(
        line.startswith("handcrafted94: 2 clips shorter than the 2048-sample FFT window") for line in lines
    )
    assert sum("shorter than the 2048-sample" in line for line in lines) == 1  # once per run
    assert warnings.showwarning is not library_warnings._ROUTER.show  # the router is gone again


def test_router_counts_every_occurrence_and_restores_python_behaviour(capfd):
    records: list[library_warnings.WarningRecord] = []
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        with library_warnings.collecting() as run:
            for name in ("a.wav", "b.wav", "a.wav"):
                with library_warnings.clip(name, records):
                    warnings.warn(
                        "n_fft=2048 is too large for input signal of length=10", UserWarning, stacklevel=1
                    )
            warnings.warn("something else 1", RuntimeWarning, stacklevel=1)
            warnings.warn("something else 2", RuntimeWarning, stacklevel=1)
        assert [r.path for r in records] == ["a.wav", "b.wav", "a.wav"]
        [kind] = library_warnings.summarize(records)
        assert (kind["clips"], kind["count"], kind["examples"]) == (2, 3, ["a.wav", "b.wav"])
        [outside] = library_warnings.summarize(run)
        assert outside["count"] == 2 and outside["clips"] == 0
        lines = library_warnings.log_summary(run, "sertool test")
        assert lines[0].startswith(
            "sertool test: test_cli_fast warned 2 times: RuntimeWarning: something else"
        )
        assert "something else" not in capfd.readouterr().err  # only sertool's log line reports them
    with pytest.warns(UserWarning, match="shown as usual"):  # the router is gone: warnings flow as usual
        warnings.warn("shown as usual", UserWarning, stacklevel=1)


# ------------------------------------------------------------------------------------------ skipped inputs
def test_skipped_lines_list_each_or_count_and_csv(tmp_path):
    few = [(f"/c/{k}.wav", "too short: 0.1 s") for k in range(3)]
    assert skipped_lines(few, tmp_path / "s.csv") == [
        f"  skipped /c/{k}.wav: too short: 0.1 s" for k in range(3)
    ]
    many = [(f"/c/{k}.wav", "unreadable: bad header" if k % 2 else "all-zero signal") for k in range(25)]
    lines = skipped_lines(many, tmp_path / "s.csv")
    assert (
        lines[0]
        == f"  25 skipped (all-zero signal 13, unreadable 12); every one, with its reason, in {tmp_path / 's.csv'}"
    )
    assert len(lines) == 4  # the count, then three examples
    assert len(skipped_lines(many, None)) == 25  # no CSV to point to: all are listed


def test_features_lists_every_skipped_input_or_writes_them_all(tmp_path, demo_root, capsys):
    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    clips = sorted(root.glob("spk*/*.wav"))
    for path in clips[:21]:  # the manifest scan skips these: more than are listed one per line
        path.write_bytes(b"not audio")
    for path in clips[21:24]:  # readable headers, silent audio: the extractor stage skips these
        sf.write(path, np.zeros(16000, np.float32), 16000)
    cache = tmp_path / "cache"
    code = main(["features", "--corpus", "demo", "--root", str(root), "--cache", str(cache), "--jobs", "1"])
    out = capsys.readouterr().out
    assert code == EXIT_SKIPPED
    csv_path = cache / "demo" / "skipped-features.csv"
    assert "manifest: 21 file(s) skipped" in out and f"in {csv_path}" in out
    for path in clips[21:24]:  # three: each listed with its reason
        assert f"  skipped {path}: all-zero signal" in out
    table = pd.read_csv(csv_path)
    assert list(table.columns) == ["stage", "path", "reason"]
    assert sorted(table.loc[table["stage"] == "manifest", "path"]) == sorted(map(str, clips[:21]))
    assert sorted(table.loc[table["stage"] == "handcrafted94", "path"]) == sorted(map(str, clips[21:24]))


# ------------------------------------------------------------------------------------------ workers
def _group(pgid: int) -> list[str]:
    """Command lines of the live processes of process group ``pgid`` (Linux /proc).

    Zombies and processes that are exiting (their memory, and with it their command line, already released)
    are not counted: neither can run anything.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, _ppid, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(group) == pgid and state not in ("Z", "X") and cmd:
            found.append(cmd)
    return found


def _children() -> dict[int, str]:
    """Live child processes of this process: pid -> command line."""
    me, found = os.getpid(), {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
            if int(ppid) == me and state not in ("Z", "X") and cmd:
                found[int(entry.name)] = cmd
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("backend", ["fork", "processes"])
def test_features_leaves_no_worker_behind(tmp_path, demo_root, backend):
    argv = ["features", "--corpus", "demo", "--root", str(demo_root), "--jobs", "2", "--backend", backend]
    # a whole process, in its own process group: when it has returned, nothing of that group is alive
    script = Path(sys.executable).with_name("sertool")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "sertool.cli"]
    with subprocess.Popen(
        [*cmd, *argv, "--cache", str(tmp_path / "a")],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    # resource trackers are not workers: they exit by themselves once the command has
    assert [c for c in _group(proc.pid) if "resource_tracker" not in c] == []
    # in this process: the command returns after its workers have exited (resource trackers are not workers;
    # workers that earlier tests left, e.g. joblib's reusable loky executor, are not the command's)
    before = set(_children())
    assert main([*argv, "--cache", str(tmp_path / "b")]) == 0
    assert [c for pid, c in _children().items() if pid not in before and "resource_tracker" not in c] == []


# ------------------------------------------------------------------------------------------ serve
def test_upload_errors_name_the_upload_never_a_server_path(svm_model):
    import io

    from fastapi.testclient import TestClient

    from sertool.deploy import load_model
    from sertool.serve import create_app

    client = TestClient(create_app(load_model(svm_model)))
    bad = client.post("/api/predict", files={"file": ("my clip.wav", b"not audio at all", "audio/wav")})
    assert bad.status_code == 415
    assert bad.json()["error"].startswith("my clip.wav: not usable audio: unreadable")
    assert "sertool-upload" not in bad.json()["error"] and "/tmp" not in bad.json()["error"]
    silent = io.BytesIO()
    sf.write(silent, np.zeros(16000, np.float32), 16000, format="WAV")
    quiet = client.post("/api/predict", files={"file": ("silent.wav", silent.getvalue(), "audio/wav")})
    assert quiet.json()["error"] == "silent.wav: not usable audio: all-zero signal (digital silence)"
