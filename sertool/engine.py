"""How a saved model computes its probabilities: the fitted estimator, or the same classifier as a checked ONNX
graph that predicts without scikit-learn, skops or torch.

A model folder from :func:`sertool.deploy.train_model` holds the fitted estimator (``estimator.skops`` or
``weights.safetensors``). Loading it imports scikit-learn (which imports SciPy's statistics and pandas), skops
and, for the torch heads, torch: about a second of start-up before a classical model answers one clip in a few
milliseconds. When the ``onnx`` extra is installed, ``train`` also writes ``model.onnx``, the classifier part of
:func:`sertool.export.export_onnx` (graph ``features``: from the model's pooled input through its scaler,
classifier and calibration temperature to the probabilities), and checks it against the estimator before
keeping it:

Parity rows
    The training rows the estimator was fitted on (up to :data:`PARITY_ROWS`, evenly spaced) and
    :data:`FAR_PROBES` inputs far from them (the training mean plus 100 training standard deviations in random
    directions: where the guard looks for a constant answer).
Kept when
    The largest absolute probability difference is at most :data:`TOLERANCE` and every row whose two most
    probable classes (by the estimator) lie more than twice that apart gets the same label. Otherwise the
    graph is discarded and the reason recorded; the model predicts with its estimator.

``model.json`` records the outcome under ``engine``::

    "engine": {"onnx": {"file": "model.onnx", "sha256": "...", "opset": 17, "max_abs_diff": 2.4e-07,
                        "rows": 508, "tolerance": 0.0001, "onnxruntime": "1.23.2"}}
    "engine": {"onnx": null, "why": "trained with --normalize speaker: ..."}

:func:`sertool.deploy.load_model` takes ``engine``: ``"auto"`` (the default of ``predict`` and ``serve``) runs
the graph when the card records one and onnxruntime is importable, else the estimator; ``"estimator"`` always
loads the estimator; ``"onnx"`` requires the graph. The graph file is checksummed like the estimator's. Models
without a graph: trained with ``--normalize`` (each input needs its group's statistics first; the estimator
path applies them), frame-sequence heads, ``gmm``, ``mobilenet_spec`` and ``soft_vote`` (no converter), and
models trained without the ``onnx`` extra. A failed export never fails ``train``: the reason is recorded. The guard (:mod:`sertool.guard`) is plain numpy and works with either engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sertool.exceptions import ParameterError

__all__ = [
    "ENGINES",
    "ENGINE_FILE",
    "FAR_PROBES",
    "PARITY_ROWS",
    "TOLERANCE",
    "OnnxClassifier",
    "add_onnx_engine",
    "onnx_available",
    "open_onnx_engine",
    "predict_classes",
]

log = logging.getLogger(__name__)

#: ``engine`` choices of :func:`sertool.deploy.load_model` (and ``predict`` / ``serve --engine``).
ENGINES = ("auto", "onnx", "estimator")
#: The graph's file name in a model folder.
ENGINE_FILE = "model.onnx"
#: Largest absolute probability difference from the estimator at which the graph is kept.
TOLERANCE = 1e-4
#: Most training rows the parity check runs on.
PARITY_ROWS = 500
#: Inputs far from the training data in the parity check.
FAR_PROBES = 8


def predict_classes(est: Any, X: Any, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Class probabilities in ``classes`` order and the predicted labels.

    Parameters
    ----------
    est : estimator
        Fitted; ``est.classes_`` are indices into the sorted class names (the label encoder's codes).
    X : array-like
        The estimator's input.
    classes : sequence of str
        Class names in the order of the returned columns.

    Returns
    -------
    proba : ndarray of shape (n, len(classes))
        Columns in ``classes`` order; classes the fitted model never saw get probability 0.
    labels : list of str
        The most probable class of each row, ties broken in the label encoder's (sorted-name) order.
    """
    codes = sorted(classes)
    proba = np.asarray(est.predict_proba(X), dtype=np.float64)
    full = np.zeros((proba.shape[0], len(codes)))
    full[:, np.asarray(est.classes_, dtype=int)] = proba
    labels = [codes[i] for i in full.argmax(axis=1)]
    return full[:, [codes.index(c) for c in classes]], labels


