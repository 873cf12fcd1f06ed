"""Benchmark definitions: one typed object for a whole study, read from and written to TOML.

A :class:`Benchmark` holds everything a run needs: the corpora and their folders, the label scheme, the
feature views, the models and their parameters, the splits (each a :class:`SplitSpec`: strategy, parameters),
the seed, normalisation, augmentation, tuning, calibration, the shortest clip kept, the results folder, and the study's
metadata (name, description, paper, published figures). :func:`run_benchmark` runs it and returns one
:class:`~sertool.bench.runner.BenchReport` per split. ``sertool bench`` only maps its flags (and
``--config FILE``) onto a :class:`Benchmark` (mteb's ``Benchmark`` objects have this shape)::

    from sertool.bench import Benchmark, run_benchmark

    bench = Benchmark.from_toml("benchmarks/ravdess_whisper_probe.toml")  # $SERTOOL_CORPORA expanded
    bench = dataclasses.replace(bench, models=["logreg", "svm"], seed=1)  # a variant
    reports = run_benchmark(bench)
    Path("variant.toml").write_text(bench.to_toml())                       # Benchmark.from_toml(...) == bench

The TOML keys are those of ``benchmarks/*.toml`` (and of ``sertool bench``'s flags): ``corpus``, ``root``,
``csv``, ``label_map``, ``scheme``, ``features``, ``models``, ``model_params``, ``extractor_params``,
``split``, ``split_params``, ``valid_fraction``, ``seed``, ``normalize``, ``augment``, ``tune``,
``calibrate``, ``min_duration``, ``results``, ``cache``, ``device``, ``jobs``, ``unit_jobs``, ``scheduler``, ``force``,
plus ``name``, ``description``, ``paper``, ``published``. Dashes and underscores are the same
(``model-params``). ``corpus``, ``root``, ``features`` and ``models`` are lists or comma-separated strings;
``split`` is a strategy, or a list mixing strategies and tables ``{strategy = "cross-corpus", params =
{train_corpus = "ravdess", test_corpus = "tess"}}``; ``split_params`` are the parameters of every split given
as a plain strategy. ``root``, ``csv``, ``results`` and ``cache`` may use ``~`` and ``$VARS`` (expanded when
the definition is made; an unset variable is an error), so one definition serves every machine.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sertool.exceptions import ParameterError
from sertool.util import check_device, expand_path

if TYPE_CHECKING:
    import pandas as pd

    from sertool.bench.runner import BenchReport, UnitResult
    from sertool.data.manifest import ManifestBuild

__all__ = ["Benchmark", "SplitSpec", "build_corpora", "run_benchmark"]

log = logging.getLogger(__name__)

#: ``models`` words that select a group of models rather than name one.
MODEL_GROUPS: tuple[str, ...] = ("all", "classic", "neural")
#: Accepted ``normalize`` values (``None``: no normalisation).
NORMALIZE: tuple[str, ...] = ("speaker", "corpus")
#: The metadata keys: kept and written back, never used to run.
METADATA_KEYS: tuple[str, ...] = ("name", "description", "paper", "published")
#: Dataclass field -> TOML key, where they differ.
_KEY_OF: dict[str, str] = {"corpora": "corpus", "roots": "root", "splits": "split"}


# ------------------------------------------------------------------------------------------------- coercion
def _plain(value: Any) -> Any:
    """A deep copy with mappings as dicts and sequences as lists (what a TOML round trip gives back)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def _table(value: Any, what: str) -> dict[str, Any]:
    """A mapping, or JSON text of an object (as older definitions give them)."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ParameterError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ParameterError(f"{what} must be a table (mapping), got {value!r}")
    return _plain(value)


def _nested_tables(value: Any, what: str) -> dict[str, dict[str, Any]]:
    """``{"svm": {"C": 1.0}, ...}``: a table of tables."""
    out = _table(value, what)
    for key, inner in out.items():
        if not isinstance(inner, dict):
            raise ParameterError(f"{what}[{key!r}] must be a table of parameters, got {inner!r}")
    return out


def _names(value: Any, what: str) -> tuple[str, ...]:
    """A list of names, or one comma-separated string of them (list items are never split)."""
    if value is None:
        return ()
    items: list[Any]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = list(value)
    else:
        raise ParameterError(f"{what} must be a list of names or a comma-separated string, got {value!r}")
    for item in items:
        if not isinstance(item, str):
            raise ParameterError(f"{what}: {item!r} is not a name (string)")
    return tuple(s.strip() for s in items if s.strip())


def _path(value: Any, what: str) -> Path:
    if not isinstance(value, str | os.PathLike) or not os.fspath(value).strip():
        raise ParameterError(f"{what} must be a path, got {value!r}")
    try:
        return expand_path(os.fspath(value).strip())
    except ParameterError as exc:
        raise ParameterError(f"{what}: {exc}") from None


def _paths(value: Any, what: str) -> tuple[Path, ...]:
    """Folders: a path, a comma-separated string of them, or a list; ``~`` and ``$VARS`` expanded."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [s for s in value.split(",") if s.strip()]
    elif isinstance(value, os.PathLike):
        items = [value]
    elif isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = list(value)
    else:
        raise ParameterError(f"{what} must be a path, a comma-separated string or a list, got {value!r}")
    return tuple(_path(item, what) for item in items)


