"""``sertool serve``: a small local web app to try a saved model.

One page (no external assets, so it works offline): upload a clip or record one in the browser, and see the
emotion probabilities as a bar chart, the transcript when the model reads Whisper features (and Whisper
weights with a decoder are available), and a link to the leaderboard of the run the model came from. A clip
the model's out-of-distribution guard flags (:mod:`sertool.guard`: unlike the training data, or given the
model's constant far-away answer) gets a visible notice above its label; the JSON carries ``ood_score``,
``in_distribution`` and ``constant_output``. A model trained with ``--normalize`` is refused: one upload
carries no speaker statistics (``sertool predict --normalize-by folder`` / ``--enroll`` label such audio).

Endpoints: ``GET /`` the page; ``GET /api/model`` the model card; ``POST /api/predict`` (multipart field
``file``) the prediction as JSON; ``GET /leaderboard`` the run's leaderboard HTML (404 when the model does not
know it). Uploads larger than ``max_mb`` are refused with 413 before they are parsed, files that are not
audio with 415 and the loader's reason; nothing an upload contains is executed or kept (it is written to a
temporary file for decoding and deleted).

The server binds to 127.0.0.1 by default: only this machine can reach it.
"""

# no "from __future__ import annotations": FastAPI reads the endpoint annotations (Request) at runtime
import html
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from sertool.exceptions import AudioError, ParameterError

__all__ = ["create_app", "serve"]