class OnnxClassifier:
    """A ``features`` graph from :func:`sertool.export.export_onnx` behind the estimator interface that
    :func:`predict_classes` reads (``classes_`` and ``predict_proba``).

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        Its first output holds the probabilities in the order of ``classes``.
    classes : sequence of str
        The model card's classes.
    path : path, optional
        The graph's file (for messages).
    """

    def __init__(self, session: Any, classes: Sequence[str], path: str | os.PathLike | None = None) -> None:
        self.session = session
        #: every class's code, as a scikit-learn classifier fitted on all of them has (sorted names)
        self.classes_ = np.arange(len(classes))
        self._sorted = np.asarray([list(classes).index(c) for c in sorted(classes)], dtype=int)
        self.path = None if path is None else Path(path)
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities ``(n, n_classes)`` (float64), columns in :attr:`classes_` order (sorted class names,
        as the estimator's), for pooled vectors ``X`` ``(n, d)``."""
        X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
        if X.ndim != 2:
            raise ParameterError(f"{self.path}: the graph reads pooled vectors (n, d), got shape {X.shape}")
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        (proba,) = self.session.run([self._output], {self._input: X})
        return np.asarray(proba, dtype=np.float64)[:, self._sorted]


def onnx_available() -> bool:
    """Whether onnxruntime can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _session(path: Path) -> Any:
    """An onnxruntime CPU session of one thread (a classifier on pooled vectors is milliseconds of work; a
    thread pool would cost more to start than it saves)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def open_onnx_engine(root: str | os.PathLike, card: dict[str, Any]) -> OnnxClassifier:
    """The checked graph a model card records, in an onnxruntime session.

    Parameters
    ----------
    root : path
        The model folder.
    card : dict
        Its ``model.json``.

    Raises
    ------
    ParameterError
        The card records no graph (with the reason it gives), or onnxruntime is not installed.
    sertool.deploy.ModelError
        The graph file is missing or its checksum differs from the card's.
    """
    from sertool.deploy import ModelError

    root = Path(root)
    record = (card.get("engine") or {}).get("onnx")
    if not record:
        why = (card.get("engine") or {}).get("why") or "trained before model.onnx existed"
        raise ParameterError(f"{root}: no ONNX graph ({why}); use engine 'estimator' or 'auto'")
    if not onnx_available():
        raise ParameterError(f"{root}: the ONNX engine needs onnxruntime: pip install 'sertool[onnx]'")
    file = root / str(record.get("file", ""))
    if record.get("file") != ENGINE_FILE or not file.is_file():
        raise ModelError(f"{root}: ONNX graph {record.get('file')!r} missing")
    if _sha256(file) != record.get("sha256"):
        raise ModelError(f"{file}: checksum does not match the model card (altered or truncated file)")
    return OnnxClassifier(_session(file), list(card["classes"]), file)


def engine_unavailable(card: dict[str, Any]) -> str:
    """Why a model card's model gets no graph ('' when it can have one)."""
    if card.get("task") in ("regression", "multitask"):
        return f"a {card['task']} model: its predicted values come from the estimator"
    if card.get("normalize"):
        return (
            f"trained with --normalize {card['normalize']['column']}: each input is z-scored with its group's "
            "statistics first, which the estimator path applies"
        )
    if card.get("input") != "pooled":
        return f"{card.get('model')} reads {card.get('input')}, the graph pooled vectors"
    if card.get("model") in ("gmm", "mobilenet_spec", "soft_vote"):
        return f"{card['model']} has no ONNX converter"
    import importlib.util

    missing = [
        m for m in ("onnx", "onnxruntime", "skl2onnx", "onnxmltools") if importlib.util.find_spec(m) is None
    ]
    if missing:
        return f"{', '.join(missing)} not installed (pip install 'sertool[onnx]')"
    return ""


def _parity_rows(X: np.ndarray, seed: int) -> np.ndarray:
    """Up to :data:`PARITY_ROWS` evenly spaced training rows and :data:`FAR_PROBES` inputs far from them."""
    X = np.asarray(X, dtype=np.float32)
    take = np.unique(np.linspace(0, len(X) - 1, min(len(X), PARITY_ROWS)).round().astype(int))
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(FAR_PROBES, X.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    std = X.std(axis=0) + 1e-6
    far = X.mean(axis=0) + 100.0 * std * directions * np.sqrt(X.shape[1])
    return np.vstack([X[take], far.astype(np.float32)])


def _compare(reference: np.ndarray, other: np.ndarray, tolerance: float) -> tuple[float, int]:
    """(largest absolute difference, rows whose label differs although the reference's top two classes lie
    more than ``2 * tolerance`` apart)."""
    diff = float(np.max(np.abs(reference - other))) if reference.size else 0.0
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] > 1 else np.zeros((len(reference), 2))
    clear = (top2[:, 1] - top2[:, 0]) > 2 * tolerance
    moved = int(np.sum(clear & (reference.argmax(axis=1) != other.argmax(axis=1))))
    return diff, moved


def _write_card(root: Path, card: dict[str, Any]) -> None:
    from sertool.deploy import CARD

    fd, tmp = tempfile.mkstemp(prefix=f".{CARD}.", dir=root)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(card, indent=2, sort_keys=True))
        os.replace(tmp, root / CARD)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_onnx_engine(
    model_dir: str | os.PathLike,
    X: Any,
    *,
    seed: int = 0,
    tolerance: float = TOLERANCE,
    cache: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export a saved model's classifier to ``model.onnx`` in its folder, check it against the estimator and
    record the outcome in ``model.json`` (see the module docstring).

    Parameters
    ----------
    model_dir : path
        A model folder from :func:`sertool.deploy.train_model`.
    X : array-like of shape (n, d)
        Rows of the model's input to check on: its training rows.
    seed : int, optional
        Seed of the far probes.
    tolerance : float, optional
        Largest absolute probability difference kept (default :data:`TOLERANCE`).
    cache : path, optional
        Feature cache (Whisper weights) for loading the model.

    Returns
    -------
    dict
        The ``engine`` record written to ``model.json``.
    """
    from sertool.deploy import CARD, load_model
    from sertool.export import DEFAULT_OPSET, export_onnx

    root = Path(model_dir)
    card = json.loads((root / CARD).read_text())
    record: dict[str, Any] = {"onnx": None, "why": engine_unavailable(card)}
    X = np.asarray(X) if X is not None else None
    if not record["why"] and (X is None or X.ndim != 2 or not len(X)):
        record["why"] = "no training rows to check the graph on"
    tmp = root / f".{ENGINE_FILE}.tmp"
    if not record["why"]:
        try:
            export_onnx(root, tmp, graph="features", cache=cache)
            model = load_model(root, engine="estimator", cache=cache)
            rows = _parity_rows(X, seed)
            reference = predict_classes(model.estimator, rows, model.classes)[0]
            graph = predict_classes(OnnxClassifier(_session(tmp), model.classes, tmp), rows, model.classes)[0]
            diff, moved = _compare(reference, graph, tolerance)
        except Exception as exc:  # an optional step: the saved estimator stays usable whatever fails here
            record["why"] = f"export failed: {type(exc).__name__}: {exc}"
        else:
            if diff > tolerance or moved:
                record["why"] = (
                    f"the graph's probabilities differ from the estimator's by up to {diff:.2g} (tolerance "
                    f"{tolerance:g}) and {moved} label(s) moved, on {len(rows)} rows"
                )
            else:
                from importlib.metadata import version

                os.replace(tmp, root / ENGINE_FILE)
                record = {
                    "onnx": {
                        "file": ENGINE_FILE,
                        "sha256": _sha256(root / ENGINE_FILE),
                        "opset": DEFAULT_OPSET,
                        "max_abs_diff": diff,
                        "rows": len(rows),
                        "far_probes": FAR_PROBES,
                        "tolerance": tolerance,
                        "onnxruntime": version("onnxruntime"),
                    }
                }
    tmp.unlink(missing_ok=True)
    if record["onnx"] is None:
        log.info("%s: predicts with its estimator, no ONNX graph: %s", root, record["why"])
    card["engine"] = record
    _write_card(root, card)
    return record
