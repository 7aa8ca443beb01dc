"""ewma_z: exact alerts on seeded series, the held (clipped) learning, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from aiops.detectors.ewma_z import EwmaZ
from aiops.pipeline.scoring import score_series
from aiops.registry import DEFAULT_DETECTOR, DETECTORS


def _fleet_like(seed: int = 7, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 60.0
    x = 50 + 5 * np.sin(2 * np.pi * np.arange(n) / 1440) + rng.normal(0, 1, n)
    return t, x


def test_is_the_default_detectors_main_member() -> None:
    assert DEFAULT_DETECTOR == "ensemble"
    members = DETECTORS.create(DEFAULT_DETECTOR)._members
    assert isinstance(members[0], EwmaZ)


def test_alerts_on_a_spike_a_dip_and_a_level_shift_inside_the_range_seen() -> None:
    t, x = _fleet_like()
    x[1000] += 12  # inside the daily range (40..60 plus noise), but 12 sigmas off the level
    x[1500:1504] = 40
    x[2000:] -= 8
    out = score_series(t, x, detector="ewma_z", threshold=0.9999)
    assert np.flatnonzero(out.alerts).tolist() == [1000, 1500, 2000]


def test_a_level_shift_is_absorbed_not_alerted_for_ever() -> None:
    t, x = _fleet_like()
    x[2000:] -= 8
    det = EwmaZ()
    s = det.score(np.zeros(len(x), dtype=np.int64), t, x)
    assert s[2000] > 0.9999
    # Held points move the level by at most HELD_CLIP sigmas, so it gets there.
    assert (s[2200:] < 0.999).mean() > 0.99


def test_a_huge_point_is_learned_clipped_and_the_next_incident_still_seen() -> None:
    t, x = _fleet_like()
    x[1000] += 1e6
    x[1050] += 10.0  # ten sigmas, twice the daily swing: an incident in its own right
    idx = np.zeros(len(x), dtype=np.int64)
    for learn_below in (0.9999, np.inf):  # held at min(learn_below, 0.999) either way
        s = EwmaZ(learn_below=learn_below).score(idx, t, x)
        assert s[1000] > 0.9999
        # Level, variance and the long-run deviation behind the materiality gate took
        # the huge point in clipped, so the next incident still scores.
        assert s[1050] > 0.9999
        assert (s[1001:1050] < 0.999).all()


def test_deviations_smaller_than_the_long_run_deviation_never_score() -> None:
    t, x = _fleet_like()
    x[2000:2100] = x[2000]  # a flat stretch: a tiny local sigma
    x[2100] += 2.0  # many local sigmas, but inside the daily swing
    s = EwmaZ().score(np.zeros(len(x), dtype=np.int64), t, x)
    assert s[2100] == 0.0


def test_the_materiality_gate_learns_on_a_series_that_was_flat_through_its_warm_up() -> None:
    # Zero for the warm-up, then bursts: the long-run deviation starts at 0, and a step
    # capped at a multiple of 0 would keep it there for ever (every burst "material").
    rng = np.random.default_rng(3)
    x = np.zeros(4000)
    x[200:] = np.where(rng.random(3800) < 0.05, rng.uniform(5e6, 5e7, 3800), 0.0)
    det = EwmaZ()
    det.score(np.zeros(len(x), dtype=np.int64), np.arange(4000) * 300.0, x)
    assert det.state_dict()["long_dev"][0] > 1e5


def test_bursts_that_are_frequent_are_learned_as_normal_but_a_huge_one_still_alerts() -> None:
    # A disk idle at zero with a write burst in 5% of the points: holding every burst
    # (clipped variance, tail without them) kept them all "anomalous" for ever.
    rng = np.random.default_rng(3)
    x = np.zeros(6000)
    x[200:] = np.where(rng.random(5800) < 0.05, rng.uniform(5e6, 5e7, 5800), 0.0)
    x[5000] = 1e9  # twenty times the largest burst
    idx, t = np.zeros(len(x), dtype=np.int64), np.arange(6000) * 300.0
    s = EwmaZ(learn_below=0.998).score(idx, t, x)
    assert np.mean(s[3000:] >= 0.998) < 0.003
    assert s[5000] > 0.9999
    always_held = EwmaZ(learn_below=0.998, max_held_share=1.0).score(idx, t, x)
    assert np.mean(always_held[3000:] >= 0.998) > 0.03


def test_a_state_without_the_held_share_or_the_shift_channel_loads() -> None:
    t, x = _fleet_like()
    idx = np.zeros(len(x), dtype=np.int64)
    first = EwmaZ()
    first.score(idx[:1234], t[:1234], x[:1234])
    state = first.state_dict()
    assert state.pop("held")[0] == 0.0  # nothing held on this series so far
    for name in ("shift", "q_shift", "m_shift", "m2_shift"):  # kept since 2026-12-07
        state.pop(name)
    second = EwmaZ()
    second.load_state_dict(state)
    np.testing.assert_array_equal(
        second.score(idx[1234:], t[1234:], x[1234:]), first.score(idx[1234:], t[1234:], x[1234:])
    )


def test_a_state_without_the_incident_memory_loads_and_learns_the_interval_again() -> None:
    t, x = _fleet_like()
    x[2000:2600] -= 15.0
    kept = _with_gaps(t, x, [2300])
    idx = np.zeros(len(kept), dtype=np.int64)
    cut, after = int(np.searchsorted(kept, 1500)), int(np.searchsorted(kept, 2303))
    first = EwmaZ()
    first.score(idx[:cut], t[kept[:cut]], x[kept[:cut]])
    state = first.state_dict()
    for name in ("last_t", "interval", "base_mu", "base_sd", "base_dev", "base_n"):
        state.pop(name)  # kept since 2026-12-08
    second = EwmaZ()
    second.load_state_dict(state)
    rest = second.score(idx[cut:], t[kept[cut:]], x[kept[cut:]])
    # The first two points after the restore learn the interval again (no gap is seen
    # meanwhile), long before the incident's gap.
    assert second.state_dict()["interval"][0] == pytest.approx(60.0, rel=0.06)
    assert rest[after - cut] > 0.9999


def test_the_shift_channel_alerts_on_a_shift_none_of_whose_points_is_rare_alone() -> None:
    t, x = _fleet_like()
    x[2000:] -= 2.5  # 2.5 sigmas for good: no single point is rarer than 1 in 200
    idx = np.zeros(len(x), dtype=np.int64)
    alone = EwmaZ().score(idx, t, x)
    shift = EwmaZ(shift_weight=0.5).score(idx, t, x)
    assert alone[2000:2008].max() < 0.998
    assert shift[2000:2008].max() >= 0.999
    assert alone[100:2000].max() < 0.999
    assert shift[100:2000].max() < 0.999


def test_a_stuck_gauge_alerts_but_a_count_series_at_zero_does_not() -> None:
    t, x = _fleet_like()
    x[2000:2030] = x[2000]  # the gauge stops updating: the same value 31 times
    s = EwmaZ().score(np.zeros(len(x), dtype=np.int64), t, x)
    assert s[:2000].max() < 0.9999
    assert np.flatnonzero(s[2000:2030] > 0.9999)[0] == 2  # two repeats: 1e-3 ** 2
    counts = np.random.default_rng(1).poisson(0.5, 3000).astype(float)
    counts[2000:2030] = 0.0  # zeros repeat all the time there: nothing stuck about it
    s = EwmaZ().score(np.zeros(len(counts), dtype=np.int64), t, counts)
    assert s[2000:2030].max() < 0.999
    assert EwmaZ(stuck=False).score(np.zeros(len(x), dtype=np.int64), t, x)[2002] < 0.5


@pytest.mark.parametrize(
    ("kind", "draw"),
    [
        ("gaussian", lambda rng, size: rng.normal(0.0, 1.0, size)),
        ("student_t3", lambda rng, size: rng.standard_t(3, size)),
        ("poisson5", lambda rng, size: rng.poisson(5.0, size).astype(float)),
        ("quantized", lambda rng, size: np.round(rng.normal(0.0, 1.0, size) * 2) / 2),
    ],
)
@pytest.mark.parametrize(
    ("shift_weight", "drift_weight"), [(0.0, 0.0), (0.5, 0.0), (0.45, 0.05)]
)  # 0.45 and 0.05: as in the default detector
def test_a_score_s_is_reached_by_about_1_minus_s_of_normal_points(
    kind: str, draw, shift_weight: float, drift_weight: float
) -> None:
    rng = np.random.default_rng(3)
    n_series, n = 20, 5000
    x = draw(rng, (n, n_series)).ravel()  # time-major: one point of every series per row
    idx = np.tile(np.arange(n_series), n)
    t = np.repeat(np.arange(n) * 60.0, n_series)
    det = EwmaZ(shift_weight=shift_weight, drift_weight=drift_weight)
    s = det.score(idx, t, x)[500 * n_series :]
    for level in (0.99, 0.999):
        ratio = float(np.mean(s >= level)) / (1.0 - level)
        assert 1 / 3 <= ratio <= 3, (kind, level, ratio)


@pytest.mark.parametrize(("shift_weight", "drift_weight"), [(0.0, 0.0), (0.5, 0.0), (0.45, 0.05)])
def test_state_round_trip_mid_series_and_bad_state(
    shift_weight: float, drift_weight: float
) -> None:
    t, x = _fleet_like()
    x[1230:] -= 3.0  # the shift channel is busy at the cut
    idx = np.zeros(len(x), dtype=np.int64)
    params = {"shift_weight": shift_weight, "drift_weight": drift_weight}
    whole = EwmaZ(**params).score(idx, t, x)
    first = EwmaZ(**params)
    first.score(idx[:1234], t[:1234], x[:1234])
    second = EwmaZ(**params)
    second.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(second.score(idx[1234:], t[1234:], x[1234:]), whole[1234:])
    state = first.state_dict()
    state["mu"] = state["mu"][:0]
    with pytest.raises(ValueError, match="differ in length"):
        EwmaZ().load_state_dict(state)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": 0.0}, "alpha must be in"),
        ({"variance_alpha": 1.5}, "variance_alpha must be in"),
        ({"tail_alpha": 1.0}, "tail_alpha must be in"),
        ({"tail_start": 0.0}, "tail_start must be positive"),
        ({"tail_shape_max": 1.0}, "tail_shape_max must be in"),
        ({"warmup": 1}, "warmup must be at least 2"),
        ({"max_held_share": -0.1}, "max_held_share must be in"),
        ({"shift_weight": 1.0}, "shift_weight must be in"),
        ({"shift_alpha": 0.0}, "shift_alpha must be in"),
        ({"drift_weight": -0.1}, "drift_weight must be in"),
        ({"shift_weight": 0.5, "drift_weight": 0.5}, "drift_weight must be in"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EwmaZ(**params)


def _with_gaps(t: np.ndarray, x: np.ndarray, starts: list[int], width: int = 3) -> np.ndarray:
    """The positions of ``t``/``x`` kept when ``width`` points go missing at each start."""
    keep = np.ones(len(t), dtype=bool)
    for s in starts:
        keep[s : s + width] = False
    return np.flatnonzero(keep)


def test_an_incident_cut_by_a_scrape_gap_alerts_again_after_the_gap() -> None:
    t, x = _fleet_like()
    x[2000:2600] -= 15.0  # a sustained drop: the level has learned it long before the gap
    kept = _with_gaps(t, x, [2300])
    idx = np.zeros(len(kept), dtype=np.int64)
    after = int(np.searchsorted(kept, 2303))  # the first point after the gap
    on = EwmaZ().score(idx, t[kept], x[kept])
    off = EwmaZ(gap_recheck=False).score(idx, t[kept], x[kept])
    assert on[int(np.searchsorted(kept, 2000))] > 0.9999  # the drop itself
    assert off[after - 1] < 0.99  # by the gap, the level has learned it
    assert off[after] < 0.99  # without the recheck, the gap's end is ordinary
    assert on[after] > 0.9999  # with it, scored against the normal before the drop
    # Up to the gap the two agree: the recheck touches only points after a gap (what the
    # model learns from that point then differs a little).
    np.testing.assert_array_equal(on[:after], off[:after])


def test_a_gap_after_the_incident_ended_or_aged_out_does_not_alert() -> None:
    rng = np.random.default_rng(7)
    t, x = np.arange(6000) * 60.0, 50.0 + rng.normal(0.0, 1.0, 6000)
    x[2000:2300] -= 15.0  # over at 2300: the series is back at its normal
    x[3000:] += 15.0  # a new normal for good: an incident at first, then no longer
    gaps = [2500, 3200, 3000 + 1200]  # after the end; inside the memory; after it
    kept = _with_gaps(t, x, gaps)
    idx = np.zeros(len(kept), dtype=np.int64)
    s = EwmaZ().score(idx, t[kept], x[kept])
    after = [int(np.searchsorted(kept, g + 3)) for g in gaps]
    # The return at 2300 is held too (the level had learned the drop), but it opens no
    # incident of its own.
    assert s[int(np.searchsorted(kept, 2300))] > 0.9999
    assert s[after[0]] < 0.99
    assert s[after[1]] > 0.999  # the shift is 200 points old, the memory 1,000
    assert s[after[2]] < 0.99  # 1,200 points after it began: the shift is the normal
    off = EwmaZ(gap_recheck=False).score(idx, t[kept], x[kept])
    assert off[after[1]] < 0.99


def test_scrape_gaps_do_not_change_the_calibration_on_stationary_noise() -> None:
    # 200 series of 4,000 points with a gap of 1 to 3 points every 50 points on average:
    # an incident opened by one of noise's rare points closes within a few points, so
    # the recheck after a gap almost never finds one open.
    rng = np.random.default_rng(5)
    k, n = 200, 4000
    rates = {}
    for kind, draw in (
        ("gaussian", lambda size: rng.normal(0.0, 1.0, size)),
        ("student_t3", lambda size: rng.standard_t(3, size)),
    ):
        values = draw((n, k)).ravel()
        ts = np.repeat(np.arange(n) * 60.0, k)
        idx = np.tile(np.arange(k, dtype=np.int64), n)
        keep = rng.random(n * k) > 0.04
        for gap_recheck in (True, False):
            s = EwmaZ(gap_recheck=gap_recheck).score(idx[keep], ts[keep], values[keep])
            after = s[ts[keep] >= 500 * 60.0]
            rates[kind, gap_recheck] = [np.mean(after >= lv) for lv in (0.998, 0.9999)]
    for kind in ("gaussian", "student_t3"):
        on, off = rates[kind, True], rates[kind, False]
        assert on[0] <= 1.05 * off[0] + 1e-5, (kind, on, off)
        assert on[1] <= 1.2 * off[1] + 2e-6, (kind, on, off)


#: ewma_z's parameters in the default detector (``DEFAULT_MEMBERS``).
DEFAULT_EWMA = {"shift_weight": 0.45, "drift_weight": 0.05}


def test_the_drift_channel_alerts_on_a_slow_ramp_that_the_level_follows() -> None:
    # A week of a series with a daily cycle, then a ramp to six times the cycle's
    # amplitude over 300 points: its steps are so small that the level follows them
    # (no point is rarer than about 1 in 200), but the level leaves the long-run mean.
    t, x = _fleet_like(n=12000)
    x[10000:10300] += np.linspace(0.0, 30.0, 300)
    idx = np.zeros(len(x), dtype=np.int64)
    without = EwmaZ(shift_weight=0.5).score(idx, t, x)
    drift = EwmaZ(**DEFAULT_EWMA).score(idx, t, x)
    assert without[10000:10300].max() < 0.999
    hits = np.flatnonzero(drift[10000:10300] >= 0.9999)
    assert len(hits) >= 3
    # Three hits among five points in a row, as the fleet's rules ask, once the ramp has
    # gone past twice the cycle's amplitude.
    assert np.convolve(drift[10000:10300] >= 0.9999, np.ones(5)).max() >= 3
    assert 60 <= hits[0] <= 200
    # Before it, the daily cycle does not score more with the channel than without.
    assert np.sum(drift[100:10000] >= 0.999) <= np.sum(without[100:10000] >= 0.999)
    m = EwmaZ(drift_weight=0.05)  # the channel works without the shift channel too
    assert m.score(idx, t, x)[10000:10300].max() >= 0.9999


def _latency_like(days: int = 10, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A p99 latency at 5-minute steps: a daily cycle of +-45% and log-normal noise."""
    rng = np.random.default_rng(seed)
    k = np.arange(days * 288)
    level = 0.04 * (1.0 + 0.45 * np.cos(2 * np.pi * k / 288))
    return k * 300.0, level * np.exp(0.08 * rng.standard_normal(len(k)))


