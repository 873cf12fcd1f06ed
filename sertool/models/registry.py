"""The model registry: name -> :class:`ModelSpec` (factory of an unfitted scikit-learn estimator + metadata).

Every model a benchmark can run is a :class:`ModelSpec` registered under a short name. The built-in
classical models live in :mod:`sertool.models.classic`; torch heads in :mod:`sertool.models.neural` register
themselves the same way::

    from sertool.models.registry import ModelSpec, register_model

    register_model(ModelSpec(name="mlp-torch", family="neural", factory=make_head, input="frames", gpu=True))

Central conventions (so that every model is treated alike by the runner):

- :func:`encode_labels` encodes string labels once, to ``0..K-1`` over the *sorted* class list (XGBoost
  needs integer classes; every estimator's ``classes_`` is then ``arange(K)`` and ``predict_proba`` columns
  follow the encoder's ``classes_``).
- :func:`fit_estimator` routes sample weights (e.g. :func:`balanced_sample_weight`) to every model that
  accepts them: ``<last step>__sample_weight`` for a :class:`~sklearn.pipeline.Pipeline`, ``sample_weight``
  otherwise. Models whose final estimator has no ``sample_weight`` fit parameter (k-NN, the GMM classifier)
  are fitted unweighted; :func:`accepts_sample_weight` tells which, and :attr:`ModelSpec.sample_weight`
  must agree with it (the tests check this for every registered model).
- Factories are called as ``factory(seed=seed, **overrides)`` and must return a new, unfitted estimator
  that survives :func:`sklearn.base.clone`.

Plugins: an installed package adds models through the entry-point group ``sertool.models``
(:mod:`sertool.plugins`). The entry point's value is a :class:`ModelSpec`, or a callable returning one or a
list of them; the models are known by their specs' names and come after the built-ins in ``all`` and family
selections. :data:`MODELS` holds only the built-ins (and what :func:`register_model` adds); the functions
below (:func:`get_model`, :func:`list_models`, :func:`resolve_models`, :func:`make_estimator`) see both.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import has_fit_parameter
from threadpoolctl import threadpool_limits

from sertool import plugins
from sertool.exceptions import ParameterError

__all__ = [
    "FAMILIES",
    "INPUT_KINDS",
    "MODELS",
    "PLUGIN_GROUP",
    "TASKS",
    "UNAVAILABLE",
    "ModelSpec",
    "accepts_sample_weight",
    "available_models",
    "balanced_sample_weight",
    "encode_labels",
    "fit_estimator",
    "get_model",
    "list_models",
    "make_estimator",
    "params_for_view",
    "register_model",
    "register_unavailable",
    "resolve_models",
]

log = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("classic", "neural")
#: What a model predicts: a class (``predict_proba`` over the encoded labels), a number (``predict``), or
#: both at once (``multitask``: ``predict_proba`` for the class and ``predict_values`` for the dimensions).
TASKS: tuple[str, ...] = ("classification", "regression", "multitask")
#: ``pooled``: one vector per utterance, shape ``(n, dim)``; ``frames``: a sequence per utterance.
INPUT_KINDS: tuple[str, ...] = ("pooled", "frames")
#: Words :func:`resolve_models` understands besides model names (so no model may be called this).
_GROUP_WORDS: tuple[str, ...] = ("all", *FAMILIES)
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what it needs.

    Attributes
    ----------
    name : str
        Registry name (lower case, ``[a-z0-9_.-]``), e.g. ``"svm"``.
    family : {"classic", "neural"}
        Model family; ``resolve_models("classic")`` selects a family.
    factory : callable
        ``factory(seed=int, **overrides) -> estimator``: a new, unfitted scikit-learn classifier.
    input : {"pooled", "frames"}
        The feature kind the model reads: pooled vectors ``(n, dim)`` or frame sequences.
    sample_weight : bool
        Whether the model accepts (balanced) sample weights in ``fit``.
    gpu : bool
        Whether the model benefits from a GPU (it must still run on CPU).
    description : str
        One line for ``sertool models`` listings.
    param_grid : mapping, optional
        A small grid for optional tuning, keyed by the estimator's own (``set_params``) parameter names,
        e.g. ``{"clf__n_neighbors": [3, 5, 7]}``, usable as is by
        :class:`~sklearn.model_selection.GridSearchCV`.
    uses_validation : bool
        Whether the model uses the fold's validation part itself (``fit(..., X_valid=, y_valid=)``), as the
        neural heads do for early stopping: it is then fitted on the training part only, never refitted.
    features : tuple of str, optional
        Extractor names the model is designed for (``("mfcc40",)`` for the MFCC CNN+transformer). Group
        selections (``all``, a family) run it only on those; named explicitly it runs on any features of its
        input kind. ``None``: any features of its kind.
    task : {"classification", "regression", "multitask"}
        What the model predicts: ``classification`` models are scikit-learn classifiers fitted on encoded
        labels (:func:`encode_labels`) with ``predict_proba``; ``regression`` models are regressors fitted on
        a continuous target (``fit(X, y_float)``, ``predict`` -> floats); ``multitask`` models are fitted on
        ``y`` of shape ``(n, 1 + k)`` (the label code, then ``k`` continuous dimensions) and give
        ``predict_proba`` and ``predict_values`` (``(n, k)``). Group selections (``all``, a family) keep the
        models of the run's task (:func:`resolve_models`).
    view_params : callable, optional
        ``view_params(view) -> dict``: parameters that follow from the feature view the model reads (the
        leaderboard name, e.g. ``whisper-tiny.en@2``), such as the encoder and layer a fine-tuned Whisper
        continues from (``whisper_ft``). The runner and ``sertool train`` apply them to every fit through
        :func:`params_for_view`; it raises :class:`ParameterError` for a view the model cannot read.
    """

    name: str
    family: Literal["classic", "neural"]
    factory: Callable[..., BaseEstimator]
    input: Literal["pooled", "frames"] = "pooled"
    sample_weight: bool = True
    gpu: bool = False
    description: str = ""
    param_grid: Mapping[str, Sequence[Any]] | None = field(default=None, hash=False, compare=False)
    features: tuple[str, ...] | None = None
    uses_validation: bool = False
    task: Literal["classification", "regression", "multitask"] = "classification"
    view_params: Callable[[str], dict[str, Any]] | None = field(default=None, hash=False, compare=False)

    def designed_for(self, extractor: str) -> bool:
        """Whether a group selection (``all``, a family) runs this model on features of ``extractor``."""
        return self.features is None or extractor in self.features

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ParameterError(f"model name {self.name!r} must match {_NAME_RE.pattern}")
        if self.name in _GROUP_WORDS:
            raise ParameterError(f"model name {self.name!r} is reserved (one of {', '.join(_GROUP_WORDS)})")
        if self.family not in FAMILIES:
            raise ParameterError(
                f"model {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}"
            )
        if self.input not in INPUT_KINDS:
            raise ParameterError(
                f"model {self.name!r}: input must be one of {INPUT_KINDS}, got {self.input!r}"
            )
        if self.task not in TASKS:
            raise ParameterError(f"model {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if not callable(self.factory):
            raise ParameterError(f"model {self.name!r}: factory {self.factory!r} is not callable")
        if self.param_grid is not None:
            for key, values in self.param_grid.items():
                if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
                    raise ParameterError(
                        f"model {self.name!r}: param_grid[{key!r}] must be a non-empty list, got {values!r}"
                    )


def params_for_view(spec: ModelSpec, view: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``params`` with what ``spec.view_params`` derives from ``view`` added (a copy; unchanged without it).

    Raises
    ------
    ParameterError
        The model cannot read this view, or ``params`` sets a derived parameter to another value (the
        parameter would then describe features the model is not given).
    """
    out = dict(params or {})
    if spec.view_params is None:
        return out
    derived = spec.view_params(view)
    clash = {k: (out[k], v) for k, v in derived.items() if k in out and out[k] != v}
    if clash:
        said = ", ".join(f"{k}={a!r} (the view says {b!r})" for k, (a, b) in clash.items())
        raise ParameterError(f"{spec.name} on {view}: {said}; these parameters follow from the view")
    return {**out, **derived}


#: The registry, in registration order (classic models first, cheapest first).
MODELS: dict[str, ModelSpec] = {}
#: Known models that cannot be built here (a missing optional dependency): name -> reason.
UNAVAILABLE: dict[str, str] = {}
#: The entry-point group of model plugins.
PLUGIN_GROUP = "sertool.models"
#: The plugin specs last built, with the loaded group they were built from (rebuilt when that changes).
_PLUGIN_SPECS: tuple[dict[str, Any], dict[str, ModelSpec]] | None = None


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` to the registry and return it.

    Parameters
    ----------
    spec : ModelSpec
        The model to register.
    replace : bool
        Allow replacing an existing entry of the same name (otherwise that is an error, which catches two
        modules claiming one name).

    Returns
    -------
    ModelSpec
        ``spec`` itself.
    """
    if not isinstance(spec, ModelSpec):
        raise ParameterError(f"register_model expects a ModelSpec, got {type(spec).__name__}")
    if spec.name in MODELS and not replace and MODELS[spec.name] is not spec:
        raise ParameterError(f"model {spec.name!r} is already registered ({MODELS[spec.name].description!r})")
    MODELS[spec.name] = spec
    return spec


def register_unavailable(name: str, reason: str) -> None:
    """Record that model ``name`` exists but cannot be built here (``reason``: e.g. the missing package).

    Asking for it by name then says why instead of "unknown model"; ``"all"`` leaves it out.
    """
    UNAVAILABLE[name] = reason


def _unknown(names: Sequence[str]) -> ParameterError:
    why = [f"{n!r} is unavailable: {UNAVAILABLE[n]}" for n in names if n in UNAVAILABLE]
    errors = plugins.plugin_errors()
    why += [
        f"the plugin {n!r} failed to load: {errors[(PLUGIN_GROUP, n)]}"
        for n in names
        if (PLUGIN_GROUP, n) in errors
    ]
    return ParameterError(
        f"unknown model(s) {', '.join(map(repr, names))}; known: {', '.join(_models()) or '(none)'} "
        f"(or {', '.join(_GROUP_WORDS)})" + (f"; {'; '.join(why)}" if why else "")
    )


def _load_builtins() -> None:
    import sertool.models  # noqa: F401  (importing the package registers the built-in models)


def _specs_of(value: Any) -> list[ModelSpec]:
    """The specs of a ``sertool.models`` entry point: a ModelSpec, a list, or a callable returning either."""
    if not isinstance(value, ModelSpec) and callable(value):
        value = value()
    if isinstance(value, ModelSpec):
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(v, ModelSpec) for v in value):
        return list(value)
    raise ParameterError(
        f"expected a ModelSpec, a list of ModelSpecs or a callable returning one, got {type(value).__name__}"
    )


def _plugin_models() -> dict[str, ModelSpec]:
    """The model plugins' specs by name, minus names a built-in has (warned about, once)."""
    global _PLUGIN_SPECS
    found = plugins.load_group(PLUGIN_GROUP)
    if _PLUGIN_SPECS is not None and _PLUGIN_SPECS[0] is found:
        specs = _PLUGIN_SPECS[1]
    else:
        specs = {}
        for entry, value in found.items():
            try:
                got = _specs_of(value)
            except Exception as exc:  # a broken plugin must not break the built-ins
                plugins.record_error(PLUGIN_GROUP, entry, exc)
                continue
            if len(got) == 1 and got[0].name != entry:
                log.warning(
                    "model plugin %s registers its model as %r",
                    plugins.describe(PLUGIN_GROUP, entry),
                    got[0].name,
                )
            for spec in got:
                if spec.name in specs:
                    log.warning("model %r is declared by two plugins; the first is used", spec.name)
                    continue
                specs[spec.name] = spec
        _PLUGIN_SPECS = (found, specs)
    out: dict[str, ModelSpec] = {}
    for name, spec in specs.items():
        if name in MODELS:
            plugins.warn_shadowed(PLUGIN_GROUP, name)
        else:
            out[name] = spec
    return out


def _models() -> dict[str, ModelSpec]:
    """Every usable model: the built-ins (registration order), then the plugins."""
    _load_builtins()
    extra = _plugin_models()
    return {**MODELS, **extra} if extra else MODELS


def available_models() -> dict[str, ModelSpec]:
    """``{name: spec}`` of every model: the built-ins in registration order, then the installed plugins'."""
    return dict(_models())


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``.

    Raises
    ------
    ParameterError
        If no model has that name; the message lists the known ones.
    """
    try:
        return _models()[name]
    except KeyError:
        raise _unknown([name]) from None


def list_models(input: str | None = None, family: str | None = None) -> list[ModelSpec]:
    """Registered models, in registration order, optionally filtered by input kind and family."""
    models = _models()
    if input is not None and input not in INPUT_KINDS:
        raise ParameterError(f"input must be one of {INPUT_KINDS}, got {input!r}")
    if family is not None and family not in FAMILIES:
        raise ParameterError(f"family must be one of {FAMILIES}, got {family!r}")
    return [
        s
        for s in models.values()
        if (input is None or s.input == input) and (family is None or s.family == family)
    ]


def resolve_models(
    spec: str | Iterable[str], *, input_kind: str | None = None, task: str | None = None
) -> list[ModelSpec]:
    """Turn a user's model selection into specs.

    Parameters
    ----------
    spec : str or iterable of str
        Comma-separated (or listed) tokens; each token is a model name, a family (``"classic"``,
        ``"neural"``) or ``"all"``. Duplicates are dropped, first occurrence wins.
    input_kind : {"pooled", "frames"}, optional
        The kind of features at hand. Group tokens (``all``, families) keep only the models that read this
        kind; a model *named* explicitly that cannot read it is an error. ``None`` accepts every kind.
    task : {"classification", "regression", "multitask"}, optional
        The run's task. Group tokens keep only the models of this task; a model *named* explicitly of the
        other task is an error. ``None`` (default): group tokens keep the classification models (what
        ``all`` meant before regression models existed) and named models of either task are accepted.

    Returns
    -------
    list of ModelSpec
        In the order requested (group tokens expand in registration order).

    Raises
    ------
    ParameterError
        Unknown names (the message lists the known ones), an empty selection, or a named model whose input
        kind does not fit ``input_kind``.
    """
    models = _models()
    if input_kind is not None and input_kind not in INPUT_KINDS:
        raise ParameterError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    tokens = [t.strip().lower() for t in tokens if t.strip()]
    if not tokens:
        raise ParameterError(f"no model selected by {spec!r}; known: {', '.join(models)}")
    unknown = [t for t in tokens if t not in models and t not in _GROUP_WORDS]
    if unknown:
        raise _unknown(unknown)
    if task is not None and task not in TASKS:
        raise ParameterError(f"task must be one of {TASKS}, got {task!r}")
    out: dict[str, ModelSpec] = {}
    for token in tokens:
        if token in _GROUP_WORDS:
            family = None if token == "all" else token
            for s in list_models(input=input_kind, family=family):
                if s.task == (task or "classification"):
                    out.setdefault(s.name, s)
            continue
        s = models[token]
        if input_kind is not None and s.input != input_kind:
            raise ParameterError(
                f"model {s.name!r} reads {s.input!r} features, but the features are {input_kind!r}"
            )
        if task is not None and s.task != task:
            raise ParameterError(
                f"model {s.name!r} is a {s.task} model, but the target of this run asks for {task}"
                + f"; {task} models: "
                + ", ".join(m.name for m in models.values() if m.task == task)
            )
        out.setdefault(s.name, s)
    if not out:
        raise ParameterError(f"no registered model fits {spec!r} with input kind {input_kind!r}")
    return list(out.values())


def make_estimator(name: str, *, seed: int, **overrides: Any) -> BaseEstimator:
    """A new, unfitted estimator of model ``name``.

    Parameters
    ----------
    name : str
        Registered model name.
    seed : int
        Seed of every random part of the model (same seed and data, same predictions).
    **overrides
        Parameters passed to the factory (see each factory; the classic ones accept the classifier's own
        parameter names, e.g. ``n_neighbors=7``, or full pipeline paths like ``clf__n_neighbors=7``).

    Returns
    -------
    estimator
        Unfitted; clone it per fold.
    """
    spec = get_model(name)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ParameterError(f"seed must be an integer, got {seed!r}")
    est = spec.factory(seed=int(seed), **overrides)
    if not (hasattr(est, "fit") and hasattr(est, "predict")):
        raise ParameterError(f"model {name!r}: factory returned {type(est).__name__}, not an estimator")
    return est


def encode_labels(labels: Any, *, classes: Sequence[Any] | None = None) -> tuple[LabelEncoder, np.ndarray]:
    """Encode labels to ``0..K-1`` over the sorted class list, once, for every model.

    Parameters
    ----------
    labels : array-like of shape (n,)
        Labels (usually strings).
    classes : sequence, optional
        The full class list (e.g. the label scheme's classes); default: the classes present in ``labels``.
        Fitting on the full list keeps codes stable across folds in which a class is missing.

    Returns
    -------
    encoder : LabelEncoder
        Fitted; ``encoder.classes_`` is the sorted class list, ``encoder.inverse_transform`` decodes
        predictions.
    y : ndarray of shape (n,), int64
        The codes.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ParameterError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    cls = np.unique(y) if classes is None else np.unique(np.asarray(classes))
    unknown = np.setdiff1d(np.unique(y), cls)
    if unknown.size:
        raise ParameterError(f"labels not in classes {cls.tolist()}: {unknown.tolist()}")
    enc = LabelEncoder().fit(cls)
    return enc, enc.transform(y).astype(np.int64)


def balanced_sample_weight(y: Any) -> np.ndarray:
    """Balanced sample weights, ``n / (K * count(class))``: every class weighs the same in total.

    Returns
    -------
    ndarray of shape (n,), float64
    """
    return compute_sample_weight("balanced", np.asarray(y)).astype(np.float64)


def _final_step(est: BaseEstimator) -> tuple[str | None, BaseEstimator]:
    if isinstance(est, Pipeline):
        name, last = est.steps[-1]
        return name, last
    return None, est


def accepts_sample_weight(est: BaseEstimator) -> bool:
    """Whether ``est`` (for a pipeline: its final step) takes ``sample_weight`` in ``fit``."""
    _, last = _final_step(est)
    return last is not None and last != "passthrough" and has_fit_parameter(last, "sample_weight")


def fit_estimator(
    est: BaseEstimator,
    X: Any,
    y: Any,
    *,
    sample_weight: Any = None,
    fit_params: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> BaseEstimator:
    """Fit ``est`` with sample weights routed the same way for every model.

    Parameters
    ----------
    est : estimator
        Unfitted estimator (from :func:`make_estimator`, cloned per fold); fitted in place.
    X : array-like of shape (n, dim)
        Features (or whatever the model's input kind is).
    y : array-like of shape (n,)
        Encoded labels (:func:`encode_labels`).
    sample_weight : array-like of shape (n,), optional
        E.g. :func:`balanced_sample_weight`. Passed as ``<final step>__sample_weight`` to a pipeline, as
        ``sample_weight`` to a bare estimator, and dropped (logged at debug level) for models that do not
        accept weights (k-NN, GMM): those are trained unweighted.
    fit_params : mapping, optional
        Further fit parameters, passed unchanged.
    threads : int, optional
        Cap the BLAS / OpenMP thread pools during the fit (:func:`threadpoolctl.threadpool_limits`).
        ``None`` leaves them alone. On a shared or small machine pass 1 (or ``n_jobs_from_env()``):
        scikit-learn's MLP with an unbounded BLAS pool on 2 busy cores was measured 20x slower than with 1
        thread. The cap includes OpenMP, which CPU torch also uses.

    Returns
    -------
    estimator
        ``est``, fitted.
    """
    params = dict(fit_params or {})
    if sample_weight is not None:
        sw = np.asarray(sample_weight, dtype=np.float64)
        n = len(y)
        if sw.shape != (n,):
            raise ParameterError(f"sample_weight has shape {sw.shape}, expected ({n},) to match y")
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            raise ParameterError("sample_weight must be finite and non-negative")
        if accepts_sample_weight(est):
            step, _ = _final_step(est)
            params[f"{step}__sample_weight" if step else "sample_weight"] = sw
        else:
            log.debug(
                "%s does not accept sample weights; fitting unweighted", type(_final_step(est)[1]).__name__
            )
    if threads is None:
        est.fit(X, y, **params)
        return est
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ParameterError(f"threads must be a positive integer or None, got {threads!r}")
    with threadpool_limits(limits=threads):
        est.fit(X, y, **params)
    return est
