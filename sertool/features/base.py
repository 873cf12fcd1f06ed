"""The extractor protocol: name, version, output-changing parameters, dimension, ``extract``.

An extractor turns one mono float32 signal at :attr:`Extractor.sr` Hz into a dict of named float arrays
("outputs"). Every extractor has the output ``"pooled"``: a per-utterance vector of shape ``(dim,)`` or, for
layered extractors (Whisper, SSL), a stack of shape ``(n_layers, dim)`` so layer-wise studies need no
re-extraction. Extractors may add sequence outputs such as ``"frames"`` (shape ``(T, F)``, or
``(n_selected_layers, T, F)``).

Identity: :attr:`Extractor.key` is ``<name>/v<version>-<hash of params()>``. ``params()`` holds exactly the
parameters that change the output (not batch size, device or job count), so the cache key changes when, and
only when, the output would.

Views: a model reads a named *view* of a cached extractor, ``"<extractor>[@<layers>]"``, e.g.
``whisper-base@3`` (layer 3), ``whisper-base@2-4`` (layers 2..4 concatenated), ``whisper-base@all``; a plain
name uses the extractor's :attr:`Extractor.default_layers`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sertool.exceptions import ParameterError

__all__ = [
    "EXTRACTORS",
    "Extractor",
    "FeatureView",
    "get_extractor",
    "params_hash",
    "parse_view",
    "register_extractor",
]


def params_hash(params: dict[str, Any], n: int = 10) -> str:
    """Short, stable hash of a JSON-serialisable parameter dict (sorted keys)."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


