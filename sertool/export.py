"""Export a saved model to ONNX: one graph from audio (or from the model's features) to class probabilities.

:func:`export_onnx` turns a model folder written by :func:`sertool.deploy.train_model` into one ONNX file
that onnxruntime (or any ONNX runtime) runs without sertool, scikit-learn or torch.

What the graph covers
---------------------
Models on Whisper features (``whisper-<size>``, any weights, any mode), input ``waveform`` float32
``[1, n_samples]`` (16 kHz mono, any length from 1 sample; Whisper sees the first 30 s)
    The whole chain :meth:`TrainedModel.predict_proba_signals <sertool.deploy.TrainedModel>` runs: Whisper's
    log-mel spectrogram (:func:`sertool.features.whisper.whisper_log_mel`: 25 ms periodic-Hann frames every
    10 ms as a 400-tap convolution with the windowed DFT basis, the Slaney mel filters, ``log10``, clamp to
    the clip's maximum minus 8, ``(x + 4) / 4``; the ``trimmed`` / ``padded30`` / ``window<S>`` input length
    and silence fill), the encoder (convolutional stem, positional embeddings, every layer, final layer norm),
    the mean over the clip's valid encoder frames of each layer, the view's layer selection and
    concatenation, and the classifier. Frame heads (``ser_whisper``, ``attn_pool``, ``qkv_pool``) get the
    selected layers' frames rounded to float16 as the feature cache stores them, averaged by the head's
    ``frame_pool``. The encoder's pooled layers equal the extractor's to ~1e-6 (clips of 1 sample to 31 s,
    every mode; ``tests/test_export.py``). One protobuf file holds at most 2 GB: Whisper up to medium.
Models on ``mfcc40``, input ``waveform`` (opset >= 17)
    The extractor's steps (offset, crop / pad, centred STFT through the ONNX ``STFT`` operator in float64 as
    librosa computes it, power, 128 Slaney mel bands, ``power_to_db`` with its 80 dB floor, orthonormal
    DCT-II; the mean | std pooling for pooled models, the frames for ``cnn_transformer``), then the
    classifier. Features equal the extractor's to ~1e-5 (to ~1e-3 on clips that are almost all silence).
Models on other extractors (``handcrafted94``, ``egemaps``, ``spectrogram``, plugins, fused views) and models
whose extractor preprocesses the audio (``preprocess``: denoise, trim)
    The classifier part only: input ``features`` float32 ``[n, d]`` (pooled vectors) or, for frame heads,
    ``frames`` float32 ``[1, T, F]`` (one clip). The feature step stays sertool's
    (:meth:`TrainedModel.features <sertool.deploy.TrainedModel>`), named in the metadata
    (``sertool.feature_step``): ``handcrafted94`` needs librosa's tuning estimate (piptrack, a median and a
    histogram) to build each clip's chroma filter bank, ``egemaps`` is openSMILE's C++ code, and the
    preprocessing steps (noisereduce, librosa's trim) have no ONNX counterpart that would reproduce them.
The classifier (the scikit-learn pipeline with its StandardScaler, or a torch head with its standardisation)
    Logistic regression, RBF SVM with temperature-scaled probabilities (a converter of this module; skl2onnx
    has none for ``method="temperature"``), MLP, k-NN, naive Bayes, decision tree, random forest (skl2onnx),
    XGBoost and LightGBM (onnxmltools), the torch heads (``torch.onnx``), and the temperature of a model
    trained with ``--calibrate temperature`` (:class:`~sertool.calibration.TemperatureScaled`). Not exported:
    ``gmm`` (no ONNX converter for :class:`~sertool.models.classic.GMMClassifier`), ``mobilenet_spec``, and
    models trained with ``--normalize`` (they need the statistics of each speaker's other clips).

Outputs: ``probabilities`` float32 ``[n, n_classes]``, columns in the model's class order (the model card's
``classes``, stored as the JSON metadata property ``sertool.classes``), and ``label`` (string ``[n]``, the most
probable class, ties broken in sorted-name order as ``sertool predict`` breaks them). Classes the estimator
never saw get probability 0, as in :func:`sertool.bench.fitting.predict_classes`.

Arithmetic is float32 throughout (sertool's scikit-learn models compute in float64 on float32 features); the
parity test (``tests/test_export.py``) and ``benchmarks/bench_onnx.py`` compare the ONNX probabilities with
``sertool predict`` on the same clips.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sertool.exceptions import ParameterError, SertoolError

__all__ = ["DEFAULT_OPSET", "GRAPHS", "OnnxModel", "export_onnx", "load_onnx"]

log = logging.getLogger(__name__)

#: ONNX opset of the exported graphs (onnxruntime >= 1.14 runs it).
DEFAULT_OPSET = 17
#: Opsets torch's TorchScript exporter writes for every graph here (attention needs 14).
MIN_OPSET, MAX_OPSET = 14, 20
#: ``graph`` choices of :func:`export_onnx`.
GRAPHS = ("auto", "waveform", "features")
#: Version of the exported graph's layout (metadata ``sertool.export_format``).
EXPORT_FORMAT = 1

_SR = 16000


# ------------------------------------------------------------------------------------------------ public API
def export_onnx(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    graph: str = "auto",
    opset: int = DEFAULT_OPSET,
    cache: str | os.PathLike | None = None,
    check_versions: bool = True,
) -> Path:
    """Write a saved model as one ONNX graph (see the module docstring for what the graph covers).

    Parameters
    ----------
    model_dir : path
        A model folder from :func:`sertool.deploy.train_model` (loaded with :func:`~sertool.deploy.load_model`,
        with its checks).
    out : path
        The ``.onnx`` file to write (replaced atomically).
    graph : {"auto", "waveform", "features"}, optional
        ``"waveform"``: from the audio samples (Whisper and mfcc40 models; others raise); ``"features"``: the
        classifier from the model's input (pooled vector or frames); ``"auto"`` (default): from the waveform
        where that is possible, else from the features.
    opset : int, optional
        ONNX opset, 14 to 20 (default :data:`DEFAULT_OPSET`; the mfcc40 waveform graph needs 17).
    cache : path, optional
        Where converted Whisper weights live (default ``$SERTOOL_CACHE``).
    check_versions : bool, optional
        Passed to :func:`~sertool.deploy.load_model`.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ParameterError
        Unknown ``graph``, a waveform graph asked for a model whose feature step has no ONNX form, a model
        kind with no converter (``gmm``, ``mobilenet_spec``) or a model trained with ``--normalize``.
    """
    _require()
    import onnx

    from sertool.deploy import load_model

    if graph not in GRAPHS:
        raise ParameterError(f"graph must be one of {', '.join(GRAPHS)}, got {graph!r}")
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ParameterError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}")
    model = load_model(
        model_dir, device="cpu", cache=cache, check_versions=check_versions, engine="estimator"
    )
    if model.normalize is not None:
        raise ParameterError(
            f"{model.path}: trained with --normalize {model.normalize}: each input needs the statistics of its "
            f"{model.normalize}'s other clips, which one graph per clip cannot hold; retrain without it to export"
        )
    why_not = _waveform_unsupported(model, opset)
    if graph == "waveform" and why_not:
        raise ParameterError(f"{model.path}: no waveform graph: {why_not}; export with graph='features'")
    whole = graph != "features" and not why_not
    if graph == "auto" and why_not:
        log.info("%s: graph from the features (%s)", model.path, why_not)
    clf = _classifier_graph(model, opset)
    if whole:
        builder = _mfcc40_front_graph if model.card["extractor"]["name"] == "mfcc40" else _whisper_front_graph
        proto = _merge(builder(model, opset, frames=model.card["input"] == "frames"), clf)
        kind = "waveform"
    else:
        proto = clf
        kind = "frames" if model.card["input"] == "frames" else "features"
    proto = _finish(proto, model, kind, why_not)
    onnx.checker.check_model(proto, full_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(proto.SerializeToString())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("exported %s (%s graph, opset %d) to %s", model.path, kind, opset, out)
    return out


@dataclass
class OnnxModel:
    """An exported graph in an onnxruntime session, with what its metadata says.

    Attributes
    ----------
    session : onnxruntime.InferenceSession
    classes : list of str
        Probability-column order.
    input_kind : str
        ``"waveform"``, ``"features"`` or ``"frames"``.
    metadata : dict of str to str
        The graph's metadata properties.
    """

    session: Any
    classes: list[str]
    input_kind: str
    metadata: dict[str, str]

    def run(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Probabilities and labels for one graph input (``[1, n]`` samples, ``[n, d]`` vectors, ``[1, T, F]``)."""
        name = self.session.get_inputs()[0].name
        proba, label = self.session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(proba), [str(v) for v in np.asarray(label).ravel()]

    def predict_proba_signals(self, signals: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities ``(n, n_classes)`` for 16 kHz mono signals, one graph run per clip (waveform graphs)."""
        if self.input_kind != "waveform":
            raise ParameterError(
                f"this graph reads {self.input_kind}, not audio: compute them with sertool "
                f"({self.metadata.get('sertool.feature_step', '')})"
            )
        rows = [self.run(np.asarray(y, dtype=np.float32)[None, :])[0][0] for y in signals]
        return np.stack(rows) if rows else np.zeros((0, len(self.classes)), dtype=np.float32)


def load_onnx(path: str | os.PathLike, *, threads: int | None = None, spinning: bool = True) -> OnnxModel:
    """Open an exported graph with onnxruntime on the CPU.

    Parameters
    ----------
    path : path
        A file from :func:`export_onnx`.
    threads : int, optional
        onnxruntime intra-op threads (default: onnxruntime's choice, one per core).
    spinning : bool, optional
        Let idle onnxruntime threads spin for more work (onnxruntime's default). Turn off when other compute
        (torch, numpy) shares the cores between runs: spinning threads then take their time.
    """
    _require()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if "sertool.classes" not in meta:
        raise ParameterError(f"{path}: not a sertool export (no sertool.classes metadata)")
    return OnnxModel(
        session, json.loads(meta["sertool.classes"]), meta.get("sertool.input", "features"), meta
    )


def _require() -> None:
    """Raise a one-line error naming the extra when an ONNX package is missing."""
    import importlib.util

    missing = [
        m for m in ("onnx", "onnxruntime", "skl2onnx", "onnxmltools") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise SertoolError(f"export needs {', '.join(missing)}: pip install 'sertool[onnx]'")


# ------------------------------------------------------------------------------------------------ scope
def _waveform_unsupported(model: Any, opset: int) -> str:
    """Why the model has no waveform graph ('' when it has one)."""
    from sertool.features.handcrafted import Mfcc40
    from sertool.features.whisper import WhisperExtractor

    name = str(model.card["extractor"]["name"])
    if "+" in str(model.card["features"]):
        return f"fused view {model.card['features']}: " + _FEATURE_STEPS.get(
            name, f"{name}: computed by sertool"
        )
    if isinstance(model.extractor, WhisperExtractor):
        pooling = getattr(model.extractor, "pooling", "mean")
        return (
            "" if pooling == "mean" else f"{name} pools {pooling!r}, the graph's encoder front end the mean"
        )
    if isinstance(model.extractor, Mfcc40):
        return "" if opset >= 17 else "mfcc40's graph needs the STFT operator (opset >= 17)"
    if (model.card["extractor"].get("build_params") or {}).get("preprocess"):
        return f"{name} preprocesses the audio ({model.card['extractor']['build_params']['preprocess']})"
    return _FEATURE_STEPS.get(name, f"{name} has no ONNX form in sertool")


_FEATURE_STEPS = {
    "handcrafted94": "handcrafted94 (librosa 0.11 chroma_stft | melspectrogram(60) | mfcc(20) | zcr | centroid, "
    "time-averaged) estimates each clip's tuning (piptrack, median, histogram) to build its chroma filter "
    "bank: computed by sertool.features.handcrafted.Handcrafted94",
    "mfcc40": "mfcc40 (librosa 0.11 mfcc, 40 coefficients, 0.5 s skipped, 3 s crop/pad; pooled: mean | std): "
    "computed by sertool.features.handcrafted.Mfcc40",
    "egemaps": "egemaps (openSMILE eGeMAPSv02 functionals, C++): computed by sertool.features.egemaps",
    "spectrogram": "spectrogram (log(1+|STFT|), n_fft 512): computed by sertool.features.spectrogram",
}


# ------------------------------------------------------------------------------------------------ classifier
def _classifier_graph(model: Any, opset: int) -> Any:
    """The classifier from its input (``features [n, d]`` or ``frames [1, T, F]``) to ``est_proba`` (columns
    in the estimator's ``classes_`` order), with the card's calibration (``--calibrate temperature``)."""
    from sertool.calibration import TemperatureScaled

    est = model.estimator
    temperature = None
    if isinstance(est, TemperatureScaled):
        temperature, est = float(est.temperature), est.estimator
    if model.card.get("family") == "neural" or hasattr(est, "module_"):
        if model.card["model"] == "mobilenet_spec":
            raise ParameterError(
                f"{model.path}: mobilenet_spec (block images of a spectrogram) is not exported"
            )
        proto = _torch_head_graph(est, opset)
    else:
        proto = _sklearn_graph(est, opset)
    if temperature is not None:
        _append_temperature(proto, temperature)
    return proto


def _append_temperature(proto: Any, temperature: float) -> None:
    """``est_proba`` <- ``softmax(log(max(p, 1e-12)) / T)`` (:func:`sertool.calibration.scaled_proba`)."""
    from onnx import helper, numpy_helper

    from sertool.calibration import PROBA_FLOOR

    _rename_output(proto, "est_proba", "uncalibrated_proba")
    g = proto.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(PROBA_FLOOR, dtype=np.float32), "calibration_floor"),
            numpy_helper.from_array(np.asarray(temperature, dtype=np.float32), "calibration_temperature"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Max", ["uncalibrated_proba", "calibration_floor"], ["calibration_floored"]),
            helper.make_node("Log", ["calibration_floored"], ["calibration_log"]),
            helper.make_node("Div", ["calibration_log", "calibration_temperature"], ["calibration_logits"]),
            helper.make_node("Softmax", ["calibration_logits"], ["est_proba"], axis=1),
        ]
    )
    for out in g.output:
        if out.name == "uncalibrated_proba":
            out.name = "est_proba"


def _sklearn_graph(est: Any, opset: int) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    from sertool.models.classic import GMMClassifier

    _register_converters()
    final = est.steps[-1][1] if hasattr(est, "steps") else est
    if isinstance(final, GMMClassifier):
        raise ParameterError("gmm (one Gaussian mixture per class) has no ONNX converter; not exported")
    n = int(est.n_features_in_)
    options: dict[int, dict[str, Any]] = {id(final): {"zipmap": False}}
    from sklearn.preprocessing import StandardScaler

    for _, step in getattr(est, "steps", []):
        if isinstance(step, StandardScaler):
            # subtract, then divide by the scale, as scikit-learn does on float32 features (the default ONNX
            # Scaler multiplies by its reciprocal: a last-bit difference that moves clips lying on a tree's
            # threshold to the other branch; measured on xgb: 1e-2 -> 2e-7 max probability difference)
            options[id(step)] = {"div": "div"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # skl2onnx reads SVC's deprecated probA_ / probB_
            proto = convert_sklearn(
                est,
                initial_types=[("features", FloatTensorType([None, n]))],
                options=options,
                target_opset={"": opset, "ai.onnx.ml": 3},
            )
    except (RuntimeError, NotImplementedError, TypeError, KeyError) as exc:
        raise ParameterError(f"{type(final).__name__}: skl2onnx cannot convert it: {exc}") from exc
    _fix_knn_distance_weights(proto)
    outputs = [o.name for o in proto.graph.output]
    _rename_output(proto, outputs[0], "est_label")
    _rename_output(proto, outputs[1], "est_proba")
    return proto


def _fix_knn_distance_weights(proto: Any) -> None:
    """skl2onnx 1.20 negates the k smallest distances (``TopK(largest=0)``) before ``1 / max(d, 1e-6)``, as if
    TopK had returned negated distances; every weight is then 1e6 (uniform). Undo that negation."""
    from onnx import numpy_helper

    g = proto.graph
    smallest = {
        n.output[0]
        for n in g.node
        if n.op_type == "TopK" and any(a.name == "largest" and a.i == 0 for a in n.attribute)
    }
    inits = {i.name: i for i in g.initializer}
    for node in g.node:
        if node.op_type == "Mul" and node.input[0] in smallest and node.input[1] in inits:
            value = numpy_helper.to_array(inits[node.input[1]])
            if value.size == 1 and float(value.ravel()[0]) == -1.0:
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(-value, node.input[1]))


_REGISTERED = False


def _register_converters() -> None:
    """XGBoost and LightGBM converters from onnxmltools, and temperature-scaled CalibratedClassifierCV."""
    global _REGISTERED
    if _REGISTERED:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import _converter_pool
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
    from sklearn.calibration import CalibratedClassifierCV

    opts = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier

        update_registered_converter(
            XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes, convert_xgboost,
            options=opts,
        )  # fmt: skip
    except ImportError:  # pragma: no cover - xgboost or onnxmltools missing
        log.debug("no XGBoost converter")
    try:
        from lightgbm import LGBMClassifier
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
            convert_lightgbm, options=opts,
        )  # fmt: skip
    except ImportError:  # pragma: no cover
        log.debug("no LightGBM converter")
    alias = sklearn_operator_name_map[CalibratedClassifierCV]
    original = _converter_pool[alias]

    def convert_calibrated(scope: Any, operator: Any, container: Any) -> None:
        if operator.raw_operator.method != "temperature":
            original(scope, operator, container)
        else:
            _convert_temperature_calibrated(scope, operator, container)

    update_registered_converter(
        CalibratedClassifierCV, alias, calculate_linear_classifier_output_shapes, convert_calibrated,
        options={"zipmap": [True, False, "columns"], "nocl": [True, False], "output_class_labels": [False, True]},
    )  # fmt: skip
    _REGISTERED = True


def _convert_temperature_calibrated(scope: Any, operator: Any, container: Any) -> None:
    """``CalibratedClassifierCV(method="temperature")``: softmax(beta * decision_function) of each calibrated
    classifier, averaged (scikit-learn's ``_CalibratedClassifier`` / ``_TemperatureScaling``)."""
    from onnx import TensorProto
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common.data_types import Int64TensorType, guess_proto_type

    op = operator.raw_operator
    proto_type = guess_proto_type(operator.inputs[0].type)
    n_classes = len(op.classes_)
    probs = []
    for i, cc in enumerate(op.calibrated_classifiers_):
        base = cc.estimator
        if not container.has_options(base, "raw_scores"):
            raise NotImplementedError(f"temperature calibration of {type(base).__name__} (no raw scores)")
        sub = scope.declare_local_operator(sklearn_operator_name_map[type(base)], base)
        container.add_options(id(base), {"raw_scores": True})
        scope.add_options(id(base), {"raw_scores": True})
        sub.inputs = operator.inputs
        sub.outputs.append(scope.declare_local_variable(f"cal_label{i}", Int64TensorType()))
        scores = scope.declare_local_variable(f"cal_scores{i}", operator.inputs[0].type.__class__())
        sub.outputs.append(scores)
        logits = scores.full_name
        if n_classes == 2:  # a binary decision function x becomes the logits (-x, x)
            col = scope.get_unique_variable_name("col")
            container.add_initializer(col, TensorProto.INT64, [1], [1])
            pos = scope.get_unique_variable_name("pos")
            container.add_node("Gather", [logits, col], pos, axis=1, name=scope.get_unique_operator_name("G"))
            neg = scope.get_unique_variable_name("neg")
            container.add_node("Neg", [pos], neg, name=scope.get_unique_operator_name("Neg"))
            logits = scope.get_unique_variable_name("logits")
            container.add_node("Concat", [neg, pos], logits, axis=1, name=scope.get_unique_operator_name("C"))
        beta = scope.get_unique_variable_name("beta")
        container.add_initializer(beta, proto_type, [], [float(cc.calibrators[0].beta_)])
        scaled = scope.get_unique_variable_name("scaled")
        container.add_node("Mul", [logits, beta], scaled, name=scope.get_unique_operator_name("Mul"))
        prob = scope.get_unique_variable_name("cal_prob")
        container.add_node("Softmax", [scaled], prob, axis=1, name=scope.get_unique_operator_name("Softmax"))
        probs.append(prob)
    total = scope.get_unique_variable_name("cal_sum")
    container.add_node("Sum", probs, total, name=scope.get_unique_operator_name("Sum"))
    count = scope.get_unique_variable_name("cal_n")
    container.add_initializer(count, proto_type, [], [float(len(probs))])
    proba = operator.outputs[1].full_name
    container.add_node("Div", [total, count], proba, name=scope.get_unique_operator_name("Div"))
    index = scope.get_unique_variable_name("argmax")
    container.add_node(
        "ArgMax", [proba], index, axis=1, keepdims=0, name=scope.get_unique_operator_name("AM")
    )
    classes = scope.get_unique_variable_name("classes")
    container.add_initializer(
        classes, TensorProto.INT64, [n_classes], np.asarray(op.classes_, dtype=np.int64)
    )
    container.add_node(
        "Gather",
        [classes, index],
        operator.outputs[0].full_name,
        axis=0,
        name=scope.get_unique_operator_name("G"),
    )


def _torch_head_graph(est: Any, opset: int) -> Any:
    """A torch head (its standardisation, network and softmax) exported with ``torch.onnx``."""
    import copy

    import torch

    frames = est._input_kind == "frames"
    net = _exportable_attention(copy.deepcopy(est.module_))
    head = _FrameHead(est, net) if frames else _PooledHead(net)
    n = int(est.n_features_in_)
    if frames:
        example: tuple[Any, ...] = (torch.randn(1, 40, n),)
        names, dynamic = ["frames"], {"frames": {1: "n_frames"}}
    else:
        example = (torch.randn(2, n),)
        names, dynamic = ["features"], {"features": {0: "n"}, "est_proba": {0: "n"}}
    return _torch_export(head, example, names, ["est_proba"], dynamic, opset)


def _torch_export(
    module: Any,
    example: tuple[Any, ...],
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> Any:
    """``torch.onnx.export`` (the TorchScript tracer: shape arithmetic written as tensor operations traces
    into dynamic ONNX shapes) to an in-memory ``ModelProto``."""
    import onnx
    import torch

    buf = io.BytesIO()
    module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # fused transformer kernels have no ONNX form
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy-exporter deprecation and tracer notes
            torch.onnx.export(
                module, example, buf, input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                opset_version=opset, dynamo=False, do_constant_folding=True,
            )  # fmt: skip
    except torch.onnx.errors.OnnxExporterError as exc:
        raise ParameterError(
            f"torch.onnx cannot export {type(module).__name__} at opset {opset}: {exc}"
        ) from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return onnx.load_from_string(buf.getvalue())


def _PooledHead(module: Any) -> Any:
    """``softmax(module(x))`` for a pooled-vector head."""
    import torch

    class PooledHead(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return torch.softmax(self.net(x), dim=1)

    return PooledHead(module)


def _exportable_attention(net: Any) -> Any:
    """``net`` with every ``nn.MultiheadAttention`` replaced by the same computation written with ``-1``
    reshapes: torch's own multiplies Python sizes (``bsz * tgt_len``), which the tracer records as constants,
    so a traced graph would only take the example's sequence length."""
    import math

    import torch
    import torch.nn.functional as F

    class ExportMHA(torch.nn.Module):
        def __init__(self, mha: Any) -> None:
            super().__init__()
            self.mha = mha
            # what TransformerEncoder(Layer).forward reads before choosing its (disabled) fast path
            self.batch_first = mha.batch_first
            self.in_proj_weight, self.in_proj_bias = mha.in_proj_weight, mha.in_proj_bias
            self.out_proj, self._qkv_same_embed_dim, self.num_heads = (
                mha.out_proj,
                mha._qkv_same_embed_dim,
                mha.num_heads,
            )

        def forward(
            self, query: Any, key: Any, value: Any, key_padding_mask: Any = None, need_weights: bool = True,
            attn_mask: Any = None, average_attn_weights: bool = True, is_causal: bool = False,
        ) -> tuple[Any, None]:  # fmt: skip
            m = self.mha
            if not m.batch_first or attn_mask is not None or m.bias_k is not None or m.add_zero_attn:
                raise ParameterError("only batch-first attention without attn_mask / bias_kv is exported")
            e, heads = m.embed_dim, m.num_heads
            if m._qkv_same_embed_dim:
                wq, wk, wv = m.in_proj_weight.chunk(3)
            else:
                wq, wk, wv = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
            bq, bk, bv = m.in_proj_bias.chunk(3) if m.in_proj_bias is not None else (None, None, None)
            b = query.shape[0]

            def split(x: Any, w: Any, bias: Any) -> Any:
                return F.linear(x, w, bias).reshape(b, -1, heads, e // heads).transpose(1, 2)

            q, k, v = split(query, wq, bq), split(key, wk, bk), split(value, wv, bv)
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(e // heads)
            if key_padding_mask is not None:
                if key_padding_mask.dtype == torch.bool:
                    scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
                else:
                    scores = scores + key_padding_mask[:, None, None, :]
            out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, -1, e)
            return self.out_proj(out), None

    for name, child in list(net.named_children()):
        if isinstance(child, torch.nn.MultiheadAttention):
            setattr(net, name, ExportMHA(child))
        else:
            _exportable_attention(child)
    return net


def _FrameHead(est: Any, net: Any) -> Any:
    """One clip's frames ``[1, T, F]`` -> ``pool_frames`` (the head's ``frame_pool``) -> padding to the head's
    minimum length with a mask -> network -> softmax."""
    import torch

    factor = int(getattr(est, "frame_pool", 1))
    min_len = int(getattr(est, "_min_len", 1))

    class FrameHead(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            t = torch._shape_as_tensor(x)[1]
            d = x.shape[2]
            if factor > 1:  # means of consecutive groups of `factor` frames, the last group shorter
                groups = (t + factor - 1) // factor
                padded = torch.cat([x, torch.zeros(1, factor - 1, d)], dim=1)[:, : groups * factor]
                sums = padded.reshape(1, -1, factor, d).sum(dim=2)
                counts = torch.clamp(t - torch.arange(groups) * factor, max=factor).to(x.dtype)
                x = sums / counts[None, :, None]
                t = groups
            total = torch.clamp(t, min=min_len)
            x = torch.cat([x, torch.zeros(1, min_len, d)], dim=1)[:, :total]
            mask = (torch.arange(total) < t)[None, :]
            return torch.softmax(self.net(x, mask), dim=1)

    return FrameHead(net)


# ------------------------------------------------------------------------------------------------ Whisper
def _whisper_front_graph(model: Any, opset: int, *, frames: bool) -> Any:
    """The Whisper front end from ``waveform [1, n]`` to ``features [1, d]`` (or ``frames [1, T, F]``)."""
    import torch

    ex = model.extractor
    encoder = ex._load()  # the extractor's own encoder (float32, CPU): the weights its features came from
    card = model.card["extractor"]
    default = tuple(card["default_layers"]) if card.get("default_layers") is not None else None
    if frames:
        stored = card.get("frame_layers")
        labels = list(stored) if stored is not None else list(range(ex.n_layers))
        view = model.view
        if view.all_layers:
            layers = labels
        elif view.layers is not None:
            layers = list(view.layers)
        else:
            layers = list(default) if default is not None and set(default) <= set(labels) else labels
    else:
        view = model.view
        layers = (
            list(range(ex.n_layers))
            if view.all_layers
            else list(view.layers if view.layers is not None else default or range(ex.n_layers))
        )
    module = _WhisperFrontEnd(ex, encoder, layers, frames=frames)
    n = 3 * _SR + 123
    out = "frames" if frames else "features"
    dynamic = {"waveform": {1: "n_samples"}}
    if frames:
        dynamic[out] = {1: "n_frames"}
    return _torch_export(module, (torch.randn(1, n) * 0.1,), ["waveform"], [out], dynamic, opset)


def _WhisperFrontEnd(ex: Any, encoder: Any, layers: list[int], *, frames: bool) -> Any:
    """Whisper's log-mel, encoder and pooling for one clip, as :class:`WhisperExtractor` computes them.

    All shape arithmetic is tensor arithmetic, so the traced graph takes any clip length.
    """
    import torch
    import torch.nn.functional as F

    from sertool.features.whisper import HOP, N_FFT, N_SAMPLES, _mel_filters

    n_mels = int(ex._n_mels)
    max_mel = 2 * int(ex._max_positions)
    if ex.mode == "trimmed":
        t_fixed = None
    elif ex.mode == "padded30":
        t_fixed = max_mel
    else:
        t_fixed = min(max_mel, 2 * int(np.ceil(ex._window_s * _SR / HOP / 2)))
    # the periodic Hann window times the DFT basis (real rows, then imaginary), in float64 then rounded
    k = np.arange(N_FFT // 2 + 1)[:, None]
    t = np.arange(N_FFT)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    angle = 2 * np.pi * ((k * t) % N_FFT) / N_FFT
    basis = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])[:, None, :].astype(np.float32)
    filters = np.ascontiguousarray(_mel_filters(n_mels).T, dtype=np.float32)  # (n_mels, 201)
    bins = N_FFT // 2 + 1
    half = N_FFT // 2

    class WhisperFrontEnd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.register_buffer("basis", torch.from_numpy(basis))
            self.register_buffer("filters", torch.from_numpy(filters))

        def log_mel(self, y: Any, n: Any) -> Any:
            # the reference input length: >= n + n_fft, a multiple of the hop, at most 30 s
            length = torch.clamp((n + N_FFT + HOP - 1) // HOP * HOP, max=N_SAMPLES)
            x = torch.cat([y, torch.zeros(1, N_FFT + HOP)], dim=1)[:, :length]
            z = torch.cat(
                [x[:, 1 : half + 1].flip(-1), x, x[:, length - half - 1 : length - 1].flip(-1)], dim=1
            )
            spec = F.conv1d(z[:, None, :], self.basis, stride=HOP)  # (1, 2 * bins, length / hop + 1)
            n_frames = length // HOP
            power = (spec[:, :bins] ** 2 + spec[:, bins:] ** 2)[:, :, :n_frames]
            logm = torch.log10(torch.clamp(torch.matmul(self.filters, power), min=1e-10))
            top = logm.amax(dim=(1, 2))
            logm = (torch.maximum(logm, top - 8.0) + 4.0) / 4.0
            return logm, top

        def forward(self, waveform: Any) -> Any:
            y = waveform[:, :N_SAMPLES]
            n = torch._shape_as_tensor(y)[1]
            logm, top = self.log_mel(y, n)
            valid_mel = torch.clamp((n + HOP - 1) // HOP, min=1, max=max_mel)
            valid_enc = (valid_mel + 1) // 2
            if t_fixed is None:
                mel = logm[:, :, : valid_mel + valid_mel % 2]
            else:  # frames past the reference input are silence (the clamp floor of the 30 s input)
                fill = (torch.clamp(top - 8.0, min=-10.0) + 4.0) / 4.0
                mel = torch.cat([logm, fill[:, None, None].expand(1, n_mels, t_fixed)], dim=2)[:, :, :t_fixed]
                valid_enc = torch.clamp(valid_enc, max=t_fixed // 2)
            enc = self.encoder
            h = F.gelu(enc.conv1(mel))
            h = F.gelu(enc.conv2(h)).permute(0, 2, 1)
            t_enc = torch._shape_as_tensor(h)[1]
            h = h + enc.embed_positions.weight[:t_enc]
            states = [h]
            for layer in enc.layers:
                o = layer(h, None)
                h = o[0] if isinstance(o, tuple) else o
                states.append(h)
            states[-1] = enc.layer_norm(h)
            if frames:
                sel = torch.cat([states[i][:, :valid_enc] for i in layers], dim=2)
                return sel.to(torch.float16).to(torch.float32)  # the feature cache stores frames as float16
            return torch.cat([states[i][:, :valid_enc].mean(dim=1) for i in layers], dim=1)

    return WhisperFrontEnd()


# ------------------------------------------------------------------------------------------------ mfcc40
def _mfcc40_front_graph(model: Any, opset: int, *, frames: bool) -> Any:
    """:class:`~sertool.features.handcrafted.Mfcc40` from ``waveform [1, n]`` to ``features [1, 2 n_mfcc]``
    (mean | std over frames) or ``frames [1, T, n_mfcc]``.

    The extractor's steps, in ONNX operators: skip ``offset`` seconds (from the start when the clip is not
    longer), crop / zero-pad to ``crop`` seconds, centre with 1024 zeros on each side, the STFT op in float64
    (n_fft 2048, hop 512, periodic Hann: librosa's float64 transform, rounded to complex64 as librosa stores
    it), power, the 128-band Slaney mel bank, ``power_to_db`` (``10 log10(max(S, 1e-10))``, floor at the clip's
    maximum minus 80 dB), the orthonormal DCT-II's first ``n_mfcc`` rows.
    """
    import librosa
    from onnx import TensorProto, helper, numpy_helper

    ex = model.extractor
    sr = int(ex.sr)
    n_fft, hop = 2048, 512
    n_mfcc = int(ex.n_mfcc)
    window = librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float64)
    mel = np.ascontiguousarray(np.asarray(ex._mel128, dtype=np.float32).T)  # (1025, 128)
    n_mels = mel.shape[1]
    i = np.arange(n_mels)[:, None]
    k = np.arange(n_mfcc)[None, :]
    dct = np.cos(np.pi * k * (2 * i + 1) / (2 * n_mels)) * np.where(
        k == 0, np.sqrt(1 / n_mels), np.sqrt(2 / n_mels)
    )

    def const(name: str, value: Any, dtype: Any = np.int64) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    def reduce(op: str, x: str, out: str, axes: list[int] | None, *, keepdims: int) -> Any:
        if axes is None:
            return helper.make_node(op, [x], [out], keepdims=keepdims)
        if opset >= 18:  # axes became an input of these reductions in opset 18
            name = f"{out}_axes"
            inits.append(const(name, axes))
            return helper.make_node(op, [x, name], [out], keepdims=keepdims)
        return helper.make_node(op, [x], [out], axes=axes, keepdims=keepdims)

    inits = [
        const("one", [1]),
        const("zero", [0]),
        const("offset", [round(ex.offset * sr)]),
        const("big", [np.iinfo(np.int64).max]),
        const("centre", [0, n_fft // 2, 0, n_fft // 2]),
        const("axis2", [2]),
        const("hop", hop),
        const("window", window, np.float64),
        const("mel", mel, np.float32),
        const("amin", 1e-10, np.float32),
        const("ten_over_ln10", 10.0 / np.log(10.0), np.float32),
        const("top_db", 80.0, np.float32),
        const("dct", dct, np.float32),
    ]
    nodes = [
        helper.make_node("Shape", ["waveform"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["n"], axis=0),
        helper.make_node("Less", ["offset", "n"], ["skip"]),  # a clip not longer than the offset: from 0
        helper.make_node("Where", ["skip", "offset", "zero"], ["start"]),
        helper.make_node("Slice", ["waveform", "start", "big", "one"], ["after"]),
    ]
    seg = "after"
    if ex.crop is not None:
        crop = round(ex.crop * sr)
        inits += [const("crop", [crop]), const("zeros3", [0, 0, 0])]
        nodes += [
            helper.make_node("Slice", ["after", "zero", "crop", "one"], ["cropped"]),
            helper.make_node("Shape", ["cropped"], ["cshape"]),
            helper.make_node("Gather", ["cshape", "one"], ["clen"], axis=0),
            helper.make_node("Sub", ["crop", "clen"], ["short"]),
            helper.make_node("Concat", ["zeros3", "short"], ["pads"], axis=0),
            helper.make_node("Pad", ["cropped", "pads"], ["segment"], mode="constant"),
        ]
        seg = "segment"
    nodes += [
        helper.make_node("Pad", [seg, "centre"], ["centred"], mode="constant"),
        helper.make_node("Cast", ["centred"], ["centred64"], to=TensorProto.DOUBLE),
        helper.make_node("Unsqueeze", ["centred64", "axis2"], ["signal"]),
        helper.make_node("STFT", ["signal", "hop", "window"], ["stft64"], onesided=1),  # (1, T, 1025, 2)
        helper.make_node("Cast", ["stft64"], ["stft"], to=TensorProto.FLOAT),  # librosa stores complex64
        reduce("ReduceSumSquare", "stft", "power", [3], keepdims=0),
        helper.make_node("MatMul", ["power", "mel"], ["melspec"]),  # (1, T, 128)
        helper.make_node("Max", ["melspec", "amin"], ["floored"]),
        helper.make_node("Log", ["floored"], ["ln"]),
        helper.make_node("Mul", ["ln", "ten_over_ln10"], ["db"]),
        reduce("ReduceMax", "db", "top", None, keepdims=0),
        helper.make_node("Sub", ["top", "top_db"], ["floor_db"]),
        helper.make_node("Max", ["db", "floor_db"], ["logmel"]),
        helper.make_node("MatMul", ["logmel", "dct"], ["mfcc"]),  # (1, T, n_mfcc)
    ]
    if frames:
        nodes.append(helper.make_node("Identity", ["mfcc"], ["frames"]))
        out = helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, "n_frames", n_mfcc])
    else:
        nodes += [
            reduce("ReduceMean", "mfcc", "mean3", [1], keepdims=1),
            helper.make_node("Sub", ["mfcc", "mean3"], ["centred_mfcc"]),
            helper.make_node("Mul", ["centred_mfcc", "centred_mfcc"], ["sq"]),
            reduce("ReduceMean", "sq", "var", [1], keepdims=0),
            helper.make_node("Sqrt", ["var"], ["std"]),
            reduce("ReduceMean", "mfcc", "mean", [1], keepdims=0),
            helper.make_node("Concat", ["mean", "std"], ["features"], axis=1),
        ]
        out = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 2 * n_mfcc])
    graph = helper.make_graph(
        nodes, "mfcc40", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, "n_samples"])], [out],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# ------------------------------------------------------------------------------------------------ assembly
def _rename_output(proto: Any, old: str, new: str) -> None:
    """Rename graph output ``old`` to ``new`` (the producing node's output and every consumer)."""
    graph = proto.graph
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for out in graph.output:
        if out.name == old:
            out.name = new


def _opset_of(proto: Any, domain: str = "") -> int:
    """The opset version ``proto`` imports for ``domain`` (the default domain also as ``ai.onnx``; 0: none)."""
    names = {domain, "ai.onnx"} if not domain else {domain}
    return max((int(o.version) for o in proto.opset_import if o.domain in names), default=0)


def _default_opset(proto: Any, version: int) -> Any:
    """``proto`` converted to ``version`` of the default domain when it imports an older one
    (:func:`onnx.version_converter.convert_version`; other domains are left as they are)."""
    from onnx import version_converter

    if 0 < _opset_of(proto) < version:
        return version_converter.convert_version(proto, version)
    return proto


def _merge(front: Any, clf: Any) -> Any:
    """One graph: the front end's output feeds the classifier's input."""
    import onnx
    from onnx import compose

    front_out = front.graph.output[0].name
    clf_in = clf.graph.input[0].name
    clf = _default_opset(clf, _opset_of(front))  # one opset per domain: the classifier's up to the front's
    front = compose.add_prefix(front, "fe_", rename_inputs=False, rename_outputs=False)
    clf = compose.add_prefix(clf, "clf_", rename_inputs=False, rename_outputs=False)
    ir = max(front.ir_version, clf.ir_version)
    front.ir_version = clf.ir_version = ir
    merged = compose.merge_models(front, clf, io_map=[(front_out, clf_in)])
    onnx.checker.check_model(merged)
    return merged


def _finish(proto: Any, model: Any, kind: str, why_not: str) -> Any:
    """Map ``est_proba`` to the card's class order, add ``label``, prune, and write the metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sertool import __version__

    classes = [str(c) for c in model.classes]
    codes = sorted(classes)
    est_classes = np.asarray(model.estimator.classes_, dtype=int)
    mapping = np.zeros((len(est_classes), len(classes)), dtype=np.float32)
    for row, code in enumerate(est_classes):
        mapping[row, classes.index(codes[code])] = 1.0
    sorted_cols = np.asarray([classes.index(c) for c in codes], dtype=np.int64)
    g = proto.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(mapping, "sertool_class_map"),
            numpy_helper.from_array(sorted_cols, "sertool_sorted_columns"),
            numpy_helper.from_array(np.asarray(codes, dtype=object), "sertool_sorted_names"),
        ]
    )
    g.node.extend(
        [
            helper.make_node(
                "MatMul", ["est_proba", "sertool_class_map"], ["probabilities"], name="class_order"
            ),
            helper.make_node(
                "Gather", ["probabilities", "sertool_sorted_columns"], ["sertool_p_sorted"], axis=1
            ),
            helper.make_node("ArgMax", ["sertool_p_sorted"], ["sertool_best"], axis=1, keepdims=0),
            helper.make_node("Gather", ["sertool_sorted_names", "sertool_best"], ["label"], axis=0),
        ]
    )
    batch = "n" if kind == "features" else 1
    del g.output[:]
    g.output.extend(
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, len(classes)]),
            helper.make_tensor_value_info("label", TensorProto.STRING, [batch]),
        ]
    )
    _prune(proto)
    ex = model.card["extractor"]
    meta = {
        "sertool.export_format": str(EXPORT_FORMAT),
        "sertool.version": __version__,
        "sertool.input": kind,
        "sertool.classes": json.dumps(classes),
        "sertool.model": str(model.card["model"]),
        "sertool.features": str(model.card["features"]),
        "sertool.extractor": json.dumps(
            {k: ex.get(k) for k in ("name", "version", "params", "key", "build_params")}, default=str
        ),
        "sertool.label_scheme": str(model.card.get("label_scheme")),
        "sertool.trained_on": json.dumps(model.card.get("trained_on"), default=str),
        "sertool.sample_rate": str(_SR),
    }
    if kind == "waveform":
        steps = "STFT, mel, power_to_db, DCT" if ex["name"] == "mfcc40" else "log-mel, encoder"
        pooled = "frames" if model.card["input"] == "frames" else "pooled over the clip"
        meta["sertool.feature_step"] = f"in the graph: {steps}, {pooled}, view {model.card['features']}"
    else:
        meta["sertool.feature_step"] = (
            why_not
            or f"{ex['name']}: computed by sertool (TrainedModel.features, view {model.card['features']})"
        )
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "sertool", __version__
    proto.doc_string = (
        f"sertool {model.card['model']} on {model.card['features']}: {kind} -> probabilities over "
        f"{', '.join(classes)}"
    )
    return onnx.shape_inference.infer_shapes(proto)


def _prune(proto: Any) -> None:
    """Drop nodes, initializers and value infos that no graph output depends on (e.g. skl2onnx's label)."""
    g = proto.graph
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    infos = [v for v in g.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(infos)
