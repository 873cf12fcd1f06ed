"""Whisper transcripts from the same offline weights the ``whisper-*`` extractors use.

The encoder features of :mod:`sertool.features.whisper` need only the encoder; a transcript needs the
decoder and the tokenizer too. CTranslate2 runs the whole model from a CTranslate2 folder (``model.bin``,
``config.json``, ``tokenizer.json``, ``vocabulary.txt``): ``tiny.en`` ships as one, ``base`` ships split in two
packages and is assembled once, atomically, into ``<cache>/weights/ct2-<label>-<hash>/``. Hugging Face
folders converted for the encoder hold no decoder, so models on them get no transcript.

Used by ``sertool serve`` (the transcript shown beside the emotion of a clip) and the multimodal benchmark.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sertool.util import cache_dir

__all__ = ["ct2_folder", "make_transcriber"]

log = logging.getLogger(__name__)

_CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def ct2_folder(weights: Any, cache: str | os.PathLike) -> Path | None:
    """A complete CTranslate2 Whisper folder for resolved weights, or None when there is none.

    Parameters
    ----------
    weights : sertool.features.weights.ResolvedWeights
        The extractor's weights (``extractor.weights``).
    cache : path
        Cache root (``~`` and ``$VARS`` expanded); a split model is assembled under ``<cache>/weights/``.
    """
    from sertool.features.weights import BUILTIN_WEIGHTS, _builtin_parts

    if weights.source.startswith("ct2:"):
        path = Path(weights.source[4:])
        return path if all((path / f).is_file() for f in ("model.bin", *_CT2_FILES)) else None
    if weights.label not in BUILTIN_WEIGHTS:
        return None
    parts = _builtin_parts(weights.label)
    if parts is None:
        return None
    first = parts[0].parent
    if not all((first / f).is_file() for f in _CT2_FILES):
        return None
    if len(parts) == 1 and parts[0].name == "model.bin":
        return first
    target = cache_dir(cache) / "weights" / f"ct2-{weights.label}-{weights.sha256[:12]}"
    if (target / "model.bin").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        for f in _CT2_FILES:
            shutil.copyfile(first / f, tmp / f)
        try:
            os.replace(tmp, target)
        except OSError:  # another process assembled it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("assembled CTranslate2 Whisper folder %s", target)
    return target


def make_transcriber(
    extractor: Any, *, cache: str | os.PathLike | None = None
) -> Callable[[np.ndarray], str] | None:
    """``transcribe(y) -> str`` for 16 kHz mono signals, with the extractor's Whisper weights.

    Greedy decoding of the first 30 s (English for ``*.en`` models; language detected by the multilingual
    ones). Returns None (and logs why) when ``ctranslate2`` / ``tokenizers`` are missing or the weights hold
    no decoder.
    """
    try:
        import ctranslate2
        from tokenizers import Tokenizer
    except ImportError as exc:
        log.info("no transcripts: %s", exc)
        return None
    from sertool.features.whisper import whisper_log_mel

    weights = getattr(extractor, "weights", None)
    if weights is None:
        return None
    folder = ct2_folder(weights, cache_dir(cache))
    if folder is None:
        log.info("no transcripts: weights %s have no CTranslate2 decoder", weights.source)
        return None
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    n_mels = getattr(model, "n_mels", 80)

    def ids(tokens: list[str]) -> list[int]:
        return [tok.token_to_id(t) for t in tokens]

    def transcribe(y: np.ndarray) -> str:
        mel = whisper_log_mel(np.asarray(y, dtype=np.float32), n_mels=n_mels)[None]
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32))
        if model.is_multilingual:
            lang = model.detect_language(features)[0][0][0]  # e.g. "<|en|>"
            prompt = ["<|startoftranscript|>", lang, "<|transcribe|>", "<|notimestamps|>"]
        else:
            prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
        res = model.generate(features, [ids(prompt)], beam_size=1, max_length=224, suppress_blank=True)
        return tok.decode(res[0].sequences_ids[0], skip_special_tokens=True).strip()

    return transcribe
