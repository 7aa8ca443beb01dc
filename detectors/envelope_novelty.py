"""Envelope novelty: a point, its level or its volatility leaving all that came before.

Vectorized over series; see :class:`EnvelopeNovelty`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aiops.detector import RoundDetector
from aiops.types import BoolArray, FloatArray, IntArray

__all__ = ["EnvelopeNovelty"]

#: Features, in column order: the value itself, its short-term level (an EWMA) and its
#: volatility (an EWMA of absolute first differences).
_VALUE, _LEVEL, _VOLATILITY = 0, 1, 2
_N_FEATURES = 3
#: Which features are novel in both directions. A volatility that falls below anything
#: seen is common and harmless (quiet nights); only a rise counts.
_TWO_SIDED = np.array([1.0, 1.0, 0.0])
#: The envelope's width never counts as less than this share of its magnitude (plus an
#: absolute epsilon): a series that was constant so far still gets a finite, huge
#: novelty for its first move instead of a division by zero.
_REL_WIDTH_FLOOR = 1e-6
_ABS_WIDTH_FLOOR = 1e-12
#: The score at which the engine's default threshold (0.99) sits; see ``alert_novelty``.
_ALERT_SCORE = 0.99


class EnvelopeNovelty(RoundDetector):
    """Multi-scale envelope (record) novelty with a refractory memory, per series.

    Each series keeps, for three features, the *envelope* ``[lo, hi]`` of every value
    the feature took so far: the value ``x`` itself, its short-term level (an EWMA with
    weight ``level_alpha``) and its volatility (an EWMA with weight ``volatility_alpha``
    of ``|x[t] - x[t-1]|``). A feature's *excess* is how far it lies outside its envelope,
    in units of ``tolerance * (hi - lo)``; the volatility counts only upwards. The
    point's novelty is ``N = 1 - exp(-max excess)``, in ``[0, 1)``: 0 inside every
    envelope, ``1 - 1/e`` at one tolerance outside.

    Records are the one statistic whose false-alarm rate is known without a model of
    the noise: among ``n`` exchangeable points, the last is a new maximum with
    probability ``1/n``, whatever the distribution, heavy tails and quantized values
    included. Measuring the excess against the envelope's own width makes it free of
    units, and needing a margin (``tolerance``) makes records of a stable series rarer
    still. This is NAB's "spatial anomaly" check (``SPATIAL_TOLERANCE = 0.05`` in
    numenta/NAB's HTM and threshold detectors) applied at three time scales: the level
    catches sustained shifts whose single points stay inside the value's envelope, the
    volatility catches bursts of noise.

    A refractory memory ``M`` keeps one incident from scoring again and again: the
    score is built from ``max(0, N - M)`` and ``M`` then becomes ``max(refractory * M,
    N)``, so a point must be *more* novel than the recent peak, which is forgotten with
    a half-life of ``ln 2 / -ln(refractory)`` points (34 at the default). The score is a
    monotone map of that excess, ``1 - (1 - excess) ** gamma``, with ``gamma`` chosen
    so that an excess of ``alert_novelty`` scores exactly 0.99, the engine's default
    threshold.

    Learning and ``learn_below``: the smoothers (last value, level, volatility) and the
    refractory memory follow every finite point: they describe the recent signal, not
    what is normal. The envelopes are the model of normal: a point scoring at or above
    ``learn_below`` is not taken into them as is; its features enter them clipped to at
    most ``masked_step`` envelope widths beyond the current edge. So a spike never
    becomes part of the normal range, while a permanent level shift is accepted after a
    few alerts instead of alerting on every point forever.

    Works well on: spikes and dips beyond the range seen so far, level shifts, bursts of
    volatility, on any scale and any noise distribution (the NAB corpus, web and cloud
    service KPIs). Fails on: anomalies inside the range seen so far with the same level
    and volatility, such as a change of shape of a daily cycle, a missing peak, or a
    short spike smaller than an earlier one (there is no seasonal or sequence model); a
    metric that grows for ever (every new high is novel; a growing counter should be
    scored as a rate); and it never forgets, so a huge early outlier that was learned
    (before ``warmup`` points, or when ``learn_below`` is ``inf``) hides later smaller
    ones. A series that was exactly constant scores its first move as 1.

    Defaults: ``tolerance`` is NAB's spatial tolerance; the other values were chosen as
    one setting for the whole NAB v1.1 corpus (``bench/quality/README.md`` logs the
    search); ``alert_novelty`` puts the default threshold at the best swept threshold.

    Cost: O(1) time and 13 floats per series (three envelopes, three smoothers, the
    refractory level, a count); a round of ``k`` series is a few dozen numpy operations
    on ``(k, 3)`` arrays.

    Parameters
    ----------
    level_alpha
        EWMA weight of the level feature; its memory is about ``1 / level_alpha`` points.
    volatility_alpha
        EWMA weight of the volatility feature.
    tolerance
        The margin, as a share of an envelope's width, that counts as one unit of
        excess for the value and the level (NAB's spatial tolerance is 0.05).
    volatility_tolerance
        The same for the volatility, whose envelope is much more skewed.
    refractory
        Per-point decay of the refractory memory, in ``[0, 1)``; 0 disables it.
    alert_novelty
        The novelty excess ``max(0, N - M)`` that scores 0.99.
    masked_step
        How many envelope widths a point scoring at or above ``learn_below`` may still
        widen the envelope by.
    warmup
        Points learned before a series scores anything.

    >>> det = EnvelopeNovelty(warmup=10)
    >>> x = np.r_[10.0 + np.sin(np.arange(30.0)), 14.0, 10.5, 10.2, 6.0]
    >>> s = det.score(np.zeros(len(x), dtype=np.int64), np.arange(len(x) * 60.0), x)
    >>> np.round(s[-6:], 3).tolist()  # a spike up, back to normal, a dip
    [0.0, 0.0, 1.0, 0.0, 0.0, 0.599]
    """

    name = "envelope_novelty"

    def __init__(
        self,
        *,
        level_alpha: float = 0.05,
        volatility_alpha: float = 0.02,
        tolerance: float = 0.05,
        volatility_tolerance: float = 0.3,
        refractory: float = 0.98,
        alert_novelty: float = 0.184,
        masked_step: float = 1.0,
        warmup: int = 100,
        learn_below: float = math.inf,
        seed: int = 0,
    ) -> None:
        super().__init__(learn_below=learn_below, seed=seed)
        for label, a in (("level_alpha", level_alpha), ("volatility_alpha", volatility_alpha)):
            if not 0.0 < a <= 1.0:
                raise ValueError(f"{label} must be in (0, 1], got {a}")
        tols = (("tolerance", tolerance), ("volatility_tolerance", volatility_tolerance))
        for label, tol in tols:
            if not tol > 0.0:
                raise ValueError(f"{label} must be positive, got {tol}")
        if not 0.0 <= refractory < 1.0:
            raise ValueError(f"refractory must be in [0, 1), got {refractory}")
        if not 0.0 < alert_novelty < 1.0:
            raise ValueError(f"alert_novelty must be in (0, 1), got {alert_novelty}")
        if masked_step < 0.0:
            raise ValueError(f"masked_step must not be negative, got {masked_step}")
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2, got {warmup}")
        self.level_alpha = level_alpha
        self.volatility_alpha = volatility_alpha
        self.tolerance = tolerance
        self.volatility_tolerance = volatility_tolerance
        self.refractory = refractory
        self.alert_novelty = alert_novelty
        self.masked_step = masked_step
        self.warmup = warmup
        self._gamma = math.log(1.0 - _ALERT_SCORE) / math.log(1.0 - alert_novelty)
        self._tol = np.array([tolerance, tolerance, volatility_tolerance])
        self._n = np.zeros(0, dtype=np.int64)
        self._last = np.zeros(0)
        self._level = np.zeros(0)
        self._vol = np.zeros(0)
        self._refr = np.zeros(0)
        self._hi = np.full((0, _N_FEATURES), -np.inf)
        self._lo = np.full((0, _N_FEATURES), np.inf)
        # Features and novelty of the round just scored, reused by _learn_round.
        self._pending: tuple[IntArray, FloatArray, FloatArray] | None = None

    @classmethod
    def check_params(cls) -> dict[str, Any]:
        """Small parameters for the shared detector check suite."""
        return {"warmup": 10, "level_alpha": 0.2}

    @property
    def n_series(self) -> int:
        """How many series indices the detector holds state for."""
        return len(self._n)

    def _grow(self, n: int) -> None:
        cap = max(n, 2 * len(self._n))
        extra = cap - len(self._n)
        self._n = np.concatenate([self._n, np.zeros(extra, dtype=np.int64)])
        self._last = np.concatenate([self._last, np.zeros(extra)])
        self._level = np.concatenate([self._level, np.zeros(extra)])
        self._vol = np.concatenate([self._vol, np.zeros(extra)])
        self._refr = np.concatenate([self._refr, np.zeros(extra)])
        self._hi = np.concatenate([self._hi, np.full((extra, _N_FEATURES), -np.inf)])
        self._lo = np.concatenate([self._lo, np.full((extra, _N_FEATURES), np.inf)])

    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """Score and learn from the points; see :mod:`aiops.detector`.

        A batch of one series (an offline replay) takes a scalar loop with the same
        arithmetic as the vectorized rounds, which would each hold a single point.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) < 2 or idx[0] != idx[-1] or (idx != idx[0]).any():
            return super().score(idx, timestamps, values)
        if int(idx[0]) >= self.n_series:
            self._grow(int(idx[0]) + 1)
        return self._score_one_series(int(idx[0]), np.asarray(values, dtype=np.float64))

    def _score_one_series(self, i: int, values: FloatArray) -> FloatArray:
        out = np.zeros(len(values))
        n = int(self._n[i])
        last, level = float(self._last[i]), float(self._level[i])
        vol, refr = float(self._vol[i]), float(self._refr[i])
        hi = [float(v) for v in self._hi[i]]
        lo = [float(v) for v in self._lo[i]]
        tol = [float(t) for t in self._tol]
        two = [float(t) for t in _TWO_SIDED]
        a_l, a_v = self.level_alpha, self.volatility_alpha
        gamma, decay = self._gamma, self.refractory
        warmup, learn_below, step_w = self.warmup, self.learn_below, self.masked_step
        settle = warmup // 2
        for k, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            step = abs(x - last) if n > 0 else 0.0
            lv = level + max(a_l, 1.0 / (n + 1)) * (x - level)
            vl = vol + max(a_v, 1.0 / max(n, 1)) * (step - vol)
            feats = (x, lv, vl)
            novelty = 0.0
            if n >= warmup:
                worst = 0.0
                for j in range(_N_FEATURES):
                    mag = max(abs(hi[j]), abs(lo[j]))
                    floor = max(_REL_WIDTH_FLOOR * mag, _ABS_WIDTH_FLOOR)
                    width = max(hi[j] - lo[j], floor)
                    o = max(feats[j] - hi[j], two[j] * (lo[j] - feats[j]))
                    worst = max(worst, max(o, 0.0) / (width * tol[j]))
                novelty = -math.expm1(-worst)
            fresh = max(novelty - refr, 0.0)
            score = 1.0 - (1.0 - fresh) ** gamma
            out[k] = score
            refr = max(decay * refr, novelty)
            last, level, vol = x, lv, vl
            held = not score < learn_below
            for j in range(1 if n < settle else _N_FEATURES):
                f = feats[j]
                if held:
                    reach = step_w * (hi[j] - lo[j]) if math.isfinite(hi[j] - lo[j]) else 0.0
                    f = min(max(f, lo[j] - reach), hi[j] + reach)
                hi[j] = max(hi[j], f)
                lo[j] = min(lo[j], f)
            n += 1
        self._n[i] = n
        self._last[i], self._level[i], self._vol[i], self._refr[i] = last, level, vol, refr
        self._hi[i] = hi
        self._lo[i] = lo
        return out

    def _features(self, idx: IntArray, values: FloatArray) -> FloatArray:
        """Per point: value, level and volatility after taking the point in."""
        n = self._n[idx]
        started = n > 0
        step = np.where(started, np.abs(values - self._last[idx]), 0.0)
        # Running means until the EWMA weight takes over, so that neither starts biased
        # towards the series' first point.
        level = self._level[idx]
        level = level + np.maximum(self.level_alpha, 1.0 / (n + 1)) * (values - level)
        vol = self._vol[idx]
        vol = vol + np.maximum(self.volatility_alpha, 1.0 / np.maximum(n, 1)) * (step - vol)
        out: FloatArray = np.stack([values, level, vol], axis=1)
        return out

    def _score_round(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        feats = self._features(idx, values)
        warm = self._n[idx] >= self.warmup
        novelty = np.zeros(len(idx))
        if warm.any():
            w = np.flatnonzero(warm)
            f, hi, lo = feats[w], self._hi[idx[w]], self._lo[idx[w]]
            mag = np.maximum(np.abs(hi), np.abs(lo))
            floor = np.maximum(_REL_WIDTH_FLOOR * mag, _ABS_WIDTH_FLOOR)
            width = np.maximum(hi - lo, floor)
            out_of = np.maximum(f - hi, _TWO_SIDED * (lo - f))
            excess = np.maximum(out_of, 0.0) / (width * self._tol)
            novelty[w] = -np.expm1(-excess.max(axis=1))
        self._pending = (idx, feats, novelty)
        fresh = np.maximum(novelty - self._refr[idx], 0.0)
        scores: FloatArray = 1.0 - (1.0 - fresh) ** self._gamma
        return scores

    def _learn_round(
        self, idx: IntArray, timestamps: FloatArray, values: FloatArray, mask: BoolArray | None
    ) -> None:
        pending = self._pending
        self._pending = None
        if pending is not None and pending[0] is idx:
            feats, novelty = pending[1], pending[2]
        else:  # not reached through RoundDetector.score: recompute
            self._score_round(idx, timestamps, values)
            assert self._pending is not None
            feats, novelty = self._pending[1], self._pending[2]
            self._pending = None
        n = self._n[idx]
        self._refr[idx] = np.maximum(self.refractory * self._refr[idx], novelty)
        self._last[idx] = values
        self._level[idx] = feats[:, _LEVEL]
        self._vol[idx] = feats[:, _VOLATILITY]
        self._n[idx] = n + 1

        hi, lo = self._hi[idx], self._lo[idx]
        if mask is not None and not mask.all():
            # Protected points widen the envelope by at most masked_step widths.
            held = ~mask
            width = np.where(np.isfinite(hi - lo), hi - lo, 0.0)[held]
            reach = self.masked_step * width
            feats = feats.copy()
            feats[held] = np.clip(feats[held], lo[held] - reach, hi[held] + reach)
        # The smoothed features enter their envelopes only once they have settled.
        young = n < self.warmup // 2
        new_hi = np.maximum(hi, feats)
        new_lo = np.minimum(lo, feats)
        new_hi[young, 1:] = hi[young, 1:]
        new_lo[young, 1:] = lo[young, 1:]
        self._hi[idx] = new_hi
        self._lo[idx] = new_lo

    def state_dict(self) -> dict[str, Any]:
        """Counts, smoothers, refractory levels and envelopes per series, as arrays."""
        k = self.n_series
        return {
            "n": self._n[:k].copy(),
            "last": self._last[:k].copy(),
            "level": self._level[:k].copy(),
            "vol": self._vol[:k].copy(),
            "refr": self._refr[:k].copy(),
            "hi": self._hi[:k].copy(),
            "lo": self._lo[:k].copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._n = np.asarray(state["n"], dtype=np.int64).copy()
        for name in ("last", "level", "vol", "refr"):
            setattr(self, f"_{name}", np.asarray(state[name], dtype=np.float64).copy())
        k = len(self._n)
        self._hi = np.asarray(state["hi"], dtype=np.float64).reshape(k, _N_FEATURES).copy()
        self._lo = np.asarray(state["lo"], dtype=np.float64).reshape(k, _N_FEATURES).copy()
        self._pending = None