class Extractor(ABC):
    """Base class of feature extractors.

    Subclasses set :attr:`name` and :attr:`version`, store their parameters in ``__init__`` and implement
    :meth:`params`, :attr:`dim` and :meth:`extract`. Bump :attr:`version` whenever the code changes the
    output for the same parameters.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    #: Sample rate the extractor expects its input at.
    sr: int = 16000
    #: Number of layers in ``"pooled"`` (``None`` for a plain vector).
    n_layers: int | None = None
    #: Layers a plain view uses (``None``: the whole vector / all layers concatenated).
    default_layers: tuple[int, ...] | None = None
    #: Whether CPU extraction should be spread over processes (False for torch models that thread inside).
    parallel_processes: bool = True
    #: Whether :meth:`extract` may run in several threads at once and spends most of its time in code that
    #: releases the GIL (numpy, BLAS, FFT), so a thread pool parallelises it without starting processes.
    thread_safe: bool = False
    #: Whether worker processes may be forked from the calling process to run :meth:`extract` (plain
    #: numpy/scipy/BLAS code: no torch, OpenMP, CUDA or open handles that a forked child must not touch).
    fork_safe: bool = False

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The parameters that change the output (JSON-serialisable)."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Dimension of one pooled vector (of one layer, for layered extractors)."""

    @abstractmethod
    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Features of one signal.

        Parameters
        ----------
        y : np.ndarray, float32, shape (n,)
            Mono signal at :attr:`sr` Hz.

        Returns
        -------
        dict of str to np.ndarray
            At least ``"pooled"``: shape ``(dim,)`` or ``(n_layers, dim)``.
        """

    def decode_workers(self, jobs: int) -> int:
        """Processes that should decode audio for an in-process extractor (0: one background thread).

        Extractors that run on a fast accelerator override this; CPU extractors parallelise whole shards.
        """
        return 0

    def warm_up(self) -> None:
        """Run once on a short synthetic signal so one-time costs are paid here, not per worker.

        librosa imports its submodules lazily (and numba compiles on import): the first :meth:`extract`
        of a process took ~0.9 s. Forked workers inherit what the parent has done, so the fork backend
        calls this in the parent before forking, instead of every worker paying it. The default runs
        :meth:`extract` on 1 s of seeded noise at :attr:`sr`; extractors for which that is costly (models)
        may override it with a no-op.
        """
        noise = np.random.default_rng(0).normal(0.0, 0.1, int(self.sr)).astype(np.float32)
        self.extract(noise)

    def outputs(self) -> tuple[str, ...]:
        """Names of the outputs :meth:`extract` returns: ``"pooled"`` always, plus ``"frames"`` when the
        extractor stores frame sequences of chosen layers (a non-empty ``frame_layers`` attribute)."""
        return ("pooled", "frames") if getattr(self, "frame_layers", None) else ("pooled",)

    def extract_batch(self, signals: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Features of several signals (override to batch on an accelerator)."""
        return [self.extract(y) for y in signals]

    @property
    def key(self) -> str:
        """``<name>/v<version>-<params hash>``: the cache identity."""
        return f"{self.name}/v{self.version}-{params_hash(self.params())}"

    def identity(self) -> dict[str, Any]:
        """Name, version, params, key, dim and layers, as recorded in cache metadata and results."""
        return {
            "name": self.name,
            "version": self.version,
            "params": self.params(),
            "key": self.key,
            "dim": self.dim,
            "n_layers": self.n_layers,
            "sr": self.sr,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


#: name or name pattern -> factory(name, **params) -> Extractor
EXTRACTORS: dict[str, Callable[..., Extractor]] = {}


def register_extractor(pattern: str) -> Callable[[Callable[..., Extractor]], Callable[..., Extractor]]:
    """Register a factory under an exact name or a prefix pattern ending in ``-*`` (e.g. ``whisper-*``).

    The factory is called as ``factory(name, **params)``.
    """

    def deco(factory: Callable[..., Extractor]) -> Callable[..., Extractor]:
        EXTRACTORS[pattern] = factory
        return factory

    return deco


def get_extractor(name: str, **params: Any) -> Extractor:
    """Build an extractor by name (``"handcrafted94"``, ``"mfcc40"``, ``"whisper-base"``, ...).

    Raises
    ------
    ParameterError
        Unknown name; the message lists the known ones.
    """
    import sertool.features  # noqa: F401  (registers the built-in extractors)

    base = parse_view(name).extractor
    if base in EXTRACTORS:
        return EXTRACTORS[base](base, **params)
    for pattern, factory in EXTRACTORS.items():
        if pattern.endswith("-*") and base.startswith(pattern[:-1]):
            return factory(base, **params)
    raise ParameterError(f"unknown feature extractor {name!r}; known: {', '.join(sorted(EXTRACTORS))}")


def configured_extractor(
    name: str,
    params: dict[str, Any] | None = None,
    *,
    device: str = "auto",
    cache: str | os.PathLike | None = None,
) -> Extractor:
    """:func:`get_extractor` with the run-level settings every command gives the model-based extractors.

    Parameters
    ----------
    name : str
        Extractor (or view) name.
    params : dict, optional
        The user's parameters for it (``--extractor-params``); they win over the settings below. The key
        ``"preprocess"`` (a list of steps, :mod:`sertool.features.transforms`) wraps the extractor so that
        every clip is preprocessed first; it is part of the cache key.
    device : {"auto", "cpu", "cuda"}
        Device for ``whisper-*`` and ``ssl-*`` extractors.
    cache : path, optional
        Feature-cache root: ``whisper-*`` keeps its converted weights there.
    """
    base = parse_view(name).extractor
    kwargs = dict(params or {})
    preprocess = kwargs.pop("preprocess", None)
    if base.startswith(("whisper-", "ssl-", "text-")):
        kwargs.setdefault("device", device)
    if base.startswith(("whisper-", "text-")) and cache is not None:
        kwargs.setdefault("cache", Path(cache))
    extractor = get_extractor(base, **kwargs)
    if preprocess:
        from sertool.features.transforms import with_preprocessing

        extractor = with_preprocessing(extractor, preprocess)
    return extractor


@dataclass(frozen=True)
class FeatureView:
    """A named selection of an extractor's pooled output.

    Attributes
    ----------
    extractor : str
        Extractor name.
    layers : tuple of int, or None
        Selected layers (concatenated); ``None`` means the extractor's default.
    all_layers : bool
        ``@all``: every layer concatenated.
    """

    extractor: str
    layers: tuple[int, ...] | None = None
    all_layers: bool = False

    @property
    def name(self) -> str:
        """Canonical view string."""
        if self.all_layers:
            return f"{self.extractor}@all"
        if self.layers is None:
            return self.extractor
        lo, hi = min(self.layers), max(self.layers)
        if len(self.layers) > 1 and self.layers == tuple(range(lo, hi + 1)):
            return f"{self.extractor}@{lo}-{hi}"
        return f"{self.extractor}@{','.join(map(str, self.layers))}"

    def select(self, pooled: np.ndarray, default_layers: tuple[int, ...] | None = None) -> np.ndarray:
        """Apply the view to pooled features.

        Parameters
        ----------
        pooled : np.ndarray, shape (n, dim) or (n, n_layers, dim)
            Stacked pooled outputs of ``n`` utterances.
        default_layers : tuple of int, optional
            The extractor's default layers for a plain view.

        Returns
        -------
        np.ndarray, shape (n, d)
        """
        if pooled.ndim == 2:
            if self.layers is not None:
                raise ParameterError(f"view {self.name!r}: extractor {self.extractor!r} has no layers")
            return pooled
        n_layers = pooled.shape[1]
        layers = None if self.all_layers else (self.layers if self.layers is not None else default_layers)
        if layers is None:
            layers = tuple(range(n_layers))
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad:
            raise ParameterError(f"view {self.name!r}: layers {bad} out of range 0..{n_layers - 1}")
        return pooled[:, list(layers), :].reshape(pooled.shape[0], -1)


_VIEW = re.compile(r"^(?P<ext>[A-Za-z0-9_.\-]+?)(?:@(?P<sel>all|\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*))?$")


def parse_view(spec: str) -> FeatureView:
    """Parse ``"name"``, ``"name@3"``, ``"name@2-4"``, ``"name@1,3,5"`` or ``"name@all"``.

    Raises
    ------
    ParameterError
        Malformed spec.
    """
    m = _VIEW.match(spec.strip())
    if not m:
        raise ParameterError(f"malformed feature view {spec!r}; expected NAME, NAME@3, NAME@2-4 or NAME@all")
    sel = m.group("sel")
    if sel is None:
        return FeatureView(m.group("ext"))
    if sel == "all":
        return FeatureView(m.group("ext"), all_layers=True)
    layers: list[int] = []
    for part in sel.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ParameterError(f"malformed layer range {part!r} in {spec!r}")
        layers.extend(range(a, b + 1))
    return FeatureView(m.group("ext"), layers=tuple(layers))
