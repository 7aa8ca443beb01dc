"""Score calibration: one meaning of a score for every detector.

A calibrated score is ``1 - p``, with ``p`` the point's *tail probability*: the share of
the series' own normal points that deviate at least as much, estimated online from the
series' past. So about a fraction ``1 - s`` of a series' normal points score ``s`` or
more, whatever the detector and whatever the noise: a threshold of 0.998 (the engine's
default) is about one normal point in 500, 0.9999 one in 10,000. Tail probabilities come
from the series' own past, not from a noise model, so heavy tails and quantized values do
not make every wiggle score 1. The shared check suite (``tests/detector_checks.py``,
``calibration``) tests this on stationary noise of five kinds for every detector.

- :class:`TailCalibrator` learns, per series, the tail of a deviation in sigmas (peaks
  over a threshold with a generalized Pareto tail fitted by moments, decayed, from a
  Gaussian prior) and returns its *surprise* ``-ln p``; :func:`tail_score` maps surprise
  to the score ``1 - p``.
- :class:`Refractory` keeps one incident from scoring again and again: a point must be
  more surprising than the recent peak to score high.
- :class:`EmpiricalCalibrator` learns the distribution of a raw score with no known
  scale (river's anomaly detectors): an empirical CDF over a sliding window, with an
  exponential tail beyond its maximum; its surprise, put on a Gaussian deviation's scale
  (:func:`surprise_to_z`), feeds a :class:`TailCalibrator`, which learns how often each
  rank really occurs, beyond what a short window resolves.
- :func:`combine_min_p` combines several calibrated scores (an ensemble): the smallest
  tail probability times their number (Bonferroni), so the combination keeps the meaning.
- :func:`gaussian_score` is the two-sided normal probability of a smaller deviation, for
  detectors that trust a Gaussian noise model.

All are vectorized over series and their state is plain arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from aiops.pipeline.detector import DEFAULT_THRESHOLD
from aiops.types import FloatArray, IntArray

__all__ = [
    "ALERT_SURPRISE",
    "MAX_SURPRISE",
    "REFRACTORY_BASE",
    "REFRACTORY_MARGIN",
    "EmpiricalCalibrator",
    "Refractory",
    "TailCalibrator",
    "combine_min_p",
    "surprise_to_z",
    "gaussian_score",
    "tail_score",
]

#: The surprise ``-ln p`` that scores exactly the engine's default threshold:
#: ``-ln(1 - 0.998)``, about 6.2.
ALERT_SURPRISE = -math.log(1.0 - DEFAULT_THRESHOLD)
#: :class:`Refractory`: after an alert, a point must be this much more surprising (ln 10:
#: ten times rarer) than the decayed peak to alert again. On NAB v1.1 with
#: ``robust_ewma`` (on the earlier ``exp(-100 p)`` scale): 0 (equal peaks sit exactly at
#: the threshold) 46.3 swept, ln 10 48.4, ln 100 49.5 swept but 41.8 at the default
#: threshold.
REFRACTORY_MARGIN = math.log(10.0)
#: :class:`Refractory` holds nothing back while the decayed peak of the surprises stays
#: below this: ``-ln 1e-3``, a point rarer than one in 1,000 (the value it had on the
#: earlier ``exp(-100 p)`` scale, where NAB chose the margin). With ``-ln 0.02`` (the
#: default threshold less the margin) ``robust_ewma`` reached 0.99 on 0.8x and 0.999 on
#: 0.6x the nominal share of Gaussian points, and a 7-sigma dip 50 points after a spike
#: stayed below 0.99 (``tests/test_seasonal.py``).
REFRACTORY_BASE = -math.log(1e-3)
#: The largest surprise a calibrator returns, ``-ln 1e-11``: tail probabilities below
#: 1e-11 are far beyond what a fitted tail can tell apart, and all score ``1 - 1e-9``. The
#: cap also bounds how long :class:`Refractory` holds back after a huge incident (260
#: points for a marginal alert at the default decay), whatever its size. On NAB v1.1 it
#: changed ``robust_ewma`` by +0.4 (standard, swept).
MAX_SURPRISE = -math.log(1e-11)

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


# Abramowitz and Stegun, formula 26.2.23: the upper normal quantile with absolute error
# below 4.5e-4.
_AS_C = (2.515517, 0.802853, 0.010328)
_AS_D = (1.432788, 0.189269, 0.001308)


def surprise_to_z(surprise: FloatArray) -> FloatArray:
    """The two-sided Gaussian deviation whose tail probability is ``exp(-surprise)``.

    It puts a tail probability known only roughly (a rank in a short window, with an
    extrapolated tail) on the scale of :class:`TailCalibrator`, which then learns how
    often each deviation really occurs on the series, far beyond what the window can
    resolve.

    >>> np.round(surprise_to_z(-np.log(np.array([1.0, 0.3173, 0.0455, 0.0027]))), 2).tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    p = np.clip(0.5 * np.exp(-np.asarray(surprise, dtype=np.float64)), 1e-300, 0.5)
    t = np.sqrt(-2.0 * np.log(p))
    c0, c1, c2 = _AS_C
    d1, d2, d3 = _AS_D
    z = t - (c0 + t * (c1 + t * c2)) / (1.0 + t * (d1 + t * (d2 + t * d3)))
    out: FloatArray = np.maximum(z, 0.0)
    return out


