"""Post-rules: from calibrated scores to a per-point alert condition.

Scoring and deciding are separate layers (Merlion's post-processing): the detector gives
a calibrated score in ``[0, 1]``; :class:`HitWindow` applies the threshold and asks for
``min_hits`` hits among the last ``window`` points of the series. What happens next
(``for``, suppression, resolution) belongs to the alert state machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aiops.types import BoolArray, FloatArray, IntArray

__all__ = ["MAX_WINDOW", "HitWindow"]

#: Hits are kept as a bit history in one uint64 per series.
MAX_WINDOW = 64


class HitWindow:
    """Threshold, then at least ``min_hits`` hits among the last ``window`` points.

    ``window == min_hits`` asks for consecutive hits; ``min_hits == 1`` is the bare
    threshold. State is one 64-bit hit history per series.

    >>> hw = HitWindow(threshold=0.9, min_hits=2, window=3)
    >>> idx = np.zeros(5, dtype=np.int64)
    >>> [bool(hw.step(idx[:1], np.array([s]))[0]) for s in [0.95, 0.1, 0.99, 0.2, 0.1]]
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

    def _grow(self, n: int) -> None:
        if n > len(self._history):
            extra = max(n, 2 * len(self._history)) - len(self._history)
            self._history = np.concatenate([self._history, np.zeros(extra, dtype=np.uint64)])

    def step(self, idx: IntArray, scores: FloatArray) -> BoolArray:
        """One round (distinct series): record hits, return the condition per point."""
        if len(idx) and int(idx.max()) >= len(self._history):
            self._grow(int(idx.max()) + 1)
        hits = (scores >= self.threshold).astype(np.uint64)
        h = ((self._history[idx] << np.uint64(1)) | hits) & self._mask
        self._history[idx] = h
        if self.min_hits == 1:
            out: BoolArray = hits.astype(bool)
            return out
        return _popcount(h) >= self.min_hits

    def state_dict(self) -> dict[str, Any]:
        """The hit histories."""
        return {"history": self._history.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the hit histories."""
        self._history = np.asarray(state["history"], dtype=np.uint64).copy()


def _popcount(x: np.ndarray[Any, np.dtype[np.uint64]]) -> IntArray:
    out: IntArray = np.bitwise_count(x).astype(np.int64)
    return out
