"""Score calibration: turn a detector's raw anomaly score into a probability-like ``[0, 1]``.

A calibrated score ``p`` reads the same whatever the detector: about a fraction ``1 - p``
of ordinary points score at least as high (NAB's convention), so a threshold of 0.99
means roughly "one ordinary point in a hundred crosses it" for every detector.

- :func:`gaussian_score` maps a deviation in sigmas ``z >= 0`` to ``erf(z / sqrt(2))``,
  the two-sided normal probability of a smaller deviation. Detectors that produce a
  robust z-score use it directly.
- :class:`EmpiricalCalibrator` learns the distribution of a raw score per series (an
  empirical CDF over a sliding window) for raw scores with no known distribution, such
  as river's anomaly detectors.

Both are vectorized over series and the calibrator's state is plain arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aiops.types import FloatArray, IntArray

__all__ = ["EmpiricalCalibrator", "gaussian_score"]

# Abramowitz and Stegun, Handbook of Mathematical Functions, formula 7.1.26: erf(x) for
# x >= 0 with absolute error below 1.5e-7; numpy has no erf and scipy is optional here.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def gaussian_score(z: FloatArray) -> FloatArray:
    """``erf(z / sqrt(2))`` for deviations ``z >= 0`` in sigmas: 0 at 0, 0.9973 at 3.

    >>> np.round(gaussian_score(np.array([0.0, 1.0, 2.0, 3.0])), 4).tolist()
    [0.0, 0.6827, 0.9545, 0.9973]
    """
    x = np.abs(np.asarray(z, dtype=np.float64)) / math.sqrt(2.0)
    t = 1.0 / (1.0 + _AS_P * x)
    a1, a2, a3, a4, a5 = _AS_A
    poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))
    out: FloatArray = np.clip(1.0 - poly * np.exp(-x * x), 0.0, 1.0)
    return out


class EmpiricalCalibrator:
    """Per-series empirical CDF of the last ``window`` raw scores, with an exponential tail.

    The calibrated score of a raw value ``r`` is its mid-rank among the raw scores kept
    for the series, ``(#below + #equal / 2) / (n + 1)``: the share of recent ordinary
    points that scored lower. Above the largest kept value, where ranks run out, the
    tail is extrapolated as an exponential (as Merlion's ``AnomScoreCalibrator`` does):
    ``1 - (1 - n / (n + 1)) * exp(-(r - max) / s)``, with the tail scale ``s`` estimated
    from the gap between the median and the maximum of ``n`` exponential draws,
    ``(max - median) / ln(n / 2)``. So a raw score far above anything seen scores close
    to 1, and one just above the recent maximum about ``n / (n + 1)``. The map is
    monotone in ``r`` and needs no assumption about the raw score's distribution.
    A raw score above the window's maximum is learned as at most one tail scale above
    it (Huber-style clipping), so a short incident does not desensitize the next
    ``window`` points, while a lasting rise of the raw scores is still learned (the top
    grows by a tail scale per point). The price: an incident of ``k`` points stacks up to
    ``k`` tail scales, and later anomalies below that rank under those ``k`` values until
    they leave the window.

    Works well on: any raw score where higher means more anomalous, whatever its range
    or skew. Fails on: raw scores that saturate (a detector that clips to a constant
    loses the ranking among large values; calibration cannot restore it); the first
    ``min_count`` points of a series, which score 0 while the window fills.

    Cost: ``window`` floats per series; scoring a round of ``k`` points compares against
    ``k * window`` kept values (a few numpy passes); learning is O(1) per point.

    Parameters
    ----------
    window
        How many recent raw scores per series the CDF is built from.
    min_count
        Raw scores a series must have before it gets a non-zero calibrated score.

    >>> cal = EmpiricalCalibrator(window=8, min_count=4)
    >>> idx = np.zeros(1, dtype=np.int64)
    >>> for r in [0.1, 0.2, 0.15, 0.3, 0.25]:
    ...     cal.update(idx, np.array([r]))
    >>> np.round(cal.transform(np.zeros(3, dtype=np.int64), np.array([0.05, 0.2, 0.9])), 3).tolist()
    [0.0, 0.417, 0.999]
    """

    def __init__(self, *, window: int = 256, min_count: int = 20) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        if not 1 <= min_count <= window:
            raise ValueError(f"min_count must be in [1, window={window}], got {min_count}")
        self.window = window
        self.min_count = min_count
        self._n = 0
        self._buf = np.full((0, window), np.nan)
        self._pos = np.zeros(0, dtype=np.int64)
        self._count = np.zeros(0, dtype=np.int64)

    @property
    def n_series(self) -> int:
        """How many series the calibrator holds state for."""
        return self._n

    def grow(self, n: int) -> None:
        """Hold state for at least ``n`` series (capacity doubles, so growing is cheap)."""
        cap = len(self._pos)
        if n > cap:
            extra = max(n, 2 * cap) - cap
            self._buf = np.concatenate([self._buf, np.full((extra, self.window), np.nan)])
            self._pos = np.concatenate([self._pos, np.zeros(extra, dtype=np.int64)])
            self._count = np.concatenate([self._count, np.zeros(extra, dtype=np.int64)])
        self._n = max(self._n, n)

    def _tail(self, kept: FloatArray, n: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per row: the largest kept value and the exponential tail scale above it."""
        top = np.where(np.isnan(kept), -np.inf, kept).max(axis=1)
        scale = np.zeros(len(kept))
        some = n >= 2
        if some.any():
            med = np.nanmedian(kept[some], axis=1)
            scale[some] = (top[some] - med) / np.log(np.maximum(n[some] / 2.0, 2.0))
        return top, scale

    def transform(self, idx: IntArray, raw: FloatArray) -> FloatArray:
        """Calibrated scores of ``raw`` (series ``idx``), without learning them."""
        idx = np.asarray(idx, dtype=np.int64)
        raw = np.asarray(raw, dtype=np.float64)
        self.grow(int(idx.max()) + 1 if len(idx) else 0)
        kept = self._buf[idx]  # NaN where the window is not full yet: compares False
        n = self._count[idx].astype(np.float64)
        below = (kept < raw[:, None]).sum(axis=1)
        equal = (kept == raw[:, None]).sum(axis=1)
        out = (below + 0.5 * equal) / (n + 1.0)
        top = np.where(np.isnan(kept), -np.inf, kept).max(axis=1)
        above = np.flatnonzero((raw > top) & (n >= 2))
        if len(above):
            top_a, scale = self._tail(kept[above], n[above])
            gap = raw[above] - top_a
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                decay = np.where(scale > 0, np.exp(-gap / scale), 0.0)
            out[above] = 1.0 - (1.0 - n[above] / (n[above] + 1.0)) * decay
        out[(self._count[idx] < self.min_count) | ~np.isfinite(raw)] = 0.0
        result: FloatArray = np.clip(out, 0.0, 1.0)
        return result

    def update(self, idx: IntArray, raw: FloatArray) -> None:
        """Learn raw scores; ``idx`` must not repeat a series (one round)."""
        idx = np.asarray(idx, dtype=np.int64)
        raw = np.asarray(raw, dtype=np.float64)
        ok = np.isfinite(raw)
        idx, raw = idx[ok], raw[ok]
        if len(idx) == 0:
            return
        self.grow(int(idx.max()) + 1)
        kept = self._buf[idx]
        n = self._count[idx]
        top = np.where(np.isnan(kept), -np.inf, kept).max(axis=1)
        high = np.flatnonzero((raw > top) & (n >= self.min_count))
        if len(high):
            # Huber-style: an incident's extreme raw scores are learned as at most one
            # tail scale above the maximum, so they do not blunt the calibration for the
            # next `window` points; a lasting rise still gets in, a tail scale per point.
            top_h, scale = self._tail(kept[high], n[high].astype(np.float64))
            raw = raw.copy()
            raw[high] = np.where(scale > 0, np.minimum(raw[high], top_h + scale), raw[high])
        pos = self._pos[idx]
        self._buf[idx, pos] = raw
        self._pos[idx] = (pos + 1) % self.window
        self._count[idx] = np.minimum(n + 1, self.window)

    def state_dict(self) -> dict[str, Any]:
        """The windows, write positions and counts, as arrays."""
        n = self._n
        return {
            "buf": self._buf[:n].copy(),
            "pos": self._pos[:n].copy(),
            "count": self._count[:n].copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        buf = np.asarray(state["buf"], dtype=np.float64)
        if buf.ndim != 2 or buf.shape[1] != self.window:
            raise ValueError(
                f"calibrator state has windows of shape {buf.shape}, expected (n, {self.window})"
            )
        self._buf = buf.copy()
        self._pos = np.asarray(state["pos"], dtype=np.int64).copy()
        self._count = np.asarray(state["count"], dtype=np.int64).copy()
        self._n = len(self._pos)