def tail_score(surprise: FloatArray) -> FloatArray:
    """``1 - p`` for surprises ``-ln p``: 0.99 at ``p = 0.01``, 0 at ``p = 1``.

    >>> np.round(tail_score(-np.log(np.array([1.0, 0.1, 1e-2, 1e-3, 1e-9]))), 4).tolist()
    [0.0, 0.9, 0.99, 0.999, 1.0]
    """
    surprise = np.asarray(surprise, dtype=np.float64)
    # + 0.0 turns expm1's -0.0 (of a surprise of 0) into 0.0.
    out: FloatArray = np.clip(-np.expm1(-np.maximum(surprise, 0.0)), 0.0, 1.0) + 0.0
    return out


def combine_min_p(scores: FloatArray, weights: FloatArray | None = None) -> FloatArray:
    """Calibrated scores of ``k`` detectors (rows) on the same points, combined per point.

    The combined tail probability is ``min(1, min_i p_i / w_i)`` (weighted Bonferroni),
    with weights ``w_i`` summing to 1 (``1 / k`` each by default: ``k * min_i p_i``). A
    point scores ``s`` or more only if some detector put it at ``p_i <= w_i (1 - s)``, so
    on normal points the combination reaches ``s`` at most about as often as ``1 - s``
    (exactly that if the detectors never agree) and at least ``max_i w_i`` times that.
    A detector given a small weight spends little of the false-alarm budget: it adds
    only its very rare points, and the others keep nearly all of their power.

    >>> np.round(combine_min_p(np.array([[0.999, 0.5, 0.0], [0.9, 0.99, 0.0]])), 4).tolist()
    [0.998, 0.98, 0.0]
    >>> w = np.array([0.9, 0.1])
    >>> np.round(combine_min_p(np.array([[0.999, 0.5, 0.0], [0.9, 0.99, 0.0]]), w), 4).tolist()
    [0.9989, 0.9, 0.0]
    """
    scores = np.asarray(scores, dtype=np.float64)
    k = len(scores)
    w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or not np.all(w > 0):
        raise ValueError(f"weights must be {k} positive numbers, got {weights!r}")
    p = np.min((1.0 - scores) / (w / w.sum())[:, None], axis=0)
    out: FloatArray = np.clip(1.0 - p, 0.0, 1.0)
    return out


#: :class:`TailCalibrator`'s tail starts at this many sigmas: 1.2% of Gaussian points lie
#: beyond, so the tail is fitted where deviations are already unusual (as ``ewma_z``'s
#: ``tail_start``). From 1.5 sigma (13% beyond) the exponential fit was too short for the
#: far tail of Gaussian noise and too long for that of Student-t noise.
TAIL_START = 2.5
#: Pseudo-points of a standard Gaussian the tail starts from, so that the first points
#: after a warm-up are calibrated as Gaussian until the series' own tail takes over:
#: 1,000 points hold 12 exceedances of 2.5 sigma, enough for a first mean excess.
PRIOR_POINTS = 1000.0
#: Largest shape of the generalized Pareto tail: 0 is the exponential tail of light-tailed
#: noise, 0.5 a power law whose excess still has a finite variance (as ``ewma_z``).
SHAPE_MAX = 0.5


def _gaussian_prior() -> tuple[float, float, float, float]:
    """Decayed sums of ``PRIOR_POINTS`` standard Gaussian deviations: w, wu, s1, s2."""
    share = math.erfc(TAIL_START / math.sqrt(2.0))
    density = math.exp(-0.5 * TAIL_START**2) / math.sqrt(2.0 * math.pi)
    m = 2.0 * density / share - TAIL_START  # mean excess: the inverse Mills ratio
    wu = PRIOR_POINTS * share
    return PRIOR_POINTS, wu, wu * m, wu * 2.0 * m * m  # an exponential excess' moments