log = logging.getLogger(__name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sertool: __TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem} .muted{color:#666;font-size:.9rem}
.controls{display:flex;gap:.5rem;flex-wrap:wrap;align-items:center;margin:1rem 0}
button{padding:.45rem .9rem;border-radius:.3rem;border:1px solid #888;background:#f4f4f4;cursor:pointer}
button:disabled{opacity:.5;cursor:default}
.row{display:grid;grid-template-columns:7rem 1fr 4rem;gap:.5rem;align-items:center;margin:.2rem 0}
.track{background:#eee;border-radius:.2rem;height:1.1rem}
.bar{background:#4a7bd0;height:100%;border-radius:.2rem}
.row.top .bar{background:#d0704a}
#label{font-size:1.3rem;font-weight:600} #error{color:#b00020;white-space:pre-wrap}
#transcript{font-style:italic}
#ood{background:#fff4d6;border:2px solid #d08a00;border-radius:.3rem;padding:.5rem .8rem;font-weight:600}
</style></head>
<body>
<h1>Speech emotion: __TITLE__</h1>
<p class="muted">__SUBTITLE__</p>
<div class="controls">
  <input type="file" id="file" accept="audio/*">
  <button id="send">Predict</button>
  <button id="record">Record</button>
  <button id="stop" disabled>Stop</button>
  <span id="status" class="muted"></span>
</div>
<div id="error"></div>
<div id="result" hidden>
  <p id="ood" role="alert" hidden></p>
  <p>Predicted: <span id="label"></span> <span id="duration" class="muted"></span></p>
  <div id="bars"></div>
  <p id="transcript" hidden></p>
</div>
__LEADERBOARD__
<script>
const $ = (id) => document.getElementById(id);
let recorder = null, chunks = [];
function show(data) {
  $("error").textContent = "";
  $("result").hidden = false;
  $("label").textContent = data.label;
  $("duration").textContent = "(" + data.duration_s.toFixed(2) + " s)";
  const ood = $("ood");
  ood.hidden = data.in_distribution !== false;
  ood.textContent = data.in_distribution !== false ? "" : (data.constant_output
    ? "The model gives this clip the answer it gives any input far from its training data: the label below "
      + "does not depend on the audio."
    : "This clip lies outside the data the model was trained on (out-of-distribution score "
      + data.ood_score.toFixed(2) + ", above 1 is outside): the label below is not reliable.");
  const bars = $("bars"); bars.innerHTML = "";
  if (data.value !== undefined && data.range && data.range[1] > data.range[0]) {
    const [lo, hi] = data.range;
    const row = document.createElement("div");
    row.className = "row top"; row.dataset.value = data.value;
    row.innerHTML = '<span class="cls"></span><div class="track"><div class="bar"></div></div><span class="pct"></span>';
    row.querySelector(".cls").textContent = data.target + " (" + lo.toFixed(2) + " to " + hi.toFixed(2) + ")";
    row.querySelector(".bar").style.width = (100 * Math.min(1, Math.max(0, (data.value - lo) / (hi - lo)))).toFixed(1) + "%";
    row.querySelector(".pct").textContent = data.value.toFixed(3);
    bars.appendChild(row);
  }
  for (const [cls, p] of Object.entries(data.probabilities)) {
    const row = document.createElement("div");
    row.className = "row" + (cls === data.label ? " top" : "");
    row.dataset.class = cls; row.dataset.p = p;
    row.innerHTML = '<span class="cls"></span><div class="track"><div class="bar"></div></div><span class="pct"></span>';
    row.querySelector(".cls").textContent = cls;
    row.querySelector(".bar").style.width = (100 * p).toFixed(1) + "%";
    row.querySelector(".pct").textContent = (100 * p).toFixed(1) + "%";
    bars.appendChild(row);
  }
  const t = $("transcript");
  t.hidden = !data.transcript; t.textContent = data.transcript ? "\\u201c" + data.transcript + "\\u201d" : "";
}
async function send(blob, name) {
  $("status").textContent = "predicting...";
  const form = new FormData(); form.append("file", blob, name);
  try {
    const r = await fetch("/api/predict", {method: "POST", body: form});
    const data = await r.json();
    if (!r.ok) { $("result").hidden = true; $("error").textContent = data.error || r.statusText; }
    else show(data);
  } catch (e) { $("error").textContent = String(e); }
  $("status").textContent = "";
}
$("send").onclick = () => {
  const f = $("file").files[0];
  if (!f) { $("error").textContent = "choose an audio file first"; return; }
  send(f, f.name);
};
function wav(buffer) {  // mono 16-bit PCM WAV of a decoded AudioBuffer
  const x = buffer.getChannelData(0), n = x.length, sr = buffer.sampleRate;
  const v = new DataView(new ArrayBuffer(44 + 2 * n));
  const s = (o, t) => { for (let i = 0; i < t.length; i++) v.setUint8(o + i, t.charCodeAt(i)); };
  s(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); s(8, "WAVE"); s(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, sr, true); v.setUint32(28, 2 * sr, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  s(36, "data"); v.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) v.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, x[i])) * 32767, true);
  return new Blob([v], {type: "audio/wav"});
}
$("record").onclick = async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    recorder = new MediaRecorder(stream); chunks = [];
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      const raw = new Blob(chunks, {type: recorder.mimeType});
      const ctx = new AudioContext();
      const decoded = await ctx.decodeAudioData(await raw.arrayBuffer());
      send(wav(decoded), "recording.wav");
    };
    recorder.start(); $("record").disabled = true; $("stop").disabled = false;
    $("status").textContent = "recording...";
  } catch (e) { $("error").textContent = "cannot record: " + e; }
};
$("stop").onclick = () => {
  if (recorder) recorder.stop();
  $("record").disabled = false; $("stop").disabled = true;
};
</script>
</body></html>
"""


def _page(model: Any) -> str:
    card = model.card
    trained = card.get("trained_on", {})
    title = f"{card['model']} on {card['features']}"
    what = (
        f"predicts {model.target} (regression)"
        if model.task == "regression"
        else f"classes: {', '.join(model.classes)}"
    )
    sub = (
        f"{what} · trained on {trained.get('corpus')} "
        f"({trained.get('n_train')} utterances{', split ' + str(trained['split_id']) if trained.get('split_id') else ''})"
    )
    link = (
        '<p><a id="leaderboard" href="/leaderboard">Leaderboard of the run this model came from</a></p>'
        if card.get("leaderboard") and Path(card["leaderboard"]).is_file()
        else ""
    )
    return (
        _PAGE.replace("__TITLE__", html.escape(title))
        .replace("__SUBTITLE__", html.escape(sub))
        .replace("__LEADERBOARD__", link)
    )


def create_app(model: Any, *, max_bytes: int = 20_000_000, transcriber: Any = None) -> Any:
    """The FastAPI application serving ``model``.

    Parameters
    ----------
    model : sertool.deploy.TrainedModel
        The loaded model.
    max_bytes : int, optional
        Largest accepted upload (request body), in bytes.
    transcriber : callable, optional
        ``transcriber(signal_16k) -> str``; by default one is built for models on Whisper features when
        Whisper weights with a decoder are available (else no transcript is shown).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.formparsers import MultiPartException

    from sertool.data.audio import load_audio

    if max_bytes <= 0:
        raise ParameterError(f"max_bytes must be positive, got {max_bytes!r}")
    if model.normalize is not None:
        raise ParameterError(
            f"{model.path}: trained with --normalize {model.normalize}, it needs the statistics of each "
            f"{model.normalize}'s clips, which one upload does not give; label such audio with sertool predict "
            "--normalize-by folder, --speaker-column or --enroll"
        )
    if transcriber is None and model.uses_whisper:
        from sertool.features.transcribe import make_transcriber

        transcriber = make_transcriber(model.extractor)
    app = FastAPI(title="sertool", docs_url=None, redoc_url=None, openapi_url=None)
    page = _page(model)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/model")
    def card() -> dict[str, Any]:
        return model.card

    @app.get("/leaderboard")
    def leaderboard() -> Any:
        path = model.card.get("leaderboard")
        if not path or not Path(path).is_file():
            return error(404, "this model does not come from a stored benchmark run")
        return FileResponse(path, media_type="text/html")

    @app.post("/api/predict")
    async def predict(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return error(413, f"upload of {int(length)} bytes exceeds the limit of {max_bytes} bytes")
        try:
            form = await request.form(max_files=1, max_fields=5, max_part_size=max_bytes)
        except MultiPartException as exc:
            return error(413 if "size" in str(exc).lower() else 400, f"bad upload: {exc}")
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return error(400, "send the audio as multipart form field 'file'")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            return error(413, f"upload exceeds the limit of {max_bytes} bytes")
        if not data:
            return error(415, f"{upload.filename}: empty upload")
        suffix = Path(upload.filename or "clip").suffix[:10]
        fd, tmp = tempfile.mkstemp(prefix="sertool-upload-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            try:
                y = load_audio(tmp, sr=model.extractor.sr)
            except AudioError as err:  # the reason may quote the temporary file: name the upload instead
                reason = err.reason.replace(tmp, upload.filename or "upload")
                return error(415, f"{upload.filename}: not usable audio: {reason}")
        finally:
            os.unlink(tmp)
        try:
            pred = model.predict_signals([y])
        except AudioError as err:
            return error(415, f"{upload.filename}: {err.reason.replace(tmp, upload.filename or 'upload')}")
        if model.task == "regression":
            value = float(pred.values[0])  # type: ignore[index]
            probs: dict[str, float] = {}
            label = f"{model.target} {value:.3g}"
        else:
            probs = {c: round(float(p), 6) for c, p in zip(model.classes, pred.proba[0], strict=True)}
            label = max(probs, key=probs.__getitem__)
        score = float(pred.ood_score[0])
        text = None
        if transcriber is not None:
            try:
                text = transcriber(y)
            except Exception as exc:  # a transcript is a bonus: never lose the prediction over it
                log.warning("transcription failed: %s", exc)
        extra: dict[str, Any] = {}
        if model.task == "multitask":  # the dimensions beside the category, on their own scales
            dims = list(model.card.get("dimensions") or [])
            extra["dimensions"] = {d: round(float(pred.values[0, j]), 4) for j, d in enumerate(dims)}  # type: ignore[index]
            label += " (" + ", ".join(f"{d} {v:.3g}" for d, v in extra["dimensions"].items()) + ")"
        if model.task == "regression":
            span = model.card.get("target_values") or {}
            extra = {
                "target": model.target,
                "value": round(value, 6),
                "range": [span.get("min"), span.get("max")],
            }
        return {
            **extra,
            "label": label,
            "probabilities": probs,
            "duration_s": round(y.shape[0] / model.extractor.sr, 3),
            "ood_score": round(score, 4) if math.isfinite(score) else None,
            "in_distribution": bool(pred.in_distribution[0]) if pred.guarded else None,
            "constant_output": bool(pred.constant[0]) if pred.constant is not None else False,
            "transcript": text,
            "model": model.card["model"],
            "features": model.card["features"],
        }

    return app


def serve(
    model_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    device: str = "cpu",
    max_mb: float = 20.0,
    engine: str = "auto",
) -> None:
    """Load the model in ``model_dir`` and serve its page until interrupted (see the module docstring);
    ``engine`` as :func:`sertool.deploy.load_model`."""
    import uvicorn

    from sertool.deploy import load_model

    model = load_model(model_dir, device=device, engine=engine)
    app = create_app(model, max_bytes=int(max_mb * 1e6))
    log.warning("serving %s on http://%s:%d/", json.dumps(model.card["model"]), host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
