"""Signal transforms in front of an extractor: preprocessing (every clip) and augmentation (training only).

Two kinds, one wrapper:

* **Preprocessing** (``denoise``, ``trim``, ``silence``) is applied to every clip, training and test alike. It
  is deterministic and per clip (it learns nothing from other clips), so applying it to test audio leaks
  nothing. It is an extractor parameter: ``--extractor-params '{"handcrafted94": {"preprocess": ["denoise",
  "trim"]}}'`` gives a cache entry of its own (the list is part of the key) and a saved model re-applies it.
* **Augmentation** (``awgn``, ``stretch``, ``pitch``, ``gain``, ``noise``; audiomentations) makes extra
  *copies* of training clips. :func:`augmented_extractors` builds one extractor per copy, each a cache entry
  ``<name>.aug/...`` keyed by the base extractor, the augmentation and the copy number; the bench runner
  (``run_bench(augment=...)``) adds the copies of a fold's training utterances to that fold's training data
  only. Test audio is never augmented.

A copy is reproducible: its random draws are seeded from the clip's own samples, the copy number and the
augmentation's seed, so the same clip gives the same augmented features in any process, order or machine.

Specs are a name or a dict ``{"name": "awgn", "min_snr_db": 15}``; the parameters recorded in the key are the
defaults merged with the overrides, so changing a default of the library would change the key too.
"""

from __future__ import annotations

import random
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sertool.exceptions import ParameterError
from sertool.features.base import Extractor

__all__ = [
    "AUGMENTATIONS",
    "PREPROCESSORS",
    "AugmentSpec",
    "TransformedExtractor",
    "augmented_extractors",
    "parse_augment",
    "parse_preprocess",
    "with_preprocessing",
]

#: preprocessing name -> default parameters
PREPROCESSORS: dict[str, dict[str, Any]] = {
    # noisereduce spectral gating (non-stationary by default, as noisereduce recommends for speech)
    "denoise": {"stationary": False, "prop_decrease": 1.0},
    # leading and trailing silence below ``top_db`` under the clip's peak (librosa.effects.trim)
    "trim": {"top_db": 30.0},
    # every non-speech stretch below ``top_db`` under the peak removed (librosa.effects.split, concatenated)
    "silence": {"top_db": 30.0},
}

#: augmentation name -> default parameters (audiomentations' names and ranges)
AUGMENTATIONS: dict[str, dict[str, Any]] = {
    "awgn": {"min_snr_db": 15.0, "max_snr_db": 30.0},  # additive white Gaussian noise at a random SNR
    "stretch": {"min_rate": 0.8, "max_rate": 1.25},  # time stretch (length changes)
    "pitch": {"min_semitones": -4.0, "max_semitones": 4.0},
    "gain": {"min_gain_db": -12.0, "max_gain_db": 12.0},
    "noise": {"min_snr_db": 10.0, "max_snr_db": 30.0},  # coloured background noise (audiomentations)
}