#: numba keys its on-disk cache by source file but records the importing module's name
#: (see :mod:`aiops.detectors.ewma_z`): only the installed name caches.
_CACHE = __name__ == "aiops.detectors.calibration"


@numba.njit(cache=_CACHE, nogil=True)
def tail_surprise_at(z: float, w: float, wu: float, s1: float, s2: float) -> float:
    """``-ln p`` of a deviation ``z`` under one series' tail sums (see :class:`TailCalibrator`).

    The share beyond ``TAIL_START`` is ``q = wu / w``; below the start ``p`` falls
    linearly from 1 at 0 to ``q``; beyond it the excess follows a generalized Pareto
    distribution whose shape and scale come from the first two moments of the excesses,
    ``m = s1 / wu`` and ``m2 = s2 / wu`` (the method of moments: shape ``(1 - m^2 /
    var) / 2``, clipped to ``[0, SHAPE_MAX]``; exponential at 0). At most
    ``MAX_SURPRISE``. Compiled, so that detectors' own compiled loops call it too.
    """
    q = wu / w
    if z <= TAIL_START:
        # + 0.0 turns the -0.0 of -log(1) into 0.0.
        return min(-math.log(max(1.0 - (1.0 - q) * z / TAIL_START, 1e-300)), MAX_SURPRISE) + 0.0
    m = s1 / wu
    var = max(s2 / wu - m * m, 1e-12)
    shape = min(SHAPE_MAX, max(0.0, 0.5 * (1.0 - m * m / var)))
    y = z - TAIL_START
    if shape < 1e-6:
        tail = y / m
    else:
        scale = 0.5 * m * (m * m / var + 1.0)
        tail = math.log1p(shape * y / scale) / shape
    out = -math.log(q) + tail
    return out if out < MAX_SURPRISE else MAX_SURPRISE


@numba.njit(cache=_CACHE, nogil=True)
def tail_learn_at(
    i: int, z: float, keep: float, w: FloatArray, wu: FloatArray, s1: FloatArray, s2: FloatArray
) -> None:
    """Series ``i``'s tail sums learn the deviation ``z`` (forgetting: ``keep`` per point).

    One huge deviation adds at most ten mean excesses: a single incident that was
    learned does not blunt the tail for the next thousand points.
    """
    beyond = z > TAIL_START
    excess = min(z - TAIL_START, 10.0 * s1[i] / wu[i]) if beyond else 0.0
    w[i] = keep * w[i] + 1.0
    wu[i] = keep * wu[i] + (1.0 if beyond else 0.0)
    s1[i] = keep * s1[i] + excess
    s2[i] = keep * s2[i] + excess * excess


@numba.njit(cache=_CACHE, nogil=True)
def refractory_fresh_at(memory: float, surprise: float) -> float:
    """The surprise left after the recent peak ``memory`` is taken off (:class:`Refractory`)."""
    return max(surprise - max(memory - REFRACTORY_BASE, 0.0), 0.0)


@numba.njit(cache=_CACHE, nogil=True)
def tail_score_at(surprise: float) -> float:
    """``1 - p`` for a surprise ``-ln p`` (:func:`tail_score` of one point)."""
    return min(max(-math.expm1(-max(surprise, 0.0)), 0.0), 1.0) + 0.0


@numba.njit(cache=_CACHE, nogil=True)
def _refractory_fresh(idx: IntArray, surprise: FloatArray, m: FloatArray, out: FloatArray) -> None:
    for k in range(len(idx)):
        out[k] = refractory_fresh_at(m[idx[k]], surprise[k])


@numba.njit(cache=_CACHE, nogil=True)
def _tail_surprise(
    idx: IntArray,
    z: FloatArray,
    w: FloatArray,
    wu: FloatArray,
    s1: FloatArray,
    s2: FloatArray,
    out: FloatArray,
) -> None:
    for k in range(len(idx)):
        i = idx[k]
        out[k] = tail_surprise_at(z[k], w[i], wu[i], s1[i], s2[i])


@numba.njit(cache=_CACHE, nogil=True)
def _tail_update(
    idx: IntArray,
    z: FloatArray,
    keep: float,
    w: FloatArray,
    wu: FloatArray,
    s1: FloatArray,
    s2: FloatArray,
) -> None:
    for k in range(len(idx)):
        tail_learn_at(idx[k], z[k], keep, w, wu, s1, s2)


