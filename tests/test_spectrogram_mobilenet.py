"""The ``spectrogram`` extractor and the ``mobilenet_spec`` head (MobileNetV2 on 1 s spectrogram blocks).

CPU only, one torch thread, tiny networks (width 0.25, 64 bins, 20-frame blocks) on synthetic data.
"""

from __future__ import annotations

import pickle
import warnings

import librosa
import numpy as np
import pytest
import torch
from conftest import tone
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score

from sertool.exceptions import ParameterError
from sertool.features import EXTRACTORS, get_extractor
from sertool.features.spectrogram import Spectrogram
from sertool.models.mobilenet import (
    InvertedResidual,
    MobileNetSpecClassifier,
    MobileNetV2,
    load_pretrained,
)

N_BINS = 64  # frame dimension of the synthetic spectrograms
BLOCK = 20  # frames per block in the tests


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small(**overrides) -> MobileNetSpecClassifier:
    params = dict(
        block_frames=BLOCK,
        width_mult=0.25,
        dropout=0.0,
        lr=3e-3,
        max_epochs=4,
        batch_size=8,
        n_threads=1,
        device="cpu",
    )
    return MobileNetSpecClassifier(**{**params, **overrides})


# ------------------------------------------------------------------------------------------------ extractor
def test_spectrogram_extractor_identity():
    assert "spectrogram" in EXTRACTORS
    ext = get_extractor("spectrogram")
    assert isinstance(ext, Spectrogram)
    assert ext.params() == {"n_fft": 512, "hop_length": 160, "n_bins": 128, "sr": 16000}
    assert ext.key.startswith("spectrogram/v1-")
    assert get_extractor("spectrogram", n_bins=64).key != ext.key  # output-changing parameter -> new key
    assert ext.outputs() == ("pooled", "frames")
    assert ext.dim == 256 and ext.sr == 16000
    assert ext.thread_safe and ext.fork_safe