def _number(value: Any, what: str, *, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ParameterError(f"{what} must be {'an integer' if integer else 'a number'}, got {value!r}")
    return int(value) if integer else float(value)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"{what} must be true or false, got {value!r}")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ParameterError(f"{what} must be a string, got {value!r}")
    return value


def _none_word(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("", "none")


# ------------------------------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class SplitSpec:
    """One split of a benchmark: a strategy and its parameters (:func:`sertool.splits.make_split`).

    Parameters
    ----------
    strategy : str
        ``"speaker-6fold"``, ``"random-holdout"``, ``"loso"``, ``"cross-corpus"``, ``"file:PATH"``, ...
    params : dict, optional
        The strategy's parameters (``{"test_fraction": 0.1}``, ``{"train_corpus": "ravdess", "test_corpus":
        "tess"}``). The seed and the validation fraction are the benchmark's.
    """

    strategy: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str) or not self.strategy.strip():
            raise ParameterError(f"split strategy must be a non-empty string, got {self.strategy!r}")
        object.__setattr__(self, "strategy", self.strategy.strip())
        object.__setattr__(self, "params", _table(self.params, f"split {self.strategy!r} params"))

    @classmethod
    def coerce(cls, value: Any, default_params: Mapping[str, Any] | None = None) -> SplitSpec:
        """A :class:`SplitSpec` from a strategy string, a ``{strategy, params}`` table or a :class:`SplitSpec`.

        A strategy string gets ``default_params`` (a definition's ``split_params``).

        Raises
        ------
        ParameterError
            Anything else, or a table with other keys.
        """
        if isinstance(value, SplitSpec):
            return value
        if isinstance(value, str):
            return cls(value, dict(default_params or {}))
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"strategy", "params"})
            if unknown or not isinstance(value.get("strategy"), str):
                raise ParameterError(
                    f"split {dict(value)!r}: expected {{strategy = NAME, params = {{...}}}}"
                    + (f"; unknown keys {unknown}" if unknown else "")
                )
            return cls(value["strategy"], value.get("params") or {})
        raise ParameterError(f"split must be a strategy name or a {{strategy, params}} table, got {value!r}")

    def to_toml_value(self) -> str | dict[str, Any]:
        """The strategy alone, or ``{"strategy": ..., "params": {...}}`` when it has parameters."""
        return {"strategy": self.strategy, "params": _plain(self.params)} if self.params else self.strategy


def _splits(value: Any, default_params: Mapping[str, Any] | None = None) -> tuple[SplitSpec, ...]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    out = tuple(SplitSpec.coerce(item, default_params) for item in items)
    if not out:
        raise ParameterError("split: name at least one split strategy")
    return out


