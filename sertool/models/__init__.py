"""Models: a registry of scikit-learn classifiers (classic ones here, torch heads in :mod:`.neural`).

Importing this package registers every built-in model: the classic ones always, the neural ones when torch
is installed. Installed plugins (entry-point group ``sertool.models``, :mod:`sertool.plugins`) are seen by
:func:`get_model`, :func:`list_models`, :func:`resolve_models` and :func:`available_models`.
"""

from __future__ import annotations

import logging
from importlib import import_module

from sertool.models import classic, ensemble, multitask, regression
from sertool.models.classic import GMMClassifier
from sertool.models.registry import (
    MODELS,
    ModelSpec,
    accepts_sample_weight,
    available_models,
    balanced_sample_weight,
    encode_labels,
    fit_estimator,
    get_model,
    list_models,
    make_estimator,
    params_for_view,
    register_model,
    resolve_models,
)

log = logging.getLogger(__name__)

for _mod in ("neural", "mobilenet", "finetune"):  # the torch heads register themselves on import
    try:
        import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as exc:  # torch absent, or the module not written yet
        missing = exc.name or ""
        if missing != f"{__name__}.{_mod}" and missing.split(".")[0] not in {"torch", "skorch"}:
            raise  # a genuine bug inside the module must not hide as "no neural models"
        log.debug("%s models not available: %s", _mod, exc)

__all__ = [
    "MODELS",
    "GMMClassifier",
    "ModelSpec",
    "accepts_sample_weight",
    "available_models",
    "balanced_sample_weight",
    "classic",
    "encode_labels",
    "ensemble",
    "fit_estimator",
    "get_model",
    "list_models",
    "make_estimator",
    "multitask",
    "params_for_view",
    "register_model",
    "regression",
    "resolve_models",
]