def test_spectrogram_frames_match_librosa():
    y = tone(duration=1.5, freq=300.0)
    out = get_extractor("spectrogram").extract(y)
    ref = np.log1p(np.abs(librosa.stft(y, n_fft=512, hop_length=160)))[:128].T
    frames = out["frames"]
    assert frames.dtype == np.float16 and frames.shape == (1 + len(y) // 160, 128) == ref.shape
    np.testing.assert_allclose(frames.astype(np.float32), ref, rtol=1e-3, atol=1e-3)  # float16 rounding
    pooled = out["pooled"]
    assert pooled.dtype == np.float32 and pooled.shape == (256,)
    np.testing.assert_allclose(pooled[:128], ref.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[128:], ref.std(axis=0), rtol=1e-4, atol=1e-6)
    # the tone's fundamental is at bin 300 / 31.25 ~ 9.6: its energy shows there, not at the top bin
    assert pooled[9:11].max() > 5 * pooled[120]


def test_spectrogram_parameters_and_short_signals():
    ext = get_extractor("spectrogram", n_bins=40, hop_length=320)
    y = tone(duration=1.0)
    assert ext.extract(y)["frames"].shape == (1 + 16000 // 320, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no librosa "n_fft too large" warning: zero-padded to n_fft first
        short = ext.extract(y[:100])
    assert short["frames"].shape == (1 + 512 // 320, 40) and np.isfinite(short["pooled"]).all()
    with pytest.raises(ParameterError, match=r"n_bins must be an integer in 1\.\.257, got 300"):
        get_extractor("spectrogram", n_bins=300)
    with pytest.raises(ParameterError, match=r"hop_length"):
        get_extractor("spectrogram", hop_length=0)
    with pytest.raises(ParameterError, match=r"unknown parameters \['n_mels'\]"):
        get_extractor("spectrogram", n_mels=64)


# ------------------------------------------------------------------------------------------------ MobileNetV2
def test_mobilenet_v2_shapes_and_parameter_counts():
    # the reference network (torchvision mobilenet_v2: 3,504,872 parameters; width 0.5: 1,968,680)
    assert n_params(MobileNetV2(1000, in_channels=3, width_mult=1.0)) == 3_504_872
    assert n_params(MobileNetV2(1000, in_channels=3, width_mult=0.5)) == 1_968_680
    net = MobileNetV2(7, in_channels=1, width_mult=0.5)
    assert n_params(net) == 696_359
    blocks = [m for m in net.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17 and sum(b.use_res_connect for b in blocks) == 10
    net.eval()
    with torch.inference_mode():
        assert net(torch.randn(3, 1, 128, 100)).shape == (3, 7)
        assert net(torch.randn(2, 1, 16, 5)).shape == (2, 7)  # smaller than the total stride of 32


def test_load_pretrained_fits_what_fits(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = MobileNetV2(1000, in_channels=3, width_mult=0.25)
    path = tmp_path / "mnv2.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = MobileNetV2(2, in_channels=1, width_mult=0.25)
    report = load_pretrained(dst, path)
    assert report["adapted"] == ["features.0.0.weight"]  # RGB stem summed to one channel
    assert sorted(report["skipped"]) == ["classifier.1.bias", "classifier.1.weight"]
    assert sorted(report["missing"]) == sorted(report["skipped"]) and report["unexpected"] == []
    torch.testing.assert_close(dst.features[0][0].weight, src.features[0][0].weight.sum(1, keepdim=True))
    torch.testing.assert_close(dst.features[5].conv[1][0].weight, src.features[5].conv[1][0].weight)
    other = tmp_path / "other.safetensors"
    save_file({"backbone.conv.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(ParameterError, match="no tensor fits"):
        load_pretrained(MobileNetV2(2, in_channels=1, width_mult=0.25), other)
    # the head: starts from the file, and a fitted head restores without it
    X, y = blocks_task(12, np.random.default_rng(0))
    est = small(max_epochs=1, weights=str(path)).fit(X, y)
    tensors, fitted = est.export_weights()
    path.unlink()
    back = small(max_epochs=1, weights=str(path)).import_weights(tensors, fitted)
    np.testing.assert_allclose(back.predict_proba(X), est.predict_proba(X), atol=1e-6)
    with pytest.raises(ParameterError, match=r"weights='.*mnv2\.safetensors': no such file"):
        small(weights=str(path)).fit(X, y)


# ------------------------------------------------------------------------------------------------ the head
def blocks_task(n: int, rng: np.random.Generator, *, t_min: int = 8, t_max: int = 55):
    """Noise spectrograms; class "low" has extra energy in the lower half of the bins, "high" in the upper.

    64 bins, not fewer: MobileNetV2 downsamples by 32, and on 16-bin images (1 x 1 from the 4th stage on,
    batch norm over a handful of values) it learned even a level difference only slowly (UA 0.6-0.8 after 8
    epochs), while 64 x 50 images learned it in one epoch."""
    y = rng.integers(0, 2, n)
    seqs = []
    for c in y:
        s = rng.normal(1.0, 0.3, (int(rng.integers(t_min, t_max + 1)), N_BINS))
        half = slice(0, N_BINS // 2) if c == 0 else slice(N_BINS // 2, N_BINS)
        s[:, half] += 1.0
        seqs.append(s.astype(np.float16))
    return seqs, np.array(["low", "high"])[y]


@pytest.fixture(scope="module")
def task():
    rng = np.random.default_rng(11)
    Xtr, ytr = blocks_task(40, rng)
    Xte, yte = blocks_task(30, rng)
    return Xtr, ytr, Xte, yte


@pytest.fixture(scope="module")
def fitted(task):
    Xtr, ytr, _, _ = task
    return small().fit(Xtr, ytr)


def test_head_learns_a_separable_task(fitted, task):
    _, _, Xte, yte = task
    assert balanced_accuracy_score(yte, fitted.predict(Xte)) >= 0.9
    proba = fitted.predict_proba(Xte)
    assert proba.shape == (len(yte), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert list(fitted.classes_) == ["high", "low"]
    assert fitted.n_iter_ == fitted.best_epoch_ == 4
    assert fitted.history_[-1]["train_loss"] < fitted.history_[0]["train_loss"]


def test_clone_pickle_and_early_stopping(fitted, task):
    Xtr, ytr, Xte, yte = task
    c = clone(fitted)
    assert c.get_params() == fitted.get_params() and not hasattr(c, "module_")
    back = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(back.predict_proba(Xte), fitted.predict_proba(Xte))
    est = small(max_epochs=3, patience=2, refit=False).fit(Xtr, ytr, X_valid=Xte, y_valid=yte)
    assert 1 <= est.best_epoch_ <= 3 and not np.isnan(est.history_[0]["valid_ua"])
    # precise_bn recalibrates before each validation: the kept epoch's recorded UA is what the model scores
    best_ua = est.history_[est.best_epoch_ - 1]["valid_ua"]
    assert balanced_accuracy_score(yte, est.predict(Xte)) == pytest.approx(best_ua)


def test_blocks_padding_and_short_clips(fitted, task):
    clip = blocks_task(1, np.random.default_rng(5), t_min=47, t_max=47)[0][0].astype(np.float32)
    assert clip.shape == (47, N_BINS)  # 2 full blocks + 7 frames
    alone = fitted.predict_proba([clip])
    batch = fitted.predict_proba([clip, np.ones((130, N_BINS), np.float32), clip[:5]])
    np.testing.assert_allclose(batch[:1], alone, atol=1e-5)  # batch padding changes nothing
    # frames shorter than one block: one zero-padded block, in fit and predict
    short = [s[:5] for s in task[0]]
    est = small(max_epochs=1).fit(short, task[1])
    assert est.predict_proba([clip[:3]]).shape == (1, 2)

    # the clip's logits: per-block logits averaged with weights = valid frames per block (20, 20, 7)
    module = fitted.module_
    with torch.inference_mode():
        x = module.pre(torch.from_numpy(clip))
        x = torch.cat([x, torch.zeros(3 * BLOCK - len(clip), N_BINS)])
        imgs = x.reshape(3, BLOCK, N_BINS).transpose(1, 2).unsqueeze(1)
        per_block = module.body.net(imgs)
        expected = (per_block * torch.tensor([[20.0], [20.0], [7.0]])).sum(0) / 47
        got = module(torch.from_numpy(clip)[None], torch.ones(1, len(clip), dtype=torch.bool))
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("block_frames", 0, r"block_frames=0: expected an integer >= 1"),
        ("width_mult", 0.0, r"width_mult=0\.0: expected a number in \(0, 4\]"),
        ("dropout", 1.0, r"dropout=1\.0: expected 0 <= dropout < 1"),
        ("weights", 3, r"weights=3: expected None or the path"),
        ("lr", -1.0, r"lr=-1\.0: expected a number > 0"),
    ],
)
def test_bad_parameters_name_the_parameter(param, value, match, task):
    with pytest.raises(ParameterError, match=rf"MobileNetSpecClassifier: {match}"):
        small(**{param: value}).fit(task[0][:4], task[1][:4])


# ------------------------------------------------------------------------------------------------ registry
def test_registered_for_spectrogram_frames():
    from sertool.models.registry import get_model, make_estimator, resolve_models

    spec = get_model("mobilenet_spec")
    assert (spec.family, spec.input, spec.gpu, spec.sample_weight) == ("neural", "frames", True, True)
    assert spec.features == ("spectrogram",)
    assert spec.designed_for("spectrogram") and not spec.designed_for("mfcc40")
    assert "mobilenet_spec" in [s.name for s in resolve_models("all")]
    assert "mobilenet_spec" in [s.name for s in resolve_models("neural", input_kind="frames")]
    est = make_estimator("mobilenet_spec", seed=3)
    assert type(est) is MobileNetSpecClassifier and est.seed == 3
    assert set(spec.param_grid) <= set(est.get_params())
    d = est.get_params()
    assert (d["width_mult"], d["block_frames"], d["weights"], d["max_epochs"], d["batch_size"]) == (
        0.5,
        100,
        None,
        30,
        32,
    )