def _spec(item: str | Mapping[str, Any], table: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    if isinstance(item, str):
        name, given = item, {}
    elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
        name, given = item["name"], {k: v for k, v in item.items() if k != "name"}
    else:
        raise ParameterError(f"{what} {item!r}: expected a name or a dict with a 'name'")
    if name not in table:
        raise ParameterError(f"unknown {what} {name!r}; known: {', '.join(table)}")
    unknown = sorted(set(given) - set(table[name]))
    if unknown:
        raise ParameterError(f"{what} {name!r}: unknown parameters {unknown}; known: {sorted(table[name])}")
    params = {**table[name], **given}
    for k, v in params.items():
        if not isinstance(v, bool) and not isinstance(v, int | float):
            raise ParameterError(f"{what} {name!r}: parameter {k}={v!r} must be a number or a boolean")
    return {"name": name, **params}


def parse_preprocess(items: str | Sequence[str | Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Normalise a preprocessing list (``"denoise,trim"``, ``["denoise", {"name": "trim", "top_db": 40}]``).

    Returns
    -------
    list of dict
        One ``{"name": ..., **params}`` per step, in order, defaults filled in.
    """
    if items is None:
        return []
    if isinstance(items, str):
        items = [s.strip() for s in items.split(",") if s.strip()]
    return [_spec(it, PREPROCESSORS, "preprocessing step") for it in items]


@dataclass(frozen=True)
class AugmentSpec:
    """What augmentation a bench run adds to training parts.

    Attributes
    ----------
    transforms : list of dict
        Augmentations (``{"name": ..., **params}``). One is always applied; with several, each copy applies
        one of them chosen at random (audiomentations ``OneOf``).
    copies : int
        Augmented versions extracted per clip. Without ``balance`` every training clip gets all of them.
    balance : bool
        Add copies only to reach the largest class's count in each fold's training data (the combined-corpus
        study's balancing), using at most ``copies`` per clip.
    seed : int
        Seed of the augmentation draws (with the clip's samples and the copy number).
    """

    transforms: list[dict[str, Any]] = field(default_factory=list)
    copies: int = 1
    balance: bool = False
    seed: int = 0

    @property
    def tag(self) -> str:
        """Short label for leaderboards: ``aug-awgn``, ``aug-stretch-pitch-x3``, ``aug-...-bal``."""
        t = "aug-" + "-".join(s["name"] for s in self.transforms)
        if self.copies != 1:
            t += f"-x{self.copies}"
        return t + ("-bal" if self.balance else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (recorded with every unit)."""
        return {
            "transforms": self.transforms,
            "copies": self.copies,
            "balance": self.balance,
            "seed": self.seed,
        }


def parse_augment(value: str | Mapping[str, Any] | AugmentSpec | None) -> AugmentSpec | None:
    """Parse ``"awgn"``, ``"stretch,pitch,gain,noise"`` or ``{"transforms": [...], "copies": 2, "balance":
    true, "seed": 0}`` into an :class:`AugmentSpec` (``None``: no augmentation)."""
    if value is None or isinstance(value, AugmentSpec):
        return value
    if isinstance(value, str):
        value = {"transforms": [s.strip() for s in value.split(",") if s.strip()]}
    if not isinstance(value, Mapping):
        raise ParameterError(f"augment must be a name list or a dict, got {value!r}")
    unknown = sorted(set(value) - {"transforms", "copies", "balance", "seed"})
    if unknown:
        raise ParameterError(f"augment: unknown keys {unknown}; known: transforms, copies, balance, seed")
    items = value.get("transforms") or []
    if isinstance(items, str):
        items = [s.strip() for s in items.split(",") if s.strip()]
    transforms = [_spec(it, AUGMENTATIONS, "augmentation") for it in items]
    if not transforms:
        raise ParameterError("augment: name at least one transform, e.g. 'awgn'")
    copies, seed, balance = value.get("copies", 1), value.get("seed", 0), value.get("balance", False)
    if not isinstance(copies, int) or isinstance(copies, bool) or not 1 <= copies <= 50:
        raise ParameterError(f"augment: copies must be an integer in 1..50, got {copies!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParameterError(f"augment: seed must be an integer, got {seed!r}")
    if not isinstance(balance, bool):
        raise ParameterError(f"augment: balance must be true or false, got {balance!r}")
    return AugmentSpec(transforms, copies, balance, seed)


# ---------------------------------------------------------------------------------------------- applying

_GLOBAL_RNG = threading.Lock()  # audiomentations draws from the global ``random`` and ``numpy.random``


def _preprocess(y: np.ndarray, sr: int, steps: Sequence[dict[str, Any]]) -> np.ndarray:
    for step in steps:
        name = step["name"]
        if name == "denoise":
            import noisereduce

            y = noisereduce.reduce_noise(
                y=y, sr=sr, stationary=bool(step["stationary"]), prop_decrease=float(step["prop_decrease"]),
                n_jobs=1, use_tqdm=False,
            )  # fmt: skip
        elif name == "trim":
            import librosa

            y, _ = librosa.effects.trim(y, top_db=float(step["top_db"]))
        elif name == "silence":
            import librosa

            spans = librosa.effects.split(y, top_db=float(step["top_db"]))
            if len(spans):
                y = np.concatenate([y[a:b] for a, b in spans])
        y = np.ascontiguousarray(y, dtype=np.float32)
    return y


def _audiomentation(spec: dict[str, Any]) -> Any:
    import audiomentations as am

    p = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    if name == "awgn":
        return am.AddGaussianSNR(**p, p=1.0)
    if name == "stretch":
        return am.TimeStretch(**p, leave_length_unchanged=False, p=1.0)
    if name == "pitch":
        return am.PitchShift(**p, p=1.0)
    if name == "gain":
        return am.Gain(**p, p=1.0)
    return am.AddColorNoise(**p, p=1.0)  # "noise"


def _augment(y: np.ndarray, sr: int, spec: AugmentSpec, copy: int, pipeline: Any) -> np.ndarray:
    seed = zlib.crc32(np.ascontiguousarray(y, dtype=np.float32).tobytes())
    seed = (seed * 1_000_003 + copy * 7919 + spec.seed) % (2**32)
    with _GLOBAL_RNG:
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            random.seed(seed)
            np.random.seed(seed)
            out = pipeline(samples=np.ascontiguousarray(y, dtype=np.float32), sample_rate=sr)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
    out = np.ascontiguousarray(out, dtype=np.float32)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    return out / peak if peak > 1.0 else out  # a gain or noise copy must stay a valid [-1, 1] signal


class TransformedExtractor(Extractor):
    """An extractor applied to preprocessed and/or augmented audio; everything else is the base's.

    Parameters
    ----------
    base : Extractor
        The extractor whose features are computed.
    preprocess : sequence of dict
        Normalised preprocessing steps (:func:`parse_preprocess`), applied to every clip first.
    augment : AugmentSpec, optional
        Augmentation applied after preprocessing (the copy ``copy``).
    copy : int
        Which augmented copy this extractor computes (0-based).
    """

    def __init__(
        self,
        base: Extractor,
        *,
        preprocess: Sequence[dict[str, Any]] = (),
        augment: AugmentSpec | None = None,
        copy: int = 0,
    ) -> None:
        if isinstance(base, TransformedExtractor):
            raise ParameterError("TransformedExtractor: wrap the plain extractor once")
        self.base = base
        self.preprocess = [dict(s) for s in preprocess]
        self.augment = augment
        self.copy = int(copy)
        # a per-instance name, as whisper-* has: augmented copies live in their own cache folder
        self.name = base.name if augment is None else f"{base.name}.aug"  # type: ignore[misc]
        self.version = base.version  # type: ignore[misc]
        for attr in ("sr", "n_layers", "default_layers", "parallel_processes", "thread_safe", "fork_safe"):
            setattr(self, attr, getattr(base, attr))
        self._pipeline: Any = None

    def __getattr__(self, item: str) -> Any:  # frame_layers, size, weights, ... of the base
        if item == "base" or item.startswith("__"):
            raise AttributeError(item)
        return getattr(self.base, item)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pipeline"] = None  # rebuilt where it runs
        return state

    def params(self) -> dict[str, Any]:
        """The base's parameters plus the preprocessing steps (and the augmentation and copy number)."""
        out = {**self.base.params(), "preprocess": self.preprocess}
        if self.augment is not None:
            out["augment"] = {"transforms": self.augment.transforms, "seed": self.augment.seed}
            out["copy"] = self.copy
        return out

    @property
    def dim(self) -> int:
        return self.base.dim

    def outputs(self) -> tuple[str, ...]:
        return self.base.outputs()

    def decode_workers(self, jobs: int) -> int:
        return self.base.decode_workers(jobs)

    def warm_up(self) -> None:
        self.base.warm_up()

    def transform(self, y: np.ndarray) -> np.ndarray:
        """Preprocess, then (for an augmented copy) augment one signal at :attr:`sr`."""
        y = _preprocess(y, self.sr, self.preprocess) if self.preprocess else y
        if self.augment is None:
            return y
        if self._pipeline is None:
            import audiomentations as am

            parts = [_audiomentation(s) for s in self.augment.transforms]
            self._pipeline = parts[0] if len(parts) == 1 else am.OneOf(parts)
        return _augment(y, self.sr, self.augment, self.copy, self._pipeline)

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return self.base.extract(self.transform(y))

    def extract_batch(self, signals: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return self.base.extract_batch([self.transform(y) for y in signals])


def with_preprocessing(base: Extractor, preprocess: Any) -> Extractor:
    """``base`` itself when ``preprocess`` is empty, else a :class:`TransformedExtractor` applying it."""
    steps = parse_preprocess(preprocess)
    return TransformedExtractor(base, preprocess=steps) if steps else base


def augmented_extractors(extractor: Extractor, augment: AugmentSpec) -> list[TransformedExtractor]:
    """One extractor per augmented copy of ``extractor`` (keeping its preprocessing, which runs first)."""
    if isinstance(extractor, TransformedExtractor):
        if extractor.augment is not None:
            raise ParameterError("augmented_extractors: the extractor is an augmented copy already")
        base, pre = extractor.base, extractor.preprocess
    else:
        base, pre = extractor, []
    return [
        TransformedExtractor(base, preprocess=pre, augment=augment, copy=k) for k in range(augment.copies)
    ]