# ------------------------------------------------------------------------------------------------- benchmark
@dataclass(frozen=True)
class Benchmark:
    """A benchmark definition: what to run, on what, under which protocols, and where the results go.

    Every field is checked when the object is made (also by :func:`dataclasses.replace`); lists and
    comma-separated strings are both accepted where a field holds names, and ``~``/``$VARS`` are expanded in
    paths. :meth:`validate` further checks the names against the registries and that corpora are given.

    Parameters
    ----------
    corpora : tuple of str
        Corpus adapter names (``"ravdess"``, ``"tess"``, ``"csv"``, ``"demo"``, ...); several are merged
        (speakers and utt_ids corpus-prefixed). TOML key ``corpus``.
    roots : tuple of Path
        One folder per corpus, in its original layout. TOML key ``root``.
    csv : Path, optional
        The table ``path,label[,speaker,...]`` of the ``csv`` adapter.
    label_map : dict, optional
        CSV label -> canonical label (``csv`` adapter).
    corpus_params : dict, optional
        Keyword arguments of the corpus adapter (e.g. ``{"label_column": "emotion"}`` for ``hf``); with
        several corpora, a table per adapter name (``{"hf": {...}}``). TOML key ``corpus_params``.
    scheme : str
        Label scheme (``"native"``, ``"ser7"``, ``"ser6"``, ``"ser4"``).
    target : str
        What the models predict: ``"emotion"`` (default) or a categorical manifest column (``"intensity"``,
        ``"gender"``; :func:`sertool.data.targets.apply_target`), applied after the scheme.
    features : tuple of str
        Feature views (``"handcrafted94"``, ``"whisper-base@all"``, ``"a+b"`` fused).
    models : str or tuple of str
        ``"all"``, ``"classic"``, ``"neural"``, or model names.
    model_params, extractor_params : dict
        Per-model (per-extractor) parameters: ``{"svm": {"C": 1.0}}``.
    splits : tuple of SplitSpec
        Every split the study runs under, in order (one report each). TOML key ``split``.
    seed : int
        Seed of the splits and of every model.
    valid_fraction : float
        Share of each training part kept for validation, in [0, 1).
    normalize : {"speaker", "corpus"}, optional
        Label-free z-scoring of pooled vectors per speaker (corpus).
    augment : str or dict, optional
        Augmentation of training parts (``"awgn"``, ``{"transforms": [...], "copies": 3, "balance": true}``);
        ``"none"`` is ``None``.
    tune : bool
        Grid-search hyper-parameters inside the training data of each fold.
    calibrate : {"temperature"}, optional
        Fit one temperature per fold on its validation part (entries ``<view>~cal-temp``; see
        :func:`~sertool.bench.runner.run_bench`); ``"none"`` is ``None``.
    min_duration : float
        Clips shorter than this many seconds are left out (0: none).
    results : Path
        Results root.
    cache : Path, optional
        Feature cache (default ``$SERTOOL_CACHE`` or ``~/.cache/sertool``).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    jobs : int
        Processes for feature extraction (-1: all cores).
    unit_jobs : int
        Units fitted at once (local worker processes; -1, the default: one per core, BLAS threads divided
        among them; 1: one after another in this process).
    scheduler : str, optional
        Dask scheduler address: units run on that cluster.
    force : bool
        Redo finished units.
    name, description, paper, published : str, optional
        The study's metadata: kept and written back, never used to run.
    """

    corpora: tuple[str, ...] = ()
    roots: tuple[Path, ...] = ()
    csv: Path | None = None
    label_map: dict[str, str] | None = None
    corpus_params: dict[str, Any] = field(default_factory=dict)
    scheme: str = "native"
    target: str = "emotion"
    features: tuple[str, ...] = ("handcrafted94",)
    models: str | tuple[str, ...] = "all"
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    extractor_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    splits: tuple[SplitSpec, ...] = (SplitSpec("speaker-6fold"),)
    seed: int = 0
    valid_fraction: float = 0.1
    normalize: str | None = None
    augment: str | dict[str, Any] | None = None
    tune: bool = False
    calibrate: str | None = None
    min_duration: float = 0.0
    results: Path = Path("results")
    cache: Path | None = None
    device: str = "auto"
    jobs: int = -1
    unit_jobs: int = -1
    scheduler: str | None = None
    force: bool = False
    name: str | None = None
    description: str | None = None
    paper: str | None = None
    published: str | None = None

    def __post_init__(self) -> None:
        values = self._coerced()
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def _coerced(self) -> dict[str, Any]:
        """Every field in its canonical type; :class:`ParameterError` names the field and the value."""
        from sertool.calibration import check_calibrate

        out: dict[str, Any] = {}
        out["corpora"] = _names(self.corpora, "corpus")
        out["roots"] = _paths(self.roots, "root")
        if out["corpora"] and out["roots"] and len(out["corpora"]) != len(out["roots"]):
            raise ParameterError(
                f"corpus names {len(out['corpora'])} corpora {list(out['corpora'])} but root gives "
                f"{len(out['roots'])} folders"
            )
        out["csv"] = None if self.csv is None else _path(self.csv, "csv")
        if self.label_map is not None:
            label_map = _table(self.label_map, "label_map")
            bad = {k: v for k, v in label_map.items() if not isinstance(v, str)}
            if bad:
                raise ParameterError(f"label_map must map labels to label names, got {bad!r}")
            out["label_map"] = label_map
        out["corpus_params"] = _table(self.corpus_params, "corpus_params")
        if not isinstance(self.scheme, str) or not self.scheme.strip():
            raise ParameterError(f"scheme must be a label scheme name, got {self.scheme!r}")
        out["scheme"] = self.scheme.strip()
        if not isinstance(self.target, str) or not self.target.strip():
            raise ParameterError(f"target must be a manifest column name (or emotion), got {self.target!r}")
        out["target"] = self.target.strip()
        out["features"] = _names(self.features, "features")
        if not out["features"]:
            raise ParameterError(f"features: name at least one feature view, got {self.features!r}")
        if isinstance(self.models, str) and self.models.strip().lower() in MODEL_GROUPS:
            out["models"] = self.models.strip().lower()
        else:
            out["models"] = _names(self.models, "models")
            if not out["models"]:
                raise ParameterError(
                    f"models: name at least one model (or {', '.join(MODEL_GROUPS)}), got {self.models!r}"
                )
        out["model_params"] = _nested_tables(self.model_params, "model_params")
        out["extractor_params"] = _nested_tables(self.extractor_params, "extractor_params")
        out["splits"] = _splits(self.splits)
        out["seed"] = _number(self.seed, "seed", integer=True)
        if out["seed"] < 0:
            raise ParameterError(f"seed must be a non-negative integer, got {self.seed!r}")
        out["valid_fraction"] = _number(self.valid_fraction, "valid_fraction")
        if not 0.0 <= out["valid_fraction"] < 1.0:
            raise ParameterError(f"valid_fraction must be in [0, 1), got {self.valid_fraction!r}")
        normalize = None if self.normalize is None or _none_word(self.normalize) else self.normalize
        if normalize is not None and normalize not in NORMALIZE:
            raise ParameterError(f"normalize must be one of {NORMALIZE} or none, got {self.normalize!r}")
        out["normalize"] = normalize
        out["augment"] = self._augment_value()
        out["tune"] = _flag(self.tune, "tune")
        out["calibrate"] = check_calibrate(self.calibrate)
        out["min_duration"] = _number(self.min_duration, "min_duration")
        if out["min_duration"] < 0:
            raise ParameterError(f"min_duration must be >= 0 seconds, got {self.min_duration!r}")
        out["results"] = _path(self.results, "results")
        out["cache"] = None if self.cache is None else _path(self.cache, "cache")
        check_device(self.device)
        out["jobs"] = _number(self.jobs, "jobs", integer=True)
        out["unit_jobs"] = _number(self.unit_jobs, "unit_jobs", integer=True)
        if out["unit_jobs"] == 0 or out["unit_jobs"] < -1:
            raise ParameterError(f"unit_jobs must be a positive count or -1, got {self.unit_jobs!r}")
        out["scheduler"] = _optional_text(self.scheduler, "scheduler") or None
        out["force"] = _flag(self.force, "force")
        for key in METADATA_KEYS:
            out[key] = _optional_text(getattr(self, key), key)
        return out

    def _augment_value(self) -> str | dict[str, Any] | None:
        value = self.augment
        if value is None or _none_word(value):
            return None
        if isinstance(value, str):
            return _table(value, "augment") if value.lstrip().startswith("{") else value.strip()
        if isinstance(value, Mapping):
            return _plain(value)
        raise ParameterError(f"augment must be transform names, a table or none, got {value!r}")

    # --------------------------------------------------------------------------------------------- checks
    def validate(self) -> Benchmark:
        """Check that the definition can run, before any corpus is scanned.

        Corpora and one folder each must be given, and every scheme, model, feature view and augmentation
        named must exist, and so must every split strategy (a ``file:`` split is read when it is made).

        Returns
        -------
        Benchmark
            ``self``.

        Raises
        ------
        ParameterError
            The first problem found, naming the field and the value.
        """
        from sertool.data.labels import get_scheme
        from sertool.features.base import parse_view
        from sertool.features.transforms import parse_augment
        from sertool.models.registry import get_model, resolve_models
        from sertool.splits import get_strategy

        self._check_corpora()
        for spec in self.splits:
            if not spec.strategy.startswith("file:"):
                get_strategy(spec.strategy)
        get_scheme(self.scheme)
        resolve_models(self.models if isinstance(self.models, str) else list(self.models))
        for model in self.model_params:
            get_model(model)
        for view in self.features:
            for part in view.split("+"):
                parse_view(part)
        parse_augment(self.augment)
        return self

    def _check_corpora(self) -> None:
        if not self.corpora:
            raise ParameterError("no corpus given: set corpus and root in the definition, or --corpus/--root")
        if len(self.roots) != len(self.corpora):
            raise ParameterError(
                f"corpus names {len(self.corpora)} corpora {list(self.corpora)} but root gives "
                f"{len(self.roots)} folders: set root in the definition, or --root"
            )

    # --------------------------------------------------------------------------------------------- TOML
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Benchmark:
        """A benchmark from a definition table (the TOML keys; see the module docstring).

        Raises
        ------
        ParameterError
            Unknown keys (all listed), a key given twice (``model-params`` and ``model_params``), or a value
            of the wrong kind.
        """
        if not isinstance(data, Mapping):
            raise ParameterError(f"a benchmark definition must be a table, got {type(data).__name__}")
        flat: dict[str, Any] = {}
        for key, value in data.items():
            norm = str(key).replace("-", "_")
            if norm in flat:
                raise ParameterError(f"{norm} is given twice ({key!r} and its other spelling)")
            flat[norm] = value
        known = set(_TOML_KEYS) | {"split_params"}
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ParameterError(f"unknown keys {unknown}; known: {', '.join(sorted(known))}")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            key = _KEY_OF.get(f.name, f.name)
            if key in flat:
                kwargs[f.name] = flat[key]
        split_params = _table(flat.get("split_params") or {}, "split_params")
        if "split" in flat:
            kwargs["splits"] = _splits(flat["split"], split_params)
        elif split_params:
            kwargs["splits"] = _splits(cls.splits, split_params)  # the default strategy with these params
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The definition table: TOML keys, plain types, ``None`` fields left out.

        ``Benchmark.from_dict(b.to_dict()) == b``.
        """
        out: dict[str, Any] = {}
        for key in _TOML_KEYS:
            value = getattr(self, _FIELD_OF.get(key, key))
            empty_skipped = ("corpus", "root", "corpus_params", "model_params", "extractor_params")
            if value is None or (key in empty_skipped and not value):
                continue
            if key == "split":
                value = [s.to_toml_value() for s in value]
            elif key == "root":
                value = [str(p) for p in value]
            elif isinstance(value, Path):
                value = str(value)
            out[key] = _plain(value)
        return out

    @classmethod
    def from_toml(cls, source: str | os.PathLike[str]) -> Benchmark:
        """A benchmark from a TOML file, or from TOML text.

        Parameters
        ----------
        source : str or path-like
            A path (a :class:`~pathlib.Path`, or a string without ``=`` or a newline), or TOML text.

        Raises
        ------
        ParameterError
            The file cannot be read or is not TOML, or :meth:`from_dict` refuses it (the message names the
            file).
        """
        is_text = isinstance(source, str) and ("\n" in source or "=" in source)
        where = "benchmark definition" if is_text else os.fspath(source)
        try:
            text = source if is_text else Path(source).read_text(encoding="utf-8")
            data = tomllib.loads(str(text))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ParameterError(f"cannot read benchmark definition {where}: {exc}") from None
        try:
            return cls.from_dict(data)
        except ParameterError as exc:
            raise ParameterError(f"{where}: {exc}") from None

    def to_toml(self) -> str:
        """The definition as TOML text (``Benchmark.from_toml(b.to_toml()) == b``).

        Raises
        ------
        ParameterError
            A parameter TOML cannot hold (``None`` inside ``model_params``, say).
        """
        import tomli_w

        try:
            return tomli_w.dumps(self.to_dict())
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"the benchmark cannot be written as TOML: {exc}") from None

    # --------------------------------------------------------------------------------------------- data
    def load_manifest(self, *, jobs: int = 4) -> pd.DataFrame:
        """The manifest the benchmark runs on.

        Its corpora scanned (merged when several), mapped through the label scheme, clips shorter than
        ``min_duration`` left out.

        Parameters
        ----------
        jobs : int, optional
            Threads that read headers and hash files.

        Returns
        -------
        pd.DataFrame
            The manifest (files the adapters skipped are logged).
        """
        from sertool.data.labels import apply_scheme
        from sertool.data.targets import apply_target

        self._check_corpora()
        built = build_corpora(
            self.corpora,
            self.roots,
            csv=self.csv,
            label_map=self.label_map,
            corpus_params=self.corpus_params,
            jobs=jobs,
        )
        if built.skipped:
            log.info("%d files skipped while scanning %s", len(built.skipped), ",".join(self.corpora))
        manifest = apply_target(apply_scheme(built.manifest, self.scheme), self.target)
        if self.min_duration:
            short = manifest["duration_s"] < self.min_duration
            if short.any():
                log.info(
                    "%d clips shorter than %.2f s left out (min_duration)",
                    int(short.sum()),
                    self.min_duration,
                )
            manifest = manifest[~short].reset_index(drop=True)
        return manifest


#: TOML keys in the order :meth:`Benchmark.to_dict` writes them.
_TOML_KEYS: tuple[str, ...] = tuple(
    _KEY_OF.get(f.name, f.name)
    for f in sorted(fields(Benchmark), key=lambda f: (f.name not in METADATA_KEYS, 0))
)
_FIELD_OF: dict[str, str] = {v: k for k, v in _KEY_OF.items()}


def build_corpora(
    corpora: Sequence[str],
    roots: Sequence[str | os.PathLike[str]],
    *,
    csv: str | os.PathLike[str] | None = None,
    label_map: Mapping[str, str] | None = None,
    corpus_params: Mapping[str, Any] | None = None,
    jobs: int = 4,
) -> ManifestBuild:
    """Scan one corpus, or several merged (speakers and utt_ids corpus-prefixed).

    Parameters
    ----------
    corpora : sequence of str
        Adapter names.
    roots : sequence of path-like
        One folder per corpus.
    csv, label_map : optional
        Passed to the ``csv`` adapter (to the only corpus when there is one).
    corpus_params : mapping, optional
        Keyword arguments of the adapter when there is one corpus (``{"label_column": "emotion"}``); with
        several, a table per adapter name (``{"hf": {"label_column": "emotion"}}``).
    jobs : int, optional
        Threads that read headers and hash files.

    Returns
    -------
    ManifestBuild
        The (merged) manifest and every skipped file.

    Raises
    ------
    ParameterError
        No corpus, or not one folder per corpus.
    """
    from sertool.data.manifest import ManifestBuild, build_manifest, merge_manifests

    if not corpora or len(corpora) != len(roots):
        raise ParameterError(f"corpus names {len(corpora)} corpora but root gives {len(roots)} folders")
    kwargs: dict[str, Any] = {}
    if csv is not None:
        kwargs["csv"] = Path(csv)
    if label_map is not None:
        kwargs["label_map"] = dict(label_map)
    params = dict(corpus_params or {})
    if len(corpora) == 1:
        return build_manifest(corpora[0], roots[0], jobs=jobs, **kwargs, **params)
    names = {c.lower() for c in corpora}
    stray = sorted(k for k in params if k.lower() not in names or not isinstance(params[k], Mapping))
    if stray:
        raise ParameterError(
            f"with several corpora, corpus_params must be a table per corpus ({sorted(names)}); "
            f"got key(s) {stray}"
        )
    per_corpus = {k.lower(): dict(v) for k, v in params.items()}
    builds = [
        build_manifest(
            c, r, jobs=jobs, **(kwargs if c.lower() == "csv" else {}), **per_corpus.get(c.lower(), {})
        )
        for c, r in zip(corpora, roots, strict=True)
    ]
    return ManifestBuild(
        merge_manifests([b.manifest for b in builds]), [s for b in builds for s in b.skipped]
    )


def run_benchmark(
    benchmark: Benchmark, *, progress: Callable[[UnitResult], None] | None = None
) -> list[BenchReport]:
    """Run a benchmark: scan its corpora once, then run every split in turn.

    Each split is made by :func:`sertool.splits.make_split` and run by :func:`sertool.bench.runner.run_bench`
    (finished units are reused unless ``force``).

    Parameters
    ----------
    benchmark : Benchmark
        The definition (checked with :meth:`Benchmark.validate` before any corpus is scanned).
    progress : callable, optional
        Called with each unit's result as it finishes.

    Returns
    -------
    list of BenchReport
        One per split, in the definition's order; each names its leaderboard files.
    """
    from sertool.bench.runner import run_bench
    from sertool.splits import make_split

    benchmark.validate()
    manifest = benchmark.load_manifest()
    extra: dict[str, Any] = {}  # only what differs from run_bench's defaults
    extra["unit_jobs"] = benchmark.unit_jobs
    if benchmark.scheduler:
        extra["scheduler"] = benchmark.scheduler
    if benchmark.calibrate:
        extra["calibrate"] = benchmark.calibrate
    models = benchmark.models if isinstance(benchmark.models, str) else list(benchmark.models)
    reports = []
    for spec in benchmark.splits:
        split = make_split(
            manifest,
            spec.strategy,
            seed=benchmark.seed,
            valid_fraction=benchmark.valid_fraction,
            **copy.deepcopy(spec.params),
        )
        reports.append(
            run_bench(
                manifest,
                split,
                features=list(benchmark.features),
                models=models,
                results_dir=benchmark.results,
                cache=benchmark.cache,
                seed=benchmark.seed,
                device=benchmark.device,
                tune=benchmark.tune,
                force=benchmark.force,
                jobs=benchmark.jobs,
                model_params=copy.deepcopy(benchmark.model_params),
                extractor_params=copy.deepcopy(benchmark.extractor_params),
                augment=copy.deepcopy(benchmark.augment),
                normalize=benchmark.normalize,
                progress=progress,
                **extra,
            )
        )
    return reports
