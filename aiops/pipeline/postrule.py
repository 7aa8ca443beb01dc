"""Post-rules: from calibrated scores to a per-point alert condition.

Scoring and deciding are separate layers (Merlion's post-processing): the detector gives
a calibrated score in ``[0, 1]``; :class:`HitWindow` applies the threshold and asks for
``min_hits`` hits among the last ``window`` points of the series. What happens next
(``for``, suppression, resolution) belongs to the alert state machine.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from aiops.pipeline.detector import grown
from aiops.state.rulestate import Live, adopt
from aiops.types import BoolArray, FloatArray, IntArray

__all__ = ["MAX_WINDOW", "HitWindow"]

#: Hits are kept as a bit history in one uint64 per series.
MAX_WINDOW = 64

_ONE = np.uint64(1)
# Bit masks and shifts of the SWAR population count (Hacker's Delight, section 5-1).
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_S1, _S2, _S4, _S56 = np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(56)


@numba.njit(cache=True, nogil=True)
def _popcount(x: np.uint64) -> int:
    x = x - ((x >> _S1) & _M1)
    x = (x & _M2) + ((x >> _S2) & _M2)
    x = (x + (x >> _S4)) & _M4
    return int((x * _H01) >> _S56)


@numba.njit(cache=True, nogil=True)
def _step_points(
    idx: IntArray,
    scores: FloatArray,
    out: BoolArray,
    history: np.ndarray[Any, np.dtype[np.uint64]],
    threshold: float,
    mask: np.uint64,
    min_hits: int,
) -> None:
    """Record every point's hit in order; ``out[k]``: the condition after point ``k``."""
    for k in range(len(idx)):
        i = idx[k]
        hit = scores[k] >= threshold
        h = ((history[i] << _ONE) | (_ONE if hit else np.uint64(0))) & mask
        history[i] = h
        out[k] = hit if min_hits == 1 else _popcount(h) >= min_hits


class HitWindow:
    """Threshold, then at least ``min_hits`` hits among the last ``window`` points.

    ``window == min_hits`` asks for consecutive hits; ``min_hits == 1`` is the bare
    threshold. State is one 64-bit hit history per series.

    A call takes any number of points of any series; they are applied in order, so one
    call over a batch gives exactly what feeding its points one at a time gives.

    >>> hw = HitWindow(threshold=0.9, min_hits=2, window=3)
    >>> idx = np.zeros(5, dtype=np.int64)
    >>> [bool(hw.step(idx[:1], np.array([s]))[0]) for s in [0.95, 0.1, 0.99, 0.2, 0.1]]
    [False, False, True, False, False]
    >>> hw = HitWindow(threshold=0.9, min_hits=2, window=3)
    >>> hw.step(idx, np.array([0.95, 0.1, 0.99, 0.2, 0.1])).tolist()
    [False, False, True, False, False]
    """

    def __init__(self, *, threshold: float, min_hits: int = 1, window: int | None = None) -> None:
        window = min_hits if window is None else window
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if min_hits < 1:
            raise ValueError(f"min_hits must be at least 1, got {min_hits}")
        if not min_hits <= window <= MAX_WINDOW:
            raise ValueError(f"window must be in [min_hits, {MAX_WINDOW}], got {window}")
        self.threshold = threshold
        self.min_hits = min_hits
        self.window = window
        self._mask = np.uint64((1 << window) - 1)
        self._history = np.zeros(0, dtype=np.uint64)

    def reserve(self, n: int, limit: int | None = None) -> None:
        """Hold state for series ``0..n-1`` at least (new series start inactive, no hits).

        ``limit``: no more rows than that while ``n`` fits (:func:`grown`).
        """
        if n > len(self._history):
            extra = grown(len(self._history), n, limit) - len(self._history)
            self._history = np.concatenate([self._history, np.zeros(extra, dtype=np.uint64)])

    def step(self, idx: IntArray, scores: FloatArray) -> BoolArray:
        """Record the points' hits in order; return the condition at each point.

        ``idx`` (series indices, not negative) may repeat: a series' points are applied
        in the order they come.
        """
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        scores = np.ascontiguousarray(scores, dtype=np.float64)
        out = np.zeros(len(idx), dtype=bool)
        if len(idx) == 0:
            return out
        self.reserve(int(idx.max()) + 1)
        _step_points(
            idx, scores, out, self._history, float(self.threshold), self._mask, self.min_hits
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        """The hit histories."""
        return {"history": self._history.copy()}

    def state_views(self) -> dict[str, Any]:
        """:meth:`state_dict` without copies: live arrays (see :mod:`aiops.state.rulestate`).

        :meth:`step` writes only the rows of the points it is given.
        """
        return {"history": Live(self._history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the hit histories."""
        self._history = adopt(state["history"], np.uint64)
