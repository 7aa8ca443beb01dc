"""EWMA z-score with a per-series tail calibration, compiled as one loop over points.

See :class:`EwmaZ`.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from aiops.pipeline.detector import Detector, checked_batch, grown
from aiops.state.rulestate import Live, adopt
from aiops.types import FloatArray, IntArray

__all__ = ["EwmaZ"]

#: A held point (see ``_HOLD_SCORE``) still moves the level and variance, but with its
#: residual clipped to this many standard deviations (a Huber step): a spike
#: does not become the new normal, and a permanent level shift is absorbed after a few
#: dozen points instead of alerting for ever. On the KPI development data, skipping such
#: points altogether took best F1 from 0.71 to 0.20 (every level shift alerted until the
#: end of the series); clipping at 3 kept 0.70.
HELD_CLIP = 3.0
#: Points scoring at least this (one normal point in 1,000), or at least the rule's
#: ``learn_below`` if lower, are *held*: the level and variance learn them clipped (a
#: Huber-robust estimate), so the model barely depends on the alert threshold.
_HOLD_SCORE = 0.999
#: Points scoring at least this (one normal point in 100,000) stay out of the tail
#: statistics: clear incidents do not teach the series that incidents are normal, and on
#: stationary noise so few points are left out that the tail is not biased. Leaving out
#: every held point instead (p < 1e-3) made the tail too short: 5x too many scores above
#: 0.999 on Student-t(3) noise, 15x on Poisson(0.5) counts.
_TAIL_HOLD_SCORE = 1.0 - 1e-5
#: Default of ``max_held_share``: a series whose points were held at more than this
#: long-run rate (ten times the 1 in 1,000 that a calibrated score holds) learns every
#: point as it is. Incidents are rare by definition; a series where "incidents" are one
#: point in a hundred (a disk idle at zero with a write burst every few minutes, a
#: flat error count with frequent bursts) has them as its normal behaviour. Without this,
#: holding is self-sustaining there: the clipped variance never learns the bursts, so
#: every burst is held again (NAB's ec2_disk_write_bytes_1ef3de: 8% of points scored
#: 0.998 or more, 0.9% with it). Measured (KPI best / own F1 whole and 2nd half; NAB
#: standard swept / own): without 0.713 / 0.705, 0.819 / 0.817, 22.5 / 33.5; at 0.01
#: 0.715 / 0.707, 0.831 / 0.824, 41.1 / 39.2; at 0.005 0.715 / 0.707, 0.831 / 0.823,
#: 38.1 / 37.9.
MAX_HELD_SHARE = 0.01
#: A deviation smaller than this many times the series' long-run mean absolute
#: deviation (from its long-run mean) never scores: a quiet hour of a busy series has a
#: tiny local sigma, and its ordinary wiggles would otherwise be "many sigmas". On
#: stationary noise the gate sits below 1 sigma and never touches the tail (calibration
#: is unchanged). KPI development data, measured when it was added: best F1 0.685 ->
#: 0.705, own-alert F1 0.687 -> 0.702 (0.5: 0.698 / 0.697; 1.5: 0.712 / 0.705); 1 is kept
#: as the natural unit.
MATERIALITY = 1.0
#: Weight of the long-run mean and mean absolute deviation behind ``MATERIALITY``
#: (memory about 1,000 points; 3e-4 and 3e-3 are within 0.004 of it on the KPIs).
_LONG_ALPHA = 1e-3
#: After the warm-up a point moves the long-run mean and deviation by at most this many
#: long-run deviations (the mean excess of the tail is capped the same way).
_LONG_CAP = 10.0
#: The stuck-value check applies to series that repeat their previous value exactly at
#: most this often (continuous gauges): counts and quantized series repeat all the time,
#: and a run of equal values says nothing there.
STUCK_MAX_REPEAT = 0.1
#: The repeat rate never counts as less than this (a series that never repeated): a run
#: of ``r`` repeats then has a probability of at most ``1e-3 ** r``.
_REPEAT_FLOOR = 1e-3
#: A stuck value is a run: at least this many repeats in a row (three equal points). One
#: repeat of a gauge that repeats one point in 1,000 scored exactly 0.998 (the default
#: threshold, with the Bonferroni factor); on the KPI development data 180 normal points
#: and 6 labelled ones scored that. From 1 to 2 (KPI best / own F1 whole and 2nd half;
#: NAB standard swept / own; fleet): 0.715 / 0.707, 0.831 / 0.824, 41.07 / 39.21, 46/58
#: -> 0.719 / 0.710, 0.835 / 0.827, 41.02 / 39.93, 46/58.
STUCK_MIN_RUN = 2
#: Default of ``shift_alpha``: the EWMA weight of the level-shift channel's mean of
#: clipped deviations (memory about 3 points; see ``shift_weight``). A spike clipped to
#: ``HELD_CLIP`` sigmas moves it by at most 0.9 sigma (2.1 of its own sigmas); a deviation
#: of 3 sigmas or more that stays takes it to 6 of its own sigmas in about 5 points.
SHIFT_ALPHA = 0.3
#: A point arrives after a scrape gap when the time since the series' previous point
#: exceeds this many times its typical interval (a running median of the intervals).
GAP_FACTOR = 1.5
#: Step of the typical interval's running (frugal, geometric) median per point: a series
#: that changes its scrape interval is followed within about a hundred points.
_INTERVAL_STEP = 0.05
#: The standard deviation never counts as less than this share of the level (plus an
#: absolute epsilon): a series constant so far scores its first move as very rare, not
#: as a division by zero.
_REL_SD_FLOOR = 1e-6
_ABS_SD_FLOOR = 1e-9
#: numba keys its on-disk cache by source file but records the importing module's name:
#: this file is both ``aiops.detectors.ewma_z`` (installed) and ``detectors.ewma_z``
#: (pytest's doctest collection of the source folder), and a cache written under one
#: name fails to load under the other. Only the installed name caches.
_CACHE = __name__ == "aiops.detectors.ewma_z"


#: State arrays narrower than float64 (the rest are float64, the count int64): shares,
#: the run of repeats, the usual interval and the incident's point count need no more
#: (20 bytes a series less; the KPI, NAB and fleet figures of bench/quality are
#: unchanged by it, to their printed digits).
_DTYPES: dict[str, Any] = {
    "repeat": np.float32,
    "held": np.float32,
    "interval": np.float32,
    "base_n": np.float32,
}


@numba.njit(cache=_CACHE, nogil=True)
def _tail_p(z: float, q: float, m: float, m2: float, u0: float, shape_max: float) -> float:
    """Tail probability of a deviation ``z``: linear to ``q`` at ``u0``, then Pareto.

    Beyond ``u0`` the excess follows a generalized Pareto distribution whose scale and
    shape come from the decayed first and second moments of the excesses (``m``, ``m2``;
    the method of moments: shape ``(1 - m^2 / var) / 2``), the shape clipped to
    ``[0, shape_max]``: 0 is the exponential tail of light-tailed noise, a positive shape
    the power-law tail of latencies and counts with bursts.
    """
    if z <= u0:
        return 1.0 - (1.0 - q) * z / u0
    y = z - u0
    var = max(m2 - m * m, 1e-12)
    shape = min(shape_max, max(0.0, 0.5 * (1.0 - m * m / var)))
    if shape < 1e-6:
        return q * math.exp(-y / m)
    scale = 0.5 * m * (m * m / var + 1.0)
    return q * (1.0 + shape * y / scale) ** (-1.0 / shape)


@numba.njit(cache=_CACHE, nogil=True)
def _learn_tail(
    i: int, z: float, u0: float, alpha: float, q: FloatArray, m: FloatArray, m2: FloatArray
) -> None:
    """Series ``i``'s tail statistics (share beyond ``u0``, excess moments) learn ``z``."""
    beyond = 1.0 if z > u0 else 0.0
    q[i] += alpha * (beyond - q[i])
    if beyond:
        # The mean excess learns from the exceedances only, so its weight is the tail
        # weight over the exceedance share; capped so that one huge point cannot triple it.
        w = min(alpha / max(q[i], alpha), 0.5)
        excess = min(z - u0, 10.0 * m[i])
        m[i] += w * (excess - m[i])
        m2[i] += w * (excess * excess - m2[i])


