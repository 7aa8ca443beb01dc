"""Robust exponentially weighted location and scale, scored by the series' own tail."""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from aiops.detectors.calibration import (
    Refractory,
    TailCalibrator,
    refractory_fresh_at,
    tail_learn_at,
    tail_score_at,
    tail_surprise_at,
)
from aiops.pipeline.detector import Detector, checked_batch
from aiops.types import FloatArray, IntArray

__all__ = ["RobustEWMA"]

#: Mean absolute deviation of a standard normal variable, sqrt(2/pi): converts an
#: absolute-deviation scale into a standard-deviation scale.
MAD_TO_SIGMA = math.sqrt(2.0 / math.pi)
#: numba keys its on-disk cache by source file but records the importing module's name
#: (see :mod:`aiops.detectors.ewma_z`): only the installed name caches.
_CACHE = __name__ == "aiops.detectors.robust_ewma"


@numba.njit(cache=_CACHE, nogil=True)
def _score_points(
    idx: IntArray,
    values: FloatArray,
    out: FloatArray,
    mu: FloatArray,
    dev: FloatArray,
    n: IntArray,
    w: FloatArray,
    wu: FloatArray,
    s1: FloatArray,
    s2: FloatArray,
    memory: FloatArray,
    params: FloatArray,
    warmup: int,
) -> None:
    """Score and learn every point in order; the whole detector is this loop."""
    alpha, scale_alpha, clip, min_scale = params[0], params[1], params[2], params[3]
    rel_min_scale, keep, decay, learn_below = params[4], params[5], params[6], params[7]
    for k in range(len(idx)):
        out[k] = 0.0
        x = values[k]
        if not math.isfinite(x):
            continue  # a missing point: scores 0, changes nothing
        i = idx[k]
        c = n[i]
        sigma = max(dev[i] / MAD_TO_SIGMA, max(min_scale, rel_min_scale * abs(mu[i])))
        z = abs(x - mu[i]) / sigma
        surprise = tail_surprise_at(z, w[i], wu[i], s1[i], s2[i])
        warm = c >= warmup
        score = tail_score_at(refractory_fresh_at(memory[i], surprise)) if warm else 0.0
        out[k] = score
        learn = score < learn_below
        if warm:
            # The refractory memory follows every point (it describes the recent signal);
            # the tail learns only the points that are learned from.
            if decay > 0.0:
                memory[i] = max(decay * memory[i], surprise)
            if learn:
                tail_learn_at(i, z, keep, w, wu, s1, s2)
        if not learn:
            continue
        # During warm-up the level and deviation are running means (weight 1/(c+1)),
        # then exponential; the residual is clipped only once the scale means something.
        r = x - mu[i]
        if warm:
            r = max(-clip * sigma, min(clip * sigma, r))
        mu[i] += max(alpha, 1.0 / (c + 1)) * r
        dev[i] += max(scale_alpha, 1.0 / (c + 1)) * (abs(r) - dev[i])
        n[i] = c + 1


