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

Plugins: an installed package adds extractors through the entry-point group ``sertool.extractors``
(:mod:`sertool.plugins`); :func:`get_extractor` consults it for names no built-in claims, so a plugin name
works in every command and view (``my-embed``, ``my-embed@all``). The entry point's value is a factory
``factory(name, **params)`` returning an :class:`Extractor` (an :class:`Extractor` subclass is called as
``cls(**params)``). An object that follows the protocol (``name``, ``version``, ``params()``, ``dim``,
``extract``) without subclassing :class:`Extractor` is wrapped (:class:`ProtocolExtractor`) so that it gets
the same cache key and identity as a built-in.
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

from sertool import plugins
from sertool.exceptions import ParameterError, SertoolError

__all__ = [
    "EXTRACTORS",
    "PLUGIN_GROUP",
    "Extractor",
    "FeatureView",
    "ProtocolExtractor",
    "as_extractor",
    "available_extractors",
    "get_extractor",
    "params_hash",
    "parse_view",
    "register_extractor",
]

#: The entry-point group of extractor plugins.
PLUGIN_GROUP = "sertool.extractors"
#: What an object needs to be usable as an extractor.
PROTOCOL = ("name", "version", "params", "dim", "extract")


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


def _match(name: str, factories: dict[str, Any]) -> str | None:
    """The key of ``name`` in ``factories``: the name itself, else a ``prefix-*`` pattern it matches."""
    if name in factories:
        return name
    return next((p for p in factories if p.endswith("-*") and name.startswith(p[:-1])), None)


def _plugin_factories() -> dict[str, Any]:
    """Extractor plugins whose names no built-in claims (the shadowed ones are warned about, once)."""
    out: dict[str, Any] = {}
    for name, factory in plugins.load_group(PLUGIN_GROUP).items():
        if name in EXTRACTORS or (not name.endswith("-*") and _match(name, EXTRACTORS) is not None):
            plugins.warn_shadowed(PLUGIN_GROUP, name)
        else:
            out[name] = factory
    return out


def available_extractors() -> list[str]:
    """Names (and ``prefix-*`` patterns) of every extractor: the built-ins, then the installed plugins."""
    import sertool.features  # noqa: F401  (registers the built-in extractors)

    return sorted(EXTRACTORS) + sorted(_plugin_factories())


def get_extractor(name: str, **params: Any) -> Extractor:
    """Build an extractor by name (``"handcrafted94"``, ``"mfcc40"``, ``"whisper-base"``, a plugin's name).

    Built-in names win; names no built-in claims are looked up among the extractor plugins (entry-point
    group ``sertool.extractors``).

    Raises
    ------
    ParameterError
        Unknown name (the message lists the known ones, and says why a plugin of that name failed to load),
        or a plugin whose factory fails or returns something that is not an extractor (named in the message).
    """
    import sertool.features  # noqa: F401  (registers the built-in extractors)

    base = parse_view(name).extractor
    key = _match(base, EXTRACTORS)
    if key is not None:
        if base in plugins.declared_names(PLUGIN_GROUP):
            plugins.warn_shadowed(PLUGIN_GROUP, base)
        return EXTRACTORS[key](base, **params)
    found = _plugin_factories()
    key = _match(base, found)
    if key is not None:
        return _from_plugin(base, key, found[key], params)
    broken = plugins.plugin_errors().get((PLUGIN_GROUP, base.lower()))
    raise ParameterError(
        f"unknown feature extractor {name!r}; known: {', '.join(available_extractors())}"
        + (f"; the plugin {base.lower()!r} failed to load: {broken}" if broken else "")
    )


def _from_plugin(name: str, entry: str, factory: Any, params: dict[str, Any]) -> Extractor:
    """Call a plugin's factory and check (or wrap) what it returns."""
    who = f"extractor plugin {plugins.describe(PLUGIN_GROUP, entry)}"
    try:
        if isinstance(factory, type) and issubclass(factory, Extractor):
            obj = factory(**params)
        elif callable(factory):
            obj = factory(name, **params)
        else:
            raise ParameterError(
                f"{who}: the entry point is a {type(factory).__name__}, not a factory(name, **params)"
            )
    except SertoolError:
        raise
    except Exception as exc:  # the plugin's own bug or a wrong parameter: name the plugin
        raise ParameterError(
            f"{who} failed to build {name!r} with parameters {params}: {type(exc).__name__}: {exc}"
        ) from exc
    return as_extractor(obj, plugin=name, who=who)


