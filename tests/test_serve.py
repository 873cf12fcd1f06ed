"""``sertool serve``: the API on a live local server, and the page driven in a real headless Chromium."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from sertool.data.audio import load_audio  # noqa: E402
from sertool.data.manifest import build_manifest  # noqa: E402
from sertool.deploy import load_model, predict_files, train_model  # noqa: E402
from sertool.serve import create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MAX_BYTES = 300_000


@pytest.fixture(scope="module")
def model(demo_root, tmp_path_factory):
    demo = build_manifest("demo", demo_root).manifest
    tmp = tmp_path_factory.mktemp("serve")
    out = train_model(demo, features="handcrafted94", model="logreg", out=tmp / "m", cache=tmp / "c", jobs=1)
    return load_model(out, cache=tmp / "c")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _running(app):
    """``app`` served on 127.0.0.1 in a background thread; yields its base URL."""
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(model):
    """The app with a fake transcriber standing in for Whisper's."""
    with _running(
        create_app(model, max_bytes=MAX_BYTES, transcriber=lambda y: f"{y.shape[0]} samples heard")
    ) as url:
        yield url


def _post(url: str, name: str, data: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url + "/api/predict", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_api_predicts_like_the_library(server, model, demo_root):
    clip = sorted(demo_root.rglob("*.wav"))[3]
    status, got = _post(server, clip.name, clip.read_bytes())
    assert status == 200, got
    df, _ = predict_files(model, [clip])
    assert got["label"] == df["label"].iloc[0]
    assert set(got["probabilities"]) == set(model.classes)
    assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    for c in model.classes:
        assert got["probabilities"][c] == pytest.approx(df[f"proba__{c}"].iloc[0], abs=1e-6)
    n = load_audio(clip).shape[0]
    assert got["transcript"] == f"{n} samples heard" and got["duration_s"] == round(n / 16000, 3)


def test_api_rejects_oversized_and_non_audio_uploads(server):
    status, got = _post(server, "big.wav", b"\0" * (MAX_BYTES + 1000))
    assert status == 413 and "exceeds the limit" in got["error"]
    status, got = _post(server, "notes.txt", b"just some text, no audio here")
    assert status == 415 and got["error"].startswith("notes.txt: not usable audio")
    silent = Path(__file__).parent / "_silent.wav"
    try:
        sf.write(silent, np.zeros(8000, dtype=np.float32), 16000)
        status, got = _post(server, "silent.wav", silent.read_bytes())
    finally:
        silent.unlink()
    assert status == 415 and "all-zero" in got["error"]


def test_page_and_leaderboard_routes(server, model):
    with urllib.request.urlopen(server + "/", timeout=10) as r:
        page = r.read().decode()
    assert 'id="file"' in page and "logreg on handcrafted94" in page
    assert 'id="leaderboard"' not in page  # trained on all data: no run to link
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server + "/leaderboard", timeout=10)
    assert err.value.code == 404
    with urllib.request.urlopen(server + "/api/model", timeout=10) as r:
        assert json.loads(r.read())["model"] == "logreg"


def test_page_links_the_leaderboard_of_the_run(demo_root, tmp_path):
    from sertool.bench.runner import run_bench
    from sertool.splits import make_split

    demo = build_manifest("demo", demo_root).manifest
    split = make_split(demo, "speaker-4fold", seed=0)
    results, cache = tmp_path / "results", tmp_path / "cache"
    run_bench(demo, split, features=["handcrafted94"], models="gnb", results_dir=results, cache=cache, jobs=1)
    out = train_model(
        demo, features="handcrafted94", model="gnb", out=tmp_path / "m", split=split, cache=cache,
        results_dir=results,
    )  # fmt: skip
    with _running(create_app(load_model(out, cache=cache), transcriber=lambda y: None)) as url:
        with urllib.request.urlopen(url + "/", timeout=10) as r:
            assert 'id="leaderboard" href="/leaderboard"' in r.read().decode()
        with urllib.request.urlopen(url + "/leaderboard", timeout=10) as r:
            board = r.read().decode()
    assert "<html" in board.lower() and "gnb" in board