@numba.njit(cache=_CACHE, nogil=True)
def _score_points(
    idx: IntArray,
    values: FloatArray,
    out: FloatArray,
    n: IntArray,
    mu: FloatArray,
    var: FloatArray,
    long_mu: FloatArray,
    long_dev: FloatArray,
    last: FloatArray,
    run: IntArray,
    repeat: FloatArray,
    q: FloatArray,
    m: FloatArray,
    m2: FloatArray,
    held: FloatArray,
    shift: FloatArray,
    q_shift: FloatArray,
    m_shift: FloatArray,
    m2_shift: FloatArray,
    timestamps: FloatArray,
    last_t: FloatArray,
    interval: FloatArray,
    base_mu: FloatArray,
    base_sd: FloatArray,
    base_dev: FloatArray,
    base_n: FloatArray,
    q_drift: FloatArray,
    m_drift: FloatArray,
    m2_drift: FloatArray,
    incident_memory: float,
    alpha: float,
    variance_alpha: float,
    warmup: int,
    tail_start: float,
    tail_alpha: float,
    tail_shape_max: float,
    learn_below: float,
    stuck: bool,
    max_held_share: float,
    shift_weight: float,
    shift_alpha: float,
    gap_recheck: bool,
    drift_weight: float,
) -> None:
    """Score and learn every point in order; the whole detector is this loop."""
    hold = min(learn_below, _HOLD_SCORE)
    for k in range(len(idx)):
        i = idx[k]
        x = values[k]
        out[k] = 0.0
        if not math.isfinite(x):
            continue
        c = n[i]
        t = timestamps[k]
        dt = t - last_t[i]
        if c == 0:
            last_t[i] = t
            interval[i] = 0.0
            base_sd[i] = 0.0
            mu[i] = x
            var[i] = 0.0
            long_mu[i] = x
            long_dev[i] = 0.0
            last[i] = x
            run[i] = 0
            repeat[i] = 0.0
            n[i] = 1
            continue
        d = x - mu[i]
        sd = math.sqrt(var[i]) + _ABS_SD_FLOOR + _REL_SD_FLOOR * abs(mu[i])
        z = abs(d) / sd
        same = x == last[i]
        r = run[i] + 1 if same else 0
        material = abs(d) >= MATERIALITY * long_dev[i]
        p = 1.0
        if c >= warmup and material:
            p = _tail_p(z, q[i], m[i], m2[i], tail_start, tail_shape_max)
        if c >= warmup and (shift_weight > 0.0 or drift_weight > 0.0):
            # The point's own share of the false-alarm budget (weighted Bonferroni).
            p = min(1.0, p / (1.0 - shift_weight - drift_weight))
        s = shift[i]
        z_shift = 0.0
        if shift_weight > 0.0 and c >= warmup:
            # The level-shift channel: a short EWMA of the signed deviations, each clipped
            # to HELD_CLIP sigmas (so one spike moves it little), in its own sigmas (its
            # standard deviation on independent unit residuals), with its own tail.
            s = (1.0 - shift_alpha) * s + shift_alpha * max(-HELD_CLIP, min(HELD_CLIP, d / sd))
            z_shift = abs(s) / math.sqrt(shift_alpha / (2.0 - shift_alpha))
            p_shift = 1.0
            if material:
                p_shift = _tail_p(
                    z_shift, q_shift[i], m_shift[i], m2_shift[i], tail_start, tail_shape_max
                )
            p = min(p, p_shift / shift_weight)
        z_drift = 0.0
        p_drift = 1.0
        # Only on continuous gauges (as the stuck check): on a count, quantized or mostly
        # idle series the long-run deviation can shrink to nothing between bursts.
        drift_seen = (
            drift_weight > 0.0
            and c >= warmup
            and long_dev[i] > 0.0
            and repeat[i] <= STUCK_MAX_REPEAT
        )
        if drift_seen:
            # The slow-drift channel: how far the level (with this point, clipped to
            # HELD_CLIP sigmas as a held point would move it) has left the long-run mean, in
            # long-run mean absolute deviations, with its own tail. A drift that the level
            # follows step by step still leaves the long-run mean behind.
            a_now = max(alpha, 1.0 / (c + 1))
            mu_now = mu[i] + a_now * max(-HELD_CLIP * sd, min(HELD_CLIP * sd, d))
            z_drift = abs(mu_now - long_mu[i]) / long_dev[i]
            p_drift = _tail_p(
                z_drift, q_drift[i], m_drift[i], m2_drift[i], tail_start, tail_shape_max
            )
            p = min(p, p_drift / drift_weight)
        # The incident memory: an incident is open (base_sd > 0) from a held point until the
        # series' smoothed deviation from the normal before it, ``base_dev``, is back
        # within ``tail_start`` of that normal's sigmas.
        open_before = base_sd[i] > 0.0
        if open_before:
            db = x - base_mu[i]
            base_dev[i] += SHIFT_ALPHA * (db - base_dev[i])
            if abs(base_dev[i]) < tail_start * base_sd[i]:
                # Back at its normal. The level, which had learned the incident, now
                # catches up with the return, and those points are held too: they open no
                # incident of their own (the marker -1) until a point is not held.
                base_sd[i] = -1.0
            elif c - base_n[i] > incident_memory:
                base_sd[i] = 0.0
            elif (
                gap_recheck
                and c >= warmup
                and interval[i] > 0.0
                and dt > GAP_FACTOR * interval[i]
                and abs(db) >= MATERIALITY * long_dev[i]
            ):
                # The first point after a scrape gap in an open incident: the gap does not
                # end it, and the level that learned the incident meanwhile is no
                # reference; the point is scored against the normal before the incident.
                z_base = abs(db) / base_sd[i]
                p = min(p, _tail_p(z_base, q[i], m[i], m2[i], tail_start, tail_shape_max))
        if interval[i] < 0.0:
            # Restored from a state without it: the previous point's time is unknown,
            # so this point starts the interval afresh.
            interval[i] = 0.0
        elif dt > 0.0:
            if interval[i] == 0.0:
                interval[i] = dt
            elif dt > interval[i]:
                interval[i] *= math.exp(_INTERVAL_STEP)
            elif dt < interval[i]:
                interval[i] *= math.exp(-_INTERVAL_STEP)
        last_t[i] = t
        if stuck and c >= warmup and repeat[i] <= STUCK_MAX_REPEAT:
            # Runs of equal values of a series that repeats with rate rho are geometric:
            # ``r`` repeats in a row have probability rho ** r. Two checks: Bonferroni.
            p_stuck = max(repeat[i], _REPEAT_FLOOR) ** r if r >= STUCK_MIN_RUN else 1.0
            p = min(1.0, 2.0 * min(p, p_stuck))
        score = 1.0 - p if c >= warmup else 0.0
        out[k] = score
        # Held points are a series' rare incidents; held often, they are its normal.
        frequent = held[i] > max_held_share
        if c >= warmup:
            held[i] += _LONG_ALPHA * ((1.0 if score >= hold else 0.0) - held[i])
        if score >= hold and not frequent:
            d = max(-HELD_CLIP * sd, min(HELD_CLIP * sd, d))
            if base_sd[i] == 0.0:
                # An incident opens: the normal before it is the level and sigma so far.
                base_mu[i] = mu[i]
                base_sd[i] = sd
                base_dev[i] = x - mu[i]
                base_n[i] = c
        elif base_sd[i] < 0.0:
            base_sd[i] = 0.0
        if c >= warmup and (score < _TAIL_HOLD_SCORE or frequent):
            # The tails are those of the series' normal points: held points stay out.
            _learn_tail(i, z, tail_start, tail_alpha, q, m, m2)
            if shift_weight > 0.0:
                _learn_tail(i, z_shift, tail_start, tail_alpha, q_shift, m_shift, m2_shift)
            if drift_seen and (p_drift > drift_weight * (1.0 - hold) or frequent):
                # A drift lasts: its points would teach the tail that it is normal as it
                # builds up, so those that the drift channel alone holds stay out.
                _learn_tail(i, z_drift, tail_start, tail_alpha, q_drift, m_drift, m2_drift)
        shift[i] = s
        # Running means until the exponential weights take over, so that neither the
        # level nor the variance starts biased towards the series' first point.
        a = max(alpha, 1.0 / (c + 1))
        av = max(variance_alpha, 1.0 / c)
        mu[i] += a * d
        var[i] = (1.0 - av) * (var[i] + av * d * d)
        al = max(_LONG_ALPHA, 1.0 / (c + 1))
        # One huge point may not blind the gate for a thousand points: its step is capped
        # (but not at zero: a series flat through its warm-up must still learn a scale).
        step = x - long_mu[i]
        if c >= warmup and long_dev[i] > 0.0:
            cap = _LONG_CAP * long_dev[i]
            step = max(-cap, min(cap, step))
        long_dev[i] += al * (abs(step) - long_dev[i])
        long_mu[i] += al * step
        repeat[i] += al * ((1.0 if same else 0.0) - repeat[i])
        last[i] = x
        run[i] = r
        n[i] = c + 1