def as_extractor(obj: Any, *, plugin: str, who: str | None = None) -> Extractor:
    """``obj`` as an :class:`Extractor`: itself if it is one, wrapped if it only follows the protocol.

    Parameters
    ----------
    obj : object
        What a plugin factory returned.
    plugin : str
        The extractor name it was built for; ``obj.name`` must equal it (the cache and views use the name).
    who : str, optional
        How error messages name the plugin.

    Raises
    ------
    ParameterError
        ``obj`` lacks a protocol attribute, or its name is not ``plugin``.
    """
    who = who or f"extractor plugin {plugin!r}"
    if not isinstance(obj, Extractor):
        missing = [a for a in PROTOCOL if not hasattr(obj, a)]
        missing += [a for a in ("params", "extract") if a not in missing and not callable(getattr(obj, a))]
        if missing:
            raise ParameterError(
                f"{who} returned a {type(obj).__name__} without {', '.join(missing)}: an extractor needs "
                "name, version, params(), dim and extract(y) -> {'pooled': ...}; subclass "
                "sertool.features.base.Extractor"
            )
        obj = ProtocolExtractor(obj)
    if obj.name != plugin:
        raise ParameterError(
            f"{who} returned an extractor named {obj.name!r}, not {plugin!r}: the cache and feature views "
            "are keyed by the name, so the factory must set it to the name it is called with"
        )
    params = obj.params()
    if not isinstance(params, dict):
        raise ParameterError(f"{who}: params() returned a {type(params).__name__}, not a dict")
    return obj


class ProtocolExtractor(Extractor):
    """An object that follows the extractor protocol without subclassing :class:`Extractor`, made into one.

    It gets :attr:`Extractor.key` and :meth:`Extractor.identity` from the wrapped object's ``name``,
    ``version`` and ``params()``, so its features are cached like a built-in's. Optional attributes (``sr``,
    ``n_layers``, ``default_layers``, ``frame_layers``, ``extract_batch``, ...) come from it when present.

    Parameters
    ----------
    inner : object
        Has ``name``, ``version``, ``params()``, ``dim`` and ``extract(y)``.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        vars(self).update(name=str(inner.name), version=inner.version)
        self.sr = int(getattr(inner, "sr", Extractor.sr))
        self.n_layers = getattr(inner, "n_layers", None)
        self.default_layers = getattr(inner, "default_layers", None)
        # unknown code: processes (pickled) are the safe default; threads and forks only when it says so
        self.parallel_processes = bool(getattr(inner, "parallel_processes", True))
        self.thread_safe = bool(getattr(inner, "thread_safe", False))
        self.fork_safe = bool(getattr(inner, "fork_safe", False))

    def __getattr__(self, attr: str) -> Any:  # only for attributes not found the usual way
        inner = self.__dict__.get("inner")
        if inner is None or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(inner, attr)

    def params(self) -> dict[str, Any]:
        """The wrapped object's ``params()``."""
        return self.inner.params()

    @property
    def dim(self) -> int:
        """The wrapped object's ``dim``."""
        return int(self.inner.dim)

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """The wrapped object's ``extract(y)``."""
        return self.inner.extract(y)

    def extract_batch(self, signals: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """The wrapped object's ``extract_batch`` when it has one, else :meth:`extract` per signal."""
        batch = getattr(self.inner, "extract_batch", None)
        return list(batch(signals)) if callable(batch) else [self.extract(y) for y in signals]

    def outputs(self) -> tuple[str, ...]:
        """The wrapped object's ``outputs()`` when it has one, else the default."""
        outputs = getattr(self.inner, "outputs", None)
        return tuple(outputs()) if callable(outputs) else super().outputs()

    def warm_up(self) -> None:
        """The wrapped object's ``warm_up()`` when it has one, else the default."""
        warm = getattr(self.inner, "warm_up", None)
        if callable(warm):
            warm()
        else:
            super().warm_up()


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
        Device for the built-in ``whisper-*``, ``ssl-*`` and ``text-*`` extractors (a plugin gets only
        ``params``).
    cache : path, optional
        Feature-cache root: ``whisper-*`` keeps its converted weights there.
    """
    import sertool.features  # noqa: F401  (registers the built-in extractors)

    base = parse_view(name).extractor
    kwargs = dict(params or {})
    preprocess = kwargs.pop("preprocess", None)
    builtin = _match(base, EXTRACTORS) is not None  # a plugin gets only the parameters the user gave it
    if builtin and base.startswith(("whisper-", "ssl-", "text-")):
        kwargs.setdefault("device", device)
    if builtin and base.startswith(("whisper-", "text-")) and cache is not None:
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
