"""Seasonal-trend decomposition by LOESS (STL), refitted on a ring buffer per series."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from aiops.detectors.calibration import Refractory, TailCalibrator, tail_score
from aiops.pipeline.detector import RoundDetector
from aiops.types import BoolArray, FloatArray, IntArray

__all__ = ["STLSeasonal"]

#: A fit needs this many full cycles in the buffer: with two, each cycle-subseries has
#: two points, which a degree-1 seasonal LOESS interpolates exactly, and neither the
#: profile nor the noise estimate (from lag-period differences) means much.
MIN_CYCLES = 3
#: ``period="auto"`` keeps a daily or weekly candidate only if the autocorrelation of the
#: linearly detrended buffer at that lag reaches this. A sine of amplitude ``a`` in noise
#: of sigma ``s`` has lag-period ACF ``a^2 / (a^2 + 2 s^2)``: 0.3 is a cycle of about a
#: 1.3 sigma amplitude, below which seasonal modelling gains little over a level.
MIN_SEASONAL_ACF = 0.3
DAY_SECONDS = 86_400.0
WEEK_SECONDS = 7 * DAY_SECONDS
#: R's ``stats::stl`` defaults, which follow Cleveland et al. (1990): each LOESS is
#: evaluated every ``ceil(window / 10)`` points and interpolated in between. statsmodels
#: evaluates at every point by default, 10 to 100 times slower on long periods.
JUMP_DIVISOR = 10
#: R's ``stats::stl(robust = TRUE)`` iterations: 1 inner and 15 outer (robustness) loops;
#: statsmodels' robust default runs 2 inner loops, twice the cost for the same fit.
ROBUST_INNER_ITER = 1
ROBUST_OUTER_ITER = 15
#: 1 / Phi^-1(3/4): the median absolute deviation of a normal variable times this is sigma.
MAD_TO_SIGMA = 1.4826
#: Mean absolute deviation of a standard normal, sqrt(2/pi): converts the online mean
#: absolute residual into a sigma, as in :mod:`aiops.detectors.robust_ewma`.
MEAN_ABS_TO_SIGMA = math.sqrt(2.0 / math.pi)
#: The profile averages STL's seasonal component over the last (up to) this many cycles:
#: at the end of the buffer the seasonal LOESS extrapolates, and with few cycles the last
#: cycle's seasonal estimate carries most of that cycle's noise.
PROFILE_CYCLES = 3
#: Without a season, the level is the median of this many recent points: robust to 15
#: outliers among them, recent enough to follow drift.
LEVEL_POINTS = 32


class STLSeasonal(RoundDetector):
    """STL decomposition refitted every ``refit_every`` points; online residual scoring.

    Each series keeps a ring buffer of its last ``buffer_size`` points (values and
    timestamps). Every ``refit_every`` learned points it puts the buffer on a regular
    time grid (gaps bridged by linear interpolation) and fits STL (Cleveland et al.,
    1990; statsmodels' ``STL``, robust LOESS by default) to it. It keeps the seasonal
    component, averaged over the last ``PROFILE_CYCLES`` cycles, as a profile indexed by
    phase, and the trend's last value as the level. Between refits a point at time ``t``
    is expected at ``level + profile[phase(t)]``, the phase counting sampling steps since
    the fit from the timestamps (so a gap keeps the phase). Its deviation in sigmas is
    scored as in :mod:`aiops.detectors.robust_ewma`, by how rare it is among the series'
    own past deviations (:class:`~aiops.detectors.calibration.TailCalibrator`, forgetting
    with ``tail_alpha``), with a refractory memory (decay ``refractory``) so that one
    incident scores once; a score is ``1 - p`` for the tail probability ``p``, so a
    threshold means the same for both (and for every detector: the check suite's
    ``calibration`` check). On NAB v1.1 (standard, swept / at the then default threshold
    0.99, on the earlier ``exp(-100 p)`` scale) that was 21 / 22, against 0 / -572 with a
    Gaussian calibration: most NAB files are too short for a season, and the level-only model
    waits for a full buffer. After scoring, the level and the residual
    scale follow the data online (Huber-clipped EWMAs with ``alpha``), and the buffer
    gets the Huber-cleaned value, so one outlier moves neither the level nor the next
    fit's profile by more than ``clip`` sigmas. Before the first fit a series scores 0.

    ``period`` is the season in points, or ``"auto"``: from the median sampling step,
    the daily and weekly periods are candidates if ``MIN_CYCLES`` cycles fit in the
    buffer, and the one with the larger autocorrelation (at least ``MIN_SEASONAL_ACF``)
    wins; with no candidate, auto waits for a full buffer and then models a level only
    (the median of the last ``LEVEL_POINTS`` points). A point whose score is at or above
    ``learn_below`` enters the buffer as its expected value.

    Works well on: metrics with a stable daily or weekly shape (requests, logins, queue
    depth), where a level model either alerts at every peak or, with its scale inflated
    by the cycle, misses incidents that stay inside the daily range. Fails on: seasons
    that change shape faster than a few refits; a second, unmodelled season (a weekly
    swing under a daily period) widens the residual scale and blunts the scores; a level
    shift alerts until the online level (at most ``alpha * clip`` sigmas a point) and
    the next refits absorb it; a long warm-up (``MIN_CYCLES`` cycles: three days of
    points for a daily season, so seed it from history); per-point sampling jitter below
    half a step is fine, irregular sampling is not.

    Cost: ``2 * buffer_size + buffer_size / 3`` floats per series (80 kB with the
    defaults). Scoring and the online updates are a few numpy operations per round of a
    batch; a refit is one STL fit, linear in the buffer thanks to R's LOESS jumps
    (``JUMP_DIVISOR``): measured 7 ms for 336 points with a daily period, 18 ms for
    1000 and 90 to 100 ms for the default 4320 (periods 288 and 1440), with
    ``robust=True``, about 3 times less without. Amortized over ``refit_every`` points:
    100 series x 1000 hourly points in batches of 100 run at about 22,000 points/s with
    the defaults and 3,000 points/s with ``buffer_size=336, refit_every=24`` (9,000
    non-robust), on one core.

    Parameters
    ----------
    period
        Points per season (at least 2), or ``"auto"``.
    buffer_size
        Points kept per series; the default holds three days of 1-minute points (a
        daily season) or 15 days of 5-minute points.
    refit_every
        Learned points between refits (per series); also the retry interval while the
        buffer is too short for a fit.
    seasonal
        STL's seasonal smoother length (odd, at least 3); larger is a stiffer season.
    seasonal_deg
        Degree of STL's seasonal LOESS. 0 (local mean; statsmodels' default is 1) because
        at the end of the buffer a local line extrapolates each cycle-subseries' slope:
        with a handful of cycles the last cycle's noise, or an outlier, then becomes part
        of the profile and alerts one period later.
    robust
        STL's robust (outlier-downweighting) fit, with R's iteration counts; about 3
        times slower.
    alpha
        Smoothing factor of the online level and residual scale between refits.
    clip
        Residuals are clipped to this many sigmas before they are learned.
    min_scale, rel_min_scale
        The sigma floor: ``max(min_scale, rel_min_scale * |level|)``.
    tail_alpha
        Per-point forgetting of the deviations' tail (its memory is about
        ``1 / tail_alpha`` points).
    refractory
        Per-point decay of the refractory memory, in ``[0, 1)``; 0 disables it.

    A series of 40 points with a season of 4 and a spike at point 35; the first fit
    comes after three cycles, so points 0 to 11 score 0:

    >>> det = STLSeasonal(period=4, buffer_size=16, refit_every=4)
    >>> x = np.tile([10.0, 12.0, 10.0, 8.0], 10) + np.random.default_rng(0).normal(0, 0.2, 40)
    >>> x[35] = 15.0
    >>> scores = det.score(np.zeros(40, dtype=np.int64), np.arange(40.0) * 60, x)
    >>> np.round(scores[30:], 2).tolist()
    [0.04, 0.15, 0.05, 0.16, 0.44, 1.0, 0.0, 0.0, 0.0, 0.0]
    """

    name = "stl"

    def __init__(
        self,
        *,
        period: int | str = "auto",
        buffer_size: int = 4320,
        refit_every: int = 360,
        seasonal: int = 7,
        seasonal_deg: int = 0,
        robust: bool = True,
        alpha: float = 0.05,
        clip: float = 3.0,
        min_scale: float = 1e-9,
        rel_min_scale: float = 1e-4,
        tail_alpha: float = 0.001,
        refractory: float = 0.995,
        learn_below: float = math.inf,
        seed: int = 0,
    ) -> None:
        super().__init__(learn_below=learn_below, seed=seed)
        if buffer_size < 2 * MIN_CYCLES:
            raise ValueError(f"buffer_size must be at least {2 * MIN_CYCLES}, got {buffer_size}")
        if period != "auto":
            if isinstance(period, bool) or not isinstance(period, int) or period < 2:
                raise ValueError(f'period must be "auto" or an integer >= 2, got {period!r}')
            if MIN_CYCLES * period > buffer_size:
                raise ValueError(
                    f"buffer_size {buffer_size} holds fewer than {MIN_CYCLES} cycles of "
                    f"period {period}; make it at least {MIN_CYCLES * period}"
                )
        if refit_every < 1:
            raise ValueError(f"refit_every must be at least 1, got {refit_every}")
        if seasonal < 3 or seasonal % 2 == 0:
            raise ValueError(f"seasonal must be an odd integer >= 3, got {seasonal}")
        if seasonal_deg not in (0, 1):
            raise ValueError(f"seasonal_deg must be 0 or 1, got {seasonal_deg}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        if min_scale <= 0 or rel_min_scale < 0:
            raise ValueError("min_scale must be positive and rel_min_scale not negative")
        self.period = period
        self.buffer_size = buffer_size
        self.refit_every = refit_every
        self.seasonal = seasonal
        self.seasonal_deg = seasonal_deg
        self.robust = robust
        self.alpha = alpha
        self.clip = clip
        self.min_scale = min_scale
        self.rel_min_scale = rel_min_scale
        self.tail_alpha = tail_alpha
        self.refractory = refractory
        self._tail = TailCalibrator(alpha=tail_alpha)  # validates tail_alpha
        self._refr = Refractory(decay=refractory)  # validates refractory
        self._max_period = buffer_size // MIN_CYCLES
        self._n = 0
        self._alloc(0)

    @classmethod
    def check_params(cls) -> dict[str, Any]:
        """Small parameters for the shared detector check suite (hourly points)."""
        return {"period": 24, "buffer_size": 96, "refit_every": 24}

    # -- state -------------------------------------------------------------------------

    _FIELDS: ClassVar[tuple[tuple[str, type, float], ...]] = (
        ("head", np.int64, 0),
        ("count", np.int64, 0),
        ("since", np.int64, 0),
        ("fitted", np.bool_, False),
        ("season", np.int64, 0),
        ("fit_t", np.float64, 0.0),
        ("step", np.float64, 0.0),
        ("level", np.float64, 0.0),
        ("dev", np.float64, 0.0),
    )

    _head: IntArray
    _count: IntArray
    _since: IntArray
    _fitted: BoolArray
    _season: IntArray
    _fit_t: FloatArray
    _step: FloatArray
    _level: FloatArray
    _dev: FloatArray

    def _alloc(self, cap: int) -> None:
        self._buf_v = np.zeros((cap, self.buffer_size))
        self._buf_t = np.zeros((cap, self.buffer_size))
        self._profile = np.zeros((cap, self._max_period))
        for field, dtype, fill in self._FIELDS:
            setattr(self, f"_{field}", np.full(cap, fill, dtype=dtype))

    @property
    def n_series(self) -> int:
        """How many series indices the detector holds state for."""
        return self._n

    def _grow(self, n: int) -> None:
        cap = len(self._head)
        if n > cap:
            new_cap = max(n, 2 * cap)
            old = {f: getattr(self, f"_{f}") for f, _, _ in self._FIELDS}
            bufs = (self._buf_v, self._buf_t, self._profile)
            self._alloc(new_cap)
            for f, arr in old.items():
                getattr(self, f"_{f}")[:cap] = arr
            self._buf_v[:cap], self._buf_t[:cap], self._profile[:cap] = bufs
        self._n = max(self._n, n)
        self._tail.grow(self._n)
        self._refr.grow(self._n)

    def state_dict(self) -> dict[str, Any]:
        """Buffers, fitted profiles, levels, scales, tails and memories, as arrays."""
        n = self._n
        state: dict[str, Any] = {f: getattr(self, f"_{f}")[:n].copy() for f, _, _ in self._FIELDS}
        state["buf_v"] = self._buf_v[:n].copy()
        state["buf_t"] = self._buf_t[:n].copy()
        state["profile"] = self._profile[:n].copy()
        state["tail"] = self._tail.state_dict(n)
        state["refractory"] = self._refr.state_dict(n)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        n = len(state["head"])
        expect = {"buf_v": self.buffer_size, "buf_t": self.buffer_size}
        expect["profile"] = self._max_period
        for key, width in expect.items():
            shape = np.shape(state[key])
            if shape != (n, width):
                raise ValueError(f"stl state {key!r} has shape {shape}, expected ({n}, {width})")
        self._alloc(n)
        self._n = n
        for f, dtype, _ in self._FIELDS:
            getattr(self, f"_{f}")[:] = np.asarray(state[f], dtype=dtype)
        self._buf_v[:] = np.asarray(state["buf_v"], dtype=np.float64)
        self._buf_t[:] = np.asarray(state["buf_t"], dtype=np.float64)
        self._profile[:] = np.asarray(state["profile"], dtype=np.float64)
        self._tail.load_state_dict(state["tail"])
        self._refr.load_state_dict(state["refractory"])

    # -- scoring -----------------------------------------------------------------------

    def _expected(self, idx: IntArray, timestamps: FloatArray) -> FloatArray:
        step = self._step[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.rint((timestamps - self._fit_t[idx]) / step)
        by_count = (self._since[idx] + 1).astype(np.float64)
        off = np.where((step > 0) & np.isfinite(off) & (np.abs(off) < 2**52), off, by_count)
        season = self._season[idx]
        phase = np.mod(off.astype(np.int64), np.maximum(season, 1))
        seasonal = np.where(season > 0, self._profile[idx, phase], 0.0)
        out: FloatArray = self._level[idx] + seasonal
        return out

    def _sigma(self, idx: IntArray) -> FloatArray:
        floor = np.maximum(self.min_scale, self.rel_min_scale * np.abs(self._level[idx]))
        out: FloatArray = np.maximum(self._dev[idx] / MEAN_ABS_TO_SIGMA, floor)
        return out

    def _surprise(
        self, idx: IntArray, timestamps: FloatArray, values: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Per point: the deviation in sigmas and its surprise ``-ln p`` (no state change)."""
        z = np.abs(values - self._expected(idx, timestamps)) / self._sigma(idx)
        return z, self._tail.surprise(idx, z)

    def _score_round(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        _, surprise = self._surprise(idx, timestamps, values)
        scores: FloatArray = tail_score(self._refr.fresh(idx, surprise))
        scores[~self._fitted[idx]] = 0.0
        return scores

    def _learn_round(
        self, idx: IntArray, timestamps: FloatArray, values: FloatArray, mask: BoolArray | None
    ) -> None:
        fitted = self._fitted[idx]
        if fitted.any():
            # The refractory memory follows every scored point; the tail learns only the
            # points that are learned from.
            f = np.flatnonzero(fitted)
            z, surprise = self._surprise(idx[f], timestamps[f], values[f])
            self._refr.update(idx[f], surprise)
            if mask is not None:
                z, f = z[mask[f]], f[mask[f]]
            self._tail.update(idx[f], z)
        if mask is not None:
            # Not learned from: fitted series store the expected value (keeping the time
            # grid of the buffer), unfitted ones (which score 0) cannot be masked here.
            keep = mask | fitted
            idx, timestamps, values, mask, fitted = (
                idx[keep],
                timestamps[keep],
                values[keep],
                mask[keep],
                fitted[keep],
            )
        expected = self._expected(idx, timestamps)
        if mask is not None:
            values = np.where(mask, values, expected)
        upd = fitted if mask is None else fitted & mask
        if upd.any():
            i = idx[upd]
            sigma = self._sigma(i)
            r = np.clip(values[upd] - expected[upd], -self.clip * sigma, self.clip * sigma)
            # The buffer gets the Huber-cleaned value (Gelper, Fried and Croux, 2010), so
            # a spike does not echo one period later through the refitted profile.
            values = values.copy()
            values[upd] = expected[upd] + r
            self._level[i] += self.alpha * r
            self._dev[i] += self.alpha * (np.abs(r) - self._dev[i])
        head = self._head[idx]
        self._buf_v[idx, head] = values
        self._buf_t[idx, head] = timestamps
        self._head[idx] = (head + 1) % self.buffer_size
        self._count[idx] = np.minimum(self._count[idx] + 1, self.buffer_size)
        self._since[idx] += 1
        for i in idx[self._since[idx] >= self.refit_every].tolist():
            self._refit(i)

    # -- fitting -----------------------------------------------------------------------

    def _refit(self, i: int) -> None:
        count = int(self._count[i])
        pos = (int(self._head[i]) - count + np.arange(count)) % self.buffer_size
        v, t = self._buf_v[i, pos], self._buf_t[i, pos]
        self._since[i] = 0  # refit or retry after another refit_every points
        dt = np.diff(t)
        dt = dt[np.isfinite(dt) & (dt > 0)]
        step = float(np.median(dt)) if len(dt) else 0.0
        grid, now = self._regular_grid(v, t, step)
        season = self._choose_period(grid, step, bool(self._fitted[i]))
        if season is None:
            return
        if season:
            level, profile = self._stl(grid, now, season)
            self._profile[i, :season] = profile
        else:
            level = float(np.median(grid[max(0, now + 1 - LEVEL_POINTS) : now + 1]))
        if not self._fitted[i]:
            # The first residual scale. STL's own residuals are far smaller than the noise
            # with few cycles (the seasonal LOESS nearly interpolates each cycle-subseries),
            # so it comes from lag-season differences (variance 2 sigma^2 for a stable
            # season; winsorized at `clip` MAD-sigmas), widened for the noise of the
            # profile averaged over `cycles` cycles. Later the online, out-of-sample scale
            # takes over, and a refit does not reset it.
            lag = max(season, 1)
            cycles = min(PROFILE_CYCLES, (now + 1) // lag) if season else LEVEL_POINTS
            d = grid[lag:] - grid[:-lag]
            d = d - np.median(d)
            mad_sigma = MAD_TO_SIGMA * float(np.median(np.abs(d)))
            d = np.clip(d, -self.clip * mad_sigma, self.clip * mad_sigma)
            sigma = math.sqrt(float(np.mean(d * d)) / 2.0 * (1.0 + 1.0 / max(cycles, 1)))
            self._dev[i] = sigma * MEAN_ABS_TO_SIGMA
        self._fitted[i] = True
        self._season[i] = season
        self._level[i] = level
        self._fit_t[i] = t[-1]
        self._step[i] = step

    def _regular_grid(self, v: FloatArray, t: FloatArray, step: float) -> tuple[FloatArray, int]:
        """The buffer on a regular time grid, and the grid index of the newest point.

        STL assumes regular sampling: a gap that filled no buffer slots would shift every
        older cycle against the newer ones. So points go to the slot of their timestamp
        (``step`` apart, the latest point of a slot wins), the last ``buffer_size`` slots
        are kept, and empty slots are filled by linear interpolation.
        """
        n = len(v)
        if step <= 0:
            return v, n - 1
        off = np.clip(np.rint((t - t[-1]) / step), -(2.0**40), 2.0**40).astype(np.int64)
        slots, first = np.unique(off[::-1], return_index=True)
        vals = v[::-1][first]
        keep = slots > slots[-1] - self.buffer_size
        slots, vals = slots[keep], vals[keep]
        grid: FloatArray = np.interp(np.arange(slots[0], slots[-1] + 1), slots, vals)
        return grid, int(np.clip(-slots[0], 0, len(grid) - 1))

    def _choose_period(self, v: FloatArray, step: float, fitted: bool) -> int | None:
        """Season length in points, 0 for none, None for "not enough data yet"."""
        n = len(v)
        if self.period != "auto":
            period = int(self.period)
            return period if n >= MIN_CYCLES * period else None
        best, best_acf = 0, MIN_SEASONAL_ACF
        if step > 0:
            k = np.arange(n, dtype=np.float64)
            d = v - np.polyval(np.polyfit(k, v, 1), k) if n > 2 else v - v.mean()
            denom = float(d @ d)
            for seconds in (DAY_SECONDS, WEEK_SECONDS):
                p = round(seconds / step)
                if p < 2 or MIN_CYCLES * p > n or p > self._max_period or denom <= 0:
                    continue
                acf = float(d[:-p] @ d[p:]) / denom
                if acf >= best_acf:
                    best, best_acf = p, acf
        if best == 0 and not fitted and n < self.buffer_size:
            return None
        return best

    def _stl(self, grid: FloatArray, now: int, period: int) -> tuple[float, FloatArray]:
        """STL on the grid: (trend at ``now``, seasonal profile indexed by phase)."""
        from statsmodels.tsa.seasonal import STL

        # statsmodels' default trend and low-pass lengths, spelled out for the jumps.
        trend = math.ceil(1.5 * period / (1.0 - 1.5 / self.seasonal))
        trend += int(trend % 2 == 0)
        low_pass = period + 1 + int(period % 2 == 1)
        res = STL(
            grid,
            period=period,
            seasonal=self.seasonal,
            seasonal_deg=self.seasonal_deg,
            trend=trend,
            low_pass=low_pass,
            robust=self.robust,
            seasonal_jump=math.ceil(self.seasonal / JUMP_DIVISOR),
            trend_jump=math.ceil(trend / JUMP_DIVISOR),
            low_pass_jump=math.ceil(low_pass / JUMP_DIVISOR),
        ).fit(
            inner_iter=ROBUST_INNER_ITER if self.robust else None,
            outer_iter=ROBUST_OUTER_ITER if self.robust else None,
        )
        seasonal = np.asarray(res.seasonal, dtype=np.float64)
        cycles = min(PROFILE_CYCLES, (now + 1) // period)
        last = seasonal[now + 1 - cycles * period : now + 1].reshape(cycles, period).mean(axis=0)
        # last[q] sits at offset q - (period - 1) from `now`: phase (q + 1) mod period.
        return float(res.trend[now]), np.roll(last, 1)