def _gaussian_excess(u0: float) -> tuple[float, float]:
    """Share of a standard Gaussian beyond ``|z| = u0`` and its mean excess there."""
    q = math.erfc(u0 / math.sqrt(2.0))
    density = math.exp(-0.5 * u0 * u0) / math.sqrt(2.0 * math.pi)
    # E[|Z| - u0 | |Z| > u0] = 2 * phi(u0) / q - u0 (the inverse Mills ratio).
    return q, 2.0 * density / q - u0


class EwmaZ(Detector):
    """The point's deviation from an exponentially weighted level, in local sigmas.

    Per series: a level ``mu`` (an EWMA of weight ``alpha``) and a variance (an EWMA of
    weight ``variance_alpha`` of the squared residuals). A point's deviation is
    ``z = |x - mu| / sigma`` against the level and variance *before* the point. The
    score is ``1 - p`` with ``p`` the tail probability of ``z`` among the series' own
    normal points: a peaks-over-threshold model (as in Siffer et al.'s SPOT, 2017) keeps
    the decayed share ``q`` of deviations beyond ``tail_start`` and the decayed first two
    moments of their excess, and beyond it ``p`` is ``q`` times the survival function of
    a generalized Pareto distribution fitted to those moments (exponential when the
    excesses look exponential; linear from 1 at ``z = 0`` to ``q`` below). They start
    from a standard Gaussian's values, so a young series is scored as Gaussian until its
    own tail is known; a heavy-tailed or spiky series learns a larger share, a longer
    excess and a heavier shape, so the same ``z`` is less rare there. A deviation
    smaller than ``MATERIALITY`` times the series' long-run mean absolute deviation
    never scores (a quiet night of a busy series has a tiny local sigma). A score ``s``
    thus means that about a fraction ``1 - s`` of the series'
    normal points score ``s`` or more.

    Works well on: spikes, dips and level shifts relative to the recent level and
    volatility, inside the range seen so far too (the web-service KPIs: a 15-line
    version of this detector is the strong baseline of that benchmark), noisy and
    quantized series, scrape gaps; with ``drift_weight``, slow drifts of a gauge that
    the level follows step by step. Fails on: a daily cycle whose regular steep edges
    look like shifts on a volatile-free series; slow drifts without the drift channel,
    and on count or quantized series (the level follows them);
    changes of shape that keep the level (a missing daily peak, a night that stays high:
    there is no seasonal model; a flat stretch of a count series); and records on
    slowly varying series (NAB's "new extreme" anomalies, ``envelope_novelty``'s
    strength). The level adapts within
    about ``1 / alpha`` points, so a sustained shift alerts at its start and is normal a
    few dozen points later.

    Held points: a point scoring at or above ``min(learn_below, 0.999)`` moves the level
    and variance with its residual clipped to ``HELD_CLIP`` sigmas, so that an incident
    does not become the new normal; the level still reaches a permanent shift within a few
    dozen points. Points scoring ``1 - 1e-5`` or more also stay out of the tail
    statistics. A series whose long-run share of held points exceeds ``max_held_share``
    learns every point unclipped (and its tail from every point): what happens that
    often is its normal behaviour, and holding it would keep its variance and tail from
    ever learning it (a disk idle at zero with frequent write bursts).

    Incidents across scrape gaps (``gap_recheck``): a held point opens an *incident*
    and keeps the level and sigma from before it as the series' normal. The incident
    stays open until the series' smoothed deviation from that normal (an EWMA of weight
    ``SHIFT_ALPHA``) is back within ``tail_start`` of its sigmas, or for at most
    ``incident_memory`` points. The first point after a scrape gap (more than
    ``GAP_FACTOR`` times the series' typical interval since its previous point) in an
    open incident is also scored against that normal, with the same tail: the level has
    learned a long incident meanwhile, and without this the incident would look over
    when the data come back. Operators label the whole outage, and a labelled stretch
    cut by missing points is several segments, each to be found in its first points:
    on the KPI development data (at the pooled best threshold, before this), 25,521 of
    the 32,017 missed labelled points lay in segments that began within 20 slots of the
    previous one, nearly all behind missing slots, and 17,145 of those in incidents
    the detector had alerted on before the gap. Only points right after a gap score
    differently (and what the model learns from them). Limits: the normal before the incident
    is a level, not a seasonal profile, so on a series with a daily cycle it grows
    stale and an incident may stay open until ``incident_memory``; an outage from a
    series' first point (its warm-up learned the outage as normal) is never found.

    Cost: one compiled loop over the batch's points in order (no rounds, no scalar
    copy: the same kernel serves a batch of 100,000 series and one long replay);
    twenty-five numbers per series (180 bytes: four of them 32-bit, see ``_DTYPES``; the
    shift channel's four, the incident memory's six and the drift channel's three are
    kept whether they are on or not).

    Parameters
    ----------
    alpha
        EWMA weight of the level; its memory is about ``1 / alpha`` points.
    variance_alpha
        EWMA weight of the variance.
    warmup
        Points learned before a series scores anything.
    tail_start
        Deviation, in sigmas, beyond which the tail is exponential (2.5: 1.2% of Gaussian
        points lie beyond, so the fit sits where deviations are already unusual).
    stuck
        Also score runs of exactly equal values (a stuck gauge, a flat line) on series
        that rarely repeat a value: ``r`` repeats in a row of a series whose repeat rate
        is ``rho`` have probability ``rho ** r``, from the second repeat on (three equal
        points); the two checks are combined with a Bonferroni factor of 2.
    tail_alpha
        Per-point forgetting weight of the tail statistics (memory about ``1 /
        tail_alpha`` points).
    tail_shape_max
        Largest shape of the generalized Pareto tail (0: always exponential; 0.5, the
        default, keeps the excess' variance finite). On the KPI development data 0.5
        against 0: best F1 0.713 / 0.696, own-alert F1 0.705 / 0.692; on Student-t(3) and
        log-normal noise the rate of scores above 0.9999 falls from about 8x to 4x the
        nominal one.
    max_held_share
        Long-run share of held points (EWMA over about 1,000 points) above which a
        series learns every point as it is (``MAX_HELD_SHARE``, 0.01; 1 holds always).
    shift_weight
        Share of the false-alarm budget given to the level-shift channel (0, the
        default, turns it off; the default detector, :mod:`aiops.detectors.ensemble`,
        uses 0.45, with 0.05 on ``drift_weight``; 0.5 until 2026-12-08). The channel
        keeps ``s``, an EWMA of weight ``shift_alpha`` of the
        signed deviations ``(x - mu) / sigma``, each clipped to ``HELD_CLIP`` sigmas,
        and scores ``|s|`` in its own sigmas (``sqrt(shift_alpha / (2 - shift_alpha))``
        on independent residuals) with a tail of its own, learned as the point's is.
        The two tail probabilities combine by weighted Bonferroni: ``p = min(p_point /
        (1 - shift_weight), p_shift / shift_weight)``. A sustained shift (a drop to
        zero, a plateau) then alerts on evidence that no single point of it carries,
        and a lone spike needs to be ``1 / (1 - shift_weight)`` times rarer. On
        stationary noise (200 series of 4,000 points) the share of scores above 0.998
        / 0.9999 over its nominal value: Gaussian 0.54x / 0.33x without the channel,
        0.48x / 0.23x at 0.5; Student-t(3) 0.96x / 3.6x and 0.81x / 2.6x (the check
        suite's calibration check passes at 0.5, ``tests/test_ensemble.py``).
        Measured as a member of the default ensemble (ewma_z 0.7, envelope_novelty
        0.3; KPI best / own F1 whole and 2nd half, NAB standard own): 0.3 0.720 /
        0.707, 0.836 / 0.824, 62.3; 0.4 0.720 / 0.705, 0.838 / 0.822, 64.0; 0.5 0.719
        / 0.705, 0.837 / 0.822, 64.9. A pair channel instead (the larger tail
        probability of two points in a row, its tail learned the same way), at 0.9 of
        ewma_z's 0.9: 0.722 / 0.622, 0.831 / 0.718, 65.4: it missed a drop to zero
        whose points each score only p = 3e-3.
    shift_alpha
        EWMA weight of the shift channel's mean (``SHIFT_ALPHA``, 0.3: memory about 3
        points; with ewma_z at 0.9 of the ensemble, 0.2 and 0.4 were within 0.003 of
        it on the KPIs and 1 point of it on NAB).
    drift_weight
        Share of the false-alarm budget given to the slow-drift channel (0, the default,
        turns it off; the default detector uses 0.05, taken from the shift channel's
        0.5). It scores ``|mu' - long_mu| / long_dev``: how far the level (``mu'``,
        with this point's step, clipped to ``HELD_CLIP`` sigmas) has left the long-run
        mean behind ``MATERIALITY`` (memory about 1,000 points), in long-run mean
        absolute deviations, with a tail of its own (from ``tail_start``; the point's
        budget is ``1 - shift_weight - drift_weight``). A drift that the level follows
        step by step (a latency creeping to 4x over an hour) leaves every point's
        residual small and the shift channel quiet, but takes the level several
        long-run swings away from the long-run mean; a daily cycle takes it about 1.6
        swings at most (a sinusoid's amplitude over its mean absolute deviation), so
        the channel stays quiet there. The drift lasts, so its points would teach its
        tail that it is normal as it builds up: points that the drift channel alone
        holds (its ``p / drift_weight`` at or below ``1 - 0.999``) stay out of its
        tail. Only on series that repeat a value at most ``STUCK_MAX_REPEAT`` of the
        time (as the stuck check): on a count, quantized or mostly idle series the
        long-run deviation can shrink to nothing between bursts (on the KPI file
        57051487, mostly zeros, the channel without this gate scored 6,700 more normal
        points above 0.9934, raw points). Measured in the default ensemble (KPI best / own F1 whole
        and 2nd half; NAB standard swept / own; fleet found, false alerts in 12
        simulated days, seeds 42 7 99, and seeds 1 2 3): off 0.754 / 0.741, 0.868 /
        0.856, 65.91 / 64.85, 55/58, 3, 50/58, 0; 0.05 (shift 0.45) 0.753 / 0.741,
        0.868 / 0.856, 66.19 / 64.97, 57/58, 3, 51/58, 0 (seeds 42 and 7 over seven
        days, a weekend included: 64/69 -> 69/69, 2 false alerts either way). Before
        the tail hold and with the shift channel at 0.5: 0.05 0.755 / 0.743, 0.871 /
        0.859, 66.10 / 65.51, 57/58, 3; 0.05 with the shift at 0.45 0.756 / 0.743,
        0.871 / 0.858, 66.33 / 65.01, 57/58, 3, 51/58, 0; 0.1 0.753 / 0.740, 0.870 / 0.857, 65.94 /
        65.39, 57/58, 3; 0.2 0.751 / 0.733, 0.867 / 0.850, 65.65 / 65.46, 56/58, 1;
        without the hold, a ramp after a week of a daily cycle
        (``tests/test_ewma_z.py``) taught the tail its own drift and scored at most
        0.99977.
    gap_recheck
        Score the first point after a scrape gap in an open incident against the normal
        from before the incident (see above; on by default). Measured in the default
        ensemble (KPI best / own F1 whole and 2nd half; NAB standard swept / own;
        fleet found, false alerts in 12 simulated days): off 0.719 / 0.705, 0.837 /
        0.822, 65.91 / 64.94, 55/58, 3; on 0.754 / 0.741, 0.868 / 0.856, 65.91 /
        64.85, 55/58, 3. At the pooled best threshold, of the 32,017 labelled KPI
        points missed without it 4,055 are found, for 498 more false-positive points
        (5,712).
    incident_memory
        Points after which an open incident closes whatever the series does (1,000,
        the memory of the long-run statistics behind ``MATERIALITY``: by then a shift
        that stayed is the series' new normal for them too, and a later gap should not
        compare it with the old one). With the recheck on, KPI figures as above: 3,000
        0.757 / 0.744, 0.872 / 0.860; no limit (measured before the return marker,
        which changed nothing at 1,000) 0.772 / 0.760, 0.891 / 0.880 (NAB 65.91 /
        64.80, fleet 55/58, 3), the difference one incident of 4d2af31a whose
        segment after a gap began 4,968 points after it: a shift that never ends
        would then re-alert after every gap for ever.

    >>> det = EwmaZ(warmup=20)
    >>> rng = np.random.default_rng(0)
    >>> x = 10.0 + rng.normal(0.0, 1.0, 200)
    >>> x[150] += 8.0
    >>> s = det.score(np.zeros(200, dtype=np.int64), np.arange(200.0) * 60, x)
    >>> int(np.argmax(s)), round(float(s[150]), 6)
    (150, 1.0)
    >>> bool(np.mean(s[20:] >= 0.99) < 0.03)
    True
    """

    name = "ewma_z"

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        variance_alpha: float = 0.02,
        warmup: int = 100,
        tail_start: float = 2.5,
        tail_alpha: float = 1e-3,
        tail_shape_max: float = 0.5,
        stuck: bool = True,
        max_held_share: float = MAX_HELD_SHARE,
        shift_weight: float = 0.0,
        shift_alpha: float = SHIFT_ALPHA,
        gap_recheck: bool = True,
        drift_weight: float = 0.0,
        incident_memory: float = 1000.0,
        learn_below: float = math.inf,
        seed: int = 0,
    ) -> None:
        super().__init__(learn_below=learn_below, seed=seed)
        for label, a in (("alpha", alpha), ("variance_alpha", variance_alpha)):
            if not 0.0 < a <= 1.0:
                raise ValueError(f"{label} must be in (0, 1], got {a}")
        if not 0.0 < tail_alpha < 1.0:
            raise ValueError(f"tail_alpha must be in (0, 1), got {tail_alpha}")
        if not 0.0 <= tail_shape_max < 1.0:
            raise ValueError(f"tail_shape_max must be in [0, 1), got {tail_shape_max}")
        if not tail_start > 0.0:
            raise ValueError(f"tail_start must be positive, got {tail_start}")
        if not 0.0 <= max_held_share <= 1.0:
            raise ValueError(f"max_held_share must be in [0, 1], got {max_held_share}")
        if not 0.0 <= shift_weight < 1.0:
            raise ValueError(f"shift_weight must be in [0, 1), got {shift_weight}")
        if not 0.0 <= drift_weight < 1.0 - shift_weight:
            raise ValueError(f"drift_weight must be in [0, 1 - shift_weight), got {drift_weight}")
        if not 0.0 < shift_alpha <= 1.0:
            raise ValueError(f"shift_alpha must be in (0, 1], got {shift_alpha}")
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2, got {warmup}")
        if not incident_memory > 0.0:
            raise ValueError(f"incident_memory must be positive, got {incident_memory}")
        self.alpha = alpha
        self.variance_alpha = variance_alpha
        self.warmup = warmup
        self.tail_start = tail_start
        self.tail_alpha = tail_alpha
        self.tail_shape_max = tail_shape_max
        self.stuck = stuck
        self.max_held_share = max_held_share
        self.shift_weight = shift_weight
        self.shift_alpha = shift_alpha
        self.gap_recheck = gap_recheck
        self.drift_weight = drift_weight
        self.incident_memory = incident_memory
        self._q0, self._m0 = _gaussian_excess(tail_start)
        self._n = np.zeros(0, dtype=np.int64)
        self._mu = np.zeros(0)
        self._var = np.zeros(0)
        self._long_mu = np.zeros(0)
        self._long_dev = np.zeros(0)
        self._last = np.zeros(0)
        self._run = np.zeros(0, dtype=np.int32)
        self._repeat = np.zeros(0, dtype=np.float32)
        self._q = np.zeros(0)
        self._m = np.zeros(0)
        self._m2 = np.zeros(0)
        self._held = np.zeros(0, dtype=np.float32)
        self._shift = np.zeros(0)
        self._q_shift = np.zeros(0)
        self._m_shift = np.zeros(0)
        self._m2_shift = np.zeros(0)
        self._last_t = np.zeros(0)
        self._interval = np.zeros(0, dtype=np.float32)
        self._base_mu = np.zeros(0)
        self._base_sd = np.zeros(0)
        self._base_dev = np.zeros(0)
        self._base_n = np.zeros(0, dtype=np.float32)
        self._q_drift = np.zeros(0)
        self._m_drift = np.zeros(0)
        self._m2_drift = np.zeros(0)

    @classmethod
    def check_params(cls) -> dict[str, Any]:
        """Small parameters for the shared detector check suite."""
        return {"warmup": 10}

    @property
    def n_series(self) -> int:
        """How many series indices the detector holds state for."""
        return len(self._n)

    def _grow(self, n: int) -> None:
        cap = grown(len(self._n), n, self.max_rows)
        extra = cap - len(self._n)
        self._n = np.concatenate([self._n, np.zeros(extra, dtype=np.int64)])
        self._mu = np.concatenate([self._mu, np.zeros(extra)])
        self._var = np.concatenate([self._var, np.zeros(extra)])
        self._long_mu = np.concatenate([self._long_mu, np.zeros(extra)])
        self._long_dev = np.concatenate([self._long_dev, np.zeros(extra)])
        self._last = np.concatenate([self._last, np.zeros(extra)])
        self._run = np.concatenate([self._run, np.zeros(extra, dtype=np.int32)])
        self._repeat = np.concatenate([self._repeat, np.zeros(extra, np.float32)])
        self._q = np.concatenate([self._q, np.full(extra, self._q0)])
        self._m = np.concatenate([self._m, np.full(extra, self._m0)])
        # The second moment of an exponential excess: a young series' tail is exponential.
        self._m2 = np.concatenate([self._m2, np.full(extra, 2.0 * self._m0 * self._m0)])
        self._held = np.concatenate([self._held, np.zeros(extra, np.float32)])
        self._shift = np.concatenate([self._shift, np.zeros(extra)])
        # The shift is in its own sigmas: its tail starts from the same Gaussian prior.
        self._q_shift = np.concatenate([self._q_shift, np.full(extra, self._q0)])
        self._m_shift = np.concatenate([self._m_shift, np.full(extra, self._m0)])
        self._m2_shift = np.concatenate([self._m2_shift, np.full(extra, 2.0 * self._m0**2)])
        self._last_t = np.concatenate([self._last_t, np.zeros(extra)])
        self._interval = np.concatenate([self._interval, np.zeros(extra, np.float32)])
        self._base_mu = np.concatenate([self._base_mu, np.zeros(extra)])
        self._base_sd = np.concatenate([self._base_sd, np.zeros(extra)])
        self._base_dev = np.concatenate([self._base_dev, np.zeros(extra)])
        self._base_n = np.concatenate([self._base_n, np.zeros(extra, np.float32)])
        self._q_drift = np.concatenate([self._q_drift, np.full(extra, self._q0)])
        self._m_drift = np.concatenate([self._m_drift, np.full(extra, self._m0)])
        self._m2_drift = np.concatenate([self._m2_drift, np.full(extra, 2.0 * self._m0**2)])

    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """Score and learn from the points; see :mod:`aiops.pipeline.detector`."""
        idx, timestamps, values = checked_batch(idx, timestamps, values)
        out = np.zeros(len(idx))
        if len(idx) == 0:
            return out
        need = int(idx.max()) + 1
        if need > self.n_series:
            self._grow(need)
        _score_points(
            idx,
            values,
            out,
            self._n,
            self._mu,
            self._var,
            self._long_mu,
            self._long_dev,
            self._last,
            self._run,
            self._repeat,
            self._q,
            self._m,
            self._m2,
            self._held,
            self._shift,
            self._q_shift,
            self._m_shift,
            self._m2_shift,
            timestamps,
            self._last_t,
            self._interval,
            self._base_mu,
            self._base_sd,
            self._base_dev,
            self._base_n,
            self._q_drift,
            self._m_drift,
            self._m2_drift,
            float(self.incident_memory),
            float(self.alpha),
            float(self.variance_alpha),
            int(self.warmup),
            float(self.tail_start),
            float(self.tail_alpha),
            float(self.tail_shape_max),
            float(self.learn_below),
            bool(self.stuck),
            float(self.max_held_share),
            float(self.shift_weight),
            float(self.shift_alpha),
            bool(self.gap_recheck),
            float(self.drift_weight),
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Count, level, variance, long-run statistics, tail statistics, held share, as arrays."""
        k = self.n_series
        return {
            "n": self._n[:k].copy(),
            "mu": self._mu[:k].copy(),
            "var": self._var[:k].copy(),
            "long_mu": self._long_mu[:k].copy(),
            "long_dev": self._long_dev[:k].copy(),
            "last": self._last[:k].copy(),
            "run": self._run[:k].copy(),
            "repeat": self._repeat[:k].copy(),
            "q": self._q[:k].copy(),
            "m": self._m[:k].copy(),
            "m2": self._m2[:k].copy(),
            "held": self._held[:k].copy(),
            "shift": self._shift[:k].copy(),
            "q_shift": self._q_shift[:k].copy(),
            "m_shift": self._m_shift[:k].copy(),
            "m2_shift": self._m2_shift[:k].copy(),
            "last_t": self._last_t[:k].copy(),
            "interval": self._interval[:k].copy(),
            "base_mu": self._base_mu[:k].copy(),
            "base_sd": self._base_sd[:k].copy(),
            "base_dev": self._base_dev[:k].copy(),
            "base_n": self._base_n[:k].copy(),
            "q_drift": self._q_drift[:k].copy(),
            "m_drift": self._m_drift[:k].copy(),
            "m2_drift": self._m2_drift[:k].copy(),
        }

    def state_views(self) -> dict[str, Any]:
        """:meth:`state_dict` without copies, for a checkpoint (:mod:`aiops.state.rulestate`).

        :meth:`score` writes only the rows of the points it is given; growth replaces
        the arrays.
        """
        k = self.n_series
        return {name: Live(a[:k]) for name, a in self._named_arrays().items()}

    def _named_arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        return {
            "n": self._n,
            "mu": self._mu,
            "var": self._var,
            "long_mu": self._long_mu,
            "long_dev": self._long_dev,
            "last": self._last,
            "run": self._run,
            "repeat": self._repeat,
            "q": self._q,
            "m": self._m,
            "m2": self._m2,
            "held": self._held,
            "shift": self._shift,
            "q_shift": self._q_shift,
            "m_shift": self._m_shift,
            "m2_shift": self._m2_shift,
            "last_t": self._last_t,
            "interval": self._interval,
            "base_mu": self._base_mu,
            "base_sd": self._base_sd,
            "base_dev": self._base_dev,
            "base_n": self._base_n,
            "q_drift": self._q_drift,
            "m_drift": self._m_drift,
            "m2_drift": self._m2_drift,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        A state saved before the held share was kept (no ``"held"``) starts it at 0.
        """
        n = adopt(state["n"], np.int64)
        k = len(n)
        earlier = {
            "held": np.zeros(k),
            "shift": np.zeros(k),
            "q_shift": np.full(k, self._q0),
            "m_shift": np.full(k, self._m0),
            "m2_shift": np.full(k, 2.0 * self._m0**2),
            # No interval known yet, nor the previous point's time (-1): the next gap is
            # not seen. No incident open.
            "last_t": np.zeros(k),
            "interval": np.full(k, -1.0),
            "base_mu": np.zeros(k),
            "base_sd": np.zeros(k),
            "base_dev": np.zeros(k),
            "base_n": np.zeros(k),
            # A state from before the drift channel: its tail starts from the prior.
            "q_drift": np.full(k, self._q0),
            "m_drift": np.full(k, self._m0),
            "m2_drift": np.full(k, 2.0 * self._m0**2),
        }
        state = {**earlier, **state}
        names = (
            *("mu", "var", "long_mu", "long_dev", "last", "repeat", "q", "m", "m2", "held"),
            *("shift", "q_shift", "m_shift", "m2_shift"),
            *("last_t", "interval", "base_mu", "base_sd", "base_dev", "base_n"),
            *("q_drift", "m_drift", "m2_drift"),
        )
        arrays = [adopt(state[name], _DTYPES.get(name, np.float64)) for name in names]
        run = adopt(state["run"], np.int32)
        if any(a.shape != n.shape for a in [*arrays, run]):
            raise ValueError("ewma_z state arrays differ in length")
        self._n, self._run = n, run
        (self._mu, self._var, self._long_mu, self._long_dev) = arrays[:4]
        (self._last, self._repeat, self._q, self._m, self._m2, self._held) = arrays[4:10]
        (self._shift, self._q_shift, self._m_shift, self._m2_shift) = arrays[10:14]
        (self._last_t, self._interval, self._base_mu) = arrays[14:17]
        (self._base_sd, self._base_dev, self._base_n) = arrays[17:20]
        (self._q_drift, self._m_drift, self._m2_drift) = arrays[20:]