def test_serve_binds_to_localhost_by_default():
    import inspect

    from sertool.cli import build_parser
    from sertool.serve import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    args = build_parser().parse_args(["serve", "--model", "m"])
    assert args.host == "127.0.0.1"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian package chromium)")
def test_page_in_a_real_browser(server, model, demo_root, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = sorted(demo_root.rglob("*.wav"))[5]
    expected = predict_files(model, [clip])[0].iloc[0]
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",  # the Record button gets Chromium's fake microphone (a beep)
        "--use-fake-device-for-media-stream",
    ]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            # upload a clip: the bars show the model's probabilities, the top one highlighted
            page.set_input_files("#file", str(clip))
            page.click("#send")
            page.wait_for_selector("#result:not([hidden])", timeout=20000)
            assert page.text_content("#label") == expected["label"]
            rows = page.query_selector_all("#bars .row")
            assert [r.get_attribute("data-class") for r in rows] == model.classes
            shown = {r.get_attribute("data-class"): float(r.get_attribute("data-p")) for r in rows}
            for c in model.classes:
                assert shown[c] == pytest.approx(expected[f"proba__{c}"], abs=1e-5)
            top = page.query_selector("#bars .row.top")
            assert top.get_attribute("data-class") == expected["label"]
            width = page.eval_on_selector("#bars .row.top .bar", "e => e.style.width")
            assert float(width.rstrip("%")) == pytest.approx(100 * shown[expected["label"]], abs=0.1)
            assert "samples heard" in page.text_content("#transcript")
            assert page.is_hidden("#ood")  # a clip like the training data: no notice
            page.screenshot(path=str(tmp_path / "page.png"))
            # white noise: the guard's notice is shown above the label
            noise = tmp_path / "noise.wav"
            sf.write(noise, (0.3 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32), 16000)
            page.set_input_files("#file", str(noise))
            page.click("#send")
            page.wait_for_selector("#ood:not([hidden])", timeout=20000)
            assert "outside the data the model was trained on" in page.text_content("#ood")
            assert page.is_visible("#ood")
            # a non-audio file: the page shows the server's reason and hides the old result
            page.set_input_files("#file", str(bad))
            page.click("#send")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=20000)
            assert "not usable audio" in page.text_content("#error")
            assert page.is_hidden("#result")
            # record from the (fake) microphone, stop, and get a prediction of the recording
            page.click("#record")
            page.wait_for_timeout(1500)
            page.click("#stop")
            page.wait_for_selector("#result:not([hidden])", timeout=20000)
            assert page.text_content("#label") in model.classes
            assert float(page.text_content("#duration").strip("( s)")) > 0.5
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("clip", "words"),
    [("03-01-05-01-01-01-01", ("talking", "door")), ("03-01-03-02-02-01-02", ("dogs", "sitting", "door"))],
)
def test_transcriber_with_real_tiny_en_weights(ravdess_root, tmp_path, clip, words):
    """RAVDESS actors read one of two statements; the offline tiny.en weights must hear them."""
    pytest.importorskip("ctranslate2")
    from sertool.features import get_extractor
    from sertool.features.transcribe import make_transcriber

    ex = get_extractor("whisper-tiny.en", cache=tmp_path)
    transcribe = make_transcriber(ex, cache=tmp_path)
    assert transcribe is not None
    actor = clip.rsplit("-", 1)[1]
    text = transcribe(load_audio(ravdess_root / f"Actor_{actor}" / f"{clip}.flac")).lower()
    assert all(w in text for w in words), text


def test_page_is_self_contained(model):
    """No external scripts, styles or fonts: the page must work offline."""
    from sertool.serve import _page

    page = _page(model)
    assert "http://" not in page and "https://" not in page and "<script src" not in page


