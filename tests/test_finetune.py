"""whisper_ft: the Whisper layers above the cached frames, fine-tuned (LoRA / full) or frozen, under the splits.

References: the extractor's own full encoder pass (the copied top layers must continue it exactly before any
training), the pretrained weights (LoRA and the frozen probe must leave them as they were), the fitted model
before saving (after a round trip through safetensors), and tones whose pitch is the class.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
import torch

from sertool.exceptions import ParameterError
from sertool.features.whisper import WhisperExtractor, whisper_log_mel
from sertool.models import get_model, make_estimator, params_for_view
from sertool.models.finetune import WhisperFineTune, _pretrained, whisper_view_params
from tests.conftest import make_tiny_whisper

SR = 16000


def _tone(f: float, dur: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(dur * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * f * t) + 0.3 * np.sin(2 * np.pi * 2 * f * t) * rng.uniform(0.2, 0.8)
    return (y + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_en() -> WhisperExtractor:
    return WhisperExtractor("tiny.en", frame_layers=[2], device="cpu")


@pytest.fixture(scope="module")
def tones(tiny_en):
    """Layer-2 tiny.en frames of tones: the pitch (150 / 300 / 600 Hz) is the class; lengths 0.4-0.9 s."""
    rng = np.random.default_rng(0)
    freqs = {"low": 150.0, "mid": 300.0, "high": 600.0}
    sig, y = [], []
    for _ in range(14):
        for label, f in freqs.items():
            sig.append(_tone(f * rng.uniform(0.93, 1.07), rng.uniform(0.4, 0.9), rng))
            y.append(label)
    frames = [o["frames"][0] for o in tiny_en.extract_batch(sig)]  # float16 (T, 384), as cached
    return frames, np.array(y)


def test_view_decides_encoder_and_layer():
    assert whisper_view_params("whisper-tiny.en@2") == {"size": "tiny.en", "from_layer": 2}
    assert whisper_view_params("whisper-base@4~aug-awgn-x2") == {"size": "base", "from_layer": 4}
    for bad in ("whisper-tiny.en@all", "whisper-base@2-4", "whisper-tiny.en", "handcrafted94", "mfcc40"):
        with pytest.raises(ParameterError, match="one Whisper encoder layer"):
            whisper_view_params(bad)
    spec = get_model("whisper_ft")
    assert not spec.designed_for("whisper-base")  # runs only when named: never in --models all
    assert params_for_view(spec, "whisper-base@3", {"tune": "full"}) == {
        "tune": "full", "size": "base", "from_layer": 3,
    }  # fmt: skip
    with pytest.raises(ParameterError, match=r"from_layer=1 .*the view says 3"):
        params_for_view(spec, "whisper-base@3", {"from_layer": 1})
    assert params_for_view(get_model("logreg"), "whisper-base@3", {"C": 2.0}) == {"C": 2.0}


def test_top_layers_continue_the_pretrained_encoder(tiny_en):
    """Before training (LoRA's B = 0), layers 3-4 + the final norm applied to layer 2's states of a padded
    batch of two clips give the encoder's own last state of each clip, computed one clip at a time."""
    rng = np.random.default_rng(1)
    clips = [_tone(220.0, 0.5, rng), _tone(330.0, 1.1, rng)]
    states = []
    with torch.inference_mode():
        for y in clips:
            mel = whisper_log_mel(y, tiny_en._frames_for(len(y))[0])
            states.append([h[0].numpy() for h in tiny_en.encode(torch.from_numpy(mel[None]))])
    body = WhisperFineTune(size="tiny.en", from_layer=2, tune="lora")._build_body(384, 3).eval()
    t = max(len(s[2]) for s in states)
    x = np.zeros((2, t, 384), np.float32)
    mask = np.zeros((2, t), bool)
    for i, s in enumerate(states):
        x[i, : len(s[2])], mask[i, : len(s[2])] = s[2], True
    with torch.inference_mode():
        h = torch.from_numpy(x)
        for layer in body.layers:
            h = layer(h, torch.from_numpy(mask)[:, None, None, :])
        h = body.norm(h).numpy()
    for i, s in enumerate(states):
        np.testing.assert_allclose(h[i, : len(s[2])], s[4], atol=2e-4)


@pytest.mark.parametrize(("tune", "base_moves", "has_lora"), [("lora", False, True), ("full", True, False),
                                                              ("frozen", False, False)])  # fmt: skip
def test_what_trains(tones, tune, base_moves, has_lora):
    frames, y = tones
    est = WhisperFineTune(size="tiny.en", from_layer=2, tune=tune, max_epochs=2, n_threads=1, device="cpu")
    est.fit(frames[:24], y[:24])
    pretrained = _pretrained("tiny.en")
    body = est.module_.body
    names = [n for n, _ in body.layers.named_parameters()]
    assert any("lora_" in n for n in names) == has_lora
    moved = []
    for name, p in body.layers.named_parameters():
        if "lora_" in name:
            continue
        ref = pretrained.layers[2:].get_parameter(name.replace(".base_layer", ""))
        moved.append(not torch.equal(p.detach(), ref.detach()))
    assert any(moved) == base_moves and (all(moved) if base_moves else True)
    if has_lora:  # the adapters learned something (B started at zero)
        assert any(
            float(p.detach().abs().max()) > 0 for n, p in body.layers.named_parameters() if "lora_B" in n
        )
        assert est.n_trainable_ < sum(p.numel() for p in body.layers.parameters()) / 5
    head_ref = WhisperFineTune(size="tiny.en", from_layer=2, tune=tune)
    assert est.get_params()["tune"] == head_ref.tune


def test_weighted_layers_are_learned_and_sum_to_one(tones):
    """weighted_layers: softmax weights over the input frames and each copied layer (3 for layers 2 -> 3, 4),
    uniform at the start, learned (moved) by training, summing to one; a plain model has none."""
    frames, y = tones
    est = WhisperFineTune(size="tiny.en", from_layer=2, weighted_layers=True, max_epochs=3, n_threads=1,
                          device="cpu", lr=5e-3)  # fmt: skip
    body = est._build_body(384, 3)
    np.testing.assert_allclose(torch.softmax(body.layer_logits.detach(), 0).numpy(), [1 / 3] * 3)
    est.fit(frames[:30], y[:30])
    w = est.layer_weights_
    assert w.shape == (3,) and abs(w.sum() - 1) < 1e-6 and np.abs(w - 1 / 3).max() > 1e-4  # float32 softmax
    tensors, fitted = est.export_weights()
    back = WhisperFineTune(**est.get_params()).import_weights(tensors, fitted)
    np.testing.assert_allclose(back.layer_weights_, w)
    assert WhisperFineTune(max_epochs=1, device="cpu").fit(frames[:9], y[:9]).layer_weights_ is None


def test_learns_pitch_and_round_trips(tones):
    frames, y = tones
    train = (np.arange(len(y)) // 3) % 3 != 0  # whole rounds of the three classes
    idx_tr, idx_te = np.flatnonzero(train), np.flatnonzero(~train)
    est = WhisperFineTune(size="tiny.en", from_layer=2, max_epochs=6, n_threads=1, device="cpu", seed=3)
    est.fit([frames[i] for i in idx_tr], y[idx_tr])
    proba = est.predict_proba([frames[i] for i in idx_te])
    acc = float(np.mean(est.classes_[proba.argmax(1)] == y[idx_te]))
    assert acc >= 0.85, acc
    tensors, fitted = est.export_weights()
    back = WhisperFineTune(**est.get_params()).import_weights(tensors, fitted)
    np.testing.assert_allclose(back.predict_proba([frames[i] for i in idx_te]), proba, atol=1e-6)


def test_refuses_frames_it_cannot_continue(tones):
    frames, y = tones
    with pytest.raises(ParameterError, match="nothing above it to fine-tune"):
        WhisperFineTune(size="tiny.en", from_layer=4, max_epochs=1).fit(frames[:6], y[:6])
    with pytest.raises(ParameterError, match="384 wide"):
        WhisperFineTune(size="tiny.en", from_layer=2, max_epochs=1).fit(
            [f[:, :100] for f in frames[:6]], y[:6]
        )
    with pytest.raises(ParameterError, match="tune="):
        WhisperFineTune(tune="adapters").fit(frames[:6], y[:6])


def test_bench_and_train_derive_the_layer_from_the_view(demo_root, tmp_path):
    """Through the runner and ``train`` on a random tiny Whisper: the unit record's parameters carry the view's
    layer; the saved model predicts new audio as the fitted estimator does on the extractor's frames."""
    from sertool.bench.runner import run_bench, unit_paths
    from sertool.data.audio import load_audio
    from sertool.data.manifest import build_manifest
    from sertool.deploy import load_model, train_model
    from sertool.splits import make_split

    demo = build_manifest("demo", demo_root).manifest
    folder = make_tiny_whisper(tmp_path / "tiny")
    eparams = {"weights": str(folder), "frame_layers": [1]}
    mparams = {"weights": str(folder), "max_epochs": 2}
    split = make_split(demo, "speaker-4fold", seed=0)
    cache = tmp_path / "cache"
    report = run_bench(
        demo, split, features=["whisper-x@1"], models="whisper_ft", results_dir=tmp_path / "r", cache=cache,
        jobs=1, extractor_params={"whisper-x": eparams}, model_params={"whisper_ft": mparams},
    )  # fmt: skip
    assert report.counts == {"done": 4}
    meta = json.loads(
        unit_paths(tmp_path / "r" / "demo" / split.id, "whisper-x@1", "whisper_ft", 0)[0].read_text()
    )
    assert meta["model_params"]["from_layer"] == 1 and meta["model_params"]["size"] == "x"
    with pytest.raises(ParameterError, match="one Whisper encoder layer"):
        run_bench(
            demo, split, features=["whisper-x@all"], models="whisper_ft", results_dir=tmp_path / "r",
            cache=cache, jobs=1, extractor_params={"whisper-x": eparams}, model_params={"whisper_ft": mparams},
        )  # fmt: skip
    out = train_model(
        demo, features="whisper-x@1", model="whisper_ft", out=tmp_path / "m", cache=cache, jobs=1,
        model_params=mparams, extractor_params=eparams,
    )  # fmt: skip
    model = load_model(out, cache=cache)
    ex = WhisperExtractor("x", weights=str(folder), frame_layers=[1], device="cpu")
    clips = [load_audio(p) for p in pd.Series(demo["path"]).iloc[:3]]
    frames = [o["frames"][0] for o in ex.extract_batch(clips)]
    card = json.loads((out / "model.json").read_text())
    assert card["model"] == "whisper_ft"
    est = make_estimator("whisper_ft", seed=0)
    assert isinstance(est, WhisperFineTune)
    by_estimator = model.estimator.predict_proba(frames)  # columns: the encoded labels, i.e. sorted names
    order = [sorted(model.classes).index(c) for c in model.classes]
    np.testing.assert_allclose(model.predict_proba_signals(clips), by_estimator[:, order], atol=1e-5)