class TailCalibrator:
    """Per-series tail probability of a deviation ``z >= 0`` (in sigmas), from its own past.

    A peaks-over-threshold model (Pickands, 1975; as in Siffer et al.'s SPOT, 2017, and
    ``ewma_z``): each series keeps the decayed share ``q`` of its deviations beyond
    ``TAIL_START`` and the decayed first two moments of their excess, and beyond the start
    ``p`` is ``q`` times the survival function of a generalized Pareto distribution fitted
    to those moments (:func:`tail_surprise_at`): exponential when the excesses look
    exponential, a power law when they are heavier (Student-t noise, bursty counts).
    Below the start, ``p`` falls linearly from 1 at ``z = 0`` to ``q``. It returns the
    surprise ``-ln p`` (up to ``MAX_SURPRISE``), and :func:`tail_score` makes it the score
    ``1 - p``. All statistics start from ``PRIOR_POINTS`` Gaussian pseudo-points and
    forget with weight ``alpha`` per point, so a young series is scored as Gaussian until
    its own tail is known; a heavy-tailed or spiky series learns a larger share, a longer
    excess and a heavier shape, so the same ``z`` is less surprising there.

    Works well on: robust z-scores of any noise, heavy tails and quantized values
    included (measured by ``bench/calibration.py``). Fails on: the first few hundred
    points of a series whose tail is far from Gaussian (the prior dominates); raw scores
    that are not deviations in sigmas (the prior and ``TAIL_START`` assume that scale;
    use :class:`EmpiricalCalibrator`).

    Cost: 4 floats per series; a handful of numpy operations per round.

    >>> cal = TailCalibrator()
    >>> idx = np.zeros(3, dtype=np.int64)
    >>> np.round(cal.surprise(idx, np.array([0.0, 3.0, 6.0])), 2).tolist()  # the prior
    [0.0, 5.94, 15.23]
    """

    def __init__(self, *, alpha: float = 0.001) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self._prior = _gaussian_prior()
        self._w = np.zeros(0)
        self._wu = np.zeros(0)
        self._s1 = np.zeros(0)
        self._s2 = np.zeros(0)

    @property
    def n_series(self) -> int:
        """How many series the calibrator holds state for."""
        return len(self._w)

    def grow(self, n: int) -> None:
        """Hold state for at least ``n`` series."""
        extra = n - len(self._w)
        if extra > 0:
            w, wu, s1, s2 = self._prior
            self._w = np.concatenate([self._w, np.full(extra, w)])
            self._wu = np.concatenate([self._wu, np.full(extra, wu)])
            self._s1 = np.concatenate([self._s1, np.full(extra, s1)])
            self._s2 = np.concatenate([self._s2, np.full(extra, s2)])

    def surprise(self, idx: IntArray, z: FloatArray) -> FloatArray:
        """``-ln p`` of the deviations ``z`` (series ``idx``), without learning them."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        z = np.ascontiguousarray(z, dtype=np.float64)
        self.grow(int(idx.max()) + 1 if len(idx) else 0)
        out = np.zeros(len(idx))
        _tail_surprise(idx, z, self._w, self._wu, self._s1, self._s2, out)
        return out

    def update(self, idx: IntArray, z: FloatArray) -> None:
        """Learn deviations; ``idx`` must not repeat a series (one round)."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        z = np.ascontiguousarray(z, dtype=np.float64)
        self.grow(int(idx.max()) + 1 if len(idx) else 0)
        _tail_update(idx, z, 1.0 - self.alpha, self._w, self._wu, self._s1, self._s2)

    def state_dict(self, n: int | None = None) -> dict[str, Any]:
        """Decayed counts and excess sums of the first ``n`` (default all) series, as arrays."""
        return {
            "w": self._w[:n].copy(),
            "wu": self._wu[:n].copy(),
            "s1": self._s1[:n].copy(),
            "s2": self._s2[:n].copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._w = np.asarray(state["w"], dtype=np.float64).copy()
        self._wu = np.asarray(state["wu"], dtype=np.float64).copy()
        self._s1 = np.asarray(state["s1"], dtype=np.float64).copy()
        self._s2 = np.asarray(state["s2"], dtype=np.float64).copy()


class Refractory:
    """Per-series memory of recent surprise, so that one incident scores once.

    After an alert-worthy point, the next ones alert again only if they are rarer than
    it by ``REFRACTORY_MARGIN`` (ten times), against a memory of its surprise that
    decays by ``decay`` per point (a half-life of ``ln 2 / -ln(decay)`` points). So a
    spike or the onset of a level shift scores once, a larger excursion during the
    incident scores again, and a lasting incident does not keep every point at the
    threshold. In numbers: with the memory ``M`` (the decayed peak of the surprises
    ``L``) and ``base = REFRACTORY_BASE``, the fresh surprise is
    ``max(0, L - max(0, M - base))``, then ``M`` becomes ``max(decay * M, L)``. Ordinary
    points, whose peak stays below ``base``, are untouched; as surprises stop at
    ``MAX_SURPRISE``, no incident holds back a later one for longer than
    ``ln(base / MAX_SURPRISE) / ln(decay)`` points. The same idea as the refractory
    memory of :class:`aiops.detectors.envelope_novelty.EnvelopeNovelty`, in surprise
    units. ``decay = 0`` disables it.

    Cost: 1 float per series.

    >>> ref = Refractory(decay=0.5)
    >>> idx = np.zeros(1, dtype=np.int64)
    >>> fresh = []
    >>> for L in [3.0, 20.0, 20.0, 22.0, 25.0, 3.0]:
    ...     fresh.append(round(float(ref.fresh(idx, np.array([L]))[0]), 2))
    ...     ref.update(idx, np.array([L]))
    >>> fresh  # the first 20 alerts (6.21 and up); then each must be 10 times rarer
    [3.0, 20.0, 6.91, 8.91, 9.91, 0.0]
    """

    def __init__(self, *, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"refractory must be in [0, 1), got {decay}")
        self.decay = decay
        self._m = np.zeros(0)

    def grow(self, n: int) -> None:
        """Hold state for at least ``n`` series."""
        if n > len(self._m):
            self._m = np.concatenate([self._m, np.zeros(n - len(self._m))])

    def fresh(self, idx: IntArray, surprise: FloatArray) -> FloatArray:
        """The surprise left after the recent peak of series ``idx`` is taken off."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        self.grow(int(idx.max()) + 1 if len(idx) else 0)
        out = np.zeros(len(idx))
        _refractory_fresh(idx, np.ascontiguousarray(surprise, dtype=np.float64), self._m, out)
        return out

    def update(self, idx: IntArray, surprise: FloatArray) -> None:
        """Remember the surprises; ``idx`` must not repeat a series (one round)."""
        self.grow(int(idx.max()) + 1 if len(idx) else 0)
        if self.decay > 0.0:
            self._m[idx] = np.maximum(self.decay * self._m[idx], surprise)

    def state_dict(self, n: int | None = None) -> dict[str, Any]:
        """The memory of the first ``n`` (default all) series, as an array."""
        return {"m": self._m[:n].copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._m = np.asarray(state["m"], dtype=np.float64).copy()


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
        # + 0.0 turns expm1's -0.0 (of a surprise of 0) into 0.0.
        out: FloatArray = np.clip(-np.expm1(-self.surprise(idx, raw)), 0.0, 1.0) + 0.0
        return out

    def surprise(self, idx: IntArray, raw: FloatArray) -> FloatArray:
        """``-ln(1 - c)`` for the calibrated scores ``c`` of ``raw``, without learning them.

        The surprise of the tail probability ``1 - c``, for
        :func:`rarity_score`. Above the window's maximum it grows linearly with the gap
        (the exponential tail) instead of rounding to ``c = 1``; at most
        ``MAX_SURPRISE``. 0 where :meth:`transform` gives 0.
        """
        idx = np.asarray(idx, dtype=np.int64)
        raw = np.asarray(raw, dtype=np.float64)
        self.grow(int(idx.max()) + 1 if len(idx) else 0)
        kept = self._buf[idx]  # NaN where the window is not full yet: compares False
        n = self._count[idx].astype(np.float64)
        below = (kept < raw[:, None]).sum(axis=1)
        equal = (kept == raw[:, None]).sum(axis=1)
        with np.errstate(divide="ignore"):
            out = -np.log(np.maximum(n + 1.0 - below - 0.5 * equal, 0.0) / (n + 1.0))
        top = np.where(np.isnan(kept), -np.inf, kept).max(axis=1)
        above = np.flatnonzero((raw > top) & (n >= 2))
        if len(above):
            top_a, scale = self._tail(kept[above], n[above])
            gap = raw[above] - top_a
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                tail = np.where(scale > 0, gap / scale, np.inf)
            out[above] = np.log(n[above] + 1.0) + tail
        out[(self._count[idx] < self.min_count) | ~np.isfinite(raw)] = 0.0
        result: FloatArray = np.minimum(out, MAX_SURPRISE)
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