@pytest.mark.parametrize("gaps", [False, True])
def test_the_drift_channel_is_quiet_on_a_daily_cycle_with_and_without_scrape_gaps(
    gaps: bool,
) -> None:
    t, x = _latency_like()
    keep = np.ones(len(t), dtype=bool)
    if gaps:  # six hours missing every day, at a different hour of the cycle each day
        for day in range(1, 10):
            start = day * 288 + 29 * day % 288
            keep[start : start + 72] = False
    t, x = t[keep], x[keep]
    idx = np.zeros(len(x), dtype=np.int64)
    without = EwmaZ(shift_weight=0.5).score(idx, t, x)[288:]
    drift = EwmaZ(**DEFAULT_EWMA).score(idx, t, x)[288:]
    # The cycle's rare points are the point channel's (a gap's end high on the cycle):
    # the drift channel adds none of its own.
    assert set(np.flatnonzero(drift >= 0.9999)) <= set(np.flatnonzero(without >= 0.9999))
    assert np.mean(drift >= 0.999) <= np.mean(without >= 0.999) + 1e-3


@pytest.mark.parametrize("lam", [0.5, 5.0])
def test_the_drift_channel_stays_out_of_count_series(lam: float) -> None:
    # Counts repeat their values all the time (as for the stuck check): between bursts
    # the long-run deviation of a mostly idle series can shrink to nothing, and a drift
    # in its units would mean nothing. The channel neither scores nor learns there.
    rng = np.random.default_rng(4)
    t = np.arange(20000) * 60.0
    counts = rng.poisson(lam, len(t)).astype(float)
    idx = np.zeros(len(t), dtype=np.int64)
    det = EwmaZ(**DEFAULT_EWMA)
    s = det.score(idx, t, counts)[500:]
    state = det.state_dict()
    fresh = EwmaZ(**DEFAULT_EWMA)
    fresh.score(idx[:1], t[:1], counts[:1])
    for name in ("q_drift", "m_drift", "m2_drift"):
        assert state[name][0] == fresh.state_dict()[name][0]
    assert np.mean(s >= 0.999) <= 3e-3
    assert s.max() < 0.99999