class RobustEWMA(Detector):
    """Huber-clipped EWMA of the level and of the absolute deviation, per series.

    Each series keeps an exponentially weighted level ``mu`` and an exponentially
    weighted mean absolute deviation ``dev``. A point deviates by ``z = |x - mu| /
    sigma`` (with ``sigma = dev / sqrt(2/pi)``), and ``z`` is scored by how rare it is
    among the series' own past deviations (:class:`~aiops.detectors.calibration.
    TailCalibrator`: a generalized Pareto tail fitted to the deviations beyond 2.5
    sigma, forgetting with weight ``tail_alpha``), as ``1 - p`` for a tail probability
    ``p``: 0.999 means "one ordinary point in 1,000 deviates this much" on this series,
    whatever its noise distribution (the check suite's ``calibration`` check; measured
    by ``bench/calibration.py``). A :class:`~aiops.detectors.calibration.
    Refractory` memory (decay ``refractory``) makes one incident score once: after an
    alert-worthy point, the next must be ten times rarer to score that high again.
    Before learning, the residual is clipped to ``clip`` sigmas, so one outlier moves
    the baseline by at most ``alpha * clip * sigma`` instead of dragging it along
    (Huber, 1964); a point not learned (``learn_below``) moves neither the baseline nor
    the tail.

    Works well on: noisy series around a slowly moving level (latency, error ratio,
    CPU), spikes and level shifts, heavy-tailed or quantized noise (a series that often
    jumps by 5 sigma learns that 5 sigma is ordinary). Fails on: strong seasonality with
    a period shorter than ``1 / alpha`` points (the level lags the cycle and every peak
    deviates); series with long flat stretches, where the scale collapses and the first
    small move scores 1 (``min_scale`` and ``rel_min_scale`` bound this); with the
    refractory memory on, rules that need several hits in a row (``for``, ``min_hits``):
    set ``refractory: 0`` there, so that every point of an incident scores high.

    Defaults: ``alpha``, ``scale_alpha`` and ``refractory`` were chosen as one setting
    for the whole NAB v1.1 corpus (``bench/quality``), on the earlier ``exp(-100 p)``
    score scale and exponential tail from 1.5 sigma: standard score 48 swept and 48 at
    the then default threshold 0.99, against 0 and -652 with a Gaussian calibration.

    Cost: O(1) memory and time per point, 8 numbers per series; one compiled (numba)
    loop over a batch's points in order, the same for a batch of many series and for
    the replay of one long series (the tail and refractory math are
    :mod:`aiops.detectors.calibration`'s compiled functions).

    Parameters
    ----------
    alpha
        Smoothing factor of the level; the baseline's memory is about ``1 / alpha``
        points.
    scale_alpha
        Smoothing factor of the absolute deviation.
    clip
        Residuals are clipped to this many sigmas before they are learned.
    warmup
        Points learned before a series scores anything; during warm-up the level and
        scale are plain running means, so they start from data, not from zero.
    min_scale, rel_min_scale
        The sigma floor: ``max(min_scale, rel_min_scale * |mu|)``.
    tail_alpha
        Per-point forgetting of the deviations' tail; its memory is about
        ``1 / tail_alpha`` points.
    refractory
        Per-point decay of the refractory memory, in ``[0, 1)``; 0 disables it.

    A spike of 20 sigma scores 1; the point after it is ordinary again:

    >>> det = RobustEWMA(warmup=5)
    >>> x = np.array([10.0, 10.5, 9.5, 10.2, 9.8, 10.1, 9.9, 30.0, 10.0])
    >>> np.round(det.score(np.zeros(9, dtype=np.int64), np.arange(9.0), x), 2).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.01, 0.02, 1.0, 0.0]
    """

    name = "robust_ewma"

    def __init__(
        self,
        *,
        alpha: float = 0.005,
        scale_alpha: float = 0.005,
        clip: float = 3.0,
        warmup: int = 30,
        min_scale: float = 1e-9,
        rel_min_scale: float = 1e-4,
        tail_alpha: float = 0.001,
        refractory: float = 0.995,
        learn_below: float = math.inf,
        seed: int = 0,
    ) -> None:
        super().__init__(learn_below=learn_below, seed=seed)
        for label, a in (("alpha", alpha), ("scale_alpha", scale_alpha)):
            if not 0.0 < a <= 1.0:
                raise ValueError(f"{label} must be in (0, 1], got {a}")
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1, got {warmup}")
        if min_scale <= 0 or rel_min_scale < 0:
            raise ValueError("min_scale must be positive and rel_min_scale not negative")
        self.alpha = alpha
        self.scale_alpha = scale_alpha
        self.clip = clip
        self.warmup = warmup
        self.min_scale = min_scale
        self.rel_min_scale = rel_min_scale
        self.tail_alpha = tail_alpha
        self.refractory = refractory
        self._tail = TailCalibrator(alpha=tail_alpha)  # validates tail_alpha
        self._refr = Refractory(decay=refractory)  # validates refractory
        self._mu = np.zeros(0)
        self._dev = np.zeros(0)
        self._n = np.zeros(0, dtype=np.int64)

    @classmethod
    def check_params(cls) -> dict[str, Any]:
        """Small parameters for the shared detector check suite."""
        return {"warmup": 10, "alpha": 0.05, "scale_alpha": 0.05}

    @property
    def n_series(self) -> int:
        """How many series indices the detector holds state for."""
        return len(self._mu)

    def _grow(self, n: int) -> None:
        cap = max(n, 2 * len(self._mu))
        extra = cap - len(self._mu)
        self._mu = np.concatenate([self._mu, np.zeros(extra)])
        self._dev = np.concatenate([self._dev, np.zeros(extra)])
        self._n = np.concatenate([self._n, np.zeros(extra, dtype=np.int64)])
        self._tail.grow(cap)
        self._refr.grow(cap)

    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """Score and learn from the points; see :mod:`aiops.pipeline.detector`."""
        idx, timestamps, values = checked_batch(idx, timestamps, values)
        out = np.zeros(len(idx))
        if len(idx) == 0:
            return out
        need = int(idx.max()) + 1
        if need > self.n_series:
            self._grow(need)
        tail, refr = self._tail, self._refr
        params = np.array(
            [
                self.alpha,
                self.scale_alpha,
                self.clip,
                self.min_scale,
                self.rel_min_scale,
                1.0 - self.tail_alpha,
                self.refractory,
                self.learn_below,
            ],
            dtype=np.float64,
        )
        _score_points(
            idx,
            values,
            out,
            self._mu,
            self._dev,
            self._n,
            tail._w,
            tail._wu,
            tail._s1,
            tail._s2,
            refr._m,
            params,
            int(self.warmup),
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Level, deviation, count, tail and refractory memory per series, as arrays."""
        k = self.n_series
        return {
            "mu": self._mu[:k].copy(),
            "dev": self._dev[:k].copy(),
            "n": self._n[:k].copy(),
            "tail": self._tail.state_dict(),
            "refractory": self._refr.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._mu = np.asarray(state["mu"], dtype=np.float64).copy()
        self._dev = np.asarray(state["dev"], dtype=np.float64).copy()
        self._n = np.asarray(state["n"], dtype=np.int64).copy()
        self._tail.load_state_dict(state["tail"])
        self._refr.load_state_dict(state["refractory"])
