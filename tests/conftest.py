"""Shared fixtures: seeded RNG, synthetic audio writers, the demo corpus, and the real corpora (skip if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
#: ../shared/corpora beside the checkout, or $SERTOOL_CORPORA.
CORPORA = Path(os.environ.get("SERTOOL_CORPORA", REPO.parent / "shared" / "corpora"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator (same numbers every run)."""
    return np.random.default_rng(20261122)


def tone(
    duration: float = 1.0, sr: int = 16000, freq: float = 220.0, amp: float = 0.3, seed: int = 0
) -> np.ndarray:
    """A harmonic tone with a little noise: a stand-in for a voiced clip."""
    t = np.arange(int(duration * sr)) / sr
    y = sum(amp / k * np.sin(2 * np.pi * freq * k * t) for k in range(1, 6))
    y = y + np.random.default_rng(seed).normal(0, 0.005, t.size)
    return y.astype(np.float32)


def write_audio(
    path: Path, y: np.ndarray | None = None, sr: int = 16000, subtype: str | None = None, **kw
) -> Path:
    """Write ``y`` (default: a 1 s tone) to ``path`` (format from the extension), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(sr=sr, **kw) if y is None else y, sr, subtype=subtype)
    return path


def make_tiny_whisper(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny Whisper (d_model 64, 2 encoder layers, 4 heads, 80 mels) saved as an HF folder."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(
        d_model=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_mel_bins=80,
        vocab_size=100,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(cfg).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in synthetic demo corpus, generated once per test session (small: 4 speakers x 4 x 6)."""
    from sertool.data.corpora.demo import generate_demo_corpus

    return generate_demo_corpus(tmp_path_factory.mktemp("demo"), n_speakers=4, clips_per_class=6)


def _corpus(name: str) -> Path:
    path = CORPORA / name
    if not path.is_dir():
        pytest.skip(f"real corpus {name} not present at {path}")
    return path


@pytest.fixture(scope="session")
def ravdess_root() -> Path:
    """../shared/corpora/ravdess, or skip."""
    return _corpus("ravdess")


@pytest.fixture(scope="session")
def tess_root() -> Path:
    """../shared/corpora/tess, or skip."""
    return _corpus("tess")