def test_a_state_without_the_drift_channel_loads() -> None:
    t, x = _fleet_like()
    idx = np.zeros(len(x), dtype=np.int64)
    first = EwmaZ(**DEFAULT_EWMA)
    first.score(idx[:1234], t[:1234], x[:1234])
    state = first.state_dict()
    for name in ("q_drift", "m_drift", "m2_drift"):  # kept since 2026-12-08
        state.pop(name)
    second = EwmaZ(**DEFAULT_EWMA)
    second.load_state_dict(state)  # the drift tail starts again from its prior
    fresh = EwmaZ()
    fresh.score(idx[:1], t[:1], x[:1])
    assert second.state_dict()["q_drift"][0] == fresh.state_dict()["q_drift"][0]
    rest = second.score(idx[1234:], t[1234:], x[1234:])
    assert rest.max() < 0.9999
    # With the channel off, nothing else in the state depends on it.
    off = EwmaZ()
    off.score(idx[:1234], t[:1234], x[:1234])
    state = off.state_dict()
    for name in ("q_drift", "m_drift", "m2_drift"):
        state.pop(name)
    again = EwmaZ()
    again.load_state_dict(state)
    np.testing.assert_array_equal(
        again.score(idx[1234:], t[1234:], x[1234:]), off.score(idx[1234:], t[1234:], x[1234:])
    )