def test_split_base_weights_are_assembled_once(tmp_path):
    """whisper base ships in two packages: the decoder folder is assembled into the cache once, atomically."""
    from sertool.features.transcribe import ct2_folder
    from sertool.features.weights import BUILTIN_WEIGHTS, _builtin_parts, resolve

    parts = _builtin_parts("base") if "base" in BUILTIN_WEIGHTS else None
    if parts is None:
        pytest.skip("whisper base weight packages not installed")
    weights = resolve("base", cache=tmp_path)
    folder = ct2_folder(weights, tmp_path)
    assert folder.parent == tmp_path / "weights" and folder.name.startswith("ct2-base-")
    assert (folder / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    assert {p.name for p in folder.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert ct2_folder(weights, tmp_path) == folder and (folder / "model.bin").stat().st_mtime_ns == stamp
    assert not list((tmp_path / "weights").glob(".*tmp-*"))


def test_api_reports_the_out_of_distribution_guard(server, model, demo_root, tmp_path):
    """Every prediction carries the guard's verdict, as ``predict_files`` gives it; noise is flagged."""
    clip = sorted(demo_root.rglob("*.wav"))[2]
    status, got = _post(server, clip.name, clip.read_bytes())
    df, _ = predict_files(model, [clip])
    assert status == 200 and got["in_distribution"] is True and got["constant_output"] is False
    assert got["ood_score"] == pytest.approx(df["ood_score"].iloc[0], abs=1e-3)
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.3 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32), 16000)
    status, got = _post(server, "noise.wav", noise.read_bytes())
    assert status == 200 and got["in_distribution"] is False and got["ood_score"] > 1
    assert got["ood_score"] == pytest.approx(predict_files(model, [noise])[0]["ood_score"].iloc[0], rel=1e-3)
    with urllib.request.urlopen(server + "/", timeout=10) as r:
        assert 'id="ood"' in r.read().decode()  # the notice's place on the page


def test_a_normalised_model_is_refused_with_the_options_that_serve_it(demo_root, tmp_path):
    from sertool.exceptions import ParameterError

    demo = build_manifest("demo", demo_root).manifest
    out = train_model(
        demo, features="handcrafted94", model="logreg", out=tmp_path / "m", cache=tmp_path / "c", jobs=1,
        normalize="speaker",
    )  # fmt: skip
    with pytest.raises(ParameterError, match="--normalize-by folder"):
        create_app(load_model(out, cache=tmp_path / "c"), transcriber=lambda y: None)


def test_api_and_page_of_a_regression_model(demo_root, tmp_path):
    """A model of a continuous target answers a number on its training scale, the library's number."""
    from sertool.data.targets import apply_target

    demo = build_manifest("demo", demo_root).manifest
    rng = np.random.default_rng(5)
    manifest = apply_target(demo.assign(arousal=rng.uniform(1.0, 5.0, len(demo))), "arousal")
    out = train_model(
        manifest, features="handcrafted94", model="ridge", out=tmp_path / "m", cache=tmp_path / "c", jobs=1
    )
    reg = load_model(out, cache=tmp_path / "c")
    clip = sorted(demo_root.rglob("*.wav"))[0]
    with _running(create_app(reg, max_bytes=MAX_BYTES)) as url:
        status, got = _post(url, clip.name, clip.read_bytes())
        with urllib.request.urlopen(url + "/", timeout=30) as r:
            page = r.read().decode()
    assert status == 200, got
    df, _ = predict_files(reg, [clip])
    assert got["target"] == "arousal" and got["value"] == pytest.approx(df["arousal"].iloc[0], abs=1e-5)
    assert got["probabilities"] == {} and got["label"].startswith("arousal ")
    span = json.loads((out / "model.json").read_text())["target_values"]
    assert got["range"] == [span["min"], span["max"]] and 1.0 <= span["min"] < span["max"] <= 5.0
    assert "predicts arousal (regression)" in page
