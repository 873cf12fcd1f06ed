"""``egemaps``: the 88 eGeMAPSv02 functionals through audEERING's ``opensmile`` package.

``opensmile`` (PyPI, MIT-style licence for the Python wrapper; the bundled openSMILE library is free for
research) runs offline: the feature-set configuration ships inside the wheel. It is an optional dependency:
this module always imports, and building the extractor without it raises :class:`ParameterError` with the
install command.

A clip for which openSMILE returns NaN/inf for any functional raises :class:`AudioError` (the runner reports
and skips it); values are never silently replaced.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sertool.exceptions import AudioError, ParameterError
from sertool.features.base import Extractor, register_extractor

__all__ = ["EGeMAPS"]


def _opensmile() -> Any:
    try:
        import opensmile
    except ImportError as exc:
        raise ParameterError(
            f"the egemaps extractor needs the 'opensmile' package ({exc}); install it with: pip install opensmile"
        ) from None
    return opensmile


class EGeMAPS(Extractor):
    """eGeMAPSv02 functionals (88 per clip) computed by openSMILE.

    Outputs
    -------
    ``"pooled"`` : float32, shape (88,)
        In the order of :attr:`feature_names`.

    Raises
    ------
    ParameterError
        At construction, when ``opensmile`` cannot be imported.
    """

    name = "egemaps"
    version = 1
    sr = 16000
    feature_set = "eGeMAPSv02"
    #: openSMILE runs single-threaded C code through ctypes; a forked worker builds its own ``Smile`` (the
    #: instance is tied to the process that built it, see :attr:`smile`), so workers may be forked.
    fork_safe = True

    def __init__(self) -> None:
        _opensmile()  # fail early and clearly
        self._smile: Any = None
        self._smile_pid = 0

    def params(self) -> dict[str, Any]:
        """See :meth:`Extractor.params`."""
        return {"feature_set": self.feature_set, "level": "functionals", "sr": self.sr}

    @property
    def dim(self) -> int:
        """88."""
        return 88

    @property
    def smile(self) -> Any:
        """The ``opensmile.Smile`` instance (built lazily, and again in a worker process: an instance a forked
        child inherits holds its parent's native state and is never used there)."""
        if self._smile is None or self._smile_pid != os.getpid():
            self._smile_pid = os.getpid()
            opensmile = _opensmile()
            self._smile = opensmile.Smile(
                feature_set=opensmile.FeatureSet.eGeMAPSv02,
                feature_level=opensmile.FeatureLevel.Functionals,
            )
        return self._smile

    @property
    def feature_names(self) -> list[str]:
        """Names of the 88 functionals, in output order."""
        return list(self.smile.feature_names)

    def extract(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """See :meth:`Extractor.extract`; returns ``{"pooled": (88,) float32}``.

        Raises
        ------
        AudioError
            openSMILE returned NaN or infinite values.
        """
        values = np.asarray(self.smile.process_signal(y, self.sr), dtype=np.float64)
        if values.shape != (1, 88):
            raise AudioError("<signal>", f"eGeMAPS returned shape {values.shape}, expected (1, 88)")
        bad = ~np.isfinite(values[0])
        if bad.any():
            names = [n for n, b in zip(self.feature_names, bad, strict=True) if b]
            raise AudioError(
                "<signal>", f"eGeMAPS produced NaN/inf for {int(bad.sum())} functionals: {names[:3]}"
            )
        return {"pooled": values[0].astype(np.float32)}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_smile"] = None  # rebuilt in the worker
        return state


@register_extractor("egemaps")
def _make_egemaps(name: str, **params: Any) -> EGeMAPS:
    if params:
        raise ParameterError(f"egemaps takes no parameters, got {sorted(params)}")
    return EGeMAPS()
